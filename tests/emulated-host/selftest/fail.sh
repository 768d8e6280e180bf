# shellcheck shell=sh
# Sourced in the emulated host by ../selftest.sh: one test must fail.

harness_test before-the-failure true
harness_sh deliberate-failure 'echo "this test fails on purpose"; exit 3'
harness_test after-the-failure true
