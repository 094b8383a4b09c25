#!/bin/bash
# codec_gpu_bench.sh — GPU codec throughput (issue 3): tq4, tq4r4, bin1, rtn4 quantize / dequantize of an
# 8192 x 28672 bf16 tensor as a fraction of the D2D copy bandwidth measured in the same run, then the
# straightforward PyTorch tq4 (tests/bench/torch_tq4.py) on the same shape and the tqpipe/PyTorch ratio.
#   tests/bench/codec_gpu_bench.sh [BUILD_DIR] [ROWS COLS]     (needs a GPU; PyTorch for the baseline)
# Results: printed, and kept in $OUT (or /tmp) as codec_gpu_bench.json / codec_gpu_bench.txt.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../../build}
rows=${2:-8192}
cols=${3:-28672}
out=${OUT:-/tmp}
bin=$build/tests/bench_codec_gpu
[ -x "$bin" ] || { echo "codec_gpu: skipped (no $bin: build with -DTQ_CUDA=ON on a GPU node)"; exit 0; }
nvidia-smi -L >/dev/null 2>&1 || { echo "codec_gpu: skipped (no GPU)"; exit 0; }
{
  "$bin" --rows "$rows" --cols "$cols" --iters 20 --json "$out/codec_gpu_bench.json"
  if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    python3 "$here/torch_tq4.py" --rows "$rows" --cols "$cols" --iters 10 --tqpipe-json "$out/codec_gpu_bench.json"
  else
    echo "PyTorch with CUDA not available: baseline skipped"
  fi
} 2>&1 | tee "$out/codec_gpu_bench.txt"
