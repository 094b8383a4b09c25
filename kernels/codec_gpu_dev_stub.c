/* codec_gpu_dev_stub.c — the device-pointer codec entry points of kernels/codec_gpu.h for builds
 * without CUDA: every call answers TQ_ERR_NOGPU. With TQ_HAVE_CUDA, kernels/codec_gpu.cu defines them
 * and this file is empty. */
#include "codec_gpu.h"

#ifndef TQ_HAVE_CUDA

tq_status tq_quantize_gpu_dev(void* stream, const void* d_w, tq_dtype wtype, tq_qtensor* q,
                              uint8_t* const* d_parts, const char* what, int check)
{
    (void)stream;
    (void)d_w;
    (void)wtype;
    (void)q;
    (void)d_parts;
    (void)check;
    return tq_fail(TQ_ERR_NOGPU, "quantize %s on GPU: this build has no CUDA (rebuild with TQ_CUDA=ON on a GPU node)",
                   what ? what : "(tensor)");
}

tq_status tq_dequantize_gpu_dev(void* stream, const tq_qtensor* q, const uint8_t* const* d_parts, int64_t row0,
                                int64_t nrows, void* d_out, tq_dtype otype, int check)
{
    (void)stream;
    (void)q;
    (void)d_parts;
    (void)row0;
    (void)nrows;
    (void)d_out;
    (void)otype;
    (void)check;
    return tq_fail(TQ_ERR_NOGPU, "dequantize on GPU: this build has no CUDA (rebuild with TQ_CUDA=ON on a GPU node)");
}

tq_status tq_dequantize_bf16_gpu(const tq_qtensor* q, uint16_t* out)
{
    (void)q;
    (void)out;
    return tq_fail(TQ_ERR_NOGPU, "dequantize on GPU: this build has no CUDA (rebuild with TQ_CUDA=ON on a GPU node)");
}

void tq_gpu_release_buffers(void)
{
}

#endif
