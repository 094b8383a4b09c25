/* hessian.h — accumulation of H = XᵀX / n over the inputs X [n x d] of one linear layer (CPU
 * reference), the statistic GPTQ and the sensitivity table use.
 *
 * Two levels, so that the result is bit-identical whatever the number of ranks:
 *   1. fp32 block: tq_hess_add_ref accumulates XᵀX in fp32 (cblas_ssyrk, upper triangle; or the
 *      diagonal Σ x_j² only) over the rows given since the last flush. The caller flushes at fixed
 *      boundaries of the calibration data (one sequence, say), never at rank-dependent ones.
 *   2. exact sum: tq_hess_flush adds the block, rounded to a fixed-point grid of 2^-64, into 128-bit
 *      integer sums (entries of magnitude up to 2^62 per block; anything below 2^-65 rounds to 0).
 *      Integer addition is associative, so sums over blocks in any order and on any number of ranks
 *      are identical, and the cross-rank SUM is exact.
 * For the cross-rank reduction (pipeline/calib.c) each 128-bit sum is exported as 3 limbs of 43 bits
 * in uint64 words: limb sums over up to 2^21 ranks cannot overflow, and tq_hess_import_limbs folds the
 * carries back. tq_hess_finalize converts to double: H_ij = S_ij · 2^-64 / n.
 * Memory: full mode d² floats (block) + d(d+1)/2 · 16 bytes (sums); diag mode 20 bytes per column. */
#ifndef TQ_HESSIAN_H
#define TQ_HESSIAN_H

#include <stdint.h>

#include "status.h" /* defines: tq_status */

typedef struct {
    int64_t d;          /* input dimension (columns of W) */
    int diag_only;      /* 1: only diag(XᵀX) */
    float* blk;         /* fp32 block [d x d] (upper triangle used) or [d] */
    int64_t blk_rows;   /* rows added to blk since the last flush */
    void* acc;          /* exact sums, packed upper triangle row by row (i <= j) or the diagonal */
    int64_t n_entries;  /* d(d+1)/2 or d */
    uint64_t rows;      /* rows flushed into acc (the token count of this accumulator) */
} tq_hess;

tq_status tq_hess_init(tq_hess* h, int64_t d, int diag_only);
void tq_hess_release(tq_hess* h); /* accepts a zeroed or released struct */
/* Zero everything (keeps the buffers). */
void tq_hess_reset(tq_hess* h);

/* blk += XᵀX for x [n x d] with row stride ldx (floats). NaN/Inf in x -> TQ_ERR_NUMERIC naming `what`. */
tq_status tq_hess_add_ref(tq_hess* h, const float* x, int64_t n, int64_t ldx, const char* what);
/* Fold the fp32 block into the exact sums and zero it. A block entry >= 2^62 -> TQ_ERR_NUMERIC. */
tq_status tq_hess_flush(tq_hess* h, const char* what);
/* Add another accumulator's exact sums (same d and mode; both flushed). */
tq_status tq_hess_merge(tq_hess* dst, const tq_hess* src);

#define TQ_HESS_LIMBS 3
/* Entries [e0, e0+ne) as 3 limbs each (limbs[3*(e-e0)+k], k = 0 lowest). */
void tq_hess_export_limbs(const tq_hess* h, int64_t e0, int64_t ne, uint64_t* limbs);
/* Replace entries [e0, e0+ne) by the value the (summed) limbs represent. */
void tq_hess_import_limbs(tq_hess* h, int64_t e0, int64_t ne, const uint64_t* limbs);

/* out = sums · 2^-64 / n_rows: full symmetric [d x d] (both triangles) or diagonal [d].
 * n_rows == 0 -> TQ_ERR_ARG. */
tq_status tq_hess_finalize(const tq_hess* h, uint64_t n_rows, double* out);

#endif
