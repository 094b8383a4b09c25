#!/bin/bash
# gpupacked_cli.sh — the --gpu-weights option (eval, generate) and the job key stages.validate.gpu_weights in any
# build (CPU runs ignore the GPU weights choice): bad values are refused with exit 2 / a parse error naming the key;
# good values run; the CPU metrics JSON has no gpu_weights field.
set -eu
BIN=${TQ_BIN:?TQ_BIN not set}
SRC=${TQ_SOURCE_DIR:?}
W=$(mktemp -d /tmp/tq_gpupacked_cli.XXXXXX)
trap 'rm -rf "$W"' EXIT
fail=0
"$BIN" convert "$SRC/jobs/models/stories260K.bin" "$W/llama" --tokenizer "$SRC/jobs/models/tok512.bin" --quiet
E="eval --model $W/llama --data $SRC/jobs/data/tinystories_valid.txt --ctx 64 --max-tokens 200 --no-ref --json --quiet --device cpu"
set +e
"$BIN" $E --gpu-weights bogus > /dev/null 2> "$W/err"; rc=$?
set -e
if [ $rc -ne 2 ] || ! grep -q "packed-f32" "$W/err"; then echo "FAILED: --gpu-weights bogus: rc $rc: $(cat "$W/err")"; fail=1; else echo "ok   --gpu-weights bogus refused (exit 2)"; fi
for g in auto packed packed-f32 bf16 f32; do
  "$BIN" $E --gpu-weights $g > "$W/$g.json" || { echo "FAILED: --gpu-weights $g"; fail=1; continue; }
done
python3 - "$W" <<'PY' || fail=1
import json, sys
w = sys.argv[1]
r = [json.load(open("%s/%s.json" % (w, g))) for g in ("auto", "packed", "packed-f32", "bf16", "f32")]
bad = len(set(x["nll"] for x in r)) != 1 or any("gpu_weights" in x or x["device"] != "cpu" for x in r)
print(("FAILED" if bad else "ok  "), "CPU eval with every --gpu-weights value: nll", r[0]["nll"], "(identical, device cpu)")
sys.exit(1 if bad else 0)
PY
set +e
"$BIN" generate --model "$W/llama" --steps 4 --gpu-weights nope > /dev/null 2>&1; rc=$?
set -e
[ $rc -eq 2 ] && echo "ok   generate --gpu-weights nope refused" || { echo "FAILED: generate rc $rc"; fail=1; }
# job key: a bad value fails the parse naming the key (before any stage runs)
sed -e "s#^model: models/#model: $SRC/jobs/models/#" -e "s#^tokenizer: models/#tokenizer: $SRC/jobs/models/#" \
    -e "s#data: data/#data: $SRC/jobs/data/#" "$SRC/jobs/stories260k.yaml" |
  awk '{print} /kv_codecs: \[fp16, tq4\]/ {print "    gpu_weights: sideways"}' > "$W/bad.yaml"
set +e
"$BIN" run "$W/bad.yaml" --run-dir "$W/run" > "$W/bad.log" 2>&1; rc=$?
set -e
if [ $rc -eq 0 ] || ! grep -q "stages.validate.gpu_weights must be" "$W/bad.log"; then
  echo "FAILED: job with gpu_weights: sideways: rc $rc"; cat "$W/bad.log"; fail=1
else
  echo "ok   job key gpu_weights: sideways refused: $(grep -o 'stages.validate.gpu_weights must be[^,]*' "$W/bad.log" | head -1)"
fi
# an explicit gpu_weights (or device) is an input of the validate stage: changing it redoes validate only;
# auto adds nothing to the fingerprint (runs made before the key existed stay up to date)
mk() { # mk FILE GPU_WEIGHTS_LINE
  sed -e "s#^model: models/#model: $SRC/jobs/models/#" -e "s#^tokenizer: models/#tokenizer: $SRC/jobs/models/#" \
      -e "s#data: data/#data: $SRC/jobs/data/#" "$SRC/jobs/stories260k.yaml" |
    awk -v l="$2" '{print} /kv_codecs: \[fp16, tq4\]/ && l != "" {print "    " l}' > "$1"
}
mk "$W/j0.yaml" ""
mk "$W/j1.yaml" "gpu_weights: packed-f32"
mk "$W/j2.yaml" "gpu_weights: auto"
"$BIN" run "$W/j0.yaml" --run-dir "$W/fp" > "$W/fp0.log" 2>&1 || { echo "FAILED: first run"; tail -5 "$W/fp0.log"; fail=1; }
"$BIN" run "$W/j1.yaml" --run-dir "$W/fp" > "$W/fp1.log" 2>&1 || { echo "FAILED: run with packed-f32"; fail=1; }
"$BIN" run "$W/j2.yaml" --run-dir "$W/fp" > "$W/fp2.log" 2>&1 || { echo "FAILED: run with auto"; fail=1; }
"$BIN" run "$W/j0.yaml" --run-dir "$W/fp" > "$W/fp3.log" 2>&1 || { echo "FAILED: run without the key"; fail=1; }
if grep -q "stage validate: its inputs changed" "$W/fp1.log" && ! grep -q "stage quantize: its inputs changed" "$W/fp1.log" &&
   grep -q "stage validate: its inputs changed" "$W/fp2.log" && grep -q "stage validate: up to date" "$W/fp3.log"; then
  echo "ok   gpu_weights packed-f32 redoes validate only; back to auto redoes it again; auto == no key (up to date)"
else
  echo "FAILED: validate fingerprint with gpu_weights"; grep -h "stage validate\|stage quantize" "$W"/fp[123].log; fail=1
fi
exit $fail
