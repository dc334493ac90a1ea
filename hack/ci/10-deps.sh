#!/usr/bin/env bash
# Stage: install the Debian packages the tests need.
set -euo pipefail
cd "$(dirname "$0")/../.."
hack/install-deps.sh
