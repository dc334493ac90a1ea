#!/usr/bin/env bash
# Pass-through cost of the writethrough shim per write call: a 100-byte and
# an 8 KiB pwrite at unaligned offsets of a file, and an 8 KiB write to
# /dev/null — writes the shim must leave alone. The test program runs under
# LD_PRELOAD and times, in one process and in alternating blocks of 1000
# calls, the calls through the shim and the same calls straight into libc;
# each figure is its fastest block (the cost without interference on a
# shared machine). Prints the medians over the runs. A benchmark, not a test.
#
# --instructions: instead of times, the instructions the shim adds to each
# such call, counted by valgrind (callgrind): the same on a busy machine as
# on a quiet one. Each figure is (instructions of 3000 calls - of 1000 calls)
# / 2000 under the shim minus the same without it, so start-up costs cancel.
# Usage: hack/bench/shim-passthrough.sh [--runs 5] [--calls 200000] [--instructions]
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=5 calls=200000 instr=0
while [ $# -gt 0 ]; do
	case $1 in
	--runs) runs=$2; shift 2 ;;
	--calls) calls=$2; shift 2 ;;
	--instructions) instr=1; shift ;;
	*) echo "shim-passthrough.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
work=$(mktemp -d /tmp/untorn-passbench.XXXXXX)
trap 'rm -rf "$work"' EXIT
make -s -C pkg/atomic/shim OUT="$work/shim" glibc "$work/shim/tests/passbench" >/dev/null
if [ "$instr" = 1 ]; then
	command -v valgrind >/dev/null || { echo "shim-passthrough.sh: --instructions needs valgrind" >&2; exit 2; }
	ir() { # ir KIND CALLS [PRELOAD]: instructions the whole program ran
		env ${3:+LD_PRELOAD=$3} valgrind --tool=callgrind --callgrind-out-file="$work/cg" \
			"$work/shim/tests/passbench" "$work/f" "$2" "$1" >/dev/null 2>&1
		awk '/^summary:/ {print $2}' "$work/cg"
	}
	kinds=(unaligned_pwrite_100 devnull_write_8k unaligned_pwrite_8k)
	for k in 0 1 2; do
		a1=$(ir $k 1000) a2=$(ir $k 3000)
		b1=$(ir $k 1000 "$work/shim/glibc/libuntorn.so") b2=$(ir $k 3000 "$work/shim/glibc/libuntorn.so")
		printf '%s: libc %d instructions per call (user space), through the shim %d, added %d\n' "${kinds[$k]}" \
			$(((a2 - a1) / 2000)) $(((b2 - b1) / 2000)) $((((b2 - b1) - (a2 - a1)) / 2000))
	done
	exit 0
fi
for _ in $(seq 1 "$runs"); do
	LD_PRELOAD=$work/shim/glibc/libuntorn.so "$work/shim/tests/passbench" "$work/f" "$calls" | tr ' ' '\n' >>"$work/res"
done
med() { awk -F= -v k="$1" '$1 == k {print $2}' "$work/res" | sort -g |
	awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
for k in unaligned_pwrite_100 unaligned_pwrite_8k devnull_write_8k; do
	printf '%s: libc %s ns, through the shim %s ns, overhead %s ns = %s %% (medians of %d runs)\n' "$k" \
		"$(med "libc_${k}_ns")" "$(med "${k}_ns")" \
		"$(awk -v a="$(med "${k}_ns")" -v b="$(med "libc_${k}_ns")" 'BEGIN {printf "%.1f", a-b}')" \
		"$(med "overhead_${k}_pct")" "$runs"
done
