#!/bin/bash
# gpuhybrid_bench.sh — throughput of the hybrid families' forward pass, GPU vs CPU (not a test): the real
# Qwen3.5-0.8B shapes (hidden 1024, DeltaNet 16 x 128 key / value heads, gated attention 8 x 256 heads,
# conv width 4) cut to 4 layers (3 DeltaNet + 1 full attention) and a 32000-token vocabulary, synthetic f32
# weights; `tqpipe eval --no-ref` over random tokens in windows of CTX, fp16 KV, fp32 weights (GPU also bf16).
# Prints tokens/s from the eval's own "seconds".
#   usage: gpuhybrid_bench.sh BUILD_DIR|TQPIPE_BIN [CTX] [GPU_TOKENS] [CPU_TOKENS]   (skips without a GPU)
set -eu
BIN=${1:?usage: gpuhybrid_bench.sh BUILD_DIR|TQPIPE_BIN [CTX] [GPU_TOKENS] [CPU_TOKENS]}
[ -d "$BIN" ] && BIN=$BIN/tqpipe
nvidia-smi -L >/dev/null 2>&1 || { echo "gpuhybrid: skipped (no GPU)"; exit 0; }
CTX=${2:-2048}
GT=${3:-16384}
CT=${4:-2048}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
export TQ_GPU_HYBRID=1
W=$(mktemp -d /tmp/tq_gpuhybrid_bench.XXXXXX)
trap 'rm -rf "$W"' EXIT
python3 - "$SRC/jobs/configs/qwen3.5-0.8b.json" "$W" "$GT" <<'PY'
import json, random, struct, sys
c = json.load(open(sys.argv[1])); tc = c.get("text_config", c)
tc.update(num_hidden_layers=4, vocab_size=32000)
tc["layer_types"] = tc["layer_types"][:4]
json.dump(c, open(sys.argv[2] + "/cfg.json", "w"))
n = int(sys.argv[3]); r = random.Random(1)
open(sys.argv[2] + "/rand.tok", "wb").write(struct.pack("<%di" % n, *[r.randrange(32000) for _ in range(n)]))
PY
"$BIN" synth --config "$W/cfg.json" --dtype f32 --shard-size 0 --seed 3 "$W/m" > /dev/null
run() { # label device tokens extra...
  local label=$1 dev=$2 n=$3; shift 3
  "$BIN" eval --model "$W/m" --data "$W/rand.tok" --ctx "$CTX" --max-tokens "$n" --kv-k fp16 --kv-v fp16 --no-ref --json \
    --quiet --device "$dev" "$@" > "$W/o.json"
  python3 -c "
import json, sys
d = json.load(open('$W/o.json'))
print('%-28s device %s  %6d tokens  %8.3f s  %10.1f tokens/s  nll %.6f' % ('$label', d['device'], d['tokens'], d['seconds'], d['tokens'] / d['seconds'], d['nll']))"
}
run "gpu fp32 weights" gpu "$GT"
run "gpu bf16 weights" gpu "$GT" --gpu-bf16
run "cpu fp32 ($(nproc) cores)" cpu "$CT"
