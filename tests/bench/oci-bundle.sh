# shellcheck shell=bash
# Sourced by the container benchmarks: make_bundle DIR ROOTFS writes an OCI
# bundle in DIR (for runc and crun) of a copy of ROOTFS that runs /bin/true
# with the benchmarks' limits (256 MiB memory, swap off, 100 pids).
make_bundle() {
    local dir=$1 rootfs=$2
    mkdir -p "$dir"
    cp -a "$rootfs" "$dir/rootfs"
    (cd "$dir" && runc spec)
    python3 - "$dir/config.json" <<'PY'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"]["args"] = ["/bin/true"]
c["process"]["terminal"] = False
c["root"]["readonly"] = False
c["linux"].setdefault("resources", {})
c["linux"]["resources"]["memory"] = {"limit": 268435456, "swap": 268435456}
c["linux"]["resources"]["pids"] = {"limit": 100}
json.dump(c, open(p, "w"), indent=2)
PY
}
