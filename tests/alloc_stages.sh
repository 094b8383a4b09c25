#!/bin/bash
# alloc_stages.sh MPIRUN — the calibrate and allocate stages inside `tqpipe run` (np 2) on stories260K:
#  1. uniform tq3 (no allocation): its exact size and its validate KL on the held-out tokens;
#  2. calibrate + allocate with budget = that size, calibrating on the SAME text file validate reads:
#     the calibrate stage must hold validate's tokens out; the plan fits the budget, is what quantize
#     applies, carries the guard's measurements, and its validate KL beats uniform tq3 by >= 5 %;
#  3. a new budget (2.5 bpw) re-solves from the kept sensitivity table (no new measurement).
set -u
B=${TQ_BIN:?TQ_BIN not set}
S=${TQ_SOURCE_DIR:?TQ_SOURCE_DIR not set}
MPIRUN=${1:-mpirun}
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
fail() { echo "FAILED: $*"; exit 1; }
export OPENBLAS_NUM_THREADS=1
cd "$t"
DATA=$S/jobs/data/tinystories_valid.txt
job() { # job NAME "ALLOCATE SECTION or empty"
cat > $1.yaml <<EOF2
version: 1
name: s260k-$1
model: $S/jobs/models/stories260K.bin
tokenizer: $S/jobs/models/tok512.bin
run_dir: $t/$1
seed: 1234
stages:
  ingest: {}
EOF2
[ -n "$2" ] && cat >> $1.yaml <<EOF2
  calibrate: {data: $DATA, tokens: 4096, ctx: 256}
  allocate: {$2}
EOF2
cat >> $1.yaml <<EOF2
  quantize: {codec: tq3, group: 64, rules: [{role: norm, codec: f32}]}
  pack: {}
  validate: {data: $DATA, ctx: 256, max_tokens: 4096, kv_codecs: [fp16]}
EOF2
}
run() { "$MPIRUN" --allow-run-as-root --oversubscribe --mca btl_vader_single_copy_mechanism none -np 2 "$B" run $1.yaml > $1.log 2>&1 || { tail -20 $1.log; fail "run $1"; }; }
kl_of() { sed -n 's/^validate .*KV fp16: .*KL \([0-9.]*\),.*/\1/p' $1.log; }
# 1. uniform tq3
job uni ""
run uni
ubytes=$(awk -F'\t' '!/^#/ {s += $6} END {print s}' uni/quantize/codecs.tsv)
ukl=$(kl_of uni)
[ -n "$ukl" ] && [ "$ubytes" -gt 100000 ] || fail "uniform run: bytes '$ubytes' KL '$ukl'"
# 2. allocation at the same size
job alloc "budget_bytes: $ubytes"
run alloc
grep -q "stage calibrate: done" alloc.log || fail "calibrate did not run"
grep -q "its first 4096 tokens are held out for validate" alloc.log || fail "calibration did not hold out validate's tokens"
[ -s alloc/calibrate/tokens.tok ] && [ "$(cat alloc/calibrate/tokens.held)" = 4096 ] || fail "no held-out calibration token file"
grep -q "stage allocate: done" alloc.log || fail "allocate did not run"
plan=alloc/allocate/plan.txt
[ -f "$plan" ] || fail "no plan.txt"
total=$(sed -n 's/^# budget \([0-9]*\) bytes.*total \([0-9]*\) bytes.*/\2/p' $plan)
[ "$total" -le "$ubytes" ] || fail "plan total $total > budget $ubytes"
n=$(grep -v '^#' $plan | grep -c .)
[ "$n" -eq 47 ] || fail "plan lists $n tensors"
grep -q "codecs from the allocate plan" alloc.log || fail "quantize did not use the plan"
qbytes=$(awk -F'\t' '!/^#/ {s += $6} END {print s}' alloc/quantize/codecs.tsv)
[ "$qbytes" -eq "$total" ] || fail "quantize stored $qbytes bytes, the plan says $total"
ng=$(grep -c '^# guard: .* KL [0-9.]*' $plan)
[ "$ng" -ge 2 ] || fail "plan has $ng guard measurements"
grep -q '^# guard: uniform tq3:g64 .*KL' $plan || fail "guard did not measure uniform tq3"
akl=$(kl_of alloc)
echo "held-out KL: allocation $akl ($total bytes) vs uniform tq3 $ukl ($ubytes bytes)"
awk -v a="$akl" -v u="$ukl" 'BEGIN {exit !(a > 0 && a < 0.95 * u)}' || fail "allocation KL $akl does not beat uniform tq3 $ukl by 5 %"
# 3. a new budget re-solves from the kept table; validate now scoring more tokens than calibrate held
#    out (calibrate does not re-run for that) is flagged
sed -i "s/budget_bytes: $ubytes/budget_bpw: 2.5/; s/max_tokens: 4096/max_tokens: 6144/" alloc.yaml
run alloc
grep -q "reusing the sensitivity table" alloc.log || fail "new budget did not reuse the table: $(grep allocate alloc.log | head -3)"
grep -q "calibrate held out 4096 tokens .* but validate scores 6144" alloc.log || fail "overlap with validate not flagged"
total=$(sed -n 's/^# budget \([0-9]*\) bytes.*total \([0-9]*\) bytes.*/\2/p' $plan)
[ "$total" -le 81260 ] || fail "plan total $total > 2.5 bpw budget 81260"
grep "stage allocate: done" alloc.log | sed 's/.*): //'
echo ok
