#!/usr/bin/env bash
# Container start-to-exit of `/bin/true` on cgroup v2, side by side inside
# the emulated KVM host (tests/emulated-host): isolate (all namespaces,
# memory + pids limits), `runc run` and `crun run` (an OCI bundle of the same
# rootfs, same limits), `bwrap --unshare-all` and bare `unshare`. crun only
# runs on cgroup v2 hosts (it refuses hybrid ones like this machine's).
# Times there are 10-50x those of hardware: read the ratios.
#
#   tests/bench/container-emulated.sh [RUNS]
set -euo pipefail
runs=${1:-10}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${BENCH_OUT:-$(mktemp -d)}
mkdir -p "$out"
export ISOLATE_HOME=${ISOLATE_HOME:-/var/lib/isolate}
# The peers come from Debian; installed here when missing (as root).
for tool in runc crun bwrap hyperfine; do
    pkg=$tool
    [ "$tool" != bwrap ] || pkg=bubblewrap
    command -v "$tool" >/dev/null || apt-get install -y -q "$pkg" >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "$pkg" >/dev/null 2>&1; } ||
        { echo "container-emulated.sh: $tool is not installed and apt-get install $pkg failed" >&2; exit 2; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# shellcheck source=oci-bundle.sh
. "$(dirname "${BASH_SOURCE[0]}")/oci-bundle.sh"
make_bundle "$work/bundle" "$ISOLATE_HOME/rootfs"
cat >"$work/bench.sh" <<SCRIPT
#!/bin/sh
hyperfine -N --warmup 3 --runs $runs --export-json /tmp/ct.json \\
    -n 'isolate container' 'isolate --mode container -m 256m --pids-limit 100 /bin/true' \\
    -n 'runc run' 'runc run --bundle /benchct/bundle b1' \\
    -n 'crun run' 'crun run --bundle /benchct/bundle b2' \\
    -n 'bwrap --unshare-all' 'bwrap --unshare-all --bind $ISOLATE_HOME/rootfs / --proc /proc --dev /dev /bin/true' \\
    -n 'unshare (bare)' 'unshare -p -f -m -n -u -i --mount-proc /bin/true' || exit 1
echo @@JSON; cat /tmp/ct.json; echo
SCRIPT
chmod +x "$work/bench.sh"
echo 'harness_test container-peers-v2 /benchct/bench.sh' >"$work/suite.sh"

# shellcheck source=../emulated-host/isolate-payload.sh
. "$root/tests/emulated-host/isolate-payload.sh"
isolate_payload
payload+=(--exec "$(command -v hyperfine)" --exec "$(command -v runc)" --exec "$(command -v crun)"
    --exec "$(command -v bwrap)" --exec "$(command -v unshare)"
    --add "$work:/benchct" --add "$(isolate_binary isolate):/usr/local/bin/isolate")
"$root/tests/emulated-host/run" --timeout "${EMULATED_HOST_TIMEOUT:-1200}" "${payload[@]}" \
    -- "$work/suite.sh" | tee "$out/ct-v2-run.txt"
awk '$0 == "@@JSON" {f=1; next} /^(--- |=== |@@)/ {f=0} f' "$out/ct-v2-run.txt" | sed -n '/^{/,/^}/p' >"$out/container-v2.json"
python3 - "$out/container-v2.json" <<'PY'
import json, sys, statistics
r = json.load(open(sys.argv[1]))["results"]
by = {x["command"]: x for x in r}
iso = statistics.median(by["isolate container"]["times"]) * 1e3
print("| command (cgroup v2, emulated host) | median ms | isolate ÷ this |")
print("|---|---:|---:|")
for x in r:
    med = statistics.median(x["times"]) * 1e3
    print(f"| {x['command']} | {med:.1f} | {iso/med:.2f}× |")
PY
