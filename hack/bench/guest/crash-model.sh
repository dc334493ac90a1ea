#!/bin/bash
# Guest side of `hack/bench/crash.sh --check-model`. Usage: crash-model.sh [SPLIT [FS]]
#
# FS raw (default): the bare disk /dev/atomic0. First boot: rewrite 64 KiB
# slots from 16 writers with RWF_ATOMIC (slots 0-1023) and, beside them,
# from 16 writers with plain O_DIRECT writes (slots 1024-2047), and reset
# the machine (sysrq b) with writes in flight (the plain writers trigger
# it). Second boot (QEMU kept running): classify every slot — empty, whole
# or torn.
#
# FS ext4, xfs or xfs-hw: the same writers on a file of a volume built as
# the crash test's arms build theirs (crash-volume.sh, planned for a 64 KiB
# unit), preallocated and synced, so every write overwrites written blocks
# as a database's page writes do. Beside them, two buffered writers
# (tearw): 8 threads write 64 KiB groups gathered from four buffers with
# pwritev2(RWF_ATOMIC) on a buffered descriptor under the untorn shim
# (slots 2048-2559; the shim turns each into one RWF_ATOMIC direct write)
# and 8 threads write the same groups without the flag into the page cache
# (slots 2560-3071), written back as the kernel pleases.
#
# With SPLIT (KiB) the NVMe queue is capped as the crash test caps it
# (max_sectors_kb=SPLIT, nr_requests=4) on both boots: the plain writes then
# reach the device in pieces and can be seen torn; the atomic ones (direct
# and groups) must not.
set -euo pipefail
export PATH=/untorn/bin:$PATH DM_DISABLE_UDEV=1
SPLIT=${1:-0} FS=${2:-raw}
SLOT=65536
GEOM=(--slot "$SLOT" --slots 1024)
SHIM=/untorn/lib/glibc/libuntorn.so
. "$(dirname "$0")/split-queue.sh"
. "$(dirname "$0")/crash-volume.sh"
split_queue /dev/atomic0 "$SPLIT"

if [ "$FS" = raw ]; then
	TARGET=/dev/atomic0
else
	MNT=/model TARGET=/model/slots
	if ! mount_volume modelvg model "$FS" "$MNT"; then
		echo "crash-model: first boot, building the $FS volume"
		make_volume /dev/atomic0 modelvg model 512M "$FS" 64Ki "$MNT"
		# Written (not merely allocated) blocks: the atomic writes overwrite.
		dd if=/dev/zero of="$TARGET" bs=1M count=$((3072 * SLOT / 1048576)) conv=fsync status=none
		sync
		FRESH=1
	fi
fi
vmtool tear-check "$TARGET" "${GEOM[@]}" >/tmp/check.out
vmtool tear-check "$TARGET" "${GEOM[@]}" --first 1024 --prefix plain >/tmp/plain.out
if [ "$FS" != raw ]; then
	vmtool tear-check "$TARGET" --slot $SLOT --slots 512 --first 2048 --prefix group >/tmp/group.out
	vmtool tear-check "$TARGET" --slot $SLOT --slots 512 --first 2560 --prefix bplain >/tmp/bplain.out
fi
if { [ "$FS" = raw ] && grep -q 'whole=0 ' /tmp/check.out && grep -q 'torn=0 ' /tmp/check.out; } || [ -n "${FRESH:-}" ]; then
	echo "crash-model: first boot, writing ($FS)"
	if [ "$FS" != raw ]; then
		[ -e "$SHIM" ] || { echo "crash-model: the shim is not in the guest ($SHIM)" >&2; exit 1; }
		# Write back often, so that writeback is in progress at the reset.
		echo 100 >/proc/sys/vm/dirty_writeback_centisecs
		echo 300 >/proc/sys/vm/dirty_expire_centisecs
		mkdir -p /tmp/stats
		if [ "$FS" != ext4 ]; then
			# XFS makes an atomic write durable with the log write that
			# carries its remap: force the log every second (syncfs), so
			# that atomic writes are on the disk when the reset comes,
			# not all rolled back to the preallocated zeros.
			(while :; do sync -f "$TARGET"; sleep 1; done) &
		fi
		# A group writer that stops (a group refused, EOPNOTSUPP without
		# the shim) says so; the host fails the model on that line.
		(LD_PRELOAD=$SHIM UNTORN_MODE=strict UNTORN_STATS_DIR=/tmp/stats \
			tearw "$TARGET" $SLOT 512 2048 8 group group || echo "group-writer-failed status=$?") &
		tearw "$TARGET" $SLOT 512 2560 8 plain bplain &
		# The shim's counters, dumped on demand by the running writer.
		sleep 2
		touch /tmp/stats/dump-now
		sleep 2
		st=$(cat /tmp/stats/untorn-*.json 2>/dev/null || true)
		echo "group-shim group_asked=$(vmtool jsum group_asked <<<"$st") group_done=$(vmtool jsum group_done <<<"$st") group_kernel=$(vmtool jsum group_kernel <<<"$st") atomic_writes=$(vmtool jsum atomic_writes <<<"$st") strict_failures=$(vmtool jsum strict_failures <<<"$st")"
	fi
	# The plain writers reset the machine (with at least half of them in
	# flight, so plain writes are cut mid-way); the atomic ones write on.
	vmtool tear-write "$TARGET" "${GEOM[@]}" --writers 16 --reset-after 1h &
	vmtool tear-write "$TARGET" "${GEOM[@]}" --first 1024 --prefix plain --plain --writers 16 --reset-after 8s
	exit 1 # not reached: tear-write resets the machine
fi
echo "crash-model: second boot, checking ($FS)"
cat /tmp/check.out /tmp/plain.out
[ "$FS" = raw ] || cat /tmp/group.out /tmp/bplain.out
