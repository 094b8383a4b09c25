/* test_hessian.c — kernels/hessian.h against a float64 reference: full and diagonal modes, several
 * flush blocks, limb export/import round trip (with a simulated multi-rank limb sum), merge, the
 * invariance of the exact sums to how blocks are grouped, and the NaN / no-token errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hessian.h"

#include "tq_check.h" /* defines: CHECK, n_failed, n_checks */

#define TQ_RAND_SEED 88172645463325252ull
#include "tq_rand.h" /* defines: tq_rand_unit, tq_rand_normal */

int main(void)
{
    const int64_t d = 96, nseq = 7, T = 53;
    float* x = malloc((size_t)(nseq * T * d) * sizeof(float));
    double* ref = calloc((size_t)(d * d), sizeof(double));
    double* out = malloc((size_t)(d * d) * sizeof(double));
    double* outd = malloc((size_t)d * sizeof(double));
    /* correlated activations with a few large channels */
    for (int64_t i = 0; i < nseq * T; i++) {
        double z = tq_rand_normal();
        for (int64_t j = 0; j < d; j++) {
            double v = 0.6 * z + tq_rand_normal() * (j % 17 == 3 ? 20.0 : 1.0);
            x[i * d + j] = (float)v;
        }
    }
    for (int64_t i = 0; i < nseq * T; i++)
        for (int64_t a = 0; a < d; a++)
            for (int64_t b = 0; b < d; b++) ref[a * d + b] += (double)x[i * d + a] * (double)x[i * d + b];
    for (int64_t k = 0; k < d * d; k++) ref[k] /= (double)(nseq * T);

    /* full mode, one flush per sequence */
    tq_hess h;
    CHECK(tq_hess_init(&h, d, 0) == TQ_OK, "init");
    for (int64_t s = 0; s < nseq; s++) {
        CHECK(tq_hess_add_ref(&h, x + s * T * d, T, d, "t") == TQ_OK, "add");
        CHECK(tq_hess_flush(&h, "t") == TQ_OK, "flush");
    }
    CHECK(h.rows == (uint64_t)(nseq * T), "rows %llu", (unsigned long long)h.rows);
    CHECK(tq_hess_finalize(&h, h.rows, out) == TQ_OK, "finalize");
    double maxrel = 0;
    for (int64_t a = 0; a < d; a++)
        for (int64_t b = 0; b < d; b++) {
            double scale = sqrt(ref[a * d + a] * ref[b * d + b]);
            double e = fabs(out[a * d + b] - ref[a * d + b]) / scale;
            if (e > maxrel) maxrel = e;
            CHECK(out[a * d + b] == out[b * d + a], "symmetric");
        }
    printf("full H vs float64 reference: max |dH|/sqrt(Hii Hjj) = %.3e\n", maxrel);
    CHECK(maxrel < 2e-6, "full H error %.3e", maxrel);

    /* the same rows added in two calls per sequence (same flush boundaries): identical sums */
    tq_hess h2;
    CHECK(tq_hess_init(&h2, d, 0) == TQ_OK, "init2");
    for (int64_t s = 0; s < nseq; s++) {
        CHECK(tq_hess_add_ref(&h2, x + s * T * d, T, d, "t") == TQ_OK, "add");
        CHECK(tq_hess_flush(&h2, "t") == TQ_OK, "flush");
    }
    /* blocks merged in a different order and grouping (as ranks would): identical bytes */
    tq_hess a1, a2;
    CHECK(tq_hess_init(&a1, d, 0) == TQ_OK && tq_hess_init(&a2, d, 0) == TQ_OK, "init a");
    for (int64_t s = nseq - 1; s >= 0; s--) {
        tq_hess* t = s % 2 ? &a1 : &a2;
        CHECK(tq_hess_add_ref(t, x + s * T * d, T, d, "t") == TQ_OK, "add");
        CHECK(tq_hess_flush(t, "t") == TQ_OK, "flush");
    }
    CHECK(tq_hess_merge(&a2, &a1) == TQ_OK, "merge");
    CHECK(!memcmp(a2.acc, h.acc, (size_t)h.n_entries * 16), "grouping changed the exact sums");
    /* limbs: 3 "ranks" each export, limbs summed as uint64, imported: equals the direct sum */
    int64_t ne = h.n_entries;
    uint64_t* l0 = malloc((size_t)(3 * ne) * sizeof(uint64_t));
    uint64_t* l1 = malloc((size_t)(3 * ne) * sizeof(uint64_t));
    tq_hess_export_limbs(&a1, 0, ne, l0);
    tq_hess_export_limbs(&h2, 0, ne, l1);
    for (int64_t k = 0; k < 3 * ne; k++) l0[k] += l1[k];
    tq_hess_export_limbs(&h2, 0, ne, l1);
    for (int64_t k = 0; k < 3 * ne; k++) l0[k] += l1[k]; /* a1 + 2·h2 */
    tq_hess sum;
    CHECK(tq_hess_init(&sum, d, 0) == TQ_OK, "init sum");
    tq_hess_import_limbs(&sum, 0, ne, l0);
    tq_hess direct;
    CHECK(tq_hess_init(&direct, d, 0) == TQ_OK, "init direct");
    CHECK(tq_hess_merge(&direct, &a1) == TQ_OK && tq_hess_merge(&direct, &h2) == TQ_OK &&
              tq_hess_merge(&direct, &h2) == TQ_OK, "merge3");
    CHECK(!memcmp(sum.acc, direct.acc, (size_t)ne * 16), "limb round trip differs");

    /* diag mode */
    tq_hess hd;
    CHECK(tq_hess_init(&hd, d, 1) == TQ_OK, "init diag");
    for (int64_t s = 0; s < nseq; s++) {
        CHECK(tq_hess_add_ref(&hd, x + s * T * d, T, d, "t") == TQ_OK, "add");
        CHECK(tq_hess_flush(&hd, "t") == TQ_OK, "flush");
    }
    CHECK(tq_hess_finalize(&hd, hd.rows, outd) == TQ_OK, "finalize diag");
    double maxd = 0;
    for (int64_t a = 0; a < d; a++) {
        double e = fabs(outd[a] - ref[a * d + a]) / ref[a * d + a];
        if (e > maxd) maxd = e;
    }
    printf("diag H vs float64 reference: max relative error = %.3e\n", maxd);
    CHECK(maxd < 2e-6, "diag error %.3e", maxd);

    /* errors */
    tq_hess he;
    CHECK(tq_hess_init(&he, d, 0) == TQ_OK, "init e");
    x[5] = NAN;
    CHECK(tq_hess_add_ref(&he, x, T, d, "layer.q") == TQ_ERR_NUMERIC, "NaN accepted");
    CHECK(strstr(tq_last_error(), "layer.q") != NULL, "NaN message names the layer: %s", tq_last_error());
    CHECK(tq_hess_finalize(&he, 0, out) == TQ_ERR_ARG, "zero rows accepted");

    tq_hess_release(&h);
    tq_hess_release(&h2);
    tq_hess_release(&a1);
    tq_hess_release(&a2);
    tq_hess_release(&sum);
    tq_hess_release(&direct);
    tq_hess_release(&hd);
    tq_hess_release(&he);
    free(l0);
    free(l1);
    free(x);
    free(ref);
    free(out);
    free(outd);
    printf("%s (%d failures)\n", n_failed ? "FAILED" : "ok", n_failed);
    return n_failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
