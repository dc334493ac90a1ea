# The checks of hack/e2e.sh. Each runs in a subshell with errexit and fails
# with a message naming what it saw. Sourced after e2e-lib.sh.
# shellcheck shell=bash

# 1. The driver is registered: CSIDriver object, the node's CSINode lists the
# driver, and the provisioner published CSIStorageCapacity for the node.
check_registration() {
	k get csidriver "$DRIVER" -o yaml | sed -n '/^spec:/,$p'
	poll 120 "CSINode $NODE_NAME to list $DRIVER" \
		sh -c "'$LC' kubectl get csinode '$NODE_NAME' -o jsonpath='{.spec.drivers[*].name}' | grep -qw '$DRIVER'" ||
		fail "CSINode $NODE_NAME does not list $DRIVER: $(k get csinode "$NODE_NAME" -o yaml 2>&1)"
	echo "CSINode $NODE_NAME drivers: $(k get csinode "$NODE_NAME" -o jsonpath='{.spec.drivers[*].name}')"
	local n=0
	poll 180 "CSIStorageCapacity objects" sh -c \
		"[ \$('$LC' kubectl get csistoragecapacities -A -o name | wc -l) -gt 0 ]" ||
		fail "no CSIStorageCapacity objects after 180s"
	k get csistoragecapacities -A -o custom-columns='NAMESPACE:.metadata.namespace,CLASS:.storageClassName,CAPACITY:.capacity,TOPOLOGY:.nodeTopology.matchLabels'
	n=$(k get csistoragecapacities -A -o json | jq --arg node "$NODE_NAME" \
		'[.items[] | select((.nodeTopology.matchLabels // {} | to_entries | map(.value) | index($node)) != null)
		 | select(.capacity != null and .capacity != "0")] | length')
	[ "$n" -gt 0 ] || fail "no CSIStorageCapacity with capacity for node $NODE_NAME"
	echo "CSIStorageCapacity objects with capacity on $NODE_NAME: $n"
}

# 2. An XFS PVC binds on first use, the pod starts, and inside the pod
# untornctl verifies real atomic writes of at least 8 KiB.
check_xfs_volume() {
	pvc_pod xfs untorn-xfs 1Gi "$UNTORN_IMAGE"
	poll 180 "pod xfs Ready" pod_ready xfs || fail "pod xfs did not become Ready"
	echo "PVC: $(kt get pvc xfs -o jsonpath='{.status.phase} {.spec.volumeName} {.status.capacity.storage}')"
	kt exec xfs -- sh -c 'grep " /data " /proc/mounts'
	local out rc=0
	out=$(kt exec xfs -- untornctl verify /data --unit 8Ki --json) || rc=$?
	echo "untornctl verify /data --unit 8Ki --json (exit $rc): $out"
	[ $rc = 0 ] || fail "untornctl verify exited $rc"
	jq -e '.atomic == true and .unit >= 8192 and .fsType == "xfs"' <<< "$out" > /dev/null ||
		fail "volume is not atomic for 8 KiB: $out"
	kt exec xfs -- untornctl verify /data --unit 16Ki
}

# 3. Placement by capability. This node's loop devices have no hardware
# atomic writes, so the provisioner publishes a capacity of 0 here for
# untorn-ext4-16k and untorn-xfs-hw: their claims stay Pending with the
# scheduler's "not enough free storage" on the pod, and nothing is carved
# (no PV, no backing file). An untorn-xfs claim on the same node binds and
# mounts.
check_placement() {
	local class
	for class in untorn-ext4-16k untorn-xfs-hw untorn-xfs; do
		poll 180 "a CSIStorageCapacity of $class for $NODE_NAME" sh -c \
			"'$LC' kubectl get csistoragecapacities -A -o json | jq -e --arg c $class --arg n '$NODE_NAME' \
			'[.items[] | select(.storageClassName == \$c and ((.nodeTopology.matchLabels // {}) | to_entries | map(.value) | index(\$n)) != null)] | length > 0' > /dev/null" ||
			fail "no CSIStorageCapacity of $class for node $NODE_NAME"
	done
	k get csistoragecapacities -A -o custom-columns='CLASS:.storageClassName,CAPACITY:.capacity,TOPOLOGY:.nodeTopology.matchLabels'
	local caps
	caps=$(k get csistoragecapacities -A -o json | jq -c --arg n "$NODE_NAME" \
		'[.items[] | select(((.nodeTopology.matchLabels // {}) | to_entries | map(.value) | index($n)) != null)
		 | {(.storageClassName): (.capacity // "0")}] | add')
	echo "capacity per class on $NODE_NAME: $caps"
	jq -e '.["untorn-ext4-16k"] == "0" and .["untorn-xfs-hw"] == "0" and .["untorn-xfs"] != "0"' <<< "$caps" > /dev/null ||
		fail "capacity per class is not 0 for the hardware-only classes and positive for untorn-xfs: $caps"
	echo "node labels from the driver's topology: $(k get node "$NODE_NAME" -o json | jq -c '.metadata.labels | with_entries(select(.key | test("untorn")))')"

	local before
	before=$(find "$LOOP_DIR" -maxdepth 1 -name '*.img' -printf '%f\n' 2>/dev/null | sort)
	pvc_pod place-ext4 untorn-ext4-16k 1Gi "$UNTORN_IMAGE"
	pvc_pod place-xfshw untorn-xfs-hw 1Gi "$UNTORN_IMAGE"
	pvc_pod place-xfs untorn-xfs 1Gi "$UNTORN_IMAGE"
	poll 180 "pod place-xfs Ready" pod_ready place-xfs || fail "pod place-xfs (untorn-xfs) did not become Ready"
	kt exec place-xfs -- sh -c 'grep " /data " /proc/mounts'
	local pod ev pv
	for pod in place-ext4 place-xfshw; do
		poll 120 "a FailedScheduling event on pod $pod" sh -c \
			"'$LC' kubectl -n '$TEST_NS' get events --field-selector involvedObject.name=$pod,reason=FailedScheduling -o name | grep -q ." ||
			fail "no FailedScheduling event for pod $pod"
		ev=$(kt get events --field-selector "involvedObject.name=$pod,reason=FailedScheduling" -o jsonpath='{range .items[*]}{.message}{"\n"}{end}')
		echo "FailedScheduling events of $pod: $ev"
		grep -qi 'enough free storage' <<< "$ev" || fail "the events of pod $pod do not name insufficient storage capacity"
		[ "$(kt get pod "$pod" -o jsonpath='{.status.phase}')" = Pending ] || fail "pod $pod is not Pending"
		[ "$(kt get pvc "$pod" -o jsonpath='{.status.phase}')" = Pending ] || fail "PVC $pod is not Pending"
		pv=$(kt get pvc "$pod" -o jsonpath='{.spec.volumeName}')
		[ -z "$pv" ] || fail "PVC $pod is bound to $pv"
		if kt get events --field-selector "involvedObject.name=$pod,reason=ProvisioningFailed" -o name | grep -q .; then
			fail "CreateVolume was attempted for $pod: $(kt get events --field-selector "involvedObject.name=$pod" -o jsonpath='{range .items[*]}{.message}{"\n"}{end}')"
		fi
	done
	local handle after
	handle=$(k get pv "$(kt get pvc place-xfs -o jsonpath='{.spec.volumeName}')" -o jsonpath='{.spec.csi.volumeHandle}')
	after=$(find "$LOOP_DIR" -maxdepth 1 -name '*.img' -printf '%f\n' 2>/dev/null | sort)
	echo "backing files new in this check: $(comm -13 <(echo "$before") <(echo "$after") | tr '\n' ' ')"
	[ "$(comm -13 <(echo "$before") <(echo "$after"))" = "$handle.img" ] ||
		fail "backing files other than $handle.img appeared: $(comm -13 <(echo "$before") <(echo "$after"))"
	kt delete pod place-ext4 place-xfshw --wait=true --timeout=60s
	kt delete pvc place-ext4 place-xfshw --wait=true --timeout=60s
}

# apply_example FILE [JQ]: apply an example manifest with UNTORN_STATS_DIR=/tmp
# set in its StatefulSets' containers (for the shim counters), each
# StatefulSet passed through the jq filter JQ (default: unchanged); what was
# applied is kept in $EVIDENCE/<namespace>-<file>.json
apply_example() {
	local file=$1 filter=${2:-.}
	local out
	out=$EVIDENCE/$TEST_NS-$(basename "$file" .yaml).json
	kt create -f "$file" --dry-run=client -o json |
		jq -s "[.[] | if .kind == \"List\" then .items[] else . end]
			| map(if .kind == \"StatefulSet\" then
				.spec.template.spec.containers |= map(.env = ((.env // []) + [{name: \"UNTORN_STATS_DIR\", value: \"/tmp\"}]))
				| ($filter)
			  else . end)
			| {apiVersion: \"v1\", kind: \"List\", items: .}" > "$out"
	kt apply -f "$out"
}

# same_version VERSION TAG: the server's version is the image tag's version
# (tag 18 and version 18.6, tag 11.8 and version 11.8.9-MariaDB-...)
same_version() { [ "$1" = "$2" ] || [[ $1 == "$2".* ]] || [[ $1 == "$2"-* ]]; }

# image_tag POD CONTAINER: the tag of the container's image
image_tag() {
	local img
	img=$(kt get pod "$1" -o jsonpath="{.spec.containers[?(@.name==\"$2\")].image}")
	echo "${img##*:}"
}

# sql POD QUERY: run a query in the PostgreSQL pod
pg() { kt exec "$1" -c "$PG_CONTAINER" -- psql -U postgres -tAq -c "$2"; }

# shim_counters POD CONTAINER EXE-REGEX ACTIVITY...: ask every shimmed
# process for a dump (the shim dumps on its next write after
# $UNTORN_STATS_DIR/dump-now changes), run ACTIVITY to make the database
# write, then print the counters of the processes whose executable matches,
# summed, as JSON
shim_counters() {
	local pod=$1 c=$2 exe=$3
	shift 3
	# shellcheck disable=SC2016 # expanded by the shell in the container
	kt exec "$pod" -c "$c" -- sh -c 'touch "${UNTORN_STATS_DIR:?UNTORN_STATS_DIR is not set}/dump-now"' || return 1
	sleep 1.5
	"$@" > /dev/null || return 1
	sleep 2
	local ev=$EVIDENCE/$TEST_NS-$pod-stats.jsonl
	# shellcheck disable=SC2016 # expanded by the shell in the container
	kt exec "$pod" -c "$c" -- sh -c 'cat "$UNTORN_STATS_DIR"/untorn-*.json' > "$ev" || return 1
	jq -r '"  pid \(.pid) \(.exe) (\(.why)): atomic_writes \(.atomic_writes), unaligned \(.passthrough.unaligned // 0), fs_not_atomic \(.passthrough.fs_not_atomic // 0)"' \
		"$ev" >&2
	jq -s --arg exe "$exe" 'map(select(.exe | test($exe))) | {processes: length,
		atomic_writes: (map(.atomic_writes) | add),
		atomic_bytes: (map(.atomic_bytes) | add),
		uring_atomic: (map(.uring_atomic) | add),
		aio_atomic: (map(.aio_atomic) | add),
		write_errors: (map(.write_errors) | add),
		strict_failures: (map(.strict_failures) | add),
		passthrough: (map(.passthrough) | reduce .[] as $p ({}; . as $a | $p | with_entries(.value += ($a[.key] // 0))))}' \
		"$ev"
}

# shim_injected POD CONTAINER: LD_PRELOAD is set in the running process and
# the shim volume is mounted read-only
shim_injected() {
	local pod=$1 c=$2
	# the container's main process, read from the host: the containers drop
	# every capability, so an exec'd shell may not read its environ
	local preload cid pid
	cid=$(kt get pod "$pod" -o jsonpath="{.status.containerStatuses[?(@.name==\"$c\")].containerID}")
	cid=${cid#*://}
	pid=$("$LC" exec ctr -n k8s.io task ls | awk -v id="$cid" '$1 == id {print $2}')
	[ -n "$pid" ] || fail "no running task for container $cid of $pod/$c"
	preload=$(tr '\0' '\n' < "/proc/$pid/environ" | sed -n 's/^LD_PRELOAD=//p')
	[ -n "$preload" ] || fail "LD_PRELOAD is not set in $pod/$c (webhook did not inject the shim)"
	echo "LD_PRELOAD=$preload"
	local dir=${preload%/*} mnt
	# the mount that holds the library
	mnt=$(kt exec "$pod" -c "$c" -- sh -c "awk -v p='$preload' 'index(p, \$2) == 1 && \$2 != \"/\" {print}' /proc/mounts")
	echo "shim mount: ${mnt:-<none>}"
	[ -n "$mnt" ] || fail "no mount holds $preload in $pod/$c"
	awk '{print $4}' <<< "$mnt" | tr ',' '\n' | grep -qx ro || fail "the shim volume at $dir is not read-only: $mnt"
	kt exec "$pod" -c "$c" -- sh -c "test -r '$preload'" || fail "$preload is not readable"
}

# pg_example_up FILE [JQ]: apply the PostgreSQL example (through the
# StatefulSet filter JQ), wait until it is ready and check what every
# PostgreSQL version must show: the shim injected, the server of the image's
# version, full_page_writes off, io_method worker where it exists (18+).
# Sets PG_POD and PG_CONTAINER.
pg_example_up() {
	local file=$1 filter=${2:-.}
	[ -f "$file" ] || fail "$file does not exist"
	apply_example "$file" "$filter"
	local sts
	sts=$(kt get statefulsets -o name | grep -i postgres | head -n 1)
	[ -n "$sts" ] || fail "no PostgreSQL StatefulSet in $file"
	kt rollout status "$sts" --timeout=300s || fail "$sts did not become ready"
	PG_POD=${sts#*/}-0
	PG_CONTAINER=$(kt get pod "$PG_POD" -o jsonpath='{.spec.containers[0].name}')
	echo "pod $PG_POD container $PG_CONTAINER; volumes:"
	kt get pvc -o custom-columns=NAME:.metadata.name,CLASS:.spec.storageClassName,VOLUME:.spec.volumeName,SIZE:.status.capacity.storage
	shim_injected "$PG_POD" "$PG_CONTAINER"
	local ver tag fpw iom
	ver=$(pg "$PG_POD" 'SHOW server_version')
	tag=$(image_tag "$PG_POD" "$PG_CONTAINER")
	echo "server_version $ver (image tag $tag)"
	same_version "${ver%% *}" "$tag" || fail "PostgreSQL $ver runs, the image tag says $tag"
	fpw=$(pg "$PG_POD" 'SHOW full_page_writes')
	echo "full_page_writes=$fpw"
	[ "$fpw" = off ] || fail "full_page_writes is '$fpw', want off (the container's log says why: $(kt logs "$PG_POD" -c "$PG_CONTAINER" | grep 'untorn:'))"
	if [ "${ver%%.*}" -ge 18 ]; then
		iom=$(pg "$PG_POD" 'SHOW io_method')
		echo "io_method=$iom"
		[ "$iom" = worker ] || fail "io_method is '$iom', want worker (the example's)"
	fi
	kt exec "$PG_POD" -c "$PG_CONTAINER" -- sh -c 'grep -E " /var/lib/postgresql| /pgwal| pg_wal" /proc/mounts' || true
}

# pg_page_writes: make PostgreSQL write pages and check in the shim's
# counters that they went atomic
pg_page_writes() {
	local stats
	stats=$(shim_counters "$PG_POD" "$PG_CONTAINER" '/postgres$' pg "$PG_POD" \
		'UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 100 = 0; CHECKPOINT') ||
		fail "cannot read the shim counters"
	echo "shim counters (summed over processes): $stats"
	jq -e '.atomic_writes > 0 and .write_errors == 0 and .strict_failures == 0' <<< "$stats" > /dev/null ||
		fail "PostgreSQL's page writes did not go atomic: $stats"
}

# 4. The example PostgreSQL StatefulSet (PostgreSQL 18) with the injected
# shim: pgbench, atomic page writes, data kept across a pod restart.
check_postgres() {
	pg_example_up "$PG_MANIFEST"
	local pod=$PG_POD
	kt exec "$pod" -c "$PG_CONTAINER" -- pgbench -U postgres -i -s 4 -q postgres
	kt exec "$pod" -c "$PG_CONTAINER" -- pgbench -U postgres -c 4 -j 2 -T 20 postgres | tail -n 6
	pg_page_writes

	local rows uid vol rows2
	rows=$(pg "$pod" 'SELECT count(*) FROM pgbench_accounts')
	pg "$pod" 'CREATE TABLE IF NOT EXISTS e2e_marker(v text); INSERT INTO e2e_marker VALUES ('\''survives'\'')'
	uid=$(kt get pod "$pod" -o jsonpath='{.metadata.uid}')
	vol=$(kt get pvc -o jsonpath='{range .items[*]}{.metadata.name}={.spec.volumeName} {end}')
	echo "before restart: $rows rows in pgbench_accounts, volumes $vol"
	kt delete pod "$pod" --wait=true --timeout=120s
	poll 240 "pod $pod to come back" sh -c \
		"[ \"\$('$LC' kubectl -n '$TEST_NS' get pod '$pod' -o jsonpath='{.metadata.uid}')\" != '$uid' ] &&
		 '$LC' kubectl -n '$TEST_NS' wait --for=condition=Ready pod/'$pod' --timeout=1s" ||
		fail "pod $pod did not come back Ready"
	poll 60 "PostgreSQL to accept queries" pg "$pod" 'SELECT 1' || fail "PostgreSQL does not answer after the restart"
	rows2=$(pg "$pod" 'SELECT count(*) FROM pgbench_accounts')
	local vol2 marker
	vol2=$(kt get pvc -o jsonpath='{range .items[*]}{.metadata.name}={.spec.volumeName} {end}')
	marker=$(pg "$pod" 'SELECT v FROM e2e_marker')
	echo "after restart: $rows2 rows, marker '$marker', volumes $vol2"
	[ "$rows2" = "$rows" ] || fail "row count changed across the restart: $rows -> $rows2"
	[ "$marker" = survives ] || fail "the marker row is gone after the restart"
	[ "$vol2" = "$vol" ] || fail "the pod came back on other volumes: $vol -> $vol2"
}

# 4c. PostgreSQL 15 (Debian 12's), the oldest version untorn supports: the
# same example on the postgres:15 image, without io_method (15 does not know
# it), in a namespace of its own that is deleted afterwards: shim injected,
# full_page_writes off, page writes atomic.
check_postgres15() {
	TEST_NS=$TEST_NS-pg15
	k create namespace "$TEST_NS" > /dev/null
	# on the way out (pass or fail): the evidence of this namespace when it
	# failed, then the namespace with its volumes
	trap 'rc=$?; [ $rc = 0 ] || check_evidence; k delete namespace "$TEST_NS" --wait=true --timeout=180s > /dev/null || true; exit $rc' EXIT
	pg_example_up "$PG_MANIFEST" "
		.spec.template.spec.containers[0] |= (.image = \"$POSTGRES15_IMAGE\"
			| .args |= reduce .[] as \$a ([]; if (\$a | startswith(\"io_method=\")) and .[-1] == \"-c\" then .[:-1] else . + [\$a] end))"
	[ "$(image_tag "$PG_POD" "$PG_CONTAINER")" = 15 ] || fail "the pod does not run the PostgreSQL 15 image"
	kt exec "$PG_POD" -c "$PG_CONTAINER" -- pgbench -U postgres -i -s 2 -q postgres
	pg_page_writes
}

# 4b. The example MariaDB StatefulSet (MariaDB 11.8) with the injected shim.
check_mariadb() {
	[ -f "$MARIADB_MANIFEST" ] || fail "$MARIADB_MANIFEST does not exist"
	# loop devices have no hardware atomic writes: the example's ext4 class
	# would be refused (check 3), XFS's software atomics serve instead
	echo "running $MARIADB_MANIFEST on untorn-xfs instead of untorn-ext4-16k (loop devices)"
	apply_example "$MARIADB_MANIFEST" '.spec.volumeClaimTemplates |= map(if .spec.storageClassName == "untorn-ext4-16k"
		then .spec.storageClassName = "untorn-xfs" else . end)'
	local sts
	sts=$(kt get statefulsets -o name | grep -i maria | head -n 1)
	[ -n "$sts" ] || fail "no MariaDB StatefulSet in $MARIADB_MANIFEST"
	kt rollout status "$sts" --timeout=300s || fail "$sts did not become ready"
	local pod=${sts#*/}-0 c
	c=$(kt get pod "$pod" -o jsonpath='{.spec.containers[0].name}')
	shim_injected "$pod" "$c"
	my() { kt exec "$pod" -c "$c" -- sh -c "mariadb -uroot -p\"\${MARIADB_ROOT_PASSWORD:-\$MYSQL_ROOT_PASSWORD}\" -N -e \"$1\""; }
	# Ready is not always serving (an image's entrypoint may restart the
	# server after initialising it): wait for a query to succeed.
	poll 120 "MariaDB to answer queries" my "SELECT 1" ||
		fail "MariaDB in $pod does not answer queries"
	local ver tag
	ver=$(my "SELECT VERSION()")
	tag=$(image_tag "$pod" "$c")
	echo "version $ver (image tag $tag)"
	same_version "$ver" "$tag" || fail "MariaDB $ver runs, the image tag says $tag"
	local dw
	dw=$(my "SELECT @@innodb_doublewrite")
	echo "innodb_doublewrite=$dw"
	[ "$dw" = 0 ] || [ "$dw" = OFF ] || fail "innodb_doublewrite is '$dw', want OFF (the container's log says why: $(kt logs "$pod" -c "$c" | grep 'untorn:'))"
	kt logs "$pod" -c "$c" | grep -E 'InnoDB: Using (io_uring|Linux native AIO)|innodb_use_native_aio' || true
	my "CREATE DATABASE IF NOT EXISTS e2e; USE e2e; CREATE TABLE IF NOT EXISTS e2e.t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(200)) ENGINE=InnoDB;
	    INSERT INTO e2e.t (v) SELECT REPEAT('x', 200) FROM seq_1_to_20000; SET GLOBAL innodb_max_dirty_pages_pct=0;"
	sleep 5
	local stats
	stats=$(shim_counters "$pod" "$c" '/(mariadbd|mysqld)$' my "UPDATE e2e.t SET v = REPEAT('y', 200) WHERE id % 10 = 0; FLUSH TABLES e2e.t FOR EXPORT; UNLOCK TABLES;") ||
		fail "cannot read the shim counters"
	echo "shim counters (summed over processes): $stats"
	jq -e '.atomic_writes > 0 and .write_errors == 0 and .strict_failures == 0' <<< "$stats" > /dev/null ||
		fail "MariaDB's page writes did not go atomic: $stats"
	echo "rows: $(my 'SELECT count(*) FROM e2e.t')"
}

# 5. Growing a bound PVC grows the mounted filesystem without a restart.
check_expand() {
	pvc_pod grow untorn-xfs 1Gi "$UNTORN_IMAGE"
	poll 180 "pod grow Ready" pod_ready grow || fail "pod grow did not become Ready"
	local before after
	before=$(kt exec grow -- df -B1 --output=size /data | tail -n 1 | tr -d ' ')
	echo "filesystem size before: $before"
	kt patch pvc grow --type merge -p '{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}'
	poll 180 "PVC grow to report 2Gi" sh -c \
		"[ \"\$('$LC' kubectl -n '$TEST_NS' get pvc grow -o jsonpath='{.status.capacity.storage}')\" = 2Gi ]" ||
		fail "PVC grow did not reach 2Gi: $(kt get pvc grow -o yaml | sed -n '/^status:/,$p')"
	poll 60 "the mounted filesystem to grow" sh -c \
		"[ \"\$('$LC' kubectl -n '$TEST_NS' exec grow -- df -B1 --output=size /data | tail -n 1 | tr -d ' ')\" -gt $before ]" ||
		fail "filesystem in the pod still $before bytes"
	after=$(kt exec grow -- df -B1 --output=size /data | tail -n 1 | tr -d ' ')
	echo "filesystem size after: $after (pod uid unchanged: $(kt get pod grow -o jsonpath='{.status.containerStatuses[0].restartCount}') restarts)"
	[ "$after" -gt $((before + 512 * 1024 * 1024)) ] || fail "filesystem grew only from $before to $after"
	kt exec grow -- untornctl verify /data --unit 8Ki
}

# 6. Deleting every workload and PVC deletes the volumes: no PV, no backing
# file and no loop device is left.
check_cleanup() {
	kt delete statefulsets,pods --all --wait=true --timeout=180s
	kt delete pvc --all --wait=true --timeout=180s
	poll 180 "every PV of $DRIVER to be deleted" sh -c \
		"[ -z \"\$('$LC' kubectl get pv -o jsonpath='{.items[?(@.spec.csi.driver==\"$DRIVER\")].metadata.name}')\" ]" ||
		fail "PVs left: $(k get pv -o wide)"
	local files loops
	files=$(find "$LOOP_DIR" -maxdepth 1 -type f -name '*.img' 2>/dev/null || true)
	loops=$("$LC" loops)
	echo "backing files left: ${files:-none}; loop devices left: ${loops:-none}"
	[ -z "$files" ] || fail "backing files left in $LOOP_DIR: $files"
	[ -z "$loops" ] || fail "loop devices left: $loops"
	# CSI staging and publish mounts (the driver pods' own token mounts stay)
	local csimnt='/var/lib/kubelet/(pods/[^ ]*/volumes/kubernetes.io~csi|plugins/kubernetes.io/csi)/'
	"$LC" exec sh -c "grep -cE '$csimnt' /proc/self/mounts || true" | grep -qx 0 ||
		fail "CSI volume mounts left in the kubelet's directory: $("$LC" exec grep -E "$csimnt" /proc/self/mounts)"
}
