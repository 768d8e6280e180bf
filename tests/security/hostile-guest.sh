#!/bin/sh
# VM mode against a hostile guest: the guest's init is replaced by
# tests/security/hostile-init.c, which sends garbage, an endless control
# line, a flood on every port, reports with out-of-range numbers, and
# terminal escapes on the kernel console. Each run must end by itself, soon,
# with exit 125 and an isolate error that names what the guest did, with the
# monitor's memory bounded, no raw control characters in isolate's own
# messages (nor anywhere in the --console-log echo of the guest's kernel
# console), and no monitor process left.
#
# Runs in the emulated KVM host as part of tests/emulated-host/suite.sh.
#
# usage: tests/security/hostile-guest.sh HOSTILE-INIT-BINARY
# environment: ISOLATE_BIN, ISOLATE_HOME; needs a KVM that boots Linux
# guests (run it in the emulated KVM host). Closing line:
# "hostile guest: N passed, N failed". POSIX sh (busybox).
set -u
init=${1:?usage: hostile-guest.sh HOSTILE-INIT-BINARY}
ISOLATE=${ISOLATE_BIN:-isolate}
ISOLATE_HOME=${ISOLATE_HOME:-/var/lib/isolate}
limit_kib=$((256 * 1024)) # the monitor's peak RSS must stay below this
work=$(mktemp -d "${TMPDIR:-/tmp}/hostile-guest.XXXXXX")
trap 'rm -rf "$work"' EXIT
passed=0 failed=0
say() { printf '%-10s %-4s %s\n' "$1" "$2" "$3"; }
# Pids of isolate-vmm processes (busybox has no pgrep everywhere).
vmm_pids() {
    for comm in /proc/[0-9]*/comm; do
        [ "$(cat "$comm" 2>/dev/null)" = isolate-vmm ] || continue
        p=${comm#/proc/}
        echo "${p%/comm}"
    done
}
# C0 controls but tab and newline, DEL, and C1 controls encoded in UTF-8.
raw_controls=$(printf '[\001-\010\013-\037\177]|\302[\200-\237]')

# mode:text isolate's error must contain (what the guest did wrong).
for case in \
    "garbage:not a control message" \
    "lies:exit code 99999" \
    "oversize:longer than 65536 bytes" \
    "flood:longer than 65536 bytes" \
    "all:not a control message" \
    "console:not a control message"; do
    mode=${case%%:*} want=${case#*:}
    root=$work/root-$mode
    cp -a "$ISOLATE_HOME/rootfs" "$root"
    echo "$mode" >"$root/hostile-mode"
    opts=
    [ "$mode" != console ] || opts=--console-log
    start=$(date +%s)
    # shellcheck disable=SC2086 # $opts is empty or one word
    # The outer timeout only keeps a hung isolate from hanging the suite.
    ISOLATE_INIT=$init timeout -s KILL 150 /usr/bin/env time -v "$ISOLATE" --mode vm \
        --rootfs "$root" --timeout 40s $opts /bin/true >"$work/out" 2>"$work/err"
    code=$?
    took=$(($(date +%s) - start))
    rm -rf "$root"
    # The monitor is the largest process isolate waited for.
    rss=$(sed -n 's/.*Maximum resident set size (kbytes): *//p' "$work/err" | tail -n 1)
    # isolate's error is its last message; the workload's stderr before it
    # may not end with a newline.
    grep -ao 'isolate: .*' "$work/err" | tail -n 1 >"$work/msg"
    msg=$(cut -c1-200 "$work/msg")
    why=
    [ "$code" = 125 ] || why="$why exit $code (want 125);"
    case $msg in *"$want"*) ;; *) why="$why the error does not say \"$want\";" ;; esac
    [ "$took" -le 70 ] || why="$why took $took s;"
    [ -n "$rss" ] && [ "$rss" -lt "$limit_kib" ] || why="$why monitor peak RSS ${rss:-?} KiB (limit $limit_kib);"
    # The workload's own stderr passes through as it is (as in container
    # mode); isolate's messages about the guest must carry no raw control
    # characters.
    if tr -d '\n\t' <"$work/msg" | LC_ALL=C grep -Eq "$raw_controls"; then
        why="$why raw control characters in isolate's own messages;"
    fi
    if [ "$mode" = console ]; then
        # Only the console carried escapes: all of stderr is isolate's echo
        # of it (and time's report), escaped, with the escapes visible.
        if tr -d '\n\t' <"$work/err" | LC_ALL=C grep -Eq "$raw_controls"; then
            why="$why raw control characters in the --console-log echo;"
        fi
        grep -aqF '\x1b]0;hostile title\x07' "$work/err" ||
            why="$why the --console-log echo does not show the escapes;"
    fi
    left=$(vmm_pids)
    if [ -n "$left" ]; then
        why="$why an isolate-vmm process was left;"
        # shellcheck disable=SC2086 # one pid per word
        kill -9 $left
    fi
    if [ -z "$why" ]; then
        passed=$((passed + 1))
        say "$mode" pass "exit $code in $took s, monitor peak ${rss} KiB: $msg"
    else
        failed=$((failed + 1))
        say "$mode" FAIL "$why $msg"
    fi
done
echo "hostile guest: $passed passed, $failed failed"
[ "$failed" = 0 ]
