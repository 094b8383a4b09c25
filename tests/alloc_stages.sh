#!/bin/bash
# alloc_stages.sh MPIRUN — the calibrate and allocate stages inside `tqpipe run` (np 2): stories260K,
# budget 3.5 bpw -> the quantized artifact is within budget and uses the plan's codecs; then a new
# budget (2.5 bpw) re-solves from the kept sensitivity table (no new measurement).
set -u
B=${TQ_BIN:?TQ_BIN not set}
S=${TQ_SOURCE_DIR:?TQ_SOURCE_DIR not set}
MPIRUN=${1:-mpirun}
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
fail() { echo "FAILED: $*"; exit 1; }
export OPENBLAS_NUM_THREADS=1
cd "$t"
job() {
cat > job.yaml <<EOF2
version: 1
name: s260k-alloc
model: $S/jobs/models/stories260K.bin
tokenizer: $S/jobs/models/tok512.bin
run_dir: $t/run
seed: 1234
stages:
  ingest: {}
  calibrate: {data: $S/jobs/data/tinystories_valid.txt, tokens: 2048, ctx: 256}
  allocate: {budget_bpw: $1}
  quantize: {codec: tq4, group: 64, rules: [{role: norm, codec: f32}]}
  pack: {}
EOF2
}
run() { "$MPIRUN" --allow-run-as-root --oversubscribe --mca btl_vader_single_copy_mechanism none -np 2 "$B" run job.yaml > log.txt 2>&1 || { tail -20 log.txt; fail "run ($1)"; }; }
job 3.5
run 3.5
grep -q "stage calibrate: done" log.txt || fail "calibrate did not run"
grep -q "stage allocate: done" log.txt || fail "allocate did not run"
plan=run/allocate/plan.txt
[ -f "$plan" ] || fail "no plan.txt"
total=$(sed -n 's/^# budget \([0-9]*\) bytes.*total \([0-9]*\) bytes.*/\2/p' $plan)
[ "$total" -le 113764 ] || fail "plan total $total > 3.5 bpw budget 113764"
grep -q "3.4[0-9]* bits/weight\|3.5[0]* bits/weight" log.txt || fail "quantize bpw not ~3.5: $(grep 'stage quantize: done' log.txt)"
n=$(grep -v '^#' $plan | grep -c .)
[ "$n" -eq 47 ] || fail "plan lists $n tensors"
grep -q "codecs from the allocate plan" log.txt || fail "quantize did not use the plan"
first=$(grep -c "sensitivity table" log.txt)
[ "$first" -ge 1 ] || fail "no sensitivity measurement logged"
job 2.5
run 2.5
grep -q "reusing the sensitivity table" log.txt || fail "new budget did not reuse the table: $(grep allocate log.txt | head -3)"
total=$(sed -n 's/^# budget \([0-9]*\) bytes.*total \([0-9]*\) bytes.*/\2/p' $plan)
[ "$total" -le 81260 ] || fail "plan total $total > 2.5 bpw budget 81260"
grep "stage allocate: done" log.txt | sed 's/.*): //'
echo ok
