# Tests of helper "gpu7": GPU Hessian accumulation (kernels/hessian.cu) and GPU GPTQ (kernels/gptq.cu)
# against the CPU references. Label gpu: they exit 77 (skipped) without a GPU or in CPU-only builds.
tq_add_test(test_hessian_gpu SOURCES test_hessian_gpu.c LABELS gpu TIMEOUT 300)
tq_add_test(test_gptq_gpu SOURCES test_gptq_gpu.c LABELS gpu TIMEOUT 600)
