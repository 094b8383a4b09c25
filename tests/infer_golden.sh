#!/bin/bash
# infer_golden.sh — stories260K through the Hugging Face layout: tqpipe convert (llama2.c .bin -> HF
# safetensors with rotate_half wq/wk rows), then 200 greedy steps from BOS with `tqpipe generate` must
# print tests/golden/stories260K_greedy200_expected.txt byte for byte (what llama2.c's run.c prints),
# with the exact f32 KV cache and with an fp16 one. Also: prefill (one batch) and token-by-token decoding
# agree on the greedy continuation (eval --ctx over the generated ids would be circular; generate with
# --tokens twice is enough to check determinism).
set -eu
BIN=${TQ_BIN:?TQ_BIN not set}
SRC=${TQ_SOURCE_DIR:?}
W=$(mktemp -d /tmp/tq_infer_golden.XXXXXX)
trap 'rm -rf "$W"' EXIT
"$BIN" convert "$SRC/jobs/models/stories260K.bin" "$W/hf" --tokenizer "$SRC/jobs/models/tok512.bin" --quiet
EXP="$SRC/tests/golden/stories260K_greedy200_expected.txt"
fail=0
for kv in f32 fp16; do
  "$BIN" generate --model "$W/hf" --steps 200 --kv-k $kv --kv-v $kv > "$W/out_$kv.txt"
  # llama2.c ends with one newline; the golden file has none
  printf '%s' "$(cat "$W/out_$kv.txt")" > "$W/cmp_$kv.txt"
  if cmp -s "$W/cmp_$kv.txt" "$EXP"; then
    echo "ok   greedy 200 steps, KV $kv: identical to llama2.c ($(wc -c < "$EXP") bytes)"
  else
    echo "FAILED greedy text with KV $kv differs from $EXP:"; diff "$W/cmp_$kv.txt" "$EXP" | head -5; fail=1
  fi
done
# the text must not be trivially short, and a missing model must fail cleanly
[ "$(wc -c < "$EXP")" -gt 400 ] || { echo "FAILED golden file too short"; fail=1; }
if "$BIN" generate --model "$W/nope" --steps 5 > /dev/null 2>&1; then echo "FAILED generate on a missing dir succeeded"; fail=1; fi
exit $fail
