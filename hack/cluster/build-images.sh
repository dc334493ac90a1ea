#!/bin/bash
# Builds the images the local cluster runs, as docker-archives under
# $UNTORN_CACHE/images, without a container engine or a registry.
#   build-images.sh deps     pause, CSI sidecars, PostgreSQL 18 and 15,
#                            MariaDB 11.8, the untorn base rootfs (cached;
#                            rebuilt only when a version, package list or
#                            entrypoint changes)
#   build-images.sh untorn   the project's image from hack/build-image.sh output
#                            (rebuilt on every call)
#   build-images.sh pause|sidecars|postgres|postgres15|mariadb|base   one of
#                            them ("postgres" builds PostgreSQL 18 and 15 side
#                            by side)
# Prints nothing on stdout; the archive list is in $IMAGE_DIR/*.tar.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
. "$HERE/image-lib.sh"
mkdir -p "$IMAGE_DIR"


UNTORN_BASE_PKGS=e2fsprogs,xfsprogs,util-linux,lvm2,mount,kmod,ca-certificates
# The database images are Debian's own builds: PostgreSQL 18 from sid (the
# examples' version), PostgreSQL 15 from bookworm (a short second e2e check
# on the oldest version untorn supports) and MariaDB 11.8, the long-term
# release, from trixie.
POSTGRES_MAJOR=18 POSTGRES_SUITE=sid
POSTGRES_PKGS=postgresql-18,util-linux,procps
POSTGRES15_SUITE=bookworm
POSTGRES15_PKGS=postgresql-15,postgresql-contrib,util-linux,procps
MARIADB_SUITE=trixie
MARIADB_PKGS=mariadb-server,mariadb-client,util-linux,procps
# bump when build_db changes what an image holds
DB_RECIPE=2

# image <archive-name> <cache-key>: true when the archive for key exists
cached() { [ -f "$IMAGE_DIR/$1.tar" ] && [ "$(cat "$IMAGE_DIR/$1.key" 2>/dev/null)" = "$2" ]; }
mark() { echo "$2" > "$IMAGE_DIR/$1.key"; }

build_pause() {
	local key
	key="pause $PAUSE_TAG $(sha256sum < "$HERE/pause.c" | cut -c1-12)"
	cached pause "$key" && return 0
	log "image pause: building"
	local d
	d=$(mktemp -d "$UNTORN_CACHE/tmp.XXXXXX")
	gcc -O2 -static -o "$d/pause" "$HERE/pause.c"
	strip "$d/pause"
	oci_from_dir "$d" "registry.k8s.io/pause:$PAUSE_TAG" "$IMAGE_DIR/pause.tar" \
		--config.entrypoint /pause --config.user 65535:65535
	rm -rf "$d"
	mark pause "$key"
}

build_sidecar() { # name version
	local name=$1 ver=$2
	local key="$name $ver"
	cached "$name" "$key" && return 0
	[ -x "$SIDECAR_BIN/$name-$ver" ] || die "$name $ver not built (hack/cluster/build-sidecars.sh)"
	log "image $name: building"
	local d
	d=$(mktemp -d "$UNTORN_CACHE/tmp.XXXXXX")
	install -D -m 0755 "$SIDECAR_BIN/$name-$ver" "$d/$name"
	mkdir -p "$d/tmp" "$d/etc"
	echo "nobody:x:65534:65534:nobody:/:/" > "$d/etc/passwd"
	oci_from_dir "$d" "$SIDECAR_REPO/$name:$ver" "$IMAGE_DIR/$name.tar" --config.entrypoint "/$name"
	rm -rf "$d"
	mark "$name" "$key"
}

# set_ids ROOT USER ID: give USER and its group the uid/gid ID in the root
# filesystem ROOT, and its files with them. A user or group that held ID gets
# USER's former uid or gid in exchange, its files too (sid's minbase has a
# system group at 999).
set_ids() {
	local root=$1 user=$2 id=$3 ouid ogid
	ouid=$(awk -F: -v u="$user" '$1 == u {print $3}' "$root/etc/passwd")
	ogid=$(awk -F: -v u="$user" '$1 == u {print $3}' "$root/etc/group")
	if [ -z "$ouid" ] || [ -z "$ogid" ]; then die "no user/group $user in the image"; fi
	[ "$ouid" = "$id" ] && [ "$ogid" = "$id" ] && return 0
	local held
	held=$(awk -F: -v u="$user" -v n="$id" '$1 != u && ($3 == n || $4 == n) {printf " user %s (%s:%s)", $1, $3, $4}' "$root/etc/passwd")
	held+=$(awk -F: -v u="$user" -v n="$id" '$1 != u && $3 == n {printf " group %s (%s)", $1, $3}' "$root/etc/group")
	local f
	for f in passwd group; do
		awk -F: -v OFS=: -v f="$f" -v o="$ouid" -v og="$ogid" -v n="$id" '
			f == "passwd" { if ($3 == o) $3 = n; else if ($3 == n) $3 = o
			                if ($4 == og) $4 = n; else if ($4 == n) $4 = og }
			f == "group"  { if ($3 == og) $3 = n; else if ($3 == n) $3 = og }
			{ print }' "$root/etc/$f" > "$root/etc/$f.new"
		cat "$root/etc/$f.new" > "$root/etc/$f"
		rm -f "$root/etc/$f.new"
	done
	log "ids: $user $ouid:$ogid -> $id:$id${held:+; to $ouid or $ogid:$held}"
	find "$root" -xdev \( -uid "$ouid" -o -uid "$id" -o -gid "$ogid" -o -gid "$id" \) -print0 | while IFS= read -r -d '' f; do
		local u g
		u=$(stat -c %u "$f") g=$(stat -c %g "$f")
		if [ "$u" = "$ouid" ]; then u=$id; elif [ "$u" = "$id" ]; then u=$ouid; fi
		if [ "$g" = "$ogid" ]; then g=$id; elif [ "$g" = "$id" ]; then g=$ogid; fi
		chown -h "$u:$g" "$f"
	done
}

# build_db ARCHIVE REF SUITE PKGS ENTRYPOINT [PG_MAJOR]: a database image from
# Debian's packages of SUITE with ENTRYPOINT as its docker-entrypoint.sh
build_db() {
	local name=$1 ref=$2 suite=$3 pkgs=$4 ep=$5 major=${6:-}
	local key
	key="$ref $suite $pkgs $major $DB_RECIPE $(sha256sum < "$ep" | cut -c1-12)"
	cached "$name" "$key" && return 0
	local db=${name%%[0-9]*} t0=$SECONDS
	local root
	root=$(rootfs_debian "$db" "$pkgs" "$suite")
	log "image $name: building $ref"
	local d
	d=$(mktemp -d "$UNTORN_CACHE/tmp.XXXXXX")
	cp -a "$root/." "$d/"
	install -D -m 0755 "$ep" "$d/usr/local/bin/docker-entrypoint.sh"
	local cfg=()
	# the official images run the database as uid/gid 999 (the examples set
	# fsGroup: 999)
	local user=$db
	[ "$db" = mariadb ] && user=mysql
	set_ids "$d" "$user" 999
	case $db in
	postgres)
		[ -x "$d/usr/lib/postgresql/$major/bin/postgres" ] || die "no PostgreSQL $major in the $suite packages ($pkgs)"
		# the cluster the package made at install time: initdb runs in the pod
		rm -rf "$d/var/lib/postgresql/$major" "$d/etc/postgresql/$major"
		cfg=(--config.env "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/postgresql/$major/bin"
			--config.env PG_MAJOR="$major"
			--config.env PGDATA=/var/lib/postgresql/data --config.env LANG=C.UTF-8
			--config.entrypoint /usr/local/bin/docker-entrypoint.sh --config.cmd postgres
			--config.exposedports 5432/tcp)
		;;
	mariadb)
		rm -rf "$d/var/lib/mysql/"*
		cfg=(--config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --config.env LANG=C.UTF-8
			--config.entrypoint /usr/local/bin/docker-entrypoint.sh --config.cmd mariadbd
			--config.exposedports 3306/tcp)
		;;
	esac
	oci_from_dir "$d" "$ref" "$IMAGE_DIR/$name.tar" "${cfg[@]}"
	rm -rf "$d"
	mark "$name" "$key"
	log "image $name: $ref ($(dpkg-query --admindir="$root/var/lib/dpkg" -W -f '${Version}' "${pkgs%%,*}")) built in $((SECONDS - t0))s"
}

build_untorn() {
	local root
	root=$(rootfs_debian untorn-base "$UNTORN_BASE_PKGS")
	local d
	d=$(mktemp -d "$UNTORN_CACHE/tmp.XXXXXX")
	cp -a "$root/." "$d/"
	log "image untorn: hack/build-image.sh"
	"$UNTORN_ROOT/hack/build-image.sh" "$d" >&2
	log "image untorn: packing $UNTORN_IMAGE"
	oci_from_dir "$d" "$UNTORN_IMAGE" "$IMAGE_DIR/untorn.tar" \
		--config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		--config.entrypoint /usr/bin/untorn-csi
	rm -rf "$d"
}

build_postgres18() {
	build_db postgres "$POSTGRES_IMAGE" "$POSTGRES_SUITE" "$POSTGRES_PKGS" "$HERE/images/postgres-entrypoint.sh" "$POSTGRES_MAJOR"
}
build_postgres15() {
	build_db postgres15 "$POSTGRES15_IMAGE" "$POSTGRES15_SUITE" "$POSTGRES15_PKGS" "$HERE/images/postgres-entrypoint.sh" 15
}
# both PostgreSQL images side by side (their debootstraps mostly wait for the
# mirror and the disk); each in a background subshell, where errexit holds
build_postgres() {
	local p15 p18 rc=0
	build_postgres15 &
	p15=$!
	build_postgres18 &
	p18=$!
	wait "$p15" || rc=1
	wait "$p18" || rc=1
	[ $rc = 0 ] || die "a PostgreSQL image failed to build"
}
build_mariadb() { build_db mariadb "$MARIADB_IMAGE" "$MARIADB_SUITE" "$MARIADB_PKGS" "$HERE/images/mariadb-entrypoint.sh"; }
build_base() { rootfs_debian untorn-base "$UNTORN_BASE_PKGS" > /dev/null; }
build_sidecars() {
	build_sidecar csi-provisioner "$PROVISIONER_VERSION"
	build_sidecar csi-resizer "$RESIZER_VERSION"
}

[ $# -gt 0 ] || die "usage: $0 deps|pause|sidecars|postgres|postgres15|mariadb|base|untorn..."
for what in "$@"; do
	case $what in
	deps)
		build_pause
		build_base
		build_sidecars
		build_postgres
		build_mariadb
		;;
	pause | sidecars | postgres | postgres15 | mariadb | base | untorn) "build_$what" ;;
	*) die "unknown image $what (deps|pause|sidecars|postgres|postgres15|mariadb|base|untorn)" ;;
	esac
done
