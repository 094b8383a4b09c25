#!/bin/bash
# gpupacked.sh — validation on the GPU with an artifact's weights kept packed (helper "gpupacked").
#  1. runs jobs/stories260k.yaml (paths made absolute, stages.validate.gpu_weights: packed) into a temp run dir:
#     the allocator's mixed-codec artifact; its validate stage must have run on the GPU with packed weights;
#  2. test_gpupacked (arg 1) on that artifact, on tiny qwen3_5 / qwen3_5_moe (fused experts) synth checkpoints
#     it packs with mixed codecs, and (--big) on a 44M-parameter synthetic llama for the memory figures;
#  3. eval --artifact on the GPU (default --gpu-weights: packed; packed-f32; bf16) against --device cpu: mean NLL
#     (packed-f32 to 1e-6 relative, packed and bf16 to 5e-4), gpu_weights / gpu_weight_bytes in the JSON, packed
#     bytes below bf16; with the original as reference (fp16 KV) KL within 1% of the CPU's; mpirun -np 2
#     --parallel layers (packed embedding on rank 0, packed head on rank 1) equal to -np 1 to 1e-6.
# First H100 run (bounds set from it, ~10x margin): eval nll rel packed 8.58e-05, packed-f32 3.6e-08, bf16 4.42e-05;
# KL 0.0575291 (GPU: packed model, bf16 reference) vs 0.0574539 (CPU), rel 1.31e-03; GPU bytes (weights + scratch)
# packed 228048, packed-f32 293584, bf16 521472; np 2 layers equal to np 1. Whole test 31 s.
# Exit 77 (skipped) without a GPU or in a build without CUDA; needs python3 (json only).
set -eu
BIN=${TQ_BIN:?TQ_BIN not set}
SRC=${TQ_SOURCE_DIR:?}
TEST=${1:?usage: gpupacked.sh PATH/test_gpupacked}
export TQ_GPU_HYBRID=1
W=$(mktemp -d /tmp/tq_gpupacked.XXXXXX)
trap 'rm -rf "$W"' EXIT
MPI="mpirun --allow-run-as-root --oversubscribe --mca btl_vader_single_copy_mechanism none"
DATA="$SRC/jobs/data/tinystories_valid.txt"
TOK="$SRC/jobs/models/tok512.bin"
"$BIN" convert "$SRC/jobs/models/stories260K.bin" "$W/llama" --tokenizer "$TOK" --quiet
if ! "$BIN" eval --model "$W/llama" --data "$DATA" --ctx 32 --max-tokens 64 --no-ref --device gpu --quiet > /dev/null 2> "$W/probe.err"; then
  if grep -q "no GPU visible\|no CUDA" "$W/probe.err"; then echo "no GPU: skipped"; exit 77; fi
  cat "$W/probe.err"; exit 1
fi
fail=0

# 1. the stories260K run: allocator plan (mixed codecs), validate on the GPU with packed weights
sed -e "s#^model: models/#model: $SRC/jobs/models/#" -e "s#^tokenizer: models/#tokenizer: $SRC/jobs/models/#" \
    -e "s#data: data/#data: $SRC/jobs/data/#" "$SRC/jobs/stories260k.yaml" |
  awk '{print} /kv_codecs: \[fp16, tq4\]/ {print "    gpu_weights: packed"}' > "$W/job.yaml"
grep -q "gpu_weights: packed" "$W/job.yaml" || { echo "FAILED: could not add gpu_weights to the job"; exit 1; }
t0=$(date +%s)
"$BIN" run "$W/job.yaml" --run-dir "$W/run" > "$W/run.log" 2>&1 || { cat "$W/run.log"; exit 1; }
grep -E "^(validate|allocate) " "$W/run.log" || true
echo "stories260K run: $(( $(date +%s) - t0 )) s"
python3 - "$W/run/validate/metrics.json" <<'PY' || fail=1
import json, sys
m = json.load(open(sys.argv[1]))
bad = [r.get("kv_k") for r in m["runs"] if r.get("device") != "gpu" or r.get("gpu_weights") != "packed"]
for r in m["runs"]:
    print("validate stage KV %s: device %s, gpu_weights %s (%s B), PPL %.6f, ref %.6f, KL %.6g, top-1 %.4f" % (
        r["kv_k"], r.get("device"), r.get("gpu_weights"), r.get("gpu_weight_bytes"), r["ppl"], r["ref_ppl"], r["kl"], r["top1"]))
print("FAILED: validate stage not on the GPU with packed weights" if bad else "ok   validate stage on the GPU, packed")
sys.exit(1 if bad else 0)
PY

# 2. the C test: stories260K artifact, hybrid synthetic (mixed codecs), memory of a larger synthetic llama
python3 "$SRC/tests/infer_hybrid_cfg.py" "$SRC" "$W"
"$BIN" synth --config "$W/qwen3_5.json" --dtype f32 --shard-size 0 --seed 3 "$W/qwen3_5" > /dev/null
"$BIN" synth --config "$W/qwen3_5_moe.json" --dtype f32 --shard-size 0 --seed 3 --fused-experts "$W/qwen3_5_moe_fused" > /dev/null
cat > "$W/big.json" <<'JSON'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 4096, "hidden_size": 768,
 "intermediate_size": 2048, "num_hidden_layers": 6, "num_attention_heads": 12, "num_key_value_heads": 4,
 "head_dim": 64, "hidden_act": "silu", "max_position_embeddings": 2048, "rms_norm_eps": 1e-05,
 "rope_theta": 10000.0, "tie_word_embeddings": false, "torch_dtype": "float32"}
JSON
"$BIN" synth --config "$W/big.json" --dtype f32 --shard-size 0 --seed 5 "$W/big" > /dev/null
t0=$(date +%s)
"$TEST" "$W/run/artifact" "$W/qwen3_5" "$W/qwen3_5_moe_fused" --big "$W/big" || fail=1
echo "test_gpupacked: $(( $(date +%s) - t0 )) s"

# 3. eval on the GPU vs the CPU, same artifact
A="eval --artifact $W/run/artifact --data $DATA --tokenizer $TOK --ctx 128 --max-tokens 3000 --kv-k f32 --kv-v f32 --no-ref --json --quiet"
"$BIN" $A --device cpu > "$W/cpu.json"
"$BIN" $A --device gpu > "$W/gpu.json"
"$BIN" $A --device gpu --gpu-weights packed-f32 > "$W/gpuf.json"
"$BIN" $A --device gpu --gpu-weights bf16 > "$W/gpub.json"
R="eval --artifact $W/run/artifact --ref $W/run/model --data $DATA --tokenizer $TOK --ctx 128 --max-tokens 3000 --json --quiet"
"$BIN" $R --device cpu > "$W/rcpu.json"
"$BIN" $R --device gpu > "$W/rgpu.json"
"$BIN" $R --device gpu --parallel seq > "$W/np1.json"
timeout 240 $MPI -np 2 "$BIN" $R --device gpu --parallel layers > "$W/np2.json" 2> "$W/np2.err" || { echo "FAILED np 2"; cat "$W/np2.err"; fail=1; }
python3 - "$W" <<'PY' || fail=1
import json, sys, os
w = sys.argv[1]
J = lambda n: json.load(open(os.path.join(w, n + ".json")))
cpu, gpu, gpuf, gpub, rcpu, rgpu, np1 = (J(n) for n in ("cpu", "gpu", "gpuf", "gpub", "rcpu", "rgpu", "np1"))
bad = []
def rel(a, b): return abs(a - b) / max(abs(a), 1e-12)
for name, g, tol in (("packed", gpu, 5e-4), ("packed-f32", gpuf, 1e-6), ("bf16", gpub, 5e-4)):
    r = rel(cpu["nll"], g["nll"])
    print("eval GPU %-10s nll %.9f vs CPU %.9f (rel %.3g, bound %g), gpu_weights %s, %d B on the GPU" % (
        name, g["nll"], cpu["nll"], r, tol, g.get("gpu_weights"), g.get("gpu_weight_bytes", -1)))
    if r > tol or g.get("device") != "gpu" or g.get("gpu_weights") != name: bad.append(name)
if not gpu["gpu_weight_bytes"] < gpub["gpu_weight_bytes"]: bad.append("bytes")
if "gpu_weights" in cpu: bad.append("cpu json")
k = rel(rcpu["kl"], rgpu["kl"])
print("eval vs reference (fp16 KV): KL GPU %.6g (packed, reference bf16) vs CPU %.6g (rel %.3g), top-1 %.4f vs %.4f, PPL %.6f vs %.6f" % (
    rgpu["kl"], rcpu["kl"], k, rgpu["top1"], rcpu["top1"], rgpu["ppl"], rcpu["ppl"]))
if k > 0.01: bad.append("kl")
try:
    np2 = J("np2")
    d = [x for x in ("ppl", "kl", "top1", "ref_ppl") if rel(np1[x], np2[x]) > 1e-6]
    print("eval GPU packed np 2 layers: ppl %.9f kl %.9g top1 %.6f (np 1: %.9f %.9g %.6f) %s" % (
        np2["ppl"], np2["kl"], np2["top1"], np1["ppl"], np1["kl"], np1["top1"], d or "ok"))
    if d or np2.get("gpu_weights") != "packed" or np2.get("ranks") != 2: bad.append("np2")
except Exception as e:
    print("np 2:", e); bad.append("np2")
print(("FAILED " + " ".join(bad)) if bad else "ok   eval GPU packed")
sys.exit(1 if bad else 0)
PY
exit $fail
