#!/usr/bin/env bash
# Stage: formatting, vet, build of every Go package and binary, shim builds.
set -euo pipefail
cd "$(dirname "$0")/../.."
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change:"; echo "$unformatted"; exit 1
fi
go vet ./...
go build ./...
make build
make shim
