#!/usr/bin/env bash
# Runs `isolate compare` inside the emulated KVM host, where both modes are
# real: VM mode on KVM with nested paging, container mode on cgroup v2.
#
# usage: compare.sh [ISOLATE-COMPARE-ARGS...]
#   default: --runs 5 -- /bin/sh -c 'echo hi'
# environment: ISOLATE_HOME (default /var/lib/isolate), EMULATED_HOST_TIMEOUT
# (seconds, default 1800).
# Needs ./install.sh --no-demo first. Exit status as tests/emulated-host/run.
# Absolute times inside the emulated host are 10-50x those of hardware:
# read the two modes against each other, not against other tables.

# shellcheck source-path=SCRIPTDIR
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
export ISOLATE_HOME=${ISOLATE_HOME:-/var/lib/isolate}
# shellcheck source=isolate-payload.sh
. "$here/isolate-payload.sh"
isolate_payload || exit 2

args=("$@")
[[ ${#args[@]} -gt 0 ]] || args=(--runs 5 -- /bin/sh -c 'echo hi')

exec "$here/run" --timeout "${EMULATED_HOST_TIMEOUT:-1800}" "${payload[@]}" \
    --name isolate-compare -- "$(isolate_binary isolate)" compare "${args[@]}"
