/* codec_internal.h — helpers shared by the codec files (not a public interface): dense bit packing of
 * b-bit codes and base-3 packing of trits, exactly as docs/CODECS.md describes.
 *
 * Bit packing (every b in 1..8, 3 bits included, no slot padding): within one row, code i occupies
 * bits [i*b, (i+1)*b) of the row's bit stream, least significant bit first; stream bit k is bit (k % 8)
 * of byte k / 8. A row holds ceil(cols*b/8) bytes; unused high bits of the last byte are 0. */
#ifndef TQ_CODEC_INTERNAL_H
#define TQ_CODEC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

static inline void tq_pack_bits(uint8_t* dst, const uint8_t* codes, int64_t n, int b)
{
    if (b == 8) {
        for (int64_t i = 0; i < n; i++) dst[i] = codes[i];
        return;
    }
    uint32_t acc = 0;
    int nacc = 0;
    for (int64_t i = 0; i < n; i++) {
        acc |= (uint32_t)codes[i] << nacc;
        nacc += b;
        while (nacc >= 8) {
            *dst++ = (uint8_t)acc;
            acc >>= 8;
            nacc -= 8;
        }
    }
    if (nacc > 0) *dst = (uint8_t)acc;
}

static inline void tq_unpack_bits(uint8_t* codes, const uint8_t* src, int64_t n, int b)
{
    if (b == 8) {
        for (int64_t i = 0; i < n; i++) codes[i] = src[i];
        return;
    }
    if (b == 4) {
        for (int64_t i = 0; i < n; i++) codes[i] = (uint8_t)((src[i >> 1] >> ((i & 1) * 4)) & 15u);
        return;
    }
    if (b == 1) {
        for (int64_t i = 0; i < n; i++) codes[i] = (uint8_t)((src[i >> 3] >> (i & 7)) & 1u);
        return;
    }
    const uint32_t mask = (1u << b) - 1u;
    uint32_t acc = 0;
    int nacc = 0;
    for (int64_t i = 0; i < n; i++) {
        if (nacc < b) {
            acc |= (uint32_t)(*src++) << nacc;
            nacc += 8;
        }
        codes[i] = (uint8_t)(acc & mask);
        acc >>= b;
        nacc -= b;
    }
}

/* Trits: byte k of a row = t[5k] + 3 t[5k+1] + 9 t[5k+2] + 27 t[5k+3] + 81 t[5k+4], t = q + 1 in {0,1,2};
 * digits past the row end are 0. A row holds ceil(cols/5) bytes. */
static inline void tq_pack_trits(uint8_t* dst, const int8_t* q, int64_t n)
{
    for (int64_t i = 0; i < n; i += 5) {
        unsigned v = 0, p = 1;
        for (int k = 0; k < 5 && i + k < n; k++, p *= 3) v += (unsigned)(q[i + k] + 1) * p;
        dst[i / 5] = (uint8_t)v;
    }
}

static inline void tq_unpack_trits(int8_t* q, const uint8_t* src, int64_t n)
{
    for (int64_t i = 0; i < n; i += 5) {
        unsigned v = src[i / 5];
        for (int k = 0; k < 5 && i + k < n; k++) {
            q[i + k] = (int8_t)((int)(v % 3) - 1);
            v /= 3;
        }
    }
}

#endif
