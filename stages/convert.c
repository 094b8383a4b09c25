/* convert.c — `tqpipe convert`: llama2.c .bin -> Hugging Face Llama checkpoint directory, and back
 * (--reverse), so the whole pipeline has one input path (HF layout) and the round trip can be checked
 * value for value.
 *
 *   tqpipe convert IN.bin OUT_DIR [--tokenizer tok.bin] [--dtype f32|bf16|f16] [--max-shard SIZE]
 *   tqpipe convert --reverse HF_DIR OUT.bin
 *
 * Forward writes OUT_DIR/model.safetensors (or shards + index with --max-shard), OUT_DIR/config.json
 * (LlamaForCausalLM) and, when given, OUT_DIR/tokenizer.bin (a copy, validated first).
 * Tensor mapping (llama2.c -> HF): tok_embeddings -> model.embed_tokens.weight; per layer i:
 * rms_att -> input_layernorm, wq/wk/wv/wo -> self_attn.{q,k,v,o}_proj, rms_ffn -> post_attention_layernorm,
 * w1 -> mlp.gate_proj, w3 -> mlp.up_proj, w2 -> mlp.down_proj; rms_final -> model.norm.weight;
 * untied wcls -> lm_head.weight (tied: no lm_head, tie_word_embeddings true).
 * RoPE: llama2.c rotates interleaved pairs (2i, 2i+1); HF Llama rotates halves (i, i + hd/2). As in HF's
 * own Llama conversion script, the rows of wq and wk are permuted per head, row 2i+p -> p*hd/2 + i, so
 * the HF checkpoint computes exactly the same function under transformers' convention.
 * Memory: one tensor at a time (the largest is the embedding). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt.h"      // defines: tq_ckpt_open, tq_ckpt_read_f32 (reverse)
#include "commands.h"
#include "fileio.h"    // defines: tq_atomic_*, tq_write_file_atomic, tq_read_file
#include "llama2c.h"   // defines: tq_l2c_open, tq_l2c_read
#include "st_writer.h" // defines: tq_st_writer_*
#include "tokenizer.h" // defines: tq_tokenizer_load (validates the tokenizer before copying)

int tq_cmd_convert(int argc, char** argv);

// ------------------------------------------------------------------------------------------------
// RoPE row permutation

/* Interleaved-pair (llama2.c) -> rotate-half (HF) row order, per head: row 2i+p -> p*hd/2 + i.
 * inverse != 0 applies the opposite map. src/dst: [n_heads*hd, cols]. */
static void tq_permute_rope_rows(float* dst, const float* src, int n_heads, int hd, int64_t cols, int inverse)
{
    const int half = hd / 2;
    for (int h = 0; h < n_heads; h++)
        for (int i = 0; i < half; i++)
            for (int p = 0; p < 2; p++) {
                int64_t inter = (int64_t)h * hd + 2 * i + p;   /* llama2.c row */
                int64_t halves = (int64_t)h * hd + p * half + i; /* HF row */
                const float* s = src + (inverse ? halves : inter) * cols;
                float* d = dst + (inverse ? inter : halves) * cols;
                memcpy(d, s, (size_t)cols * sizeof *d);
            }
}

// ------------------------------------------------------------------------------------------------
// forward: llama2.c -> HF

typedef struct {
    char name[128];
    tq_l2c_block block;
    int layer;
    int permute_heads; /* 0: none, else number of heads whose rows are permuted */
} tq_conv_item;

static tq_status tq_parse_dtype(const char* s, tq_dtype* out)
{
    if (!strcmp(s, "f32") || !strcmp(s, "F32") || !strcmp(s, "float32")) *out = TQ_F32;
    else if (!strcmp(s, "bf16") || !strcmp(s, "BF16") || !strcmp(s, "bfloat16")) *out = TQ_BF16;
    else if (!strcmp(s, "f16") || !strcmp(s, "F16") || !strcmp(s, "float16")) *out = TQ_F16;
    else return tq_fail(TQ_ERR_ARG, "--dtype %s: expected f32, bf16 or f16", s);
    return TQ_OK;
}

static const char* tq_torch_dtype(tq_dtype t)
{
    return t == TQ_F32 ? "float32" : t == TQ_BF16 ? "bfloat16" : "float16";
}

static tq_status tq_parse_size(const char* s, uint64_t* out)
{
    char* end = NULL;
    double v = strtod(s, &end);
    if (!end || end == s || v < 0) return tq_fail(TQ_ERR_ARG, "--max-shard %s: expected a size like 500M or 5G", s);
    double mul = 1;
    if (*end == 'K' || *end == 'k') mul = 1e3, end++;
    else if (*end == 'M' || *end == 'm') mul = 1e6, end++;
    else if (*end == 'G' || *end == 'g') mul = 1e9, end++;
    if (*end == 'B' || *end == 'b') end++;
    if (*end) return tq_fail(TQ_ERR_ARG, "--max-shard %s: expected a size like 500M or 5G", s);
    *out = (uint64_t)(v * mul);
    return TQ_OK;
}

static tq_status tq_write_llama_config(const char* out_dir, const tq_l2c_config* c, tq_dtype dt)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", out_dir);
    json_t* j = json_pack("{s:[s], s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:b, s:i, s:i, s:s, s:s,"
                          " s:b, s:b, s:f, s:b}",
                          "architectures", "LlamaForCausalLM", "model_type", "llama", "hidden_size", c->dim,
                          "intermediate_size", c->hidden_dim, "num_hidden_layers", c->n_layers,
                          "num_attention_heads", c->n_heads, "num_key_value_heads", c->n_kv_heads, "head_dim",
                          c->head_dim, "vocab_size", c->vocab_size, "max_position_embeddings", c->seq_len,
                          "rms_norm_eps", 1e-5, "rope_theta", 10000.0, "tie_word_embeddings", c->shared_cls,
                          "bos_token_id", 1, "eos_token_id", 2, "torch_dtype", tq_torch_dtype(dt), "hidden_act",
                          "silu", "attention_bias", 0, "mlp_bias", 0, "initializer_range", 0.02, "use_cache", 1);
    if (!j) return tq_fail(TQ_ERR_NOMEM, "cannot build %s", path);
    char* text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    json_decref(j);
    if (!text) return tq_fail(TQ_ERR_NOMEM, "cannot serialise %s", path);
    size_t n = strlen(text);
    char* t2 = realloc(text, n + 2);
    if (!t2) {
        free(text);
        return tq_fail(TQ_ERR_NOMEM, "no memory");
    }
    t2[n] = '\n';
    t2[n + 1] = '\0';
    tq_status rc = tq_write_file_atomic(path, t2, n + 1);
    free(t2);
    return rc;
}

static tq_status tq_copy_tokenizer(const char* tok, const char* out_dir, int vocab)
{
    tq_tokenizer* t = NULL;
    tq_status rc = tq_tokenizer_load(tok, vocab, &t);
    if (rc != TQ_OK) return rc;
    tq_tokenizer_free(&t);
    char* data = NULL;
    size_t len = 0;
    TQ_FORWARD(tq_read_file(tok, &data, &len));
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer.bin", out_dir);
    rc = tq_write_file_atomic(path, data, len);
    free(data);
    return rc;
}

static tq_status tq_convert_forward(const char* in, const char* out_dir, const char* tok, tq_dtype dt,
                                    uint64_t max_shard, int quiet)
{
    tq_l2c* m = NULL;
    tq_st_writer* w = NULL;
    tq_conv_item* items = NULL;
    float* a = NULL;
    float* b = NULL;
    tq_status rc = tq_l2c_open(in, &m);
    if (rc != TQ_OK) return rc;
    const tq_l2c_config* c = tq_l2c_cfg(m);
    const tq_l2c_layout* lay = tq_l2c_lay(m);
    int64_t n_items = 0, cap = 3 + (int64_t)c->n_layers * 9;
    items = calloc((size_t)cap, sizeof *items);
    TQ_GOTO_FAIL(!items, TQ_ERR_NOMEM, out, "no memory");
#define TQ_ITEM(blk, lyr, perm, ...)                                                                               \
    do {                                                                                                           \
        tq_conv_item* it_ = &items[n_items++];                                                                     \
        snprintf(it_->name, sizeof it_->name, __VA_ARGS__);                                                        \
        it_->block = (blk);                                                                                        \
        it_->layer = (lyr);                                                                                        \
        it_->permute_heads = (perm);                                                                               \
    } while (0)
    TQ_ITEM(TQ_L2C_TOK_EMB, 0, 0, "model.embed_tokens.weight");
    for (int l = 0; l < c->n_layers; l++) {
        TQ_ITEM(TQ_L2C_RMS_ATT, l, 0, "model.layers.%d.input_layernorm.weight", l);
        TQ_ITEM(TQ_L2C_WQ, l, c->n_heads, "model.layers.%d.self_attn.q_proj.weight", l);
        TQ_ITEM(TQ_L2C_WK, l, c->n_kv_heads, "model.layers.%d.self_attn.k_proj.weight", l);
        TQ_ITEM(TQ_L2C_WV, l, 0, "model.layers.%d.self_attn.v_proj.weight", l);
        TQ_ITEM(TQ_L2C_WO, l, 0, "model.layers.%d.self_attn.o_proj.weight", l);
        TQ_ITEM(TQ_L2C_RMS_FFN, l, 0, "model.layers.%d.post_attention_layernorm.weight", l);
        TQ_ITEM(TQ_L2C_W1, l, 0, "model.layers.%d.mlp.gate_proj.weight", l);
        TQ_ITEM(TQ_L2C_W3, l, 0, "model.layers.%d.mlp.up_proj.weight", l);
        TQ_ITEM(TQ_L2C_W2, l, 0, "model.layers.%d.mlp.down_proj.weight", l);
    }
    TQ_ITEM(TQ_L2C_RMS_FINAL, 0, 0, "model.norm.weight");
    if (!c->shared_cls) TQ_ITEM(TQ_L2C_WCLS, 0, 0, "lm_head.weight");
#undef TQ_ITEM

    size_t max_bytes = 0;
    for (int64_t i = 0; i < n_items; i++) {
        size_t nb = (size_t)(lay->rows[items[i].block] * lay->cols[items[i].block]) * sizeof(float);
        if (nb > max_bytes) max_bytes = nb;
    }
    a = malloc(max_bytes);
    b = malloc(max_bytes);
    TQ_GOTO_FAIL(!a || !b, TQ_ERR_NOMEM, out, "no memory for a %zu-byte tensor", max_bytes);

    TQ_CHECK_GOTO(tq_st_writer_create_dir(out_dir, max_shard, &w), out);
    TQ_CHECK_GOTO(tq_st_writer_set_metadata(w, "source", "llama2.c"), out);
    for (int64_t i = 0; i < n_items; i++) {
        tq_l2c_block blk = items[i].block;
        int64_t shape[2] = {lay->rows[blk], lay->cols[blk]};
        int nd = lay->rows[blk] == 1 ? 1 : 2; /* norms are 1-D [dim] */
        TQ_CHECK_GOTO(tq_st_writer_add(w, items[i].name, dt, nd, nd == 1 ? shape + 1 : shape), out);
    }
    TQ_CHECK_GOTO(tq_st_writer_begin(w), out);
    for (int64_t i = 0; i < n_items; i++) {
        tq_l2c_block blk = items[i].block;
        int64_t rows = lay->rows[blk], cols = lay->cols[blk];
        TQ_CHECK_GOTO(tq_l2c_read(m, blk, items[i].layer, a, max_bytes), out);
        const float* src = a;
        if (items[i].permute_heads) {
            tq_permute_rope_rows(b, a, items[i].permute_heads, c->head_dim, cols, 0);
            src = b;
        }
        TQ_CHECK_GOTO(tq_st_writer_write_rows_f32(w, items[i].name, 0, rows == 1 ? 1 : rows, src, rows * cols), out);
    }
    TQ_CHECK_GOTO(tq_st_writer_finish(w), out);
    TQ_CHECK_GOTO(tq_write_llama_config(out_dir, c, dt), out);
    if (tok) TQ_CHECK_GOTO(tq_copy_tokenizer(tok, out_dir, c->vocab_size), out);
    if (!quiet)
        printf("convert: %s -> %s: %lld tensors, %.3f MB %s in %d file(s), dim %d, layers %d, heads %d/%d, vocab %d%s\n",
               in, out_dir, (long long)n_items, (double)tq_st_writer_total_bytes(w) / 1e6, tq_dtype_name(dt),
               tq_st_writer_file_count(w), c->dim, c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size,
               tok ? ", tokenizer copied" : "");
out:
    tq_st_writer_free(&w);
    free(a);
    free(b);
    free(items);
    tq_l2c_free(&m);
    return rc;
}

// ------------------------------------------------------------------------------------------------
// reverse: HF -> llama2.c

static tq_status tq_json_int(json_t* cfg, const char* key, int def, int* out)
{
    json_t* v = json_object_get(cfg, key);
    if (!v) {
        if (def < 0) return tq_fail(TQ_ERR_FORMAT, "config.json: missing integer \"%s\"", key);
        *out = def;
        return TQ_OK;
    }
    if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > (1 << 24))
        return tq_fail(TQ_ERR_FORMAT, "config.json: \"%s\" is not a positive integer", key);
    *out = (int)json_integer_value(v);
    return TQ_OK;
}

/* Read HF tensor `name` ([rows, cols] expected) as fp32 into buf. */
static tq_status tq_rev_read(const tq_ckpt* ck, const char* name, int64_t rows, int64_t cols, float* buf, size_t cap)
{
    const tq_tensor_info* t = tq_ckpt_find(ck, name);
    if (!t) return tq_fail(TQ_ERR_NOTFOUND, "%s: tensor %s is missing (not a Llama checkpoint?)", tq_ckpt_dir(ck), name);
    if (tq_tensor_numel(t) != rows * cols || tq_tensor_cols(t) != cols)
        return tq_fail(TQ_ERR_FORMAT, "%s: tensor %s has %lld values in rows of %lld, expected [%lld, %lld]",
                       tq_ckpt_dir(ck), name, (long long)tq_tensor_numel(t), (long long)tq_tensor_cols(t),
                       (long long)rows, (long long)cols);
    return tq_ckpt_read_f32(ck, t, 0, tq_tensor_rows(t), buf, cap);
}

static tq_status tq_convert_reverse(const char* in_dir, const char* out_bin, int quiet)
{
    tq_ckpt* ck = NULL;
    json_t* cfg = NULL;
    float* a = NULL;
    float* b = NULL;
    tq_atomic_file f = {.fd = -1};
    tq_status rc = tq_ckpt_open(in_dir, &ck);
    if (rc != TQ_OK) return rc;
    const char* text = tq_ckpt_config_json(ck);
    TQ_GOTO_FAIL(!text, TQ_ERR_NOTFOUND, out, "%s has no config.json", in_dir);
    json_error_t jerr;
    cfg = json_loads(text, 0, &jerr);
    TQ_GOTO_FAIL(!cfg, TQ_ERR_FORMAT, out, "%s/config.json: %s", in_dir, jerr.text);
    json_t* mt = json_object_get(cfg, "model_type");
    TQ_GOTO_FAIL(!json_is_string(mt) || strcmp(json_string_value(mt), "llama"), TQ_ERR_UNSUPPORTED, out,
                 "%s: --reverse handles model_type \"llama\" only", in_dir);
    int D, H, L, NH, NKV, V, S;
    TQ_CHECK_GOTO(tq_json_int(cfg, "hidden_size", -1, &D), out);
    TQ_CHECK_GOTO(tq_json_int(cfg, "intermediate_size", -1, &H), out);
    TQ_CHECK_GOTO(tq_json_int(cfg, "num_hidden_layers", -1, &L), out);
    TQ_CHECK_GOTO(tq_json_int(cfg, "num_attention_heads", -1, &NH), out);
    TQ_CHECK_GOTO(tq_json_int(cfg, "num_key_value_heads", NH, &NKV), out);
    TQ_CHECK_GOTO(tq_json_int(cfg, "vocab_size", -1, &V), out);
    TQ_CHECK_GOTO(tq_json_int(cfg, "max_position_embeddings", -1, &S), out);
    int tied = json_is_true(json_object_get(cfg, "tie_word_embeddings"));
    if (!tied && !tq_ckpt_find(ck, "lm_head.weight")) tied = 1; /* no lm_head: tied */
    json_t* th = json_object_get(cfg, "rope_theta");
    double theta = json_is_number(th) ? json_number_value(th) : 10000.0;
    TQ_GOTO_FAIL(D % NH || NH % NKV || (D / NH) % 2, TQ_ERR_FORMAT, out,
                 "%s: hidden_size %d / heads %d / kv heads %d do not fit the llama2.c format", in_dir, D, NH, NKV);
    const int hd = D / NH;
    const int64_t KV = (int64_t)NKV * hd;
    size_t cap = (size_t)D * (size_t)(V > H ? (V > D ? V : D) : (H > D ? H : D)) * sizeof(float);
    a = malloc(cap);
    b = malloc(cap);
    TQ_GOTO_FAIL(!a || !b, TQ_ERR_NOMEM, out, "no memory for a %zu-byte tensor", cap);
    TQ_CHECK_GOTO(tq_atomic_open(&f, out_bin), out);
    int32_t hdr[7] = {D, H, L, NH, NKV, tied ? V : -V, S};
    TQ_CHECK_GOTO(tq_write_full(f.fd, hdr, sizeof hdr, f.tmp), out);
    char name[256];
#define TQ_REV(nm, rows, cols, perm)                                                                               \
    do {                                                                                                           \
        TQ_CHECK_GOTO(tq_rev_read(ck, (nm), (rows), (cols), a, cap), out);                                         \
        const float* src_ = a;                                                                                     \
        if (perm) {                                                                                                \
            tq_permute_rope_rows(b, a, (perm), hd, (cols), 1);                                                     \
            src_ = b;                                                                                              \
        }                                                                                                          \
        TQ_CHECK_GOTO(tq_write_full(f.fd, src_, (size_t)((rows) * (cols)) * sizeof(float), f.tmp), out);           \
    } while (0)
    TQ_REV("model.embed_tokens.weight", (int64_t)V, (int64_t)D, 0);
    static const char* const per_layer[9] = {"input_layernorm", "self_attn.q_proj", "self_attn.k_proj",
                                             "self_attn.v_proj", "self_attn.o_proj", "post_attention_layernorm",
                                             "mlp.gate_proj", "mlp.down_proj", "mlp.up_proj"};
    const int64_t pr[9] = {1, (int64_t)NH * hd, KV, KV, D, 1, H, D, H};
    const int64_t pc[9] = {D, D, D, D, (int64_t)NH * hd, D, D, H, D};
    for (int k = 0; k < 9; k++)
        for (int l = 0; l < L; l++) {
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, per_layer[k]);
            int perm = k == 1 ? NH : k == 2 ? NKV : 0;
            TQ_REV(name, pr[k], pc[k], perm);
        }
    TQ_REV("model.norm.weight", (int64_t)1, (int64_t)D, 0);
    /* legacy RoPE tables, as llama2.c's legacy export writes them (run.c skips them) */
    for (int part = 0; part < 2; part++) {
        for (int p = 0; p < S; p++)
            for (int i = 0; i < hd / 2; i++) {
                float freq = 1.0f / powf((float)theta, (float)(2 * i) / (float)hd);
                float ang = (float)p * freq;
                a[(size_t)p * (hd / 2) + i] = part == 0 ? cosf(ang) : sinf(ang);
            }
        TQ_CHECK_GOTO(tq_write_full(f.fd, a, (size_t)S * (hd / 2) * sizeof(float), f.tmp), out);
    }
    if (!tied) TQ_REV("lm_head.weight", (int64_t)V, (int64_t)D, 0);
#undef TQ_REV
    TQ_CHECK_GOTO(tq_atomic_commit(&f), out);
    if (!quiet) printf("convert --reverse: %s -> %s (dim %d, layers %d, vocab %d, %s classifier)\n", in_dir, out_bin, D,
                       L, V, tied ? "tied" : "untied");
out:
    if (f.fd >= 0) tq_atomic_abort(&f);
    free(a);
    free(b);
    json_decref(cfg);
    tq_ckpt_free(&ck);
    return rc;
}

// ------------------------------------------------------------------------------------------------
// command line

static void tq_convert_usage(FILE* o)
{
    fprintf(o,
            "usage: tqpipe convert IN.bin OUT_DIR [--tokenizer tok.bin] [--dtype f32|bf16|f16] [--max-shard SIZE]\n"
            "       tqpipe convert --reverse HF_DIR OUT.bin\n\n"
            "Converts a llama2.c checkpoint (legacy version 0 fp32 .bin, e.g. jobs/models/stories260K.bin) into a\n"
            "Hugging Face Llama checkpoint directory: model.safetensors + config.json (+ tokenizer.bin).\n"
            "wq/wk rows are permuted from llama2.c's interleaved RoPE pairs to HF's rotate-half layout.\n\n"
            "  --tokenizer FILE  validate and copy a llama2.c tokenizer.bin into OUT_DIR\n"
            "  --dtype T         stored dtype: f32 (default, lossless), bf16 or f16 (round to nearest even)\n"
            "  --max-shard SIZE  shard into model-0000k-of-0000n.safetensors + index (e.g. 100K, 2G)\n"
            "  --reverse         HF Llama directory -> llama2.c .bin (inverse permutation; round-trip check)\n"
            "  --quiet           no summary line\n");
}

int tq_cmd_convert(int argc, char** argv)
{
    const char* pos[2] = {NULL, NULL};
    int npos = 0, reverse = 0, quiet = 0;
    const char* tok = NULL;
    tq_dtype dt = TQ_F32;
    uint64_t max_shard = 0;
    for (int i = 1; i < argc; i++) {
        const char* s = argv[i];
        if (!strcmp(s, "--help") || !strcmp(s, "-h")) {
            tq_convert_usage(stdout);
            return 0;
        } else if (!strcmp(s, "--reverse")) {
            reverse = 1;
        } else if (!strcmp(s, "--quiet")) {
            quiet = 1;
        } else if (!strcmp(s, "--tokenizer") || !strcmp(s, "--dtype") || !strcmp(s, "--max-shard")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "tqpipe convert: %s needs a value\n", s);
                return 2;
            }
            const char* v = argv[++i];
            tq_status rc = TQ_OK;
            if (!strcmp(s, "--tokenizer")) tok = v;
            else if (!strcmp(s, "--dtype")) rc = tq_parse_dtype(v, &dt);
            else rc = tq_parse_size(v, &max_shard);
            if (rc != TQ_OK) {
                fprintf(stderr, "tqpipe convert: %s\n", tq_last_error());
                return 2;
            }
        } else if (s[0] == '-' && s[1]) {
            fprintf(stderr, "tqpipe convert: unknown option %s\n\n", s);
            tq_convert_usage(stderr);
            return 2;
        } else if (npos < 2) {
            pos[npos++] = s;
        } else {
            fprintf(stderr, "tqpipe convert: too many arguments\n\n");
            tq_convert_usage(stderr);
            return 2;
        }
    }
    if (npos != 2) {
        tq_convert_usage(stderr);
        return 2;
    }
    tq_status rc = reverse ? tq_convert_reverse(pos[0], pos[1], quiet)
                           : tq_convert_forward(pos[0], pos[1], tok, dt, max_shard, quiet);
    if (rc != TQ_OK) {
        fprintf(stderr, "tqpipe convert: %s: %s\n", tq_status_str(rc), tq_last_error());
        return 1;
    }
    return 0;
}
