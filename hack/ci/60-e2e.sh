#!/bin/bash
# End-to-end stage: a real single-node Kubernetes on this machine, untorn
# installed with its Helm chart, the checks of hack/e2e.sh. The first run on
# a machine builds Kubernetes, helm, the CSI sidecars and the images into
# $UNTORN_CACHE (about half an hour on 2 cores); later runs reuse them.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec hack/e2e.sh
