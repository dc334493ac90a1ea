# shellcheck shell=bash
# Helpers for the guest tests (sourced). Every check prints one line; the
# first failure ends the test with status 1 after printing what was seen.
set -euo pipefail
export LC_ALL=C DM_DISABLE_UDEV=1
trap 'echo "FAIL  ${BASH_SOURCE[0]##*/} line $LINENO: $BASH_COMMAND (exit $?)"' ERR

pass() { printf 'ok    %s\n' "$*"; }
fail() {
	printf 'FAIL  %s\n' "$*"
	exit 1
}

# expect_eq WHAT WANT GOT
expect_eq() {
	if [ "$2" = "$3" ]; then pass "$1 = $3"; else fail "$1: want '$2', got '$3'"; fi
}

# expect_rc WHAT WANT CMD...: run CMD, compare its exit status.
expect_rc() {
	local what=$1 want=$2 rc=0
	shift 2
	"$@" >/tmp/expect_rc.out 2>&1 || rc=$?
	if [ "$rc" = "$want" ]; then
		pass "$what (exit $rc)"
	else
		cat /tmp/expect_rc.out
		fail "$what: want exit $want, got $rc"
	fi
}

# need CMD...: a binary the test needs must be on PATH.
need() {
	local c
	for c in "$@"; do
		command -v "$c" >/dev/null || fail "'$c' is not in the guest (is it built?)"
	done
}

# dm_node NAME -> dm-N of a device-mapper device (no udev in the guest)
dm_node() {
	local d
	for d in /sys/block/dm-*; do
		[ "$(cat "$d/dm/name" 2>/dev/null)" = "$1" ] && { echo "${d##*/}"; return 0; }
	done
	return 1
}

# qlimits DEV -> "unit_min unit_max max_bytes boundary" from the disk's queue
qlimits() {
	local q=/sys/block/$1/queue
	echo "$(cat "$q/atomic_write_unit_min_bytes") $(cat "$q/atomic_write_unit_max_bytes")" \
		"$(cat "$q/atomic_write_max_bytes") $(cat "$q/atomic_write_boundary_bytes")"
}

# wait_for PATH: a device node that the kernel is about to create
wait_for() {
	local _
	for _ in $(seq 50); do
		[ -e "$1" ] && return 0
		sleep 0.1
	done
	fail "$1 did not appear"
}

section() { printf '== %s\n' "$*"; }

# start_csi_lvm VG SOCK: untorn-csi (controller and node) on the LVM backend
# over volume group VG, serving SOCK, its log in /tmp/csi.log; stopped when
# the test exits ($CSI is its PID). Returns once SOCK is open.
start_csi_lvm() {
	local _
	untorn-csi --mode=all --endpoint "unix://$2" --node-id untorn-vm --backend=lvm \
		--volume-group "$1" --state-dir /var/lib/untorn -v=4 >/tmp/csi.log 2>&1 &
	CSI=$!
	trap 'kill $CSI 2>/dev/null; wait $CSI 2>/dev/null' EXIT
	for _ in $(seq 600); do [ -S "$2" ] && break; sleep 0.1; done
	[ -S "$2" ] || { tail -20 /tmp/csi.log; fail "untorn-csi did not open $2"; }
}
