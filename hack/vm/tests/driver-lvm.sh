#!/bin/bash
# VM test 2: untorn-csi on its production backend (LVM) over a hardware
# atomic NVMe disk. Disks: --disk 4096:65536:size=8G
. "$(dirname "$0")/lib.sh"
need untorn-csi csi-sanity vmtool lvm
D=$(readlink -f "${DISK:-/dev/atomic0}")
VG=untorn SOCK=/run/untorn/csi.sock
mkdir -p /run/untorn /var/lib/untorn /tmp/sanity

section "volume group on $D"
lvm pvcreate -q -y "$D" >/dev/null
lvm vgcreate -q "$VG" "$D" >/dev/null
lvm vgs -o vg_name,vg_size,vg_extent_size,pv_count "$VG"

start_csi_lvm "$VG" "$SOCK"

section "one volume the way kubelet drives it: stage, limits, expand"
vmtool csi "$SOCK" --unit 16Ki --size $((256 << 20)) --expand-to $((512 << 20)) | tee /tmp/csi-check.out ||
	{ tail -30 /tmp/csi.log; fail "the CSI walk-through failed"; }
expect_eq "staged filesystem has hardware atomic writes (statx)" "supported=true unit_min=4096 unit_max=65536" \
	"$(sed -n 's/^csi staged statx //p' /tmp/csi-check.out)"
read -r before after < <(sed -n 's/^csi filesystem bytes_before=\([0-9]*\) bytes_after=\([0-9]*\)/\1 \2/p' /tmp/csi-check.out)
[ "$after" -gt $((before + (200 << 20))) ] || fail "filesystem did not grow online: $before -> $after bytes"
pass "filesystem grew online: $before -> $after bytes"
grep -q '^csi deleted' /tmp/csi-check.out || fail "volume not deleted"
expect_eq "no LV left behind" "" "$(lvm lvs --noheadings -o lv_name "$VG" | tr -d ' ')"

section "csi-sanity (fsType ext4, atomicWriteUnit 16Ki, atomicPolicy require)"
printf 'fsType: ext4\natomicWriteUnit: 16Ki\natomicPolicy: require\n' >/tmp/sanity/params.yaml
rc=0
csi-sanity --csi.endpoint "unix://$SOCK" --csi.testvolumeparameters /tmp/sanity/params.yaml \
	--csi.stagingdir /tmp/sanity/staging --csi.mountdir /tmp/sanity/target \
	--csi.testvolumesize $((64 << 20)) --csi.testvolumeexpandsize $((128 << 20)) \
	--ginkgo.no-color >/tmp/sanity/out.txt 2>&1 || rc=$?
grep -E '^(Ran [0-9]+ of [0-9]+ Specs|SUCCESS!|FAIL!)|Passed \|' /tmp/sanity/out.txt | sed 's/^/  /'
if [ $rc -ne 0 ]; then
	grep -E '^\s*\[FAIL\]' /tmp/sanity/out.txt | head -20
	tail -30 /tmp/csi.log
	fail "csi-sanity failed (exit $rc)"
fi
pass "csi-sanity: every applicable spec passed"
expect_eq "csi-sanity left no LV" "" "$(lvm lvs --noheadings -o lv_name "$VG" | tr -d ' ')"
echo "driver-lvm: all checks passed"
