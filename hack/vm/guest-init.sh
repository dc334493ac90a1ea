#!/bin/bash
# Second stage of the untorn test guest, PID 1 on the overlay root: prepare
# a minimal system (no udev, no systemd), name the atomic NVMe disks
# /dev/atomicN by their serial, run the command from /untorn/cmd.sh and
# report its exit status on the console for hack/vm.sh.
export PATH=/untorn/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LANG=C.UTF-8 HOME=/root TERM=dumb DM_DISABLE_UDEV=1 UNTORN_VM=1
NONCE=$(sed -n 's/.*untorn\.nonce=\([0-9a-f]*\).*/\1/p' /proc/cmdline)

finish() {
	sync
	echo "UNTORN_VM_EXIT=$NONCE:$1"
	echo o >/proc/sysrq-trigger
	# PID 1 must not exit while the power-off completes (no external
	# command here: the disks are going away).
	while :; do :; done
}

mount -t tmpfs -o mode=0755 run /run
mount -t tmpfs -o mode=1777 tmp /tmp
mkdir -p /dev/pts /dev/shm /run/lock /run/postgresql /run/lvm
mount -t devpts -o gid=5,mode=620 devpts /dev/pts
mount -t tmpfs -o mode=1777 shm /dev/shm
ln -sfn /proc/self/fd /dev/fd
ln -sfn /proc/self/fd/0 /dev/stdin
ln -sfn /proc/self/fd/1 /dev/stdout
ln -sfn /proc/self/fd/2 /dev/stderr
chown postgres:postgres /run/postgresql 2>/dev/null
chmod 2775 /run/postgresql
hostname untorn-vm
ip link set lo up 2>/dev/null
echo 1 >/proc/sys/kernel/sysrq

# /dev/atomicN -> the NVMe namespace whose controller serial is untorn-atomicN.
want=$(tr ' ' '\n' </proc/cmdline | sed -n 's/^untorn\.disks=//p')
want=${want:-0}
for _ in $(seq 300); do
	found=0
	for d in /sys/block/nvme*n*; do
		[ -e "$d/device/serial" ] || continue
		sn=$(tr -d ' ' <"$d/device/serial")
		case $sn in
		untorn-atomic*)
			ln -sfn "${d##*/}" "/dev/atomic${sn#untorn-atomic}"
			found=$((found + 1))
			;;
		esac
	done
	[ "$found" -ge "$want" ] && break
	sleep 0.1
done
if [ "$found" -lt "$want" ]; then
	echo "vm-init: only $found of $want NVMe disks appeared"
	finish 125
fi

# A database root (hack/vm.sh run --dbroot): the chroot of a newer
# database release, read-only at /dbroot with its own /run and /tmp, the
# kernel's file systems and the binaries disk bound in. A command binds its
# volumes onto /dbroot/pgdata and /dbroot/pgwal and runs the database with
# chroot /dbroot.
for d in /sys/block/vd*; do
	[ "$(cat "$d/serial" 2>/dev/null)" = untorn-dbroot ] || continue
	mkdir -p /dbroot
	if ! mount -t ext4 -o ro,noload "/dev/${d##*/}" /dbroot; then
		echo "vm-init: the database root disk /dev/${d##*/} does not mount"
		finish 125
	fi
	mount -t tmpfs -o mode=0755 run /dbroot/run
	mount -t tmpfs -o mode=1777 tmp /dbroot/tmp
	mount --bind /proc /dbroot/proc
	mount --bind /sys /dbroot/sys
	mount --rbind /dev /dbroot/dev
	mount --bind /untorn /dbroot/untorn
	mkdir -p /dbroot/run/postgresql
	chroot /dbroot chown postgres:postgres /run/postgresql 2>/dev/null
	chmod 2775 /dbroot/run/postgresql
done

cd /untorn || finish 125
bash /untorn/cmd.sh </dev/null
finish $?
