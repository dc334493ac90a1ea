#!/bin/bash
# VM test 3: the shim on hardware atomic writes. Disks: --disk 4096:65536:size=8G
# ext4 bigalloc (as untornctl plans it) on an LVM LV over an atomic NVMe disk
# (DISK, default /dev/atomic0):
# the shim's pattern program, then PostgreSQL 15 with full_page_writes=off.
. "$(dirname "$0")/lib.sh"
need untornctl vmtool shim-patterns strace lvm
SHIM=/untorn/lib/glibc/libuntorn.so
[ -e "$SHIM" ] || fail "the shim is not in the guest ($SHIM)"
D=$(readlink -f "${DISK:-/dev/atomic0}")
PGBIN=/usr/lib/postgresql/15/bin

section "ext4 bigalloc on an LV"
lvm pvcreate -q -y "$D" >/dev/null && lvm vgcreate -q vg0 "$D" >/dev/null
lvm lvcreate -q -y -Zn -L 2G -n lv0 vg0 >/dev/null
untornctl plan /dev/vg0/lv0 --fs ext4 --unit 8Ki --json >/tmp/plan.json
read -r -a margs < <(vmtool jget mkfsArgs </tmp/plan.json)
mkfs.ext4 "${margs[@]}" >/dev/null 2>&1 || fail "planned mkfs failed"
mkdir -p /vol && mount -t ext4 /dev/vg0/lv0 /vol
expect_eq "statx on the volume" "supported=true unit_min=4096 unit_max=65536" "$(touch /vol/x && vmtool statx /vol/x | cut -d' ' -f1-3)"
rm -f /vol/x

# stats_sum FIELD DIR: sum a counter over the shim's JSON lines
stats_sum() { cat "$2"/untorn-*.json 2>/dev/null | vmtool jsum "$1"; }

section "the shim's pattern program (8 KiB unit) under strace"
for sc in "random 1 400" "random 2 400" "fork" "dup" "threads 8"; do
	# shellcheck disable=SC2086 # one field a word
	set -- $sc
	name=$1 extra=("${@:2}")
	[ "$name" = random ] && extra=(8192 "$2" "$3") || extra=(8192 "${@:2}")
	rm -rf /tmp/st /tmp/tr && mkdir -p /tmp/st /tmp/tr
	out=$(UNTORN_STATS_DIR=/tmp/st UNTORN_UNIT=8192 strace -ff -qq -e trace=pwritev2 -o /tmp/tr/t \
		-E LD_PRELOAD=$SHIM shim-patterns "$name" "/vol/p-$name-$#" "${extra[@]}" 2>&1) || fail "patterns $sc: $out"
	# one summary line per process (fork and exec print two)
	qual=$(sed -n 's/.*qualifying=\([0-9]*\).*/\1/p' <<<"$out" | awk '{s += $1} END {print s + 0}')
	pieces=$(sed -n 's/.*pieces=\([0-9]*\).*/\1/p' <<<"$out" | awk '{s += $1} END {print s + 0}')
	aw=$(stats_sum atomic_writes /tmp/st)
	as=$(stats_sum atomic_syscalls /tmp/st)
	# bookworm's strace prints RWF_ATOMIC as 0x40; a piece is one unit or,
	# where a call's range allows, several units in one atomic write
	traced=$(cat /tmp/tr/t.* | grep -E 'pwritev2\(.*(RWF_ATOMIC|0x40)' | grep -cE '= [1-9][0-9]*$' || true)
	[ "$qual" -gt 0 ] || fail "patterns $sc made no qualifying writes"
	expect_eq "patterns $sc: qualifying=$qual pieces=$pieces; atomic_writes, atomic_syscalls, strace RWF_ATOMIC" \
		"$qual $pieces $pieces" "$aw $as $traced"
done

section "PostgreSQL 15, full_page_writes=off, under the shim"
mkdir -p /vol/pg /vol/st && chown postgres: /vol/pg /vol/st
runuser -u postgres -- $PGBIN/initdb -k -D /vol/pg/db -E UTF8 --locale=C >/dev/null || fail "initdb failed"
export PGHOST=/run/postgresql
runuser -u postgres -- env LD_PRELOAD=$SHIM UNTORN_UNIT=8192 UNTORN_STATS_DIR=/vol/st \
	$PGBIN/pg_ctl -D /vol/pg/db -w -t 600 -l /vol/pg/log \
	-o "-k /run/postgresql -c listen_addresses='' -c full_page_writes=off -c shared_buffers=16MB" start >/dev/null ||
	{ tail /vol/pg/log; fail "PostgreSQL did not start under the shim"; }
pm=$(head -1 /vol/pg/db/postmaster.pid)
strace -f -qq -y -e trace=pwrite64,pwritev2 -e signal=none -p "$pm" -o /tmp/pg.trace &
ST=$!
sleep 2
runuser -u postgres -- $PGBIN/pgbench -i -q -s 2 postgres >/dev/null 2>&1 || fail "pgbench -i failed"
runuser -u postgres -- $PGBIN/pgbench -n -c 2 -T 20 postgres 2>&1 | grep -E '^tps' | sed 's/^/  /'
runuser -u postgres -- $PGBIN/psql -Atc checkpoint postgres >/dev/null
kill $ST; wait $ST 2>/dev/null || true
runuser -u postgres -- $PGBIN/pg_ctl -D /vol/pg/db -m fast -w stop >/dev/null
rel='</vol/pg/db/base/'
atomic=$(grep -F "$rel" /tmp/pg.trace | grep -E 'pwritev2\(.*(RWF_ATOMIC|0x40)' | grep -c '= 8192$' || true)
plain=$(grep -F "$rel" /tmp/pg.trace | grep -E '^[0-9]+ +pwrite64\(' | grep -c ', 8192, [0-9]*) = 8192$' || true)
echo "  relation page writes: RWF_ATOMIC $atomic, plain 8 KiB pwrite64 $plain; shim atomic_writes $(stats_sum atomic_writes /vol/st)"
[ "$atomic" -gt 0 ] || fail "no relation page write went through RWF_ATOMIC"
expect_eq "8 KiB relation page writes not made atomic" 0 "$plain"
runuser -u postgres -- env LD_PRELOAD=$SHIM UNTORN_UNIT=8192 $PGBIN/pg_ctl -D /vol/pg/db -w -l /vol/pg/log \
	-o "-k /run/postgresql -c listen_addresses='' -c full_page_writes=off" start >/dev/null
expect_rc "pg_amcheck after a restart" 0 runuser -u postgres -- $PGBIN/pg_amcheck --all --install-missing
runuser -u postgres -- $PGBIN/pg_ctl -D /vol/pg/db -m fast -w stop >/dev/null
umount /vol
echo "shim-hw: all checks passed"
