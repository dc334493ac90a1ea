#!/usr/bin/env bash
# Runs shellcheck over every shell script of the repository: the *.sh files
# and the files without an extension whose first line is a sh or bash shebang.
# A finding is fixed, or disabled on its line with the reason
# (# shellcheck disable=SCxxxx # why).
#
#   hack/ci/shellcheck.sh            every script but the excluded ones
#   hack/ci/shellcheck.sh FILE...    only these
set -euo pipefail
cd "$(dirname "$0")/../.."

# Scripts not checked; each entry is a pattern of paths (case syntax).
# .ci/run is the CI system's own runner, not this repository's code.
EXCLUDED=(
	'.ci/run'
)

# scripts: the tracked shell scripts, one a line
scripts() {
	local f
	git ls-files | while IFS= read -r f; do
		[ -f "$f" ] || continue
		case $f in
		*.sh) echo "$f" ;;
		*/*.* | *.*) ;;
		*) if head -n 1 "$f" | grep -qE '^#!.*[/ ](ba)?sh( |$)'; then echo "$f"; fi ;;
		esac
	done
}

excluded() {
	local p
	for p in "${EXCLUDED[@]}"; do
		# shellcheck disable=SC2254 # p is a pattern
		case $1 in $p) return 0 ;; esac
	done
	return 1
}

command -v shellcheck > /dev/null || { echo "shellcheck is not installed (hack/deps/static.txt)" >&2; exit 2; }
files=()
if [ $# -gt 0 ]; then
	files=("$@")
else
	while IFS= read -r f; do
		if excluded "$f"; then continue; fi
		files+=("$f")
	done < <(scripts)
fi
# -x -P SCRIPTDIR: follow sourced files, found relative to the script
shellcheck -x -P SCRIPTDIR "${files[@]}"
echo "shellcheck: ${#files[@]} scripts clean"
