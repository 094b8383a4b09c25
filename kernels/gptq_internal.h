/* gptq_internal.h — host-side GPTQ preparation shared by the CPU reference (gptq_ref.c) and the GPU
 * path (gptq.cu), so both condition H and order the columns in exactly the same way. Not public API. */
#ifndef TQ_GPTQ_INTERNAL_H
#define TQ_GPTQ_INTERNAL_H

#include <stdint.h>

#include "status.h"

/* W [R x N] and H [N x N] into double: rotated (W·Rᵀ, R·H·Rᵀ, symmetrized) when signs != NULL (block
 * size g); dead columns (diag H <= 0) zeroed in W and set to the identity in H; diag += damp·mean(diag);
 * with act_order, columns of W and H permuted by descending diag H (perm[p] = original column, else the
 * identity). tmp: scratch [N]. NaN/Inf in h -> TQ_ERR_NUMERIC naming `what`. */
tq_status tq_gptq_prepare(const float* w, const double* h, int64_t R, int64_t N, int g, const float* signs,
                          double damp, int act_order, double* W, double* Hm, int64_t* perm, double* tmp,
                          const char* what);

#endif
