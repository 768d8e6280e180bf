"""Turns vm-emulated.sh's JSON into the VM section of docs/BENCHMARKS.md."""
import json
import statistics
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


hyper = load(sys.argv[1])
cmp = load(sys.argv[2])
out = []
out.append(
    "Inside the emulated KVM host (QEMU TCG with AMD SVM and nested paging; "
    "times are 10-50x those of hardware: read the ratio, not the absolute). "
    "Both boot the same guest kernel (`vmlinux`, PVH entry) and the same "
    "initramfs (busybox rootfs + isolate's guest init + the spec for "
    "`/bin/true`) to the same exit (the init's reset). Target: isolate "
    "≤ 0.3× QEMU microvm.\n"
)
if hyper:
    r = {x["command"]: x for x in hyper["results"]}
    out.append("| command | median s | mean s | stddev s |")
    out.append("|---|---:|---:|---:|")
    for x in hyper["results"]:
        out.append(
            f"| {x['command']} | {statistics.median(x['times']):.2f} | {x['mean']:.2f} | {(x['stddev'] or 0):.2f} |"
        )
    if "isolate --mode vm" in r and "qemu -M microvm" in r:
        q = statistics.median(r["isolate --mode vm"]["times"]) / statistics.median(
            r["qemu -M microvm"]["times"]
        )
        out.append("")
        out.append(f"- isolate vs QEMU microvm: {q:.2f}× (target ≤ 0.3×: {'met' if q <= 0.3 else 'missed'})")
else:
    out.append("The hyperfine run did not complete; see the run's log.")
if cmp:
    out.append("")
    out.append("`isolate compare --json -- /bin/true` in the emulated host:")
    out.append("")
    out.append("| mode | start-up median ms | to exit median ms | host overhead MiB | guest touched MiB | peak MiB | exit |")
    out.append("|---|---:|---:|---:|---:|---:|---:|")
    for m in cmp["modes"]:
        if m.get("unavailable"):
            out.append(f"| {m['mode']} | not available: {m['unavailable']} | | | | | |")
            continue
        f = lambda v, d=1: "-" if v is None else f"{v:.{d}f}"
        s = m.get("startup_ms") or {}
        w = m.get("wall_ms") or {}
        out.append(
            f"| {m['mode']} | {f(s.get('median'))} | {f(w.get('median'))} | {f(m.get('host_overhead_mib'))} | "
            f"{f(m.get('guest_touched_mib'))} | {f(m.get('peak_memory_mib'))} | {m.get('exit_code')} |"
        )
    out.append("")
    out.append("VMM overhead target: ≤ 3 MiB (host overhead = VMM RSS minus guest memory touched).")
print("\n".join(out))
