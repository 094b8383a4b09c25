/* test_codec_gpu.c — the CUDA codecs against the CPU reference (kernels/codec_gpu.cu vs codec_ref.c):
 * for every codec, group sizes and odd shapes (cols 1, 3, 100, 172, 576, 1000, 4096), on random and
 * LLM-like rows (outliers, zero / constant rows, subnormals): GPU bytes == CPU bytes (codebooks, norms
 * and scales exactly; codes may differ on at most 1e-6 of the weights overall, ties), GPU dequantize ==
 * CPU dequantize bit for bit (fp32 and bf16), GPU runs are deterministic, the device-pointer API with
 * bf16 input and row slices, NaN input and corrupt norms give the documented errors.
 * Exit 77 (skipped) without a GPU. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "codec_gpu.h"
#include "dtype.h"

#ifdef TQ_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

static int g_fail = 0;
static double g_code_diffs = 0.0, g_weights = 0.0;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            g_fail++;                                                                              \
        }                                                                                          \
    } while (0)

static uint64_t g_rng = 0x1234567ull;

static uint64_t rnd_u64(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}

static double rnd_unif(void)
{
    return ((double)(rnd_u64() >> 11) + 0.5) / 9007199254740992.0;
}

static float rnd_gauss(void)
{
    return (float)(sqrt(-2.0 * log(rnd_unif())) * cos(6.283185307179586 * rnd_unif()));
}

/* kind 0: N(0,1). 1: LLM-like: per-row scale, 1 % outliers x20, a zero row, a constant row, a row of
 * subnormals and tiny values, values rounded to bf16 (what checkpoints hold). */
static void fill(float* w, int64_t rows, int64_t cols, int kind)
{
    for (int64_t r = 0; r < rows; r++) {
        const float rs = kind ? 0.02f * (float)(0.25 + 2.0 * rnd_unif()) : 1.0f;
        for (int64_t j = 0; j < cols; j++) {
            float v = rnd_gauss() * rs;
            if (kind && rnd_unif() < 0.01) v *= 20.0f;
            if (kind) v = tq_bf16_to_f32(tq_f32_to_bf16(v));
            w[r * cols + j] = v;
        }
        if (kind && rows > 3) {
            if (r == 1)
                for (int64_t j = 0; j < cols; j++) w[r * cols + j] = 0.0f;
            if (r == 2)
                for (int64_t j = 0; j < cols; j++) w[r * cols + j] = 0.125f;
            if (r == 3)
                for (int64_t j = 0; j < cols; j++) w[r * cols + j] = (j % 3 == 0) ? 1e-39f * (float)(j % 7) : 1e-31f * rnd_gauss();
        }
    }
}

/* Unpack code i of part p (b-bit, or trits when b == 0). */
static int code_at(const uint8_t* row, int64_t i, int b)
{
    if (b == 0) {
        unsigned v = row[i / 5];
        for (int64_t t = i % 5; t > 0; t--) v /= 3;
        return (int)(v % 3);
    }
    const int64_t bit = i * b;
    unsigned w = row[bit >> 3];
    if ((bit & 7) + b > 8) w |= (unsigned)row[(bit >> 3) + 1] << 8;
    return (int)((w >> (bit & 7)) & ((1u << b) - 1u));
}

static int code_bits(const tq_qtensor* q, int part)
{
    switch (q->codec.kind) {
    case TQ_CODEC_TQ:
        return q->codec.bits;
    case TQ_CODEC_TQR:
        return part == 3 ? q->codec.rbits : q->codec.bits;
    case TQ_CODEC_BIN1:
        return 1;
    case TQ_CODEC_TER:
        return 0;
    case TQ_CODEC_RTN:
        return q->codec.bits;
    default:
        return 8;
    }
}

static int is_code_part(const tq_qtensor* q, int i)
{
    const char* n = q->part[i].name;
    return (!strcmp(n, "codes") || !strcmp(n, "codes2")) &&
           (q->codec.kind == TQ_CODEC_TQ || q->codec.kind == TQ_CODEC_TQR || q->codec.kind == TQ_CODEC_BIN1 ||
            q->codec.kind == TQ_CODEC_TER || q->codec.kind == TQ_CODEC_RTN);
}

/* Compare GPU vs CPU parts: every non-code part exactly; codes by level. */
static void compare_parts(const tq_qtensor* a, const tq_qtensor* b, const char* tag)
{
    for (int i = 0; i < a->nparts; i++) {
        const tq_qpart* pa = &a->part[i];
        const tq_qpart* pb = &b->part[i];
        if (!is_code_part(a, i)) {
            CHECK(memcmp(pa->data, pb->data, pa->bytes) == 0, "%s: part '%s' differs between GPU and CPU", tag,
                  pa->name);
            continue;
        }
        const int bb = code_bits(a, i);
        int64_t diffs = 0, far = 0;
        for (int64_t r = 0; r < a->rows; r++) {
            const uint8_t* ra = pa->data + (size_t)r * pa->row_bytes;
            const uint8_t* rb = pb->data + (size_t)r * pb->row_bytes;
            if (!memcmp(ra, rb, pa->row_bytes)) continue;
            const int64_t before = diffs;
            for (int64_t j = 0; j < a->cols; j++) {
                int ca = code_at(ra, j, bb), cb = code_at(rb, j, bb);
                if (ca != cb) {
                    diffs++;
                    if (abs(ca - cb) > 1) far++;
                }
            }
            if (diffs == before) far++; /* bytes differ but no code does: padding bits */
        }
        CHECK(far == 0, "%s: part '%s': %lld codes differ by more than one level", tag, pa->name, (long long)far);
        if (diffs) fprintf(stderr, "note %s: part '%s': %lld codes differ by one level\n", tag, pa->name, (long long)diffs);
        g_code_diffs += (double)diffs;
    }
    g_weights += (double)a->rows * (double)a->cols;
}

static void run_case(const char* name, int group, int64_t rows, int64_t cols, int kind, int flags)
{
    char tag[128];
    snprintf(tag, sizeof tag, "%s g%d [%lldx%lld] %s%s", name, group, (long long)rows, (long long)cols,
             kind ? "llm" : "gauss", flags ? " plain-norm" : "");
    tq_codec c;
    if (tq_codec_parse(name, group, &c) != TQ_OK) {
        CHECK(0, "%s: parse: %s", tag, tq_last_error());
        return;
    }
    float* w = malloc((size_t)rows * (size_t)cols * sizeof(float));
    fill(w, rows, cols, kind);
    if (c.kind == TQ_CODEC_FP16 || c.kind == TQ_CODEC_BF16 || c.kind == TQ_CODEC_F32 || c.kind == TQ_CODEC_INT8)
        flags = 0;
    tq_qtensor qc, qg, qg2;
    const uint64_t seed = tq_tensor_seed(42, tag);
    tq_qtensor_alloc(&qc, &c, rows, cols, seed);
    tq_qtensor_alloc(&qg, &c, rows, cols, seed);
    tq_qtensor_alloc(&qg2, &c, rows, cols, seed);
    qc.flags = qg.flags = qg2.flags = flags;
    tq_status rc = tq_quantize_ref(w, &qc, tag);
    CHECK(rc == TQ_OK, "%s: CPU quantize: %s", tag, tq_last_error());
    rc = tq_quantize_gpu(w, &qg, tag);
    CHECK(rc == TQ_OK, "%s: GPU quantize: %s", tag, tq_last_error());
    rc = tq_quantize_gpu(w, &qg2, tag);
    CHECK(rc == TQ_OK, "%s: GPU quantize (2nd): %s", tag, tq_last_error());
    compare_parts(&qg, &qc, tag);
    for (int i = 0; i < qg.nparts; i++)
        CHECK(memcmp(qg.part[i].data, qg2.part[i].data, qg.part[i].bytes) == 0, "%s: GPU not deterministic (part %s)",
              tag, qg.part[i].name);
    /* dequantize the CPU artifact on both sides: bit-identical */
    const size_t n = (size_t)rows * (size_t)cols;
    float* dc = malloc(n * sizeof(float) + 4);
    float* dg = malloc(n * sizeof(float) + 4);
    uint16_t* bc = malloc(n * 2 + 2);
    uint16_t* bg = malloc(n * 2 + 2);
    memset(dg, 0x7f, n * sizeof(float));
    memset(bg, 0x7f, n * 2);
    CHECK(tq_dequantize_ref(&qc, dc) == TQ_OK, "%s: CPU dequantize: %s", tag, tq_last_error());
    CHECK(tq_dequantize_gpu(&qc, dg) == TQ_OK, "%s: GPU dequantize: %s", tag, tq_last_error());
    CHECK(tq_dequantize_bf16_ref(&qc, bc) == TQ_OK, "%s: CPU dequantize bf16: %s", tag, tq_last_error());
    CHECK(tq_dequantize_bf16_gpu(&qc, bg) == TQ_OK, "%s: GPU dequantize bf16: %s", tag, tq_last_error());
    size_t bad = 0, badb = 0;
    for (size_t i = 0; i < n; i++) {
        bad += memcmp(&dc[i], &dg[i], 4) != 0;
        badb += bc[i] != bg[i];
    }
    CHECK(bad == 0, "%s: GPU dequantize differs from CPU in %zu of %zu values", tag, bad, n);
    CHECK(badb == 0, "%s: GPU bf16 dequantize differs from CPU in %zu of %zu values", tag, badb, n);
    free(dc);
    free(dg);
    free(bc);
    free(bg);
    tq_qtensor_release(&qc);
    tq_qtensor_release(&qg);
    tq_qtensor_release(&qg2);
    free(w);
}

#ifdef TQ_HAVE_CUDA
/* Device API: bf16 input quantized on the device == CPU on the same values; dequantize a row slice to
 * bf16 on the device == CPU. */
static void device_api_case(const char* name, int64_t rows, int64_t cols)
{
    char tag[96];
    snprintf(tag, sizeof tag, "dev %s [%lldx%lld]", name, (long long)rows, (long long)cols);
    tq_codec c;
    tq_codec_parse(name, 128, &c);
    const size_t n = (size_t)rows * (size_t)cols;
    float* w = malloc(n * sizeof(float));
    uint16_t* wb = malloc(n * 2);
    fill(w, rows, cols, 1);
    for (size_t i = 0; i < n; i++) {
        wb[i] = tq_f32_to_bf16(w[i]);
        w[i] = tq_bf16_to_f32(wb[i]);
    }
    tq_qtensor qc, qg;
    tq_qtensor_alloc(&qc, &c, rows, cols, 7);
    tq_qtensor_alloc(&qg, &c, rows, cols, 7);
    CHECK(tq_quantize_ref(w, &qc, tag) == TQ_OK, "%s: CPU quantize", tag);
    void* d_w = NULL;
    uint8_t* d_parts[TQ_QT_MAX_PARTS] = {0};
    void* d_out = NULL;
    cudaMalloc(&d_w, n * 2);
    cudaMemcpy(d_w, wb, n * 2, cudaMemcpyHostToDevice);
    for (int i = 0; i < qg.nparts; i++) cudaMalloc((void**)&d_parts[i], qg.part[i].bytes ? qg.part[i].bytes : 1);
    cudaStream_t st;
    cudaStreamCreate(&st);
    tq_status rc = tq_quantize_gpu_dev(st, d_w, TQ_BF16, &qg, d_parts, tag, 1);
    CHECK(rc == TQ_OK, "%s: tq_quantize_gpu_dev: %s", tag, tq_last_error());
    for (int i = 0; i < qg.nparts; i++) cudaMemcpy(qg.part[i].data, d_parts[i], qg.part[i].bytes, cudaMemcpyDeviceToHost);
    compare_parts(&qg, &qc, tag);
    /* dequantize rows [r0, r0 + nr) to bf16 */
    const int64_t r0 = rows / 3, nr = rows - rows / 3 - 1;
    cudaMalloc(&d_out, (size_t)nr * (size_t)cols * 2);
    rc = tq_dequantize_gpu_dev(st, &qg, (const uint8_t* const*)d_parts, r0, nr, d_out, TQ_BF16, 1);
    CHECK(rc == TQ_OK, "%s: tq_dequantize_gpu_dev: %s", tag, tq_last_error());
    uint16_t* og = malloc((size_t)nr * (size_t)cols * 2);
    uint16_t* oc = malloc(n * 2);
    cudaMemcpy(og, d_out, (size_t)nr * (size_t)cols * 2, cudaMemcpyDeviceToHost);
    tq_dequantize_bf16_ref(&qc, oc);
    CHECK(memcmp(og, oc + (size_t)r0 * (size_t)cols, (size_t)nr * (size_t)cols * 2) == 0,
          "%s: device dequantize of rows [%lld, %lld) differs from CPU", tag, (long long)r0, (long long)(r0 + nr));
    cudaStreamDestroy(st);
    cudaFree(d_w);
    cudaFree(d_out);
    for (int i = 0; i < qg.nparts; i++) cudaFree(d_parts[i]);
    free(og);
    free(oc);
    free(w);
    free(wb);
    tq_qtensor_release(&qc);
    tq_qtensor_release(&qg);
}
#endif

static void error_cases(void)
{
    tq_codec c;
    tq_codec_parse("tq4", 128, &c);
    const int64_t rows = 6, cols = 300;
    float* w = malloc((size_t)rows * cols * sizeof(float));
    fill(w, rows, cols, 0);
    w[4 * cols + 77] = NAN;
    tq_qtensor q;
    tq_qtensor_alloc(&q, &c, rows, cols, 1);
    tq_status rc = tq_quantize_gpu(w, &q, "layers.9.mlp.up_proj");
    CHECK(rc == TQ_ERR_NUMERIC, "NaN input: expected TQ_ERR_NUMERIC, got %d", (int)rc);
    CHECK(strstr(tq_last_error(), "layers.9.mlp.up_proj") && strstr(tq_last_error(), "row 4") &&
              strstr(tq_last_error(), "col 77"),
          "NaN message names tensor, row 4, col 77: '%s'", tq_last_error());
    w[4 * cols + 77] = 1e6f; /* group norm beyond fp16 */
    rc = tq_quantize_gpu(w, &q, "big");
    CHECK(rc == TQ_ERR_NUMERIC, "fp16 overflow: expected TQ_ERR_NUMERIC, got %d (%s)", (int)rc, tq_last_error());
    w[4 * cols + 77] = 0.5f;
    CHECK(tq_quantize_gpu(w, &q, "ok") == TQ_OK, "quantize: %s", tq_last_error());
    uint16_t bad = 0x7c00;
    memcpy(q.part[1].data + 2 * q.part[1].row_bytes + 2, &bad, 2);
    float* out = malloc((size_t)rows * cols * sizeof(float));
    rc = tq_dequantize_gpu(&q, out);
    CHECK(rc == TQ_ERR_CORRUPT, "Inf norm: expected TQ_ERR_CORRUPT, got %d", (int)rc);
    free(out);
    free(w);
    tq_qtensor_release(&q);
}

int main(void)
{
    if (!tq_gpu_available()) {
        printf("no GPU: skipped\n");
        return 77;
    }
    static const char* all[] = {"tq1",  "tq2",  "tq3",  "tq4",  "tq1r1", "tq2r1", "tq2r2", "tq3r3", "tq4r4", "bin1",
                                "ter",  "rtn2", "rtn3", "rtn4", "rtn5",  "rtn6",  "rtn8",  "int8",  "fp16",  "bf16",
                                "f32",  NULL};
    static const int64_t shapes[][2] = {{37, 172}, {16, 576}, {9, 1000}, {5, 3}, {4, 1}, {7, 100}, {24, 4096}};
    const int nshapes = (int)(sizeof shapes / sizeof shapes[0]);
    int ncases = 0;
    for (int ci = 0; all[ci]; ci++)
        for (int si = 0; si < nshapes; si++)
            for (int kind = 0; kind < 2; kind++) {
                const int g = (si + kind) % 3 == 0 ? 64 : (si + kind) % 3 == 1 ? 128 : 256;
                run_case(all[ci], g, shapes[si][0], shapes[si][1], kind, 0);
                ncases++;
            }
    /* every group size on the LLM-like 1000-column shape, the plain-norm flag, and a 1M-weight tensor */
    static const char* rot[] = {"tq2", "tq4", "tq4r4", "tq3r3", "bin1", "rtn4", "ter", NULL};
    for (int ci = 0; rot[ci]; ci++)
        for (int g = 64; g <= 256; g *= 2) {
            run_case(rot[ci], g, 13, 1000, 1, 0);
            ncases++;
        }
    run_case("tq3", 128, 21, 576, 1, TQ_QFLAG_PLAIN_NORM);
    run_case("tq4r4", 128, 256, 4096, 1, 0);
    run_case("tq4", 128, 256, 4096, 0, 0);
    ncases += 3;
#ifdef TQ_HAVE_CUDA
    device_api_case("tq4", 40, 1000);
    device_api_case("tq4r4", 33, 576);
    device_api_case("bin1", 20, 172);
    device_api_case("rtn4", 20, 1000);
    device_api_case("ter", 12, 172);
    device_api_case("int8", 9, 100);
#endif
    error_cases();
    const double frac = g_weights > 0 ? g_code_diffs / g_weights : 0.0;
    printf("%d codec cases, %.0f weights, %.0f codes differ by one level (%.2e of weights)\n", ncases, g_weights,
           g_code_diffs, frac);
    CHECK(frac <= 1e-6, "codes differing by one level: %.2e of weights > 1e-6", frac);
    if (g_fail) {
        printf("%d checks FAILED\n", g_fail);
        return EXIT_FAILURE;
    }
    printf("all GPU codec checks passed\n");
    return EXIT_SUCCESS;
}
