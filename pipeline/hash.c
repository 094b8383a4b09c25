/* hash.c — checksums (see hash.h): XXH3-64 (libxxhash) for tensors and work units, SHA-256 (OpenSSL
 * EVP) for whole published files. Thin wrappers so no other file includes xxhash.h or openssl/. */
#include "hash.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <xxhash.h>

/* (rt) libxxhash built with DISPATCH=1 (Debian/Ubuntu x86-64) exports XXH3 entry points that pick
 * AVX2/AVX-512 at run time: same hashes, ~1.5x faster than the SSE2 baseline the plain entry points
 * use. Declared weak, so a libxxhash without them still links and the plain functions are used. */
#if defined(__x86_64__) && defined(__GNUC__)
extern XXH64_hash_t XXH3_64bits_withSeed_dispatch(const void* input, size_t len, XXH64_hash_t seed)
    __attribute__((weak));
extern XXH_errorcode XXH3_64bits_update_dispatch(XXH3_state_t* state, const void* input, size_t len)
    __attribute__((weak));
#define TQ_XXH3_SEED(d, n, s)                                                                       \
    (XXH3_64bits_withSeed_dispatch ? XXH3_64bits_withSeed_dispatch((d), (n), (s)) : XXH3_64bits_withSeed((d), (n), (s)))
#define TQ_XXH3_UPDATE(st, d, n)                                                                    \
    (XXH3_64bits_update_dispatch ? XXH3_64bits_update_dispatch((st), (d), (n)) : XXH3_64bits_update((st), (d), (n)))
#else
#define TQ_XXH3_SEED(d, n, s) XXH3_64bits_withSeed((d), (n), (s))
#define TQ_XXH3_UPDATE(st, d, n) XXH3_64bits_update((st), (d), (n))
#endif

#include "fileio.h"

struct tq_xxh_stream {
    XXH3_state_t* st;
};

uint64_t tq_xxh64(const void* data, size_t len, uint64_t seed)
{
    return (uint64_t)TQ_XXH3_SEED(data, len, (XXH64_hash_t)seed);
}

tq_xxh_stream* tq_xxh_create(void)
{
    tq_xxh_stream* s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->st = XXH3_createState();
    if (!s->st || XXH3_64bits_reset(s->st) != XXH_OK) {
        if (s->st) XXH3_freeState(s->st);
        free(s);
        return NULL;
    }
    return s;
}

void tq_xxh_update(tq_xxh_stream* s, const void* data, size_t len)
{
    if (s && len) TQ_XXH3_UPDATE(s->st, data, len);
}

void tq_xxh_reset(tq_xxh_stream* s)
{
    if (s) (void)XXH3_64bits_reset(s->st);
}

uint64_t tq_xxh_digest(const tq_xxh_stream* s) { return s ? (uint64_t)XXH3_64bits_digest(s->st) : 0; }

void tq_xxh_free(tq_xxh_stream** ps)
{
    if (!ps || !*ps) return;
    XXH3_freeState((*ps)->st);
    free(*ps);
    *ps = NULL;
}

void tq_xxh_hex(uint64_t h, char out[17]) { snprintf(out, 17, "%016llx", (unsigned long long)h); }

static void tq_hex(const unsigned char* d, unsigned n, char* out)
{
    static const char digits[] = "0123456789abcdef";
    for (unsigned i = 0; i < n; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[2 * n] = '\0';
}

void tq_sha256_buf(const void* data, size_t len, char hex[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    hex[0] = '\0';
    if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) == 1) tq_hex(md, mdlen, hex);
}

tq_status tq_sha256_file(const char* path, char hex[65])
{
    hex[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return tq_errno_status(errno, "opening", path);
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    const size_t cap = (size_t)8 << 20;
    unsigned char* buf = malloc(cap);
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    tq_status rc = TQ_OK;
    TQ_GOTO_FAIL(!buf || !ctx, TQ_ERR_NOMEM, out, "no memory to hash %s", path);
    TQ_GOTO_FAIL(EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1, TQ_ERR_IO, out, "SHA-256 init failed for %s", path);
    for (;;) {
        ssize_t r = read(fd, buf, cap);
        if (r < 0) {
            if (errno == EINTR) continue;
            rc = tq_errno_status(errno, "reading", path);
            goto out;
        }
        if (r == 0) break;
        TQ_GOTO_FAIL(EVP_DigestUpdate(ctx, buf, (size_t)r) != 1, TQ_ERR_IO, out, "SHA-256 update failed for %s", path);
    }
    {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned mdlen = 0;
        TQ_GOTO_FAIL(EVP_DigestFinal_ex(ctx, md, &mdlen) != 1, TQ_ERR_IO, out, "SHA-256 final failed for %s", path);
        tq_hex(md, mdlen, hex);
    }
out:
    EVP_MD_CTX_free(ctx);
    free(buf);
    close(fd);
    return rc;
}
