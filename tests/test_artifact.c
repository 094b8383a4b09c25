/* test_artifact.c — packed HDF5 artifacts (pipeline/artifact.h): round trip of every codec (zstd off
 * and on), row-range reads, shard assignment, byte reproducibility (write twice -> identical sha256),
 * metrics rewrite, verify errors (flipped data byte, flipped compressed byte, truncated shard, missing
 * shard, missing tensor vs plan, codec vs plan, wrong format version in index and shard), publish
 * (model card, SHA256SUMS, LICENSE, refusal on a damaged artifact) and export to safetensors
 * (bit-equal to tq_dequantize_ref + bf16 rounding). Plain C: prints FAILED lines, exits non-zero. */
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "artifact.h"
#include "ckpt.h"
#include "codec.h"
#include "commands.h"
#include "dtype.h"
#include "fileio.h"
#include "hash.h"

static int failures = 0;
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            failures++;                                                                            \
            fprintf(stderr, "FAILED %s:%d: %s: ", __FILE__, __LINE__, #cond);                      \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, " [last error: %s]\n", tq_last_error());                               \
        }                                                                                          \
    } while (0)

// ------------------------------------------------------------------------------------------------
// a small model: one tensor per codec plus odd shapes

typedef struct {
    char name[TQ_MAX_NAME];
    const char* role;
    tq_codec codec;
    int ndim;
    int64_t shape[4];
    tq_dtype dtype;
} spec;

static spec specs[64];
static int nspecs = 0;

static void add_spec(const char* name, const char* role, const char* codec, int group, int ndim, const int64_t* shape)
{
    spec* s = &specs[nspecs++];
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    s->role = role;
    if (tq_codec_parse(codec, group, &s->codec) != TQ_OK) {
        fprintf(stderr, "bad codec %s\n", codec);
        exit(1);
    }
    s->ndim = ndim;
    memcpy(s->shape, shape, (size_t)ndim * sizeof *shape);
    s->dtype = TQ_BF16;
}

static int cmp_spec(const void* a, const void* b) { return strcmp(((const spec*)a)->name, ((const spec*)b)->name); }

static void build_specs(void)
{
    const char* const* names = tq_codec_names();
    for (int i = 0; names[i]; i++) {
        char n[128];
        snprintf(n, sizeof n, "model.layers.%d.mlp.%s.weight", i, names[i]);
        int64_t sh[2] = {5, 200}; /* 200 cols: rotation blocks 128 + 64 + 8 */
        add_spec(n, "mlp_up", names[i], (i % 3 == 0) ? 64 : 128, 2, sh);
    }
    int64_t s1[1] = {200};
    add_spec("model.norm.weight", "norm", "f32", 0, 1, s1);
    int64_t s3[3] = {2, 3, 40};
    add_spec("model.conv.weight", "lin_conv", "fp16", 0, 3, s3);
    int64_t sb[2] = {600, 4096}; /* 2 zstd chunks of 512 rows: the second one is a partial edge chunk */
    add_spec("model.layers.0.mlp.big_proj.weight", "mlp_down", "tq4", 128, 2, sb);
    int64_t se[2] = {33, 256};
    add_spec("model.embed_tokens.weight", "embed", "tq4", 256, 2, se);
    qsort(specs, (size_t)nspecs, sizeof *specs, cmp_spec);
}

static int64_t spec_rows(const spec* s)
{
    int64_t r = 1;
    for (int i = 0; i + 1 < s->ndim; i++) r *= s->shape[i];
    return r;
}
static int64_t spec_cols(const spec* s) { return s->ndim ? s->shape[s->ndim - 1] : 1; }

static float* make_weights(const spec* s, uint64_t salt)
{
    int64_t n = spec_rows(s) * spec_cols(s);
    float* w = malloc((size_t)n * sizeof *w);
    uint64_t x = tq_xxh64(s->name, strlen(s->name), salt) | 1;
    for (int64_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        double u = (double)(x >> 11) / 9007199254740992.0;
        w[i] = (float)((u - 0.5) * 0.2 * (1.0 + (i % 17 == 0 ? 5.0 : 0.0)));
    }
    return w;
}

static tq_status quantize_spec(const spec* s, tq_qtensor* q)
{
    TQ_FORWARD(tq_qtensor_alloc(q, &s->codec, spec_rows(s), spec_cols(s), tq_tensor_seed(42, s->name)));
    float* w = make_weights(s, 7);
    tq_status rc = tq_quantize_ref(w, q, s->name);
    free(w);
    return rc;
}

static const char* test_meta_plan(void)
{
    static char plan[16384];
    size_t off = snprintf(plan, sizeof plan, "# tqpipe plan v1\n");
    for (int i = 0; i < nspecs; i++)
        off += snprintf(plan + off, sizeof plan - off, "%s %s:g%d   # role=%s\n", specs[i].name, specs[i].codec.name,
                        specs[i].codec.group, specs[i].role);
    return plan;
}

static tq_artifact_meta test_meta(int level)
{
    tq_artifact_meta m;
    memset(&m, 0, sizeof m);
    m.config_json = "{\"model_type\": \"llama\", \"hidden_size\": 200}";
    m.plan = test_meta_plan();
    m.provenance = "{\"source\": \"/nonexistent/source\", \"files\": {\"model.safetensors\": \"abc123\"}}";
    m.job = "model: test\nseed: 42\n";
    m.model_name = "test-model";
    m.zstd_level = level;
    return m;
}

/* Write the whole spec list into dir, split into shards of at most max_bytes. */
static tq_status write_artifact(const char* dir, int level, uint64_t max_bytes, int* nshards_out)
{
    uint64_t bytes[64];
    int shard_of[64];
    for (int i = 0; i < nspecs; i++) bytes[i] = tq_codec_bytes(&specs[i].codec, spec_rows(&specs[i]), spec_cols(&specs[i]));
    int ns = 0;
    TQ_FORWARD(tq_artifact_assign_shards(bytes, nspecs, max_bytes, shard_of, &ns));
    tq_artifact_meta meta = test_meta(level);
    for (int k = 0; k < ns; k++) {
        tq_shard_writer* w = NULL;
        TQ_FORWARD(tq_shard_create(dir, k, ns, &meta, &w));
        for (int i = 0; i < nspecs; i++) {
            if (shard_of[i] != k) continue;
            tq_qtensor q;
            tq_status rc = quantize_spec(&specs[i], &q);
            tq_artifact_desc d = {specs[i].name, specs[i].role, specs[i].dtype, specs[i].ndim, {0}};
            memcpy(d.orig_shape, specs[i].shape, sizeof specs[i].shape);
            uint64_t sum = 0;
            if (rc == TQ_OK) rc = tq_shard_add(w, &d, &q, &sum);
            if (rc == TQ_OK && sum != tq_artifact_checksum(&q)) rc = tq_fail(TQ_ERR_CORRUPT, "checksum_out differs");
            tq_qtensor_release(&q);
            if (rc != TQ_OK) {
                tq_shard_abort(&w);
                return rc;
            }
        }
        TQ_FORWARD(tq_shard_commit(&w));
    }
    if (nshards_out) *nshards_out = ns;
    return tq_artifact_write_index(dir, ns, &meta);
}

static void shard_path(char* out, size_t cap, const char* dir, int k, int n)
{
    char name[64];
    tq_artifact_shard_name(k, n, name, sizeof name);
    snprintf(out, cap, "%s/%s", dir, name);
}

static int run(const char* cmd)
{
    int r = system(cmd);
    return r;
}

// ------------------------------------------------------------------------------------------------

static void test_assign(void)
{
    uint64_t b[6] = {10, 10, 10, 50, 5, 5};
    int s[6], n = 0;
    CHECK(tq_artifact_assign_shards(b, 6, 25, s, &n) == TQ_OK, "assign");
    int want[6] = {0, 0, 1, 2, 3, 3};
    CHECK(n == 4, "nshards %d", n);
    for (int i = 0; i < 6; i++) CHECK(s[i] == want[i], "tensor %d in shard %d, want %d", i, s[i], want[i]);
    CHECK(tq_artifact_assign_shards(b, 0, 25, s, &n) == TQ_OK && n == 1, "empty -> 1 shard");
    CHECK(tq_artifact_assign_shards(b, 6, 0, s, &n) == TQ_ERR_ARG, "limit 0 rejected");
    char name[64];
    tq_artifact_shard_name(2, 12, name, sizeof name);
    CHECK(!strcmp(name, "model-00003-of-00012.tqa.h5"), "name %s", name);
}

static void test_roundtrip(const char* root, int level)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/rt%d", root, level);
    int ns = 0;
    tq_status rc = write_artifact(dir, level, 4000, &ns);
    CHECK(rc == TQ_OK, "write artifact level %d", level);
    CHECK(ns >= 3, "expected several shards, got %d", ns);
    tq_artifact* a = NULL;
    rc = tq_artifact_open(dir, &a);
    CHECK(rc == TQ_OK, "open");
    if (rc != TQ_OK) return;
    CHECK(tq_artifact_count(a) == nspecs, "count %lld", (long long)tq_artifact_count(a));
    CHECK(tq_artifact_shard_count(a) == ns, "shards");
    CHECK(!strcmp(tq_artifact_model_name(a), "test-model"), "model name");
    CHECK(strstr(tq_artifact_config_json(a), "hidden_size") != NULL, "config");
    CHECK(!strcmp(tq_artifact_job(a), "model: test\nseed: 42\n"), "job text");
    int64_t params = 0;
    for (int i = 0; i < nspecs; i++) {
        const spec* s = &specs[i];
        const tq_artifact_tensor* t = tq_artifact_find(a, s->name);
        CHECK(t != NULL, "find %s", s->name);
        if (!t) continue;
        CHECK(t == tq_artifact_tensor_at(a, i), "sorted order %s", s->name);
        CHECK(!strcmp(t->codec.name, s->codec.name) && t->codec.group == s->codec.group, "codec %s", s->name);
        CHECK(t->orig_ndim == s->ndim && !memcmp(t->orig_shape, s->shape, (size_t)s->ndim * 8), "shape %s", s->name);
        CHECK(t->orig_dtype == TQ_BF16 && !strcmp(t->role, s->role), "dtype/role %s", s->name);
        CHECK(t->seed == tq_tensor_seed(42, s->name), "seed %s", s->name);
        params += t->rows * t->cols;
        tq_qtensor q0, q1;
        CHECK(quantize_spec(s, &q0) == TQ_OK, "quantize %s", s->name);
        rc = tq_artifact_read(a, t, &q1);
        CHECK(rc == TQ_OK, "read %s", s->name);
        if (rc == TQ_OK) {
            CHECK(q1.nparts == q0.nparts, "nparts");
            for (int p = 0; p < q0.nparts && p < q1.nparts; p++)
                CHECK(q0.part[p].bytes == q1.part[p].bytes && !memcmp(q0.part[p].data, q1.part[p].data, q0.part[p].bytes),
                      "%s part %s differs after the round trip", s->name, q0.part[p].name);
            CHECK(t->checksum == tq_artifact_checksum(&q0), "checksum %s", s->name);
            /* dequantized values: identical to dequantizing the in-memory tensor */
            size_t n = (size_t)t->rows * (size_t)t->cols;
            float* d0 = malloc(n * 4);
            float* d1 = malloc(n * 4);
            CHECK(tq_dequantize_ref(&q0, d0) == TQ_OK, "deq0");
            CHECK(tq_artifact_dequantize(a, t, d1, n) == TQ_OK, "deq1 %s", s->name);
            CHECK(!memcmp(d0, d1, n * 4), "%s: dequantized values differ", s->name);
            /* quantization error is sane: relative error < 1 for every codec, tiny for fp codecs */
            float* w = make_weights(s, 7);
            double e = 0, ww = 0;
            for (size_t j = 0; j < n; j++) {
                e += (d0[j] - w[j]) * (double)(d0[j] - w[j]);
                ww += (double)w[j] * w[j];
            }
            CHECK(e < ww, "%s: error %.3g vs energy %.3g", s->name, e, ww);
            if (s->codec.kind == TQ_CODEC_F32) CHECK(e == 0, "f32 exact");
            /* rows [1, 3) read separately equal the same rows of the whole tensor */
            if (t->rows >= 3) {
                tq_qtensor qr;
                rc = tq_artifact_read_rows(a, t, 1, 2, &qr);
                CHECK(rc == TQ_OK, "read_rows %s", s->name);
                if (rc == TQ_OK) {
                    float* dr = malloc(2 * (size_t)t->cols * 4);
                    CHECK(tq_dequantize_ref(&qr, dr) == TQ_OK, "deq rows");
                    CHECK(!memcmp(dr, d0 + t->cols, 2 * (size_t)t->cols * 4), "%s: rows 1..3 differ", s->name);
                    free(dr);
                    tq_qtensor_release(&qr);
                }
            }
            free(w);
            free(d0);
            free(d1);
            tq_qtensor_release(&q1);
        }
        tq_qtensor_release(&q0);
    }
    CHECK(tq_artifact_total_params(a) == params, "total params");
    tq_artifact_close(&a);
    tq_verify_report rep;
    rc = tq_artifact_verify(dir, NULL, 0, 1, &rep);
    CHECK(rc == TQ_OK && rep.errors == 0 && rep.tensors_checked == nspecs && rep.shards_checked == ns,
          "verify level %d: %lld tensors %lld shards", level, (long long)rep.tensors_checked, (long long)rep.shards_checked);
    /* two workers split the shards */
    tq_verify_report r0, r1;
    CHECK(tq_artifact_verify(dir, NULL, 0, 2, &r0) == TQ_OK && tq_artifact_verify(dir, NULL, 1, 2, &r1) == TQ_OK &&
              r0.tensors_checked + r1.tensors_checked == nspecs && r1.shards_checked > 0,
          "verify split over 2 workers");
    /* h5dump -H lists the file */
    char cmd[8400], sp[4200];
    int big_shard = 0; /* the shard of the one tensor large enough to be compressed */
    if (tq_artifact_open(dir, &a) == TQ_OK) {
        const tq_artifact_tensor* bt = tq_artifact_find(a, "model.layers.0.mlp.big_proj.weight");
        if (bt) big_shard = bt->shard;
        tq_artifact_close(&a);
    }
    shard_path(sp, sizeof sp, dir, big_shard, ns);
    snprintf(cmd, sizeof cmd, "h5dump -H -p '%s' > '%s/h5dump.txt' 2>&1", sp, root);
    if (run("command -v h5dump >/dev/null 2>&1") == 0) {
        CHECK(run(cmd) == 0, "h5dump -H exit status");
        char path[4200];
        snprintf(path, sizeof path, "%s/h5dump.txt", root);
        char* txt = NULL;
        CHECK(tq_read_file(path, &txt, NULL) == TQ_OK, "read h5dump output");
        CHECK(txt && strstr(txt, "GROUP \"tensors\"") && strstr(txt, "DATASET \"") &&
                  strstr(txt, "ATTRIBUTE \"checksum\"") && strstr(txt, "ATTRIBUTE \"format_version\""),
              "h5dump -H output lacks the expected objects");
        if (level > 0) CHECK(txt && strstr(txt, "32015"), "filter 32015 shown by h5dump");
        free(txt);
    }
}

static int sha_dir(const char* dir, int ns, char out[][65])
{
    for (int k = 0; k <= ns; k++) {
        char p[4200];
        if (k < ns)
            shard_path(p, sizeof p, dir, k, ns);
        else
            snprintf(p, sizeof p, "%s/%s", dir, TQ_ARTIFACT_INDEX_NAME);
        if (tq_sha256_file(p, out[k]) != TQ_OK) return -1;
    }
    return 0;
}

static void test_reproducible(const char* root)
{
    for (int level = 0; level <= 3; level += 3) {
        char d1[4096], d2[4096];
        snprintf(d1, sizeof d1, "%s/rep%d_a", root, level);
        snprintf(d2, sizeof d2, "%s/rep%d_b", root, level);
        int n1 = 0, n2 = 0;
        setenv("TQ_ARTIFACT_THREADS", "3", 1); /* chunk compression threads must not change the bytes */
        CHECK(write_artifact(d1, level, 4000, &n1) == TQ_OK, "write a");
        sleep(1); /* a timestamp in the file would now differ */
        setenv("TQ_ARTIFACT_THREADS", "1", 1);
        CHECK(write_artifact(d2, level, 4000, &n2) == TQ_OK, "write b");
        unsetenv("TQ_ARTIFACT_THREADS");
        CHECK(n1 == n2, "shard counts");
        char s1[64][65], s2[64][65];
        CHECK(sha_dir(d1, n1, s1) == 0 && sha_dir(d2, n2, s2) == 0, "sha");
        for (int k = 0; k <= n1; k++) CHECK(!strcmp(s1[k], s2[k]), "level %d file %d differs between two writes", level, k);
        /* metrics rewrite: index changes, shards do not, verify still passes */
        CHECK(tq_artifact_set_metrics(d1, "{\"ppl\": 12.5, \"kld\": 0.01}") == TQ_OK, "set metrics");
        CHECK(tq_artifact_set_metrics(d1, "{not json") == TQ_ERR_FORMAT, "bad metrics rejected");
        char s3[64][65];
        CHECK(sha_dir(d1, n1, s3) == 0, "sha after metrics");
        for (int k = 0; k < n1; k++) CHECK(!strcmp(s1[k], s3[k]), "shard %d changed by set_metrics", k);
        CHECK(strcmp(s1[n1], s3[n1]) != 0, "index unchanged by set_metrics");
        tq_artifact* a = NULL;
        CHECK(tq_artifact_open(d1, &a) == TQ_OK && strstr(tq_artifact_metrics(a), "12.5"), "metrics read back");
        tq_artifact_close(&a);
        CHECK(tq_artifact_verify(d1, NULL, 0, 1, NULL) == TQ_OK, "verify after metrics");
    }
}

/* Copy src artifact dir to dst (cp -r), for damage tests. */
static void clone(const char* src, const char* dst)
{
    char cmd[9000];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s'", dst, src, dst);
    if (run(cmd) != 0) fprintf(stderr, "clone failed\n");
}

static void flip_byte(const char* path, long off)
{
    FILE* f = fopen(path, "r+b");
    if (!f) return;
    fseek(f, off, SEEK_SET);
    int c = fgetc(f);
    fseek(f, off, SEEK_SET);
    fputc(c ^ 0x5a, f);
    fclose(f);
}

/* File offset of dataset /tensors/<tensor>/<part> (contiguous or first chunk). */
static long data_offset(const char* path, const char* tensor, const char* part)
{
    char p[512];
    snprintf(p, sizeof p, "tensors/%s/%s", tensor, part);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return -1;
    hid_t d = H5Dopen2(f, p, H5P_DEFAULT);
    long off = -1;
    if (d >= 0) {
        haddr_t a = H5Dget_offset(d);
        if (a != HADDR_UNDEF) {
            off = (long)a;
        } else { /* chunked: first chunk's address */
            hsize_t zero[2] = {0, 0};
            hsize_t size = 0;
            haddr_t ca = HADDR_UNDEF;
            unsigned mask = 0;
            hid_t sp = H5Dget_space(d);
            if (H5Dget_chunk_info_by_coord(d, zero, &mask, &ca, &size) >= 0) off = (long)ca + (long)size / 2;
            H5Sclose(sp);
        }
        H5Dclose(d);
    }
    H5Fclose(f);
    return off;
}

static void expect_fail(const char* dir, const char* plan, tq_status want, const char* must1, const char* must2,
                        const char* what)
{
    tq_verify_report rep;
    tq_status rc = tq_artifact_verify(dir, plan, 0, 1, &rep);
    const char* m = tq_last_error();
    CHECK(rc == want, "%s: verify returned %d (%s), want %d", what, rc, tq_status_str(rc), want);
    CHECK(!must1 || strstr(m, must1), "%s: message lacks '%s': %s", what, must1, m);
    CHECK(!must2 || strstr(m, must2), "%s: message lacks '%s': %s", what, must2, m);
    CHECK(rep.errors >= 1, "%s: no error counted", what);
}

static void test_damage(const char* root)
{
    char good[4096], bad[4096], sp[4200], cmd[9000];
    snprintf(good, sizeof good, "%s/rt0", root);
    snprintf(bad, sizeof bad, "%s/bad", root);
    tq_artifact* a = NULL;
    if (tq_artifact_open(good, &a) != TQ_OK) {
        CHECK(0, "open good artifact");
        return;
    }
    int ns = tq_artifact_shard_count(a);
    const tq_artifact_tensor* t = tq_artifact_tensor_at(a, 3);
    char victim[TQ_MAX_NAME];
    snprintf(victim, sizeof victim, "%s", t->name);
    int vshard = t->shard;
    tq_artifact_close(&a);

    /* 1. flipped byte inside a tensor's codes */
    clone(good, bad);
    shard_path(sp, sizeof sp, bad, vshard, ns);
    long off = data_offset(sp, victim, specs[3].codec.kind >= TQ_CODEC_FP16 ? "values" : "codes");
    CHECK(off > 0, "data offset");
    flip_byte(sp, off + 1);
    expect_fail(bad, NULL, TQ_ERR_CORRUPT, victim, "checksum mismatch", "flipped byte");
    CHECK(strstr(tq_last_error(), sp) != NULL, "flipped byte: file not named: %s", tq_last_error());
    /* and publish refuses it */
    char pub[4200];
    snprintf(pub, sizeof pub, "%s/pub_bad", root);
    CHECK(tq_publish(bad, pub, NULL, NULL) == TQ_ERR_CORRUPT && strstr(tq_last_error(), "refusing to publish"),
          "publish of a damaged artifact not refused");

    /* 2. truncated shard */
    clone(good, bad);
    shard_path(sp, sizeof sp, bad, 1, ns);
    struct stat st;
    stat(sp, &st);
    CHECK(truncate(sp, st.st_size / 2) == 0, "truncate");
    expect_fail(bad, NULL, TQ_ERR_CORRUPT, "truncated", "model-00002-of-", "truncated shard");

    /* 3. missing shard */
    clone(good, bad);
    shard_path(sp, sizeof sp, bad, ns - 1, ns);
    unlink(sp);
    expect_fail(bad, NULL, TQ_ERR_NOTFOUND, "missing", sp, "missing shard");

    /* 4. tensor missing vs a plan; codec vs plan */
    clone(good, bad);
    char plan[20000];
    snprintf(plan, sizeof plan, "%smodel.layers.99.extra.weight tq4\n", test_meta_plan());
    expect_fail(bad, plan, TQ_ERR_NOTFOUND, "model.layers.99.extra.weight", "missing", "tensor missing vs plan");
    const char* p0 = test_meta_plan();
    const char* nl = strchr(strchr(p0, '\n') + 1, '\n'); /* drop the first tensor line */
    snprintf(plan, sizeof plan, "%s", nl + 1);
    expect_fail(bad, plan, TQ_ERR_FORMAT, specs[0].name, "not in the plan", "tensor not in plan");
    snprintf(plan, sizeof plan, "%s %s\n", specs[0].name, specs[0].codec.kind == TQ_CODEC_TQ ? "rtn4" : "tq2");
    expect_fail(bad, plan, TQ_ERR_CORRUPT, specs[0].name, "says", "codec differs from plan");

    /* 5. wrong format version: index */
    clone(good, bad);
    snprintf(cmd, sizeof cmd, "sed -i 's/\"format_version\": 1,/\"format_version\": 2,/' '%s/%s'", bad, TQ_ARTIFACT_INDEX_NAME);
    CHECK(run(cmd) == 0, "sed");
    expect_fail(bad, NULL, TQ_ERR_FORMAT, "format version 2", TQ_ARTIFACT_INDEX_NAME, "index format version");

    /* 6. wrong format version: a shard's attribute rewritten in place (same size) */
    clone(good, bad);
    shard_path(sp, sizeof sp, bad, 0, ns);
    stat(sp, &st);
    hid_t f = H5Fopen(sp, H5F_ACC_RDWR, H5P_DEFAULT);
    CHECK(f >= 0, "open rw");
    if (f >= 0) {
        hid_t at = H5Aopen(f, "format_version", H5P_DEFAULT);
        int64_t v = 7;
        CHECK(at >= 0 && H5Awrite(at, H5T_NATIVE_INT64, &v) >= 0, "rewrite version");
        H5Aclose(at);
        H5Fclose(f);
    }
    struct stat st2;
    stat(sp, &st2);
    if (st2.st_size == st.st_size)
        expect_fail(bad, NULL, TQ_ERR_FORMAT, "format version 7", sp, "shard format version");
    else
        CHECK(tq_artifact_verify(bad, NULL, 0, 1, NULL) != TQ_OK, "modified shard passes");

    /* 7. flipped byte in a zstd-compressed chunk */
    char good3[4096];
    snprintf(good3, sizeof good3, "%s/rt3", root);
    clone(good3, bad);
    {
        const char* big = "model.layers.0.mlp.big_proj.weight"; /* the compressed one */
        int bshard = -1;
        if (tq_artifact_open(bad, &a) == TQ_OK) {
            const tq_artifact_tensor* bt = tq_artifact_find(a, big);
            bshard = bt ? bt->shard : -1;
            tq_artifact_close(&a);
        }
        CHECK(bshard >= 0, "big tensor shard");
        shard_path(sp, sizeof sp, bad, bshard < 0 ? 0 : bshard, ns);
        off = data_offset(sp, big, "codes");
        CHECK(off > 0, "chunk offset");
        flip_byte(sp, off);
        expect_fail(bad, NULL, TQ_ERR_CORRUPT, big, NULL, "flipped compressed byte");
    }

    /* 8. shard renamed onto another's name: wrong shard number */
    clone(good, bad);
    char sp2[4200];
    shard_path(sp, sizeof sp, bad, 0, ns);
    shard_path(sp2, sizeof sp2, bad, 1, ns);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", sp, sp2);
    run(cmd);
    CHECK(tq_artifact_verify(bad, NULL, 0, 1, NULL) == TQ_ERR_CORRUPT, "swapped shard detected");

    /* 9. a flipped byte anywhere in a shard (data, HDF5 metadata, slack) is detected */
    for (int lv = 0; lv <= 3; lv += 3) {
        char src[4200];
        snprintf(src, sizeof src, "%s/rt%d", root, lv);
        shard_path(sp, sizeof sp, src, 2, ns);
        stat(sp, &st);
        for (int j = 0; j < 16; j++) {
            long pos = (long)((double)st.st_size * (j + 0.5) / 16.0);
            clone(src, bad);
            shard_path(sp, sizeof sp, bad, 2, ns);
            flip_byte(sp, pos);
            tq_status r = tq_artifact_verify(bad, NULL, 0, 1, NULL);
            CHECK(r == TQ_ERR_CORRUPT || r == TQ_ERR_FORMAT, "level %d: byte %ld of %lld flipped: verify returned %d", lv,
                  pos, (long long)st.st_size, r);
        }
    }

    /* 10. index missing */
    clone(good, bad);
    snprintf(sp, sizeof sp, "%s/%s", bad, TQ_ARTIFACT_INDEX_NAME);
    unlink(sp);
    expect_fail(bad, NULL, TQ_ERR_NOTFOUND, TQ_ARTIFACT_INDEX_NAME, NULL, "missing index");
}

static void test_writer_checks(const char* root)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/wchk", root);
    tq_artifact_meta m = test_meta(0);
    tq_shard_writer* w = NULL;
    CHECK(tq_shard_create(dir, 0, 1, &m, &w) == TQ_OK, "create");
    tq_qtensor q;
    const spec* s = &specs[1];
    CHECK(quantize_spec(s, &q) == TQ_OK, "q");
    tq_artifact_desc d = {"b.weight", "other", TQ_BF16, 2, {s->shape[0], s->shape[1]}};
    CHECK(tq_shard_add(w, &d, &q, NULL) == TQ_OK, "add b");
    d.name = "a.weight";
    CHECK(tq_shard_add(w, &d, &q, NULL) == TQ_ERR_ARG, "out of order accepted");
    d.name = "c.weight";
    d.orig_shape[1] = 7;
    CHECK(tq_shard_add(w, &d, &q, NULL) == TQ_ERR_ARG, "wrong shape accepted");
    d.orig_shape[1] = s->shape[1];
    q.part[0].bytes--;
    CHECK(tq_shard_add(w, &d, &q, NULL) == TQ_ERR_ARG, "wrong part size accepted");
    q.part[0].bytes++;
    /* a temp file exists while writing, the final name does not */
    char final[4200];
    shard_path(final, sizeof final, dir, 0, 1);
    CHECK(!tq_file_exists(final), "final name visible before commit");
    tq_shard_abort(&w);
    CHECK(w == NULL && !tq_file_exists(final), "abort");
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "test -z \"$(ls '%s')\"", dir);
    CHECK(run(cmd) == 0, "temp file left after abort");
    tq_qtensor_release(&q);
    /* NaN scale rejected */
    const spec* sn = NULL;
    for (int i = 0; i < nspecs; i++)
        if (specs[i].codec.kind == TQ_CODEC_RTN) sn = &specs[i];
    if (sn) {
        CHECK(quantize_spec(sn, &q) == TQ_OK, "q rtn");
        tq_qpart* sc = NULL;
        for (int i = 0; i < q.nparts; i++)
            if (!strcmp(q.part[i].name, "scales")) sc = &q.part[i];
        CHECK(sc != NULL, "scales part");
        if (sc) {
            ((uint16_t*)sc->data)[1] = 0x7e00;
            CHECK(tq_shard_create(dir, 0, 1, &m, &w) == TQ_OK, "create 2");
            tq_artifact_desc d2 = {sn->name, "mlp_up", TQ_BF16, 2, {sn->shape[0], sn->shape[1]}};
            CHECK(tq_shard_add(w, &d2, &q, NULL) == TQ_ERR_NUMERIC, "NaN scale accepted");
            tq_shard_abort(&w);
        }
        tq_qtensor_release(&q);
    }
}

static void test_publish(const char* root)
{
    char good[4096], out[4096], src[4096], path[4300];
    snprintf(good, sizeof good, "%s/rt3", root);
    snprintf(out, sizeof out, "%s/published", root);
    snprintf(src, sizeof src, "%s/source", root);
    tq_mkdirs(src);
    snprintf(path, sizeof path, "%s/LICENSE", src);
    tq_write_file_atomic(path, "Apache License 2.0 (test)\n", 26);
    snprintf(path, sizeof path, "%s/job.yaml", root);
    tq_write_file_atomic(path, "model: jobs/models/test\nstages: [quantize, pack]\n", 49);
    tq_status rc = tq_publish(good, out, path, src);
    CHECK(rc == TQ_OK, "publish");
    char* card = NULL;
    snprintf(path, sizeof path, "%s/README.md", out);
    CHECK(tq_read_file(path, &card, NULL) == TQ_OK, "README.md");
    if (card) {
        CHECK(strstr(card, "test-model") && strstr(card, "bits per weight") && strstr(card, "| embed |") &&
                  strstr(card, "stages: [quantize, pack]") && strstr(card, "abc123") &&
                  strstr(card, "tqpipe_reader") && strstr(card, "tq_artifact_open"),
              "model card lacks expected sections");
        CHECK(strstr(card, "No validation metrics"), "metrics placeholder");
        free(card);
    }
    snprintf(path, sizeof path, "%s/LICENSE", out);
    CHECK(tq_file_exists(path), "LICENSE copied");
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "cd '%s' && sha256sum -c --quiet SHA256SUMS && test $(wc -l < SHA256SUMS) -ge 4", out);
    CHECK(run(cmd) == 0, "SHA256SUMS check");
    CHECK(tq_artifact_verify(out, NULL, 0, 1, NULL) == TQ_OK, "published dir verifies");
    /* with metrics, the card shows them */
    CHECK(tq_artifact_set_metrics(out, "{\"wikitext2_ppl\": 9.87}") == TQ_OK, "metrics");
    char out2[4200];
    snprintf(out2, sizeof out2, "%s/published2", root);
    CHECK(tq_publish(out, out2, NULL, NULL) == TQ_OK, "publish again");
    snprintf(path, sizeof path, "%s/README.md", out2);
    card = NULL;
    CHECK(tq_read_file(path, &card, NULL) == TQ_OK && strstr(card, "9.87") && strstr(card, "model: test"),
          "metrics / recorded job in card");
    free(card);
}

static void test_export(const char* root)
{
    char good[4096], out[4096];
    snprintf(good, sizeof good, "%s/rt3", root);
    snprintf(out, sizeof out, "%s/exported", root);
    char* argv[] = {"export", good, "--to", "safetensors", out, "--dtype", "bf16", "--shard-size", "20K", NULL};
    CHECK(tq_cmd_export(9, argv) == 0, "export command");
    tq_ckpt* c = NULL;
    tq_status rc = tq_ckpt_open(out, &c);
    CHECK(rc == TQ_OK, "open exported checkpoint");
    if (rc != TQ_OK) return;
    CHECK(tq_ckpt_count(c) == nspecs, "exported count");
    CHECK(tq_ckpt_file_count(c) > 1, "exported sharded");
    CHECK(tq_ckpt_config_json(c) && strstr(tq_ckpt_config_json(c), "hidden_size"), "config.json exported");
    tq_artifact* a = NULL;
    CHECK(tq_artifact_open(good, &a) == TQ_OK, "open artifact");
    for (int64_t i = 0; a && i < tq_artifact_count(a); i++) {
        const tq_artifact_tensor* t = tq_artifact_tensor_at(a, i);
        const tq_tensor_info* ti = tq_ckpt_find(c, t->name);
        CHECK(ti && ti->dtype == TQ_BF16 && ti->ndim == t->orig_ndim && !memcmp(ti->shape, t->orig_shape, (size_t)t->orig_ndim * 8),
              "exported %s", t->name);
        if (!ti) continue;
        size_t n = (size_t)t->rows * (size_t)t->cols;
        float* d = malloc(n * 4);
        uint16_t* got = malloc(n * 2);
        tq_qtensor q;
        CHECK(tq_artifact_read(a, t, &q) == TQ_OK && tq_dequantize_ref(&q, d) == TQ_OK, "deq");
        tq_qtensor_release(&q);
        CHECK(tq_ckpt_read_raw(c, ti, 0, t->rows, got, n * 2) == TQ_OK, "read exported");
        size_t bad = 0;
        for (size_t j = 0; j < n; j++) bad += got[j] != tq_f32_to_bf16(d[j]);
        CHECK(bad == 0, "%s: %zu exported values differ from tq_dequantize_ref + bf16", t->name, bad);
        free(d);
        free(got);
    }
    tq_artifact_close(&a);
    tq_ckpt_free(&c);
}

int main(void)
{
    char root[] = "/tmp/tq_test_artifact_XXXXXX";
    if (!mkdtemp(root)) return EXIT_FAILURE;
    build_specs();
    test_assign();
    test_roundtrip(root, 0);
    test_roundtrip(root, 3);
    test_reproducible(root);
    test_writer_checks(root);
    test_damage(root);
    test_publish(root);
    test_export(root);
    if (failures == 0) {
        char cmd[200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
        run(cmd);
        printf("test_artifact: ok (%d tensors, every codec)\n", nspecs);
        return EXIT_SUCCESS;
    }
    fprintf(stderr, "test_artifact: %d check(s) FAILED (files kept in %s)\n", failures, root);
    return EXIT_FAILURE;
}
