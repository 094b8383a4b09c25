/* ckpt_table.c — the stored tensor table of a checkpoint (see ckpt_table.h for the format and why it
 * is exact): write it from an open checkpoint, validate it against the files and build the handle
 * from it (tq_ckpt_assemble), or fall back to parsing the headers (tq_ckpt_open). */
#include "ckpt_table.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"      /* defines: tq_read_file, tq_write_file_atomic, tq_pread_full */
#include "hash.h"        /* defines: tq_xxh64 */
#include "log.h"
#include "safetensors.h" /* defines: TQ_ST_MAX_HEADER */

#define TAB_MAGIC "TQCKTAB1"
#define TAB_ENDIAN 0x01020304u
#define TAB_INDEX "model.safetensors.index.json"
#define TAB_SINGLE "model.safetensors"

enum { MODE_INDEX = 1, MODE_SINGLE = 2 };

/* ---- small helpers ---------------------------------------------------------------------------- */

typedef struct {
    uint8_t* p;
    size_t len, cap;
    int oom;
} wbuf;

static void put(wbuf* b, const void* d, size_t n)
{
    if (b->oom) return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 1 << 16;
        while (cap < b->len + n) cap *= 2;
        uint8_t* np = realloc(b->p, cap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
}
static void put_u16(wbuf* b, uint16_t v) { put(b, &v, sizeof v); }
static void put_u32(wbuf* b, uint32_t v) { put(b, &v, sizeof v); }
static void put_u64(wbuf* b, uint64_t v) { put(b, &v, sizeof v); }

typedef struct {
    const uint8_t* p;
    size_t len, pos;
    int bad;
} rbuf;

static void get(rbuf* r, void* d, size_t n)
{
    if (r->bad || n > r->len - r->pos) {
        r->bad = 1;
        memset(d, 0, n);
        return;
    }
    memcpy(d, r->p + r->pos, n);
    r->pos += n;
}
static uint16_t get_u16(rbuf* r)
{
    uint16_t v;
    get(r, &v, sizeof v);
    return v;
}
static uint32_t get_u32(rbuf* r)
{
    uint32_t v;
    get(r, &v, sizeof v);
    return v;
}
static uint64_t get_u64(rbuf* r)
{
    uint64_t v;
    get(r, &v, sizeof v);
    return v;
}

static void say(char* dst, size_t cap, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(char* dst, size_t cap, const char* fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, cap, fmt, ap);
    va_end(ap);
}

/* checkpoint directory as tq_ckpt_open names it (no trailing '/'); 0 when path is not a directory */
static int norm_dir(const char* path, char* dir, size_t cap)
{
    struct stat sb;
    if (!path || stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode) || strlen(path) + 1 > cap || strlen(path) >= 3800) return 0;
    snprintf(dir, cap, "%s", path);
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/') dir[--dl] = '\0';
    return 1;
}

/* XXH3-64 of a whole small file; *has = 0 when it does not exist (text kept in *keep when not NULL) */
static tq_status file_xxh(const char* path, int* has, uint64_t* h, char** keep)
{
    *has = 0;
    *h = 0;
    if (keep) *keep = NULL;
    if (!tq_file_exists(path)) return TQ_OK;
    char* text = NULL;
    size_t len = 0;
    TQ_FORWARD(tq_read_file(path, &text, &len));
    *has = 1;
    *h = tq_xxh64(text, len, 0);
    if (keep) *keep = text;
    else free(text);
    return TQ_OK;
}

/* size, header length and XXH3-64 of the 8-byte prefix + JSON header of an open shard */
static tq_status header_xxh(int fd, const char* path, uint64_t* size, uint64_t* hlen, uint64_t* h)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0) return tq_errno_status(errno, "stat of", path);
    if (!S_ISREG(sb.st_mode)) return tq_fail(TQ_ERR_FORMAT, "%s is not a regular file", path);
    *size = (uint64_t)sb.st_size;
    uint8_t pre[8];
    if (*size < 8) return tq_fail(TQ_ERR_FORMAT, "%s: shorter than a safetensors prefix", path);
    TQ_FORWARD(tq_pread_full(fd, pre, 8, 0, path));
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | pre[i];
    if (hl < 2 || hl > TQ_ST_MAX_HEADER || hl > *size - 8) return tq_fail(TQ_ERR_FORMAT, "%s: bad header length", path);
    uint8_t* buf = malloc((size_t)hl + 8);
    if (!buf) return tq_fail(TQ_ERR_NOMEM, "no memory for the header of %s", path);
    tq_status rc = tq_pread_full(fd, buf, (size_t)hl + 8, 0, path);
    if (rc == TQ_OK) *h = tq_xxh64(buf, (size_t)hl + 8, 0);
    free(buf);
    *hlen = hl;
    return rc;
}

/* order-independent digest of the identity (inode, size, mtime, ctime) of every checkpoint file in
 * dir: equal before and after a parse = nothing was replaced or modified during it */
static uint64_t dir_snapshot(const char* dir)
{
    DIR* d = opendir(dir);
    if (!d) return 0;
    uint64_t acc = 0x9e3779b97f4a7c15ull;
    struct dirent* de;
    char p[4400];
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        int st = l > 12 && !strcmp(de->d_name + l - 12, ".safetensors");
        int js = l > 5 && !strcmp(de->d_name + l - 5, ".json");
        if (!st && !js) continue;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        struct stat sb;
        if (stat(p, &sb) != 0) continue;
        uint64_t v[7] = {(uint64_t)sb.st_ino, (uint64_t)sb.st_size, (uint64_t)sb.st_mtim.tv_sec, (uint64_t)sb.st_mtim.tv_nsec,
                         (uint64_t)sb.st_ctim.tv_sec, (uint64_t)sb.st_ctim.tv_nsec, tq_xxh64(de->d_name, l, 0)};
        acc += tq_xxh64(v, sizeof v, 0);
    }
    closedir(d);
    return acc;
}

/* ---- write ------------------------------------------------------------------------------------ */

/* the table of c (its files as they are now) into b */
static tq_status build_table(const tq_ckpt* c, const char* table_path, wbuf* b)
{
    const char* dir = tq_ckpt_dir(c);
    char ip[4400], cp[4400];
    snprintf(ip, sizeof ip, "%s/%s", dir, TAB_INDEX);
    snprintf(cp, sizeof cp, "%s/config.json", dir);
    int has_index = 0, has_config = 0;
    uint64_t ixh = 0, cfh = 0;
    TQ_FORWARD(file_xxh(ip, &has_index, &ixh, NULL));
    TQ_FORWARD(file_xxh(cp, &has_config, &cfh, NULL));
    int nf = tq_ckpt_file_count(c);
    if (!has_index && nf != 1) return tq_fail(TQ_ERR_ARG, "%s: %d files but no index", dir, nf);
    put(b, TAB_MAGIC, 8);
    put_u32(b, TAB_ENDIAN);
    put_u32(b, has_index ? MODE_INDEX : MODE_SINGLE);
    put_u64(b, ixh);
    put_u64(b, cfh);
    put_u32(b, (uint32_t)has_config);
    put_u32(b, (uint32_t)nf);
    put_u64(b, (uint64_t)tq_ckpt_count(c));
    size_t dl = strlen(dir);
    tq_status rc = TQ_OK;
    for (int f = 0; f < nf && rc == TQ_OK; f++) {
        const char* path = tq_ckpt_file_path(c, f);
        const char* name = strncmp(path, dir, dl) == 0 && path[dl] == '/' ? path + dl + 1 : NULL;
        if (!name || strchr(name, '/')) {
            rc = tq_fail(TQ_ERR_ARG, "%s is not a file of %s", path, dir);
            break;
        }
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            rc = tq_errno_status(errno, "opening checkpoint file", path);
            break;
        }
        uint64_t size = 0, hl = 0, h = 0;
        rc = header_xxh(fd, path, &size, &hl, &h);
        close(fd);
        put_u32(b, (uint32_t)strlen(name));
        put(b, name, strlen(name));
        put_u64(b, size);
        put_u64(b, hl);
        put_u64(b, h);
    }
    for (int64_t i = 0; i < tq_ckpt_count(c) && rc == TQ_OK; i++) {
        const tq_tensor_info* t = tq_ckpt_tensor(c, i);
        size_t nl = strnlen(t->name, TQ_MAX_NAME);
        put_u16(b, (uint16_t)nl);
        put(b, t->name, nl);
        put_u32(b, (uint32_t)t->dtype);
        put_u32(b, (uint32_t)t->ndim);
        put_u32(b, (uint32_t)t->file_idx);
        put_u64(b, t->offset);
        put_u64(b, t->nbytes);
        for (int d = 0; d < t->ndim && d < TQ_MAX_DIMS; d++) put_u64(b, (uint64_t)t->shape[d]);
    }
    if (rc == TQ_OK && !b->oom) put_u64(b, tq_xxh64(b->p, b->len, 0));
    if (rc == TQ_OK && b->oom) rc = tq_fail(TQ_ERR_NOMEM, "out of memory writing %s", table_path);
    return rc;
}

tq_status tq_ckpt_table_write(const tq_ckpt* c, const char* table_path)
{
    wbuf b = {0};
    tq_status rc = build_table(c, table_path, &b);
    if (rc == TQ_OK) rc = tq_write_file_atomic(table_path, b.p, b.len);
    free(b.p);
    return rc;
}

/* ---- read + validate -------------------------------------------------------------------------- */

/* The handle from the table, or TQ_ERR_NOTFOUND (why in *why) when the table is missing or stale. */
static tq_status load_table(const char* dir, const char* table_path, tq_ckpt** out, char* why, size_t wcap)
{
    *out = NULL;
    char* text = NULL;
    size_t len = 0;
    char** paths = NULL;
    int* fds = NULL;
    uint64_t* sizes = NULL;
    tq_tensor_info* t = NULL;
    char* config = NULL;
    uint32_t nf = 0;
    tq_status rc = TQ_ERR_NOTFOUND;
#define STALE(...)                                                                                           \
    do {                                                                                                     \
        say(why, wcap, __VA_ARGS__);                                                                         \
        rc = TQ_ERR_NOTFOUND;                                                                                \
        goto out;                                                                                            \
    } while (0)
    if (!tq_file_exists(table_path)) STALE("no table yet");
    if (tq_read_file(table_path, &text, &len) != TQ_OK) STALE("unreadable: %s", tq_last_error());
    if (len < 56 + 8 || memcmp(text, TAB_MAGIC, 8)) STALE("not a v1 table");
    uint64_t tail;
    memcpy(&tail, text + len - 8, 8);
    if (tail != tq_xxh64(text, len - 8, 0)) STALE("checksum mismatch (torn or damaged)");
    rbuf r = {(const uint8_t*)text, len - 8, 8, 0};
    if (get_u32(&r) != TAB_ENDIAN) STALE("other byte order");
    uint32_t mode = get_u32(&r);
    uint64_t ixh = get_u64(&r), cfh = get_u64(&r);
    uint32_t has_config = get_u32(&r);
    nf = get_u32(&r);
    int64_t n = (int64_t)get_u64(&r);
    if (r.bad || nf < 1 || nf > (1u << 20) || n < 0 || (uint64_t)n > len / 30 + 1) STALE("bad table header");

    /* index / single file, as tq_ckpt_open would choose */
    char p[4400];
    snprintf(p, sizeof p, "%s/%s", dir, TAB_INDEX);
    int has = 0;
    uint64_t h = 0;
    if (file_xxh(p, &has, &h, NULL) != TQ_OK) STALE("index unreadable");
    if (has != (mode == MODE_INDEX)) STALE("index appeared or disappeared");
    if (has && h != ixh) STALE("index changed");
    snprintf(p, sizeof p, "%s/config.json", dir);
    if (file_xxh(p, &has, &h, &config) != TQ_OK) STALE("config.json unreadable");
    if ((uint32_t)has != has_config || h != cfh) STALE("config.json changed");

    /* every shard: same size, same prefix + header bytes */
    paths = calloc(nf, sizeof *paths);
    fds = malloc(nf * sizeof *fds);
    sizes = calloc(nf, sizeof *sizes);
    if (!paths || !fds || !sizes) STALE("out of memory");
    for (uint32_t f = 0; f < nf; f++) fds[f] = -1;
    for (uint32_t f = 0; f < nf; f++) {
        uint32_t nl = get_u32(&r);
        if (r.bad || nl == 0 || nl > 1024 || nl > r.len - r.pos) STALE("bad file entry");
        char name[1100];
        get(&r, name, nl);
        name[nl] = '\0';
        uint64_t size = get_u64(&r), hl = get_u64(&r), hx = get_u64(&r);
        if (r.bad || strchr(name, '/')) STALE("bad file entry");
        if (mode == MODE_SINGLE && (nf != 1 || strcmp(name, TAB_SINGLE))) STALE("single-file table names %s", name);
        size_t need = strlen(dir) + nl + 2;
        paths[f] = malloc(need);
        if (!paths[f]) STALE("out of memory");
        say(paths[f], need, "%s/%s", dir, name);
        fds[f] = open(paths[f], O_RDONLY | O_CLOEXEC);
        if (fds[f] < 0) STALE("%s: %s", paths[f], strerror(errno));
        uint64_t s2 = 0, hl2 = 0, hx2 = 0;
        if (header_xxh(fds[f], paths[f], &s2, &hl2, &hx2) != TQ_OK) STALE("%s", tq_last_error());
        if (s2 != size || hl2 != hl || hx2 != hx) STALE("%s changed (size or header)", name);
        sizes[f] = size;
        (void)posix_fadvise(fds[f], 0, 0, POSIX_FADV_SEQUENTIAL);
    }
    t = calloc((size_t)n + 1, sizeof *t);
    if (!t) STALE("out of memory");
    for (int64_t i = 0; i < n; i++) {
        tq_tensor_info* x = &t[i];
        uint16_t nl = get_u16(&r);
        if (r.bad || nl == 0 || nl >= TQ_MAX_NAME) STALE("bad tensor entry %" PRId64, i);
        get(&r, x->name, nl);
        x->dtype = (tq_dtype)get_u32(&r);
        x->ndim = (int)get_u32(&r);
        x->file_idx = (int)get_u32(&r);
        x->offset = get_u64(&r);
        x->nbytes = get_u64(&r);
        if (r.bad || x->ndim < 0 || x->ndim > TQ_MAX_DIMS || x->file_idx < 0 || (uint32_t)x->file_idx >= nf)
            STALE("bad tensor entry %" PRId64, i);
        for (int d = 0; d < x->ndim; d++) x->shape[d] = (int64_t)get_u64(&r);
        if (r.bad || x->offset > sizes[x->file_idx] || x->nbytes > sizes[x->file_idx] - x->offset)
            STALE("bad tensor entry %" PRId64, i);
        if (i > 0 && strcmp(t[i - 1].name, x->name) >= 0) STALE("tensors out of order");
    }
    if (r.bad || r.pos != r.len) STALE("trailing bytes");
    rc = tq_ckpt_assemble(dir, (int)nf, paths, fds, sizes, t, n, config, out);
    paths = NULL; /* owned by the handle now (also on failure) */
    fds = NULL;
    sizes = NULL;
    t = NULL;
    config = NULL;
#undef STALE
out:
    if (paths)
        for (uint32_t f = 0; f < nf; f++) free(paths[f]);
    if (fds)
        for (uint32_t f = 0; f < nf; f++)
            if (fds[f] >= 0) close(fds[f]);
    free(paths);
    free(fds);
    free(sizes);
    free(t);
    free(config);
    free(text);
    return rc;
}

tq_status tq_ckpt_open_table(const char* model_dir, const char* table_path, int rebuild, tq_ckpt** out, int* from_table)
{
    if (from_table) *from_table = 0;
    char dir[4096];
    if (!table_path || !norm_dir(model_dir, dir, sizeof dir)) return tq_ckpt_open(model_dir, out);
    char why[512] = "";
    if (load_table(dir, table_path, out, why, sizeof why) == TQ_OK) {
        if (from_table) *from_table = 1;
        return TQ_OK;
    }
    TQ_LOG0(strcmp(why, "no table yet") ? TQ_LOG_INFO : TQ_LOG_DBG, "tensor table %s: %s; parsing the checkpoint's headers",
            table_path, why);
    uint64_t s0 = rebuild ? dir_snapshot(dir) : 0;
    TQ_FORWARD(tq_ckpt_open(model_dir, out));
    if (rebuild) {
        /* the headers hashed by build_table must be the ones tq_ckpt_open parsed: no file changed from
         * before the parse to after the hashing */
        wbuf b = {0};
        tq_status wrc = build_table(*out, table_path, &b);
        if (wrc == TQ_OK && s0 != dir_snapshot(dir)) wrc = tq_fail(TQ_ERR_IO, "a checkpoint file changed while it was parsed");
        if (wrc == TQ_OK) wrc = tq_write_file_atomic(table_path, b.p, b.len);
        free(b.p);
        if (wrc != TQ_OK) TQ_LOG(TQ_LOG_WARN, "tensor table %s not written: %s", table_path, tq_last_error());
    }
    return TQ_OK;
}
