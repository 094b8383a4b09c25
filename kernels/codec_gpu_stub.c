/* codec_gpu_stub.c — the GPU entry points of codec.h for builds without CUDA: no device, every GPU
 * call answers TQ_ERR_NOGPU, so tq_quantize / tq_dequantize fall back to the CPU reference.
 * With TQ_HAVE_CUDA the kernels/<name>.cu files define these functions instead and this file is empty. */
#include "codec.h"

#ifndef TQ_HAVE_CUDA

int tq_gpu_available(void)
{
    return 0;
}

tq_status tq_quantize_gpu(const float* w, tq_qtensor* q, const char* what)
{
    (void)w;
    (void)q;
    return tq_fail(TQ_ERR_NOGPU, "quantize %s on GPU: this build has no CUDA (rebuild with TQ_CUDA=ON on a GPU node)",
                   what ? what : "(tensor)");
}

tq_status tq_dequantize_gpu(const tq_qtensor* q, float* out)
{
    (void)q;
    (void)out;
    return tq_fail(TQ_ERR_NOGPU, "dequantize on GPU: this build has no CUDA (rebuild with TQ_CUDA=ON on a GPU node)");
}

#endif
