#!/bin/bash
# Builds the images the local cluster runs, as docker-archives under
# $UNTORN_CACHE/images, without a container engine or a registry.
#   build-images.sh deps     pause, CSI sidecars, PostgreSQL 15, MariaDB 10.11,
#                            the untorn base rootfs (cached; rebuilt only when
#                            a version or package list changes)
#   build-images.sh untorn   the project's image from hack/build-image.sh output
#                            (rebuilt on every call)
#   build-images.sh pause|sidecars|postgres|mariadb|base   one of them
# Prints nothing on stdout; the archive list is in $IMAGE_DIR/*.tar.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
. "$HERE/image-lib.sh"
mkdir -p "$IMAGE_DIR"


UNTORN_BASE_PKGS=e2fsprogs,xfsprogs,util-linux,lvm2,mount,kmod,ca-certificates
POSTGRES_PKGS=postgresql-15,postgresql-contrib,util-linux,procps
MARIADB_PKGS=mariadb-server,mariadb-client,util-linux,procps

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
# filesystem ROOT, and its files with them
set_ids() {
	local root=$1 user=$2 id=$3 ouid ogid
	ouid=$(awk -F: -v u="$user" '$1 == u {print $3}' "$root/etc/passwd")
	ogid=$(awk -F: -v u="$user" '$1 == u {print $3}' "$root/etc/group")
	if [ -z "$ouid" ] || [ -z "$ogid" ]; then die "no user/group $user in the image"; fi
	[ "$ouid" = "$id" ] && [ "$ogid" = "$id" ] && return 0
	awk -F: -v id="$id" -v u="$user" '$3 == id && $1 != u {exit 1}' "$root/etc/passwd" "$root/etc/group" ||
		die "uid or gid $id is taken in the $user image"
	sed -i -E "s/^($user:[^:]*):$ouid:$ogid:/\1:$id:$id:/" "$root/etc/passwd"
	sed -i -E "s/^($user:[^:]*):$ogid:/\1:$id:/" "$root/etc/group"
	find "$root" -xdev \( -uid "$ouid" -o -gid "$ogid" \) -print0 | while IFS= read -r -d '' f; do
		local u g
		u=$(stat -c %u "$f") g=$(stat -c %g "$f")
		[ "$u" = "$ouid" ] && u=$id
		[ "$g" = "$ogid" ] && g=$id
		chown -h "$u:$g" "$f"
	done
}

build_db() { # name ref pkgs entrypoint-script
	local name=$1 ref=$2 pkgs=$3 ep=$4
	local key
	key="$ref $DEBIAN_SUITE $pkgs $(sha256sum < "$ep" | cut -c1-12)"
	cached "$name" "$key" && return 0
	local root
	root=$(rootfs_debian "$name" "$pkgs")
	log "image $name: building $ref"
	local d
	d=$(mktemp -d "$UNTORN_CACHE/tmp.XXXXXX")
	cp -a "$root/." "$d/"
	install -D -m 0755 "$ep" "$d/usr/local/bin/docker-entrypoint.sh"
	local cfg=()
	# the official images run the database as uid/gid 999 (the examples set
	# fsGroup: 999)
	local user=$name
	[ "$name" = mariadb ] && user=mysql
	set_ids "$d" "$user" 999
	case $name in
	postgres)
		rm -rf "$d/var/lib/postgresql/15" "$d/etc/postgresql/15"
		cfg=(--config.env PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
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

build_postgres() { build_db postgres "$POSTGRES_IMAGE" "$POSTGRES_PKGS" "$HERE/images/postgres-entrypoint.sh"; }
build_mariadb() { build_db mariadb "$MARIADB_IMAGE" "$MARIADB_PKGS" "$HERE/images/mariadb-entrypoint.sh"; }
build_base() { rootfs_debian untorn-base "$UNTORN_BASE_PKGS" > /dev/null; }
build_sidecars() {
	build_sidecar csi-provisioner "$PROVISIONER_VERSION"
	build_sidecar csi-resizer "$RESIZER_VERSION"
}

[ $# -gt 0 ] || die "usage: $0 deps|pause|sidecars|postgres|mariadb|base|untorn..."
for what in "$@"; do
	case $what in
	deps)
		build_pause
		build_base
		build_sidecars
		build_postgres
		build_mariadb
		;;
	pause | sidecars | postgres | mariadb | base | untorn) "build_$what" ;;
	*) die "unknown image $what (deps|pause|sidecars|postgres|mariadb|base|untorn)" ;;
	esac
done
