/* linalg_gpu.h — GPU versions of the calibration / GPTQ linear algebra (kernels/hessian.cu,
 * kernels/gptq.cu): H += XᵀX with cuBLAS SSYRK and GPTQ with cuSOLVER + cuBLAS. Host pointers in and
 * out; staging is internal. Builds without CUDA get TQ_ERR_NOGPU stubs (kernels/linalg_gpu_stub.c).
 *
 * Hessian: tq_hess_add_gpu is tq_hess_add_ref computed on the device: the accumulator's fp32 block
 * (host memory) is uploaded when it already holds rows of this sequence, blk += XᵀX runs in fp32
 * (cublasSsyrk, pedantic math: no TF32), the block is copied back. Flushing, the exact 128-bit sums
 * and the cross-rank reduction are the CPU code's (hessian.h), so the per-sequence fp32 granularity
 * and the rank-count invariance are unchanged. Calls with fewer than TQ_HESS_GPU_MIN_ROWS rows and
 * diagonal-only accumulators run tq_hess_add_ref (transfers would dominate); the choice depends only
 * on the data, never on the rank.
 *
 * GPTQ: tq_gptq_quantize_gpu is tq_gptq_quantize_ref (gptq.h: same codecs, options, dead columns,
 * dampening, act-order, rotated domain for tq/bin1) with the heavy parts on the device in double:
 * U = chol(H⁻¹) upper via cusolverDnDpotrf / Dpotri / Dpotrf, the column sweep of each lazy block in
 * a kernel (one thread per row), the block's update of the later columns as one cublasDgemm. Codes
 * are not byte-identical to the CPU's (different rounding order in the double updates) but the
 * result is a normal tq_qtensor read by the normal dequantizer. Device memory: 8·(N² + R·N + R·B)
 * bytes + R·N code bytes for W [R x N].
 *
 * Dispatch at the call sites (pipeline/calib.c, sensitivity.c, sensrun.c):
 *   #ifdef TQ_HAVE_CUDA  if (tq_linalg_use_gpu()) ...GPU path...  #endif
 * tq_linalg_use_gpu() is 1 when a device is present and TQ_NO_GPU_LINALG is not set in the
 * environment (set it to force the CPU reference). */
#ifndef TQ_LINALG_GPU_H
#define TQ_LINALG_GPU_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "gptq.h"    /* defines: tq_gptq_opts */
#include "hessian.h" /* defines: tq_hess */
#include "status.h"  /* defines: tq_status */

#define TQ_HESS_GPU_MIN_ROWS 64

/* 1: use the GPU linear algebra (device present and TQ_NO_GPU_LINALG unset). 0 in CPU-only builds. */
int tq_linalg_use_gpu(void);

/* blk += XᵀX for x [n x d] (row stride ldx floats, host memory), as tq_hess_add_ref. NaN/Inf in x ->
 * TQ_ERR_NUMERIC naming `what`; CUDA failures -> TQ_ERR_CUDA; no device -> TQ_ERR_NOGPU. */
tq_status tq_hess_add_gpu(tq_hess* h, const float* x, int64_t n, int64_t ldx, const char* what);

/* GPTQ on the GPU, same contract as tq_gptq_quantize_ref (gptq.h). */
tq_status tq_gptq_quantize_gpu(const float* w, const double* h, const tq_gptq_opts* o, tq_qtensor* q,
                               const char* what);

/* Free the cuBLAS / cuSOLVER handles and staging buffers kept between calls. */
void tq_linalg_gpu_release(void);

#ifdef __cplusplus
}
#endif

#endif
