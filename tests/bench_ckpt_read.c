/* bench_ckpt_read.c — read throughput of the checkpoint reader from page cache vs `cat FILE > /dev/null`
 * (benchmark, not a test). Writes a synthetic checkpoint (default 1 GB of bf16 in 4 shards) with the
 * streaming writer unless DIR already holds one, warms the page cache, then alternates 3 rounds of:
 *   cat every safetensors file > /dev/null      (the reference)
 *   tq_ckpt_read_raw every tensor in row chunks of --chunk-kb (default 1024 KiB; + XXH3 with --hash)
 * and prints the best GB/s of each and their ratio.
 *   build-x/tests/bench_ckpt_read [DIR] [--mb N] [--chunk-kb K] [--hash] [--batch]
 * --batch reads tensors in file order with tq_ckpt_read_batch (one pread per run of adjacent tensors).      (DIR default: $TMPDIR/tq_bench_ckpt)
 * Ratio target (issue 2): >= 0.8. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ckpt.h"
#include "fileio.h"
#include "hash.h"
#include "safetensors.h"
#include "st_writer.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int make_ckpt(const char* dir, int mb)
{
    const int64_t cols = 4096;
    const int n_t = 64;
    int64_t rows = ((int64_t)mb << 20) / n_t / (cols * 2);
    if (rows < 1) rows = 1;
    tq_st_writer* w = NULL;
    uint64_t shard = ((uint64_t)mb << 20) / 4 + 1;
    if (tq_st_writer_create_dir(dir, shard, &w) != TQ_OK) return 1;
    char name[64];
    for (int t = 0; t < n_t; t++) {
        snprintf(name, sizeof name, "model.layers.%d.mlp.up_proj.weight", t);
        int64_t shape[2] = {rows, cols};
        if (tq_st_writer_add(w, name, TQ_BF16, 2, shape) != TQ_OK) return 1;
    }
    if (tq_st_writer_begin(w) != TQ_OK) return 1;
    uint16_t* buf = malloc((size_t)(rows * cols) * 2);
    for (int64_t i = 0; i < rows * cols; i++) buf[i] = (uint16_t)(0x3c00 + (i * 2654435761u >> 20) % 512);
    for (int t = 0; t < n_t; t++) {
        snprintf(name, sizeof name, "model.layers.%d.mlp.up_proj.weight", t);
        if (tq_st_writer_write(w, name, buf, (size_t)(rows * cols) * 2) != TQ_OK) return 1;
    }
    free(buf);
    tq_status rc = tq_st_writer_finish(w);
    tq_st_writer_free(&w);
    return rc != TQ_OK;
}

int main(int argc, char** argv)
{
    const char* dir = NULL;
    int mb = 1024, hash = 0, chunk_kb = 1024, batch = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--mb") && i + 1 < argc) mb = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--chunk-kb") && i + 1 < argc) chunk_kb = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--hash")) hash = 1;
        else if (!strcmp(argv[i], "--batch")) batch = 1;
        else if (argv[i][0] == '-') {
            fprintf(stderr, "bench: unknown option %s\n", argv[i]);
            return 2;
        } else dir = argv[i];
    }
    char def[4096];
    if (!dir) {
        const char* t = getenv("TMPDIR");
        snprintf(def, sizeof def, "%s/tq_bench_ckpt", t && *t ? t : "/tmp");
        dir = def;
    }
    tq_ckpt* c = NULL;
    if (tq_ckpt_open(dir, &c) != TQ_OK) {
        printf("writing a %d MB bf16 checkpoint to %s\n", mb, dir);
        double t0 = now();
        if (make_ckpt(dir, mb)) {
            fprintf(stderr, "bench: %s\n", tq_last_error());
            return 1;
        }
        printf("  written in %.2f s\n", now() - t0);
        if (tq_ckpt_open(dir, &c) != TQ_OK) {
            fprintf(stderr, "bench: %s\n", tq_last_error());
            return 1;
        }
    }
    uint64_t total = 0;
    for (int64_t i = 0; i < tq_ckpt_count(c); i++) total += tq_ckpt_tensor(c, i)->nbytes;
    char cmd[8192];
    int k = snprintf(cmd, sizeof cmd, "cat");
    for (int f = 0; f < tq_ckpt_file_count(c); f++)
        k += snprintf(cmd + k, sizeof cmd - (size_t)k, " '%s'", tq_ckpt_file_path(c, f));
    snprintf(cmd + k, sizeof cmd - (size_t)k, " > /dev/null");
    if (system(cmd) != 0) return 1; /* warm the page cache */
    const size_t cap = (size_t)(chunk_kb > 0 ? chunk_kb : 1024) << 10;
    char* buf = malloc(cap);
    double best_cat = 1e30, best_rd = 1e30;
    const int64_t nt = tq_ckpt_count(c);
    int64_t* order = malloc((size_t)(nt + 1) * sizeof *order);
    if (tq_ckpt_file_order(c, order, nt) != TQ_OK) return 1;
    uint64_t hsum = 0;
    for (int round = 0; round < 3; round++) {
        double t0 = now();
        if (system(cmd) != 0) return 1;
        double t1 = now();
        /* --batch: tensors in file order, runs of whole tensors up to the chunk size per read_batch call */
        for (int64_t i = 0; batch && i < nt;) {
            int64_t j = i;
            size_t sz = 0;
            while (j < nt && (j == i || sz + tq_ckpt_tensor(c, order[j])->nbytes <= cap)) sz += tq_ckpt_tensor(c, order[j++])->nbytes;
            if (sz > cap) { /* one tensor larger than the chunk: row reads */
                j = i + 1;
                sz = 0;
                const tq_tensor_info* t = tq_ckpt_tensor(c, order[i]);
                size_t rb = (size_t)tq_tensor_cols(t) * tq_dtype_size(t->dtype);
                int64_t step = rb ? (int64_t)(cap / rb) : 1, rows = tq_tensor_rows(t);
                for (int64_t r = 0; r < rows; r += step) {
                    int64_t nr = rows - r < step ? rows - r : step;
                    if (tq_ckpt_read_raw(c, t, r, nr, buf, cap) != TQ_OK) return 1;
                    if (hash) hsum ^= tq_xxh64(buf, (size_t)nr * rb, 0);
                }
            } else {
                if (tq_ckpt_read_batch(c, order + i, j - i, buf, cap) != TQ_OK) {
                    fprintf(stderr, "bench: %s\n", tq_last_error());
                    return 1;
                }
                if (hash) hsum ^= tq_xxh64(buf, sz, 0);
            }
            i = j;
        }
        for (int64_t i = 0; !batch && i < tq_ckpt_count(c); i++) {
            const tq_tensor_info* t = tq_ckpt_tensor(c, i);
            int64_t rows = tq_tensor_rows(t);
            size_t rb = (size_t)tq_tensor_cols(t) * tq_dtype_size(t->dtype);
            int64_t step = rb ? (int64_t)(cap / rb) : rows;
            if (step < 1) step = 1;
            for (int64_t r = 0; r < rows; r += step) {
                int64_t nr = rows - r < step ? rows - r : step;
                if (tq_ckpt_read_raw(c, t, r, nr, buf, cap) != TQ_OK) {
                    fprintf(stderr, "bench: %s\n", tq_last_error());
                    return 1;
                }
                if (hash) hsum ^= tq_xxh64(buf, (size_t)nr * rb, 0);
            }
        }
        double t2 = now();
        if (t1 - t0 < best_cat) best_cat = t1 - t0;
        if (t2 - t1 < best_rd) best_rd = t2 - t1;
    }
    double gcat = (double)total / best_cat / 1e9, grd = (double)total / best_rd / 1e9;
    printf("files %d, tensors %lld, %.3f GB, chunk %d KiB: cat %.2f GB/s, %s%s %.2f GB/s, ratio %.2f%s\n",
           tq_ckpt_file_count(c), (long long)tq_ckpt_count(c), (double)total / 1e9, chunk_kb, gcat, batch ? "tq_ckpt_read_batch" : "tq_ckpt_read_raw", hash ? "+xxh3" : "", grd,
           grd / gcat, hash && hsum == 42 ? "!" : "");
    free(buf);
    free(order);
    tq_ckpt_free(&c);
    return 0;
}
