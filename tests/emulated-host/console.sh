#!/usr/bin/env bash
# VM mode's console data path alone, in the emulated KVM host: the tests of
# console-tests.sh (also part of suite.sh), with a chosen size.
#
# usage: console.sh [--mib N] [--timeout SECS] [-- MORE-RUN-OPTIONS...]
#   --mib      MiB per bulk test (default 64: the on-demand profile;
#              suite.sh runs 16)
#   --timeout  whole run, boot included (default 1800)
# environment: ISOLATE_HOME (default /var/lib/isolate), CONSOLE_LIMIT (seconds
# one isolate run may take inside, default 300).
# Needs ./install.sh --no-demo first. Exit status as tests/emulated-host/run.

# shellcheck source-path=SCRIPTDIR
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
export ISOLATE_HOME=${ISOLATE_HOME:-/var/lib/isolate}

mib=64 timeout=1800 extra=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --mib) mib=${2:?--mib needs N}; shift ;;
        --timeout) timeout=${2:?--timeout needs SECS}; shift ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "console.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

# shellcheck source=isolate-payload.sh
. "$here/isolate-payload.sh"
isolate_payload || exit 2

tmp=$(mktemp -d "${TMPDIR:-/tmp}/emulated-host-console.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
{
    echo "CONSOLE_MIB=$mib CONSOLE_SLOW_READER=1 CONSOLE_BULK_STDIN=1"
    [[ -z ${CONSOLE_LIMIT:-} ]] || echo "CONSOLE_LIMIT=$CONSOLE_LIMIT"
    cat "$here/console-tests.sh"
} >"$tmp/console.sh"
exec "$here/run" --timeout "$timeout" --mem 6144 "${payload[@]}" "${extra[@]}" -- "$tmp/console.sh"
