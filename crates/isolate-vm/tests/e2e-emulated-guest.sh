# shellcheck shell=sh
# Sourced by tests/emulated-host in the emulated KVM host (see e2e-emulated.sh).
# VM_RUN is the vm-run example driver; ISOLATE_VMM the VMM binary.

harness_sh boot-echo-hi '
    out=$("$VM_RUN" --timeout 120 -- echo hi 2>/tmp/err); rc=$?
    cat /tmp/err
    echo "stdout=[$out] rc=$rc"
    [ "$out" = hi ] && [ $rc = 0 ]'

harness_sh exit-code '
    "$VM_RUN" --timeout 120 -- sh -c "exit 7" 2>/tmp/err; rc=$?
    cat /tmp/err; echo "rc=$rc"; [ $rc = 7 ]'

harness_sh stderr-apart '
    out=$("$VM_RUN" --timeout 120 -- sh -c "echo to-out; echo to-err >&2" 2>/tmp/err); rc=$?
    cat /tmp/err; echo "stdout=[$out] rc=$rc"
    [ "$out" = to-out ] && grep -qx to-err /tmp/err && ! grep -q to-out /tmp/err'

harness_sh stdin-piped '
    out=$("$VM_RUN" --timeout 120 --stdin "$(printf "one\ntwo\nthree")" -- sh -c "cat; echo; wc -c </dev/null" 2>/tmp/err); rc=$?
    cat /tmp/err; echo "stdout=[$out] rc=$rc"
    [ "$out" = "$(printf "one\ntwo\nthree\n0")" ] && [ $rc = 0 ]'

harness_sh stdin-line-count '
    out=$("$VM_RUN" --timeout 120 --stdin "$(printf "a\nb\nc")" -- wc -l 2>/tmp/err); rc=$?
    cat /tmp/err; echo "stdout=[$out] rc=$rc"
    [ "$(echo $out)" = 2 ] && [ $rc = 0 ]'

harness_sh command-not-found '
    "$VM_RUN" --timeout 120 -- /no/such/program 2>/tmp/err; rc=$?
    cat /tmp/err; echo "rc=$rc"; [ $rc = 127 ]'

harness_sh signal-exit '
    "$VM_RUN" --timeout 120 -- sh -c "kill -TERM \$\$" 2>/tmp/err; rc=$?
    cat /tmp/err; echo "rc=$rc"; [ $rc = 143 ]'

harness_sh timeout '
    "$VM_RUN" --timeout 3 -- sleep 600 2>/tmp/err; rc=$?
    cat /tmp/err; echo "rc=$rc"; [ $rc = 124 ]'

harness_sh signal-forwarded '
    "$VM_RUN" --timeout 120 --signal-after 0.2:15 -- sleep 600 2>/tmp/err; rc=$?
    cat /tmp/err; echo "rc=$rc"; [ $rc = 143 ]'

harness_sh guest-panic-is-an-error-with-console-lines '
    ISOLATE_KERNEL_CMDLINE=rdinit=/no/such/init "$VM_RUN" --timeout 120 -- /bin/true 2>/tmp/err; rc=$?
    cat /tmp/err; echo "rc=$rc"
    [ $rc = 125 ] && grep -q "before starting the workload" /tmp/err && grep -qi "panic" /tmp/err'

harness_sh two-vcpus '
    out=$("$VM_RUN" --timeout 120 --vcpus 2 -- nproc 2>/tmp/err); rc=$?
    cat /tmp/err; echo "stdout=[$out] rc=$rc"; [ "$out" = 2 ]'

harness_sh memory-limit-is-guest-ram '
    out=$("$VM_RUN" --timeout 120 --memory 64 -- sh -c "cat /sys/fs/cgroup/*/memory.max 2>/dev/null || cat /proc/meminfo | head -1" 2>/tmp/err); rc=$?
    cat /tmp/err; echo "stdout=[$out] rc=$rc"; [ $rc = 0 ]'

harness_sh bin-true-timing '
    i=0; fails=0
    while [ $i -lt "${RUNS:-5}" ]; do
        "$VM_RUN" --timeout 120 -- /bin/true 2>/tmp/err || fails=$((fails + 1))
        echo "run $i: $(grep -h OUTCOME /tmp/err || cat /tmp/err)"
        i=$((i + 1))
    done
    [ $fails = 0 ]'

harness_sh named-volume-persists '
    "$VM_RUN" --timeout 120 --volume e2e:/data -- sh -c "echo kept > /data/f; sync" 2>/tmp/err; rc1=$?
    cat /tmp/err
    out=$("$VM_RUN" --timeout 120 --volume e2e:/data -- cat /data/f 2>/tmp/err); rc2=$?
    cat /tmp/err; echo "rc1=$rc1 rc2=$rc2 stdout=[$out]"
    [ $rc1 = 0 ] && [ $rc2 = 0 ] && [ "$out" = kept ]'

harness_sh vmlinux-timing '
    i=0
    while [ $i -lt "${RUNS:-5}" ]; do
        ISOLATE_KERNEL=$ISOLATE_HOME/kernel/vmlinux ISOLATE_VMM_TRACE=1 "$VM_RUN" --timeout 120 -- /bin/true 2>/tmp/err
        echo "vmlinux run $i: $(grep -h "kernel loaded" /tmp/err) $(grep -h OUTCOME /tmp/err | cut -c1-120)"
        i=$((i + 1))
    done'

# isolate-vm's own test binaries (e2e-emulated.sh --tests), on a real KVM.
for bin in $TEST_BINS; do
    harness_test "cargo-test-$(basename "$bin" | sed 's/-[0-9a-f]*$//')" "$bin" --test-threads=1
done
