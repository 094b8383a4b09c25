/* arch.c — the architecture descriptor (pipeline/arch.h): parse a Hugging Face config.json with jansson
 * and list every tensor the text model must have, with its role, layer, expert and shape.
 *
 * Families and the tensor names they use (P = "model." or, for Qwen3.5 VLM wrappers with a
 * "text_config", "model.language_model."; L = P + "layers.{i}."):
 *   all        P embed_tokens.weight [V,h], P norm.weight [h], lm_head.weight [V,h] unless tied,
 *              L input_layernorm.weight [h], L post_attention_layernorm.weight [h]
 *   attention  L self_attn.{q,k,v,o}_proj.weight; q is [2*Hq*d, h] with attn_output_gate (qwen3_5*,
 *              qwen3_next); q/k/v biases for qwen2 (and llama/mistral with attention_bias, + o bias);
 *              q_norm/k_norm [d] for qwen3, qwen3_moe, qwen3_5*, qwen3_next
 *   linear     (hybrid layers, Gated DeltaNet) L linear_attn.: qwen3_5*: in_proj_qkv [2*Hk*dk+Hv*dv, h],
 *              in_proj_z [Hv*dv, h], in_proj_b / in_proj_a [Hv, h]; qwen3_next: in_proj_qkvz
 *              [2*Hk*dk+2*Hv*dv, h], in_proj_ba [2*Hv, h]; both: conv1d.weight [2*Hk*dk+Hv*dv, 1, K],
 *              A_log [Hv], dt_bias [Hv], norm.weight [dv], out_proj.weight [h, Hv*dv]
 *   dense MLP  L mlp.{gate,up}_proj.weight [I, h], L mlp.down_proj.weight [h, I]
 *   MoE        L mlp.gate.weight [E, h] (router); per expert L mlp.experts.{e}.{gate,up}_proj.weight
 *              [Im, h] and down_proj.weight [h, Im] (or fused 3-D mlp.experts.gate_up_proj [E, 2*Im, h]
 *              and mlp.experts.down_proj [E, h, Im]); with a shared expert: L mlp.shared_expert.
 *              {gate,up,down}_proj.weight and L mlp.shared_expert_gate.weight [1, h]
 * Names were checked against vLLM's qwen3_5_moe.py / qwen3_next loaders and HF snapshot inventories.
 * Parameter counts of the Qwen3.5 family match ../shared/QWEN35.md §1.1 exactly (tests/test_arch.c). */
#include "arch.h"

#include <ctype.h>
#include <stdarg.h>
#include <inttypes.h>
#include <jansson.h> /* defines: json_loads, json_object_get, ... */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ------------------------------------------------------------------------------------------------
// roles

static const char* const role_names[TQ_ROLE_COUNT] = {
    [TQ_ROLE_OTHER] = "other",
    [TQ_ROLE_EMBED] = "embed",
    [TQ_ROLE_LM_HEAD] = "lm_head",
    [TQ_ROLE_NORM] = "norm",
    [TQ_ROLE_ATTN_Q] = "attn_q",
    [TQ_ROLE_ATTN_K] = "attn_k",
    [TQ_ROLE_ATTN_V] = "attn_v",
    [TQ_ROLE_ATTN_O] = "attn_o",
    [TQ_ROLE_ATTN_BIAS] = "attn_bias",
    [TQ_ROLE_LIN_QKV] = "lin_qkv",
    [TQ_ROLE_LIN_Z] = "lin_z",
    [TQ_ROLE_LIN_BA] = "lin_ba",
    [TQ_ROLE_LIN_CONV] = "lin_conv",
    [TQ_ROLE_LIN_PARAM] = "lin_param",
    [TQ_ROLE_LIN_OUT] = "lin_out",
    [TQ_ROLE_MLP_GATE] = "mlp_gate",
    [TQ_ROLE_MLP_UP] = "mlp_up",
    [TQ_ROLE_MLP_DOWN] = "mlp_down",
    [TQ_ROLE_EXPERT_GATE] = "expert_gate",
    [TQ_ROLE_EXPERT_UP] = "expert_up",
    [TQ_ROLE_EXPERT_DOWN] = "expert_down",
    [TQ_ROLE_SHARED_GATE] = "shared_gate",
    [TQ_ROLE_SHARED_UP] = "shared_up",
    [TQ_ROLE_SHARED_DOWN] = "shared_down",
    [TQ_ROLE_SHARED_EXPERT_GATE] = "shared_expert_gate",
    [TQ_ROLE_ROUTER] = "router",
    [TQ_ROLE_EXPERT_GATE_UP] = "expert_gate_up",
};

const char* tq_role_name(tq_role r)
{
    if ((int)r < 0 || r >= TQ_ROLE_COUNT || !role_names[r]) return "invalid";
    return role_names[r];
}

tq_role tq_role_parse(const char* s)
{
    if (!s) return TQ_ROLE_COUNT;
    for (int r = 0; r < TQ_ROLE_COUNT; r++)
        if (role_names[r] && !strcmp(s, role_names[r])) return (tq_role)r;
    return TQ_ROLE_COUNT;
}

int tq_role_is_linear(tq_role r)
{
    switch (r) {
    case TQ_ROLE_EMBED: case TQ_ROLE_LM_HEAD:
    case TQ_ROLE_ATTN_Q: case TQ_ROLE_ATTN_K: case TQ_ROLE_ATTN_V: case TQ_ROLE_ATTN_O:
    case TQ_ROLE_LIN_QKV: case TQ_ROLE_LIN_Z: case TQ_ROLE_LIN_BA: case TQ_ROLE_LIN_OUT:
    case TQ_ROLE_MLP_GATE: case TQ_ROLE_MLP_UP: case TQ_ROLE_MLP_DOWN:
    case TQ_ROLE_EXPERT_GATE: case TQ_ROLE_EXPERT_UP: case TQ_ROLE_EXPERT_DOWN: case TQ_ROLE_EXPERT_GATE_UP:
    case TQ_ROLE_SHARED_GATE: case TQ_ROLE_SHARED_UP: case TQ_ROLE_SHARED_DOWN:
    case TQ_ROLE_SHARED_EXPERT_GATE: case TQ_ROLE_ROUTER:
        return 1;
    default:
        return 0;
    }
}

// ------------------------------------------------------------------------------------------------
// families

typedef enum { FAM_LLAMA, FAM_MISTRAL, FAM_QWEN2, FAM_QWEN3, FAM_QWEN3_MOE, FAM_QWEN3_5, FAM_QWEN3_5_MOE,
               FAM_QWEN3_NEXT, FAM_NONE } family;

static const struct {
    const char* name;
    family fam;
} families[] = {
    {"llama", FAM_LLAMA},          {"mistral", FAM_MISTRAL},         {"qwen2", FAM_QWEN2},
    {"qwen3", FAM_QWEN3},          {"qwen3_moe", FAM_QWEN3_MOE},     {"qwen3_5", FAM_QWEN3_5},
    {"qwen3_5_text", FAM_QWEN3_5}, {"qwen3_5_moe", FAM_QWEN3_5_MOE}, {"qwen3_5_moe_text", FAM_QWEN3_5_MOE},
    {"qwen3_next", FAM_QWEN3_NEXT},
};

#define KNOWN_TYPES "llama, mistral, qwen2, qwen3, qwen3_moe, qwen3_5, qwen3_5_moe, qwen3_next"

static family family_of(const char* s, const char** canon)
{
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++)
        if (!strcmp(s, families[i].name)) {
            family f = families[i].fam;
            /* canonical name: drop "_text" */
            *canon = f == FAM_QWEN3_5 ? "qwen3_5" : f == FAM_QWEN3_5_MOE ? "qwen3_5_moe" : families[i].name;
            return f;
        }
    return FAM_NONE;
}

static int fam_hybrid(family f) { return f == FAM_QWEN3_5 || f == FAM_QWEN3_5_MOE || f == FAM_QWEN3_NEXT; }
static int fam_moe(family f) { return f == FAM_QWEN3_MOE || f == FAM_QWEN3_5_MOE || f == FAM_QWEN3_NEXT; }
static int fam_qknorm(family f) { return f == FAM_QWEN3 || f == FAM_QWEN3_MOE || fam_hybrid(f); }

// ------------------------------------------------------------------------------------------------
// config fields (errors name the field)

/* Upper bounds that keep every product in 64-bit range and memory bounded for hostile configs. */
#define MAX_LAYERS 4096
#define MAX_DIM (1 << 20)
#define MAX_VOCAB (1 << 24)
#define MAX_EXPERTS 8192
#define MAX_HEADS 4096
#define MAX_TENSORS 400000

typedef struct {
    json_t* tc;       /* text config object (borrowed) */
    json_t* top;      /* whole config (borrowed) */
} cfg;

/* Look up key in the text config, then in the top level. */
static json_t* cfg_get(const cfg* c, const char* key)
{
    json_t* v = json_object_get(c->tc, key);
    if (!v && c->top != c->tc) v = json_object_get(c->top, key);
    return v;
}

/* Integer field: required (dflt < 0 means required), in [lo, hi]. */
static tq_status get_int(const cfg* c, const char* key, int64_t dflt, int64_t lo, int64_t hi, int* out,
                         const char* why)
{
    json_t* v = cfg_get(c, key);
    if (!v || json_is_null(v)) {
        if (dflt < 0)
            return tq_fail(TQ_ERR_FORMAT, "config.json: required field '%s' is missing (%s); add it to the config",
                           key, why);
        *out = (int)dflt;
        return TQ_OK;
    }
    int64_t x;
    if (json_is_integer(v)) {
        x = (int64_t)json_integer_value(v);
    } else if (json_is_real(v) && json_real_value(v) == (double)(int64_t)json_real_value(v) &&
               json_real_value(v) > -1e15 && json_real_value(v) < 1e15) {
        x = (int64_t)json_real_value(v);
    } else {
        return tq_fail(TQ_ERR_FORMAT, "config.json: field '%s' must be an integer", key);
    }
    if (x < lo || x > hi)
        return tq_fail(TQ_ERR_FORMAT, "config.json: field '%s' = %" PRId64 " is out of range [%" PRId64 ", %" PRId64 "]",
                       key, x, lo, hi);
    *out = (int)x;
    return TQ_OK;
}

static tq_status get_real(const cfg* c, const char* key, double dflt, double* out)
{
    json_t* v = cfg_get(c, key);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return TQ_OK;
    }
    if (!json_is_number(v)) return tq_fail(TQ_ERR_FORMAT, "config.json: field '%s' must be a number", key);
    *out = json_number_value(v);
    if (!(*out == *out)) return tq_fail(TQ_ERR_FORMAT, "config.json: field '%s' is not a finite number", key);
    return TQ_OK;
}

static tq_status get_bool(const cfg* c, const char* key, int dflt, int* out)
{
    json_t* v = cfg_get(c, key);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return TQ_OK;
    }
    if (json_is_boolean(v)) {
        *out = json_is_true(v);
        return TQ_OK;
    }
    if (json_is_integer(v) && (json_integer_value(v) == 0 || json_integer_value(v) == 1)) {
        *out = (int)json_integer_value(v);
        return TQ_OK;
    }
    return tq_fail(TQ_ERR_FORMAT, "config.json: field '%s' must be true or false", key);
}

/* rope_theta / partial_rotary_factor live at the top of the text config or in rope_parameters. */
static tq_status get_rope_real(const cfg* c, const char* key, double dflt, double* out)
{
    json_t* v = cfg_get(c, key);
    if (!v || json_is_null(v)) {
        json_t* rp = cfg_get(c, "rope_parameters");
        if (json_is_object(rp)) v = json_object_get(rp, key);
    }
    if (!v || json_is_null(v)) {
        *out = dflt;
        return TQ_OK;
    }
    if (!json_is_number(v)) return tq_fail(TQ_ERR_FORMAT, "config.json: field '%s' must be a number", key);
    *out = json_number_value(v);
    return TQ_OK;
}

// ------------------------------------------------------------------------------------------------
// inventory

typedef struct {
    tq_arch* a;
    int64_t cap;
    tq_status rc;
} builder;

static void add(builder* b, tq_role role, int layer, int expert, int ndim, int64_t d0, int64_t d1, int64_t d2,
                const char* fmt, ...) __attribute__((format(printf, 9, 10)));

static void add(builder* b, tq_role role, int layer, int expert, int ndim, int64_t d0, int64_t d1, int64_t d2,
                const char* fmt, ...)
{
    if (b->rc != TQ_OK) return;
    tq_arch* a = b->a;
    if (a->n_tensors == b->cap) {
        int64_t nc = b->cap ? b->cap * 2 : 256;
        tq_arch_tensor* nt = realloc(a->tensors, (size_t)nc * sizeof *nt);
        if (!nt) {
            b->rc = tq_fail(TQ_ERR_NOMEM, "arch: out of memory listing %" PRId64 " tensors", nc);
            return;
        }
        a->tensors = nt;
        b->cap = nc;
    }
    tq_arch_tensor* t = &a->tensors[a->n_tensors++];
    memset(t, 0, sizeof *t);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->role = role;
    t->layer = layer;
    t->expert = expert;
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->shape[2] = d2;
}

static int cmp_tensor(const void* x, const void* y)
{
    return strcmp(((const tq_arch_tensor*)x)->name, ((const tq_arch_tensor*)y)->name);
}

static tq_status build_inventory(tq_arch* a, family fam)
{
    builder b = {a, 0, TQ_OK};
    const char* P = a->prefix;
    const int64_t h = a->hidden, V = a->vocab, hd = a->head_dim;
    const int64_t q_out = (int64_t)a->n_heads * hd * (a->attn_output_gate ? 2 : 1);
    const int64_t kv_out = (int64_t)a->n_kv_heads * hd;
    const int64_t key_dim = (int64_t)a->lin_k_heads * a->lin_k_dim, value_dim = (int64_t)a->lin_v_heads * a->lin_v_dim;
    const int64_t conv_dim = 2 * key_dim + value_dim;

    add(&b, TQ_ROLE_EMBED, -1, -1, 2, V, h, 0, "%sembed_tokens.weight", P);
    add(&b, TQ_ROLE_NORM, -1, -1, 1, h, 0, 0, "%snorm.weight", P);
    if (!a->tied_embeddings) add(&b, TQ_ROLE_LM_HEAD, -1, -1, 2, V, h, 0, "lm_head.weight");

    for (int i = 0; i < a->n_layers && b.rc == TQ_OK; i++) {
        add(&b, TQ_ROLE_NORM, i, -1, 1, h, 0, 0, "%slayers.%d.input_layernorm.weight", P, i);
        add(&b, TQ_ROLE_NORM, i, -1, 1, h, 0, 0, "%slayers.%d.post_attention_layernorm.weight", P, i);
        if (a->layer_types[i] == TQ_LAYER_FULL_ATTN) {
            add(&b, TQ_ROLE_ATTN_Q, i, -1, 2, q_out, h, 0, "%slayers.%d.self_attn.q_proj.weight", P, i);
            add(&b, TQ_ROLE_ATTN_K, i, -1, 2, kv_out, h, 0, "%slayers.%d.self_attn.k_proj.weight", P, i);
            add(&b, TQ_ROLE_ATTN_V, i, -1, 2, kv_out, h, 0, "%slayers.%d.self_attn.v_proj.weight", P, i);
            add(&b, TQ_ROLE_ATTN_O, i, -1, 2, h, (int64_t)a->n_heads * hd, 0, "%slayers.%d.self_attn.o_proj.weight",
                P, i);
            if (a->attn_bias) {
                add(&b, TQ_ROLE_ATTN_BIAS, i, -1, 1, q_out, 0, 0, "%slayers.%d.self_attn.q_proj.bias", P, i);
                add(&b, TQ_ROLE_ATTN_BIAS, i, -1, 1, kv_out, 0, 0, "%slayers.%d.self_attn.k_proj.bias", P, i);
                add(&b, TQ_ROLE_ATTN_BIAS, i, -1, 1, kv_out, 0, 0, "%slayers.%d.self_attn.v_proj.bias", P, i);
                if (a->attn_bias == 2)
                    add(&b, TQ_ROLE_ATTN_BIAS, i, -1, 1, h, 0, 0, "%slayers.%d.self_attn.o_proj.bias", P, i);
            }
            if (a->qk_norm) {
                add(&b, TQ_ROLE_NORM, i, -1, 1, hd, 0, 0, "%slayers.%d.self_attn.q_norm.weight", P, i);
                add(&b, TQ_ROLE_NORM, i, -1, 1, hd, 0, 0, "%slayers.%d.self_attn.k_norm.weight", P, i);
            }
        } else {
            const char* L = "linear_attn";
            if (fam == FAM_QWEN3_NEXT) {
                add(&b, TQ_ROLE_LIN_QKV, i, -1, 2, 2 * key_dim + 2 * value_dim, h, 0, "%slayers.%d.%s.in_proj_qkvz.weight",
                    P, i, L);
                add(&b, TQ_ROLE_LIN_BA, i, -1, 2, 2 * (int64_t)a->lin_v_heads, h, 0, "%slayers.%d.%s.in_proj_ba.weight",
                    P, i, L);
            } else {
                add(&b, TQ_ROLE_LIN_QKV, i, -1, 2, conv_dim, h, 0, "%slayers.%d.%s.in_proj_qkv.weight", P, i, L);
                add(&b, TQ_ROLE_LIN_Z, i, -1, 2, value_dim, h, 0, "%slayers.%d.%s.in_proj_z.weight", P, i, L);
                add(&b, TQ_ROLE_LIN_BA, i, -1, 2, a->lin_v_heads, h, 0, "%slayers.%d.%s.in_proj_b.weight", P, i, L);
                add(&b, TQ_ROLE_LIN_BA, i, -1, 2, a->lin_v_heads, h, 0, "%slayers.%d.%s.in_proj_a.weight", P, i, L);
            }
            add(&b, TQ_ROLE_LIN_CONV, i, -1, 3, conv_dim, 1, a->lin_conv_kernel, "%slayers.%d.%s.conv1d.weight", P, i, L);
            add(&b, TQ_ROLE_LIN_PARAM, i, -1, 1, a->lin_v_heads, 0, 0, "%slayers.%d.%s.A_log", P, i, L);
            add(&b, TQ_ROLE_LIN_PARAM, i, -1, 1, a->lin_v_heads, 0, 0, "%slayers.%d.%s.dt_bias", P, i, L);
            add(&b, TQ_ROLE_NORM, i, -1, 1, a->lin_v_dim, 0, 0, "%slayers.%d.%s.norm.weight", P, i, L);
            add(&b, TQ_ROLE_LIN_OUT, i, -1, 2, h, value_dim, 0, "%slayers.%d.%s.out_proj.weight", P, i, L);
        }
        if (a->layer_moe[i]) {
            const int64_t E = a->n_experts, Im = a->moe_intermediate;
            add(&b, TQ_ROLE_ROUTER, i, -1, 2, E, h, 0, "%slayers.%d.mlp.gate.weight", P, i);
            if (a->fused_experts) {
                add(&b, TQ_ROLE_EXPERT_GATE_UP, i, -1, 3, E, 2 * Im, h, "%slayers.%d.mlp.experts.gate_up_proj", P, i);
                add(&b, TQ_ROLE_EXPERT_DOWN, i, -1, 3, E, h, Im, "%slayers.%d.mlp.experts.down_proj", P, i);
            } else {
                for (int e = 0; e < a->n_experts && b.rc == TQ_OK; e++) {
                    add(&b, TQ_ROLE_EXPERT_GATE, i, e, 2, Im, h, 0, "%slayers.%d.mlp.experts.%d.gate_proj.weight", P, i, e);
                    add(&b, TQ_ROLE_EXPERT_UP, i, e, 2, Im, h, 0, "%slayers.%d.mlp.experts.%d.up_proj.weight", P, i, e);
                    add(&b, TQ_ROLE_EXPERT_DOWN, i, e, 2, h, Im, 0, "%slayers.%d.mlp.experts.%d.down_proj.weight", P, i, e);
                }
            }
            if (a->shared_intermediate > 0) {
                const int64_t Is = a->shared_intermediate;
                add(&b, TQ_ROLE_SHARED_GATE, i, -1, 2, Is, h, 0, "%slayers.%d.mlp.shared_expert.gate_proj.weight", P, i);
                add(&b, TQ_ROLE_SHARED_UP, i, -1, 2, Is, h, 0, "%slayers.%d.mlp.shared_expert.up_proj.weight", P, i);
                add(&b, TQ_ROLE_SHARED_DOWN, i, -1, 2, h, Is, 0, "%slayers.%d.mlp.shared_expert.down_proj.weight", P, i);
                add(&b, TQ_ROLE_SHARED_EXPERT_GATE, i, -1, 2, 1, h, 0, "%slayers.%d.mlp.shared_expert_gate.weight", P, i);
            }
        } else {
            const int64_t I = a->intermediate;
            add(&b, TQ_ROLE_MLP_GATE, i, -1, 2, I, h, 0, "%slayers.%d.mlp.gate_proj.weight", P, i);
            add(&b, TQ_ROLE_MLP_UP, i, -1, 2, I, h, 0, "%slayers.%d.mlp.up_proj.weight", P, i);
            add(&b, TQ_ROLE_MLP_DOWN, i, -1, 2, h, I, 0, "%slayers.%d.mlp.down_proj.weight", P, i);
        }
    }
    if (b.rc != TQ_OK) return b.rc;
    qsort(a->tensors, (size_t)a->n_tensors, sizeof *a->tensors, cmp_tensor);
    for (int64_t i = 1; i < a->n_tensors; i++)
        if (!strcmp(a->tensors[i].name, a->tensors[i - 1].name))
            return tq_fail(TQ_ERR_FORMAT, "arch: duplicate tensor name %s (internal error)", a->tensors[i].name);
    return TQ_OK;
}

// ------------------------------------------------------------------------------------------------
// parse

static tq_status parse_layer_types(const cfg* c, family fam, tq_arch* a)
{
    json_t* lt = cfg_get(c, "layer_types");
    if (!fam_hybrid(fam)) {
        /* dense/MoE transformers: every layer is full attention (layer_types, when present, may list
         * sliding_attention for some models; still attention with a KV cache) */
        for (int i = 0; i < a->n_layers; i++) a->layer_types[i] = TQ_LAYER_FULL_ATTN;
        return TQ_OK;
    }
    TQ_FORWARD(get_int(c, "full_attention_interval", 4, 1, MAX_LAYERS, &a->full_attention_interval,
                       "hybrid models need it when layer_types is absent"));
    if (lt && !json_is_null(lt)) {
        if (!json_is_array(lt))
            return tq_fail(TQ_ERR_FORMAT, "config.json: field 'layer_types' must be an array of strings");
        if ((int64_t)json_array_size(lt) != a->n_layers)
            return tq_fail(TQ_ERR_FORMAT, "config.json: field 'layer_types' has %zu entries but num_hidden_layers is %d",
                           json_array_size(lt), a->n_layers);
        for (int i = 0; i < a->n_layers; i++) {
            const char* s = json_string_value(json_array_get(lt, (size_t)i));
            if (s && !strcmp(s, "full_attention")) {
                a->layer_types[i] = TQ_LAYER_FULL_ATTN;
            } else if (s && !strcmp(s, "linear_attention")) {
                a->layer_types[i] = TQ_LAYER_LINEAR_ATTN;
            } else {
                return tq_fail(TQ_ERR_FORMAT,
                               "config.json: field 'layer_types[%d]' must be \"full_attention\" or \"linear_attention\"", i);
            }
        }
    } else {
        for (int i = 0; i < a->n_layers; i++)
            a->layer_types[i] = (i + 1) % a->full_attention_interval == 0 ? TQ_LAYER_FULL_ATTN : TQ_LAYER_LINEAR_ATTN;
    }
    return TQ_OK;
}

static tq_status parse_moe_layers(const cfg* c, family fam, tq_arch* a)
{
    for (int i = 0; i < a->n_layers; i++) a->layer_moe[i] = 0;
    if (!fam_moe(fam) || a->n_experts == 0) return TQ_OK;
    if (fam == FAM_QWEN3_5_MOE) {
        for (int i = 0; i < a->n_layers; i++) a->layer_moe[i] = 1;
        return TQ_OK;
    }
    for (int i = 0; i < a->n_layers; i++) a->layer_moe[i] = (i + 1) % a->decoder_sparse_step == 0;
    json_t* mo = cfg_get(c, "mlp_only_layers");
    if (mo && !json_is_null(mo)) {
        if (!json_is_array(mo)) return tq_fail(TQ_ERR_FORMAT, "config.json: field 'mlp_only_layers' must be an array");
        for (size_t k = 0; k < json_array_size(mo); k++) {
            json_t* v = json_array_get(mo, k);
            if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= a->n_layers)
                return tq_fail(TQ_ERR_FORMAT, "config.json: field 'mlp_only_layers[%zu]' must be a layer index in [0, %d)",
                               k, a->n_layers);
            a->layer_moe[json_integer_value(v)] = 0;
        }
    }
    return TQ_OK;
}

static tq_status parse(json_t* root, int fused, tq_arch* a)
{
    if (!json_is_object(root)) return tq_fail(TQ_ERR_FORMAT, "config.json: the top level must be a JSON object");
    cfg c = {root, root};
    json_t* tc = json_object_get(root, "text_config");
    if (tc && !json_is_null(tc)) {
        if (!json_is_object(tc)) return tq_fail(TQ_ERR_FORMAT, "config.json: field 'text_config' must be an object");
        c.tc = tc;
        a->vlm_wrapper = 1;
    }
    /* model_type: the text config's, else the top level's */
    json_t* mt = json_object_get(c.tc, "model_type");
    if (!mt || json_is_null(mt)) mt = json_object_get(root, "model_type");
    if (!mt) return tq_fail(TQ_ERR_FORMAT, "config.json: required field 'model_type' is missing (one of " KNOWN_TYPES ")");
    if (!json_is_string(mt)) return tq_fail(TQ_ERR_FORMAT, "config.json: field 'model_type' must be a string");
    const char* canon = NULL;
    family fam = family_of(json_string_value(mt), &canon);
    if (fam == FAM_NONE) {
        /* a VLM wrapper whose text_config has no model_type: try the top level */
        json_t* top = json_object_get(root, "model_type");
        if (json_is_string(top)) fam = family_of(json_string_value(top), &canon);
    }
    if (fam == FAM_NONE)
        return tq_fail(TQ_ERR_UNSUPPORTED, "config.json: model_type '%.64s' is not supported (known: " KNOWN_TYPES ")",
                       json_string_value(mt));
    snprintf(a->model_type, sizeof a->model_type, "%s", canon);
    snprintf(a->prefix, sizeof a->prefix, "%s", a->vlm_wrapper ? "model.language_model." : "model.");
    a->fused_experts = fused && fam_moe(fam);

    TQ_FORWARD(get_int(&c, "num_hidden_layers", -1, 1, MAX_LAYERS, &a->n_layers, "number of decoder layers"));
    TQ_FORWARD(get_int(&c, "hidden_size", -1, 1, MAX_DIM, &a->hidden, "model width"));
    TQ_FORWARD(get_int(&c, "vocab_size", -1, 1, MAX_VOCAB, &a->vocab, "embedding rows"));
    TQ_FORWARD(get_int(&c, "num_attention_heads", -1, 1, MAX_HEADS, &a->n_heads, "query heads"));
    TQ_FORWARD(get_int(&c, "num_key_value_heads", a->n_heads, 1, MAX_HEADS, &a->n_kv_heads, "KV heads"));
    if (a->n_heads % a->n_kv_heads)
        return tq_fail(TQ_ERR_FORMAT, "config.json: num_attention_heads (%d) must be a multiple of num_key_value_heads (%d)",
                       a->n_heads, a->n_kv_heads);
    {
        int dflt_hd = a->hidden / a->n_heads;
        TQ_FORWARD(get_int(&c, "head_dim", dflt_hd > 0 ? dflt_hd : -1, 1, 65536, &a->head_dim, "per-head width"));
    }
    TQ_FORWARD(get_int(&c, "max_position_embeddings", 0, 0, INT32_MAX, &a->max_position, ""));
    TQ_FORWARD(get_rope_real(&c, "rope_theta", 10000.0, &a->rope_theta));
    TQ_FORWARD(get_rope_real(&c, "partial_rotary_factor", 1.0, &a->partial_rotary_factor));
    TQ_FORWARD(get_real(&c, "rms_norm_eps", 1e-6, &a->rms_eps));
    {
        /* tie_word_embeddings: the text config's, else the wrapper's; transformers' default is true for
         * most PretrainedConfigs but every Qwen/Llama release states it; default false like Qwen3.5 */
        json_t* tv = json_object_get(c.tc, "tie_word_embeddings");
        if (!tv || json_is_null(tv)) tv = json_object_get(root, "tie_word_embeddings");
        if (tv && !json_is_null(tv) && !json_is_boolean(tv))
            return tq_fail(TQ_ERR_FORMAT, "config.json: field 'tie_word_embeddings' must be true or false");
        a->tied_embeddings = tv && json_is_true(tv);
    }
    a->qk_norm = fam_qknorm(fam);
    if (fam == FAM_QWEN2) {
        a->attn_bias = 1;
    } else if (fam == FAM_LLAMA || fam == FAM_MISTRAL) {
        int ab = 0;
        TQ_FORWARD(get_bool(&c, "attention_bias", 0, &ab));
        a->attn_bias = ab ? 2 : 0;
    }
    if (fam == FAM_QWEN3_5 || fam == FAM_QWEN3_5_MOE || fam == FAM_QWEN3_NEXT) {
        TQ_FORWARD(get_bool(&c, "attn_output_gate", 1, &a->attn_output_gate));
    }
    {
        int mtp = 0, nn = 0;
        TQ_FORWARD(get_int(&c, "mtp_num_hidden_layers", 0, 0, MAX_LAYERS, &mtp, ""));
        TQ_FORWARD(get_int(&c, "num_nextn_predict_layers", 0, 0, MAX_LAYERS, &nn, ""));
        a->mtp_layers = mtp > nn ? mtp : nn;
    }

    /* MoE */
    if (fam_moe(fam)) {
        TQ_FORWARD(get_int(&c, "num_experts", -1, 1, MAX_EXPERTS, &a->n_experts, "routed experts"));
        TQ_FORWARD(get_int(&c, "num_experts_per_tok", -1, 1, MAX_EXPERTS, &a->top_k, "experts per token"));
        if (a->top_k > a->n_experts)
            return tq_fail(TQ_ERR_FORMAT, "config.json: num_experts_per_tok (%d) exceeds num_experts (%d)", a->top_k,
                           a->n_experts);
        TQ_FORWARD(get_int(&c, "moe_intermediate_size", -1, 1, MAX_DIM, &a->moe_intermediate, "expert width"));
        TQ_FORWARD(get_int(&c, "shared_expert_intermediate_size", fam == FAM_QWEN3_MOE ? 0 : -1, 0, MAX_DIM,
                           &a->shared_intermediate, "shared expert width"));
        TQ_FORWARD(get_bool(&c, "norm_topk_prob", fam == FAM_QWEN3_MOE ? 0 : 1, &a->norm_topk_prob));
        TQ_FORWARD(get_int(&c, "decoder_sparse_step", 1, 1, MAX_LAYERS, &a->decoder_sparse_step, ""));
    }
    /* hybrid linear attention */
    if (fam_hybrid(fam)) {
        TQ_FORWARD(get_int(&c, "linear_num_key_heads", -1, 1, MAX_HEADS, &a->lin_k_heads, "DeltaNet key heads"));
        TQ_FORWARD(get_int(&c, "linear_num_value_heads", -1, 1, MAX_HEADS, &a->lin_v_heads, "DeltaNet value heads"));
        TQ_FORWARD(get_int(&c, "linear_key_head_dim", -1, 1, 65536, &a->lin_k_dim, "DeltaNet key head width"));
        TQ_FORWARD(get_int(&c, "linear_value_head_dim", -1, 1, 65536, &a->lin_v_dim, "DeltaNet value head width"));
        TQ_FORWARD(get_int(&c, "linear_conv_kernel_dim", 4, 1, 1024, &a->lin_conv_kernel, ""));
        if (a->lin_v_heads % a->lin_k_heads)
            return tq_fail(TQ_ERR_FORMAT,
                           "config.json: linear_num_value_heads (%d) must be a multiple of linear_num_key_heads (%d)",
                           a->lin_v_heads, a->lin_k_heads);
    }

    a->layer_types = calloc((size_t)a->n_layers, sizeof *a->layer_types);
    a->layer_moe = calloc((size_t)a->n_layers, sizeof *a->layer_moe);
    if (!a->layer_types || !a->layer_moe) return tq_fail(TQ_ERR_NOMEM, "arch: out of memory");
    TQ_FORWARD(parse_layer_types(&c, fam, a));
    TQ_FORWARD(parse_moe_layers(&c, fam, a));
    for (int i = 0; i < a->n_layers; i++) {
        if (a->layer_types[i] == TQ_LAYER_FULL_ATTN) a->n_full_layers++;
        else a->n_linear_layers++;
        a->n_moe_layers += a->layer_moe[i];
    }
    if (a->n_moe_layers < a->n_layers) {
        /* dense MLP layers need intermediate_size */
        TQ_FORWARD(get_int(&c, "intermediate_size", -1, 1, MAX_DIM, &a->intermediate,
                           "dense MLP width; needed because some layers have a dense MLP"));
    } else {
        TQ_FORWARD(get_int(&c, "intermediate_size", 0, 0, MAX_DIM, &a->intermediate, ""));
    }

    /* bound the inventory before allocating it */
    int64_t per_moe = a->fused_experts ? 2 : 3 * (int64_t)a->n_experts;
    int64_t est = 3 + (int64_t)a->n_layers * 20 + (int64_t)a->n_moe_layers * per_moe;
    if (est > MAX_TENSORS)
        return tq_fail(TQ_ERR_FORMAT, "config.json: %" PRId64 " tensors (num_hidden_layers x num_experts) is beyond the"
                       " supported %d; check num_hidden_layers and num_experts", est, MAX_TENSORS);
    return build_inventory(a, fam);
}

tq_status tq_arch_from_json_layout(const char* config_json, int fused_experts, tq_arch** out)
{
    if (!out) return tq_fail(TQ_ERR_ARG, "tq_arch_from_json: out is NULL");
    *out = NULL;
    if (!config_json) return tq_fail(TQ_ERR_ARG, "tq_arch_from_json: no config.json text");
    json_error_t err;
    json_t* root = json_loads(config_json, JSON_REJECT_DUPLICATES, &err);
    if (!root)
        return tq_fail(TQ_ERR_FORMAT, "invalid JSON at line %d column %d: %s; fix the file or use the model's original config.json",
                       err.line, err.column, err.text);
    tq_arch* a = calloc(1, sizeof *a);
    if (!a) {
        json_decref(root);
        return tq_fail(TQ_ERR_NOMEM, "arch: out of memory");
    }
    tq_status rc = parse(root, fused_experts, a);
    json_decref(root);
    if (rc != TQ_OK) {
        tq_arch_free(&a);
        return rc;
    }
    *out = a;
    return TQ_OK;
}

tq_status tq_arch_from_json(const char* config_json, tq_arch** out)
{
    return tq_arch_from_json_layout(config_json, 0, out);
}

tq_status tq_arch_from_ckpt(const tq_ckpt* c, tq_arch** out)
{
    if (!out) return tq_fail(TQ_ERR_ARG, "tq_arch_from_ckpt: out is NULL");
    *out = NULL;
    const char* js = tq_ckpt_config_json(c);
    if (!js)
        return tq_fail(TQ_ERR_NOTFOUND, "checkpoint %s has no config.json; copy the model's config.json beside its"
                       " safetensors files", tq_ckpt_dir(c));
    int fused = 0;
    for (int64_t i = 0; i < tq_ckpt_count(c) && !fused; i++) {
        const char* n = tq_ckpt_tensor(c, i)->name;
        size_t ln = strlen(n);
        static const char suf[] = ".mlp.experts.gate_up_proj";
        if (ln >= sizeof suf - 1 && !strcmp(n + ln - (sizeof suf - 1), suf)) fused = 1;
    }
    tq_status rc = tq_arch_from_json_layout(js, fused, out);
    if (rc != TQ_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", tq_last_error());
        return tq_fail(rc, "%s/%s", tq_ckpt_dir(c), msg);
    }
    return TQ_OK;
}

void tq_arch_free(tq_arch** pa)
{
    if (!pa || !*pa) return;
    free((*pa)->tensors);
    free((*pa)->layer_types);
    free((*pa)->layer_moe);
    free(*pa);
    *pa = NULL;
}

// ------------------------------------------------------------------------------------------------
// queries

const tq_arch_tensor* tq_arch_find(const tq_arch* a, const char* name)
{
    if (!a || !name) return NULL;
    int64_t lo = 0, hi = a->n_tensors - 1;
    while (lo <= hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(a->tensors[mid].name, name);
        if (!c) return &a->tensors[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

int64_t tq_arch_tensor_numel(const tq_arch_tensor* t)
{
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

int64_t tq_arch_tensor_cols(const tq_arch_tensor* t) { return t->ndim > 0 ? t->shape[t->ndim - 1] : 1; }

int64_t tq_arch_tensor_rows(const tq_arch_tensor* t)
{
    int64_t r = 1;
    for (int d = 0; d + 1 < t->ndim; d++) r *= t->shape[d];
    return r;
}

int64_t tq_arch_param_count(const tq_arch* a)
{
    int64_t n = 0;
    for (int64_t i = 0; i < a->n_tensors; i++) n += tq_arch_tensor_numel(&a->tensors[i]);
    return n;
}

int64_t tq_arch_active_param_count(const tq_arch* a)
{
    int64_t total = tq_arch_param_count(a);
    if (a->n_experts <= 0) return total;
    int64_t per_expert = 3 * (int64_t)a->hidden * a->moe_intermediate;
    return total - (int64_t)a->n_moe_layers * (a->n_experts - a->top_k) * per_expert;
}

int64_t tq_arch_kv_elems_per_token(const tq_arch* a)
{
    return (int64_t)a->n_full_layers * 2 * a->n_kv_heads * a->head_dim;
}

int64_t tq_arch_recurrent_state_elems(const tq_arch* a)
{
    if (a->n_linear_layers == 0) return 0;
    int64_t conv_dim = 2 * (int64_t)a->lin_k_heads * a->lin_k_dim + (int64_t)a->lin_v_heads * a->lin_v_dim;
    int64_t per = (int64_t)(a->lin_conv_kernel - 1) * conv_dim + (int64_t)a->lin_v_heads * a->lin_k_dim * a->lin_v_dim;
    return (int64_t)a->n_linear_layers * per;
}

char* tq_arch_describe(const tq_arch* a, char* dst, size_t cap)
{
    if (!dst || cap == 0) return dst;
    int n = snprintf(dst, cap, "%s: %d layers", a->model_type, a->n_layers);
    if (a->n_linear_layers > 0 && n >= 0 && (size_t)n < cap)
        n += snprintf(dst + n, cap - (size_t)n, " (%d full + %d linear attention)", a->n_full_layers, a->n_linear_layers);
    if (n >= 0 && (size_t)n < cap)
        n += snprintf(dst + n, cap - (size_t)n, ", hidden %d, heads %d/%d x %d, vocab %d%s", a->hidden, a->n_heads,
                      a->n_kv_heads, a->head_dim, a->vocab, a->tied_embeddings ? " (tied)" : "");
    if (a->n_experts > 0 && n >= 0 && (size_t)n < cap)
        n += snprintf(dst + n, cap - (size_t)n, ", %d experts top-%d x %d%s", a->n_experts, a->top_k,
                      a->moe_intermediate, a->fused_experts ? " (fused)" : "");
    if (a->shared_intermediate > 0 && n >= 0 && (size_t)n < cap)
        n += snprintf(dst + n, cap - (size_t)n, ", shared expert %d", a->shared_intermediate);
    if (a->n_moe_layers < a->n_layers && n >= 0 && (size_t)n < cap)
        n += snprintf(dst + n, cap - (size_t)n, ", MLP %d", a->intermediate);
    return dst;
}

// ------------------------------------------------------------------------------------------------
// checkpoint check

int tq_arch_is_ignored_name(const char* n)
{
    if (!n) return 0;
    if (!strncmp(n, "model.visual.", 13) || !strncmp(n, "visual.", 7) || !strncmp(n, "mtp.", 4) ||
        !strncmp(n, "model.mtp.", 10))
        return 1;
    size_t ln = strlen(n);
    static const char inv[] = "rotary_emb.inv_freq";
    return ln >= sizeof inv - 1 && !strcmp(n + ln - (sizeof inv - 1), inv);
}

/* Map a checkpoint name onto the descriptor's prefix (model. vs model.language_model.). */
static const char* map_name(const tq_arch* a, const char* n, char* buf, size_t cap)
{
    static const char lm[] = "model.language_model.";
    if (a->vlm_wrapper) {
        if (!strncmp(n, "model.", 6) && strncmp(n, lm, sizeof lm - 1)) {
            snprintf(buf, cap, "%s%s", lm, n + 6);
            return buf;
        }
    } else if (!strncmp(n, lm, sizeof lm - 1)) {
        snprintf(buf, cap, "model.%s", n + sizeof lm - 1);
        return buf;
    }
    return n;
}

#define CHECK_LIST 5

static void shape_str(char* dst, size_t cap, int ndim, const int64_t* shape)
{
    int n = snprintf(dst, cap, "[");
    for (int d = 0; d < ndim && n >= 0 && (size_t)n < cap; d++)
        n += snprintf(dst + n, cap - (size_t)n, "%s%" PRId64, d ? "," : "", shape[d]);
    if (n >= 0 && (size_t)n < cap) snprintf(dst + n, cap - (size_t)n, "]");
}

tq_status tq_arch_check_ckpt(const tq_arch* a, const tq_ckpt* c)
{
    if (!a || !c) return tq_fail(TQ_ERR_ARG, "tq_arch_check_ckpt: NULL argument");
    unsigned char* seen = calloc((size_t)a->n_tensors + 1, 1);
    if (!seen) return tq_fail(TQ_ERR_NOMEM, "arch: out of memory");
    char unexpected[CHECK_LIST][TQ_MAX_NAME], wrong[CHECK_LIST][TQ_MAX_NAME + 256], missing[CHECK_LIST][TQ_MAX_NAME];
    int64_t n_unexp = 0, n_wrong = 0, n_missing = 0, n_fused_hint = 0;
    char buf[TQ_MAX_NAME + 32];
    for (int64_t i = 0; i < tq_ckpt_count(c); i++) {
        const tq_tensor_info* ti = tq_ckpt_tensor(c, i);
        if (tq_arch_is_ignored_name(ti->name)) continue;
        const char* nm = map_name(a, ti->name, buf, sizeof buf);
        const tq_arch_tensor* t = tq_arch_find(a, nm);
        if (!t) {
            if (strstr(ti->name, ".mlp.experts.gate_up_proj") || strstr(ti->name, ".mlp.experts.down_proj") ||
                strstr(ti->name, ".mlp.experts.0.gate_proj"))
                n_fused_hint++;
            if (n_unexp < CHECK_LIST) snprintf(unexpected[n_unexp], TQ_MAX_NAME, "%s", ti->name);
            n_unexp++;
            continue;
        }
        seen[t - a->tensors] = 1;
        int same = ti->ndim == t->ndim;
        for (int d = 0; same && d < t->ndim; d++) same = ti->shape[d] == t->shape[d];
        if (!same) {
            if (n_wrong < CHECK_LIST) {
                char s1[96] = "", s2[96] = "";
                shape_str(s1, sizeof s1, ti->ndim, ti->shape);
                shape_str(s2, sizeof s2, t->ndim, t->shape);
                snprintf(wrong[n_wrong], sizeof wrong[n_wrong], "%.200s is %.60s, expected %.60s", ti->name, s1, s2);
            }
            n_wrong++;
        }
    }
    for (int64_t i = 0; i < a->n_tensors; i++)
        if (!seen[i]) {
            if (n_missing < CHECK_LIST) snprintf(missing[n_missing], TQ_MAX_NAME, "%s", a->tensors[i].name);
            n_missing++;
        }
    free(seen);
    if (!n_unexp && !n_wrong && !n_missing) return TQ_OK;

    char msg[8192];
    size_t cap = sizeof msg;
    int n = snprintf(msg, cap, "checkpoint %s does not match its config.json (%s, %" PRId64 " tensors expected):",
                     tq_ckpt_dir(c), a->model_type, a->n_tensors);
#define APPEND(...)                                                                                         \
    do {                                                                                                    \
        if (n >= 0 && (size_t)n < cap) n += snprintf(msg + n, cap - (size_t)n, __VA_ARGS__);                \
    } while (0)
    if (n_missing) {
        APPEND(" %" PRId64 " missing (", n_missing);
        for (int k = 0; k < CHECK_LIST && k < n_missing; k++) APPEND("%s%s", k ? ", " : "", missing[k]);
        APPEND("%s);", n_missing > CHECK_LIST ? ", ..." : "");
    }
    if (n_unexp) {
        APPEND(" %" PRId64 " unexpected (", n_unexp);
        for (int k = 0; k < CHECK_LIST && k < n_unexp; k++) APPEND("%s%s", k ? ", " : "", unexpected[k]);
        APPEND("%s);", n_unexp > CHECK_LIST ? ", ..." : "");
    }
    if (n_wrong) {
        APPEND(" %" PRId64 " with a wrong shape (", n_wrong);
        for (int k = 0; k < CHECK_LIST && k < n_wrong; k++) APPEND("%s%s", k ? "; " : "", wrong[k]);
        APPEND("%s);", n_wrong > CHECK_LIST ? "; ..." : "");
    }
    if (n_fused_hint)
        APPEND(" the expert layout differs (fused mlp.experts.gate_up_proj vs per-expert names): build the descriptor"
               " with tq_arch_from_ckpt, which detects it;");
    APPEND(" check that config.json belongs to these weights");
#undef APPEND
    return tq_fail(TQ_ERR_FORMAT, "%s", msg);
}
