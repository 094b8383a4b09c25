/* bench_codec_gpu.c — GPU codec throughput (not a test): quantize and dequantize of a rows x cols bf16
 * tensor (default 8192 x 28672, an MLP down/up projection) with tq4, tq4r4, bin1 and rtn4 through the
 * device-pointer API (kernels/codec_gpu.h), as a fraction of the device-to-device copy bandwidth
 * measured in the same run (bytes read + bytes written, both sides).
 *   bench_codec_gpu [--rows R] [--cols C] [--iters N] [--codecs a,b,..] [--json FILE]
 * Timing: CUDA events around each call (check = 0: enqueue only), 3 warm-ups, median of N.
 * Before timing, the first 64 rows of each codec's GPU output are compared with the CPU reference. */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "codec_gpu.h"
#include "dtype.h"

#define CK(x)                                                                                      \
    do {                                                                                           \
        cudaError_t e_ = (x);                                                                      \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "CUDA error %s at %s:%d: %s\n", cudaGetErrorString(e_), __FILE__, __LINE__, #x); \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static int cmp_f(const void* a, const void* b)
{
    float x = *(const float*)a, y = *(const float*)b;
    return x < y ? -1 : x > y;
}

static float median(float* v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_f);
    return n % 2 ? v[n / 2] : 0.5f * (v[n / 2 - 1] + v[n / 2]);
}

static uint64_t g_s = 88172645463325252ull;

static double unif(void)
{
    g_s ^= g_s << 13;
    g_s ^= g_s >> 7;
    g_s ^= g_s << 17;
    return ((double)(g_s >> 11) + 0.5) / 9007199254740992.0;
}

int main(int argc, char** argv)
{
    int64_t rows = 8192, cols = 28672;
    int iters = 20;
    const char* codecs = "tq4,tq4r4,bin1,rtn4";
    const char* json = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rows") && i + 1 < argc) rows = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--cols") && i + 1 < argc) cols = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--codecs") && i + 1 < argc) codecs = argv[++i];
        else if (!strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
        else {
            printf("usage: bench_codec_gpu [--rows R] [--cols C] [--iters N] [--codecs a,b] [--json FILE]\n");
            return !strcmp(argv[i], "--help") ? 0 : 2;
        }
    }
    if (!tq_gpu_available()) {
        fprintf(stderr, "no GPU\n");
        return 77;
    }
    struct cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    const size_t n = (size_t)rows * (size_t)cols;
    /* LLM-like bf16 weights: N(0, 0.02^2) with a per-row scale and 1 % outliers x8; 512 distinct rows tiled */
    const int64_t uniq = rows < 512 ? rows : 512;
    uint16_t* hw = malloc((size_t)uniq * (size_t)cols * 2);
    for (int64_t r = 0; r < uniq; r++) {
        const double rs = 0.02 * (0.5 + unif());
        for (int64_t j = 0; j < cols; j++) {
            double g = sqrt(-2.0 * log(unif())) * cos(6.283185307179586 * unif()) * rs;
            if (unif() < 0.01) g *= 8.0;
            hw[r * cols + j] = tq_f32_to_bf16((float)g);
        }
    }
    void* d_w = NULL;
    void* d_cp = NULL;
    void* d_out = NULL;
    CK(cudaMalloc(&d_w, n * 2));
    CK(cudaMalloc(&d_cp, n * 2));
    CK(cudaMalloc(&d_out, n * 2));
    for (int64_t r = 0; r < rows; r += uniq) {
        const int64_t k = rows - r < uniq ? rows - r : uniq;
        CK(cudaMemcpy((uint16_t*)d_w + (size_t)r * (size_t)cols, hw, (size_t)k * (size_t)cols * 2, cudaMemcpyHostToDevice));
    }
    cudaStream_t st;
    CK(cudaStreamCreate(&st));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    float* t = malloc(sizeof(float) * (size_t)(iters > 0 ? iters : 1));

    /* copy bandwidth: D2D copy of the weights, bytes read + written */
    for (int i = 0; i < 3; i++) CK(cudaMemcpyAsync(d_cp, d_w, n * 2, cudaMemcpyDeviceToDevice, st));
    for (int i = 0; i < iters; i++) {
        CK(cudaEventRecord(e0, st));
        CK(cudaMemcpyAsync(d_cp, d_w, n * 2, cudaMemcpyDeviceToDevice, st));
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        CK(cudaEventElapsedTime(&t[i], e0, e1));
    }
    const double copy_ms = median(t, iters);
    const double copy_gbs = 2.0 * (double)n * 2 / (copy_ms * 1e-3) / 1e9;
    printf("device: %s, %d SMs; tensor %lld x %lld bf16 (%.1f MB)\n", prop.name, prop.multiProcessorCount,
           (long long)rows, (long long)cols, (double)n * 2 / 1e6);
    printf("D2D copy: %.3f ms, %.1f GB/s (read + write)\n", copy_ms, copy_gbs);
    FILE* jf = json ? fopen(json, "w") : NULL;
    if (jf)
        fprintf(jf, "{\"device\": \"%s\", \"rows\": %lld, \"cols\": %lld, \"copy_gbs\": %.1f, \"codecs\": {", prop.name,
                (long long)rows, (long long)cols, copy_gbs);

    printf("%-7s %-10s %9s %9s %10s %8s\n", "codec", "op", "ms", "MB moved", "GB/s", "% copy");
    char list[256];
    snprintf(list, sizeof list, "%s", codecs);
    int first = 1, bad = 0;
    for (char* name = strtok(list, ","); name; name = strtok(NULL, ",")) {
        tq_codec c;
        if (tq_codec_parse(name, 128, &c) != TQ_OK) {
            fprintf(stderr, "%s\n", tq_last_error());
            return 2;
        }
        tq_qtensor q;
        tq_qtensor_alloc(&q, &c, rows, cols, tq_tensor_seed(1, "bench"));
        uint8_t* d_parts[TQ_QT_MAX_PARTS] = {0};
        size_t pbytes = 0;
        for (int i = 0; i < q.nparts; i++) {
            CK(cudaMalloc((void**)&d_parts[i], q.part[i].bytes ? q.part[i].bytes : 1));
            pbytes += q.part[i].bytes;
        }
        /* correctness of a slice: the first 64 rows against the CPU reference */
        {
            const int64_t cr = rows < 64 ? rows : 64;
            if (tq_quantize_gpu_dev(st, d_w, TQ_BF16, &q, d_parts, "bench", 1) != TQ_OK) {
                fprintf(stderr, "quantize: %s\n", tq_last_error());
                return 1;
            }
            tq_qtensor qr;
            tq_qtensor_alloc(&qr, &c, cr, cols, q.seed);
            float* wf = malloc((size_t)cr * (size_t)cols * sizeof(float));
            for (size_t i = 0; i < (size_t)cr * (size_t)cols; i++) wf[i] = tq_bf16_to_f32(hw[i]);
            tq_quantize_ref(wf, &qr, "bench");
            int same = 1;
            for (int i = 0; i < q.nparts; i++) {
                uint8_t* h = malloc(qr.part[i].bytes + 1);
                CK(cudaMemcpy(h, d_parts[i], qr.part[i].bytes, cudaMemcpyDeviceToHost));
                if (memcmp(h, qr.part[i].data, qr.part[i].bytes)) same = 0;
                free(h);
            }
            printf("%-7s check: first %lld rows GPU bytes %s CPU reference\n", name, (long long)cr,
                   same ? "==" : "!=");
            bad += !same;
            free(wf);
            tq_qtensor_release(&qr);
        }
        double ms[2], gbs[2], mb[2];
        for (int op = 0; op < 2; op++) {
            for (int i = -3; i < iters; i++) {
                CK(cudaEventRecord(e0, st));
                tq_status rc = op == 0 ? tq_quantize_gpu_dev(st, d_w, TQ_BF16, &q, d_parts, "bench", 0)
                                       : tq_dequantize_gpu_dev(st, &q, (const uint8_t* const*)d_parts, 0, rows, d_out,
                                                               TQ_BF16, 0);
                if (rc != TQ_OK) {
                    fprintf(stderr, "%s\n", tq_last_error());
                    return 1;
                }
                CK(cudaEventRecord(e1, st));
                CK(cudaEventSynchronize(e1));
                if (i >= 0) CK(cudaEventElapsedTime(&t[i], e0, e1));
            }
            ms[op] = median(t, iters);
            mb[op] = ((double)n * 2 + (double)pbytes) / 1e6;
            gbs[op] = mb[op] * 1e6 / (ms[op] * 1e-3) / 1e9;
            printf("%-7s %-10s %9.3f %9.1f %10.1f %7.1f%%\n", name, op ? "dequant" : "quantize", ms[op], mb[op], gbs[op],
                   100.0 * gbs[op] / copy_gbs);
        }
        if (jf)
            fprintf(jf, "%s\"%s\": {\"quant_ms\": %.4f, \"quant_gbs\": %.1f, \"dequant_ms\": %.4f, \"dequant_gbs\": %.1f, "
                        "\"bytes\": %.0f}",
                    first ? "" : ", ", name, ms[0], gbs[0], ms[1], gbs[1], mb[0] * 1e6);
        first = 0;
        for (int i = 0; i < q.nparts; i++) cudaFree(d_parts[i]);
        tq_qtensor_release(&q);
    }
    if (jf) {
        fprintf(jf, "}}\n");
        fclose(jf);
    }
    cudaFree(d_w);
    cudaFree(d_cp);
    cudaFree(d_out);
    free(hw);
    free(t);
    return bad ? 1 : 0;
}
