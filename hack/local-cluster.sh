#!/bin/bash
# A real single-node Kubernetes on this machine, isolated in its own mount
# and network namespaces: etcd, kube-apiserver, controller-manager,
# scheduler, kubelet, kube-proxy, containerd + runc and bridge CNI.
#
#   hack/local-cluster.sh up        build what is missing (cached), start, wait for the node
#   hack/local-cluster.sh down      stop everything; no process, mount, cgroup or loop device left
#   hack/local-cluster.sh status    exit 0 when the cluster answers
#   hack/local-cluster.sh build     only the cached builds (kubernetes, sidecars, helm, images)
#   hack/local-cluster.sh images    rebuild and import the untorn image
#   hack/local-cluster.sh kubectl ARGS...   kubectl against the cluster
#   hack/local-cluster.sh exec CMD...       run CMD in the cluster's namespaces (KUBECONFIG set)
#   hack/local-cluster.sh logs      print the tail of every component log
#   hack/local-cluster.sh loops     list loop devices backed by files of the cluster
#   hack/local-cluster.sh cgroup    print the cgroup under which the cluster's pods run
#
# Environment: UNTORN_CACHE (builds, default /var/cache/untorn), CLUSTER_DIR
# (state, default $UNTORN_CACHE/cluster), K8S_VERSION, NODE_NAME, NODE_IP.
#
# The host may be a Kubernetes node itself: "down" touches only what this
# cluster started. Its processes are the ones in its mount namespace
# (recognised by its /var/lib bind mount of $CLUSTER_DIR/varlib) or below its
# own cgroup root (the kubelet's cgroupRoot, one per CLUSTER_DIR); its loop
# devices are the ones backed by files under $CLUSTER_DIR/varlib; its host
# mounts are the ones under $CLUSTER_DIR. Another kubelet's /kubepods, loop
# devices and mounts are never touched.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/cluster/lib.sh"
export PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/16
MARKER=$CLUSTER_DIR/.untorn-local-cluster
COMPONENTS=(etcd containerd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

[ "$(id -u)" = 0 ] || die "run as root (namespaces, mounts, cgroups)"
case $CLUSTER_DIR in /* ) ;; *) die "CLUSTER_DIR must be absolute: $CLUSTER_DIR" ;; esac
[ "$CLUSTER_DIR" != / ] || die "CLUSTER_DIR must not be /"
case $CLUSTER_DIR in *[[:space:]]*) die "CLUSTER_DIR must not contain white space: $CLUSTER_DIR" ;; esac
# The cgroup (in every hierarchy) under which the kubelet of this cluster
# creates its kubepods tree.
CGROUP_ROOT=untorn-$(printf '%s' "$CLUSTER_DIR" | sha256sum | cut -c1-12)

# varlib_mark: "MAJ:MIN ROOT" of the cluster's /var/lib bind mount as
# /proc/PID/mountinfo shows it in the cluster's mount namespace; empty when
# the state directory is gone.
varlib_mark() {
	local d=$CLUSTER_DIR/varlib t r m rel root
	[ -d "$d" ] || return 0
	t=$(findmnt -rn -o TARGET -T "$d") && r=$(findmnt -rn -o FSROOT -T "$d") &&
		m=$(findmnt -rn -o MAJ:MIN -T "$d") || return 0
	rel=${d#"$t"}
	[ "$t" != / ] || rel=$d
	root=${r%/}$rel
	echo "$m ${root:-/}"
}

# has_mark MARK PID: PID lives in the mount namespace that has MARK on /var/lib
has_mark() {
	[ -n "$1" ] && awk -v m="$1" '$3 " " $4 == m && $5 == "/var/lib" { f = 1 } END { exit !f }' \
		"/proc/$2/mountinfo" 2> /dev/null
}

# ours PID: PID belongs to this cluster (its mount namespace or cgroup root);
# a recorded PID that the kernel gave to another process since is not ours
ours() {
	[ -n "$1" ] && [ -d "/proc/$1" ] || return 1
	has_mark "$(varlib_mark)" "$1" || grep -q -E ":/$CGROUP_ROOT(/|\$)" "/proc/$1/cgroup" 2> /dev/null
}

# cgroup_mounts: the mount point of every cgroup hierarchy (v1 and v2)
cgroup_mounts() { findmnt -rn -t cgroup,cgroup2 -o TARGET; }

# cgroup_create: the cluster's cgroup root in every hierarchy (the kubelet
# requires it to exist)
cgroup_create() {
	local h d f
	for h in $(cgroup_mounts); do
		d=$h/$CGROUP_ROOT
		mkdir -p "$d"
		# cgroup v1 cpuset: a new cgroup starts with no CPUs and no memory nodes
		for f in cpuset.cpus cpuset.mems; do
			if [ -e "$d/$f" ] && [ -z "$(cat "$d/$f")" ]; then cat "$h/$f" > "$d/$f"; fi
		done
		# cgroup v2: the kubelet wants the controllers enabled in its root
		if [ -e "$h/cgroup.subtree_control" ] && [ -e "$h/cgroup.controllers" ]; then
			for f in cpu cpuset memory hugetlb pids; do
				grep -qw "$f" "$h/cgroup.controllers" || continue
				grep -qw "$f" "$h/cgroup.subtree_control" || echo "+$f" > "$h/cgroup.subtree_control" 2> /dev/null || true
			done
		fi
	done
}

# cgroup_remove: the cluster's cgroup root in every hierarchy, bottom up (a
# cgroup that still holds a process stays)
cgroup_remove() {
	local h
	for h in $(cgroup_mounts); do
		if [ -d "$h/$CGROUP_ROOT" ]; then find "$h/$CGROUP_ROOT" -depth -type d -exec rmdir {} \; 2> /dev/null || true; fi
	done
}

nspid() { cat "$CLUSTER_DIR/ns.pid" 2> /dev/null || true; }
ns_alive() {
	local p
	p=$(nspid)
	[ -n "$p" ] && [ "$(cat "/proc/$p/comm" 2> /dev/null)" = sleep ] && has_mark "$(varlib_mark)" "$p"
}
# in_ns CMD...: run CMD in the cluster's namespaces with its kubeconfig
in_ns() {
	nsenter -t "$(nspid)" -m -n -- env KUBECONFIG="$CLUSTER_DIR/pki/admin.kubeconfig" \
		HOME="$CLUSTER_DIR/home" PATH="$K8S_BIN:$PATH" "$@"
}
kc() { in_ns "$K8S_BIN/kubectl" "$@"; }

# start NAME CMD...: start a daemon in the namespaces, record its PID
start() {
	local name=$1
	shift
	setsid nsenter -t "$(nspid)" -m -n -- "$@" >> "$CLUSTER_DIR/logs/$name.log" 2>&1 < /dev/null &
	echo $! > "$CLUSTER_DIR/pids/$name"
}

render() { # template output
	sed -e "s|@CLUSTER_DIR@|$CLUSTER_DIR|g" -e "s|@NODE_NAME@|$NODE_NAME|g" -e "s|@NODE_IP@|$NODE_IP|g" \
		-e "s|@POD_CIDR@|$POD_CIDR|g" -e "s|@PAUSE_TAG@|$PAUSE_TAG|g" -e "s|@CGROUP_ROOT@|$CGROUP_ROOT|g" "$1" > "$2"
}

cmd_build() {
	local t0=$SECONDS
	mkdir -p "$UNTORN_CACHE/logs"
	# One build at a time: CI starts one in the background early
	# (hack/prefetch.sh) and `up` waits for it, then finds everything cached.
	# The lock is released before `up` starts the cluster's daemons.
	exec 8>"$UNTORN_CACHE/.cluster-build.lock"
	flock 8
	# the root filesystems mostly wait for the mirror and the disk: build
	# them while the Go builds use the CPUs
	# (each root filesystem has its own directory and package cache, so the
	# three debootstraps run side by side)
	local img pids=() names=() with
	for img in base postgres mariadb; do
		with=()
		[ "$img" != base ] || with=(pause)
		"$HERE/cluster/build-images.sh" "${with[@]}" "$img" > "$UNTORN_CACHE/logs/build-$img.log" 2>&1 &
		pids+=("$!") names+=("$img")
	done
	"$HERE/cluster/build-k8s.sh"
	"$HERE/cluster/build-sidecars.sh"
	local helm
	helm=$("$HERE/lib/helm.sh")
	local i failed=0
	for i in "${!pids[@]}"; do
		if ! wait "${pids[$i]}"; then
			tail -30 "$UNTORN_CACHE/logs/build-${names[$i]}.log" >&2
			log "image build ${names[$i]} failed (log: $UNTORN_CACHE/logs/build-${names[$i]}.log)"
			failed=1
		fi
	done
	[ $failed = 0 ] || die "image builds failed"
	"$HERE/cluster/build-images.sh" sidecars
	exec 8>&-
	log "cached builds ready in $((SECONDS - t0))s (helm: $helm)"
}

import_image() { # archive
	in_ns ctr -n k8s.io images import "$1" > /dev/null ||
		die "import of $1 into containerd failed"
}

cmd_images() {
	ns_alive || die "the cluster is not up"
	"$HERE/cluster/build-images.sh" untorn
	import_image "$IMAGE_DIR/untorn.tar"
	log "untorn image imported"
}

cmd_status() {
	if ! ns_alive; then
		echo "cluster: down"
		return 1
	fi
	local c p rc=0
	for c in "${COMPONENTS[@]}"; do
		p=$(cat "$CLUSTER_DIR/pids/$c" 2> /dev/null || true)
		if [ -n "$p" ] && kill -0 "$p" 2> /dev/null; then
			echo "$c: running (pid $p)"
		else
			echo "$c: NOT running"
			rc=1
		fi
	done
	if kc get --raw /readyz > /dev/null 2>&1; then
		kc get nodes --no-headers 2> /dev/null | sed 's/^/node: /'
	else
		echo "apiserver: not ready"
		rc=1
	fi
	return $rc
}

cmd_up() {
	local t0=$SECONDS
	if ns_alive && cmd_status > /dev/null 2>&1 &&
		kc wait --for=condition=Ready "node/$NODE_NAME" --timeout=5s > /dev/null 2>&1; then
		log "cluster already up"
		return 0
	fi
	# a half-started or crashed cluster: clean up first
	if [ -e "$MARKER" ]; then
		log "cleaning up a previous cluster"
		cmd_down
	fi
	cmd_build
	local t1=$SECONDS
	mkdir -p "$CLUSTER_DIR"
	touch "$MARKER"
	mkdir -p "$CLUSTER_DIR"/{varlib,varlog,logs,pids,conf/cni,home,etcd}
	"$HERE/cluster/pki.sh" "$CLUSTER_DIR/pki" "$NODE_NAME" "$NODE_IP"
	render "$HERE/cluster/conf/containerd.toml" "$CLUSTER_DIR/conf/containerd.toml"
	render "$HERE/cluster/conf/kubelet.yaml" "$CLUSTER_DIR/conf/kubelet.yaml"
	render "$HERE/cluster/conf/kube-proxy.yaml" "$CLUSTER_DIR/conf/kube-proxy.yaml"
	render "$HERE/cluster/conf/10-bridge.conflist" "$CLUSTER_DIR/conf/cni/10-bridge.conflist"
	cp "$HERE/cluster/conf/resolv.conf" "$CLUSTER_DIR/conf/resolv.conf"

	rm -f "$CLUSTER_DIR/ns.pid"
	setsid unshare --mount --net --propagation private --fork \
		"$HERE/cluster/ns-init.sh" "$CLUSTER_DIR" "$NODE_IP" > "$CLUSTER_DIR/logs/ns.log" 2>&1 < /dev/null &
	echo $! > "$CLUSTER_DIR/pids/unshare"
	poll 20 "the namespace holder" ns_alive || { cat "$CLUSTER_DIR/logs/ns.log" >&2; die "namespace setup failed"; }

	local K=$CLUSTER_DIR/pki B=$K8S_BIN
	start etcd etcd --name untorn --data-dir "$CLUSTER_DIR/etcd" \
		--listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
		--listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
		--initial-cluster untorn=http://127.0.0.1:2380 --quota-backend-bytes=2147483648
	start containerd containerd --config "$CLUSTER_DIR/conf/containerd.toml"
	poll 60 "containerd" in_ns ctr version || die "containerd did not start (log: $CLUSTER_DIR/logs/containerd.log)"
	local img
	for img in pause csi-provisioner csi-resizer postgres postgres15 mariadb; do import_image "$IMAGE_DIR/$img.tar"; done
	log "images imported"

	start kube-apiserver "$B/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
		--bind-address=0.0.0.0 --advertise-address="$NODE_IP" --secure-port=6443 \
		--service-cluster-ip-range="$SERVICE_CIDR" --client-ca-file="$K/ca.crt" \
		--tls-cert-file="$K/apiserver.crt" --tls-private-key-file="$K/apiserver.key" \
		--service-account-key-file="$K/sa.pub" --service-account-signing-key-file="$K/sa.key" \
		--service-account-issuer=https://kubernetes.default.svc.cluster.local \
		--authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
		--allow-privileged=true --enable-aggregator-routing=true \
		--kubelet-client-certificate="$K/apiserver-kubelet-client.crt" \
		--kubelet-client-key="$K/apiserver-kubelet-client.key" \
		--kubelet-preferred-address-types=InternalIP,Hostname
	poll 120 "kube-apiserver" kc get --raw /readyz || die "kube-apiserver not ready (log: $CLUSTER_DIR/logs/kube-apiserver.log)"
	log "apiserver ready"
	start kube-controller-manager "$B/kube-controller-manager" --kubeconfig="$K/controller-manager.kubeconfig" \
		--authentication-kubeconfig="$K/controller-manager.kubeconfig" \
		--authorization-kubeconfig="$K/controller-manager.kubeconfig" \
		--service-account-private-key-file="$K/sa.key" --root-ca-file="$K/ca.crt" \
		--cluster-signing-cert-file="$K/ca.crt" --cluster-signing-key-file="$K/ca.key" \
		--use-service-account-credentials=true --leader-elect=false --allocate-node-cidrs=false
	start kube-scheduler "$B/kube-scheduler" --kubeconfig="$K/scheduler.kubeconfig" \
		--authentication-kubeconfig="$K/scheduler.kubeconfig" --authorization-kubeconfig="$K/scheduler.kubeconfig" \
		--leader-elect=false
	cgroup_create
	start kubelet "$B/kubelet" --config="$CLUSTER_DIR/conf/kubelet.yaml" --kubeconfig="$K/kubelet.kubeconfig" \
		--node-ip="$NODE_IP" --hostname-override="$NODE_NAME" --v=2
	start kube-proxy "$B/kube-proxy" --config="$CLUSTER_DIR/conf/kube-proxy.yaml"
	poll 120 "the default service account" kc get serviceaccount default || die "controller-manager not working"
	poll 180 "node $NODE_NAME" kc wait --for=condition=Ready "node/$NODE_NAME" --timeout=5s ||
		die "node not Ready (log: $CLUSTER_DIR/logs/kubelet.log)"
	log "cluster up: node $NODE_NAME Ready in $((SECONDS - t1))s (total $((SECONDS - t0))s)"
}

# running NAME: the recorded daemon is alive
running() {
	local p
	p=$(cat "$CLUSTER_DIR/pids/$1" 2> /dev/null) && ours "$p"
}

# stop NAME: SIGTERM the recorded daemon, SIGKILL after 15 s
stop() {
	local f=$CLUSTER_DIR/pids/$1 p i
	[ -f "$f" ] || return 0
	p=$(cat "$f")
	if ours "$p" && kill "$p" 2> /dev/null; then
		for i in $(seq 1 30); do
			ours "$p" || break
			sleep 0.5
		done
		if ours "$p"; then kill -9 "$p" 2> /dev/null || true; fi
	fi
	rm -f "$f"
}

# cluster_pids: processes that belong to the cluster: in its mount namespace
# (the daemons, the containerd shims) or below its cgroup root (the pods)
cluster_pids() {
	local mark self p ns rc
	mark=$(varlib_mark)
	self=$(readlink /proc/self/ns/mnt)
	local -A seen=()
	{
		if [ -n "$mark" ]; then
			for p in /proc/[0-9]*; do
				ns=$(readlink "$p/ns/mnt" 2> /dev/null) || continue
				[ "$ns" != "$self" ] || continue
				if [ -z "${seen[$ns]:-}" ]; then
					rc=0
					has_mark "$mark" "${p#/proc/}" || rc=$?
					# a process that went away meanwhile says nothing of its namespace
					case $rc in 0) seen[$ns]=yes ;; 1) seen[$ns]=no ;; esac
				fi
				[ "${seen[$ns]:-}" != yes ] || echo "${p#/proc/}"
			done
		fi
		grep -l -E ":/$CGROUP_ROOT(/|\$)" /proc/[0-9]*/cgroup 2> /dev/null | cut -d/ -f3
	} | { grep -vx -e "$$" -e "$BASHPID" || true; } | sort -un || true
}

# loop devices whose backing file lies under CLUSTER_DIR (matched by inode,
# which works whatever namespace attached them)
cluster_loops() {
	[ -d "$CLUSTER_DIR/varlib" ] || return 0
	local files
	files=$(find "$CLUSTER_DIR/varlib" -xdev -type f -size +0 -printf '%i %D\n' 2> /dev/null | sort -u)
	[ -n "$files" ] || return 0
	local name ino majmin
	losetup -l -n -O NAME,BACK-INO,BACK-MAJ:MIN 2> /dev/null | while read -r name ino majmin; do
		[ -n "$ino" ] || continue
		local maj=${majmin%%:*} min=${majmin##*:}
		local dev=$(((maj << 8) | (min & 0xff) | ((min & ~0xff) << 12)))
		if grep -qx "$ino $dev" <<< "$files"; then echo "$name"; fi
	done
}

cmd_down() {
	[ -e "$MARKER" ] || [ -e "$CLUSTER_DIR/ns.pid" ] || { log "no cluster in $CLUSTER_DIR"; return 0; }
	local t0=$SECONDS p
	if ns_alive; then
		# let the kubelet tear pods down while everything still runs
		if kc get --raw /readyz > /dev/null 2>&1; then
			kc delete daemonsets,deployments,statefulsets,replicasets,jobs --all -A --wait=false > /dev/null 2>&1 || true
			in_ns timeout 60 "$K8S_BIN/kubectl" delete pods --all -A --grace-period=5 --wait=true > /dev/null 2>&1 || true
		fi
	fi
	for p in kube-proxy kube-scheduler kube-controller-manager kubelet; do stop "$p"; done
	if ns_alive && running containerd; then
		local t
		for t in $(in_ns timeout 30 ctr -n k8s.io tasks ls -q 2> /dev/null); do
			in_ns timeout 30 ctr -n k8s.io tasks kill -s SIGKILL "$t" > /dev/null 2>&1 || true
		done
	fi
	local dev m
	dev=$(cluster_loops)
	if ns_alive && [ -n "$dev" ]; then
		# the cluster's loop devices mounted inside: unmount while their
		# mounts still resolve, so that they can be detached
		awk -v l=" ${dev//$'\n'/ } " 'index(l, " " $1 " ") { print $2 }' "/proc/$(nspid)/mounts" | sort -r |
			while read -r m; do in_ns umount -l "$m" 2> /dev/null || true; done
	fi
	for p in containerd kube-apiserver etcd; do stop "$p"; done
	# whatever is left of the cluster (shims, containers): SIGKILL by PID
	local left
	for _ in 1 2 3; do
		left=$(cluster_pids | grep -vx "$(nspid)" || true)
		[ -n "$left" ] || break
		# shellcheck disable=SC2086 # one PID a word
		kill -9 $left 2> /dev/null || true
		sleep 1
	done
	# the namespace holder: its end releases every mount of the namespace
	if ns_alive; then kill "$(nspid)" 2> /dev/null || true; fi
	stop unshare
	for _ in $(seq 1 20); do
		ns_alive || break
		sleep 0.5
	done
	rm -f "$CLUSTER_DIR/ns.pid"

	local d
	for _ in $(seq 1 10); do
		dev=$(cluster_loops)
		[ -n "$dev" ] || break
		for d in $dev; do losetup -d "$d" 2> /dev/null || true; done
		sleep 1
	done
	# the pod cgroups (cgroupfs is not namespaced): only this cluster's root
	cgroup_remove
	local problems=()
	left=$(cluster_pids)
	[ -z "$left" ] || problems+=("processes left: $left")
	dev=$(cluster_loops)
	[ -z "$dev" ] || problems+=("loop devices left: $dev")
	local cg
	cg=$(for m in $(cgroup_mounts); do if [ -d "$m/$CGROUP_ROOT" ]; then echo "$m/$CGROUP_ROOT"; fi; done)
	[ -z "$cg" ] || problems+=("cgroups left: $cg")
	local mnt
	mnt=$(findmnt -rn -o TARGET | awk -v d="$CLUSTER_DIR" '$0 == d || index($0, d "/") == 1')
	[ -z "$mnt" ] || problems+=("host mounts left: $mnt")
	if [ ${#problems[@]} -gt 0 ]; then
		printf '%s\n' "${problems[@]}" >&2
		die "teardown incomplete; state kept in $CLUSTER_DIR"
	fi
	# state of this run (logs are kept in logs.prev for a post-mortem)
	rm -rf "$CLUSTER_DIR/logs.prev"
	if [ -d "$CLUSTER_DIR/logs" ]; then mv "$CLUSTER_DIR/logs" "$CLUSTER_DIR/logs.prev"; fi
	rm -rf "${CLUSTER_DIR:?}"/{varlib,varlog,pids,conf,home,etcd,kubecache} "$MARKER"
	log "cluster down in $((SECONDS - t0))s: no process, mount, loop device or cgroup left"
}

cmd_logs() {
	local f
	for f in "$CLUSTER_DIR"/logs/*.log; do
		[ -f "$f" ] || continue
		echo "----- $f (last ${LOG_LINES:-40} lines)"
		tail -n "${LOG_LINES:-40}" "$f"
	done
}

case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
build) cmd_build ;;
images) cmd_images ;;
kubectl)
	shift
	ns_alive || die "the cluster is not up"
	kc "$@"
	;;
exec)
	shift
	ns_alive || die "the cluster is not up"
	in_ns "$@"
	;;
logs) cmd_logs ;;
loops) cluster_loops ;;
cgroup) echo "$CGROUP_ROOT" ;;
*)
	sed -n '2,/^set -e/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
	exit 2
	;;
esac
