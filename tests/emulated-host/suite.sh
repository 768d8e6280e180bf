#!/usr/bin/env bash
# Runs isolate's host-dependent tests inside the emulated KVM host, where KVM
# boots stock guests and cgroups are v2:
#   - the contract suite for both modes (ISOLATE_CONTRACT_MODES=vm,container);
#   - the test binaries of the crates that touch KVM, namespaces or cgroups
#     (isolate-vm, isolate-container, isolate-cgroups), each as one test;
#   - the security suite for both modes, and VM mode against a hostile guest
#     (tests/security/hostile-guest.sh);
#   - VM mode's console data path (console-tests.sh: stdout, stdin, tiny
#     writes, a stalled reader, --timeout and SIGTERM), CONSOLE_MIB MiB per
#     bulk test (default 16; console.sh runs 64 on demand);
#   - VM mode under load, kill -9 and faults, with nothing left behind
#     (tests/reliability/run --mode vm --quick).
#
# usage: suite.sh [--list] [--timeout SECS] [--test-timeout SECS]
#                 [-- MORE-RUN-OPTIONS...]
#   --list          print the tests that would run, and exit
#   --timeout       whole run, boot included (default 1800)
#   --test-timeout  one test binary (default 1500): a hanging binary fails
#                   alone, the following ones still run
# environment: ISOLATE_HOME (default /var/lib/isolate), CARGO_TARGET_DIR,
# ISOLATE_CONTRACT_TIMEOUT (per case inside, default 180), CONSOLE_MIB.
# Needs ./install.sh --no-demo first (binaries, guest kernel, rootfs, init).
# Exit status as tests/emulated-host/run: 0 all passed, 1 a test failed,
# 2 harness failure. A crate whose tests do not build is named at the end
# and fails the suite (status 1 at least); the others still run.

# shellcheck source-path=SCRIPTDIR
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
export ISOLATE_HOME=${ISOLATE_HOME:-/var/lib/isolate}
[[ -x ${HOME:-/root}/.cargo/bin/cargo ]] && PATH=${HOME:-/root}/.cargo/bin:$PATH

# The crates whose test binaries run inside (all their test targets).
readonly PACKAGES=(isolate-contract isolate-vm isolate-container isolate-cgroups)

list=0 timeout=1800 test_timeout=1500 extra=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --list) list=1 ;;
        --timeout) timeout=${2:?--timeout needs SECS}; shift ;;
        --test-timeout) test_timeout=${2:?--test-timeout needs SECS}; shift ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "suite.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/emulated-host-suite.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# --- the test binaries -------------------------------------------------------

# Package by package, so that one that does not build still lets the others
# run; it fails the suite at the end.
build_failed=()
: >"$tmp/cargo.json"
for p in "${PACKAGES[@]}"; do
    echo "emulated-host suite: building the test binaries of $p" >&2
    if ! (cd "$root" && cargo test --locked --no-run --message-format=json -p "$p") \
        >>"$tmp/cargo.json" 2>"$tmp/cargo.err"; then
        tail -n 30 "$tmp/cargo.err" >&2
        echo "emulated-host suite: cargo test --no-run -p $p FAILED" >&2
        build_failed+=("$p")
    fi
done

# One line per executable cargo made: KIND NAME EXECUTABLE PACKAGE_DIR, where
# KIND is "test" for test binaries (profile.test) and "bin" for the rest
# (binaries that integration tests find through CARGO_BIN_EXE_*), and NAME is
# package/target ("isolate-vm/lib", "isolate-vm/tiny_guest").
field() { sed -n "s/.*$1.*/\\1/p" <<<"$msg"; }
grep '"executable":"/' "$tmp/cargo.json" | while IFS= read -r msg; do
    exe=$(field '"executable":"\([^"]*\)"')
    manifest=$(field '"manifest_path":"\([^"]*\)"')
    target=$(field '"target":{[^}]*"name":"\([^"]*\)"')
    kind=$(field '"target":{[^}]*"kind":\["\([^"]*\)"')
    pkg=$(field '"package_id":"[^"#]*#\([^"@]*\)@')
    dir=${manifest%/Cargo.toml}
    [[ -n $pkg ]] || pkg=${dir##*/}
    [[ $kind != lib ]] || target=lib
    if [[ -n $(field '"profile":{[^}]*"test":\(true\)') ]]; then
        printf 'test %s %s %s\n' "$pkg/$target" "$exe" "$dir"
    else
        printf 'bin %s %s %s\n' "$pkg/$target" "$exe" "$dir"
    fi
done | sort -u >"$tmp/executables"
# tiny_guest drives hand-made guests (triple fault, unclaimed ports) and runs
# natively in tests/run's unit-test step, PVM hosts included; under nested
# TCG its triple fault can soft-lock the emulated host's vCPU, so not here.
grep '^test ' "$tmp/executables" | cut -d' ' -f2- | grep -v '^isolate-vm/tiny_guest ' >"$tmp/tests" || true
echo "emulated-host suite: SKIP isolate-vm/tiny_guest here: it runs natively in the unit-test step (a nested triple fault can soft-lock the emulated host)" >&2

if [[ $list == 1 ]]; then
    cat "$tmp/tests"
    [[ ${#build_failed[@]} -eq 0 ]] || echo "not built: ${build_failed[*]}"
    exit 0
fi
if [[ ! -s $tmp/tests ]]; then
    echo "emulated-host suite: cargo built no test executable" >&2
    exit 2
fi

# The library's long-lived-process check of the reliability run.
repeat=${CARGO_TARGET_DIR:-$root/target}/debug/examples/repeat
if ! (cd "$root" && cargo build --locked --example repeat -p isolate) 2>"$tmp/cargo.err"; then
    tail -n 30 "$tmp/cargo.err" >&2
    build_failed+=("isolate (example repeat)")
fi

# --- what the emulated host gets ----------------------------------------------

# shellcheck source=isolate-payload.sh
. "$here/isolate-payload.sh"
isolate_payload || exit 2

# Sources at their paths (tests may read fixtures relative to their crate),
# without the build directories.
for entry in "$root"/*; do
    case ${entry##*/} in target) continue ;; esac
    payload+=(--add "$entry")
done

{
    echo "# Made by tests/emulated-host/suite.sh: one test per test binary."
    printf 'export ISOLATE_CONTRACT_MODES=vm,container ISOLATE_CONTRACT_REQUIRE=vm,container ISOLATE_CONTRACT_TIMEOUT=%s\n' \
        "${ISOLATE_CONTRACT_TIMEOUT:-180}"
    while read -r _ _ exe _; do payload+=(--exec "$exe"); done <"$tmp/executables"
    while read -r name exe dir; do
        # Like cargo test: run from the crate directory, CARGO_MANIFEST_DIR set.
        printf "harness_sh %s 'cd %s || exit 1
    CARGO_MANIFEST_DIR=%s timeout %s %s; rc=\$?
    [ \$rc -ne 143 ] || echo \"suite: terminated (SIGTERM), most likely by the per-test timeout of %s s\"
    exit \$rc'\n" "$name" "$dir" "$dir" "$test_timeout" "$exe" "$test_timeout"
    done <"$tmp/tests"
    # The security suite for both modes, where container mode runs on
    # cgroup v2 (the device program) and VM mode is real.
    for mode in container vm; do
        printf "harness_sh security/%s 'cd %s && PROBE=%s tests/security/run --mode %s'\n" \
            "$mode" "$root" "$tmp/probe" "$mode"
    done
    # VM mode against a hostile guest init (garbage, an endless control
    # line, floods, lying reports, terminal escapes).
    printf "harness_sh security/hostile-guest '%s/tests/security/hostile-guest.sh %s'\n" \
        "$root" "$tmp/hostile-init"
    printf 'CONSOLE_MIB=%s\n. %s\n' "${CONSOLE_MIB:-16}" "$here/console-tests.sh"
    # VM mode under load, kill -9 and faults.
    printf "harness_sh reliability/vm 'cd %s && ISOLATE_REPEAT=/usr/local/bin/repeat bash tests/reliability/run --mode vm --quick'\n" "$root"
} >"$tmp/suite.sh"
payload+=(--exec bash)
[[ ! -x $repeat ]] || payload+=(--exec "$repeat:/usr/local/bin/repeat")
# Container networking (--network bridge, -p): the bridge, veth and the
# nftables pieces of isolate's table, and the nft command that loads it.
for m in bridge veth nf_tables nft_chain_nat nft_nat nft_masq nft_ct nft_fib_ipv4; do
    payload+=(--module "$m")
done
if command -v nft >/dev/null; then
    payload+=(--exec "$(command -v nft)")
else
    echo "emulated-host suite: no nft command here (Debian's nftables): the bridge cases will fail" >&2
fi
for prog in probe hostile-init; do
    if ! cc -static -O2 -o "$tmp/$prog" "$root/tests/security/$prog.c"; then
        echo "emulated-host suite: cannot build tests/security/$prog.c (cc -static)" >&2
        exit 2
    fi
    payload+=(--exec "$tmp/$prog")
done

echo "emulated-host suite: $(wc -l <"$tmp/tests") test binaries" >&2
rc=0
"$here/run" --timeout "$timeout" --mem 6144 "${payload[@]}" "${extra[@]}" -- "$tmp/suite.sh" || rc=$?
if [[ ${#build_failed[@]} -gt 0 ]]; then
    echo "  NOT BUILT (cargo test --no-run failed on this host): ${build_failed[*]}"
    [[ $rc -ne 0 ]] || rc=1
fi
exit "$rc"
