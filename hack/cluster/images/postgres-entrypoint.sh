#!/bin/bash
# Entrypoint of the local PostgreSQL image built from Debian's packages.
# Follows the conventions of the official image: POSTGRES_PASSWORD,
# POSTGRES_USER, POSTGRES_DB, PGDATA, POSTGRES_INITDB_WALDIR; arguments
# starting with "-" are passed to postgres. The image sets PG_MAJOR (as the
# official image does): its binaries are in /usr/lib/postgresql/$PG_MAJOR/bin.
set -euo pipefail
export PATH=/usr/lib/postgresql/${PG_MAJOR:?PG_MAJOR is not set in the image}/bin:$PATH
: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA
if [ "${1:-postgres}" != postgres ] && [ "${1:0:1}" != - ]; then exec "$@"; fi
[ "${1:-}" = postgres ] && shift
user=${POSTGRES_USER:-postgres}
if [ "$(id -u)" = 0 ]; then
	mkdir -p "$PGDATA" /var/run/postgresql
	chown postgres:postgres "$PGDATA" /var/run/postgresql
	chmod 700 "$PGDATA"
	if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
		mkdir -p "$POSTGRES_INITDB_WALDIR"
		chown postgres:postgres "$POSTGRES_INITDB_WALDIR"
		chmod 700 "$POSTGRES_INITDB_WALDIR"
	fi
	exec setpriv --reuid=postgres --regid=postgres --init-groups --inh-caps=-all "$0" postgres "$@"
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
	pwfile=$(mktemp)
	printf '%s\n' "${POSTGRES_PASSWORD:-postgres}" > "$pwfile"
	args=(--username="$user" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256)
	[ -n "${POSTGRES_INITDB_WALDIR:-}" ] && args+=(--waldir="$POSTGRES_INITDB_WALDIR")
	# initdb refuses a non-empty directory (e.g. lost+found of a fresh filesystem)
	# shellcheck disable=SC2086
	initdb "${args[@]}" ${POSTGRES_INITDB_ARGS:-} -D "$PGDATA"
	rm -f "$pwfile"
	echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
	if [ -n "${POSTGRES_DB:-}" ] && [ "$POSTGRES_DB" != postgres ]; then
		pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
		createdb -U "$user" "$POSTGRES_DB"
		pg_ctl -D "$PGDATA" -m fast -w stop
	fi
fi
exec postgres -c listen_addresses='*' "$@"
