#!/usr/bin/env bash
# Pass-through cost of the writethrough shim: the time of a write the shim
# must leave alone (a 100-byte unaligned pwrite to a file on the root
# filesystem, an 8 KiB write to /dev/null), with and without LD_PRELOAD, in
# alternating rounds; medians and the overhead in percent. A benchmark, not
# a test. Usage: hack/bench/shim-passthrough.sh [--rounds 9] [--calls 300000]
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=9 calls=300000
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
for k in unaligned_pwrite_ns devnull_write_8k_ns; do
	b=$(med base $k) s=$(med shim $k)
	awk -v k=$k -v b="$b" -v s="$s" 'BEGIN { printf "%s: without shim %.1f ns, with shim %.1f ns, overhead %+.2f %%\n", k, b, s, (s-b)/b*100 }'
done
