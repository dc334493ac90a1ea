#!/bin/bash
# The hardware path for real: a QEMU guest whose NVMe disks advertise atomic
# write units (hack/vm.sh, docs/vm.md). Builds or reuses the cached QEMU,
# kernel and guest root, rebuilds the project's binaries, and runs the VM
# tests: pkg/atomic/untornctl on real limits; the driver on LVM with
# csi-sanity; the shim and PostgreSQL on ext4 bigalloc.
set -euo pipefail
cd "$(dirname "$0")/../.."
t0=$SECONDS
hack/vm.sh build
echo "vm: build ready in $((SECONDS - t0))s"

t=$SECONDS
hack/vm.sh run --disk 4096:65536 --disk 512:65536:boundary=131072 --timeout 1500 -- tests/atomic-limits.sh
echo "vm: atomic-limits passed in $((SECONDS - t))s"

# The driver and the shim tests share one boot, each on its own disk.
t=$SECONDS
UNTORN_VM_REUSE_BINARIES=1 hack/vm.sh run --disk 4096:65536:size=8G --disk 4096:65536:size=8G --mem 2G \
	--timeout 2400 -- sh -c 'tests/driver-lvm.sh && DISK=/dev/atomic1 tests/shim-hw.sh'
echo "vm: driver-lvm and shim-hw passed in $((SECONDS - t))s"
