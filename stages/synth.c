/* synth.c — `tqpipe synth`: write a synthetic Hugging Face checkpoint with the exact tensor inventory of
 * a config.json (every layer, every expert) but its widths divided by a scale S, so a 122B-shaped model
 * fits in ~100 MB for structural tests (sharding, resume, descriptor checks).
 *
 *   tqpipe synth --config jobs/configs/qwen3.5-122b-a10b.json --scale 64 --seed 1 --shard-size 20M out/
 *
 * Output: OUT/config.json (the input config with hidden/intermediate/head widths divided by S, so the
 * descriptor of OUT equals the checkpoint) and OUT/model.safetensors or model-0000k-of-0000n.safetensors
 * + model.safetensors.index.json (pipeline/st_writer.h).
 *
 * Weights look like real LLM weights: a Gaussian bulk with std ~ 1/sqrt(fan_in), a per-row scale spread
 * (log-normal), a few outlier input channels (the same channel indices in every matrix with that input
 * width, as real models have in the hidden dimension), rare large single elements, RMSNorm weights near
 * 1, small biases, DeltaNet A_log / dt_bias / conv weights in plausible ranges. Every value is a pure
 * function of (seed, tensor name, element index) through a counter-based hash (XXH3 + splitmix64), so
 * the bytes do not depend on write order or chunking, and the same seed gives identical files.
 * Memory is bounded: tensors are generated and written in row chunks of at most 4 MiB of fp32. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arch.h"      /* defines: tq_arch_from_json_layout, tq_arch */
#include "commands.h"
#include "fileio.h"    /* defines: tq_mkdirs, tq_write_file_atomic, tq_read_file */
#include "hash.h"      /* defines: tq_xxh64 */
#include "st_writer.h" /* defines: tq_st_writer_* */
#include "status.h"

#define SYNTH_CHUNK_FLOATS ((int64_t)1 << 20) /* 4 MiB of fp32 per write */

// ------------------------------------------------------------------------------------------------
// counter-based random numbers

static inline uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static inline double unif(uint64_t key, uint64_t i) /* (0, 1) */
{
    return ((double)(mix64(key ^ mix64(i)) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

/* Box-Muller on the pair (2j, 2j+1): element 2j takes the cosine, 2j+1 the sine of the same draw, so
 * each element is still a pure function of (key, i) while the costly log/sqrt is shared by a pair. */
typedef struct {
    uint64_t pair;
    double c, s;
} gauss_cache;

static inline double gauss_c(uint64_t key, uint64_t i, gauss_cache* gc)
{
    uint64_t j = i >> 1;
    if (gc->pair != j) {
        uint64_t h = mix64(key ^ mix64(j));
        double u1 = ((double)(h >> 32) + 0.5) * (1.0 / 4294967296.0);
        double u2 = (double)(h & 0xffffffffu) * (1.0 / 4294967296.0);
        double r = sqrt(-2.0 * log(u1));
        gc->c = r * cos(6.283185307179586 * u2);
        gc->s = r * sin(6.283185307179586 * u2);
        gc->pair = j;
    }
    return i & 1 ? gc->s : gc->c;
}

static inline double gauss(uint64_t key, uint64_t i)
{
    gauss_cache gc = {UINT64_MAX, 0, 0};
    return gauss_c(key, i, &gc);
}

typedef struct {
    uint64_t seed;
    uint64_t key;      /* per tensor */
    const float* cs;   /* [cols] input channel scales */
    tq_role role;
    int is_alog;       /* linear_attn.A_log */
    int zero_norm;     /* zero-centred RMSNorm (x * (1 + w)): Qwen3.5 / Qwen3-Next store w near 0 */
    int64_t rows, cols;
    double sigma;
} gen;

/* Input channel scales: 1 + cols/512 outlier channels (x 6..20) per input width, chosen by a hash of
 * (seed, width, j), so every matrix with the same input width (the hidden size, as in real models)
 * has its outliers in the same channels. */
static void chan_scales(uint64_t chan_key, int64_t cols, float* cs)
{
    for (int64_t c = 0; c < cols; c++) cs[c] = 1.0f;
    int64_t k = 1 + cols / 512;
    for (int64_t j = 0; j < k && cols >= 16; j++) {
        uint64_t h = mix64(chan_key ^ mix64((uint64_t)cols * 1315423911u + (uint64_t)j));
        cs[h % (uint64_t)cols] = (float)(6.0 + 14.0 * unif(chan_key ^ 0x5bd1e995u, (uint64_t)j));
    }
}

static void gen_rows(const gen* g, int64_t row0, int64_t nrows, float* out)
{
    const int64_t cols = g->cols;
    for (int64_t r = row0; r < row0 + nrows; r++) {
        float* o = out + (r - row0) * cols;
        double rs = exp(0.35 * gauss(g->key ^ 0x726f77ull, (uint64_t)r)); /* per-row scale spread */
        gauss_cache gc = {UINT64_MAX, 0, 0};
        for (int64_t c = 0; c < cols; c++) {
            uint64_t idx = (uint64_t)r * (uint64_t)cols + (uint64_t)c;
            double z = gauss_c(g->key, idx, &gc), v;
            switch (g->role) {
            case TQ_ROLE_NORM:
                v = (g->zero_norm ? 0.0 : 1.0) + 0.05 * z;
                break;
            case TQ_ROLE_ATTN_BIAS:
                v = 0.02 * z;
                break;
            case TQ_ROLE_LIN_PARAM: /* A_log ~ log U(1,16); dt_bias ~ small */
                v = g->is_alog ? log(1.0 + 15.0 * unif(g->key, idx)) : 0.5 * z;
                break;
            case TQ_ROLE_LIN_CONV:
                v = 0.5 * z * g->sigma;
                break;
            case TQ_ROLE_EMBED:
                v = 0.02 * z * rs;
                break;
            default: /* linear layers */
                v = g->sigma * z * rs * g->cs[c];
                if (unif(g->key ^ 0x6f75746cull, idx) < 1e-4) v *= 8.0; /* rare heavy elements */
                break;
            }
            o[c] = (float)v;
        }
    }
}

// ------------------------------------------------------------------------------------------------
// options

static void synth_help(FILE* f)
{
    fprintf(f,
            "usage: tqpipe synth --config CONFIG.json [--scale S] [--seed N] [--dtype bf16|f16|f32]\n"
            "                    [--shard-size BYTES] [--scale-vocab] [--fused-experts] OUT_DIR\n\n"
            "Write a synthetic Hugging Face checkpoint with the exact tensor inventory of CONFIG.json (every\n"
            "layer, every expert, same tensor names) but hidden, intermediate, expert and head widths divided\n"
            "by S (rounded up, at least 1; attention head_dim at least 8 and even). Head, layer and expert\n"
            "counts and the vocabulary are kept, so the inventory is exact; --scale-vocab divides the\n"
            "vocabulary by S too (smaller files, same tensor names). OUT_DIR/config.json is the scaled\n"
            "config: the descriptor of OUT_DIR equals the checkpoint. Weights are deterministic per seed\n"
            "(a counter-based hash of seed, tensor name and element index), with a Gaussian bulk, per-row\n"
            "scale spread, a few outlier input channels, and norms near 1 (near 0 for the\n"
            "zero-centred norms of qwen3_5 / qwen3_5_moe / qwen3_next).\n\n"
            "options:\n"
            "  --config FILE      config.json (top level or Qwen3.5 VLM wrapper with text_config)\n"
            "  --scale S          width divisor (default 1: full size)\n"
            "  --seed N           weight seed (default 1)\n"
            "  --dtype T          bf16 (default), f16 or f32\n"
            "  --shard-size B     max bytes per safetensors file, suffix K/M/G allowed (default 2G);\n"
            "                     0 writes a single model.safetensors\n"
            "  --scale-vocab      divide vocab_size by S as well\n"
            "  --fused-experts    store MoE experts as 3-D mlp.experts.gate_up_proj / down_proj\n"
            "                     (transformers >= 5 layout) instead of per-expert tensors\n\n"
            "example (the 122B-A10B structural test case: 108.7 MB of tensors in 6 shards, 118 MB on disk;\n"
            "with --scale-vocab 61.8 MB):\n"
            "  tqpipe synth --config jobs/configs/qwen3.5-122b-a10b.json --scale 64 --seed 1 \\\n"
            "               --shard-size 20M /tmp/synth122b\n");
}

static int parse_bytes(const char* s, uint64_t* out)
{
    char* end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0) return -1;
    double m = 1;
    if (*end == 'K' || *end == 'k') m = 1e3, end++;
    else if (*end == 'M' || *end == 'm') m = 1e6, end++;
    else if (*end == 'G' || *end == 'g') m = 1e9, end++;
    if (*end == 'B' || *end == 'b') end++;
    if (*end) return -1;
    *out = (uint64_t)(v * m);
    return 0;
}

static int64_t scaled(int64_t x, int64_t s)
{
    int64_t v = (x + s - 1) / s;
    return v < 1 ? 1 : v;
}

/* Set an integer field in the text config object. */
static void set_int(json_t* o, const char* k, int64_t v) { json_object_set_new(o, k, json_integer(v)); }

/* Build the scaled config text. The original arch gives the effective values (defaults resolved). */
static tq_status scale_config(const char* text, const tq_arch* a, int64_t s, int scale_vocab, const char* dtype_name,
                              uint64_t seed, const char* src_name, char** out)
{
    json_error_t err;
    json_t* root = json_loads(text, 0, &err);
    if (!root) return tq_fail(TQ_ERR_FORMAT, "config: invalid JSON at line %d: %s", err.line, err.text);
    json_t* tc = json_object_get(root, "text_config");
    if (!json_is_object(tc)) tc = root;
    set_int(tc, "hidden_size", scaled(a->hidden, s));
    {
        /* attention head width: at least 8 (or the original when smaller) and even, so partial RoPE
         * (rotary dim = head_dim x partial_rotary_factor, 0.25 for Qwen3.5) keeps an even rotary width */
        int64_t hd = scaled(a->head_dim, s), lo = a->head_dim < 8 ? a->head_dim : 8;
        if (hd < lo) hd = lo;
        if (hd % 2 && hd < a->head_dim) hd++;
        set_int(tc, "head_dim", hd);
    }
    if (a->intermediate > 0 || json_object_get(tc, "intermediate_size"))
        set_int(tc, "intermediate_size", a->intermediate > 0 ? scaled(a->intermediate, s) : 0);
    if (a->n_experts > 0) set_int(tc, "moe_intermediate_size", scaled(a->moe_intermediate, s));
    if (a->shared_intermediate > 0) set_int(tc, "shared_expert_intermediate_size", scaled(a->shared_intermediate, s));
    if (a->lin_k_heads > 0) {
        set_int(tc, "linear_key_head_dim", scaled(a->lin_k_dim, s));
        set_int(tc, "linear_value_head_dim", scaled(a->lin_v_dim, s));
    }
    if (scale_vocab) set_int(tc, "vocab_size", scaled(a->vocab, s));
    json_t* note = json_object();
    json_object_set_new(note, "source", json_string(src_name));
    json_object_set_new(note, "scale", json_integer(s));
    json_object_set_new(note, "scale_vocab", json_boolean(scale_vocab));
    json_object_set_new(note, "seed", json_integer((json_int_t)seed));
    json_object_set_new(note, "dtype", json_string(dtype_name));
    json_object_set_new(root, "_tqpipe_synth", note);
    char* dumped = json_dumps(root, JSON_INDENT(2));
    json_decref(root);
    if (!dumped) return tq_fail(TQ_ERR_NOMEM, "config: out of memory");
    size_t n = strlen(dumped);
    *out = malloc(n + 2);
    if (!*out) {
        free(dumped);
        return tq_fail(TQ_ERR_NOMEM, "config: out of memory");
    }
    memcpy(*out, dumped, n);
    (*out)[n] = '\n';
    (*out)[n + 1] = 0;
    free(dumped);
    return TQ_OK;
}

// ------------------------------------------------------------------------------------------------
// writing

typedef struct {
    const char* config;
    const char* out;
    int64_t scale;
    uint64_t seed;
    tq_dtype dtype;
    uint64_t shard;
    int scale_vocab, fused;
} synth_opts;

static tq_status synth_run(const synth_opts* o)
{
    tq_status rc = TQ_OK;
    char *text = NULL, *scaled_text = NULL, *cfg_path = NULL;
    float *buf = NULL, *cs = NULL;
    tq_arch *a0 = NULL, *a = NULL;
    tq_st_writer* w = NULL;
    size_t len = 0;
    struct timespec ts0, ts1;
    clock_gettime(CLOCK_MONOTONIC, &ts0);

    TQ_CHECK_GOTO(tq_read_file(o->config, &text, &len), out);
    rc = tq_arch_from_json_layout(text, o->fused, &a0);
    if (rc != TQ_OK) {
        char msg[2048];
        snprintf(msg, sizeof msg, "%s", tq_last_error());
        rc = tq_fail(rc, "%s: %s", o->config, msg);
        goto out;
    }
    {
        const char* base = strrchr(o->config, '/');
        base = base ? base + 1 : o->config;
        TQ_CHECK_GOTO(scale_config(text, a0, o->scale, o->scale_vocab, tq_dtype_name(o->dtype), o->seed, base,
                                   &scaled_text), out);
    }
    rc = tq_arch_from_json_layout(scaled_text, o->fused, &a);
    TQ_GOTO_FAIL(rc != TQ_OK, rc, out, "synth: the scaled config does not parse (%s); try a smaller --scale",
                 tq_last_error());
    TQ_CHECK_GOTO(tq_mkdirs(o->out), out);
    TQ_CHECK_GOTO(tq_st_writer_create_dir(o->out, o->shard, &w), out);
    {
        char sv[32];
        snprintf(sv, sizeof sv, "%" PRIu64, o->seed);
        TQ_CHECK_GOTO(tq_st_writer_set_metadata(w, "tqpipe_synth_seed", sv), out);
        snprintf(sv, sizeof sv, "%" PRId64, o->scale);
        TQ_CHECK_GOTO(tq_st_writer_set_metadata(w, "tqpipe_synth_scale", sv), out);
    }
    for (int64_t i = 0; i < a->n_tensors; i++) {
        const tq_arch_tensor* t = &a->tensors[i];
        TQ_CHECK_GOTO(tq_st_writer_add(w, t->name, o->dtype, t->ndim, t->shape), out);
    }
    TQ_CHECK_GOTO(tq_st_writer_begin(w), out);

    int64_t max_cols = 1;
    for (int64_t i = 0; i < a->n_tensors; i++)
        if (tq_arch_tensor_cols(&a->tensors[i]) > max_cols) max_cols = tq_arch_tensor_cols(&a->tensors[i]);
    int64_t cap = SYNTH_CHUNK_FLOATS > max_cols ? SYNTH_CHUNK_FLOATS : max_cols;
    buf = malloc((size_t)cap * sizeof *buf);
    cs = malloc((size_t)max_cols * sizeof *cs);
    TQ_GOTO_FAIL(!buf || !cs, TQ_ERR_NOMEM, out, "synth: out of memory (%" PRId64 " floats)", cap);

    uint64_t chan_key = mix64(o->seed ^ 0x6368616e6e656cull);
    for (int64_t i = 0; i < a->n_tensors; i++) {
        const tq_arch_tensor* t = &a->tensors[i];
        gen g = {0};
        g.seed = o->seed;
        g.key = tq_xxh64(t->name, strlen(t->name), o->seed);
        chan_scales(chan_key, tq_arch_tensor_cols(t), cs);
        g.cs = cs;
        g.role = t->role;
        g.rows = tq_arch_tensor_rows(t);
        g.cols = tq_arch_tensor_cols(t);
        size_t ln = strlen(t->name);
        g.is_alog = ln >= 5 && !strcmp(t->name + ln - 5, "A_log");
        /* The hybrid families apply norms as x * (1 + w), except the DeltaNet gated norm (plain w). */
        g.zero_norm = (!strcmp(a->model_type, "qwen3_5") || !strcmp(a->model_type, "qwen3_5_moe") ||
                       !strcmp(a->model_type, "qwen3_next")) &&
                      !strstr(t->name, "linear_attn.norm.");
        /* fan-in: cols for matrices; conv1d has K taps per channel */
        g.sigma = 1.0 / sqrt((double)g.cols);
        int64_t step = cap / g.cols;
        if (step < 1) step = 1;
        for (int64_t r0 = 0; r0 < g.rows; r0 += step) {
            int64_t nr = g.rows - r0 < step ? g.rows - r0 : step;
            gen_rows(&g, r0, nr, buf);
            TQ_CHECK_GOTO(tq_st_writer_write_rows_f32(w, t->name, r0, nr, buf, nr * g.cols), out);
        }
    }
    TQ_CHECK_GOTO(tq_st_writer_finish(w), out);
    {
        size_t n = strlen(o->out) + 16;
        cfg_path = malloc(n);
        TQ_GOTO_FAIL(!cfg_path, TQ_ERR_NOMEM, out, "synth: out of memory");
        snprintf(cfg_path, n, "%s/config.json", o->out);
        TQ_CHECK_GOTO(tq_write_file_atomic(cfg_path, scaled_text, strlen(scaled_text)), out);
    }
    clock_gettime(CLOCK_MONOTONIC, &ts1);
    {
        double secs = (double)(ts1.tv_sec - ts0.tv_sec) + 1e-9 * (double)(ts1.tv_nsec - ts0.tv_nsec);
        uint64_t bytes = tq_st_writer_total_bytes(w);
        char desc[512];
        printf("synth: %s\n", tq_arch_describe(a, desc, sizeof desc));
        printf("synth: wrote %" PRId64 " tensors, %" PRId64 " parameters, %.1f MB (%s) in %d file(s) to %s in %.2f s"
               " (%.0f MB/s)\n",
               a->n_tensors, tq_arch_param_count(a), (double)bytes / 1e6, tq_dtype_name(o->dtype),
               tq_st_writer_file_count(w), o->out, secs, secs > 0 ? (double)bytes / 1e6 / secs : 0.0);
    }
out:
    tq_st_writer_free(&w);
    tq_arch_free(&a0);
    tq_arch_free(&a);
    free(text);
    free(scaled_text);
    free(cfg_path);
    free(buf);
    free(cs);
    return rc;
}

int tq_cmd_synth(int argc, char** argv)
{
    synth_opts o = {0};
    o.scale = 1;
    o.seed = 1;
    o.dtype = TQ_BF16;
    o.shard = 2000000000ull;
    for (int i = 1; i < argc; i++) {
        const char* a = argv[i];
        const char* v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            synth_help(stdout);
            return 0;
        } else if (!strcmp(a, "--config") && v) {
            o.config = v;
            i++;
        } else if (!strcmp(a, "--scale") && v) {
            char* end;
            o.scale = strtoll(v, &end, 10);
            if (*end || o.scale < 1 || o.scale > 1000000) {
                fprintf(stderr, "tqpipe synth: --scale must be an integer >= 1 (got '%s')\n", v);
                return 2;
            }
            i++;
        } else if (!strcmp(a, "--seed") && v) {
            char* end;
            o.seed = strtoull(v, &end, 10);
            if (*end || !*v) {
                fprintf(stderr, "tqpipe synth: --seed must be a non-negative integer (got '%s')\n", v);
                return 2;
            }
            i++;
        } else if (!strcmp(a, "--dtype") && v) {
            if (!strcmp(v, "bf16")) o.dtype = TQ_BF16;
            else if (!strcmp(v, "f16") || !strcmp(v, "fp16")) o.dtype = TQ_F16;
            else if (!strcmp(v, "f32") || !strcmp(v, "fp32")) o.dtype = TQ_F32;
            else {
                fprintf(stderr, "tqpipe synth: --dtype must be bf16, f16 or f32 (got '%s')\n", v);
                return 2;
            }
            i++;
        } else if (!strcmp(a, "--shard-size") && v) {
            if (parse_bytes(v, &o.shard)) {
                fprintf(stderr, "tqpipe synth: --shard-size must be a byte count like 500M (got '%s')\n", v);
                return 2;
            }
            i++;
        } else if (!strcmp(a, "--scale-vocab")) {
            o.scale_vocab = 1;
        } else if (!strcmp(a, "--fused-experts")) {
            o.fused = 1;
        } else if (a[0] == '-') {
            fprintf(stderr, "tqpipe synth: unknown option or missing value: %s\n\n", a);
            synth_help(stderr);
            return 2;
        } else if (!o.out) {
            o.out = a;
        } else {
            fprintf(stderr, "tqpipe synth: more than one output directory given ('%s', '%s')\n", o.out, a);
            return 2;
        }
    }
    if (!o.config || !o.out) {
        fprintf(stderr, "tqpipe synth: --config and OUT_DIR are required\n\n");
        synth_help(stderr);
        return 2;
    }
    tq_status rc = synth_run(&o);
    if (rc != TQ_OK) {
        fprintf(stderr, "tqpipe synth: %s\n", tq_last_error());
        return 1;
    }
    return 0;
}
