# Helpers of hack/e2e.sh: kubectl/helm in the cluster, waiting, evidence,
# check bookkeeping. Sourced after hack/cluster/lib.sh (which has poll).
# shellcheck shell=bash

k() { "$LC" kubectl "$@"; }
kt() { "$LC" kubectl -n "$TEST_NS" "$@"; }
helm_bin() { "$ROOT/hack/lib/helm.sh"; }

banner() { printf '\n========== %s ==========\n' "$*"; }

# fail MSG: the current check fails with MSG (the check function returns 1)
fail() {
	printf '\n!!!!! %s\n' "$*"
	return 1
}

# per check: PASS or FAIL, its title, its seconds
declare -A RESULT=() TITLES=() TIMES=()

# run_check ID TITLE FUNCTION
run_check() {
	local id=$1 title=$2 fn=$3 t0=$SECONDS
	banner "check $id: $title"
	local rc
	# not in an "if": errexit must stay in force inside the check
	set +e
	(
		set -e
		"$fn"
	)
	rc=$?
	set -e
	if [ $rc = 0 ]; then
		RESULT[$id]=PASS
		log "check $id PASS ($((SECONDS - t0))s): $title"
	else
		RESULT[$id]=FAIL
		log "check $id FAIL ($((SECONDS - t0))s): $title"
		banner "evidence for check $id"
		check_evidence
	fi
	TITLES[$id]="$title"
	TIMES[$id]=$((SECONDS - t0))
}

summary() {
	banner "e2e summary"
	[ ${#RESULT[@]} -gt 0 ] || { echo "  no check ran"; return 0; }
	local id
	for id in $(printf '%s\n' "${!RESULT[@]}" | sort); do
		printf '  check %-3s %-4s %4ss  %s\n' "$id" "${RESULT[$id]}" "${TIMES[$id]}" "${TITLES[$id]}"
	done
}

# the evidence every failing check prints: the test namespace's objects and
# events, the driver's logs, the kubelet's lines about the driver
check_evidence() {
	echo "--- objects in $TEST_NS"
	kt get pods,pvc -o wide 2>&1
	k get pv -o wide 2>&1
	echo "--- describe pods and PVCs in $TEST_NS"
	kt describe pods,pvc 2>&1 | tail -n 150
	echo "--- events in $TEST_NS"
	kt get events --sort-by=.lastTimestamp 2>&1 | tail -n 40
	driver_logs 80
	echo "--- kubelet log lines about the driver or volumes"
	grep -E 'untorn|csi|[Vv]olume' "$CLUSTER_DIR/logs/kubelet.log" 2>/dev/null | tail -n 40
}

driver_logs() {
	local n=${1:-80} pod c
	for pod in $(k -n "$RELEASE_NS" get pods -o name 2>/dev/null); do
		for c in $(k -n "$RELEASE_NS" get "$pod" -o jsonpath='{.spec.containers[*].name}' 2>/dev/null); do
			echo "--- $pod [$c] (last $n lines)"
			k -n "$RELEASE_NS" logs "$pod" -c "$c" --tail="$n" 2>&1
		done
	done
}

cluster_evidence() {
	k get nodes -o wide 2>&1
	k get pods -A -o wide 2>&1
	k get events -A --sort-by=.lastTimestamp 2>&1 | tail -n 40
	driver_logs 60
	LOG_LINES=30 "$LC" logs 2>&1
}

helm_install() {
	local helm
	helm=$(helm_bin)
	local tag=${UNTORN_IMAGE##*:} repo=${UNTORN_IMAGE%:*}
	"$LC" exec "$helm" upgrade --install "$RELEASE" "$ROOT/charts/untorn" \
		--namespace "$RELEASE_NS" --create-namespace \
		--set image.repository="$repo" --set image.tag="$tag" --set image.pullPolicy=Never \
		--set registrar.mode=builtin --set livenessProbe.enabled=false \
		--set node.backend=loop --set webhook.replicas=1 \
		--wait --timeout 5m || {
		cluster_evidence
		die "helm install failed"
	}
	k get csidriver,storageclass
	k -n "$RELEASE_NS" get pods -o wide
}

# pvc_pod NAME CLASS SIZE IMAGE: a PVC and a pod that mounts it at /data and
# sleeps
pvc_pod() {
	local name=$1 class=$2 size=$3 image=$4
	kt apply -f - << EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $name}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: $class
  resources: {requests: {storage: $size}}
---
apiVersion: v1
kind: Pod
metadata: {name: $name}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: $image
    imagePullPolicy: Never
    command: [sleep, infinity]
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: $name}
EOF
}

pod_ready() { kt wait --for=condition=Ready "pod/$1" --timeout=1s; }
