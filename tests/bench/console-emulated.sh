#!/usr/bin/env bash
# Console throughput, side by side inside the emulated KVM host
# (tests/emulated-host): N MiB through the workload's stdout in container
# mode, in VM mode (isolate's VMM, its virtio consoles), and through QEMU
# microvm's virtio consoles (virtio-serial with three `virtconsole` ports:
# the same hvc0..hvc2 the guest init uses) booting the same guest kernel and
# guest init; plus N MiB into VM mode's stdin. Two write patterns: large writes
# (`head -c N /dev/zero`) and 2-byte lines through a pipe (`yes x | head`).
# Each figure is the run's wall time minus the same mode's `/bin/true` run
# (boot and teardown), the best of RUNS. Prints a Markdown table; writes it
# to $BENCH_OUT/console.md.
#
#   tests/bench/console-emulated.sh [MIB [RUNS]]      (default 64 MiB, 2 runs)
set -euo pipefail
mib=${1:-64}
runs=${2:-2}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${BENCH_OUT:-$(mktemp -d)}
mkdir -p "$out"
export ISOLATE_HOME=${ISOLATE_HOME:-/var/lib/isolate}
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
n=$((mib * 1048576))

# The spec isolate's VMM would hand the guest, for each QEMU workload.
spec() {
    printf '{"argv":["/bin/sh","-c","%s"],"env":[["PATH","/usr/sbin:/usr/bin:/sbin:/bin"]],"cwd":"/","uid":0,"gid":0,' "$1"
    printf '"hostname":"isolate","root":"initramfs","read_only":false,"volumes":[],'
    printf '"memory_limit":null,"pids_limit":null,"loopback":true,"stdin":false}\n'
}
(cd "$root" && cargo build --quiet --release -p isolate-image --example make-initrd) >&2
mk=$root/${CARGO_TARGET_DIR:-target}/release/examples/make-initrd
for w in true:true zero:"head -c $n /dev/zero" yes:"yes x | head -c $n"; do
    spec "${w#*:}" >"$work/${w%%:*}.json"
    "$mk" --spec-json "$work/${w%%:*}.json" "$work/${w%%:*}.cpio" >/dev/null
done

kernel=$ISOLATE_HOME/kernel/vmlinux
cmdline="console=ttyS0 quiet reboot=k panic=-1 pci=off nomodule i8042.noaux i8042.nomux i8042.dumbkbd i8042.nopnp tsc=reliable no_timer_check"
# QEMU microvm with three console ports, hvc0..hvc2 as isolate's VMM
# offers; stdout (hvc0) goes to wc (through a FIFO), stderr and the control
# lines to files.
cat >"$work/qemu.sh" <<SCRIPT
#!/bin/sh
# usage: qemu.sh WORKLOAD   (true, zero, yes); prints the stdout byte count
rm -f /tmp/q.out; mkfifo /tmp/q.out
wc -c </tmp/q.out >/tmp/q.count &
qemu-system-x86_64 -M microvm,acpi=off -device i8042 -enable-kvm -cpu host -smp 1 -m 256 \\
    -nodefaults -no-user-config -nographic -no-reboot -serial null \\
    -device virtio-serial-device \\
    -chardev file,id=out,path=/tmp/q.out -device virtconsole,chardev=out \\
    -chardev file,id=err,path=/tmp/q.err -device virtconsole,chardev=err \\
    -chardev file,id=ctl,path=/tmp/q.ctl -device virtconsole,chardev=ctl \\
    -kernel $kernel -initrd /bench/\$1.cpio -append "$cmdline"
wait
cat /tmp/q.count
SCRIPT
cat >"$work/console.sh" <<SCRIPT
#!/bin/sh
# One line per figure: @@FIG NAME SECONDS BYTES
N=$n RUNS=$runs
best() { # best NAME CMD: the best wall time of RUNS runs, and the byte count
    b=""; bytes=0
    for i in \$(seq \$RUNS); do
        # busybox date has no %N: /proc/uptime has centiseconds.
        s=\$(cut -d' ' -f1 /proc/uptime); bytes=\$(sh -c "\$2" 2>/dev/null | tail -n 1); e=\$(cut -d' ' -f1 /proc/uptime)
        t=\$(awk -v a=\$s -v b=\$e 'BEGIN { printf "%d", (b - a) * 1000 }')
        if [ -z "\$b" ] || [ \$t -lt \$b ]; then b=\$t; fi
    done
    echo "@@FIG \$1 \$b \$bytes"
}
best container-true 'isolate --mode container /bin/true; echo 0'
best container-zero "isolate --mode container /bin/sh -c 'head -c \$N /dev/zero' | wc -c"
best container-yes "isolate --mode container /bin/sh -c 'yes x | head -c \$N' | wc -c"
best vm-true 'isolate --mode vm /bin/true; echo 0'
best vm-zero "isolate --mode vm /bin/sh -c 'head -c \$N /dev/zero' | wc -c"
best vm-yes "isolate --mode vm /bin/sh -c 'yes x | head -c \$N' | wc -c"
best vm-stdin-zero "head -c \$N /dev/zero | isolate --mode vm /bin/sh -c 'wc -c'"
best qemu-true '/bench/qemu.sh true'
best qemu-zero '/bench/qemu.sh zero'
best qemu-yes '/bench/qemu.sh yes'
SCRIPT
chmod +x "$work"/*.sh
echo "harness_test console-throughput /bench/console.sh" >"$work/bench.sh"

# shellcheck source=../emulated-host/isolate-payload.sh
. "$root/tests/emulated-host/isolate-payload.sh"
isolate_payload
payload+=(--exec "$(command -v qemu-system-x86_64)"
    --add /usr/share/qemu --add /usr/share/seabios --add "$work:/bench"
    --add "$(isolate_binary isolate):/usr/local/bin/isolate")
"$root/tests/emulated-host/run" --timeout "${EMULATED_HOST_TIMEOUT:-2400}" --mem 6144 \
    "${payload[@]}" -- "$work/bench.sh" | tee "$out/console-run.txt" >&2

python3 - "$out/console-run.txt" "$mib" >"$out/console.md" <<'PY'
import sys
figs = {}
for line in open(sys.argv[1]):
    p = line.split()
    if len(p) == 4 and p[0] == "@@FIG":
        figs[p[1]] = (int(p[2]), int(p[3]) if p[3].isdigit() else 0)
mib = int(sys.argv[2])
want = mib * 1048576
print(f"{mib} MiB through the workload's stdout (stdin where said), emulated KVM host.")
print("Seconds: wall time minus the same mode's `/bin/true` run; best of the runs.\n")
print("| path | pattern | seconds | MiB/s | vs container | bytes ok |")
print("|---|---|---:|---:|---:|---|")
rows = [("container", "zero", "container-zero", "large writes"), ("container", "yes", "container-yes", "`yes x \\| head`"),
        ("VM (isolate)", "zero", "vm-zero", "large writes"), ("VM (isolate)", "yes", "vm-yes", "`yes x \\| head`"),
        ("VM (isolate), stdin", "zero", "vm-stdin-zero", "large writes"),
        ("QEMU microvm virtio consoles", "zero", "qemu-zero", "large writes"), ("QEMU microvm virtio consoles", "yes", "qemu-yes", "`yes x \\| head`")]
for path, pat, key, label in rows:
    if key not in figs:
        print(f"| {path} | {label} | - | - | - | not measured |")
        continue
    base = figs.get(key.split("-")[0] + "-true", (0, 0))[0]
    secs = max(figs[key][0] - base, 1) / 1000
    c = figs.get("container-" + pat)
    ratio = ""
    if c:
        csecs = max(c[0] - figs.get("container-true", (0, 0))[0], 1) / 1000
        ratio = f"{secs / csecs:.1f}x"
    ok = "yes" if figs[key][1] == want else f"no ({figs[key][1]})"
    print(f"| {path} | {label} | {secs:.1f} | {mib / secs:.1f} | {ratio} | {ok} |")
print()
def net(key):
    base = figs.get(key.split("-")[0] + "-true", (0, 0))[0]
    return max(figs[key][0] - base, 1) / 1000
for pat, label in (("zero", "large writes"), ("yes", "`yes x | head`")):
    if f"vm-{pat}" in figs and f"container-{pat}" in figs:
        r = net(f"vm-{pat}") / net(f"container-{pat}")
        print(f"- VM stdout vs container, {label}: {r:.1f}× (target ≤ 5×: {'met' if r <= 5 else 'missed'})")
PY
cat "$out/console.md"
