/* deltanet_gpu.h — CUDA kernels of the Gated DeltaNet token mixer (the "linear_attention" layers of the
 * hybrid Qwen3.5 / Qwen3-Next families) for the GPU forward pass (pipeline/model_gpu.c). Same math and
 * the same operation order as the CPU reference kernels/deltanet_ref.c (see kernels/deltanet.h); the
 * recurrent form is used for prefill and decode alike, so a sequence in one call or token by token gives
 * the same result. Device pointers, fp32, row-major [T x channels]; streams are void* (cudaStream_t).
 * Only built with CUDA (TQ_HAVE_CUDA). */
#ifndef TQ_DELTANET_GPU_H
#define TQ_DELTANET_GPU_H

#include <stdint.h>

#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest conv1d kernel width and the key head dims the recurrence kernel is instantiated for. */
#define TQ_DN_MAX_CONV 8
/* 1 when the GPU recurrence handles key head dim dk (16, 32, 64, 128). */
int tq_dn_gpu_dk_ok(int dk);

/* x [T x C] -> silu(causal depthwise conv) in place; w [C x K]; state [(K-1) x C] (oldest first) carried
 * in and updated to the last K-1 inputs. K <= TQ_DN_MAX_CONV. */
tq_status tq_dn_conv_silu_cuda(void* stream, float* x, const float* w, float* state, int T, int C, int K);
/* b [T x Hv] := sigmoid(b) (beta); a [T x Hv] := -exp(A_log) * softplus(a + dt_bias) (log decay g). */
tq_status tq_dn_gates_cuda(void* stream, float* b, float* a, const float* A_log, const float* dt_bias, int T, int Hv);
/* x[t, h*d .. h*d+d) := x / sqrt(sum x² + 1e-6) * scale for t < T, h < H; rows of x have stride ld. */
tq_status tq_dn_l2norm_cuda(void* stream, float* x, int ld, int T, int H, int d, float scale);
/* The gated delta rule over T tokens (q, k already normalized / scaled): q, k [T x Hk*dk], v [T x Hv*dv]
 * with row stride ld (they may be column ranges of one [T x ld] array), g / beta [T x Hv], S [Hv x dk x dv]
 * in/out, out [T x Hv*dv]. Per value head (key head = head / (Hv/Hk)):
 * S *= exp(g); d = beta (v - Sᵀk); S += k dᵀ; o = Sᵀq. dk must pass tq_dn_gpu_dk_ok. */
tq_status tq_dn_delta_rule_cuda(void* stream, const float* q, const float* k, const float* v, int ld, const float* g,
                                const float* beta, float* S, int T, int Hk, int Hv, int dk, int dv, float* out);
/* o [rows x n] := w ⊙ o / sqrt(mean(o²) + eps) ⊙ silu(z) (RMSNormGated). */
tq_status tq_dn_rmsnorm_gated_cuda(void* stream, float* o, const float* z, const float* w, int64_t rows, int n, float eps);

#ifdef __cplusplus
}
#endif

#endif
