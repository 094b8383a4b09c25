# GPU codecs (kernels/codec_gpu.cu): GPU bytes == CPU reference bytes for every codec, dequantize
# equality, determinism, the device-pointer API, errors. Label gpu: exits 77 (skipped) without a GPU.
tq_add_test(test_codec_gpu SOURCES test_codec_gpu.c LABELS gpu TIMEOUT 300)
# The same checks with the thread-per-block kernels off (TQ_GPU_TPB=0): the warp-per-block kernels for
# every case, so both implementations stay equal to the CPU reference.
add_test(NAME test_codec_gpu_warp COMMAND $<TARGET_FILE:test_codec_gpu>)
set_tests_properties(test_codec_gpu_warp PROPERTIES LABELS gpu TIMEOUT 300 SKIP_RETURN_CODE 77
  ENVIRONMENT "${TQ_TEST_ENV};TQ_GPU_TPB=0")
# And with tq{b} quantize on the one- and four-lanes-per-block kernels (TQ_GPU_TPB_LANES; default 2).
foreach(lanes 1 4)
  add_test(NAME test_codec_gpu_tpb${lanes} COMMAND $<TARGET_FILE:test_codec_gpu>)
  set_tests_properties(test_codec_gpu_tpb${lanes} PROPERTIES LABELS gpu TIMEOUT 300 SKIP_RETURN_CODE 77
    ENVIRONMENT "${TQ_TEST_ENV};TQ_GPU_TPB_LANES=${lanes}")
endforeach()

# Benchmark (not a test): tests/bench/codec_gpu_bench.sh builds on this program.
if(TQ_HAVE_CUDA)
  add_executable(bench_codec_gpu bench/bench_codec_gpu.c)
  target_compile_options(bench_codec_gpu PRIVATE ${TQ_C_WARNINGS})
  target_link_libraries(bench_codec_gpu PRIVATE tqcore)
endif()
