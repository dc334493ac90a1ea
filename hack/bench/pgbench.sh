#!/usr/bin/env bash
# PostgreSQL 15 pgbench on XFS loop volumes: what the writethrough shim costs
# and saves. A benchmark, not a test: it prints figures and ratios.
#
# Arms (run in alternating rounds, the order rotated each round so every arm
# takes every position; medians per arm):
#   stock    full_page_writes=on, no shim
#   fpw-off  full_page_writes=off, no shim (UNSAFE: the limit to compare with)
#   untorn   full_page_writes=off + shim (XFS software atomic writes here)
#   direct   full_page_writes=off + shim in UNTORN_MODE=unsafe-direct-bench:
#            the same O_DIRECT writethrough without RWF_ATOMIC (UNSAFE, no
#            protection): an estimate of the cost where atomic writes are in
#            hardware and cost what a plain direct write costs
#   untorn-wal  as untorn, with pg_wal written through the shim too
#            (UNTORN_EXCLUDE=; the shim's default leaves */pg_wal/* on the
#            buffered path); add with --arms
#
# Profiles (flags given after --profile override its values):
#   default  scale 20 (300 MB), 4 clients, 45 s runs, checkpoint_timeout=30s,
#            max_wal_size=512MB, shared_buffers=128MB, 3 rounds
#   large    scale 200 (3 GB: 25x shared_buffers=128MB, 330,000 pages of
#            pgbench_accounts, so almost every update after a checkpoint is a
#            page's first and costs a full-page image), 32 clients, 90 s
#            runs, checkpoint_timeout=45s with max_wal_size=8GB (checkpoints
#            by time, the same rhythm for every arm: two per run; a cycle
#            touches far fewer pages than the table has, as a 5-minute cycle
#            on a faster machine with a bigger table does), 3 rounds: 4 arms
#            x 3 rounds take about 30 minutes here; a 16 GiB sparse volume
#            per run (one at a time) and a 3 GB template. The server runs
#            in a memory cgroup of 1 GiB (--memory): the page cache it can
#            use holds under a third of the data set, as a database pod's
#            memory limit does under Kubernetes.
#   smoke    scale 1, 2 clients, 4 s runs, 1 round: proves the script works
#
# Per run: TPS, WAL bytes per transaction (pg_wal_lsn_diff), bytes written to
# and read from the loop device(s) per transaction and the requests they
# completed (/sys/block/loopN/stat), the machine's busy CPU time per
# transaction (/proc/stat: user, system, interrupts), and from the
# per-second progress (pgbench -P 1) the coefficient of variation of TPS
# (stddev/mean) and the worst second. A plot of every arm's per-second TPS
# (its median run) goes to --svg. Last line:
#   wal_ratio=<untorn/stock> device_bytes_ratio=<direct/stock>
#   tps_ratio=<direct/stock> sw_tps_ratio=<untorn/stock>
#   sw_device_bytes_ratio=<untorn/stock> cv_ratio=<direct/stock CV>
#   limit_tps_ratio=<fpw-off/stock> pairs=<rounds>
# With --sweep 4,16,64 each round runs every arm at each client count; the
# last line is then per count: sweep=4,16,64 tps_ratio=<r4>,<r16>,<r64>
#   sw_tps_ratio=... limit_tps_ratio=... pairs=<rounds>
#
# The volumes are formatted with the planner's mkfs arguments (untornctl
# plan --fs xfs --unit 8Ki), as the driver formats them.
#
# Usage: hack/bench/pgbench.sh [--profile default|large|smoke] [--rounds N]
#          [--duration S] [--scale N] [--clients N] [--sweep 4,16,64]
#          [--separate-wal] [--arms stock,fpw-off,untorn,direct] [--svg FILE]
#          [--memory SIZE|none]  (the server's memory cgroup limit, e.g. 1G)
#          [--shared-buffers SIZE]  (PostgreSQL's shared_buffers, default 128MB)
#          [--keep DIR]   (DIR: every run's line and per-second series kept)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=SCRIPTDIR/lib.sh
. hack/bench/lib.sh

profile=default
if [ "${1:-}" = --profile ]; then profile=${2:-}; shift 2; fi
case $profile in
default) rounds=3 duration=45 scale=20 clients=4 ckpt=30s maxwal=512MB volsize=8G memory=none ;;
large) rounds=3 duration=90 scale=200 clients=32 ckpt=45s maxwal=8GB volsize=16G memory=1G ;;
smoke) rounds=1 duration=4 scale=1 clients=2 ckpt=30s maxwal=512MB volsize=2G memory=none ;;
*) echo "pgbench.sh: unknown profile '$profile' (default, large, smoke)" >&2; exit 2 ;;
esac
separate=0 sweep='' svg='' keep='' sbuf=128MB
arms=stock,fpw-off,untorn,direct
while [ $# -gt 0 ]; do
	if [ "$1" = --separate-wal ]; then separate=1; shift; continue; fi
	bench_value pgbench.sh "$@"
	case $1 in
	--scale) scale=$2 ;;
	--clients) clients=$2 ;;
	--sweep) sweep=$2 ;;
	--memory) memory=$2 ;;
	--shared-buffers) sbuf=$2 ;;
	*) bench_opt pgbench.sh "$1" "$2" ;;
	esac
	shift 2
done
bench_arms pgbench.sh "$arms" stock fpw-off untorn direct untorn-wal
membytes=0
[[ $sbuf =~ ^[0-9]+(kB|MB|GB)$ ]] || { echo "pgbench.sh: --shared-buffers must be a size like 128MB or 1GB, not '$sbuf'" >&2; exit 2; }
if [ "$memory" != none ]; then
	membytes=$(numfmt --from=iec "$memory" 2>/dev/null) || membytes=0
	if [ "$membytes" -lt $((256 << 20)) ]; then
		echo "pgbench.sh: --memory must be a size of at least 256M (like 1G) or none, not '$memory'" >&2
		exit 2
	fi
fi
# shellcheck disable=SC2086 # ${sweep//,/ }: one word a client count
bench_positive pgbench.sh "$rounds" "$duration" "$scale" "$clients" ${sweep//,/ }
bench_require_root pgbench.sh
pgbin=/usr/lib/postgresql/15/bin
[ -x $pgbin/postgres ] || { echo "pgbench.sh: postgresql-15 is not installed" >&2; exit 2; }
svg=${svg:-${TMPDIR:-/tmp}/untorn-pgbench-$profile.svg}

work=$(mktemp -d "${TMPDIR:-/tmp}/untorn-pgbench.XXXXXX")
chmod 755 "$work"
loops=() mounts=()
cleanup() {
	set +e
	if [ -f "$work/data/postmaster.pid" ]; then
		runuser -u postgres -- $pgbin/pg_ctl stop -D "$work/data" -m immediate -w >/dev/null 2>&1
	fi
	if [ -f "$work/tmpl/data/postmaster.pid" ]; then
		runuser -u postgres -- $pgbin/pg_ctl stop -D "$work/tmpl/data" -m immediate -w >/dev/null 2>&1
	fi
	bench_release
	rm -rf "$work"
}
trap cleanup EXIT

bench_tools
if [ "$membytes" -gt 0 ]; then bench_memcg "untorn-pgbench-$$" "$membytes"; fi

# newvol NAME SIZE: a fresh loop device ($dev) on a sparse file, formatted
# by the planner's XFS plan. Every run gets new devices: a device just
# unmounted can stay busy for a while.
newvol() {
	truncate -s "$2" "$work/$1.img"
	dev=$(losetup --find --show --direct-io=on "$work/$1.img")
	loops+=("$dev")
	bench_mkfs_xfs "$dev" 8Ki
}
ddev='' wdev=''
mkdir -p "$work/data" "$work/sock" "$work/tmpl" "$work/logs" "$work/series"
chown postgres: "$work/sock" "$work/tmpl" "$work/logs"
port=$((40000 + $$ % 10000))
psql() { runuser -u postgres -- $pgbin/psql -h "$work/sock" -p $port -U postgres -qAt "$@"; }

echo "== template cluster: initdb -k, pgbench -i -s $scale"
t0=$(date +%s)
runuser -u postgres -- $pgbin/initdb -k -D "$work/tmpl/data" -U postgres --auth=trust -N >/dev/null
runuser -u postgres -- $pgbin/pg_ctl start -w -D "$work/tmpl/data" -l "$work/tmpl/log" \
	-o "-c port=$port -c listen_addresses= -c unix_socket_directories=$work/sock -c max_wal_size=4GB" >/dev/null
# server-side generation (G): the fastest load for a large scale
runuser -u postgres -- $pgbin/pgbench -h "$work/sock" -p $port -U postgres -i -I dtGvp -q -s "$scale" postgres >/dev/null 2>&1
psql -c CHECKPOINT postgres
runuser -u postgres -- $pgbin/pg_ctl stop -w -D "$work/tmpl/data" -m fast >/dev/null
echo "template: $(du -sh "$work/tmpl/data" | cut -f1) in $(($(date +%s) - t0))s"

# run ARM ROUND CLIENTS: a fresh XFS per run, the template copied in, pgbench.
run() {
	local arm=$1 round=$2 nc=$3 fpw=off env=()
	case $arm in
	stock) fpw=on ;;
	untorn) env=(LD_PRELOAD="$lib" UNTORN_UNIT=8192) ;;
	untorn-wal) env=(LD_PRELOAD="$lib" UNTORN_UNIT=8192 UNTORN_EXCLUDE=) ;;
	direct) env=(LD_PRELOAD="$lib" UNTORN_UNIT=8192 UNTORN_MODE=unsafe-direct-bench
		UNTORN_BENCH_CONFIRM=I-accept-torn-pages) ;;
	esac
	newvol "data-$arm-$round" "$volsize"
	ddev=$dev
	bench_mount "$ddev" "$work/data"
	mounts=("$work/data")
	# in the server's cgroup: the page cache it starts with is its own
	bench_in_memcg cp -a "$work/tmpl/data/." "$work/data/"
	if [ "$separate" = 1 ]; then
		newvol "wal-$arm-$round" "$volsize"
		wdev=$dev
		mkdir -p "$work/wal"
		bench_mount "$wdev" "$work/wal"
		mounts=("$work/wal" "$work/data")
		mv "$work/data/pg_wal" "$work/wal/pg_wal"
		ln -s "$work/wal/pg_wal" "$work/data/pg_wal"
		chown -h postgres: "$work/data/pg_wal" "$work/wal"
	fi
	chown postgres: "$work/data"
	sync
	bench_in_memcg runuser -u postgres -- env "${env[@]}" $pgbin/pg_ctl start -w -D "$work/data" -l "$work/logs/$arm-$round-c$nc" \
		-o "-c port=$port -c listen_addresses= -c unix_socket_directories=$work/sock -c full_page_writes=$fpw -c shared_buffers=$sbuf -c checkpoint_timeout=$ckpt -c max_wal_size=$maxwal -c max_connections=$((nc + 10))" >/dev/null
	local lsn0 s0 r0 c0 i0 out lsn1 s1 r1 c1 i1 jobs=$((nc < 4 ? nc : 4)) series=$arm-$round-c$nc.tps
	bench_in_memcg_check "$(head -1 "$work/data/postmaster.pid")"
	lsn0=$(psql -c 'SELECT pg_current_wal_lsn()' postgres)
	# shellcheck disable=SC2086 # $ddev $wdev: one or two devices
	s0=$(bench_sectors $ddev $wdev) r0=$(bench_sectors --read $ddev $wdev) c0=$(bench_cpu_ticks)
	# shellcheck disable=SC2086
	i0=$(bench_sectors --ios $ddev $wdev)
	out=$(runuser -u postgres -- $pgbin/pgbench -h "$work/sock" -p $port -U postgres -c "$nc" -j "$jobs" -P 1 -T "$duration" postgres 2>&1)
	lsn1=$(psql -c 'SELECT pg_current_wal_lsn()' postgres)
	# shellcheck disable=SC2086
	s1=$(bench_sectors $ddev $wdev) r1=$(bench_sectors --read $ddev $wdev) c1=$(bench_cpu_ticks)
	# shellcheck disable=SC2086
	i1=$(bench_sectors --ios $ddev $wdev)
	awk '/^progress: / {sub(/,$/, "", $4); print $2, $4}' <<<"$out" >"$work/series/$series"
	local wal tx tps stats
	wal=$(psql -c "SELECT pg_wal_lsn_diff('$lsn1', '$lsn0')" postgres)
	tx=$(awk '/number of transactions actually processed/ {print $NF}' <<<"$out" | cut -d/ -f1)
	tps=$(awk '/^tps = / {print $3}' <<<"$out")
	if [ -z "$tx" ] || [ -z "$tps" ]; then echo "pgbench.sh: pgbench failed ($arm, round $round):" >&2; echo "$out" | tail -20 >&2; exit 1; fi
	stats=$(bench_series_stats "$work/series/$series")
	runuser -u postgres -- $pgbin/pg_ctl stop -w -D "$work/data" -m fast >/dev/null
	for m in "${mounts[@]}"; do bench_retry umount "$m"; done
	mounts=()
	for d in $ddev $wdev; do losetup -d "$d"; done
	loops=() ddev='' wdev=''
	rm -f "$work"/*-"$arm-$round".img
	awk -v a="$arm" -v r="$round" -v c="$nc" -v tps="$tps" -v tx="$tx" -v wal="$wal" -v dev="$(((s1 - s0) * 512))" \
		-v rd="$(((r1 - r0) * 512))" -v cpu="$(((c1 - c0) * 1000000 / $(getconf CLK_TCK)))" -v ios=$((i1 - i0)) -v st="$stats" -v se="$series" \
		'BEGIN { printf "round=%d clients=%d arm=%s tps=%.1f wal_bytes_per_tx=%.0f device_bytes_per_tx=%.0f device_read_bytes_per_tx=%.0f device_ios_per_tx=%.2f cpu_us_per_tx=%.0f %s series=%s\n", r, c, a, tps, wal/tx, dev/tx, rd/tx, ios/tx, cpu/tx, st, se }' |
		tee -a "$work/results"
}

layout=shared
if [ "$separate" = 1 ]; then layout='separate-wal'; fi
counts=${sweep:-$clients}
echo "== profile $profile: $rounds rounds x ($arms, order rotated each round), ${duration}s each, scale $scale," \
	"clients ${counts}, checkpoint_timeout=$ckpt max_wal_size=$maxwal, pg_wal: $layout, shared_buffers=$sbuf, server memory: $memory"
for r in $(seq 1 "$rounds"); do
	for c in ${counts//,/ }; do
		for a in $(bench_order "$r" "$arms"); do
			run "$a" "$r" "$c"
		done
	done
done

declare -A T W D V X
for c in ${counts//,/ }; do
	echo "== medians ($layout, $c clients)"
	for a in ${arms//,/ }; do
		sel="clients=$c arm=$a "
		T[$a.$c]=$(bench_median "$work/results" "$sel" tps) W[$a.$c]=$(bench_median "$work/results" "$sel" wal_bytes_per_tx)
		D[$a.$c]=$(bench_median "$work/results" "$sel" device_bytes_per_tx) V[$a.$c]=$(bench_median "$work/results" "$sel" cv)
		X[$a.$c]=$(bench_median "$work/results" "$sel" worst_tps)
		printf 'clients=%s arm=%s tps=%s wal_bytes_per_tx=%s device_bytes_per_tx=%s device_read_bytes_per_tx=%s cv=%s worst_tps=%s\n' \
			"$c" "$a" "${T[$a.$c]}" "${W[$a.$c]}" "${D[$a.$c]}" "$(bench_median "$work/results" "$sel" device_read_bytes_per_tx)" \
			"${V[$a.$c]}" "${X[$a.$c]}"
	done
	for a in ${arms//,/ }; do
		[ "$a" = stock ] && continue
		printf 'vs stock: clients=%s arm=%s tps=%s wal=%s device_bytes=%s cv=%s worst_tps=%s\n' "$c" "$a" \
			"$(bench_ratio "${T[$a.$c]}" "${T[stock.$c]:-}")" "$(bench_ratio "${W[$a.$c]}" "${W[stock.$c]:-}")" \
			"$(bench_ratio "${D[$a.$c]}" "${D[stock.$c]:-}")" "$(bench_ratio "${V[$a.$c]}" "${V[stock.$c]:-}")" \
			"$(bench_ratio "${X[$a.$c]}" "${X[stock.$c]:-}")"
	done
done

c=${counts##*,}
bench_plot "$svg" "PostgreSQL 15 pgbench: transactions per second, each arm's median run" \
	"profile $profile: scale $scale, $c clients, ${duration}s, checkpoint_timeout=$ckpt, shared_buffers=$sbuf, server memory $memory, full_page_writes on (stock) or off" "$work/results" "$work/series" "$arms" "clients=$c " && echo "plot: $svg"
echo "== all runs"
cat "$work/results"
bench_keep "$keep"
if [ -n "$sweep" ]; then
	col() { # col ARM: the ratios against stock per client count, comma-separated
		local c out=
		for c in ${counts//,/ }; do out+=${out:+,}$(bench_ratio "${T[$1.$c]:-}" "${T[stock.$c]:-}"); done
		echo "$out"
	}
	echo "sweep=$counts tps_ratio=$(col direct) sw_tps_ratio=$(col untorn) limit_tps_ratio=$(col fpw-off) pairs=$rounds"
	exit 0
fi
echo "wal_ratio=$(bench_ratio "${W[untorn.$c]:-}" "${W[stock.$c]:-}") device_bytes_ratio=$(bench_ratio "${D[direct.$c]:-}" "${D[stock.$c]:-}")" \
	"tps_ratio=$(bench_ratio "${T[direct.$c]:-}" "${T[stock.$c]:-}") sw_tps_ratio=$(bench_ratio "${T[untorn.$c]:-}" "${T[stock.$c]:-}")" \
	"sw_device_bytes_ratio=$(bench_ratio "${D[untorn.$c]:-}" "${D[stock.$c]:-}") cv_ratio=$(bench_ratio "${V[direct.$c]:-}" "${V[stock.$c]:-}")" \
	"limit_tps_ratio=$(bench_ratio "${T[fpw-off.$c]:-}" "${T[stock.$c]:-}") pairs=$rounds"
