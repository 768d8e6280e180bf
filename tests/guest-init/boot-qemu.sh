#!/usr/bin/env bash
# Boots isolate's guest kernel with the guest init (crates/isolate-init) and
# the default rootfs under QEMU's microvm machine (TCG) as a reference VMM,
# and checks what the init reports.
#
#   tests/guest-init/boot-qemu.sh [CASE...]
#
# Two ways of talking to the init are checked:
#   console  no virtio consoles: the init falls back to /dev/console (ttyS0)
#            for stdio and writes control lines prefixed "ISOLATE-CONTROL ";
#   ports    three virtio consoles (hvc0 stdio, hvc1 stderr, hvc2 control),
#            as isolate's VMM attaches them, wired to FIFOs.
# Each case boots one VM with an initrd made of the cached root archive
# (isolate-image, example make-initrd) and a spec archive.
#
# Environment: ISOLATE_HOME (default /var/lib/isolate: kernel/, rootfs/,
# init/), ISOLATE_KERNEL (a kernel file instead of $ISOLATE_HOME/kernel),
# BOOT_TIMEOUT (seconds per boot, default 120), BOOT_MACHINE (default
# microvm,acpi=off), CARGO_TARGET_DIR.
# Exit status: 0 if every case passed (or the whole test was skipped with a
# SKIP line naming the reason), 1 otherwise.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HOME_DIR=${ISOLATE_HOME:-/var/lib/isolate}
TIMEOUT=${BOOT_TIMEOUT:-120}
MACHINE=${BOOT_MACHINE:-microvm,acpi=off}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
CMDLINE="console=ttyS0 reboot=k panic=-1 quiet"

PASSES=0 FAILS=0
pass() { PASSES=$((PASSES + 1)); printf 'PASS  %-8s %-16s %s\n' "$1" "$2" "${3:-}"; }
fail() { FAILS=$((FAILS + 1));   printf 'FAIL  %-8s %-16s %s\n' "$1" "$2" "${3:-}"; }
info() { printf '....  %s\n' "$*"; }
die()  { printf 'FAIL  setup: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------ prerequisites
KERNEL=${ISOLATE_KERNEL:-}
if [[ -z "$KERNEL" ]]; then
    for k in "$HOME_DIR/kernel/vmlinux" "$HOME_DIR/kernel/bzImage"; do
        [[ -f "$k" ]] && { KERNEL=$k; break; }
    done
fi
if [[ -z "$KERNEL" || ! -f "$KERNEL" ]]; then
    echo "SKIP guest-init boot-qemu: no guest kernel (${KERNEL:-$HOME_DIR/kernel/{vmlinux,bzImage}} missing; run guest-kernel/build.sh)"
    exit 0
fi
if ! command -v qemu-system-x86_64 >/dev/null; then
    info "installing qemu-system-x86"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends qemu-system-x86 >/dev/null 2>&1 ||
        die "qemu-system-x86_64 missing and qemu-system-x86 could not be installed"
fi

info "building the rootfs, the guest init and make-initrd"
"$REPO/rootfs/build.sh" 2>&1 | sed 's/^/      /'
(cd "$REPO" && cargo build --quiet -p isolate-image --example make-initrd) || die "cannot build make-initrd"
MAKE_INITRD="$CARGO_TARGET_DIR/debug/examples/make-initrd"

WORK=$(mktemp -d /tmp/isolate-init-qemu.XXXXXX)
QEMU_PID=
cleanup() {
    if [[ -n "$QEMU_PID" ]]; then kill "$QEMU_PID" 2>/dev/null || true; fi
    jobs -p | xargs -r kill 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# spec ARGV_JSON [KEY=VALUE...]: a GuestSpec; keys: hostname read_only memory
# pids stdin volumes (JSON) uid gid cwd
spec() {
    local argv=$1; shift
    local hostname=isolate-test read_only=false memory=67108864 pids=64 stdin=false volumes='[]'
    local uid=0 gid=0 cwd=/ kv
    for kv in "$@"; do local "${kv%%=*}=${kv#*=}"; done
    printf '{"argv":%s,"env":[["PATH","/usr/sbin:/usr/bin:/sbin:/bin"],["HOME","/root"]],' "$argv"
    printf '"cwd":"%s","uid":%s,"gid":%s,"hostname":"%s","root":"initramfs","read_only":%s,' \
        "$cwd" "$uid" "$gid" "$hostname" "$read_only"
    printf '"volumes":%s,"memory_limit":%s,"pids_limit":%s,"loopback":true,"stdin":%s}\n' \
        "$volumes" "$memory" "$pids" "$stdin"
}

# Per boot: ROOT_BLOCK (guest device of a block-image root, else the root is
# the initramfs) and VOLUMES (image files attached after it).
ROOT_BLOCK=
VOLUMES=()

# boot NAME MODE SPEC_JSON [STDIN_TEXT [CONTROL_LINE]]: boots one VM; in
# ports mode, once the guest reports "started", writes STDIN_TEXT to hvc0 and
# CONTROL_LINE (default stdin_eof) to hvc2. Leaves, in $WORK/NAME.*:
#   console (ttyS0, \r removed), control (control lines, prefix removed),
#   out/err (workload stdout/stderr: ports mode only). Sets RC and WALL.
boot() {
    local name=$1 mode=$2 spec_json=$3 stdin_text=${4:-} control_text=${5:-}
    # Like isolate's VMM, the end of stdin says how many bytes were sent:
    # the init reads hvc0 until it has them (the message travels on another
    # port than the data and may overtake it).
    [[ -n $control_text ]] ||
        control_text="{\"t\":\"stdin_eof\",\"bytes\":$(printf '%s' "$stdin_text" | wc -c)}"
    local w="$WORK/$name"
    printf '%s' "$spec_json" >"$w.spec.json"
    local mk=("$MAKE_INITRD" --spec-json "$w.spec.json")
    [[ -n "$ROOT_BLOCK" ]] && mk+=(--block "$ROOT_BLOCK")
    local image
    image=$("${mk[@]}" "$w.initrd" 2>"$w.make.log") || {
        cat "$w.make.log"
        die "make-initrd failed"
    }
    local args=(-M "$MACHINE" -accel tcg -cpu max -m 256M -smp 1
        -nodefaults -no-user-config -nographic -no-reboot
        -serial "file:$w.serial" -kernel "$KERNEL" -initrd "$w.initrd" -append "$CMDLINE")
    # Block devices in guest order: the root image (vda), then the volumes.
    local drives=() i=0 d
    [[ -n "$ROOT_BLOCK" ]] && drives+=("$image,readonly=on")
    drives+=("${VOLUMES[@]}")
    for d in "${drives[@]}"; do
        args+=(-drive "if=none,id=blk$i,format=raw,file=$d" -device "virtio-blk-device,drive=blk$i")
        i=$((i + 1))
    done
    local readers=()
    if [[ $mode == ports ]]; then
        local n
        for n in 0 1 2; do
            mkfifo "$w.p$n.in" "$w.p$n.out"
            args+=(-device virtio-serial-device -chardev "pipe,id=hvc$n,path=$w.p$n"
                -device "virtconsole,chardev=hvc$n")
        done
    fi
    local t0 t1
    t0=$(date +%s.%N)
    qemu-system-x86_64 "${args[@]}" >"$w.qemu.out" 2>&1 &
    QEMU_PID=$!
    if [[ $mode == ports ]]; then
        # QEMU opens the FIFOs read-write, so these opens do not block.
        cat "$w.p0.out" >"$w.out" & readers+=($!)
        cat "$w.p1.out" >"$w.err" & readers+=($!)
        cat "$w.p2.out" >"$w.control" & readers+=($!)
        exec {in0}>"$w.p0.in" {in2}>"$w.p2.in"
    fi
    local waited=0 eof_sent=0
    while kill -0 "$QEMU_PID" 2>/dev/null && ((waited < TIMEOUT * 10)); do
        if [[ $mode == ports && $eof_sent == 0 ]] && grep -q '"t":"started"' "$w.control" 2>/dev/null; then
            # Like isolate's VMM, send nothing before the guest's first
            # control message: until the init has put the ports in raw mode,
            # the tty would echo input back (with \r\n). Then stdin, then
            # its end.
            [[ -n "$stdin_text" ]] && printf '%s' "$stdin_text" >&"$in0"
            printf '%s\n' "$control_text" >&"$in2"
            eof_sent=1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    if kill -0 "$QEMU_PID" 2>/dev/null; then
        kill "$QEMU_PID" 2>/dev/null || true
        wait "$QEMU_PID" 2>/dev/null || true
        RC=timeout
    else
        RC=0
        wait "$QEMU_PID" || RC=$?
    fi
    QEMU_PID=
    t1=$(date +%s.%N)
    WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    if [[ $mode == ports ]]; then
        exec {in0}>&- {in2}>&-
        wait "${readers[@]}" 2>/dev/null || true
    fi
    tr -d '\r' <"$w.serial" >"$w.console"
    if [[ $mode == console ]]; then
        sed -n 's/^.*ISOLATE-CONTROL //p' "$w.console" >"$w.control"
    fi
}

show() {
    local w="$WORK/$1" f
    for f in console control out err; do
        [[ -s "$w.$f" ]] || continue
        echo "      ----- $1.$f -----"
        tail -n 15 "$w.$f" | cat -A | sed 's/^/      | /'
    done
}

# check NAME MODE WHAT COND...: COND is a command; PASS if it succeeds.
check() {
    local name=$1 mode=$2 what=$3; shift 3
    if [[ $RC == timeout ]]; then
        fail "$mode" "$name" "$what: VM did not end within ${TIMEOUT}s"
        show "$name"
    elif "$@"; then
        local up
        up=$(sed -n 's/^\[ *\([0-9.]*\)\] reboot: Restarting.*/\1/p' "$WORK/$name.console" | tail -n1)
        pass "$mode" "$name" "$what (wall ${WALL}s, guest ${up:-?}s)"
    else
        fail "$mode" "$name" "$what"
        show "$name"
    fi
}

has_line() { grep -qxF -- "$2" "$WORK/$1"; }                 # has_line FILE LINE
has_text() { grep -qF -- "$2" "$WORK/$1"; }                  # has_text FILE TEXT
lacks_text() { ! grep -qF -- "$2" "$WORK/$1"; }
exit_is() { has_text "$1.control" "{\"t\":\"exit\",\"status\":$2,"; }
same_bytes() { cmp -s "$WORK/$1" <(printf '%b' "$2"); }     # same_bytes FILE ESCAPED_TEXT

wanted() { [[ ${#SELECTED[@]} == 0 ]] || [[ " ${SELECTED[*]} " == *" $1 "* ]]; }
SELECTED=("$@")

info "kernel $KERNEL; QEMU $(qemu-system-x86_64 --version | head -n1 | awk '{print $4}'), $MACHINE, TCG"

# ------------------------------------------------------------ console fallback
M=console
if wanted echo; then
    boot echo $M "$(spec '["echo","hi"]')"
    check echo $M "output 'hi', started, exit 0" \
        eval 'has_line echo.console hi && has_text echo.control "\"t\":\"started\"" && exit_is echo "{\"exited\":0}"'
fi
if wanted exit3; then
    boot exit3 $M "$(spec '["sh","-c","exit 3"]')"
    check exit3 $M "exit 3 reported" exit_is exit3 '{"exited":3}'
fi
if wanted missing; then
    boot missing $M "$(spec '["no-such-command"]')"
    check missing $M "not_found reported, no exit" \
        eval 'has_text missing.control "{\"t\":\"error\",\"exec\":\"not_found\"" && lacks_text missing.control "\"t\":\"exit\""'
fi
if wanted noexec; then
    boot noexec $M "$(spec '["/etc/passwd"]')"
    check noexec $M "not_executable reported" has_text noexec.control '{"t":"error","exec":"not_executable"'
fi
if wanted hostname; then
    H="guest-$RANDOM"
    boot hostname $M "$(spec '["hostname"]' hostname=$H)"
    check hostname $M "hostname is $H" eval "has_line hostname.console $H && exit_is hostname '{\"exited\":0}'"
fi
if wanted limits; then
    boot limits $M "$(spec '["sh","-c","cat /sys/fs/cgroup/workload/memory.max /sys/fs/cgroup/workload/pids.max /proc/self/cgroup; cat /sys/class/net/lo/operstate /sys/class/net/lo/flags"]' memory=50331648 pids=32)"
    check limits $M "memory.max, pids.max, cgroup, lo up" \
        eval 'has_line limits.console 50331648 && has_line limits.console 32 && has_line limits.console 0::/workload && has_line limits.console 0x9'
fi
if wanted readonly; then
    boot readonly $M "$(spec '["sh","-c","touch /x 2>/dev/null && echo root-writable || echo root-read-only; touch /tmp/y && echo tmp-writable"]' read_only=true)"
    check readonly $M "root read-only, /tmp writable" \
        eval 'has_line readonly.console root-read-only && has_line readonly.console tmp-writable'
fi
if wanted writable; then
    boot writable $M "$(spec '["sh","-c","echo x > /x && cat /x && ls /isolate"]')"
    check writable $M "root writable, spec removed" \
        eval 'has_line writable.console x && lacks_text writable.console spec.json && exit_is writable "{\"exited\":0}"'
fi
if wanted user; then
    boot user $M "$(spec '["sh","-c","id -u; id -g; pwd; touch /root/x 2>/dev/null || echo denied"]' uid=65534 gid=65534 cwd=/tmp)"
    check user $M "uid/gid 65534, cwd /tmp, no root access" \
        eval 'has_line user.console 65534 && has_line user.console /tmp && has_line user.console denied && exit_is user "{\"exited\":0}"'
fi
if wanted setup-error; then
    V='[{"device":"/dev/vdq","target":"/data","read_only":false,"fstype":"ext4"}]'
    boot setup-error $M "$(spec '["true"]' volumes="$V")"
    check setup-error $M "missing volume device: setup error, clean power-off" \
        eval 'has_text setup-error.control "{\"t\":\"error\",\"exec\":null,\"message\":\"cannot mount /dev/vdq" && lacks_text setup-error.console "Kernel panic" && [[ $RC == 0 ]]'
fi
if wanted signal; then
    boot signal $M "$(spec '["sh","-c","kill -TERM $$"]')"
    check signal $M "SIGTERM reported as signaled 15" exit_is signal '{"signaled":15}'
fi
if wanted oom; then
    boot oom $M "$(spec '["sh","-c","x=$(yes | head -c 64000000); echo survived"]' memory=16777216)"
    check oom $M "memory limit hit: oom_killed" \
        eval 'exit_is oom "\"oom_killed\"" && lacks_text oom.console survived'
fi

# ------------------------------------------------------------ block root and volumes
volume_image() { # volume_image FILE: a fresh 16 MiB ext4 volume
    rm -f "$1"
    truncate -s 16M "$1" && mkfs.ext4 -q -F "$1" >/dev/null
}
if wanted block; then
    ROOT_BLOCK=/dev/vda
    boot block $M "$(spec '["sh","-c","cat /proc/mounts; echo x > /etc/x && cat /etc/x"]')"
    ROOT_BLOCK=
    check block $M "block image root with a writable overlay" \
        eval 'grep -q "^overlay / overlay" $WORK/block.console && has_line block.console x && exit_is block "{\"exited\":0}"'
fi
if wanted block-ro; then
    ROOT_BLOCK=/dev/vda
    boot block-ro $M "$(spec '["sh","-c","touch /x 2>/dev/null && echo root-writable || echo root-read-only; touch /tmp/y && echo tmp-writable"]' read_only=true)"
    ROOT_BLOCK=
    check block-ro $M "read-only block root, /tmp writable" \
        eval 'has_line block-ro.console root-read-only && has_line block-ro.console tmp-writable'
fi
if wanted volume; then
    volume_image "$WORK/vol.ext4"
    VOLUMES=("$WORK/vol.ext4")
    V='[{"device":"/dev/vda","target":"/data","read_only":false,"fstype":"ext4"}]'
    boot volume $M "$(spec '["sh","-c","echo persisted > /data/f"]' volumes="$V")"
    VOLUMES=()
    check volume $M "volume written, synced and unmounted before the end" \
        eval 'exit_is volume "{\"exited\":0}" && [[ "$(debugfs -R "cat /f" $WORK/vol.ext4 2>/dev/null)" == persisted ]]'
    VOLUMES=("$WORK/vol.ext4")
    V='[{"device":"/dev/vda","target":"/mnt/ro","read_only":true,"fstype":"ext4"}]'
    boot volume-ro $M "$(spec '["sh","-c","cat /mnt/ro/f; echo y > /mnt/ro/g || echo refused"]' volumes="$V")"
    VOLUMES=()
    check volume-ro $M "read-only volume readable, not writable" \
        eval 'has_line volume-ro.console persisted && has_line volume-ro.console refused'
fi

if wanted block-volume; then
    volume_image "$WORK/vol2.ext4"
    ROOT_BLOCK=/dev/vda
    VOLUMES=("$WORK/vol2.ext4")
    V='[{"device":"/dev/vdb","target":"/data","read_only":false,"fstype":"ext4"}]'
    boot block-volume $M "$(spec '["sh","-c","echo on-vdb > /data/f && grep -c \" /data \" /proc/mounts"]' volumes="$V")"
    ROOT_BLOCK=
    VOLUMES=()
    check block-volume $M "block root on vda, volume on vdb" \
        eval 'has_line block-volume.console 1 && [[ "$(debugfs -R "cat /f" $WORK/vol2.ext4 2>/dev/null)" == on-vdb ]]'
fi

# ------------------------------------------------------------ virtio console ports
M=ports
if wanted ports-echo; then
    boot ports-echo $M "$(spec '["sh","-c","echo hi; echo oops >&2"]')"
    check ports-echo $M "stdout on hvc0, stderr on hvc1, raw (no \\r)" \
        eval 'same_bytes ports-echo.out "hi\n" && same_bytes ports-echo.err "oops\n"'
    check ports-echo $M "unprefixed started + exit 0 on hvc2" \
        eval 'grep -q "^{\"t\":\"started\"" $WORK/ports-echo.control && exit_is ports-echo "{\"exited\":0}" && lacks_text ports-echo.console ISOLATE-CONTROL'
fi
if wanted ports-stdin; then
    boot ports-stdin $M "$(spec '["sh","-c","cat; echo done"]' stdin=true)" $'line one\nline two\n'
    check ports-stdin $M "stdin piped from hvc0 until stdin_eof" \
        eval 'same_bytes ports-stdin.out "line one\nline two\ndone\n" && exit_is ports-stdin "{\"exited\":0}"'
fi
if wanted ports-stdin-big; then
    # More than a pipe buffer (64 KiB): the init must apply backpressure.
    BIG=$(head -c 196608 /dev/urandom | base64 -w 76)
    boot ports-stdin-big $M "$(spec '["sh","-c","md5sum | cut -d\" \" -f1"]' stdin=true)" "$BIG"$'\n'
    check ports-stdin-big $M "256 KiB of stdin arrive intact" \
        eval 'same_bytes ports-stdin-big.out "$(printf "%s\n" "$BIG" | md5sum | cut -d" " -f1)\n"'
fi
if wanted ports-stdout-big; then
    # Many tiny writes and a background writer cut off at the end: the
    # init relays through pipes, in order, and everything written before
    # the workload ended arrives before the exit report.
    boot ports-stdout-big $M "$(spec '["sh","-c","yes 0123456789abcdef | head -c 1048576; i=0; while [ $i -lt 2000 ]; do printf %s. $i; i=$((i+1)); done; echo end"]')"
    want_out=$( (yes 0123456789abcdef | head -c 1048576; i=0; while [ $i -lt 2000 ]; do printf %s. $i; i=$((i+1)); done; echo end) | md5sum | cut -d' ' -f1)
    check ports-stdout-big $M "1 MiB and 2000 small writes arrive intact, in order" \
        eval '[ "$(md5sum <$WORK/ports-stdout-big.out | cut -d" " -f1)" = "$want_out" ] && exit_is ports-stdout-big "{\"exited\":0}"'
fi
if wanted ports-signal; then
    boot ports-signal $M "$(spec '["sleep","60"]')" "" '{"t":"signal","signo":15}'
    check ports-signal $M "signal message forwarded (signaled 15)" exit_is ports-signal '{"signaled":15}'
fi
if wanted ports-missing; then
    boot ports-missing $M "$(spec '["/bin/nope"]')"
    check ports-missing $M "not_found on hvc2" has_text ports-missing.control '{"t":"error","exec":"not_found"'
fi

echo "guest-init boot-qemu: $PASSES passed, $FAILS failed"
[[ $FAILS == 0 ]]
