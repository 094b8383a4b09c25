#!/usr/bin/env bash
# test_convert_cli.sh — `tqpipe convert` end to end through the binary: llama2.c -> HF (f32) -> llama2.c
# gives back the original weight bytes (cmp of the first 1,040,156 bytes = header + 260,032 fp32 weights);
# --help exits 0; a truncated input exits 1 naming the file. Env: TQ_BIN, TQ_SOURCE_DIR (set by CTest).
set -euo pipefail
: "${TQ_BIN:?TQ_BIN not set}" "${TQ_SOURCE_DIR:?TQ_SOURCE_DIR not set}"
BIN_IN="$TQ_SOURCE_DIR/jobs/models/stories260K.bin"
TOK="$TQ_SOURCE_DIR/jobs/models/tok512.bin"
[[ -f "$BIN_IN" && -f "$TOK" ]] || { echo "skip: bundled model missing"; exit 77; }
T=$(mktemp -d "${TMPDIR:-/tmp}/tq_conv_cli.XXXXXX")
trap 'rm -rf "$T"' EXIT

"$TQ_BIN" convert --help | grep -q "usage: tqpipe convert"
"$TQ_BIN" convert "$BIN_IN" "$T/hf" --tokenizer "$TOK" | tee "$T/log"
grep -q "48 tensors\|47 tensors" "$T/log"
for f in model.safetensors config.json tokenizer.bin; do [[ -s "$T/hf/$f" ]] || { echo "FAILED: missing $f"; exit 1; }; done
cmp "$TOK" "$T/hf/tokenizer.bin"
"$TQ_BIN" convert --reverse "$T/hf" "$T/back.bin"
[[ $(stat -c %s "$T/back.bin") -eq 1056540 ]] || { echo "FAILED: size of back.bin"; exit 1; }
cmp -n 1040156 "$BIN_IN" "$T/back.bin"
ls "$T" "$T/hf" | grep -q '\.tmp\.' && { echo "FAILED: temp files left"; exit 1; }

head -c 500000 "$BIN_IN" > "$T/trunc.bin"
set +e
"$TQ_BIN" convert "$T/trunc.bin" "$T/hf2" 2> "$T/err"
rc=$?
set -e
[[ $rc -eq 1 ]] || { echo "FAILED: truncated input exited $rc"; exit 1; }
grep -q "trunc.bin" "$T/err" || { echo "FAILED: error does not name the file"; cat "$T/err"; exit 1; }
[[ ! -e "$T/hf2/model.safetensors" ]] || { echo "FAILED: output written for bad input"; exit 1; }
echo "ok: convert CLI round trip"
