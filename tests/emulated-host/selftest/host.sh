# shellcheck shell=sh
# shellcheck disable=SC2016  # the snippets are expanded by the sh that runs them
# Sourced in the emulated host by ../selftest.sh: the host it promises.

harness_test kvm-device test -c /dev/kvm

harness_sh nested-paging 'dmesg | grep -i "nested paging enabled"'

harness_sh cgroup2-unified '
    grep -q "^cgroup2 /sys/fs/cgroup cgroup2 " /proc/mounts || { cat /proc/mounts; exit 1; }
    ! grep -q " cgroup " /proc/mounts'

harness_sh cgroup2-controllers '
    echo "available: $(cat /sys/fs/cgroup/cgroup.controllers)"
    echo "delegated: $(cat /sys/fs/cgroup/cgroup.subtree_control)"
    for c in cpu memory pids io cpuset; do
        grep -qw "$c" /sys/fs/cgroup/cgroup.subtree_control || { echo "missing: $c"; exit 1; }
    done'

# A child cgroup with limits, and a process moved into it.
harness_sh cgroup2-limits '
    set -e
    g=/sys/fs/cgroup/selftest
    mkdir "$g"
    echo 64M >"$g/memory.max"
    echo 16 >"$g/pids.max"
    sh -c "echo \$\$ >$g/cgroup.procs; cat /proc/self/cgroup" | grep -x "0::/selftest"
    test "$(cat "$g/memory.max")" = 67108864
    rmdir "$g"'

harness_test detect-says-native /harness/detect

harness_sh modules-loaded 'for m in kvm_amd kvm irqbypass loop overlay tun; do test -d /sys/module/$m || { echo "not loaded: $m"; exit 1; }; done'

harness_test env-passed sh -c 'test "$SELFTEST_GREETING" = "hello, world"'

# The END marker lands on the same line as this output; the host side must
# still see the output and the result.
harness_test output-without-newline printf 'last line without a newline'

# The root is a mount that pivot_root(2) can leave, as on a real host
# (container runtimes need it; the initramfs rootfs itself cannot be left).
harness_sh pivot-root-works '
    unshare -m sh -c "
        set -e
        mount --make-rprivate /
        mkdir -p /tmp/newroot
        mount -t tmpfs newroot /tmp/newroot
        mkdir /tmp/newroot/old
        cd /tmp/newroot
        pivot_root . old
        echo pivot_root ok"'
