/* artifact_bench.c — artifact write throughput against plain write() of the same bytes to the same
 * disk in the same run, with zstd off / level 1 / level 3; read + verify throughput against a plain
 * read + XXH3 of the same shard files; compression ratio per part (codes, norms, ...).
 *
 *   artifact_bench OUT_DIR [--mb TOTAL_MB] [--codec tq4] [--reps 3] [--shard-mb 512]
 *
 * Data: 4 distinct [2048 x 4096] weight matrices (Gaussian bulk, per-row scale spread, rare outliers)
 * quantized once with tq_quantize_ref; tensors cycle through them until TOTAL_MB of packed bytes. Every
 * write (plain and HDF5) ends with fsync (the artifact's crash-safe commit does fsync + rename), and each
 * timed file is dropped from the page cache afterwards (posix_fadvise DONTNEED) so reads hit the disk
 * as far as the kernel allows. The best of --reps runs is reported for each variant (runs interleaved). */
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "artifact.h"
#include "codec.h"
#include "fileio.h"
#include "hash.h"

#define NBASE 4
#define ROWS 2048
#define COLS 4096

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double cpu_s(void) /* user + system CPU seconds of this process (all threads) */
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_sec +
           1e-6 * (double)ru.ru_stime.tv_usec;
}

static void drop_cache(const char* path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) return;
    fdatasync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
}

static void rm_rf(const char* dir)
{
    char cmd[8400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "rm failed\n");
}

static uint64_t rng(uint64_t* s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void make_weights(float* w, int b)
{
    uint64_t s = 0x9e3779b97f4a7c15ull * (uint64_t)(b + 1);
    for (int64_t r = 0; r < ROWS; r++) {
        double rs = exp(0.3 * ((double)(rng(&s) >> 11) / 9007199254740992.0 - 0.5) * 4.0) / 64.0;
        for (int64_t c = 0; c < COLS; c++) {
            double g = 0;
            for (int k = 0; k < 4; k++) g += (double)(rng(&s) >> 11) / 9007199254740992.0 - 0.5;
            g *= 1.7320508; /* unit variance */
            if ((rng(&s) & 4095) == 0) g *= 10.0;
            w[r * COLS + c] = (float)(g * rs);
        }
    }
}

typedef struct {
    int n, nshards;
    int* shard_of;
    uint64_t total;
} layout;

static tq_qtensor base[NBASE];

static double write_plain(const char* dir, const layout* L)
{
    tq_mkdirs(dir);
    double t0 = now();
    for (int k = 0; k < L->nshards; k++) {
        char p[8192];
        snprintf(p, sizeof p, "%s/plain-%05d.bin", dir, k);
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        for (int i = 0; i < L->n; i++) {
            if (L->shard_of[i] != k) continue;
            const tq_qtensor* q = &base[i % NBASE];
            for (int j = 0; j < q->nparts; j++) tq_write_full(fd, q->part[j].data, q->part[j].bytes, p);
        }
        fsync(fd);
        close(fd);
    }
    double dt = now() - t0;
    for (int k = 0; k < L->nshards; k++) {
        char p[8192];
        snprintf(p, sizeof p, "%s/plain-%05d.bin", dir, k);
        drop_cache(p);
    }
    return dt;
}

static double write_artifact(const char* dir, const layout* L, int level)
{
    tq_artifact_meta m;
    memset(&m, 0, sizeof m);
    m.config_json = "{\"model_type\": \"bench\"}";
    m.zstd_level = level;
    double t0 = now();
    for (int k = 0; k < L->nshards; k++) {
        tq_shard_writer* w = NULL;
        if (tq_shard_create(dir, k, L->nshards, &m, &w) != TQ_OK) goto fail;
        for (int i = 0; i < L->n; i++) {
            if (L->shard_of[i] != k) continue;
            char name[128];
            snprintf(name, sizeof name, "model.layers.%04d.mlp.up_proj.weight", i);
            tq_artifact_desc d = {name, "mlp_up", TQ_BF16, 2, {ROWS, COLS}};
            if (tq_shard_add(w, &d, &base[i % NBASE], NULL) != TQ_OK) {
                tq_shard_abort(&w);
                goto fail;
            }
        }
        if (tq_shard_commit(&w) != TQ_OK) goto fail;
    }
    if (tq_artifact_write_index(dir, L->nshards, &m) != TQ_OK) goto fail;
    double dt = now() - t0;
    for (int k = 0; k < L->nshards; k++) {
        char name[64], p[8192];
        tq_artifact_shard_name(k, L->nshards, name, sizeof name);
        snprintf(p, sizeof p, "%s/%s", dir, name);
        drop_cache(p);
    }
    return dt;
fail:
    fprintf(stderr, "artifact_bench: %s\n", tq_last_error());
    exit(1);
}

static uint64_t dir_bytes(const char* dir, int nshards, int plain)
{
    uint64_t s = 0;
    for (int k = 0; k < nshards; k++) {
        char name[64], p[8192];
        if (plain)
            snprintf(name, sizeof name, "plain-%05d.bin", k);
        else
            tq_artifact_shard_name(k, nshards, name, sizeof name);
        snprintf(p, sizeof p, "%s/%s", dir, name);
        struct stat st;
        if (stat(p, &st) == 0) s += (uint64_t)st.st_size;
    }
    return s;
}

/* plain read + XXH3 of the plain files: the bound for read + verify */
static double read_plain(const char* dir, int nshards)
{
    const size_t cap = (size_t)16 << 20;
    char* buf = malloc(cap);
    double t0 = now();
    uint64_t h = 0;
    for (int k = 0; k < nshards; k++) {
        char p[8192];
        snprintf(p, sizeof p, "%s/plain-%05d.bin", dir, k);
        int fd = open(p, O_RDONLY);
        tq_xxh_stream* s = tq_xxh_create();
        ssize_t n;
        while ((n = read(fd, buf, cap)) > 0) tq_xxh_update(s, buf, (size_t)n);
        h ^= tq_xxh_digest(s);
        tq_xxh_free(&s);
        close(fd);
        drop_cache(p);
    }
    double dt = now() - t0;
    free(buf);
    if (h == 42) printf("#");
    return dt;
}

static double verify(const char* dir, int nshards)
{
    double t0 = now();
    tq_verify_report r;
    if (tq_artifact_verify(dir, NULL, 0, 1, &r) != TQ_OK) {
        fprintf(stderr, "verify failed: %s\n", tq_last_error());
        exit(1);
    }
    double dt = now() - t0;
    for (int k = 0; k < nshards; k++) {
        char name[64], p[8192];
        tq_artifact_shard_name(k, nshards, name, sizeof name);
        snprintf(p, sizeof p, "%s/%s", dir, name);
        drop_cache(p);
    }
    return dt;
}

/* storage / logical bytes per part name over the first shard */
static void ratios(const char* dir, const layout* L, int level)
{
    char name[64], p[8192];
    tq_artifact_shard_name(0, L->nshards, name, sizeof name);
    snprintf(p, sizeof p, "%s/%s", dir, name);
    hid_t f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
    const tq_qtensor* q = &base[0];
    printf("  zstd level %d compression (logical / stored, first shard):", level);
    for (int j = 0; j < q->nparts; j++) {
        uint64_t logical = 0, stored = 0;
        for (int i = 0; i < L->n; i++) {
            if (L->shard_of[i] != 0) continue;
            char dp[256];
            snprintf(dp, sizeof dp, "tensors/model.layers.%04d.mlp.up_proj.weight/%s", i, q->part[j].name);
            hid_t d = H5Dopen2(f, dp, H5P_DEFAULT);
            if (d < 0) continue;
            stored += H5Dget_storage_size(d);
            logical += q->part[j].bytes;
            H5Dclose(d);
        }
        printf(" %s %.4f (%.2f%% saved)", q->part[j].name, stored ? (double)logical / (double)stored : 0.0,
               logical ? 100.0 * (1.0 - (double)stored / (double)logical) : 0.0);
    }
    printf("\n");
    H5Fclose(f);
}

int main(int argc, char** argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: artifact_bench OUT_DIR [--mb 1024] [--codec tq4] [--reps 3] [--shard-mb 512]\n");
        return 2;
    }
    const char* out = argv[1];
    double mb = 1024;
    int reps = 3;
    double shard_mb = 512;
    const char* codec = "tq4";
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--mb")) mb = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--codec")) codec = argv[i + 1];
        else if (!strcmp(argv[i], "--shard-mb")) shard_mb = atof(argv[i + 1]);
    }
    tq_codec c;
    if (tq_codec_parse(codec, 128, &c) != TQ_OK) {
        fprintf(stderr, "%s\n", tq_last_error());
        return 2;
    }
    float* w = malloc((size_t)ROWS * COLS * sizeof *w);
    double tq0 = now();
    for (int b = 0; b < NBASE; b++) {
        make_weights(w, b);
        if (tq_qtensor_alloc(&base[b], &c, ROWS, COLS, 1234 + (uint64_t)b) != TQ_OK ||
            tq_quantize_ref(w, &base[b], "bench") != TQ_OK) {
            fprintf(stderr, "%s\n", tq_last_error());
            return 1;
        }
    }
    double tq = now() - tq0;
    free(w);
    uint64_t per = tq_codec_bytes(&c, ROWS, COLS);
    layout L;
    L.n = (int)ceil(mb * 1e6 / (double)per);
    L.shard_of = calloc((size_t)L.n, sizeof *L.shard_of);
    uint64_t* bytes = malloc((size_t)L.n * sizeof *bytes);
    for (int i = 0; i < L.n; i++) bytes[i] = per;
    tq_artifact_assign_shards(bytes, L.n, (uint64_t)(shard_mb * 1e6), L.shard_of, &L.nshards);
    L.total = per * (uint64_t)L.n;
    printf("artifact_bench: %d tensors [%d x %d] %s, %.1f MB packed (%.3f bpw), %d shards of <= %.0f MB; "
           "quantized %d base tensors in %.2f s; best of %d runs\n",
           L.n, ROWS, COLS, codec, (double)L.total / 1e6, tq_codec_bpw(&c, ROWS, COLS), L.nshards, shard_mb, NBASE, tq,
           reps);
    char dp[2048], da[3][2048];
    snprintf(dp, sizeof dp, "%s/plain", out);
    const int levels[3] = {0, 1, 3};
    for (int v = 0; v < 3; v++) snprintf(da[v], sizeof da[v], "%s/art%d", out, levels[v]);
    double best_plain = 1e30, best_art[3] = {1e30, 1e30, 1e30}, best_rp = 1e30, best_ver[3] = {1e30, 1e30, 1e30};
    double cpu_plain = 0, cpu_art[3] = {0, 0, 0}, cpu_rp = 0, cpu_ver[3] = {0, 0, 0}, c0;
    for (int r = 0; r < reps; r++) {
        rm_rf(dp);
        c0 = cpu_s();
        double t = write_plain(dp, &L);
        cpu_plain += (cpu_s() - c0) / reps;
        if (t < best_plain) best_plain = t;
        for (int v = 0; v < 3; v++) {
            rm_rf(da[v]);
            c0 = cpu_s();
            double ta = write_artifact(da[v], &L, levels[v]);
            cpu_art[v] += (cpu_s() - c0) / reps;
            if (ta < best_art[v]) best_art[v] = ta;
        }
        c0 = cpu_s();
        double trp = read_plain(dp, L.nshards);
        cpu_rp += (cpu_s() - c0) / reps;
        if (trp < best_rp) best_rp = trp;
        for (int v = 0; v < 3; v++) {
            c0 = cpu_s();
            double tv = verify(da[v], L.nshards);
            cpu_ver[v] += (cpu_s() - c0) / reps;
            if (tv < best_ver[v]) best_ver[v] = tv;
        }
    }
    double MB = (double)L.total / 1e6;
    printf("  plain write()+fsync        %8.1f MB/s  (%.2f s, %.2f CPU s)\n", MB / best_plain, best_plain, cpu_plain);
    for (int v = 0; v < 3; v++) {
        uint64_t fb = dir_bytes(da[v], L.nshards, 0);
        printf("  artifact zstd %-2d           %8.1f MB/s  (%.2f s, %.2f CPU s)  ratio to plain %.3f  files %.1f MB (%.4f of packed)\n",
               levels[v], MB / best_art[v], best_art[v], cpu_art[v], best_plain / best_art[v], (double)fb / 1e6,
               (double)fb / (double)L.total);
    }
    printf("  plain read()+xxh3          %8.1f MB/s  (%.2f s, %.2f CPU s)\n", MB / best_rp, best_rp, cpu_rp);
    for (int v = 0; v < 3; v++)
        printf("  read+verify zstd %-2d        %8.1f MB/s  (%.2f s, %.2f CPU s)  ratio to plain read %.3f\n", levels[v],
               MB / best_ver[v], best_ver[v], cpu_ver[v], best_rp / best_ver[v]);
    for (int v = 1; v < 3; v++) ratios(da[v], &L, levels[v]);
    rm_rf(dp);
    for (int v = 0; v < 3; v++) rm_rf(da[v]);
    for (int b = 0; b < NBASE; b++) tq_qtensor_release(&base[b]);
    free(bytes);
    free(L.shard_of);
    return 0;
}
