# shellcheck shell=bash
# shellcheck disable=SC2154 # $work is set by the script that sources this
# Sourced by the database benchmarks (hack/bench/pgbench.sh, sysbench.sh)
# after they cd to the repository root and set $work: argument checks, the
# tools, the planner's XFS format, the loop devices' release, arm order,
# medians, ratios, per-second throughput statistics, the SVG plot and the
# kept results.
export PATH=/usr/local/go/bin:$PATH

# bench_positive NAME N...: exits 2 with NAME's complaint unless every N is
# a positive whole number.
bench_positive() {
	local name=$1 n
	shift
	for n in "$@"; do
		[[ $n =~ ^[1-9][0-9]*$ ]] || { echo "$name: '$n' is not a positive whole number" >&2; exit 2; }
	done
}

# bench_opt NAME OPTION VALUE: the options every benchmark takes (--rounds,
# --duration, --arms, --svg, --keep) into the variables of those names; any
# other option is NAME's complaint and exit 2. The caller shifts 2.
# shellcheck disable=SC2034 # the sourcing script reads them
bench_opt() {
	local name=$1
	case $2 in
	--rounds) rounds=$3 ;;
	--duration) duration=$3 ;;
	--arms) arms=$3 ;;
	--svg) svg=$3 ;;
	--keep) keep=$3 ;;
	--profile) echo "$name: --profile must come first" >&2; exit 2 ;;
	*) echo "$name: unknown argument $2 (see the header of hack/bench/$name)" >&2; exit 2 ;;
	esac
}

# bench_value NAME OPTION [VALUE...]: exits 2 unless OPTION has a value.
bench_value() {
	[ $# -ge 3 ] || { echo "$1: $2 needs a value" >&2; exit 2; }
}

# bench_arms NAME LIST ARM...: exits 2 unless every arm of the comma list
# LIST is one of the ARMs.
bench_arms() {
	local name=$1 list=$2 a known
	shift 2
	known="$*"
	for a in ${list//,/ }; do
		case " $known " in
		*" $a "*) ;;
		*) echo "$name: unknown arm $a (${known// /, })" >&2; exit 2 ;;
		esac
	done
}

# bench_require_root NAME: exits 2 unless run as root.
bench_require_root() {
	if [ "$(id -u)" -ne 0 ]; then
		echo "$1: run as root (loop devices, mkfs, mount)" >&2
		exit 2
	fi
}

# bench_tools: builds the shim (glibc build, its library in $lib), untornctl
# (the planner) and the plotter into $work.
bench_tools() {
	echo "== building the shim, the planner and the plotter"
	nice make -s -C pkg/atomic/shim OUT="$work/shim" glibc >/dev/null
	# shellcheck disable=SC2034 # lib: used by the script that sources this
	lib=$work/shim/glibc/libuntorn.so
	nice go build -o "$work/untornctl" ./cmd/untornctl
	nice go build -o "$work/plot" ./hack/bench/plot
}

# bench_memcg NAME BYTES: a memory cgroup (v2, or v1's memory hierarchy)
# named NAME under this shell's own, limited to BYTES; its directory in
# $memcg. The page cache a process in it reads or writes is charged to it,
# as it is to a database pod's cgroup under Kubernetes: a data set larger
# than BYTES does not stay in the page cache. Removed by bench_release.
memcg=''
bench_memcg() {
	local root rel
	if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
		grep -qw memory /sys/fs/cgroup/cgroup.controllers ||
			{ echo "bench: the cgroup v2 hierarchy has no memory controller" >&2; exit 2; }
		root=/sys/fs/cgroup rel=$(awk -F: '$1 == 0 {print $3}' /proc/self/cgroup)
		# v2 lets only a cgroup without processes delegate controllers: the
		# limit goes beside this shell's cgroup, under its parent.
		rel=${rel%/*}
		memcg=$root$rel/$1
		mkdir "$memcg"
		echo "$2" >"$memcg/memory.max"
	else
		root=$(findmnt -rn -t cgroup -O memory -o TARGET | head -1)
		[ -n "$root" ] || { echo "bench: no memory cgroup hierarchy is mounted" >&2; exit 2; }
		rel=$(awk -F: '$2 ~ /(^|,)memory(,|$)/ {print $3}' /proc/self/cgroup)
		memcg=$root${rel%/}/$1
		mkdir "$memcg"
		echo "$2" >"$memcg/memory.limit_in_bytes"
	fi
}

# bench_in_memcg CMD...: runs CMD (and everything it starts) in $memcg, or
# as it is when there is none.
bench_in_memcg() {
	if [ -z "$memcg" ]; then "$@"; return; fi
	(echo "$BASHPID" >"$memcg/cgroup.procs" && exec "$@")
}

# bench_in_memcg_check PID: exits unless PID runs in $memcg (when there is one).
bench_in_memcg_check() {
	[ -z "$memcg" ] || grep -qx "$1" "$memcg/cgroup.procs" ||
		{ echo "bench: process $1 is not in the memory cgroup $memcg" >&2; exit 1; }
}

# bench_release: unmounts every path in $mounts (lazily if it is busy) and
# detaches every loop device in $loops; for the benchmarks' exit trap.
bench_release() {
	local m l
	for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m"; done
	for l in "${loops[@]}"; do losetup -d "$l"; done
	if [ -n "$memcg" ]; then bench_retry rmdir "$memcg"; fi
}

# bench_mkfs_xfs DEV UNIT: formats DEV (a loop device this script just made
# on a new sparse file) exactly as the driver does: with the planner's mkfs
# program and arguments for an XFS volume of atomic unit UNIT. Sets
# $mount_opts to the plan's mount options (comma-separated, maybe empty).
bench_mkfs_xfs() {
	local plan prog args
	plan=$("$work/untornctl" plan "$1" --fs xfs --unit "$2" --json)
	prog=$(jq -r .mkfsProgram <<<"$plan")
	mapfile -t args < <(jq -r '.mkfsArgs[]' <<<"$plan")
	[ "$(jq -r .atomic <<<"$plan")" = true ] || { echo "bench: the planner gives no atomic writes on $1: $plan" >&2; return 1; }
	"$prog" -q "${args[@]}" >/dev/null
	mount_opts=$(jq -r '.mountOptions | join(",")' <<<"$plan")
}

# bench_mount DEV DIR: mounts DEV at DIR with the plan's mount options.
bench_mount() {
	if [ -n "${mount_opts:-}" ]; then mount -o "$mount_opts" "$1" "$2"; else mount "$1" "$2"; fi
}

# bench_order ROUND ARMS: ARMS (comma-separated) rotated left by ROUND-1, one
# a line: every arm takes every position in turn across the rounds.
bench_order() {
	local -a a
	IFS=, read -r -a a <<<"$2"
	local n=${#a[@]} i
	for i in $(seq 0 $((n - 1))); do echo "${a[$(((i + $1 - 1) % n))]}"; done
}

# bench_retry CMD...: udev and other probes may hold a device briefly after umount.
bench_retry() {
	local i
	for i in 1 2 3 4 5 6 7 8 9 10; do
		"$@" 2>/dev/null && return 0
		sleep 1
	done
	"$@"
}

# bench_sectors [--read|--ios] DEV...: sectors written to (read from) the
# block devices so far; --ios: read and write requests completed.
bench_sectors() {
	local s=0 d f=7
	case $1 in
	--read) f=3 && shift ;;
	--ios) f=1,5 && shift ;;
	esac
	for d in "$@"; do
		s=$((s + $(awk -v f=$f '{n = split(f, k, ","); t = 0; for (i = 1; i <= n; i++) t += $k[i]; print t}' \
			/sys/block/"$(basename "$d")"/stat)))
	done
	echo $s
}

# bench_cpu_ticks: CPU time the whole machine spent busy so far (user, nice,
# system, irq, softirq; in clock ticks, USER_HZ).
bench_cpu_ticks() { awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }

# bench_median FILE SELECTOR FIELD: the median of FIELD=value over the lines
# of FILE that contain SELECTOR (" arm=stock "), nan if none.
bench_median() {
	grep -- "$2" "$1" | tr ' ' '\n' | awk -F= -v f="$3" '$1 == f {print $2}' | sort -g |
		awk '{v[NR]=$1} END {if (NR == 0) print "nan"; else if (NR % 2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'
}

# bench_ratio A B: A/B with 3 decimals, nan when either is missing or B is 0.
bench_ratio() {
	awk -v a="${1:-nan}" -v b="${2:-nan}" 'BEGIN { if (a == "nan" || b == "nan" || b+0 == 0) print "nan"; else printf "%.3f", a/b }'
}

# bench_series_stats FILE: FILE holds "second tps" lines; prints
# "cv=<stddev/mean> worst_tps=<lowest second>" over them, without the first
# 5 seconds of a run of 30 seconds or more (clients connecting: a second at
# 0 TPS there says nothing about checkpoints).
bench_series_stats() {
	awk 'NR == FNR {last = $1; next} last >= 30 && $1 <= 5 {next}
		NF >= 2 {n++; s += $2; q += $2*$2; if (n == 1 || $2 < m) m = $2}
		END {if (n < 2 || s == 0) {print "cv=nan worst_tps=nan"; exit}
			mean = s/n; v = q/n - mean*mean; if (v < 0) v = 0
			printf "cv=%.3f worst_tps=%.1f\n", sqrt(v)/mean, m}' "$1" "$1"
}

# bench_keep DIR: copies the results and the per-second series to DIR
# (nothing when DIR is empty).
bench_keep() {
	[ -n "$1" ] || return 0
	mkdir -p "$1"
	cp -a "$work/results" "$work/series" "$1/"
	echo "kept: $1/results, $1/series"
}

# bench_plot OUT TITLE SUBTITLE RESULTS SERIES_DIR ARMS [SELECTOR]: one SVG of
# per-second TPS over time, one line per arm: the arm's run whose TPS is the
# arm's median (the lower middle one for an even count) among the RESULTS
# lines matching SELECTOR; its series is SERIES_DIR/<arm>-<round>[-<tag>].tps
# as named by the run's series= field.
bench_plot() {
	local out=$1 title=$2 sub=$3 results=$4 dir=$5 arms=$6 sel=${7:-} a line s args=()
	for a in ${arms//,/ }; do
		line=$(grep -- " arm=$a " "$results" | grep -- "$sel" | awk '{for (i = 1; i <= NF; i++) if ($i ~ /^tps=/) {split($i, t, "="); print t[2], $0}}' |
			sort -g | awk '{l[NR]=$0} END {if (NR) print l[int((NR+1)/2)]}')
		[ -n "$line" ] || continue
		s=$(tr ' ' '\n' <<<"$line" | awk -F= '$1 == "series" {print $2}')
		[ -f "$dir/$s" ] && args+=("$a=$dir/$s")
	done
	[ ${#args[@]} -gt 0 ] || return 0
	"$work/plot" -title "$title" -subtitle "$sub" -o "$out" "${args[@]}"
}
