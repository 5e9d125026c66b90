#!/usr/bin/env bash
# Runs every fuzz target in the module, one after another, for SECONDS
# each (default 10), and prints a table: package, target, execs, new
# interesting inputs, result. Exits non-zero if any target fails.
#
#   scripts/fuzz.sh [SECONDS]
#
# Environment: GO (default go); FUZZ_PARALLEL, workers per target (default:
# go's, one per CPU); FUZZ_MATCH, an extended regexp on "package target"
# to run only some targets; FUZZ_MINIMIZETIME, go's -fuzzminimizetime
# (default 1000x, a thousand runs, rather than go's 60s: go minimizes every
# new interesting input as well as every failure, those runs are not
# counted in execs, and on a target whose runs are slow, like FuzzDesired,
# minimizing would eat most of a short budget).
#
# A failing input is written by go under the package's
# testdata/fuzz/{Target}/: commit it with the fix, so that `go test` runs it
# from then on. New interesting inputs stay in go's cache
# ($(go env GOCACHE)/fuzz), not in the tree.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
secs=${1:-10}
secs=${secs%s}
if ! [[ $secs =~ ^[0-9]+$ ]] || [ "$secs" -eq 0 ]; then
	echo "usage: $0 [SECONDS]   (a whole number of seconds per target, e.g. 60)" >&2
	exit 2
fi

mod=$("$GO" list -m)
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

# `go test -list` prints a package's matching names, then its "ok" line.
if ! "$GO" test -list '^Fuzz' ./... >"$logs/list" 2>&1; then
	cat "$logs/list" >&2
	echo "fuzz.sh: cannot list the fuzz targets (the tests do not build?)" >&2
	exit 1
fi
targets=()
names=()
while IFS= read -r line; do
	case $line in
	Fuzz*) names+=("$line") ;;
	ok*)
		pkg=$(awk '{print $2}' <<<"$line")
		for n in "${names[@]}"; do
			if [ -z "${FUZZ_MATCH:-}" ] || [[ "$pkg $n" =~ $FUZZ_MATCH ]]; then
				targets+=("$pkg $n")
			fi
		done
		names=()
		;;
	esac
done <"$logs/list"
if [ ${#targets[@]} -eq 0 ]; then
	echo "fuzz.sh: no fuzz targets${FUZZ_MATCH:+ match $FUZZ_MATCH}" >&2
	exit 1
fi

echo "fuzzing ${#targets[@]} targets for ${secs}s each"
rows=()
crashers=()
failed=0
i=0
for t in "${targets[@]}"; do
	pkg=${t% *}
	name=${t#* }
	rel=${pkg#"$mod"}
	rel=${rel#/}
	i=$((i + 1))
	log="$logs/$i.log"
	printf '[%d/%d] %s %s ... ' "$i" "${#targets[@]}" "$pkg" "$name"
	# -timeout bounds a hung input.
	fuzz_once() {
		"$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "${secs}s" -timeout "$((secs + 300))s" \
			-fuzzminimizetime "${FUZZ_MINIMIZETIME:-1000x}" \
			${FUZZ_PARALLEL:+-parallel "$FUZZ_PARALLEL"} "$pkg" >"$log" 2>&1
	}
	if fuzz_once; then
		result=PASS
	elif grep -q 'context deadline exceeded' "$log" && ! grep -q 'Failing input written' "$log"; then
		# Go's fuzz coordinator can report its own time budget running out
		# while a worker starts or minimizes, on a loaded machine and a
		# budget of seconds: not a finding. Run it
		# once more; a real failure writes an input and fails again.
		if fuzz_once; then result=PASS; else result=FAIL; failed=$((failed + 1)); fi
	else
		result=FAIL
		failed=$((failed + 1))
	fi
	last=$(grep -E 'execs: [0-9]+' "$log" | tail -n 1 || true)
	execs=$(sed -nE 's/.*execs: ([0-9]+).*/\1/p' <<<"$last")
	newi=$(sed -nE 's/.*new interesting: ([0-9]+).*/\1/p' <<<"$last")
	echo "$result"
	if [ "$result" = FAIL ]; then
		if grep -q -- '--- FAIL' "$log"; then
			sed -n '/--- FAIL/,$p' "$log" | head -n 40 | sed 's/^/    /' || true
		else
			tail -n 20 "$log" | sed 's/^/    /'
		fi
		while IFS= read -r c; do
			crashers+=("${rel:+$rel/}$c")
		done < <(sed -nE 's/.*Failing input written to (.*)/\1/p' "$log")
	fi
	rows+=("${rel:-.}|$name|${execs:--}|${newi:--}|$result")
done

echo
{
	echo "package|target|execs|new interesting|result"
	printf '%s\n' "${rows[@]}"
} | awk -F'|' '{ for (i = 1; i <= NF; i++) { cell[NR, i] = $i; if (length($i) > w[i]) w[i] = length($i) } }
	END { for (r = 1; r <= NR; r++) { for (i = 1; i < 5; i++) printf "%-*s  ", w[i], cell[r, i]; print cell[r, 5] } }'
if [ ${#crashers[@]} -gt 0 ]; then
	echo
	echo "failing inputs (commit them with the fix):"
	printf '  %s\n' "${crashers[@]}"
fi
if [ "$failed" -gt 0 ]; then
	echo
	echo "fuzz.sh: $failed of ${#targets[@]} targets failed" >&2
	exit 1
fi
