# shellcheck shell=bash
# Build steps of hack/vm.sh, sourced by it. Every product-independent piece
# is cached under $VM_CACHE, keyed by its version, and built into a
# temporary path that is renamed into place only when complete, so an
# interrupted build is simply redone.
#
#   qemu-<QEMU version>/        Debian trixie minbase with QEMU (from sid); QEMU
#                               runs chrooted here, nothing lands on the host
#   kernel-<KV>/                the guest kernel and its modules (from sid)
#   resolved.env                the kernel and QEMU the last build resolved
#   initramfs-<KV>-<hash>.gz    busybox + modules + the first-stage init
#   root-<ROOT_KEY>.img         bookworm guest root (ext4 image, attached
#                               read-only; the guest writes to a tmpfs overlay)
#
# The kernel and QEMU versions are resolved from the mirror (resolve.sh):
# the newest new enough, or UNTORN_VM_KERNEL / UNTORN_VM_QEMU.

MIRROR=${UNTORN_VM_MIRROR:-http://deb.debian.org/debian}
# shellcheck source=resolve.sh
. "$VM_SRC/resolve.sh"
# Packages of the guest root; the key changes with the list and setup script.
ROOT_PKGS="e2fsprogs xfsprogs lvm2 util-linux strace postgresql-15 postgresql-client-15 procps kmod psmisc mariadb-server mariadb-client"
ROOT_KEY=bookworm-$(printf '%s\n' "$ROOT_PKGS" | cat - "$VM_SRC/root-setup.sh" | sha256sum | cut -c1-12)
# Modules the first-stage init loads (their modules.dep closure is added).
MODULES="nvme virtio_blk ext4 xfs overlay dm-mod"

log() { printf 'vm: %s\n' "$*" >&2; }
die() { printf 'vm: error: %s\n' "$*" >&2; exit 2; }

# in_chroot ROOT CMD...: run CMD in ROOT inside a private mount namespace, so
# the /proc, /sys and /dev mounts vanish with it whatever happens.
in_chroot() {
	local root=$1; shift
	# shellcheck disable=SC2016 # the inner shell expands its own arguments
	unshare --mount --propagation private -- /bin/sh -ec '
		r=$1; shift
		mount -t proc proc "$r/proc"
		mount -t sysfs sys "$r/sys"
		mount --rbind /dev "$r/dev"
		exec chroot "$r" "$@"' sh "$root" "$@"
}

build_qemu() {
	local d=$VM_CACHE/qemu-$QEMU_KEY
	[ -e "$d/.done" ] && return 0
	log "building the QEMU chroot (trixie minbase + QEMU $QEMU_VERSION from $QEMU_SUITE) in $d"
	if [ ! -e "$d.tmp/.debootstrap-done" ]; then
		rm -rf "$d.tmp"
		nice debootstrap --variant=minbase trixie "$d.tmp" "$MIRROR" >"$VM_CACHE/qemu.log" 2>&1 ||
			die "debootstrap trixie failed, see $VM_CACHE/qemu.log"
		touch "$d.tmp/.debootstrap-done"
	fi
	printf "deb $MIRROR %s main\n" "${VM_SUITES[@]}" >"$d.tmp/etc/apt/sources.list"
	printf 'APT::Default-Release "trixie";\nAcquire::Check-Valid-Until "false";\n' \
		>"$d.tmp/etc/apt/apt.conf.d/90untorn"
	in_chroot "$d.tmp" apt-get -q update >>"$VM_CACHE/qemu.log" 2>&1 || die "apt-get update in the QEMU chroot failed"
	DEBIAN_FRONTEND=noninteractive in_chroot "$d.tmp" nice apt-get install -y -q --no-install-recommends \
		-t "$QEMU_SUITE" "$QEMU_PKG=$QEMU_VERSION" "qemu-utils=$QEMU_VERSION" >>"$VM_CACHE/qemu.log" 2>&1 ||
		die "installing QEMU $QEMU_VERSION from $QEMU_SUITE failed, see $VM_CACHE/qemu.log"
	in_chroot "$d.tmp" qemu-system-x86_64 --version | head -1 >"$d.tmp/.qemu-version"
	grep -qF "(Debian $QEMU_VERSION)" "$d.tmp/.qemu-version" ||
		die "QEMU in the chroot is $(cat "$d.tmp/.qemu-version"), not $QEMU_VERSION"
	in_chroot "$d.tmp" apt-get clean
	touch "$d.tmp/.done"
	mv "$d.tmp" "$d"
	log "QEMU: $(cat "$d/.qemu-version")"
}

build_kernel() {
	local d=$VM_CACHE/kernel-$KV q=$VM_CACHE/qemu-$QEMU_KEY
	[ -e "$d/.done" ] && return 0
	log "fetching guest kernel $KV"
	rm -rf "$d.tmp" "$q/tmp/kernel"
	mkdir -p "$q/tmp/kernel"
	# apt of the QEMU chroot (trixie + sid) is the private apt: resolve the
	# kernel's own linux-* packages and download them there (after an update:
	# the chroot's lists are as old as the chroot).
	# shellcheck disable=SC2016 # the chroot's shell expands its own arguments
	in_chroot "$q" /bin/sh -ec '
		apt-get -q update
		cd /tmp/kernel
		pkgs="linux-image-$1"
		for p in $(apt-cache depends --recurse --no-recommends --no-suggests \
			--no-conflicts --no-breaks --no-replaces --no-enhances "linux-image-$1" |
			grep -E "^ *(Depends: )?linux-(binary|modules|image)-[0-9]" | sed "s/.*: //; s/^ *//" | sort -u); do
			pkgs="$pkgs $p"
		done
		apt-get download $pkgs
		for f in *.deb; do dpkg-deb -x "$f" root; done' sh "$KV" >"$VM_CACHE/kernel.log" 2>&1 ||
		die "could not fetch kernel $KV (set UNTORN_VM_KERNEL), see $VM_CACHE/kernel.log"
	mv "$q/tmp/kernel/root" "$d.tmp"
	rm -rf "$q/tmp/kernel"
	# The host's depmod (kmod) writes modules.dep; --basedir wants .../lib/modules.
	if [ -d "$d.tmp/usr/lib/modules/$KV" ]; then
		depmod -b "$d.tmp/usr" "$KV"
	else
		depmod -b "$d.tmp" "$KV"
	fi
	local m
	m=$(kernel_moddir "$d.tmp") || die "kernel $KV: no modules directory after extraction"
	[ -e "$m/vmlinuz" ] || cp "$d.tmp/boot/vmlinuz-$KV" "$m/vmlinuz" 2>/dev/null ||
		die "kernel $KV: no vmlinuz"
	touch "$d.tmp/.done"
	mv "$d.tmp" "$d"
}

kernel_moddir() {
	local m
	for m in "$1/usr/lib/modules/$KV" "$1/lib/modules/$KV"; do
		[ -e "$m/modules.dep" ] && { echo "$m"; return 0; }
	done
	return 1
}

# build_initramfs: busybox, the modules' closure (decompressed, with a load
# order) and the first-stage init. Cached by kernel and init content.
build_initramfs() {
	local h out km i m
	h=$(cat "$VM_SRC/initramfs-init" /usr/bin/busybox <(echo "$MODULES") | sha256sum | cut -c1-12)
	out=$VM_CACHE/initramfs-$KV-$h.gz
	# shellcheck disable=SC2034 # run.sh boots it
	INITRAMFS=$out
	[ -e "$out" ] && return 0
	km=$(kernel_moddir "$VM_CACHE/kernel-$KV") || die "kernel $KV missing"
	i=$(mktemp -d "$VM_CACHE/initramfs.XXXXXX")
	mkdir -p "$i"/{bin,dev,proc,sys,lower,upper,newroot,lib/modules}
	cp /usr/bin/busybox "$i/bin/busybox"
	for m in $("$i/bin/busybox" --list); do [ -e "$i/bin/$m" ] || ln -s busybox "$i/bin/$m"; done
	: >"$i/lib/modules/order"
	declare -A seen=()
	add_mod() {
		local name=$1 line dep f
		name=${name//_/-}
		[ -n "${seen[$name]:-}" ] && return 0
		seen[$name]=1
		line=$(grep -E "(^|/)(${name}|${name//-/_})\.ko(\.xz|\.zst|\.gz)?:" "$km/modules.dep" | head -1) || true
		if [ -z "$line" ]; then
			# Debian's image packages ship no modules.builtin: a module
			# that is not in modules.dep is taken to be built in.
			log "module $name is not a loadable module of $KV; taking it as built in"
			return 0
		fi
		for dep in ${line#*:}; do dep=${dep##*/}; add_mod "${dep%%.ko*}"; done
		f=${line%%:*}
		case $f in
		*.xz) xz -dc "$km/$f" ;;
		*.zst) zstd -qdc "$km/$f" ;;
		*.gz) gzip -dc "$km/$f" ;;
		*) cat "$km/$f" ;;
		esac >"$i/lib/modules/$name.ko"
		echo "$name" >>"$i/lib/modules/order"
	}
	for m in $MODULES; do add_mod "$m"; done
	install -m 0755 "$VM_SRC/initramfs-init" "$i/init"
	(cd "$i" && find . | "$i/bin/busybox" cpio -o -H newc 2>/dev/null | gzip -1) >"$out.tmp"
	mv "$out.tmp" "$out"
	rm -rf "$i"
}

# build_root: the bookworm guest root as an ext4 image. PostgreSQL is
# installed without a cluster; the image is never written by a run.
build_root() {
	local img=$VM_CACHE/root-$ROOT_KEY.img r
	# shellcheck disable=SC2034 # run.sh boots it
	ROOT_IMG=$img
	[ -e "$img" ] && return 0
	r=$VM_CACHE/root-$ROOT_KEY.tmp
	log "building the bookworm guest root ($ROOT_PKGS)"
	if [ ! -e "$r/.debootstrap-done" ]; then
		rm -rf "$r"
		nice debootstrap --variant=minbase --include=ca-certificates bookworm "$r" "$MIRROR" \
			>"$VM_CACHE/root.log" 2>&1 || die "debootstrap bookworm failed, see $VM_CACHE/root.log"
		touch "$r/.debootstrap-done"
	fi
	install -m 0755 "$VM_SRC/root-setup.sh" "$r/root-setup.sh"
	# shellcheck disable=SC2086 # one package a word
	in_chroot "$r" nice /bin/bash /root-setup.sh $ROOT_PKGS >>"$VM_CACHE/root.log" 2>&1 ||
		die "guest root setup failed, see $VM_CACHE/root.log"
	rm -f "$r/root-setup.sh" "$r/.debootstrap-done"
	local size
	size=$(($(du -sm "$r" | cut -f1) * 13 / 10 + 256))
	rm -f "$img.tmp"
	nice mkfs.ext4 -q -F -L untorn-root -d "$r" "$img.tmp" "${size}M" || die "mkfs.ext4 -d of the guest root failed"
	mv "$img.tmp" "$img"
	rm -rf "$r"
}


# build_binaries: the project's binaries from the working tree (go's build
# cache makes this cheap when nothing changed). A piece whose source is not
# there yet is reported and left out; tests needing it then fail clearly.
build_binaries() {
	BIN_OUT=$REPO/build/vm
	mkdir -p "$BIN_OUT"
	# Long benchmark loops may reuse the binaries of the previous run.
	if [ -n "${UNTORN_VM_REUSE_BINARIES:-}" ] && [ -e "$BIN_OUT/vmtool" ]; then
		return 0
	fi
	local c
	for c in untornctl untorn-csi; do
		if [ -d "$REPO/cmd/$c" ]; then
			(cd "$REPO" && CGO_ENABLED=0 nice go build -trimpath -o "$BIN_OUT/$c" "./cmd/$c") ||
				die "go build ./cmd/$c failed"
		else
			log "warning: cmd/$c does not exist; not in the guest"
			rm -f "$BIN_OUT/$c"
		fi
	done
	(cd "$REPO" && CGO_ENABLED=0 nice go build -trimpath -o "$BIN_OUT/csi-sanity" \
		github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity) || die "go build csi-sanity failed"
	(cd "$REPO" && CGO_ENABLED=0 nice go build -trimpath -o "$BIN_OUT/vmtool" ./hack/vm/vmtool) ||
		die "go build ./hack/vm/vmtool failed"
	# The crash model's buffered writer (C: the shim must be able to preload it).
	nice cc -std=gnu11 -O2 -Wall -Wextra -Werror -o "$BIN_OUT/tearw" "$REPO/hack/vm/tearw/tearw.c" -pthread ||
		die "cc hack/vm/tearw/tearw.c failed"
	rm -f "$BIN_OUT"/libuntorn-*.so
	if [ -e "$REPO/Makefile" ] && grep -q '^shim:' "$REPO/Makefile"; then
		nice make -s -C "$REPO" shim || die "make shim failed"
		local v
		for v in glibc musl; do
			if [ -e "$REPO/build/shim/$v/libuntorn.so" ]; then
				cp "$REPO/build/shim/$v/libuntorn.so" "$BIN_OUT/libuntorn-$v.so"
			fi
		done
		# The shim's pattern test program (glibc build; the guest is bookworm).
		rm -f "$BIN_OUT/shim-patterns"
		if [ -e "$REPO/build/shim/tests/patterns" ]; then
			cp "$REPO/build/shim/tests/patterns" "$BIN_OUT/shim-patterns"
		fi
	else
		log "warning: no 'make shim' target yet; the shim is not in the guest"
	fi
}

# stage_binaries DIR: the tree of the binaries disk, mounted at /untorn.
stage_binaries() {
	local s=$1 f
	mkdir -p "$s/bin" "$s/lib" "$s/vm" "$s/tests" "$s/bench"
	for f in untornctl untorn-csi csi-sanity vmtool shim-patterns tearw; do
		[ -e "$BIN_OUT/$f" ] && cp "$BIN_OUT/$f" "$s/bin/"
	done
	for f in glibc musl; do
		[ -e "$BIN_OUT/libuntorn-$f.so" ] && mkdir -p "$s/lib/$f" && cp "$BIN_OUT/libuntorn-$f.so" "$s/lib/$f/libuntorn.so"
	done
	install -m 0755 "$VM_SRC/guest-init.sh" "$s/vm/guest-init.sh"
	[ -d "$VM_SRC/tests" ] && cp -r "$VM_SRC/tests/." "$s/tests/"
	[ -d "$REPO/hack/bench/guest" ] && cp -r "$REPO/hack/bench/guest/." "$s/bench/"
	chmod -R a+rX "$s"
}

# vm_build_quiet: everything `run` needs, building what is missing.
vm_build_quiet() {
	mkdir -p "$VM_CACHE"
	vm_resolve recorded
	build_qemu
	build_kernel
	build_initramfs
	build_root
	build_binaries
}
