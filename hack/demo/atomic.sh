#!/usr/bin/env bash
# Quick start, part 1: untornctl on loop-backed volumes. Builds untornctl,
# makes an XFS and an ext4 volume on loop devices, probes the devices, plans
# the formats, verifies the mounted filesystems with a real RWF_ATOMIC write
# and prints the results. Everything it creates is removed on exit, also on
# failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
. hack/lib/common.sh

work=$(mktemp -d /tmp/untorn-demo.XXXXXX)
loops=()
mounts=()
cleanup() {
	set +e
	for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m"; done
	for l in "${loops[@]}"; do losetup -d "$l"; done
	rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n$ %s\n' "$*"; }
# show runs a command, prints it and its output, and returns its exit code
# without stopping the script.
show() {
	step "$*"
	local rc=0
	"$@" || rc=$?
	[ "$rc" -eq 0 ] || echo "(exit status $rc)"
	return 0
}

loopdev() { # loopdev NAME: sets $dev to a new 1 GiB sparse loop device
	truncate -s 1G "$work/$1.img"
	dev=$(losetup --find --show --direct-io=on "$work/$1.img")
	loops+=("$dev")
}

mount_verify() { # mount_verify FSTYPE DEV: mounts DEV at $work/FSTYPE, verifies 16 KiB
	# atomic writes there and sets $json to the verify --json result
	mkdir -p "$work/$1"
	mount -t "$1" "$2" "$work/$1"
	mounts+=("$work/$1")
	show "$ctl" verify "$work/$1" --unit 16Ki
	json=$("$ctl" verify "$work/$1" --unit 16Ki --json) || true
}

echo "== building untornctl"
go build -o "$work/untornctl" ./cmd/untornctl
ctl=$work/untornctl
fixtures=pkg/atomic/testdata/sysfs

echo "== kernel $(uname -r)"

echo
echo "== 1. XFS on a loop device (no hardware atomic writes: XFS falls back to copy-on-write)"
loopdev xfs
xdev=$dev
show "$ctl" probe "$xdev"
show "$ctl" plan "$xdev" --fs xfs --unit 16Ki
"$ctl" plan "$xdev" --fs xfs --unit 16Ki --json >"$work/xfs-plan.json"
mapfile -t args < <(jq -r '.mkfsArgs[]' "$work/xfs-plan.json")
step "$(jq -r .mkfsProgram "$work/xfs-plan.json")" -q "${args[@]}"
"$(jq -r .mkfsProgram "$work/xfs-plan.json")" -q "${args[@]}"
mount_verify xfs "$xdev"
xfs_json=$json

echo
echo "== 2. ext4 bigalloc on a loop device"
loopdev ext4
edev=$dev
echo "ext4 gives atomic writes only with hardware support; the loop device has none:"
show "$ctl" plan "$edev" --fs ext4 --unit 16Ki 2>&1
show "$ctl" plan "$edev" --fs ext4 --unit 16Ki --policy prefer
echo
echo "On an NVMe disk with 4 KiB..64 KiB atomic units (a recorded sysfs tree) the plan is:"
show "$ctl" probe /dev/nvme0n1 --sysfs-root "$fixtures"
show "$ctl" plan /dev/nvme0n1 --fs ext4 --unit 16Ki --sysfs-root "$fixtures"
echo
echo "Formatting the loop device with that bigalloc plan and verifying shows why hardware matters:"
"$ctl" plan /dev/nvme0n1 --fs ext4 --unit 16Ki --sysfs-root "$fixtures" --json >"$work/ext4-plan.json"
mapfile -t opts < <(jq -r '.formatOptions[]' "$work/ext4-plan.json")
show mkfs.ext4 -q -F "${opts[@]}" "$edev"
dumpe2fs -h "$edev" 2>/dev/null | grep -E '^(Filesystem features|Block size|Cluster size):'
mount_verify ext4 "$edev"
ext4_json=$json

echo
echo "== results (untornctl verify --json)"
echo "XFS on loop:"
echo "$xfs_json"
echo "ext4 bigalloc on loop:"
echo "$ext4_json"
if [ "$(jq -r .atomic <<<"$xfs_json")" != true ]; then
	echo "demo: XFS did not verify atomic; atomic writes on XFS need Linux 6.16 or later" >&2
	exit 1
fi
echo
echo "== done: XFS gives atomic writes on any device; ext4 needs hardware atomic writes"
