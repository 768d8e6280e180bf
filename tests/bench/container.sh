#!/usr/bin/env bash
# Container start-to-exit latency of `/bin/true` in the same busybox rootfs,
# side by side in one hyperfine run: isolate (all namespaces, memory + pids
# limits), `runc run` (an OCI bundle of the same rootfs, same limits),
# `bwrap --unshare-all` (no cgroups) and bare `unshare` — and `crun` where
# the host has cgroup v2. Writes a Markdown table to stdout and hyperfine's
# JSON to $BENCH_OUT/container.json.
#
#   tests/bench/container.sh [RUNS]
set -euo pipefail
runs=${1:-20}
out=${BENCH_OUT:-$(mktemp -d)}
mkdir -p "$out"
rootfs=${ISOLATE_ROOTFS:-${ISOLATE_HOME:-/var/lib/isolate}/rootfs}
isolate=${ISOLATE_BIN:-$(command -v isolate)}
[ -d "$rootfs" ] || { echo "container.sh: no rootfs at $rootfs (run ./install.sh)" >&2; exit 2; }

work=$(mktemp -d)
trap 'runc delete -f isolate-bench >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

# An OCI bundle of the same rootfs with the same limits for runc/crun.
# shellcheck source=oci-bundle.sh
. "$(dirname "${BASH_SOURCE[0]}")/oci-bundle.sh"
make_bundle "$work/bundle" "$rootfs"

cmds=(
    -n "isolate container" "$isolate --mode container -m 256m --pids-limit 100 /bin/true"
    -n "runc run" "runc run --bundle $work/bundle isolate-bench"
    -n "bwrap --unshare-all" "bwrap --unshare-all --bind $rootfs / --proc /proc --dev /dev /bin/true"
    -n "unshare (bare)" "unshare -p -f -m -n -u -i --mount-proc /bin/true"
)
if command -v crun >/dev/null && [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
    cmds+=(-n "crun run" "crun run --bundle $work/bundle isolate-bench-crun")
else
    echo "container.sh: crun skipped: $(command -v crun >/dev/null && echo 'host cgroups are not unified v2 (crun refuses hybrid)' || echo 'crun not installed')" >&2
fi
hyperfine -N --warmup 3 --runs "$runs" --export-json "$out/container.json" "${cmds[@]}" >&2

python3 - "$out/container.json" <<'PY'
import json, sys, statistics
r = json.load(open(sys.argv[1]))["results"]
by = {x["command"]: x for x in r}
iso = statistics.median(by["isolate container"]["times"]) * 1e3
print("| command | median ms | mean ms | stddev ms | isolate ÷ this |")
print("|---|---:|---:|---:|---:|")
for x in r:
    med = statistics.median(x["times"]) * 1e3
    print(f"| {x['command']} | {med:.1f} | {x['mean']*1e3:.1f} | {(x['stddev'] or 0)*1e3:.1f} | {iso/med:.2f}× |")
def ratio(name):
    return iso / (statistics.median(by[name]["times"]) * 1e3) if name in by else None
print()
for name, target in [("runc run", 0.25), ("bwrap --unshare-all", 1.0), ("unshare (bare)", 1.5)]:
    q = ratio(name)
    if q is not None:
        print(f"- isolate vs {name}: {q:.2f}× (target ≤ {target}×: {'met' if q <= target else 'missed'})")
PY
