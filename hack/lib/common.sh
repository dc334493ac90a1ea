# shellcheck shell=bash
# Sourced by the quick-start scripts (hack/demo.sh, hack/demo/*.sh) after
# they cd to the repository root: puts Go on PATH and stops unless root.
export PATH=/usr/local/go/bin:$PATH
if [ "$(id -u)" -ne 0 ]; then
	echo "demo: run as root (loop devices, mkfs, mount)" >&2
	exit 2
fi
