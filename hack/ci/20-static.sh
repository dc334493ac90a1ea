#!/usr/bin/env bash
# Stage: formatting, go.mod tidiness, vet, shellcheck, build of every Go
# package and binary, shim builds.
set -euo pipefail
cd "$(dirname "$0")/../.."
unformatted=$(git ls-files -z '*.go' | xargs -0 gofmt -l)
if [ -n "$unformatted" ]; then
	echo "gofmt would change:"; echo "$unformatted"; exit 1
fi
if ! go mod tidy -diff; then
	echo "go.mod or go.sum is not tidy: run go mod tidy and commit" >&2
	exit 1
fi
go vet ./...
# the e2e checks: a module of their own (client-go stays out of go.mod)
(cd test/e2e && go mod tidy -diff && go vet ./...)
hack/ci/shellcheck.sh
go build ./...
make build
make shim
