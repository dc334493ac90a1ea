#!/usr/bin/env bash
# Stage: the one-round smoke form of each database benchmark (tiny data
# sets, a few seconds per arm), so the benchmarks cannot rot. It checks
# that each prints its machine-readable last line with a number in every
# field and draws its plot; the figures themselves are not judged (a
# benchmark never asserts a time).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

num='([0-9]+\.[0-9]+|[0-9]+)'
# check NAME LOG SVG REGEX [ARMS]: the log's last line matches REGEX, the
# SVG has a line for each of the ARMS (default 4) arms.
check() {
	local last
	last=$(tail -n 1 "$2")
	if ! [[ $last =~ $4 ]]; then
		echo "bench-smoke: $1's last line is not the machine-readable summary:" >&2
		tail -n 30 "$2" >&2
		exit 1
	fi
	if [ "$(grep -c '<polyline' "$3" 2>/dev/null)" -ne "${5:-4}" ]; then
		echo "bench-smoke: $1 drew no plot with ${5:-4} arms in $3" >&2
		exit 1
	fi
	echo "bench-smoke: $1: $last"
}

hack/bench/pgbench.sh --profile smoke --svg "$out/pgbench.svg" >"$out/pgbench.log" 2>&1 ||
	{ tail -n 30 "$out/pgbench.log" >&2; exit 1; }
check pgbench "$out/pgbench.log" "$out/pgbench.svg" \
	"^wal_ratio=$num device_bytes_ratio=$num tps_ratio=$num sw_tps_ratio=$num sw_device_bytes_ratio=$num cv_ratio=$num limit_tps_ratio=$num pairs=1\$"

# the client-count sweep, two arms, the server in a memory cgroup (as the
# large profile runs it)
hack/bench/pgbench.sh --profile smoke --sweep 1,2 --arms stock,direct --memory 512M --svg "$out/sweep.svg" >"$out/sweep.log" 2>&1 ||
	{ tail -n 30 "$out/sweep.log" >&2; exit 1; }
check "pgbench --sweep" "$out/sweep.log" "$out/sweep.svg" \
	"^sweep=1,2 tps_ratio=$num,$num sw_tps_ratio=nan,nan limit_tps_ratio=nan,nan pairs=1\$" 2
runs=$({ grep -E "^round=1 clients=[12] arm=(stock|direct) .* device_read_bytes_per_tx=$num device_ios_per_tx=$num cpu_us_per_tx=$num " "$out/sweep.log" || true; } | sort -u | wc -l)
if [ "$runs" != 4 ] || ! grep -q 'server memory: 512M$' "$out/sweep.log"; then
	echo "bench-smoke: pgbench --sweep --memory 512M: $runs of 4 run lines with every field, or no memory limit:" >&2
	tail -n 30 "$out/sweep.log" >&2
	exit 1
fi

hack/bench/sysbench.sh --profile smoke --svg "$out/sysbench.svg" >"$out/sysbench.log" 2>&1 ||
	{ tail -n 30 "$out/sysbench.log" >&2; exit 1; }
check sysbench "$out/sysbench.log" "$out/sysbench.svg" \
	"^tps_ratio=$num device_bytes_ratio=$num sw_tps_ratio=$num sw_device_bytes_ratio=$num limit_tps_ratio=$num pairs=1\$"
