# shellcheck shell=bash
# Which guest kernel and QEMU the VM build uses: the newest that the mirror
# serves and that is new enough, unless pinned. Debian's sid moves on within
# weeks; a pinned version disappears from the archive and a cold cache could
# not be built any more. Sourced by build.sh; resolve_test.go tests the
# selection on fixture indexes.
#
#   UNTORN_VM_KERNEL  pin the kernel (its release: 7.2.13+deb14-amd64)
#   UNTORN_VM_QEMU    pin QEMU (its Debian version: 1:11.1.3+ds-1)

# RWF_ATOMIC on ext4 bigalloc and XFS, atomic limits stacked by dm and md
KERNEL_MIN=6.16
# nvme-ns atomic.nawun / atomic.nawupf (hardware atomic write emulation)
QEMU_MIN=1:11.1
# The suites the QEMU chroot's apt has (trixie is its base, sid is newer);
# both are searched for the kernel and QEMU.
VM_SUITES=(trixie sid)
# A flavourless x86 kernel: linux-image-7.2.13+deb14-amd64 or
# linux-image-6.1.0-13-amd64; not -cloud-amd64, -rt-amd64, -unsigned, -dbg.
KERNEL_RE='linux-image-[0-9][^-]*(-[0-9]+)?-amd64'
QEMU_PKG=qemu-system-x86

# newest_version NAME_RE MIN < PACKAGES: "PACKAGE VERSION" of the newest
# package in a Debian Packages index whose whole name matches the extended
# regular expression NAME_RE and whose version is at least MIN (dpkg order;
# MIN's pre-releases count: 6.16 accepts 6.16~rc1). Status 1 when none.
newest_version() {
	local re=$1 min=$2 p v best="" bestv=""
	while read -r p v; do
		dpkg --compare-versions "$v" ge "$min~" || continue
		if [ -z "$bestv" ] || dpkg --compare-versions "$v" gt "$bestv"; then
			best=$p bestv=$v
		fi
	done < <(awk -v re="^($re)\$" '
		/^Package:/ { p = $2 }
		/^Version:/ && p ~ re { print p, $2 }')
	[ -n "$best" ] || return 1
	echo "$best $bestv"
}

# newest_in_suites NAME_RE MIN DIR SUITE...: "SUITE PACKAGE VERSION" of the
# newest match over the suites' indexes DIR/SUITE (plain text); a later suite
# wins a tie. Status 1 when no suite has one.
newest_in_suites() {
	local re=$1 min=$2 dir=$3 s got best="" bestv=""
	shift 3
	for s in "$@"; do
		got=$(newest_version "$re" "$min" < "$dir/$s") || continue
		if [ -z "$bestv" ] || dpkg --compare-versions "${got#* }" ge "$bestv"; then
			best="$s $got" bestv=${got#* }
		fi
	done
	[ -n "$best" ] || return 1
	echo "$best"
}

# suite_of PACKAGE VERSION DIR SUITE...: the first suite whose index serves
# PACKAGE at VERSION
suite_of() {
	local pkg=$1 ver=$2 dir=$3 s
	shift 3
	for s in "$@"; do
		if awk -v p="$pkg" -v v="$ver" '/^Package:/ { n = $2 } /^Version:/ && n == p && $2 == v { f = 1 } END { exit !f }' "$dir/$s"; then
			echo "$s"
			return 0
		fi
	done
	return 1
}

# fetch_indexes DIR: the main/binary-amd64 Packages index of every suite of
# VM_SUITES from the mirror, decompressed into DIR/SUITE
fetch_indexes() {
	local - dir=$1 s
	set -o pipefail
	for s in "${VM_SUITES[@]}"; do
		curl -fsSL --retry 2 --connect-timeout 20 -m 600 "$MIRROR/dists/$s/main/binary-amd64/Packages.xz" |
			xz -dc > "$dir/$s" || return 1
	done
}

# vm_resolve fresh|recorded: set KV (kernel release), QEMU_VERSION,
# QEMU_SUITE and QEMU_KEY (the cache keys) and print them. "fresh" asks the
# mirror; "recorded" keeps the last resolution ($VM_CACHE/resolved.env) is kept, so that the runs
# of a benchmark use one kernel and one QEMU even when the archive moves.
vm_resolve() {
	local fresh=$1 idx got how_k how_q env=$VM_CACHE/resolved.env
	KV="" QEMU_VERSION="" QEMU_SUITE=""
	if [ "$fresh" != fresh ] && [ -e "$env" ]; then
		# shellcheck source=/dev/null
		. "$env"
		how_k="as last resolved" how_q="as last resolved"
	else
		idx=$(mktemp -d)
		if fetch_indexes "$idx"; then
			if got=$(newest_in_suites "$KERNEL_RE" "$KERNEL_MIN" "$idx" "${VM_SUITES[@]}"); then
				read -r how_k KV _ <<< "$got"
				KV=${KV#linux-image-}
				how_k="newest >= $KERNEL_MIN in $how_k"
			fi
			if got=$(newest_in_suites "$QEMU_PKG" "$QEMU_MIN" "$idx" "${VM_SUITES[@]}"); then
				read -r QEMU_SUITE _ QEMU_VERSION <<< "$got"
				how_q="newest >= $QEMU_MIN in $QEMU_SUITE"
			fi
			if [ -n "${UNTORN_VM_QEMU:-}" ]; then
				QEMU_SUITE=$(suite_of "$QEMU_PKG" "$UNTORN_VM_QEMU" "$idx" "${VM_SUITES[@]}") || QEMU_SUITE=""
			fi
		elif [ -e "$env" ]; then
			log "warning: the mirror $MIRROR does not answer; keeping the last resolution"
			# shellcheck source=/dev/null
			. "$env"
			how_k="as last resolved (mirror unreachable)" how_q=$how_k
		elif [ -n "${UNTORN_VM_KERNEL:-}" ] && [ -n "${UNTORN_VM_QEMU:-}" ]; then
			log "warning: the mirror $MIRROR does not answer; using the pinned versions"
		else
			rm -rf "$idx"
			die "cannot fetch the Packages indexes from $MIRROR (set UNTORN_VM_MIRROR, or pin UNTORN_VM_KERNEL and UNTORN_VM_QEMU to cached versions)"
		fi
		rm -rf "$idx"
	fi
	if [ -n "${UNTORN_VM_KERNEL:-}" ]; then KV=$UNTORN_VM_KERNEL how_k="pinned by UNTORN_VM_KERNEL"; fi
	if [ -n "${UNTORN_VM_QEMU:-}" ]; then QEMU_VERSION=$UNTORN_VM_QEMU how_q="pinned by UNTORN_VM_QEMU"; fi
	[ -n "$KV" ] || die "the mirror $MIRROR serves no kernel >= $KERNEL_MIN in ${VM_SUITES[*]} (pin one with UNTORN_VM_KERNEL)"
	[ -n "$QEMU_VERSION" ] || die "the mirror $MIRROR serves no QEMU >= $QEMU_MIN in ${VM_SUITES[*]} (pin one with UNTORN_VM_QEMU)"
	dpkg --compare-versions "${KV%%[+-]*}" ge "$KERNEL_MIN~" ||
		die "kernel $KV is older than $KERNEL_MIN, which atomic writes need"
	dpkg --compare-versions "$QEMU_VERSION" ge "$QEMU_MIN~" ||
		die "QEMU $QEMU_VERSION is older than $QEMU_MIN, which emulates NVMe atomic writes (nvme-ns atomic.nawupf)"
	# the suite apt installs QEMU from (with its dependencies)
	QEMU_SUITE=${QEMU_SUITE:-${VM_SUITES[-1]}}
	QEMU_KEY=${QEMU_VERSION#*:}
	if [ "$fresh" = fresh ] && [ -z "${UNTORN_VM_KERNEL:-}${UNTORN_VM_QEMU:-}" ]; then
		mkdir -p "$VM_CACHE"
		printf 'KV=%q\nQEMU_VERSION=%q\nQEMU_SUITE=%q\n' "$KV" "$QEMU_VERSION" "$QEMU_SUITE" > "$env.$$"
		mv "$env.$$" "$env"
	fi
	adopt_qemu
	log "guest kernel $KV ($how_k); QEMU $QEMU_VERSION ($how_q)"
}

# adopt_qemu: a complete QEMU chroot of the resolved version cached under
# another name (qemu-trixie-sid-1 from before versions were resolved) serves
# as qemu-$QEMU_KEY
adopt_qemu() {
	local d=$VM_CACHE/qemu-$QEMU_KEY o
	[ ! -e "$d" ] || return 0
	for o in "$VM_CACHE"/qemu-*/; do
		o=${o%/}
		if [ ! -e "$o/.done" ] || [ -L "$o" ]; then continue; fi
		if grep -qF "(Debian $QEMU_VERSION)" "$o/.qemu-version" 2> /dev/null; then
			ln -s "${o##*/}" "$d" 2> /dev/null || true
			log "QEMU $QEMU_VERSION: using the cached chroot ${o##*/}"
			return 0
		fi
	done
}
