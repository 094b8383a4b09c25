/* gptq_ref.c — GPTQ error compensation, CPU reference (double precision, LAPACK Cholesky from
 * OpenBLAS). Method and codec handling: see gptq.h. The codec's own quantizer runs first
 * (tq_quantize_ref) to fill every part and fix what GPTQ keeps fixed (tq norms, bin1 scales, the
 * codebook); GPTQ then rewrites the codes (and, for rtn, the group scale/min) so the normal dequantizer
 * reads its result. Bit packing: kernels/codec_internal.h, as the codec does. */
#include "gptq.h"
#include "gptq_internal.h" /* defines: tq_gptq_prepare */

#include <cblas.h> /* defines: cblas_dgemm */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "codec_internal.h" /* defines: tq_pack_bits */
#include "dtype.h"          /* defines: tq_f16_to_f32, tq_f32_to_f16 */
#include "hadamard.h"       /* defines: tq_rot_signs, tq_rot_block, tq_rot_nblocks, tq_rot_block_sizes */

/* LAPACK (OpenBLAS exports the Fortran symbols; the trailing size_t is the hidden length of uplo). */
extern void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info, size_t uplo_len);
extern void dpotri_(const char* uplo, const int* n, double* a, const int* lda, int* info, size_t uplo_len);

void tq_gptq_opts_default(tq_gptq_opts* o)
{
    o->damp = 0.01;
    o->block = 128;
    o->act_order = 0;
}

int tq_gptq_supports(const tq_codec* c)
{
    if (!c) return 0;
    return c->kind == TQ_CODEC_RTN || c->kind == TQ_CODEC_INT8 || c->kind == TQ_CODEC_TQ || c->kind == TQ_CODEC_BIN1;
}

// ------------------------------------------------------------------------------------------------
// rotation in double (same map as hadamard.h: per block y = (1/sqrt d) H_d (s ⊙ x))

static void fwht_d(double* x, int n)
{
    for (int h = 1; h < n; h <<= 1)
        for (int i = 0; i < n; i += h << 1)
            for (int j = i; j < i + h; j++) {
                double a = x[j], b = x[j + h];
                x[j] = a + b;
                x[j + h] = a - b;
            }
}

static void rot_forward_d(double* x, int64_t cols, int g, const float* signs)
{
    int64_t nb = tq_rot_nblocks(cols, g);
    for (int64_t k = 0; k < nb; k++) {
        int64_t s;
        int d;
        tq_rot_block(cols, g, k, &s, &d);
        for (int i = 0; i < d; i++) x[s + i] *= signs[s + i];
        fwht_d(x + s, d);
        double sc = 1.0 / sqrt((double)d);
        for (int i = 0; i < d; i++) x[s + i] *= sc;
    }
}

// ------------------------------------------------------------------------------------------------
// H⁻¹ upper Cholesky factor

/* In: a = H [n x n] symmetric positive definite. Out: a = U, upper triangular (row-major), U_ᵀU = H⁻¹. */
static tq_status chol_inv_upper(double* a, int n, const char* what)
{
    int info = 0;
    /* Fortran sees the transpose of our row-major array; H is symmetric, so any triangle works. */
    dpotrf_("U", &n, a, &n, &info, 1);
    if (info != 0)
        return tq_fail(TQ_ERR_NUMERIC,
                       "gptq %s: H is not positive definite even after dampening (LAPACK dpotrf info %d); "
                       "raise the dampening or use more calibration tokens",
                       what, info);
    dpotri_("U", &n, a, &n, &info, 1);
    if (info != 0) return tq_fail(TQ_ERR_NUMERIC, "gptq %s: inverting H failed (LAPACK dpotri info %d)", what, info);
    /* Fortran upper = our lower triangle: mirror it to the upper one */
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) a[(size_t)i * n + j] = a[(size_t)j * n + i];
    /* Fortran lower factor L (H⁻¹ = L Lᵀ) is our upper triangle read row-major: U = Lᵀ */
    dpotrf_("L", &n, a, &n, &info, 1);
    if (info != 0)
        return tq_fail(TQ_ERR_NUMERIC, "gptq %s: Cholesky of H^-1 failed (LAPACK dpotrf info %d)", what, info);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++) a[(size_t)i * n + j] = 0.0;
    return TQ_OK;
}

// ------------------------------------------------------------------------------------------------
// per-codec scalar quantizers with fixed parameters

typedef struct {
    tq_codec_kind kind;
    int64_t rows, cols;
    int g;
    int bits, maxq;
    /* rtn: per (row, group) fp16 words, int8: per row fp32 scale, tq/bin1: per (row, block) fp16 */
    int64_t ngrp;          /* groups (rtn) or rotation blocks (tq, bin1) per row */
    uint16_t* sc16;        /* rtn scale / tq norm / bin1 scale  [rows x ngrp] */
    uint16_t* mn16;        /* rtn min [rows x ngrp] */
    float* sc32;           /* int8 scale [rows] */
    int64_t* grp_of;       /* [cols] original column -> group / block index */
    int64_t* grp_start;    /* [ngrp + 1] first column of each group / block */
    int* cb_of;            /* tq: [ngrp] codebook index of the block */
    float cb[16][16];      /* tq codebooks by distinct block size */
    float bnd[16][15];
    const char* what;
} gq_ctx;

/* rtn group parameters from values v[0..n) exactly as the codec computes them. */
static tq_status rtn_params(gq_ctx* C, int64_t r, int64_t k, const float* v, int64_t n)
{
    float lo = v[0], hi = v[0];
    for (int64_t i = 1; i < n; i++) {
        if (v[i] < lo) lo = v[i];
        if (v[i] > hi) hi = v[i];
    }
    const float scr = (hi - lo) / (float)C->maxq;
    const uint16_t hs = tq_f32_to_f16(scr), hm = tq_f32_to_f16(lo);
    if ((hs & 0x7c00u) == 0x7c00u || (hm & 0x7c00u) == 0x7c00u)
        return tq_fail(TQ_ERR_NUMERIC, "gptq %s row %lld group %lld: scale/min exceeds the fp16 range of %s", C->what,
                       (long long)r, (long long)k, "rtn");
    C->sc16[r * C->ngrp + k] = hs;
    C->mn16[r * C->ngrp + k] = hm;
    return TQ_OK;
}

/* Quantize value v of (row r, original column oc): returns the code, *q the dequantized value. */
static inline int quant1(const gq_ctx* C, int64_t r, int64_t oc, double v, double* q)
{
    switch (C->kind) {
    case TQ_CODEC_RTN: {
        int64_t k = C->grp_of[oc];
        const float scf = tq_f16_to_f32(C->sc16[r * C->ngrp + k]);
        const float mnf = tq_f16_to_f32(C->mn16[r * C->ngrp + k]);
        int c = 0;
        if (scf > 0.0f) {
            float t = floorf(((float)v - mnf) / scf + 0.5f);
            c = t <= 0.0f ? 0 : t >= (float)C->maxq ? C->maxq : (int)t;
        }
        *q = (double)(mnf + (float)c * scf);
        return c;
    }
    case TQ_CODEC_INT8: {
        const float scale = C->sc32[r];
        int c = 0;
        if (scale > 0.0f) {
            float f = roundf((float)v / scale);
            c = f > 127.0f ? 127 : f < -127.0f ? -127 : (int)f;
        }
        *q = (double)((float)c * scale);
        return c;
    }
    case TQ_CODEC_TQ: {
        int64_t k = C->grp_of[oc];
        const float nf = tq_f16_to_f32(C->sc16[r * C->ngrp + k]);
        const int ci = C->cb_of[k];
        int c = 0;
        if (nf != 0.0f) {
            /* nearest level nf·cb[c]: nf may be negative only through corruption; handle the sign */
            const float u = (float)v / nf;
            const int nbnd = C->maxq;
            for (int t = 0; t < nbnd; t++) c += u > C->bnd[ci][t];
        }
        *q = (double)(nf * C->cb[ci][c]);
        return c;
    }
    case TQ_CODEC_BIN1: {
        int64_t k = C->grp_of[oc];
        const float m = tq_f16_to_f32(C->sc16[r * C->ngrp + k]);
        int c = v >= 0.0;
        *q = (double)(c ? m : -m);
        return c;
    }
    default:
        *q = v;
        return 0;
    }
}

// ------------------------------------------------------------------------------------------------

// ------------------------------------------------------------------------------------------------
// Host-side preparation shared with the GPU path (kernels/gptq.cu)

typedef struct {
    int64_t idx;
    double key;
} gq_key;
static int key_cmp(const void* a, const void* b)
{
    const gq_key* x = a;
    const gq_key* y = b;
    if (x->key != y->key) return x->key > y->key ? -1 : 1;
    return x->idx < y->idx ? -1 : (x->idx > y->idx);
}

tq_status tq_gptq_prepare(const float* w, const double* h, int64_t R, int64_t N, int g, const float* signs,
                          double damp, int act_order, double* W, double* Hm, int64_t* perm, double* tmp,
                          const char* what)
{
    for (int64_t r = 0; r < R; r++) {
        double* wr = W + r * N;
        for (int64_t j = 0; j < N; j++) wr[j] = w[r * N + j];
        if (signs) rot_forward_d(wr, N, g, signs);
    }
    for (int64_t i = 0; i < N * N; i++) {
        if (!isfinite(h[i]))
            return tq_fail(TQ_ERR_NUMERIC, "gptq %s: H holds NaN/Inf at (%lld, %lld)", what, (long long)(i / N),
                           (long long)(i % N));
        Hm[i] = h[i];
    }
    if (signs) {
        /* H' = R H Rᵀ: rotate the rows, transpose, rotate the rows again (H symmetric) */
        for (int64_t i = 0; i < N; i++) rot_forward_d(Hm + i * N, N, g, signs);
        for (int64_t i = 0; i < N; i++)
            for (int64_t j = i + 1; j < N; j++) {
                double t = Hm[i * N + j];
                Hm[i * N + j] = Hm[j * N + i];
                Hm[j * N + i] = t;
            }
        for (int64_t i = 0; i < N; i++) rot_forward_d(Hm + i * N, N, g, signs);
        for (int64_t i = 0; i < N; i++) /* symmetrize rounding */
            for (int64_t j = i + 1; j < N; j++) {
                double m = 0.5 * (Hm[i * N + j] + Hm[j * N + i]);
                Hm[i * N + j] = m;
                Hm[j * N + i] = m;
            }
    }
    /* dead columns, dampening */
    double mean_diag = 0;
    for (int64_t j = 0; j < N; j++) mean_diag += Hm[j * N + j];
    mean_diag /= (double)N;
    for (int64_t j = 0; j < N; j++)
        if (!(Hm[j * N + j] > 0)) {
            for (int64_t i = 0; i < N; i++) Hm[i * N + j] = Hm[j * N + i] = 0;
            Hm[j * N + j] = 1;
            for (int64_t r = 0; r < R; r++) W[r * N + j] = 0;
        }
    if (!(mean_diag > 0)) mean_diag = 1;
    for (int64_t j = 0; j < N; j++) Hm[j * N + j] += damp * mean_diag;

    /* act-order permutation (position p holds original column perm[p]) */
    for (int64_t j = 0; j < N; j++) perm[j] = j;
    if (!act_order) return TQ_OK;
    gq_key* keys = malloc((size_t)N * sizeof *keys);
    double* Hp = malloc((size_t)N * (size_t)N * sizeof(double));
    if (!keys || !Hp) {
        free(keys);
        free(Hp);
        return tq_fail(TQ_ERR_NOMEM, "gptq %s: out of memory", what);
    }
    for (int64_t j = 0; j < N; j++) {
        keys[j].idx = j;
        keys[j].key = Hm[j * N + j];
    }
    qsort(keys, (size_t)N, sizeof *keys, key_cmp);
    for (int64_t j = 0; j < N; j++) perm[j] = keys[j].idx;
    free(keys);
    /* permute H (rows and columns) and W (columns) */
    for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; j < N; j++) Hp[i * N + j] = Hm[perm[i] * N + perm[j]];
    memcpy(Hm, Hp, (size_t)N * (size_t)N * sizeof(double));
    free(Hp);
    for (int64_t r = 0; r < R; r++) {
        for (int64_t j = 0; j < N; j++) tmp[j] = W[r * N + perm[j]];
        memcpy(W + r * N, tmp, (size_t)N * sizeof(double));
    }
    return TQ_OK;
}

tq_status tq_gptq_quantize_ref(const float* w, const double* h, const tq_gptq_opts* o, tq_qtensor* q,
                               const char* what)
{
    if (!what) what = "(unnamed tensor)";
    if (!w || !h || !q) return tq_fail(TQ_ERR_ARG, "gptq %s: NULL argument", what);
    if (!tq_gptq_supports(&q->codec))
        return tq_fail(TQ_ERR_ARG, "gptq %s: codec %s is not supported by GPTQ (use rtn2..8, int8, tq1..4, bin1)", what,
                       q->codec.name);
    tq_gptq_opts def;
    tq_gptq_opts_default(&def);
    if (!o) o = &def;
    const int64_t R = q->rows, N = q->cols;
    if (R <= 0 || N <= 0 || N > 1 << 20) return tq_fail(TQ_ERR_ARG, "gptq %s: bad shape", what);
    const int B = o->block > 0 ? o->block : 128;
    const double damp = o->damp > 0 ? o->damp : 0.01;
    const int rotated = q->codec.kind == TQ_CODEC_TQ || q->codec.kind == TQ_CODEC_BIN1;
    tq_status rc = TQ_OK;
    gq_ctx C;
    memset(&C, 0, sizeof C);
    double* W = NULL;   /* [R x N] current weights (rotated, permuted) */
    double* Hm = NULL;  /* [N x N] H (rotated, permuted), then U */
    double* W1 = NULL;  /* [R x B] */
    double* E1 = NULL;  /* [R x B] */
    double* tmp = NULL;
    float* signs = NULL;
    float* gv = NULL;
    uint8_t* codes = NULL; /* [R x N] in original column order */
    int64_t* perm = NULL;  /* position -> original column */

    /* 1. the codec's own quantization: every part filled, fixed parameters read back */
    TQ_CHECK_GOTO(tq_quantize_ref(w, q, what), out);
    C.kind = q->codec.kind;
    C.rows = R;
    C.cols = N;
    C.g = q->codec.group;
    C.bits = q->codec.kind == TQ_CODEC_INT8 ? 8 : q->codec.bits;
    C.maxq = (1 << C.bits) - 1;
    C.what = what;
    if (rotated) C.ngrp = tq_rot_nblocks(N, C.g);
    else if (C.kind == TQ_CODEC_RTN) C.ngrp = (N + C.g - 1) / C.g;
    else C.ngrp = 1;
    C.grp_of = malloc((size_t)N * sizeof(int64_t));
    C.grp_start = malloc((size_t)(C.ngrp + 1) * sizeof(int64_t));
    C.cb_of = calloc((size_t)C.ngrp, sizeof(int));
    C.sc16 = calloc((size_t)(R * C.ngrp), sizeof(uint16_t));
    C.mn16 = calloc((size_t)(R * C.ngrp), sizeof(uint16_t));
    C.sc32 = calloc((size_t)R, sizeof(float));
    W = malloc((size_t)R * (size_t)N * sizeof(double));
    Hm = malloc((size_t)N * (size_t)N * sizeof(double));
    W1 = malloc((size_t)R * (size_t)B * sizeof(double));
    E1 = malloc((size_t)R * (size_t)B * sizeof(double));
    tmp = malloc((size_t)N * sizeof(double));
    gv = malloc((size_t)(N > R ? N : R) * sizeof(float));
    codes = malloc((size_t)R * (size_t)N);
    perm = malloc((size_t)N * sizeof(int64_t));
    TQ_GOTO_FAIL(!C.grp_of || !C.grp_start || !C.cb_of || !C.sc16 || !C.mn16 || !C.sc32 || !W || !Hm || !W1 || !E1 ||
                     !tmp || !gv || !codes || !perm,
                 TQ_ERR_NOMEM, out, "gptq %s: out of memory (%lld x %lld)", what, (long long)R, (long long)N);
    for (int64_t k = 0; k < C.ngrp; k++) {
        int64_t s, e;
        if (rotated) {
            int d;
            tq_rot_block(N, C.g, k, &s, &d);
            e = s + d;
        } else if (C.kind == TQ_CODEC_RTN) {
            s = k * C.g;
            e = s + C.g < N ? s + C.g : N;
        } else {
            s = 0;
            e = N;
        }
        C.grp_start[k] = s;
        for (int64_t j = s; j < e; j++) C.grp_of[j] = k;
    }
    C.grp_start[C.ngrp] = N;
    const tq_qpart* pc = tq_qtensor_part(q, "codes");
    TQ_GOTO_FAIL(!pc, TQ_ERR_ARG, out, "gptq %s: codec %s has no 'codes' part", what, q->codec.name);
    if (C.kind == TQ_CODEC_TQ || C.kind == TQ_CODEC_BIN1) {
        const tq_qpart* pn = tq_qtensor_part(q, C.kind == TQ_CODEC_TQ ? "norms" : "scales");
        TQ_GOTO_FAIL(!pn || pn->row_bytes != 2 * (size_t)C.ngrp, TQ_ERR_ARG, out, "gptq %s: unexpected layout of %s",
                     what, q->codec.name);
        for (int64_t r = 0; r < R; r++) memcpy(C.sc16 + r * C.ngrp, pn->data + (size_t)r * pn->row_bytes, pn->row_bytes);
        if (C.kind == TQ_CODEC_TQ) {
            int sizes[16];
            int nd = tq_rot_block_sizes(N, C.g, sizes);
            const tq_qpart* pcb = tq_qtensor_part(q, "codebook");
            int nc = 1 << C.bits;
            TQ_GOTO_FAIL(!pcb || pcb->bytes != (size_t)4 * nc * nd, TQ_ERR_ARG, out, "gptq %s: unexpected codebook", what);
            for (int i = 0; i < nd; i++) {
                memcpy(C.cb[i], pcb->data + (size_t)4 * nc * i, (size_t)4 * nc);
                for (int t = 0; t + 1 < nc; t++) C.bnd[i][t] = 0.5f * (C.cb[i][t] + C.cb[i][t + 1]);
            }
            for (int64_t k = 0; k < C.ngrp; k++) {
                int d = (int)(C.grp_start[k + 1] - C.grp_start[k]);
                for (int i = 0; i < nd; i++)
                    if (sizes[i] == d) C.cb_of[k] = i;
            }
        }
    } else if (C.kind == TQ_CODEC_INT8) {
        const tq_qpart* ps = tq_qtensor_part(q, "scales");
        TQ_GOTO_FAIL(!ps || ps->row_bytes != 4, TQ_ERR_ARG, out, "gptq %s: unexpected int8 layout", what);
        for (int64_t r = 0; r < R; r++) memcpy(&C.sc32[r], ps->data + (size_t)r * 4, 4);
    }

    /* 2-3. W and H in double (rotated), conditioned, act-order permutation */
    if (rotated) {
        signs = malloc((size_t)N * sizeof(float));
        TQ_GOTO_FAIL(!signs, TQ_ERR_NOMEM, out, "gptq %s: out of memory", what);
        tq_rot_signs(q->seed, N, signs);
    }
    TQ_CHECK_GOTO(tq_gptq_prepare(w, h, R, N, C.g, rotated ? signs : NULL, damp, o->act_order, W, Hm, perm, tmp, what),
                  out);
    if (o->act_order) {
        /* rtn with act-order: static groups from the original weights (the codec's own params) */
        if (C.kind == TQ_CODEC_RTN) {
            const tq_qpart* ps = tq_qtensor_part(q, "scales");
            const tq_qpart* pm = tq_qtensor_part(q, "mins");
            TQ_GOTO_FAIL(!ps || !pm, TQ_ERR_ARG, out, "gptq %s: unexpected rtn layout", what);
            for (int64_t r = 0; r < R; r++) {
                memcpy(C.sc16 + r * C.ngrp, ps->data + (size_t)r * ps->row_bytes, ps->row_bytes);
                memcpy(C.mn16 + r * C.ngrp, pm->data + (size_t)r * pm->row_bytes, pm->row_bytes);
            }
        }
    }
    /* 4. U = chol(H⁻¹) upper */
    TQ_GOTO_FAIL(N > 2147483647, TQ_ERR_ARG, out, "gptq %s: too many columns", what);
    TQ_CHECK_GOTO(chol_inv_upper(Hm, (int)N, what), out);

    /* 5. sweep in lazy blocks */
    for (int64_t i1 = 0; i1 < N; i1 += B) {
        int64_t i2 = i1 + B < N ? i1 + B : N, nbk = i2 - i1;
        for (int64_t r = 0; r < R; r++) memcpy(W1 + r * nbk, W + r * N + i1, (size_t)nbk * sizeof(double));
        for (int64_t i = 0; i < nbk; i++) {
            int64_t p = i1 + i, oc = perm[p];
            if (C.kind == TQ_CODEC_RTN && !o->act_order && oc == C.grp_start[C.grp_of[oc]]) {
                /* group starts here: its scale/min from the current (error-updated) weights */
                int64_t k = C.grp_of[oc], ge = C.grp_start[k + 1];
                for (int64_t r = 0; r < R; r++) {
                    for (int64_t j = oc; j < ge; j++)
                        gv[j - oc] = (float)(j < i2 ? W1[r * nbk + (j - i1)] : W[r * N + j]);
                    TQ_CHECK_GOTO(rtn_params(&C, r, k, gv, ge - oc), out);
                }
            }
            const double dd = Hm[p * N + p];
            const double* urow = Hm + p * N;
            for (int64_t r = 0; r < R; r++) {
                double* wr = W1 + r * nbk;
                double qv;
                codes[r * N + oc] = (uint8_t)quant1(&C, r, oc, wr[i], &qv);
                double err = (wr[i] - qv) / dd;
                for (int64_t j = i + 1; j < nbk; j++) wr[j] -= err * urow[i1 + j];
                E1[r * nbk + i] = err;
            }
        }
        if (i2 < N)
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)R, (int)(N - i2), (int)nbk, -1.0, E1, (int)nbk,
                        Hm + i1 * N + i2, (int)N, 1.0, W + i2, (int)N);
    }

    /* 6. write the codes (and rtn params) into the codec's parts */
    for (int64_t r = 0; r < R; r++) {
        uint8_t* dst = pc->data + (size_t)r * pc->row_bytes;
        if (C.kind == TQ_CODEC_INT8) {
            memcpy(dst, codes + r * N, (size_t)N); /* int8 codes stored as bytes (two's complement) */
        } else {
            memset(dst, 0, pc->row_bytes);
            tq_pack_bits(dst, codes + r * N, N, C.bits);
        }
    }
    if (C.kind == TQ_CODEC_RTN && !o->act_order) {
        const tq_qpart* ps = tq_qtensor_part(q, "scales");
        const tq_qpart* pm = tq_qtensor_part(q, "mins");
        TQ_GOTO_FAIL(!ps || !pm, TQ_ERR_ARG, out, "gptq %s: unexpected rtn layout", what);
        for (int64_t r = 0; r < R; r++) {
            memcpy(ps->data + (size_t)r * ps->row_bytes, C.sc16 + r * C.ngrp, ps->row_bytes);
            memcpy(pm->data + (size_t)r * pm->row_bytes, C.mn16 + r * C.ngrp, pm->row_bytes);
        }
    }
out:
    free(C.grp_of);
    free(C.grp_start);
    free(C.cb_of);
    free(C.sc16);
    free(C.mn16);
    free(C.sc32);
    free(W);
    free(Hm);
    free(W1);
    free(E1);
    free(tmp);
    free(signs);
    free(gv);
    free(codes);
    free(perm);
    return rc;
}
