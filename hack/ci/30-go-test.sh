#!/usr/bin/env bash
# Stage: every Go test as root, under the race detector (unit tests, root
# integration tests on real loop devices, csi-sanity, the shim's database
# tests, the harness tests under hack/). A skipped test fails the stage: as
# root nothing may skip. A data race fails the test that hit it.
set -euo pipefail
cd "$(dirname "$0")/../.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
# the race detector needs cgo
CGO_ENABLED=1 go test -race -count=1 -timeout 60m -v ./... 2>&1 | tee "$log" |
	grep -E --line-buffered '^(ok|FAIL|--- FAIL|--- SKIP|panic:|WARNING: DATA RACE)'
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" -ne 0 ]; then
	echo "go test failed; failing tests with output:"
	grep -E -B2 -A40 -- '--- FAIL' "$log" | head -400
	if grep -q 'WARNING: DATA RACE' "$log"; then
		echo "data races:"
		grep -E -A60 -- 'WARNING: DATA RACE' "$log" | head -400
	fi
	exit 1
fi
if grep -E -- '--- SKIP' "$log"; then
	echo "go test: tests were skipped; as root every test must run" >&2
	grep -E -A3 -- '--- SKIP' "$log" >&2
	exit 1
fi
echo "go test: $(grep -c -- '--- PASS' "$log") tests passed, none skipped, no data race"
