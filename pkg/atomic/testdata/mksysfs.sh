#!/bin/bash
# Regenerates the fixture sysfs tree in ./sysfs. It reproduces the layout of
# real sysfs: class/block/<name> and dev/block/<maj:min> are relative
# symlinks into devices/..., a partition is a subdirectory of its disk with
# `partition` and `start` files and no queue/, dm devices have slaves/ and
# dm/name, and a kernel older than 6.11 has no atomic_write_* attributes.
set -euo pipefail
cd "$(dirname "$0")"
rm -rf sysfs
mkdir -p sysfs/class/block sysfs/dev/block sysfs/devices

# disk DIR NAME MAJ:MIN SECTORS LBS PBS [UMIN UMAX MAXB BOUNDARY]
# UMIN may be "-" for a kernel without the attributes.
disk() {
	local dir=$1 name=$2 dev=$3 sectors=$4 lbs=$5 pbs=$6
	local d=sysfs/devices/$dir/$name
	mkdir -p "$d/queue"
	echo "$dev" >"$d/dev"
	echo "$sectors" >"$d/size"
	echo 0 >"$d/ro"
	echo "$lbs" >"$d/queue/logical_block_size"
	echo "$pbs" >"$d/queue/physical_block_size"
	echo "$lbs" >"$d/queue/hw_sector_size"
	echo none >"$d/queue/scheduler"
	if [ "${7:-}" != "-" ]; then
		echo "${7:-0}" >"$d/queue/atomic_write_unit_min_bytes"
		echo "${8:-0}" >"$d/queue/atomic_write_unit_max_bytes"
		echo "${9:-0}" >"$d/queue/atomic_write_max_bytes"
		echo "${10:-0}" >"$d/queue/atomic_write_boundary_bytes"
	fi
	link "$dir/$name" "$name" "$dev"
}

# part DISKDIR NAME MAJ:MIN NUMBER START SECTORS
part() {
	local dir=$1 name=$2 dev=$3
	local d=sysfs/devices/$dir/$name
	mkdir -p "$d"
	echo "$dev" >"$d/dev"
	echo "$4" >"$d/partition"
	echo "$5" >"$d/start"
	echo "$6" >"$d/size"
	echo 0 >"$d/ro"
	link "$dir/$name" "$name" "$dev"
}

link() {
	ln -s "../../devices/$1" "sysfs/class/block/$2"
	ln -s "../../devices/$1" "sysfs/dev/block/$3"
}

nvme=pci0000:00/0000:00:04.0/nvme/nvme0
# NVMe, 4 KiB LBA, atomic units 4 KiB..64 KiB.
disk "$nvme" nvme0n1 259:0 2097152 4096 4096 4096 65536 65536 0
part "$nvme/nvme0n1" nvme0n1p1 259:1 1 2048 1048576     # 1 MiB: aligned
part "$nvme/nvme0n1" nvme0n1p2 259:2 2 1050632 1046520  # 1 MiB + 4 KiB past p1: 4 KiB aligned only
# NVMe, 512 B LBA, AWUPF 16 KiB (unit 512 B..16 KiB).
nvme1=pci0000:00/0000:00:05.0/nvme/nvme1
disk "$nvme1" nvme1n1 259:3 4194304 512 512 512 16384 16384 0
part "$nvme1/nvme1n1" nvme1n1p1 259:4 1 2048 4192256
# NVMe, 512 B LBA, units 512 B..64 KiB, 128 KiB boundary.
nvme2=pci0000:00/0000:00:06.0/nvme/nvme2
disk "$nvme2" nvme2n1 259:5 4194304 512 512 512 65536 65536 131072
part "$nvme2/nvme2n1" nvme2n1p1 259:6 1 2048 2097152    # 1 MiB: aligned to the boundary
part "$nvme2/nvme2n1" nvme2n1p2 259:7 2 2099263 2095041 # odd sector: misaligned
# SCSI disk with atomic writes (SBC-4 ATOMIC WRITE 16), 4 KiB..32 KiB.
scsi=pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block
disk "$scsi" sdb 8:16 8388608 512 4096 4096 32768 32768 0
part "$scsi/sdb" sdb1 8:17 1 2048 8386560
# SCSI disk on a kernel without the atomic_write_* attributes.
scsi2=pci0000:00/0000:00:1f.2/ata2/host1/target1:0:0/1:0:0:0/block
disk "$scsi2" sda 8:0 8388608 512 512 -
part "$scsi2/sda" sda1 8:1 1 2048 8386560
# Loop device: the attributes exist and are all zero.
disk virtual/block loop0 7:0 2097152 512 512 0 0 0 0
# dm-linear on nvme0n1p1 (LVM): the stacked limits sit in dm-0's own queue.
disk virtual/block dm-0 253:0 1048576 4096 4096 4096 65536 65536 0
mkdir -p sysfs/devices/virtual/block/dm-0/slaves sysfs/devices/virtual/block/dm-0/dm
ln -s "../../../../$nvme/nvme0n1/nvme0n1p1" sysfs/devices/virtual/block/dm-0/slaves/nvme0n1p1
echo vg0-lv0 >sysfs/devices/virtual/block/dm-0/dm/name
# dm-linear on the loop device: nothing to stack.
disk virtual/block dm-1 253:1 1048576 512 512 0 0 0 0
mkdir -p sysfs/devices/virtual/block/dm-1/slaves sysfs/devices/virtual/block/dm-1/dm
ln -s ../../loop0 sysfs/devices/virtual/block/dm-1/slaves/loop0
echo vg1-lv0 >sysfs/devices/virtual/block/dm-1/dm/name
