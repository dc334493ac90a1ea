#!/bin/bash
# Entrypoint of the local MariaDB image built from Debian's packages.
# Follows the conventions of the official image: MARIADB_ROOT_PASSWORD (or
# MYSQL_ROOT_PASSWORD), MARIADB_DATABASE, MARIADB_DATADIR; arguments starting
# with "-" are passed to mariadbd (and to mariadb-install-db on first start).
set -euo pipefail
if [ -n "${1:-}" ] && [ "${1:0:1}" != - ] && [ "$1" != mariadbd ] && [ "$1" != mysqld ]; then exec "$@"; fi
case "${1:-}" in mariadbd | mysqld) shift ;; esac
datadir=${MARIADB_DATADIR:-/var/lib/mysql}
dirs=(/run/mysqld)
for a in "$@"; do
	case $a in
	--datadir=*) datadir=${a#*=} ;;
	--innodb-log-group-home-dir=* | --innodb_log_group_home_dir=*) dirs+=("${a#*=}") ;;
	esac
done
mkdir -p "$datadir" "${dirs[@]}"
chown mysql:mysql "$datadir" "${dirs[@]}"
if [ ! -d "$datadir/mysql" ]; then
	# its output only when it fails (it exits non-zero, e.g., when the
	# host name does not resolve)
	if ! out=$(mariadb-install-db --user=mysql --datadir="$datadir" --skip-test-db \
		--auth-root-authentication-method=normal "$@" 2>&1); then
		printf '%s\n' "$out" >&2
		echo "mariadb-install-db failed" >&2
		exit 1
	fi
	pw=${MARIADB_ROOT_PASSWORD:-${MYSQL_ROOT_PASSWORD:-}}
	db=${MARIADB_DATABASE:-${MYSQL_DATABASE:-}}
	init=$(mktemp)
	{
		echo "FLUSH PRIVILEGES;"
		if [ -n "$pw" ]; then
			echo "ALTER USER 'root'@'localhost' IDENTIFIED BY '$pw';"
			echo "CREATE USER 'root'@'%' IDENTIFIED BY '$pw'; GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
		fi
		if [ -n "$db" ]; then echo "CREATE DATABASE IF NOT EXISTS \`$db\`;"; fi
	} > "$init"
	chown mysql "$init"
	exec mariadbd --user=mysql --datadir="$datadir" --bind-address=0.0.0.0 --init-file="$init" "$@"
fi
exec mariadbd --user=mysql --datadir="$datadir" --bind-address=0.0.0.0 "$@"
