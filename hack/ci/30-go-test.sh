#!/usr/bin/env bash
# Stage: every Go test as root (unit tests, root integration tests on real
# loop devices, csi-sanity, the shim's database tests). A skipped test fails
# the stage: as root nothing may skip.
set -euo pipefail
cd "$(dirname "$0")/../.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
go test -count=1 -timeout 40m -v ./... 2>&1 | tee "$log" | grep -E --line-buffered '^(ok|FAIL|--- FAIL|--- SKIP|panic:)'
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" -ne 0 ]; then
	echo "go test failed; failing tests with output:"
	grep -E -B2 -A40 -- '--- FAIL' "$log" | head -400
	exit 1
fi
if grep -E -- '--- SKIP' "$log"; then
	echo "go test: tests were skipped; as root every test must run" >&2
	grep -E -A3 -- '--- SKIP' "$log" >&2
	exit 1
fi
echo "go test: $(grep -c -- '--- PASS' "$log") tests passed, none skipped"
