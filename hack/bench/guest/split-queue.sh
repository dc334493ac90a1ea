# shellcheck shell=bash
# Sourced by the crash test's guest scripts. split_queue DEVICE KIB caps
# DEVICE's queue at KIB-sized commands (max_sectors_kb) with 4 in flight
# (nr_requests), so writes without RWF_ATOMIC reach the device in pieces; 0
# leaves the queue alone. RWF_ATOMIC writes are bounded by the atomic
# limits, not by max_sectors_kb, and still go out as one command.
split_queue() {
	local dev=$1 kib=$2 q
	[ "$kib" != 0 ] || return 0
	q=/sys/block/$(basename "$(readlink -f "$dev")")/queue
	{ echo "$kib" >"$q/max_sectors_kb" && echo 4 >"$q/nr_requests"; } || {
		echo "cannot set $q/max_sectors_kb=$kib nr_requests=4" >&2
		return 1
	}
	echo "crash: queue $q: max_sectors_kb=$(cat "$q/max_sectors_kb") nr_requests=$(cat "$q/nr_requests") atomic_write_max_bytes=$(cat "$q/atomic_write_max_bytes")"
}
