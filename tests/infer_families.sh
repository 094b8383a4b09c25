#!/bin/bash
# infer_families.sh — the C forward pass against an independent float64 numpy implementation
# (tests/infer_ref.py) on llama (stories260K via convert), qwen3_moe (jobs/configs/qwen3-moe-tiny.json:
# router, top-2 of 8 experts, norm_topk_prob, a dense layer 0, untied head, q/k norms), qwen3 (dense,
# q/k norms) and qwen2 (q/k/v biases, tied head) synthetic checkpoints (tqpipe synth, f32): mean NLL of
# 100 random tokens in windows of 32 (exact f32 KV cache) must agree to 1e-5 relative.
# Needs python3 + numpy (exit 77 otherwise).
set -eu
BIN=${TQ_BIN:?TQ_BIN not set}
SRC=${TQ_SOURCE_DIR:?}
python3 -c 'import numpy' 2>/dev/null || { echo "numpy missing: skipped"; exit 77; }
W=$(mktemp -d /tmp/tq_infer_fam.XXXXXX)
trap 'rm -rf "$W"' EXIT
python3 - "$SRC/jobs/configs/qwen3-moe-tiny.json" "$W" <<'PY'
import json, sys
import numpy as np
c = json.load(open(sys.argv[1])); w = sys.argv[2]
d = dict(c); d["model_type"] = "qwen3"; d["architectures"] = ["Qwen3ForCausalLM"]
for k in ["num_experts", "num_experts_per_tok", "moe_intermediate_size", "decoder_sparse_step", "mlp_only_layers",
          "norm_topk_prob", "_tqpipe_note"]:
    d.pop(k, None)
json.dump(d, open(w + "/qwen3.json", "w"))
e = dict(d); e["model_type"] = "qwen2"; e["architectures"] = ["Qwen2ForCausalLM"]; e.pop("head_dim"); e["tie_word_embeddings"] = True
json.dump(e, open(w + "/qwen2.json", "w"))
np.random.default_rng(1).integers(0, 512, size=100).astype("<i4").tofile(w + "/rand.tok")
PY
cp "$SRC/jobs/configs/qwen3-moe-tiny.json" "$W/qwen3_moe.json"
"$BIN" convert "$SRC/jobs/models/stories260K.bin" "$W/llama" --quiet
fail=0
for fam in llama qwen3_moe qwen3 qwen2; do
  if [ "$fam" != llama ]; then
    "$BIN" synth --config "$W/$fam.json" --dtype f32 --shard-size 0 --seed 3 "$W/$fam" > /dev/null
  fi
  c=$("$BIN" eval --model "$W/$fam" --data "$W/rand.tok" --ctx 32 --kv-k f32 --kv-v f32 --no-ref --json --quiet |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["nll"])')
  r=$(python3 "$SRC/tests/infer_ref.py" "$W/$fam" "$W/rand.tok" 32 | cut -d' ' -f1)
  if python3 -c "import sys; sys.exit(0 if abs($c - $r) <= 1e-5 * abs($r) else 1)"; then
    echo "ok   $fam: nll C $c  numpy $r"
  else
    echo "FAILED $fam: nll C $c  numpy $r"; fail=1
  fi
done
exit $fail
