#!/usr/bin/env bash
# MariaDB 10.11 (InnoDB) sysbench on XFS loop volumes: what dropping the
# doublewrite buffer under the writethrough shim costs and saves. A
# benchmark, not a test: it prints figures and ratios.
#
# Arms (run in alternating rounds, the order rotated each round so every arm
# takes every position; medians per arm):
#   stock    innodb_doublewrite=ON, no shim
#   dw-off   innodb_doublewrite=OFF, no shim (UNSAFE: the limit to compare with)
#   untorn   innodb_doublewrite=OFF + shim (XFS software atomic writes here)
#   direct   innodb_doublewrite=OFF + shim in UNTORN_MODE=unsafe-direct-bench:
#            the same writes without RWF_ATOMIC (UNSAFE, no protection): an
#            estimate of the cost where atomic writes are in hardware
#
# Every arm: innodb_flush_method=O_DIRECT, innodb_flush_log_at_trx_commit=1,
# innodb_buffer_pool_size=128M, innodb_log_file_size=128M, InnoDB's default
# I/O path (io_uring where the kernel allows it). The data set (default 8
# tables of 500,000 rows, about 1 GB) is several times the buffer pool, and
# the keys are drawn uniformly (--rand-type=uniform), so page writes are
# spread over the whole data set as in a database bigger than its memory.
# Each run starts from a copy of the same prepared data directory on a fresh
# XFS volume formatted with the planner's arguments (untornctl plan --fs xfs
# --unit 16Ki), then runs each workload in turn for --duration seconds.
#
# Per run and workload: TPS, bytes written to the loop device per
# transaction (/sys/block/loopN/stat), redo bytes per transaction
# (Innodb_lsn_current), the coefficient of variation of per-second TPS
# (sysbench --report-interval=1) and the worst second. A plot of every arm's
# per-second TPS (its median run) per workload goes to --svg (one file; a
# second workload's plot gets the workload's name appended). Last lines: one
# per workload (workload=NAME ...), then for the first workload:
#   tps_ratio=<direct/stock> device_bytes_ratio=<direct/stock>
#   sw_tps_ratio=<untorn/stock> sw_device_bytes_ratio=<untorn/stock>
#   limit_tps_ratio=<dw-off/stock> pairs=<rounds>
#
# Profiles: default (3 rounds, 8 tables x 500,000 rows, 16 threads, 60 s per
# workload: about 30 minutes here) and smoke (1 round, 2 x 10,000 rows, 4
# threads, 4 s: proves the script works).
#
# Usage: hack/bench/sysbench.sh [--profile default|smoke] [--rounds N]
#          [--duration S] [--tables N] [--table-size N] [--threads N]
#          [--workloads oltp_write_only,oltp_update_index]
#          [--arms stock,dw-off,untorn,direct] [--svg FILE]
#          [--keep DIR]   (DIR: every run's line and per-second series kept)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=SCRIPTDIR/lib.sh
. hack/bench/lib.sh

profile=default
if [ "${1:-}" = --profile ]; then profile=${2:-}; shift 2; fi
case $profile in
default) rounds=3 duration=60 tables=8 tsize=500000 threads=16 volsize=8G ;;
smoke) rounds=1 duration=4 tables=2 tsize=10000 threads=4 volsize=2G ;;
*) echo "sysbench.sh: unknown profile '$profile' (default, smoke)" >&2; exit 2 ;;
esac
arms=stock,dw-off,untorn,direct workloads=oltp_write_only,oltp_update_index svg='' keep=''
while [ $# -gt 0 ]; do
	bench_value sysbench.sh "$@"
	case $1 in
	--tables) tables=$2 ;;
	--table-size) tsize=$2 ;;
	--threads) threads=$2 ;;
	--workloads) workloads=$2 ;;
	*) bench_opt sysbench.sh "$1" "$2" ;;
	esac
	shift 2
done
bench_arms sysbench.sh "$arms" stock dw-off untorn direct
for w in ${workloads//,/ }; do
	[ -f "/usr/share/sysbench/$w.lua" ] || { echo "sysbench.sh: unknown workload $w (see /usr/share/sysbench)" >&2; exit 2; }
done
bench_positive sysbench.sh "$rounds" "$duration" "$tables" "$tsize" "$threads"
bench_require_root sysbench.sh
for p in sysbench mariadbd mariadb-install-db mariadb-admin; do
	command -v $p >/dev/null || { echo "sysbench.sh: $p is not installed (hack/deps/bench.txt: sysbench, mariadb-server)" >&2; exit 2; }
done
svg=${svg:-${TMPDIR:-/tmp}/untorn-sysbench-$profile.svg}

work=$(mktemp -d "${TMPDIR:-/tmp}/untorn-sysbench.XXXXXX")
chmod 755 "$work"
loops=() mounts=() mpid=''
sock=$work/run/s.sock
admin() { mariadb-admin --no-defaults -S "$sock" -uroot "$@"; }
stop_server() {
	[ -n "$mpid" ] || return 0
	admin shutdown >/dev/null 2>&1 || kill -TERM "$mpid" 2>/dev/null || true
	wait "$mpid" || true
	mpid=''
}
cleanup() {
	set +e
	if [ -n "$mpid" ]; then kill -KILL "$mpid" 2>/dev/null; wait "$mpid"; fi
	bench_release
	rm -rf "$work"
}
trap cleanup EXIT

bench_tools
mkdir -p "$work/run" "$work/tmpl" "$work/data" "$work/logs" "$work/series"
chown mysql: "$work/run" "$work/tmpl"

# start DATADIR DOUBLEWRITE [ENV...]: mariadbd in the background ($mpid),
# waits until it answers.
start() {
	local data=$1 dw=$2
	shift 2
	env "$@" mariadbd --no-defaults --user=mysql --datadir="$data" --socket="$sock" --skip-networking \
		--pid-file="$work/run/pid" --log-error="$work/logs/err-$(basename "$data")-$RANDOM.log" \
		--innodb-doublewrite="$dw" --innodb-flush-method=O_DIRECT --innodb-flush-log-at-trx-commit=1 \
		--innodb-buffer-pool-size=128M --innodb-log-file-size=128M --max-connections=$((threads + 20)) &
	mpid=$!
	local i
	for i in $(seq 600); do
		admin ping >/dev/null 2>&1 && return 0
		kill -0 "$mpid" 2>/dev/null || { echo "sysbench.sh: mariadbd exited while starting" >&2; tail -20 "$work"/logs/err-* >&2; exit 1; }
		sleep 0.2
	done
	echo "sysbench.sh: mariadbd did not answer within 120 s" >&2
	exit 1
}
sb() { # sb WORKLOAD COMMAND [ARGS...]
	local w=$1 c=$2
	shift 2
	sysbench "$w" --db-driver=mysql --mysql-socket="$sock" --mysql-user=root --mysql-db=sbtest \
		--tables="$tables" --table-size="$tsize" --rand-type=uniform "$@" "$c"
}
status() { # status VARIABLE: a global status value
	mariadb --no-defaults -S "$sock" -uroot -N -B -e "SHOW GLOBAL STATUS LIKE '$1'" | awk '{print $2}'
}

echo "== template: $tables tables x $tsize rows"
t0=$(date +%s)
mariadb-install-db --no-defaults --user=mysql --datadir="$work/tmpl/data" --auth-root-authentication-method=normal \
	--skip-test-db >/dev/null
start "$work/tmpl/data" ON
mariadb --no-defaults -S "$sock" -uroot -e 'CREATE DATABASE sbtest'
sb oltp_common prepare --threads="$(( tables < 4 ? tables : 4 ))" >/dev/null
mariadb --no-defaults -S "$sock" -uroot -e 'SET GLOBAL innodb_fast_shutdown=0'
stop_server
echo "template: $(du -sh "$work/tmpl/data" | cut -f1) in $(($(date +%s) - t0))s"

# run ARM ROUND: a fresh XFS, the template copied in, each workload in turn.
run() {
	local arm=$1 round=$2 dw=OFF env=() dev w
	case $arm in
	stock) dw=ON ;;
	untorn) env=(LD_PRELOAD="$lib" UNTORN_UNIT=16384) ;;
	direct) env=(LD_PRELOAD="$lib" UNTORN_UNIT=16384 UNTORN_MODE=unsafe-direct-bench
		UNTORN_BENCH_CONFIRM=I-accept-torn-pages) ;;
	esac
	truncate -s "$volsize" "$work/vol.img"
	dev=$(losetup --find --show --direct-io=on "$work/vol.img")
	loops=("$dev")
	bench_mkfs_xfs "$dev" 16Ki
	bench_mount "$dev" "$work/data"
	mounts=("$work/data")
	cp -a "$work/tmpl/data" "$work/data/db"
	sync
	start "$work/data/db" "$dw" "${env[@]}"
	for w in ${workloads//,/ }; do
		local s0 l0 out s1 l1 tx tps series=$arm-$round-$w.tps
		s0=$(bench_sectors "$dev") l0=$(status Innodb_lsn_current)
		out=$(sb "$w" run --threads="$threads" --time="$duration" --report-interval=1 2>&1) ||
			{ echo "sysbench.sh: sysbench $w failed ($arm, round $round):" >&2; echo "$out" | tail -20 >&2; exit 1; }
		s1=$(bench_sectors "$dev") l1=$(status Innodb_lsn_current)
		awk '/^\[ *[0-9]+s \]/ {t = $2; sub(/s$/, "", t); for (i = 1; i <= NF; i++) if ($i == "tps:") print t, $(i+1)}' <<<"$out" \
			>"$work/series/$series"
		tx=$(awk '/^ *transactions:/ {print $2}' <<<"$out")
		tps=$(awk '/^ *transactions:/ {gsub(/[(]/, "", $3); print $3}' <<<"$out")
		if [ -z "$tx" ] || [ "$tx" = 0 ]; then echo "sysbench.sh: no transactions ($arm, $w):" >&2; echo "$out" | tail -20 >&2; exit 1; fi
		awk -v a="$arm" -v r="$round" -v w="$w" -v tps="$tps" -v tx="$tx" -v redo="$((l1 - l0))" -v dev="$(((s1 - s0) * 512))" \
			-v st="$(bench_series_stats "$work/series/$series")" -v se="$series" \
			'BEGIN { printf "round=%d workload=%s arm=%s tps=%.1f device_bytes_per_tx=%.0f redo_bytes_per_tx=%.0f %s series=%s\n", r, w, a, tps, dev/tx, redo/tx, st, se }' |
			tee -a "$work/results"
	done
	stop_server
	bench_retry umount "$work/data"
	mounts=()
	losetup -d "$dev"
	loops=()
	rm -f "$work/vol.img"
}

echo "== profile $profile: $rounds rounds x ($arms, order rotated each round), workloads $workloads," \
	"${duration}s each, $tables x $tsize rows, $threads threads"
for r in $(seq 1 "$rounds"); do
	for a in $(bench_order "$r" "$arms"); do
		run "$a" "$r"
	done
done

declare -A T D R V X
lines=()
for w in ${workloads//,/ }; do
	echo "== medians ($w)"
	for a in ${arms//,/ }; do
		sel="workload=$w arm=$a "
		T[$a]=$(bench_median "$work/results" "$sel" tps) D[$a]=$(bench_median "$work/results" "$sel" device_bytes_per_tx)
		R[$a]=$(bench_median "$work/results" "$sel" redo_bytes_per_tx) V[$a]=$(bench_median "$work/results" "$sel" cv)
		X[$a]=$(bench_median "$work/results" "$sel" worst_tps)
		printf 'workload=%s arm=%s tps=%s device_bytes_per_tx=%s redo_bytes_per_tx=%s cv=%s worst_tps=%s\n' "$w" "$a" \
			"${T[$a]}" "${D[$a]}" "${R[$a]}" "${V[$a]}" "${X[$a]}"
	done
	for a in ${arms//,/ }; do
		[ "$a" = stock ] && continue
		printf 'vs stock: workload=%s arm=%s tps=%s device_bytes=%s redo=%s cv=%s worst_tps=%s\n' "$w" "$a" \
			"$(bench_ratio "${T[$a]}" "${T[stock]:-}")" "$(bench_ratio "${D[$a]}" "${D[stock]:-}")" \
			"$(bench_ratio "${R[$a]}" "${R[stock]:-}")" "$(bench_ratio "${V[$a]}" "${V[stock]:-}")" \
			"$(bench_ratio "${X[$a]}" "${X[stock]:-}")"
	done
	lines+=("tps_ratio=$(bench_ratio "${T[direct]:-}" "${T[stock]:-}") device_bytes_ratio=$(bench_ratio "${D[direct]:-}" "${D[stock]:-}") sw_tps_ratio=$(bench_ratio "${T[untorn]:-}" "${T[stock]:-}") sw_device_bytes_ratio=$(bench_ratio "${D[untorn]:-}" "${D[stock]:-}") limit_tps_ratio=$(bench_ratio "${T[dw-off]:-}" "${T[stock]:-}") pairs=$rounds")
	out=$svg
	[ "$w" = "${workloads%%,*}" ] || out=${svg%.svg}-$w.svg
	bench_plot "$out" "MariaDB 10.11 sysbench $w: transactions per second, each arm's median run" \
		"$tables x $tsize rows, buffer pool 128M, $threads threads, ${duration}s, innodb_doublewrite ON (stock) or OFF" "$work/results" "$work/series" "$arms" "workload=$w " && echo "plot: $out"
done
echo "== all runs"
cat "$work/results"
bench_keep "$keep"
i=0
for w in ${workloads//,/ }; do echo "workload=$w ${lines[$i]}"; i=$((i + 1)); done
echo "${lines[0]}"
