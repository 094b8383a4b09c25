#!/usr/bin/env bash
# pipe_bench_device.sh — one unattended GPU-machine session for the quantize-stage figures (issue 5
# Measure): build tqpipe, run the batched-engine tests (pipe_batch, test_ckpt_table), then
# tests/bench/pipe_bench.sh at a large scale (default 1/8: 4.1 GB, 1, 2, 4 ranks, warm + cold, the
# default device split and its alternative) and at 1/16 (4 ranks) for comparison. Every step is
# bounded so that the whole fits a time budget (seconds, default 400) and logs go to OUT (default
# ./pipe_bench_out); the SUMMARY lines are printed last.
#   usage: tests/bench/pipe_bench_device.sh [BUDGET_S] [LARGE_SCALE]
set -u
budget=${1:-400}
large=${2:-8}
out=${OUT:-$PWD/pipe_bench_out}
mkdir -p "$out"
end=$((SECONDS + budget))
left() { echo $((end - SECONDS)); }
B=build-gpu-pipe3
{
  echo "== $(date -u +%FT%TZ) $(nproc) cores; $(nvidia-smi -L 2> /dev/null | head -2 | tr '\n' ' '); disk: $(df -h /tmp | tail -1)"
  t0=$SECONDS
  cmake -S . -B $B -DTQ_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DTQ_WERROR=ON > "$out/cmake.log" 2>&1 &&
    cmake --build $B -j16 --target tqpipe test_ckpt_table test_manifest > "$out/build.log" 2>&1
  echo "== build rc $? in $((SECONDS - t0)) s"
  tail -3 "$out/build.log"
} 2>&1 | tee "$out/device.log"
[ -x $B/tqpipe ] || exit 1
t0=$SECONDS
(cd $B && timeout $(($(left) > 130 ? 130 : $(left))) ctest -R 'pipe_batch|test_ckpt_table' -V > "$out/ctest.log" 2>&1)
echo "== ctest rc $? in $((SECONDS - t0)) s: $(grep -cE '^[0-9]+: ok ' "$out/ctest.log") ok, $(grep -cE '^[0-9]+: FAILED' "$out/ctest.log") FAILED" | tee -a "$out/device.log"
grep -E "^[0-9]+: FAILED|tests passed|Test +#" "$out/ctest.log" | tee -a "$out/device.log"
export TQ_BENCH_DIR=/tmp/tq_pipe_bench
t0=$SECONDS
timeout $(($(left) - 45 > 30 ? $(left) - 45 : 30)) bash tests/bench/pipe_bench.sh --scale "$large" --no-baseline --variants default,allgpu,split $B 1 2 4 > "$out/bench_large.log" 2>&1
echo "== bench 1/$large rc $? in $((SECONDS - t0)) s" | tee -a "$out/device.log"
rm -rf "$TQ_BENCH_DIR/synth122b-s$large" "$TQ_BENCH_DIR/run-s$large"
t0=$SECONDS
[ "$(left)" -gt 20 ] && timeout $(($(left) - 5)) bash tests/bench/pipe_bench.sh --scale 16 --no-baseline --variants default $B 4 > "$out/bench_16.log" 2>&1
echo "== bench 1/16 rc $? in $((SECONDS - t0)) s" | tee -a "$out/device.log"
cat "$out/bench_large.log" "$out/bench_16.log" 2> /dev/null | grep -vE "^ok manifest" | tee -a "$out/device.log"
