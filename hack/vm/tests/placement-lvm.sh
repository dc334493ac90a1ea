#!/bin/bash
# VM test: the LVM backend over two NVMe disks with different atomic write
# units places a volume only where its unit can be had. Disks:
#   --disk 4096:65536:size=2G --disk 4096:16384:size=2G
# The volume group lists the 16 KiB disk first, so lvm's own allocation
# would put an LV there; a 64 KiB-unit class must land on the 64 KiB disk.
. "$(dirname "$0")/lib.sh"
need untorn-csi vmtool lvm
# LVM reports the PVs by the paths they were created with.
BIG=/dev/atomic0 SMALL=/dev/atomic1
VG=untorn SOCK=/run/untorn/csi.sock
mkdir -p /run/untorn /var/lib/untorn

section "disks"
big=$(readlink -f "$BIG") small=$(readlink -f "$SMALL")
expect_eq "$BIG (${big##*/}) atomic limits (min max max_bytes boundary)" "4096 65536 65536 0" "$(qlimits "${big##*/}")"
expect_eq "$SMALL (${small##*/}) atomic limits (min max max_bytes boundary)" "4096 16384 16384 0" "$(qlimits "${small##*/}")"

section "volume group over both, the 16 KiB disk first"
lvm pvcreate -q -y "$SMALL" "$BIG" >/dev/null
lvm vgcreate -q "$VG" "$SMALL" "$BIG" >/dev/null
lvm pvs -o pv_name,vg_name,pv_size,pv_free,pe_start "$SMALL" "$BIG"
free_of() { lvm pvs --noheadings --units b --nosuffix -o pv_free "$1" | tr -d ' '; }
FREE_BIG=$(free_of "$BIG") FREE_SMALL=$(free_of "$SMALL")

start_csi_lvm "$VG" "$SOCK"

# place NAME PARAM...: vmtool csi-place with those class parameters
place() {
	local name=$1 p=() a
	shift
	for a in "$@"; do p+=(--param "$a"); done
	vmtool csi-place "$SOCK" --name "$name" "${p[@]}" | tee "/tmp/place-$name.out" ||
		{ tail -30 /tmp/csi.log; fail "csi-place $name failed"; }
}
field() { sed -n "s/^place $2//p" "/tmp/place-$1.out"; }
# lv_pvs ID: the PVs the volume's LV sits on
lv_pvs() { lvm lvs --noheadings -o devices "$VG/$1" | sed 's/([0-9]*)//g; s/ //g' | tr ',' '\n' | sort -u | tr '\n' ' '; }

section "node topology: the units the disks give in hardware"
place topo fsType=xfs atomicWriteUnit=16Ki
expect_eq "topology" "atomic.untorn.csi.dev/16Ki=hardware atomic.untorn.csi.dev/32Ki=hardware atomic.untorn.csi.dev/4Ki=hardware atomic.untorn.csi.dev/64Ki=hardware atomic.untorn.csi.dev/8Ki=hardware topology.untorn.csi.dev/node=untorn-vm" \
	"$(field topo 'topology ')"
id=$(field topo 'create code=OK id=')
expect_eq "an xfs (any source) volume goes where lvm puts it: the first PV" "$SMALL " "$(lv_pvs "$id")"
vmtool csi-delete "$SOCK" "$id"

section "ext4 64 KiB unit: only the 64 KiB disk"
place ext4-64k fsType=ext4 atomicWriteUnit=64Ki atomicPolicy=require
expect_eq "capacity counts the 64 KiB disk only" "capacity=$FREE_BIG" "$(field ext4-64k '' | grep '^capacity=')"
id=$(field ext4-64k 'create code=OK id=')
[ -n "$id" ] || fail "ext4 64Ki volume not created: $(cat /tmp/place-ext4-64k.out)"
expect_eq "its LV is on the 64 KiB disk only" "$BIG " "$(lv_pvs "$id")"
expect_eq "staged ext4 gives 64 KiB atomic writes (statx)" "supported=true unit_min=4096 unit_max=65536" "$(field ext4-64k 'staged statx ')"
vmtool csi-delete "$SOCK" "$id"

section "XFS 64 KiB unit in hardware: only the 64 KiB disk"
place xfs-hw-64k fsType=xfs atomicWriteUnit=64Ki atomicSource=hardware
expect_eq "capacity counts the 64 KiB disk only" "capacity=$FREE_BIG" "$(field xfs-hw-64k '' | grep '^capacity=')"
id=$(field xfs-hw-64k 'create code=OK id=')
expect_eq "its LV is on the 64 KiB disk only" "$BIG " "$(lv_pvs "$id")"
vmtool csi-delete "$SOCK" "$id"

section "ext4 16 KiB unit: both disks"
place ext4-16k fsType=ext4 atomicWriteUnit=16Ki
expect_eq "capacity counts both disks" "capacity=$((FREE_BIG + FREE_SMALL))" "$(field ext4-16k '' | grep '^capacity=')"
id=$(field ext4-16k 'create code=OK id=')
[ -n "$id" ] || fail "ext4 16Ki volume not created"
vmtool csi-delete "$SOCK" "$id"

section "ext4 128 KiB unit: no disk can, nothing carved"
place ext4-128k fsType=ext4 atomicWriteUnit=128Ki
expect_eq "capacity" "capacity=0" "$(field ext4-128k '' | grep '^capacity=')"
expect_eq "CreateVolume" "create code=ResourceExhausted" "$(field ext4-128k '' | grep '^create ')"
echo "  message: $(field ext4-128k 'message ')"
expect_eq "no LV left behind" "" "$(lvm lvs --noheadings -o lv_name "$VG" | tr -d ' ')"
echo "placement-lvm: all checks passed"
