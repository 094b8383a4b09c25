#!/usr/bin/env bash
# pipe_bench.sh — pipeline driver figures (issue 5), given a build dir:
#  1. quantize stage throughput (read -> quantize -> durable write, the whole stage as `tqpipe run`
#     times it) on the Qwen3.5-122B-A10B-shaped synthetic checkpoint (37,599 tensors, scale 1/64,
#     ~108 MB bf16) with 1, 2 and 4 ranks, as a fraction of the disk read bound measured in the same
#     run (cat of the same files, from page cache after a warm-up read: what the stage's reads see);
#  2. manifest cost at 40,000 units (from test_manifest): update time per unit, resume scan time;
#  3. Slurm scheduling overhead per stage is printed by the pipe_slurm test (ctest -R pipe_slurm -V).
#   usage: tests/bench/pipe_bench.sh [BUILD_DIR] [RANKS...]    (default: build, ranks 1 2 4)
set -u
build=$(cd "${1:-build}" && pwd) || exit 2
shift || true
ranks=${*:-1 2 4}
src=$(cd "$(dirname "$0")/../.." && pwd)
bin=$build/tqpipe
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
MPI="mpirun --allow-run-as-root --oversubscribe --mca btl_vader_single_copy_mechanism none"
W=${TQ_BENCH_DIR:-/tmp/tq_pipe_bench}
mkdir -p "$W"
model=$W/synth122b
if [ ! -f "$model/model.safetensors.index.json" ]; then
  "$bin" synth --config "$src/jobs/configs/qwen3.5-122b-a10b.json" --scale 64 --seed 1 --shard-size 20M "$model" > /dev/null || exit 1
fi
sed -e '/^  pack:/,$d' "$src/jobs/synth-122b.yaml" > "$W/job.yaml"   # ingest + quantize only
export TQ_SYNTH122B_DIR=$model
bytes=$(cat "$model"/*.safetensors | wc -c)
echo "checkpoint: $model, $(ls "$model"/*.safetensors | wc -l) files, $bytes bytes, $(nproc) cores"
for np in $ranks; do
  rm -rf "$W/run-$np"
  $MPI -np 1 "$bin" run "$W/job.yaml" --run-dir "$W/run-$np" > /dev/null 2>&1 || true   # ingest (+convert)
  # read bound, same run: warm the cache, then time a full sequential read
  cat "$model"/*.safetensors > /dev/null
  t0=$(date +%s.%N); cat "$model"/*.safetensors > /dev/null; t1=$(date +%s.%N)
  rd=$(python3 -c "print($bytes / ($t1 - $t0))")
  # quantize again from scratch on np ranks
  $MPI -np $np "$bin" stage quantize --run "$W/run-$np" --force > "$W/q-$np.log" 2>&1 || { echo "quantize on $np ranks failed"; tail "$W/q-$np.log"; exit 1; }
  python3 - "$W/run-$np" "$bytes" "$rd" "$np" <<'PY'
import json, sys
run, nbytes, rd, np = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
q = json.load(open(run + "/state.json"))["stages"]["quantize"]
thr = nbytes / q["seconds"]
print(f"quantize {np} rank(s): {q['units_total']} units, {q['seconds']:.2f} s, {thr/1e6:.2f} MB/s; "
      f"read bound {rd/1e6:.0f} MB/s; fraction {thr/rd:.4f}  [{q['summary']}]")
PY
done
t=$(find "$build" -name test_manifest -type f -perm -u+x | head -1)
[ -n "$t" ] && "$t" 2>/dev/null | grep "manifest at"
exit 0
