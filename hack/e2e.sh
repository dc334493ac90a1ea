#!/bin/bash
# End-to-end test of untorn on a real single-node Kubernetes on this machine:
# cluster up -> helm install (loop backend) -> checks -> helm uninstall ->
# cluster down (always, also on failure or interrupt). The checks are Go
# against the Kubernetes API (test/e2e, a module of its own); they run inside
# the cluster's namespaces with its kubeconfig.
#
#   hack/e2e.sh            all checks
#   E2E_CHECKS="1 2" hack/e2e.sh   only some checks (6 cleans up after the others)
#   E2E_KEEP=1 hack/e2e.sh  leave the cluster up afterwards (for debugging)
#
# Every check prints PASS or FAIL with the evidence (objects, events, logs);
# the script exits non-zero when any check failed. Evidence of the last run
# is kept in $UNTORN_CACHE/e2e-last.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/hack/cluster/lib.sh"
export PATH=/usr/local/go/bin:$PATH
LC=$ROOT/hack/local-cluster.sh
E2E_CHECKS=${E2E_CHECKS:-1 2 3 4 5 6}
RELEASE=untorn
RELEASE_NS=untorn-system
TEST_NS=untorn-e2e
EVIDENCE=$UNTORN_CACHE/e2e-last
E2E_BIN=$UNTORN_CACHE/build/untorn-e2e
PG_MANIFEST=${PG_MANIFEST:-$ROOT/deploy/examples/postgres.yaml}
MARIADB_MANIFEST=${MARIADB_MANIFEST:-$ROOT/deploy/examples/mariadb.yaml}

k() { "$LC" kubectl "$@"; }
helm_bin() { "$ROOT/hack/lib/helm.sh"; }
banner() { printf '\n========== %s ==========\n' "$*"; }

# cluster_evidence: nodes, pods, events and the driver's logs (printed by
# the checks' program), then the tail of every component's log
cluster_evidence() {
	if [ -x "$E2E_BIN" ]; then "$LC" exec "$E2E_BIN" -cluster-evidence -release-namespace "$RELEASE_NS" 2>&1; fi
	LOG_LINES=30 "$LC" logs 2>&1
}

helm_install() {
	local tag=${UNTORN_IMAGE##*:} repo=${UNTORN_IMAGE%:*}
	"$LC" exec "$(helm_bin)" upgrade --install "$RELEASE" "$ROOT/charts/untorn" \
		--namespace "$RELEASE_NS" --create-namespace \
		--set image.repository="$repo" --set image.tag="$tag" --set image.pullPolicy=Never \
		--set registrar.mode=builtin --set livenessProbe.enabled=false \
		--set node.backend=loop --set webhook.replicas=1 \
		--wait --timeout 5m || die "helm install failed"
	k get csidriver,storageclass
	k -n "$RELEASE_NS" get pods -o wide
}

T0=$SECONDS
installed=0

cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	if [ $rc -ne 0 ] && "$LC" status > /dev/null 2>&1; then
		banner "run failed (exit $rc): cluster state"
		cluster_evidence
	fi
	if [ "${E2E_KEEP:-0}" = 1 ]; then
		log "E2E_KEEP=1: cluster left up (hack/local-cluster.sh down to stop it)"
	else
		if [ $installed = 1 ] && "$LC" status > /dev/null 2>&1; then
			k delete namespace "$TEST_NS" --wait=true --timeout=120s > /dev/null 2>&1
			"$LC" exec "$(helm_bin)" uninstall "$RELEASE" -n "$RELEASE_NS" --wait --timeout 2m > /dev/null 2>&1 ||
				log "helm uninstall failed"
		fi
		"$LC" down || { log "cluster teardown FAILED"; rc=1; }
	fi
	banner "e2e summary"
	cat "$EVIDENCE/summary.txt" 2> /dev/null || echo "  no check ran"
	log "e2e finished in $((SECONDS - T0))s"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rm -rf "$EVIDENCE"
mkdir -p "$EVIDENCE" "$(dirname "$E2E_BIN")"
exec > >(tee "$EVIDENCE/e2e.log") 2>&1

banner "checks program (test/e2e)"
(cd "$ROOT/test/e2e" && go build -o "$E2E_BIN" .)

banner "cluster up"
"$LC" up
t_up=$((SECONDS - T0))

banner "untorn image"
"$LC" images
t_img=$((SECONDS - T0))

banner "helm install"
helm_install
installed=1
log "helm install done at $((SECONDS - T0))s (cluster ${t_up}s, image ${t_img}s)"

# the program runs in the cluster's mount and network namespaces: it reaches
# the API server, reads the loop backend's directory at the cluster's
# /var/lib and asks the cluster's containerd for the containers' PIDs
"$LC" exec "$E2E_BIN" -checks "$E2E_CHECKS" -namespace "$TEST_NS" \
	-release-namespace "$RELEASE_NS" -driver untorn.csi.dev -node "$NODE_NAME" \
	-loop-dir "$CLUSTER_DIR/varlib/untorn/loop" -evidence "$EVIDENCE" \
	-image "$UNTORN_IMAGE" -postgres15-image "$POSTGRES15_IMAGE" \
	-pg-manifest "$PG_MANIFEST" -mariadb-manifest "$MARIADB_MANIFEST" \
	-kubelet-log "$CLUSTER_DIR/logs/kubelet.log" -local-cluster "$LC"
