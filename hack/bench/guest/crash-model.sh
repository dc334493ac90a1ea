#!/bin/bash
# Guest side of `hack/bench/crash.sh --check-model`. Usage: crash-model.sh [SPLIT]
# First boot: rewrite 64 KiB slots of /dev/atomic0 from 16 writers with
# RWF_ATOMIC (slots 0-1023) and, beside them, from 16 writers with plain
# O_DIRECT writes (slots 1024-2047), and reset the machine (sysrq b) with
# writes in flight (the plain writers trigger it). Second boot (QEMU kept running): classify every slot —
# empty, whole or torn. With SPLIT (KiB) the NVMe queue is capped as the
# crash test caps it (max_sectors_kb=SPLIT, nr_requests=4) on both boots:
# the plain writes then reach the device in pieces and must be seen torn,
# the atomic ones must not.
set -euo pipefail
export PATH=/untorn/bin:$PATH
SPLIT=${1:-0}
GEOM="--slot 65536 --slots 1024"
. "$(dirname "$0")/split-queue.sh"
split_queue /dev/atomic0 "$SPLIT"
vmtool tear-check /dev/atomic0 $GEOM >/tmp/check.out
vmtool tear-check /dev/atomic0 $GEOM --first 1024 --prefix plain >/tmp/plain.out
if grep -q 'whole=0 ' /tmp/check.out && grep -q 'torn=0 ' /tmp/check.out; then
	echo "crash-model: first boot, writing"
	# The plain writers reset the machine (with at least half of them in
	# flight, so plain writes are cut mid-way); the atomic ones write on.
	vmtool tear-write /dev/atomic0 $GEOM --writers 16 --reset-after 1h &
	vmtool tear-write /dev/atomic0 $GEOM --first 1024 --prefix plain --plain --writers 16 --reset-after 8s
	exit 1 # not reached: tear-write resets the machine
fi
echo "crash-model: second boot, checking"
cat /tmp/check.out /tmp/plain.out
