# GPU codecs (kernels/codec_gpu.cu): GPU bytes == CPU reference bytes for every codec, dequantize
# equality, determinism, the device-pointer API, errors. Label gpu: exits 77 (skipped) without a GPU.
tq_add_test(test_codec_gpu SOURCES test_codec_gpu.c LABELS gpu TIMEOUT 300)

# Benchmark (not a test): tests/bench/codec_gpu_bench.sh builds on this program.
if(TQ_HAVE_CUDA)
  add_executable(bench_codec_gpu bench/bench_codec_gpu.c)
  target_compile_options(bench_codec_gpu PRIVATE ${TQ_C_WARNINGS})
  target_link_libraries(bench_codec_gpu PRIVATE tqcore)
endif()
