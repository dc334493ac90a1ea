#!/usr/bin/env bash
# Runs every test stage of untorn (hack/ci/NN-*.sh, in order), printing each
# stage's duration, and stops at the first failure. With arguments, runs only
# the stages whose names contain one of them: hack/test.sh go-test e2e
set -euo pipefail
cd "$(dirname "$0")/.."
export UNTORN_CACHE=${UNTORN_CACHE:-/var/cache/untorn}
export PATH=/usr/local/go/bin:$PATH

if [ "$(id -u)" -ne 0 ]; then
	echo "test: run as root (the tests use loop devices, mkfs, mount and a local cluster)" >&2
	exit 2
fi

stages=()
for s in hack/ci/[0-9][0-9]-*.sh; do
	if [ $# -eq 0 ]; then stages+=("$s"); continue; fi
	for want in "$@"; do
		case "$s" in *"$want"*) stages+=("$s") ;; esac
	done
done
[ ${#stages[@]} -gt 0 ] || { echo "test: no stage matches: $*" >&2; exit 2; }

summary=()
start_all=$(date +%s)
for s in "${stages[@]}"; do
	name=$(basename "$s" .sh)
	echo "=== stage $name"
	t0=$(date +%s)
	rc=0
	"$s" || rc=$?
	if [ $rc -ne 0 ]; then
		echo "=== stage $name FAILED (exit $rc) after $(($(date +%s) - t0))s"
		printf '%s\n' "${summary[@]}"
		exit 1
	fi
	d=$(($(date +%s) - t0))
	summary+=("stage $name: ok in ${d}s")
	echo "=== stage $name ok in ${d}s"
done
echo "=== all stages passed in $(($(date +%s) - start_all))s"
printf '%s\n' "${summary[@]}"
