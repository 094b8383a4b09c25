/* model.h — the inference model: an architecture descriptor (pipeline/arch.h) plus a weight source
 * (original Hugging Face checkpoint, tqpipe artifact dequantized tensor by tensor, or an in-memory
 * quantize+dequantize wrapper), loaded for a range of layers [l0, l1) so a rank of a pipeline-parallel
 * run holds only its layers in fp32. Forward pass for llama / mistral / qwen2 / qwen3 (q/k norms, q/k/v
 * biases, grouped-query attention, tied or untied head) and qwen3_moe (router softmax, top-k experts,
 * renormalized weights when norm_topk_prob), and the hybrid families qwen3_5, qwen3_5_moe and qwen3_next
 * (helper "hybrid"): Gated DeltaNet linear-attention layers (kernels/deltanet.h) and every
 * full_attention_interval-th layer gated full attention (q_proj per head [query | gate], output times
 * sigmoid(gate), q/k norms, partial rotary; mrope sections are ignored: text positions are the same in
 * every section, so it is 1-D rope), zero-centered RMSNorms (1 + w, applied at load), MoE with a
 * sigmoid-gated shared expert, per-expert or fused 3-D experts, qwen3_next's interleaved in_proj_qkvz/ba.
 *
 * A forward pass is split in three so ranks can chain it (activations [T x hidden] fp32 between them):
 *   tq_model_embed (first rank) -> tq_model_layers (every rank, its layers) -> tq_model_head (last rank).
 * The KV cache (kernels/kvcache.h) holds the rank's full-attention layers; tokens are appended at positions
 * pos0..pos0+T-1, and attention is causal over everything cached so far. Linear-attention layers keep a
 * fixed-size per-sequence state in the same cache object (tq_kv_state: per layer a token count, the conv
 * state (K-1) x conv_dim and the delta-rule state Hv x dk x dv), cleared by tq_kv_reset; a batch of T
 * tokens and T batches of one token give the same result (up to fp32 summation order). */
#ifndef TQ_MODEL_H
#define TQ_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "arch.h"
#include "codec.h"
#include "kvcache.h"
#include "ops.h"
#include "status.h"

/* ---- weight sources ----------------------------------------------------------------------------- */

/* Where weights come from. read() fills dst (cap elements) with the whole tensor in fp32. */
typedef struct tq_wsource {
    void* ctx;
    char desc[512];                                  /* "checkpoint DIR", "artifact DIR", ... */
    const char* (*config_json)(void* ctx);           /* config.json text */
    int (*has)(void* ctx, const char* name);
    tq_status (*shape)(void* ctx, const char* name, int64_t* rows, int64_t* cols);
    tq_status (*read)(void* ctx, const char* name, float* dst, size_t cap);
    void (*close)(void* ctx);
} tq_wsource;

/* A Hugging Face checkpoint directory (pipeline/ckpt.h). */
tq_status tq_wsource_ckpt(const char* dir, tq_wsource** out);
/* A tqpipe artifact directory (pipeline/artifact.h), dequantized per tensor with tq_dequantize_ref. */
tq_status tq_wsource_artifact(const char* dir, tq_wsource** out);
/* Wrap `inner` (taken over): every linear weight (names ending "_proj.weight": attention, MLP, experts,
 * DeltaNet in/out projections; fused 3-D experts as one [E*out x in] matrix; embeddings and lm_head too
 * when with_embed) is quantized with `codec` (tq_quantize_ref, seed tq_tensor_seed(seed, name)) and
 * dequantized in memory. Norms, biases, routers, shared_expert_gate, conv1d, A_log, dt_bias pass through. */
tq_status tq_wsource_quantized(tq_wsource* inner, const tq_codec* codec, uint64_t seed, int with_embed,
                               tq_wsource** out);
void tq_wsource_free(tq_wsource** pw);

/* ---- model ---------------------------------------------------------------------------------------- */

typedef struct tq_model tq_model;

/* Load layers [l0, l1) (l1 = -1: to the end) of the model described by the source's config.json. The
 * first rank (l0 == 0) also gets the embedding; the last (l1 == n_layers) the final norm and the head.
 * The source stays owned by the caller and is not used after loading.
 * @return TQ_OK, TQ_ERR_FORMAT (config), TQ_ERR_UNSUPPORTED (family), TQ_ERR_NOTFOUND (tensor), ... */
tq_status tq_model_load(tq_wsource* src, int l0, int l1, tq_model** out);
void tq_model_free(tq_model** pm);

const tq_arch* tq_model_arch(const tq_model* m);
int tq_model_first_layer(const tq_model* m);
int tq_model_end_layer(const tq_model* m);
int tq_model_hidden(const tq_model* m);
int tq_model_vocab(const tq_model* m);
int tq_model_max_position(const tq_model* m);
size_t tq_model_weight_bytes(const tq_model* m); /* fp32 bytes held */

/* A KV cache for this model's layers (kvcache.h) with the given codecs, for up to max_tokens tokens: the
 * full-attention layers only (layer_offset = their global index among full-attention layers, so codec
 * seeds do not depend on the layer split), plus the recurrent state of the linear-attention layers. */
tq_status tq_model_kv_create(const tq_model* m, const tq_kv_codec* kc, const tq_kv_codec* vc, int max_tokens,
                             uint64_t seed, tq_kv_cache** out);

/* x [T x hidden] = embedding rows of tokens. Needs l0 == 0. */
tq_status tq_model_embed(const tq_model* m, const int* tokens, int T, float* x);
/* Run this model's layers over x [T x hidden] in place; tokens sit at positions pos0.. and their K/V are
 * appended to kv (which must hold pos0 tokens already). */
tq_status tq_model_layers(const tq_model* m, tq_kv_cache* kv, float* x, int T, int pos0);
/* logits [T x vocab] from x [T x hidden] (final norm + head). Needs l1 == n_layers. x is overwritten. */
tq_status tq_model_head(const tq_model* m, float* x, int T, float* logits);

/* The rotary table tq_model_load builds for this config (theta, partial_rotary_factor, rope_scaling);
 * added for the GPU forward pass (pipeline/model_gpu.c) so both use one definition. */
tq_status tq_model_rope(const char* config_json, const tq_arch* a, tq_rope* out);

/* Convenience for one rank holding every layer: embed + layers + head. */
tq_status tq_model_forward(const tq_model* m, tq_kv_cache* kv, const int* tokens, int T, int pos0, float* logits);

/* Calibration hook (added by helper "alloc" for pipeline/calib.h): when set, tq_model_layers calls
 * fn(ctx, weight, x, rows, cols) with the input rows x [rows x cols] of every linear layer just before it
 * runs. Inputs shared by several weights are reported once, under the first weight's full name:
 * "...self_attn.q_proj.weight" (also k/v), "...self_attn.o_proj.weight", "...mlp.gate_proj.weight" (also
 * up), "...mlp.down_proj.weight"; MoE: "...mlp.gate.weight" (router), then per expert with only its
 * routed rows "...mlp.experts.E.gate_proj.weight" (also up) and "...mlp.experts.E.down_proj.weight" (not
 * for fused 3-D experts: they have no per-expert 2-D tensors); shared expert "...mlp.shared_expert.gate_proj.weight" (also up_proj and
 * mlp.shared_expert_gate) and "...mlp.shared_expert.down_proj.weight"; Gated DeltaNet layers
 * "...linear_attn.in_proj_qkv.weight" (also in_proj_z/b/a; qwen3_next: "...linear_attn.in_proj_qkvz.weight",
 * also in_proj_ba) and "...linear_attn.out_proj.weight" (input: the gated-norm output [T x Hv*dv]).
 * A non-OK return aborts the forward pass with that status. fn NULL removes the hook. */
typedef tq_status (*tq_linear_observer)(void* ctx, const char* weight, const float* x, int rows, int cols);
void tq_model_set_observer(tq_model* m, tq_linear_observer fn, void* ctx);

#endif
