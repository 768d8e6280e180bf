/*
 * hold: keeps the emulated host's hot static keys switched on for its whole
 * life, so that its kernel never rewrites hot code while the tests run.
 *
 * Why: the kernel switches a static key by live-patching every site that
 * tests it (text_poke_bp: an int3 first, then the new bytes). Under QEMU's
 * multi-threaded TCG (7.2 here), a vCPU now and then keeps running a stale
 * translation of a patched site that still holds the int3; the int3 handler
 * sees the int3 gone from memory and retries the instruction, which runs the
 * same stale translation again: both vCPUs spin there with interrupts off
 * and the emulated host freezes for good. Caught in __schedule (the preempt
 * notifier key, switched on and off by every KVM VM made and destroyed).
 *
 * A key whose count never drops to zero is never patched again. This holds:
 *   - one idle KVM VM with one never-run vCPU: the preempt notifier key
 *     (__schedule), and KVM's local-APIC keys (APIC software-disabled at
 *     reset, and hardware-disabled through the APIC base MSR);
 *   - a device program attached to CGROUP (a cgroup v2 directory of its own):
 *     the cgroup-BPF device key, which container mode's device programs
 *     would otherwise switch on and off for every run. The directory itself,
 *     with every controller enabled, holds the cpuset and memory-cgroup keys.
 *
 * usage: hold CGROUP_DIR   (stays in the foreground; run it with &)
 * Prints one line "hold: ..." saying what it holds, and what it could not.
 */
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MSR_IA32_APICBASE 0x1b

static int hold_kvm(void)
{
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        return -1;
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0)
        return -1;
    if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0)
        return -1;
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (vcpu < 0)
        return -1;
    struct {
        struct kvm_msrs head;
        struct kvm_msr_entry entry;
    } msrs;
    memset(&msrs, 0, sizeof msrs);
    msrs.head.nmsrs = 1;
    msrs.entry.index = MSR_IA32_APICBASE;
    msrs.entry.data = 0xfee00000; /* the default base, enable bit clear */
    return ioctl(vcpu, KVM_SET_MSRS, &msrs) == 1 ? 0 : -2;
}

static int hold_device_key(const char *cgroup)
{
    /* r0 = 1 (allow); exit */
    struct bpf_insn prog[] = {
        {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 1},
        {.code = BPF_JMP | BPF_EXIT},
    };
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
    attr.insns = (unsigned long)prog;
    attr.insn_cnt = sizeof prog / sizeof prog[0];
    attr.license = (unsigned long)"GPL";
    int fd = syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof attr);
    if (fd < 0)
        return -1;
    int dir = open(cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        return -1;
    memset(&attr, 0, sizeof attr);
    attr.target_fd = dir;
    attr.attach_bpf_fd = fd;
    attr.attach_type = BPF_CGROUP_DEVICE;
    attr.attach_flags = BPF_F_ALLOW_MULTI;
    return syscall(SYS_bpf, BPF_PROG_ATTACH, &attr, sizeof attr) < 0 ? -1 : 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: hold CGROUP_DIR\n");
        return 2;
    }
    int kvm = hold_kvm();
    int dev = hold_device_key(argv[1]);
    printf("hold: KVM keys %s; cgroup device-program key %s\n",
           kvm == 0 ? "held" : kvm == -2 ? "held, but not the APIC hardware-disabled one" : "NOT held",
           dev == 0 ? "held" : "NOT held");
    fflush(stdout);
    for (;;)
        pause();
}
