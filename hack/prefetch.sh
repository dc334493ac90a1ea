#!/usr/bin/env bash
# Builds the cached pieces later test stages need, in the background, so
# their downloads and package installs overlap the earlier stages: the
# database chroots (go-test), the VM's kernel, QEMU and guest root (vm,
# crash) and the local cluster's Kubernetes, sidecars and images (e2e).
# Each build takes its own lock, so a stage that needs a piece waits for
# the build running here and then finds it cached; a build that fails here
# is done again by the stage, which reports the error. Started by
# hack/ci/10-deps.sh; its log is $UNTORN_CACHE/logs/prefetch.log.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
export UNTORN_CACHE=${UNTORN_CACHE:-/var/cache/untorn}
export PATH=/usr/local/go/bin:$PATH
t0=$SECONDS
step() {
	local t=$SECONDS rc=0
	"$@" || rc=$?
	echo "prefetch: $* exited $rc after $((SECONDS - t))s"
}
step hack/dbroot.sh trixie &
step hack/dbroot.sh sid &
step hack/vm.sh build &
# the Go builds of the cluster use the CPUs: at low priority, so the test
# stages running meanwhile keep them first
step nice -n 10 hack/local-cluster.sh build &
wait
echo "prefetch: done in $((SECONDS - t0))s"
