#!/bin/bash
# Entrypoint of the local MariaDB image built from Debian's packages.
# Follows the conventions of the official image: MARIADB_ROOT_PASSWORD (or
# MYSQL_ROOT_PASSWORD), MARIADB_DATABASE; arguments starting with "-" are
# passed to mariadbd.
set -euo pipefail
if [ -n "${1:-}" ] && [ "${1:0:1}" != - ] && [ "$1" != mariadbd ] && [ "$1" != mysqld ]; then exec "$@"; fi
case "${1:-}" in mariadbd | mysqld) shift ;; esac
datadir=${MARIADB_DATADIR:-/var/lib/mysql}
mkdir -p "$datadir" /run/mysqld
chown mysql:mysql "$datadir" /run/mysqld
if [ ! -d "$datadir/mysql" ]; then
	mariadb-install-db --user=mysql --datadir="$datadir" --skip-test-db --auth-root-authentication-method=normal > /dev/null
	pw=${MARIADB_ROOT_PASSWORD:-${MYSQL_ROOT_PASSWORD:-}}
	init=$(mktemp)
	{
		echo "FLUSH PRIVILEGES;"
		[ -n "$pw" ] && echo "ALTER USER 'root'@'localhost' IDENTIFIED BY '$pw'; CREATE USER 'root'@'%' IDENTIFIED BY '$pw'; GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
		db=${MARIADB_DATABASE:-${MYSQL_DATABASE:-}}
		[ -n "$db" ] && echo "CREATE DATABASE IF NOT EXISTS \`$db\`;"
	} > "$init"
	chown mysql "$init"
	exec mariadbd --user=mysql --datadir="$datadir" --init-file="$init" --bind-address=0.0.0.0 "$@"
fi
exec mariadbd --user=mysql --datadir="$datadir" --bind-address=0.0.0.0 "$@"
