#!/bin/bash
# Records the lvm2 outputs the LVM backend's unit tests replay. Run as root
# on a scratch loop device holding nothing else:
#   record.sh /dev/loopN
# It creates volume group vg0 on it (metadata only: --driverloaded n needs no
# device-mapper, so lv_attr shows state "X"; the tests turn it into "a" where
# they need an active LV), records, and removes vg0 again. Each file holds
# stdout (*.out) or stderr (*.txt, with lvm's "Activation disabled" warnings
# that --driverloaded n adds filtered out); *.rc holds the exit code.
# lvremove-in-use.{txt,rc} needs an open LV and so device-mapper: it holds
# the message lvm2 2.03 prints (lv_check_not_in_use) for a mounted LV.
set -euo pipefail
dev=$1
out=$(cd "$(dirname "$0")" && pwd)
export LC_ALL=C LVM_SUPPRESS_FD_WARNINGS=1
g=(--devices "$dev" --driverloaded n)
id1=uv-0123456789abcdef0123456789abcdef
id2=uv-fedcba9876543210fedcba9876543210
lvf=lv_name,lv_size,lv_attr,lv_path,lv_dm_path,lv_tags
vgf=vg_name,vg_size,vg_free,vg_extent_size

rec() { # name cmd args...: record stdout, stderr and exit code
	local name=$1; shift
	local rc=0
	"$@" >"$out/$name.out" 2>"$out/$name.err" || rc=$?
	grep -v 'WARNING: Activation disabled\|WARNING: Skipping zeroing\|not zeroed\.' "$out/$name.err" >"$out/$name.txt" || true
	rm -f "$out/$name.err"
	[ -s "$out/$name.out" ] || rm -f "$out/$name.out"
	[ -s "$out/$name.txt" ] || rm -f "$out/$name.txt"
	echo "$rc" >"$out/$name.rc"
}

pvcreate -q "${g[@]}" "$dev"
vgcreate -q "${g[@]}" vg0 "$dev"
trap 'vgremove -q -y "${g[@]}" vg0 || true; pvremove -q -y "${g[@]}" "$dev" || true' EXIT

rec vgs-empty vgs "${g[@]}" --reportformat json --units b --nosuffix -o $vgf vg0
rec lvs-missing lvs "${g[@]}" --reportformat json --units b --nosuffix -o $lvf vg0/$id1
rec lvcreate lvcreate "${g[@]}" --yes --type linear -n $id1 -L 8388608b -W y -Z y \
	--addtag untorn.csi.dev --addtag untorn.m.MZZVI6LQMU.PBTHG --addtag untorn.m.NZQW2ZI.OB3GGLJR vg0
rec lvcreate-exists lvcreate "${g[@]}" --yes --type linear -n $id1 -L 8388608b -W y -Z y --addtag untorn.csi.dev vg0
rec lvs-one lvs "${g[@]}" --reportformat json --units b --nosuffix -o $lvf vg0/$id1
lvcreate -q "${g[@]}" --yes --type linear -n $id2 -L 4194304b --addtag untorn.csi.dev vg0 2>/dev/null
lvcreate -q "${g[@]}" --yes --type linear -n root -L 4194304b --addtag os vg0 2>/dev/null
rec lvs-foreign lvs "${g[@]}" --reportformat json --units b --nosuffix -o $lvf vg0/root
rec lvs-all lvs "${g[@]}" --reportformat json --units b --nosuffix -o $lvf vg0
rec vgs vgs "${g[@]}" --reportformat json --units b --nosuffix -o $vgf vg0
rec lvcreate-nospace lvcreate "${g[@]}" --yes --type linear -n uv-00000000000000000000000000000000 -L 10737418240b -W y -Z y --addtag untorn.csi.dev vg0
rec lvextend lvextend "${g[@]}" -L 16777216b vg0/$id1
rec lvextend-nospace lvextend "${g[@]}" -L 10737418240b vg0/$id1
rec lvextend-missing lvextend "${g[@]}" -L 16777216b vg0/uv-00000000000000000000000000000000
rec lvchange-tags lvchange "${g[@]}" --deltag untorn.m.MZZVI6LQMU.PBTHG --addtag untorn.m.MZZVI6LQMU.MV4HINA vg0/$id1
rec lvremove lvremove "${g[@]}" -y vg0/$id1
rec lvremove-missing lvremove "${g[@]}" -y vg0/$id1
rec vg-missing vgs "${g[@]}" --reportformat json --units b --nosuffix -o $vgf vg1
rec lvs-vg-missing lvs "${g[@]}" --reportformat json --units b --nosuffix -o $lvf vg1/$id1
rec lvcreate-vg-missing lvcreate "${g[@]}" --yes --type linear -n $id1 -L 8388608b -W y -Z y --addtag untorn.csi.dev vg1
rec lvremove-vg-missing lvremove "${g[@]}" -y vg1/$id1
lvm version | sed -n 1p >"$out/VERSION"
