#!/usr/bin/env bash
# Proves that tests/emulated-host/run works and that it can fail:
#   1. a host check (KVM with nested paging, cgroup v2 with its controllers,
#      modules, --env) and, unless --no-nested, a nested KVM guest booted by
#      QEMU inside the emulated host: must exit 0 and name every test;
#   2. a run with a deliberately failing test: must exit 1 and name it;
#   3. a script that runs no test: must exit 2;
#   4. a test that hangs past --timeout: must exit 2 and name it.
#
# usage: selftest.sh [--no-nested]
# Exit status 0 only if every case behaved as expected.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly HERE RUN=$HERE/run

nested=1
case ${1:-} in
    --no-nested) nested=0 ;;
    '') ;;
    *) echo "usage: selftest.sh [--no-nested]" >&2; exit 2 ;;
esac

tmp=$(mktemp -d "${TMPDIR:-/tmp}/emulated-host-selftest.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

failures=()
case_no=0

# expect NAME WANT_RC 'PATTERN...' -- RUN_ARGS...
# Runs ./run, shows its output, checks its exit status and that each
# PATTERN (an extended regex) matches a line of its output.
expect() {
    local name=$1 want=$2 patterns=() rc=0 p t0 t1
    shift 2
    while [[ $1 != -- ]]; do patterns+=("$1"); shift; done
    shift
    case_no=$((case_no + 1))
    printf '\n##### selftest %d: %s (expect exit %s)\n' "$case_no" "$name" "$want"
    t0=$SECONDS
    "$RUN" "$@" >"$tmp/out" 2>&1 || rc=$?
    t1=$SECONDS
    sed 's/^/    /' "$tmp/out"
    local ok=1
    if [[ $rc != "$want" ]]; then
        echo "##### $name: exit status $rc, expected $want"
        ok=0
    fi
    for p in "${patterns[@]}"; do
        if ! grep -Eq -- "$p" "$tmp/out"; then
            echo "##### $name: output lacks /$p/"
            ok=0
        fi
    done
    if [[ $ok == 1 ]]; then
        echo "##### selftest $case_no ok: $name ($((t1 - t0))s)"
    else
        failures+=("$name")
    fi
}

# 1. the emulated host is what it claims to be.
host_tests=(kvm-device nested-paging cgroup2-unified cgroup2-controllers cgroup2-limits
            detect-says-native modules-loaded env-passed output-without-newline pivot-root-works)
script=$tmp/host.sh
cp "$HERE/selftest/host.sh" "$script"
args=(--timeout 900 --env "SELFTEST_GREETING=hello, world")
if [[ $nested == 1 ]]; then
    # A tiny busybox initramfs for the nested guest, which runs the same
    # Debian cloud kernel as the emulated host.
    l2=$tmp/l2
    mkdir -p "$l2/bin" "$l2/proc"
    cp "$(command -v busybox)" "$l2/bin/busybox"
    cat >"$l2/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
echo "L2-OK $(/bin/busybox uname -r) uptime=$(/bin/busybox cut -d' ' -f1 /proc/uptime)"
/bin/busybox reboot -f
INIT
    chmod 755 "$l2/init"
    (cd "$l2" && find . -mindepth 1 -printf '%P\0' | cpio --null --create --format=newc --quiet --owner=0:0) \
        >"$tmp/l2.cpio"
    kernel=$("$RUN" --fetch-kernel)
    cat "$HERE/selftest/nested.sh" >>"$script"
    host_tests+=(nested-kvm-guest)
    args+=(--exec qemu-system-x86_64 --add /usr/share/qemu
           --add "$kernel:/l2/vmlinuz" --add "$tmp/l2.cpio:/l2/initramfs.cpio")
fi
patterns=('^  [0-9]+ passed, 0 failed$' '^last line without a newline$' 'nested paging: on')
for t in "${host_tests[@]}"; do patterns+=("^  PASS  $t "); done
expect "host checks" 0 "${patterns[@]}" -- "${args[@]}" -- "$script"

# 2. a failing test fails the run, and is named.
expect "a failing test" 1 \
    '^  FAIL  deliberate-failure \(rc=3' '^this test fails on purpose$' \
    '^  PASS  before-the-failure ' '^  PASS  after-the-failure ' '^  2 passed, 1 failed$' \
    -- --timeout 600 -- "$HERE/selftest/fail.sh"

# 3. no test at all is not a pass.
printf 'echo "this script runs no test"\n' >"$tmp/empty.sh"
expect "no test ran" 2 'HARNESS FAILURE: no test ran' -- --timeout 600 -- "$tmp/empty.sh"

# 4. a hanging test is killed at --timeout, and named.
expect "timeout" 2 "TIMEOUT after 90s while test 'hangs' was running" '^  FAIL  hangs \(rc=timeout' \
    -- --timeout 90 --name hangs -- sleep 100000

echo
if [[ ${#failures[@]} -gt 0 ]]; then
    echo "selftest FAILED: ${failures[*]}"
    exit 1
fi
echo "selftest passed ($case_no cases)"
