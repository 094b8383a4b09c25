/* hessian_ref.c — CPU reference of H = XᵀX / n accumulation: fp32 blocks via cblas_ssyrk, exact
 * 128-bit fixed-point sums across blocks and ranks (see hessian.h for why). */
#include "hessian.h"

#include <cblas.h> /* defines: cblas_ssyrk */
#include <math.h>
#include <stdlib.h>
#include <string.h>

__extension__ typedef __int128 tq_i128;
__extension__ typedef unsigned __int128 tq_u128;

#define TQ_HESS_FRAC 64 /* fixed-point fraction bits */
#define TQ_LIMB_BITS 43

tq_status tq_hess_init(tq_hess* h, int64_t d, int diag_only)
{
    if (!h || d <= 0) return tq_fail(TQ_ERR_ARG, "hessian: bad dimension %lld", (long long)d);
    memset(h, 0, sizeof *h);
    h->d = d;
    h->diag_only = diag_only ? 1 : 0;
    h->n_entries = diag_only ? d : d * (d + 1) / 2;
    size_t nb = diag_only ? (size_t)d : (size_t)d * (size_t)d;
    h->blk = calloc(nb, sizeof(float));
    h->acc = calloc((size_t)h->n_entries, sizeof(tq_i128));
    if (!h->blk || !h->acc) {
        tq_hess_release(h);
        return tq_fail(TQ_ERR_NOMEM, "hessian: out of memory for d = %lld (%s)", (long long)d,
                       diag_only ? "diagonal" : "full");
    }
    return TQ_OK;
}

void tq_hess_release(tq_hess* h)
{
    if (!h) return;
    free(h->blk);
    free(h->acc);
    memset(h, 0, sizeof *h);
}

void tq_hess_reset(tq_hess* h)
{
    size_t nb = h->diag_only ? (size_t)h->d : (size_t)h->d * (size_t)h->d;
    memset(h->blk, 0, nb * sizeof(float));
    memset(h->acc, 0, (size_t)h->n_entries * sizeof(tq_i128));
    h->blk_rows = 0;
    h->rows = 0;
}

tq_status tq_hess_add_ref(tq_hess* h, const float* x, int64_t n, int64_t ldx, const char* what)
{
    if (!h || !h->blk || (!x && n > 0) || n < 0 || ldx < h->d)
        return tq_fail(TQ_ERR_ARG, "hessian %s: bad arguments", what ? what : "?");
    if (n == 0) return TQ_OK;
    int64_t d = h->d;
    for (int64_t r = 0; r < n; r++) {
        const float* xr = x + r * ldx;
        for (int64_t j = 0; j < d; j++)
            if (!isfinite(xr[j]))
                return tq_fail(TQ_ERR_NUMERIC, "hessian %s: input row %lld column %lld is %g (NaN/Inf activations)",
                               what ? what : "?", (long long)r, (long long)j, (double)xr[j]);
    }
    if (h->diag_only) {
        for (int64_t r = 0; r < n; r++) {
            const float* xr = x + r * ldx;
            for (int64_t j = 0; j < d; j++) h->blk[j] += xr[j] * xr[j];
        }
    } else {
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)d, (int)n, 1.0f, x, (int)ldx, 1.0f, h->blk, (int)d);
    }
    h->blk_rows += n;
    return TQ_OK;
}

static int to_fixed(float v, tq_i128* out)
{
    double s = ldexp((double)v, TQ_HESS_FRAC); /* exact: power-of-two scaling */
    if (!(fabs(s) < 0x1p126)) return 0;
    s = nearbyint(s);
    *out = (tq_i128)s;
    return 1;
}

tq_status tq_hess_flush(tq_hess* h, const char* what)
{
    if (!h || !h->acc) return tq_fail(TQ_ERR_ARG, "hessian %s: not initialised", what ? what : "?");
    tq_i128* acc = h->acc;
    int64_t d = h->d;
    if (h->diag_only) {
        for (int64_t j = 0; j < d; j++) {
            tq_i128 f;
            if (!to_fixed(h->blk[j], &f))
                return tq_fail(TQ_ERR_NUMERIC, "hessian %s: column %lld sum %g out of range", what ? what : "?",
                               (long long)j, (double)h->blk[j]);
            acc[j] += f;
            h->blk[j] = 0;
        }
    } else {
        int64_t e = 0;
        for (int64_t i = 0; i < d; i++) {
            float* br = h->blk + i * d;
            for (int64_t j = i; j < d; j++, e++) {
                tq_i128 f;
                if (!to_fixed(br[j], &f))
                    return tq_fail(TQ_ERR_NUMERIC, "hessian %s: entry (%lld,%lld) sum %g out of range", what ? what : "?",
                                   (long long)i, (long long)j, (double)br[j]);
                acc[e] += f;
            }
            memset(br, 0, (size_t)d * sizeof(float));
        }
    }
    h->rows += (uint64_t)h->blk_rows;
    h->blk_rows = 0;
    return TQ_OK;
}

tq_status tq_hess_merge(tq_hess* dst, const tq_hess* src)
{
    if (!dst || !src || dst->d != src->d || dst->diag_only != src->diag_only)
        return tq_fail(TQ_ERR_ARG, "hessian merge: shapes differ");
    tq_i128* a = dst->acc;
    const tq_i128* b = src->acc;
    for (int64_t e = 0; e < dst->n_entries; e++) a[e] += b[e];
    dst->rows += src->rows;
    return TQ_OK;
}

void tq_hess_export_limbs(const tq_hess* h, int64_t e0, int64_t ne, uint64_t* limbs)
{
    const tq_i128* a = h->acc;
    const uint64_t mask = (1ull << TQ_LIMB_BITS) - 1;
    for (int64_t e = 0; e < ne; e++) {
        tq_u128 u = (tq_u128)a[e0 + e];
        limbs[3 * e + 0] = (uint64_t)u & mask;
        limbs[3 * e + 1] = (uint64_t)(u >> TQ_LIMB_BITS) & mask;
        limbs[3 * e + 2] = (uint64_t)(u >> (2 * TQ_LIMB_BITS)); /* top 42 bits */
    }
}

void tq_hess_import_limbs(tq_hess* h, int64_t e0, int64_t ne, const uint64_t* limbs)
{
    tq_i128* a = h->acc;
    for (int64_t e = 0; e < ne; e++) {
        tq_u128 u = (tq_u128)limbs[3 * e + 0] + ((tq_u128)limbs[3 * e + 1] << TQ_LIMB_BITS) +
                    ((tq_u128)limbs[3 * e + 2] << (2 * TQ_LIMB_BITS)); /* mod 2^128 */
        a[e0 + e] = (tq_i128)u;
    }
}

tq_status tq_hess_finalize(const tq_hess* h, uint64_t n_rows, double* out)
{
    if (!h || !h->acc || !out) return tq_fail(TQ_ERR_ARG, "hessian finalize: NULL argument");
    if (n_rows == 0) return tq_fail(TQ_ERR_ARG, "hessian finalize: no rows were accumulated (no calibration tokens reached this layer)");
    const tq_i128* a = h->acc;
    double nd = (double)n_rows;
    int64_t d = h->d;
    if (h->diag_only) {
        for (int64_t j = 0; j < d; j++) out[j] = ldexp((double)a[j], -TQ_HESS_FRAC) / nd;
        return TQ_OK;
    }
    int64_t e = 0;
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = i; j < d; j++, e++) {
            double v = ldexp((double)a[e], -TQ_HESS_FRAC) / nd;
            out[i * d + j] = v;
            out[j * d + i] = v;
        }
    return TQ_OK;
}
