# Common settings for the local cluster scripts. Sourced, not executed.
# shellcheck shell=bash
# shellcheck disable=SC2034 # the settings are for the scripts that source this file

UNTORN_ROOT=${UNTORN_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
UNTORN_CACHE=${UNTORN_CACHE:-/var/cache/untorn}
# Scratch directory of the running cluster (state, logs, pki). Wiped on "down".
CLUSTER_DIR=${CLUSTER_DIR:-$UNTORN_CACHE/cluster}

K8S_VERSION=${K8S_VERSION:-v1.33.13}
HELM_VERSION=${HELM_VERSION:-v3.22.0}
PROVISIONER_VERSION=${PROVISIONER_VERSION:-v6.3.0}
RESIZER_VERSION=${RESIZER_VERSION:-v2.3.0}
ATTACHER_VERSION=${ATTACHER_VERSION:-v4.13.0}
SNAPSHOTTER_VERSION=${SNAPSHOTTER_VERSION:-v8.4.0}
PAUSE_TAG=${PAUSE_TAG:-3.10}
DEBIAN_SUITE=${DEBIAN_SUITE:-bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

NODE_NAME=${NODE_NAME:-untorn-node}
NODE_IP=${NODE_IP:-10.250.0.1}

# image names: the ones the chart and the examples use
UNTORN_IMAGE=${UNTORN_IMAGE:-ghcr.io/untorn/untorn:e2e}
POSTGRES_IMAGE=${POSTGRES_IMAGE:-docker.io/library/postgres:18}
POSTGRES15_IMAGE=${POSTGRES15_IMAGE:-docker.io/library/postgres:15}
MARIADB_IMAGE=${MARIADB_IMAGE:-docker.io/library/mariadb:11.8}
SIDECAR_REPO=${SIDECAR_REPO:-registry.k8s.io/sig-storage}

K8S_BIN=$UNTORN_CACHE/k8s/$K8S_VERSION
SIDECAR_BIN=$UNTORN_CACHE/sidecars
IMAGE_DIR=$UNTORN_CACHE/images

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

# poll SECONDS WHAT CMD...: run CMD (output discarded) every POLL_INTERVAL
# seconds (default 1) until it succeeds; after SECONDS say what timed out and
# return 1.
poll() {
	local secs=$1 what=$2
	shift 2
	local end=$((SECONDS + secs))
	until "$@" > /dev/null 2>&1; do
		if [ $SECONDS -ge $end ]; then
			log "timed out after ${secs}s waiting for $what"
			return 1
		fi
		sleep "${POLL_INTERVAL:-1}"
	done
}
