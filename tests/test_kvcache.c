/* test_kvcache.c — KV cache codecs (kernels/kvcache.h): exact bytes per head vector, round-trip error
 * bounds per codec, rotated-domain attention scores equal to scores against the dequantized keys,
 * attention output equal to naive softmax attention over the dequantized cache, outlier split
 * calibration, QJL inner products unbiased, f32 codec exact. Plain C, prints ok/FAILED lines. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvcache.h"

#include "tq_check.h"

static uint64_t rng = 88172645463325252ull;
static double urand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return ((double)(rng >> 11) + 0.5) / 9007199254740992.0;
}
static float grand(void)
{
    return (float)(sqrt(-2 * log(urand())) * cos(6.283185307179586 * urand()));
}

static tq_kv_codec codec(const char* name, int qjl)
{
    tq_kv_codec c;
    if (tq_kv_codec_parse(name, qjl, &c) != TQ_OK) {
        printf("FAILED parse %s\n", name);
        n_failed++;
    }
    return c;
}

static void test_bytes(void)
{
    struct {
        const char* name;
        int qjl, d;
        size_t bytes;
    } t[] = {
        {"f32", 0, 128, 512},      {"fp16", 0, 128, 256},     {"bf16", 0, 64, 128},
        {"int8", 0, 128, 130},     {"tq4", 0, 128, 66},       {"tq3", 0, 128, 50},
        {"tq2", 0, 128, 34},       {"tq3.5", 0, 128, 60},     {"tq2.5", 0, 128, 44},
        {"tq4", 1, 128, 68},       {"tq3", 1, 128, 52},       {"tq2.5", 1, 128, 46},
        {"tq3", 0, 64, 26},        {"tq4", 0, 8, 6},          {"tq2.5", 0, 8, 7},
        {"tq3.5+qjl", 0, 64, 34},  {"tq4+nc", 0, 128, 66},    {"tq3+qjl+nc", 0, 128, 52},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        tq_kv_codec c = codec(t[i].name, t[i].qjl);
        size_t b = tq_kv_vec_bytes(&c, t[i].d);
        CHECK(b == t[i].bytes, "%s%s d=%d: %zu bytes, expected %zu", t[i].name, t[i].qjl ? "+qjl" : "", t[i].d, b,
              t[i].bytes);
    }
    tq_kv_codec c;
    CHECK(tq_kv_codec_parse("tq5", 0, &c) != TQ_OK, "tq5 must be rejected");
    CHECK(tq_kv_codec_parse("int8", 1, &c) != TQ_OK, "int8+qjl must be rejected");
    CHECK(tq_kv_codec_parse("fp16+nc", 0, &c) != TQ_OK, "fp16+nc must be rejected");
    CHECK(tq_kv_codec_parse("tq3+nc+qjl", 0, &c) == TQ_OK && !strcmp(c.name, "tq3+qjl+nc"), "canonical name %s", c.name);
    /* tq2.5 on d=128 is 2.5 bits of codes + 2 norms */
    c = codec("tq2.5", 0);
    CHECK(fabs(tq_kv_bits(&c, 128) - (2.5 + 32.0 / 128)) < 1e-12, "tq2.5 bits %f", tq_kv_bits(&c, 128));
    /* cache bytes per token: layers * kv_heads * (K + V) */
    tq_kv_config cfg = {.n_layers = 3, .n_kv_heads = 2, .n_heads = 4, .head_dim = 64, .max_tokens = 4, .seed = 1};
    cfg.k = codec("tq3", 0);
    cfg.v = codec("int8", 0);
    tq_kv_cache* kv = NULL;
    CHECK(tq_kv_create(&cfg, &kv) == TQ_OK, "create");
    if (kv) CHECK(tq_kv_bytes_per_token(kv) == 3 * 2 * (26 + 66), "bytes/token %zu", tq_kv_bytes_per_token(kv));
    tq_kv_free(&kv);
    cfg.head_dim = 96;
    CHECK(tq_kv_create(&cfg, &kv) == TQ_ERR_UNSUPPORTED, "tq with head_dim 96 must be refused");
    tq_kv_free(&kv);
}

/* fill a cache with T random tokens (a few outlier channels) and check everything against dequant */
static void test_codec(const char* kname, const char* vname, int qjl, int d, double max_rel_mse)
{
    const int nkv = 2, nh = 4, T = 40;
    tq_kv_config cfg = {.n_layers = 2, .n_kv_heads = nkv, .n_heads = nh, .head_dim = d, .max_tokens = T, .seed = 7};
    cfg.k = codec(kname, qjl);
    cfg.v = codec(vname, 0);
    tq_kv_cache* kv = NULL;
    if (tq_kv_create(&cfg, &kv) != TQ_OK) {
        CHECK(0, "create %s/%s", kname, vname);
        return;
    }
    size_t n = (size_t)T * nkv * d;
    float* k = malloc(n * sizeof(float));
    float* v = malloc(n * sizeof(float));
    float* q = malloc((size_t)T * nh * d * sizeof(float));
    float* out = malloc((size_t)T * nh * d * sizeof(float));
    float* kd = malloc(n * sizeof(float));
    float* vd = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        int ch = (int)(i % d);
        float s = (ch == 3 || ch == d - 2) ? 8.0f : 1.0f; /* outlier channels */
        k[i] = s * grand();
        v[i] = grand();
    }
    for (size_t i = 0; i < (size_t)T * nh * d; i++) q[i] = grand();
    int layer = 1;
    /* append in two batches (calibration happens on the first) */
    CHECK(tq_kv_append(kv, layer, k, v, 25) == TQ_OK, "append");
    CHECK(tq_kv_append(kv, layer, k + (size_t)25 * nkv * d, v + (size_t)25 * nkv * d, T - 25) == TQ_OK, "append 2");
    CHECK(tq_kv_len(kv, layer) == T, "len %d", tq_kv_len(kv, layer));
    CHECK(tq_kv_append(kv, layer, k, v, 1) == TQ_ERR_ARG, "overflow must fail");
    double err = 0, ref = 0, max_score_err = 0;
    for (int t = 0; t < T; t++)
        for (int h = 0; h < nkv; h++) {
            float* kt = kd + ((size_t)t * nkv + h) * d;
            float* vt = vd + ((size_t)t * nkv + h) * d;
            tq_kv_dequant(kv, layer, 0, h, t, kt);
            tq_kv_dequant(kv, layer, 1, h, t, vt);
            const float* k0 = k + ((size_t)t * nkv + h) * d;
            for (int j = 0; j < d; j++) {
                err += (double)(kt[j] - k0[j]) * (kt[j] - k0[j]);
                ref += (double)k0[j] * k0[j];
            }
            /* the rotated-domain score equals the score against the dequantized key */
            const float* qq = q + (size_t)t * nh * d;
            float s = 0, sd = 0;
            tq_kv_score(kv, layer, h, qq, t, &s);
            double nq = 0, nk = 0;
            for (int j = 0; j < d; j++) {
                sd += qq[j] * kt[j];
                nq += qq[j] * qq[j];
                nk += kt[j] * kt[j];
            }
            double e = fabs(s - sd) / sqrt(nq * nk);
            if (e > max_score_err) max_score_err = e;
        }
    double rel = err / ref;
    CHECK(rel <= max_rel_mse, "%s%s d=%d: K relative MSE %.5f > %.5f", kname, qjl ? "+qjl" : "", d, rel, max_rel_mse);
    CHECK(max_score_err < 2e-6, "%s%s: rotated-domain score differs from dequantized score by %.3g", kname,
          qjl ? "+qjl" : "", max_score_err);
    /* attention equals naive softmax attention over the dequantized cache */
    int pos0 = 30, TT = T - pos0;
    float scale = 1.0f / sqrtf((float)d);
    CHECK(tq_kv_attend(kv, layer, q + (size_t)pos0 * nh * d, TT, pos0, scale, out) == TQ_OK, "attend");
    double max_att_err = 0;
    float* sc = malloc((size_t)T * sizeof(float));
    for (int t = 0; t < TT; t++)
        for (int hq = 0; hq < nh; hq++) {
            int g = hq / (nh / nkv), P = pos0 + t + 1;
            const float* qq = q + ((size_t)(pos0 + t) * nh + hq) * d;
            float mx = -1e30f, sum = 0;
            for (int p = 0; p < P; p++) {
                float s = 0;
                for (int j = 0; j < d; j++) s += qq[j] * kd[((size_t)p * nkv + g) * d + j];
                sc[p] = s * scale;
                mx = sc[p] > mx ? sc[p] : mx;
            }
            for (int p = 0; p < P; p++) sum += (sc[p] = expf(sc[p] - mx));
            for (int j = 0; j < d; j++) {
                double a = 0;
                for (int p = 0; p < P; p++) a += sc[p] / sum * vd[((size_t)p * nkv + g) * d + j];
                double e = fabs(a - out[((size_t)t * nh + hq) * d + j]);
                if (e > max_att_err) max_att_err = e;
            }
        }
    CHECK(max_att_err < 1e-4, "%s/%s: attention differs from naive attention over dequantized K/V by %.3g", kname,
          vname, max_att_err);
    printf("ok   %-10s K/%-6s V d=%-3d  K rel.MSE %.5f  score err %.2g  attention err %.2g\n", cfg.k.name, cfg.v.name,
           d, rel, max_score_err, max_att_err);
    free(sc);
    free(k);
    free(v);
    free(q);
    free(out);
    free(kd);
    free(vd);
    tq_kv_free(&kv);
}

/* the outlier split beats the plain codec on keys with strong outlier channels */
static void test_split_helps(void)
{
    const int d = 64, T = 64;
    double e[2];
    const char* names[2] = {"tq2", "tq2.5"};
    for (int w = 0; w < 2; w++) {
        tq_kv_config cfg = {.n_layers = 1, .n_kv_heads = 1, .n_heads = 1, .head_dim = d, .max_tokens = T, .seed = 3};
        cfg.k = codec(names[w], 0);
        cfg.v = codec("fp16", 0);
        tq_kv_cache* kv = NULL;
        tq_kv_create(&cfg, &kv);
        float x[64 * 64], y[64];
        rng = 12345;
        for (int i = 0; i < T * d; i++) x[i] = (i % d < 8 ? 10.0f : 1.0f) * grand();
        tq_kv_append(kv, 0, x, x, T);
        double err = 0, ref = 0;
        for (int t = 0; t < T; t++) {
            tq_kv_dequant(kv, 0, 0, 0, t, y);
            for (int j = 0; j < d; j++) {
                err += (double)(y[j] - x[t * d + j]) * (y[j] - x[t * d + j]);
                ref += (double)x[t * d + j] * x[t * d + j];
            }
        }
        e[w] = err / ref;
        tq_kv_free(&kv);
    }
    CHECK(e[1] < 0.8 * e[0], "tq2.5 (%.4f) should beat tq2 (%.4f) clearly on outlier-channel keys", e[1], e[0]);
    printf("ok   split: tq2 rel.MSE %.4f, tq2.5 %.4f on keys with 8/64 outlier channels\n", e[0], e[1]);
}

/* QJL: inner products unbiased (mean signed error small against its spread) */
static void test_qjl_unbiased(void)
{
    const int d = 64, T = 256;
    tq_kv_config cfg = {.n_layers = 1, .n_kv_heads = 1, .n_heads = 1, .head_dim = d, .max_tokens = T, .seed = 5};
    cfg.k = codec("tq2", 1);
    cfg.v = codec("fp16", 0);
    tq_kv_cache* kv = NULL;
    tq_kv_create(&cfg, &kv);
    float* x = malloc((size_t)T * d * sizeof(float));
    float q[64];
    for (int i = 0; i < T * d; i++) x[i] = grand();
    for (int j = 0; j < d; j++) q[j] = grand();
    tq_kv_append(kv, 0, x, x, T);
    double se = 0, se2 = 0;
    for (int t = 0; t < T; t++) {
        float s;
        tq_kv_score(kv, 0, 0, q, t, &s);
        double ex = 0;
        for (int j = 0; j < d; j++) ex += q[j] * x[t * d + j];
        se += s - ex;
        se2 += (s - ex) * (s - ex);
    }
    double mean = se / T, sd = sqrt(se2 / T - mean * mean);
    CHECK(fabs(mean) < 4 * sd / sqrt(T), "QJL bias %.4f (sd %.4f)", mean, sd);
    printf("ok   qjl: mean inner-product error %.4f, sd %.4f over %d keys\n", mean, sd, T);
    free(x);
    tq_kv_free(&kv);
}

int main(void)
{
    test_bytes();
    test_codec("f32", "f32", 0, 64, 0.0);
    test_codec("fp16", "bf16", 0, 64, 1e-6);
    test_codec("int8", "int8", 0, 64, 2e-3);
    test_codec("tq4", "tq4", 0, 64, 0.02);
    test_codec("tq3", "tq3", 0, 128, 0.06);
    test_codec("tq2", "tq2", 0, 64, 0.2);
    test_codec("tq3.5", "tq3.5", 0, 64, 0.03);
    test_codec("tq2.5", "tq2.5", 0, 64, 0.1);
    test_codec("tq2.5", "tq2.5", 0, 8, 0.3);
    test_codec("tq4", "tq3", 1, 64, 0.06);
    test_codec("tq4+nc", "tq3.5+nc", 0, 64, 0.02);
    test_codec("tq3.5", "int8", 1, 128, 0.1);
    test_split_helps();
    test_qjl_unbiased();
    printf("%s (%d failures)\n", n_failed ? "FAILED" : "ok", n_failed);
    return n_failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
