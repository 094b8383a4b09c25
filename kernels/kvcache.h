/* kvcache.h — the KV cache of the inference engine with per-head-vector codecs, chosen for K and V
 * separately, and attention that reads the packed cache directly (CPU reference: kernels/kvcache_ref.c).
 *
 * Codecs (each head vector x of dimension d = head_dim is coded on its own):
 *   f32           4d bytes (exact; what llama2.c does)
 *   fp16, bf16    2d bytes
 *   int8          d bytes + one fp16 scale (absmax / 127), symmetric
 *   tq2, tq3, tq4 TurboQuant MSE: fp16 norm ‖x‖, randomized Hadamard rotation y = H·D·x/‖x‖ (D random
 *                 signs), each y_j coded with the b-bit Lloyd-Max codebook of the Beta law of one
 *                 coordinate of a random unit vector in dimension d (kernels/lloydmax.h).
 *   tq2.5, tq3.5  outlier-channel split: per layer and KV head, the d/2 channels with the largest mean
 *                 square in the first batch appended to that layer (the prompt / the evaluation window)
 *                 are "outliers" and get b+1 bits, the other d/2 get b bits; each half is its own TurboQuant
 *                 instance (own norm, own rotation of size d/2, own codebook). Average rate b + 0.5 bits.
 *                 (The paper's example "32 outlier channels at 3 bits + 96 at 2 bits" of a 128-dim head
 *                 is 2.25 bits; half and half is what gives 2.5.)
 *   + QJL (keys)  with qjl set, the MSE stage uses one bit less per channel and a 1-bit QJL stage codes
 *                 the residual r (rotated domain): sign(S·r) (S: d x d i.i.d. N(0,1), per layer) and the
 *                 fp16 γ = ‖r‖; <q, x̃> = <q, x̃_mse> + sqrt(π/2)/d · γ · <S q, sign(S r)>. Same total bits.
 *   + nc          norm correction (tq only, no extra bytes): the stored scale is ‖x‖ / ‖c‖ with c the chosen
 *                 centroid vector, so the decoded vector has exactly the input's norm (the paper stores ‖x‖,
 *                 which shrinks decoded vectors by about 1 - MSE/2). Measured on SmolLM2-135M (ctx 256): KL
 *                 0.057 -> 0.049 (tq4), 0.239 -> 0.216 (tq3), 0.368 -> 0.350 (tq2.5) but 0.077 -> 0.085 (tq3.5):
 *                 an option, not the default.
 * Byte layout of one coded tq vector: fp16 norms (1 or 2), fp16 γ (QJL only), then one LSB-first
 * bitstream: the codes of the outlier half (or of all channels), the codes of the other half, the
 * d QJL sign bits; padded to a whole byte. tq_kv_vec_bytes() is that count, exactly what is stored.
 * The outlier channel sets (d bits per layer and KV head) are per cache, not per token.
 *
 * Attention over tq keys works in the rotated domain: the query is rotated once per (token, head)
 * (and multiplied by S once for QJL), then scored against centroids times the stored norm; values are
 * accumulated in the rotated domain and rotated back once per (token, head). No dequantized copy of
 * the cache is made. tq codecs need a power-of-two head_dim (every Llama/Qwen model has one). */
#ifndef TQ_KVCACHE_H
#define TQ_KVCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef enum { TQ_KV_F32 = 0, TQ_KV_FP16, TQ_KV_BF16, TQ_KV_INT8, TQ_KV_TQ } tq_kv_kind;

typedef struct {
    char name[24];  /* canonical: "fp16", "tq3.5", "tq4+qjl" */
    tq_kv_kind kind;
    int bits;       /* tq: b (the non-outlier bits, 2..4) */
    int split;      /* tq b.5: d/2 outlier channels at b+1 bits */
    int qjl;        /* tq keys: MSE stage one bit less, plus the 1-bit QJL residual stage */
    int norm_fix;   /* tq "+nc": store ‖x‖/‖c‖ instead of ‖x‖ (decoded vector keeps the norm); same bytes */
} tq_kv_codec;

/* Parse "f32", "fp16", "bf16", "int8", "tq2", "tq3", "tq4", "tq2.5", "tq3.5" (a "+qjl" suffix or qjl=1
 * adds the QJL stage; tq only, and tq2+qjl means a 1-bit MSE stage; "+nc" the norm correction).
 * @return TQ_OK or TQ_ERR_ARG. */
tq_status tq_kv_codec_parse(const char* name, int qjl, tq_kv_codec* out);
/* Exact bytes of one coded head vector of dimension d. */
size_t tq_kv_vec_bytes(const tq_kv_codec* c, int d);
/* Bits per element (8 * bytes / d). */
double tq_kv_bits(const tq_kv_codec* c, int d);

typedef struct {
    int n_layers;      /* layers this cache holds (local to the rank) */
    int n_kv_heads;
    int n_heads;       /* query heads (a multiple of n_kv_heads) */
    int head_dim;
    int max_tokens;
    tq_kv_codec k, v;
    uint64_t seed;     /* rotations and QJL matrices */
    int layer_offset;  /* global index of local layer 0 (seeds depend on the global layer) */
    size_t state_floats; /* recurrent state (hybrid models' linear-attention layers), 0: none; see tq_kv_state */
} tq_kv_config;

typedef struct tq_kv_cache tq_kv_cache;

/* @return TQ_OK, TQ_ERR_ARG (shape), TQ_ERR_UNSUPPORTED (tq with non power-of-two head_dim), TQ_ERR_NOMEM. */
tq_status tq_kv_create(const tq_kv_config* cfg, tq_kv_cache** out);
void tq_kv_free(tq_kv_cache** pc);
/* Forget every token (and the outlier calibration) of every layer. */
void tq_kv_reset(tq_kv_cache* c);
int tq_kv_len(const tq_kv_cache* c, int layer);
/* Bytes per token over every layer of this cache: n_layers * n_kv_heads * (K bytes + V bytes). */
size_t tq_kv_bytes_per_token(const tq_kv_cache* c);

/* Append T tokens' keys and values ([T x n_kv_heads*head_dim] each, RoPE already applied to k) to a
 * layer at positions len..len+T-1. @return TQ_ERR_ARG past max_tokens. */
tq_status tq_kv_append(tq_kv_cache* c, int layer, const float* k, const float* v, int T);

/* Causal attention for T queries q [T x n_heads*head_dim] at positions pos0..pos0+T-1 (query t sees
 * cached positions 0..pos0+t; the layer must hold at least pos0+T tokens). out [T x n_heads*head_dim].
 * scores are multiplied by `scale` before the softmax. */
tq_status tq_kv_attend(tq_kv_cache* c, int layer, const float* q, int T, int pos0, float scale, float* out);

/* Per-sequence recurrent state of the linear-attention layers of hybrid models (Qwen3.5 / Qwen3-Next,
 * layout chosen by pipeline/model.c): cfg.state_floats floats owned by the cache, zeroed by tq_kv_create
 * and tq_kv_reset, so one reset forgets a sequence in both kinds of layer. Not counted in
 * tq_kv_bytes_per_token (its size does not grow with the sequence). NULL when state_floats is 0. */
float* tq_kv_state(tq_kv_cache* c);
size_t tq_kv_state_floats(const tq_kv_cache* c);

/* Tests: the decoded vector (K when which == 0, V when 1) of (layer, kv head, position) [head_dim]. */
tq_status tq_kv_dequant(const tq_kv_cache* c, int layer, int which, int head, int pos, float* out);
/* Tests: one attention score <q, k̃> as attention computes it in the rotated domain (no scale). */
tq_status tq_kv_score(const tq_kv_cache* c, int layer, int head, const float* q, int pos, float* score);

#endif
