# shellcheck shell=bash
# Sourced by the crash test's database guest scripts (crash-guest.sh,
# crash-mariadb.sh): the steps every boot of a crash cycle shares. The
# sourcing script sets MNT (the data volume's mount point), STATE (its state
# file, "cycle=N torn=N recovered=N") and SPLIT, and defines after_crash
# CYCLE, which sets REC (yes when the database recovered) and BAD (pages
# found damaged).

up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "crash: $*"; }
die() {
	say "error: $*"
	exit 1
}

# next_cycle: after a crash, reads the state of the cycles so far, checks
# this one with after_crash and adds its verdict to the tallies (cycle,
# recovered, torn).
next_cycle() {
	# shellcheck disable=SC1090
	. "$STATE"
	CRASH_AFTER=$(cat "$MNT/crash-after" 2>/dev/null)
	cycle=$((cycle + 1))
	after_crash "$cycle"
	[ "$REC" = yes ] && recovered=$((recovered + 1))
	[ "$BAD" -gt 0 ] 2>/dev/null && torn=$((torn + BAD))
	return 0
}

# save_cycle: the tallies, on the volume and synced before the next load.
save_cycle() {
	echo "cycle=$cycle torn=$torn recovered=$recovered" >"$STATE"
	sync
}

# pick_crash_after: a random delay of 10 to 30 s before the crash, kept on
# the volume so that the next boot can report it.
pick_crash_after() {
	CRASH_AFTER=$((10 + RANDOM % 21))
	echo "$CRASH_AFTER" >"$MNT/crash-after"
	sync
}

# crash_when_busy [LVDEV N]: resets the guest with no sync the moment the
# data disk is busy writing (its queue full when the queue is split), within
# 10 s: a crash between two writebacks finds nothing half written and would
# prove nothing. With LVDEV (the data volume's device-mapper node) and N,
# the volume must also have N writes in flight: a database that writes
# whole pages with O_DIRECT sends each page as one write to the volume, and
# only when more than one is in flight does a page wait, part issued and
# part queued, for the disk's split queue.
crash_when_busy() {
	local nvme want end w dm="" dmwant=0 v
	nvme=$(basename "$(readlink -f /dev/atomic0)")
	want=1
	[ "$SPLIT" = 0 ] || want=4
	if [ $# -ge 2 ]; then
		dm=$(basename "$(readlink -f "$1")") dmwant=$2
	fi
	end=$((SECONDS + 10))
	while [ $SECONDS -lt $end ]; do
		read -r _ w <"/sys/block/$nvme/inflight"
		[ "$w" -ge $want ] || continue
		[ -z "$dm" ] && break
		read -r _ v <"/sys/block/$dm/inflight"
		[ "$v" -ge "$dmwant" ] && break
	done
	echo b >/proc/sysrq-trigger
	sleep 60
	die "sysrq b did not reset the guest"
}
