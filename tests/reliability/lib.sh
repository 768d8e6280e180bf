# shellcheck shell=bash
# Sourced by tests/reliability/run and density: results and what isolate
# may leave on the host. Needs: ISOLATE_HOME, state (ISOLATE_STATE), work.

passed=0 failed=0 rows=()

# Milliseconds since boot (from /proc: busybox's date has no %N).
now_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }
result() { # result NAME pass|fail DETAIL (cut to 400 characters)
    local detail=${3:0:400}
    [ ${#3} -le 400 ] || detail+=" …"
    printf '%-34s %-4s %s\n' "$1" "$2" "$detail"
    rows+=("| $1 | $2 | $detail |")
    if [ "$2" = pass ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
}

# What isolate may leave behind, one line per object.
leftovers() {
    {
        find /sys/fs/cgroup -path '*/isolate/*' -type d 2>/dev/null | sed 's/^/cgroup /'
        grep -F "$state/containers" /proc/self/mountinfo | awk '{print "mount " $5}'
        losetup -a 2>/dev/null | grep -F "$ISOLATE_HOME/volumes" | sed 's/^/loop /'
        ls "$state"/*.json 2>/dev/null | sed 's/^/record /'
        for m in "$state"/containers/*; do
            [ -f "$m" ] && [ "$(head -c1 "$m")" = 1 ] && ! flock -n "$m" true && echo "busy-marker $m"
        done
        # A zombie holds nothing but its pid; reaping one whose isolate was
        # killed is the host init's job (some reap late).
        for name in isolate-init isolate-vmm; do
            for p in $(pgrep -x "$name"); do
                [ "$(awk '/^State:/ {print $2}' "/proc/$p/status" 2>/dev/null)" = Z ] || echo "process $name $p"
            done
        done
    } 2>/dev/null
}
new_leftovers() { leftovers | grep -vxF -f "$work/before" || true; }
check_clean() { # check_clean NAME: nothing new left now (a second look after 1 s)
    local left
    left=$(new_leftovers)
    [ -z "$left" ] || { sleep 1; left=$(new_leftovers); }
    [ -z "$left" ] || { sleep 2; left=$(new_leftovers); }
    if [ -z "$left" ]; then
        result "$1" pass "nothing left behind"
    else
        result "$1" fail "left behind: $(printf '%s' "$left" | head -n 5 | tr '\n' ';')"
    fi
}
