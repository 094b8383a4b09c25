# GPU forward pass (helper "gpufwd"): CPU vs GPU logits (stories260K, synthetic qwen3_moe), golden greedy
# text on the GPU, eval --device gpu vs cpu on four families, and GPU rank-count invariance (-np 2, layers
# and seq). Label gpu: every test exits 77 (skipped) without a GPU or in a build without CUDA.
tq_add_test(test_fwd_gpu SOURCES test_fwd_gpu.c LABELS gpu TIMEOUT 300)
tq_add_script_test(gpufwd_golden SCRIPT gpufwd_golden.sh LABELS gpu TIMEOUT 300)
tq_add_script_test(gpufwd_eval SCRIPT gpufwd_eval.sh LABELS gpu mpi TIMEOUT 600)

# Benchmark (not a test): tests/bench/fwd_gpu_bench.sh drives this program (CUDA builds only).
if(TQ_HAVE_CUDA)
  add_executable(fwd_gpu_bench bench/fwd_gpu_bench.c)
  target_compile_options(fwd_gpu_bench PRIVATE ${TQ_C_WARNINGS})
  target_link_libraries(fwd_gpu_bench PRIVATE tqcore)
endif()
