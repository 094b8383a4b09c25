/* model.c — weight sources (checkpoint, artifact, in-memory quantized) and the fp32 forward pass of the
 * Llama family, Qwen3-MoE and the hybrid Qwen3.5 / Qwen3-Next families over a layer range (see model.h).
 * Weights are read tensor by tensor into fp32 arrays for the layers this process holds; activations are
 * [T x hidden] row-major. */
#include "model.h"

#include <jansson.h> // defines: json_loads, json_object_get (rope_scaling)
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "artifact.h" // defines: tq_artifact_open, tq_artifact_dequantize
#include "ckpt.h"     // defines: tq_ckpt_open, tq_ckpt_read_f32
#include "deltanet.h" // defines: tq_causal_conv1d_silu_ref, tq_gated_delta_rule_ref (hybrid families)

// ------------------------------------------------------------------------------------------------
// weight source: Hugging Face checkpoint

static const char* ck_config(void* ctx)
{
    return tq_ckpt_config_json((const tq_ckpt*)ctx);
}

static int ck_has(void* ctx, const char* name)
{
    return tq_ckpt_find((const tq_ckpt*)ctx, name) != NULL;
}

static tq_status ck_shape(void* ctx, const char* name, int64_t* rows, int64_t* cols)
{
    const tq_tensor_info* t = tq_ckpt_find((const tq_ckpt*)ctx, name);
    TQ_RETURN_IF(!t, TQ_ERR_NOTFOUND, "checkpoint %s has no tensor %s", tq_ckpt_dir((const tq_ckpt*)ctx), name);
    *rows = tq_tensor_rows(t);
    *cols = tq_tensor_cols(t);
    return TQ_OK;
}

static tq_status ck_read(void* ctx, const char* name, float* dst, size_t cap)
{
    const tq_ckpt* c = (const tq_ckpt*)ctx;
    const tq_tensor_info* t = tq_ckpt_find(c, name);
    TQ_RETURN_IF(!t, TQ_ERR_NOTFOUND, "checkpoint %s has no tensor %s", tq_ckpt_dir(c), name);
    return tq_ckpt_read_f32(c, t, 0, tq_tensor_rows(t), dst, cap * sizeof(float));
}

static void ck_close(void* ctx)
{
    tq_ckpt* c = (tq_ckpt*)ctx;
    tq_ckpt_free(&c);
}

tq_status tq_wsource_ckpt(const char* dir, tq_wsource** out)
{
    *out = NULL;
    tq_ckpt* c = NULL;
    TQ_FORWARD(tq_ckpt_open(dir, &c));
    if (!tq_ckpt_config_json(c)) {
        tq_ckpt_free(&c);
        return tq_fail(TQ_ERR_NOTFOUND, "checkpoint %s has no config.json: the model needs one", dir);
    }
    tq_wsource* w = calloc(1, sizeof *w);
    if (!w) {
        tq_ckpt_free(&c);
        return tq_fail(TQ_ERR_NOMEM, "out of memory");
    }
    w->ctx = c;
    snprintf(w->desc, sizeof w->desc, "checkpoint %s", dir);
    w->config_json = ck_config;
    w->has = ck_has;
    w->shape = ck_shape;
    w->read = ck_read;
    w->close = ck_close;
    *out = w;
    return TQ_OK;
}

// ------------------------------------------------------------------------------------------------
// weight source: tqpipe artifact

static const char* ar_config(void* ctx)
{
    return tq_artifact_config_json((const tq_artifact*)ctx);
}

static int ar_has(void* ctx, const char* name)
{
    return tq_artifact_find((const tq_artifact*)ctx, name) != NULL;
}

static tq_status ar_shape(void* ctx, const char* name, int64_t* rows, int64_t* cols)
{
    const tq_artifact_tensor* t = tq_artifact_find((const tq_artifact*)ctx, name);
    TQ_RETURN_IF(!t, TQ_ERR_NOTFOUND, "artifact %s has no tensor %s", tq_artifact_dir((const tq_artifact*)ctx), name);
    *rows = t->rows;
    *cols = t->cols;
    return TQ_OK;
}

static tq_status ar_read(void* ctx, const char* name, float* dst, size_t cap)
{
    tq_artifact* a = (tq_artifact*)ctx;
    const tq_artifact_tensor* t = tq_artifact_find(a, name);
    TQ_RETURN_IF(!t, TQ_ERR_NOTFOUND, "artifact %s has no tensor %s", tq_artifact_dir(a), name);
    return tq_artifact_dequantize(a, t, dst, cap);
}

static void ar_close(void* ctx)
{
    tq_artifact* a = (tq_artifact*)ctx;
    tq_artifact_close(&a);
}

tq_status tq_wsource_artifact(const char* dir, tq_wsource** out)
{
    *out = NULL;
    tq_artifact* a = NULL;
    TQ_FORWARD(tq_artifact_open(dir, &a));
    if (!tq_artifact_config_json(a)[0]) {
        tq_artifact_close(&a);
        return tq_fail(TQ_ERR_FORMAT, "artifact %s records no config.json: it cannot be run", dir);
    }
    tq_wsource* w = calloc(1, sizeof *w);
    if (!w) {
        tq_artifact_close(&a);
        return tq_fail(TQ_ERR_NOMEM, "out of memory");
    }
    w->ctx = a;
    snprintf(w->desc, sizeof w->desc, "artifact %s", dir);
    w->config_json = ar_config;
    w->has = ar_has;
    w->shape = ar_shape;
    w->read = ar_read;
    w->close = ar_close;
    *out = w;
    return TQ_OK;
}

// ------------------------------------------------------------------------------------------------
// weight source: quantize + dequantize in memory

typedef struct {
    tq_wsource* inner;
    tq_codec codec;
    uint64_t seed;
    int with_embed;
} qsrc;

static const char* qs_config(void* ctx)
{
    qsrc* q = ctx;
    return q->inner->config_json(q->inner->ctx);
}

static int qs_has(void* ctx, const char* name)
{
    qsrc* q = ctx;
    return q->inner->has(q->inner->ctx, name);
}

static tq_status qs_shape(void* ctx, const char* name, int64_t* rows, int64_t* cols)
{
    qsrc* q = ctx;
    return q->inner->shape(q->inner->ctx, name, rows, cols);
}

static int ends_with(const char* s, const char* suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static tq_status qs_read(void* ctx, const char* name, float* dst, size_t cap)
{
    qsrc* q = ctx;
    TQ_FORWARD(q->inner->read(q->inner->ctx, name, dst, cap));
    int linear = ends_with(name, "_proj.weight") || ends_with(name, ".mlp.experts.gate_up_proj") ||
                 ends_with(name, ".mlp.experts.down_proj"); /* fused 3-D experts: rows = E x out */
    int embed = ends_with(name, "embed_tokens.weight") || !strcmp(name, "lm_head.weight");
    if (!linear && !(embed && q->with_embed)) return TQ_OK;
    int64_t rows, cols;
    TQ_FORWARD(q->inner->shape(q->inner->ctx, name, &rows, &cols));
    tq_qtensor qt;
    memset(&qt, 0, sizeof qt);
    TQ_FORWARD(tq_qtensor_alloc(&qt, &q->codec, rows, cols, tq_tensor_seed(q->seed, name)));
    tq_status rc = tq_quantize_ref(dst, &qt, name);
    if (rc == TQ_OK) rc = tq_dequantize_ref(&qt, dst);
    tq_qtensor_release(&qt);
    return rc;
}

static void qs_close(void* ctx)
{
    qsrc* q = ctx;
    tq_wsource_free(&q->inner);
    free(q);
}

tq_status tq_wsource_quantized(tq_wsource* inner, const tq_codec* codec, uint64_t seed, int with_embed,
                               tq_wsource** out)
{
    *out = NULL;
    qsrc* q = calloc(1, sizeof *q);
    tq_wsource* w = calloc(1, sizeof *w);
    if (!q || !w) {
        free(q);
        free(w);
        return tq_fail(TQ_ERR_NOMEM, "out of memory");
    }
    q->inner = inner;
    q->codec = *codec;
    q->seed = seed;
    q->with_embed = with_embed;
    w->ctx = q;
    snprintf(w->desc, sizeof w->desc, "%.400s quantized in memory to %s", inner->desc, codec->name);
    w->config_json = qs_config;
    w->has = qs_has;
    w->shape = qs_shape;
    w->read = qs_read;
    w->close = qs_close;
    *out = w;
    return TQ_OK;
}

void tq_wsource_free(tq_wsource** pw)
{
    if (!pw || !*pw) return;
    if ((*pw)->close) (*pw)->close((*pw)->ctx);
    free(*pw);
    *pw = NULL;
}

// ------------------------------------------------------------------------------------------------
// the model

typedef struct {
    float *attn_norm, *ffn_norm;
    float *wq, *wk, *wv, *wo;
    float *bq, *bk, *bv, *bo;
    float *q_norm, *k_norm;
    float *w_gate, *w_up, *w_down; /* dense MLP */
    int moe;
    float* router;                 /* [E x hidden] */
    float **e_gate, **e_up, **e_down;
    float *fused_gu, *fused_down;  /* fused experts [E x 2*Im x h], [E x h x Im]; e_* point into them */
    float *s_gate, *s_up, *s_down, *s_egate; /* shared expert + its sigmoid gate [1 x h] */
    /* hybrid families */
    int lin;                       /* 1: Gated DeltaNet layer, 0: (gated) full attention */
    float *w_qkv, *w_z, *w_b, *w_a; /* qwen3_5: in_proj_qkv / z / b / a; qwen3_next: w_qkv = in_proj_qkvz, w_b = in_proj_ba */
    float *conv_w, *A_log, *dt_bias, *lin_norm, *w_out;
} layer_w;

struct tq_model {
    tq_arch* arch;
    int l0, l1;
    layer_w* layers;
    float* embed;       /* [vocab x hidden] */
    float* final_norm;
    float* lm_head;     /* == embed when tied */
    tq_rope rope;
    float eps;
    int nq, nkv, hd, hidden, vocab;
    size_t bytes;
    tq_linear_observer obs; /* calibration hook (pipeline/calib.h), NULL when unset */
    void* obs_ctx;
    /* hybrid families (qwen3_5, qwen3_5_moe, qwen3_next) */
    int hybrid, next_layout, norm_plus1, out_gate;
    int Hk, Hv, dk, dv, ck, conv_dim;
    int* kv_index;        /* [l1 - l0]: local KV-cache layer of a full-attention layer, -1 for linear ones */
    size_t* state_off;    /* [l1 - l0]: offset of a linear layer's state in tq_kv_state() */
    size_t state_floats;  /* per sequence: sum over local linear layers of 1 + (K-1)*conv_dim + Hv*dk*dv */
    int n_kv_local, kv_offset;
};

static tq_status load_tensor(tq_model* m, tq_wsource* src, const char* name, int64_t rows, int64_t cols, float** out)
{
    *out = NULL;
    int64_t r, c;
    TQ_FORWARD(src->shape(src->ctx, name, &r, &c));
    TQ_RETURN_IF(r * c != rows * cols, TQ_ERR_FORMAT, "%s: tensor %s has %lld x %lld values, the config implies %lld x %lld",
                 src->desc, name, (long long)r, (long long)c, (long long)rows, (long long)cols);
    size_t n = (size_t)(rows * cols);
    float* p = malloc(n * sizeof(float));
    TQ_RETURN_IF(!p, TQ_ERR_NOMEM, "out of memory loading %s (%zu bytes)", name, n * sizeof(float));
    tq_status rc = src->read(src->ctx, name, p, n);
    if (rc != TQ_OK) {
        free(p);
        return rc;
    }
    for (size_t i = 0; i < n; i++)
        if (!isfinite(p[i])) {
            free(p);
            return tq_fail(TQ_ERR_NUMERIC, "%s: tensor %s holds NaN/Inf at element %zu", src->desc, name, i);
        }
    m->bytes += n * sizeof(float);
    *out = p;
    return TQ_OK;
}

/* A norm weight; Qwen3.5 / Qwen3-Next store the zero-centered form (the norm multiplies by 1 + w). */
static tq_status load_norm(tq_model* m, tq_wsource* src, const char* name, int64_t n, float** out)
{
    TQ_FORWARD(load_tensor(m, src, name, 1, n, out));
    if (m->norm_plus1)
        for (int64_t i = 0; i < n; i++) (*out)[i] += 1.0f;
    return TQ_OK;
}

static void parse_rope_scaling(const char* cfg, tq_rope_scaling* sc)
{
    memset(sc, 0, sizeof *sc);
    json_error_t err;
    json_t* root = json_loads(cfg, 0, &err);
    if (!root) return;
    json_t* tc = json_object_get(root, "text_config");
    json_t* base = json_is_object(tc) ? tc : root;
    json_t* rs = json_object_get(base, "rope_scaling");
    if (json_is_object(rs)) {
        json_t* ty = json_object_get(rs, "rope_type");
        if (!json_is_string(ty)) ty = json_object_get(rs, "type");
        const char* t = json_is_string(ty) ? json_string_value(ty) : "";
        sc->factor = json_number_value(json_object_get(rs, "factor"));
        if (!strcmp(t, "linear")) {
            sc->kind = TQ_ROPE_SCALE_LINEAR;
        } else if (!strcmp(t, "llama3")) {
            sc->kind = TQ_ROPE_SCALE_LLAMA3;
            sc->low_freq_factor = json_number_value(json_object_get(rs, "low_freq_factor"));
            sc->high_freq_factor = json_number_value(json_object_get(rs, "high_freq_factor"));
            sc->original_max_position = json_number_value(json_object_get(rs, "original_max_position_embeddings"));
            if (sc->low_freq_factor <= 0 || sc->high_freq_factor <= sc->low_freq_factor || sc->original_max_position <= 0)
                sc->kind = TQ_ROPE_SCALE_NONE;
        }
    }
    json_decref(root);
}

static void free_layer(layer_w* L, int n_experts)
{
    free(L->attn_norm);
    free(L->ffn_norm);
    free(L->wq);
    free(L->wk);
    free(L->wv);
    free(L->wo);
    free(L->bq);
    free(L->bk);
    free(L->bv);
    free(L->bo);
    free(L->q_norm);
    free(L->k_norm);
    free(L->w_gate);
    free(L->w_up);
    free(L->w_down);
    free(L->router);
    for (int e = 0; L->e_gate && !L->fused_gu && e < n_experts; e++) {
        free(L->e_gate[e]);
        free(L->e_up[e]);
        free(L->e_down[e]);
    }
    free(L->fused_gu);
    free(L->fused_down);
    free(L->s_gate);
    free(L->s_up);
    free(L->s_down);
    free(L->s_egate);
    free(L->w_qkv);
    free(L->w_z);
    free(L->w_b);
    free(L->w_a);
    free(L->conv_w);
    free(L->A_log);
    free(L->dt_bias);
    free(L->lin_norm);
    free(L->w_out);
    free(L->e_gate);
    free(L->e_up);
    free(L->e_down);
}

static tq_status load_layer(tq_model* m, tq_wsource* src, int l, layer_w* L)
{
    const tq_arch* a = m->arch;
    char n[TQ_MAX_NAME + 64];
    const char* p = a->prefix;
    int64_t h = a->hidden, qd = (int64_t)m->nq * m->hd, kd = (int64_t)m->nkv * m->hd;
#define LT(field, suffix, rows, cols)                                                                  \
    do {                                                                                               \
        snprintf(n, sizeof n, "%slayers.%d.%s", p, l, suffix);                                         \
        TQ_FORWARD(load_tensor(m, src, n, rows, cols, &L->field));                                     \
    } while (0)
#define LN(field, suffix, cols)                                                                        \
    do {                                                                                               \
        snprintf(n, sizeof n, "%slayers.%d.%s", p, l, suffix);                                         \
        TQ_FORWARD(load_norm(m, src, n, cols, &L->field));                                             \
    } while (0)
    LN(attn_norm, "input_layernorm.weight", h);
    LN(ffn_norm, "post_attention_layernorm.weight", h);
    L->lin = m->hybrid && a->layer_types[l] == TQ_LAYER_LINEAR_ATTN;
    if (L->lin) {
        int64_t kdl = (int64_t)m->Hk * m->dk, vdl = (int64_t)m->Hv * m->dv;
        if (m->next_layout) {
            LT(w_qkv, "linear_attn.in_proj_qkvz.weight", 2 * kdl + 2 * vdl, h);
            LT(w_b, "linear_attn.in_proj_ba.weight", 2 * (int64_t)m->Hv, h);
        } else {
            LT(w_qkv, "linear_attn.in_proj_qkv.weight", 2 * kdl + vdl, h);
            LT(w_z, "linear_attn.in_proj_z.weight", vdl, h);
            LT(w_b, "linear_attn.in_proj_b.weight", m->Hv, h);
            LT(w_a, "linear_attn.in_proj_a.weight", m->Hv, h);
        }
        LT(conv_w, "linear_attn.conv1d.weight", m->conv_dim, m->ck);
        LT(A_log, "linear_attn.A_log", 1, m->Hv);
        LT(dt_bias, "linear_attn.dt_bias", 1, m->Hv);
        LT(lin_norm, "linear_attn.norm.weight", 1, m->dv); /* RMSNormGated: plain weight, not 1 + w */
        LT(w_out, "linear_attn.out_proj.weight", h, vdl);
        goto mlp;
    }
    LT(wq, "self_attn.q_proj.weight", qd * (m->out_gate ? 2 : 1), h);
    LT(wk, "self_attn.k_proj.weight", kd, h);
    LT(wv, "self_attn.v_proj.weight", kd, h);
    LT(wo, "self_attn.o_proj.weight", h, qd);
    snprintf(n, sizeof n, "%slayers.%d.self_attn.q_proj.bias", p, l);
    if (a->attn_bias || src->has(src->ctx, n)) {
        LT(bq, "self_attn.q_proj.bias", 1, qd * (m->out_gate ? 2 : 1));
        LT(bk, "self_attn.k_proj.bias", 1, kd);
        LT(bv, "self_attn.v_proj.bias", 1, kd);
    }
    snprintf(n, sizeof n, "%slayers.%d.self_attn.o_proj.bias", p, l);
    if (src->has(src->ctx, n)) LT(bo, "self_attn.o_proj.bias", 1, h);
    snprintf(n, sizeof n, "%slayers.%d.self_attn.q_norm.weight", p, l);
    if (a->qk_norm || src->has(src->ctx, n)) {
        LN(q_norm, "self_attn.q_norm.weight", m->hd);
        LN(k_norm, "self_attn.k_norm.weight", m->hd);
    }
mlp:
    snprintf(n, sizeof n, "%slayers.%d.mlp.gate.weight", p, l);
    if (a->n_experts > 0 && src->has(src->ctx, n)) {
        L->moe = 1;
        int64_t E = a->n_experts, mi = a->moe_intermediate;
        LT(router, "mlp.gate.weight", E, h);
        L->e_gate = calloc((size_t)E, sizeof(float*));
        L->e_up = calloc((size_t)E, sizeof(float*));
        L->e_down = calloc((size_t)E, sizeof(float*));
        TQ_RETURN_IF(!L->e_gate || !L->e_up || !L->e_down, TQ_ERR_NOMEM, "out of memory");
        snprintf(n, sizeof n, "%slayers.%d.mlp.shared_expert_gate.weight", p, l);
        if (src->has(src->ctx, n)) {
            int64_t Is = a->shared_intermediate;
            LT(s_egate, "mlp.shared_expert_gate.weight", 1, h);
            LT(s_gate, "mlp.shared_expert.gate_proj.weight", Is, h);
            LT(s_up, "mlp.shared_expert.up_proj.weight", Is, h);
            LT(s_down, "mlp.shared_expert.down_proj.weight", h, Is);
        }
        snprintf(n, sizeof n, "%slayers.%d.mlp.experts.gate_up_proj", p, l);
        if (src->has(src->ctx, n)) { /* fused: gate rows first, then up rows, per expert */
            LT(fused_gu, "mlp.experts.gate_up_proj", E * 2 * mi, h);
            LT(fused_down, "mlp.experts.down_proj", E * h, mi);
            for (int64_t e = 0; e < E; e++) {
                L->e_gate[e] = L->fused_gu + (size_t)e * 2 * mi * h;
                L->e_up[e] = L->e_gate[e] + (size_t)mi * h;
                L->e_down[e] = L->fused_down + (size_t)e * h * mi;
            }
            return TQ_OK;
        }
        for (int e = 0; e < E; e++) {
            char suf[96];
            snprintf(suf, sizeof suf, "mlp.experts.%d.gate_proj.weight", e);
            LT(e_gate[e], suf, mi, h);
            snprintf(suf, sizeof suf, "mlp.experts.%d.up_proj.weight", e);
            LT(e_up[e], suf, mi, h);
            snprintf(suf, sizeof suf, "mlp.experts.%d.down_proj.weight", e);
            LT(e_down[e], suf, h, mi);
        }
    } else {
        int64_t I = a->intermediate;
        LT(w_gate, "mlp.gate_proj.weight", I, h);
        LT(w_up, "mlp.up_proj.weight", I, h);
        LT(w_down, "mlp.down_proj.weight", h, I);
    }
#undef LT
#undef LN
    return TQ_OK;
}

tq_status tq_model_load(tq_wsource* src, int l0, int l1, tq_model** out)
{
    *out = NULL;
    const char* cfg = src->config_json(src->ctx);
    TQ_RETURN_IF(!cfg || !cfg[0], TQ_ERR_FORMAT, "%s: no config.json", src->desc);
    tq_arch* a = NULL;
    TQ_FORWARD(tq_arch_from_json(cfg, &a));
    tq_status rc = TQ_OK;
    tq_model* m = calloc(1, sizeof *m);
    if (!m) {
        tq_arch_free(&a);
        return tq_fail(TQ_ERR_NOMEM, "out of memory");
    }
    m->arch = a;
    const char* mt = a->model_type;
    m->hybrid = !strcmp(mt, "qwen3_5") || !strcmp(mt, "qwen3_5_moe") || !strcmp(mt, "qwen3_next");
    TQ_GOTO_FAIL(!m->hybrid && strcmp(mt, "llama") && strcmp(mt, "mistral") && strcmp(mt, "qwen2") && strcmp(mt, "qwen3") &&
                     strcmp(mt, "qwen3_moe"),
                 TQ_ERR_UNSUPPORTED, fail,
                 "%s: model_type '%s' is not supported by the inference engine (llama, mistral, qwen2, qwen3, qwen3_moe, "
                 "qwen3_5, qwen3_5_moe, qwen3_next)",
                 src->desc, mt);
    if (m->hybrid) {
        m->next_layout = !strcmp(mt, "qwen3_next");
        m->norm_plus1 = 1; /* Qwen3_5RMSNorm / Qwen3NextRMSNorm: x_normed * (1 + w) */
        m->out_gate = a->attn_output_gate;
        m->Hk = a->lin_k_heads;
        m->Hv = a->lin_v_heads;
        m->dk = a->lin_k_dim;
        m->dv = a->lin_v_dim;
        m->ck = a->lin_conv_kernel;
        m->conv_dim = 2 * m->Hk * m->dk + m->Hv * m->dv;
        TQ_GOTO_FAIL(a->n_linear_layers > 0 && (m->Hk <= 0 || m->Hv <= 0 || m->Hv % m->Hk || m->dk <= 0 || m->dv <= 0 ||
                                                m->ck <= 0),
                     TQ_ERR_FORMAT, fail, "%s: bad linear-attention configuration (heads %d/%d, dims %d/%d, conv %d)",
                     src->desc, m->Hk, m->Hv, m->dk, m->dv, m->ck);
    }
    if (l1 < 0) l1 = a->n_layers;
    TQ_GOTO_FAIL(l0 < 0 || l1 > a->n_layers || l0 > l1, TQ_ERR_ARG, fail, "layer range [%d, %d) outside 0..%d", l0,
                 l1, a->n_layers);
    m->kv_index = malloc((size_t)(l1 - l0 > 0 ? l1 - l0 : 1) * sizeof(int));
    m->state_off = calloc((size_t)(l1 - l0 > 0 ? l1 - l0 : 1), sizeof(size_t));
    TQ_GOTO_FAIL(!m->kv_index || !m->state_off, TQ_ERR_NOMEM, fail, "out of memory");
    for (int l = 0; l < l1; l++) {
        int lin = m->hybrid && a->layer_types[l] == TQ_LAYER_LINEAR_ATTN;
        if (l < l0) {
            m->kv_offset += !lin;
            continue;
        }
        if (lin) {
            m->kv_index[l - l0] = -1;
            m->state_off[l - l0] = m->state_floats;
            m->state_floats += 1 + (size_t)(m->ck - 1) * m->conv_dim + (size_t)m->Hv * m->dk * m->dv;
        } else {
            m->kv_index[l - l0] = m->n_kv_local++;
        }
    }
    m->l0 = l0;
    m->l1 = l1;
    m->nq = a->n_heads;
    m->nkv = a->n_kv_heads;
    m->hd = a->head_dim;
    m->hidden = a->hidden;
    m->vocab = a->vocab;
    m->eps = (float)a->rms_eps;
    TQ_GOTO_FAIL(m->nq <= 0 || m->nkv <= 0 || m->nq % m->nkv || m->hd <= 0, TQ_ERR_FORMAT, fail,
                 "%s: bad head configuration (%d heads, %d kv heads, head_dim %d)", src->desc, m->nq, m->nkv, m->hd);
    {
        double prf = a->partial_rotary_factor > 0 ? a->partial_rotary_factor : 1.0;
        int rot = (int)(m->hd * prf);
        rot &= ~1;
        tq_rope_scaling sc;
        parse_rope_scaling(cfg, &sc);
        TQ_GOTO_FAIL(tq_rope_init(&m->rope, m->hd, rot, a->rope_theta > 0 ? a->rope_theta : 10000.0, &sc) != 0,
                     TQ_ERR_FORMAT, fail, "%s: unsupported rotary setup (head_dim %d, rotary dims %d)", src->desc,
                     m->hd, rot);
    }
    m->layers = calloc((size_t)(l1 - l0 > 0 ? l1 - l0 : 1), sizeof(layer_w));
    TQ_GOTO_FAIL(!m->layers, TQ_ERR_NOMEM, fail, "out of memory");
    for (int l = l0; l < l1; l++) TQ_CHECK_GOTO(load_layer(m, src, l, &m->layers[l - l0]), fail);
    char n[TQ_MAX_NAME + 64];
    snprintf(n, sizeof n, "%sembed_tokens.weight", a->prefix);
    int need_embed = l0 == 0 || (l1 == a->n_layers && (a->tied_embeddings || !src->has(src->ctx, "lm_head.weight")));
    if (need_embed) TQ_CHECK_GOTO(load_tensor(m, src, n, a->vocab, a->hidden, &m->embed), fail);
    if (l1 == a->n_layers) {
        snprintf(n, sizeof n, "%snorm.weight", a->prefix);
        TQ_CHECK_GOTO(load_norm(m, src, n, a->hidden, &m->final_norm), fail);
        if (!a->tied_embeddings && src->has(src->ctx, "lm_head.weight"))
            TQ_CHECK_GOTO(load_tensor(m, src, "lm_head.weight", a->vocab, a->hidden, &m->lm_head), fail);
        else
            m->lm_head = m->embed;
    }
    *out = m;
    return TQ_OK;
fail:
    tq_model_free(&m);
    return rc;
}

tq_status tq_model_rope(const char* config_json, const tq_arch* a, tq_rope* out)
{
    double prf = a->partial_rotary_factor > 0 ? a->partial_rotary_factor : 1.0;
    int rot = (int)(a->head_dim * prf);
    rot &= ~1;
    tq_rope_scaling sc;
    parse_rope_scaling(config_json, &sc);
    TQ_RETURN_IF(tq_rope_init(out, a->head_dim, rot, a->rope_theta > 0 ? a->rope_theta : 10000.0, &sc) != 0,
                 TQ_ERR_FORMAT, "unsupported rotary setup (head_dim %d, rotary dims %d)", a->head_dim, rot);
    return TQ_OK;
}

void tq_model_free(tq_model** pm)
{
    if (!pm || !*pm) return;
    tq_model* m = *pm;
    if (m->layers)
        for (int l = m->l0; l < m->l1; l++) free_layer(&m->layers[l - m->l0], m->arch->n_experts);
    free(m->layers);
    free(m->kv_index);
    free(m->state_off);
    if (m->lm_head != m->embed) free(m->lm_head);
    free(m->embed);
    free(m->final_norm);
    tq_arch_free(&m->arch);
    free(m);
    *pm = NULL;
}

const tq_arch* tq_model_arch(const tq_model* m)
{
    return m->arch;
}
int tq_model_first_layer(const tq_model* m)
{
    return m->l0;
}
int tq_model_end_layer(const tq_model* m)
{
    return m->l1;
}
int tq_model_hidden(const tq_model* m)
{
    return m->hidden;
}
int tq_model_vocab(const tq_model* m)
{
    return m->vocab;
}
int tq_model_max_position(const tq_model* m)
{
    return m->arch->max_position;
}
void tq_model_set_observer(tq_model* m, tq_linear_observer fn, void* ctx)
{
    m->obs = fn;
    m->obs_ctx = ctx;
}

/* Report a linear layer's input to the calibration hook (no-op without one). */
static tq_status observe_input(const tq_model* m, int l, const char* suffix, const float* x, int rows, int cols)
{
    if (!m->obs || rows <= 0) return TQ_OK;
    char n[TQ_MAX_NAME + 64];
    snprintf(n, sizeof n, "%slayers.%d.%s", m->arch->prefix, l, suffix);
    return m->obs(m->obs_ctx, n, x, rows, cols);
}

size_t tq_model_weight_bytes(const tq_model* m)
{
    return m->bytes;
}

tq_status tq_model_kv_create(const tq_model* m, const tq_kv_codec* kc, const tq_kv_codec* vc, int max_tokens,
                             uint64_t seed, tq_kv_cache** out)
{
    tq_kv_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.n_layers = m->n_kv_local; /* full-attention layers only (every layer but in hybrid models) */
    cfg.n_kv_heads = m->nkv;
    cfg.n_heads = m->nq;
    cfg.head_dim = m->hd;
    cfg.max_tokens = max_tokens;
    cfg.k = *kc;
    cfg.v = *vc;
    cfg.seed = seed;
    cfg.layer_offset = m->kv_offset; /* global index among full-attention layers: same seeds on any split */
    cfg.state_floats = m->state_floats;
    return tq_kv_create(&cfg, out);
}

// ------------------------------------------------------------------------------------------------
// forward

tq_status tq_model_embed(const tq_model* m, const int* tokens, int T, float* x)
{
    TQ_RETURN_IF(!m->embed || m->l0 != 0, TQ_ERR_ARG, "embedding asked of a model part without layer 0");
    for (int t = 0; t < T; t++) {
        TQ_RETURN_IF(tokens[t] < 0 || tokens[t] >= m->vocab, TQ_ERR_ARG,
                     "token %d at index %d is outside the vocabulary (0..%d): wrong token file for this model?",
                     tokens[t], t, m->vocab - 1);
        memcpy(x + (size_t)t * m->hidden, m->embed + (size_t)tokens[t] * m->hidden, (size_t)m->hidden * sizeof(float));
    }
    return TQ_OK;
}

/* MoE feed-forward: xb [T x h] -> out [T x h] (added into x). */
static tq_status moe_ffn(const tq_model* m, const layer_w* L, int l, const float* xb, int T, float* x)
{
    const tq_arch* a = m->arch;
    int E = a->n_experts, K = a->top_k, h = m->hidden, mi = a->moe_intermediate;
    tq_status rc = TQ_OK;
    float* logits = malloc((size_t)T * E * sizeof(float));
    int* sel = malloc((size_t)T * K * sizeof(int));
    float* wsel = malloc((size_t)T * K * sizeof(float));
    int* rows = malloc((size_t)T * sizeof(int));
    float* rw = malloc((size_t)T * sizeof(float));
    float* xin = malloc((size_t)T * h * sizeof(float));
    float* g = malloc((size_t)T * mi * sizeof(float));
    float* u = malloc((size_t)T * mi * sizeof(float));
    float* o = malloc((size_t)T * h * sizeof(float));
    TQ_GOTO_FAIL(!logits || !sel || !wsel || !rows || !rw || !xin || !g || !u || !o, TQ_ERR_NOMEM, out,
                 "out of memory (MoE)");
    TQ_GOTO_FAIL(K <= 0 || K > E, TQ_ERR_FORMAT, out, "MoE config: top_k %d with %d experts", K, E);
    TQ_CHECK_GOTO(observe_input(m, l, "mlp.gate.weight", xb, T, h), out);
    tq_matmul_ref(logits, xb, L->router, NULL, T, h, E);
    for (int t = 0; t < T; t++) {
        float* lg = logits + (size_t)t * E;
        tq_softmax_ref(lg, E);
        float sum = 0;
        for (int k = 0; k < K; k++) { /* top-k, ties to the lower expert id */
            int best = -1;
            for (int e = 0; e < E; e++) {
                int taken = 0;
                for (int j = 0; j < k; j++) taken |= sel[t * K + j] == e;
                if (!taken && (best < 0 || lg[e] > lg[best])) best = e;
            }
            sel[t * K + k] = best;
            wsel[t * K + k] = lg[best];
            sum += lg[best];
        }
        /* Qwen3_5MoeTopKRouter always renormalizes the top-k weights (norm_topk_prob is not read) */
        if (a->norm_topk_prob || !strcmp(a->model_type, "qwen3_5_moe"))
            for (int k = 0; k < K; k++) wsel[t * K + k] /= sum;
    }
    for (int e = 0; e < E; e++) {
        int n = 0;
        for (int t = 0; t < T; t++)
            for (int k = 0; k < K; k++)
                if (sel[t * K + k] == e) {
                    rows[n] = t;
                    rw[n] = wsel[t * K + k];
                    memcpy(xin + (size_t)n * h, xb + (size_t)t * h, (size_t)h * sizeof(float));
                    n++;
                }
        if (!n) continue;
        char en[96];
        snprintf(en, sizeof en, "mlp.experts.%d.gate_proj.weight", e);
        if (!L->fused_gu) TQ_CHECK_GOTO(observe_input(m, l, en, xin, n, h), out); /* fused: no 2-D expert tensors */
        tq_matmul_ref(g, xin, L->e_gate[e], NULL, n, h, mi);
        tq_matmul_ref(u, xin, L->e_up[e], NULL, n, h, mi);
        tq_swiglu_ref(g, u, (int64_t)n * mi);
        snprintf(en, sizeof en, "mlp.experts.%d.down_proj.weight", e);
        if (!L->fused_gu) TQ_CHECK_GOTO(observe_input(m, l, en, g, n, mi), out);
        tq_matmul_ref(o, g, L->e_down[e], NULL, n, mi, h);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < h; j++) x[(size_t)rows[i] * h + j] += rw[i] * o[(size_t)i * h + j];
    }
    if (L->s_gate) { /* shared expert, scaled by sigmoid(shared_expert_gate · x) (Qwen3-Next / Qwen3.5 MoE) */
        int Is = a->shared_intermediate;
        float* sg = malloc((size_t)T * Is * sizeof(float));
        float* su = malloc((size_t)T * Is * sizeof(float));
        float* so = malloc((size_t)T * h * sizeof(float));
        float* sw = malloc((size_t)T * sizeof(float));
        if (!sg || !su || !so || !sw) {
            free(sg);
            free(su);
            free(so);
            free(sw);
            TQ_GOTO_FAIL(1, TQ_ERR_NOMEM, out, "out of memory (shared expert)");
        }
        rc = observe_input(m, l, "mlp.shared_expert.gate_proj.weight", xb, T, h);
        if (rc == TQ_OK) {
            tq_matmul_ref(sw, xb, L->s_egate, NULL, T, h, 1);
            tq_matmul_ref(sg, xb, L->s_gate, NULL, T, h, Is);
            tq_matmul_ref(su, xb, L->s_up, NULL, T, h, Is);
            tq_swiglu_ref(sg, su, (int64_t)T * Is);
            rc = observe_input(m, l, "mlp.shared_expert.down_proj.weight", sg, T, Is);
        }
        if (rc == TQ_OK) {
            tq_matmul_ref(so, sg, L->s_down, NULL, T, Is, h);
            for (int t = 0; t < T; t++) {
                float gt = 1.0f / (1.0f + expf(-sw[t]));
                for (int j = 0; j < h; j++) x[(size_t)t * h + j] += gt * so[(size_t)t * h + j];
            }
        }
        free(sg);
        free(su);
        free(so);
        free(sw);
    }
out:
    free(logits);
    free(sel);
    free(wsel);
    free(rows);
    free(rw);
    free(xin);
    free(g);
    free(u);
    free(o);
    return rc;
}

/* Gated DeltaNet token mixer of layer l: xb [T x h] (normed input) -> out [T x h]; state is the layer's
 * [1 + (K-1)*conv_dim + Hv*dk*dv] floats (token count, conv state, delta-rule state). */
static tq_status lin_attn(const tq_model* m, const layer_w* L, int l, const float* xb, int T, float* state, float* out)
{
    const int h = m->hidden, Hk = m->Hk, Hv = m->Hv, dk = m->dk, dv = m->dv, K = m->ck, C = m->conv_dim;
    const int kd = Hk * dk, vd = Hv * dv, rep = Hv / Hk;
    tq_status rc = TQ_OK;
    float* mix = malloc((size_t)T * C * sizeof(float));
    float* z = malloc((size_t)T * vd * sizeof(float));
    float* b = malloc((size_t)T * Hv * sizeof(float));
    float* a = malloc((size_t)T * Hv * sizeof(float));
    float* q = malloc((size_t)T * kd * sizeof(float));
    float* k = malloc((size_t)T * kd * sizeof(float));
    float* v = malloc((size_t)T * vd * sizeof(float));
    float* o = malloc((size_t)T * vd * sizeof(float));
    size_t tmp_n = (size_t)T * (m->next_layout ? 2 * kd + 2 * vd : 1);
    size_t work_n = (size_t)(K - 1 + T) * C;
    if (work_n < (size_t)dv) work_n = (size_t)dv;
    if (tmp_n < work_n) tmp_n = work_n;
    float* tmp = malloc(tmp_n * sizeof(float));
    TQ_GOTO_FAIL(!mix || !z || !b || !a || !q || !k || !v || !o || !tmp, TQ_ERR_NOMEM, done,
                 "out of memory (linear attention, %d tokens)", T);
    if (m->next_layout) {
        /* in_proj_qkvz rows grouped per key head: [q dk | k dk | v rep*dv | z rep*dv]; in_proj_ba per key
         * head: [b rep | a rep] (Qwen3NextGatedDeltaNet.fix_query_key_value_ordering). */
        const int gw = 2 * dk + 2 * rep * dv;
        TQ_CHECK_GOTO(observe_input(m, l, "linear_attn.in_proj_qkvz.weight", xb, T, h), done);
        tq_matmul_ref(tmp, xb, L->w_qkv, NULL, T, h, 2 * kd + 2 * vd);
        for (int t = 0; t < T; t++)
            for (int g = 0; g < Hk; g++) {
                const float* src = tmp + (size_t)t * (2 * kd + 2 * vd) + (size_t)g * gw;
                float* mt = mix + (size_t)t * C;
                memcpy(mt + (size_t)g * dk, src, (size_t)dk * sizeof(float));
                memcpy(mt + kd + (size_t)g * dk, src + dk, (size_t)dk * sizeof(float));
                memcpy(mt + 2 * kd + (size_t)g * rep * dv, src + 2 * dk, (size_t)rep * dv * sizeof(float));
                memcpy(z + (size_t)t * vd + (size_t)g * rep * dv, src + 2 * dk + rep * dv, (size_t)rep * dv * sizeof(float));
            }
        tq_matmul_ref(tmp, xb, L->w_b, NULL, T, h, 2 * Hv);
        for (int t = 0; t < T; t++)
            for (int g = 0; g < Hk; g++)
                for (int i = 0; i < rep; i++) {
                    b[(size_t)t * Hv + g * rep + i] = tmp[(size_t)t * 2 * Hv + (size_t)g * 2 * rep + i];
                    a[(size_t)t * Hv + g * rep + i] = tmp[(size_t)t * 2 * Hv + (size_t)g * 2 * rep + rep + i];
                }
    } else {
        TQ_CHECK_GOTO(observe_input(m, l, "linear_attn.in_proj_qkv.weight", xb, T, h), done);
        tq_matmul_ref(mix, xb, L->w_qkv, NULL, T, h, C);
        tq_matmul_ref(z, xb, L->w_z, NULL, T, h, vd);
        tq_matmul_ref(b, xb, L->w_b, NULL, T, h, Hv);
        tq_matmul_ref(a, xb, L->w_a, NULL, T, h, Hv);
    }
    float* conv_state = state + 1;
    float* S = conv_state + (size_t)(K - 1) * C;
    tq_causal_conv1d_silu_ref(mix, L->conv_w, conv_state, T, C, K, tmp);
    for (int t = 0; t < T; t++) {
        const float* mt = mix + (size_t)t * C;
        memcpy(q + (size_t)t * kd, mt, (size_t)kd * sizeof(float));
        memcpy(k + (size_t)t * kd, mt + kd, (size_t)kd * sizeof(float));
        memcpy(v + (size_t)t * vd, mt + 2 * kd, (size_t)vd * sizeof(float));
    }
    tq_delta_gates_ref(b, a, L->A_log, L->dt_bias, T, Hv);
    tq_gated_delta_rule_ref(q, k, v, a, b, S, T, Hk, Hv, dk, dv, o, tmp);
    tq_rmsnorm_gated_ref(o, z, L->lin_norm, (int64_t)T * Hv, dv, m->eps);
    TQ_CHECK_GOTO(observe_input(m, l, "linear_attn.out_proj.weight", o, T, vd), done);
    tq_matmul_ref(out, o, L->w_out, NULL, T, vd, h);
    state[0] += (float)T;
done:
    free(mix);
    free(z);
    free(b);
    free(a);
    free(q);
    free(k);
    free(v);
    free(o);
    free(tmp);
    return rc;
}

tq_status tq_model_layers(const tq_model* m, tq_kv_cache* kv, float* x, int T, int pos0)
{
    if (m->l1 == m->l0) return TQ_OK;
    const int h = m->hidden, hd = m->hd, nq = m->nq, nkv = m->nkv;
    const int qd = nq * hd, kd = nkv * hd;
    const int I = m->arch->intermediate > 0 ? m->arch->intermediate : 1;
    tq_status rc = TQ_OK;
    float* xb = malloc((size_t)T * h * sizeof(float));
    float* q = malloc((size_t)T * qd * (m->out_gate ? 2 : 1) * sizeof(float));
    float* gate = m->out_gate ? malloc((size_t)T * qd * sizeof(float)) : NULL;
    float* k = malloc((size_t)T * kd * sizeof(float));
    float* v = malloc((size_t)T * kd * sizeof(float));
    size_t att_w = (size_t)qd * (m->out_gate ? 2 : 1); /* also holds the gated q_proj output and the DeltaNet output */
    if (att_w < (size_t)h) att_w = (size_t)h;
    float* att = malloc((size_t)T * att_w * sizeof(float));
    float* hb = malloc((size_t)T * I * sizeof(float));
    float* hb2 = malloc((size_t)T * I * sizeof(float));
    TQ_GOTO_FAIL(!xb || !q || !k || !v || !att || !hb || !hb2 || (m->out_gate && !gate), TQ_ERR_NOMEM, out,
                 "out of memory (forward, %d tokens)", T);
    float* state = tq_kv_state(kv);
    TQ_GOTO_FAIL(m->state_floats && (!state || tq_kv_state_floats(kv) != m->state_floats), TQ_ERR_ARG, out,
                 "KV cache has no room for the recurrent state of this model's linear-attention layers: create it "
                 "with tq_model_kv_create");
    const float scale = 1.0f / sqrtf((float)hd);
    for (int l = m->l0; l < m->l1; l++) {
        const layer_w* L = &m->layers[l - m->l0];
        int ll = m->kv_index[l - m->l0];
        if (L->lin) {
            float* st = state + m->state_off[l - m->l0];
            TQ_GOTO_FAIL((int)st[0] != pos0, TQ_ERR_ARG, out,
                         "recurrent state of layer %d has seen %d tokens but the batch starts at position %d", l,
                         (int)st[0], pos0);
            tq_rmsnorm_ref(xb, x, L->attn_norm, T, h, m->eps);
            TQ_CHECK_GOTO(lin_attn(m, L, l, xb, T, st, att), out);
            for (size_t i = 0; i < (size_t)T * h; i++) x[i] += att[i];
            goto ffn;
        }
        TQ_GOTO_FAIL(tq_kv_len(kv, ll) != pos0, TQ_ERR_ARG, out,
                     "KV cache of layer %d holds %d tokens but the batch starts at position %d", l, tq_kv_len(kv, ll), pos0);
        tq_rmsnorm_ref(xb, x, L->attn_norm, T, h, m->eps);
        TQ_CHECK_GOTO(observe_input(m, l, "self_attn.q_proj.weight", xb, T, h), out);
        if (m->out_gate) { /* q_proj rows per head: [query hd | gate hd] */
            tq_matmul_ref(att, xb, L->wq, L->bq, T, h, 2 * qd); /* att is free until attention */
            for (int t = 0; t < T; t++)
                for (int hh = 0; hh < nq; hh++) {
                    const float* src = att + (size_t)t * 2 * qd + (size_t)hh * 2 * hd;
                    memcpy(q + (size_t)t * qd + (size_t)hh * hd, src, (size_t)hd * sizeof(float));
                    memcpy(gate + (size_t)t * qd + (size_t)hh * hd, src + hd, (size_t)hd * sizeof(float));
                }
        } else {
            tq_matmul_ref(q, xb, L->wq, L->bq, T, h, qd);
        }
        tq_matmul_ref(k, xb, L->wk, L->bk, T, h, kd);
        tq_matmul_ref(v, xb, L->wv, L->bv, T, h, kd);
        if (L->q_norm) {
            tq_rmsnorm_ref(q, q, L->q_norm, (int64_t)T * nq, hd, m->eps);
            tq_rmsnorm_ref(k, k, L->k_norm, (int64_t)T * nkv, hd, m->eps);
        }
        for (int t = 0; t < T; t++) {
            tq_rope_apply_ref(&m->rope, q + (size_t)t * qd, nq, pos0 + t);
            tq_rope_apply_ref(&m->rope, k + (size_t)t * kd, nkv, pos0 + t);
        }
        TQ_CHECK_GOTO(tq_kv_append(kv, ll, k, v, T), out);
        TQ_CHECK_GOTO(tq_kv_attend(kv, ll, q, T, pos0, scale, att), out);
        if (m->out_gate)
            for (size_t i = 0; i < (size_t)T * qd; i++) att[i] *= 1.0f / (1.0f + expf(-gate[i]));
        TQ_CHECK_GOTO(observe_input(m, l, "self_attn.o_proj.weight", att, T, qd), out);
        tq_matmul_ref(xb, att, L->wo, L->bo, T, qd, h);
        for (size_t i = 0; i < (size_t)T * h; i++) x[i] += xb[i];
    ffn:
        tq_rmsnorm_ref(xb, x, L->ffn_norm, T, h, m->eps);
        if (L->moe) {
            TQ_CHECK_GOTO(moe_ffn(m, L, l, xb, T, x), out);
        } else {
            TQ_CHECK_GOTO(observe_input(m, l, "mlp.gate_proj.weight", xb, T, h), out);
            tq_matmul_ref(hb, xb, L->w_gate, NULL, T, h, I);
            tq_matmul_ref(hb2, xb, L->w_up, NULL, T, h, I);
            tq_swiglu_ref(hb, hb2, (int64_t)T * I);
            TQ_CHECK_GOTO(observe_input(m, l, "mlp.down_proj.weight", hb, T, I), out);
            tq_matmul_ref(xb, hb, L->w_down, NULL, T, I, h);
            for (size_t i = 0; i < (size_t)T * h; i++) x[i] += xb[i];
        }
    }
out:
    free(xb);
    free(q);
    free(k);
    free(v);
    free(att);
    free(gate);
    free(hb);
    free(hb2);
    return rc;
}

tq_status tq_model_head(const tq_model* m, float* x, int T, float* logits)
{
    TQ_RETURN_IF(!m->final_norm || !m->lm_head, TQ_ERR_ARG, "output head asked of a model part without the last layer");
    tq_rmsnorm_ref(x, x, m->final_norm, T, m->hidden, m->eps);
    tq_matmul_ref(logits, x, m->lm_head, NULL, T, m->hidden, m->vocab);
    return TQ_OK;
}

tq_status tq_model_forward(const tq_model* m, tq_kv_cache* kv, const int* tokens, int T, int pos0, float* logits)
{
    float* x = malloc((size_t)T * m->hidden * sizeof(float));
    TQ_RETURN_IF(!x, TQ_ERR_NOMEM, "out of memory (forward)");
    tq_status rc = tq_model_embed(m, tokens, T, x);
    if (rc == TQ_OK) rc = tq_model_layers(m, kv, x, T, pos0);
    if (rc == TQ_OK) rc = tq_model_head(m, x, T, logits);
    free(x);
    return rc;
}
