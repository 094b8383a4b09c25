/* test_safetensors.c — the checkpoint reader (pipeline/safetensors.c, ckpt.h) and the streaming writer
 * (pipeline/st_writer.c): good files written by the writer (single and sharded) read back value for
 * value, row-range reads, bf16/f16 -> f32, and a catalogue of damaged inputs (truncation at every
 * offset, bad JSON, bad dtype, overlapping spans, wrong sizes, span outside the file, oversize header,
 * index naming a missing file, tensor missing from its shard, tensor not in the index, path escapes),
 * each of which must fail cleanly with the right status and a message naming the file and tensor.
 * Plain C: prints FAILED lines, exits non-zero on any failure. Run: ctest -R test_safetensors [-V]. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt.h"
#include "fileio.h"
#include "safetensors.h"
#include "st_writer.h"

#include "tq_check_status.h"

static char g_tmp[4096];

static void path_in(char* out, size_t cap, const char* sub, const char* name)
{
    snprintf(out, cap, "%s/%s%s%s", g_tmp, sub, *sub ? "/" : "", name);
}

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

static int count_tmp_files(const char* dir)
{
    DIR* d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent* e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) n++;
    closedir(d);
    return n;
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

/* A safetensors file from a header JSON text and data_len bytes of data (byte i = i & 255). */
static unsigned char* make_st(const char* json, size_t data_len, size_t* len)
{
    size_t hl = strlen(json);
    *len = 8 + hl + data_len;
    unsigned char* b = malloc(*len);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(((uint64_t)hl >> (8 * i)) & 255);
    memcpy(b + 8, json, hl);
    for (size_t i = 0; i < data_len; i++) b[8 + hl + i] = (unsigned char)(i & 255);
    return b;
}

/* Check one crafted file both in memory and on disk (as DIR/model.safetensors). */
static void expect_bad(const char* json, size_t data_len, tq_status want, const char* must_mention)
{
    size_t len;
    unsigned char* b = make_st(json, data_len, &len);
    int64_t n = -1;
    CHECK_RC(tq_st_validate_buffer(b, len, "crafted.safetensors", &n), want);
    if (must_mention) CHECK(strstr(tq_last_error(), must_mention) != NULL);
    char dir[4200], file[4300];
    path_in(dir, sizeof dir, "", "bad");
    rm_rf(dir);
    CHECK_RC(tq_mkdirs(dir), TQ_OK);
    snprintf(file, sizeof file, "%s/model.safetensors", dir);
    write_bytes(file, b, len);
    tq_ckpt* c = NULL;
    CHECK_RC(tq_ckpt_open(dir, &c), want);
    CHECK(c == NULL);
    CHECK(strstr(tq_last_error(), "model.safetensors") != NULL); /* names the file */
    if (must_mention) CHECK(strstr(tq_last_error(), must_mention) != NULL);
    tq_ckpt_free(&c);
    free(b);
}

// ------------------------------------------------------------------------------------------------
// values used by writer tests: exactly representable in bf16 and f16

static float val(int tensor, int64_t i) { return (float)((i * 7 + tensor * 3) % 64 - 32) * 0.25f; }

typedef struct {
    const char* name;
    tq_dtype dt;
    int nd;
    int64_t shape[3];
} spec;

static const spec g_specs[] = {
    {"model.embed_tokens.weight", TQ_F32, 2, {40, 24, 0}},
    {"model.layers.0.mlp.up_proj.weight", TQ_BF16, 2, {33, 24, 0}},
    {"model.layers.0.input_layernorm.weight", TQ_F16, 1, {24, 0, 0}},
    {"model.layers.0.self_attn.k_proj.weight", TQ_BF16, 3, {2, 5, 24}},
    {"model.norm.weight", TQ_F32, 1, {24, 0, 0}},
    {"scalar.weight", TQ_F32, 0, {0, 0, 0}},
    {"empty.weight", TQ_F16, 2, {0, 24, 0}},
};
#define N_SPECS ((int)(sizeof g_specs / sizeof g_specs[0]))

static int64_t numel_of(const spec* s)
{
    int64_t n = 1;
    for (int d = 0; d < s->nd; d++) n *= s->shape[d];
    return n;
}

/* Write every spec tensor row-chunk by row-chunk in a scrambled order (last chunk first). */
static tq_status write_specs(tq_st_writer* w)
{
    for (int t = 0; t < N_SPECS; t++) TQ_FORWARD(tq_st_writer_add(w, g_specs[t].name, g_specs[t].dt, g_specs[t].nd, g_specs[t].shape));
    TQ_FORWARD(tq_st_writer_set_metadata(w, "producer", "test_safetensors"));
    TQ_FORWARD(tq_st_writer_begin(w));
    for (int t = N_SPECS - 1; t >= 0; t--) {
        const spec* s = &g_specs[t];
        int64_t cols = s->nd ? s->shape[s->nd - 1] : 1;
        int64_t rows = cols ? numel_of(s) / cols : 0;
        if (s->nd == 0) rows = 1;
        float* v = malloc((size_t)(numel_of(s) + 1) * sizeof *v);
        for (int64_t i = 0; i < numel_of(s); i++) v[i] = val(t, i);
        const int64_t step = 7;
        for (int64_t r0 = ((rows - 1) / step) * step; r0 >= 0 && rows > 0; r0 -= step) {
            int64_t nr = rows - r0 < step ? rows - r0 : step;
            tq_status rc;
            if (s->dt == TQ_F32 && (r0 / step) % 2 == 0)
                rc = tq_st_writer_write_rows(w, s->name, r0, nr, v + r0 * cols, (size_t)(nr * cols) * 4);
            else
                rc = tq_st_writer_write_rows_f32(w, s->name, r0, nr, v + r0 * cols, nr * cols);
            if (rc != TQ_OK) {
                free(v);
                return rc;
            }
        }
        if (rows == 0) {
            tq_status rc = tq_st_writer_write(w, s->name, v, 0);
            if (rc != TQ_OK) {
                free(v);
                return rc;
            }
        }
        free(v);
    }
    return TQ_OK;
}

static void check_specs(const tq_ckpt* c)
{
    CHECK(tq_ckpt_count(c) == N_SPECS);
    for (int64_t i = 1; i < tq_ckpt_count(c); i++)
        CHECK(strcmp(tq_ckpt_tensor(c, i - 1)->name, tq_ckpt_tensor(c, i)->name) < 0);
    for (int t = 0; t < N_SPECS; t++) {
        const spec* s = &g_specs[t];
        const tq_tensor_info* ti = tq_ckpt_find(c, s->name);
        CHECK(ti != NULL);
        if (!ti) continue;
        CHECK(ti->dtype == s->dt);
        CHECK(ti->ndim == s->nd);
        for (int d = 0; d < s->nd; d++) CHECK(ti->shape[d] == s->shape[d]);
        CHECK(ti->nbytes == (uint64_t)numel_of(s) * tq_dtype_size(s->dt));
        CHECK(ti->offset % tq_dtype_size(s->dt) == 0); /* aligned to its element size */
        int64_t n = tq_tensor_numel(ti);
        CHECK(n == numel_of(s));
        float* v = malloc((size_t)(n + 1) * sizeof *v);
        CHECK_RC(tq_ckpt_read_f32(c, ti, 0, tq_tensor_rows(ti), v, (size_t)n * sizeof *v), TQ_OK);
        int bad = 0;
        for (int64_t i = 0; i < n; i++) bad += v[i] != val(t, i);
        CHECK(bad == 0);
        /* row ranges */
        int64_t rows = tq_tensor_rows(ti), cols = tq_tensor_cols(ti);
        if (rows >= 3) {
            int64_t r0 = rows / 3, nr = rows - r0 - 1;
            float* part = malloc((size_t)(nr * cols) * sizeof *part);
            CHECK_RC(tq_ckpt_read_f32(c, ti, r0, nr, part, (size_t)(nr * cols) * sizeof *part), TQ_OK);
            bad = 0;
            for (int64_t i = 0; i < nr * cols; i++) bad += part[i] != val(t, r0 * cols + i);
            CHECK(bad == 0);
            /* raw bytes of the same rows decode to the same values */
            size_t esz = tq_dtype_size(ti->dtype);
            unsigned char* raw = malloc((size_t)(nr * cols) * esz);
            CHECK_RC(tq_ckpt_read_raw(c, ti, r0, nr, raw, (size_t)(nr * cols) * esz), TQ_OK);
            float* conv = malloc((size_t)(nr * cols) * sizeof *conv);
            tq_convert_to_f32(conv, raw, ti->dtype, (size_t)(nr * cols));
            CHECK(memcmp(conv, part, (size_t)(nr * cols) * sizeof *conv) == 0);
            /* errors: out of range, small buffer */
            CHECK_RC(tq_ckpt_read_f32(c, ti, rows - 1, 2, part, (size_t)(nr * cols) * sizeof *part), TQ_ERR_ARG);
            CHECK(strstr(tq_last_error(), s->name) != NULL);
            CHECK_RC(tq_ckpt_read_raw(c, ti, 0, nr, raw, (size_t)(nr * cols) * esz - 1), TQ_ERR_ARG);
            CHECK_RC(tq_ckpt_read_f32(c, ti, -1, 1, part, (size_t)(nr * cols) * sizeof *part), TQ_ERR_ARG);
            free(raw);
            free(conv);
            free(part);
        }
        free(v);
    }
    CHECK(tq_ckpt_find(c, "no.such.tensor") == NULL);

    /* file order + batched reads: equal to per-tensor raw reads, merged when adjacent */
    int64_t nt = tq_ckpt_count(c);
    int64_t* order = malloc((size_t)nt * sizeof *order);
    CHECK_RC(tq_ckpt_file_order(c, order, nt), TQ_OK);
    CHECK_RC(tq_ckpt_file_order(c, order, nt - 1), TQ_ERR_ARG);
    size_t total = 0;
    for (int64_t i = 0; i < nt; i++) {
        const tq_tensor_info* t = tq_ckpt_tensor(c, order[i]);
        total += t->nbytes;
        if (i > 0) {
            const tq_tensor_info* p = tq_ckpt_tensor(c, order[i - 1]);
            CHECK(p->file_idx < t->file_idx || (p->file_idx == t->file_idx && p->offset + p->nbytes <= t->offset));
        }
    }
    unsigned char* all = malloc(total);
    unsigned char* one = malloc(total);
    CHECK_RC(tq_ckpt_read_batch(c, order, nt, all, total), TQ_OK);
    CHECK_RC(tq_ckpt_read_batch(c, order, nt, all, total - 1), TQ_ERR_ARG);
    size_t pos = 0;
    for (int64_t i = 0; i < nt; i++) {
        const tq_tensor_info* t = tq_ckpt_tensor(c, order[i]);
        CHECK_RC(tq_ckpt_read_raw(c, t, 0, tq_tensor_rows(t), one + pos, total - pos), TQ_OK);
        pos += t->nbytes;
    }
    CHECK(pos == total && memcmp(all, one, total) == 0);
    /* reverse order (no merging) gives the same bytes per tensor */
    for (int64_t i = 0; i < nt / 2; i++) {
        int64_t x = order[i];
        order[i] = order[nt - 1 - i];
        order[nt - 1 - i] = x;
    }
    CHECK_RC(tq_ckpt_read_batch(c, order, nt, all, total), TQ_OK);
    pos = 0;
    for (int64_t i = 0; i < nt; i++) {
        const tq_tensor_info* t = tq_ckpt_tensor(c, order[i]);
        CHECK_RC(tq_ckpt_read_raw(c, t, 0, tq_tensor_rows(t), one, total), TQ_OK);
        CHECK(memcmp(all + pos, one, t->nbytes) == 0);
        pos += t->nbytes;
    }
    order[0] = nt; /* out of range */
    CHECK_RC(tq_ckpt_read_batch(c, order, nt, all, total), TQ_ERR_ARG);
    free(all);
    free(one);
    free(order);
}

// ------------------------------------------------------------------------------------------------

static void test_writer_single(void)
{
    char path[4200];
    path_in(path, sizeof path, "", "single.safetensors");
    tq_st_writer* w = NULL;
    CHECK_RC(tq_st_writer_create_file(path, &w), TQ_OK);
    CHECK_RC(write_specs(w), TQ_OK);
    CHECK(tq_st_writer_file_count(w) == 1);
    CHECK(!tq_file_exists(path)); /* not visible before finish */
    CHECK_RC(tq_st_writer_finish(w), TQ_OK);
    tq_st_writer_free(&w);
    CHECK(w == NULL);
    CHECK(count_tmp_files(g_tmp) == 0);
    /* header length is a multiple of 8, file passes the in-memory validator too */
    char* data = NULL;
    size_t len = 0;
    CHECK_RC(tq_read_file(path, &data, &len), TQ_OK);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | (unsigned char)data[i];
    CHECK(hl % 8 == 0);
    CHECK(strstr(data + 8, "\"__metadata__\"") != NULL && strstr(data + 8, "\"format\":\"pt\"") != NULL);
    int64_t nt = 0;
    CHECK_RC(tq_st_validate_buffer(data, len, path, &nt), TQ_OK);
    CHECK(nt == N_SPECS);
    free(data);
    tq_ckpt* c = NULL;
    CHECK_RC(tq_ckpt_open(path, &c), TQ_OK);
    if (c) {
        check_specs(c);
        CHECK(tq_ckpt_file_count(c) == 1);
        CHECK(tq_ckpt_config_json(c) == NULL); /* no config.json beside it */
        CHECK(!strcmp(tq_ckpt_dir(c), g_tmp));
    }
    tq_ckpt_free(&c);
    CHECK(c == NULL);
}

static void test_writer_errors(void)
{
    char path[4200];
    path_in(path, sizeof path, "", "errs.safetensors");
    tq_st_writer* w = NULL;
    int64_t shp[2] = {4, 4};
    CHECK_RC(tq_st_writer_create_file(path, &w), TQ_OK);
    CHECK_RC(tq_st_writer_add(w, "a", TQ_F32, 2, shp), TQ_OK);
    CHECK_RC(tq_st_writer_add(w, "a", TQ_F32, 2, shp), TQ_ERR_ARG); /* duplicate */
    CHECK_RC(tq_st_writer_add(w, "__metadata__", TQ_F32, 2, shp), TQ_ERR_ARG);
    CHECK_RC(tq_st_writer_add(w, "b", TQ_DTYPE_INVALID, 2, shp), TQ_ERR_ARG);
    int64_t neg[2] = {4, -1};
    CHECK_RC(tq_st_writer_add(w, "c", TQ_F32, 2, neg), TQ_ERR_ARG);
    CHECK_RC(tq_st_writer_add(w, "d", TQ_BF16, 2, shp), TQ_OK);
    CHECK_RC(tq_st_writer_write(w, "a", shp, 64), TQ_ERR_ARG); /* before begin */
    CHECK_RC(tq_st_writer_begin(w), TQ_OK);
    CHECK_RC(tq_st_writer_add(w, "e", TQ_F32, 2, shp), TQ_ERR_ARG); /* after begin */
    float v[16] = {0};
    CHECK_RC(tq_st_writer_write(w, "zz", v, 64), TQ_ERR_ARG);          /* undeclared */
    CHECK_RC(tq_st_writer_write(w, "a", v, 60), TQ_ERR_ARG);           /* wrong size */
    CHECK_RC(tq_st_writer_write_rows(w, "a", 3, 2, v, 32), TQ_ERR_ARG); /* past the end */
    CHECK_RC(tq_st_writer_write_rows(w, "a", 0, 2, v, 32), TQ_OK);
    CHECK_RC(tq_st_writer_write_rows(w, "a", 2, 2, v, 32), TQ_OK);
    CHECK_RC(tq_st_writer_write_rows(w, "a", 2, 2, v, 32), TQ_ERR_ARG); /* too many bytes: overlap */
    CHECK_RC(tq_st_writer_write_rows_f32(w, "d", 0, 3, v, 12), TQ_OK);
    CHECK_RC(tq_st_writer_finish(w), TQ_ERR_ARG); /* d incomplete */
    CHECK(strstr(tq_last_error(), "'d'") != NULL);
    CHECK(!tq_file_exists(path));
    CHECK(count_tmp_files(g_tmp) == 1);
    tq_st_writer_free(&w); /* abort: temp removed */
    CHECK(count_tmp_files(g_tmp) == 0);
    CHECK(!tq_file_exists(path));
}

static void test_writer_sharded(void)
{
    char dir[4200], p[4400];
    path_in(dir, sizeof dir, "", "sharded");
    tq_st_writer* w = NULL;
    CHECK_RC(tq_st_writer_create_dir(dir, 2000, &w), TQ_OK);
    CHECK_RC(write_specs(w), TQ_OK);
    int nf = tq_st_writer_file_count(w);
    /* 3840 B (embed, own shard), 1584 B, 48+480+96+4+0 ... */
    CHECK(nf == 3);
    CHECK_RC(tq_st_writer_finish(w), TQ_OK);
    for (int f = 0; f < nf; f++) {
        snprintf(p, sizeof p, "%s/model-%05d-of-%05d.safetensors", dir, f + 1, nf);
        CHECK(tq_file_exists(p));
        CHECK(!strcmp(tq_st_writer_file_path(w, f), p));
    }
    tq_st_writer_free(&w);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    CHECK(tq_file_exists(p));
    char* idx = NULL;
    size_t il = 0;
    CHECK_RC(tq_read_file(p, &idx, &il), TQ_OK);
    int64_t ne = 0;
    int nfi = 0;
    CHECK_RC(tq_st_validate_index_text(idx, il, p, &ne, &nfi), TQ_OK);
    CHECK(ne == N_SPECS && nfi == 3);
    CHECK(idx && strstr(idx, "\"total_size\": 6052") != NULL);
    free(idx);
    snprintf(p, sizeof p, "%s/config.json", dir);
    const char* cfg = "{\"model_type\": \"llama\"}\n";
    write_bytes(p, cfg, strlen(cfg));
    tq_ckpt* c = NULL;
    CHECK_RC(tq_ckpt_open(dir, &c), TQ_OK);
    if (c) {
        check_specs(c);
        CHECK(tq_ckpt_file_count(c) == 3);
        CHECK(tq_ckpt_config_json(c) && !strcmp(tq_ckpt_config_json(c), cfg));
        /* the embedding (largest, added first) sits alone in shard 1 */
        const tq_tensor_info* e = tq_ckpt_find(c, "model.embed_tokens.weight");
        CHECK(e && strstr(tq_ckpt_file_path(c, e->file_idx), "model-00001-of-00003") != NULL);
    }
    tq_ckpt_free(&c);
    /* opening the index file directly works too */
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    CHECK_RC(tq_ckpt_open(p, &c), TQ_OK);
    CHECK(tq_ckpt_count(c) == N_SPECS);
    tq_ckpt_free(&c);

    /* rewrite the same directory unsharded: the stale index is removed, the single file wins */
    CHECK_RC(tq_st_writer_create_dir(dir, 0, &w), TQ_OK);
    CHECK_RC(write_specs(w), TQ_OK);
    CHECK_RC(tq_st_writer_finish(w), TQ_OK);
    tq_st_writer_free(&w);
    CHECK(!tq_file_exists(p));
    CHECK_RC(tq_ckpt_open(dir, &c), TQ_OK);
    CHECK(tq_ckpt_file_count(c) == 1);
    if (c) check_specs(c);
    tq_ckpt_free(&c);
    CHECK(count_tmp_files(dir) == 0);
}

/* Damage the sharded checkpoint's index in ways a user meets (stale index, missing shard). */
static void test_index_errors(void)
{
    char dir[4200], p[4400], q[4400];
    path_in(dir, sizeof dir, "", "shidx");
    rm_rf(dir);
    tq_st_writer* w = NULL;
    CHECK_RC(tq_st_writer_create_dir(dir, 2000, &w), TQ_OK);
    CHECK_RC(write_specs(w), TQ_OK);
    CHECK_RC(tq_st_writer_finish(w), TQ_OK);
    tq_st_writer_free(&w);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    char* good = NULL;
    size_t gl = 0;
    CHECK_RC(tq_read_file(p, &good, &gl), TQ_OK);
    if (!good) return;
    tq_ckpt* c = NULL;

    /* index names a file that does not exist */
    {
        char* t = strdup(good);
        char* s = strstr(t, "model-00002-of-00003");
        memcpy(s, "model-00009-of-00003", 20);
        write_bytes(p, t, strlen(t));
        CHECK_RC(tq_ckpt_open(dir, &c), TQ_ERR_NOTFOUND);
        CHECK(strstr(tq_last_error(), "model-00009-of-00003.safetensors") != NULL);
        CHECK(strstr(tq_last_error(), "model.safetensors.index.json") != NULL);
        free(t);
    }
    /* index maps a tensor to a file that does not hold it (and that file's tensor to nowhere) */
    {
        const char* key = "\"model.norm.weight\": \"model-";
        char* t = strdup(good);
        char* s = strstr(t, key);
        CHECK(s != NULL);
        if (s) {
            char* digit = s + strlen(key) + 4; /* model-0000K */
            *digit = *digit == '1' ? '2' : '1';
            write_bytes(p, t, strlen(t));
            CHECK_RC(tq_ckpt_open(dir, &c), TQ_ERR_FORMAT);
            CHECK(strstr(tq_last_error(), "model.norm.weight") != NULL);
        }
        free(t);
    }
    /* a tensor listed in the index is missing from its shard: rename the entry */
    {
        char* t = strdup(good);
        char* s = strstr(t, "\"scalar.weight\"");
        CHECK(s != NULL);
        if (s) {
            memcpy(s, "\"scalar.wxight\"", 15);
            write_bytes(p, t, strlen(t));
            CHECK_RC(tq_ckpt_open(dir, &c), TQ_ERR_FORMAT);
            /* either the shard's scalar.weight is not indexed, or scalar.wxight is missing: both named */
            CHECK(strstr(tq_last_error(), "scalar.w") != NULL);
        }
        free(t);
    }
    /* tensor missing from the file the index names: index has an extra entry */
    {
        char* t = strdup(good);
        char* s = strstr(t, "\"weight_map\": {");
        CHECK(s != NULL);
        if (s) {
            size_t pre = (size_t)(s - t) + strlen("\"weight_map\": {");
            char* u = malloc(strlen(t) + 100);
            memcpy(u, t, pre);
            strcpy(u + pre, "\"ghost.weight\": \"model-00001-of-00003.safetensors\",");
            strcat(u, t + pre);
            write_bytes(p, u, strlen(u));
            CHECK_RC(tq_ckpt_open(dir, &c), TQ_ERR_FORMAT);
            CHECK(strstr(tq_last_error(), "ghost.weight") != NULL);
            CHECK(strstr(tq_last_error(), "model-00001-of-00003.safetensors") != NULL);
            free(u);
        }
        free(t);
    }
    /* path escapes and malformed index JSON */
    const char* bad_idx[] = {
        "{\"weight_map\": {\"a\": \"../x.safetensors\"}}",
        "{\"weight_map\": {\"a\": \"/etc/passwd\"}}",
        "{\"weight_map\": {\"a\": 3}}",
        "{\"weight_map\": {}}",
        "{\"weight_map\": []}",
        "{\"metadata\": 5, \"weight_map\": {\"a\": \"b\"}}",
        "{\"weight_map\": {\"a\": \"b\", \"a\": \"c\"}}",
        "{\"weight_map\": {\"a\": \"b\"",
        "[]",
        "",
    };
    for (size_t i = 0; i < sizeof bad_idx / sizeof bad_idx[0]; i++) {
        write_bytes(p, bad_idx[i], strlen(bad_idx[i]));
        CHECK_RC(tq_ckpt_open(dir, &c), TQ_ERR_FORMAT);
        CHECK(strstr(tq_last_error(), "model.safetensors.index.json") != NULL);
        CHECK_RC(tq_st_validate_index_text(bad_idx[i], strlen(bad_idx[i]), "idx", NULL, NULL), TQ_ERR_FORMAT);
    }
    /* restore; then remove one shard outright */
    write_bytes(p, good, gl);
    CHECK_RC(tq_ckpt_open(dir, &c), TQ_OK);
    tq_ckpt_free(&c);
    snprintf(q, sizeof q, "%s/model-00003-of-00003.safetensors", dir);
    unlink(q);
    CHECK_RC(tq_ckpt_open(dir, &c), TQ_ERR_NOTFOUND);
    CHECK(strstr(tq_last_error(), "model-00003-of-00003.safetensors") != NULL);
    /* shards without their index: the message says so */
    unlink(p);
    CHECK_RC(tq_ckpt_open(dir, &c), TQ_ERR_NOTFOUND);
    CHECK(strstr(tq_last_error(), "index") != NULL && strstr(tq_last_error(), "-of-00003.safetensors") != NULL);
    /* invalid config.json beside a good checkpoint */
    path_in(dir, sizeof dir, "", "badcfg");
    CHECK_RC(tq_st_writer_create_dir(dir, 0, &w), TQ_OK);
    CHECK_RC(write_specs(w), TQ_OK);
    CHECK_RC(tq_st_writer_finish(w), TQ_OK);
    tq_st_writer_free(&w);
    snprintf(q, sizeof q, "%s/config.json", dir);
    write_bytes(q, "{\"a\": ", 6);
    CHECK_RC(tq_ckpt_open(dir, &c), TQ_ERR_FORMAT);
    CHECK(strstr(tq_last_error(), "config.json") != NULL);
    /* empty directory, missing path */
    path_in(dir, sizeof dir, "", "emptydir");
    CHECK_RC(tq_mkdirs(dir), TQ_OK);
    CHECK_RC(tq_ckpt_open(dir, &c), TQ_ERR_NOTFOUND);
    CHECK(strstr(tq_last_error(), "emptydir") != NULL);
    path_in(dir, sizeof dir, "", "does-not-exist");
    CHECK_RC(tq_ckpt_open(dir, &c), TQ_ERR_NOTFOUND);
    free(good);
}

static void test_crafted(void)
{
    /* baseline: a valid crafted file passes */
    const char* good = "{\"__metadata__\":{\"format\":\"pt\"},\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                       "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[24,32]}}  ";
    size_t len;
    unsigned char* b = make_st(good, 32, &len);
    int64_t n = 0;
    CHECK_RC(tq_st_validate_buffer(b, len, "good", &n), TQ_OK);
    CHECK(n == 2);
    /* truncation at every offset: never OK, never a crash, a clean status and message */
    for (size_t cut = 0; cut < len; cut++) {
        tq_clear_error();
        tq_status rc = tq_st_validate_buffer(b, cut, "trunc.safetensors", &n);
        CHECK(rc == TQ_ERR_CORRUPT || rc == TQ_ERR_FORMAT);
        CHECK(strstr(tq_last_error(), "trunc.safetensors") != NULL);
    }
    /* truncated files on disk, at a few offsets (header length, mid-header, mid-data) */
    size_t cuts[] = {0, 5, 8, 20, len - 33, len - 1};
    char dir[4200], file[4300];
    path_in(dir, sizeof dir, "", "trunc");
    CHECK_RC(tq_mkdirs(dir), TQ_OK);
    snprintf(file, sizeof file, "%s/model.safetensors", dir);
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        write_bytes(file, b, cuts[i]);
        tq_ckpt* c = NULL;
        tq_status rc = tq_ckpt_open(dir, &c);
        CHECK(rc == TQ_ERR_CORRUPT || rc == TQ_ERR_FORMAT);
        CHECK(strstr(tq_last_error(), file) != NULL);
        CHECK(c == NULL);
    }
    /* the data-truncated case names the tensor and says truncated */
    write_bytes(file, b, len - 1);
    {
        tq_ckpt* c = NULL;
        CHECK_RC(tq_ckpt_open(dir, &c), TQ_ERR_CORRUPT);
        CHECK(strstr(tq_last_error(), "tensor b") != NULL && strstr(tq_last_error(), "truncated") != NULL);
    }
    free(b);

    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]", 24, TQ_ERR_FORMAT, "not valid JSON");
    expect_bad("[1,2,3]", 0, TQ_ERR_FORMAT, "not a JSON object");
    expect_bad("{\"w\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2, TQ_ERR_FORMAT, "tensor w");
    expect_bad("{\"w\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,16]}}", 16, TQ_ERR_UNSUPPORTED, "I64");
    expect_bad("{\"w\":{\"dtype\":5,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, TQ_ERR_FORMAT, "dtype");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 24, TQ_ERR_FORMAT, "span");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,-3],\"data_offsets\":[0,24]}}", 24, TQ_ERR_FORMAT, "shape");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 24, TQ_ERR_FORMAT, "shape");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":\"2\",\"data_offsets\":[0,8]}}", 24, TQ_ERR_FORMAT, "shape");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, TQ_ERR_FORMAT,
               "dimensions");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,4]}}", 4,
               TQ_ERR_FORMAT, "tensor w");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, TQ_ERR_FORMAT, "data_offsets");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8, TQ_ERR_FORMAT, "data_offsets");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, TQ_ERR_FORMAT, "data_offsets");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 8, TQ_ERR_FORMAT, "data_offsets");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 16, TQ_ERR_CORRUPT, "past the end");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
               "\"v\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
               24, TQ_ERR_FORMAT, "overlap");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
               "\"v\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,8]}}",
               24, TQ_ERR_FORMAT, "overlap");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
               16, TQ_ERR_FORMAT, "JSON");
    expect_bad("{\"__metadata__\":[1],\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
               TQ_ERR_FORMAT, "__metadata__");
    expect_bad("{\"__metadata__\":{\"a\":1}}", 0, TQ_ERR_FORMAT, "__metadata__");
    expect_bad("{\"w\":[1,2]}", 0, TQ_ERR_FORMAT, "tensor w");
    expect_bad("{\"\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, TQ_ERR_FORMAT, "tensor name");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}\x01", 8, TQ_ERR_FORMAT, "JSON");

    /* header length fields: 0, 1, absurd, larger than the file */
    unsigned char hdr[16] = {0};
    CHECK_RC(tq_st_validate_buffer(hdr, 16, "zero", NULL), TQ_ERR_FORMAT);
    hdr[0] = 1;
    CHECK_RC(tq_st_validate_buffer(hdr, 16, "one", NULL), TQ_ERR_FORMAT);
    memset(hdr, 0xff, 8);
    CHECK_RC(tq_st_validate_buffer(hdr, 16, "huge", NULL), TQ_ERR_FORMAT);
    CHECK(strstr(tq_last_error(), "header length") != NULL);
    memset(hdr, 0, 8);
    hdr[0] = 9;
    CHECK_RC(tq_st_validate_buffer(hdr, 16, "short", NULL), TQ_ERR_CORRUPT);
    /* acceptable: zero-sized tensor sharing an offset, empty header object with metadata only, gaps */
    size_t l2;
    unsigned char* ok = make_st("{\"__metadata__\":{},\"e\":{\"dtype\":\"F16\",\"shape\":[0,4],\"data_offsets\":[4,4]},"
                                "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                                "\"g\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[12,14]}}",
                                16, &l2);
    CHECK_RC(tq_st_validate_buffer(ok, l2, "ok", &n), TQ_OK);
    CHECK(n == 3);
    free(ok);
}

/* bf16/f16 decoding of known bit patterns through the reader. */
static void test_dtype_reads(void)
{
    const char* json = "{\"h\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[0,12]},"
                       "\"b\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[12,24]}}";
    size_t len;
    unsigned char* buf = make_st(json, 24, &len);
    uint16_t h[6] = {0x3c00, 0xc000, 0x3555, 0x0001, 0x7bff, 0x8000}; /* 1, -2, 0.333, 2^-24, 65504, -0 */
    uint16_t bb[6] = {0x3f80, 0xc040, 0x4049, 0x0000, 0x7f80, 0xbf00}; /* 1, -3, 3.140625, 0, inf, -0.5 */
    size_t hl = strlen(json);
    memcpy(buf + 8 + hl, h, 12);
    memcpy(buf + 8 + hl + 12, bb, 12);
    char dir[4200], file[4300];
    path_in(dir, sizeof dir, "", "dtypes");
    CHECK_RC(tq_mkdirs(dir), TQ_OK);
    snprintf(file, sizeof file, "%s/model.safetensors", dir);
    write_bytes(file, buf, len);
    free(buf);
    tq_ckpt* c = NULL;
    CHECK_RC(tq_ckpt_open(file, &c), TQ_OK);
    if (!c) return;
    float v[6];
    CHECK_RC(tq_ckpt_read_f32(c, tq_ckpt_find(c, "h"), 0, 2, v, sizeof v), TQ_OK);
    CHECK(v[0] == 1.0f && v[1] == -2.0f && v[2] > 0.33325f && v[2] < 0.33334f && v[3] == 0x1p-24f && v[4] == 65504.0f);
    CHECK(v[5] == 0.0f && signbit(v[5]));
    CHECK_RC(tq_ckpt_read_f32(c, tq_ckpt_find(c, "b"), 1, 1, v, 3 * sizeof(float)), TQ_OK);
    CHECK(v[0] == 0.0f && isinf(v[1]) && v[2] == -0.5f);
    CHECK_RC(tq_ckpt_read_f32(c, tq_ckpt_find(c, "b"), 0, 2, v, 5 * sizeof(float)), TQ_ERR_ARG); /* small buffer */
    CHECK_RC(tq_ckpt_read_f32(c, tq_ckpt_find(c, "b"), 0, 1, v, 3 * sizeof(float)), TQ_OK);
    CHECK(v[0] == 1.0f && v[1] == -3.0f && v[2] == 3.140625f);
    tq_ckpt_free(&c);
}

int main(void)
{
    const char* base = getenv("TMPDIR");
    snprintf(g_tmp, sizeof g_tmp, "%s/tq_st_test_XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(g_tmp)) {
        perror("mkdtemp");
        return EXIT_FAILURE;
    }
    test_writer_single();
    test_writer_errors();
    test_writer_sharded();
    test_index_errors();
    test_crafted();
    test_dtype_reads();
    rm_rf(g_tmp);
    printf("%s: %d checks, %d failed\n", g_failed ? "FAILED" : "ok", g_checks, g_failed);
    return g_failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
