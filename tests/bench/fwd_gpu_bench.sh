#!/bin/bash
# fwd_gpu_bench.sh BUILD [args] — GPU forward pass benchmark (tests/bench/fwd_gpu_bench.c): decode at 32K
# context with fp16 / tq4 / tq3 KV (tokens/s, KV bytes, share of the copy bandwidth) and prefill with bf16
# vs tq4-packed weights (tokens/s, share of the bf16 tensor-core peak), CPU path as baseline, on a
# Qwen3-1.7B-shaped model generated in memory. Build: cmake --build BUILD --target fwd_gpu_bench.
set -eu
B=${1:?usage: fwd_gpu_bench.sh BUILD [--ctx N] [--prefill N] [--steps N] [--cpu-tokens N] [--small]}
shift
exec "$B/fwd_gpu_bench" "$@"
