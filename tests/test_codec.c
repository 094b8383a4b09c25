/* test_codec.c — unit tests of the weight codecs (kernels/): Lloyd-Max codebooks against
 * ../shared/REFERENCE.md §1, the Hadamard rotation, and for every codec: exact byte counts, round trip
 * error bounds, determinism (twice, and 1 thread vs several), row slices concatenating to the whole,
 * odd shapes, zeros / constant rows / denormals / huge values, NaN/Inf errors.
 * Plain C: prints one line per failure (all lines with -v) and returns EXIT_FAILURE if any check failed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "dtype.h"
#include "hadamard.h"
#include "hash.h"
#include "lloydmax.h"

static int n_failed, n_checks, verbose;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        n_checks++;                                                                                \
        if (!(cond)) {                                                                             \
            n_failed++;                                                                            \
            printf("FAILED %s:%d: ", __FILE__, __LINE__);                                          \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
        } else if (verbose) {                                                                      \
            printf("ok: ");                                                                        \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
        }                                                                                          \
    } while (0)

// ------------------------------------------------------------------------------------------------
// deterministic Gaussian source

static uint64_t rng_state = 0x1234567;

static double rng_u01(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return ((rng_state >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static void fill_gauss(float* x, size_t n, uint64_t seed)
{
    rng_state = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i += 2) {
        double u1 = rng_u01(), u2 = rng_u01();
        double r = sqrt(-2.0 * log(u1));
        x[i] = (float)(r * cos(2 * M_PI * u2));
        if (i + 1 < n) x[i + 1] = (float)(r * sin(2 * M_PI * u2));
    }
}

static double nmse(const float* a, const float* b, size_t n)
{
    double e = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        e += d * d;
        s += (double)a[i] * a[i];
    }
    return s > 0 ? e / s : e;
}

// ------------------------------------------------------------------------------------------------

static void test_lloydmax(void)
{
    static const double gc[4][8] = {
        {0.797885},
        {0.452780, 1.510418},
        {0.245094, 0.756005, 1.343909, 2.151946},
        {0.128395, 0.388048, 0.656759, 0.942340, 1.256231, 1.618046, 2.069017, 2.732590}};
    static const double gm[4] = {0.363380, 0.117482, 0.034548, 0.009501};
    static const double bm128[4] = {0.3609, 0.1160, 0.0340, 0.0093};
    for (int b = 1; b <= 4; b++) {
        double c[16], mse;
        tq_status rc = tq_lloydmax(TQ_LAW_GAUSS, 0, b, c, &mse);
        CHECK(rc == TQ_OK, "gauss b=%d computed", b);
        int n = 1 << b;
        for (int i = 0; i < n / 2; i++) {
            CHECK(fabs(c[n / 2 + i] - gc[b - 1][i]) < 1e-4, "gauss b=%d centroid %d: %.6f vs %.6f", b, i,
                  c[n / 2 + i], gc[b - 1][i]);
            CHECK(fabs(c[n / 2 - 1 - i] + gc[b - 1][i]) < 1e-4, "gauss b=%d centroid -%d symmetric", b, i);
        }
        CHECK(fabs(mse - gm[b - 1]) < 1e-4, "gauss b=%d mse %.6f vs %.6f", b, mse, gm[b - 1]);
        rc = tq_lloydmax(TQ_LAW_BETA, 128, b, c, &mse);
        CHECK(rc == TQ_OK && fabs(mse * 128 - bm128[b - 1]) < 1e-4, "beta d=128 b=%d normalized mse %.6f vs %.4f",
              b, mse * 128, bm128[b - 1]);
        /* the exact Beta codebook beats the scaled Gaussian one on the Beta law */
        double gs[16];
        tq_lloydmax(TQ_LAW_GAUSS, 0, b, gs, NULL);
        for (int i = 0; i < n; i++) gs[i] /= sqrt(128.0);
        double mg = tq_lloydmax_beta_mse_of(128, b, gs);
        CHECK(mse <= mg + 1e-15, "beta d=128 b=%d: beta codebook %.6g <= gaussian codebook %.6g", b, mse * 128,
              mg * 128);
        /* cached: second call identical */
        double c2[16], mse2;
        tq_lloydmax(TQ_LAW_BETA, 128, b, c2, &mse2);
        CHECK(!memcmp(c, c2, sizeof(double) * n) && mse == mse2, "cache returns identical codebook b=%d", b);
    }
    /* Thm 1 of the paper: 4^-b <= D <= 2.72 * 4^-b for every d we use */
    int ds[] = {2, 4, 8, 16, 32, 64, 256};
    for (size_t k = 0; k < sizeof ds / sizeof ds[0]; k++)
        for (int b = 1; b <= 4; b++) {
            double mse;
            tq_lloydmax(TQ_LAW_BETA, ds[k], b, NULL, &mse);
            double dn = mse * ds[k];
            CHECK(dn > 0 && dn < 2.73 * pow(4, -b), "beta d=%d b=%d normalized mse %.5f below 2.72*4^-b", ds[k], b,
                  dn);
        }
    CHECK(tq_lloydmax(TQ_LAW_BETA, 128, 0, NULL, NULL) == TQ_ERR_ARG, "bits 0 rejected");
}

static void test_hadamard(void)
{
    /* block decomposition */
    int64_t s;
    int d;
    CHECK(tq_rot_nblocks(172, 128) == 4, "172 @128 -> 4 blocks");
    tq_rot_block(172, 128, 1, &s, &d);
    CHECK(s == 128 && d == 32, "172 block 1 = [128, +32)");
    tq_rot_block(172, 128, 3, &s, &d);
    CHECK(s == 168 && d == 4, "172 block 3 = [168, +4)");
    CHECK(tq_rot_nblocks(576, 128) == 5, "576 @128 -> 5 blocks");
    tq_rot_block(576, 128, 4, &s, &d);
    CHECK(s == 512 && d == 64, "576 block 4 = [512, +64)");
    CHECK(tq_rot_nblocks(3, 64) == 2 && tq_rot_nblocks(1, 256) == 1, "3 -> 2 blocks, 1 -> 1 block");
    int sizes[16];
    int nd = tq_rot_block_sizes(1000, 128, sizes);
    CHECK(nd == 4 && sizes[0] == 128 && sizes[1] == 64 && sizes[2] == 32 && sizes[3] == 8, "1000 @128 sizes");

    /* orthonormality: rows of the matrix R (forward of unit vectors) */
    const int64_t cols[] = {172, 576, 3, 1, 256};
    for (size_t t = 0; t < sizeof cols / sizeof cols[0]; t++) {
        int64_t n = cols[t];
        float* signs = malloc(n * sizeof(float));
        float* m = calloc((size_t)(n * n), sizeof(float));
        tq_rot_signs(77, n, signs);
        for (int64_t j = 0; j < n; j++) {
            m[j * n + j] = 1.0f;
            tq_rot_forward_row(m + j * n, n, 128, signs);
        }
        double maxe = 0;
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n; j++) {
                double dot = 0;
                for (int64_t k = 0; k < n; k++) dot += (double)m[i * n + k] * m[j * n + k];
                double e = fabs(dot - (i == j ? 1.0 : 0.0));
                if (e > maxe) maxe = e;
            }
        CHECK(maxe < 1e-6, "cols %lld: R R^T = I (max err %.2g)", (long long)n, maxe);
        /* inverse */
        float* x = malloc(n * sizeof(float));
        float* y = malloc(n * sizeof(float));
        fill_gauss(x, n, 5 + t);
        memcpy(y, x, n * sizeof(float));
        tq_rot_forward_row(y, n, 128, signs);
        double e2 = 0;
        for (int64_t j = 0; j < n; j++) e2 += ((double)y[j] * y[j]) - ((double)x[j] * x[j]);
        CHECK(fabs(e2) < 1e-4 * n, "cols %lld: norm preserved", (long long)n);
        tq_rot_inverse_row(y, n, 128, signs);
        double me = 0;
        for (int64_t j = 0; j < n; j++) me = fmax(me, fabs(y[j] - x[j]));
        CHECK(me < 1e-5, "cols %lld: inverse(forward(x)) = x (max err %.2g)", (long long)n, me);
        free(x);
        free(y);
        free(m);
        free(signs);
    }
    /* signs depend on (seed, column) only; different seeds differ */
    int diff = 0, same = 1;
    for (int j = 0; j < 256; j++) {
        diff += tq_rot_sign(1, j) != tq_rot_sign(2, j);
        same &= tq_rot_sign(1, j) == tq_rot_sign(1, j);
    }
    CHECK(same && diff > 90 && diff < 166, "signs: deterministic, seeds independent (%d/256 differ)", diff);
    CHECK(tq_rot_seed2(1) != 1 && tq_rot_seed2(1) != tq_rot_seed2(2), "seed2 differs");
}

// ------------------------------------------------------------------------------------------------

typedef struct {
    const char* name;
    double bound; /* NMSE bound on Gaussian data, group 128 */
} codec_bound;

static const codec_bound bounds[] = {
    {"tq1", 0.37},   {"tq2", 0.12},    {"tq3", 0.036},   {"tq4", 0.0097},  {"tq4r4", 1.3e-4}, {"tq3r3", 1.4e-3},
    {"tq2r2", 0.0145}, {"tq2r1", 0.045}, {"tq4r1", 0.0036}, {"tq1r1", 0.14}, {"bin1", 0.37},    {"ter", 0.32},
    {"rtn2", 0.28},  {"rtn3", 0.055},  {"rtn4", 0.011},  {"rtn5", 0.0026}, {"rtn6", 7e-4},   {"rtn7", 1.7e-4},
    {"rtn8", 4.5e-5}, {"int8", 1.5e-4}, {"fp16", 1e-7},  {"bf16", 4e-6},   {"f32", 0.0},
};

static int same_bytes(const tq_qtensor* a, const tq_qtensor* b)
{
    if (a->nparts != b->nparts) return 0;
    for (int i = 0; i < a->nparts; i++)
        if (a->part[i].bytes != b->part[i].bytes || memcmp(a->part[i].data, b->part[i].data, a->part[i].bytes))
            return 0;
    return 1;
}

static void test_roundtrip_all(void)
{
    const int64_t shapes[][2] = {{16, 256}, {5, 172}, {4, 576}, {3, 1000}, {7, 1}, {9, 3}, {1, 1000}, {40, 128}};
    for (size_t c = 0; c < sizeof bounds / sizeof bounds[0]; c++) {
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int64_t R = shapes[s][0], C = shapes[s][1];
            tq_codec codec;
            tq_status rc = tq_codec_parse(bounds[c].name, 128, &codec);
            CHECK(rc == TQ_OK, "parse %s", bounds[c].name);
            size_t n = (size_t)(R * C);
            float* w = malloc(n * sizeof(float));
            float* o = malloc(n * sizeof(float));
            fill_gauss(w, n, 1000 + s);
            tq_qtensor q, q2, qa, qb;
            uint64_t seed = tq_tensor_seed(42, "layers.0.w");
            rc = tq_qtensor_alloc(&q, &codec, R, C, seed);
            CHECK(rc == TQ_OK, "%s alloc", codec.name);
            size_t tot = 0;
            for (int i = 0; i < q.nparts; i++) tot += q.part[i].bytes;
            CHECK(tot == tq_codec_bytes(&codec, R, C), "%s [%lld,%lld] bytes %zu == tq_codec_bytes", codec.name,
                  (long long)R, (long long)C, tot);
            for (int i = 0; i < q.nparts; i++)
                CHECK(q.part[i].row_bytes == 0 || q.part[i].bytes == q.part[i].row_bytes * (size_t)R,
                      "%s part %s row layout", codec.name, q.part[i].name);
            rc = tq_quantize_ref(w, &q, "w");
            CHECK(rc == TQ_OK, "%s [%lld,%lld] quantize: %s", codec.name, (long long)R, (long long)C, tq_last_error());
            rc = tq_dequantize_ref(&q, o);
            CHECK(rc == TQ_OK, "%s dequantize", codec.name);
            double e = nmse(w, o, n);
            /* tiny shapes (tails of 1..4 columns) have their own, smaller errors; bound with the g=128 one */
            CHECK(e <= bounds[c].bound * (n < 64 ? 1.3 : n < 5000 ? 1.1 : 1.0) + 1e-12, "%s [%lld,%lld] nmse %.4g <= %.3g", codec.name,
                  (long long)R, (long long)C, e, bounds[c].bound);
            /* determinism, and independence of the thread count */
            tq_qtensor_alloc(&q2, &codec, R, C, seed);
            tq_codec_set_threads(1);
            tq_quantize_ref(w, &q2, "w");
            tq_codec_set_threads(0);
            CHECK(same_bytes(&q, &q2), "%s [%lld,%lld] identical bytes twice (1 thread vs default)", codec.name,
                  (long long)R, (long long)C);
            /* slices [0,k) and [k,R) concatenate to the whole */
            int64_t k = R / 2;
            tq_qtensor_alloc(&qa, &codec, k, C, seed);
            tq_qtensor_alloc(&qb, &codec, R - k, C, seed);
            tq_quantize_ref(w, &qa, "w");
            tq_quantize_ref(w + k * C, &qb, "w");
            int ok = 1;
            for (int i = 0; i < q.nparts; i++) {
                const tq_qpart* p = &q.part[i];
                if (p->row_bytes == 0) {
                    ok &= !memcmp(p->data, qa.part[i].data, p->bytes) && !memcmp(p->data, qb.part[i].data, p->bytes);
                } else {
                    ok &= qa.part[i].bytes + qb.part[i].bytes == p->bytes;
                    ok &= !memcmp(p->data, qa.part[i].data, qa.part[i].bytes);
                    ok &= !memcmp(p->data + qa.part[i].bytes, qb.part[i].data, qb.part[i].bytes);
                }
            }
            CHECK(ok, "%s [%lld,%lld] slices [0,%lld)+[%lld,%lld) concatenate to the whole", codec.name, (long long)R,
                  (long long)C, (long long)k, (long long)k, (long long)R);
            /* row-range dequantize and bf16 dequantize agree with the whole */
            if (R > 1) {
                float* o2 = malloc((size_t)C * sizeof(float));
                tq_dequantize_rows_ref(&q, R - 1, 1, o2);
                CHECK(!memcmp(o2, o + (R - 1) * C, (size_t)C * sizeof(float)), "%s dequantize_rows last row",
                      codec.name);
                free(o2);
            }
            uint16_t* ob = malloc(n * sizeof(uint16_t));
            tq_dequantize_bf16_ref(&q, ob);
            int okb = 1;
            for (size_t i = 0; i < n; i++) okb &= ob[i] == tq_f32_to_bf16(o[i]);
            CHECK(okb, "%s bf16 dequantize = bf16(fp32 dequantize)", codec.name);
            free(ob);
            tq_qtensor_release(&q);
            tq_qtensor_release(&q2);
            tq_qtensor_release(&qa);
            tq_qtensor_release(&qb);
            free(w);
            free(o);
        }
    }
}

/* On >= 1e6 Gaussian values: tq1..tq4 with the plain norm are within 2% of the Beta(128) Lloyd-Max
 * normalized MSE; the least-squares norm (default) is no worse; tq4r4 is ~1e-4. */
static void test_gaussian_large(void)
{
    const int64_t R = 256, C = 4096;
    size_t n = (size_t)(R * C);
    float* w = malloc(n * sizeof(float));
    float* o = malloc(n * sizeof(float));
    fill_gauss(w, n, 99);
    static const double ref[4] = {0.3609, 0.1160, 0.0340, 0.0093};
    for (int b = 1; b <= 4; b++) {
        char name[8];
        snprintf(name, sizeof name, "tq%d", b);
        tq_codec c;
        tq_codec_parse(name, 128, &c);
        tq_qtensor q;
        tq_qtensor_alloc(&q, &c, R, C, 7);
        q.flags = TQ_QFLAG_PLAIN_NORM;
        tq_quantize_ref(w, &q, "g");
        tq_dequantize_ref(&q, o);
        double ep = nmse(w, o, n);
        q.flags = 0;
        tq_quantize_ref(w, &q, "g");
        tq_dequantize_ref(&q, o);
        double el = nmse(w, o, n);
        CHECK(fabs(ep / ref[b - 1] - 1) < 0.02, "%s plain norm nmse %.5f within 2%% of %.4f", name, ep, ref[b - 1]);
        CHECK(el <= ep * 1.0001, "%s least-squares norm nmse %.5f <= plain %.5f", name, el, ep);
        tq_qtensor_release(&q);
    }
    tq_codec c;
    tq_codec_parse("tq4r4", 128, &c);
    tq_qtensor q;
    tq_qtensor_alloc(&q, &c, R, C, 7);
    tq_quantize_ref(w, &q, "g");
    tq_dequantize_ref(&q, o);
    double e = nmse(w, o, n);
    CHECK(e > 5e-5 && e < 1.3e-4, "tq4r4 nmse %.3g ~ 1e-4", e);
    tq_qtensor_release(&q);
    free(w);
    free(o);
}

static void test_bpw(void)
{
    tq_codec c;
    tq_codec_parse("bin1", 128, &c);
    CHECK(tq_codec_bpw(&c, 64, 4096) == 1.125, "bin1 g128 bpw %.6f == 1.125", tq_codec_bpw(&c, 64, 4096));
    CHECK(tq_codec_bytes(&c, 3, 256) == 3 * (32 + 4), "bin1 bytes 3x256");
    tq_codec_parse("tq4", 128, &c);
    CHECK(tq_codec_bytes(&c, 10, 4096) == 10 * (2048 + 64) + 64, "tq4 bytes 10x4096 = codes+norms+codebook");
    CHECK(tq_codec_bytes(&c, 10, 172) == 10 * (86 + 8) + 4 * 16 * 4, "tq4 bytes 10x172 (4 blocks, 4 codebooks)");
    tq_codec_parse("tq3", 64, &c);
    CHECK(tq_codec_bytes(&c, 2, 576) == 2 * (216 + 18) + 32, "tq3 g64 bytes 2x576 (dense 3-bit)");
    tq_codec_parse("tq4r4", 128, &c);
    CHECK(tq_codec_bytes(&c, 1, 4096) == 2 * (2048 + 64 + 64), "tq4r4 bytes 1x4096");
    tq_codec_parse("ter", 128, &c);
    CHECK(tq_codec_bytes(&c, 2, 1000) == 2 * (200 + 16), "ter bytes 2x1000 (5 trits/byte)");
    tq_codec_parse("rtn4", 128, &c);
    CHECK(tq_codec_bpw(&c, 8, 4096) == 4.25, "rtn4 g128 bpw 4.25");
    tq_codec_parse("rtn3", 64, &c);
    CHECK(tq_codec_bytes(&c, 1, 100) == 38 + 4 + 4, "rtn3 g64 bytes 1x100 (ceil(300/8) + 2 groups)");
    tq_codec_parse("int8", 0, &c);
    CHECK(c.group == 128 && tq_codec_bytes(&c, 3, 10) == 30 + 12, "int8 bytes 3x10 (f32 row scale)");
    tq_codec_parse("bf16", 0, &c);
    CHECK(tq_codec_bpw(&c, 3, 10) == 16.0, "bf16 bpw 16");
    CHECK(tq_codec_parse("tq5", 128, &c) == TQ_ERR_ARG, "tq5 rejected");
    CHECK(strstr(tq_last_error(), "tq4r4") != NULL, "unknown-codec message lists codecs");
    CHECK(tq_codec_parse("tq4", 96, &c) == TQ_ERR_ARG, "group 96 rejected");
    int nnames = 0;
    for (const char* const* p = tq_codec_names(); *p; p++) {
        nnames++;
        CHECK(tq_codec_parse(*p, 0, &c) == TQ_OK && !strcmp(c.name, *p), "name %s parses", *p);
    }
    CHECK(nnames >= 23, "codec list has %d names", nnames);
    CHECK(tq_tensor_seed(1, "a") == tq_tensor_seed(1, "a") && tq_tensor_seed(1, "a") != tq_tensor_seed(2, "a") &&
              tq_tensor_seed(1, "a") != tq_tensor_seed(1, "b"),
          "tensor seeds deterministic, depend on job seed and name");
}

static void test_edge_values(void)
{
    const int64_t R = 4, C = 172;
    size_t n = (size_t)(R * C);
    float* w = malloc(n * sizeof(float));
    float* o = malloc(n * sizeof(float));
    for (size_t c = 0; c < sizeof bounds / sizeof bounds[0]; c++) {
        tq_codec codec;
        tq_codec_parse(bounds[c].name, 64, &codec);
        tq_qtensor q;
        tq_qtensor_alloc(&q, &codec, R, C, 3);
        /* zeros -> exact zeros */
        memset(w, 0, n * sizeof(float));
        tq_status rc = tq_quantize_ref(w, &q, "zeros");
        tq_dequantize_ref(&q, o);
        double mx = 0;
        for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs(o[i]));
        CHECK(rc == TQ_OK && mx == 0.0, "%s zeros -> zeros (max %.3g)", codec.name, mx);
        /* constant rows: error small relative to the value */
        for (int64_t r = 0; r < R; r++)
            for (int64_t j = 0; j < C; j++) w[r * C + j] = 0.25f * (float)(r + 1);
        rc = tq_quantize_ref(w, &q, "const");
        tq_dequantize_ref(&q, o);
        double e = nmse(w, o, n);
        CHECK(rc == TQ_OK && e <= fmax(bounds[c].bound, 1e-6) * 1.3, "%s constant rows nmse %.3g", codec.name, e);
        /* denormals: finite, tiny output */
        for (size_t i = 0; i < n; i++) w[i] = (i % 3 ? 1e-40f : -3e-39f);
        rc = tq_quantize_ref(w, &q, "denormal");
        tq_dequantize_ref(&q, o);
        int fin = 1;
        mx = 0;
        for (size_t i = 0; i < n; i++) {
            fin &= isfinite(o[i]);
            mx = fmax(mx, fabs((double)o[i] - w[i]));
        }
        CHECK(rc == TQ_OK && fin && mx < 1e-37, "%s denormals: finite, max abs err %.3g", codec.name, mx);
        /* NaN / Inf -> TQ_ERR_NUMERIC naming the tensor and the row */
        fill_gauss(w, n, 3);
        w[2 * C + 17] = NAN;
        rc = tq_quantize_ref(w, &q, "model.layers.3.mlp.up_proj.weight");
        CHECK(rc == TQ_ERR_NUMERIC && strstr(tq_last_error(), "model.layers.3.mlp.up_proj.weight") &&
                  strstr(tq_last_error(), "row 2") && strstr(tq_last_error(), "NaN"),
              "%s NaN -> numeric error: %s", codec.name, tq_last_error());
        w[2 * C + 17] = 0;
        w[3 * C] = -INFINITY;
        rc = tq_quantize_ref(w, &q, "t.inf");
        CHECK(rc == TQ_ERR_NUMERIC && strstr(tq_last_error(), "t.inf") && strstr(tq_last_error(), "row 3"),
              "%s Inf -> numeric error: %s", codec.name, tq_last_error());
        /* huge values: codecs with fp16 scales refuse with a clear message, others keep them */
        fill_gauss(w, n, 4);
        for (size_t i = 0; i < n; i++) w[i] *= 1e5f;
        rc = tq_quantize_ref(w, &q, "huge");
        int fp16_scaled = codec.kind == TQ_CODEC_TQ || codec.kind == TQ_CODEC_TQR || codec.kind == TQ_CODEC_BIN1 ||
                          codec.kind == TQ_CODEC_TER || codec.kind == TQ_CODEC_RTN || codec.kind == TQ_CODEC_FP16;
        if (fp16_scaled) {
            CHECK(rc == TQ_ERR_NUMERIC && strstr(tq_last_error(), "fp16") && strstr(tq_last_error(), "huge"),
                  "%s huge -> fp16 range error: %s", codec.name, tq_last_error());
        } else {
            tq_dequantize_ref(&q, o);
            CHECK(rc == TQ_OK && nmse(w, o, n) <= fmax(bounds[c].bound, 1e-9), "%s huge values kept (nmse %.3g)",
                  codec.name, nmse(w, o, n));
        }
        /* a corrupt fp16 norm/scale is caught at dequantize */
        if (fp16_scaled && codec.kind != TQ_CODEC_FP16) {
            fill_gauss(w, n, 6);
            tq_quantize_ref(w, &q, "c");
            tq_qpart* sp = &q.part[1]; /* norms / scales */
            uint16_t bad = 0x7e00;     /* fp16 NaN */
            memcpy(sp->data + sp->row_bytes * 2, &bad, 2);
            rc = tq_dequantize_ref(&q, o);
            CHECK(rc == TQ_ERR_CORRUPT && strstr(tq_last_error(), "row 2"), "%s corrupt %s -> %s", codec.name,
                  sp->name, tq_last_error());
        }
        /* moderately large values (weights up to ~1e3) still work with fp16 scales */
        fill_gauss(w, n, 5);
        for (size_t i = 0; i < n; i++) w[i] *= 300.0f;
        rc = tq_quantize_ref(w, &q, "large");
        tq_dequantize_ref(&q, o);
        CHECK(rc == TQ_OK && nmse(w, o, n) <= bounds[c].bound * 1.3 + 1e-9, "%s values ~1e3: nmse %.3g", codec.name,
              nmse(w, o, n));
        tq_qtensor_release(&q);
    }
    free(w);
    free(o);
}


/* Bytes do not depend on the thread count, on a matrix large enough to be split (>= 2^16 weights). */
static void test_threads(void)
{
    const int64_t R = 67, C = 2000;
    size_t n = (size_t)(R * C);
    float* w = malloc(n * sizeof(float));
    fill_gauss(w, n, 11);
    const char* names[] = {"tq3", "tq4r4", "bin1", "ter", "rtn3", "int8", "bf16"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        tq_codec c;
        tq_codec_parse(names[i], 64, &c);
        tq_qtensor a, b;
        tq_qtensor_alloc(&a, &c, R, C, 5);
        tq_qtensor_alloc(&b, &c, R, C, 5);
        tq_codec_set_threads(1);
        tq_quantize_ref(w, &a, "t");
        tq_codec_set_threads(3);
        tq_quantize_ref(w, &b, "t");
        CHECK(same_bytes(&a, &b), "%s: 1 thread and 3 threads give identical bytes", names[i]);
        float* o1 = malloc(n * sizeof(float));
        float* o3 = malloc(n * sizeof(float));
        tq_codec_set_threads(1);
        tq_dequantize_ref(&a, o1);
        tq_codec_set_threads(3);
        tq_dequantize_ref(&a, o3);
        CHECK(!memcmp(o1, o3, n * sizeof(float)), "%s: dequantize identical with 1 and 3 threads", names[i]);
        tq_codec_set_threads(0);
        free(o1);
        free(o3);
        tq_qtensor_release(&a);
        tq_qtensor_release(&b);
    }
    free(w);
}

/* Golden bytes: XXH3 of every part for a fixed input, so any change of the format (which the CUDA
 * kernels and the Python reader implement from docs/CODECS.md) is a deliberate one. Input: 6 x 172,
 * w[i] = sin(0.37 i + 0.1) * (1 + (i % 7)) / 4, seed tq_tensor_seed(1, "golden"). */
static void test_golden(void)
{
    static const struct {
        const char* name;
        uint64_t h;
    } gold[] = {
#include "golden/codec_golden.inc"
    };
    const int64_t R = 6, C = 172;
    float w[6 * 172];
    for (int i = 0; i < R * C; i++) w[i] = (float)(sin(0.37 * i + 0.1) * (1 + (i % 7)) / 4.0);
    for (size_t i = 0; i < sizeof gold / sizeof gold[0]; i++) {
        tq_codec c;
        tq_codec_parse(gold[i].name, 64, &c);
        tq_qtensor q;
        tq_qtensor_alloc(&q, &c, R, C, tq_tensor_seed(1, "golden"));
        tq_quantize_ref(w, &q, "golden");
        uint64_t h = 0;
        for (int p = 0; p < q.nparts; p++) h = tq_xxh64(q.part[p].data, q.part[p].bytes, h);
        if (verbose || getenv("TQ_PRINT_GOLDEN")) printf("    {\"%s\", 0x%016llxull},\n", gold[i].name, (unsigned long long)h);
        CHECK(h == gold[i].h || getenv("TQ_PRINT_GOLDEN"), "%s golden bytes (xxh3 %016llx)", gold[i].name,
              (unsigned long long)h);
        tq_qtensor_release(&q);
    }
}

int main(int argc, char** argv)
{
    verbose = argc > 1 && !strcmp(argv[1], "-v");
    test_lloydmax();
    test_hadamard();
    test_bpw();
    test_roundtrip_all();
    test_edge_values();
    test_threads();
    test_golden();
    test_gaussian_large();
    printf("%s: %d checks, %d failed\n", n_failed ? "FAILED" : "ok", n_checks, n_failed);
    return n_failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
