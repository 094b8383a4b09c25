#!/bin/bash
# gpufwd_golden.sh — the GPU forward pass reproduces llama2.c's greedy text: stories260K converted to the
# Hugging Face layout, 200 greedy steps from BOS with `tqpipe generate --device gpu` (fp32 weights on the
# GPU, cuBLAS fp32 GEMMs) must print tests/golden/stories260K_greedy200_expected.txt byte for byte, with
# the f32 and the fp16 KV cache on the GPU. Exit 77 (skipped) without a GPU or in a build without CUDA.
set -eu
BIN=${TQ_BIN:?TQ_BIN not set}
SRC=${TQ_SOURCE_DIR:?}
W=$(mktemp -d /tmp/tq_gpufwd_golden.XXXXXX)
trap 'rm -rf "$W"' EXIT
"$BIN" convert "$SRC/jobs/models/stories260K.bin" "$W/hf" --tokenizer "$SRC/jobs/models/tok512.bin" --quiet
if ! "$BIN" generate --model "$W/hf" --steps 2 --tokens --device gpu > /dev/null 2> "$W/probe.err"; then
  if grep -q "no GPU visible\|no CUDA" "$W/probe.err"; then echo "no GPU: skipped"; exit 77; fi
  cat "$W/probe.err"; exit 1
fi
EXP="$SRC/tests/golden/stories260K_greedy200_expected.txt"
fail=0
for kv in f32 fp16; do
  "$BIN" generate --model "$W/hf" --steps 200 --kv-k $kv --kv-v $kv --device gpu > "$W/out_$kv.txt"
  printf '%s' "$(cat "$W/out_$kv.txt")" > "$W/cmp_$kv.txt"
  if cmp -s "$W/cmp_$kv.txt" "$EXP"; then
    echo "ok   GPU greedy 200 steps, KV $kv: identical to llama2.c ($(wc -c < "$EXP") bytes)"
  else
    echo "FAILED GPU greedy text with KV $kv differs from $EXP:"; diff "$W/cmp_$kv.txt" "$EXP" | head -5; fail=1
  fi
done
[ "$(wc -c < "$EXP")" -gt 400 ] || { echo "FAILED golden file too short"; fail=1; }
exit $fail
