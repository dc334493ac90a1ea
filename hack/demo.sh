#!/usr/bin/env bash
# The quick start: installs what is needed, then walks through untorn on
# loop devices — probe, plan and verify volumes with untornctl; run the CSI
# driver and take one volume through its life; run PostgreSQL under the
# writethrough shim. Everything it creates is removed again.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib/common.sh
hack/install-deps.sh
for part in atomic driver postgres; do
	script=hack/demo/$part.sh
	[ -x "$script" ] || continue
	echo
	echo "##### quick start: $part"
	"$script"
done
