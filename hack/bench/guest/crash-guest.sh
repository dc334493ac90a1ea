#!/bin/bash
# Guest side of hack/bench/crash.sh: runs on every boot of one VM (QEMU keeps
# running across the guest resets, so the NVMe disk keeps what the device
# completed). Usage: crash-guest.sh ARM CYCLES SCALE [SPLIT [FS]]
#
# Boot 1 builds the volume (LVM on /dev/atomic0 formatted as untornctl
# plans it for an 8 KiB unit: FS ext4 (default, bigalloc), xfs or xfs-hw,
# see crash-volume.sh), a plain ext4 WAL volume on
# /dev/atomic1, and a PostgreSQL 15 cluster with data checksums, then
# starts the load. Every later boot is the aftermath
# of a crash: recover, count, load again, crash again — until CYCLES crashes
# have been checked. State lives on the volume and is fsynced before load.
#
# PGV (7th argument, default 15): the PostgreSQL major version. 15 is the
# guest root's; 17 and 18 run from the database root hack/vm.sh mounts at
# /dbroot (--dbroot trixie or sid), with the volumes bound into it at the
# same paths.
#
# SPLIT (KiB, 0 = off): the NVMe queue's max_sectors_kb is set to SPLIT and
# nr_requests to 4, every boot. Buffered writeback then reaches the device
# as SPLIT-sized commands with at most 4 in flight, the rest waiting in the
# guest's block layer, so a crash can find an 8 KiB page half accepted by
# the device and half still queued: a device that guarantees only SPLIT
# KiB. RWF_ATOMIC writes are split by the atomic limits, never by
# max_sectors_kb, and reach the device whole.
set -uo pipefail
ARM=$1 CYCLES=$2 SCALE=$3 SPLIT=${4:-0} FS=${5:-ext4} PGV=${7:-15}
export PATH=/untorn/bin:/usr/lib/postgresql/$PGV/bin:/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C DM_DISABLE_UDEV=1
VG=crashvg LV=pg MNT=/pgdata DATA=/pgdata/db STATE=/pgdata/crash-state
# The WAL lives on a second disk (as the example StatefulSet puts pg_wal on
# its own volume): the data disk then carries relation pages, and a crash
# while it is busy writing is a crash in the middle of page writeback.
WALDEV=/dev/atomic1 WALMNT=/pgwal
SHIM=/untorn/lib/glibc/libuntorn.so
. "$(dirname "$0")/split-queue.sh"
. "$(dirname "$0")/crash-volume.sh"
. "$(dirname "$0")/crash-cycle.sh"
# DBROOT: where the PostgreSQL of version PGV lives ("" = the guest root).
DBROOT=""
if [ "$PGV" != 15 ]; then
	DBROOT=/dbroot
	[ -x "$DBROOT/usr/lib/postgresql/$PGV/bin/postgres" ] ||
		die "PostgreSQL $PGV is not in the database root $DBROOT (hack/vm.sh run --dbroot)"
fi
# pg CMD...: as the database's postgres user; pg_own PATH...: owned by it
# (its uid may differ between the guest root and the database root).
pg() { ${DBROOT:+chroot "$DBROOT"} runuser -u postgres -- "$@"; }
pg_own() { ${DBROOT:+chroot "$DBROOT"} chown postgres: "$@"; }
# bind_volumes: the data and WAL volumes, at the same paths in the database
# root.
bind_volumes() {
	[ -n "$DBROOT" ] || return 0
	mountpoint -q "$DBROOT$MNT" || mount --bind "$MNT" "$DBROOT$MNT" || die "cannot bind $MNT into $DBROOT"
	mountpoint -q "$DBROOT$WALMNT" || mount --bind "$WALMNT" "$DBROOT$WALMNT" || die "cannot bind $WALMNT into $DBROOT"
}

case $ARM in
stock) FPW=on SHIM_ENV="" ;;
fpw-off) FPW=off SHIM_ENV="" ;;
untorn)
	FPW=off
	[ -e "$SHIM" ] || die "the shim is not in the guest ($SHIM)"
	SHIM_ENV="LD_PRELOAD=$SHIM UNTORN_UNIT=8192 UNTORN_MODE=strict UNTORN_STATS_DIR=$MNT/shim-stats"
	;;
*) die "unknown arm $ARM" ;;
esac

start_pg() { # start_pg LOGFILE: with the arm's settings (and shim)
	# shellcheck disable=SC2086 # SHIM_ENV: NAME=VALUE words, split on purpose
	pg env $SHIM_ENV pg_ctl -D "$DATA" -w -t 1200 -l "$1" \
		-o "-k /run/postgresql -c listen_addresses='' -c full_page_writes=$FPW" start >/dev/null
}

first_boot() {
	make_volume /dev/atomic0 "$VG" "$LV" 3G "$FS" 8Ki "$MNT" || die "the data volume ($FS) could not be built"
	mkdir -p "$MNT/shim-stats" "$WALMNT"
	{ mkfs.ext4 -q -F "$WALDEV" && mount -t ext4 "$WALDEV" "$WALMNT"; } || die "WAL volume setup failed"
	bind_volumes
	pg_own "$MNT" "$MNT/shim-stats" "$WALMNT"
	make_cluster
	echo "cycle=0 torn=0 recovered=0" >"$STATE"
	sync
}

# make_cluster: a new PostgreSQL cluster with the pgbench tables, stopped.
make_cluster() {
	# pg_wal by name, so the shim's default UNTORN_EXCLUDE (*/pg_wal/*)
	# leaves the WAL alone as it does in the data directory.
	pg initdb -k -D "$DATA" -X "$WALMNT/pg_wal" -E UTF8 --locale=C >/dev/null || die "initdb failed"
	# Small shared_buffers and frequent checkpoints: many page writes, and
	# the crash finds many dirty pages in the page cache.
	cat >>"$DATA/postgresql.conf" <<-EOF
		shared_buffers = 16MB
		checkpoint_timeout = 30s
		max_wal_size = 64MB
		min_wal_size = 32MB
		bgwriter_delay = 50ms
		bgwriter_lru_maxpages = 400
		synchronous_commit = off
		wal_writer_delay = 50ms
	EOF
	start_pg "$MNT/pg.log" || die "PostgreSQL did not start"
	if ! pg pgbench -h /run/postgresql -i -q -s "$SCALE" postgres >/tmp/pgbench-init.out 2>&1; then
		tail -n 5 /tmp/pgbench-init.out "$MNT/pg.log" | sed 's/^/crash:   /'
		[ -z "$SHIM_ENV" ] || cat "$MNT"/shim-stats/* 2>/dev/null | tail -3 | sed 's/^/crash:   /'
		die "pgbench -i failed"
	fi
	pg pg_ctl -D "$DATA" -m fast -w stop >/dev/null
}

# count_bad: pg_checksums --check on the stopped cluster, once; prints the
# first failures and sets bad to the number of bad pages.
count_bad() {
	local out
	out=$(pg pg_checksums --check -D "$DATA" 2>&1)
	grep -i 'checksum verification failed' <<<"$out" | head -5 | sed 's/^/crash:   /'
	bad=$(sed -n 's/^Bad checksums: *//p' <<<"$out")
	bad=${bad:-0}
}

after_crash() {
	local cycle=$1 t0 rec=no bad amc seen
	seen=$(wc -l 2>/dev/null <"$MNT/pg.log" || echo 0)
	t0=$(up)
	if start_pg "$MNT/pg.log"; then rec=yes; fi
	local took
	took=$(awk -v a="$t0" -v b="$(up)" 'BEGIN{printf "%.0f", b-a}')
	bad=-1 amc=skipped
	if [ $rec = yes ]; then
		pg pg_ctl -D "$DATA" -m fast -w stop >/dev/null
		count_bad
		start_pg "$MNT/pg.log" || rec=no
		if [ $rec = yes ]; then
			if pg pg_amcheck -h /run/postgresql --all --install-missing >/tmp/amcheck.out 2>&1; then
				amc=ok
			else
				amc=failed
				head -5 /tmp/amcheck.out | sed 's/^/crash:   /'
			fi
		fi
	else
		tail -n +$((seen + 1)) "$MNT/pg.log" | grep -aE 'PANIC|FATAL|ERROR' | tail -n 3 | sed 's/^/crash:   /'
		# What made recovery fail: pages whose checksum is wrong. The
		# cluster is rebuilt afterwards, so its control file may be reset
		# to let pg_checksums (which wants a clean shutdown) read it.
		pg pg_resetwal -f -D "$DATA" >/dev/null 2>&1
		count_bad
	fi
	say "cycle=$cycle arm=$ARM fs=$FS pg=$PGV crash_after=${CRASH_AFTER:-?}s recovery=$rec recovery_s=$took checksum_failures=$bad amcheck=$amc"
	echo "CRASH_RESULT arm=$ARM fs=$FS cycle=$cycle recovered=$rec checksum_failures=$bad amcheck=$amc"
	REC=$rec BAD=$bad AMC=$amc
}

# --- every boot
split_queue /dev/atomic0 "$SPLIT" || die "cannot split the data disk's queue"
if [ "$SPLIT" != 0 ]; then
	# Write back often, so writeback is in progress when the crash comes.
	echo 100 >/proc/sys/vm/dirty_writeback_centisecs
	echo 300 >/proc/sys/vm/dirty_expire_centisecs
fi
mkdir -p "$MNT" "$WALMNT"
mount -t ext4 "$WALDEV" "$WALMNT" 2>/dev/null || true # not yet on the first boot
if ! mount_volume "$VG" "$LV" "$FS" "$MNT"; then
	say "first boot: building the volume ($FS) and the cluster (PostgreSQL $PGV, arm $ARM, scale $SCALE, split $SPLIT KiB) at $(up)s"
	first_boot
	say "cluster ready at $(up)s"
	start_pg "$MNT/pg.log" || die "PostgreSQL did not start"
else
	bind_volumes
	next_cycle
	if [ "$REC" != yes ]; then
		# A cluster that cannot recover is lost; the next cycles need one.
		say "recovery failed: rebuilding the cluster"
		rm -rf "$DATA" "$WALMNT/pg_wal"
		make_cluster
		start_pg "$MNT/pg.log" || die "PostgreSQL did not start after the rebuild"
		REC=rebuilt
	fi
	if [ "$(pg psql -h /run/postgresql -Atc 'select 1' postgres 2>/dev/null)" != 1 ]; then
		say "cycle $cycle left the cluster unusable; stopping"
		save_cycle
		exit 0
	fi
	if [ "$REC" = yes ] && { [ "$BAD" != 0 ] || [ "$AMC" != ok ]; }; then
		# A damaged page would be counted again by every later cycle.
		say "re-creating the pgbench tables after damage"
		pg pgbench -h /run/postgresql -i -q -s "$SCALE" postgres >/dev/null 2>&1
	fi
	save_cycle
	if [ "$cycle" -ge "$CYCLES" ]; then
		# shellcheck disable=SC2154 # torn and recovered come from the state file crash-cycle.sh reads
		say "done: $cycle cycles, $torn pages with checksum failures, $recovered recoveries"
		echo "CRASH_DONE arm=$ARM cycles=$cycle torn=$torn recovered=$recovered"
		pg pg_ctl -D "$DATA" -m fast -w stop >/dev/null
		if [ -n "$SHIM_ENV" ]; then
			# Processes cut off by a crash leave no counters; those that
			# exited cleanly (the last run's checkpointer among them) do.
			aw=$(cat "$MNT"/shim-stats/* 2>/dev/null | vmtool jsum atomic_writes)
			sf=$(cat "$MNT"/shim-stats/* 2>/dev/null | vmtool jsum strict_failures)
			say "shim counters of processes that exited cleanly: atomic_writes=$aw strict_failures=$sf"
			echo "CRASH_SHIM arm=$ARM atomic_writes=$aw strict_failures=$sf"
		fi
		[ -z "$DBROOT" ] || umount "$DBROOT$MNT" "$DBROOT$WALMNT"
		umount "$MNT"
		exit 0
	fi
fi

# --- load, then crash at a random moment with no sync
pick_crash_after
pg pgbench -h /run/postgresql -c 4 -j 2 -T 3600 -n postgres >/dev/null 2>&1 &
say "pgbench running; crashing in ${CRASH_AFTER}s (uptime $(up)s)"
sleep "$CRASH_AFTER"
crash_when_busy
