#!/usr/bin/env bash
# Benchmark (not a test): what the driver's staging costs.
#  1. median over RUNS runs of CreateVolume + NodeStageVolume (format, mount,
#     verify) of a SIZE loop volume, for ext4 (atomicPolicy prefer: loop
#     devices have no hardware atomic writes) and xfs (require), against bare
#     truncate + losetup + mkfs + mount of the same size on the same kind of
#     loop device (direct I/O on), formatted with the planner's options
#     (untornctl plan, as the driver formats); printed as a ratio.
#  2. CONCURRENT xfs volumes of CONCURRENT_SIZE created and staged at once:
#     total time; afterwards no leaked loop devices, mounts or files.
#  3. the driver's resident memory idle and after that load.
# Last line, machine-readable:
#   stage_ratio_ext4=<x> stage_ratio_xfs=<y> concurrent20_s=<z> rss_mib=<m>
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH=/usr/local/go/bin:$PATH
[ "$(id -u)" -eq 0 ] || { echo "stage.sh: run as root (loop devices, mkfs, mount)" >&2; exit 2; }

RUNS=${RUNS:-5}
SIZE=${SIZE:-10Gi}
CONCURRENT=${CONCURRENT:-20}
CONCURRENT_SIZE=${CONCURRENT_SIZE:-1Gi}
work=$(mktemp -d "${TMPDIR:-/var/tmp}/untorn-bench.XXXXXX")
pid=
cleanup() {
	set +e
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid"; fi
	grep -o " $work/[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m"; done
	for img in "$work"/loop/*.img "$work"/bare/*.img; do
		[ -e "$img" ] || continue
		for dev in $(losetup --list --noheadings --output NAME --associated "$img"); do losetup -d "$dev"; done
	done
	rm -rf "$work"
}
trap cleanup EXIT

nice go build -o "$work/untorn-csi" ./cmd/untorn-csi
nice go build -o "$work/csiclient" ./hack/csiclient
nice go build -o "$work/untornctl" ./cmd/untornctl
mkdir -p "$work/loop" "$work/state" "$work/shim" "$work/bare"
sock=$work/csi.sock
"$work/untorn-csi" --mode=all --endpoint "unix://$sock" --node-id bench --backend=loop --loop-dir "$work/loop" \
	--state-dir "$work/state" --shim-dir "$work/shim" --loop-reserve 1Gi >"$work/driver.log" 2>&1 &
pid=$!
csi() { "$work/csiclient" -endpoint "unix://$sock" "$@"; }
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
csi info >/dev/null
sleep 1
rss() { awk '/^VmRSS/ {printf "%.1f", $2/1024}' "/proc/$pid/status"; }
rss_idle=$(rss)

now() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.3f", m/1e9}'; }
bytes=$(numfmt --from=iec-i "$SIZE")

driver_run() { # fs policy i -> nanoseconds for the CreateVolume + NodeStageVolume calls
	local fs=$1 policy=$2 i=$3 out id
	out=$(csi create-stage -name "bench-$fs-$i" -size "$SIZE" -param fsType="$fs" -param atomicPolicy="$policy" -staging "$work/stg-$fs-$i")
	id=$(jq -r .volumeId <<<"$out")
	jq -r .elapsedNs <<<"$out"
	csi unstage -volume-id "$id" -staging "$work/stg-$fs-$i" >/dev/null
	csi delete -volume-id "$id" >/dev/null
	rmdir "$work/stg-$fs-$i" 2>/dev/null || true
}

# plan_options FS POLICY: the planner's mkfs options (without the device)
# for a loop volume of this size and the driver's default unit (16Ki), one a
# line: the bare baseline formats exactly as the driver does.
plan_options() {
	local img=$work/bare/plan.img dev
	truncate -s "$bytes" "$img"
	dev=$(losetup --find --show --direct-io=on "$img")
	"$work/untornctl" plan "$dev" --fs "$1" --unit 16Ki --policy "$2" --json | jq -r '.formatOptions[]'
	losetup -d "$dev"
	rm -f "$img"
}

bare_run() { # fs i -> nanoseconds for truncate + losetup + mkfs + mount
	local fs=$1 i=$2 t0 t1 img=$work/bare/$1-$2.img dev mnt=$work/bare/mnt-$1-$2
	mkdir -p "$mnt"
	t0=$(now)
	truncate -s "$bytes" "$img"
	dev=$(losetup --find --show --direct-io=on "$img")
	if [ "$fs" = ext4 ]; then mkfs.ext4 -q -F -m0 "${plan_opts[@]}" "$dev"; else mkfs.xfs -q -f "${plan_opts[@]}" "$dev"; fi
	mount -t "$fs" "$dev" "$mnt"
	t1=$(now)
	umount "$mnt"
	losetup -d "$dev"
	rm -f "$img"
	rmdir "$mnt"
	echo $((t1 - t0))
}

declare -A ratio
for spec in ext4:prefer xfs:require; do
	fs=${spec%%:*} policy=${spec#*:}
	mapfile -t plan_opts < <(plan_options "$fs" "$policy")
	d=() b=()
	for i in $(seq "$RUNS"); do
		d+=("$(driver_run "$fs" "$policy" "$i")")
		b+=("$(bare_run "$fs" "$i")")
	done
	dm=$(printf '%s\n' "${d[@]}" | median)
	bm=$(printf '%s\n' "${b[@]}" | median)
	ratio[$fs]=$(awk -v a="$dm" -v b="$bm" 'BEGIN {printf "%.2f", a/b}')
	printf '%-5s %s: driver create+stage median %ss, bare truncate+losetup+mkfs+mount median %ss, ratio %s (%d runs)\n' \
		"$fs" "$SIZE" "$dm" "$bm" "${ratio[$fs]}" "$RUNS"
done

# Concurrent create + stage of distinct volumes.
t0=$(now)
pids=()
for i in $(seq "$CONCURRENT"); do
	(
		csi create-stage -name "conc-$i" -size "$CONCURRENT_SIZE" -param fsType=xfs -staging "$work/conc-$i" | jq -r .volumeId >"$work/conc-$i.id"
	) &
	pids+=($!)
done
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=$((failed + 1)); done
t1=$(now)
[ "$failed" -eq 0 ] || { echo "stage.sh: $failed concurrent volumes failed" >&2; exit 1; }
conc=$(awk -v n=$((t1 - t0)) 'BEGIN {printf "%.2f", n/1e9}')
staged=$(grep -c " $work/conc-" /proc/self/mounts || true)
rss_load=$(rss)
echo "concurrent: $CONCURRENT xfs volumes of $CONCURRENT_SIZE created and staged in ${conc}s ($staged mounted)"
for i in $(seq "$CONCURRENT"); do
	id=$(cat "$work/conc-$i.id")
	csi unstage -volume-id "$id" -staging "$work/conc-$i" >/dev/null
	csi delete -volume-id "$id" >/dev/null
done
leaked_mounts=$(grep -c " $work/" /proc/self/mounts || true)
leaked_loops=0
for f in "$work"/loop/*; do
	[ -e "$f" ] || continue
	leaked_loops=$((leaked_loops + $(losetup --list --noheadings --associated "$f" | wc -l)))
done
leaked_files=$(find "$work/loop" "$work/state/staged" -type f | wc -l)
echo "after teardown: $leaked_mounts mounts, $leaked_loops loop devices, $leaked_files files left"
[ "$leaked_mounts$leaked_loops$leaked_files" = 000 ] || { echo "stage.sh: leaked resources" >&2; exit 1; }
echo "driver RSS: idle ${rss_idle} MiB, after load ${rss_load} MiB"
rss_max=$(awk -v a="$rss_idle" -v b="$rss_load" 'BEGIN {print (a > b) ? a : b}')
echo "stage_ratio_ext4=${ratio[ext4]} stage_ratio_xfs=${ratio[xfs]} concurrent20_s=${conc} rss_mib=${rss_max}"
