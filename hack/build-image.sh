#!/usr/bin/env bash
# Builds the untorn image's own files into a root filesystem directory, with
# the same steps as the Dockerfile's build stages, so that CI catches a
# broken image build step without a container engine.
#
#   hack/build-image.sh OUTDIR
#
# OUTDIR may be empty or an existing root filesystem (for example a Debian
# rootfs with e2fsprogs, xfsprogs, util-linux and lvm2, as the Dockerfile's
# runtime stage has); the script only adds these files to it:
#
#   usr/bin/untorn-csi                     CSI plugin (static, CGO_ENABLED=0)
#   usr/bin/untornctl                      operator CLI
#   usr/bin/untorn-registrar               kubelet plugin registrar
#   usr/bin/untorn-webhook                 shim injection webhook
#   usr/lib/untorn/shim/glibc/libuntorn.so preload library, glibc build
#   usr/lib/untorn/shim/musl/libuntorn.so  preload library, musl build
#   usr/share/untorn/version               version the binaries report
#
# Environment: VERSION (default: git describe), GO (default: go).
set -euo pipefail

die() { echo "build-image.sh: $*" >&2; exit 1; }
[ $# -eq 1 ] || die "usage: $0 OUTDIR"
out=$1
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
[ "$out" != / ] || die "refusing to write into /"

GO=${GO:-go}
VERSION=${VERSION:-$(git -C "$root" describe --tags --always --dirty 2>/dev/null || echo dev)}
ldflags="-s -w -X github.com/untorn/untorn/pkg/driver.Version=$VERSION"
commands=(untorn-csi untornctl untorn-registrar untorn-webhook)

# Build stage 1 (Dockerfile "go"): the Go commands, static.
mkdir -p "$out/usr/bin"
for c in "${commands[@]}"; do
	[ -d "$root/cmd/$c" ] || die "cmd/$c is missing"
	(cd "$root" && CGO_ENABLED=0 nice "$GO" build -trimpath -ldflags "$ldflags" -o "$out/usr/bin/$c" "./cmd/$c")
done

# Build stage 2 (Dockerfile "shim"): the preload library for glibc and musl.
shimbuild=$(mktemp -d)
trap 'rm -rf "$shimbuild"' EXIT
nice make -s -C "$root/pkg/atomic/shim" OUT="$shimbuild" glibc musl
for libc in glibc musl; do
	install -D -m 0644 "$shimbuild/$libc/libuntorn.so" "$out/usr/lib/untorn/shim/$libc/libuntorn.so"
done

install -D -m 0644 /dev/null "$out/usr/share/untorn/version"
echo "$VERSION" > "$out/usr/share/untorn/version"

# The same checks the Dockerfile's final stage relies on.
for c in "${commands[@]}"; do
	[ -x "$out/usr/bin/$c" ] || die "usr/bin/$c was not built"
done
file_type() { od -An -c -N4 "$1" | tr -d ' \n'; }
for libc in glibc musl; do
	[ "$(file_type "$out/usr/lib/untorn/shim/$libc/libuntorn.so")" = '177ELF' ] ||
		die "usr/lib/untorn/shim/$libc/libuntorn.so is not an ELF object"
done
echo "image files for $VERSION in $out"
