/* test_verify_units.c — pipeline/verify_units: NaN/Inf counting per dtype (bf16, f16, f32, signed,
 * quiet/signalling NaN, largest finite values not counted), unit checksums equal XXH3-64 of the exact
 * bytes written whatever the chunk size, row-slice units and the tensor checksum rule, the position of
 * the first NaN, a file truncated after opening (the affected units fail, the others still verify),
 * the vectorized NaN/Inf test at every position and length up to 300 at an odd address, the reader
 * thread (same results; a truncated file still fails only its unit), and the collective tq_verify_plan
 * (run under mpirun -np 2: rank 0 gets every unit, every rank the same totals). Writes its checkpoint with pipeline/st_writer.h into a temp directory. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt.h"
#include "dtype.h"
#include "hash.h"
#include "rt.h"
#include "shardplan.h"
#include "st_writer.h"
#include "verify_units.h"

static int g_failed, g_rank;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "[r%d] FAILED %s:%d: %s\n", g_rank, __FILE__, __LINE__, #cond);        \
            g_failed++;                                                                            \
        }                                                                                          \
    } while (0)

static void test_count_nonfinite(void)
{
    /* bf16: +inf, -inf, qNaN, sNaN, -NaN, max finite, 1.0, 0 */
    uint16_t b[] = {0x7f80, 0xff80, 0x7fc0, 0x7f81, 0xffc1, 0x7f7f, 0x3f80, 0x0000, 0xff7f};
    int64_t nan = -1, inf = -1;
    int64_t first = tq_count_nonfinite(b, TQ_BF16, 9, &nan, &inf);
    CHECK(nan == 3 && inf == 2 && first == 0);
    first = tq_count_nonfinite(b + 5, TQ_BF16, 4, &nan, &inf);
    CHECK(nan == 0 && inf == 0 && first == -1);
    /* f16: inf 0x7c00, -inf 0xfc00, NaN 0x7e00, 0x7c01; max finite 0x7bff */
    uint16_t h[] = {0x3c00, 0x7bff, 0xfbff, 0x7e00, 0x7c00, 0xfc00, 0x7c01, 0x0001};
    first = tq_count_nonfinite(h, TQ_F16, 8, &nan, &inf);
    CHECK(nan == 2 && inf == 2 && first == 3);
    /* f32 */
    float f[6] = {1.0f, -3.4e38f, 3.4e38f, INFINITY, -INFINITY, NAN};
    first = tq_count_nonfinite(f, TQ_F32, 6, &nan, &inf);
    CHECK(nan == 1 && inf == 2 && first == 3);
    /* long bf16 run (crosses the 65535-element inner block) with NaN near the end */
    size_t n = 200000;
    uint16_t* big = malloc(n * 2);
    for (size_t i = 0; i < n; i++) big[i] = tq_f32_to_bf16((float)(i % 977) * 0.01f - 3.0f);
    big[199990] = 0x7fc0;
    big[70000] = 0xff80;
    first = tq_count_nonfinite(big, TQ_BF16, n, &nan, &inf);
    CHECK(nan == 1 && inf == 1 && first == 70000);
    free(big);
}

/* The vectorized any-NaN/Inf test against a plain loop: every length up to 300 elements, one
 * NaN/Inf at every position (vector body, unrolled body, scalar tail), at an odd byte address
 * (safetensors does not promise aligned tensors), for each dtype; largest finite values never count. */
static void test_scan_positions(void)
{
    const size_t maxn = 300;
    unsigned char* raw = malloc(4 * maxn + 8);
    static const struct {
        tq_dtype dt;
        uint32_t finite_max, bad;
    } cases[] = {{TQ_BF16, 0xff7fu, 0xff80u}, {TQ_F16, 0xfbffu, 0x7c01u}, {TQ_F32, 0x7f7fffffu, 0xff800000u}};
    int wrong = 0;
    for (int ci = 0; ci < 3; ci++) {
        size_t es = tq_dtype_size(cases[ci].dt);
        unsigned char* p = raw + 1; /* odd address */
        for (size_t n = 1; n <= maxn; n++) {
            for (size_t i = 0; i < n; i++) memcpy(p + i * es, &cases[ci].finite_max, es);
            int64_t nan = -1, inf = -1;
            if (tq_count_nonfinite(p, cases[ci].dt, n, &nan, &inf) != -1 || nan || inf) wrong++;
            for (size_t pos = 0; pos < n; pos++) {
                memcpy(p + pos * es, &cases[ci].bad, es);
                int64_t first = tq_count_nonfinite(p, cases[ci].dt, n, &nan, &inf);
                if (first != (int64_t)pos || nan + inf != 1) wrong++;
                memcpy(p + pos * es, &cases[ci].finite_max, es);
            }
        }
    }
    CHECK(wrong == 0);
    free(raw);
}

/* tensors: a [37 x 50] bf16 with one NaN at (20, 7), a [9 x 11] f32 clean, a [300] f16 with 2 Inf,
 * a scalar f32. Returns the bytes of each (for independent checksums). */
typedef struct {
    const char* name;
    tq_dtype dt;
    int ndim;
    int64_t shape[2];
    unsigned char* data;
    size_t bytes;
} tensor_spec;

static void make_tensors(tensor_spec* t)
{
    tensor_spec s[4] = {
        {"a.weight", TQ_BF16, 2, {37, 50}, NULL, 0},
        {"b.weight", TQ_F32, 2, {9, 11}, NULL, 0},
        {"c.bias", TQ_F16, 1, {300, 0}, NULL, 0},
        {"d.scale", TQ_F32, 0, {0, 0}, NULL, 0},
    };
    for (int k = 0; k < 4; k++) {
        int64_t n = 1;
        for (int d = 0; d < s[k].ndim; d++) n *= s[k].shape[d];
        s[k].bytes = (size_t)n * tq_dtype_size(s[k].dt);
        s[k].data = malloc(s[k].bytes);
        for (int64_t i = 0; i < n; i++) {
            float v = (float)((i * 7919 + k * 13) % 1000) * 0.001f - 0.5f;
            if (s[k].dt == TQ_F32) memcpy(s[k].data + 4 * i, &v, 4);
            else {
                uint16_t w = s[k].dt == TQ_BF16 ? tq_f32_to_bf16(v) : tq_f32_to_f16(v);
                memcpy(s[k].data + 2 * i, &w, 2);
            }
        }
        t[k] = s[k];
    }
    uint16_t qnan = 0x7fc0, pinf = 0x7c00, ninf = 0xfc00;
    memcpy(t[0].data + 2 * (20 * 50 + 7), &qnan, 2);
    memcpy(t[2].data + 2 * 17, &pinf, 2);
    memcpy(t[2].data + 2 * 299, &ninf, 2);
}

static int write_ckpt(const char* dir, tensor_spec* t)
{
    tq_st_writer* w = NULL;
    if (tq_st_writer_create_dir(dir, 0, &w) != TQ_OK) return -1;
    for (int k = 0; k < 4; k++) tq_st_writer_add(w, t[k].name, t[k].dt, t[k].ndim, t[k].shape);
    int ok = tq_st_writer_begin(w) == TQ_OK;
    for (int k = 0; ok && k < 4; k++) ok = tq_st_writer_write(w, t[k].name, t[k].data, t[k].bytes) == TQ_OK;
    ok = ok && tq_st_writer_finish(w) == TQ_OK;
    if (!ok) fprintf(stderr, "writer: %s\n", tq_last_error());
    tq_st_writer_free(&w);
    return ok ? 0 : -1;
}

static void test_local(const char* dir, tensor_spec* t)
{
    tq_ckpt* c = NULL;
    CHECK(tq_ckpt_open(dir, &c) == TQ_OK);
    if (!c) return;
    /* whole-tensor units */
    tq_unitlist* u = NULL;
    CHECK(tq_units_from_ckpt(c, 0, 1, &u) == TQ_OK);
    CHECK(u->n_units == 4);
    size_t chunks[3] = {0, 100, 7}; /* default, several rows per chunk, less than one row */
    for (int ci = 0; ci < 6; ci++) { /* each chunk without and with the reader thread */
        tq_unit_check r[4];
        tq_verify_stats st;
        tq_verify_opts o = {.chunk_bytes = chunks[ci % 3], .reader_thread = ci >= 3};
        CHECK(tq_verify_units(c, u, NULL, 4, &o, r, &st) == TQ_OK);
        for (int k = 0; k < 4; k++) {
            CHECK(!strcmp(u->units[k].name, t[k].name));
            CHECK(r[k].status == TQ_OK);
            CHECK(r[k].bytes == t[k].bytes);
            CHECK(r[k].xxh == tq_xxh64(t[k].data, t[k].bytes, 0));
        }
        CHECK(r[0].nan == 1 && r[0].inf == 0 && r[0].first_bad == 20 * 50 + 7);
        CHECK(r[1].nan == 0 && r[1].inf == 0 && r[1].first_bad == -1);
        CHECK(r[2].nan == 0 && r[2].inf == 2 && r[2].first_bad == 17);
        CHECK(st.units == 4 && st.failed == 0 && st.nan == 1 && st.inf == 2);
        CHECK(st.bytes == t[0].bytes + t[1].bytes + t[2].bytes + t[3].bytes);
        CHECK(tq_verify_tensor_xxh(&r[0], 1) == r[0].xxh);
    }
    /* row-slice units: a.weight (100 bytes per row) in slices of at most 1000 bytes = 10 rows */
    tq_unitlist* us = NULL;
    CHECK(tq_units_from_ckpt(c, 1000, 1, &us) == TQ_OK);
    int64_t na = 0;
    for (int64_t i = 0; i < us->n_units; i++) na += !strcmp(us->units[i].name, "a.weight");
    CHECK(na == 4); /* 37 rows: 10 + 10 + 10 + 7 */
    tq_unit_check* rs = calloc((size_t)us->n_units, sizeof *rs);
    CHECK(tq_verify_units(c, us, NULL, us->n_units, NULL, rs, NULL) == TQ_OK);
    unsigned char le[32];
    for (int64_t i = 0; i < na; i++) {
        const tq_unit* un = &us->units[i];
        CHECK(rs[i].xxh == tq_xxh64(t[0].data + un->row0 * 100, (size_t)un->nrows * 100, 0));
        for (int b = 0; b < 8; b++) le[8 * i + b] = (unsigned char)(rs[i].xxh >> (8 * b));
    }
    CHECK(tq_verify_tensor_xxh(rs, na) == tq_xxh64(le, 32, 0));
    CHECK(rs[2].nan == 1 && rs[2].first_bad == 7); /* rows 20..29: NaN at row 20 col 7 */
    free(rs);

    /* a subset through idx, in any order */
    int64_t idx[2] = {3, 1};
    tq_unit_check r2[2];
    CHECK(tq_verify_units(c, u, idx, 2, NULL, r2, NULL) == TQ_OK);
    CHECK(r2[0].xxh == tq_xxh64(t[3].data, t[3].bytes, 0) && r2[1].xxh == tq_xxh64(t[1].data, t[1].bytes, 0));

    /* truncate the file after opening: tensors in the lost tail fail, the others still verify */
    char path[4096];
    snprintf(path, sizeof path, "%s", tq_ckpt_file_path(c, 0));
    const tq_tensor_info* ta = tq_ckpt_find(c, "a.weight");
    const tq_tensor_info* tb = tq_ckpt_find(c, "b.weight");
    const tq_tensor_info* tc = tq_ckpt_find(c, "c.bias");
    const tq_tensor_info* td = tq_ckpt_find(c, "d.scale");
    uint64_t ends[4] = {ta->offset + ta->nbytes, tb->offset + tb->nbytes, tc->offset + tc->nbytes, td->offset + td->nbytes};
    uint64_t starts[4] = {ta->offset, tb->offset, tc->offset, td->offset};
    int last = 0;
    for (int k = 1; k < 4; k++)
        if (ends[k] > ends[last]) last = k;
    CHECK(truncate(path, (off_t)(ends[last] - 3)) == 0);
    for (int reader = 0; reader < 2; reader++) {
        tq_unit_check r3[4];
        tq_verify_stats st3;
        tq_verify_opts o3 = {.chunk_bytes = 64, .reader_thread = reader}; /* several reads: the reader thread runs */
        tq_status rc = tq_verify_units(c, u, NULL, 4, &o3, r3, &st3);
        CHECK(rc == TQ_ERR_CORRUPT || rc == TQ_ERR_IO);
        CHECK(st3.failed == 1);
        CHECK(strstr(tq_last_error(), u->units[last].name) != NULL || strstr(tq_last_error(), path) != NULL);
        CHECK(strstr(st3.first_error, "truncated") != NULL || strstr(st3.first_error, path) != NULL);
        if (g_failed) fprintf(stderr, "truncation error: %s\n", st3.first_error);
        for (int k = 0; k < 4; k++) {
            if (k == last) {
                CHECK(r3[k].status != TQ_OK && r3[k].xxh == 0);
            } else {
                CHECK(r3[k].status == TQ_OK);
                CHECK(r3[k].xxh == tq_xxh64(t[k].data, t[k].bytes, 0));
            }
        }
    }
    (void)starts;
    tq_unitlist_free(&us);
    tq_unitlist_free(&u);
    tq_ckpt_free(&c);
}

/* COLLECTIVE */
static void test_plan(const tq_rt* rt, const char* dir, tensor_spec* t)
{
    tq_ckpt* c = NULL;
    CHECK(tq_ckpt_open(dir, &c) == TQ_OK);
    if (!c) return;
    tq_unitlist* u = NULL;
    CHECK(tq_units_from_ckpt(c, 1000, 1, &u) == TQ_OK);
    tq_shardplan* p = NULL;
    CHECK(tq_shardplan_assign(u, rt->size, &p) == TQ_OK);
    tq_unit_check* all = NULL;
    tq_verify_stats* rs = NULL;
    tq_verify_stats tot;
    CHECK(tq_verify_plan(rt, c, p, NULL, &all, &rs, &tot) == TQ_OK);
    CHECK(tot.units == u->n_units && tot.failed == 0 && tot.nan == 1 && tot.inf == 2);
    CHECK(tot.bytes == t[0].bytes + t[1].bytes + t[2].bytes + t[3].bytes);
    if (rt->rank == 0) {
        CHECK(all && rs);
        uint64_t sum = 0;
        for (int r = 0; rs && r < rt->size; r++) sum += rs[r].bytes;
        CHECK(sum == tot.bytes);
        for (int64_t i = 0; all && i < u->n_units; i++) {
            const tq_unit* un = &u->units[i];
            int k = -1;
            for (int j = 0; j < 4; j++)
                if (!strcmp(un->name, t[j].name)) k = j;
            CHECK(k >= 0 && all[i].status == TQ_OK);
            if (k >= 0) CHECK(all[i].xxh == tq_xxh64(t[k].data + un->row0 * un->row_bytes, un->bytes, 0));
        }
    } else {
        CHECK(!all && !rs);
    }
    /* file-order assignment: same results, every unit verified exactly once */
    tq_unit_check* all2 = NULL;
    tq_verify_stats* rs2 = NULL;
    tq_verify_stats tot2;
    CHECK(tq_verify_file_order(rt, c, u, NULL, &all2, &rs2, &tot2) == TQ_OK);
    CHECK(tot2.units == u->n_units && tot2.bytes == tot.bytes && tot2.nan == 1 && tot2.inf == 2 && tot2.failed == 0);
    if (rt->rank == 0) {
        for (int64_t i = 0; all && all2 && i < u->n_units; i++) {
            CHECK(all2[i].status == TQ_OK && all2[i].xxh == all[i].xxh);
            CHECK(all2[i].nan == all[i].nan && all2[i].inf == all[i].inf && all2[i].first_bad == all[i].first_bad);
        }
        int64_t units = 0;
        for (int r = 0; rs2 && r < rt->size; r++) units += rs2[r].units;
        CHECK(units == u->n_units);
        if (rt->size == 2 && rs2) CHECK(rs2[0].units > 0 && rs2[1].units > 0);
    }
    free(all2);
    free(rs2);
    free(all);
    free(rs);
    /* a plan for the wrong number of ranks is an agreed error, not a hang */
    tq_shardplan* p2 = NULL;
    CHECK(tq_shardplan_assign(u, rt->size + 1, &p2) == TQ_OK);
    CHECK(tq_verify_plan(rt, c, p2, NULL, &all, &rs, &tot) == TQ_ERR_ARG);
    tq_shardplan_free(&p2);
    tq_shardplan_free(&p);
    tq_unitlist_free(&u);
    tq_ckpt_free(&c);
}

int main(int argc, char** argv)
{
    tq_rt rt;
    if (tq_rt_init(&rt, &argc, &argv) != TQ_OK) return EXIT_FAILURE;
    g_rank = rt.rank;
    test_count_nonfinite();
    test_scan_positions();
    tensor_spec t[4];
    make_tensors(t);
    char dir[256] = "";
    if (rt.rank == 0) {
        snprintf(dir, sizeof dir, "/tmp/tq_test_verify_XXXXXX");
        if (!mkdtemp(dir)) dir[0] = '\0';
        if (dir[0] && write_ckpt(dir, t) != 0) dir[0] = '\0';
    }
    tq_rt_bcast(&rt, dir, sizeof dir, 0);
    if (!dir[0]) {
        if (rt.rank == 0) fprintf(stderr, "could not write the test checkpoint\n");
        tq_rt_finalize(&rt);
        return EXIT_FAILURE;
    }
    test_plan(&rt, dir, t);
    tq_rt_barrier(&rt);
    if (rt.rank == 0) test_local(dir, t); /* truncates the file: after everybody is done with it */
    uint64_t f = (uint64_t)g_failed;
    tq_rt_allreduce_sum_u64(&rt, &f, 1);
    if (rt.rank == 0) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
        printf("test_verify_units: %d ranks, %s\n", rt.size, f ? "FAILED" : "ok");
    }
    for (int k = 0; k < 4; k++) free(t[k].data);
    tq_rt_finalize(&rt);
    return f ? EXIT_FAILURE : EXIT_SUCCESS;
}
