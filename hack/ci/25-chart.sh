#!/usr/bin/env bash
# Stage: the Helm chart, the rendered manifests and the image build steps.
#   helm lint (default values and every variant the docs describe),
#   helm template, deploy/ drift, hack/build-image.sh into a temporary dir.
# The Go test of the chart (charts/untorn) runs in the go-test stage.
set -euo pipefail
cd "$(dirname "$0")/../.."
HELM=$(hack/lib/helm.sh)
export HELM
echo "helm: $("$HELM" version --short)"

chart=charts/untorn
variants=(
	""
	"--set registrar.mode=builtin --set livenessProbe.enabled=false"
	"--set node.backend=loop"
	"--set webhook.certManager.enabled=true --set webhook.failurePolicy=Ignore"
	"--set webhook.enabled=false"
)
for v in "${variants[@]}"; do
	# shellcheck disable=SC2086
	"$HELM" lint --strict "$chart" $v
	# shellcheck disable=SC2086
	"$HELM" template untorn "$chart" --namespace untorn-system $v > /dev/null
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
hack/update-manifests.sh "$tmp/deploy"
for f in "$tmp"/deploy/*.yaml; do
	if ! diff -u "deploy/$(basename "$f")" "$f"; then
		echo "deploy/$(basename "$f") differs from the chart: run hack/update-manifests.sh and commit" >&2
		exit 1
	fi
done
echo "deploy/ matches the chart"

hack/build-image.sh "$tmp/rootfs"
find "$tmp/rootfs" -type f | sort
