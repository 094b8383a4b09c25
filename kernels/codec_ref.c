/* codec_ref.c — CPU reference quantize / dequantize of every codec, row by row (the spec the CUDA
 * version mirrors; docs/CODECS.md describes the bytes). Rows are independent, so the driver splits
 * them over pthreads: the bytes never depend on the thread count.
 *
 * Per-row math, in order of the codecs:
 *   tq{b}      y = R x (hadamard.h); per block of size d: n = ||y|| (double sum, fp32 sqrt);
 *              if n < 1e-30: codes 0, norm 0. Else u = y * (1/n) (fp32), code = #{t : u > bnd[t]} with
 *              bnd[t] = 0.5f * (cb[t] + cb[t+1]) over the block's fp32 codebook cb (Beta law, dim d);
 *              stored norm = fp16(<y, cb[code]> / <cb[code], cb[code]>) (least squares, default) or
 *              fp16(n) with TQ_QFLAG_PLAIN_NORM. Dequant: y' = f32(norm) * cb[code]; x' = R^-1 y'.
 *   tq{b}r{r}  stage 1 as tq{b}; residual res = x - x'1 (fp32, x'1 exactly as dequantized); stage 2 =
 *              tq{r} of res with seed2 = tq_rot_seed2(seed). Dequant: x'1 + x'2 (fp32 add).
 *   bin1       y = R x; per block: s = fp16(mean |y|); bit = (y >= 0). Dequant ±s, then R^-1.
 *   ter        no rotation; per group of g columns (last group shorter): gamma = mean |w| (fp32);
 *              r = w / gamma; q = +1 if r >= 0.5, -1 if r <= -0.5, else 0 (gamma == 0: all 0);
 *              s = fp16(sum over q != 0 of |w| / count(q != 0)) (least squares given q).
 *   rtn{b}     per group: lo = min, hi = max; m = fp16(lo), sc = fp16((hi - lo) / (2^b - 1));
 *              q = clamp(floor((w - f32(m)) / f32(sc) + 0.5), 0, 2^b - 1) (sc == 0: q = 0).
 *              Dequant f32(m) + q * f32(sc).
 *   int8       per row: scale = max|w| / 127 (fp32, stored as f32); q = clamp(roundf(w / scale), ±127).
 *   fp16/bf16  round to nearest even; a value that overflows fp16 is an error, not a silent Inf.
 * NaN/Inf in the input -> TQ_ERR_NUMERIC naming the tensor, row and column. A scale or norm that does
 * not fit fp16 (> 65504) -> TQ_ERR_NUMERIC naming tensor, row and column, suggesting bf16/int8. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "codec.h"
#include "codec_internal.h" // defines: tq_pack_bits, tq_unpack_bits, tq_pack_trits, tq_unpack_trits
#include "dtype.h"          // defines: tq_f32_to_f16, tq_f16_to_f32, tq_f32_to_bf16
#include "hadamard.h"       // defines: tq_rot_*
#include "lloydmax.h"       // defines: tq_lloydmax_unit_f32

#define TQ_MAX_SIZES 16
#define TQ_TINY_NORM 1e-30f
#define TQ_F16_MAX 65504.0

// ------------------------------------------------------------------------------------------------
// context shared by all rows of one call

typedef struct {
    int bits;
    float cb[TQ_MAX_SIZES][16];
    float bnd[TQ_MAX_SIZES][15];
    float* signs; /* [cols] */
} tq_stage;

typedef struct {
    const tq_qtensor* q;
    tq_codec_kind kind;
    int64_t cols;
    int g;
    int64_t nb; /* rotation blocks per row */
    int64_t ng; /* plain groups per row */
    int ndist;
    int sizes[TQ_MAX_SIZES];
    int size_idx[32]; /* log2(d) -> index into sizes */
    int nstage;
    tq_stage st[2];
    int plain_norm;
    const char* what;
} tq_ctx;

typedef struct {
    float* y;
    float* y2;
    float* res;
    uint8_t* codes;
    int8_t* trits;
} tq_scratch;

static int tq_ilog2(int d)
{
    int k = 0;
    while ((1 << k) < d) k++;
    return k;
}

static void tq_ctx_free(tq_ctx* X)
{
    for (int s = 0; s < 2; s++) {
        free(X->st[s].signs);
        X->st[s].signs = NULL;
    }
}

/* Prepare the context. quantize = 1: compute codebooks (Lloyd-Max) and write the codebook parts;
 * 0: read codebooks from the parts (dequantize trusts what the artifact stored). */
static tq_status tq_ctx_init(tq_ctx* X, const tq_qtensor* q, int quantize, const char* what)
{
    memset(X, 0, sizeof *X);
    X->q = q;
    X->kind = q->codec.kind;
    X->cols = q->cols;
    X->g = q->codec.group;
    X->what = what ? what : "(unnamed tensor)";
    X->plain_norm = (q->flags & TQ_QFLAG_PLAIN_NORM) != 0;
    if (X->cols < 1 || (X->g != 64 && X->g != 128 && X->g != 256))
        return tq_fail(TQ_ERR_ARG, "tensor %s: invalid quantized tensor (cols %lld, group %d)", X->what,
                       (long long)X->cols, X->g);
    for (int i = 0; i < q->nparts; i++)
        if (!q->part[i].data && q->part[i].bytes)
            return tq_fail(TQ_ERR_ARG, "tensor %s: part '%s' has no data (allocate with tq_qtensor_alloc)", X->what,
                           q->part[i].name);
    X->nb = tq_rot_nblocks(X->cols, X->g);
    X->ng = (X->cols + X->g - 1) / X->g;
    X->ndist = tq_rot_block_sizes(X->cols, X->g, X->sizes);
    for (int i = 0; i < X->ndist; i++) X->size_idx[tq_ilog2(X->sizes[i])] = i;
    tq_codec_kind k = X->kind;
    if (k == TQ_CODEC_TQ || k == TQ_CODEC_TQR || k == TQ_CODEC_BIN1) {
        X->nstage = k == TQ_CODEC_TQR ? 2 : 1;
        for (int s = 0; s < X->nstage; s++) {
            tq_stage* st = &X->st[s];
            st->bits = s == 0 ? q->codec.bits : q->codec.rbits;
            st->signs = malloc((size_t)X->cols * sizeof(float));
            if (!st->signs) {
                tq_ctx_free(X);
                return tq_fail(TQ_ERR_NOMEM, "tensor %s: out of memory for rotation signs", X->what);
            }
            tq_rot_signs(s == 0 ? q->seed : tq_rot_seed2(q->seed), X->cols, st->signs);
            if (k == TQ_CODEC_BIN1) continue;
            int n = 1 << st->bits;
            const tq_qpart* cbp = tq_qtensor_part(q, s == 0 ? "codebook" : "codebook2");
            if (!cbp || cbp->bytes != (size_t)(4 * n * X->ndist)) {
                tq_ctx_free(X);
                return tq_fail(TQ_ERR_CORRUPT, "tensor %s: codebook part missing or of the wrong size", X->what);
            }
            for (int i = 0; i < X->ndist; i++) {
                float* cb = st->cb[i];
                if (quantize) {
                    tq_status rc = tq_lloydmax_unit_f32(TQ_LAW_BETA, X->sizes[i], st->bits, cb);
                    if (rc != TQ_OK) {
                        tq_ctx_free(X);
                        return rc;
                    }
                    memcpy(cbp->data + (size_t)4 * n * i, cb, (size_t)4 * n);
                } else {
                    memcpy(cb, cbp->data + (size_t)4 * n * i, (size_t)4 * n);
                    for (int j = 0; j < n; j++)
                        if (!isfinite(cb[j])) {
                            tq_ctx_free(X);
                            return tq_fail(TQ_ERR_CORRUPT, "tensor %s: codebook holds NaN/Inf (corrupt artifact)",
                                           X->what);
                        }
                }
                for (int j = 0; j + 1 < n; j++) st->bnd[i][j] = 0.5f * (cb[j] + cb[j + 1]);
            }
        }
    }
    return TQ_OK;
}

static tq_status tq_scratch_init(tq_scratch* S, int64_t cols)
{
    memset(S, 0, sizeof *S);
    S->y = malloc((size_t)cols * sizeof(float));
    S->y2 = malloc((size_t)cols * sizeof(float));
    S->res = malloc((size_t)cols * sizeof(float));
    S->codes = malloc((size_t)cols);
    S->trits = malloc((size_t)cols);
    if (!S->y || !S->y2 || !S->res || !S->codes || !S->trits)
        return tq_fail(TQ_ERR_NOMEM, "codec: out of memory for a row of %lld columns", (long long)cols);
    return TQ_OK;
}

static void tq_scratch_free(tq_scratch* S)
{
    free(S->y);
    free(S->y2);
    free(S->res);
    free(S->codes);
    free(S->trits);
}

static inline uint8_t* tq_row_ptr(const tq_qtensor* q, int part, int64_t r)
{
    return q->part[part].data + (size_t)r * q->part[part].row_bytes;
}

static inline void tq_put16(uint8_t* p, int64_t i, uint16_t v)
{
    memcpy(p + 2 * i, &v, 2);
}

static inline uint16_t tq_get16(const uint8_t* p, int64_t i)
{
    uint16_t v;
    memcpy(&v, p + 2 * i, 2);
    return v;
}

static tq_status tq_too_big(const tq_ctx* X, int64_t row, int64_t col, double v, const char* what_val)
{
    return tq_fail(TQ_ERR_NUMERIC,
                   "tensor %s row %lld col %lld: %s %.6g exceeds the fp16 range (65504) of codec %s; "
                   "store this tensor as bf16 or int8, or rescale it",
                   X->what, (long long)row, (long long)col, what_val, v, X->q->codec.name);
}

// ------------------------------------------------------------------------------------------------
// tq stages

typedef float tq_v4f __attribute__((vector_size(16)));
typedef int32_t tq_v4i __attribute__((vector_size(16)));

/* codes[i] = #{t : y[i]*inv > bd[t]} (nbnd ascending boundaries), four lanes at a time (GNU vector
 * extension: the same fp32 products and comparisons as the scalar expression, so identical codes). */
static void tq_codes_count(uint8_t* codes, const float* y, int d, float inv, const float* bd, int nbnd)
{
    int i = 0;
    const tq_v4f vinv = {inv, inv, inv, inv};
    for (; i + 4 <= d; i += 4) {
        tq_v4f u;
        memcpy(&u, y + i, sizeof u);
        u = u * vinv;
        tq_v4i c = {0, 0, 0, 0};
        for (int t = 0; t < nbnd; t++) {
            const tq_v4f b = {bd[t], bd[t], bd[t], bd[t]};
            c -= (u > b); /* a true lane is -1 */
        }
        for (int k = 0; k < 4; k++) codes[i + k] = (uint8_t)c[k];
    }
    for (; i < d; i++) {
        const float u = y[i] * inv;
        int c = 0;
        for (int t = 0; t < nbnd; t++) c += u > bd[t];
        codes[i] = (uint8_t)c;
    }
}

/* One TurboQuant stage on x (one row): writes packed codes and fp16 norms; recon (optional) receives
 * the dequantized row exactly as tq_stage_dq computes it. */
static tq_status tq_stage_q(const tq_ctx* X, const tq_stage* st, const float* x, uint8_t* codes_dst,
                            uint8_t* norms_dst, float* recon, tq_scratch* S, int64_t row)
{
    const int64_t cols = X->cols;
    float* y = S->y;
    memcpy(y, x, (size_t)cols * sizeof(float));
    tq_rot_forward_row(y, cols, X->g, st->signs);
    const int nbnd = (1 << st->bits) - 1;
    for (int64_t k = 0; k < X->nb; k++) {
        int64_t s;
        int d;
        tq_rot_block(cols, X->g, k, &s, &d);
        const int ci = X->size_idx[tq_ilog2(d)];
        const float* cb = st->cb[ci];
        const float* bd = st->bnd[ci];
        double n2 = 0.0;
        for (int i = 0; i < d; i++) n2 += (double)y[s + i] * (double)y[s + i];
        double nd = sqrt(n2);
        if (nd > 2.0 * TQ_F16_MAX) return tq_too_big(X, row, s, nd, "group norm");
        float n = (float)nd;
        uint16_t h = 0;
        if (n < TQ_TINY_NORM) {
            memset(S->codes + s, 0, (size_t)d);
        } else {
            const float inv = 1.0f / n;
            double dot = 0.0, cc = 0.0;
            tq_codes_count(S->codes + s, y + s, d, inv, bd, nbnd);
            for (int i = 0; i < d; i++) {
                const float cv = cb[S->codes[s + i]];
                dot += (double)y[s + i] * (double)cv;
                cc += (double)cv * (double)cv;
            }
            double sc = X->plain_norm ? nd : (cc > 0.0 ? dot / cc : 0.0);
            h = tq_f32_to_f16((float)sc);
            if ((h & 0x7c00u) == 0x7c00u) return tq_too_big(X, row, s, sc, "group norm");
        }
        tq_put16(norms_dst, k, h);
    }
    tq_pack_bits(codes_dst, S->codes, cols, st->bits);
    if (recon) {
        for (int64_t k = 0; k < X->nb; k++) {
            int64_t s;
            int d;
            tq_rot_block(cols, X->g, k, &s, &d);
            const float* cb = st->cb[X->size_idx[tq_ilog2(d)]];
            const float nf = tq_f16_to_f32(tq_get16(norms_dst, k));
            for (int i = 0; i < d; i++) recon[s + i] = nf * cb[S->codes[s + i]];
        }
        tq_rot_inverse_row(recon, cols, X->g, st->signs);
    }
    return TQ_OK;
}

/* Dequantize one stage of one row into out (overwrites). */
static void tq_stage_dq(const tq_ctx* X, const tq_stage* st, const uint8_t* codes_src, const uint8_t* norms_src,
                        float* out, tq_scratch* S)
{
    const int64_t cols = X->cols;
    tq_unpack_bits(S->codes, codes_src, cols, st->bits);
    for (int64_t k = 0; k < X->nb; k++) {
        int64_t s;
        int d;
        tq_rot_block(cols, X->g, k, &s, &d);
        const float* cb = st->cb[X->size_idx[tq_ilog2(d)]];
        const float nf = tq_f16_to_f32(tq_get16(norms_src, k));
        for (int i = 0; i < d; i++) out[s + i] = nf * cb[S->codes[s + i]];
    }
    tq_rot_inverse_row(out, cols, X->g, st->signs);
}

// ------------------------------------------------------------------------------------------------
// one row, every codec

static tq_status tq_quant_row(const tq_ctx* X, const float* w, int64_t r, tq_scratch* S)
{
    const tq_qtensor* q = X->q;
    const int64_t cols = X->cols;
    const int g = X->g;
    for (int64_t j = 0; j < cols; j++)
        if (!isfinite(w[j]))
            return tq_fail(TQ_ERR_NUMERIC,
                           "tensor %s row %lld col %lld: value is %s; the input is corrupt or overflowed "
                           "(check the checkpoint / the previous stage)",
                           X->what, (long long)r, (long long)j, isnan(w[j]) ? "NaN" : "Inf");
    switch (X->kind) {
    case TQ_CODEC_TQ:
        return tq_stage_q(X, &X->st[0], w, tq_row_ptr(q, 0, r), tq_row_ptr(q, 1, r), NULL, S, r);
    case TQ_CODEC_TQR: {
        TQ_FORWARD(tq_stage_q(X, &X->st[0], w, tq_row_ptr(q, 0, r), tq_row_ptr(q, 1, r), S->y2, S, r));
        for (int64_t j = 0; j < cols; j++) S->res[j] = w[j] - S->y2[j];
        return tq_stage_q(X, &X->st[1], S->res, tq_row_ptr(q, 3, r), tq_row_ptr(q, 4, r), NULL, S, r);
    }
    case TQ_CODEC_BIN1: {
        float* y = S->y;
        memcpy(y, w, (size_t)cols * sizeof(float));
        tq_rot_forward_row(y, cols, g, X->st[0].signs);
        uint8_t* sc = tq_row_ptr(q, 1, r);
        for (int64_t k = 0; k < X->nb; k++) {
            int64_t s;
            int d;
            tq_rot_block(cols, g, k, &s, &d);
            double a = 0.0;
            for (int i = 0; i < d; i++) {
                a += fabs((double)y[s + i]);
                S->codes[s + i] = y[s + i] >= 0.0f;
            }
            double m = a / d;
            uint16_t h = tq_f32_to_f16((float)m);
            if ((h & 0x7c00u) == 0x7c00u) return tq_too_big(X, r, s, m, "group scale");
            tq_put16(sc, k, h);
        }
        tq_pack_bits(tq_row_ptr(q, 0, r), S->codes, cols, 1);
        return TQ_OK;
    }
    case TQ_CODEC_TER: {
        uint8_t* sc = tq_row_ptr(q, 1, r);
        for (int64_t k = 0; k < X->ng; k++) {
            int64_t s = k * g, n = cols - s < g ? cols - s : g;
            double a = 0.0;
            for (int64_t i = 0; i < n; i++) a += fabs((double)w[s + i]);
            const float gamma = (float)(a / (double)n);
            double sum = 0.0;
            int64_t cnt = 0;
            for (int64_t i = 0; i < n; i++) {
                int8_t t = 0;
                if (gamma > 0.0f) {
                    const float v = w[s + i] / gamma;
                    t = v >= 0.5f ? 1 : v <= -0.5f ? -1 : 0;
                }
                S->trits[s + i] = t;
                if (t) {
                    sum += fabs((double)w[s + i]);
                    cnt++;
                }
            }
            double sv = cnt ? sum / (double)cnt : 0.0;
            uint16_t h = tq_f32_to_f16((float)sv);
            if ((h & 0x7c00u) == 0x7c00u) return tq_too_big(X, r, s, sv, "group scale");
            tq_put16(sc, k, h);
        }
        tq_pack_trits(tq_row_ptr(q, 0, r), S->trits, cols);
        return TQ_OK;
    }
    case TQ_CODEC_RTN: {
        const int maxq = (1 << q->codec.bits) - 1;
        uint8_t* scp = tq_row_ptr(q, 1, r);
        uint8_t* mnp = tq_row_ptr(q, 2, r);
        for (int64_t k = 0; k < X->ng; k++) {
            int64_t s = k * g, n = cols - s < g ? cols - s : g;
            float lo = w[s], hi = w[s];
            for (int64_t i = 1; i < n; i++) {
                if (w[s + i] < lo) lo = w[s + i];
                if (w[s + i] > hi) hi = w[s + i];
            }
            const float scr = (hi - lo) / (float)maxq;
            const uint16_t hs = tq_f32_to_f16(scr), hm = tq_f32_to_f16(lo);
            if ((hm & 0x7c00u) == 0x7c00u) return tq_too_big(X, r, s, lo, "group minimum");
            if ((hs & 0x7c00u) == 0x7c00u) return tq_too_big(X, r, s, scr, "group scale");
            tq_put16(scp, k, hs);
            tq_put16(mnp, k, hm);
            const float scf = tq_f16_to_f32(hs), mnf = tq_f16_to_f32(hm);
            for (int64_t i = 0; i < n; i++) {
                int c = 0;
                if (scf > 0.0f) {
                    float v = floorf((w[s + i] - mnf) / scf + 0.5f);
                    c = v <= 0.0f ? 0 : v >= (float)maxq ? maxq : (int)v;
                }
                S->codes[s + i] = (uint8_t)c;
            }
        }
        tq_pack_bits(tq_row_ptr(q, 0, r), S->codes, cols, q->codec.bits);
        return TQ_OK;
    }
    case TQ_CODEC_INT8: {
        float amax = 0.0f;
        for (int64_t j = 0; j < cols; j++)
            if (fabsf(w[j]) > amax) amax = fabsf(w[j]);
        const float scale = amax / 127.0f;
        uint8_t* c = tq_row_ptr(q, 0, r);
        for (int64_t j = 0; j < cols; j++) {
            int v = 0;
            if (scale > 0.0f) {
                float f = roundf(w[j] / scale);
                v = f > 127.0f ? 127 : f < -127.0f ? -127 : (int)f;
            }
            c[j] = (uint8_t)(int8_t)v;
        }
        memcpy(tq_row_ptr(q, 1, r), &scale, 4);
        return TQ_OK;
    }
    case TQ_CODEC_FP16: {
        uint8_t* p = tq_row_ptr(q, 0, r);
        for (int64_t j = 0; j < cols; j++) {
            uint16_t h = tq_f32_to_f16(w[j]);
            if ((h & 0x7c00u) == 0x7c00u) return tq_too_big(X, r, j, w[j], "value");
            tq_put16(p, j, h);
        }
        return TQ_OK;
    }
    case TQ_CODEC_BF16: {
        uint8_t* p = tq_row_ptr(q, 0, r);
        for (int64_t j = 0; j < cols; j++) {
            uint16_t h = tq_f32_to_bf16(w[j]);
            if ((h & 0x7f80u) == 0x7f80u)
                return tq_fail(TQ_ERR_NUMERIC, "tensor %s row %lld col %lld: value %.6g overflows bf16",
                               X->what, (long long)r, (long long)j, w[j]);
            tq_put16(p, j, h);
        }
        return TQ_OK;
    }
    case TQ_CODEC_F32:
        memcpy(tq_row_ptr(q, 0, r), w, (size_t)cols * 4);
        return TQ_OK;
    default:
        return tq_fail(TQ_ERR_ARG, "tensor %s: invalid codec", X->what);
    }
}

static tq_status tq_check_f16_scales(const tq_ctx* X, const uint8_t* p, int64_t n, int64_t r, const char* part)
{
    for (int64_t k = 0; k < n; k++)
        if ((tq_get16(p, k) & 0x7c00u) == 0x7c00u)
            return tq_fail(TQ_ERR_CORRUPT, "tensor %s row %lld: part '%s' holds NaN/Inf (corrupt artifact)", X->what,
                           (long long)r, part);
    return TQ_OK;
}

static tq_status tq_dequant_row(const tq_ctx* X, int64_t r, float* out, tq_scratch* S)
{
    const tq_qtensor* q = X->q;
    const int64_t cols = X->cols;
    const int g = X->g;
    switch (X->kind) {
    case TQ_CODEC_TQ:
        TQ_FORWARD(tq_check_f16_scales(X, tq_row_ptr(q, 1, r), X->nb, r, "norms"));
        tq_stage_dq(X, &X->st[0], tq_row_ptr(q, 0, r), tq_row_ptr(q, 1, r), out, S);
        return TQ_OK;
    case TQ_CODEC_TQR:
        TQ_FORWARD(tq_check_f16_scales(X, tq_row_ptr(q, 1, r), X->nb, r, "norms"));
        TQ_FORWARD(tq_check_f16_scales(X, tq_row_ptr(q, 4, r), X->nb, r, "norms2"));
        tq_stage_dq(X, &X->st[0], tq_row_ptr(q, 0, r), tq_row_ptr(q, 1, r), out, S);
        tq_stage_dq(X, &X->st[1], tq_row_ptr(q, 3, r), tq_row_ptr(q, 4, r), S->y2, S);
        for (int64_t j = 0; j < cols; j++) out[j] += S->y2[j];
        return TQ_OK;
    case TQ_CODEC_BIN1: {
        const uint8_t* sc = tq_row_ptr(q, 1, r);
        TQ_FORWARD(tq_check_f16_scales(X, sc, X->nb, r, "scales"));
        tq_unpack_bits(S->codes, tq_row_ptr(q, 0, r), cols, 1);
        for (int64_t k = 0; k < X->nb; k++) {
            int64_t s;
            int d;
            tq_rot_block(cols, g, k, &s, &d);
            const float m = tq_f16_to_f32(tq_get16(sc, k));
            for (int i = 0; i < d; i++) out[s + i] = (float)(2 * (int)S->codes[s + i] - 1) * m; /* ±m, branch free */
        }
        tq_rot_inverse_row(out, cols, g, X->st[0].signs);
        return TQ_OK;
    }
    case TQ_CODEC_TER: {
        const uint8_t* sc = tq_row_ptr(q, 1, r);
        TQ_FORWARD(tq_check_f16_scales(X, sc, X->ng, r, "scales"));
        tq_unpack_trits(S->trits, tq_row_ptr(q, 0, r), cols);
        for (int64_t j = 0; j < cols; j++) out[j] = (float)S->trits[j] * tq_f16_to_f32(tq_get16(sc, j / g));
        return TQ_OK;
    }
    case TQ_CODEC_RTN: {
        const uint8_t* scp = tq_row_ptr(q, 1, r);
        const uint8_t* mnp = tq_row_ptr(q, 2, r);
        TQ_FORWARD(tq_check_f16_scales(X, scp, X->ng, r, "scales"));
        TQ_FORWARD(tq_check_f16_scales(X, mnp, X->ng, r, "mins"));
        tq_unpack_bits(S->codes, tq_row_ptr(q, 0, r), cols, q->codec.bits);
        for (int64_t j = 0; j < cols; j++) {
            const int64_t k = j / g;
            out[j] = tq_f16_to_f32(tq_get16(mnp, k)) + (float)S->codes[j] * tq_f16_to_f32(tq_get16(scp, k));
        }
        return TQ_OK;
    }
    case TQ_CODEC_INT8: {
        float scale;
        memcpy(&scale, tq_row_ptr(q, 1, r), 4);
        if (!isfinite(scale))
            return tq_fail(TQ_ERR_CORRUPT, "tensor %s row %lld: int8 scale is NaN/Inf (corrupt artifact)", X->what,
                           (long long)r);
        const int8_t* c = (const int8_t*)tq_row_ptr(q, 0, r);
        for (int64_t j = 0; j < cols; j++) out[j] = (float)c[j] * scale;
        return TQ_OK;
    }
    case TQ_CODEC_FP16: {
        const uint8_t* p = tq_row_ptr(q, 0, r);
        for (int64_t j = 0; j < cols; j++) out[j] = tq_f16_to_f32(tq_get16(p, j));
        return TQ_OK;
    }
    case TQ_CODEC_BF16: {
        const uint8_t* p = tq_row_ptr(q, 0, r);
        for (int64_t j = 0; j < cols; j++) out[j] = tq_bf16_to_f32(tq_get16(p, j));
        return TQ_OK;
    }
    case TQ_CODEC_F32:
        memcpy(out, tq_row_ptr(q, 0, r), (size_t)cols * 4);
        return TQ_OK;
    default:
        return tq_fail(TQ_ERR_ARG, "tensor %s: invalid codec", X->what);
    }
}

// ------------------------------------------------------------------------------------------------
// threads

static int tq_threads_set = 0;

void tq_codec_set_threads(int n)
{
    tq_threads_set = n;
}

int tq_codec_threads(void)
{
    if (tq_threads_set > 0) return tq_threads_set;
    const char* e = getenv("TQ_THREADS");
    if (e && atoi(e) > 0) return atoi(e) > 256 ? 256 : atoi(e);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 256 ? 256 : (int)n;
}

typedef enum { TQ_JOB_QUANT, TQ_JOB_DEQ_F32, TQ_JOB_DEQ_BF16 } tq_job_kind;

typedef struct {
    const tq_ctx* X;
    tq_job_kind kind;
    const float* w;    /* quantize input (rows of the call) */
    void* out;         /* dequantize output */
    int64_t row0;      /* first tensor row of the call (dequantize) */
    int64_t r0, r1;    /* this worker's rows, relative to the call */
    tq_status rc;
    int64_t bad_row;
    char msg[1024];
} tq_job;

static void* tq_job_run(void* arg)
{
    tq_job* J = arg;
    const tq_ctx* X = J->X;
    const int64_t cols = X->cols;
    tq_scratch S;
    J->rc = tq_scratch_init(&S, cols);
    float* tmp = J->kind == TQ_JOB_DEQ_BF16 ? malloc((size_t)cols * sizeof(float)) : NULL;
    if (J->rc == TQ_OK && J->kind == TQ_JOB_DEQ_BF16 && !tmp)
        J->rc = tq_fail(TQ_ERR_NOMEM, "codec: out of memory for a row of %lld columns", (long long)cols);
    for (int64_t i = J->r0; i < J->r1 && J->rc == TQ_OK; i++) {
        if (J->kind == TQ_JOB_QUANT) {
            J->rc = tq_quant_row(X, J->w + (size_t)i * (size_t)cols, i, &S);
        } else if (J->kind == TQ_JOB_DEQ_F32) {
            J->rc = tq_dequant_row(X, J->row0 + i, (float*)J->out + (size_t)i * (size_t)cols, &S);
        } else {
            J->rc = tq_dequant_row(X, J->row0 + i, tmp, &S);
            uint16_t* o = (uint16_t*)J->out + (size_t)i * (size_t)cols;
            for (int64_t j = 0; j < cols; j++) o[j] = tq_f32_to_bf16(tmp[j]);
        }
        if (J->rc != TQ_OK) J->bad_row = i;
    }
    if (J->rc != TQ_OK) snprintf(J->msg, sizeof J->msg, "%s", tq_last_error());
    free(tmp);
    tq_scratch_free(&S);
    return NULL;
}

/* Run nrows rows over threads; the failure of the lowest row wins (deterministic message). */
static tq_status tq_run_rows(const tq_ctx* X, tq_job_kind kind, const float* w, void* out, int64_t row0,
                             int64_t nrows)
{
    if (nrows <= 0) return TQ_OK;
    const int64_t work = nrows * X->cols;
    /* small calls run on the caller's thread: no thread count lookup (sysconf reads /sys per call) */
    int nt = work < (1 << 16) ? 1 : tq_codec_threads();
    if (nt > nrows) nt = (int)nrows;
    tq_job* jobs = calloc((size_t)nt, sizeof *jobs);
    pthread_t* th = calloc((size_t)nt, sizeof *th);
    int* started = calloc((size_t)nt, sizeof *started);
    if (!jobs || !th || !started) {
        free(jobs);
        free(th);
        free(started);
        return tq_fail(TQ_ERR_NOMEM, "codec: out of memory for %d worker descriptors", nt);
    }
    for (int t = 0; t < nt; t++) {
        tq_job* J = &jobs[t];
        memset(J, 0, sizeof *J);
        J->X = X;
        J->kind = kind;
        J->w = w;
        J->out = out;
        J->row0 = row0;
        J->r0 = nrows * t / nt;
        J->r1 = nrows * (t + 1) / nt;
        started[t] = 0;
    }
    for (int t = 1; t < nt; t++) started[t] = pthread_create(&th[t], NULL, tq_job_run, &jobs[t]) == 0;
    tq_job_run(&jobs[0]);
    for (int t = 1; t < nt; t++) {
        if (started[t])
            pthread_join(th[t], NULL);
        else
            tq_job_run(&jobs[t]); /* could not start a thread: do its rows here */
    }
    tq_status rc = TQ_OK;
    for (int t = 0; t < nt && rc == TQ_OK; t++)
        if (jobs[t].rc != TQ_OK) rc = tq_fail(jobs[t].rc, "%s", jobs[t].msg);
    free(jobs);
    free(th);
    free(started);
    return rc;
}

// ------------------------------------------------------------------------------------------------
// public entry points

tq_status tq_quantize_ref(const float* w, tq_qtensor* q, const char* what)
{
    if (!q || (!w && q->rows > 0)) return tq_fail(TQ_ERR_ARG, "tq_quantize_ref: NULL argument");
    tq_ctx X;
    TQ_FORWARD(tq_ctx_init(&X, q, 1, what));
    tq_status rc = tq_run_rows(&X, TQ_JOB_QUANT, w, NULL, 0, q->rows);
    tq_ctx_free(&X);
    return rc;
}

tq_status tq_dequantize_rows_ref(const tq_qtensor* q, int64_t row0, int64_t nrows, float* out)
{
    if (!q || (!out && nrows > 0)) return tq_fail(TQ_ERR_ARG, "tq_dequantize_rows_ref: NULL argument");
    if (row0 < 0 || nrows < 0 || row0 + nrows > q->rows)
        return tq_fail(TQ_ERR_ARG, "dequantize: rows [%lld, %lld) outside the tensor's %lld rows", (long long)row0,
                       (long long)(row0 + nrows), (long long)q->rows);
    tq_ctx X;
    TQ_FORWARD(tq_ctx_init(&X, q, 0, "(dequantize)"));
    tq_status rc = tq_run_rows(&X, TQ_JOB_DEQ_F32, NULL, out, row0, nrows);
    tq_ctx_free(&X);
    return rc;
}

tq_status tq_dequantize_ref(const tq_qtensor* q, float* out)
{
    if (!q) return tq_fail(TQ_ERR_ARG, "tq_dequantize_ref: NULL argument");
    return tq_dequantize_rows_ref(q, 0, q->rows, out);
}

tq_status tq_dequantize_bf16_ref(const tq_qtensor* q, uint16_t* out)
{
    if (!q || (!out && q->rows > 0)) return tq_fail(TQ_ERR_ARG, "tq_dequantize_bf16_ref: NULL argument");
    tq_ctx X;
    TQ_FORWARD(tq_ctx_init(&X, q, 0, "(dequantize)"));
    tq_status rc = tq_run_rows(&X, TQ_JOB_DEQ_BF16, NULL, out, 0, q->rows);
    tq_ctx_free(&X);
    return rc;
}
