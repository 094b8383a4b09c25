/* fwd_gpu_bench.c — benchmark of the GPU forward pass (pipeline/model_gpu.h) on a realistic-size dense
 * model whose weights are generated in memory (a tq_wsource filling every tensor with deterministic
 * uniform values of std 0.02, norms 1: nothing is written to or read from disk). Default shape: Qwen3-1.7B
 * (hidden 2048, 28 layers, 16 query / 8 KV heads of 128, intermediate 6144, vocab 151936, tied head,
 * q/k norms, rope theta 1e6). Prints:
 *   copy     device-to-device cudaMemcpy bandwidth (read + write bytes / time), the reference for "% HBM"
 *   decode   one token at context CTX (the cache filled with a fixed byte pattern: timing does not depend
 *            on the values) for KV K/V codecs fp16/fp16, tq4/tq4, tq3/tq3, tq4/fp16, tq3/fp16, bf16
 *            weights: ms/token, tokens/s, KV bytes/token (exact codec bytes and as stored on the GPU),
 *            bytes read per token (weights + CTX x KV bytes/token) and that rate as a share of the copy
 *            bandwidth
 *   prefill  PREFILL tokens from position 0 (fp16 KV) with bf16 weights and with tq4 weights kept packed
 *            on the GPU and dequantized per GEMM: tokens/s, TFLOP/s (linear layers 2·params·T, attention
 *            4·d·heads·T(T+1)/2 per layer) and share of PEAK TFLOP/s (default 989.4: H100 SXM dense bf16);
 *            and the CPU path (fp32, OpenBLAS, --cpu-threads threads) on --cpu-tokens tokens as baseline.
 * usage: fwd_gpu_bench [--ctx N] [--prefill N] [--steps N] [--cpu-tokens N] [--cpu-threads N] [--peak TF]
 *                      [--small]   (--small: a 4-layer hidden-256 model for a quick functional run)
 * Not a test (no pass/fail); tests/bench/fwd_gpu_bench.sh runs it. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model.h"
#include "model_gpu.h"

#ifdef TQ_HAVE_CUDA
#include <cuda_runtime.h>
#endif

typedef struct {
    int h, L, nq, nkv, hd, I, V, maxpos;
    char json[2048];
} shape;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static const char* sy_config(void* ctx)
{
    return ((shape*)ctx)->json;
}

static int has_suffix(const char* s, const char* suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static int sy_has(void* ctx, const char* name)
{
    (void)ctx;
    return strstr(name, "_norm.weight") || has_suffix(name, "norm.weight") || strstr(name, "_proj.weight") ||
           has_suffix(name, "embed_tokens.weight");
}

static tq_status sy_shape(void* ctx, const char* name, int64_t* r, int64_t* c)
{
    const shape* s = ctx;
    int64_t h = s->h, qd = (int64_t)s->nq * s->hd, kd = (int64_t)s->nkv * s->hd;
    *r = 1;
    if (strstr(name, "q_norm") || strstr(name, "k_norm")) *c = s->hd;
    else if (has_suffix(name, "norm.weight")) *c = h;
    else if (strstr(name, "q_proj")) *r = qd, *c = h;
    else if (strstr(name, "k_proj") || strstr(name, "v_proj")) *r = kd, *c = h;
    else if (strstr(name, "o_proj")) *r = h, *c = qd;
    else if (strstr(name, "gate_proj") || strstr(name, "up_proj")) *r = s->I, *c = h;
    else if (strstr(name, "down_proj")) *r = h, *c = s->I;
    else if (strstr(name, "embed_tokens")) *r = s->V, *c = h;
    else return tq_fail(TQ_ERR_NOTFOUND, "synthetic source: no tensor %s", name);
    return TQ_OK;
}

static tq_status sy_read(void* ctx, const char* name, float* dst, size_t cap)
{
    int64_t r, c;
    TQ_FORWARD(sy_shape(ctx, name, &r, &c));
    size_t n = (size_t)(r * c);
    if (n > cap) return tq_fail(TQ_ERR_ARG, "synthetic source: %s does not fit", name);
    if (has_suffix(name, "norm.weight")) {
        for (size_t i = 0; i < n; i++) dst[i] = 1.0f;
        return TQ_OK;
    }
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (const char* p = name; *p; p++) x = (x ^ (uint64_t)(unsigned char)*p) * 0x100000001B3ull;
    const float a = 0.02f * sqrtf(3.0f) / 2147483648.0f;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        dst[i] = a * (float)(int32_t)(uint32_t)(x >> 32);
    }
    return TQ_OK;
}

static void sy_close(void* ctx)
{
    (void)ctx;
}

static void make_shape(shape* s, int small)
{
    if (small) {
        *s = (shape){.h = 256, .L = 4, .nq = 4, .nkv = 2, .hd = 64, .I = 768, .V = 4096, .maxpos = 40960};
    } else {
        *s = (shape){.h = 2048, .L = 28, .nq = 16, .nkv = 8, .hd = 128, .I = 6144, .V = 151936, .maxpos = 40960};
    }
    snprintf(s->json, sizeof s->json,
             "{\"architectures\": [\"Qwen3ForCausalLM\"], \"model_type\": \"qwen3\", \"hidden_size\": %d, "
             "\"num_hidden_layers\": %d, \"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"head_dim\": %d, "
             "\"intermediate_size\": %d, \"vocab_size\": %d, \"max_position_embeddings\": %d, \"rms_norm_eps\": 1e-06, "
             "\"rope_theta\": 1000000, \"tie_word_embeddings\": true, \"hidden_act\": \"silu\", \"torch_dtype\": \"bfloat16\"}",
             s->h, s->L, s->nq, s->nkv, s->hd, s->I, s->V, s->maxpos);
}

static void source(shape* s, tq_wsource* w)
{
    memset(w, 0, sizeof *w);
    w->ctx = s;
    snprintf(w->desc, sizeof w->desc, "synthetic qwen3 (hidden %d, %d layers)", s->h, s->L);
    w->config_json = sy_config;
    w->has = sy_has;
    w->shape = sy_shape;
    w->read = sy_read;
    w->close = sy_close;
}

static double linear_params(const shape* s)
{
    double qd = (double)s->nq * s->hd, kd = (double)s->nkv * s->hd;
    return (double)s->L * (2.0 * s->h * qd + 2.0 * s->h * kd + 3.0 * s->h * s->I) + (double)s->V * s->h;
}

/* embedding + layers (no head: a prefill needs the logits of its last token only) */
static double prefill_flops(const shape* s, int T)
{
    return 2.0 * (linear_params(s) - (double)s->V * s->h) * T + (double)s->L * 4.0 * s->hd * s->nq * 0.5 * T * (T + 1.0);
}

static tq_status prefill_pass(tq_gmodel* m, tq_gkv* kv, const int* tok, int T)
{
    TQ_FORWARD(tq_gmodel_embed(m, tok, T));
    TQ_FORWARD(tq_gmodel_layers(m, kv, T, 0));
    return tq_gmodel_sync(m);
}

int main(int argc, char** argv)
{
    int ctx = 32768, steps = 20, cpu_tokens = 128, cpu_threads = 16, small = 0;
    int pre[4] = {512, 2048, 0, 0}, npre = 2, prefill = 2048;
    double peak = 989.4;
    for (int i = 1; i < argc; i++) {
        const char* v = i + 1 < argc ? argv[i + 1] : "0";
        if (!strcmp(argv[i], "--ctx")) ctx = atoi(v), i++;
        else if (!strcmp(argv[i], "--prefill")) { /* N or N,M,... (up to 4) */
            npre = 0;
            for (const char* p = v; *p && npre < 4; p = strchr(p, ',') ? strchr(p, ',') + 1 : p + strlen(p)) pre[npre++] = atoi(p);
            i++;
        }
        else if (!strcmp(argv[i], "--steps")) steps = atoi(v), i++;
        else if (!strcmp(argv[i], "--cpu-tokens")) cpu_tokens = atoi(v), i++;
        else if (!strcmp(argv[i], "--cpu-threads")) cpu_threads = atoi(v), i++;
        else if (!strcmp(argv[i], "--peak")) peak = atof(v), i++;
        else if (!strcmp(argv[i], "--small")) small = 1;
        else {
            fprintf(stderr, "usage: fwd_gpu_bench [--ctx N] [--prefill N] [--steps N] [--cpu-tokens N] [--cpu-threads N] [--peak TF] [--small]\n");
            return 2;
        }
    }
    prefill = 0;
    for (int i = 0; i < npre; i++) prefill = pre[i] > prefill ? pre[i] : prefill;
    if (!tq_gmodel_gpu_present()) {
        printf("no GPU (or a build without CUDA): nothing to measure\n");
        return 77;
    }
#ifdef TQ_HAVE_CUDA
    shape s;
    make_shape(&s, small);
    tq_wsource src;
    source(&s, &src);
    struct cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, 0);
    printf("device   %s, %.1f GiB\n", prop.name, prop.totalGlobalMem / 1073741824.0);
    printf("model    %s: %.3f G linear params (head included), vocab %d\n", src.desc, linear_params(&s) / 1e9, s.V);

    /* copy bandwidth */
    double copy_gbs = 0;
    {
        size_t bytes = (size_t)1 << 31;
        void *a = NULL, *b = NULL;
        if (cudaMalloc(&a, bytes) == cudaSuccess && cudaMalloc(&b, bytes) == cudaSuccess) {
            cudaMemset(a, 1, bytes);
            cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
            cudaEvent_t e0, e1;
            cudaEventCreate(&e0);
            cudaEventCreate(&e1);
            cudaEventRecord(e0, 0);
            for (int r = 0; r < 10; r++) cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
            cudaEventRecord(e1, 0);
            cudaEventSynchronize(e1);
            float ms = 0;
            cudaEventElapsedTime(&ms, e0, e1);
            copy_gbs = 2.0 * bytes * 10 / (ms * 1e-3) / 1e9;
            cudaEventDestroy(e0);
            cudaEventDestroy(e1);
        }
        cudaFree(a);
        cudaFree(b);
        printf("copy     %.1f GB/s (device-to-device cudaMemcpy, 2 GiB, read + write)\n", copy_gbs);
    }

    tq_gmodel_opts go;
    tq_gmodel_opts_init(&go);
    go.bf16 = 1;
    tq_gmodel* gm = NULL;
    double t0 = now();
    if (tq_gmodel_load(&src, 0, -1, &go, &gm) != TQ_OK) {
        fprintf(stderr, "load: %s\n", tq_last_error());
        return 1;
    }
    double wbytes = (double)tq_gmodel_weight_bytes(gm);
    printf("load     bf16 weights %.3f GB on the GPU in %.1f s\n", wbytes / 1e9, now() - t0);
    float* logits = malloc((size_t)(prefill > cpu_tokens ? prefill : cpu_tokens) * s.V * sizeof(float));
    int* tok = malloc((size_t)(prefill > cpu_tokens ? prefill : cpu_tokens) * sizeof(int));
    for (int i = 0; i < (prefill > cpu_tokens ? prefill : cpu_tokens); i++) tok[i] = (int)((i * 7919u + 13u) % (unsigned)s.V);

    /* decode at context ctx */
    printf("\ndecode at context %d, %d steps, bf16 weights (%.3f GB):\n", ctx, steps, wbytes / 1e9);
    printf("| K / V | ms/token | tokens/s | KV bytes/token (codec / on GPU) | KV GB read | GB read/token | GB/s | %% of copy |\n");
    printf("|---|---|---|---|---|---|---|---|\n");
    const char* kvs[][2] = {{"fp16", "fp16"}, {"tq4", "tq4"}, {"tq3", "tq3"}, {"tq4", "fp16"}, {"tq3", "fp16"}};
    for (size_t c = 0; c < sizeof kvs / sizeof kvs[0]; c++) {
        tq_kv_codec kc, vc;
        tq_kv_codec_parse(kvs[c][0], 0, &kc);
        tq_kv_codec_parse(kvs[c][1], 0, &vc);
        tq_gkv* kv = NULL;
        if (tq_gmodel_kv_create(gm, &kc, &vc, ctx + steps + 2, 42, &kv) != TQ_OK || tq_gkv_bench_fill(kv, ctx) != TQ_OK) {
            printf("| %s / %s | failed: %s |\n", kvs[c][0], kvs[c][1], tq_last_error());
            tq_gkv_free(&kv);
            continue;
        }
        /* warm-up step, then timed steps */
        tq_status rc = tq_gmodel_forward(gm, kv, tok, 1, ctx, logits);
        double ta = now();
        for (int i = 0; rc == TQ_OK && i < steps; i++) rc = tq_gmodel_forward(gm, kv, tok + 1 + (i % 8), 1, ctx + 1 + i, logits);
        double dt = (now() - ta) / steps;
        if (rc != TQ_OK) {
            printf("| %s / %s | failed: %s |\n", kvs[c][0], kvs[c][1], tq_last_error());
        } else {
            double kvb = (double)tq_gkv_device_bytes_per_token(kv) * (ctx + 1 + steps / 2.0);
            double rd = wbytes + kvb;
            printf("| %s / %s | %.3f | %.1f | %zu / %zu | %.3f | %.3f | %.0f | %.1f %% |\n", kvs[c][0], kvs[c][1], dt * 1e3, 1.0 / dt,
                   tq_gkv_bytes_per_token(kv), tq_gkv_device_bytes_per_token(kv), kvb / 1e9, rd / 1e9, rd / dt / 1e9,
                   100.0 * rd / dt / 1e9 / copy_gbs);
        }
        tq_gkv_free(&kv);
    }

    /* prefill */
    printf("\nprefill from position 0 (embedding + layers, no head), fp16 KV, best of 3; FLOP = 2 x layer params x T + "
           "attention 4 d heads T(T+1)/2 per layer; peak assumed %.1f TFLOP/s:\n", peak);
    printf("| weights | GB on GPU | tokens | TFLOP/pass | s/pass | tokens/s | TFLOP/s | %% of peak |\n|---|---|---|---|---|---|---|---|\n");
    for (int pass = 0; pass < 2; pass++) {
        tq_gmodel* m = gm;
        if (pass == 1) {
            tq_gmodel_opts po;
            tq_gmodel_opts_init(&po);
            po.packed = "tq4";
            po.bf16 = 1; /* embeddings and head in bf16, linear weights packed */
            m = NULL;
            if (tq_gmodel_load(&src, 0, -1, &po, &m) != TQ_OK) {
                printf("| tq4 packed | failed: %s |\n", tq_last_error());
                break;
            }
        }
        tq_kv_codec f16;
        tq_kv_codec_parse("fp16", 0, &f16);
        for (int pi = 0; pi < npre; pi++) {
            int T = pre[pi];
            tq_gkv* kv = NULL;
            tq_status rc = tq_gmodel_kv_create(m, &f16, &f16, T, 42, &kv);
            if (rc == TQ_OK) rc = prefill_pass(m, kv, tok, T); /* warm-up */
            double best = 1e30;
            for (int r = 0; rc == TQ_OK && r < 3; r++) {
                tq_gkv_reset(kv);
                double ta = now();
                rc = prefill_pass(m, kv, tok, T);
                double dt = now() - ta;
                if (dt < best) best = dt;
            }
            if (rc != TQ_OK)
                printf("| %s | failed: %s |\n", pass ? "tq4 packed" : "bf16", tq_last_error());
            else
                printf("| %s | %.3f | %d | %.2f | %.4f | %.0f | %.1f | %.1f %% |\n", pass ? "tq4 (packed, dequantized per GEMM)" : "bf16",
                       tq_gmodel_weight_bytes(m) / 1e9, T, prefill_flops(&s, T) / 1e12, best, T / best,
                       prefill_flops(&s, T) / best / 1e12, 100.0 * prefill_flops(&s, T) / best / 1e12 / peak);
            tq_gkv_free(&kv);
        }
        if (pass == 1) tq_gmodel_free(&m);
    }
    tq_gmodel_free(&gm);

    /* CPU baseline */
    if (cpu_tokens > 0) {
        tq_ops_set_threads(cpu_threads);
        tq_model* cm = NULL;
        t0 = now();
        if (tq_model_load(&src, 0, -1, &cm) != TQ_OK) {
            printf("CPU load failed: %s\n", tq_last_error());
        } else {
            double tl = now() - t0;
            tq_kv_codec f16;
            tq_kv_codec_parse("fp16", 0, &f16);
            tq_kv_cache* kv = NULL;
            tq_status rc = tq_model_kv_create(cm, &f16, &f16, cpu_tokens, 42, &kv);
            double ta = now();
            float* x = malloc((size_t)cpu_tokens * s.h * sizeof(float));
            if (rc == TQ_OK) rc = x ? tq_model_embed(cm, tok, cpu_tokens, x) : TQ_ERR_NOMEM;
            if (rc == TQ_OK) rc = tq_model_layers(cm, kv, x, cpu_tokens, 0);
            double dt = now() - ta;
            free(x);
            if (rc == TQ_OK)
                printf("\nCPU baseline: fp32 weights (loaded in %.1f s), OpenBLAS %d threads, prefill (no head) of %d tokens: %.3f s, "
                       "%.1f tokens/s, %.3f TFLOP/s\n", tl, cpu_threads, cpu_tokens, dt, cpu_tokens / dt,
                       prefill_flops(&s, cpu_tokens) / dt / 1e12);
            else
                printf("CPU forward failed: %s\n", tq_last_error());
            tq_kv_free(&kv);
            tq_model_free(&cm);
        }
    }
    free(logits);
    free(tok);
    return 0;
#else
    return 77;
#endif
}
