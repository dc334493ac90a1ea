#!/bin/bash
# Builds the Kubernetes server binaries of $K8S_VERSION from the Go module
# proxy into $UNTORN_CACHE/k8s/$K8S_VERSION (once; later runs reuse them).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

BINS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
done_all=1
for b in "${BINS[@]}"; do [ -x "$K8S_BIN/$b" ] || done_all=0; done
if [ $done_all = 1 ]; then log "kubernetes $K8S_VERSION: cached in $K8S_BIN"; exit 0; fi

work=$UNTORN_CACHE/build/k8s-$K8S_VERSION
mkdir -p "$work" "$K8S_BIN"
cd "$work"
export CGO_ENABLED=0 GOFLAGS=-mod=mod
staging_ver=v0.${K8S_VERSION#v1.}

log "kubernetes $K8S_VERSION: resolving modules"
gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
[ -f "$gomod" ] || die "cannot download k8s.io/kubernetes@$K8S_VERSION"
{
	echo "module local/k8sbuild"
	echo
	echo "go 1.24"
	echo
	echo "godebug default=go1.24"
	echo
	echo "require k8s.io/kubernetes $K8S_VERSION"
	echo
	# every staging module k8s.io/kubernetes replaces with ./staging/... gets
	# the published module of the matching version
	grep -oE 'k8s.io/[a-z0-9-]+ => \./staging/src/k8s.io/[a-z0-9-]+' "$gomod" | awk '{print $1}' | sort -u |
		while read -r m; do echo "replace $m => $m $staging_ver"; done
} > go.mod
: > tools.go
cat > tools.go <<'EOT'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubectl/pkg/cmd"
)
EOT
go get "k8s.io/kubernetes@$K8S_VERSION" > get.log 2>&1 || { cat get.log; die "go get k8s.io/kubernetes failed"; }
go mod tidy -e > tidy.log 2>&1 || true
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(cut -d. -f2 <<< "$K8S_VERSION")"
ldflags="$ldflags -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
for b in "${BINS[@]}"; do
	[ -x "$K8S_BIN/$b" ] && continue
	pkg=k8s.io/kubernetes/cmd/$b
	log "kubernetes $K8S_VERSION: building $b"
	go build -trimpath -ldflags "$ldflags" -o "$K8S_BIN/$b.tmp" "$pkg"
	mv "$K8S_BIN/$b.tmp" "$K8S_BIN/$b"
done
log "kubernetes $K8S_VERSION: built into $K8S_BIN"
