#!/bin/bash
# gpufwd_eval.sh — `tqpipe eval --device gpu` against `--device cpu`, and GPU rank-count invariance.
#  1. families: llama (stories260K), qwen3_moe (jobs/configs/qwen3-moe-tiny.json), qwen3 (dense, q/k
#     norms) and qwen2 (q/k/v biases, tied head) f32 synthetic checkpoints; mean NLL of 2000 TinyStories
#     tokens (ctx 128, f32 KV, fp32 GPU weights) on GPU and CPU must agree to 1e-5 relative; with tq4 keys /
#     tq3 values (stories260K) PPL to 1e-3 relative.
#  2. ranks: stories260K, KV tq4/int8 against the fp16 reference, on the GPU: mpirun -np 2 --parallel
#     layers (the ranks share the GPU: activations through the host) and --parallel seq give PPL, KL and
#     top-1 equal to -np 1 to 1e-6 relative.
# Exit 77 (skipped) without a GPU or in a build without CUDA; needs python3 (json only).
set -eu
BIN=${TQ_BIN:?TQ_BIN not set}
SRC=${TQ_SOURCE_DIR:?}
W=$(mktemp -d /tmp/tq_gpufwd_eval.XXXXXX)
trap 'rm -rf "$W"' EXIT
MPI="mpirun --allow-run-as-root --oversubscribe --mca btl_vader_single_copy_mechanism none"
"$BIN" convert "$SRC/jobs/models/stories260K.bin" "$W/llama" --tokenizer "$SRC/jobs/models/tok512.bin" --quiet
DATA="$SRC/jobs/data/tinystories_valid.txt"
TOK="$SRC/jobs/models/tok512.bin"
if ! "$BIN" eval --model "$W/llama" --data "$DATA" --ctx 32 --max-tokens 64 --no-ref --device gpu --quiet > /dev/null 2> "$W/probe.err"; then
  if grep -q "no GPU visible\|no CUDA" "$W/probe.err"; then echo "no GPU: skipped"; exit 77; fi
  cat "$W/probe.err"; exit 1
fi
python3 - "$SRC/jobs/configs/qwen3-moe-tiny.json" "$W" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); w = sys.argv[2]
d = dict(c); d["model_type"] = "qwen3"; d["architectures"] = ["Qwen3ForCausalLM"]
for k in ["num_experts", "num_experts_per_tok", "moe_intermediate_size", "decoder_sparse_step", "mlp_only_layers",
          "norm_topk_prob", "_tqpipe_note"]:
    d.pop(k, None)
json.dump(d, open(w + "/qwen3.json", "w"))
e = dict(d); e["model_type"] = "qwen2"; e["architectures"] = ["Qwen2ForCausalLM"]; e.pop("head_dim"); e["tie_word_embeddings"] = True
json.dump(e, open(w + "/qwen2.json", "w"))
PY
cp "$SRC/jobs/configs/qwen3-moe-tiny.json" "$W/qwen3_moe.json"
fail=0
cmp_json() { # a.json b.json tolerance keys...
  python3 - "$@" <<'PY'
import json, sys
a = json.load(open(sys.argv[1])); b = json.load(open(sys.argv[2])); tol = float(sys.argv[3])
bad = [k for k in sys.argv[4:] if abs(a[k] - b[k]) > tol * max(abs(a[k]), 1e-12)]
print(("FAILED" if bad else "ok  "), " ".join("%s %.9g/%.9g" % (k, a[k], b[k]) for k in sys.argv[4:]), "device", a.get("device"), b.get("device"), bad or "")
sys.exit(1 if bad or a.get("device") == b.get("device") else 0)
PY
}
for fam in llama qwen3_moe qwen3 qwen2; do
  if [ "$fam" != llama ]; then "$BIN" synth --config "$W/$fam.json" --dtype f32 --shard-size 0 --seed 3 "$W/$fam" > /dev/null; fi
  A="eval --model $W/$fam --data $DATA --tokenizer $TOK --ctx 128 --max-tokens 2000 --kv-k f32 --kv-v f32 --no-ref --json --quiet"
  "$BIN" $A --device cpu > "$W/$fam.cpu.json"
  "$BIN" $A --device gpu > "$W/$fam.gpu.json"
  echo -n "$fam f32 KV: "; cmp_json "$W/$fam.cpu.json" "$W/$fam.gpu.json" 1e-5 nll || fail=1
done
A="eval --model $W/llama --data $DATA --ctx 128 --max-tokens 3000 --kv-k tq4 --kv-v tq3 --json --quiet"
"$BIN" $A --device cpu > "$W/tq.cpu.json"
"$BIN" $A --device gpu > "$W/tq.gpu.json"
echo -n "llama tq4/tq3 KV: "; cmp_json "$W/tq.cpu.json" "$W/tq.gpu.json" 1e-3 ppl ref_ppl || fail=1

ARGS="eval --model $W/llama --data $DATA --ctx 128 --max-tokens 4000 --kv-k tq4 --kv-v int8 --json --quiet --device gpu"
"$BIN" $ARGS --parallel seq > "$W/base.json"
for mode in layers seq; do
  timeout 240 $MPI -np 2 "$BIN" $ARGS --parallel $mode > "$W/$mode.json" 2> "$W/$mode.err" || { echo "FAILED np 2 $mode"; cat "$W/$mode.err"; fail=1; continue; }
  python3 - "$W/base.json" "$W/$mode.json" "$mode" <<'PY' || fail=1
import json, sys
a = json.load(open(sys.argv[1])); b = json.load(open(sys.argv[2]))
bad = [k for k in ("ppl", "kl", "top1", "ref_ppl") if abs(a[k] - b[k]) > 1e-6 * max(abs(a[k]), 1e-12)]
bad += ["device"] if b["device"] != "gpu" else []
bad += ["ranks"] if b["ranks"] != 2 or b["parallel"] != sys.argv[3] else []
print(("FAILED" if bad else "ok  "), "GPU np 2 %-6s ppl %.9f kl %.9g top1 %.6f (np 1: %.9f %.9g %.6f) comm %s" % (
    sys.argv[3], b["ppl"], b["kl"], b["top1"], a["ppl"], a["kl"], a["top1"], b.get("gpu_comm", "-")), bad or "")
sys.exit(1 if bad else 0)
PY
done
exit $fail
