/* linalg_gpu_stub.c — the entry points of kernels/linalg_gpu.h for builds without CUDA: no device,
 * every GPU call answers TQ_ERR_NOGPU and tq_linalg_use_gpu() is 0, so callers run the CPU
 * references (hessian_ref.c, gptq_ref.c). With TQ_HAVE_CUDA, kernels/hessian.cu and kernels/gptq.cu
 * define these functions and this file is empty. */
#include "linalg_gpu.h"

#ifndef TQ_HAVE_CUDA

int tq_linalg_use_gpu(void)
{
    return 0;
}

tq_status tq_hess_add_gpu(tq_hess* h, const float* x, int64_t n, int64_t ldx, const char* what)
{
    (void)h;
    (void)x;
    (void)n;
    (void)ldx;
    return tq_fail(TQ_ERR_NOGPU, "hessian %s on GPU: this build has no CUDA (rebuild with TQ_CUDA=ON on a GPU node)",
                   what ? what : "?");
}

tq_status tq_gptq_quantize_gpu(const float* w, const double* h, const tq_gptq_opts* o, tq_qtensor* q,
                               const char* what)
{
    (void)w;
    (void)h;
    (void)o;
    (void)q;
    return tq_fail(TQ_ERR_NOGPU, "gptq %s on GPU: this build has no CUDA (rebuild with TQ_CUDA=ON on a GPU node)",
                   what ? what : "(tensor)");
}

void tq_linalg_gpu_release(void)
{
}

#endif
