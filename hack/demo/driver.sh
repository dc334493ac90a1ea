#!/usr/bin/env bash
# Quick start, part 2: the CSI driver. Builds untorn-csi and the small CSI
# client, starts the driver on the loop backend and walks one XFS volume
# through CreateVolume -> NodeStageVolume -> NodePublishVolume ->
# NodeGetVolumeStats -> teardown, printing the atomic write limits that
# staging verified. Everything it creates is removed on exit, also on failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
. hack/lib/common.sh

work=$(mktemp -d /tmp/untorn-driver-demo.XXXXXX)
pid=
cleanup() {
	set +e
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid"
		wait "$pid"
	fi
	# Anything a failed run left: mounts under $work, loop devices of its images.
	grep -o " $work/[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m"; done
	for img in "$work"/loop/*.img; do
		[ -e "$img" ] || continue
		for dev in $(losetup --list --noheadings --output NAME --associated "$img"); do losetup -d "$dev"; done
	done
	rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n$ %s\n' "$*"; }
run() { step "$*"; "$@"; }

echo "== building untorn-csi and csiclient"
go build -o "$work/untorn-csi" ./cmd/untorn-csi
go build -o "$work/csiclient" ./hack/csiclient
mkdir -p "$work/loop" "$work/state" "$work/shim" "$work/pod"
sock=$work/csi.sock

echo
echo "== starting the driver on the loop backend (log: $work/driver.log)"
step untorn-csi --mode=all --endpoint "unix://$sock" --node-id demo-node --backend=loop \
	--loop-dir "$work/loop" --state-dir "$work/state" --shim-dir "$work/shim"
"$work/untorn-csi" --mode=all --endpoint "unix://$sock" --node-id demo-node --backend=loop \
	--loop-dir "$work/loop" --state-dir "$work/state" --shim-dir "$work/shim" >"$work/driver.log" 2>&1 &
pid=$!
csi() { "$work/csiclient" -endpoint "unix://$sock" "$@"; }
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
run csi info

echo
echo "== 1. CreateVolume: 1 GiB XFS, 16 KiB atomic writes required"
step csiclient create -name demo-xfs -size 1Gi -param fsType=xfs -param atomicWriteUnit=16Ki -param atomicPolicy=require
csi create -name demo-xfs -size 1Gi -param fsType=xfs -param atomicWriteUnit=16Ki -param atomicPolicy=require | tee "$work/create.json"
id=$(jq -r .volume.volumeId "$work/create.json")

echo
echo "== 2. NodeStageVolume: probe, plan, format (blank device only), mount, verify with RWF_ATOMIC"
run csi stage -volume-id "$id" -staging "$work/staging"
step findmnt "$work/staging"
findmnt "$work/staging"

echo
echo "== the verified atomic write limits stored with the volume"
step csiclient list
csi list | jq -r '.entries[].volume | "volume \(.volumeId): fsType=\(.volumeContext.fsType) atomic=\(.volumeContext.verifiedAtomic) unit min=\(.volumeContext.verifiedUnitMin) max=\(.volumeContext.verifiedUnitMax) hardware=\(.volumeContext.verifiedHardware)"'

echo
echo "== 3. NodePublishVolume: bind mount into the pod's directory"
run csi publish -volume-id "$id" -staging "$work/staging" -target "$work/pod/data"
step "write 16 KiB into the published volume"
head -c 16384 /dev/urandom >"$work/pod/data/page"
ls -l "$work/pod/data"

echo
echo "== 4. NodeGetVolumeStats and NodeGetVolumeHealth (re-verifies the atomic write)"
run csi stats -volume-id "$id" -path "$work/pod/data"
run csi health -volume-id "$id" -path "$work/pod/data"

echo
echo "== 5. an ext4 volume with atomicPolicy=require is refused at staging (a loop device has no hardware atomic writes)"
csi create -name demo-ext4 -size 1Gi -param fsType=ext4 -param atomicPolicy=require >"$work/create4.json"
id4=$(jq -r .volume.volumeId "$work/create4.json")
step csiclient stage -volume-id "$id4" -staging "$work/staging4"
csi stage -volume-id "$id4" -staging "$work/staging4" || echo "(refused, nothing was formatted)"
run csi delete -volume-id "$id4"

echo
echo "== 6. teardown"
run csi unpublish -volume-id "$id" -target "$work/pod/data"
run csi unstage -volume-id "$id" -staging "$work/staging"
run csi delete -volume-id "$id"
step "stop the driver (SIGTERM: finishes in-flight calls)"
kill -TERM "$pid"
wait "$pid"
pid=
tail -n 3 "$work/driver.log"
echo
echo "== driver demo done"
