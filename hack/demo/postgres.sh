#!/usr/bin/env bash
# Quick start, part 3: PostgreSQL 15 on an untorn demo volume. Makes an XFS
# volume on a loop device, builds the writethrough shim, starts PostgreSQL
# with full_page_writes=off under the shim (LD_PRELOAD), runs a short
# pgbench, stops PostgreSQL and prints the shim's counters: the 8 KiB page
# writes that went to disk as untorn RWF_ATOMIC writes. Everything it
# creates is removed on exit, also on failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
. hack/lib/common.sh
pgbin=/usr/lib/postgresql/15/bin
[ -x $pgbin/postgres ] || { echo "demo: postgresql-15 is not installed (hack/install-deps.sh)" >&2; exit 2; }

work=$(mktemp -d /tmp/untorn-demo-pg.XXXXXX)
chmod 755 "$work"
dev="" mnt=$work/vol
cleanup() {
	set +e
	[ -f "$mnt/data/postmaster.pid" ] &&
		runuser -u postgres -- $pgbin/pg_ctl stop -D "$mnt/data" -m immediate -w >/dev/null 2>&1
	for _ in 1 2 3 4 5; do mountpoint -q "$mnt" || break; umount "$mnt" 2>/dev/null || sleep 1; done
	mountpoint -q "$mnt" && umount -l "$mnt"
	[ -n "$dev" ] && losetup -d "$dev"
	rm -rf "$work"
}
trap cleanup EXIT
step() { printf '\n$ %s\n' "$*"; }

echo "== building the shim (glibc and musl)"
make -s -C pkg/atomic/shim OUT="$work/shim" glibc musl >/dev/null
lib=$work/shim/glibc/libuntorn.so
ls -l "$work"/shim/*/libuntorn.so

echo
echo "== an XFS volume on a loop device (XFS gives atomic writes even without hardware support),"
echo "   formatted as the driver formats it: the planner's mkfs arguments for an 8 KiB unit"
go build -o "$work/untornctl" ./cmd/untornctl
truncate -s 2G "$work/vol.img"
dev=$(losetup --find --show --direct-io=on "$work/vol.img")
"$work/untornctl" plan "$dev" --fs xfs --unit 8Ki --json >"$work/plan.json"
mapfile -t args < <(jq -r '.mkfsArgs[]' "$work/plan.json")
mapfile -t mopts < <(jq -r '.mountOptions[]' "$work/plan.json")
step "$(jq -r .mkfsProgram "$work/plan.json")" -q "${args[@]}"
"$(jq -r .mkfsProgram "$work/plan.json")" -q "${args[@]}" >/dev/null
mkdir -p "$mnt"
mount ${mopts[0]:+-o "$(IFS=,; echo "${mopts[*]}")"} "$dev" "$mnt"
mkdir -p "$mnt/data" "$work/sock" "$work/stats"
chown postgres: "$mnt/data" "$work/sock"
chmod 1777 "$work/stats"

port=$((40000 + $$ % 10000))
step initdb -k -D "$mnt/data"
runuser -u postgres -- $pgbin/initdb -k -D "$mnt/data" -U postgres --auth=trust -N >/dev/null

step "LD_PRELOAD=libuntorn.so UNTORN_UNIT=8192 UNTORN_STATS_DIR=... pg_ctl start -o '-c full_page_writes=off'"
runuser -u postgres -- env LD_PRELOAD="$lib" UNTORN_UNIT=8192 UNTORN_STATS_DIR="$work/stats" \
	$pgbin/pg_ctl start -w -D "$mnt/data" -l "$work/sock/log" \
	-o "-c full_page_writes=off -c port=$port -c listen_addresses= -c unix_socket_directories=$work/sock" >/dev/null
pgb() { runuser -u postgres -- $pgbin/pgbench -h "$work/sock" -p $port -U postgres "$@" postgres; }
step pgbench -i -s 5
pgb -i -q -s 5 2>&1 | tail -1
step pgbench -c 4 -T 10
pgb -c 4 -j 4 -T 10 2>&1 | grep -E '^(tps|number of transactions actually)'
runuser -u postgres -- $pgbin/psql -h "$work/sock" -p $port -U postgres -qAt -c CHECKPOINT postgres
step pg_ctl stop
runuser -u postgres -- $pgbin/pg_ctl stop -w -D "$mnt/data" -m fast >/dev/null

echo
echo "== the shim's counters (one JSON line per process in UNTORN_STATS_DIR), summed:"
jq -s '{processes: length,
	atomic_writes: (map(.atomic_writes) | add),
	atomic_bytes: (map(.atomic_bytes) | add),
	atomic_syscalls: (map(.atomic_syscalls) | add),
	passthrough: (map(.passthrough | to_entries) | add | group_by(.key)
		| map({(.[0].key): (map(.value) | add)}) | add | with_entries(select(.value > 0)))}' \
	"$work"/stats/untorn-*.json
echo "(pg_wal stays on the buffered path: the shim's default UNTORN_EXCLUDE='*/pg_wal/*')"
