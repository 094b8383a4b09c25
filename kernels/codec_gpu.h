/* codec_gpu.h — device-pointer entry points of the CUDA codecs (kernels/codec_gpu.cu), for code that
 * keeps weights on the GPU (pipeline quantize stage, inference). The host-pointer versions
 * (tq_quantize_gpu / tq_dequantize_gpu) are declared in codec.h. Same bytes as the CPU reference.
 *
 * A quantized tensor on the device is described by a tq_qtensor (codec, rows, cols, seed, parts as
 * laid out by tq_qtensor_layout / tq_qtensor_alloc) plus one device pointer per part, in part order:
 * d_parts[i] holds q->part[i].bytes bytes. Streams are passed as void* (a cudaStream_t; NULL = the
 * default stream) so that C callers need no CUDA header. Without CUDA every call answers TQ_ERR_NOGPU
 * (kernels/codec_gpu_dev_stub.c). */
#ifndef TQ_CODEC_GPU_H
#define TQ_CODEC_GPU_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "codec.h"
#include "dtype.h"

/* Quantize d_w [rows x cols, row-major; wtype TQ_F32 or TQ_BF16, device memory] into the device parts.
 * Per-tensor parts (codebooks) are written to d_parts and, where q->part[i].data is not NULL, to the
 * host copy too. check = 1: wait for the stream and report NaN/Inf input or an fp16 norm/scale overflow
 * as TQ_ERR_NUMERIC naming `what`, row and column (rows count from the first row of d_w), like
 * tq_quantize_ref. check = 0: only enqueue (no sync, no numeric check: the caller vouches for finite
 * input); the parts are valid once the stream reaches this point. */
tq_status tq_quantize_gpu_dev(void* stream, const void* d_w, tq_dtype wtype, tq_qtensor* q,
                              uint8_t* const* d_parts, const char* what, int check);

/* Dequantize rows [row0, row0 + nrows) of the device parts into d_out [nrows x cols] (otype TQ_F32 or
 * TQ_BF16, device memory). Codebooks are read from the device parts. check = 1: wait and report an fp16
 * NaN/Inf norm/scale as TQ_ERR_CORRUPT; check = 0: only enqueue. */
tq_status tq_dequantize_gpu_dev(void* stream, const tq_qtensor* q, const uint8_t* const* d_parts, int64_t row0,
                                int64_t nrows, void* d_out, tq_dtype otype, int check);

/* Host-pointer dequantize to bf16 bits (GPU; staging internal). */
tq_status tq_dequantize_bf16_gpu(const tq_qtensor* q, uint16_t* out);

/* Free the internal staging buffers of the host-pointer entry points (they are kept between calls). */
void tq_gpu_release_buffers(void);

#ifdef __cplusplus
}
#endif

#endif
