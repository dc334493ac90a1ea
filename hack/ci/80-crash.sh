#!/bin/bash
# Crash test, short version. The crash model on every filesystem path the
# product offers (ext4 bigalloc with buffered atomic write groups through
# the shim beside plain buffered writes, XFS's software path, XFS over
# hardware atomic units), then a few hard guest resets of every untorn arm:
# PostgreSQL (full_page_writes=off + shim) on ext4, XFS software and XFS
# hardware, PostgreSQL 18 (the example deployment's version, from the sid
# database chroot) on ext4, MariaDB (innodb_doublewrite=OFF + shim) on ext4
# through the write path the example deployment uses. Every recovery must succeed with
# no corrupted page. Each part prints how long it took. The long runs, with
# the arms that show what tears, are hack/bench/crash.sh (see docs/vm.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
CYCLES=${UNTORN_CRASH_CI_CYCLES:-2}
T0=$SECONDS
part() {
	local t0=$SECONDS
	echo "crash-ci: ${*:2}"
	"$@"
	echo "crash-ci: took $((SECONDS - t0)) s: ${*:2}"
}
# The first part builds the guest binaries (tearw among them); the rest reuse them.
part hack/bench/crash.sh --check-model --fs ext4
export UNTORN_VM_REUSE_BINARIES=1
part hack/bench/crash.sh --check-model --fs xfs
part hack/bench/crash.sh --check-model --fs xfs-hw
for fs in ext4 xfs xfs-hw; do
	part hack/bench/crash.sh --skip-model-check --db postgres --fs "$fs" --arm untorn --cycles "$CYCLES" --scale 2
done
part hack/bench/crash.sh --skip-model-check --db postgres --pg-version 18 --fs ext4 --arm untorn --cycles "$CYCLES" --scale 2
part hack/bench/crash.sh --skip-model-check --db mariadb --fs ext4 --arm untorn --cycles "$CYCLES" --scale 1
echo "crash-ci: stage took $((SECONDS - T0)) s"
