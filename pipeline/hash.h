/* hash.h — checksums. XXH3-64 for per-tensor / per-unit checksums (fast enough to keep up with page
 * cache and NVMe) and SHA-256 for whole published files (SHA256SUMS, provenance). Thin wrappers over
 * libxxhash and OpenSSL so call sites do not depend on either API. */
#ifndef TQ_HASH_H
#define TQ_HASH_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

uint64_t tq_xxh64(const void* data, size_t len, uint64_t seed); /* XXH3-64 with seed */

typedef struct tq_xxh_stream tq_xxh_stream;
tq_xxh_stream* tq_xxh_create(void);
void tq_xxh_update(tq_xxh_stream* s, const void* data, size_t len);
void tq_xxh_reset(tq_xxh_stream* s); /* start a new XXH3-64 (seed 0) on the same state */
uint64_t tq_xxh_digest(const tq_xxh_stream* s);
void tq_xxh_free(tq_xxh_stream** ps);

/* 16 lowercase hex chars + NUL */
void tq_xxh_hex(uint64_t h, char out[17]);

/* SHA-256 of a whole file (streamed); hex is 64 chars + NUL. */
tq_status tq_sha256_file(const char* path, char hex[65]);
void tq_sha256_buf(const void* data, size_t len, char hex[65]);

#endif
