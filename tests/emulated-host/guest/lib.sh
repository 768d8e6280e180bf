# shellcheck shell=sh
# Sourced before the test script in the emulated host.
#
#   harness_test NAME CMD [ARG...]   run one test: CMD with ARGs, stdin from
#                                    /dev/null, stderr merged into stdout;
#                                    passes if it exits 0. Returns its status.
#   harness_sh NAME 'SHELL CODE'     same, for a snippet of sh code.
#
# NAME is one word; characters outside [A-Za-z0-9._:/+=-] become '_'.

harness_test() {
    if [ $# -lt 2 ]; then
        echo "harness_test: usage: harness_test NAME CMD [ARG...]" >&2
        return 2
    fi
    _harness_name=$(printf '%s' "$1" | tr -c 'A-Za-z0-9._:/+=-' '_')
    shift
    echo "@@ISOLATE-HARNESS BEGIN $_harness_name"
    ("$@") </dev/null 2>&1
    _harness_rc=$?
    if [ "$_harness_rc" -eq 0 ]; then _harness_res=pass; else _harness_res=fail; fi
    # If the test's last line lacks a newline the marker ends up at the end
    # of that line; the host side finds it there too.
    echo "@@ISOLATE-HARNESS END $_harness_name $_harness_res $_harness_rc"
    echo "$_harness_name $_harness_res $_harness_rc" >>"${HARNESS_RESULTS:?}"
    return "$_harness_rc"
}

harness_sh() {
    if [ $# -ne 2 ]; then
        echo "harness_sh: usage: harness_sh NAME 'SHELL CODE'" >&2
        return 2
    fi
    harness_test "$1" sh -c "$2"
}
