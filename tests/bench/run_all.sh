#!/usr/bin/env bash
# run_all.sh — run every tests/bench/*_bench.sh against one build directory (`make bench` calls this).
# Benchmarks print their figures; they are not pass/fail tests, but a script that cannot run (missing
# binary, crash) counts as failed and makes this exit non-zero.
#   usage: tests/bench/run_all.sh [BUILD_DIR] [NAME_FILTER]     (default build dir: build)
#   e.g.   tests/bench/run_all.sh build inspect
set -u
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-build}" 2>/dev/null && pwd) || { echo "run_all: no build directory '${1:-build}'"; exit 2; }
filter=${2:-}
[ -x "$build/tqpipe" ] || { echo "run_all: $build/tqpipe not built (run make build)"; exit 2; }
failed=()
ran=0
for b in "$here"/*_bench.sh; do
    [ -e "$b" ] || continue
    name=$(basename "$b" _bench.sh)
    [ -n "$filter" ] && [[ "$name" != *"$filter"* ]] && continue
    echo "=== $name ($(date -u +%H:%M:%S) UTC)"
    t0=$(date +%s)
    if bash "$b" "$build"; then
        echo "=== $name done in $(( $(date +%s) - t0 )) s"
    else
        echo "=== $name FAILED (exit $?)"
        failed+=("$name")
    fi
    ran=$((ran + 1))
done
echo "run_all: $ran benchmark(s), ${#failed[@]} failed${failed:+: ${failed[*]}}"
[ "${#failed[@]}" = 0 ]
