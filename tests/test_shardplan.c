/* test_shardplan.c — work units and their assignment to ranks (pipeline/shardplan.h), from the
 * descriptor only (no files):
 *  - Qwen3.5-122B-A10B inventory (bf16, 244 GB) at 64 ranks: max rank bytes / mean <= 1.05;
 *  - every rank count 1..1024: every unit on exactly one rank, per-rank sums, tiling of every tensor's
 *    rows (tq_shardplan_validate), and Graham's LPT bound max <= mean + largest unit;
 *  - independent of input order (shuffled inventories give identical units and assignment);
 *  - units independent of the rank count; row alignment; slicing of a tensor above the unit size;
 *  - lookups, keys, argument errors. Plain C, EXIT_FAILURE on any failure. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch.h"
#include "fileio.h"
#include "shardplan.h"

#include "tq_check.h" /* defines: CHECK, n_failed, n_checks */

static tq_arch* load(const char* name)
{
    const char* s = getenv("TQ_SOURCE_DIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/jobs/configs/%s", s && *s ? s : TQ_SOURCE_DIR, name);
    char* t = NULL;
    size_t n;
    tq_arch* a = NULL;
    if (tq_read_file(path, &t, &n) != TQ_OK || tq_arch_from_json(t, &a) != TQ_OK) {
        printf("FAILED loading %s: %s\n", path, tq_last_error());
        n_failed++;
    }
    free(t);
    return a;
}

#define TQ_RAND_SEED 88172645463325252ull
#include "tq_rand.h" /* defines: tq_rng, tq_rand_next */

static void test_122b(void)
{
    tq_arch* a = load("qwen3.5-122b-a10b.json");
    if (!a) return;
    tq_unitlist* u = NULL;
    CHECK(tq_units_from_arch(a, TQ_BF16, 0, 1, &u) == TQ_OK, "%s", tq_last_error());
    if (!u) return;
    uint64_t total = tq_unitlist_bytes(u);
    CHECK(total == (uint64_t)tq_arch_param_count(a) * 2, "every byte in a unit: %" PRIu64, total);
    CHECK(u->n_units > a->n_tensors, "large tensors were sliced (%" PRId64 " units)", u->n_units);

    tq_shardplan* p = NULL;
    CHECK(tq_shardplan_assign(u, 64, &p) == TQ_OK, "%s", tq_last_error());
    if (p) {
        tq_plan_stats st;
        tq_shardplan_stats(p, &st);
        printf("122B-A10B bf16 at 64 ranks: %" PRId64 " units, mean %.3f GB, max %.3f GB, max/mean %.5f\n", st.n_units,
               st.mean / 1e9, (double)st.max / 1e9, st.max_over_mean);
        CHECK(st.max_over_mean <= 1.05, "max/mean %.5f > 1.05", st.max_over_mean);
        CHECK(st.total == total, "stats total");
        CHECK(tq_shardplan_validate(p) == TQ_OK, "%s", tq_last_error());
        tq_shardplan_free(&p);
    }
    /* every rank count 1..1024 */
    double worst = 0;
    int worst_r = 0;
    for (int r = 1; r <= TQ_PLAN_MAX_RANKS; r++) {
        if (tq_shardplan_assign(u, r, &p) != TQ_OK) {
            CHECK(0, "assign %d: %s", r, tq_last_error());
            break;
        }
        tq_plan_stats st;
        tq_shardplan_stats(p, &st);
        CHECK(st.total == total, "%d ranks: total", r);
        CHECK((double)st.max <= st.mean + (double)st.largest_unit + 1e-6, "%d ranks: LPT bound violated", r);
        if (r <= 16 || r % 61 == 0 || r == 1024 || r == 1000 || r == 512)
            CHECK(tq_shardplan_validate(p) == TQ_OK, "%d ranks: %s", r, tq_last_error());
        if (st.max_over_mean > worst) worst = st.max_over_mean, worst_r = r;
        /* independent coverage count: each unit index appears in exactly one rank list */
        if (r == 7 || r == 1024) {
            unsigned char* seen = calloc((size_t)u->n_units, 1);
            int ok = 1;
            for (int k = 0; k < r; k++) {
                int64_t cnt;
                const int64_t* idx = tq_shardplan_rank_units(p, k, &cnt);
                for (int64_t j = 0; j < cnt; j++) ok &= seen[idx[j]]++ == 0;
            }
            for (int64_t j = 0; j < u->n_units; j++) ok &= seen[j] == 1;
            free(seen);
            CHECK(ok, "%d ranks: every unit exactly once", r);
        }
        tq_shardplan_free(&p);
    }
    printf("122B-A10B bf16, 1..1024 ranks: worst max/mean %.5f at %d ranks\n", worst, worst_r);
    CHECK(worst <= 1.05, "worst %.5f", worst);
    tq_unitlist_free(&u);
    tq_arch_free(&a);
}

static void test_order_independence(void)
{
    tq_arch* a = load("qwen3.5-35b-a3b.json");
    if (!a) return;
    int64_t n = a->n_tensors;
    tq_plan_tensor* t = malloc((size_t)n * sizeof *t);
    for (int64_t i = 0; i < n; i++) {
        t[i].name = a->tensors[i].name;
        t[i].rows = tq_arch_tensor_rows(&a->tensors[i]);
        t[i].row_bytes = (uint64_t)tq_arch_tensor_cols(&a->tensors[i]) * 2;
    }
    tq_unitlist *u1 = NULL, *u2 = NULL;
    CHECK(tq_units_build(t, n, 16 << 20, 1, &u1) == TQ_OK, "%s", tq_last_error());
    for (int64_t i = n - 1; i > 0; i--) { /* Fisher-Yates shuffle */
        int64_t j = (int64_t)(tq_rand_next() % (uint64_t)(i + 1));
        tq_plan_tensor x = t[i];
        t[i] = t[j];
        t[j] = x;
    }
    CHECK(tq_units_build(t, n, 16 << 20, 1, &u2) == TQ_OK, "%s", tq_last_error());
    if (u1 && u2) {
        CHECK(u1->n_units == u2->n_units && !memcmp(u1->units, u2->units, (size_t)u1->n_units * sizeof *u1->units),
              "units depend on input order");
        tq_shardplan *p1 = NULL, *p2 = NULL;
        tq_shardplan_assign(u1, 37, &p1);
        tq_shardplan_assign(u2, 37, &p2);
        CHECK(p1 && p2 && !memcmp(p1->rank_of, p2->rank_of, (size_t)u1->n_units * sizeof(int)),
              "assignment depends on input order");
        tq_shardplan_free(&p1);
        tq_shardplan_free(&p2);
        /* same inventory, same plan: deterministic */
        tq_shardplan_assign(u1, 64, &p1);
        tq_shardplan_assign(u1, 64, &p2);
        CHECK(p1 && p2 && !memcmp(p1->rank_of, p2->rank_of, (size_t)u1->n_units * sizeof(int)), "not deterministic");
        tq_shardplan_free(&p1);
        tq_shardplan_free(&p2);
    }
    tq_unitlist_free(&u1);
    tq_unitlist_free(&u2);
    free(t);
    tq_arch_free(&a);
}

static void test_slicing(void)
{
    /* one 1000-row tensor of 1000-byte rows, units <= 64 KB, rows aligned to 16 */
    tq_plan_tensor t[] = {{"b.big", 1000, 1000}, {"a.small", 3, 10}, {"c.scalar", 1, 4}, {"d.empty", 0, 8},
                          {"e.huge_row", 4, 1 << 20}};
    tq_unitlist* u = NULL;
    CHECK(tq_units_build(t, 5, 64000, 16, &u) == TQ_OK, "%s", tq_last_error());
    if (!u) return;
    int64_t big = 0, rows = 0;
    for (int64_t i = 0; i < u->n_units; i++) {
        const tq_unit* x = &u->units[i];
        if (!strcmp(x->name, "b.big")) {
            big++;
            rows += x->nrows;
            CHECK(x->bytes <= 64000, "slice bytes %" PRIu64, x->bytes);
            CHECK(x->row0 % 16 == 0, "slice start aligned: %" PRId64, x->row0);
            if (x->row0 + x->nrows < 1000) CHECK(x->nrows == 64, "slice rows %" PRId64, x->nrows);
        }
    }
    CHECK(rows == 1000 && big == 16, "b.big: %" PRId64 " rows in %" PRId64 " slices", rows, big);
    CHECK(!strcmp(u->units[0].name, "a.small") && u->units[0].nrows == 3, "sorted by name, small tensor whole");
    /* rows above the limit: one aligned group per unit (4 rows of 1 MiB, align 16 -> one unit) */
    int64_t ih = tq_unitlist_find(u, "e.huge_row", 2);
    CHECK(ih >= 0 && u->units[ih].nrows == 4, "huge-row tensor stays one aligned group");
    int64_t ie = tq_unitlist_find(u, "d.empty", 0);
    CHECK(ie >= 0 && u->units[ie].nrows == 0 && u->units[ie].bytes == 0, "empty tensor has one empty unit");
    int64_t i = tq_unitlist_find(u, "b.big", 130);
    CHECK(i >= 0 && u->units[i].row0 == 128 && u->units[i].nrows == 64, "find row 130");
    CHECK(tq_unitlist_find(u, "b.big", 1000) == -1 && tq_unitlist_find(u, "zzz", 0) == -1, "find misses");
    char key[300];
    CHECK(i >= 0 && tq_unit_key(&u->units[i], key, sizeof key) > 0 && !strcmp(key, "b.big@128+64"), "key %s", key);
    CHECK(tq_unit_key(&u->units[0], key, 4) == -1, "key cap");
    /* more ranks than units: empty ranks are fine */
    tq_shardplan* p = NULL;
    CHECK(tq_shardplan_assign(u, 1024, &p) == TQ_OK && tq_shardplan_validate(p) == TQ_OK, "%s", tq_last_error());
    tq_shardplan_free(&p);
    CHECK(tq_shardplan_assign(u, 0, &p) == TQ_ERR_ARG && p == NULL, "0 ranks");
    CHECK(tq_shardplan_assign(u, 1025, &p) == TQ_ERR_ARG, "1025 ranks");
    tq_unitlist_free(&u);
    /* duplicate name -> error */
    tq_plan_tensor d[] = {{"x", 2, 2}, {"x", 3, 3}};
    CHECK(tq_units_build(d, 2, 0, 1, &u) == TQ_ERR_ARG && strstr(tq_last_error(), "twice"), "duplicate");
    tq_plan_tensor neg[] = {{"x", -2, 2}};
    CHECK(tq_units_build(neg, 1, 0, 1, &u) == TQ_ERR_ARG, "negative rows");
    /* empty inventory */
    CHECK(tq_units_build(NULL, 0, 0, 1, &u) == TQ_OK && u && u->n_units == 0, "empty inventory");
    if (u) {
        CHECK(tq_shardplan_assign(u, 4, &p) == TQ_OK && tq_shardplan_validate(p) == TQ_OK, "empty plan");
        tq_shardplan_free(&p);
    }
    tq_unitlist_free(&u);
}

int main(void)
{
    test_122b();
    test_order_independence();
    test_slicing();
    printf("%s: %d checks, %d failed\n", n_failed ? "FAILED" : "ok", n_checks, n_failed);
    return n_failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
