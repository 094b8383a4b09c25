/* test_ckpt_table.c — the stored tensor table (pipeline/ckpt_table.h): a checkpoint opened from a valid
 * table is the same handle a full header parse gives (every field of every tensor, the files, the
 * bytes read), and every change that could make the table lie is detected and parsed again: shards
 * re-exported with another tensor order (same names and data, other offsets), a changed config.json,
 * a grown shard, a damaged or truncated table, a single-file checkpoint; a change of tensor data only
 * (headers untouched) keeps the table valid and reads the new bytes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt.h"
#include "ckpt_table.h"
#include "fileio.h"
#include "st_writer.h"
#include "tq_check.h"

#define NT 40

static void tensor_shape(int k, int64_t shape[2])
{
    shape[0] = 1 + k % 7;
    shape[1] = 8 + 4 * (k % 5);
}

/* NT tensors ("blk.K.w", F32 / BF16), added in order or reversed; salt changes the data only */
static int make_ckpt(const char* dir, uint64_t shard, int reversed, int salt)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir, dir);
    if (system(cmd) != 0) return -1;
    tq_st_writer* w = NULL;
    if (tq_st_writer_create_dir(dir, shard, &w) != TQ_OK) return -1;
    for (int i = 0; i < NT; i++) {
        int k = reversed ? NT - 1 - i : i;
        char name[64];
        snprintf(name, sizeof name, "blk.%02d.w", k);
        int64_t shape[2];
        tensor_shape(k, shape);
        if (tq_st_writer_add(w, name, k % 2 ? TQ_BF16 : TQ_F32, 2, shape) != TQ_OK) return -1;
    }
    if (tq_st_writer_begin(w) != TQ_OK) return -1;
    for (int k = 0; k < NT; k++) {
        char name[64];
        snprintf(name, sizeof name, "blk.%02d.w", k);
        int64_t shape[2];
        tensor_shape(k, shape);
        size_t n = (size_t)(shape[0] * shape[1]), es = k % 2 ? 2 : 4;
        uint8_t* d = malloc(n * es);
        for (size_t j = 0; j < n * es; j++) d[j] = (uint8_t)((j * 7 + (size_t)k * 13 + (size_t)salt) & 0x3f);
        tq_status rc = tq_st_writer_write(w, name, d, n * es);
        free(d);
        if (rc != TQ_OK) return -1;
    }
    if (tq_st_writer_finish(w) != TQ_OK) return -1;
    tq_st_writer_free(&w);
    char cfg[600];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    return tq_write_file_atomic(cfg, "{\"model_type\": \"test\"}\n", 23) == TQ_OK ? 0 : -1;
}

/* a and b describe the same tensors in the same files, and read the same bytes */
static int same_ckpt(const tq_ckpt* a, const tq_ckpt* b)
{
    int ok = tq_ckpt_count(a) == tq_ckpt_count(b) && tq_ckpt_file_count(a) == tq_ckpt_file_count(b);
    for (int f = 0; ok && f < tq_ckpt_file_count(a); f++) ok = !strcmp(tq_ckpt_file_path(a, f), tq_ckpt_file_path(b, f));
    const char *ca = tq_ckpt_config_json(a), *cb = tq_ckpt_config_json(b);
    ok = ok && (ca && cb ? !strcmp(ca, cb) : ca == cb);
    for (int64_t i = 0; ok && i < tq_ckpt_count(a); i++) {
        const tq_tensor_info *x = tq_ckpt_tensor(a, i), *y = tq_ckpt_tensor(b, i);
        ok = !strcmp(x->name, y->name) && x->dtype == y->dtype && x->ndim == y->ndim && x->file_idx == y->file_idx &&
             x->offset == y->offset && x->nbytes == y->nbytes && !memcmp(x->shape, y->shape, sizeof x->shape);
        uint8_t bx[1024], by[1024];
        ok = ok && x->nbytes <= sizeof bx &&
             tq_ckpt_read_raw(a, x, 0, tq_tensor_rows(x), bx, sizeof bx) == TQ_OK &&
             tq_ckpt_read_raw(b, y, 0, tq_tensor_rows(y), by, sizeof by) == TQ_OK && !memcmp(bx, by, x->nbytes);
        if (!ok) printf("  differs at tensor %s\n", x->name);
    }
    return ok;
}

/* open through the table (rebuild as asked), compare with a plain open; returns from_table or -1 */
static int open_check(const char* dir, const char* tbl, int rebuild)
{
    tq_ckpt *ref = NULL, *c = NULL;
    int hit = -1;
    if (tq_ckpt_open(dir, &ref) != TQ_OK) return -1;
    if (tq_ckpt_open_table(dir, tbl, rebuild, &c, &hit) != TQ_OK) {
        tq_ckpt_free(&ref);
        return -1;
    }
    int same = same_ckpt(ref, c);
    CHECK(same, "%s: table handle (from_table %d) differs from a full parse", dir, hit);
    tq_ckpt_free(&ref);
    tq_ckpt_free(&c);
    return same ? hit : -1;
}

static uint64_t offset_of(const char* dir, const char* name)
{
    tq_ckpt* c = NULL;
    if (tq_ckpt_open(dir, &c) != TQ_OK) return 0;
    const tq_tensor_info* t = tq_ckpt_find(c, name);
    uint64_t o = t ? t->offset + 1000003ull * (uint64_t)t->file_idx : 0;
    tq_ckpt_free(&c);
    return o;
}

static int flip_byte(const char* path, long at, int truncate_only)
{
    FILE* f = fopen(path, "r+b");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    int rc = 0;
    if (truncate_only) {
        rc = ftruncate(fileno(f), len / 2);
    } else {
        long pos = at < 0 ? len / 2 : at;
        fseek(f, pos, SEEK_SET);
        int ch = fgetc(f);
        fseek(f, pos, SEEK_SET);
        fputc(ch ^ 0x5a, f);
    }
    fclose(f);
    return rc;
}

int main(void)
{
    char base[256], dir[300], tbl[300], p[400];
    snprintf(base, sizeof base, "/tmp/tq_ckpt_table_%d", (int)getpid());
    snprintf(dir, sizeof dir, "%s/model", base);
    snprintf(tbl, sizeof tbl, "%s/%s", base, TQ_CKPT_TABLE_NAME);

    /* sharded checkpoint: first open parses and writes the table; the next ones use it */
    CHECK(make_ckpt(dir, 2048, 0, 0) == 0, "cannot write the test checkpoint");
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    CHECK(tq_file_exists(p), "expected a sharded checkpoint");
    CHECK(open_check(dir, tbl, 0) == 0 && !tq_file_exists(tbl), "no table, no rebuild: parsed, nothing written");
    CHECK(open_check(dir, tbl, 1) == 0 && tq_file_exists(tbl), "first open parses and writes the table");
    CHECK(open_check(dir, tbl, 0) == 1, "second open uses the table");

    /* tensor data changed, headers untouched: the table stays valid, reads see the new bytes */
    uint64_t off0 = offset_of(dir, "blk.03.w");
    CHECK(make_ckpt(dir, 2048, 0, 5) == 0, "rewrite");
    CHECK(open_check(dir, tbl, 0) == 1, "same headers: table still valid");

    /* re-exported in another order: same names and data, other offsets -> stale, parsed, rebuilt */
    CHECK(make_ckpt(dir, 2048, 1, 5) == 0, "rewrite reversed");
    CHECK(offset_of(dir, "blk.03.w") != off0, "the reversed export must move tensors (else this test proves nothing)");
    CHECK(open_check(dir, tbl, 0) == 0, "reordered shards: the table is stale");
    CHECK(open_check(dir, tbl, 1) == 0, "stale: parsed and rebuilt");
    CHECK(open_check(dir, tbl, 0) == 1, "rebuilt table valid");

    /* config.json changed */
    snprintf(p, sizeof p, "%s/config.json", dir);
    CHECK(tq_write_file_atomic(p, "{\"model_type\": \"test2\"}\n", 24) == TQ_OK, "config");
    CHECK(open_check(dir, tbl, 1) == 0, "config.json changed: stale");
    CHECK(open_check(dir, tbl, 0) == 1, "rebuilt after the config change");

    /* a shard grew (bytes appended after the data) */
    snprintf(p, sizeof p, "%s/model-00001-of-%05d.safetensors", dir, 0);
    {
        tq_ckpt* c = NULL;
        CHECK(tq_ckpt_open(dir, &c) == TQ_OK, "open");
        snprintf(p, sizeof p, "%s", c ? tq_ckpt_file_path(c, 0) : "");
        tq_ckpt_free(&c);
        FILE* f = fopen(p, "ab");
        CHECK(f != NULL, "append to %s", p);
        if (f) {
            fputs("12345678", f);
            fclose(f);
        }
        tq_ckpt* c2 = NULL;
        int hit = -1;
        tq_status rc = tq_ckpt_open_table(dir, tbl, 0, &c2, &hit);
        /* the grown file is still a valid checkpoint (trailing bytes are allowed or not: either way
         * the table must not be used) */
        CHECK(hit == 0, "grown shard: table stale (rc %d)", (int)rc);
        tq_ckpt_free(&c2);
    }

    /* damaged / truncated table */
    CHECK(make_ckpt(dir, 2048, 0, 1) == 0, "rewrite");
    CHECK(open_check(dir, tbl, 1) == 0, "new checkpoint: rebuilt");
    CHECK(open_check(dir, tbl, 0) == 1, "valid");
    CHECK(flip_byte(tbl, -1, 0) == 0, "flip");
    CHECK(open_check(dir, tbl, 0) == 0, "damaged table: not used");
    CHECK(open_check(dir, tbl, 1) == 0 && open_check(dir, tbl, 0) == 1, "damaged table rebuilt");
    CHECK(flip_byte(tbl, 0, 1) == 0, "truncate");
    CHECK(open_check(dir, tbl, 0) == 0, "truncated table: not used");

    /* single-file checkpoint in the same directory: the sharded table is stale; then its own table */
    CHECK(make_ckpt(dir, 0, 0, 2) == 0, "single file");
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    CHECK(tq_file_exists(p), "expected model.safetensors");
    CHECK(open_check(dir, tbl, 1) == 0, "single file: sharded table stale");
    CHECK(open_check(dir, tbl, 0) == 1, "single file: table valid");
    /* same file name and size, only the header's order (offsets) differs: no index to tell */
    uint64_t offs = offset_of(dir, "blk.03.w");
    CHECK(make_ckpt(dir, 0, 1, 2) == 0, "single file reversed");
    CHECK(offset_of(dir, "blk.03.w") != offs, "the reversed export must move tensors");
    CHECK(open_check(dir, tbl, 1) == 0, "single file, other header: stale");
    CHECK(open_check(dir, tbl, 0) == 1, "single file: rebuilt table valid");

    /* a path that is not a directory: plain open */
    {
        tq_ckpt* c = NULL;
        int hit = -1;
        CHECK(tq_ckpt_open_table(p, tbl, 1, &c, &hit) == TQ_OK && hit == 0 && tq_ckpt_count(c) == NT, "file path: plain open");
        tq_ckpt_free(&c);
    }

    snprintf(p, sizeof p, "rm -rf '%s'", base);
    if (system(p) != 0) printf("could not remove %s\n", base);
    printf("test_ckpt_table: %d checks, %d failed\n", n_checks, n_failed);
    return n_failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
