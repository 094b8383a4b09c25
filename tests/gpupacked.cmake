# GPU weights kept packed as an artifact stores them (helper "gpupacked"): tests/gpupacked.sh runs the stories260K
# job (allocator's mixed codecs, validate on the GPU with packed weights), test_gpupacked (GPU packed / packed-f32
# / bf16 / f32 against the CPU forward pass of the same artifact, stories260K and hybrid qwen3_5 synthetic
# artifacts with mixed codecs, layer split, decode, memory of a larger synthetic llama) and eval --device gpu vs
# cpu on the artifact. Label gpu: exits 77 (skipped) without a GPU or in a build without CUDA.
# gpupacked_cli (cpu): --gpu-weights / stages.validate.gpu_weights parsing in a CPU build.
add_executable(test_gpupacked test_gpupacked.c)
target_compile_options(test_gpupacked PRIVATE ${TQ_C_WARNINGS})
target_link_libraries(test_gpupacked PRIVATE tqcore)
tq_add_script_test(gpupacked SCRIPT gpupacked.sh LABELS gpu mpi TIMEOUT 600 ARGS $<TARGET_FILE:test_gpupacked>)
tq_add_script_test(gpupacked_cli SCRIPT gpupacked_cli.sh LABELS cpu TIMEOUT 120)
