/* test_convert.c — the llama2.c reader (pipeline/llama2c.c) and `tqpipe convert` (stages/convert.c) on the
 * bundled stories260K.bin:
 *  - header values and layout; damaged files (truncations, bad fields, foreign magic, extra bytes) fail
 *    cleanly naming the file;
 *  - convert to HF (f32): every tensor equals the llama2.c tensor value for value, with wq/wk rows in
 *    rotate-half order (row h*hd + i <- 2i, h*hd + hd/2 + i <- 2i + 1), config.json fields, tokenizer copy;
 *  - --reverse gives back the original weight bytes exactly (and RoPE tables to 1e-5);
 *  - bf16 / f16 conversions equal round-to-nearest-even of the fp32 values; sharded output reads the same.
 * Needs TQ_SOURCE_DIR (set by CTest); exits 77 when the bundled model is missing. */
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt.h"
#include "commands.h"
#include "fileio.h"
#include "llama2c.h"

#include "tq_check_status.h"

static char g_tmp[4096];
static char g_bin[4096], g_tok[4096];

static void rm_rf(const char* dir)
{
    DIR* d = opendir(dir);
    if (!d) return;
    struct dirent* e;
    char p[8192];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) rm_rf(p);
        else unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static void write_bytes(const char* path, const void* data, size_t n)
{
    FILE* f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(EXIT_FAILURE);
    }
    fclose(f);
}

static int run_convert(const char* a0, const char* a1, const char* a2, const char* a3, const char* a4,
                       const char* a5, const char* a6)
{
    char* argv[9] = {"convert", (char*)a0, (char*)a1, (char*)a2, (char*)a3, (char*)a4, (char*)a5, (char*)a6, NULL};
    int argc = 1;
    while (argc < 8 && argv[argc]) argc++;
    return tq_cmd_convert(argc, argv);
}

// ------------------------------------------------------------------------------------------------

static void test_l2c_reader(void)
{
    tq_l2c* m = NULL;
    CHECK_RC(tq_l2c_open(g_bin, &m), TQ_OK);
    if (!m) return;
    const tq_l2c_config* c = tq_l2c_cfg(m);
    CHECK(c->dim == 64 && c->hidden_dim == 172 && c->n_layers == 5 && c->n_heads == 8 && c->n_kv_heads == 4);
    CHECK(c->vocab_size == 512 && c->seq_len == 512 && c->head_dim == 8 && c->shared_cls == 1 && c->has_rope == 1);
    const tq_l2c_layout* l = tq_l2c_lay(m);
    CHECK(l->total_bytes == 1056540);
    CHECK(l->offset[TQ_L2C_TOK_EMB] == 28);
    CHECK(l->rows[TQ_L2C_WK] == 32 && l->cols[TQ_L2C_WK] == 64);
    CHECK(l->rows[TQ_L2C_W2] == 64 && l->cols[TQ_L2C_W2] == 172);
    CHECK(l->offset[TQ_L2C_WCLS] == 0);
    /* parameter count from the layout: 260,032 */
    uint64_t params = (l->offset[TQ_L2C_FREQ_REAL] - 28) / 4;
    CHECK(params == 260032);
    float buf[172 * 64];
    CHECK_RC(tq_l2c_read(m, TQ_L2C_W1, 4, buf, sizeof buf), TQ_OK);
    CHECK_RC(tq_l2c_read(m, TQ_L2C_W1, 5, buf, sizeof buf), TQ_ERR_ARG);
    CHECK_RC(tq_l2c_read(m, TQ_L2C_W1, 0, buf, 100), TQ_ERR_ARG);
    CHECK_RC(tq_l2c_read(m, TQ_L2C_WCLS, 0, buf, sizeof buf), TQ_ERR_NOTFOUND);
    CHECK_RC(tq_l2c_read(m, TQ_L2C_FREQ_REAL, 0, buf, sizeof buf), TQ_OK);
    CHECK(buf[0] == 1.0f); /* cos(0) */
    tq_l2c_free(&m);
    CHECK(m == NULL);

    /* damaged copies */
    char* data = NULL;
    size_t len = 0;
    CHECK_RC(tq_read_file(g_bin, &data, &len), TQ_OK);
    if (!data) return;
    char p[4200];
    snprintf(p, sizeof p, "%s/damaged.bin", g_tmp);
    size_t cuts[] = {0, 3, 27, 28, 1000, 1040155, 1040157, 1056539};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        write_bytes(p, data, cuts[i]);
        CHECK_RC(tq_l2c_open(p, &m), cuts[i] == 1040155 || cuts[i] < 1040156 ? TQ_ERR_CORRUPT : TQ_ERR_FORMAT);
        CHECK(strstr(tq_last_error(), "damaged.bin") != NULL);
        CHECK(m == NULL);
    }
    /* without the RoPE tables a tied file is still valid */
    write_bytes(p, data, 1040156);
    CHECK_RC(tq_l2c_open(p, &m), TQ_OK);
    if (m) CHECK(tq_l2c_cfg(m)->has_rope == 0);
    tq_l2c_free(&m);
    /* extra trailing bytes */
    char* big = malloc(len + 4);
    memcpy(big, data, len);
    memset(big + len, 0, 4);
    write_bytes(p, big, len + 4);
    CHECK_RC(tq_l2c_open(p, &m), TQ_ERR_FORMAT);
    free(big);
    /* bad header fields: each field zeroed, negative, huge; inconsistent heads */
    for (int f = 0; f < 7; f++) {
        int32_t saved;
        memcpy(&saved, data + 4 * f, 4);
        int32_t bad[3] = {0, -7, 0x7fffffff};
        for (int k = 0; k < 3; k++) {
            if (f == 5 && k == 1) continue; /* negative vocab = untied: size check fails instead */
            memcpy(data + 4 * f, &bad[k], 4);
            write_bytes(p, data, len);
            tq_status rc = tq_l2c_open(p, &m);
            CHECK(rc == TQ_ERR_FORMAT);
            CHECK(m == NULL);
        }
        memcpy(data + 4 * f, &saved, 4);
    }
    int32_t neg_vocab = -512; /* untied classifier: needs 512*64 more floats */
    memcpy(data + 20, &neg_vocab, 4);
    write_bytes(p, data, len);
    CHECK_RC(tq_l2c_open(p, &m), TQ_ERR_CORRUPT);
    CHECK(strstr(tq_last_error(), "untied") != NULL);
    neg_vocab = 512;
    memcpy(data + 20, &neg_vocab, 4);
    int32_t heads3 = 3; /* 64 % 3 != 0 */
    memcpy(data + 12, &heads3, 4);
    write_bytes(p, data, len);
    CHECK_RC(tq_l2c_open(p, &m), TQ_ERR_FORMAT);
    CHECK(strstr(tq_last_error(), "inconsistent") != NULL);
    memcpy(data, "24ka", 4); /* llama2.c version 1 export magic */
    write_bytes(p, data, len);
    CHECK_RC(tq_l2c_open(p, &m), TQ_ERR_UNSUPPORTED);
    free(data);
    snprintf(p, sizeof p, "%s/nope.bin", g_tmp);
    CHECK_RC(tq_l2c_open(p, &m), TQ_ERR_NOTFOUND);
}

/* HF tensor name -> llama2.c block and layer, and the RoPE permutation to expect. */
static void check_hf_against_l2c(const char* dir, tq_dtype dt)
{
    tq_ckpt* c = NULL;
    tq_l2c* m = NULL;
    CHECK_RC(tq_ckpt_open(dir, &c), TQ_OK);
    CHECK_RC(tq_l2c_open(g_bin, &m), TQ_OK);
    if (!c || !m) goto out;
    CHECK(tq_ckpt_count(c) == 2 + 5 * 9);
    CHECK(tq_ckpt_find(c, "lm_head.weight") == NULL);
    static const struct {
        const char* suffix;
        tq_l2c_block b;
        int perm;
    } map[] = {{"input_layernorm", TQ_L2C_RMS_ATT, 0},          {"self_attn.q_proj", TQ_L2C_WQ, 8},
               {"self_attn.k_proj", TQ_L2C_WK, 4},              {"self_attn.v_proj", TQ_L2C_WV, 0},
               {"self_attn.o_proj", TQ_L2C_WO, 0},              {"post_attention_layernorm", TQ_L2C_RMS_FFN, 0},
               {"mlp.gate_proj", TQ_L2C_W1, 0},                 {"mlp.up_proj", TQ_L2C_W3, 0},
               {"mlp.down_proj", TQ_L2C_W2, 0}};
    static float ref[512 * 64], got[512 * 64];
    int bad_total = 0, checked = 0;
    for (int l = -1; l < 5; l++) {
        int nitems = l < 0 ? 2 : 9;
        for (int k = 0; k < nitems; k++) {
            char name[256];
            tq_l2c_block b;
            int perm = 0;
            if (l < 0) {
                snprintf(name, sizeof name, k == 0 ? "model.embed_tokens.weight" : "model.norm.weight");
                b = k == 0 ? TQ_L2C_TOK_EMB : TQ_L2C_RMS_FINAL;
            } else {
                snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, map[k].suffix);
                b = map[k].b;
                perm = map[k].perm;
            }
            const tq_tensor_info* t = tq_ckpt_find(c, name);
            CHECK(t != NULL);
            if (!t) continue;
            const tq_l2c_layout* lay = tq_l2c_lay(m);
            int64_t rows = lay->rows[b], cols = lay->cols[b];
            CHECK(t->dtype == dt);
            CHECK(tq_tensor_numel(t) == rows * cols && tq_tensor_cols(t) == cols);
            CHECK(rows == 1 ? t->ndim == 1 : (t->ndim == 2 && t->shape[0] == rows));
            CHECK_RC(tq_l2c_read(m, b, l < 0 ? 0 : l, ref, sizeof ref), TQ_OK);
            CHECK_RC(tq_ckpt_read_f32(c, t, 0, tq_tensor_rows(t), got, sizeof got), TQ_OK);
            int bad = 0;
            for (int64_t r = 0; r < rows; r++) {
                int64_t src = r; /* HF row r comes from llama2.c row src */
                if (perm) {
                    int64_t h = r / 8, j = r % 8; /* head_dim 8, half 4 */
                    src = h * 8 + (j < 4 ? 2 * j : 2 * (j - 4) + 1);
                }
                for (int64_t col = 0; col < cols; col++) {
                    float want = ref[src * cols + col];
                    if (dt == TQ_BF16) want = tq_bf16_to_f32(tq_f32_to_bf16(want));
                    if (dt == TQ_F16) want = tq_f16_to_f32(tq_f32_to_f16(want));
                    float g = got[r * cols + col];
                    if (memcmp(&g, &want, 4) != 0) bad++;
                }
            }
            if (bad) fprintf(stderr, "  %s: %d mismatches\n", name, bad);
            bad_total += bad;
            checked++;
        }
    }
    CHECK(bad_total == 0);
    CHECK(checked == 47);
out:
    tq_ckpt_free(&c);
    tq_l2c_free(&m);
}

static void test_convert_roundtrip(void)
{
    char out[4200], back[4200], p[4300];
    snprintf(out, sizeof out, "%s/hf_f32", g_tmp);
    CHECK(run_convert(g_bin, out, "--tokenizer", g_tok, "--quiet", NULL, NULL) == 0);
    check_hf_against_l2c(out, TQ_F32);
    /* config.json */
    snprintf(p, sizeof p, "%s/config.json", out);
    json_error_t je;
    json_t* j = json_load_file(p, 0, &je);
    CHECK(j != NULL);
    if (j) {
        CHECK(!strcmp(json_string_value(json_object_get(j, "model_type")), "llama"));
        CHECK(!strcmp(json_string_value(json_array_get(json_object_get(j, "architectures"), 0)), "LlamaForCausalLM"));
        CHECK(json_integer_value(json_object_get(j, "hidden_size")) == 64);
        CHECK(json_integer_value(json_object_get(j, "intermediate_size")) == 172);
        CHECK(json_integer_value(json_object_get(j, "num_hidden_layers")) == 5);
        CHECK(json_integer_value(json_object_get(j, "num_attention_heads")) == 8);
        CHECK(json_integer_value(json_object_get(j, "num_key_value_heads")) == 4);
        CHECK(json_integer_value(json_object_get(j, "vocab_size")) == 512);
        CHECK(json_integer_value(json_object_get(j, "max_position_embeddings")) == 512);
        CHECK(json_real_value(json_object_get(j, "rms_norm_eps")) == 1e-5);
        CHECK(json_real_value(json_object_get(j, "rope_theta")) == 10000.0);
        CHECK(json_is_true(json_object_get(j, "tie_word_embeddings")));
        CHECK(json_integer_value(json_object_get(j, "bos_token_id")) == 1);
        CHECK(json_integer_value(json_object_get(j, "eos_token_id")) == 2);
        CHECK(!strcmp(json_string_value(json_object_get(j, "torch_dtype")), "float32"));
        json_decref(j);
    }
    /* tokenizer copied byte for byte */
    char *t1 = NULL, *t2 = NULL;
    size_t l1 = 0, l2 = 0;
    snprintf(p, sizeof p, "%s/tokenizer.bin", out);
    CHECK_RC(tq_read_file(g_tok, &t1, &l1), TQ_OK);
    CHECK_RC(tq_read_file(p, &t2, &l2), TQ_OK);
    CHECK(t1 && t2 && l1 == l2 && memcmp(t1, t2, l1) == 0);
    free(t1);
    free(t2);

    /* reverse: weights identical to the original file, RoPE tables close */
    snprintf(back, sizeof back, "%s/back.bin", g_tmp);
    CHECK(run_convert("--reverse", out, back, "--quiet", NULL, NULL, NULL) == 0);
    char *a = NULL, *b = NULL;
    size_t la = 0, lb = 0;
    CHECK_RC(tq_read_file(g_bin, &a, &la), TQ_OK);
    CHECK_RC(tq_read_file(back, &b, &lb), TQ_OK);
    CHECK(la == lb && la == 1056540);
    if (a && b && la == lb) {
        CHECK(memcmp(a, b, 1040156) == 0);
        float maxd = 0;
        for (size_t off = 1040156; off + 4 <= la; off += 4) {
            float x, y;
            memcpy(&x, a + off, 4);
            memcpy(&y, b + off, 4);
            if (fabsf(x - y) > maxd) maxd = fabsf(x - y);
        }
        CHECK(maxd < 1e-4f);
        if (maxd >= 1e-4f) fprintf(stderr, "  RoPE table max difference %g\n", (double)maxd);
    }
    free(a);
    free(b);

    /* bf16 and f16, sharded */
    snprintf(out, sizeof out, "%s/hf_bf16", g_tmp);
    CHECK(run_convert(g_bin, out, "--dtype", "bf16", "--max-shard", "200K", "--quiet") == 0);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", out);
    CHECK(tq_file_exists(p));
    check_hf_against_l2c(out, TQ_BF16);
    tq_ckpt* c = NULL;
    CHECK_RC(tq_ckpt_open(out, &c), TQ_OK);
    CHECK(tq_ckpt_file_count(c) >= 3);
    tq_ckpt_free(&c);
    snprintf(out, sizeof out, "%s/hf_f16", g_tmp);
    CHECK(run_convert(g_bin, out, "--dtype", "f16", "--quiet", NULL, NULL) == 0);
    check_hf_against_l2c(out, TQ_F16);

    /* command-line errors */
    CHECK(run_convert("--help", NULL, NULL, NULL, NULL, NULL, NULL) == 0);
    CHECK(run_convert(g_bin, NULL, NULL, NULL, NULL, NULL, NULL) == 2);
    CHECK(run_convert(g_bin, out, "--dtype", "q4", NULL, NULL, NULL) == 2);
    CHECK(run_convert(g_bin, out, "--bogus", NULL, NULL, NULL, NULL) == 2);
    snprintf(p, sizeof p, "%s/missing.bin", g_tmp);
    CHECK(run_convert(p, out, "--quiet", NULL, NULL, NULL, NULL) == 1);
    CHECK(strstr(tq_last_error(), "missing.bin") != NULL);
    CHECK(run_convert(g_bin, out, "--tokenizer", p, "--quiet", NULL, NULL) == 1);
}

int main(void)
{
    const char* src = getenv("TQ_SOURCE_DIR");
    if (!src) src = TQ_SOURCE_DIR;
    snprintf(g_bin, sizeof g_bin, "%s/jobs/models/stories260K.bin", src);
    snprintf(g_tok, sizeof g_tok, "%s/jobs/models/tok512.bin", src);
    if (!tq_file_exists(g_bin) || !tq_file_exists(g_tok)) {
        fprintf(stderr, "skip: %s or %s missing\n", g_bin, g_tok);
        return 77;
    }
    const char* base = getenv("TMPDIR");
    snprintf(g_tmp, sizeof g_tmp, "%s/tq_conv_test_XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(g_tmp)) {
        perror("mkdtemp");
        return EXIT_FAILURE;
    }
    test_l2c_reader();
    test_convert_roundtrip();
    rm_rf(g_tmp);
    printf("%s: %d checks, %d failed\n", g_failed ? "FAILED" : "ok", g_checks, g_failed);
    return g_failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
