#!/bin/bash
# Crash test, short version: the crash-model check, then a few hard guest
# resets under pgbench on the untorn arm (full_page_writes=off + shim);
# every recovery must succeed with no checksum failure. The long run for
# all three arms is hack/bench/crash.sh (see docs/vm.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
UNTORN_VM_REUSE_BINARIES=1 hack/bench/crash.sh --arm untorn --cycles "${UNTORN_CRASH_CI_CYCLES:-3}" --scale 5
