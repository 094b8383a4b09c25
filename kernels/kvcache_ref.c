/* kvcache_ref.c — CPU reference of the KV cache codecs and of attention over the packed cache (see
 * kernels/kvcache.h for the codecs and the byte layout).
 *
 * Storage: one byte array per side (K, V): [layer][kv head][token][vec_bytes] (+ 4 bytes of slack so
 * the bit reader may over-read). For tq codecs each (layer, kv head) also has a channel order (the
 * outlier half first, each half ascending; identity without a split), the random signs of the
 * rotation (per permuted position) and, for QJL keys, one d x d Gaussian matrix per layer.
 * The rotation of a half of n channels is y = H_n · D · x_half / sqrt(n) with H_n the Walsh–Hadamard
 * matrix (kernels/hadamard.h tq_fwht; n is a power of two) and D the signs tq_rot_sign(seed of
 * (K/V, layer, head), permuted position). */
#include "kvcache.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"    // defines: tq_f32_to_f16, tq_f16_to_f32, tq_f32_to_bf16, tq_bf16_to_f32
#include "hadamard.h" // defines: tq_fwht, tq_rot_sign, tq_mix64
#include "lloydmax.h" // defines: tq_lloydmax_unit_f32

#define KV_SLACK 4

// ------------------------------------------------------------------------------------------------
// codec names and sizes

tq_status tq_kv_codec_parse(const char* name, int qjl, tq_kv_codec* out)
{
    memset(out, 0, sizeof *out);
    TQ_RETURN_IF(!name, TQ_ERR_ARG, "KV codec: no name given");
    char buf[32];
    snprintf(buf, sizeof buf, "%s", name);
    int nc = 0;
    for (char* plus = strrchr(buf, '+'); plus; plus = strrchr(buf, '+')) {
        if (!strcmp(plus, "+qjl"))
            qjl = 1;
        else if (!strcmp(plus, "+nc"))
            nc = 1;
        else
            return tq_fail(TQ_ERR_ARG, "KV codec '%s': unknown suffix '%s' (+qjl, +nc)", name, plus);
        *plus = 0;
    }
    if (!strcmp(buf, "f32") || !strcmp(buf, "fp32")) {
        out->kind = TQ_KV_F32;
    } else if (!strcmp(buf, "fp16") || !strcmp(buf, "f16")) {
        out->kind = TQ_KV_FP16;
    } else if (!strcmp(buf, "bf16")) {
        out->kind = TQ_KV_BF16;
    } else if (!strcmp(buf, "int8") || !strcmp(buf, "q8")) {
        out->kind = TQ_KV_INT8;
    } else if (!strcmp(buf, "tq2") || !strcmp(buf, "tq3") || !strcmp(buf, "tq4")) {
        out->kind = TQ_KV_TQ;
        out->bits = buf[2] - '0';
    } else if (!strcmp(buf, "tq2.5") || !strcmp(buf, "tq3.5")) {
        out->kind = TQ_KV_TQ;
        out->bits = buf[2] - '0';
        out->split = 1;
    } else {
        return tq_fail(TQ_ERR_ARG, "unknown KV codec '%s': use f32, fp16, bf16, int8, tq2, tq3, tq4, tq2.5, tq3.5 "
                                   "(optionally +qjl for keys)", name);
    }
    TQ_RETURN_IF(qjl && out->kind != TQ_KV_TQ, TQ_ERR_ARG,
                 "KV codec '%s': the QJL stage applies to tq codecs only", name);
    TQ_RETURN_IF(nc && out->kind != TQ_KV_TQ, TQ_ERR_ARG, "KV codec '%s': +nc applies to tq codecs only", name);
    out->qjl = qjl ? 1 : 0;
    out->norm_fix = nc;
    const char* base = out->kind == TQ_KV_F32 ? "f32" : out->kind == TQ_KV_FP16 ? "fp16"
                     : out->kind == TQ_KV_BF16 ? "bf16" : out->kind == TQ_KV_INT8 ? "int8" : NULL;
    if (base)
        snprintf(out->name, sizeof out->name, "%s", base);
    else
        snprintf(out->name, sizeof out->name, "tq%d%s%s%s", out->bits, out->split ? ".5" : "", out->qjl ? "+qjl" : "",
                 out->norm_fix ? "+nc" : "");
    return TQ_OK;
}

/* Bits of the MSE stage for half s (0 = outliers or all, 1 = the rest) and the halves' sizes. */
static void tq_layout(const tq_kv_codec* c, int d, int* nsub, int n[2], int bits[2])
{
    int b = c->bits - (c->qjl ? 1 : 0);
    if (c->split) {
        *nsub = 2;
        n[0] = d / 2;
        n[1] = d - d / 2;
        bits[0] = b + 1;
        bits[1] = b;
    } else {
        *nsub = 1;
        n[0] = d;
        n[1] = 0;
        bits[0] = b;
        bits[1] = 0;
    }
}

size_t tq_kv_vec_bytes(const tq_kv_codec* c, int d)
{
    switch (c->kind) {
    case TQ_KV_F32: return (size_t)4 * (size_t)d;
    case TQ_KV_FP16:
    case TQ_KV_BF16: return (size_t)2 * (size_t)d;
    case TQ_KV_INT8: return (size_t)d + 2;
    case TQ_KV_TQ: {
        int nsub, n[2], bits[2];
        tq_layout(c, d, &nsub, n, bits);
        size_t nbits = (size_t)n[0] * bits[0] + (size_t)n[1] * bits[1] + (c->qjl ? (size_t)d : 0);
        return (size_t)2 * nsub + (c->qjl ? 2 : 0) + (nbits + 7) / 8;
    }
    }
    return 0;
}

double tq_kv_bits(const tq_kv_codec* c, int d)
{
    return 8.0 * (double)tq_kv_vec_bytes(c, d) / d;
}

// ------------------------------------------------------------------------------------------------
// small helpers: hashing, rotation, bit packing

static uint64_t key4(uint64_t seed, uint64_t a, uint64_t b, uint64_t c)
{
    return tq_mix64(tq_mix64(tq_mix64(seed ^ 0x6b76636163686521ull) ^ a) ^ (b << 20) ^ c);
}

static void put_bits(uint8_t* buf, size_t off, int nbits, unsigned v)
{
    for (int i = 0; i < nbits; i++, off++)
        if ((v >> i) & 1u) buf[off >> 3] |= (uint8_t)(1u << (off & 7));
}

static inline unsigned get_bits(const uint8_t* buf, size_t off, int nbits)
{
    const uint8_t* p = buf + (off >> 3);
    unsigned w = (unsigned)p[0] | ((unsigned)p[1] << 8) | ((unsigned)p[2] << 16);
    return (w >> (off & 7)) & ((1u << nbits) - 1u);
}

static int is_pow2(int n)
{
    return n > 0 && (n & (n - 1)) == 0;
}

// ------------------------------------------------------------------------------------------------
// the cache

typedef struct {
    tq_kv_codec codec;
    size_t vb;           /* bytes per coded vector */
    uint8_t* data;       /* [layers][heads][max_tokens][vb] + slack */
    /* tq only */
    int nsub, n[2], bits[2], off[2];
    float cb[2][256];    /* centroids per half */
    float bnd[2][255];   /* midpoints */
    uint16_t* chan;      /* [layers][heads][d] channel order */
    float* sign;         /* [layers][heads][d] ±1 */
    float* S;            /* [layers][d*d] QJL matrix */
    int* calibrated;     /* [layers] */
} kv_side;

struct tq_kv_cache {
    tq_kv_config cfg;
    kv_side side[2];
    int* len;            /* [layers] */
    float* scores;       /* [max_tokens] */
    float* work;         /* scratch: 8 * d + lookup tables */
    float* table;        /* d * 256 */
    float* plain;        /* [2][max_tokens x d]: one head of plain-coded K and V decoded for the dot products */
    float* state;        /* [cfg.state_floats] recurrent state (hybrid models), NULL when none */
};

static size_t vec_index(const tq_kv_cache* c, int layer, int head, int pos)
{
    return (((size_t)layer * c->cfg.n_kv_heads + head) * c->cfg.max_tokens + pos);
}

static tq_status side_init(tq_kv_cache* c, kv_side* s, const tq_kv_codec* codec, int which)
{
    const tq_kv_config* g = &c->cfg;
    int d = g->head_dim;
    s->codec = *codec;
    s->vb = tq_kv_vec_bytes(codec, d);
    size_t nvec = (size_t)g->n_layers * g->n_kv_heads * g->max_tokens;
    s->data = calloc(nvec * s->vb + KV_SLACK, 1);
    TQ_RETURN_IF(!s->data, TQ_ERR_NOMEM, "KV cache: out of memory (%zu bytes)", nvec * s->vb);
    if (codec->kind != TQ_KV_TQ) return TQ_OK;
    TQ_RETURN_IF(!is_pow2(d) || (codec->split && d < 4), TQ_ERR_UNSUPPORTED,
                 "KV codec %s needs a power-of-two head_dim (>= 4 with a split); this model has %d: use int8 or fp16",
                 codec->name, d);
    tq_layout(codec, d, &s->nsub, s->n, s->bits);
    s->off[0] = 0;
    s->off[1] = s->n[0];
    for (int h = 0; h < s->nsub; h++) {
        int k = 1 << s->bits[h];
        TQ_FORWARD(tq_lloydmax_unit_f32(TQ_LAW_BETA, s->n[h], s->bits[h], s->cb[h]));
        for (int i = 0; i + 1 < k; i++) s->bnd[h][i] = 0.5f * (s->cb[h][i] + s->cb[h][i + 1]);
    }
    size_t nv = (size_t)g->n_layers * g->n_kv_heads * d;
    s->chan = malloc(nv * sizeof(uint16_t));
    s->sign = malloc(nv * sizeof(float));
    s->calibrated = calloc((size_t)g->n_layers, sizeof(int));
    TQ_RETURN_IF(!s->chan || !s->sign || !s->calibrated, TQ_ERR_NOMEM, "KV cache: out of memory");
    for (int l = 0; l < g->n_layers; l++)
        for (int h = 0; h < g->n_kv_heads; h++)
            for (int j = 0; j < d; j++) {
                size_t i = ((size_t)l * g->n_kv_heads + h) * d + j;
                s->chan[i] = (uint16_t)j;
                s->sign[i] = tq_rot_sign(key4(g->seed, (uint64_t)which, (uint64_t)(g->layer_offset + l), (uint64_t)h), j);
            }
    if (codec->qjl) {
        s->S = malloc((size_t)g->n_layers * d * d * sizeof(float));
        TQ_RETURN_IF(!s->S, TQ_ERR_NOMEM, "KV cache: out of memory (QJL matrices)");
        for (int l = 0; l < g->n_layers; l++)
            for (int64_t i = 0; i < (int64_t)d * d; i++) {
                uint64_t r1 = key4(g->seed, 7 + (uint64_t)which, (uint64_t)(g->layer_offset + l), (uint64_t)(2 * i));
                uint64_t r2 = key4(g->seed, 7 + (uint64_t)which, (uint64_t)(g->layer_offset + l), (uint64_t)(2 * i + 1));
                double u1 = ((double)(r1 >> 11) + 0.5) / 9007199254740992.0;
                double u2 = (double)(r2 >> 11) / 9007199254740992.0;
                s->S[(size_t)l * d * d + i] = (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * 3.14159265358979323846 * u2));
            }
    }
    return TQ_OK;
}

tq_status tq_kv_create(const tq_kv_config* cfg, tq_kv_cache** out)
{
    *out = NULL;
    TQ_RETURN_IF(cfg->n_layers < 0 || cfg->n_kv_heads <= 0 || cfg->head_dim <= 0 || cfg->max_tokens <= 0 ||
                     cfg->n_heads <= 0 || cfg->n_heads % cfg->n_kv_heads || cfg->head_dim > 4096,
                 TQ_ERR_ARG, "KV cache: bad shape (layers %d, heads %d/%d, head_dim %d, tokens %d)", cfg->n_layers,
                 cfg->n_heads, cfg->n_kv_heads, cfg->head_dim, cfg->max_tokens);
    tq_kv_cache* c = calloc(1, sizeof *c);
    TQ_RETURN_IF(!c, TQ_ERR_NOMEM, "KV cache: out of memory");
    c->cfg = *cfg;
    tq_status rc = side_init(c, &c->side[0], &cfg->k, 0);
    if (rc == TQ_OK) rc = side_init(c, &c->side[1], &cfg->v, 1);
    int d = cfg->head_dim;
    if (rc == TQ_OK) {
        c->len = calloc((size_t)(cfg->n_layers > 0 ? cfg->n_layers : 1), sizeof(int));
        c->scores = malloc((size_t)cfg->max_tokens * sizeof(float));
        c->work = malloc((size_t)d * 8 * sizeof(float));
        c->table = malloc((size_t)d * 256 * sizeof(float));
        c->plain = malloc((size_t)2 * cfg->max_tokens * d * sizeof(float));
        if (!c->len || !c->scores || !c->work || !c->table || !c->plain) rc = tq_fail(TQ_ERR_NOMEM, "KV cache: out of memory");
    }
    if (rc == TQ_OK && cfg->state_floats > 0) {
        c->state = calloc(cfg->state_floats, sizeof(float));
        if (!c->state) rc = tq_fail(TQ_ERR_NOMEM, "KV cache: out of memory (recurrent state, %zu floats)", cfg->state_floats);
    }
    if (rc != TQ_OK) {
        tq_kv_free(&c);
        return rc;
    }
    *out = c;
    return TQ_OK;
}

void tq_kv_free(tq_kv_cache** pc)
{
    if (!pc || !*pc) return;
    tq_kv_cache* c = *pc;
    for (int w = 0; w < 2; w++) {
        free(c->side[w].data);
        free(c->side[w].chan);
        free(c->side[w].sign);
        free(c->side[w].S);
        free(c->side[w].calibrated);
    }
    free(c->len);
    free(c->scores);
    free(c->work);
    free(c->table);
    free(c->plain);
    free(c->state);
    free(c);
    *pc = NULL;
}

void tq_kv_reset(tq_kv_cache* c)
{
    for (int l = 0; l < c->cfg.n_layers; l++) {
        c->len[l] = 0;
        for (int w = 0; w < 2; w++)
            if (c->side[w].calibrated) c->side[w].calibrated[l] = 0;
    }
    if (c->state) memset(c->state, 0, c->cfg.state_floats * sizeof(float));
}

float* tq_kv_state(tq_kv_cache* c)
{
    return c->state;
}

size_t tq_kv_state_floats(const tq_kv_cache* c)
{
    return c->state ? c->cfg.state_floats : 0;
}

int tq_kv_len(const tq_kv_cache* c, int layer)
{
    return (layer >= 0 && layer < c->cfg.n_layers) ? c->len[layer] : 0;
}

size_t tq_kv_bytes_per_token(const tq_kv_cache* c)
{
    return (size_t)c->cfg.n_layers * c->cfg.n_kv_heads * (c->side[0].vb + c->side[1].vb);
}

// ------------------------------------------------------------------------------------------------
// encode / decode one vector

/* y[off_s + j] = (H D x[chan])_j / sqrt(n_s): x in channel order -> rotated domain (permuted order). */
static void rotate_fwd(const kv_side* s, const uint16_t* chan, const float* sign, const float* x, float* y)
{
    for (int h = 0; h < s->nsub; h++) {
        int n = s->n[h], o = s->off[h];
        for (int j = 0; j < n; j++) y[o + j] = sign[o + j] * x[chan[o + j]];
        tq_fwht(y + o, n);
        float sc = 1.0f / sqrtf((float)n);
        for (int j = 0; j < n; j++) y[o + j] *= sc;
    }
}

/* inverse of rotate_fwd: x[chan[o+j]] = sign * (H y)/sqrt(n); tmp has d floats. */
static void rotate_inv(const kv_side* s, const uint16_t* chan, const float* sign, const float* y, float* x, float* tmp)
{
    for (int h = 0; h < s->nsub; h++) {
        int n = s->n[h], o = s->off[h];
        memcpy(tmp + o, y + o, (size_t)n * sizeof(float));
        tq_fwht(tmp + o, n);
        float sc = 1.0f / sqrtf((float)n);
        for (int j = 0; j < n; j++) x[chan[o + j]] = sign[o + j] * tmp[o + j] * sc;
    }
}

static int nearest(const float* bnd, int k, float v)
{
    int lo = 0, hi = k - 1; /* first boundary > v */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (v < bnd[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static void encode_vec(tq_kv_cache* c, kv_side* s, int layer, int head, const float* x, uint8_t* dst)
{
    int d = c->cfg.head_dim;
    memset(dst, 0, s->vb);
    switch (s->codec.kind) {
    case TQ_KV_F32: memcpy(dst, x, (size_t)d * 4); return;
    case TQ_KV_FP16:
        for (int j = 0; j < d; j++) {
            uint16_t h = tq_f32_to_f16(x[j]);
            memcpy(dst + 2 * j, &h, 2);
        }
        return;
    case TQ_KV_BF16:
        for (int j = 0; j < d; j++) {
            uint16_t h = tq_f32_to_bf16(x[j]);
            memcpy(dst + 2 * j, &h, 2);
        }
        return;
    case TQ_KV_INT8: {
        float amax = 0.0f;
        for (int j = 0; j < d; j++) amax = fmaxf(amax, fabsf(x[j]));
        uint16_t hs = tq_f32_to_f16(amax / 127.0f);
        float sc = tq_f16_to_f32(hs);
        memcpy(dst, &hs, 2);
        for (int j = 0; j < d; j++) {
            float q = sc > 0 ? roundf(x[j] / sc) : 0.0f;
            q = q > 127.0f ? 127.0f : q < -127.0f ? -127.0f : q;
            dst[2 + j] = (uint8_t)(int8_t)q;
        }
        return;
    }
    case TQ_KV_TQ: break;
    }
    size_t vi = ((size_t)layer * c->cfg.n_kv_heads + head) * d;
    const uint16_t* chan = s->chan + vi;
    const float* sign = s->sign + vi;
    float* y = c->work;         /* rotated unit halves */
    float* r = c->work + d;     /* residual, rotated domain */
    float* sr = c->work + 2 * d;
    rotate_fwd(s, chan, sign, x, y);
    size_t hdr = (size_t)2 * s->nsub + (s->codec.qjl ? 2 : 0);
    size_t bit = 0;
    for (int h = 0; h < s->nsub; h++) {
        int n = s->n[h], o = s->off[h], k = 1 << s->bits[h];
        double ss = 0;
        for (int j = 0; j < n; j++) ss += (double)y[o + j] * y[o + j]; /* rotation keeps the norm */
        float nrm = (float)sqrt(ss);
        float inv = nrm > 0 ? 1.0f / nrm : 0.0f;
        size_t bit0 = bit;
        double cc = 0; /* |c|^2 of the chosen centroids */
        for (int j = 0; j < n; j++) {
            int code = nearest(s->bnd[h], k, y[o + j] * inv);
            put_bits(dst + hdr, bit, s->bits[h], (unsigned)code);
            bit += (size_t)s->bits[h];
            double cv = s->cb[h][code];
            cc += cv * cv;
        }
        float scale = nrm; /* the paper: ‖x‖ */
        if (s->codec.norm_fix && cc > 0) scale = (float)(nrm / sqrt(cc)); /* +nc: keeps ‖x̃‖ = ‖x‖ */
        uint16_t hn = tq_f32_to_f16(scale);
        float nrm16 = tq_f16_to_f32(hn);
        memcpy(dst + 2 * h, &hn, 2);
        for (int j = 0; j < n; j++, bit0 += (size_t)s->bits[h])
            r[o + j] = y[o + j] - nrm16 * s->cb[h][get_bits(dst + hdr, bit0, s->bits[h])];
    }
    if (s->codec.qjl) {
        const float* S = s->S + (size_t)layer * d * d;
        double g2 = 0;
        for (int j = 0; j < d; j++) g2 += (double)r[j] * r[j];
        uint16_t hg = tq_f32_to_f16((float)sqrt(g2));
        memcpy(dst + 2 * s->nsub, &hg, 2);
        for (int i = 0; i < d; i++) {
            float a = 0;
            for (int j = 0; j < d; j++) a += S[(size_t)i * d + j] * r[j];
            sr[i] = a;
            put_bits(dst + hdr, bit + (size_t)i, 1, a >= 0.0f ? 1u : 0u);
        }
    }
}

/* Decoded vector in the rotated (permuted) domain: norms * centroids (+ the QJL term). */
static void decode_rot(const tq_kv_cache* c, const kv_side* s, int layer, const uint8_t* src, float* y)
{
    int d = c->cfg.head_dim;
    size_t hdr = (size_t)2 * s->nsub + (s->codec.qjl ? 2 : 0);
    size_t bit = 0;
    for (int h = 0; h < s->nsub; h++) {
        uint16_t hn;
        memcpy(&hn, src + 2 * h, 2);
        float nrm = tq_f16_to_f32(hn);
        for (int j = 0; j < s->n[h]; j++) {
            y[s->off[h] + j] = nrm * s->cb[h][get_bits(src + hdr, bit, s->bits[h])];
            bit += (size_t)s->bits[h];
        }
    }
    if (s->codec.qjl) {
        uint16_t hg;
        memcpy(&hg, src + 2 * s->nsub, 2);
        float coef = sqrtf((float)(3.14159265358979323846 / 2.0)) / (float)d * tq_f16_to_f32(hg);
        const float* S = s->S + (size_t)layer * d * d;
        for (int i = 0; i < d; i++) {
            float sg = get_bits(src + hdr, bit + (size_t)i, 1) ? coef : -coef;
            for (int j = 0; j < d; j++) y[j] += sg * S[(size_t)i * d + j];
        }
    }
}

/* Plain decode for the non-tq codecs. */
static void decode_plain(const kv_side* s, int d, const uint8_t* src, float* x)
{
    switch (s->codec.kind) {
    case TQ_KV_F32: memcpy(x, src, (size_t)d * 4); break;
    case TQ_KV_FP16:
        for (int j = 0; j < d; j++) {
            uint16_t h;
            memcpy(&h, src + 2 * j, 2);
            x[j] = tq_f16_to_f32(h);
        }
        break;
    case TQ_KV_BF16:
        for (int j = 0; j < d; j++) {
            uint16_t h;
            memcpy(&h, src + 2 * j, 2);
            x[j] = tq_bf16_to_f32(h);
        }
        break;
    case TQ_KV_INT8: {
        uint16_t hs;
        memcpy(&hs, src, 2);
        float sc = tq_f16_to_f32(hs);
        for (int j = 0; j < d; j++) x[j] = sc * (float)(int8_t)src[2 + j];
        break;
    }
    case TQ_KV_TQ: break;
    }
}

/* Pick the outlier half of each head's channels from the mean square over this batch. */
static void calibrate(tq_kv_cache* c, kv_side* s, int layer, const float* x, int T)
{
    int d = c->cfg.head_dim, nkv = c->cfg.n_kv_heads;
    double* ms = malloc((size_t)d * sizeof(double));
    char* is_out = malloc((size_t)d);
    if (!ms || !is_out) goto out; /* keeps the identity order: still a valid (uncalibrated) split */
    for (int h = 0; h < nkv; h++) {
        for (int j = 0; j < d; j++) ms[j] = 0;
        for (int t = 0; t < T; t++)
            for (int j = 0; j < d; j++) {
                double v = x[(size_t)t * nkv * d + (size_t)h * d + j];
                ms[j] += v * v;
            }
        /* selection of the n[0] largest (ties: lower channel first), deterministic */
        memset(is_out, 0, (size_t)d);
        for (int k = 0; k < s->n[0]; k++) {
            int best = -1;
            for (int j = 0; j < d; j++)
                if (!is_out[j] && (best < 0 || ms[j] > ms[best])) best = j;
            is_out[best] = 1;
        }
        uint16_t* chan = s->chan + ((size_t)layer * nkv + h) * d;
        int a = 0, b = s->n[0];
        for (int j = 0; j < d; j++) {
            if (is_out[j])
                chan[a++] = (uint16_t)j;
            else
                chan[b++] = (uint16_t)j;
        }
    }
out:
    s->calibrated[layer] = 1;
    free(ms);
    free(is_out);
}

tq_status tq_kv_append(tq_kv_cache* c, int layer, const float* k, const float* v, int T)
{
    TQ_RETURN_IF(layer < 0 || layer >= c->cfg.n_layers, TQ_ERR_ARG, "KV cache: layer %d out of range", layer);
    TQ_RETURN_IF(c->len[layer] + T > c->cfg.max_tokens, TQ_ERR_ARG,
                 "KV cache: %d + %d tokens exceed the cache size %d (raise the context)", c->len[layer], T,
                 c->cfg.max_tokens);
    int d = c->cfg.head_dim, nkv = c->cfg.n_kv_heads;
    const float* src[2] = {k, v};
    for (int w = 0; w < 2; w++) {
        kv_side* s = &c->side[w];
        if (s->codec.kind == TQ_KV_TQ && s->codec.split && !s->calibrated[layer]) calibrate(c, s, layer, src[w], T);
        for (int t = 0; t < T; t++)
            for (int h = 0; h < nkv; h++) {
                uint8_t* dst = s->data + vec_index(c, layer, h, c->len[layer] + t) * s->vb;
                encode_vec(c, s, layer, h, src[w] + (size_t)t * nkv * d + (size_t)h * d, dst);
            }
    }
    c->len[layer] += T;
    return TQ_OK;
}

// ------------------------------------------------------------------------------------------------
// attention

tq_status tq_kv_attend(tq_kv_cache* c, int layer, const float* q, int T, int pos0, float scale, float* out)
{
    TQ_RETURN_IF(layer < 0 || layer >= c->cfg.n_layers, TQ_ERR_ARG, "KV cache: layer %d out of range", layer);
    TQ_RETURN_IF(pos0 + T > c->len[layer], TQ_ERR_ARG, "KV cache: attention at %d..%d but layer %d holds %d tokens",
                 pos0, pos0 + T - 1, layer, c->len[layer]);
    const int d = c->cfg.head_dim, nkv = c->cfg.n_kv_heads, nh = c->cfg.n_heads, grp = nh / nkv;
    const kv_side* ks = &c->side[0];
    const kv_side* vs = &c->side[1];
    float* qr = c->work;          /* rotated query */
    float* qs = c->work + d;      /* S · rotated query */
    float* acc = c->work + 2 * d; /* value accumulator */
    float* tmp = c->work + 3 * d;
    float* kvec = c->work + 4 * d;
    float* table = c->table;
    const float qjl_c = sqrtf((float)(3.14159265358979323846 / 2.0)) / (float)d;
    const int Pmax = pos0 + T;
    float* kplain = c->plain;
    float* vplain = c->plain + (size_t)c->cfg.max_tokens * d;
    for (int hq = 0; hq < nh; hq++) {
        int g = hq / grp;
        size_t vi = ((size_t)layer * nkv + g) * d;
        if (hq % grp == 0) { /* new KV head: decode its plain-coded K / V positions once (fp16/bf16/int8) */
            if (ks->codec.kind != TQ_KV_TQ)
                for (int p = 0; p < Pmax; p++)
                    decode_plain(ks, d, ks->data + vec_index(c, layer, g, p) * ks->vb, kplain + (size_t)p * d);
            if (vs->codec.kind != TQ_KV_TQ)
                for (int p = 0; p < Pmax; p++)
                    decode_plain(vs, d, vs->data + vec_index(c, layer, g, p) * vs->vb, vplain + (size_t)p * d);
        }
        for (int t = 0; t < T; t++) {
            const float* qv = q + (size_t)t * nh * d + (size_t)hq * d;
            int P = pos0 + t + 1;
            /* ---- scores */
            if (ks->codec.kind == TQ_KV_TQ) {
                rotate_fwd(ks, ks->chan + vi, ks->sign + vi, qv, qr);
                for (int h = 0; h < ks->nsub; h++) /* lookup table: q'_j * centroid[code] */
                    for (int j = 0; j < ks->n[h]; j++) {
                        int o = ks->off[h] + j, kk = 1 << ks->bits[h];
                        for (int code = 0; code < kk; code++) table[(size_t)o * 16 + code] = qr[o] * ks->cb[h][code];
                    }
                if (ks->codec.qjl) {
                    const float* S = ks->S + (size_t)layer * d * d;
                    for (int i = 0; i < d; i++) {
                        float a = 0;
                        for (int j = 0; j < d; j++) a += S[(size_t)i * d + j] * qr[j];
                        qs[i] = a;
                    }
                }
                size_t hdr = (size_t)2 * ks->nsub + (ks->codec.qjl ? 2 : 0);
                for (int p = 0; p < P; p++) {
                    const uint8_t* src = ks->data + vec_index(c, layer, g, p) * ks->vb;
                    size_t bit = 0;
                    float sc = 0;
                    for (int h = 0; h < ks->nsub; h++) {
                        uint16_t hn;
                        memcpy(&hn, src + 2 * h, 2);
                        float part = 0;
                        const float* tb = table + (size_t)ks->off[h] * 16;
                        int nb = ks->bits[h];
                        for (int j = 0; j < ks->n[h]; j++, bit += (size_t)nb) part += tb[(size_t)j * 16 + get_bits(src + hdr, bit, nb)];
                        sc += tq_f16_to_f32(hn) * part;
                    }
                    if (ks->codec.qjl) {
                        uint16_t hg;
                        memcpy(&hg, src + 2 * ks->nsub, 2);
                        float part = 0;
                        for (int i = 0; i < d; i++) part += get_bits(src + hdr, bit + (size_t)i, 1) ? qs[i] : -qs[i];
                        sc += qjl_c * tq_f16_to_f32(hg) * part;
                    }
                    c->scores[p] = sc * scale;
                }
            } else {
                for (int p = 0; p < P; p++) {
                    const float* kv_ = kplain + (size_t)p * d;
                    float sc = 0;
                    for (int j = 0; j < d; j++) sc += qv[j] * kv_[j];
                    c->scores[p] = sc * scale;
                }
            }
            /* ---- softmax */
            float mx = c->scores[0];
            for (int p = 1; p < P; p++) mx = c->scores[p] > mx ? c->scores[p] : mx;
            float sum = 0;
            for (int p = 0; p < P; p++) {
                c->scores[p] = expf(c->scores[p] - mx);
                sum += c->scores[p];
            }
            float inv = 1.0f / sum;
            /* ---- values */
            memset(acc, 0, (size_t)d * sizeof(float));
            float* o = out + (size_t)t * nh * d + (size_t)hq * d;
            if (vs->codec.kind == TQ_KV_TQ) {
                size_t hdr = (size_t)2 * vs->nsub + (vs->codec.qjl ? 2 : 0);
                for (int p = 0; p < P; p++) {
                    const uint8_t* src = vs->data + vec_index(c, layer, g, p) * vs->vb;
                    float w = c->scores[p] * inv;
                    size_t bit = 0;
                    for (int h = 0; h < vs->nsub; h++) {
                        uint16_t hn;
                        memcpy(&hn, src + 2 * h, 2);
                        float wn = w * tq_f16_to_f32(hn);
                        const float* cb = vs->cb[h];
                        float* a = acc + vs->off[h];
                        int nb = vs->bits[h];
                        for (int j = 0; j < vs->n[h]; j++, bit += (size_t)nb) a[j] += wn * cb[get_bits(src + hdr, bit, nb)];
                    }
                    if (vs->codec.qjl) { /* values with QJL: decode the correction (slow path, rarely used) */
                        decode_rot(c, vs, layer, src, kvec);
                        size_t b2 = 0;
                        for (int h = 0; h < vs->nsub; h++) /* subtract the MSE part again: kvec holds both */
                            for (int j = 0; j < vs->n[h]; j++, b2 += (size_t)vs->bits[h]) {
                                uint16_t hn;
                                memcpy(&hn, src + 2 * h, 2);
                                kvec[vs->off[h] + j] -= tq_f16_to_f32(hn) * vs->cb[h][get_bits(src + hdr, b2, vs->bits[h])];
                            }
                        for (int j = 0; j < d; j++) acc[j] += w * kvec[j];
                    }
                }
                rotate_inv(vs, vs->chan + vi, vs->sign + vi, acc, o, tmp);
            } else {
                for (int p = 0; p < P; p++) {
                    const float* vv = vplain + (size_t)p * d;
                    float w = c->scores[p] * inv;
                    for (int j = 0; j < d; j++) acc[j] += w * vv[j];
                }
                memcpy(o, acc, (size_t)d * sizeof(float));
            }
        }
    }
    return TQ_OK;
}

// ------------------------------------------------------------------------------------------------
// test hooks

tq_status tq_kv_dequant(const tq_kv_cache* c, int layer, int which, int head, int pos, float* out)
{
    TQ_RETURN_IF(layer < 0 || layer >= c->cfg.n_layers || which < 0 || which > 1 || head < 0 ||
                     head >= c->cfg.n_kv_heads || pos < 0 || pos >= c->len[layer],
                 TQ_ERR_ARG, "KV cache: no vector at layer %d head %d position %d", layer, head, pos);
    const kv_side* s = &c->side[which];
    const uint8_t* src = s->data + vec_index(c, layer, head, pos) * s->vb;
    int d = c->cfg.head_dim;
    if (s->codec.kind != TQ_KV_TQ) {
        decode_plain(s, d, src, out);
        return TQ_OK;
    }
    float* y = malloc((size_t)d * 2 * sizeof(float));
    TQ_RETURN_IF(!y, TQ_ERR_NOMEM, "KV cache: out of memory");
    size_t vi = ((size_t)layer * c->cfg.n_kv_heads + head) * d;
    decode_rot(c, s, layer, src, y);
    rotate_inv(s, s->chan + vi, s->sign + vi, y, out, y + d);
    free(y);
    return TQ_OK;
}

tq_status tq_kv_score(const tq_kv_cache* c, int layer, int head, const float* q, int pos, float* score)
{
    /* the arithmetic of tq_kv_attend's scoring (rotated query against centroids, QJL term), for one key */
    TQ_RETURN_IF(layer < 0 || layer >= c->cfg.n_layers || head < 0 || head >= c->cfg.n_kv_heads || pos < 0 ||
                     pos >= c->len[layer],
                 TQ_ERR_ARG, "KV cache: no key at layer %d head %d position %d", layer, head, pos);
    const kv_side* ks = &c->side[0];
    int d = c->cfg.head_dim;
    const uint8_t* src = ks->data + vec_index(c, layer, head, pos) * ks->vb;
    float* w = malloc((size_t)d * 3 * sizeof(float));
    TQ_RETURN_IF(!w, TQ_ERR_NOMEM, "KV cache: out of memory");
    if (ks->codec.kind != TQ_KV_TQ) {
        decode_plain(ks, d, src, w);
        float s = 0;
        for (int j = 0; j < d; j++) s += q[j] * w[j];
        *score = s;
        free(w);
        return TQ_OK;
    }
    size_t vi = ((size_t)layer * c->cfg.n_kv_heads + head) * d;
    float* qr = w;
    float* qs = w + d;
    rotate_fwd(ks, ks->chan + vi, ks->sign + vi, q, qr);
    size_t hdr = (size_t)2 * ks->nsub + (ks->codec.qjl ? 2 : 0);
    size_t bit = 0;
    float sc = 0;
    for (int h = 0; h < ks->nsub; h++) {
        uint16_t hn;
        memcpy(&hn, src + 2 * h, 2);
        float part = 0;
        for (int j = 0; j < ks->n[h]; j++, bit += (size_t)ks->bits[h])
            part += qr[ks->off[h] + j] * ks->cb[h][get_bits(src + hdr, bit, ks->bits[h])];
        sc += tq_f16_to_f32(hn) * part;
    }
    if (ks->codec.qjl) {
        const float* S = ks->S + (size_t)layer * d * d;
        uint16_t hg;
        memcpy(&hg, src + 2 * ks->nsub, 2);
        float part = 0;
        for (int i = 0; i < d; i++) {
            float a = 0;
            for (int j = 0; j < d; j++) a += S[(size_t)i * d + j] * qr[j];
            qs[i] = a;
            part += get_bits(src + hdr, bit + (size_t)i, 1) ? a : -a;
        }
        sc += sqrtf((float)(3.14159265358979323846 / 2.0)) / (float)d * tq_f16_to_f32(hg) * part;
    }
    *score = sc;
    free(w);
    return TQ_OK;
}
