#!/bin/bash
# test_estimate_cli.sh — `tqpipe estimate`: the seed-simulation command of the README prints the corrected
# figures, --json carries the exact counts, --plot writes an SVG, directories and --plan RUN work, bad
# configs and bad options fail with a message naming the field / value. (env TQ_BIN, TQ_SOURCE_DIR)
set -u
BIN=${TQ_BIN:?TQ_BIN not set}
SRC=${TQ_SOURCE_DIR:?TQ_SOURCE_DIR not set}
CFG=$SRC/jobs/configs
T=$(mktemp -d /tmp/tq_test_estimate.XXXXXX)
trap 'rm -rf "$T"' EXIT
fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAILED $*"; fail=1; }

"$BIN" estimate --help | grep -q -- "--plot" && ok "--help" || bad "--help"
"$BIN" estimate > /dev/null 2>&1; [ $? -eq 2 ] && ok "no input -> exit 2" || bad "no input"

# the README's seed-simulation command
"$BIN" estimate "$CFG/qwen3.5-122b-a10b.json" --weights 4.8944,1.125 --kv fp16,3.5 --context 262144 > "$T/seed.txt" \
    || bad "seed command failed"
cat "$T/seed.txt"
grep -q "122,111,526,912 total, 9,771,288,576 active" "$T/seed.txt" && ok "params" || bad "params line"
grep -E -q "^4.8944 bpw +74.71 " "$T/seed.txt" && ok "74.71 GB" || bad "74.71"
grep -E -q "^1.125 bpw +17.17 " "$T/seed.txt" && ok "17.17 GB" || bad "17.17"
grep -E -q "^fp16 .* 6.442$" "$T/seed.txt" && ok "FP16 KV 6.442 GB" || bad "6.44"
grep -E -q "^3.5 bits .* 1.409$" "$T/seed.txt" && ok "3.5-bit KV 1.409 GB" || bad "1.41"
grep -E -q "^1.125 bpw +23.77 +18.74$" "$T/seed.txt" && ok "totals 23.77 / 18.74" || bad "totals row"

# JSON
"$BIN" estimate "$CFG/qwen3-next-80b-a3b.json" --json --weights tq4,bin1 --kv tq3.5 --context 4K,256K > "$T/e.json" \
    || bad "json run"
grep -q '"params_total": 79674391296' "$T/e.json" && ok "json params_total" || bad "json params"
grep -q '"kv_bytes": 1459617792.0' "$T/e.json" && ok "json exact tq3.5 KV bytes at 256K" || bad "json kv bytes"
[ "$(grep -c '"total_bytes"' "$T/e.json")" -eq 4 ] && ok "json totals: 2 weights x 1 kv x 2 contexts" || bad "json totals"
command -v python3 > /dev/null && { python3 -c "import json,sys; json.load(open(sys.argv[1]))" "$T/e.json" \
    && ok "json parses" || bad "json does not parse"; }

# plot
"$BIN" estimate "$CFG/qwen3.5-35b-a3b.json" --weights bf16,q4_k_m,bin1 --kv fp16,tq3.5 --plot "$T/p.svg" > /dev/null \
    || bad "plot run"
head -c 4 "$T/p.svg" | grep -q "<svg" && tail -1 "$T/p.svg" | grep -q "</svg>" && ok "svg written" || bad "svg"
[ "$(grep -c '<polyline' "$T/p.svg")" -eq 6 ] && ok "6 curves (3 weights x 2 kv)" || bad "curve count"
command -v python3 > /dev/null && { python3 -c "import xml.dom.minidom,sys; xml.dom.minidom.parse(sys.argv[1])" "$T/p.svg" \
    && ok "svg is well-formed XML" || bad "svg not well-formed"; }

# directory input + plan RUN/plan.txt
mkdir -p "$T/ckpt" "$T/run"
cp "$CFG/qwen3-moe-tiny.json" "$T/ckpt/config.json"
printf '# plan\nmodel.embed_tokens.weight int8\nlm_head.weight tq4\n' > "$T/run/plan.txt"
"$BIN" estimate "$T/ckpt" --plan "$T/run" --weights bf16 --kv fp16 --context 1K > "$T/plan.txt" || bad "plan run"
grep -q "^plan " "$T/plan.txt" && grep -q "111 tensors not in the plan" "$T/plan.txt" && ok "plan row" \
    || { bad "plan row"; cat "$T/plan.txt"; }
printf 'model.layers.77.mlp.gate.weight tq4\n' > "$T/run/plan.txt"
out=$("$BIN" estimate "$T/ckpt" --plan "$T/run" 2>&1); rc=$?
[ $rc -eq 1 ] && echo "$out" | grep -q "plan.txt:1" && ok "bad plan names file:line" || bad "bad plan: $out"

# bad inputs
echo '{"model_type":"qwen3_moe","hidden_size":64,"num_hidden_layers":2,"vocab_size":10,"num_attention_heads":4}' > "$T/b1.json"
out=$("$BIN" estimate "$T/b1.json" 2>&1); rc=$?
[ $rc -eq 1 ] && echo "$out" | grep -q "num_experts" && ok "missing field named: $out" || bad "missing field: $out"
echo '{"model_type":"falcon","hidden_size":64}' > "$T/b2.json"
out=$("$BIN" estimate "$T/b2.json" 2>&1); rc=$?
[ $rc -eq 1 ] && echo "$out" | grep -q "falcon" && ok "unknown architecture named: $out" || bad "unknown arch: $out"
out=$("$BIN" estimate "$CFG/qwen3-moe-tiny.json" --weights tq9 2>&1); rc=$?
[ $rc -eq 1 ] && echo "$out" | grep -q "tq9" && ok "bad codec named" || bad "bad codec: $out"
out=$("$BIN" estimate "$CFG/qwen3-moe-tiny.json" --context abc 2>&1); rc=$?
[ $rc -eq 2 ] && ok "bad context -> usage error" || bad "bad context rc $rc"
out=$("$BIN" estimate "$T/nope.json" 2>&1); rc=$?
[ $rc -eq 1 ] && echo "$out" | grep -q "nope.json" && ok "missing file named" || bad "missing file: $out"

[ $fail -eq 0 ] && echo "test_estimate_cli: all ok" || echo "test_estimate_cli: FAILED"
exit $fail
