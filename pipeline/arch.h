/* arch.h — the architecture descriptor: from a Hugging Face config.json, every tensor the model must
 * have, with its role, layer, expert and shape. All stages use it (synth writes it, ingest checks a
 * checkpoint against it, allocate/quantize pick codecs by role, the planner counts bytes from it).
 * Families: llama, mistral, qwen2, qwen3 (dense); qwen3_moe (router + experts); qwen3_5_moe,
 * qwen3_5 (dense hybrid), qwen3_next (hybrid Gated DeltaNet + gated full attention, MoE, shared expert).
 * See ../shared/QWEN35.md for shapes. */
#ifndef TQ_ARCH_H
#define TQ_ARCH_H

#include <stddef.h>
#include <stdint.h>

#include "ckpt.h"
#include "status.h"

typedef enum {
    TQ_ROLE_OTHER = 0,
    TQ_ROLE_EMBED,
    TQ_ROLE_LM_HEAD,
    TQ_ROLE_NORM,          /* every RMSNorm weight (input, post-attention, final, q/k norm, gated norm) */
    TQ_ROLE_ATTN_Q,
    TQ_ROLE_ATTN_K,
    TQ_ROLE_ATTN_V,
    TQ_ROLE_ATTN_O,
    TQ_ROLE_ATTN_BIAS,     /* qwen2 q/k/v biases */
    TQ_ROLE_LIN_QKV,       /* Gated DeltaNet in_proj_qkv (qwen3_next: in_proj_qkvz) */
    TQ_ROLE_LIN_Z,         /* in_proj_z */
    TQ_ROLE_LIN_BA,        /* in_proj_b, in_proj_a (qwen3_next: in_proj_ba) */
    TQ_ROLE_LIN_CONV,      /* conv1d weight */
    TQ_ROLE_LIN_PARAM,     /* A_log, dt_bias */
    TQ_ROLE_LIN_OUT,       /* out_proj */
    TQ_ROLE_MLP_GATE,
    TQ_ROLE_MLP_UP,
    TQ_ROLE_MLP_DOWN,
    TQ_ROLE_EXPERT_GATE,
    TQ_ROLE_EXPERT_UP,
    TQ_ROLE_EXPERT_DOWN,
    TQ_ROLE_SHARED_GATE,
    TQ_ROLE_SHARED_UP,
    TQ_ROLE_SHARED_DOWN,
    TQ_ROLE_SHARED_EXPERT_GATE, /* shared_expert_gate: hidden -> 1 */
    TQ_ROLE_ROUTER,
    TQ_ROLE_EXPERT_GATE_UP,     /* fused experts (transformers v5 layout): mlp.experts.gate_up_proj [E, 2*I, h] */
    TQ_ROLE_COUNT
} tq_role;

/* Stable lowercase names used in plans, job files, artifacts: "embed", "lm_head", "norm", "attn_q", ... */
const char* tq_role_name(tq_role r);
tq_role tq_role_parse(const char* s); /* TQ_ROLE_COUNT when unknown */
/* Roles that are matrices worth quantizing (linear layers, embeddings, lm_head). */
int tq_role_is_linear(tq_role r);

typedef struct {
    char name[TQ_MAX_NAME];
    tq_role role;
    int layer;   /* -1 for embed, final norm, lm_head */
    int expert;  /* -1 unless a routed expert */
    int ndim;
    int64_t shape[4];
} tq_arch_tensor;

typedef enum { TQ_LAYER_FULL_ATTN = 0, TQ_LAYER_LINEAR_ATTN = 1 } tq_layer_type;

typedef struct {
    char model_type[32];
    int n_layers, hidden, intermediate, vocab;
    int n_heads, n_kv_heads, head_dim;
    int tied_embeddings;
    int qk_norm;             /* qwen3 family */
    int attn_bias;           /* qwen2 */
    int attn_output_gate;    /* qwen3_5 / qwen3_next: q_proj outputs 2x for the gate */
    double rope_theta, rms_eps, partial_rotary_factor;
    /* MoE (0 when dense) */
    int n_experts, top_k, moe_intermediate, shared_intermediate, norm_topk_prob;
    /* hybrid linear attention (0 when none) */
    int full_attention_interval;
    int lin_k_heads, lin_v_heads, lin_k_dim, lin_v_dim, lin_conv_kernel;
    int max_position;
    tq_layer_type* layer_types; /* [n_layers] */
    int64_t n_tensors;
    tq_arch_tensor* tensors;    /* sorted by name */
    char prefix[64];            /* "model." or "model.language_model." */
    /* --- additions (arch.c) --- */
    int vlm_wrapper;            /* config.json had a "text_config" (Qwen3.5 VLM layout) */
    int fused_experts;          /* experts stored as 3-D mlp.experts.gate_up_proj / down_proj */
    int n_full_layers, n_linear_layers, n_moe_layers;
    int* layer_moe;             /* [n_layers] 1 when the layer's MLP is a routed MoE */
    int mtp_layers;             /* mtp_num_hidden_layers / num_nextn_predict_layers (not in the inventory) */
    int decoder_sparse_step;
} tq_arch;

/* Parse config.json text (top level, or its "text_config" for VLM wrappers). Missing or invalid
 * fields -> TQ_ERR_FORMAT naming the field; unknown model_type -> TQ_ERR_UNSUPPORTED. */
tq_status tq_arch_from_json(const char* config_json, tq_arch** out);
void tq_arch_free(tq_arch** pa);

const tq_arch_tensor* tq_arch_find(const tq_arch* a, const char* name);
int64_t tq_arch_param_count(const tq_arch* a);        /* total, every tensor */
int64_t tq_arch_active_param_count(const tq_arch* a); /* per token: top_k of n_experts */

/* Same as tq_arch_from_json with the expert layout chosen explicitly (fused = 1: 3-D
 * mlp.experts.gate_up_proj [E, 2*I, h] and mlp.experts.down_proj [E, h, I], as transformers >= 5 saves
 * Qwen3.5 MoE; fused = 0: per-expert mlp.experts.{e}.{gate,up,down}_proj.weight, the default). */
tq_status tq_arch_from_json_layout(const char* config_json, int fused_experts, tq_arch** out);
/* Descriptor of a checkpoint: its config.json, with the expert layout detected from its tensor names. */
tq_status tq_arch_from_ckpt(const tq_ckpt* c, tq_arch** out);
/* Tensors a checkpoint may hold that are not part of the text model (vision tower model.visual.*,
 * visual.*, MTP head mtp.*, rotary inv_freq buffers): 1 when name is one of them. */
int tq_arch_is_ignored_name(const char* name);
/* One-line human description, e.g. "qwen3_5_moe: 48 layers (12 full + 36 linear attention), hidden 3072,
 * 256 experts top-8 ...". Returns dst. */
char* tq_arch_describe(const tq_arch* a, char* dst, size_t dst_cap);
/* Rows/cols of a descriptor tensor (rows = product of all dims but the last). */
int64_t tq_arch_tensor_rows(const tq_arch_tensor* t);
int64_t tq_arch_tensor_cols(const tq_arch_tensor* t);
int64_t tq_arch_tensor_numel(const tq_arch_tensor* t);
/* Per-token KV elements (K and V, all full-attention layers) and the recurrent state elements per
 * sequence of the linear-attention layers: conv state (K-1) x conv_dim plus the delta-rule state
 * Hv x dk x dv, summed over the linear layers. */
int64_t tq_arch_kv_elems_per_token(const tq_arch* a);
int64_t tq_arch_recurrent_state_elems(const tq_arch* a);

/* Check a checkpoint's inventory against the descriptor: missing, unexpected and wrong-shape tensors
 * are listed (up to a limit) in one TQ_ERR_FORMAT message. The "model.language_model." prefix of
 * Qwen3.5 VLM checkpoints is accepted. */
tq_status tq_arch_check_ckpt(const tq_arch* a, const tq_ckpt* c);

#endif
