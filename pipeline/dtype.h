/* dtype.h — element types of checkpoint tensors and the scalar conversions every module shares
 * (bf16/fp16 <-> fp32, round-to-nearest-even). Header-only so kernels/ can use it without the runtime. */
#ifndef TQ_DTYPE_H
#define TQ_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum { TQ_DTYPE_INVALID = 0, TQ_F32 = 1, TQ_F16 = 2, TQ_BF16 = 3 } tq_dtype;

static inline size_t tq_dtype_size(tq_dtype t)
{
    return t == TQ_F32 ? 4 : (t == TQ_F16 || t == TQ_BF16) ? 2 : 0;
}

/* Safetensors spelling: "F32", "F16", "BF16". */
static inline const char* tq_dtype_name(tq_dtype t)
{
    return t == TQ_F32 ? "F32" : t == TQ_F16 ? "F16" : t == TQ_BF16 ? "BF16" : "INVALID";
}

static inline tq_dtype tq_dtype_parse(const char* s)
{
    if (!s) return TQ_DTYPE_INVALID;
    if (!strcmp(s, "F32")) return TQ_F32;
    if (!strcmp(s, "F16")) return TQ_F16;
    if (!strcmp(s, "BF16")) return TQ_BF16;
    return TQ_DTYPE_INVALID;
}

static inline float tq_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t tq_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                                          /* round to nearest even */
    return (uint16_t)(u >> 16);
}

static inline float tq_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: normalize */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 0x400u));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t tq_f32_to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    if (a >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (a > 0x7f800000u ? 0x200u : 0)); /* inf/nan */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* overflow -> inf */
    if (a < 0x38800000u) { /* subnormal or zero in f16 */
        if (a < 0x33000000u) return (uint16_t)sign;
        uint32_t e = a >> 23;
        uint32_t m = (a & 0x7fffffu) | 0x800000u;
        /* exact RNE: value = m * 2^(e-150); the f16 subnormal unit is 2^-24, so q = m >> (126 - e) */
        uint32_t sh = 126 - e;     /* number of bits to drop, in [14, 24] */
        uint32_t q = m >> sh;
        uint32_t rem = m & ((1u << sh) - 1u);
        uint32_t half = 1u << (sh - 1);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t e = (a >> 23) - 127 + 15;
    uint32_t m = a & 0x7fffffu;
    uint32_t h = (e << 10) | (m >> 13);
    uint32_t rem = m & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++; /* carries into exponent correctly */
    return (uint16_t)(sign | h);
}

/* Convert n elements of src (dtype t) to fp32. */
static inline void tq_convert_to_f32(float* dst, const void* src, tq_dtype t, size_t n)
{
    if (t == TQ_F32) {
        memcpy(dst, src, n * 4);
    } else if (t == TQ_BF16) {
        const uint16_t* s = (const uint16_t*)src;
        for (size_t i = 0; i < n; i++) dst[i] = tq_bf16_to_f32(s[i]);
    } else if (t == TQ_F16) {
        const uint16_t* s = (const uint16_t*)src;
        for (size_t i = 0; i < n; i++) dst[i] = tq_f16_to_f32(s[i]);
    }
}

#endif
