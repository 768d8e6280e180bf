#!/bin/sh
# The VM-mode monitor's jail, checked from the host on a running VMM: a
# VM workload is started with `isolate --mode vm`, its isolate-vmm process
# is found, and /proc must show, on every one of its threads, a uid and
# gid other than 0, no capabilities (CapInh/CapPrm/CapEff/CapBnd/CapAmb
# all 0), NoNewPrivs 1 and Seccomp 2 (filter); its own mnt, pid, net, ipc
# and uts namespaces; an empty root directory (no host file reachable);
# an empty environment. Then the isolate process is killed (SIGKILL) and
# the VMM must end with it.
#
# usage: tests/security/vmm-jail.sh
# environment: ISOLATE_BIN (default: isolate on PATH).
#
# Runs wherever VM mode runs (the emulated KVM host: POSIX sh and busybox
# suffice) and natively on a PVM host, where no standard guest kernel
# boots: there the guest kernel is let to try (ISOLATE_PVM_KERNEL=1) and
# spins on its vCPU, which is enough: the jail and the filters are in
# place before the first guest instruction runs.
#
# Closing line: "vmm-jail: N passed, N failed"; exit 1 if a check failed,
# 2 if it could not run (not root, no KVM, VM mode unavailable).
set -u

ISOLATE=${ISOLATE_BIN:-$(command -v isolate || echo isolate)}
if [ "$(id -u)" != 0 ]; then
    echo "vmm-jail: SKIP: needs root (VM mode jails its monitor in namespaces)" >&2
    exit 2
fi
if [ ! -e /dev/kvm ]; then
    echo "vmm-jail: SKIP: no /dev/kvm" >&2
    exit 2
fi
if [ -d /sys/module/kvm_pvm ]; then
    export ISOLATE_PVM_KERNEL=1
fi
export ISOLATE_BOOT_TIMEOUT=${ISOLATE_BOOT_TIMEOUT:-600s}

passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok    $*"; }
bad() { failed=$((failed + 1)); echo "FAIL  $*"; }

"$ISOLATE" --mode vm -- /bin/sleep 600 </dev/null >/dev/null 2>&1 &
ipid=$!
cleanup() {
    kill -9 "$ipid" 2>/dev/null
    [ -z "${vmm:-}" ] || kill -9 "$vmm" 2>/dev/null
    wait 2>/dev/null
}
trap cleanup EXIT INT TERM

# The VMM: isolate's child named isolate-vmm.
vmm=
field() { # field FILE NAME: the value of "NAME:" in a status file
    sed -n "s/^$2:[[:space:]]*//p" "$1"
}
sfield() { # sfield NAME: the value of "NAME:" in $status (a snapshot)
    printf '%s\n' "$status" | sed -n "s/^$1:[[:space:]]*//p"
}
find_vmm() {
    for stat in /proc/[0-9]*/stat; do
        set -- $(cat "$stat" 2>/dev/null) || continue
        [ "${2:-}" = "(isolate-vmm)" ] && [ "${4:-}" = "$ipid" ] && { echo "$1"; return; }
    done
}
# Started: its vcpu0 thread exists.
started() {
    for t in /proc/"$vmm"/task/*; do
        [ "$(cat "$t/comm" 2>/dev/null)" = vcpu0 ] && return 0
    done
    return 1
}
# Every thread has its filter (the vCPU runs only then).
filtered() {
    for t in /proc/"$vmm"/task/*; do
        [ "$(field "$t/status" Seccomp)" = 2 ] || return 1
    done
}
i=0
while :; do
    [ -n "$vmm" ] || vmm=$(find_vmm)
    if [ -n "$vmm" ] && started; then break; fi
    if ! kill -0 "$ipid" 2>/dev/null || [ "$i" -ge 1200 ]; then
        echo "vmm-jail: no VMM with a vCPU thread within 120 s (isolate --mode vm -- /bin/sleep 600); try: $ISOLATE --mode vm -- /bin/true" >&2
        exit 2
    fi
    i=$((i + 1))
    sleep 0.1
done
# Threads install their filters as they start: give them 5 s.
i=0
while ! filtered && [ "$i" -lt 50 ]; do
    i=$((i + 1))
    sleep 0.1
done
echo "vmm-jail: isolate pid $ipid, VMM pid $vmm (host)"

for t in /proc/"$vmm"/task/*; do
    # One snapshot per thread: a thread may end meanwhile (stdin's, at
    # end of input), and then it is skipped, not judged.
    status=$(cat "$t/status" 2>/dev/null)
    [ -n "$status" ] || continue
    name="thread $(basename "$t") ($(sfield Name))"
    uids=$(sfield Uid) gids=$(sfield Gid)
    case " $uids " in *" 0 "*|"  ") bad "$name: Uid $uids" ;; *) ok "$name: Uid $uids" ;; esac
    case " $gids " in *" 0 "*|"  ") bad "$name: Gid $gids" ;; *) ok "$name: Gid $gids" ;; esac
    [ -z "$(sfield Groups)" ] && ok "$name: no groups" || bad "$name: Groups $(sfield Groups)"
    for cap in CapInh CapPrm CapEff CapBnd CapAmb; do
        v=$(sfield "$cap")
        [ "$v" = 0000000000000000 ] && ok "$name: $cap $v" || bad "$name: $cap $v"
    done
    v=$(sfield NoNewPrivs)
    [ "$v" = 1 ] && ok "$name: NoNewPrivs 1" || bad "$name: NoNewPrivs $v"
    v=$(sfield Seccomp)
    [ "$v" = 2 ] && ok "$name: Seccomp 2" || bad "$name: Seccomp $v"
done

for ns in mnt pid net ipc uts; do
    theirs=$(readlink "/proc/$vmm/ns/$ns") ours=$(readlink "/proc/self/ns/$ns")
    [ -n "$theirs" ] && [ "$theirs" != "$ours" ] && ok "own $ns namespace ($theirs)" ||
        bad "$ns namespace shared with the host ($theirs)"
done

entries=$(ls -A "/proc/$vmm/root/" 2>&1)
[ -z "$entries" ] && ok "root directory is empty" || bad "root directory holds: $entries"
for p in etc/passwd bin/sh dev/kvm proc/self; do
    [ -e "/proc/$vmm/root/$p" ] && bad "/$p reachable from the VMM" || ok "/$p not reachable"
done
[ ! -s "/proc/$vmm/environ" ] && ok "empty environment" || bad "environment: $(tr '\0' ' ' <"/proc/$vmm/environ")"

# A killed isolate ends the VM (its config pipe closes).
kill -9 "$ipid"
wait "$ipid" 2>/dev/null
alive() { # the VMM still runs (a zombie waiting for its new parent has ended)
    [ "$(cat "/proc/$vmm/comm" 2>/dev/null)" = isolate-vmm ] &&
        case $(field "/proc/$vmm/status" State) in Z*|X*|"") false ;; *) true ;; esac
}
i=0
while alive && [ "$i" -lt 300 ]; do
    i=$((i + 1))
    sleep 0.1
done
alive && bad "the VMM outlived its killed isolate" || ok "the VMM ended with its killed isolate"
vmm=
# Nothing of the VMM's jail stays on the host (its root existed only in its
# mount namespace); the cgroup of the killed isolate is removed here (the
# next VM start would remove it too).
grep -q isolate-vmm /proc/mounts && bad "a mount of the VMM's jail is on the host" ||
    ok "no mount of the VMM's jail on the host"
i=0
for d in /sys/fs/cgroup/isolate/vm-run-"$ipid"-* /sys/fs/cgroup/*/isolate/vm-run-"$ipid"-*; do
    # Busy until the ended VMM is reaped by its new parent.
    while [ -d "$d" ] && ! rmdir "$d" 2>/dev/null && [ "$i" -lt 50 ]; do
        i=$((i + 1))
        sleep 0.1
    done
done

echo "vmm-jail: $passed passed, $failed failed"
[ "$failed" = 0 ]
