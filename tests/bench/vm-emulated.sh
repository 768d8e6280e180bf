#!/usr/bin/env bash
# VM boot-to-exit of `/bin/true`, side by side inside the emulated KVM host
# (tests/emulated-host): `isolate --mode vm` against QEMU `-M microvm
# -enable-kvm` booting the same guest kernel and the same initramfs (the
# rootfs with isolate's guest init and the same spec) to the same exit.
# Also `isolate compare --json` there, for the VMM's memory overhead.
# Prints hyperfine's and compare's output; writes hyperfine JSON to
# $BENCH_OUT/vm.json and compare JSON to $BENCH_OUT/vm-compare.json.
#
#   tests/bench/vm-emulated.sh [RUNS]
set -euo pipefail
runs=${1:-5}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${BENCH_OUT:-$(mktemp -d)}
mkdir -p "$out"
export ISOLATE_HOME=${ISOLATE_HOME:-/var/lib/isolate}
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The spec isolate's VMM would hand the guest for /bin/true.
cat >"$work/spec.json" <<'JSON'
{"argv":["/bin/true"],"env":[["PATH","/usr/sbin:/usr/bin:/sbin:/bin"]],"cwd":"/","uid":0,"gid":0,
 "hostname":"isolate","root":"initramfs","read_only":false,"volumes":[],
 "memory_limit":null,"pids_limit":null,"loopback":true,"stdin":false}
JSON
(cd "$root" && cargo run --quiet --release -p isolate-image --example make-initrd -- \
    --spec-json "$work/spec.json" "$work/initrd.cpio") >&2

kernel=$ISOLATE_HOME/kernel/vmlinux
# The fixed part of isolate's own command line (crates/isolate-vm/src/boot.rs,
# kernel_cmdline); QEMU adds the virtio_mmio.device= entries of its own slots.
cmdline="console=ttyS0 quiet reboot=k panic=-1 pci=off nomodule i8042.noaux i8042.nomux i8042.dumbkbd i8042.nopnp tsc=reliable no_timer_check"
# Scripts run inside the emulated host, from /bench.
cat >"$work/qemu.sh" <<SCRIPT
#!/bin/sh
# An i8042, as isolate's VMM has: the init's reset (reboot=k) ends QEMU
# through it (-no-reboot); without one the guest would spin in the BIOS.
exec qemu-system-x86_64 -M microvm,acpi=off -device i8042 -enable-kvm -cpu host -smp 1 -m 256 \\
    -nodefaults -no-user-config -nographic -no-reboot -serial null \\
    -kernel $kernel -initrd /bench/initrd.cpio -append "$cmdline"
SCRIPT
cat >"$work/isolate.sh" <<'SCRIPT'
#!/bin/sh
exec isolate --mode vm -m 256m /bin/true
SCRIPT
cat >"$work/hyperfine.sh" <<SCRIPT
#!/bin/sh
hyperfine -N --warmup 1 --runs $runs --export-json /tmp/vm.json \\
    -n 'isolate --mode vm' '/bench/isolate.sh' -n 'qemu -M microvm' '/bench/qemu.sh' || exit 1
echo @@JSON; cat /tmp/vm.json; echo
SCRIPT
cat >"$work/compare.sh" <<SCRIPT
#!/bin/sh
isolate compare --runs $runs --json -- /bin/true >/tmp/cmp.json; rc=\$?
echo @@COMPARE; cat /tmp/cmp.json; echo
exit \$rc
SCRIPT
chmod +x "$work"/*.sh
cat >"$work/bench.sh" <<'SCRIPT'
harness_sh qemu-microvm-sanity '/bench/qemu.sh; echo qemu-exit=$?'
harness_test isolate-vm-sanity /bench/isolate.sh
harness_test hyperfine-vm /bench/hyperfine.sh
harness_test compare /bench/compare.sh
SCRIPT

# shellcheck source=../emulated-host/isolate-payload.sh
. "$root/tests/emulated-host/isolate-payload.sh"
isolate_payload
payload+=(--exec "$(command -v qemu-system-x86_64)" --exec "$(command -v hyperfine)"
    --add /usr/share/qemu --add /usr/share/seabios --add "$work:/bench"
    --add "$(isolate_binary isolate):/usr/local/bin/isolate")
"$root/tests/emulated-host/run" --timeout "${EMULATED_HOST_TIMEOUT:-2400}" --mem 6144 \
    --log "$out/vm-console.log" "${payload[@]}" -- "$work/bench.sh" | tee "$out/vm-run.txt"
# Each JSON document runs from its marker to the end of its test's output.
extract() { awk -v m="$1" '$0 == m {f=1; next} /^(--- |=== |@@)/ {f=0} f' "$out/vm-run.txt" | sed -n '/^{/,/^}/p'; }
extract @@JSON >"$out/vm.json" || true
extract @@COMPARE >"$out/vm-compare.json" || true
