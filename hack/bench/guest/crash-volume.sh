# shellcheck shell=bash
# Sourced by the crash test's guest scripts: the data volume as the driver
# would give it. FS is ext4 (bigalloc over hardware atomic units), xfs (the
# disk has no atomic units: XFS's copy-on-write software path) or xfs-hw
# (XFS over a disk with atomic units: hardware where XFS can, software
# otherwise).

# make_volume DEV VG LV SIZE FS UNIT MNT: a volume group on DEV, a linear LV,
# formatted as `untornctl plan` plans it for UNIT (8Ki, 16Ki, 64Ki), mounted
# at MNT and verified to give atomic writes of UNIT. The plan must say the
# path FS stands for (hardware or software); for XFS the root gets the
# copy-on-write extent size hint the driver sets when it stages a volume.
make_volume() {
	local dev=$1 vg=$2 lv=$3 size=$4 fs=$5 unit=$6 mnt=$7 plan margs mopts fstype want hw cow
	fstype=${fs%-hw}
	case $fs in
	ext4 | xfs-hw) want=true ;;
	xfs) want=false ;;
	*) echo "make_volume: unknown filesystem path $fs (ext4, xfs, xfs-hw)" >&2; return 1 ;;
	esac
	dev=$(readlink -f "$dev")
	dd if=/dev/zero of="$dev" bs=1M count=4 conv=fsync status=none
	{ lvm pvcreate -q -y -ff "$dev" >/dev/null && lvm vgcreate -q "$vg" "$dev" >/dev/null &&
		lvm lvcreate -q -y -Zn -L "$size" -n "$lv" "$vg" >/dev/null; } || { echo "LVM setup on $dev failed" >&2; return 1; }
	plan=$(untornctl plan "/dev/$vg/$lv" --fs "$fstype" --unit "$unit" --json) || {
		echo "untornctl plan refused /dev/$vg/$lv for $fstype, unit $unit" >&2
		return 1
	}
	hw=$(vmtool jget hardware <<<"$plan")
	if [ "$hw" != "$want" ]; then
		echo "the plan for $fs on $dev says hardware=$hw, want $want: $plan" >&2
		return 1
	fi
	read -r -a margs < <(vmtool jget mkfsArgs <<<"$plan")
	mopts=$(vmtool jget mountOptions <<<"$plan" | tr ' ' ',')
	"mkfs.$fstype" "${margs[@]}" >/dev/null 2>&1 || { echo "mkfs.$fstype ${margs[*]} failed" >&2; return 1; }
	mkdir -p "$mnt"
	mount -t "$fstype" ${mopts:+-o "$mopts"} "/dev/$vg/$lv" "$mnt" || { echo "mount of /dev/$vg/$lv failed" >&2; return 1; }
	cow=$(vmtool jget cowExtSize <<<"$plan" 2>/dev/null || true)
	if [ "$fstype" = xfs ] && [ -n "$cow" ] && [ "$cow" != 0 ]; then
		xfs_io -c "cowextsize $cow" "$mnt" || { echo "cannot set the copy-on-write extent size hint $cow on $mnt" >&2; return 1; }
	fi
	untornctl verify "$mnt" --unit "$unit" >/dev/null || { echo "$mnt gives no atomic writes of $unit" >&2; return 1; }
	# statx of a file on it (a directory reports no atomic writes).
	: >"$mnt/.statx-probe"
	echo "crash: volume $fs: $fstype on /dev/$vg/$lv (hardware=$hw), mkfs ${margs[*]}${mopts:+, mount -o $mopts}${cow:+, cowextsize $cow}; statx: $(vmtool statx "$mnt/.statx-probe" | tr '\n' ' ')"
	rm -f "$mnt/.statx-probe"
}

# mount_volume VG LV FS MNT: mount the volume of an earlier boot; fails on
# the first boot (no volume group yet).
mount_volume() {
	local vg=$1 lv=$2 fs=$3 mnt=$4
	lvm vgchange -q -ay "$vg" >/dev/null 2>&1
	mkdir -p "$mnt"
	mount -t "${fs%-hw}" "/dev/$vg/$lv" "$mnt" 2>/dev/null
}
