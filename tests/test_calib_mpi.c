/* test_calib_mpi.c — pipeline/calib.h under MPI: 12 calibration "sequences" (deterministic synthetic
 * activations, sequence s generated from seed s) are dealt to the ranks round-robin, accumulated per
 * sequence, reduced exactly across ranks and saved (zstd H files) by rank 0 into the directory given as
 * argv[1]. The script tests/calib_ranks.sh runs this with -np 1, 2 and 4 and requires byte-identical
 * files. This program itself checks: H vs a float64 reference, the file round trip, pooling, and
 * (for information) prints whether a naive per-rank fp64 sum + MPI_SUM would have matched. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calib.h"
#include "hash.h"

#include "tq_check.h" /* defines: CHECK, n_failed, n_checks */

static uint64_t mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* sequence s: T rows of d values, heavy-ish tails and a shared component */
static void gen_seq(int s, int64_t T, int64_t d, float* x)
{
    uint64_t st = mix(0xABCDEFull + (uint64_t)s);
    for (int64_t t = 0; t < T; t++) {
        st = mix(st);
        double shared = ((double)(st >> 11) / 9007199254740992.0 - 0.5) * 4;
        for (int64_t j = 0; j < d; j++) {
            st = mix(st);
            double u = (double)(st >> 11) / 9007199254740992.0 - 0.5;
            x[t * d + j] = (float)(u * (j % 11 == 0 ? 30.0 : 1.0) + shared + 1e-3 * s);
        }
    }
}

int main(int argc, char** argv)
{
    tq_rt rt;
    if (tq_rt_init(&rt, &argc, &argv) != TQ_OK) {
        fprintf(stderr, "FAILED: %s\n", tq_last_error());
        return EXIT_FAILURE;
    }
    const char* dir = argc > 1 ? argv[1] : NULL;
    const int S = 12;
    const int64_t T = 37, d1 = 48, d2 = 80;
    tq_calib* c = NULL;
    int64_t i1 = -1, i2 = -1;
    CHECK(tq_calib_create(&c) == TQ_OK, "create");
    CHECK(tq_calib_add(c, "model.layers.0.mlp.down_proj.weight", d1, 0, &i1) == TQ_OK, "add full");
    CHECK(tq_calib_add(c, "model.layers.0.self_attn.q_proj.weight", d2, 1, &i2) == TQ_OK, "add diag");
    float* x1 = malloc((size_t)(T * d1) * sizeof(float));
    float* x2 = malloc((size_t)(T * d2) * sizeof(float));
    double* naive = calloc((size_t)(d1 * d1), sizeof(double));
    for (int s = rt.rank; s < S; s += rt.size) {
        gen_seq(s, T, d1, x1);
        gen_seq(1000 + s, T, d2, x2);
        CHECK(tq_calib_observe(c, i1, x1, T, d1) == TQ_OK, "observe");
        CHECK(tq_calib_observe(c, i2, x2, T, d2) == TQ_OK, "observe");
        CHECK(tq_calib_end_sequence(c) == TQ_OK, "flush");
        /* the naive alternative: fp32 per sequence then a running fp64 sum in rank order */
        for (int64_t a = 0; a < d1; a++)
            for (int64_t b = 0; b < d1; b++) {
                float acc = 0;
                for (int64_t t = 0; t < T; t++) acc += x1[t * d1 + a] * x1[t * d1 + b];
                naive[a * d1 + b] += (double)acc * 1.0000001; /* scaled so rounding shows */
            }
    }
    CHECK(tq_calib_reduce(c, &rt) == TQ_OK, "reduce: %s", tq_last_error());
    CHECK(tq_rt_allreduce_sum_f64(&rt, naive, (int)(d1 * d1)) == TQ_OK, "naive reduce");
    double* h = malloc((size_t)(d1 * d1) * sizeof(double));
    uint64_t rows = 0;
    CHECK(tq_calib_finalize(c, i1, h, &rows) == TQ_OK, "finalize");
    CHECK(rows == (uint64_t)(S * T), "rows %llu", (unsigned long long)rows);
    if (rt.rank == 0) {
        /* float64 reference over every sequence */
        double* ref = calloc((size_t)(d1 * d1), sizeof(double));
        for (int s = 0; s < S; s++) {
            gen_seq(s, T, d1, x1);
            for (int64_t t = 0; t < T; t++)
                for (int64_t a = 0; a < d1; a++)
                    for (int64_t b = 0; b < d1; b++) ref[a * d1 + b] += (double)x1[t * d1 + a] * x1[t * d1 + b];
        }
        double maxrel = 0;
        for (int64_t a = 0; a < d1; a++)
            for (int64_t b = 0; b < d1; b++) {
                double r = ref[a * d1 + b] / (double)(S * T);
                double e = fabs(h[a * d1 + b] - r) / sqrt(ref[a * d1 + a] * ref[b * d1 + b] / (double)(S * T) / (double)(S * T));
                if (e > maxrel) maxrel = e;
            }
        CHECK(maxrel < 2e-6, "H vs float64 reference %.3e", maxrel);
        printf("np %d: H vs float64 reference max rel error %.3e; H xxh64 %016llx; naive fp64 sum xxh64 %016llx\n",
               rt.size, maxrel, (unsigned long long)tq_xxh64(h, (size_t)(d1 * d1) * 8, 0),
               (unsigned long long)tq_xxh64(naive, (size_t)(d1 * d1) * 8, 0));
        free(ref);
        if (dir) {
            CHECK(tq_calib_save(c, dir) == TQ_OK, "save: %s", tq_last_error());
            char path[4096];
            snprintf(path, sizeof path, "%s/model.layers.0.mlp.down_proj.weight.hess.zst", dir);
            double* hl = NULL;
            int64_t dl = 0;
            int diag = -1;
            uint64_t rl = 0;
            CHECK(tq_hess_file_load(path, &hl, &dl, &diag, &rl) == TQ_OK, "load: %s", tq_last_error());
            CHECK(hl && dl == d1 && diag == 0 && rl == rows && !memcmp(hl, h, (size_t)(d1 * d1) * 8),
                  "file round trip differs");
            /* pooling: an expert with 10 tokens blended towards the pool; one with 0 tokens = the pool */
            double* he = malloc((size_t)(d1 * d1) * 8);
            double* pool = malloc((size_t)(d1 * d1) * 8);
            for (int64_t k = 0; k < d1 * d1; k++) {
                he[k] = 2.0;
                pool[k] = 4.0;
            }
            tq_calib_pool(he, 12, pool, d1, 0, 0);
            CHECK(fabs(he[7] - (12.0 * 2 + 36.0 * 4) / 48.0) < 1e-12, "pool blend %g", he[7]);
            tq_calib_pool(he, 0, pool, d1, 0, 0);
            CHECK(he[0] == 4.0, "pool zero tokens");
            free(he);
            free(pool);
            free(hl);
            /* a corrupted file is detected */
            FILE* f = fopen(path, "r+b");
            if (f) {
                fseek(f, 60, SEEK_SET);
                fputc(0x5a, f);
                fclose(f);
                CHECK(tq_hess_file_load(path, &hl, &dl, &diag, &rl) != TQ_OK, "corruption not detected");
                free(hl);
                /* restore by saving again */
                CHECK(tq_calib_save(c, dir) == TQ_OK, "save again");
            }
        }
    }
    free(h);
    free(x1);
    free(x2);
    free(naive);
    tq_calib_free(&c);
    tq_status all = tq_rt_agree(&rt, n_failed ? TQ_ERR_ARG : TQ_OK);
    if (rt.rank == 0) printf("%s (%d failures)\n", all == TQ_OK ? "ok" : "FAILED", n_failed);
    tq_rt_finalize(&rt);
    return all == TQ_OK ? EXIT_SUCCESS : EXIT_FAILURE;
}
