#!/bin/bash
# infer_hybrid.sh — the hybrid Qwen3.5 / Qwen3-Next forward pass (helper "hybrid"). Tiny synth
# checkpoints (tests/infer_hybrid_cfg.py: 8 layers, 2 of them full attention, f32, norms in the
# zero-centred form of real checkpoints, checked) of qwen3_5 (dense), qwen3_5_moe (per-expert and fused
# experts) and qwen3_next (fused qkvz/ba projections, shared expert, one dense layer):
#   1. mean NLL of 100 random tokens in windows of 32 (f32 KV): C eval vs numpy fp64 (tests/infer_ref.py)
#      agree to 1e-6 relative;
#   2. test_hybrid (arg 1): prefill == token-by-token decode == chunks, reset, layer split, state and KV sizes;
#   3. eval with tq4/tq3 KV: kv_bytes_per_token counts the full-attention layers only, and the metrics are
#      the same under mpirun -np 2 (--parallel layers and seq) as with one rank.
# Needs python3 + numpy (exit 77 otherwise).
set -eu
BIN=${TQ_BIN:?TQ_BIN not set}
SRC=${TQ_SOURCE_DIR:?}
TEST_HYBRID=${1:?usage: infer_hybrid.sh PATH/test_hybrid}
python3 -c 'import numpy' 2>/dev/null || { echo "numpy missing: skipped"; exit 77; }
W=$(mktemp -d /tmp/tq_infer_hybrid.XXXXXX)
trap 'rm -rf "$W"' EXIT
python3 "$SRC/tests/infer_hybrid_cfg.py" "$SRC" "$W"
python3 -c "import numpy as np; np.random.default_rng(1).integers(0, 512, size=100).astype('<i4').tofile('$W/rand.tok')"
for fam in qwen3_5 qwen3_5_moe qwen3_next; do
  "$BIN" synth --config "$W/$fam.json" --dtype f32 --shard-size 0 --seed 3 "$W/$fam" > /dev/null
done
"$BIN" synth --config "$W/qwen3_5_moe.json" --dtype f32 --shard-size 0 --seed 3 --fused-experts "$W/qwen3_5_moe_fused" > /dev/null
python3 "$SRC/tests/infer_hybrid_cfg.py" --check-norms "$W/qwen3_5" "$W/qwen3_5_moe" "$W/qwen3_5_moe_fused" "$W/qwen3_next"
fail=0
js() { python3 -c "import json,sys; d=json.load(sys.stdin); print(' '.join(str(d[k]) for k in sys.argv[1:]))" "$@"; }
for fam in qwen3_5 qwen3_5_moe qwen3_5_moe_fused qwen3_next; do
  c=$("$BIN" eval --device cpu --model "$W/$fam" --data "$W/rand.tok" --ctx 32 --kv-k f32 --kv-v f32 --no-ref --json --quiet | js nll)
  r=$(python3 "$SRC/tests/infer_ref.py" "$W/$fam" "$W/rand.tok" 32 | cut -d' ' -f1)
  if python3 -c "import sys; sys.exit(0 if abs($c - $r) <= 1e-6 * abs($r) else 1)"; then
    echo "ok   $fam: nll C $c  numpy $r"
  else
    echo "FAILED $fam: nll C $c  numpy $r"; fail=1
  fi
  "$TEST_HYBRID" "$W/$fam" || fail=1
done
# KV bytes: 2 full-attention layers x 2 KV heads x (tq4 K 18 + tq3 V 14 bytes at head_dim 32) = 128
one=$("$BIN" eval --device cpu --model "$W/qwen3_next" --data "$W/rand.tok" --ctx 32 --kv-k tq4 --kv-v tq3 --json --quiet |
      js nll kl top1 kv_bytes_per_token)
echo "np 1: nll kl top1 kv_bytes = $one"
[ "$(echo "$one" | cut -d' ' -f4)" = 128 ] || { echo "FAILED kv_bytes_per_token, want 128"; fail=1; }
if command -v mpirun > /dev/null; then
  for par in layers seq; do
    two=$(mpirun --allow-run-as-root --oversubscribe -np 2 "$BIN" eval --device cpu --model "$W/qwen3_next" --data "$W/rand.tok" \
          --ctx 32 --kv-k tq4 --kv-v tq3 --parallel $par --json --quiet | js nll kl top1 kv_bytes_per_token)
    if python3 -c "
import sys
a = [float(v) for v in sys.argv[1].split()]; b = [float(v) for v in sys.argv[2].split()]
sys.exit(0 if all(abs(x - y) <= 1e-6 * max(abs(x), 1e-12) for x, y in zip(a, b)) else 1)" "$one" "$two"; then
      echo "ok   np 2 --parallel $par: $two"
    else
      echo "FAILED np 2 --parallel $par: $two vs np 1: $one"; fail=1
    fi
  done
fi
exit $fail
