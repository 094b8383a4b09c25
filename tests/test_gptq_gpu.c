/* test_gptq_gpu.c — GPTQ on the GPU (kernels/gptq.cu, tq_gptq_quantize_gpu) against the CPU reference
 * (tq_gptq_quantize_ref) on the real stories260K weights (jobs/models/stories260K.bin via
 * pipeline/llama2c.h) with random correlated H (shared random mixing of Gaussian sources plus a few large
 * channels), and on a synthetic 256 x 600 layer (several lazy blocks, rotation tail blocks, a partial
 * rtn group). Checks, per codec over all layers:
 *  - Ω_gpu = tr(ΔW·H·ΔWᵀ) within 2 % of Ω_cpu (rtn2..4, rtn4:g64, int8, tq2..4, tq3:g256, bin1;
 *    act-order for rtn4 and tq3), measured after the normal dequantizer (tq_dequantize_ref);
 *  - Ω_gpu below plain quantization (the codecs the CPU test requires it for);
 *  - the parts GPTQ keeps fixed (tq norms and codebooks, bin1 and int8 scales) equal the CPU's bytes;
 *  - H = I: rtn4 GPTQ on the GPU gives exactly the plain quantizer's bytes;
 *  - two GPU runs give the same bytes; unsupported codec, NaN in H and an indefinite H are errors.
 * Reports the fraction of codes equal to the CPU's, and GPTQ time per layer (GPU vs CPU).
 * Exit 77 (skipped) without a GPU. */
#include <cblas.h> /* defines: cblas_dsyrk */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec_internal.h" /* defines: tq_unpack_bits */
#include "gptq.h"
#include "linalg_gpu.h"
#include "llama2c.h"
#include "sensitivity.h" /* defines: tq_omega, tq_codec_label_parse */

#include "tq_check.h" /* defines: CHECK, n_failed, n_checks */

#define TQ_RAND_SEED 0x2545F4914F6CDD1Dull
#include "tq_rand.h" /* defines: tq_rand_unit, tq_rand_normal */
static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* H = XᵀX/n for X = Z·A scaled per channel (5 % of channels 8x), d x d, in double (cblas_dsyrk) */
static void synth_h(int64_t d, int64_t n, double* h)
{
    int64_t ns = d / 2 + 1;
    double* A = malloc((size_t)(ns * d) * sizeof(double));
    double* Z = malloc((size_t)(n * ns) * sizeof(double));
    double* X = malloc((size_t)(n * d) * sizeof(double));
    double* ch = malloc((size_t)d * sizeof(double));
    for (int64_t i = 0; i < ns; i++)
        for (int64_t j = 0; j < d; j++) A[i * d + j] = tq_rand_normal() / (1.0 + 0.3 * (double)i);
    for (int64_t j = 0; j < d; j++) ch[j] = (tq_rand_unit() < 0.05) ? 8.0 : 0.5 + tq_rand_unit();
    for (int64_t i = 0; i < n * ns; i++) Z[i] = tq_rand_normal();
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)d, (int)ns, 1.0, Z, (int)ns, A, (int)d, 0.0, X,
                (int)d);
    for (int64_t t = 0; t < n; t++)
        for (int64_t j = 0; j < d; j++) X[t * d + j] *= ch[j];
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)d, (int)n, 1.0 / (double)n, X, (int)d, 0.0, h, (int)d);
    for (int64_t a = 0; a < d; a++)
        for (int64_t b = a + 1; b < d; b++) h[b * d + a] = h[a * d + b];
    free(A);
    free(Z);
    free(X);
    free(ch);
}

static double omega_of(const tq_qtensor* q, const float* w, const double* h, float* dq)
{
    size_t n = (size_t)(q->rows * q->cols);
    if (tq_dequantize_ref(q, dq) != TQ_OK) return NAN;
    for (size_t i = 0; i < n; i++) dq[i] = w[i] - dq[i];
    return tq_omega(dq, q->rows, q->cols, h, 0);
}

typedef struct {
    double plain, cpu, gpu, t_cpu, t_gpu;
    int64_t eq, tot;
    int better, n;
} acc;

/* plain, CPU GPTQ and GPU GPTQ of one tensor */
static void run_one(const float* w, int64_t R, int64_t N, const double* h, const tq_codec* c, uint64_t seed,
                    const tq_gptq_opts* go, const char* what, acc* a)
{
    tq_qtensor qp, qc, qg;
    float* dq = malloc((size_t)(R * N) * sizeof(float));
    uint8_t* cc = malloc((size_t)N);
    uint8_t* cg = malloc((size_t)N);
    CHECK(tq_qtensor_alloc(&qp, c, R, N, seed) == TQ_OK && tq_qtensor_alloc(&qc, c, R, N, seed) == TQ_OK &&
              tq_qtensor_alloc(&qg, c, R, N, seed) == TQ_OK,
          "alloc");
    CHECK(tq_quantize_ref(w, &qp, what) == TQ_OK, "plain %s: %s", what, tq_last_error());
    double t0 = now();
    CHECK(tq_gptq_quantize_ref(w, h, go, &qc, what) == TQ_OK, "cpu gptq %s %s: %s", what, c->name, tq_last_error());
    double t1 = now();
    tq_status rc = tq_gptq_quantize_gpu(w, h, go, &qg, what);
    double t2 = now();
    CHECK(rc == TQ_OK, "gpu gptq %s %s: %s", what, c->name, tq_last_error());
    a->t_cpu += t1 - t0;
    a->t_gpu += t2 - t1;
    double op = omega_of(&qp, w, h, dq), oc = omega_of(&qc, w, h, dq), og = omega_of(&qg, w, h, dq);
    CHECK(isfinite(op) && isfinite(oc) && isfinite(og), "%s %s: omega not finite", what, c->name);
    a->plain += op;
    a->cpu += oc;
    a->gpu += og;
    a->better += og < op;
    a->n++;
    /* codes equal to the CPU's; fixed parts identical */
    const tq_qpart* pc = tq_qtensor_part(&qc, "codes");
    const tq_qpart* pg = tq_qtensor_part(&qg, "codes");
    int bits = c->kind == TQ_CODEC_INT8 ? 8 : c->bits;
    for (int64_t r = 0; r < R; r++) {
        tq_unpack_bits(cc, pc->data + (size_t)r * pc->row_bytes, N, bits);
        tq_unpack_bits(cg, pg->data + (size_t)r * pg->row_bytes, N, bits);
        for (int64_t j = 0; j < N; j++) a->eq += cc[j] == cg[j];
        a->tot += N;
    }
    if (c->kind != TQ_CODEC_RTN)
        for (int p = 0; p < qc.nparts; p++)
            if (strcmp(qc.part[p].name, "codes"))
                CHECK(!memcmp(qc.part[p].data, qg.part[p].data, qc.part[p].bytes), "%s %s: part %s differs from the CPU's",
                      what, c->name, qc.part[p].name);
    tq_qtensor_release(&qp);
    tq_qtensor_release(&qc);
    tq_qtensor_release(&qg);
    free(dq);
    free(cc);
    free(cg);
}

#define NC 12
static const char* const codecs[NC] = {"rtn4", "rtn3", "tq4", "tq3", "tq2", "rtn4:g64", "tq3:g256",
                                       "rtn2", "int8", "bin1", "rtn4+ao", "tq3+ao"};
static const int must_beat_plain[NC] = {1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1};

static void report_and_check(const char* title, acc* a)
{
    printf("%s\n%-9s %13s %13s %13s %9s %8s %11s %9s %9s\n", title, "codec", "omega plain", "omega CPU", "omega GPU",
           "GPU/CPU", "improved", "codes==CPU", "t CPU s", "t GPU s");
    for (int c = 0; c < NC; c++) {
        if (!a[c].n) continue;
        double ratio = a[c].gpu / a[c].cpu;
        printf("%-9s %13.6e %13.6e %13.6e %9.4f %4d/%-3d %10.2f%% %9.3f %9.3f\n", codecs[c], a[c].plain, a[c].cpu,
               a[c].gpu, ratio, a[c].better, a[c].n, 100.0 * (double)a[c].eq / (double)a[c].tot, a[c].t_cpu, a[c].t_gpu);
        CHECK(fabs(ratio - 1.0) <= 0.02, "%s %s: GPU omega %.6e not within 2%% of CPU %.6e", title, codecs[c], a[c].gpu,
              a[c].cpu);
        if (must_beat_plain[c])
            CHECK(a[c].gpu < a[c].plain, "%s %s: GPU GPTQ omega %.6e not below plain %.6e", title, codecs[c], a[c].gpu,
                  a[c].plain);
    }
}

static void parse_label(int c, tq_codec* cc, tq_gptq_opts* go)
{
    char name[32];
    snprintf(name, sizeof name, "%s", codecs[c]);
    char* plus = strchr(name, '+');
    tq_gptq_opts_default(go);
    if (plus) {
        *plus = 0;
        go->act_order = 1;
    }
    CHECK(tq_codec_label_parse(name, cc) == TQ_OK, "codec %s", name);
}

int main(void)
{
    if (!tq_gpu_available()) {
        printf("no GPU: skipped\n");
        return 77;
    }
    const char* src = getenv("TQ_SOURCE_DIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/jobs/models/stories260K.bin", src ? src : TQ_SOURCE_DIR);
    tq_l2c* m = NULL;
    if (tq_l2c_open(path, &m) != TQ_OK) {
        fprintf(stderr, "FAILED: cannot open %s: %s\n", path, tq_last_error());
        return EXIT_FAILURE;
    }
    const tq_l2c_config* cfg = tq_l2c_cfg(m);
    const tq_l2c_layout* lay = tq_l2c_lay(m);
    const tq_l2c_block blocks[7] = {TQ_L2C_WQ, TQ_L2C_WK, TQ_L2C_WV, TQ_L2C_WO, TQ_L2C_W1, TQ_L2C_W2, TQ_L2C_W3};
    acc st[NC], sy[NC];
    memset(st, 0, sizeof st);
    memset(sy, 0, sizeof sy);

    /* 1. stories260K layers */
    for (int l = 0; l < cfg->n_layers; l++) {
        double* h_dim = malloc((size_t)cfg->dim * cfg->dim * sizeof(double));
        double* h_att = malloc((size_t)cfg->dim * cfg->dim * sizeof(double));
        double* h_hid = malloc((size_t)cfg->hidden_dim * cfg->hidden_dim * sizeof(double));
        synth_h(cfg->dim, 4096, h_dim);
        synth_h(cfg->dim, 4096, h_att);
        synth_h(cfg->hidden_dim, 4096, h_hid);
        for (int b = 0; b < 7; b++) {
            int64_t R = lay->rows[blocks[b]], N = lay->cols[blocks[b]];
            float* w = malloc((size_t)(R * N) * sizeof(float));
            CHECK(tq_l2c_read(m, blocks[b], l, w, (size_t)(R * N) * sizeof(float)) == TQ_OK, "read: %s", tq_last_error());
            const double* h = blocks[b] == TQ_L2C_W2 ? h_hid : blocks[b] == TQ_L2C_WO ? h_att : h_dim;
            char what[64];
            snprintf(what, sizeof what, "layers.%d.%s", l, tq_l2c_block_name(blocks[b]));
            for (int c = 0; c < NC; c++) {
                tq_codec cc;
                tq_gptq_opts go;
                parse_label(c, &cc, &go);
                run_one(w, R, N, h, &cc, 0x1234 + (uint64_t)l * 7 + (uint64_t)b, &go, what, &st[c]);
            }
            free(w);
        }
        free(h_dim);
        free(h_att);
        free(h_hid);
    }
    report_and_check("GPTQ GPU vs CPU on stories260K (35 linear layers, correlated synthetic H)", st);

    /* 2. synthetic 256 x 600 layer: 5 lazy blocks, rotation tail 64+16+8, a partial rtn group */
    const int64_t R = 256, N = 600;
    float* w = malloc((size_t)(R * N) * sizeof(float));
    double* h = malloc((size_t)(N * N) * sizeof(double));
    for (int64_t i = 0; i < R * N; i++) w[i] = (float)(0.02 * tq_rand_normal() * (i % N == 17 ? 6.0 : 1.0));
    synth_h(N, 2048, h);
    for (int c = 0; c < NC; c++) {
        tq_codec cc;
        tq_gptq_opts go;
        parse_label(c, &cc, &go);
        run_one(w, R, N, h, &cc, 99, &go, "synthetic.weight", &sy[c]);
    }
    report_and_check("GPTQ GPU vs CPU on a synthetic 256 x 600 layer", sy);

    /* 3. H = I: rtn4 GPU GPTQ == plain bytes; determinism; errors */
    {
        tq_codec cc, ct;
        tq_gptq_opts go;
        tq_gptq_opts_default(&go);
        CHECK(tq_codec_parse("rtn4", 0, &cc) == TQ_OK && tq_codec_parse("tq4r4", 0, &ct) == TQ_OK, "codec");
        double* eye = calloc((size_t)(N * N), sizeof(double));
        for (int64_t j = 0; j < N; j++) eye[j * N + j] = 1;
        tq_qtensor a, b, c2;
        CHECK(tq_qtensor_alloc(&a, &cc, R, N, 7) == TQ_OK && tq_qtensor_alloc(&b, &cc, R, N, 7) == TQ_OK &&
                  tq_qtensor_alloc(&c2, &cc, R, N, 7) == TQ_OK,
              "alloc");
        CHECK(tq_quantize_ref(w, &a, "w") == TQ_OK, "plain");
        CHECK(tq_gptq_quantize_gpu(w, eye, &go, &b, "w") == TQ_OK, "gpu eye: %s", tq_last_error());
        int same = 1;
        for (int p = 0; p < a.nparts; p++) same &= !memcmp(a.part[p].data, b.part[p].data, a.part[p].bytes);
        CHECK(same, "rtn4 with H = I: GPU GPTQ bytes differ from plain quantization");
        go.act_order = 1;
        CHECK(tq_gptq_quantize_gpu(w, h, &go, &b, "w") == TQ_OK && tq_gptq_quantize_gpu(w, h, &go, &c2, "w") == TQ_OK,
              "gpu twice");
        same = 1;
        for (int p = 0; p < b.nparts; p++) same &= !memcmp(b.part[p].data, c2.part[p].data, b.part[p].bytes);
        CHECK(same, "GPU GPTQ is not deterministic");
        tq_qtensor_release(&b);
        CHECK(tq_qtensor_alloc(&b, &ct, R, N, 7) == TQ_OK, "alloc");
        CHECK(tq_gptq_quantize_gpu(w, h, &go, &b, "w") == TQ_ERR_ARG, "tq4r4 accepted");
        tq_qtensor_release(&b);
        /* NaN in H, indefinite H (eigenvalue 1 - 5 < 0 survives the 1 % dampening) */
        eye[3 * N + 4] = NAN;
        CHECK(tq_gptq_quantize_gpu(w, eye, &go, &c2, "w.nan") == TQ_ERR_NUMERIC, "NaN H accepted");
        eye[3 * N + 4] = eye[4 * N + 3] = 5.0;
        CHECK(tq_gptq_quantize_gpu(w, eye, &go, &c2, "w.indef") == TQ_ERR_NUMERIC, "indefinite H accepted");
        CHECK(strstr(tq_last_error(), "w.indef") != NULL, "error does not name the tensor: %s", tq_last_error());
        tq_qtensor_release(&a);
        tq_qtensor_release(&c2);
        free(eye);
    }
    free(w);
    free(h);

    /* 4. time per layer: square layers, rtn4 and tq4 (CPU only at 1024 and 2048: it is slow) */
    {
        const int64_t sizes[3] = {1024, 2048, 4096};
        printf("GPTQ time per layer (includes the codec's own quantization and host staging)\n");
        printf("%-12s %-6s %10s %10s\n", "layer", "codec", "GPU s", "CPU s");
        for (int s = 0; s < 3; s++) {
            const int64_t n = sizes[s];
            float* wb = malloc((size_t)(n * n) * sizeof(float));
            double* hb = malloc((size_t)(n * n) * sizeof(double));
            for (int64_t i = 0; i < n * n; i++) wb[i] = (float)(0.02 * tq_rand_normal());
            synth_h(n, 256, hb);
            for (int k = 0; k < 2; k++) {
                tq_codec cc;
                tq_gptq_opts go;
                tq_gptq_opts_default(&go);
                CHECK(tq_codec_parse(k ? "tq4" : "rtn4", 0, &cc) == TQ_OK, "codec");
                tq_qtensor q;
                CHECK(tq_qtensor_alloc(&q, &cc, n, n, 5) == TQ_OK, "alloc");
                double t0 = now();
                CHECK(tq_gptq_quantize_gpu(wb, hb, &go, &q, "bench") == TQ_OK, "gpu bench: %s", tq_last_error());
                double tg = now() - t0, tc = -1;
                if (n <= 2048) {
                    t0 = now();
                    CHECK(tq_gptq_quantize_ref(wb, hb, &go, &q, "bench") == TQ_OK, "cpu bench");
                    tc = now() - t0;
                }
                printf("%5lld x %-5lld %-6s %10.3f %10.3f\n", (long long)n, (long long)n, cc.name, tg, tc);
                tq_qtensor_release(&q);
            }
            free(wb);
            free(hb);
        }
    }
    tq_linalg_gpu_release();
    tq_l2c_free(&m);
    printf("%s (%d failures)\n", n_failed ? "FAILED" : "ok", n_failed);
    return n_failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
