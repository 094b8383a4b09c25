/* hadamard.h — the randomized Hadamard rotation used by the tq and bin1 codecs (CPU reference).
 *
 * A row of `cols` weights is cut into rotation blocks along the columns:
 *   floor(cols / g) full blocks of g (g in {64,128,256}), then the tail cols % g as a sequence of
 *   power-of-two blocks, largest first (its binary expansion): 172 @ g=128 -> 128, 32, 8, 4;
 *   576 @ 128 -> 4 x 128, 64; 3 -> 2, 1. Each block gets its own norm/scale in the codecs.
 * Within a block of size d starting at column c0, the forward rotation is
 *   y = (1/sqrt(d)) · H_d · (s ⊙ x[c0 .. c0+d))
 * with H_d the Sylvester (natural order) Hadamard matrix, H[i][k] = (-1)^popcount(i & k), and s_j = ±1
 * a sign that depends only on (seed, absolute column j), never on the row. The inverse is
 *   x = s ⊙ ((1/sqrt(d)) · H_d · y).
 * Sign of column j:  bit 63 of tq_mix64(seed + 0x9E3779B97F4A7C15 · (j + 1)) (mod 2^64); 1 -> -1, 0 -> +1.
 * tq_mix64 is the splitmix64 finalizer (see below). The residual stage of tq{b}r{r} uses
 * seed2 = tq_mix64(seed ^ 0xD1B54A32D192ED03).
 * Float details (what the CUDA version mirrors): butterflies in stages h = 1, 2, 4, ..., d/2, each pair
 * (a, b) = (x[j], x[j+h]) -> (a + b, a - b); then multiply by (float)(1/sqrt((double)d)). */
#ifndef TQ_HADAMARD_H
#define TQ_HADAMARD_H

#include <stdint.h>

/* splitmix64 finalizer: z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB;
 * z ^= z >> 31. */
static inline uint64_t tq_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* ±1.0f for column j. */
static inline float tq_rot_sign(uint64_t seed, int64_t j)
{
    return (tq_mix64(seed + 0x9E3779B97F4A7C15ull * (uint64_t)(j + 1)) >> 63) ? -1.0f : 1.0f;
}

/* Seed of the residual (second) stage. */
static inline uint64_t tq_rot_seed2(uint64_t seed)
{
    return tq_mix64(seed ^ 0xD1B54A32D192ED03ull);
}

/* Number of rotation blocks of a row (full blocks + popcount of the tail). cols >= 1. */
int64_t tq_rot_nblocks(int64_t cols, int g);
/* Start column and size of block k (0 <= k < tq_rot_nblocks). */
void tq_rot_block(int64_t cols, int g, int64_t k, int64_t* start, int* size);
/* Distinct block sizes, descending (at most 1 + log2(g) entries): what the per-tensor codebooks are for.
 * Returns the count; sizes[] needs room for 10 entries. */
int tq_rot_block_sizes(int64_t cols, int g, int* sizes);

/* signs[j] = tq_rot_sign(seed, j) for j < cols. */
void tq_rot_signs(uint64_t seed, int64_t cols, float* signs);

/* In-place unnormalized fast Walsh-Hadamard transform of n = 2^k floats (butterfly order above). */
void tq_fwht(float* x, int n);

/* Rotate one row in place, every block (signs from tq_rot_signs). */
void tq_rot_forward_row(float* x, int64_t cols, int g, const float* signs);
/* Inverse of tq_rot_forward_row. */
void tq_rot_inverse_row(float* x, int64_t cols, int g, const float* signs);

#endif
