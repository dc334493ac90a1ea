#!/usr/bin/env bash
# Stage: a short run of every Go fuzz target (FUZZTIME each, default 10000
# inputs), found with `go test -list '^Fuzz'`. Prints each target and its time; a
# failing target fails the stage after all have run (the failing input is
# written under the package's testdata/fuzz/ by go test).
set -euo pipefail
cd "$(dirname "$0")/../.."
# A count, not a duration: with a duration, Go 1.26's fuzz coordinator can
# report its own deadline as a failure ("context deadline exceeded", no
# failing input; go.dev/issue/75804) when the machine is busy.
fuzztime=${FUZZTIME:-10000x}

# go test -list prints a package's matching names, then "ok <package> ...".
list=$(go test -list '^Fuzz' ./... 2>&1) || {
	echo "fuzz: go test -list failed:"
	echo "$list"
	exit 1
}
targets=()
pending=()
while read -r first second _; do
	case "$first" in
	Fuzz*) pending+=("$first") ;;
	ok)
		for name in "${pending[@]}"; do targets+=("$second $name"); done
		pending=()
		;;
	"?" | "") pending=() ;;
	*)
		echo "fuzz: unexpected output from go test -list: $first $second" >&2
		exit 1
		;;
	esac
done <<<"$list"
if [ ${#targets[@]} -eq 0 ]; then
	echo "fuzz: no fuzz targets found" >&2
	exit 1
fi

failed=()
for t in "${targets[@]}"; do
	pkg=${t% *} name=${t#* }
	t0=$(date +%s)
	rc=0
	out=$(go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg" 2>&1) || rc=$?
	d=$(($(date +%s) - t0))
	if [ $rc -ne 0 ]; then
		echo "fuzz: $pkg $name FAILED after ${d}s"
		echo "$out" | tail -40
		failed+=("$pkg $name")
	else
		echo "fuzz: $pkg $name ok in ${d}s"
	fi
done
if [ ${#failed[@]} -ne 0 ]; then
	echo "fuzz: ${#failed[@]} of ${#targets[@]} targets failed:"
	printf '  %s\n' "${failed[@]}"
	exit 1
fi
echo "fuzz: ${#targets[@]} targets passed"
