#!/usr/bin/env bash
# Runs every test of isolate-cgroups in the emulated host of
# tests/emulated-host (these build machines are hybrid v1), once per layout:
#   unified  cgroup v2 as the emulated host mounts it;
#   legacy   cgroup2 unmounted, v1 hierarchies on a tmpfs, cpu and cpuacct
#            co-mounted as systemd did on legacy hosts.
# Needs root. Exit status: 0 if every run passed.
#
# usage: crates/isolate-cgroups/tests/emulated.sh [unified|legacy|all] [options of tests/emulated-host/run]
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
layouts=(unified legacy)
case ${1:-all} in
    unified | legacy) layouts=("$1"); shift ;;
    all) [[ $# -gt 0 ]] && shift ;;
    -*) ;;
    *) echo "usage: $0 [unified|legacy|all] [run options]" >&2; exit 2 ;;
esac
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-cgroups}
work=$(mktemp -d "${TMPDIR:-/tmp}/isolate-cgroups-emulated.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Build the test binaries and copy them under stable names.
cd "$repo"
cargo test -p isolate-cgroups --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' |
    while read -r bin; do
        cp "$bin" "$work/$(basename "$bin" | sed 's/-[0-9a-f]*$//')"
    done
for t in isolate_cgroups host self_inside; do
    [[ -x $work/$t ]] || { echo "emulated: test binary $t was not built" >&2; exit 2; }
done

cat > "$work/legacy.sh" <<'SCRIPT'
harness_sh make_legacy_layout '
    set -e
    for c in $(cat /sys/fs/cgroup/cgroup.subtree_control); do
        echo "-$c" > /sys/fs/cgroup/cgroup.subtree_control
    done
    umount /sys/fs/cgroup
    mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup
    for c in memory pids freezer blkio cpu,cpuacct; do
        mkdir /sys/fs/cgroup/$c
        # Controllers leave cgroup2 asynchronously: retry for up to 5 s.
        n=0
        until mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c; do
            n=$((n + 1)); [ $n -lt 50 ] || exit 1; sleep 0.1
        done
    done
    ln -s cpu,cpuacct /sys/fs/cgroup/cpu
    ln -s cpu,cpuacct /sys/fs/cgroup/cpuacct
    grep " - cgroup" /proc/self/mountinfo'
SCRIPT
: > "$work/unified.sh"

rc=0
for layout in "${layouts[@]}"; do
    cat "$work/$layout.sh" - > "$work/script.sh" <<SCRIPT
harness_test unit $work/isolate_cgroups --nocapture
harness_test host $work/host --nocapture
harness_test self_inside $work/self_inside
harness_sh nothing_left_behind '
    test -z "\$(find /sys/fs/cgroup/ -path "*/isolate/*" -type d 2>/dev/null)" &&
    ! ls -d /sys/fs/cgroup/isolate-unit-* 2>/dev/null'
SCRIPT
    echo "### isolate-cgroups tests, $layout layout" >&2
    "$repo/tests/emulated-host/run" "$@" \
        --exec "$work/isolate_cgroups" --exec "$work/host" --exec "$work/self_inside" \
        -- "$work/script.sh" || rc=$?
done
exit "$rc"
