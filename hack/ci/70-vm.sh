#!/bin/bash
# The hardware path for real: a QEMU guest whose NVMe disks advertise atomic
# write units (hack/vm.sh, docs/vm.md). Builds or reuses the cached QEMU,
# kernel and guest root, rebuilds the project's binaries, and runs the VM
# tests: pkg/atomic/untornctl on real limits; the driver on LVM with
# csi-sanity; the shim and PostgreSQL on ext4 bigalloc; placement by atomic
# unit on a volume group over two disks with different units.
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

# Two disks with different atomic units in one volume group: a 64 KiB-unit
# class is placed on the 64 KiB disk only.
t=$SECONDS
UNTORN_VM_REUSE_BINARIES=1 hack/vm.sh run --disk 4096:65536:size=2G --disk 4096:16384:size=2G --mem 2G \
	--timeout 1500 -- tests/placement-lvm.sh
echo "vm: placement-lvm passed in $((SECONDS - t))s"
