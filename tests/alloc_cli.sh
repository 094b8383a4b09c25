#!/bin/bash
# alloc_cli.sh — end to end on stories260K through the CLI (real forward pass for calibration):
# convert -> calibrate (np 1 and np 2: byte-identical H files) -> sensitivity (plain, GPTQ: GPTQ lowers
# the summed omega for rtn4 rtn3 tq4 tq3 tq2) -> allocate at two budgets from the same table (totals
# within budget, every tensor planned) -> apply-plan with GPTQ (bytes match the plan) -> error paths.
set -u
B=${TQ_BIN:?TQ_BIN not set}
S=${TQ_SOURCE_DIR:?TQ_SOURCE_DIR not set}
MPIRUN=${1:-mpirun}
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
fail() { echo "FAILED: $*"; exit 1; }
export OPENBLAS_NUM_THREADS=1
cd "$t"
"$B" convert "$S/jobs/models/stories260K.bin" ck --tokenizer "$S/jobs/models/tok512.bin" >/dev/null || fail convert
"$B" calibrate --model ck --data "$S/jobs/data/tinystories_valid.txt" --seqs 8 --len 128 --out h1 --quiet || fail "calibrate np 1"
"$MPIRUN" --allow-run-as-root --oversubscribe --mca btl_vader_single_copy_mechanism none -np 2 \
  "$B" calibrate --model ck --data "$S/jobs/data/tinystories_valid.txt" --seqs 8 --len 128 --out h2 --quiet || fail "calibrate np 2"
n=$(ls h1/*.hess.zst | wc -l)
[ "$n" -eq 21 ] || fail "expected 21 H files (5 layers x q, o, gate, down + the tied head), got $n"
for f in h1/*.hess.zst; do cmp -s "$f" "h2/$(basename "$f")" || fail "$(basename "$f") differs between np 1 and np 2"; done
C=tq2,tq3,tq4,rtn3,rtn4,int8,f32
"$B" sensitivity --model ck --hessians h1 --codecs $C --out plain.tsv --quiet || fail "sensitivity plain"
"$B" sensitivity --model ck --hessians h1 --codecs $C --gptq --out gptq.tsv --quiet || fail "sensitivity gptq"
[ "$(grep -vc '^#' plain.tsv)" -eq $((1 + 36 * 7 + 11)) ] || fail "plain.tsv row count $(grep -vc '^#' plain.tsv)"
for c in rtn4 rtn3 tq4 tq3 tq2; do
  p=$(awk -F'\t' -v c=$c '$5==c && $2!="embed" {s+=$7} END {printf "%.9e", s}' plain.tsv)
  g=$(awk -F'\t' -v c=$c '$5==c && $2!="embed" {s+=$7} END {printf "%.9e", s}' gptq.tsv)
  awk -v p=$p -v g=$g 'BEGIN {exit !(g < 0.95 * p)}' || fail "$c: GPTQ omega $g not below plain $p"
  echo "$c: omega plain $p, GPTQ $g (calibrated on 8 x 128 tokens)"
done
# KL probe: omegas rescaled to KL units (one probe codec, 2 windows of 128 tokens)
"$B" sensitivity --model ck --hessians h1 --codecs tq3,tq4,f32 --probe-data "$S/jobs/data/tinystories_valid.txt" \
  --probe-tokens 256 --probe-ctx 128 --probe-codec tq3 --out probe.tsv --quiet || fail "sensitivity with probe"
awk -F'\t' 'NR > 2 && $7 < 0 {exit 1}' probe.tsv || fail "negative omega after the probe"
cmp -s <(cut -f1-6 probe.tsv | grep -v '^#') <(grep -v '^#' plain.tsv | awk -F'\t' '$5=="tq3"||$5=="tq4"||$5=="f32"||NR==1' | cut -f1-6) ||
  fail "probe changed bytes or rows"
awk -F'\t' '$5=="tq3" && $2!="norm" {n++; if ($7 > 0) p++} END {exit !(n == 36 && p == 36)}' probe.tsv || fail "probe: tq3 omegas not all > 0"
for bud in 3.5bpw 96KiB; do
  "$B" allocate --table gptq.tsv --budget $bud --keep norm=f32 --out plan_$bud.txt --quiet || fail "allocate $bud"
  total=$(sed -n 's/^# budget \([0-9]*\) bytes.*total \([0-9]*\) bytes.*/\2/p' plan_$bud.txt)
  budget=$(sed -n 's/^# budget \([0-9]*\) bytes.*/\1/p' plan_$bud.txt)
  [ -n "$total" ] && [ "$total" -le "$budget" ] || fail "plan $bud: total $total > budget $budget"
  [ "$(grep -v '^#' plan_$bud.txt | grep -c .)" -eq 47 ] || fail "plan $bud does not list all 47 tensors"
  sum=$(grep -v '^#' plan_$bud.txt | sed -n 's/.*bytes=\([0-9]*\).*/\1/p' | awk '{s+=$1} END {print s}')
  [ "$sum" -eq "$total" ] || fail "plan $bud: per-tensor bytes sum $sum != total $total"
  out=$("$B" apply-plan --model ck --plan plan_$bud.txt --gptq --hessians h1 --out q_$bud) || fail "apply-plan $bud"
  echo "$out" | grep -q " $total bytes" || fail "apply-plan bytes differ from the plan total $total: $out"
  echo "budget $bud: plan $total bytes <= $budget; $out"
done
grep -q "^# budget 113764 bytes (3.5000 bpw over 260032 weights)" plan_3.5bpw.txt || fail "3.5 bpw over the 260,032 weights should be 113764 bytes: $(head -2 plan_3.5bpw.txt)"
# MoE (tiny synthetic qwen3_moe): one H per expert, few-token experts pooled, identical for np 1 and 2
cat > moe.json <<'JSON'
{"model_type":"qwen3_moe","architectures":["Qwen3MoeForCausalLM"],"hidden_size":64,"intermediate_size":128,
"moe_intermediate_size":32,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":16,
"vocab_size":512,"num_experts":8,"num_experts_per_tok":2,"norm_topk_prob":true,"max_position_embeddings":512,
"rms_norm_eps":1e-6,"rope_theta":10000,"tie_word_embeddings":false,"decoder_sparse_step":1,"mlp_only_layers":[]}
JSON
"$B" synth --config moe.json --dtype f32 moe >/dev/null || fail "synth moe"
LC_ALL=C awk 'BEGIN {s = 12345; for (i = 0; i < 2048; i++) {s = (s * 1103515245 + 12345) % 2147483648; v = int(s / 65536) % 512;
  printf "%c%c%c%c", v % 256, int(v / 256), 0, 0}}' > moe.tok
[ "$(stat -c %s moe.tok)" -eq 8192 ] || fail "moe.tok has $(stat -c %s moe.tok) bytes"
out=$("$B" calibrate --model moe --data moe.tok --seqs 8 --len 128 --out hm1 --min-expert-tokens 300) || fail "calibrate moe"
echo "$out" | grep -q "39 H files (full) in hm1, [1-9][0-9]* experts pooled" || fail "moe calibrate: $out"
"$MPIRUN" --allow-run-as-root --oversubscribe --mca btl_vader_single_copy_mechanism none -np 2 \
  "$B" calibrate --model moe --data moe.tok --seqs 8 --len 128 --out hm2 --min-expert-tokens 300 --quiet || fail "moe np 2"
for f in hm1/*.hess.zst; do cmp -s "$f" "hm2/$(basename "$f")" || fail "moe $(basename "$f") differs between np 1 and 2"; done
"$B" sensitivity --model moe --hessians hm1 --codecs tq3,tq4,f32 --gptq --out moe.tsv --quiet || fail "moe sensitivity"
"$B" allocate --table moe.tsv --budget 4bpw --keep norm=f32 --out moeplan.txt --quiet || fail "moe allocate"
echo "moe: $out"
# errors
"$B" allocate --table gptq.tsv --budget 1KB --out x.txt 2>err.txt; [ $? -eq 1 ] || fail "tiny budget accepted"
grep -q "smallest possible model" err.txt || fail "tiny budget message: $(cat err.txt)"
"$B" allocate --table gptq.tsv --out x.txt 2>/dev/null; [ $? -eq 2 ] || fail "missing --budget not a usage error"
printf 'model.norm.weight f32\nmodel.norm.weight tq3\n' > bad.txt
"$B" apply-plan --model ck --plan bad.txt --out z 2>err.txt; [ $? -eq 1 ] || fail "bad plan accepted"
grep -q "twice" err.txt || fail "duplicate plan line message: $(cat err.txt)"
echo ok
