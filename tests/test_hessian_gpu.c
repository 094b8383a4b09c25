/* test_hessian_gpu.c — H += XᵀX on the GPU (kernels/hessian.cu, tq_hess_add_gpu) against the CPU
 * reference (tq_hess_add_ref) and a float64 reference, for correlated activations with large channels:
 *  - full H: |H_gpu − H_ref| <= 1e-5·sqrt(H_ii·H_jj) for every entry, same for the float64 reference;
 *    several observes per sequence (block upload path), a row stride ldx > d, odd d;
 *  - the exact sums stay rank-invariant: two accumulators holding different sequences, merged, equal
 *    one accumulator holding all of them (bit for bit), and a second GPU run gives the same bits;
 *  - calls below TQ_HESS_GPU_MIN_ROWS rows and diagonal accumulators are the CPU reference's bits;
 *  - the calib dispatch (tq_calib_observe) uses the GPU unless TQ_NO_GPU_LINALG is set;
 *  - NaN input -> TQ_ERR_NUMERIC.
 * Prints the SYRK throughput (tokens/s) of both paths for d = 2048. Exit 77 (skipped) without a GPU. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "calib.h"
#include "codec.h" /* defines: tq_gpu_available */
#include "hessian.h"
#include "linalg_gpu.h"

#include "tq_check.h" /* defines: CHECK, n_failed, n_checks */

#define TQ_RAND_SEED 0x9E3779B97F4A7C15ull
#include "tq_rand.h" /* defines: tq_rand_unit, tq_rand_normal */

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* x [rows x ld]: correlated columns (shared factor) with every 17th channel 20x larger */
static void synth_x(float* x, int64_t rows, int64_t d, int64_t ld)
{
    for (int64_t i = 0; i < rows; i++) {
        double z = tq_rand_normal();
        for (int64_t j = 0; j < ld; j++)
            x[i * ld + j] = j < d ? (float)(0.6 * z + tq_rand_normal() * (j % 17 == 3 ? 20.0 : 1.0)) : NAN; /* padding: never read */
    }
}

/* max over (i, j) of |a − b| / sqrt(a_ii·a_jj) */
static double max_rel(const double* a, const double* b, int64_t d)
{
    double m = 0;
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j < d; j++) {
            double s = sqrt(a[i * d + i] * a[j * d + j]);
            double e = fabs(a[i * d + j] - b[i * d + j]) / (s > 0 ? s : 1);
            if (e > m) m = e;
        }
    return m;
}

static int same_sums(const tq_hess* a, const tq_hess* b)
{
    return a->n_entries == b->n_entries && a->rows == b->rows && !memcmp(a->acc, b->acc, (size_t)a->n_entries * 16);
}

/* One dimension: nseq sequences of T rows, each observed as two calls (split), row stride ld. */
static void check_dim(int64_t d, int64_t ld, int64_t nseq, int64_t T, int64_t split)
{
    float* x = malloc((size_t)(nseq * T * ld) * sizeof(float));
    double* ref64 = calloc((size_t)(d * d), sizeof(double));
    double* hg = malloc((size_t)(d * d) * sizeof(double));
    double* hc = malloc((size_t)(d * d) * sizeof(double));
    synth_x(x, nseq * T, d, ld);
    for (int64_t i = 0; i < nseq * T; i++)
        for (int64_t a = 0; a < d; a++) {
            double xa = x[i * ld + a];
            for (int64_t b = a; b < d; b++) ref64[a * d + b] += xa * (double)x[i * ld + b];
        }
    for (int64_t a = 0; a < d; a++)
        for (int64_t b = a; b < d; b++) ref64[b * d + a] = ref64[a * d + b] /= (double)(nseq * T);

    tq_hess g, c, g2, ga, gb;
    CHECK(tq_hess_init(&g, d, 0) == TQ_OK && tq_hess_init(&c, d, 0) == TQ_OK && tq_hess_init(&g2, d, 0) == TQ_OK &&
              tq_hess_init(&ga, d, 0) == TQ_OK && tq_hess_init(&gb, d, 0) == TQ_OK,
          "init");
    for (int64_t s = 0; s < nseq; s++) {
        const float* xs = x + s * T * ld;
        const float* xs2 = xs + split * ld;
        tq_hess* half = s < nseq / 2 ? &ga : &gb; /* "rank 0" and "rank 1" */
        CHECK(tq_hess_add_gpu(&g, xs, split, ld, "t") == TQ_OK, "gpu add: %s", tq_last_error());
        CHECK(tq_hess_add_gpu(&g, xs2, T - split, ld, "t") == TQ_OK, "gpu add 2: %s", tq_last_error());
        CHECK(tq_hess_add_gpu(&g2, xs, split, ld, "t") == TQ_OK, "gpu add");
        CHECK(tq_hess_add_gpu(&g2, xs2, T - split, ld, "t") == TQ_OK, "gpu add");
        CHECK(tq_hess_add_gpu(half, xs, split, ld, "t") == TQ_OK, "gpu add");
        CHECK(tq_hess_add_gpu(half, xs2, T - split, ld, "t") == TQ_OK, "gpu add");
        CHECK(tq_hess_add_ref(&c, xs, split, ld, "t") == TQ_OK, "ref add");
        CHECK(tq_hess_add_ref(&c, xs2, T - split, ld, "t") == TQ_OK, "ref add");
        CHECK(g.blk_rows == T && c.blk_rows == T, "blk_rows %lld", (long long)g.blk_rows);
        CHECK(tq_hess_flush(&g, "t") == TQ_OK && tq_hess_flush(&g2, "t") == TQ_OK && tq_hess_flush(half, "t") == TQ_OK &&
                  tq_hess_flush(&c, "t") == TQ_OK,
              "flush");
    }
    CHECK(tq_hess_finalize(&g, g.rows, hg) == TQ_OK && tq_hess_finalize(&c, c.rows, hc) == TQ_OK, "finalize");
    CHECK(g.rows == (uint64_t)(nseq * T), "rows %llu", (unsigned long long)g.rows);
    double e_gc = max_rel(hc, hg, d), e_g64 = max_rel(ref64, hg, d), e_c64 = max_rel(ref64, hc, d);
    printf("d = %4lld ld = %4lld: max |H_gpu - H_ref|/sqrt(HiiHjj) = %.3e, vs float64 %.3e (CPU ref vs float64 %.3e)\n",
           (long long)d, (long long)ld, e_gc, e_g64, e_c64);
    CHECK(e_gc <= 1e-5, "d %lld: GPU vs CPU reference %.3e > 1e-5", (long long)d, e_gc);
    CHECK(e_g64 <= 1e-5, "d %lld: GPU vs float64 %.3e > 1e-5", (long long)d, e_g64);
    CHECK(same_sums(&g, &g2), "d %lld: two GPU runs give different exact sums", (long long)d);
    CHECK(tq_hess_merge(&ga, &gb) == TQ_OK, "merge");
    CHECK(same_sums(&g, &ga), "d %lld: split over two accumulators + merge differs from one accumulator", (long long)d);
    tq_hess_release(&g);
    tq_hess_release(&c);
    tq_hess_release(&g2);
    tq_hess_release(&ga);
    tq_hess_release(&gb);
    free(x);
    free(ref64);
    free(hg);
    free(hc);
}

int main(void)
{
    if (!tq_gpu_available()) {
        printf("no GPU: skipped\n");
        return 77;
    }
    check_dim(288, 288, 6, 200, 130);
    check_dim(701, 720, 4, 300, 64);

    /* small calls and diagonal accumulators: the CPU reference's bits */
    {
        const int64_t d = 160, T = TQ_HESS_GPU_MIN_ROWS - 1;
        float* x = malloc((size_t)(T * d) * sizeof(float));
        synth_x(x, T, d, d);
        tq_hess a, b, ad, bd;
        CHECK(tq_hess_init(&a, d, 0) == TQ_OK && tq_hess_init(&b, d, 0) == TQ_OK && tq_hess_init(&ad, d, 1) == TQ_OK &&
                  tq_hess_init(&bd, d, 1) == TQ_OK,
              "init");
        CHECK(tq_hess_add_gpu(&a, x, T, d, "s") == TQ_OK && tq_hess_add_ref(&b, x, T, d, "s") == TQ_OK, "add small");
        CHECK(!memcmp(a.blk, b.blk, (size_t)(d * d) * sizeof(float)), "small call: block differs from the reference");
        CHECK(tq_hess_add_gpu(&ad, x, T, d, "s") == TQ_OK && tq_hess_add_ref(&bd, x, T, d, "s") == TQ_OK, "add diag");
        CHECK(!memcmp(ad.blk, bd.blk, (size_t)d * sizeof(float)), "diagonal: block differs from the reference");
        /* NaN -> numeric error naming the tensor, also on the GPU path (>= MIN_ROWS rows) */
        float* y = malloc((size_t)(100 * d) * sizeof(float));
        synth_x(y, 100, d, d);
        y[77 * d + 5] = NAN;
        CHECK(tq_hess_add_gpu(&a, y, 100, d, "layers.0.q") == TQ_ERR_NUMERIC, "NaN accepted");
        CHECK(strstr(tq_last_error(), "layers.0.q") != NULL, "error does not name the tensor: %s", tq_last_error());
        tq_hess_release(&a);
        tq_hess_release(&b);
        tq_hess_release(&ad);
        tq_hess_release(&bd);
        free(x);
        free(y);
    }

    /* calib dispatch: GPU by default, CPU with TQ_NO_GPU_LINALG=1 (the blocks agree within tolerance) */
    {
        const int64_t d = 96, T = 128;
        float* x = malloc((size_t)(T * d) * sizeof(float));
        synth_x(x, T, d, d);
        unsetenv("TQ_NO_GPU_LINALG");
        CHECK(tq_linalg_use_gpu() == 1, "tq_linalg_use_gpu() is 0 with a device present");
        setenv("TQ_NO_GPU_LINALG", "1", 1);
        CHECK(tq_linalg_use_gpu() == 0, "TQ_NO_GPU_LINALG=1 ignored");
        setenv("TQ_NO_GPU_LINALG", "0", 1);
        CHECK(tq_linalg_use_gpu() == 1, "TQ_NO_GPU_LINALG=0 should keep the GPU");
        unsetenv("TQ_NO_GPU_LINALG");
        tq_calib* c = NULL;
        int64_t i0 = -1;
        CHECK(tq_calib_create(&c) == TQ_OK && tq_calib_add(c, "l.q_proj.weight", d, 0, &i0) == TQ_OK, "calib");
        CHECK(tq_calib_observe(c, i0, x, T, d) == TQ_OK && tq_calib_end_sequence(c) == TQ_OK, "observe");
        double* hg = malloc((size_t)(d * d) * sizeof(double));
        double* hc = malloc((size_t)(d * d) * sizeof(double));
        uint64_t rows = 0;
        CHECK(tq_calib_finalize(c, i0, hg, &rows) == TQ_OK && rows == (uint64_t)T, "finalize");
        tq_calib_free(&c);
        setenv("TQ_NO_GPU_LINALG", "1", 1);
        CHECK(tq_calib_create(&c) == TQ_OK && tq_calib_add(c, "l.q_proj.weight", d, 0, &i0) == TQ_OK, "calib");
        CHECK(tq_calib_observe(c, i0, x, T, d) == TQ_OK && tq_calib_end_sequence(c) == TQ_OK, "observe");
        CHECK(tq_calib_finalize(c, i0, hc, &rows) == TQ_OK, "finalize");
        tq_calib_free(&c);
        unsetenv("TQ_NO_GPU_LINALG");
        double e = max_rel(hc, hg, d);
        CHECK(e <= 1e-5, "calib dispatch: GPU vs CPU %.3e", e);
        free(x);
        free(hg);
        free(hc);
    }

    /* throughput, d = 2048, 8 sequences of 512 tokens */
    {
        const int64_t d = 2048, T = 512, ns = 8;
        float* x = malloc((size_t)(T * d) * sizeof(float));
        synth_x(x, T, d, d);
        tq_hess a;
        CHECK(tq_hess_init(&a, d, 0) == TQ_OK, "init");
        CHECK(tq_hess_add_gpu(&a, x, T, d, "w") == TQ_OK && tq_hess_flush(&a, "w") == TQ_OK, "warm-up");
        double t0 = now();
        for (int64_t s = 0; s < ns; s++)
            CHECK(tq_hess_add_gpu(&a, x, T, d, "w") == TQ_OK && tq_hess_flush(&a, "w") == TQ_OK, "gpu");
        double tg = now() - t0;
        t0 = now();
        for (int64_t s = 0; s < 2; s++)
            CHECK(tq_hess_add_ref(&a, x, T, d, "w") == TQ_OK && tq_hess_flush(&a, "w") == TQ_OK, "cpu");
        double tc = (now() - t0) / 2 * ns;
        printf("H accumulation d = %lld, %lld-token sequences (add + flush): GPU %.0f tokens/s, CPU reference %.0f tokens/s\n",
               (long long)d, (long long)T, (double)(ns * T) / tg, (double)(ns * T) / tc);
        tq_hess_release(&a);
        free(x);
    }
    tq_linalg_gpu_release();
    printf("%s (%d failures)\n", n_failed ? "FAILED" : "ok", n_failed);
    return n_failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
