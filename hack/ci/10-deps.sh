#!/usr/bin/env bash
# Stage: install the Debian packages the tests need, then start building
# the cached pieces of the later stages in the background (hack/prefetch.sh:
# database chroots, VM, local cluster), so that on a cold machine their
# downloads overlap the earlier stages. Each stage still builds what it
# needs itself and waits for a build in progress.
set -euo pipefail
cd "$(dirname "$0")/../.."
hack/install-deps.sh
export UNTORN_CACHE=${UNTORN_CACHE:-/var/cache/untorn}
mkdir -p "$UNTORN_CACHE/logs"
setsid nohup hack/prefetch.sh > "$UNTORN_CACHE/logs/prefetch.log" 2>&1 < /dev/null &
echo "deps: cached builds started in the background (log: $UNTORN_CACHE/logs/prefetch.log)"
