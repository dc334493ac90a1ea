#!/bin/bash
# hack/vm.sh — a QEMU guest with hardware-atomic NVMe disks.
#
#   hack/vm.sh build
#   hack/vm.sh run [--disk LBA:UNIT[:boundary=B][:size=S]]... [--mem M]
#                  [--timeout S] [--allow-reset] -- COMMAND...
#
# See docs/vm.md.
set -euo pipefail
export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
VM_SRC=$(cd "$(dirname "$0")/vm" && pwd)
# shellcheck disable=SC2034 # used by the sourced vm/build.sh and vm/run.sh
REPO=$(cd "$VM_SRC/../.." && pwd)
VM_CACHE=${UNTORN_CACHE:-/var/cache/untorn}/vm
# shellcheck source=vm/build.sh
. "$VM_SRC/build.sh"

cmd_build() {
	mkdir -p "$VM_CACHE"
	local t0=$SECONDS rootpid
	# One build at a time: CI starts one in the background early (hack/prefetch.sh)
	# and the VM stage's own call waits for it, then finds the pieces cached.
	exec 8>"$VM_CACHE/.build.lock"
	flock 8
	vm_resolve fresh
	# The guest root and the QEMU chroot + kernel are independent downloads.
	(build_root) &
	rootpid=$!
	build_qemu
	build_kernel
	build_initramfs
	wait "$rootpid" || die "guest root build failed"
	build_root
	log "cached pieces ready in $((SECONDS - t0))s"
	build_binaries
	exec 8>&-
}

case ${1:-} in
build) shift; cmd_build "$@" ;;
run)
	shift
	# shellcheck source=vm/run.sh
	. "$VM_SRC/run.sh"
	cmd_run "$@"
	;;
*) echo "usage: $0 build | run [--disk LBA:UNIT[:boundary=B]]... [--mem M] [--timeout S] -- COMMAND..." >&2; exit 2 ;;
esac
