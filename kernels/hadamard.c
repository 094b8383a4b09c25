/* hadamard.c — randomized Hadamard rotation over column blocks (CPU reference). See hadamard.h for the
 * block decomposition, the sign rule and the exact float order the CUDA version mirrors. */
#include "hadamard.h"

#include <math.h>
#include <string.h>

int64_t tq_rot_nblocks(int64_t cols, int g)
{
    int64_t tail = cols % g;
    return cols / g + __builtin_popcountll((unsigned long long)tail);
}

void tq_rot_block(int64_t cols, int g, int64_t k, int64_t* start, int* size)
{
    int64_t nfull = cols / g;
    if (k < nfull) {
        *start = k * g;
        *size = g;
        return;
    }
    int64_t tail = cols % g, s = nfull * g;
    k -= nfull;
    for (int bit = 62; bit >= 0; bit--) {
        int64_t b = (int64_t)1 << bit;
        if (!(tail & b)) continue;
        if (k == 0) {
            *start = s;
            *size = (int)b;
            return;
        }
        k--;
        s += b;
    }
    *start = cols;
    *size = 0;
}

int tq_rot_block_sizes(int64_t cols, int g, int* sizes)
{
    int n = 0;
    if (cols >= g) sizes[n++] = g;
    int64_t tail = cols % g;
    for (int bit = 30; bit >= 0; bit--)
        if (tail & ((int64_t)1 << bit)) sizes[n++] = 1 << bit;
    return n;
}

void tq_rot_signs(uint64_t seed, int64_t cols, float* signs)
{
    for (int64_t j = 0; j < cols; j++) signs[j] = tq_rot_sign(seed, j);
}

/* 4-wide vectors (GNU vector extension, plain SSE2 on x86-64): the same a+b / a-b per element as the
 * scalar loops, so results are bit-identical; only the loop structure differs. */
typedef float tq_v4 __attribute__((vector_size(16)));

static inline tq_v4 tq_v4_load(const float* p)
{
    tq_v4 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void tq_v4_store(float* p, tq_v4 v)
{
    memcpy(p, &v, sizeof v);
}

void tq_fwht(float* x, int n)
{
    if (n < 4) {
        for (int h = 1; h < n; h <<= 1)
            for (int i = 0; i < n; i += h << 1)
                for (int j = i; j < i + h; j++) {
                    float a = x[j], b = x[j + h];
                    x[j] = a + b;
                    x[j + h] = a - b;
                }
        return;
    }
    /* stages h = 1 and h = 2 on each quad */
    for (int i = 0; i < n; i += 4) {
        float a0 = x[i] + x[i + 1], a1 = x[i] - x[i + 1];
        float a2 = x[i + 2] + x[i + 3], a3 = x[i + 2] - x[i + 3];
        x[i] = a0 + a2;
        x[i + 1] = a1 + a3;
        x[i + 2] = a0 - a2;
        x[i + 3] = a1 - a3;
    }
    /* stages h >= 4, four lanes at a time */
    for (int h = 4; h < n; h <<= 1)
        for (int i = 0; i < n; i += h << 1)
            for (int j = i; j < i + h; j += 4) {
                tq_v4 a = tq_v4_load(x + j), b = tq_v4_load(x + j + h);
                tq_v4_store(x + j, a + b);
                tq_v4_store(x + j + h, a - b);
            }
}

static float tq_rot_scale(int d)
{
    return (float)(1.0 / sqrt((double)d));
}

/* The orthonormal Walsh-Hadamard transform of each block of a row (its own inverse). */
static void tq_rot_blocks(float* x, int64_t cols, int g)
{
    int64_t nb = tq_rot_nblocks(cols, g);
    for (int64_t k = 0; k < nb; k++) {
        int64_t s;
        int d;
        tq_rot_block(cols, g, k, &s, &d);
        tq_fwht(x + s, d);
        float sc = tq_rot_scale(d);
        for (int i = 0; i < d; i++) x[s + i] *= sc;
    }
}

void tq_rot_forward_row(float* x, int64_t cols, int g, const float* signs)
{
    for (int64_t j = 0; j < cols; j++) x[j] *= signs[j];
    tq_rot_blocks(x, cols, g);
}

void tq_rot_inverse_row(float* x, int64_t cols, int g, const float* signs)
{
    tq_rot_blocks(x, cols, g);
    for (int64_t j = 0; j < cols; j++) x[j] *= signs[j];
}
