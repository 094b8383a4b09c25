/* tq_rand.h — the deterministic random numbers the C tests share: xorshift64 (13, 7, 17) over one state,
 * tq_rng, which a test seeds by defining TQ_RAND_SEED before the include (or assigns at run time).
 * tq_rand_next: the next 64-bit state; tq_rand_unit: uniform in [0, 1) from its top 53 bits;
 * tq_rand_normal: standard normal (Box–Muller, cosine branch). Include once, in one .c file. */
#ifndef TQ_RAND_H
#define TQ_RAND_H

#include <math.h>
#include <stdint.h>

#ifndef TQ_RAND_SEED
#define TQ_RAND_SEED 88172645463325252ull
#endif

static uint64_t tq_rng = TQ_RAND_SEED;

static inline uint64_t tq_rand_next(void)
{
    tq_rng ^= tq_rng << 13;
    tq_rng ^= tq_rng >> 7;
    tq_rng ^= tq_rng << 17;
    return tq_rng;
}

static inline double tq_rand_unit(void)
{
    return (double)(tq_rand_next() >> 11) / 9007199254740992.0;
}

static inline double tq_rand_normal(void)
{
    double u = tq_rand_unit() + 1e-300, v = tq_rand_unit();
    return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}

#endif
