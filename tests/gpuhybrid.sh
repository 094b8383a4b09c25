#!/bin/bash
# gpuhybrid.sh — the GPU forward pass of the hybrid families (helper "gpuhybrid"). Tiny synth checkpoints
# (tests/infer_hybrid_cfg.py: 8 layers, 2 of them gated full attention, DeltaNet 2 key / 4 value heads of
# 16, f32) of qwen3_5, qwen3_5_moe (per-expert and fused experts), qwen3_next (interleaved qkvz/ba, shared
# expert, a dense layer). TQ_GPU_HYBRID=1 forces the GPU path whatever the build default.
#  1. test_gpuhybrid (arg 1) on the four checkpoints: CPU vs GPU logits, GPU decode / chunks / reset,
#     layer split, bf16 and packed tq4 weights;
#  2. eval --device gpu vs --device cpu, 512 random tokens, ctx 64: mean NLL with f32 KV to 1e-5 relative,
#     PPL with tq4 keys / tq3 values to 1e-3 relative;
#  3. qwen3_next, tq4/tq3 KV against the fp16 reference on the GPU: mpirun -np 2 --parallel layers and seq
#     give PPL, KL and top-1 equal to -np 1 to 1e-6 relative.
# Exit 77 (skipped) without a GPU or in a build without CUDA; needs python3 (json, struct only).
set -eu
BIN=${TQ_BIN:?TQ_BIN not set}
SRC=${TQ_SOURCE_DIR:?}
TEST=${1:?usage: gpuhybrid.sh PATH/test_gpuhybrid}
export TQ_GPU_HYBRID=1
W=$(mktemp -d /tmp/tq_gpuhybrid.XXXXXX)
trap 'rm -rf "$W"' EXIT
MPI="mpirun --allow-run-as-root --oversubscribe --mca btl_vader_single_copy_mechanism none"
python3 "$SRC/tests/infer_hybrid_cfg.py" "$SRC" "$W"
python3 -c "
import random, struct
r = random.Random(7)
open('$W/rand.tok', 'wb').write(struct.pack('<512i', *[r.randrange(512) for _ in range(512)]))"
for fam in qwen3_5 qwen3_5_moe qwen3_next; do
  "$BIN" synth --config "$W/$fam.json" --dtype f32 --shard-size 0 --seed 3 "$W/$fam" > /dev/null
done
"$BIN" synth --config "$W/qwen3_5_moe.json" --dtype f32 --shard-size 0 --seed 3 --fused-experts "$W/qwen3_5_moe_fused" > /dev/null
if ! "$BIN" eval --model "$W/qwen3_5" --data "$W/rand.tok" --ctx 32 --max-tokens 64 --no-ref --device gpu --quiet > /dev/null 2> "$W/probe.err"; then
  if grep -q "no GPU visible\|no CUDA" "$W/probe.err"; then echo "no GPU: skipped"; exit 77; fi
  cat "$W/probe.err"; exit 1
fi
fail=0
"$TEST" "$W/qwen3_5" "$W/qwen3_5_moe" "$W/qwen3_5_moe_fused" "$W/qwen3_next" || fail=1
cmp_json() { # a.json b.json tolerance keys...
  python3 - "$@" <<'PY'
import json, sys
a = json.load(open(sys.argv[1])); b = json.load(open(sys.argv[2])); tol = float(sys.argv[3])
bad = [k for k in sys.argv[4:] if abs(a[k] - b[k]) > tol * max(abs(a[k]), 1e-12)]
print(("FAILED" if bad else "ok  "), " ".join("%s %.9g/%.9g" % (k, a[k], b[k]) for k in sys.argv[4:]), "device", a.get("device"), b.get("device"), bad or "")
sys.exit(1 if bad or a.get("device") != "cpu" or b.get("device") != "gpu" else 0)
PY
}
for fam in qwen3_5 qwen3_5_moe qwen3_5_moe_fused qwen3_next; do
  A="eval --model $W/$fam --data $W/rand.tok --ctx 64 --kv-k f32 --kv-v f32 --no-ref --json --quiet"
  "$BIN" $A --device cpu > "$W/$fam.cpu.json"
  "$BIN" $A --device gpu > "$W/$fam.gpu.json"
  echo -n "$fam f32 KV: "; cmp_json "$W/$fam.cpu.json" "$W/$fam.gpu.json" 1e-5 nll || fail=1
  A="eval --model $W/$fam --data $W/rand.tok --ctx 64 --kv-k tq4 --kv-v tq3 --json --quiet"
  "$BIN" $A --device cpu > "$W/$fam.tcpu.json"
  "$BIN" $A --device gpu > "$W/$fam.tgpu.json"
  echo -n "$fam tq4/tq3 KV: "; cmp_json "$W/$fam.tcpu.json" "$W/$fam.tgpu.json" 1e-3 ppl ref_ppl kv_bytes_per_token || fail=1
done
ARGS="eval --model $W/qwen3_next --data $W/rand.tok --ctx 64 --kv-k tq4 --kv-v tq3 --json --quiet --device gpu"
"$BIN" $ARGS --parallel seq > "$W/base.json"
for mode in layers seq; do
  timeout 120 $MPI -np 2 "$BIN" $ARGS --parallel $mode > "$W/$mode.json" 2> "$W/$mode.err" || { echo "FAILED np 2 $mode"; cat "$W/$mode.err"; fail=1; continue; }
  python3 - "$W/base.json" "$W/$mode.json" "$mode" <<'PY' || fail=1
import json, sys
a = json.load(open(sys.argv[1])); b = json.load(open(sys.argv[2]))
bad = [k for k in ("ppl", "kl", "top1", "ref_ppl") if abs(a[k] - b[k]) > 1e-6 * max(abs(a[k]), 1e-12)]
bad += ["device"] if b["device"] != "gpu" else []
bad += ["ranks"] if b["ranks"] != 2 or b["parallel"] != sys.argv[3] else []
print(("FAILED" if bad else "ok  "), "qwen3_next GPU np 2 %-6s ppl %.9f kl %.9g top1 %.6f (np 1: %.9f %.9g %.6f)" % (
    sys.argv[3], b["ppl"], b["kl"], b["top1"], a["ppl"], a["kl"], a["top1"]), bad or "")
sys.exit(1 if bad else 0)
PY
done
exit $fail
