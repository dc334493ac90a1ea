#!/usr/bin/env bash
# Pass-through cost of the writethrough shim: the time of a write the shim
# must leave alone (a 100-byte unaligned pwrite to a file on the root
# filesystem, an 8 KiB write to /dev/null), with and without LD_PRELOAD, in
# alternating rounds; medians and the overhead in percent. A benchmark, not
# a test. The machine may be shared: rounds are paired (without, then with)
# and the median of the per-pair ratios is reported with the medians.
# Usage: hack/bench/shim-passthrough.sh [--rounds 21] [--calls 100000]
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=21 calls=100000
while [ $# -gt 0 ]; do
	case $1 in
	--rounds) rounds=$2; shift 2 ;;
	--calls) calls=$2; shift 2 ;;
	*) echo "shim-passthrough.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
work=$(mktemp -d /tmp/untorn-passbench.XXXXXX)
trap 'rm -rf "$work"' EXIT
make -s -C pkg/atomic/shim OUT="$work/shim" glibc "$work/shim/tests/passbench" >/dev/null
prog=$work/shim/tests/passbench
for r in $(seq 1 "$rounds"); do
	echo "base $("$prog" "$work/f" "$calls")" >>"$work/res"
	echo "shim $(LD_PRELOAD=$work/shim/glibc/libuntorn.so "$prog" "$work/f" "$calls")" >>"$work/res"
done
med() { grep "^$1 " "$work/res" | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k {print $2}' | sort -g |
	awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
pairs() { # per-pair ratio shim/base for KEY
	paste -d' ' <(grep '^base ' "$work/res") <(grep '^shim ' "$work/res") | tr ' ' '\n' |
		awk -F= -v k="$1" '$1 == k {v[n++]=$2} END {for (i = 0; i + 1 < n; i += 2) print v[i+1]/v[i]}' | sort -g |
		awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'
}
for k in unaligned_pwrite_ns devnull_write_8k_ns; do
	b=$(med base $k) s=$(med shim $k) p=$(pairs $k)
	awk -v k=$k -v b="$b" -v s="$s" -v p="$p" -v r="$rounds" 'BEGIN { printf "%s: without shim %.1f ns, with shim %.1f ns (medians of %d); median paired overhead %+.2f %%\n", k, b, s, r, (p-1)*100 }'
done
