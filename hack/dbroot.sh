#!/usr/bin/env bash
# Builds (once) a Debian chroot holding a newer database release than the
# host ships, for the shim's database tests, and prints its path:
#
#   hack/dbroot.sh trixie   PostgreSQL 17, MariaDB 11.8
#   hack/dbroot.sh sid      PostgreSQL 18
#
# The chroot is cached under $UNTORN_CACHE/dbroots/<suite>-<key>, where key
# hashes the suite, its package list and the recipe number; the exact package
# versions installed are in <root>/.versions. A build goes to <root>.tmp and
# is renamed into place only when complete (an interrupted build is redone);
# concurrent callers wait on a lock. UNTORN_DBROOT_REFRESH=1 rebuilds (newer
# packages from the mirror). Nothing is installed on the host system: the
# databases live only in the chroot.
#
# Environment: UNTORN_CACHE (default /var/cache/untorn), UNTORN_DB_MIRROR
# (default: the Debian mirror of the host's apt sources).
set -euo pipefail

suite=${1:-}
case $suite in
trixie) pkgs="postgresql-17 postgresql-client-17 mariadb-server mariadb-client strace procps" ;;
sid) pkgs="postgresql-18 postgresql-client-18 liburing2 strace procps" ;;
*)
	echo "usage: $0 trixie|sid" >&2
	exit 2
	;;
esac

die() { printf 'dbroot: error: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, chroot)"
command -v debootstrap >/dev/null || die "debootstrap is not installed (hack/deps/dbroot.txt; run hack/install-deps.sh)"

# host_mirror: the first Debian (non-security) archive in the host's apt
# sources, one-line or deb822 format.
host_mirror() {
	local f
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
		[ -r "$f" ] || continue
		sed -nE 's,^deb +(\[[^]]*\] +)?(https?://[^ ]*/debian)/? .*,\2,p; s,^URIs: *(https?://[^ ]*/debian)/? *$,\1,p' "$f"
	done | head -1
}
mirror=${UNTORN_DB_MIRROR:-$(host_mirror)}
mirror=${mirror:-http://deb.debian.org/debian}

cache=${UNTORN_CACHE:-/var/cache/untorn}/dbroots
# Bump recipe when the build steps below change what a chroot holds.
recipe=1
key=$(printf '%s\n%s\n%s\n' "$suite" "$pkgs" "$recipe" | sha256sum | cut -c1-12)
root=$cache/$suite-$key
mkdir -p "$cache"
exec 9>"$cache/.lock-$suite"
flock 9

if [ -e "$root/.done" ] && [ "${UNTORN_DBROOT_REFRESH:-}" != 1 ]; then
	echo "$root"
	exit 0
fi

# in_chroot ROOT CMD...: run CMD in ROOT inside a private mount namespace, so
# the /proc, /sys and /dev mounts vanish with it whatever happens.
in_chroot() {
	local r=$1
	shift
	# shellcheck disable=SC2016 # the inner sh expands $r and $@, not this one
	unshare --mount --propagation private -- /bin/sh -ec '
		r=$1; shift
		mount -t proc proc "$r/proc"
		mount -t sysfs sys "$r/sys"
		mount --rbind /dev "$r/dev"
		exec chroot "$r" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 \
			DEBIAN_FRONTEND=noninteractive "$@"' sh "$r" "$@"
}

t=$root.tmp
logf=$cache/$suite.log
echo "dbroot: building the $suite chroot ($pkgs) from $mirror in $root (log: $logf)" >&2
if [ ! -e "$t/.debootstrap-done" ]; then
	rm -rf "$t"
	nice debootstrap --variant=minbase "$suite" "$t" "$mirror" >"$logf" 2>&1 ||
		die "debootstrap $suite from $mirror failed, see $logf"
	touch "$t/.debootstrap-done"
fi
# No service starts in the chroot, and PostgreSQL's packages create no
# cluster: the tests make their own on a test volume.
printf '#!/bin/sh\nexit 101\n' >"$t/usr/sbin/policy-rc.d"
chmod 0755 "$t/usr/sbin/policy-rc.d"
mkdir -p "$t/etc/postgresql-common"
echo 'create_main_cluster = false' >"$t/etc/postgresql-common/createcluster.conf"
echo "deb $mirror $suite main" >"$t/etc/apt/sources.list"
# The mirror may be a dated snapshot whose Release files have expired.
echo 'Acquire::Check-Valid-Until "false";' >"$t/etc/apt/apt.conf.d/90untorn"
in_chroot "$t" apt-get -q update >>"$logf" 2>&1 || die "apt-get update in the $suite chroot failed, see $logf"
# shellcheck disable=SC2086
in_chroot "$t" nice apt-get install -y -q --no-install-recommends $pkgs >>"$logf" 2>&1 ||
	die "installing $pkgs in the $suite chroot failed, see $logf"
in_chroot "$t" apt-get clean
# shellcheck disable=SC2086
in_chroot "$t" dpkg-query -W $pkgs libc6 >"$t/.versions"
rm -f "$t/.debootstrap-done"
touch "$t/.done"
rm -rf "$root"
mv "$t" "$root"
echo "dbroot: $suite ready: $(tr '\t\n' '= ' <"$root/.versions")" >&2
echo "$root"
