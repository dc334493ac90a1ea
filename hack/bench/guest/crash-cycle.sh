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

# data_disk: the data disk's name in /sys/block.
data_disk() { basename "$(readlink -f /dev/atomic0)"; }

# disk_written: KiB written to the data disk since boot.
disk_written() {
	local st
	read -r -a st <"/sys/block/$(data_disk)/stat"
	echo $((st[6] / 2))
}

# crash_when_busy: resets the guest with no sync the moment the data disk
# is busy writing (its queue full when the queue is split), within 10 s: a
# crash between two writebacks finds nothing half written and would prove
# nothing.
crash_when_busy() {
	local want end w="" sysf
	sysf=/sys/block/$(data_disk)/inflight
	want=1
	[ "$SPLIT" = 0 ] || want=4
	end=$((SECONDS + 10))
	while [ $SECONDS -lt $end ]; do
		read -r _ w <"$sysf"
		[ "$w" -ge "$want" ] && break
	done
	# On the console before the reset (kernel messages are written out
	# synchronously): the writes in flight the reset caught.
	echo "<2>crash: resetting with $w writes in flight on the data disk" >/dev/kmsg
	echo b >/proc/sysrq-trigger
	sleep 60
	die "sysrq b did not reset the guest"
}
