# shellcheck shell=sh
# Sourced in the emulated host by ../selftest.sh: boot a nested guest with
# QEMU on /dev/kvm (-enable-kvm -M microvm). /l2/vmlinuz and /l2/initramfs.cpio
# are added by selftest.sh; the guest prints L2-OK and resets (reboot=t).

l2_boot() {
    out=$(timeout 300 qemu-system-x86_64 -enable-kvm -M microvm -cpu host -smp 1 -m 256 \
        -nographic -no-reboot -kernel /l2/vmlinuz -initrd /l2/initramfs.cpio \
        -append "console=ttyS0 reboot=t panic=-1 quiet" </dev/null 2>&1)
    rc=$?
    printf '%s\n' "$out" | tr -d '\r' | tail -n 20
    [ "$rc" -eq 0 ] || { echo "qemu exited with $rc"; return 1; }
    printf '%s\n' "$out" | grep -q '^L2-OK' || { echo "no L2-OK from the nested guest"; return 1; }
}

harness_test nested-kvm-guest l2_boot
