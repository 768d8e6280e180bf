#!/usr/bin/env bash
# Runs every test of isolate-cgroups on cgroup v2, in the emulated host of
# tests/emulated-host (these build machines are hybrid v1). Needs root.
#
# usage: crates/isolate-cgroups/tests/v2-emulated.sh [extra options of tests/emulated-host/run]
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-cgroups}
work=$(mktemp -d "${TMPDIR:-/tmp}/isolate-cgroups-v2.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Build the test binaries and copy them under stable names.
cd "$repo"
cargo test -p isolate-cgroups --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' |
    while read -r bin; do
        cp "$bin" "$work/$(basename "$bin" | sed 's/-[0-9a-f]*$//')"
    done
for t in isolate_cgroups host self_inside; do
    [[ -x $work/$t ]] || { echo "v2-emulated: test binary $t was not built" >&2; exit 2; }
done

cat > "$work/script.sh" <<SCRIPT
harness_test unit $work/isolate_cgroups --nocapture
harness_test host $work/host --nocapture
harness_test self_inside $work/self_inside
harness_sh nothing_left_behind '
    test -z "\$(find /sys/fs/cgroup/isolate -mindepth 1 -type d 2>/dev/null)" &&
    ! ls -d /sys/fs/cgroup/isolate-unit-* 2>/dev/null'
SCRIPT

"$repo/tests/emulated-host/run" "$@" \
    --exec "$work/isolate_cgroups" --exec "$work/host" --exec "$work/self_inside" \
    -- "$work/script.sh"
