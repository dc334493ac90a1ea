#!/bin/bash
# Builds the CSI sidecars the chart uses from the Go module proxy into
# $UNTORN_CACHE/sidecars/<name>-<version> (once per version).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
export CGO_ENABLED=0 GOFLAGS=-mod=mod

# build <module> <version> <main package> <binary name>
# A throwaway module requires the sidecar's module and copies its replace
# directives (go install refuses modules that have them).
build() {
	local mod=$1 ver=$2 pkg=$3 name=$4
	local out=$SIDECAR_BIN/$name-$ver
	if [ -x "$out" ]; then log "$name $ver: cached"; return 0; fi
	local work=$UNTORN_CACHE/build/$name-$ver
	mkdir -p "$work" "$SIDECAR_BIN"
	log "$name $ver: building"
	local gomod
	gomod=$(cd "$work" && go mod download -json "$mod@$ver" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
	[ -f "$gomod" ] || die "cannot download $mod@$ver"
	{
		echo "module local/$name"
		echo
		grep -E '^go ' "$gomod"
		echo
		echo "require $mod $ver"
		echo
		awk '/^replace \(/{inb=1;next} inb&&/^\)/{inb=0;next} inb{print "replace "$0;next} /^replace /{print}' "$gomod" | grep -v '=> \.' || true
	} > "$work/go.mod"
	(cd "$work" && go get "$pkg@$ver" > get.log 2>&1) || { cat "$work/get.log"; die "$name: go get failed"; }
	(cd "$work" && go build -trimpath -ldflags "-s -w -X main.version=$ver" -o "$out.tmp" "$pkg")
	mv "$out.tmp" "$out"
	log "$name $ver: built"
}

build github.com/kubernetes-csi/external-provisioner/v6 "$PROVISIONER_VERSION" \
	github.com/kubernetes-csi/external-provisioner/v6/cmd/csi-provisioner csi-provisioner
build github.com/kubernetes-csi/external-resizer/v2 "$RESIZER_VERSION" \
	github.com/kubernetes-csi/external-resizer/v2/cmd/csi-resizer csi-resizer
if [ "${BUILD_ATTACHER:-0}" = 1 ]; then
	build github.com/kubernetes-csi/external-attacher/v4 "$ATTACHER_VERSION" \
		github.com/kubernetes-csi/external-attacher/v4/cmd/csi-attacher csi-attacher
fi
