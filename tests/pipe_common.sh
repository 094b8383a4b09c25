# pipe_common.sh — shared setup for the pipeline script tests (sourced): binary, mpirun, a fast test
# job on the bundled stories260K (no validate: it is covered by infer's tests), helpers.
set -u
BIN=${TQ_BIN:-}
SRC=${TQ_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
[ -n "$BIN" ] && [ -x "$BIN" ] || { echo "TQ_BIN not set (run through ctest)"; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
MPI="mpirun --allow-run-as-root --oversubscribe --mca btl_vader_single_copy_mechanism none"
W=$(mktemp -d /tmp/tq_pipe_test.XXXXXX)
cleanup() { [ -n "${KEEP:-}" ] || rm -rf "$W"; }
trap cleanup EXIT
fails=0
ok() { echo "ok $*"; }
bad() { echo "FAILED $*"; fails=$((fails + 1)); }
JOB=$W/job.yaml
cat > "$JOB" <<YAML
version: 1
name: pipetest
model: $SRC/jobs/models/stories260K.bin
tokenizer: $SRC/jobs/models/tok512.bin
seed: 1234
resources: {ntasks: 2, time: "00:05:00"}   # used by the Slurm test only
stages:
  ingest: {}
  quantize:
    codec: tq4
    group: 64
    rules: [{role: norm, codec: f32}, {role: embed, codec: int8}]
    max_unit_bytes: 16KiB
  pack: {zstd_level: 3, shard_size: 64KiB}
  publish: {}
YAML
# sha256 of every shard of a run's artifact, one line per file
sums() { (cd "$1/artifact" && sha256sum model-*.tqa.h5); }
# a field of a stage in state.json
sfield() { python3 -c "import json,sys; print(json.load(open('$1/state.json'))['stages']['$2']['$3'])"; }
# "N done now, R recomputed" from a stage's final log line in file $1 for stage $2 -> "N R"
donenow() { grep -o "stage $2: done in [0-9.]* s ([0-9]* units, [0-9]* done now, [0-9]* recomputed" "$1" | tail -1 |
            sed -E 's/.*\(([0-9]*) units, ([0-9]*) done now, ([0-9]*) recomputed/\1 \2 \3/'; }
baseline() {
  $MPI -np 2 "$BIN" run "$JOB" --run-dir "$W/base" > "$W/base.log" 2>&1 || { cat "$W/base.log"; bad "baseline run"; exit 1; }
  sums "$W/base" > "$W/base.sums"
  [ "$(wc -l < "$W/base.sums")" -ge 2 ] || { bad "baseline has fewer than 2 shards"; exit 1; }
  ok "baseline run: $(wc -l < "$W/base.sums") shards"
}
same_as_base() { # $1 run dir, $2 label
  if sums "$1" | diff -q - "$W/base.sums" > /dev/null; then ok "$2: every shard byte-identical to the uninterrupted run"
  else bad "$2: shards differ from the uninterrupted run"; sums "$1"; cat "$W/base.sums"; fi
}
