#!/bin/bash
# gptq_stage.sh — GPTQ inside the quantize stage (pipeline/qgptq.h) on stories260K, np 2:
#   1. the same job with gptq false / true (tq3 default, rtn4 for down_proj, bin1 for o_proj, tq4r4 for
#      up_proj = unsupported -> plain with a note): both artifacts verify, same bytes per weight, and the
#      validate KL with GPTQ is lower (calibration text held out from the validate tokens);
#   2. kill rank 0 after 30 quantize units, resume on 3 ranks: 0 recomputed, every shard byte-identical
#      to the uninterrupted GPTQ run;
#   (the GPTQ job calibrates with parallel: layers, the plain one with seq: the H files must be identical)
#   3. a missing H file is an error naming the file and the calibrate stage; gptq without a calibrate
#      stage, a bad calibrate.parallel or quantize.damp are job-file errors with their line;
#   4. switching gptq on in the plain run redoes quantize only, giving the GPTQ run's exact artifact.
source "$(dirname "$0")/pipe_common.sh"
export OPENBLAS_NUM_THREADS=1
D=$SRC/jobs/data/tinystories_valid.txt
# calibration text: the stories after the 100th separator (validate scores the first 4096 tokens)
awk 'n >= 100 {print} /^<\|endoftext\|>$/ {n++}' "$D" > "$W/calib.txt"
[ "$(wc -c < "$W/calib.txt")" -gt 20000 ] || { bad "calibration split too small"; exit 1; }
mkjob() { # $1 file, $2 gptq true|false, $3 with calibrate (1/0), $4 calibrate parallel mode
  cat > "$1" <<YAML
version: 1
name: gptqtest
model: $SRC/jobs/models/stories260K.bin
tokenizer: $SRC/jobs/models/tok512.bin
seed: 1234
stages:
  ingest: {}
$([ "$3" = 1 ] && echo "  calibrate: {data: $W/calib.txt, tokens: 4096, ctx: 256, parallel: $4}")
  quantize:
    codec: tq3
    group: 64
    gptq: $2
    damp: 0.01
    rules:
      - {role: norm, codec: f32}
      - {role: embed, codec: int8}
      - {role: mlp_down, codec: rtn4}
      - {role: attn_o, codec: bin1}
      - {role: mlp_up, codec: tq4r4}
    max_unit_bytes: 16KiB
  pack: {zstd_level: 3, shard_size: 64KiB}
  validate: {data: $D, ctx: 256, max_tokens: 4096}
YAML
}
kl() { grep -o "KL [0-9.]* nats" "$1" | head -1 | awk '{print $2}'; }
bpw() { grep -o "stage quantize: done.*(\([0-9.]*\) bits/weight)" "$1" | grep -o "[0-9.]* bits/weight" | awk '{print $1}'; }

mkjob "$W/plain.yaml" false 1 seq
mkjob "$W/gptq.yaml" true 1 layers
$MPI -np 2 "$BIN" run "$W/plain.yaml" --run-dir "$W/plain" > "$W/plain.log" 2>&1 || { tail -20 "$W/plain.log"; bad "plain run"; exit 1; }
$MPI -np 2 "$BIN" run "$W/gptq.yaml" --run-dir "$W/gptq" > "$W/gptq.log" 2>&1 || { tail -20 "$W/gptq.log"; bad "gptq run"; exit 1; }
for r in plain gptq; do
  "$BIN" verify "$W/$r/artifact" > "$W/$r.verify" 2>&1 && ok "$r artifact verifies" || { bad "$r artifact does not verify"; cat "$W/$r.verify"; }
done
# the job's calibrate stage: layer split (gptq job) and sequence split (plain job) give the same H files
grep -q "stage calibrate: done.*(layers split)" "$W/gptq.log" && grep -q "stage calibrate: done.*(seq split)" "$W/plain.log" &&
  ok "calibrate stage: parallel layers / seq honoured" || bad "calibrate stage parallel mode not honoured"
nh=0
for f in "$W"/plain/calibrate/hessian/*.hess.zst; do
  cmp -s "$f" "$W/gptq/calibrate/hessian/$(basename "$f")" || bad "$(basename "$f"): layer split differs from sequence split"
  nh=$((nh + 1))
done
[ "$nh" -eq 21 ] && ok "21 H files identical between the layer-split and sequence-split calibrate stages" || bad "$nh H files"
kp=$(kl "$W/plain.log"); kg=$(kl "$W/gptq.log"); bp=$(bpw "$W/plain.log"); bg=$(bpw "$W/gptq.log")
[ -n "$kp" ] && [ -n "$kg" ] || { bad "no KL in the validate output"; exit 1; }
[ "$bp" = "$bg" ] && ok "same size: $bg bits/weight" || bad "bits/weight differ: plain $bp, gptq $bg"
python3 -c "import sys; sys.exit(0 if $kg < 0.8 * $kp else 1)" && ok "validate KL with GPTQ $kg < 0.8 x plain $kp" ||
  bad "GPTQ did not lower KL enough: gptq $kg, plain $kp"
n=$(grep -o "gptq: [0-9]* units with GPTQ" "$W/gptq.log" | awk '{s += $2} END {print s + 0}')
[ "$n" -gt 0 ] && ok "$n units quantized with GPTQ" || bad "no unit used GPTQ"
grep -q "gptq: codec tq4r4 units .* quantized plainly" "$W/gptq.log" && ok "unsupported codec tq4r4: plain, with a note" ||
  bad "no note for the unsupported codec"
grep -q "units with GPTQ" "$W/plain.log" && bad "the plain job ran GPTQ" || ok "plain job: no GPTQ"

# 2. kill + resume on another rank count: byte-identical artifact
R=$W/killed
TQ_FAULT=kill:quantize:30:0 $MPI -np 2 "$BIN" run "$W/gptq.yaml" --run-dir "$R" > "$R.kill.log" 2>&1 && bad "the killed run exited 0"
$MPI -np 3 "$BIN" resume "$R" > "$R.resume.log" 2>&1 || { bad "resume failed"; tail -20 "$R.resume.log"; }
read total now rec <<< "$(donenow "$R.resume.log" quantize)"
if [ -n "${total:-}" ] && [ "$rec" = 0 ] && [ "$now" -gt 0 ] && [ "$now" -lt "$total" ]; then
  ok "quantize (GPTQ) resumed on 3 ranks: $now of $total units done now, 0 recomputed"
else bad "resume did '${total:-?} ${now:-?} ${rec:-?}' (total, done now, recomputed)"; fi
if diff -q <(sums "$R") <(sums "$W/gptq") > /dev/null; then ok "killed + resumed GPTQ run: every shard byte-identical"
else bad "GPTQ shards differ after kill + resume"; fi

# 3. errors
h=$(ls "$W/gptq/calibrate/hessian/" | grep layers.1.mlp.down_proj)
rm "$W/gptq/calibrate/hessian/$h"
"$BIN" stage quantize --run "$W/gptq" --force > "$W/missing.log" 2>&1 && bad "quantize without its H file succeeded"
grep -q "$h, which is missing: run the calibrate stage first (.tqpipe stage calibrate --run" "$W/missing.log" &&
  ok "missing H file: named, with the command to run" || { bad "missing H message"; tail -3 "$W/missing.log"; }
mkjob "$W/nocal.yaml" true 0 auto
"$BIN" run "$W/nocal.yaml" --run-dir "$W/nocal" > "$W/nocal.log" 2>&1 && bad "gptq without calibrate accepted"
grep -q "nocal.yaml:[0-9]*: stages.quantize has gptq: true, which needs the H files of stage 'calibrate'" "$W/nocal.log" &&
  ok "gptq without a calibrate stage: job-file error with its line" || { bad "no-calibrate message"; cat "$W/nocal.log"; }
sed 's/parallel: layers/parallel: rows/' "$W/gptq.yaml" > "$W/badpar.yaml"
"$BIN" run "$W/badpar.yaml" --run-dir "$W/badpar" > "$W/badpar.log" 2>&1 && bad "parallel: rows accepted"
grep -q "badpar.yaml:[0-9]*: 'parallel' = 'rows': must be auto, seq or layers" "$W/badpar.log" && ok "bad calibrate.parallel: error with its line" ||
  { bad "bad parallel message"; cat "$W/badpar.log"; }
sed 's/damp: 0.01/damp: -1/' "$W/gptq.yaml" > "$W/baddamp.yaml"
"$BIN" run "$W/baddamp.yaml" --run-dir "$W/baddamp" > "$W/baddamp.log" 2>&1 && bad "damp: -1 accepted"
grep -q "baddamp.yaml:[0-9]*:.*damp" "$W/baddamp.log" && ok "bad quantize.damp: error with its line" || { bad "bad damp message"; cat "$W/baddamp.log"; }
# 4. turning gptq on in an existing plain run: quantize is redone (inputs changed), calibrate kept (its
#    parallel mode is not part of its inputs), and the artifact equals the GPTQ run's
cp "$W/gptq.yaml" "$W/plain/job.yaml"
$MPI -np 2 "$BIN" resume "$W/plain" > "$W/switch.log" 2>&1 || { bad "resume after gptq: true"; tail -5 "$W/switch.log"; }
grep -q "stage quantize: its inputs changed" "$W/switch.log" && ok "gptq: true invalidates the quantize stage" ||
  { bad "quantize not invalidated by gptq: true"; grep -i "changed\|stage" "$W/switch.log" | head -5; }
grep -q "stage calibrate: done" "$W/switch.log" && bad "calibrate rerun after switching its parallel mode" || ok "calibrate kept"
if diff -q <(sums "$W/plain") <(sums "$W/gptq") > /dev/null; then ok "switched run: shards byte-identical to the GPTQ run"
else bad "switched run differs from the GPTQ run"; fi
echo "plain KL $kp, GPTQ KL $kg at $bg bits/weight"
echo "$fails failures"
[ $fails -eq 0 ]
