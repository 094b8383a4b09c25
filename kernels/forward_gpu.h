/* forward_gpu.h — CUDA kernels of the GPU forward pass (kernels/forward_gpu.cu), pure compute on device
 * pointers: embedding gather, RMSNorm, RoPE from a host-computed cos/sin table, SwiGLU, residual / bias
 * adds, fp32 -> bf16 casts for the cuBLAS GEMMs, MoE row gather / weighted scatter, and the KV cache:
 * append (encode) and causal attention over the packed cache. The host glue (weights, cuBLAS, the layer
 * loop) is pipeline/model_gpu.c. Streams are void* (a cudaStream_t) so C callers need no CUDA header.
 * Only built with CUDA (TQ_HAVE_CUDA); nothing here is called otherwise.
 *
 * KV cache layout on the device, per layer and side (K or V): data [n_kv_heads][max_tokens][stride]
 * bytes, plus for int8 and tq a separate fp16 array [n_kv_heads][max_tokens] (int8 scale / tq norm).
 * stride: f32 4d, fp16/bf16 2d, int8 round4(d), tq round4(ceil(d*b/8)) (codes LSB-first, as in the CPU
 * bitstream; stored apart from the norm so rows stay 4-byte aligned). The codes, norms and rotation are
 * the CPU reference's (kernels/kvcache_ref.c): y = H·D·x/sqrt(d), norm = ‖y‖, code = nearest Lloyd-Max
 * centroid of y/‖y‖, "+nc" stores ‖y‖/‖c‖. Attention scores tq keys in the rotated domain (the query is
 * rotated once per head) and accumulates tq values in the rotated domain, rotating back once per head. */
#ifndef TQ_FORWARD_GPU_H
#define TQ_FORWARD_GPU_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Codec kinds on the device (same meaning as tq_kv_kind; split and QJL tq variants are not offered). */
enum { TQ_GKV_F32 = 0, TQ_GKV_FP16, TQ_GKV_BF16, TQ_GKV_INT8, TQ_GKV_TQ };

/* One side (K or V) of one layer of the device KV cache. */
typedef struct {
    int kind;            /* TQ_GKV_* */
    int bits;            /* tq: 2..4 */
    int norm_fix;        /* tq "+nc" */
    int stride;          /* bytes per vector row in data */
    uint8_t* data;       /* [nkv][max_tokens][stride] */
    uint16_t* norms;     /* [nkv][max_tokens] fp16 (int8 scale, tq norm); NULL otherwise */
    const float* sign;   /* tq: [nkv][d] rotation signs (±1) */
    const float* cb;     /* tq: [1 << bits] centroids */
    const float* bnd;    /* tq: [(1 << bits) - 1] decision boundaries */
} tq_gkv_side;

typedef struct {
    int nkv, nh, d, max_tokens;
} tq_gkv_shape;

/* x[t, :] = emb[tok[t], :] (emb fp32 when bf16 == 0, else bf16 bits). */
tq_status tq_fwd_embed_cuda(void* stream, float* x, const void* emb, int bf16, const int* d_tok, int T, int hidden);
/* out[r, :] = w ⊙ x[r, :] / sqrt(mean(x²) + eps); out may alias x. */
tq_status tq_fwd_rmsnorm_cuda(void* stream, float* out, const float* x, const float* w, int64_t rows, int n, float eps);
/* RoPE (rotate_half) on x [T x nheads x hd]: cs [T x rot/2 x 2] holds cos, sin per token and frequency. */
tq_status tq_fwd_rope_cuda(void* stream, float* x, const float* cs, int T, int nheads, int hd, int rot);
/* g = silu(g) * u over n values. */
tq_status tq_fwd_swiglu_cuda(void* stream, float* g, const float* u, int64_t n);
/* y[t, :] += b (rows T of n). */
tq_status tq_fwd_bias_cuda(void* stream, float* y, const float* b, int T, int n);
/* y += a (n values). */
tq_status tq_fwd_add_cuda(void* stream, float* y, const float* a, int64_t n);
/* dst (bf16 bits) = src (fp32), n values. */
tq_status tq_fwd_to_bf16_cuda(void* stream, uint16_t* dst, const float* src, int64_t n);
/* MoE: dst[i, :] = src[rows[i], :] for i < n (width h). */
tq_status tq_fwd_gather_rows_cuda(void* stream, float* dst, const float* src, const int* rows, int n, int h);
/* MoE: x[rows[i], :] += w[i] * o[i, :] for i < n (rows distinct). */
tq_status tq_fwd_scatter_add_cuda(void* stream, float* x, const float* o, const int* rows, const float* w, int n, int h);

/* Hybrid families: dst[t, j] = src[t * ld + map[j]] for t < T, j < n (de-interleaves fused projections). */
tq_status tq_fwd_gather_cols_cuda(void* stream, float* dst, int n, const float* src, int ld, const int* map, int T);
/* y *= sigmoid(gate) over n values (gated attention output). */
tq_status tq_fwd_sigmoid_mul_cuda(void* stream, float* y, const float* gate, int64_t n);
/* x[t, :] += sigmoid(s[t]) * o[t, :] for t < T, width h (sigmoid-gated shared expert). */
tq_status tq_fwd_add_sigmoid_rows_cuda(void* stream, float* x, const float* o, const float* s, int T, int h);

/* Encode T tokens' vectors src [T x nkv*d] of one layer into the side at positions len..len+T-1. */
tq_status tq_fwd_kv_append_cuda(void* stream, const tq_gkv_side* s, const tq_gkv_shape* sh, const float* src, int T,
                                int len, float rot_scale);
/* Rotate T x nh query heads q [T x nh*d] into qr for tq keys (qr = H·D_g·q/sqrt(d), g = kv head of the
 * query head). */
tq_status tq_fwd_rotate_q_cuda(void* stream, float* qr, const float* q, const tq_gkv_side* k, const tq_gkv_shape* sh,
                               int T, float rot_scale);
/* Causal attention of T queries q [T x nh*d] at positions pos0.. over the cached positions 0..pos0+t
 * (q already rotated for tq keys), scores * scale, softmax, values; out [T x nh*d]. work: device scratch
 * of tq_fwd_attend_work_bytes(sh, T, pos0 + T) bytes. */
size_t tq_fwd_attend_work_bytes(const tq_gkv_shape* sh, int T, int P);
tq_status tq_fwd_attend_cuda(void* stream, float* out, const float* q, const tq_gkv_side* k, const tq_gkv_side* v,
                             const tq_gkv_shape* sh, int T, int pos0, float scale, float rot_scale, void* work);

#ifdef __cplusplus
}
#endif

#endif
