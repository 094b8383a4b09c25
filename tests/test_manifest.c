/* test_manifest.c — the run manifest (pipeline/manifest.h):
 *  1. round trip: units.tsv, journals of two ranks and two attempts, 'B' records, compaction, lookup;
 *  2. torn journal tails: the journal cut at every byte offset loads, counting only complete lines;
 *  3. fuzz-style: thousands of deterministic mutations (bit flips, truncations, insertions, garbage
 *     lines) of each file must load cleanly (TQ_OK or a clean error), never crash;
 *  4. scale: 40,000 units (the Qwen3.5-122B-A10B inventory): group-committed update time per unit,
 *     fdatasync-per-unit time (batch of 1, on 200 units), compaction and resume-scan (load) time;
 *  5. batch commits (tq_journal_put_batch): records back to back, done together, none on ENOSPC;
 *     update time per unit at 40,000 units in batches of 2,000.
 * LLVMFuzzerTestOneInput (build with clang -fsanitize=fuzzer -DTQ_FUZZING) feeds arbitrary bytes as a
 * journal to the loader. Plain C otherwise; returns EXIT_SUCCESS/EXIT_FAILURE. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "fault.h" /* defines: tq_fault_begin (the enospc fault) */
#include "fileio.h"
#include "manifest.h"
#include "stage.h" /* defines: tq_rmtree */

#include "tq_check.h"

static double now(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec * 1e-6;
}

#define TQ_RAND_SEED 0x9e3779b97f4a7c15ull
#include "tq_rand.h" /* defines: tq_rng, tq_rand_next */

static void make_units(const char* dir, int64_t n)
{
    char** keys = malloc((size_t)n * sizeof(char*));
    uint64_t* bytes = malloc((size_t)n * sizeof(uint64_t));
    for (int64_t i = 0; i < n; i++) {
        keys[i] = malloc(96);
        snprintf(keys[i], 96, "model.layers.%" PRId64 ".mlp.experts.%" PRId64 ".up_proj.weight@0+16", i / 768, i % 768);
        bytes[i] = 1000 + (uint64_t)i;
    }
    tq_status rc = tq_units_write(dir, n, (const char* const*)keys, bytes);
    CHECK(rc == TQ_OK, "units write: %s", tq_last_error());
    for (int64_t i = 0; i < n; i++) free(keys[i]);
    free(keys);
    free(bytes);
}

static int write_bytes(const char* path, const void* d, size_t n)
{
    unlink(path); /* a fresh file: ext4 flushes a truncated-and-rewritten file on close (auto_da_alloc) */
    FILE* f = fopen(path, "wb");
    if (!f) return -1;
    fwrite(d, 1, n, f);
    fclose(f);
    return 0;
}

static char g_dir[256];

/* ---- fuzz entry: arbitrary bytes as a journal (after a valid units.tsv) ------------------------- */
int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    if (!g_dir[0]) {
        snprintf(g_dir, sizeof g_dir, "/tmp/tq_manifest_fuzz.%d", (int)getpid());
        make_units(g_dir, 64);
        char jd[300];
        snprintf(jd, sizeof jd, "%s/journal", g_dir);
        tq_mkdirs(jd);
    }
    char p[400];
    snprintf(p, sizeof p, "%s/journal/a0001.r0000.jnl", g_dir);
    write_bytes(p, data, size);
    tq_manifest* m = NULL;
    tq_status rc = tq_manifest_load(g_dir, &m);
    if (rc == TQ_OK) {
        if (m->n_done > m->n) abort();
        for (int64_t i = 0; i < m->n; i++)
            if (m->st[i].done && m->st[i].seg[0] == '\0') abort();
    }
    tq_manifest_free(&m);
    return 0;
}

#ifndef TQ_FUZZING
static void mutate_and_load(const char* dir, const char* file, const char* orig, size_t len, int iters)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    char* buf = malloc(len + 64);
    int ok = 0, errs = 0;
    for (int it = 0; it < iters; it++) {
        size_t n = len;
        memcpy(buf, orig, len);
        int kind = (int)(tq_rand_next() % 5);
        if (kind == 0 && n) buf[tq_rand_next() % n] ^= (char)(1u << (tq_rand_next() % 8)); /* bit flip */
        else if (kind == 1 && n) n = (size_t)(tq_rand_next() % n);                  /* truncate */
        else if (kind == 2 && n) buf[tq_rand_next() % n] = (char)(tq_rand_next() & 0xff);    /* random byte */
        else if (kind == 3 && n) {                                          /* duplicate a chunk */
            size_t at = tq_rand_next() % n, k = 1 + tq_rand_next() % 40;
            if (at + k > n) k = n - at;
            memmove(buf + at + k, buf + at, n - at);
            n += k;
        } else {
            buf[tq_rand_next() % (n ? n : 1)] = (char)"\t\n 0123456789abcdefDB-"[tq_rand_next() % 22];
        }
        write_bytes(path, buf, n);
        tq_manifest* m = NULL;
        tq_status rc = tq_manifest_load(dir, &m);
        if (rc == TQ_OK) {
            ok++;
            CHECK(m->n_done <= m->n, "n_done %" PRId64 " > n %" PRId64, m->n_done, m->n);
        } else {
            errs++;
            CHECK(rc == TQ_ERR_FORMAT || rc == TQ_ERR_NOTFOUND || rc == TQ_ERR_CORRUPT || rc == TQ_ERR_NOMEM,
                  "unexpected status %d for a mutated %s: %s", rc, file, tq_last_error());
            CHECK(tq_last_error()[0] != '\0', "error without a message");
        }
        tq_manifest_free(&m);
    }
    write_bytes(path, orig, len);
    free(buf);
    printf("ok fuzz %s: %d mutations, %d loaded, %d clean errors\n", file, iters, ok, errs);
}

int main(void)
{
    char dir[256];
    snprintf(dir, sizeof dir, "/tmp/tq_test_manifest.%d", (int)getpid());
    tq_rmtree(dir);
    setenv("TQ_JOURNAL_INTERVAL", "1000", 1);

    /* 1. round trip */
    {
        make_units(dir, 100);
        tq_journal j0, j1;
        tq_status rc = tq_journal_open(&j0, dir, 1, 0, 1);
        CHECK(rc == TQ_OK, "journal open: %s", tq_last_error());
        rc = tq_journal_open(&j1, dir, 1, 1, 1);
        CHECK(rc == TQ_OK, "journal open: %s", tq_last_error());
        for (int i = 0; i < 40; i++) {
            char data[64];
            int n = snprintf(data, sizeof data, "unit-%d-output", i);
            rc = tq_journal_put(i % 2 ? &j1 : &j0, i, data, (size_t)n, NULL, (uint64_t)i);
            CHECK(rc == TQ_OK, "put %d: %s", i, tq_last_error());
        }
        CHECK(tq_journal_close(&j0) == TQ_OK && tq_journal_close(&j1) == TQ_OK, "close");
        tq_manifest* m = NULL;
        rc = tq_manifest_load(dir, &m);
        CHECK(rc == TQ_OK, "load: %s", tq_last_error());
        CHECK(m && m->n == 100 && m->n_done == 40, "n %" PRId64 " done %" PRId64, m ? m->n : -1, m ? m->n_done : -1);
        char buf[64];
        CHECK(tq_manifest_read_unit(m, 7, buf, sizeof buf) == TQ_OK && !memcmp(buf, "unit-7-output", 13), "read unit 7");
        CHECK(m->st[7].aux == 7, "aux");
        CHECK(tq_manifest_find(m, m->keys[55]) == 55 && tq_manifest_find(m, "nope@0+1") == -1, "find");
        /* attempt 2: unit 3 found bad, redone with other bytes; compaction folds both attempts */
        CHECK(tq_manifest_next_attempt(dir) == 2, "next attempt %d", tq_manifest_next_attempt(dir));
        tq_journal j2;
        tq_journal_open(&j2, dir, 2, 0, 1);
        tq_journal_bad(&j2, 3);
        tq_journal_put(&j2, 3, "redone", 6, NULL, 0);
        tq_journal_put(&j2, 50, "fifty", 5, NULL, 0);
        tq_journal_close(&j2);
        tq_manifest_free(&m);
        rc = tq_manifest_load(dir, &m);
        CHECK(rc == TQ_OK && m->n_done == 41 && m->st[3].attempt == 2, "after attempt 2: done %" PRId64, m ? m->n_done : -1);
        CHECK(tq_manifest_read_unit(m, 3, buf, sizeof buf) == TQ_OK && !memcmp(buf, "redone", 6), "redone unit");
        CHECK(tq_manifest_compact(m) == TQ_OK, "compact: %s", tq_last_error());
        tq_manifest_free(&m);
        char jp[400];
        snprintf(jp, sizeof jp, "%s/journal/a0001.r0000.jnl", dir);
        CHECK(!tq_file_exists(jp), "folded journal still there");
        rc = tq_manifest_load(dir, &m);
        CHECK(rc == TQ_OK && m->n_done == 41 && m->through_attempt == 2, "after compaction");
        CHECK(tq_manifest_read_unit(m, 50, buf, sizeof buf) == TQ_OK && !memcmp(buf, "fifty", 5), "unit 50");
        /* corrupt a stored output: detected */
        char sp[400];
        snprintf(sp, sizeof sp, "%s/seg/%s", dir, m->st[50].seg);
        FILE* f = fopen(sp, "r+b");
        fseek(f, (long)m->st[50].off + 2, SEEK_SET);
        fputc('X', f);
        fclose(f);
        rc = tq_manifest_read_unit(m, 50, buf, sizeof buf);
        CHECK(rc == TQ_ERR_CORRUPT && strstr(tq_last_error(), "checksum"), "corruption not detected: %d %s", rc, tq_last_error());
        tq_manifest_free(&m);
        printf("ok round trip, bad records, compaction, corruption detected\n");
    }

    /* 2. torn tails: cut the journal at every offset */
    {
        tq_rmtree(dir);
        make_units(dir, 100);
        tq_journal j;
        tq_journal_open(&j, dir, 1, 0, 0);
        for (int i = 0; i < 10; i++) {
            uint64_t x = (uint64_t)i;
            tq_journal_put(&j, i, NULL, 0, &x, 0);
        }
        tq_journal_close(&j);
        char jp[400];
        snprintf(jp, sizeof jp, "%s/journal/a0001.r0000.jnl", dir);
        char* text = NULL;
        size_t len = 0;
        tq_read_file(jp, &text, &len);
        int bad = 0;
        for (size_t cut = 0; cut <= len; cut++) {
            write_bytes(jp, text, cut);
            int lines = 0;
            for (size_t k = 0; k < cut; k++) lines += text[k] == '\n';
            tq_manifest* m = NULL;
            if (tq_manifest_load(dir, &m) != TQ_OK || m->n_done != lines) bad++;
            tq_manifest_free(&m);
        }
        CHECK(bad == 0, "%d cut offsets loaded a wrong count", bad);
        printf("ok torn journal: %zu cut offsets, complete lines only\n", len + 1);

        /* 3. fuzz every file */
        write_bytes(jp, text, len);
        mutate_and_load(dir, "journal/a0001.r0000.jnl", text, len, 3000);
        free(text);
        tq_manifest* m = NULL;
        tq_manifest_load(dir, &m);
        tq_manifest_compact(m);
        tq_manifest_free(&m);
        char mp[400], up[400];
        snprintf(mp, sizeof mp, "%s/manifest.tsv", dir);
        snprintf(up, sizeof up, "%s/units.tsv", dir);
        char *mt = NULL, *ut = NULL;
        size_t ml = 0, ul = 0;
        tq_read_file(mp, &mt, &ml);
        tq_read_file(up, &ut, &ul);
        mutate_and_load(dir, "manifest.tsv", mt, ml, 3000);
        mutate_and_load(dir, "units.tsv", ut, ul, 3000);
        free(mt);
        free(ut);
        for (int it = 0; it < 300; it++) { /* the fuzz entry with random bytes */
            uint8_t b[256];
            size_t n = tq_rand_next() % sizeof b;
            for (size_t k = 0; k < n; k++) b[k] = (uint8_t)tq_rand_next();
            LLVMFuzzerTestOneInput(b, n);
        }
        tq_rmtree(g_dir);
    }

    /* 4. scale: 40,000 units */
    {
        const int64_t N = 40000;
        tq_rmtree(dir);
        make_units(dir, N);
        setenv("TQ_JOURNAL_INTERVAL", "1.0", 1);
        unsetenv("TQ_JOURNAL_BATCH");
        uint8_t payload[512];
        memset(payload, 0x5a, sizeof payload);
        tq_journal j;
        double t0 = now();
        tq_journal_open(&j, dir, 1, 0, 1);
        for (int64_t i = 0; i < N - 1000; i++) tq_journal_put(&j, i, payload, sizeof payload, NULL, 0);
        CHECK(tq_journal_close(&j) == TQ_OK, "close");
        double t_group = (now() - t0) / (double)(N - 1000);
        setenv("TQ_JOURNAL_BATCH", "1", 1);
        t0 = now();
        tq_journal_open(&j, dir, 1, 1, 1);
        for (int64_t i = N - 1000; i < N - 800; i++) tq_journal_put(&j, i, payload, sizeof payload, NULL, 0);
        tq_journal_close(&j);
        double t_sync = (now() - t0) / 200.0;
        unsetenv("TQ_JOURNAL_BATCH");
        t0 = now();
        tq_manifest* m = NULL;
        tq_status rc = tq_manifest_load(dir, &m);
        double t_scan_j = now() - t0;
        CHECK(rc == TQ_OK && m->n_done == N - 800, "40k load: %s, done %" PRId64, tq_last_error(), m ? m->n_done : -1);
        t0 = now();
        if (m) tq_manifest_compact(m);
        double t_compact = now() - t0;
        tq_manifest_free(&m);
        t0 = now();
        rc = tq_manifest_load(dir, &m);
        double t_scan_m = now() - t0;
        CHECK(rc == TQ_OK && m->n_done == N - 800, "40k compacted load");
        tq_manifest_free(&m);
        printf("ok manifest at %" PRId64 " units: update %.1f us/unit (group commit), %.3f ms/unit (fdatasync per unit); "
               "resume scan %.1f ms from journals, %.1f ms from the compacted manifest; compaction %.1f ms\n",
               N, t_group * 1e6, t_sync * 1e3, t_scan_j * 1e3, t_scan_m * 1e3, t_compact * 1e3);
        CHECK(t_scan_m < 5.0, "resume scan too slow: %.2f s", t_scan_m);
    }
    /* 5. batch commit (tq_journal_put_batch, what the quantize stage's batches use): records back to
     *    back in one write, all done together; an ENOSPC leaves none of them done and the segment clean;
     *    update cost per unit at 40,000 units in batches of 2,000 */
    {
        tq_rmtree(dir);
        make_units(dir, 100);
        char data[64];
        size_t lens[3] = {5, 0, 17};
        int64_t idx[3] = {10, 11, 12};
        uint64_t aux[3] = {1, 2, 3};
        memcpy(data, "aaaaa", 5);
        memcpy(data + 5, "bbbbbbbbbbbbbbbbb", 17);
        tq_journal j;
        CHECK(tq_journal_open(&j, dir, 1, 0, 1) == TQ_OK, "open: %s", tq_last_error());
        CHECK(tq_journal_put(&j, 3, "three", 5, NULL, 0) == TQ_OK, "put");
        CHECK(tq_journal_put_batch(&j, 3, idx, data, lens, NULL, aux) == TQ_OK, "put_batch: %s", tq_last_error());
        CHECK(j.batch_units == 0 && j.committed == 4, "the batch commits at once (open %" PRId64 ", committed %" PRId64 ")",
              j.batch_units, j.committed);
        /* a failing write: nothing recorded, segment truncated back */
        setenv("TQ_FAULT", "enospc:mtest:0", 1);
        tq_fault_begin("mtest", 0);
        int64_t idx2[2] = {20, 21};
        size_t lens2[2] = {4, 4};
        uint64_t seg_before = j.seg_end;
        tq_status rc = tq_journal_put_batch(&j, 2, idx2, "xxxxyyyy", lens2, NULL, NULL);
        CHECK(rc == TQ_ERR_NOSPACE, "ENOSPC expected, got %d", rc);
        CHECK(j.seg_end == seg_before && j.batch_units == 0, "segment end %" PRIu64 " (was %" PRIu64 ")", j.seg_end, seg_before);
        unsetenv("TQ_FAULT");
        tq_fault_begin("mtest", 0);
        CHECK(tq_journal_close(&j) == TQ_OK, "close");
        tq_manifest* m = NULL;
        rc = tq_manifest_load(dir, &m);
        CHECK(rc == TQ_OK && m->n_done == 4, "batch load: done %" PRId64, m ? m->n_done : -1);
        char buf[64];
        if (m) {
            CHECK(tq_manifest_read_unit(m, 12, buf, sizeof buf) == TQ_OK && !memcmp(buf, "bbbbbbbbbbbbbbbbb", 17) &&
                      m->st[12].aux == 3 && m->st[12].off == 10,
                  "unit 12 off %" PRIu64, m->st[12].off);
            CHECK(m->st[11].done && m->st[11].len == 0 && !strcmp(m->st[11].seg, "-"), "empty unit 11");
            CHECK(!m->st[20].done && !m->st[21].done, "units of the failed batch are not done");
        }
        tq_manifest_free(&m);
        /* cost at 40,000 units, batches of 2,000 */
        const int64_t N = 40000, BN = 2000;
        tq_rmtree(dir);
        make_units(dir, N);
        uint8_t* payload = calloc((size_t)BN, 512);
        size_t* bl = malloc((size_t)BN * sizeof *bl);
        int64_t* bi = malloc((size_t)BN * sizeof *bi);
        for (int64_t i = 0; i < BN; i++) bl[i] = 512;
        double t0 = now();
        tq_journal_open(&j, dir, 1, 0, 1);
        for (int64_t b = 0; b < N; b += BN) {
            for (int64_t i = 0; i < BN; i++) bi[i] = b + i;
            CHECK(tq_journal_put_batch(&j, BN, bi, payload, bl, NULL, NULL) == TQ_OK, "batch %" PRId64, b);
        }
        CHECK(tq_journal_close(&j) == TQ_OK, "close");
        double t_batch = (now() - t0) / (double)N;
        rc = tq_manifest_load(dir, &m);
        CHECK(rc == TQ_OK && m->n_done == N, "40k batched load: done %" PRId64, m ? m->n_done : -1);
        tq_manifest_free(&m);
        printf("ok manifest at %" PRId64 " units, batch commits of %" PRId64 " units (512 B each): update %.2f us/unit\n", N, BN,
               t_batch * 1e6);
        free(payload);
        free(bl);
        free(bi);
    }
    tq_rmtree(dir);
    printf("%s (%d failures)\n", n_failed ? "FAILED" : "ok", n_failed);
    return n_failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
#endif
