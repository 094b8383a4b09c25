/* model.c — weight sources (checkpoint, artifact, in-memory quantized) and the fp32 forward pass of the
 * Llama family and Qwen3-MoE over a layer range (see model.h). Weights are read tensor by tensor into
 * fp32 arrays for the layers this process holds; activations are [T x hidden] row-major. */
#include "model.h"

#include <jansson.h> // defines: json_loads, json_object_get (rope_scaling)
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "artifact.h" // defines: tq_artifact_open, tq_artifact_dequantize
#include "ckpt.h"     // defines: tq_ckpt_open, tq_ckpt_read_f32

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
    int linear = ends_with(name, "_proj.weight");
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
    for (int e = 0; L->e_gate && e < n_experts; e++) {
        free(L->e_gate[e]);
        free(L->e_up[e]);
        free(L->e_down[e]);
    }
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
    LT(attn_norm, "input_layernorm.weight", 1, h);
    LT(ffn_norm, "post_attention_layernorm.weight", 1, h);
    LT(wq, "self_attn.q_proj.weight", qd, h);
    LT(wk, "self_attn.k_proj.weight", kd, h);
    LT(wv, "self_attn.v_proj.weight", kd, h);
    LT(wo, "self_attn.o_proj.weight", h, qd);
    snprintf(n, sizeof n, "%slayers.%d.self_attn.q_proj.bias", p, l);
    if (a->attn_bias || src->has(src->ctx, n)) {
        LT(bq, "self_attn.q_proj.bias", 1, qd);
        LT(bk, "self_attn.k_proj.bias", 1, kd);
        LT(bv, "self_attn.v_proj.bias", 1, kd);
    }
    snprintf(n, sizeof n, "%slayers.%d.self_attn.o_proj.bias", p, l);
    if (src->has(src->ctx, n)) LT(bo, "self_attn.o_proj.bias", 1, h);
    snprintf(n, sizeof n, "%slayers.%d.self_attn.q_norm.weight", p, l);
    if (a->qk_norm || src->has(src->ctx, n)) {
        LT(q_norm, "self_attn.q_norm.weight", 1, m->hd);
        LT(k_norm, "self_attn.k_norm.weight", 1, m->hd);
    }
    snprintf(n, sizeof n, "%slayers.%d.mlp.gate.weight", p, l);
    if (a->n_experts > 0 && src->has(src->ctx, n)) {
        L->moe = 1;
        int64_t E = a->n_experts, mi = a->moe_intermediate;
        LT(router, "mlp.gate.weight", E, h);
        L->e_gate = calloc((size_t)E, sizeof(float*));
        L->e_up = calloc((size_t)E, sizeof(float*));
        L->e_down = calloc((size_t)E, sizeof(float*));
        TQ_RETURN_IF(!L->e_gate || !L->e_up || !L->e_down, TQ_ERR_NOMEM, "out of memory");
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
    TQ_GOTO_FAIL(strcmp(mt, "llama") && strcmp(mt, "mistral") && strcmp(mt, "qwen2") && strcmp(mt, "qwen3") &&
                     strcmp(mt, "qwen3_moe"),
                 TQ_ERR_UNSUPPORTED, fail,
                 "%s: model_type '%s' is not supported by the inference engine (llama, mistral, qwen2, qwen3, qwen3_moe)",
                 src->desc, mt);
    TQ_GOTO_FAIL(a->attn_output_gate || a->full_attention_interval > 0, TQ_ERR_UNSUPPORTED, fail,
                 "%s: hybrid linear-attention models are not supported by the inference engine", src->desc);
    if (l1 < 0) l1 = a->n_layers;
    TQ_GOTO_FAIL(l0 < 0 || l1 > a->n_layers || l0 > l1, TQ_ERR_ARG, fail, "layer range [%d, %d) outside 0..%d", l0,
                 l1, a->n_layers);
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
        TQ_CHECK_GOTO(load_tensor(m, src, n, 1, a->hidden, &m->final_norm), fail);
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

void tq_model_free(tq_model** pm)
{
    if (!pm || !*pm) return;
    tq_model* m = *pm;
    if (m->layers)
        for (int l = m->l0; l < m->l1; l++) free_layer(&m->layers[l - m->l0], m->arch->n_experts);
    free(m->layers);
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
    cfg.n_layers = m->l1 - m->l0;
    cfg.n_kv_heads = m->nkv;
    cfg.n_heads = m->nq;
    cfg.head_dim = m->hd;
    cfg.max_tokens = max_tokens;
    cfg.k = *kc;
    cfg.v = *vc;
    cfg.seed = seed;
    cfg.layer_offset = m->l0;
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
        if (a->norm_topk_prob)
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
        TQ_CHECK_GOTO(observe_input(m, l, en, xin, n, h), out);
        tq_matmul_ref(g, xin, L->e_gate[e], NULL, n, h, mi);
        tq_matmul_ref(u, xin, L->e_up[e], NULL, n, h, mi);
        tq_swiglu_ref(g, u, (int64_t)n * mi);
        snprintf(en, sizeof en, "mlp.experts.%d.down_proj.weight", e);
        TQ_CHECK_GOTO(observe_input(m, l, en, g, n, mi), out);
        tq_matmul_ref(o, g, L->e_down[e], NULL, n, mi, h);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < h; j++) x[(size_t)rows[i] * h + j] += rw[i] * o[(size_t)i * h + j];
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

tq_status tq_model_layers(const tq_model* m, tq_kv_cache* kv, float* x, int T, int pos0)
{
    if (m->l1 == m->l0) return TQ_OK;
    const int h = m->hidden, hd = m->hd, nq = m->nq, nkv = m->nkv;
    const int qd = nq * hd, kd = nkv * hd;
    const int I = m->arch->intermediate > 0 ? m->arch->intermediate : 1;
    tq_status rc = TQ_OK;
    float* xb = malloc((size_t)T * h * sizeof(float));
    float* q = malloc((size_t)T * qd * sizeof(float));
    float* k = malloc((size_t)T * kd * sizeof(float));
    float* v = malloc((size_t)T * kd * sizeof(float));
    float* att = malloc((size_t)T * qd * sizeof(float));
    float* hb = malloc((size_t)T * I * sizeof(float));
    float* hb2 = malloc((size_t)T * I * sizeof(float));
    TQ_GOTO_FAIL(!xb || !q || !k || !v || !att || !hb || !hb2, TQ_ERR_NOMEM, out, "out of memory (forward, %d tokens)", T);
    const float scale = 1.0f / sqrtf((float)hd);
    for (int l = m->l0; l < m->l1; l++) {
        const layer_w* L = &m->layers[l - m->l0];
        int ll = l - m->l0;
        TQ_GOTO_FAIL(tq_kv_len(kv, ll) != pos0, TQ_ERR_ARG, out,
                     "KV cache of layer %d holds %d tokens but the batch starts at position %d", l, tq_kv_len(kv, ll), pos0);
        tq_rmsnorm_ref(xb, x, L->attn_norm, T, h, m->eps);
        TQ_CHECK_GOTO(observe_input(m, l, "self_attn.q_proj.weight", xb, T, h), out);
        tq_matmul_ref(q, xb, L->wq, L->bq, T, h, qd);
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
        TQ_CHECK_GOTO(observe_input(m, l, "self_attn.o_proj.weight", att, T, qd), out);
        tq_matmul_ref(xb, att, L->wo, L->bo, T, qd, h);
        for (size_t i = 0; i < (size_t)T * h; i++) x[i] += xb[i];
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
