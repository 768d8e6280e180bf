#!/usr/bin/env bash
# End to end test of VM mode in the emulated KVM host (tests/emulated-host):
# boots isolate's guest kernel, rootfs and init through isolate-vmm and runs
# workloads: stdout, exit codes, stderr kept apart, stdin piped, command not
# found, timeout; then times `/bin/true` boot-to-exit and the VMM's memory
# overhead.
#
# usage: crates/isolate-vm/tests/e2e-emulated.sh [--debug] [--runs N] [--tests] [-- RUN-OPTIONS...]
#   --debug   use debug binaries (default: release)
#   --runs N  timed /bin/true runs (default 5)
#   --tests   also run isolate-vm's own test binaries there (real KVM)
# environment: ISOLATE_HOME (default /var/lib/isolate) holding kernel/,
# rootfs/, init/ (guest-kernel/build.sh, rootfs/build.sh); CARGO_TARGET_DIR.
# Exit status as tests/emulated-host/run (0 pass, 1 a test failed, 2 harness).

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)
export ISOLATE_HOME=${ISOLATE_HOME:-/var/lib/isolate}
target=${CARGO_TARGET_DIR:-$root/target}
profile=release runs=5 with_tests=0 extra=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --debug) profile=debug ;;
        --runs) runs=${2:?--runs needs N}; shift ;;
        --tests) with_tests=1 ;;
        --) shift; extra=("$@"); break ;;
        *) echo "e2e-emulated.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

for need in kernel rootfs init/isolate-init; do
    if [[ ! -e $ISOLATE_HOME/$need ]]; then
        echo "e2e-emulated.sh: missing $ISOLATE_HOME/$need (run guest-kernel/build.sh and rootfs/build.sh)" >&2
        exit 2
    fi
done

flags=()
[[ $profile == release ]] && flags=(--release)
(cd "$root" && cargo build -q "${flags[@]}" -p isolate-vm --bins --examples)
vmm=$target/$profile/isolate-vmm
driver=$target/$profile/examples/vm-run

tools=()
test_bins=''
if [[ $with_tests == 1 ]]; then
    test_bins=$(cd "$root" && cargo test -q "${flags[@]}" -p isolate-vm --no-run --message-format=json 2>/dev/null \
        | grep -E '"overflow_checks":(true|false),"test":true' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tr '\n' ' ')
    for b in $test_bins; do tools+=(--exec "$b"); done
fi
# Named volumes are ext4 images made with mkfs.ext4.
if mkfs=$(command -v mkfs.ext4); then tools+=(--exec "$mkfs"); fi
[[ ! -f /etc/mke2fs.conf ]] || tools+=(--add /etc/mke2fs.conf)

exec "$root/tests/emulated-host/run" --timeout 1500 \
    --exec "$vmm" --exec "$driver" "${tools[@]}" \
    --add "$ISOLATE_HOME/kernel" --add "$ISOLATE_HOME/rootfs" --add "$ISOLATE_HOME/init" \
    --env "ISOLATE_HOME=$ISOLATE_HOME" --env "ISOLATE_VMM=$vmm" --env "VM_RUN=$driver" \
    --env "TEST_BINS=$test_bins" \
    --env "RUNS=$runs" --env ISOLATE_BOOT_TIMEOUT=300s --env RUST_BACKTRACE=1 \
    "${extra[@]}" -- "$here/e2e-emulated-guest.sh"
