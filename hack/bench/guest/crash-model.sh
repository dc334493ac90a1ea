#!/bin/bash
# Guest side of `hack/bench/crash.sh --check-model`. First boot: rewrite
# 64 KiB slots of /dev/atomic0 from 16 writers with RWF_ATOMIC and reset the
# machine (sysrq b) with writes in flight. Second boot (QEMU kept running):
# classify every slot — empty, whole or torn.
set -euo pipefail
export PATH=/untorn/bin:$PATH
GEOM="--slot 65536 --slots 1024"
vmtool tear-check /dev/atomic0 $GEOM >/tmp/check.out
if grep -q 'whole=0 ' /tmp/check.out && grep -q 'torn=0 ' /tmp/check.out; then
	echo "crash-model: first boot, writing"
	vmtool tear-write /dev/atomic0 $GEOM --writers 16 --reset-after 8s
	exit 1 # not reached: tear-write resets the machine
fi
echo "crash-model: second boot, checking"
cat /tmp/check.out
