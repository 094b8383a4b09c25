/* artifact_fixture.c — writes a small tqpipe artifact holding one tensor per codec (several groups and
 * shapes, rotation tails included) through the public writer API, for the CLI and Python tests.
 *
 *   artifact_fixture OUT_DIR [--level L] [--shard-bytes N]
 *
 * Weights: deterministic Gaussian-like values with a few outliers; quantized by tq_quantize_ref. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "artifact.h"
#include "codec.h"
#include "hash.h"

typedef struct {
    char name[128];
    const char* role;
    const char* codec;
    int group, ndim;
    int64_t shape[3];
} fx_spec;

static int fx_cmp(const void* a, const void* b) { return strcmp(((const fx_spec*)a)->name, ((const fx_spec*)b)->name); }

static void fx_weights(const char* name, float* w, int64_t n)
{
    uint64_t x = tq_xxh64(name, strlen(name), 99) | 1;
    for (int64_t i = 0; i < n; i++) {
        double s = 0;
        for (int k = 0; k < 4; k++) { /* sum of 4 uniforms ~ Gaussian */
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            s += (double)(x >> 11) / 9007199254740992.0 - 0.5;
        }
        w[i] = (float)(s * 0.05 * (i % 97 == 5 ? 8.0 : 1.0));
    }
}

int main(int argc, char** argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: artifact_fixture OUT_DIR [--level L] [--shard-bytes N]\n");
        return 2;
    }
    const char* out = argv[1];
    int level = 0;
    uint64_t shard_bytes = 60000;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--level")) level = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--shard-bytes")) shard_bytes = strtoull(argv[i + 1], NULL, 10);
    }
    fx_spec s[64];
    int n = 0;
    const char* const* names = tq_codec_names();
    const int groups[3] = {64, 128, 256};
    for (int i = 0; names[i]; i++) {
        fx_spec* p = &s[n++];
        memset(p, 0, sizeof *p);
        snprintf(p->name, sizeof p->name, "model.layers.%d.mlp.up_proj.weight", i);
        p->role = "mlp_up";
        p->codec = names[i];
        p->group = groups[i % 3];
        p->ndim = 2;
        p->shape[0] = 7 + i % 4;
        p->shape[1] = 200 + 36 * (i % 5); /* tails of several rotation block sizes */
    }
    fx_spec extra[4] = {{"model.embed_tokens.weight", "embed", "int8", 128, 2, {48, 96, 0}},
                        {"model.layers.1.mlp.down_proj.weight", "mlp_down", "tq4r1", 128, 2, {600, 4096, 0}},
                        {"model.norm.weight", "norm", "f32", 128, 1, {96, 0, 0}},
                        {"model.layers.0.linear_attn.conv1d.weight", "lin_conv", "bf16", 128, 3, {12, 1, 4}}};
    for (int i = 0; i < 4; i++) s[n++] = extra[i]; /* down_proj: 600 rows = 512 + a partial zstd chunk */
    qsort(s, (size_t)n, sizeof *s, fx_cmp);

    uint64_t bytes[64];
    int shard_of[64];
    tq_codec c[64];
    for (int i = 0; i < n; i++) {
        if (tq_codec_parse(s[i].codec, s[i].group, &c[i]) != TQ_OK) goto fail;
        int64_t rows = 1;
        for (int d = 0; d + 1 < s[i].ndim; d++) rows *= s[i].shape[d];
        bytes[i] = tq_codec_bytes(&c[i], rows, s[i].shape[s[i].ndim - 1]);
    }
    int ns = 0;
    if (tq_artifact_assign_shards(bytes, n, shard_bytes, shard_of, &ns) != TQ_OK) goto fail;
    char plan[16384];
    size_t off = (size_t)snprintf(plan, sizeof plan, "# tqpipe plan v1 (fixture)\n");
    for (int i = 0; i < n; i++)
        off += (size_t)snprintf(plan + off, sizeof plan - off, "%s %s:g%d\n", s[i].name, s[i].codec, s[i].group);
    tq_artifact_meta meta = {"{\"model_type\": \"llama\", \"hidden_size\": 96, \"num_hidden_layers\": 1}", plan,
                             "{\"source\": \"fixture\", \"files\": {\"model.safetensors\": \"0000\"}}",
                             "model: fixture\nseed: 99\n", NULL, "fixture-model", level};
    for (int k = 0; k < ns; k++) {
        tq_shard_writer* w = NULL;
        if (tq_shard_create(out, k, ns, &meta, &w) != TQ_OK) goto fail;
        for (int i = 0; i < n; i++) {
            if (shard_of[i] != k) continue;
            int64_t cols = s[i].shape[s[i].ndim - 1], rows = 1;
            for (int d = 0; d + 1 < s[i].ndim; d++) rows *= s[i].shape[d];
            float* wv = malloc((size_t)(rows * cols) * sizeof *wv);
            fx_weights(s[i].name, wv, rows * cols);
            tq_qtensor q;
            tq_status rc = tq_qtensor_alloc(&q, &c[i], rows, cols, tq_tensor_seed(99, s[i].name));
            if (rc == TQ_OK) rc = tq_quantize_ref(wv, &q, s[i].name);
            tq_artifact_desc d = {s[i].name, s[i].role, TQ_BF16, s[i].ndim, {s[i].shape[0], s[i].shape[1], s[i].shape[2]}};
            if (rc == TQ_OK) rc = tq_shard_add(w, &d, &q, NULL);
            tq_qtensor_release(&q);
            free(wv);
            if (rc != TQ_OK) {
                tq_shard_abort(&w);
                goto fail;
            }
        }
        if (tq_shard_commit(&w) != TQ_OK) goto fail;
    }
    if (tq_artifact_write_index(out, ns, &meta) != TQ_OK) goto fail;
    printf("artifact_fixture: %d tensors in %d shards -> %s (zstd level %d)\n", n, ns, out, level);
    return 0;
fail:
    fprintf(stderr, "artifact_fixture: %s\n", tq_last_error());
    return 1;
}
