/* test_hybrid.c — the hybrid forward pass (Qwen3.5 / Qwen3-Next, pipeline/model.c + kernels/deltanet.h)
 * on a tiny synthetic checkpoint given on the command line (tests/infer_hybrid.sh makes them):
 *   - prefill of T tokens == the same tokens decoded one by one == chunks of 7/5/1 tokens (recurrent
 *     state and conv state carried in the cache), logits to 1e-3 of their largest magnitude. fp32 BLAS
 *     order (sgemv vs sgemm) alone gives up to 4e-4 on the tiny qwen3_next (one ill-conditioned token;
 *     prefill and decode are then equally far from the fp64 numpy logits); a state bug gives O(1);
 *   - tq_kv_reset forgets the recurrent state (same logits bit for bit after a reset);
 *   - a layer split [0, s) + [s, L) chained by hand equals the whole model (state per part);
 *   - the KV cache holds only the full-attention layers (bytes per token) and the state size equals
 *     tq_arch_recurrent_state_elems + one token counter per linear layer;
 *   - a batch at the wrong position is refused (TQ_ERR_ARG).
 * usage: test_hybrid CKPT_DIR [DUMP_PREFIX]. Plain C, prints ok/FAILED lines. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "ops.h"

#include "tq_check.h"

enum { T = 24 };

/* max |a - b| / max |a| over n values */
static double rel_diff(const float* a, const float* b, size_t n)
{
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        s = fmax(s, fabs((double)a[i]));
    }
    return s > 0 ? d / s : d;
}

/* Run tokens in chunks of the given sizes (cycled) from an empty cache. */
static tq_status run_chunks(const tq_model* m, tq_kv_cache* kv, const int* tok, const int* sizes, int nsizes,
                            float* logits)
{
    tq_kv_reset(kv);
    int V = tq_model_vocab(m);
    for (int p = 0, i = 0; p < T; i++) {
        int n = sizes[i % nsizes];
        if (n > T - p) n = T - p;
        tq_status rc = tq_model_forward(m, kv, tok + p, n, p, logits + (size_t)p * V);
        if (rc != TQ_OK) return rc;
        p += n;
    }
    return TQ_OK;
}

int main(int argc, char** argv)
{
    if (argc < 2) {
        printf("usage: test_hybrid CKPT_DIR\n");
        return EXIT_FAILURE;
    }
    tq_ops_set_threads(1);
    tq_wsource* src = NULL;
    tq_model* m = NULL;
    if (tq_wsource_ckpt(argv[1], &src) != TQ_OK || tq_model_load(src, 0, -1, &m) != TQ_OK) {
        printf("FAILED load %s: %s\n", argv[1], tq_last_error());
        return EXIT_FAILURE;
    }
    const tq_arch* a = tq_model_arch(m);
    CHECK(a->n_linear_layers > 0 && a->n_full_layers > 0, "%s is not a hybrid model", argv[1]);
    int V = tq_model_vocab(m), H = tq_model_hidden(m), L = a->n_layers;
    int tok[T];
    for (int i = 0; i < T; i++) tok[i] = (i * 37 + 11) % V;
    float* ref = malloc((size_t)T * V * sizeof(float));
    float* got = malloc((size_t)T * V * sizeof(float));
    float* x = malloc((size_t)T * H * sizeof(float));
    tq_kv_codec f32;
    tq_kv_codec_parse("f32", 0, &f32);
    tq_kv_cache* kv = NULL;
    CHECK(tq_model_kv_create(m, &f32, &f32, T, 1, &kv) == TQ_OK, "kv create: %s", tq_last_error());
    if (!ref || !got || !x || !kv) return EXIT_FAILURE;

    /* sizes */
    size_t want_kv = (size_t)a->n_full_layers * a->n_kv_heads * 2 * a->head_dim * sizeof(float);
    CHECK(tq_kv_bytes_per_token(kv) == want_kv, "KV bytes/token %zu, want %zu (full-attention layers only)",
          tq_kv_bytes_per_token(kv), want_kv);
    size_t want_state = (size_t)tq_arch_recurrent_state_elems(a) + (size_t)a->n_linear_layers;
    CHECK(tq_kv_state_floats(kv) == want_state, "state %zu floats, want %zu", tq_kv_state_floats(kv), want_state);
    printf("ok   %s: %d layers (%d full, %d linear), KV %zu bytes/token (f32), state %zu floats/sequence\n",
           a->model_type, L, a->n_full_layers, a->n_linear_layers, tq_kv_bytes_per_token(kv), tq_kv_state_floats(kv));

    /* prefill vs decode vs chunks */
    int whole[] = {T}, one[] = {1}, mixed[] = {7, 5, 1};
    CHECK(run_chunks(m, kv, tok, whole, 1, ref) == TQ_OK, "prefill: %s", tq_last_error());
    CHECK(run_chunks(m, kv, tok, one, 1, got) == TQ_OK, "decode: %s", tq_last_error());
    if (argc > 2) { /* debugging: DUMP_PREFIX.prefill.f32 / .decode.f32 ([T x V] logits) */
        char fn[4096];
        snprintf(fn, sizeof fn, "%s.prefill.f32", argv[2]);
        FILE* f = fopen(fn, "wb");
        if (f) fwrite(ref, sizeof(float), (size_t)T * V, f), fclose(f);
        snprintf(fn, sizeof fn, "%s.decode.f32", argv[2]);
        f = fopen(fn, "wb");
        if (f) fwrite(got, sizeof(float), (size_t)T * V, f), fclose(f);
    }
    double d1 = rel_diff(ref, got, (size_t)T * V);
    CHECK(d1 < 1e-3, "prefill vs token-by-token decode: rel diff %.3g", d1);
    CHECK(run_chunks(m, kv, tok, mixed, 3, got) == TQ_OK, "chunks: %s", tq_last_error());
    double d2 = rel_diff(ref, got, (size_t)T * V);
    CHECK(d2 < 1e-3, "prefill vs chunks 7/5/1: rel diff %.3g", d2);
    printf("ok   prefill vs decode rel diff %.3g, vs chunks %.3g\n", d1, d2);

    /* reset forgets the state: bit-identical rerun */
    CHECK(run_chunks(m, kv, tok, whole, 1, got) == TQ_OK, "prefill again");
    CHECK(memcmp(ref, got, (size_t)T * V * sizeof(float)) == 0, "prefill after reset differs: state not cleared");

    /* wrong position refused */
    tq_kv_reset(kv);
    CHECK(tq_model_forward(m, kv, tok, 2, 0, got) == TQ_OK, "2 tokens");
    CHECK(tq_model_forward(m, kv, tok, 1, 5, got) == TQ_ERR_ARG, "a batch at position 5 after 2 tokens must fail");

    /* layer split chained by hand (pipeline parallel): [0, s) + [s, L), s inside a linear-attention run */
    int s = 1;
    tq_model *m0 = NULL, *m1 = NULL;
    tq_kv_cache *kv0 = NULL, *kv1 = NULL;
    CHECK(tq_model_load(src, 0, s, &m0) == TQ_OK && tq_model_load(src, s, L, &m1) == TQ_OK, "split load: %s",
          tq_last_error());
    if (m0 && m1) {
        CHECK(tq_model_kv_create(m0, &f32, &f32, T, 1, &kv0) == TQ_OK, "kv0");
        CHECK(tq_model_kv_create(m1, &f32, &f32, T, 1, &kv1) == TQ_OK, "kv1");
        CHECK(tq_kv_bytes_per_token(kv0) + tq_kv_bytes_per_token(kv1) == want_kv, "split KV bytes");
        CHECK(tq_kv_state_floats(kv0) + tq_kv_state_floats(kv1) == want_state, "split state size");
        for (int p = 0; p < T; p += 8) { /* 3 batches of 8 */
            tq_status rc = tq_model_embed(m0, tok + p, 8, x);
            if (rc == TQ_OK) rc = tq_model_layers(m0, kv0, x, 8, p);
            if (rc == TQ_OK) rc = tq_model_layers(m1, kv1, x, 8, p);
            if (rc == TQ_OK) rc = tq_model_head(m1, x, 8, got + (size_t)p * V);
            CHECK(rc == TQ_OK, "split forward: %s", tq_last_error());
        }
        double d3 = rel_diff(ref, got, (size_t)T * V);
        CHECK(d3 < 1e-3, "layer split [0,%d)+[%d,%d) vs whole: rel diff %.3g", s, s, L, d3);
        printf("ok   layer split [0,%d)+[%d,%d) in batches of 8 vs whole prefill: rel diff %.3g\n", s, s, L, d3);
    }
    tq_kv_free(&kv0);
    tq_kv_free(&kv1);
    tq_model_free(&m0);
    tq_model_free(&m1);
    tq_kv_free(&kv);
    tq_model_free(&m);
    tq_wsource_free(&src);
    free(ref);
    free(got);
    free(x);
    printf("%s\n", n_failed ? "FAILED" : "ok   all");
    return n_failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
