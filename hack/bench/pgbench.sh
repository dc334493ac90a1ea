#!/usr/bin/env bash
# PostgreSQL 15 pgbench on XFS loop volumes: what the writethrough shim costs
# and saves. A benchmark, not a test: it prints figures and ratios.
#
# Arms (run in alternating rounds; medians per arm):
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
# Per run: TPS, WAL bytes per transaction (pg_wal_lsn_diff), bytes written to
# the loop device(s) per transaction (/sys/block/loopN/stat). Last line:
#   wal_ratio=<untorn/stock> device_bytes_ratio=<direct/stock>
#   tps_ratio=<direct/stock> sw_tps_ratio=<untorn/stock>
#   sw_device_bytes_ratio=<untorn/stock> pairs=<rounds>
#
# Usage: hack/bench/pgbench.sh [--rounds 3] [--duration 45] [--scale 20]
#          [--clients 4] [--separate-wal] [--arms stock,fpw-off,untorn,direct]
set -euo pipefail
cd "$(dirname "$0")/../.."

rounds=3 duration=45 scale=20 clients=4 separate=0
arms=stock,fpw-off,untorn,direct
while [ $# -gt 0 ]; do
	case $1 in
	--rounds) rounds=$2; shift 2 ;;
	--duration) duration=$2; shift 2 ;;
	--scale) scale=$2; shift 2 ;;
	--clients) clients=$2; shift 2 ;;
	--separate-wal) separate=1; shift ;;
	--arms) arms=$2; shift 2 ;;
	*) echo "pgbench.sh: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
	esac
done
for a in ${arms//,/ }; do
	case $a in stock|fpw-off|untorn|direct|untorn-wal) ;; *)
		echo "pgbench.sh: unknown arm $a (stock, fpw-off, untorn, direct, untorn-wal)" >&2; exit 2 ;;
	esac
done
if [ "$(id -u)" -ne 0 ]; then
	echo "pgbench.sh: run as root (loop devices, mkfs, mount)" >&2
	exit 2
fi
pgbin=/usr/lib/postgresql/15/bin
[ -x $pgbin/postgres ] || { echo "pgbench.sh: postgresql-15 is not installed" >&2; exit 2; }

work=$(mktemp -d /tmp/untorn-pgbench.XXXXXX)
chmod 755 "$work"
loops=() mounts=()
cleanup() {
	set +e
	if [ -f "$work/data/postmaster.pid" ]; then
		runuser -u postgres -- $pgbin/pg_ctl stop -D "$work/data" -m immediate -w >/dev/null 2>&1
	fi
	for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m"; done
	for l in "${loops[@]}"; do losetup -d "$l"; done
	rm -rf "$work"
}
trap cleanup EXIT

echo "== building the shim"
nice make -s -C pkg/atomic/shim OUT="$work/shim" glibc >/dev/null
lib=$work/shim/glibc/libuntorn.so

# newvol NAME SIZE: a fresh loop device ($dev) on a sparse file. Every run
# gets new devices: a device just unmounted can stay busy for a while.
newvol() {
	truncate -s "$2" "$work/$1.img"
	dev=$(losetup --find --show --direct-io=on "$work/$1.img")
	loops+=("$dev")
}
ddev= wdev=
mkdir -p "$work/data" "$work/sock" "$work/tmpl" "$work/logs"
chown postgres: "$work/sock" "$work/tmpl" "$work/logs"
port=$((40000 + $$ % 10000))
psql() { runuser -u postgres -- $pgbin/psql -h "$work/sock" -p $port -U postgres -qAt "$@"; }
sectors() { # sectors written on the volumes so far
	local s=0 d
	for d in $ddev $wdev; do
		s=$((s + $(awk '{print $7}' /sys/block/"$(basename "$d")"/stat)))
	done
	echo $s
}

echo "== template cluster: initdb -k, pgbench -i -s $scale"
runuser -u postgres -- $pgbin/initdb -k -D "$work/tmpl/data" -U postgres --auth=trust -N >/dev/null
runuser -u postgres -- $pgbin/pg_ctl start -w -D "$work/tmpl/data" -l "$work/tmpl/log" \
	-o "-c port=$port -c listen_addresses= -c unix_socket_directories=$work/sock" >/dev/null
runuser -u postgres -- $pgbin/pgbench -h "$work/sock" -p $port -U postgres -i -q -s "$scale" postgres >/dev/null 2>&1
psql -c CHECKPOINT postgres
runuser -u postgres -- $pgbin/pg_ctl stop -w -D "$work/tmpl/data" -m fast >/dev/null

# retry CMD...: udev and other probes may hold a device briefly after umount.
retry() {
	local i
	for i in 1 2 3 4 5 6 7 8 9 10; do
		"$@" 2>/dev/null && return 0
		sleep 1
	done
	"$@"
}

# run ARM ROUND: a fresh XFS per run, the template copied in, pgbench.
run() {
	local arm=$1 round=$2 fpw=off env=()
	case $arm in
	stock) fpw=on ;;
	untorn) env=(LD_PRELOAD="$lib" UNTORN_UNIT=8192) ;;
	untorn-wal) env=(LD_PRELOAD="$lib" UNTORN_UNIT=8192 UNTORN_EXCLUDE=) ;;
	direct) env=(LD_PRELOAD="$lib" UNTORN_UNIT=8192 UNTORN_MODE=unsafe-direct-bench
		UNTORN_BENCH_CONFIRM=I-accept-torn-pages) ;;
	esac
	newvol "data-$arm-$round" 8G
	ddev=$dev
	mkfs.xfs -f -q "$ddev"
	mount "$ddev" "$work/data"
	mounts=("$work/data")
	cp -a "$work/tmpl/data/." "$work/data/"
	if [ "$separate" = 1 ]; then
		newvol "wal-$arm-$round" 4G
		wdev=$dev
		mkfs.xfs -f -q "$wdev"
		mkdir -p "$work/wal"
		mount "$wdev" "$work/wal"
		mounts=("$work/wal" "$work/data")
		mv "$work/data/pg_wal" "$work/wal/pg_wal"
		ln -s "$work/wal/pg_wal" "$work/data/pg_wal"
		chown -h postgres: "$work/data/pg_wal" "$work/wal"
	fi
	chown postgres: "$work/data"
	sync
	runuser -u postgres -- env "${env[@]}" $pgbin/pg_ctl start -w -D "$work/data" -l "$work/logs/$arm-$round" \
		-o "-c port=$port -c listen_addresses= -c unix_socket_directories=$work/sock -c full_page_writes=$fpw -c checkpoint_timeout=30s -c max_wal_size=512MB" >/dev/null
	local lsn0 s0 out lsn1 s1
	lsn0=$(psql -c 'SELECT pg_current_wal_lsn()' postgres)
	s0=$(sectors)
	out=$(runuser -u postgres -- $pgbin/pgbench -h "$work/sock" -p $port -U postgres -c "$clients" -j "$clients" -T "$duration" postgres 2>&1)
	lsn1=$(psql -c 'SELECT pg_current_wal_lsn()' postgres)
	s1=$(sectors)
	local wal tx tps
	wal=$(psql -c "SELECT pg_wal_lsn_diff('$lsn1', '$lsn0')" postgres)
	tx=$(awk '/number of transactions actually processed/ {print $NF}' <<<"$out" | cut -d/ -f1)
	tps=$(awk '/^tps = / {print $3}' <<<"$out")
	runuser -u postgres -- $pgbin/pg_ctl stop -w -D "$work/data" -m fast >/dev/null
	for m in "${mounts[@]}"; do retry umount "$m"; done
	mounts=()
	for d in $ddev $wdev; do losetup -d "$d"; done
	loops=() ddev= wdev=
	rm -f "$work"/*-"$arm-$round".img
	awk -v a="$arm" -v r="$round" -v tps="$tps" -v tx="$tx" -v wal="$wal" -v dev="$(((s1 - s0) * 512))" \
		'BEGIN { printf "round=%d arm=%s tps=%.1f wal_bytes_per_tx=%.0f device_bytes_per_tx=%.0f\n", r, a, tps, wal/tx, dev/tx }' |
		tee -a "$work/results"
}

layout=shared
[ "$separate" = 1 ] && layout=separate-wal
echo "== $rounds rounds x ($arms), ${duration}s each, scale $scale, $clients clients, pg_wal: $layout"
for r in $(seq 1 "$rounds"); do
	for a in ${arms//,/ }; do
		run "$a" "$r"
	done
done

# Medians per arm, then the ratios.
median() { # median ARM FIELD
	grep " arm=$1 " "$work/results" | tr ' ' '\n' | awk -F= -v f="$2" '$1 == f {print $2}' | sort -g |
		awk '{v[NR]=$1} END {if (NR == 0) print "nan"; else if (NR % 2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'
}
echo "== medians ($layout)"
declare -A T W D
for a in ${arms//,/ }; do
	T[$a]=$(median "$a" tps) W[$a]=$(median "$a" wal_bytes_per_tx) D[$a]=$(median "$a" device_bytes_per_tx)
	printf 'arm=%s tps=%s wal_bytes_per_tx=%s device_bytes_per_tx=%s\n' "$a" "${T[$a]}" "${W[$a]}" "${D[$a]}"
done
ratio() { awk -v a="${1:-nan}" -v b="${2:-nan}" 'BEGIN { if (b+0 == 0) print "nan"; else printf "%.3f", a/b }'; }
for a in ${arms//,/ }; do
	[ "$a" = stock ] && continue
	printf 'vs stock: arm=%s tps=%s wal=%s device_bytes=%s\n' "$a" "$(ratio "${T[$a]:-}" "${T[stock]:-}")" \
		"$(ratio "${W[$a]:-}" "${W[stock]:-}")" "$(ratio "${D[$a]:-}" "${D[stock]:-}")"
done
echo "wal_ratio=$(ratio "${W[untorn]:-}" "${W[stock]:-}") device_bytes_ratio=$(ratio "${D[direct]:-}" "${D[stock]:-}") tps_ratio=$(ratio "${T[direct]:-}" "${T[stock]:-}") sw_tps_ratio=$(ratio "${T[untorn]:-}" "${T[stock]:-}") sw_device_bytes_ratio=$(ratio "${D[untorn]:-}" "${D[stock]:-}") pairs=$rounds"
