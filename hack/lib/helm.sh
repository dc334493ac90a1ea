#!/usr/bin/env bash
# Prints the path of a pinned helm binary, building it once from the Go module
# proxy into ${UNTORN_CACHE:-/var/cache/untorn}/bin when it is missing.
# Usage: HELM=$(hack/lib/helm.sh)
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
cache="${UNTORN_CACHE:-/var/cache/untorn}"
bindir="$cache/helm-$HELM_VERSION/bin"
helm="$bindir/helm"

if [[ ! -x "$helm" ]]; then
	mkdir -p "$bindir"
	echo "building helm $HELM_VERSION into $bindir" >&2
	# GOFLAGS=-mod=mod keeps the surrounding module's flags out of the build.
	(cd "$cache" && GOFLAGS=-mod=mod GOBIN="$bindir" nice go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION") >&2
fi
echo "$helm"
