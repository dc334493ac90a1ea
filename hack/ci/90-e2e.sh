#!/bin/bash
# The product the way a user meets it: a real single-node Kubernetes on this
# machine (hack/local-cluster.sh), untorn installed with its Helm chart, the
# example PostgreSQL and MariaDB StatefulSets with the shim, expansion and
# clean deletion (hack/e2e.sh, the checks in test/e2e, docs/e2e.md).
# Kubernetes, the sidecars and the base images are built once into the
# cache; the untorn image is rebuilt from this tree on every run. The
# cluster is always torn down.
set -euo pipefail
cd "$(dirname "$0")/../.."
# the checks' own logic (capacity, manifests, shim counters) without a cluster
(cd test/e2e && go test -count=1 ./...)
exec hack/e2e.sh
