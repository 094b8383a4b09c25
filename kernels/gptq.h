/* gptq.h — GPTQ error compensation (arXiv 2210.17323) for every scalar per-group codec of codec.h,
 * CPU reference. The output is a normal tq_qtensor: exactly the codec's bytes, read back by the normal
 * dequantizer (tq_dequantize_ref); only the choice of codes (and, for rtn, of the group grids) differs
 * from plain quantization.
 *
 * Algorithm (per tensor W [rows x cols], H [cols x cols] = XᵀX/n of the layer's inputs):
 *   1. Columns whose H diagonal is 0 (never activated) are "dead": their H row/column is replaced by
 *      the identity and the weights are quantized plainly (they cannot affect the output).
 *   2. Dampening: H += damp · mean(diag H) · I  (damp 0.01 by default).
 *   3. Optional act-order: columns visited by descending diag H (the permutation is applied to W and H
 *      and undone on output). Groups are ALWAYS defined in the original column order (what the codec's
 *      layout stores), so with act-order each group's parameters are fixed before the sweep from the
 *      original weights ("static groups"); without act-order rtn groups take their scale/min when the
 *      sweep reaches their first column, from the error-updated weights (the GPTQ paper's choice).
 *   4. U = upper Cholesky factor of H⁻¹ (LAPACK dpotrf/dpotri/dpotrf in double).
 *   5. Column sweep in lazy blocks of `block` columns: q_j = quant(w_j), e_j = (w_j − q_j)/U_jj,
 *      w_k −= e_j·U_jk for the later columns k of the block; after each block, one GEMM applies the
 *      block's errors to every later column.
 * Codecs:
 *   rtn2..rtn8  asymmetric grid per (row, group): fp16 scale + fp16 min, exactly as codec rtn stores.
 *   int8        symmetric per row: the row scale is fixed first from the original row.
 *   tq1..tq4, bin1   in the ROTATED domain: W' = W·Rᵀ (R: the codec's per-group randomized Hadamard
 *               rotation for this tensor's seed, an orthogonal map of the input dimension) and
 *               H' = R·H·Rᵀ, so tr(ΔW'·H'·ΔW'ᵀ) = tr(ΔW·H·ΔWᵀ). Group norms (bin1: scales) are fixed
 *               first from the rotated original weights, exactly as the codec stores them; then each
 *               rotated coordinate is quantized to the nearest stored level (centroid × norm scale).
 *   Others (tq{b}r{r}, ter, fp16/bf16/f32): not supported here (tq_gptq_supports() == 0); callers
 *   quantize them plainly.
 * Memory: H copies in double (a few × cols² × 8 bytes) plus W in double. */
#ifndef TQ_GPTQ_H
#define TQ_GPTQ_H

#include <stdint.h>

#include "codec.h"  /* defines: tq_codec, tq_qtensor */
#include "status.h" /* defines: tq_status */

typedef struct {
    double damp;   /* relative dampening, 0.01 */
    int block;     /* lazy block width, 128 */
    int act_order; /* 1: visit columns by descending diag H */
} tq_gptq_opts;

void tq_gptq_opts_default(tq_gptq_opts* o);

/* 1 when tq_gptq_quantize_ref handles codec c. */
int tq_gptq_supports(const tq_codec* c);

/* Quantize w [rows x cols fp32 row-major] with GPTQ against h [cols x cols, symmetric, double] into q
 * (allocated by tq_qtensor_alloc with the codec, rows, cols and seed to use). h is not modified.
 * `what` names the tensor in errors.
 * @return TQ_OK; TQ_ERR_ARG (shape mismatch, unsupported codec); TQ_ERR_NUMERIC (NaN/Inf in w or h,
 *         H not positive definite even after dampening); TQ_ERR_NOMEM. Local. */
tq_status tq_gptq_quantize_ref(const float* w, const double* h, const tq_gptq_opts* o, tq_qtensor* q,
                               const char* what);

#endif
