#!/bin/bash
# artifact_bench.sh [BUILD_DIR] [MB] — artifact write throughput vs plain write() of the same bytes to
# the same disk in the same run (zstd off, level 1, level 3), read + verify throughput vs plain read +
# XXH3, and the zstd compression ratio of codes and norms. Scratch files go to $TQ_BENCH_DIR (default:
# BUILD_DIR/bench-artifact, i.e. the disk the build lives on) and are removed afterwards.
#   bash tests/bench/artifact_bench.sh build 1024
set -eu
BUILD=${1:-build}
MB=${2:-1024}
DIR=${TQ_BENCH_DIR:-$BUILD/bench-artifact}
cmake --build "$BUILD" --target artifact_bench >/dev/null
mkdir -p "$DIR"
echo "# artifact_bench on $(df -h "$DIR" | awk 'NR==2 {print $1 " (" $2 ")"}'), $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
for codec in tq4 tq2; do
  "$BUILD/tests/artifact_bench" "$DIR" --mb "$MB" --codec $codec --reps 3
done
rm -rf "$DIR"
