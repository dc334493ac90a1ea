# Helpers to build OCI images without a container engine or registry
# (umoci + skopeo) and to cache Debian root filesystems. Sourced.
# shellcheck shell=bash

# rootfs_debian <name> <comma-separated packages> [suite]: prints the path
# of a cached Debian minbase root filesystem of suite (default
# $DEBIAN_SUITE) with the packages installed; built once per (name, suite,
# package list).
rootfs_debian() {
	local name=$1 pkgs=$2 suite=${3:-$DEBIAN_SUITE}
	local key
	key=$(printf '%s %s' "$suite" "$pkgs" | sha256sum | cut -c1-12)
	local dir=$UNTORN_CACHE/rootfs/$name-$suite-$key
	if [ -f "$dir/.complete" ]; then echo "$dir/root"; return 0; fi
	rm -rf "$dir"
	# one package cache per name and suite: builds of different root
	# filesystems may run at once, and a package's file name may be the same
	# in two suites
	local debs=$UNTORN_CACHE/debs/$name-$suite
	mkdir -p "$dir" "$debs"
	log "rootfs $name: debootstrap $suite (+$pkgs)"
	nice debootstrap --variant=minbase --cache-dir="$debs" --include="$pkgs" \
		"$suite" "$dir/root" "$DEBIAN_MIRROR" > "$dir/debootstrap.log" 2>&1 ||
		{ tail -30 "$dir/debootstrap.log" >&2; die "debootstrap of $name ($suite) failed (log $dir/debootstrap.log)"; }
	# smaller images: no package lists, docs or caches
	rm -rf "$dir/root/var/lib/apt/lists/"* "$dir/root/var/cache/apt/"*.bin "$dir/root/usr/share/doc" \
		"$dir/root/usr/share/man" "$dir/root/usr/share/info" "$dir/root/var/log/"*
	touch "$dir/.complete"
	echo "$dir/root"
}

# oci_from_dir <srcdir> <name:tag> <archive> <umoci config args...>:
# builds a single-layer image whose root is a copy of srcdir and writes it as
# a docker-archive that "ctr images import" accepts.
oci_from_dir() {
	local src=$1 ref=$2 out=$3; shift 3
	local tmp
	tmp=$(mktemp -d "$UNTORN_CACHE/tmp.XXXXXX")
	umoci init --layout "$tmp/oci"
	umoci new --image "$tmp/oci:img"
	umoci unpack --image "$tmp/oci:img" "$tmp/bundle" > /dev/null
	cp -a "$src/." "$tmp/bundle/rootfs/"
	umoci repack --image "$tmp/oci:img" "$tmp/bundle" > /dev/null
	umoci config --image "$tmp/oci:img" --os linux --architecture amd64 "$@"
	rm -f "$out.tmp"
	skopeo copy -q "oci:$tmp/oci:img" "docker-archive:$out.tmp:$ref"
	mv "$out.tmp" "$out"
	rm -rf "$tmp"
}
