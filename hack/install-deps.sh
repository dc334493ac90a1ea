#!/usr/bin/env bash
# Installs the Debian packages every part of untorn's tests and quick start
# needs: the union of the package lists in hack/deps/*.txt. Idempotent: only
# missing packages are installed, and apt's index is refreshed at most once
# a day.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: run as root (it installs Debian packages)" >&2
	exit 2
fi

mapfile -t wanted < <(cat hack/deps/*.txt 2>/dev/null | sed 's/#.*//' | tr -s ' \t' '\n' | grep -v '^$' | sort -u)
missing=()
for p in "${wanted[@]}"; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	echo "install-deps: all ${#wanted[@]} packages present"
	exit 0
fi
stamp=/var/lib/apt/periodic/untorn-update-stamp
if [ -z "$(find "$stamp" -mmin -1440 2>/dev/null)" ]; then
	apt-get update -q
	mkdir -p "$(dirname "$stamp")" && touch "$stamp"
fi
echo "install-deps: installing ${missing[*]}"
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
