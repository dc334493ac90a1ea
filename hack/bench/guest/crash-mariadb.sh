#!/bin/bash
# Guest side of `hack/bench/crash.sh --db mariadb`: runs on every boot of one
# VM (QEMU keeps running across the guest resets, so the NVMe disks keep
# what the device completed).
# Usage: crash-mariadb.sh ARM CYCLES SCALE SPLIT FS AIO
#
# Boot 1 builds the data volume (LVM on /dev/atomic0 formatted as untornctl
# plans it for InnoDB's 16 KiB page, see crash-volume.sh), the redo log
# volume on /dev/atomic1 built the same way (the example StatefulSet keeps
# the redo log on a second volume of the same class; the shim in strict
# mode refuses a 16 KiB write on a volume whose atomic writes stop below
# it), and a MariaDB 10.11 instance with a table of
# SCALE x 100,000 rows (about 23 MB each) beside a 16 MiB buffer pool, then
# starts the load: 4 clients updating random rows (a changed column and a
# secondary index key) without pause, and a neighbour writing to another
# volume of the data disk. Every later boot is the aftermath of a
# crash: recover, count, load again, crash again — until CYCLES crashes have
# been checked.
#
# Arms: stock (innodb_doublewrite=ON), dw-off (OFF), untorn (OFF with the
# shim, UNTORN_UNIT=16384, UNTORN_MODE=strict). AIO is InnoDB's write path:
# io_uring (innodb_use_native_aio=ON where the kernel allows io_uring: the
# default, and what the example deployment runs), libaio (ON with io_uring
# refused: kernel.io_uring_disabled=2) or pwrite (OFF: the thread pool's
# pwrite). InnoDB's startup line must name the path on every start.
#
# After each crash: does InnoDB start and recover; with the server stopped
# cleanly, how many pages innochecksum finds corrupted in every tablespace
# (or, when recovery failed, in the files as the crash left them, and the
# pages InnoDB itself reported corrupted in its log); after a restart,
# CHECK TABLE ... EXTENDED.
set -uo pipefail
export PATH=/untorn/bin:/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C DM_DISABLE_UDEV=1
ARM=$1 CYCLES=$2 SCALE=$3 SPLIT=${4:-0} FS=${5:-ext4} AIO=${6:-io_uring}
# NEIGHBOUR: a second LV on the data disk that another tenant writes to
# during the load (see "load" below).
NEIGHBOUR=neighbour
VG=crashvg LV=mdb MNT=/mdb DATA=/mdb/data STATE=/mdb/crash-state ERRLOG=/mdb/err.log
REDOVG=crashredo REDO=/mdbredo
SOCK=/run/mysqld/s.sock
SHIM=/untorn/lib/glibc/libuntorn.so
ROWS=$((SCALE * 100000))
. "$(dirname "$0")/split-queue.sh"
. "$(dirname "$0")/crash-volume.sh"
. "$(dirname "$0")/crash-cycle.sh"

case $ARM in
stock) DW=ON SHIM_ENV=() ;;
dw-off) DW=OFF SHIM_ENV=() ;;
untorn)
	DW=OFF
	[ -e "$SHIM" ] || die "the shim is not in the guest ($SHIM)"
	# Counters on the tmpfs, per boot: printed before each crash (dumped on
	# demand by the running server) and at the end.
	STATS=/run/untorn-stats
	SHIM_ENV=("LD_PRELOAD=$SHIM" UNTORN_UNIT=16384 UNTORN_MODE=strict "UNTORN_STATS_DIR=$STATS")
	;;
*) die "unknown arm $ARM (stock, dw-off, untorn)" ;;
esac
case $AIO in
io_uring) NATIVE=ON PATHLINE="InnoDB: Using io_uring" URING=0 COUNTER=uring_atomic ;;
libaio) NATIVE=ON PATHLINE="InnoDB: Using Linux native AIO" URING=2 COUNTER=aio_atomic ;;
pwrite) NATIVE=OFF PATHLINE="" URING=0 COUNTER=direct_fd_atomic ;;
*) die "unknown write path $AIO (io_uring, libaio, pwrite)" ;;
esac

OPTS=(--no-defaults --user=mysql "--datadir=$DATA" "--socket=$SOCK" --skip-networking
	--pid-file=/run/mysqld/pid "--log-error=$ERRLOG" "--innodb-log-group-home-dir=$REDO"
	--innodb-page-size=16384 "--innodb-doublewrite=$DW" --innodb-flush-method=O_DIRECT
	"--innodb-use-native-aio=$NATIVE" --innodb-buffer-pool-size=16M --innodb-log-file-size=32M
	--innodb-flush-log-at-trx-commit=2 --innodb-io-capacity=20000 --innodb-io-capacity-max=40000)
sql() { mariadb --no-defaults -S "$SOCK" -uroot -N -B "$@"; }

# start_db: mariadbd with the arm's settings (and shim); waits until it
# answers (InnoDB recovered) or exits. Checks that InnoDB took the write path.
start_db() {
	local seen i
	seen=$(wc -l 2>/dev/null <"$ERRLOG" || echo 0)
	env "${SHIM_ENV[@]}" mariadbd "${OPTS[@]}" >/dev/null 2>&1 &
	DBPID=$!
	for ((i = 0; i < 1800; i++)); do
		if mariadb-admin --no-defaults -S "$SOCK" -uroot ping >/dev/null 2>&1; then
			if [ -n "$PATHLINE" ] && ! tail -n +$((seen + 1)) "$ERRLOG" | grep -q "$PATHLINE"; then
				die "InnoDB did not take the $AIO path: no '$PATHLINE' in its log"
			fi
			return 0
		fi
		kill -0 "$DBPID" 2>/dev/null || { wait "$DBPID" 2>/dev/null; DBPID=""; return 1; }
		sleep 1
	done
	return 1
}
stop_db() {
	mariadb-admin --no-defaults -S "$SOCK" -uroot shutdown >/dev/null 2>&1
	[ -z "${DBPID:-}" ] || wait "$DBPID" 2>/dev/null
	DBPID=""
}

# make_table: the load table (SCALE x 100,000 rows) and the procedure the
# clients run, on a running server.
make_table() {
	sql -e "DROP DATABASE IF EXISTS w; CREATE DATABASE w" &&
		sql w -e "CREATE TABLE t (id INT PRIMARY KEY, k INT NOT NULL, c CHAR(120) NOT NULL,
			pad CHAR(60) NOT NULL, KEY(k)) ENGINE=InnoDB;
			INSERT INTO t SELECT seq, seq % 1000, REPEAT('x', 120), REPEAT('y', 60) FROM seq_1_to_$ROWS" &&
		sql w <<-'EOF'
			DELIMITER //
			CREATE PROCEDURE churn(n INT)
			BEGIN
			  DECLARE i INT DEFAULT 0;
			  DECLARE r INT;
			  WHILE 1 DO
			    -- The row first: RAND() in the WHERE clause would be
			    -- evaluated for every row, a full scan per update.
			    SET r = 1 + FLOOR(RAND() * n);
			    UPDATE t SET k = k + 1, c = REPEAT(CHAR(65 + i % 26), 120) WHERE id = r;
			    SET i = i + 1;
			  END WHILE;
			END//
			DELIMITER ;
		EOF
}

# make_instance: a new data directory and redo log with the load table, stopped.
make_instance() {
	rm -rf "$DATA" "$REDO"/ib_logfile*
	mkdir -p "$DATA" && chown mysql: "$DATA" "$REDO"
	mariadb-install-db --no-defaults --user=mysql "--datadir=$DATA" --auth-root-authentication-method=normal \
		--skip-test-db "--innodb-log-group-home-dir=$REDO" --innodb-page-size=16384 >/tmp/install-db.out 2>&1 ||
		{ tail -5 /tmp/install-db.out | sed 's/^/crash:   /'; die "mariadb-install-db failed"; }
	start_db || { tail -5 "$ERRLOG" | sed 's/^/crash:   /'; die "MariaDB did not start"; }
	make_table || { grep -aE '\[ERROR\]|Assertion|signal|failed' "$ERRLOG" | tail -8 | sed 's/^/crash:   /'; die "creating the load table failed"; }
	stop_db
}

first_boot() {
	make_volume /dev/atomic0 "$VG" "$LV" 3G "$FS" 16Ki "$MNT" || die "the data volume ($FS) could not be built"
	lvm lvcreate -q -y -Zn -L 512M -n "$NEIGHBOUR" "$VG" >/dev/null || die "the neighbour volume could not be made"
	mkdir -p "$REDO"
	touch "$ERRLOG" && chown mysql: "$ERRLOG"
	make_volume /dev/atomic1 "$REDOVG" redo 1G "$FS" 16Ki "$REDO" || die "the redo log volume ($FS) could not be built"
	make_instance
	echo "cycle=0 torn=0 recovered=0" >"$STATE"
	sync
}

# innochecksum_bad: IC = pages with a bad checksum in every tablespace of
# the stopped server (ibdata1, undo tablespaces, every .ibd); prints the first.
# ibdata1's pages 64-191 are the doublewrite buffer: copies of other
# tablespaces' pages (innochecksum finds their page numbers "invalid" there,
# and a copy torn by a crash is what the buffer is for), not pages of their
# own, so they are not counted.
innochecksum_bad() {
	local f c out
	IC=0
	while IFS= read -r f; do
		out=$(innochecksum -a 1000000 "$f" 2>&1)
		[ "${f##*/}" != ibdata1 ] ||
			out=$(awk -F'::' '/Fail: page::/ { n = $2 + 0; if (n >= 64 && n < 192) next } { print }' <<<"$out")
		c=$(grep -c 'Fail: page::' <<<"$out")
		if [ "$c" -gt 0 ]; then
			grep 'Fail: page::' <<<"$out" | head -3 | sed "s|^|crash:   ${f#"$DATA"/}: |"
			IC=$((IC + c))
		fi
	done < <(find "$DATA" -name '*.ibd' -o -name ibdata1 -o -name 'undo[0-9]*')
}

after_crash() {
	local cycle=$1 t0 rec=no ic ir chk=skipped seen took out
	seen=$(wc -l 2>/dev/null <"$ERRLOG" || echo 0)
	t0=$(up)
	if start_db; then rec=yes; fi
	took=$(awk -v a="$t0" -v b="$(up)" 'BEGIN{printf "%.0f", b-a}')
	if [ $rec = yes ]; then
		stop_db
	else
		tail -n +$((seen + 1)) "$ERRLOG" | grep -aE '\[ERROR\]|Assertion|signal' | tail -n 3 | sed 's/^/crash:   /'
		[ -z "${DBPID:-}" ] || { kill -KILL "$DBPID" 2>/dev/null; wait "$DBPID" 2>/dev/null; DBPID=""; }
	fi
	innochecksum_bad
	ic=$IC
	# Pages InnoDB itself reported corrupted (recovery, reads), by page id.
	ir=$(tail -n +$((seen + 1)) "$ERRLOG" | grep -ai 'corrupt' | grep -o 'space=[0-9]*, page number=[0-9]*' | sort -u | wc -l)
	bad=$((ic > ir ? ic : ir))
	if [ $rec = yes ]; then
		if start_db; then
			out=$(sql -e "CHECK TABLE w.t EXTENDED" 2>&1)
			if [ -n "$out" ] && ! grep -qv $'\tstatus\tOK$' <<<"$out"; then chk=ok; else
				chk=failed
				head -3 <<<"$out" | sed 's/^/crash:   /'
			fi
		else
			rec=no
		fi
	fi
	say "cycle=$cycle arm=$ARM fs=$FS aio=$AIO crash_after=${CRASH_AFTER:-?}s recovery=$rec recovery_s=$took checksum_failures=$bad innochecksum=$ic innodb_reported=$ir check_table=$chk"
	echo "CRASH_RESULT arm=$ARM fs=$FS aio=$AIO cycle=$cycle recovered=$rec checksum_failures=$bad innochecksum=$ic innodb_reported=$ir check_table=$chk"
	REC=$rec BAD=$bad CHK=$chk
}

# shim_counters TAG WHAT: the shim's counters of this boot's processes.
shim_counters() {
	local st aw pw sf
	st=$(cat "$STATS"/untorn-*.json 2>/dev/null)
	aw=$(vmtool jsum atomic_writes <<<"$st") pw=$(vmtool jsum "$COUNTER" <<<"$st")
	sf=$(vmtool jsum strict_failures <<<"$st")
	say "shim counters ($2): atomic_writes=$aw $COUNTER=$pw strict_failures=$sf"
	echo "$1 arm=$ARM aio=$AIO atomic_writes=$aw path_atomic=$pw strict_failures=$sf"
}

# --- every boot
split_queue /dev/atomic0 "$SPLIT" || die "cannot split the data disk's queue"
echo "$URING" >/proc/sys/kernel/io_uring_disabled || die "cannot set kernel.io_uring_disabled=$URING"
mkdir -p /run/mysqld "$REDO"
chown mysql: /run/mysqld
if [ -n "${STATS:-}" ]; then mkdir -p "$STATS" && chmod 1777 "$STATS"; fi
mount_volume "$REDOVG" redo "$FS" "$REDO" || true # not yet on the first boot
if ! mount_volume "$VG" "$LV" "$FS" "$MNT"; then
	say "first boot: building the volume ($FS) and the instance (arm $ARM, $AIO, $ROWS rows, split $SPLIT KiB) at $(up)s"
	first_boot
	say "instance ready at $(up)s"
	start_db || die "MariaDB did not start"
else
	next_cycle
	if [ "$REC" != yes ]; then
		# An instance that cannot recover is lost; the next cycles need one.
		say "recovery failed: rebuilding the instance"
		make_instance
		start_db || die "MariaDB did not start after the rebuild"
	elif [ "$BAD" != 0 ] || [ "$CHK" != ok ]; then
		# A damaged page would be counted again by every later cycle.
		say "re-creating the load table after damage"
		make_table || die "re-creating the load table failed"
	fi
	save_cycle
	if [ "$cycle" -ge "$CYCLES" ]; then
		# shellcheck disable=SC2154 # torn and recovered come from the state file crash-cycle.sh reads
		say "done: $cycle cycles, $torn corrupted pages, $recovered recoveries"
		echo "CRASH_DONE arm=$ARM cycles=$cycle torn=$torn recovered=$recovered"
		stop_db
		[ -z "${STATS:-}" ] || shim_counters CRASH_SHIM "this boot's servers, stopped cleanly"
		umount "$MNT"
		exit 0
	fi
fi

# --- load, then crash at a random moment with no sync
# InnoDB writes a page as one 16 KiB O_DIRECT write, 16/SPLIT commands
# issued together; alone on the split queue (4 slots) a page is issued
# whole, so a reset cannot catch it half issued however it is timed.
# Devices are shared, though: a neighbour streaming direct writes to
# another volume of the same disk keeps the queue full, and InnoDB's page
# pieces then wait for slots one by one, as on a busy device that
# guarantees 4 KiB. The neighbour does not change what RWF_ATOMIC writes
# are: one command each.
(while :; do dd if=/dev/zero of="/dev/$VG/$NEIGHBOUR" bs=1M count=512 oflag=direct status=none || exit; done) &
pick_crash_after
for _ in 1 2 3 4; do
	sql w -e "CALL churn($ROWS)" >/dev/null 2>&1 &
done
say "load running; crashing in ${CRASH_AFTER}s (uptime $(up)s)"
pages_written() { sql -e "SHOW GLOBAL STATUS LIKE 'Innodb_pages_written'" 2>/dev/null | cut -f2; }
w0=$(disk_written) p0=$(pages_written)
sleep "$CRASH_AFTER"
say "the load wrote $(($(disk_written) - w0)) KiB to the data disk (InnoDB $(($(pages_written) - ${p0:-0})) pages); $(sql -e 'SHOW PROCESSLIST' 2>/dev/null | grep -c 'UPDATE') clients updating"
if [ -n "${STATS:-}" ]; then
	# The running server's counters: its page writes went out atomic on
	# the write path under test (it dumps them within a second or two).
	touch "$STATS/dump-now"
	sleep 3
	shim_counters CRASH_SHIM_LIVE "the running server, before the crash"
fi
crash_when_busy
