#!/bin/bash
# VM test 1: pkg/atomic and untornctl on real hardware atomic limits.
# Disks: --disk 4096:65536 --disk 512:65536:boundary=131072
#   atomic0: 4 KiB LBA, atomic unit 4 KiB..64 KiB, no boundary
#   atomic1: 512 B LBA, atomic unit 512 B..64 KiB, 128 KiB boundary
. "$(dirname "$0")/lib.sh"
need untornctl vmtool mkfs.ext4 dmsetup
D0=$(readlink -f /dev/atomic0)
D1=$(readlink -f /dev/atomic1)
echo "atomic0 = $D0, atomic1 = $D1"
mkdir -p /mnt/t

section "probe reports what QEMU advertises"
# expected: LBA, unit min, unit max, max bytes, boundary
for c in "atomic0 4096 4096 65536 65536 0" "atomic1 512 512 65536 65536 131072"; do
	# shellcheck disable=SC2086 # one field a word
	set -- $c
	untornctl probe "/dev/$1" --json >/tmp/probe.json
	cat /tmp/probe.json
	got=$(vmtool jget logicalBlockSize atomicWriteUnitMin atomicWriteUnitMax atomicWriteMaxBytes atomicWriteBoundary hardwareAtomic </tmp/probe.json | tr '\n' ' ')
	expect_eq "probe $1 (lba min max maxbytes boundary hw)" "$2 $3 $4 $5 $6 true " "$got"
	expect_eq "sysfs $1 agrees" "$3 $4 $5 $6" "$(qlimits "$(basename "$(readlink -f "/dev/$1")")")"
done

section "plan -> mkfs.ext4 bigalloc -> mount -> verify on atomic0"
untornctl plan /dev/atomic0 --fs ext4 --unit 16Ki --json >/tmp/plan.json
cat /tmp/plan.json
read -r pmin pmax cluster < <(vmtool jget atomicUnitMin atomicUnitMax clusterSize </tmp/plan.json | paste -sd' ')
expect_eq "plan atomic range" "4096 65536" "$pmin $pmax"
expect_eq "plan cluster" 65536 "$cluster"
prog=$(vmtool jget mkfsProgram </tmp/plan.json)
read -r -a margs < <(vmtool jget mkfsArgs </tmp/plan.json)
mopts=$(vmtool jget mountOptions </tmp/plan.json | tr ' ' ',')
"$prog" "${margs[@]}" >/dev/null 2>&1 || fail "$prog ${margs[*]} failed"
dumpe2fs -h /dev/atomic0 2>/dev/null | grep -E 'features|Cluster size' | sed 's/^/  /'
dumpe2fs -h /dev/atomic0 2>/dev/null | grep -q 'features:.*bigalloc' || fail "no bigalloc after the planned mkfs"
mount -t ext4 ${mopts:+-o "$mopts"} /dev/atomic0 /mnt/t
untornctl verify /mnt/t --unit 16Ki --json >/tmp/verify.json || fail "verify exit $? $(cat /tmp/verify.json)"
cat /tmp/verify.json
expect_eq "verify atomic unitMin unitMax" "true 4096 65536" "$(vmtool jget atomic unitMin unitMax </tmp/verify.json | tr '\n' ' ' | sed 's/ $//')"
vmtool write /mnt/t/f 16384@0 65536@65536 131072@131072 16384@4096 >/tmp/w.out
cat /tmp/w.out
expect_eq "RWF_ATOMIC 16K/64K ok, 128K and misaligned refused" \
	"16384@0 ok|65536@65536 ok|131072@131072 EINVAL|16384@4096 EINVAL" "$(paste -sd'|' /tmp/w.out)"
expect_eq "statx of a file = plan" "supported=true unit_min=$pmin unit_max=$pmax" "$(vmtool statx /mnt/t/f | cut -d' ' -f1-3)"
umount /mnt/t

section "a 128 KiB unit is refused (device max is 64 KiB)"
expect_rc "plan --unit 128Ki on atomic0" 2 untornctl plan /dev/atomic0 --fs ext4 --unit 128Ki
grep -q mkfs /tmp/expect_rc.out && fail "a refused plan printed a mkfs command"
cat /tmp/expect_rc.out

section "partitions on the 128 KiB-boundary disk"
# p1 at sector 2049 (misaligned), p2 at 2048*101 (1 MiB aligned)
vmtool mbr /dev/atomic1 2049:204800 206848:409600
wait_for "${D1}p1"
wait_for "${D1}p2"
untornctl probe "${D1}p1" --json >/tmp/p1.json
untornctl probe "${D1}p2" --json >/tmp/p2.json
expect_eq "p1 start, aligned, hardwareAtomic" "2049 false false" "$(vmtool jget startSector aligned hardwareAtomic </tmp/p1.json | tr '\n' ' ' | sed 's/ $//')"
expect_eq "p2 start, aligned, hardwareAtomic" "206848 true true" "$(vmtool jget startSector aligned hardwareAtomic </tmp/p2.json | tr '\n' ' ' | sed 's/ $//')"
expect_rc "plan ext4 16Ki on p1 (sector 2049) refused" 2 untornctl plan "${D1}p1" --fs ext4 --unit 16Ki
cat /tmp/expect_rc.out
untornctl plan "${D1}p2" --fs ext4 --unit 16Ki --json >/tmp/plan2.json
read -r pmin pmax < <(vmtool jget atomicUnitMin atomicUnitMax </tmp/plan2.json | paste -sd' ')
expect_eq "p2 plan range" "4096 65536" "$pmin $pmax"
read -r -a margs < <(vmtool jget mkfsArgs </tmp/plan2.json)
mkfs.ext4 "${margs[@]}" >/dev/null 2>&1 || fail "planned mkfs on p2 failed"
mount -t ext4 "${D1}p2" /mnt/t
vmtool write /mnt/t/f 16384@0 65536@65536 >/tmp/w.out
expect_eq "p2: statx matches the plan" "supported=true unit_min=$pmin unit_max=$pmax" "$(vmtool statx /mnt/t/f | cut -d' ' -f1-3)"
expect_eq "p2: 16K and 64K atomic writes" "16384@0 ok|65536@65536 ok" "$(paste -sd'|' /tmp/w.out)"
umount /mnt/t
# The same bigalloc format forced onto p1: statx must show what the planner said.
mkfs.ext4 -q -F -O bigalloc -b 4096 -C 65536 "${D1}p1" >/dev/null 2>&1
mount -t ext4 "${D1}p1" /mnt/t
vmtool write /mnt/t/f 16384@0 >/tmp/w.out
expect_eq "p1: statx shows no atomic writes, as planned" "supported=false" "$(vmtool statx /mnt/t/f | cut -d' ' -f1)"
expect_eq "p1: a 16K RWF_ATOMIC write is refused" "16384@0 ENOTSUP" "$(cat /tmp/w.out)"
umount /mnt/t

section "dm-linear on the boundary disk"
dd if=/dev/zero of=/dev/atomic1 bs=1M count=1 conv=fsync status=none
blockdev --rereadpt /dev/atomic1
for c in "good 2048 true" "bad4k 2056 false" "bad512 2049 false"; do
	# shellcheck disable=SC2086 # one field a word
	set -- $c
	dmsetup create "lin$1" --table "0 409600 linear $D1 $2"
	n=$(dm_node "lin$1") || fail "no dm node for lin$1"
	echo "  lin$1 (offset $2 sectors) = $n: $(qlimits "$n")"
	untornctl probe "/dev/mapper/lin$1" --json >/tmp/dm.json
	expect_eq "probe lin$1 hardwareAtomic" "$3" "$(vmtool jget hardwareAtomic </tmp/dm.json)"
	if [ "$3" = true ]; then
		expect_rc "plan ext4 16Ki on lin$1 accepted" 0 untornctl plan "/dev/mapper/lin$1" --fs ext4 --unit 16Ki
	else
		expect_rc "plan ext4 16Ki on lin$1 refused" 2 untornctl plan "/dev/mapper/lin$1" --fs ext4 --unit 16Ki
	fi
done
for n in good bad4k bad512; do dmsetup remove "lin$n"; done
echo "atomic-limits: all checks passed"
