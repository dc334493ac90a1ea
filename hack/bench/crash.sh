#!/bin/bash
# hack/bench/crash.sh — count torn database pages after real crashes.
#
#   hack/bench/crash.sh [--db postgres|mariadb] [--fs ext4|xfs|xfs-hw]
#                       [--pg-version 15|17|18]
#                       [--cycles N] [--arm ARM|all] [--aio io_uring|libaio|pwrite]
#                       [--scale S] [--split KIB] [--check-model]
#                       [--skip-model-check]
#
# --db postgres (default) is described first; --db mariadb and --fs below.
#
# PostgreSQL 15 with data checksums (initdb -k) runs pgbench on an untorn
# volume (LVM on a hardware-atomic NVMe disk of hack/vm.sh, ext4 bigalloc
# as untornctl plans it; pg_wal on a second disk) inside the guest. At a
# random moment (10-30 s into the load, then as soon as the data disk has
# writes in flight, within 10 s) the guest resets itself hard with sysrq
# 'b': no sync, no clean shutdown, while QEMU keeps running. The guest boots again, PostgreSQL
# recovers, `pg_checksums --check` (server stopped) counts pages with
# checksum failures and `pg_amcheck --all` checks the restarted server.
# Arms: stock (full_page_writes=on), fpw-off (full_page_writes=off),
# untorn (full_page_writes=off with the shim, UNTORN_MODE=strict).
#
# The crash model, and what it does and does not cover:
# - It is a power cut of the guest's memory (page cache, PostgreSQL shared
#   buffers, queued block requests not yet handed to the device), not of
#   the device: QEMU's NVMe controller, on the reset, drains every command
#   it had fetched (nvme_ctrl_reset -> nvme_ns_drain -> blk_drain) before it
#   frees its queues, so an accepted write completes whole, as a device
#   with power-loss protection finishes what it acknowledged. `--check-model`
#   verifies this on every run before counting: 16 writers rewrite 64 KiB
#   slots with RWF_ATOMIC, 16 more rewrite other slots with plain O_DIRECT
#   writes, the guest resets with writes in flight, and after the reboot
#   every atomic slot must be empty or whole, QEMU's own trace must show
#   every accepted write command completed; with --split it also reports
#   how many plain slots the reset tore (the model can tear what is not
#   atomic; a reset that happens to tear none is a warning).
# - Tearing therefore comes from where it comes on real hardware with
#   atomic writes: an 8 KiB page the kernel wrote back as more than one
#   device command, of which only some were issued before the crash.
# - A device with 8 KiB atomic writes that QEMU never splits would hide
#   the difference between the arms, so by default (--split 4) the guest
#   caps its NVMe queue at 4 KiB commands (max_sectors_kb) with 4 in flight
#   (nr_requests): buffered writeback of an 8 KiB page becomes two device
#   commands, and the crash can come between them, as on a device that
#   guarantees 4 KiB. RWF_ATOMIC writes are bounded by the atomic limits,
#   not by max_sectors_kb, and still go out as one command. --split 0
#   leaves the queue as the device gives it.
# - Not covered: a device that loses or tears accepted commands (no
#   power-loss protection: the untorn product requires hardware whose
#   atomic write guarantee holds over power loss), host crashes, and a kill
#   of QEMU itself (a host write in flight could be cut short).
#
# --pg-version: PostgreSQL 15 (default) is the guest root's (Debian 12);
# 17 and 18 run from the database chroots hack/dbroot.sh builds from
# Debian trixie and sid (the shim's database tests use the same ones),
# which hack/vm.sh mounts in the guest (--dbroot). PostgreSQL 18 runs with
# its default io_method (worker), as the example deployment does.
#
# --db mariadb: MariaDB 10.11 (crash-mariadb.sh) on the data volume planned
# for InnoDB's 16 KiB page, the redo log on the second disk, a 16 MiB
# buffer pool beside a table of SCALE x 100,000 rows (about 23 MB each) that
# 4 clients update at random, a neighbour streaming direct writes to another
# volume of the data disk (one guest CPU, so one I/O queue; see
# crash-mariadb.sh and docs/vm.md). Arms: stock (innodb_doublewrite=ON), dw-off
# (OFF), untorn (OFF with the shim, UNTORN_UNIT=16384, strict). --aio is
# InnoDB's write path: io_uring (default: innodb_use_native_aio=ON, as the
# example deployment runs it), libaio or pwrite. After each crash:
# recovery, innochecksum on every tablespace with the server stopped (and
# the pages InnoDB itself reports corrupted), CHECK TABLE ... EXTENDED.
#
# --fs: the data volume's filesystem path. ext4 (default): ext4 bigalloc
# over hardware atomic units (NVMe disks 4096:65536). xfs: XFS over NVMe
# disks without atomic units (512:512: every NVMe disk advertises one
# logical block, less than XFS's block), so every atomic write takes XFS's
# copy-on-write software path. xfs-hw: XFS over the 4096:65536 disks, in
# hardware where XFS can. The model check runs on the same path (and
# `--fs raw` checks the bare disk); on a filesystem it also runs buffered
# 64 KiB atomic write groups through the shim beside plain buffered writes.
#
# The last line is machine-readable:
#   cycles=<n> torn_stock=<a> torn_fpw_off=<b> torn_untorn=<c> recovered=<r>
# (--db mariadb: torn_dw_off instead of torn_fpw_off)
# (torn_* are pages with checksum failures summed over that arm's cycles;
# "-" for an arm that did not run.) A recovery that fails is reported with
# PostgreSQL's error; the guest then counts the pages with bad checksums
# (after pg_resetwal, as pg_checksums wants a cleanly stopped cluster),
# rebuilds the cluster and goes on. Exit status: 0 when every recovery of
# the stock and untorn arms succeeded, the untorn arm, if run, had no
# checksum failure and its shim counters show atomic writes.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VM_CACHE=${UNTORN_CACHE:-/var/cache/untorn}/vm
CYCLES=30 ARM=all SCALE="" SPLIT=4 CHECK_MODEL=1 MODEL_ONLY="" DB=postgres FS=ext4 AIO=io_uring PGV=15
USAGE="usage: $0 [--db postgres|mariadb] [--fs ext4|xfs|xfs-hw|raw] [--pg-version 15|17|18] [--cycles N] [--arm ARM|all] [--aio io_uring|libaio|pwrite] [--scale S] [--split KIB] [--check-model] [--skip-model-check]"
while [ $# -gt 0 ]; do
	[ $# -ge 2 ] || case $1 in --check-model | --skip-model-check) ;; *) echo "$USAGE" >&2; exit 2 ;; esac
	case $1 in
	--db) DB=$2; shift 2 ;;
	--fs) FS=$2; shift 2 ;;
	--aio) AIO=$2; shift 2 ;;
	--pg-version) PGV=$2; shift 2 ;;
	--cycles) CYCLES=$2; shift 2 ;;
	--arm) ARM=$2; shift 2 ;;
	--scale) SCALE=$2; shift 2 ;;
	--split) SPLIT=$2; shift 2 ;;
	--check-model) MODEL_ONLY=1; shift ;;
	--skip-model-check) CHECK_MODEL=""; shift ;;
	*) echo "$USAGE" >&2; exit 2 ;;
	esac
done
[[ $CYCLES =~ ^[1-9][0-9]*$ ]] || { echo "crash: --cycles must be a positive number" >&2; exit 2; }
case $DB in
postgres) WEAK=fpw-off SCALE=${SCALE:-10} GUEST=crash-guest.sh ;;
mariadb) WEAK=dw-off SCALE=${SCALE:-5} GUEST=crash-mariadb.sh ;;
*) echo "crash: --db must be postgres or mariadb" >&2; exit 2 ;;
esac
case $FS in
ext4 | xfs-hw) DISK=4096:65536 ;;
xfs) DISK=512:512 ;;
raw) DISK=4096:65536 ;;
*) echo "crash: --fs must be ext4, xfs or xfs-hw (raw: the bare disk, for --check-model)" >&2; exit 2 ;;
esac
DBROOT_ARGS=()
case $PGV in
15) ;;
17) DBROOT_ARGS=(--dbroot trixie) ;;
18) DBROOT_ARGS=(--dbroot sid) ;;
*) echo "crash: --pg-version must be 15, 17 or 18" >&2; exit 2 ;;
esac
[ "$PGV" = 15 ] || [ "$DB" = postgres ] || { echo "crash: --pg-version is PostgreSQL's (--db postgres)" >&2; exit 2; }
case $AIO in
io_uring | libaio | pwrite) [ "$DB" = mariadb ] || [ "$AIO" = io_uring ] || { echo "crash: --aio is InnoDB's write path (--db mariadb)" >&2; exit 2; } ;;
*) echo "crash: --aio must be io_uring, libaio or pwrite" >&2; exit 2 ;;
esac
[[ $SCALE =~ ^[1-9][0-9]*$ ]] || { echo "crash: --scale must be a positive number" >&2; exit 2; }
case $SPLIT in
0 | 4 | 8 | 16 | 32 | 64 | 128) ;;
*) echo "crash: --split must be 0 (off) or a command size in KiB: 4, 8, 16 … 128" >&2; exit 2 ;;
esac
case $ARM in
all) ARMS=(stock "$WEAK" untorn) ;;
stock | "$WEAK" | untorn) ARMS=("$ARM") ;;
*) echo "crash: --arm must be stock, $WEAK, untorn or all (--db $DB)" >&2; exit 2 ;;
esac
if [ "$FS" = raw ] && [ -z "$MODEL_ONLY" ]; then
	echo "crash: --fs raw is the bare disk of the model check (--check-model); the arms need a filesystem" >&2
	exit 2
fi
LOGDIR=${UNTORN_CRASH_LOGS:-${UNTORN_CACHE:-/var/cache/untorn}/crash-logs}
mkdir -p "$LOGDIR"
STAMP=$(date +%Y%m%d-%H%M%S)
# Per guest boot: ~15 s on an idle 2-core host under TCG, far more on a busy one.
PER_CYCLE=${UNTORN_CRASH_CYCLE_TIMEOUT:-900}

# model_trace_check TRACE: QEMU trace of the model run -> summary, status
model_trace_check() {
	awk '
		/pci_nvme_mmio_asqaddr[^_]/ { if (acc > 0 && !back) { back = 1; atreboot = n } }
		back { next }
		/pci_nvme_mmio_doorbell_sq/ { atlast = n }
		/pci_nvme_write cid/ { match($0, /cid [0-9]+/); c = substr($0, RSTART + 4, RLENGTH - 4); out[c] = 1; acc++; n++; atlastw = n }
		/pci_nvme_rw_cb cid/ { match($0, /cid [0-9]+/); c = substr($0, RSTART + 4, RLENGTH - 4); if (c in out) { delete out[c]; n--; fin++ } }
		END {
			printf "crash: model: device: writes accepted %d, completed %d; outstanding at the last submission before the reset %d, right after the last accepted write %d, when the guest came back %d\n", acc, fin, atlast, atlastw, atreboot
			exit !(back && acc > 0 && atreboot == 0 && acc == fin)
		}' "$1"
}

check_model() {
	local log=$LOGDIR/model-$FS-$STAMP.log trace=model-$FS-$STAMP.trace t0=$SECONDS
	echo "crash: checking the crash model on $FS (log: $log)"
	# QEMU's trace goes to a file under the cache (mounted at /vm for QEMU).
	rm -f "$VM_CACHE/$trace"
	UNTORN_VM_CPUS=1 UNTORN_VM_QEMU_ARGS="-D /vm/$trace -trace pci_nvme_write -trace pci_nvme_rw_cb -trace pci_nvme_mmio_doorbell_sq -trace pci_nvme_mmio_asqaddr" \
		"$ROOT/hack/vm.sh" run --disk "$DISK:size=1G" --allow-reset --timeout 3600 -- bench/crash-model.sh "$SPLIT" "$FS" >"$log" 2>&1 || {
		tail -20 "$log"
		echo "crash: the crash-model run failed" >&2
		return 1
	}
	mv "$VM_CACHE/$trace" "$LOGDIR/$trace"
	grep '^tear-reset\|^plain-reset\|^group-shim\|^crash: volume' "$log" | sed 's/^/crash: model: guest: /'
	grep -E '^(tear|plain|group|bplain)-check' "$log" | sed 's/^/crash: model: guest: /'
	# Acknowledged writes (the guest saw them complete) must be on the disk:
	# the direct RWF_ATOMIC ones (tear) and the shim's groups (group).
	awk '
		/^(tear|group)-ack / { split($0, f, /[ =]/); acked[f[1] f[5]] = f[7] }
		/^(tear|group)-slot / { split($0, f, /[ =]/); have[f[1] f[3]] = f[5] }
		END {
			n = 0; lost = 0
			for (sl in acked) {
				n++; h = sl; sub(/-ack/, "-slot", h)
				if (!(h in have) || have[h] + 0 < acked[sl] + 0) lost++
			}
			printf "crash: model: acknowledged writes checked %d, missing after the reset %d\n", n, lost
			exit lost != 0
		}' "$log" || case $FS in
		raw | ext4) echo "crash: MODEL BROKEN: an acknowledged write was lost" >&2; return 1 ;;
		# XFS's copy-on-write path: a write's remapping is in the log,
		# durable with the next log write or fsync (none here), so an
		# acknowledged write may be rolled back whole to the older data.
		*) echo "crash: model: on $FS unsynced acknowledged writes may be rolled back whole (copy-on-write remap not yet in the log)" ;;
		esac
	# One I/O queue (1 vCPU), so command ids of in-flight commands are unique.
	# The guest sets the admin queue address when its driver enables the
	# controller: the first time after the first write is the rebooted
	# guest. At the crashed guest's last submission (doorbell) the writes
	# still outstanding are those the reset caught; they must all complete
	# before the rebooted guest enables the controller.
	model_trace_check "$LOGDIR/$trace" || { echo "crash: MODEL BROKEN: an accepted write did not complete" >&2; return 1; }
	grep -q '^tear-check .* torn=0 ' "$log" || { echo "crash: MODEL BROKEN: a 64 KiB atomic slot was torn by the reset" >&2; return 1; }
	if [ "$FS" != raw ]; then
		# Buffered atomic write groups through the shim: none may tear, the
		# writer must have run to the reset, the shim must have done them.
		if grep -q '^group-writer-failed' "$log"; then
			grep -B3 '^group-writer-failed' "$log" | tail -4 >&2
			echo "crash: MODEL BROKEN: the buffered group writer stopped before the reset" >&2
			return 1
		fi
		grep -q '^group-check .* torn=0 ' "$log" || { echo "crash: TORN: a buffered 64 KiB atomic write group was torn by the reset" >&2; return 1; }
		local gd
		gd=$(sed -n 's/^group-shim .*group_done=\([0-9]*\).*group_kernel=\([0-9]*\).*/\1 \2/p' "$log" | awk '{print $1 + $2}')
		[ "${gd:-0}" -gt 0 ] || { echo "crash: model: the shim's counters show no buffered atomic group done" >&2; return 1; }
		local btorn
		btorn=$(sed -n 's/^bplain-check .* torn=\([0-9]*\) .*/\1/p' "$log")
		if [ "${btorn:-0}" -gt 0 ]; then
			echo "crash: model: buffered 64 KiB writes: $btorn plain ones torn, no atomic group torn"
		else
			echo "crash: model: warning: this reset tore no plain buffered 64 KiB write; no atomic group torn"
		fi
	fi
	# The same reset must tear plain writes when the queue is split, or the
	# arms without atomic writes could never show a torn page.
	local ptorn
	ptorn=$(sed -n 's/^plain-check .* torn=\([0-9]*\) .*/\1/p' "$log")
	# Whether a given reset catches a plain write half issued is chance,
	# so none torn is a warning, not a broken model.
	if [ "$SPLIT" != 0 ] && [ "${ptorn:-0}" -gt 0 ]; then
		echo "crash: model: with the queue split to $SPLIT KiB commands the reset tore $ptorn plain 64 KiB writes and no RWF_ATOMIC one"
	elif [ "$SPLIT" != 0 ]; then
		echo "crash: model: warning: this reset tore no plain 64 KiB write (it tore 5 and 8 in earlier runs); the arms' own figures show whether pages tear"
	fi
	echo "crash: model ok on $FS: accepted writes complete across the guest reset; no atomic slot torn$(case $FS in raw | ext4) echo "; no acknowledged write lost" ;; esac) ($((SECONDS - t0)) s)"
}

arm_log() { # arm_log ARM -> the arm's log file
	local tag=$DB-$FS-$1
	[ "$DB" = postgres ] || tag+=-$AIO
	[ "$PGV" = 15 ] || tag=$DB$PGV-$FS-$1
	echo "$LOGDIR/$tag-$STAMP.log"
}

run_arm() { # run_arm ARM: one VM, all the arm's cycles
	local arm=$1 log
	log=$(arm_log "$arm")
	echo "crash: $DB$([ "$PGV" = 15 ] || echo " $PGV") on $FS, arm $arm$([ "$DB" = postgres ] || echo " ($AIO)"), $CYCLES cycles, scale $SCALE, split ${SPLIT} KiB (log: $log)"
	set +e
	# MariaDB's guest gets one CPU, so the data disk has one I/O queue: with
	# a queue per CPU, InnoDB's page writes and the neighbour's (see
	# crash-mariadb.sh) would each have their own slots and never wait.
	local cpus=${UNTORN_VM_CPUS:-2}
	[ "$DB" = postgres ] || cpus=1
	UNTORN_VM_CPUS=$cpus "$ROOT/hack/vm.sh" run --disk "$DISK:size=8G" --disk "$DISK:size=2G" --mem 2G --allow-reset "${DBROOT_ARGS[@]}" \
		--timeout $((PER_CYCLE * (CYCLES + 1))) -- bench/$GUEST "$arm" "$CYCLES" "$SCALE" "$SPLIT" "$FS" "$AIO" "$PGV" 2>&1 |
		tee "$log" | grep --line-buffered -E '^crash: |^vm: '
	set -e
}

if [ -n "$CHECK_MODEL" ] || [ -n "$MODEL_ONLY" ]; then
	check_model || exit 1
	[ -z "$MODEL_ONLY" ] || exit 0
fi
declare -A TORN=([stock]=- [$WEAK]=- [untorn]=-)
total=0 recovered=0 failed=0
for arm in "${ARMS[@]}"; do
	t0=$SECONDS
	run_arm "$arm"
	log=$(arm_log "$arm")
	n=$(grep -c '^CRASH_RESULT' "$log" || true)
	r=$(grep -c '^CRASH_RESULT.* recovered=yes' "$log" || true)
	t=$(sed -n 's/^CRASH_RESULT.* checksum_failures=\([0-9]*\) .*/\1/p' "$log" | awk '{s += $1} END {print s + 0}')
	# The database's own check: pg_amcheck, or CHECK TABLE ... EXTENDED.
	a=$(grep -cE '^CRASH_RESULT.* (amcheck|check_table)=failed' "$log" || true)
	echo "crash: arm $arm: cycles=$n recovered=$r pages_with_checksum_failures=$t db_check_failures=$a ($((SECONDS - t0)) s, $(((SECONDS - t0) / (n > 0 ? n : 1))) s a cycle)"
	TORN[$arm]=$t
	total=$((total + n)) recovered=$((recovered + r))
	# Without the torn-page defence or the shim a torn page can stop
	# recovery: that is what the fpw-off and dw-off arms are there to show,
	# not a failure of the test (the guest counts the bad pages and
	# rebuilds the cluster or instance).
	[ "$r" -eq "$n" ] || [ "$arm" = "$WEAK" ] || failed=1
	[ "$n" -eq "$CYCLES" ] || { echo "crash: arm $arm finished $n of $CYCLES cycles" >&2; failed=1; }
	if [ "$arm" = untorn ] && { [ "$t" -ne 0 ] || [ "$a" -ne 0 ]; }; then failed=1; fi
	if [ "$arm" = untorn ] && [ "$t" -ne 0 ]; then
		echo "crash: TORN: the untorn arm ($DB on $FS) has $t pages with checksum failures" >&2
	fi
	if [ "$arm" = untorn ]; then
		# The untorn arm means something only if the shim really made the
		# page writes atomic: its counters must show atomic writes (for
		# MariaDB on the write path under test), and no strict failure.
		if [ "$DB" = mariadb ]; then
			aw=$(sed -n 's/^CRASH_SHIM[A-Z_]* .* path_atomic=\([0-9]*\).*/\1/p' "$log" | awk '{s += $1} END {print s + 0}')
		else
			aw=$(sed -n 's/^CRASH_SHIM.* atomic_writes=\([0-9]*\).*/\1/p' "$log" | tail -1)
		fi
		sf=$(sed -n 's/^CRASH_SHIM.* strict_failures=\([0-9]*\).*/\1/p' "$log" | awk '{s += $1} END {print s + 0}')
		if [ -z "$aw" ] || [ "$aw" -eq 0 ] || [ "$sf" -ne 0 ]; then
			echo "crash: arm untorn: the shim's counters show atomic_writes=${aw:-missing} strict_failures=$sf" >&2
			failed=1
		fi
	fi
done
if [ "$DB" = mariadb ]; then
	echo "cycles=$total torn_stock=${TORN[stock]} torn_dw_off=${TORN[dw-off]} torn_untorn=${TORN[untorn]} recovered=$recovered"
else
	echo "cycles=$total torn_stock=${TORN[stock]} torn_fpw_off=${TORN[fpw-off]} torn_untorn=${TORN[untorn]} recovered=$recovered"
fi
exit $failed
