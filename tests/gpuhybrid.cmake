# GPU forward pass of the hybrid Qwen3.5 / Qwen3-Next families (helper "gpuhybrid"): tests/gpuhybrid.sh builds
# tiny synthetic qwen3_5 / qwen3_5_moe (per-expert and fused experts) / qwen3_next checkpoints, runs
# test_gpuhybrid on them (CPU vs GPU logits, recurrent state across decode / chunks / reset, layer split,
# bf16 and packed tq4 weights) and compares `eval --device gpu` with `--device cpu` (mean NLL, PPL) and GPU
# rank-count invariance. Label gpu: exits 77 (skipped) without a GPU or in a build without CUDA.
add_executable(test_gpuhybrid test_gpuhybrid.c)
target_compile_options(test_gpuhybrid PRIVATE ${TQ_C_WARNINGS})
target_link_libraries(test_gpuhybrid PRIVATE tqcore)
tq_add_script_test(gpuhybrid SCRIPT gpuhybrid.sh LABELS gpu mpi TIMEOUT 300 ARGS $<TARGET_FILE:test_gpuhybrid>)
