#!/bin/bash
# End-to-end test of untorn on a real single-node Kubernetes on this machine:
# cluster up -> helm install (loop backend) -> checks -> helm uninstall ->
# cluster down (always, also on failure or interrupt).
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
DRIVER=untorn.csi.dev
LOOP_DIR=$CLUSTER_DIR/varlib/untorn/loop
EVIDENCE=$UNTORN_CACHE/e2e-last
PG_MANIFEST=${PG_MANIFEST:-$ROOT/deploy/examples/postgres.yaml}
MARIADB_MANIFEST=${MARIADB_MANIFEST:-$ROOT/deploy/examples/mariadb.yaml}
. "$ROOT/hack/cluster/e2e-lib.sh"
. "$ROOT/hack/cluster/e2e-checks.sh"

T0=$SECONDS
declare -A RESULT=()
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
	summary
	log "e2e finished in $((SECONDS - T0))s"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rm -rf "$EVIDENCE"
mkdir -p "$EVIDENCE"
exec > >(tee "$EVIDENCE/e2e.log") 2>&1

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

k create namespace "$TEST_NS" > /dev/null
for c in $E2E_CHECKS; do
	case $c in
	1) run_check 1 "CSIDriver, CSINode and CSIStorageCapacity" check_registration ;;
	2) run_check 2 "XFS volume binds and verifies atomic >= 8 KiB" check_xfs_volume ;;
	3) run_check 3 "placement by capability: hardware-only classes stay Pending, nothing carved; untorn-xfs binds" check_placement ;;
	4) run_check 4 "PostgreSQL with the shim: atomic page writes, data survives a pod restart" check_postgres
	   run_check 4b "MariaDB with the shim: atomic page writes" check_mariadb
	   run_check 4c "PostgreSQL 15 with the shim: atomic page writes" check_postgres15 ;;
	5) run_check 5 "online volume expansion" check_expand ;;
	6) run_check 6 "deleting workloads and PVCs removes the volumes" check_cleanup ;;
	*) die "unknown check $c" ;;
	esac
done
failed=0
for c in "${!RESULT[@]}"; do [ "${RESULT[$c]}" = PASS ] || failed=1; done
[ $failed = 0 ]
