#!/usr/bin/env bash
# pipe_bench.sh — pipeline driver figures (issue 5), given a build dir; runs unattended on the CPU
# machine and on a GPU machine (ranks share the node's GPU(s): rank r uses GPU local_rank % count).
#  1. quantize stage throughput (read -> quantize -> durable write) on the Qwen3.5-122B-A10B-shaped
#     synthetic checkpoint (37,599 tensors) at the scales asked (default 1/64 = 114 MB and 1/16 =
#     1.14 GB; bytes ~ 236.4 GB/S^2 + 3.36 GB/S: 1/8 = 4.1 GB with 98 KB expert matrices, 1/4 = 15.6 GB;
#     a scale whose checkpoint + output would not fit the free disk is skipped, saying so), with 1, 2
#     and 4 ranks, against two read bounds measured in the same run:
#       page-cache bound: `cat` of the same files after a warm-up read (what a warm stage reads from);
#       disk bound: `dd iflag=direct` (O_DIRECT, no page cache) of the same files;
#     and the stage run twice: warm (files in the page cache) and cold (the checkpoint's pages evicted
#     with posix_fadvise(DONTNEED) first, so its reads go to the disk). "stage" is the whole stage as
#     state.json times it (checkpoint open, plan, schedule, loop, manifest compaction); "loop" is the
#     read -> quantize -> commit part alone (the stage's progress line). One SUMMARY line per scale,
#     rank count and variant, with the slowest rank's phases (setup: ckpt / units / plan / schedule /
#     engine; loop: read wait, CPU, GPU, write wait; finish) from state.json. Variants: "default" (on a
#     GPU machine: every unit on the GPU when ranks <= GPUs, else units of >= 1024 weights per CPU
#     worker), "allgpu" (TQ_QBATCH_GPU_MIN=0; only where ranks > GPUs), "split" (TQ_QBATCH_GPU_MIN=
#     1024 x workers; only where ranks <= GPUs); cold runs for "default" only (TQ_BENCH_COLD=all: all).
#  2. the per-unit path (TQ_QBATCH=0, how the stage ran before batching) at 1 rank and scale 1/64;
#  3. manifest cost at 40,000 units (from test_manifest): update time per unit, resume scan time;
#  4. Slurm scheduling overhead per stage is printed by the pipe_slurm test (ctest -R pipe_slurm -V).
#   usage: tests/bench/pipe_bench.sh [--scale S[,S...]] [--variants V[,V...]] [--no-cold] [--no-baseline]
#                                    [--clean] [BUILD_DIR] [RANKS...]   (default: build, ranks 1 2 4)
#   env:   TQ_BENCH_SCALES (default "64 16"), TQ_BENCH_DIR (default /tmp/tq_pipe_bench),
#          TQ_BENCH_BASELINE=0 skips 2., TQ_BENCH_COLD=0 skips the cold runs, TQ_BENCH_VARIANTS;
#          --clean removes each scale's checkpoint and run once measured (disk).
set -u
scales=${TQ_BENCH_SCALES:-64 16}
variants_arg=${TQ_BENCH_VARIANTS:-}
clean=0
while [ $# -gt 0 ]; do
  case "$1" in
    --scale) scales=${2//,/ }; shift 2 ;;
    --scale=*) scales=${1#--scale=}; scales=${scales//,/ }; shift ;;
    --variants) variants_arg=${2//,/ }; shift 2 ;;
    --no-cold) export TQ_BENCH_COLD=0; shift ;;
    --no-baseline) export TQ_BENCH_BASELINE=0; shift ;;
    --clean) clean=1; shift ;;
    -h|--help) sed -n '2,/^set -u/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) break ;;
  esac
done
build=$(cd "${1:-build}" && pwd) || exit 2
shift || true
ranks=${*:-1 2 4}
src=$(cd "$(dirname "$0")/../.." && pwd)
bin=$build/tqpipe
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
MPI="mpirun --allow-run-as-root --oversubscribe --mca btl_vader_single_copy_mechanism none"
W=${TQ_BENCH_DIR:-/tmp/tq_pipe_bench}
mkdir -p "$W"
gpu=""
ngpu=0
command -v nvidia-smi > /dev/null 2>&1 && gpu=$(nvidia-smi -L 2> /dev/null | head -1) && ngpu=$(nvidia-smi -L 2> /dev/null | grep -c "^GPU")
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), ${gpu:-no GPU}"

now() { date +%s.%N; }
evict() { # drop the checkpoint's pages from the page cache (clean pages; no root needed)
  python3 - "$@" <<'PY'
import os, sys
for f in sys.argv[1:]:
    fd = os.open(f, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
PY
}
# $1 run dir, $2 log -> "stage_s loop_s units summary"
figures() {
  python3 - "$1" "$2" <<'PY'
import json, re, sys
q = json.load(open(sys.argv[1] + "/state.json"))["stages"]["quantize"]
loop = q["seconds"]
for l in open(sys.argv[2], errors="replace"):
    m = re.search(r"quantized .* \(100%\) in ([0-9.]+) s", l)
    if m: loop = float(m.group(1))
print(f"{q['seconds']:.3f} {loop:.3f} {q['units_total']} {q['output_hash']}")
PY
}
mbs() { python3 -c "print(f'{$1 / $2 / 1e6:.1f}')"; }
frac() { python3 -c "print(f'{($1 / $2) / $3:.4f}')"; }

for scale in $scales; do
  model=$W/synth122b-s$scale
  shard=20M
  [ "$scale" -lt 64 ] && shard=256M
  [ "$scale" -le 8 ] && shard=1G
  # dry size: fit of the generated sizes at 1/64 (113,634,328 B) and 1/32 (339,191,656 B) + 3.5 MB of
  # headers; need the checkpoint + ~0.35x of quantized output + 1 GB
  est=$(python3 -c "S=$scale; print(int(236.38e9/S/S + 3.355e9/S + 3.5e6))")
  free=$(df -B1 --output=avail "$W" | tail -1)
  need=$(python3 -c "print(int($est * 1.35 + 1e9))")
  if [ ! -f "$model/model.safetensors.index.json" ] && [ "$need" -gt "$free" ]; then
    echo "SKIP scale 1/$scale: checkpoint ~$(mbs "$est" 1) MB, needs ~$(mbs "$need" 1) MB of disk, $(mbs "$free" 1) MB free"
    continue
  fi
  echo "scale 1/$scale: checkpoint ~$(mbs "$est" 1) MB (dry estimate), $(mbs "$free" 1) MB free"
  if [ ! -f "$model/model.safetensors.index.json" ]; then
    t0=$(now)
    "$bin" synth --config "$src/jobs/configs/qwen3.5-122b-a10b.json" --scale "$scale" --seed 1 --shard-size $shard "$model" > /dev/null || exit 1
    echo "  synth: $(python3 -c "print(f'{$(now) - $t0:.1f}')") s"
  fi
  files=$(ls "$model"/*.safetensors)
  bytes=$(cat $files | wc -c)
  sed -e '/^  pack:/,$d' "$src/jobs/synth-122b.yaml" > "$W/job.yaml" # ingest + quantize only
  R=$W/run-s$scale
  rm -rf "$R"
  TQ_SYNTH122B_DIR=$model $MPI -np 1 "$bin" run "$W/job.yaml" --run-dir "$R" > "$W/ingest-s$scale.log" 2>&1 ||
    { echo "ingest of scale $scale failed"; tail "$W/ingest-s$scale.log"; exit 1; }
  # read bounds, same run
  cat $files > /dev/null
  t0=$(now); cat $files > /dev/null; t1=$(now)
  pc=$(python3 -c "print($bytes / ($t1 - $t0))")
  evict $files
  t0=$(now); ok=1
  for f in $files; do dd if="$f" of=/dev/null bs=8M iflag=direct status=none || ok=0; done
  t1=$(now)
  if [ $ok = 1 ]; then disk=$(python3 -c "print($bytes / ($t1 - $t0))"); how="O_DIRECT"
  else evict $files; t0=$(now); cat $files > /dev/null; t1=$(now); disk=$(python3 -c "print($bytes / ($t1 - $t0))"); how="cold cat"; fi
  echo "scale 1/$scale: $model, $(echo $files | wc -w) files, $bytes bytes; page-cache bound $(mbs "$pc" 1) MB/s, disk bound ($how) $(mbs "$disk" 1) MB/s"
  variants="default"
  [ -n "$gpu" ] && variants="default allgpu"
  [ -n "$variants_arg" ] && variants=$variants_arg
  for np in $ranks; do
    for var in $variants; do
      # a variant equal to the default for this rank count is not run again
      [ $var = allgpu ] && [ "$np" -le "$ngpu" ] && continue
      [ $var = split ] && [ "$np" -gt "$ngpu" ] && continue
      envs=""
      [ $var = allgpu ] && envs="TQ_QBATCH_GPU_MIN=0"
      [ $var = split ] && envs="TQ_QBATCH_GPU_MIN=$((1024 * ($(nproc) / np > 0 ? $(nproc) / np : 1)))"
      cat $files > /dev/null
      env $envs $MPI -np $np "$bin" stage quantize --run "$R" --force > "$W/q-s$scale-$np-$var.log" 2>&1 ||
        { echo "quantize on $np ranks failed"; tail "$W/q-s$scale-$np-$var.log"; exit 1; }
      read ws wl units hash <<< "$(figures "$R" "$W/q-s$scale-$np-$var.log")"
      cold=""
      if [ "${TQ_BENCH_COLD:-1}" != 0 ] && { [ $var = default ] || [ "${TQ_BENCH_COLD:-1}" = all ]; }; then
        evict $files
        env $envs $MPI -np $np "$bin" stage quantize --run "$R" --force > "$W/qc-s$scale-$np-$var.log" 2>&1 ||
          { echo "cold quantize on $np ranks failed"; tail "$W/qc-s$scale-$np-$var.log"; exit 1; }
        read cs cl cu ch <<< "$(figures "$R" "$W/qc-s$scale-$np-$var.log")"
        [ "$ch" = "$hash" ] || echo "WARNING: cold run output hash $ch != warm $hash"
        cold=" | cold: stage ${cs} s, loop ${cl} s = $(mbs "$bytes" "$cl") MB/s; vs disk bound: stage $(frac "$bytes" "$cs" "$disk"), loop $(frac "$bytes" "$cl" "$disk")"
      fi
      dev=cpu
      [ -n "$gpu" ] && dev="gpu, $(grep -o "GPU ([a-z' ]*; units of >= [0-9]* weights)" "$W/q-s$scale-$np-$var.log" | head -1 | sed 's/^GPU (//; s/)$//')"
      [ $var = allgpu ] && dev="$dev, TQ_QBATCH_GPU_MIN=0"
      [ $var = split ] && dev="$dev, split"
      split=$(grep -o "rank-seconds read [0-9.]*, quantize [0-9.]*, write+sync [0-9.]*" "$W/q-s$scale-$np-$var.log" | tail -1)
      phases=$(grep -o "slowest rank, s: [^]]*" "$W/q-s$scale-$np-$var.log" | tail -1)
      echo "SUMMARY scale 1/$scale ($units units, $(mbs "$bytes" 1) MB) ranks $np [$dev]: warm: stage ${ws} s = $(mbs "$bytes" "$ws") MB/s, loop ${wl} s = $(mbs "$bytes" "$wl") MB/s; vs page-cache bound: stage $(frac "$bytes" "$ws" "$pc"), loop $(frac "$bytes" "$wl" "$pc")$cold  [$split; hash $hash]"
      echo "  phases (warm): $phases"
      [ -n "$cold" ] && echo "  phases (cold): $(grep -o "slowest rank, s: [^]]*" "$W/qc-s$scale-$np-$var.log" | tail -1)"
    done
  done
  if [ "$scale" = 64 ] && [ "${TQ_BENCH_BASELINE:-1}" != 0 ]; then
    cat $files > /dev/null
    TQ_QBATCH=0 $MPI -np 1 "$bin" stage quantize --run "$R" --force > "$W/q-s$scale-unbatched.log" 2>&1 || { echo "unbatched quantize failed"; exit 1; }
    read ws wl units hash <<< "$(figures "$R" "$W/q-s$scale-unbatched.log")"
    echo "BASELINE scale 1/$scale ranks 1, per-unit path (TQ_QBATCH=0): stage ${ws} s = $(mbs "$bytes" "$ws") MB/s, loop ${wl} s = $(mbs "$bytes" "$wl") MB/s; page-cache fraction stage $(frac "$bytes" "$ws" "$pc")  [hash $hash]"
  fi
  [ $clean = 1 ] && rm -rf "$model" "$R"
done
t=$(find "$build" -name test_manifest -type f -perm -u+x | head -1)
[ -n "$t" ] && "$t" 2> /dev/null | grep "manifest at"
exit 0
