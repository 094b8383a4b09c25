/* deltanet.h — the Gated DeltaNet token mixer of the hybrid Qwen3.5 / Qwen3-Next families (their
 * "linear_attention" layers), CPU reference (kernels/deltanet_ref.c). Pure compute, fp32, row-major
 * [T x channels] activations; the per-sequence state is passed in and updated in place, so running a
 * sequence in one call or token by token gives the same result (the recurrent form is used for both).
 *
 * Math (Hugging Face transformers modeling_qwen3_5.py / modeling_qwen3_next.py, torch fallbacks):
 *   conv:   y[t,c] = silu(sum_j w[c,j] * x[t + j - (K-1), c]) (depthwise causal conv1d, no bias; inputs
 *           before the sequence start come from the conv state: the last K-1 inputs, zero at start)
 *   q, k:   L2-normalized per head, x / sqrt(sum x^2 + 1e-6); q then scaled by 1/sqrt(dk)
 *   gates:  beta = sigmoid(b), g = -exp(A_log) * softplus(a + dt_bias) (per value head and token)
 *   rule:   per value head (its key head = head / (Hv/Hk), i.e. repeat_interleave), state S [dk x dv]:
 *           S *= exp(g_t); d = beta_t * (v_t - Sᵀk_t); S += k_t dᵀ; o_t = Sᵀq_t
 *   norm:   o = w ⊙ o / sqrt(mean(o^2) + eps) ⊙ silu(z) per value head (RMSNormGated, weight not 1+w). */
#ifndef TQ_DELTANET_H
#define TQ_DELTANET_H

#include <stdint.h>

/* x [T x C] -> silu(causal depthwise conv) in place. w [C x K] (conv1d.weight [C, 1, K]). state
 * [(K-1) x C]: the previous K-1 inputs, oldest first; updated to the last K-1 inputs seen.
 * work: scratch of (K-1+T) x C floats. */
void tq_causal_conv1d_silu_ref(float* x, const float* w, float* state, int T, int C, int K, float* work);

/* beta [T x Hv] = sigmoid(b); g [T x Hv] = -exp(A_log) * softplus(a + dt_bias). b and a are
 * overwritten with beta and g. */
void tq_delta_gates_ref(float* b, float* a, const float* A_log, const float* dt_bias, int T, int Hv);

/* The gated delta rule over T tokens. q, k [T x Hk*dk] (raw: normalized and scaled here, in place),
 * v [T x Hv*dv], g / beta [T x Hv] (from tq_delta_gates_ref), S [Hv x dk x dv] in/out, out [T x Hv*dv],
 * work: scratch of dv floats. Hv must be a multiple of Hk. */
void tq_gated_delta_rule_ref(float* q, float* k, const float* v, const float* g, const float* beta, float* S,
                             int T, int Hk, int Hv, int dk, int dv, float* out, float* work);

/* o [rows x n] = w ⊙ o / sqrt(mean(o²) + eps) ⊙ silu(z), z [rows x n]. */
void tq_rmsnorm_gated_ref(float* o, const float* z, const float* w, int64_t rows, int n, float eps);

#endif
