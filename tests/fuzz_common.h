/* fuzz_common.h — the replay driver shared by the fuzz targets (tests/fuzz_*.c).
 *
 * Each target defines LLVMFuzzerTestOneInput(). Built normally (CTest), this header adds a main() that
 *   1. runs every file in $TQ_SOURCE_DIR/tests/golden/fuzz/<target>/ (seeds + regression inputs), then
 *   2. runs `n` deterministic random mutations (xorshift64, fixed seed) of the target's valid seed input:
 *      byte flips, interesting bytes, truncation, deletion, duplication, digit insertion; a target may
 *      pass a fixup() that repairs a length prefix half of the time so mutations reach deeper code.
 * A crash, or a failure without a clean error message, aborts the test (the target itself checks).
 * Built with -DTQ_FUZZING (libFuzzer supplies main), see the build line in each target. */
#ifndef TQ_FUZZ_COMMON_H
#define TQ_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "status.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

/* Abort unless rc is OK or a failure with a message (what every parser must guarantee). */
static inline void tq_fuzz_require_clean(tq_status rc)
{
    if (rc != TQ_OK && tq_last_error()[0] == '\0') {
        fprintf(stderr, "fuzz: status %d without an error message\n", (int)rc);
        abort();
    }
    if (rc == TQ_ERR_NOMEM || rc == TQ_ERR_ARG) {
        fprintf(stderr, "fuzz: unexpected status %d (%s): %s\n", (int)rc, tq_status_str(rc), tq_last_error());
        abort();
    }
    tq_clear_error();
}

#ifndef TQ_FUZZING
#include <dirent.h>

static uint64_t tq_fuzz_rng = 0x9e3779b97f4a7c15ull;
static uint64_t tq_fuzz_next(void)
{
    tq_fuzz_rng ^= tq_fuzz_rng << 13;
    tq_fuzz_rng ^= tq_fuzz_rng >> 7;
    tq_fuzz_rng ^= tq_fuzz_rng << 17;
    return tq_fuzz_rng;
}

typedef void (*tq_fuzz_fixup)(uint8_t* data, size_t len);

static int tq_fuzz_replay_dir(const char* dir)
{
    DIR* d = opendir(dir);
    if (!d) {
        fprintf(stderr, "fuzz: no corpus directory %s\n", dir);
        return -1;
    }
    int n = 0;
    struct dirent* e;
    char path[4600];
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE* f = fopen(path, "rb");
        if (!f) continue;
        uint8_t* buf = NULL;
        size_t len = 0, cap = 0;
        for (;;) {
            if (len == cap) {
                cap = cap ? 2 * cap : 4096;
                buf = realloc(buf, cap);
                if (!buf) abort();
            }
            size_t r = fread(buf + len, 1, cap - len, f);
            if (r == 0) break;
            len += r;
        }
        fclose(f);
        LLVMFuzzerTestOneInput(buf, len);
        free(buf);
        n++;
    }
    closedir(d);
    return n;
}

static void tq_fuzz_mutations(const uint8_t* seed, size_t seed_len, int n, tq_fuzz_fixup fix)
{
    static const uint8_t interesting[] = {0, 0xff, '"', '{', '}', '[', ']', ',', ':', '-', '9', '0', ' ', 0x7f, 0x80};
    size_t cap = seed_len * 2 + 64;
    uint8_t* buf = malloc(cap);
    if (!buf) abort();
    for (int it = 0; it < n; it++) {
        size_t len = seed_len;
        memcpy(buf, seed, len);
        int nmut = 1 + (int)(tq_fuzz_next() % 4);
        for (int k = 0; k < nmut && len > 0; k++) {
            size_t pos = (size_t)(tq_fuzz_next() % len);
            switch (tq_fuzz_next() % 7) {
            case 0: buf[pos] ^= (uint8_t)(1u << (tq_fuzz_next() % 8)); break;
            case 1: buf[pos] = interesting[tq_fuzz_next() % sizeof interesting]; break;
            case 2: len = pos; break; /* truncate */
            case 3: { /* delete a run */
                size_t m = 1 + (size_t)(tq_fuzz_next() % 8);
                if (pos + m > len) m = len - pos;
                memmove(buf + pos, buf + pos + m, len - pos - m);
                len -= m;
                break;
            }
            case 4: { /* duplicate a run */
                size_t m = 1 + (size_t)(tq_fuzz_next() % 16);
                if (pos + m > len) m = len - pos;
                if (len + m <= cap) {
                    memmove(buf + pos + m, buf + pos, len - pos);
                    len += m;
                }
                break;
            }
            case 5: { /* insert digits (big numbers) */
                size_t m = 1 + (size_t)(tq_fuzz_next() % 20);
                if (len + m <= cap) {
                    memmove(buf + pos + m, buf + pos, len - pos);
                    for (size_t q = 0; q < m; q++) buf[pos + q] = (uint8_t)('0' + tq_fuzz_next() % 10);
                    len += m;
                }
                break;
            }
            default: buf[pos] = (uint8_t)tq_fuzz_next(); break;
            }
        }
        if (fix && (tq_fuzz_next() & 1)) fix(buf, len);
        LLVMFuzzerTestOneInput(buf, len);
    }
    free(buf);
}

/* main body: replay corpus + n mutations of seed. */
static int tq_fuzz_main(const char* target, const uint8_t* seed, size_t seed_len, int n, tq_fuzz_fixup fix)
{
    const char* src = getenv("TQ_SOURCE_DIR");
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/tests/golden/fuzz/%s", src ? src : TQ_SOURCE_DIR, target);
    int files = tq_fuzz_replay_dir(dir);
    if (files < 0) return EXIT_FAILURE;
    LLVMFuzzerTestOneInput(seed, seed_len);
    tq_fuzz_mutations(seed, seed_len, n, fix);
    printf("ok: %s: %d corpus files and %d mutations ran cleanly\n", target, files, n);
    return EXIT_SUCCESS;
}
#endif

#endif
