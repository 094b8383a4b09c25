/* test_rt_agree.c — the MPI runtime under mpirun -np 2 / -np 4 (also runs alone as a singleton):
 * collective error agreement (one rank fails on purpose -> every rank gets that status and message;
 * several fail -> the lowest rank wins and the count is reported; the early "peer failed" notice
 * reaches ranks still busy in a loop), node-local ranks, the collective helpers (sums, max, bcast,
 * gather of variable-size byte buffers) and the progress counters seen by rank 0.
 * Every rank checks its own results; the process exits non-zero on any failed check. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rt.h"
#include "status.h"

static int g_failed;
static int g_rank;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "[r%d] FAILED %s:%d: %s\n", g_rank, __FILE__, __LINE__, #cond);        \
            g_failed++;                                                                            \
        }                                                                                          \
    } while (0)

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void test_all_ok(const tq_rt* rt)
{
    tq_clear_error();
    CHECK(tq_rt_agree(rt, TQ_OK) == TQ_OK);
    CHECK(tq_last_error()[0] == '\0');
}

static void test_one_rank_fails(const tq_rt* rt)
{
    int bad = rt->size > 1 ? 1 : 0;
    tq_status local = TQ_OK;
    if (rt->rank == bad) local = tq_fail(TQ_ERR_IO, "reading /data/shard-7.safetensors: disk on fire");
    else tq_clear_error();
    tq_status s = tq_rt_agree(rt, local);
    CHECK(s == TQ_ERR_IO);
    char want[128];
    /* a single rank keeps the message as is; with several, the origin is named */
    if (rt->size > 1) snprintf(want, sizeof want, "rank %d: reading /data/shard-7.safetensors: disk on fire", bad);
    else snprintf(want, sizeof want, "reading /data/shard-7.safetensors: disk on fire");
    CHECK(!strcmp(tq_last_error(), want));
    if (strcmp(tq_last_error(), want)) fprintf(stderr, "[r%d] got '%s'\n", rt->rank, tq_last_error());
}

static void test_lowest_rank_wins(const tq_rt* rt)
{
    if (rt->size < 3) return;
    tq_status local = TQ_OK;
    tq_clear_error();
    if (rt->rank == rt->size - 1) local = tq_fail(TQ_ERR_CORRUPT, "last rank: checksum mismatch");
    if (rt->rank == 1) local = tq_fail(TQ_ERR_NUMERIC, "NaN in model.layers.3.mlp.up_proj.weight");
    tq_status s = tq_rt_agree(rt, local);
    CHECK(s == TQ_ERR_NUMERIC);
    char want[160];
    snprintf(want, sizeof want, "rank 1: NaN in model.layers.3.mlp.up_proj.weight (2 of %d ranks failed)", rt->size);
    CHECK(!strcmp(tq_last_error(), want));
    if (strcmp(tq_last_error(), want)) fprintf(stderr, "[r%d] got '%s'\n", rt->rank, tq_last_error());
    /* a second agreement right after must be clean again (notices drained) */
    CHECK(tq_rt_agree(rt, TQ_OK) == TQ_OK);
    CHECK(!tq_rt_peer_failed(rt));
    /* every rank checks before any rank starts the next test, whose failure notices would be
     * (correctly) visible here */
    tq_rt_barrier(rt);
}

/* Rank 1 fails at item 3 of a 2000-item loop (5 ms each = 10 s); the others poll tq_rt_peer_failed
 * and must join the agreement long before their loop would end. */
static void test_early_notice(const tq_rt* rt)
{
    if (rt->size < 2) return;
    double t0 = tq_rt_time();
    tq_status local = TQ_OK;
    int items = 0;
    tq_clear_error();
    for (int i = 0; i < 2000; i++) {
        if (rt->rank == 1 && i == 3) {
            local = tq_fail(TQ_ERR_INJECTED, "unit 3 failed on purpose");
            break;
        }
        if (tq_rt_peer_failed(rt)) break;
        sleep_ms(5);
        items++;
    }
    tq_status s = tq_rt_agree(rt, local);
    double el = tq_rt_time() - t0;
    CHECK(s == TQ_ERR_INJECTED);
    CHECK(!strcmp(tq_last_error(), "rank 1: unit 3 failed on purpose"));
    CHECK(items < 1000); /* stopped early: a 10 s loop ends in well under 5 s */
    CHECK(el < 5.0);
    CHECK(!tq_rt_peer_failed(rt));
    tq_rt_barrier(rt); /* as above: test_fault_point's notices must not reach a rank still checking */
}

static void test_fault_point(const tq_rt* rt)
{
    setenv("TQ_FAULT_RT", "fail:0", 1);
    tq_status local = tq_rt_fault_point(rt, "test_fault_point");
    unsetenv("TQ_FAULT_RT");
    CHECK((rt->rank == 0) == (local == TQ_ERR_INJECTED));
    tq_status s = tq_rt_agree(rt, local);
    CHECK(s == TQ_ERR_INJECTED);
    CHECK(strstr(tq_last_error(), rt->size > 1 ? "rank 0: injected failure at test_fault_point"
                                               : "injected failure at test_fault_point") == tq_last_error());
}

static void test_collectives(const tq_rt* rt)
{
    uint64_t u[2] = {(uint64_t)rt->rank + 1, 1000000000000ull};
    CHECK(tq_rt_allreduce_sum_u64(rt, u, 2) == TQ_OK);
    CHECK(u[0] == (uint64_t)rt->size * (uint64_t)(rt->size + 1) / 2);
    CHECK(u[1] == 1000000000000ull * (uint64_t)rt->size);
    double d[2] = {rt->rank * 0.5, -rt->rank};
    CHECK(tq_rt_allreduce_max_f64(rt, d, 2) == TQ_OK);
    CHECK(d[0] == (rt->size - 1) * 0.5 && d[1] == 0.0);
    double m = rt->rank + 3.0;
    CHECK(tq_rt_allreduce_min_f64(rt, &m, 1) == TQ_OK);
    CHECK(m == 3.0);
    double sm = 1.5;
    CHECK(tq_rt_allreduce_sum_f64(rt, &sm, 1) == TQ_OK);
    CHECK(sm == 1.5 * rt->size);

    char b[64] = "";
    if (rt->rank == rt->size - 1) snprintf(b, sizeof b, "hello from %d", rt->rank);
    CHECK(tq_rt_bcast(rt, b, sizeof b, rt->size - 1) == TQ_OK);
    char want[64];
    snprintf(want, sizeof want, "hello from %d", rt->size - 1);
    CHECK(!strcmp(b, want));

    /* rank r sends r*3 bytes of value r (rank 0 sends nothing) */
    unsigned char send[64];
    size_t n = (size_t)rt->rank * 3;
    memset(send, rt->rank, n);
    void* out = NULL;
    size_t* counts = NULL;
    CHECK(tq_rt_gather_bytes(rt, send, n, &out, &counts) == TQ_OK);
    if (rt->rank == 0) {
        CHECK(out && counts);
        const unsigned char* p = out;
        for (int r = 0; counts && r < rt->size; r++) {
            CHECK(counts[r] == (size_t)r * 3);
            for (size_t i = 0; i < counts[r]; i++) CHECK(p[i] == r);
            p += counts[r];
        }
    } else {
        CHECK(!out && !counts);
    }
    free(out);
    free(counts);

    CHECK(rt->local_size >= 1 && rt->local_rank >= 0 && rt->local_rank < rt->local_size);
    CHECK(rt->local_size == rt->size); /* mpirun on one host: every rank is node-local */
}

/* Every rank reports (rank+1)*100 units in steps; rank 0 must see other ranks' counts arrive while it
 * is still working, without anybody blocking. */
static void test_progress(const tq_rt* rt)
{
    tq_progress* p = tq_progress_start(rt, "tested", 100.0 * rt->size * (rt->size + 1) / 2, "units", 0.02);
    CHECK(p != NULL);
    if (!p) return;
    double mine = (rt->rank + 1) * 100.0;
    for (int i = 1; i <= 20; i++) {
        tq_progress_update(p, mine * i / 20);
        sleep_ms(10);
    }
    if (rt->rank == 0 && rt->size > 1) {
        /* others finish their loops at about the same time; keep polling until their counts arrive */
        double t0 = tq_rt_time();
        while (tq_progress_done(p) <= mine && tq_rt_time() - t0 < 10) {
            tq_progress_update(p, mine);
            sleep_ms(5);
        }
        CHECK(tq_progress_done(p) > mine);
        CHECK(tq_progress_done(p) <= 100.0 * rt->size * (rt->size + 1) / 2);
    }
    CHECK(tq_progress_elapsed(p) > 0.15);
    tq_progress_finish(&p);
    CHECK(p == NULL);
}

int main(int argc, char** argv)
{
    tq_rt rt;
    if (tq_rt_init(&rt, &argc, &argv) != TQ_OK) {
        fprintf(stderr, "tq_rt_init: %s\n", tq_last_error());
        return EXIT_FAILURE;
    }
    g_rank = rt.rank;
    test_all_ok(&rt);
    test_one_rank_fails(&rt);
    test_lowest_rank_wins(&rt);
    test_early_notice(&rt);
    test_fault_point(&rt);
    test_collectives(&rt);
    test_progress(&rt);
    test_all_ok(&rt);
    /* everyone agrees on whether any rank saw a failed check */
    uint64_t f = (uint64_t)g_failed;
    tq_rt_allreduce_sum_u64(&rt, &f, 1);
    if (rt.rank == 0) printf("test_rt_agree: %d ranks, %s\n", rt.size, f ? "FAILED" : "ok");
    tq_rt_finalize(&rt);
    return f ? EXIT_FAILURE : EXIT_SUCCESS;
}
