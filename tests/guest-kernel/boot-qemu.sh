#!/usr/bin/env bash
# Boot isolate's guest kernel under QEMU's microvm machine (TCG) as a reference
# VMM and check, from the serial console, that it gives what isolate needs.
#
#   tests/guest-kernel/boot-qemu.sh [KERNEL_DIR]
#
# KERNEL_DIR holds vmlinux and bzImage (default ${ISOLATE_HOME:-/var/lib/isolate}/kernel,
# as installed by guest-kernel/build.sh). Boots:
#   pvh     -kernel vmlinux (PVH ELF note), uncompressed initramfs
#   bzimage -kernel bzImage (64-bit boot protocol), gzip initramfs
#   panic   bzImage whose /init exits: panic=-1 must end the VM at once
# Environment: BOOT_TIMEOUT (seconds per boot, default 180), BOOT_SMP (default 2).
# Exit status: 0 only if every check passed.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KDIR=${1:-${ISOLATE_HOME:-/var/lib/isolate}/kernel}
TIMEOUT=${BOOT_TIMEOUT:-180}
SMP=${BOOT_SMP:-2}
MEM=256M

PASSES=0 FAILS=0 SKIPS=0
pass() { PASSES=$((PASSES + 1)); printf 'PASS  %-10s %-22s %s\n' "$1" "$2" "${3:-}"; }
fail() { FAILS=$((FAILS + 1));   printf 'FAIL  %-10s %-22s %s\n' "$1" "$2" "${3:-}"; }
skip() { SKIPS=$((SKIPS + 1));   printf 'SKIP  %-10s %-22s %s\n' "$1" "$2" "${3:-}"; }
info() { printf '....  %s\n' "$*"; }
die()  { printf 'FAIL  setup: %s\n' "$*" >&2; exit 1; }

apt_install() {
    info "installing Debian packages: $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1 \
        || { apt-get update >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive \
             apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1; }
}

# ------------------------------------------------------------ prerequisites
[[ -f "$KDIR/vmlinux" && -f "$KDIR/bzImage" ]] \
    || die "no vmlinux/bzImage in $KDIR (run guest-kernel/build.sh first)"
command -v qemu-system-x86_64 >/dev/null || apt_install qemu-system-x86 \
    || die "qemu-system-x86_64 missing and qemu-system-x86 could not be installed"
is_static() { [[ -x "$1" ]] && ! readelf -l "$1" 2>/dev/null | grep -q 'INTERP'; }
is_static /bin/busybox || apt_install busybox-static || true
is_static /bin/busybox || die "/bin/busybox is not a static busybox (package busybox-static)"
command -v cpio >/dev/null || apt_install cpio || die "cpio missing"

WORK=$(mktemp -d /tmp/isolate-boot-qemu.XXXXXX)
QEMU_PID=
cleanup() {
    [[ -n "$QEMU_PID" ]] && kill "$QEMU_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

MARKER="isolate-guest-marker-$RANDOM$RANDOM"
EXPECT_INIT=(marker mounts smp proc_self_cgroup cgroup2_controllers cgroup2_limits
             cgroup2_move memcg_oom overlay hostname spec_archive virtio_console)

# ------------------------------------------------------------ sysprobe (static glibc)
HAVE_SYSPROBE=0
if command -v gcc >/dev/null && gcc -static -O2 -pthread -o "$WORK/sysprobe" "$HERE/sysprobe.c" 2>"$WORK/gcc.err"; then
    HAVE_SYSPROBE=1
    mapfile -t EXPECT_PROBE < <(grep -oE 'report\("[a-z_]+"' "$HERE/sysprobe.c" | cut -d'"' -f2)
    EXPECT_PROBE+=(ns_mnt ns_uts ns_ipc ns_pid ns_net ns_user ns_cgroup)
else
    SYSPROBE_WHY="cannot build static sysprobe.c: $(command -v gcc >/dev/null && head -c 200 "$WORK/gcc.err" || echo 'gcc not installed')"
fi

# ------------------------------------------------------------ block images
HAVE_EXT4=0 HAVE_EROFS=0
mkdir -p "$WORK/blk"
echo "ext4-$MARKER" >"$WORK/blk/marker"
command -v mkfs.ext4 >/dev/null || apt_install e2fsprogs || true
if ! command -v mkfs.ext4 >/dev/null; then
    EXT4_WHY="mkfs.ext4 not installed and e2fsprogs could not be installed"
elif truncate -s 16M "$WORK/ext4.img" && mkfs.ext4 -q -F -d "$WORK/blk" "$WORK/ext4.img" >"$WORK/mkfs.ext4.out" 2>&1; then
    HAVE_EXT4=1
else
    EXT4_WHY="mkfs.ext4 failed: $(tail -n 2 "$WORK/mkfs.ext4.out" | tr '\n' ' ')"
fi
echo "erofs-$MARKER" >"$WORK/blk/marker"
command -v mkfs.erofs >/dev/null || apt_install erofs-utils || true
# lz4-compressed, to exercise EROFS_FS_ZIP as well.
if ! command -v mkfs.erofs >/dev/null; then
    EROFS_WHY="mkfs.erofs not installed and erofs-utils could not be installed"
elif mkfs.erofs -zlz4 "$WORK/erofs.img" "$WORK/blk" >"$WORK/mkfs.erofs.out" 2>&1; then
    HAVE_EROFS=1
else
    EROFS_WHY="mkfs.erofs failed: $(tail -n 2 "$WORK/mkfs.erofs.out" | tr '\n' ' ')"
fi

# ------------------------------------------------------------ initramfs
ROOT="$WORK/root"
mkdir -p "$ROOT"/{bin,proc,sys,dev,tmp,mnt,run,etc}
cp /bin/busybox "$ROOT/bin/busybox"
[[ $HAVE_SYSPROBE == 1 ]] && cp "$WORK/sysprobe" "$ROOT/bin/sysprobe"
# No /dev/console in the archive on purpose: the kernel's built-in initramfs
# provides it (isolate's root archive relies on that too).

cat >"$ROOT/init" <<EOF
#!/bin/busybox sh
# PID 1 of the boot test. Reports "CHECK <name> PASS|FAIL <detail>" lines.
/bin/busybox mount -t proc proc /proc
read UP_INIT _ </proc/uptime
/bin/busybox --install -s /bin
export PATH=/bin
echo "ISOLATE-BOOT uptime_at_init=\$UP_INIT"
echo "ISOLATE-BOOT marker=$MARKER"
echo "CHECK marker PASS $MARKER"
echo "ISOLATE-BOOT cmdline=\$(cat /proc/cmdline)"
echo "ISOLATE-BOOT kernel=\$(uname -r) cpus=\$(nproc)"
EXPECT_SMP=$SMP
HAVE_EXT4=$HAVE_EXT4
HAVE_EROFS=$HAVE_EROFS
MARKER=$MARKER
EOF
cat >>"$ROOT/init" <<'EOF'
check() {  # check NAME COMMAND...: runs COMMAND, reports its first output line
    name=$1; shift
    if out=$("$@" 2>&1); then st=PASS; else st=FAIL; fi
    echo "CHECK $name $st $(echo "$out" | head -n 3 | tr '\n' ' ' | cut -c1-200)"
}

do_mounts() {
    mount -t sysfs sysfs /sys &&
    mount -t devtmpfs devtmpfs /dev &&
    mkdir -p /dev/pts /dev/shm /dev/mqueue &&
    mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts &&
    mount -t tmpfs -o mode=1777 shm /dev/shm &&
    mount -t mqueue mqueue /dev/mqueue &&
    mount -t tmpfs tmpfs /tmp &&
    mount -t tmpfs tmpfs /run &&
    [ -c /dev/console ] && [ -c /dev/ttyS0 ] && [ -c /dev/null ] &&
    echo "proc sys devtmpfs devpts shm mqueue tmpfs"
}
check mounts do_mounts

check smp sh -c "[ \$(nproc) -eq $EXPECT_SMP ] && echo \"\$(nproc) cpus\" || { echo \"\$(nproc) cpus, want $EXPECT_SMP\"; false; }"

CG=/sys/fs/cgroup
cg_controllers() {
    mount -t cgroup2 cgroup2 $CG || return 1
    c=$(cat $CG/cgroup.controllers); echo "$c"
    for want in memory pids cpu; do
        case " $c " in *" $want "*) ;; *) echo "missing $want"; return 1 ;; esac
    done
}
check cgroup2_controllers cg_controllers
# (the "0::" line appears in /proc/PID/cgroup once cgroup2 has been mounted)
check proc_self_cgroup sh -c 'c=$(cat /proc/self/cgroup); echo "$c"; [ "$c" = "0::/" ]'

cg_limits() {
    echo "+memory +pids +cpu" >$CG/cgroup.subtree_control &&
    mkdir $CG/w &&
    echo 64M >$CG/w/memory.max && echo 0 >$CG/w/memory.swap.max &&
    echo 100 >$CG/w/pids.max && echo "50000 100000" >$CG/w/cpu.max &&
    echo "memory.max=$(cat $CG/w/memory.max) swap.max=$(cat $CG/w/memory.swap.max) pids.max=$(cat $CG/w/pids.max) cpu.max=$(cat $CG/w/cpu.max)"
}
check cgroup2_limits cg_limits

cg_move() {
    in=$(sh -c "echo \$\$ >$CG/w/cgroup.procs && cat /proc/self/cgroup") || return 1
    echo "in=$in pids.current=$(cat $CG/w/pids.current)"
    [ "$in" = "0::/w" ]
}
check cgroup2_move cg_move

memcg_oom() {
    mkdir $CG/oom && echo 8M >$CG/oom/memory.max && echo 0 >$CG/oom/memory.swap.max || return 1
    sh -c "echo \$\$ >$CG/oom/cgroup.procs; exec awk 'BEGIN { s = \"x\"; while (1) s = s s }'" >/dev/null 2>&1
    st=$?
    k=$(grep '^oom_kill ' $CG/oom/memory.events)
    echo "hog exit=$st $k peak=$(cat $CG/oom/memory.peak 2>/dev/null || echo n/a)"
    [ "$k" != "oom_kill 0" ] && [ -n "$k" ]
}
check memcg_oom memcg_oom

overlay() {
    O=/tmp/ovl; mkdir -p $O/lower $O/upper $O/work $O/merged
    echo lower >$O/lower/keep; echo gone >$O/lower/gone
    mount -t overlay overlay -o lowerdir=$O/lower,upperdir=$O/upper,workdir=$O/work $O/merged || return 1
    echo new >$O/merged/new && rm $O/merged/gone && mkdir $O/merged/d || return 1
    [ -f $O/upper/new ] && [ -c $O/upper/gone ] && [ -f $O/lower/gone ] && [ ! -e $O/merged/gone ] &&
        [ "$(cat $O/merged/keep)" = lower ] && echo "copy-up, whiteout, mkdir ok"
}
check overlay overlay

check hostname sh -c 'hostname isolate-guest && [ "$(hostname)" = isolate-guest ] && [ "$(cat /proc/sys/kernel/hostname)" = isolate-guest ] && echo isolate-guest'
check spec_archive sh -c 'cat /isolate/spec.json && grep -q boot-qemu /isolate/spec.json'
virtio_consoles() {  # three virtio consoles, as isolate's VMM attaches them
    for n in 0 1 2; do
        [ -c /dev/hvc$n ] || { echo "no /dev/hvc$n ($(ls /dev/hvc* 2>/dev/null | tr '\n' ' '))"; return 1; }
        echo "hvc$n-$MARKER" >/dev/hvc$n || return 1
    done
    ls /dev/hvc* | tr '\n' ' '
}
check virtio_console virtio_consoles

find_dev() {  # find_dev FSTYPE MOUNTPOINT [OPTS]: mounts the first /dev/vd* that holds FSTYPE
    mkdir -p $2
    for d in /dev/vd?; do
        [ -b "$d" ] && mount -t $1 -o ${3:-ro} $d $2 2>/dev/null && { echo $d; return 0; }
    done
    echo "no /dev/vd* device mounts as $1 ($(ls /dev/vd? 2>/dev/null | tr '\n' ' '))"; return 1
}
blk_ext4() {
    d=$(find_dev ext4 /mnt/ext4 rw) || { echo "$d"; return 1; }
    m=$(cat /mnt/ext4/marker) && echo written >/mnt/ext4/new && sync && umount /mnt/ext4 &&
        echo "$d: $m, rw ok" && [ "$m" = "ext4-$MARKER" ]
}
blk_erofs() {
    d=$(find_dev erofs /mnt/erofs) || { echo "$d"; return 1; }
    m=$(cat /mnt/erofs/marker); echo "$d: $m"; [ "$m" = "erofs-$MARKER" ]
}
erofs_overlay() {  # the block-image root layout: erofs lower + tmpfs upper
    mkdir -p /run/o/upper /run/o/work /run/o/merged &&
    mount -t overlay overlay -o lowerdir=/mnt/erofs,upperdir=/run/o/upper,workdir=/run/o/work /run/o/merged &&
    echo changed >/run/o/merged/marker && [ "$(cat /run/o/merged/marker)" = changed ] &&
    [ "$(cat /mnt/erofs/marker)" = "erofs-$MARKER" ] && echo "writable root over erofs ok"
}
if [ "$HAVE_EXT4" = 1 ]; then check virtio_blk_ext4 blk_ext4; fi
if [ "$HAVE_EROFS" = 1 ]; then check virtio_blk_erofs blk_erofs; check erofs_overlay erofs_overlay; fi

if [ -x /bin/sysprobe ]; then /bin/sysprobe; fi

read UP_END _ </proc/uptime
echo "ISOLATE-BOOT uptime_at_end=$UP_END"
echo "ISOLATE-BOOT done"
sync
reboot -f
echo "ISOLATE-BOOT reboot returned"
EOF
chmod 0755 "$ROOT/init"

cat >"$ROOT/panic-init" <<'EOF'
#!/bin/busybox sh
echo "ISOLATE-BOOT panic-init exiting"
exit 3
EOF
chmod 0755 "$ROOT/panic-init"

SPEC="$WORK/spec"
mkdir -p "$SPEC/isolate"
echo '{"test":"boot-qemu"}' >"$SPEC/isolate/spec.json"

mkcpio() { (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0); }
mkcpio "$ROOT" >"$WORK/root.cpio"
mkcpio "$SPEC" >"$WORK/spec.cpio"
# Two concatenated archives, as isolate's VMM passes them: root + per-run spec.
cat "$WORK/root.cpio" "$WORK/spec.cpio" >"$WORK/initrd.plain"
{ gzip -c -6 "$WORK/root.cpio"; gzip -c -6 "$WORK/spec.cpio"; } >"$WORK/initrd.gz"
info "kernel dir: $KDIR ($(stat -c %s "$KDIR/vmlinux") byte vmlinux, $(stat -c %s "$KDIR/bzImage") byte bzImage)"
info "initrd: $(stat -c %s "$WORK/initrd.plain") bytes plain, $(stat -c %s "$WORK/initrd.gz") bytes gzip"

[[ $HAVE_SYSPROBE == 1 ]] || skip all sysprobe "$SYSPROBE_WHY"
[[ $HAVE_EXT4 == 1 ]]     || skip all virtio_blk_ext4 "$EXT4_WHY"
[[ $HAVE_EROFS == 1 ]]    || skip all virtio_blk_erofs "$EROFS_WHY"

# ------------------------------------------------------------ boots
CMDLINE_BASE="console=ttyS0 reboot=k panic=-1 quiet"

# run_qemu NAME KERNEL INITRD APPEND: sets RC and WALL; console in $WORK/NAME.console
run_qemu() {
    local name=$1 kernel=$2 initrd=$3 append=$4
    local con="$WORK/$name.console"
    : >"$con"
    # acpi=off: QEMU then announces the virtio-mmio devices on the command line
    # (virtio_mmio.device=...), as isolate's VMM does. i8042: the port-0x64
    # reset that reboot=k uses; with -no-reboot QEMU exits on it.
    # shellcheck disable=SC2054
    local args=(-M microvm,acpi=off -accel tcg -cpu max -smp "$SMP" -m "$MEM"
        -nodefaults -no-user-config -nographic -no-reboot
        -serial "file:$con" -device i8042
        -kernel "$kernel" -initrd "$initrd" -append "$append"
    )
    local n
    for n in 0 1 2; do  # one virtio-serial device per console, like isolate's VMM
        : >"$WORK/$name.hvc$n"
        args+=(-device virtio-serial-device -chardev "file,id=hvc$n,path=$WORK/$name.hvc$n"
               -device "virtconsole,chardev=hvc$n")
    done
    # shellcheck disable=SC2054
    [[ $HAVE_EXT4 == 1 ]] && args+=(-drive "if=none,id=ext4,format=raw,file=$WORK/ext4.img"
                                    -device virtio-blk-device,drive=ext4)
    # shellcheck disable=SC2054
    [[ $HAVE_EROFS == 1 ]] && args+=(-drive "if=none,id=erofs,format=raw,readonly=on,file=$WORK/erofs.img"
                                     -device virtio-blk-device,drive=erofs)
    local t0 t1
    t0=$(date +%s.%N)
    qemu-system-x86_64 "${args[@]}" >"$WORK/$name.qemu.out" 2>&1 &
    QEMU_PID=$!
    local waited=0
    while kill -0 "$QEMU_PID" 2>/dev/null && ((waited < TIMEOUT * 10)); do
        sleep 0.1; waited=$((waited + 1))
    done
    if kill -0 "$QEMU_PID" 2>/dev/null; then
        kill "$QEMU_PID" 2>/dev/null || true
        sleep 1; kill -9 "$QEMU_PID" 2>/dev/null || true
        wait "$QEMU_PID" 2>/dev/null || true
        RC=timeout
    else
        RC=0; wait "$QEMU_PID" || RC=$?
    fi
    QEMU_PID=
    t1=$(date +%s.%N)
    WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
}

show_tail() {
    echo "----- last console lines ($1) -----"
    tail -n 25 "$WORK/$1.console" | tr -d '\r' | sed 's/^/  | /'
    if [[ -s "$WORK/$1.qemu.out" ]]; then
        echo "----- qemu stderr -----"; tail -n 10 "$WORK/$1.qemu.out" | sed 's/^/  | /'
    fi
    echo "-----"
}

# check_full_boot NAME: judges a full /init run from its console log.
check_full_boot() {
    local name=$1 con="$WORK/$1.console" failed_before=$FAILS
    tr -d '\r' <"$con" >"$con.txt"
    if [[ $RC == timeout ]]; then
        fail "$name" qemu_exit "QEMU still running after ${TIMEOUT}s: killed"
    elif [[ $RC != 0 ]]; then
        fail "$name" qemu_exit "QEMU exit status $RC"
    else
        pass "$name" qemu_exit "guest ended the VM by itself (reboot -f, reboot=k) in ${WALL}s wall"
    fi
    local boots
    boots=$(grep -c '^ISOLATE-BOOT marker=' "$con.txt" || true)
    if [[ $boots == 1 ]]; then
        pass "$name" single_boot "the kernel booted once (the reset ended the VM)"
    else
        fail "$name" single_boot "/init started $boots times (the guest reset did not end the VM)"
    fi
    [[ -n "${SHOWN_CMDLINE:-}" ]] || { SHOWN_CMDLINE=1; info "guest $(grep -m1 '^ISOLATE-BOOT cmdline=' "$con.txt" | cut -d' ' -f2-)"; }
    local up
    up=$(sed -n 's/^ISOLATE-BOOT uptime_at_init=//p' "$con.txt" | head -n1)
    if [[ -n "$up" ]]; then
        pass "$name" uptime_at_init "${up}s guest uptime when /init started (TCG)"
        UPTIMES+=("$name=${up}s")
    else
        fail "$name" uptime_at_init "/init never reported"
    fi
    local c line st detail
    local expect=("${EXPECT_INIT[@]}")
    [[ $HAVE_EXT4 == 1 ]] && expect+=(virtio_blk_ext4)
    [[ $HAVE_EROFS == 1 ]] && expect+=(virtio_blk_erofs erofs_overlay)
    [[ $HAVE_SYSPROBE == 1 ]] && expect+=("${EXPECT_PROBE[@]}")
    for c in "${expect[@]}"; do
        line=$(grep -m1 "^CHECK $c " "$con.txt" || true)
        if [[ -z "$line" ]]; then
            fail "$name" "$c" "not reported on the console"
            continue
        fi
        st=$(cut -d' ' -f3 <<<"$line"); detail=$(cut -d' ' -f4- <<<"$line")
        if [[ $st == PASS ]]; then pass "$name" "$c" "$detail"; else fail "$name" "$c" "$detail"; fi
    done
    local n got
    for n in 0 1 2; do
        got=$(head -c 100 "$WORK/$name.hvc$n" | tr -d '\r' | head -n1)
        if [[ "$got" == "hvc$n-$MARKER" ]]; then
            pass "$name" "virtio_console_host$n" "host read guest /dev/hvc$n on console device $n"
        else
            fail "$name" "virtio_console_host$n" "console device $n carried '${got:-nothing}', want hvc$n-..."
        fi
    done
    if grep -q '^ISOLATE-BOOT done' "$con.txt"; then
        pass "$name" init_done "$(sed -n 's/^ISOLATE-BOOT \(uptime_at_end=.*\)/\1s/p' "$con.txt" | head -n1)"
    else
        fail "$name" init_done "/init did not reach its end"
    fi
    if grep -qE 'Kernel panic|BUG:|Oops' "$con.txt"; then
        fail "$name" no_panic "$(grep -m1 -E 'Kernel panic|BUG:|Oops' "$con.txt")"
    fi
    if ((FAILS > failed_before)); then show_tail "$name"; fi
}

UPTIMES=()
KVER=$(strings "$KDIR/bzImage" 2>/dev/null | grep -m1 -E '^[0-9]+\.[0-9]+\.[0-9]+' | cut -d' ' -f1 || true)
info "guest kernel ${KVER:-?}; QEMU $(qemu-system-x86_64 --version | head -n1 | awk '{print $4}'), microvm, TCG, $SMP vCPUs, $MEM"

info "boot 1/3: -kernel vmlinux (PVH entry), uncompressed initramfs"
run_qemu pvh "$KDIR/vmlinux" "$WORK/initrd.plain" "$CMDLINE_BASE"
check_full_boot pvh

info "boot 2/3: -kernel bzImage, gzip initramfs"
run_qemu bzimage "$KDIR/bzImage" "$WORK/initrd.gz" "$CMDLINE_BASE"
check_full_boot bzimage

info "boot 3/3: /init exits -> kernel panic -> panic=-1 ends the VM"
run_qemu panic "$KDIR/bzImage" "$WORK/initrd.gz" "$CMDLINE_BASE rdinit=/panic-init"
tr -d '\r' <"$WORK/panic.console" >"$WORK/panic.console.txt"
if [[ $RC == timeout ]]; then
    fail panic panic_reboot "VM still running ${TIMEOUT}s after the panic: killed"; show_tail panic
elif grep -q 'Kernel panic' "$WORK/panic.console.txt" && grep -q 'panic-init exiting' "$WORK/panic.console.txt"; then
    pass panic panic_reboot "panic printed and VM ended in ${WALL}s wall (QEMU status $RC)"
else
    fail panic panic_reboot "no panic message seen (QEMU status $RC)"; show_tail panic
fi

echo
info "uptime at /init: ${UPTIMES[*]:-none}"
if ((FAILS == 0)); then
    echo "RESULT: PASS ($PASSES passed, $SKIPS skipped)"
    exit 0
fi
echo "RESULT: FAIL ($FAILS failed, $PASSES passed, $SKIPS skipped)"
exit 1
