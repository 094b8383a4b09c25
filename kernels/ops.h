/* ops.h — the transformer building blocks of the inference engine, CPU reference (kernels/ops_ref.c):
 * RMSNorm, rotary position embedding in the Hugging Face rotate_half convention (with the config's
 * theta, partial rotary factor and "linear" / "llama3" rope scaling), softmax, SwiGLU and the matrix
 * product through OpenBLAS (cblas_sgemm). Pure compute: no files, no MPI.
 *
 * Matrices are row-major fp32. A linear layer's weight is [out x in] as Hugging Face stores it, so
 * y = x · Wᵀ. The expressions follow llama2.c's run.c where it matters for bit-exact greedy text
 * (RMSNorm: w * (x * 1/sqrt(mean(x²) + eps)); rope frequencies in float). */
#ifndef TQ_OPS_H
#define TQ_OPS_H

#include <stdint.h>

/* out[r, :] = w ⊙ x[r, :] / sqrt(mean(x[r, :]²) + eps) for rows r < rows; out may alias x. */
void tq_rmsnorm_ref(float* out, const float* x, const float* w, int64_t rows, int64_t n, float eps);

/* Rotary embedding tables. inv_freq[i] for i < rot_dim/2, already divided by the scaling rule. */
typedef struct {
    int head_dim;
    int rot_dim;           /* rotated leading dims of each head (partial_rotary_factor * head_dim), even */
    float inv_freq[512];   /* rot_dim/2 entries */
} tq_rope;

typedef enum { TQ_ROPE_SCALE_NONE = 0, TQ_ROPE_SCALE_LINEAR, TQ_ROPE_SCALE_LLAMA3 } tq_rope_scale_kind;

typedef struct {
    tq_rope_scale_kind kind;
    double factor;                 /* linear and llama3 */
    double low_freq_factor;        /* llama3 */
    double high_freq_factor;       /* llama3 */
    double original_max_position;  /* llama3 */
} tq_rope_scaling;

/* @return 0 ok, -1 when head_dim / rot_dim are out of range (rot_dim odd, > head_dim or > 1024). */
int tq_rope_init(tq_rope* r, int head_dim, int rot_dim, double theta, const tq_rope_scaling* scaling);

/* Rotate n_heads head vectors of x (one token at position pos, [n_heads x head_dim]) in place:
 * for i < rot_dim/2: (x_i, x_{i+rot_dim/2}) -> (x_i c - x_{i+h} s, x_{i+h} c + x_i s), angle pos*inv_freq[i]. */
void tq_rope_apply_ref(const tq_rope* r, float* x, int n_heads, int64_t pos);

/* In-place softmax over n values. */
void tq_softmax_ref(float* x, int64_t n);

/* g[i] = silu(g[i]) * u[i] for i < n. */
void tq_swiglu_ref(float* g, const float* u, int64_t n);

/* y [T x out] = x [T x in] · Wᵀ (W [out x in]) (+ bias[out] when bias != NULL). OpenBLAS sgemm. */
void tq_matmul_ref(float* y, const float* x, const float* w, const float* bias, int64_t T, int64_t in, int64_t out);

/* Fixed BLAS thread count (1 keeps results independent of the machine when ranks share a node). */
void tq_ops_set_threads(int n);

#endif
