/* artifact.c — the tqpipe artifact: HDF5 shard writer, JSON index writer, reader (see artifact.h and
 * docs/FORMAT.md). Serial HDF5 only (sec2 driver, one process per file).
 *
 * Shard file layout (HDF5, libver bounds v110..v110, no object timestamps):
 *   /                         attrs: format, format_version, tqpipe_version, shard, shard_count,
 *                                    zstd_level, config_json
 *   /tensors/<tensor name>    group, attrs: codec, group_size, bits, rbits, seed (hex), rows, cols,
 *                                    role, orig_dtype, orig_shape, nbytes, checksum (hex XXH3-64),
 *                                    checksum_algo
 *   /tensors/<name>/<part>    dataset per packed part ("codes", "norms", ...): u8 codes, IEEE fp16
 *                             norms/scales/mins, u16 bf16 values, fp32 codebooks (tq_part_type), shape
 *                             [rows, row_bytes/elem] for per-row parts, [bytes/elem] for per-tensor
 *                             parts. Contiguous when zstd_level == 0 or the part is < 4 KiB, else
 *                             chunked (~1 MiB of whole rows) with filter 32015, chunks compressed in
 *                             parallel and stored with H5Dwrite_chunk.
 * Index (JSON, written atomically, see tq_artifact_write_index for the keys); per-shard whole-file
 * XXH3 via a "<shard>.xxh3" sidecar left by the writer. Full spec with ASCII layout: docs/FORMAT.md. */
#include "artifact.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hdf5.h>
#include <zstd.h>

#include "fileio.h" /* defines: tq_commit_rename, tq_mkdirs, tq_read_file, tq_write_file_atomic */
#include "h5zstd.h" /* defines: tq_h5zstd_register, TQ_H5Z_ZSTD */
#include "hash.h"   /* defines: tq_xxh_*, tq_xxh_hex */

#define TQ_CHUNK_TARGET ((size_t)1 << 20) /* bytes per chunk when the zstd filter is on */
#define TQ_MIN_COMPRESS ((size_t)4096)     /* smaller parts (codebooks, tiny norms) stay uncompressed */

// ------------------------------------------------------------------------------------------------
// small HDF5 helpers (attributes)

static hid_t tq_str_type(size_t len)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0) return t;
    if (H5Tset_size(t, len + 1) < 0 || H5Tset_strpad(t, H5T_STR_NULLTERM) < 0 ||
        H5Tset_cset(t, H5T_CSET_UTF8) < 0) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

static tq_status tq_attr_write(hid_t obj, const char* name, hid_t ftype, hid_t mtype, int ndim,
                               const hsize_t* dims, const void* data)
{
    tq_status rc = TQ_OK;
    hid_t sp = ndim ? H5Screate_simple(ndim, dims, NULL) : H5Screate(H5S_SCALAR);
    hid_t at = -1;
    TQ_GOTO_IF(sp < 0, TQ_ERR_HDF5, out);
    at = H5Acreate2(obj, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT);
    TQ_GOTO_IF(at < 0, TQ_ERR_HDF5, out);
    TQ_GOTO_IF(H5Awrite(at, mtype, data) < 0, TQ_ERR_HDF5, out);
out:
    if (at >= 0) H5Aclose(at);
    if (sp >= 0) H5Sclose(sp);
    if (rc != TQ_OK) tq_fail(rc, "cannot write HDF5 attribute '%s'", name);
    return rc;
}

static tq_status tq_attr_str(hid_t obj, const char* name, const char* value)
{
    if (!value) value = "";
    hid_t t = tq_str_type(strlen(value));
    if (t < 0) return tq_fail(TQ_ERR_HDF5, "cannot make a string type for attribute '%s'", name);
    tq_status rc = tq_attr_write(obj, name, t, t, 0, NULL, value);
    H5Tclose(t);
    return rc;
}

static tq_status tq_attr_i64(hid_t obj, const char* name, int64_t v)
{
    return tq_attr_write(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, 0, NULL, &v);
}

/* Read a string attribute (fixed or variable length) into a malloc'd buffer. NULL on failure. */
static char* tq_attr_read_str(hid_t obj, const char* name)
{
    char* out = NULL;
    hid_t at = H5Aopen(obj, name, H5P_DEFAULT);
    if (at < 0) return NULL;
    hid_t ft = H5Aget_type(at);
    if (ft >= 0 && H5Tget_class(ft) == H5T_STRING) {
        if (H5Tis_variable_str(ft) > 0) {
            char* v = NULL;
            hid_t mt = H5Tcopy(H5T_C_S1);
            H5Tset_size(mt, H5T_VARIABLE);
            if (H5Aread(at, mt, &v) >= 0 && v) {
                out = strdup(v);
                H5free_memory(v);
            }
            H5Tclose(mt);
        } else {
            size_t n = H5Tget_size(ft);
            out = calloc(1, n + 1);
            if (out && H5Aread(at, ft, out) < 0) {
                free(out);
                out = NULL;
            }
        }
    }
    if (ft >= 0) H5Tclose(ft);
    H5Aclose(at);
    return out;
}

static int tq_attr_read_i64(hid_t obj, const char* name, int64_t* v)
{
    hid_t at = H5Aopen(obj, name, H5P_DEFAULT);
    if (at < 0) return -1;
    hid_t sp = H5Aget_space(at);
    int ok = sp >= 0 && H5Sget_simple_extent_npoints(sp) == 1 && H5Aread(at, H5T_NATIVE_INT64, v) >= 0;
    if (sp >= 0) H5Sclose(sp);
    H5Aclose(at);
    return ok ? 0 : -1;
}

/* Read an int64 array attribute of at most cap elements; returns the count or -1. */
static int tq_attr_read_i64v(hid_t obj, const char* name, int64_t* v, int cap)
{
    hid_t at = H5Aopen(obj, name, H5P_DEFAULT);
    if (at < 0) return -1;
    hid_t sp = H5Aget_space(at);
    hssize_t n = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
    int ok = n >= 0 && n <= cap && (n == 0 || H5Aread(at, H5T_NATIVE_INT64, v) >= 0);
    if (sp >= 0) H5Sclose(sp);
    H5Aclose(at);
    return ok ? (int)n : -1;
}

static int tq_parse_hex64(const char* s, uint64_t* v)
{
    if (!s || !*s) return -1;
    char* end = NULL;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 16);
    if (errno || !end || *end) return -1;
    *v = (uint64_t)x;
    return 0;
}

static hid_t tq_fapl(void)
{
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0) return fapl;
    if (H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_V110) < 0 ||
        H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0) {
        H5Pclose(fapl);
        return -1;
    }
    return fapl;
}

/* Open a shard read-only. Returns < 0 on failure. */
static hid_t tq_shard_open_ro(const char* path)
{
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0) return -1;
    H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    return f;
}

// ------------------------------------------------------------------------------------------------
// shard assignment and names

tq_status tq_artifact_assign_shards(const uint64_t* bytes, int64_t n, uint64_t max_shard_bytes,
                                    int* shard_of, int* nshards)
{
    TQ_RETURN_IF(n < 0 || (n > 0 && (!bytes || !shard_of)) || !nshards, TQ_ERR_ARG,
                 "tq_artifact_assign_shards: bad arguments");
    TQ_RETURN_IF(max_shard_bytes == 0, TQ_ERR_ARG, "shard size limit must be > 0");
    int k = 0;
    uint64_t cur = 0;
    for (int64_t i = 0; i < n; i++) {
        if (cur > 0 && cur + bytes[i] > max_shard_bytes) {
            k++;
            cur = 0;
        }
        shard_of[i] = k;
        cur += bytes[i];
    }
    *nshards = k + 1;
    return TQ_OK;
}

void tq_artifact_shard_name(int k, int n, char* out, size_t out_cap)
{
    snprintf(out, out_cap, "model-%05d-of-%05d.tqa.h5", k + 1, n);
}

static tq_status tq_join(char* out, size_t cap, const char* dir, const char* name)
{
    int k = snprintf(out, cap, "%s/%s", dir, name);
    if (k < 0 || (size_t)k >= cap) return tq_fail(TQ_ERR_ARG, "path too long: %s/%s", dir, name);
    return TQ_OK;
}

uint64_t tq_artifact_checksum(const tq_qtensor* q)
{
    tq_xxh_stream* s = tq_xxh_create();
    if (!s) return 0;
    for (int i = 0; i < q->nparts; i++) tq_xxh_update(s, q->part[i].data, q->part[i].bytes);
    uint64_t h = tq_xxh_digest(s);
    tq_xxh_free(&s);
    return h;
}

/* XXH3-64 of a whole file (streamed). Internal, also used by artifact_verify.c. */
tq_status tq_artifact_file_xxh3(const char* path, uint64_t* out);
tq_status tq_artifact_file_xxh3(const char* path, uint64_t* out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return tq_errno_status(errno, "opening", path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return tq_errno_status(e, "stat of", path);
    }
    if (st.st_size > 0) { /* mmap: no copy out of the page cache */
        void* m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m != MAP_FAILED) {
            (void)madvise(m, (size_t)st.st_size, MADV_SEQUENTIAL);
            *out = tq_xxh64(m, (size_t)st.st_size, 0);
            munmap(m, (size_t)st.st_size);
            close(fd);
            return TQ_OK;
        }
    }
    const size_t cap = (size_t)8 << 20;
    uint8_t* buf = malloc(cap);
    tq_xxh_stream* s = tq_xxh_create();
    tq_status rc = buf && s ? TQ_OK : tq_fail(TQ_ERR_NOMEM, "out of memory hashing %s", path);
    for (uint64_t off = 0; rc == TQ_OK && off < (uint64_t)st.st_size;) {
        size_t n = (uint64_t)st.st_size - off < cap ? (size_t)((uint64_t)st.st_size - off) : cap;
        rc = tq_pread_full(fd, buf, n, off, path);
        if (rc == TQ_OK) tq_xxh_update(s, buf, n);
        off += n;
    }
    if (rc == TQ_OK) *out = tq_xxh_digest(s);
    tq_xxh_free(&s);
    free(buf);
    close(fd);
    return rc;
}

/* Sidecar "<shard>.xxh3" = "<xxh3 hex> <size> <inode> <mtime ns>\n", written by tq_shard_commit after
 * the shard is durable and read (then removed) by the index writer, so rank 0 never re-reads shards
 * written by other ranks. It is a cache, not a commit record: it is not fsynced, and the index writer
 * trusts it only when size, inode and mtime still match the shard; otherwise it hashes the shard. */
static void tq_sidecar_path(char* out, size_t cap, const char* shard_path)
{
    snprintf(out, cap, "%s.xxh3", shard_path);
}

static void tq_sidecar_write(const char* shard_path, uint64_t h)
{
    struct stat st;
    char side[4200], tmp[4300], text[128], hex[17];
    if (stat(shard_path, &st) != 0) return;
    tq_sidecar_path(side, sizeof side, shard_path);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", side, (long)getpid());
    tq_xxh_hex(h, hex);
    int n = snprintf(text, sizeof text, "%s %lld %llu %lld\n", hex, (long long)st.st_size, (unsigned long long)st.st_ino,
                     (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return;
    int ok = tq_write_full(fd, text, (size_t)n, tmp) == TQ_OK;
    close(fd);
    if (!ok || rename(tmp, side) != 0) unlink(tmp);
}

/* The sidecar's checksum when it still describes the shard, else hash the shard. */
static tq_status tq_shard_file_checksum(const char* shard_path, uint64_t* out)
{
    char side[4200], *text = NULL, hex[17];
    long long size = -1, mt = -1;
    unsigned long long ino = 0;
    struct stat st;
    tq_sidecar_path(side, sizeof side, shard_path);
    int ok = tq_read_file(side, &text, NULL) == TQ_OK && sscanf(text, "%16s %lld %llu %lld", hex, &size, &ino, &mt) == 4 &&
             stat(shard_path, &st) == 0 && size == (long long)st.st_size && ino == (unsigned long long)st.st_ino &&
             mt == (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec && tq_parse_hex64(hex, out) == 0;
    free(text);
    if (!ok) tq_clear_error();
    return ok ? TQ_OK : tq_artifact_file_xxh3(shard_path, out);
}

// ------------------------------------------------------------------------------------------------
// writer

struct tq_shard_writer {
    hid_t file, tensors;
    int fd;                /* the sec2 driver's descriptor, to start writeback early (-1: unknown) */
    hid_t gcpl;            /* groups: no timestamps */
    int k, n, level;
    int64_t count;
    char last[TQ_MAX_NAME];
    char path[4096], tmp[4096];
};

static tq_status tq_hdf5_write_status(const char* what, const char* path)
{
    int err = errno;
    if (err == ENOSPC || err == EDQUOT)
        return tq_fail(TQ_ERR_NOSPACE, "%s %s: no space left on device; free space or point the output elsewhere",
                       what, path);
    return tq_fail(TQ_ERR_HDF5, "%s %s failed (HDF5)", what, path);
}

tq_status tq_shard_create(const char* dir, int k, int n, const tq_artifact_meta* meta, tq_shard_writer** out)
{
    TQ_RETURN_IF(!dir || !out || n < 1 || k < 0 || k >= n, TQ_ERR_ARG, "tq_shard_create: bad arguments (shard %d of %d)", k, n);
    *out = NULL;
    int level = meta ? meta->zstd_level : 0;
    TQ_RETURN_IF(level < 0 || level > 22, TQ_ERR_ARG, "zstd level %d out of range 0..22", level);
    TQ_FORWARD(tq_h5zstd_register());
    TQ_FORWARD(tq_mkdirs(dir));
    tq_shard_writer* w = calloc(1, sizeof *w);
    TQ_RETURN_IF(!w, TQ_ERR_NOMEM, "out of memory");
    w->file = w->tensors = w->gcpl = -1;
    w->fd = -1;
    w->k = k;
    w->n = n;
    w->level = level;
    char name[64];
    tq_artifact_shard_name(k, n, name, sizeof name);
    tq_status rc = TQ_OK;
    hid_t fcpl = -1, fapl = -1;
    TQ_CHECK_GOTO(tq_join(w->path, sizeof w->path, dir, name), fail);
    int m = snprintf(w->tmp, sizeof w->tmp, "%s.tmp.%ld", w->path, (long)getpid());
    TQ_GOTO_FAIL(m < 0 || (size_t)m >= sizeof w->tmp, TQ_ERR_ARG, fail, "path too long: %s", w->path);
    unlink(w->tmp);
    fcpl = H5Pcreate(H5P_FILE_CREATE);
    TQ_GOTO_IF(fcpl < 0 || H5Pset_obj_track_times(fcpl, 0) < 0, TQ_ERR_HDF5, hfail);
    fapl = tq_fapl();
    TQ_GOTO_IF(fapl < 0, TQ_ERR_HDF5, hfail);
    errno = 0;
    w->file = H5Fcreate(w->tmp, H5F_ACC_TRUNC, fcpl, fapl);
    if (w->file < 0) {
        rc = tq_hdf5_write_status("creating shard", w->tmp);
        goto fail;
    }
    void* vfd = NULL;
    w->fd = H5Fget_vfd_handle(w->file, fapl, &vfd) >= 0 && vfd ? *(int*)vfd : -1;
    w->gcpl = H5Pcreate(H5P_GROUP_CREATE);
    TQ_GOTO_IF(w->gcpl < 0 || H5Pset_obj_track_times(w->gcpl, 0) < 0, TQ_ERR_HDF5, hfail);
    /* the ~13 tensor attributes stay in the object header (dense storage costs ~2 KB per tensor) */
    TQ_GOTO_IF(H5Pset_attr_phase_change(w->gcpl, 32, 24) < 0, TQ_ERR_HDF5, hfail);
    TQ_CHECK_GOTO(tq_attr_str(w->file, "format", TQ_ARTIFACT_FORMAT), fail);
    TQ_CHECK_GOTO(tq_attr_i64(w->file, "format_version", TQ_ARTIFACT_FORMAT_VERSION), fail);
    TQ_CHECK_GOTO(tq_attr_str(w->file, "tqpipe_version", TQ_VERSION), fail);
    TQ_CHECK_GOTO(tq_attr_i64(w->file, "shard", k), fail);
    TQ_CHECK_GOTO(tq_attr_i64(w->file, "shard_count", n), fail);
    TQ_CHECK_GOTO(tq_attr_i64(w->file, "zstd_level", level), fail);
    TQ_CHECK_GOTO(tq_attr_str(w->file, "config_json", meta ? meta->config_json : NULL), fail);
    w->tensors = H5Gcreate2(w->file, "tensors", H5P_DEFAULT, w->gcpl, H5P_DEFAULT);
    TQ_GOTO_IF(w->tensors < 0, TQ_ERR_HDF5, hfail);
    H5Pclose(fcpl);
    H5Pclose(fapl);
    *out = w;
    return TQ_OK;
hfail:
    tq_fail(rc, "cannot create shard %s (HDF5)", w->tmp);
fail:
    if (fcpl >= 0) H5Pclose(fcpl);
    if (fapl >= 0) H5Pclose(fapl);
    tq_shard_abort(&w);
    return rc;
}

static int tq_is_fp16_scale_part(const tq_qpart* p)
{
    return p->elem_size == 2 && (!strncmp(p->name, "norm", 4) || !strncmp(p->name, "scale", 5) ||
                                 !strncmp(p->name, "min", 3));
}

// ------------------------------------------------------------------------------------------------
// zstd chunks compressed in parallel and written with H5Dwrite_chunk (the bytes the filter pipeline
// would store: one zstd frame per chunk, edge chunks zero-padded to the full chunk size, so the result
// never depends on uninitialised memory or on the thread count)

typedef struct {
    const uint8_t* src;  /* chunk source (may be shorter than chunk_bytes at the edge) */
    size_t src_bytes, chunk_bytes;
    int level;
    uint8_t* out;
    size_t out_cap, out_bytes;
    int failed;
} tq_zjob;

typedef struct {
    tq_zjob* jobs;
    int njobs;
    int next;             /* protected by mu */
    pthread_mutex_t mu;
} tq_zpool;

static void tq_zjob_run(tq_zjob* j, ZSTD_CCtx* cctx, uint8_t* pad)
{
    const void* in = j->src;
    if (j->src_bytes < j->chunk_bytes) { /* edge chunk: zero padding */
        memcpy(pad, j->src, j->src_bytes);
        memset(pad + j->src_bytes, 0, j->chunk_bytes - j->src_bytes);
        in = pad;
    }
    size_t r = ZSTD_compressCCtx(cctx, j->out, j->out_cap, in, j->chunk_bytes, j->level);
    if (ZSTD_isError(r)) j->failed = 1;
    else j->out_bytes = r;
}

static void* tq_zworker(void* arg)
{
    tq_zpool* P = arg;
    ZSTD_CCtx* cctx = ZSTD_createCCtx();
    uint8_t* pad = NULL;
    size_t pad_cap = 0;
    for (;;) {
        pthread_mutex_lock(&P->mu);
        int k = P->next++;
        pthread_mutex_unlock(&P->mu);
        if (k >= P->njobs) break;
        tq_zjob* j = &P->jobs[k];
        if (j->src_bytes < j->chunk_bytes && pad_cap < j->chunk_bytes) {
            free(pad);
            pad = malloc(j->chunk_bytes);
            pad_cap = pad ? j->chunk_bytes : 0;
        }
        if (!cctx || (j->src_bytes < j->chunk_bytes && !pad)) j->failed = 1;
        else tq_zjob_run(j, cctx, pad);
    }
    free(pad);
    ZSTD_freeCCtx(cctx);
    return NULL;
}

/* Threads for chunk compression: $TQ_ARTIFACT_THREADS, else the online CPUs (at most 16). */
static int tq_zthreads(void)
{
    const char* e = getenv("TQ_ARTIFACT_THREADS");
    long n = e && *e ? strtol(e, NULL, 10) : sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    if (n > 16) n = 16;
    return (int)n;
}

static tq_status tq_write_chunks(tq_shard_writer* w, hid_t ds, int ndim, const uint8_t* data, size_t bytes,
                                 size_t chunk_bytes, size_t stride, const char* tname, const char* pname)
{
    const int nthreads = tq_zthreads();
    const size_t nchunks = (bytes + chunk_bytes - 1) / chunk_bytes;
    const size_t batch = (size_t)nthreads * 4;
    const size_t cap = ZSTD_compressBound(chunk_bytes);
    tq_zjob* jobs = calloc(batch, sizeof *jobs);
    uint8_t* outbuf = malloc(batch * cap);
    pthread_t* th = calloc((size_t)nthreads, sizeof *th);
    tq_status rc = TQ_OK;
    if (!jobs || !outbuf || !th) {
        rc = tq_fail(TQ_ERR_NOMEM, "out of memory compressing tensor %s", tname);
        goto out;
    }
    for (size_t c0 = 0; c0 < nchunks && rc == TQ_OK; c0 += batch) {
        size_t nb = nchunks - c0 < batch ? nchunks - c0 : batch;
        for (size_t i = 0; i < nb; i++) {
            size_t off = (c0 + i) * chunk_bytes;
            tq_zjob* j = &jobs[i];
            j->src = data + off;
            j->src_bytes = bytes - off < chunk_bytes ? bytes - off : chunk_bytes;
            j->chunk_bytes = chunk_bytes;
            j->level = w->level;
            j->out = outbuf + i * cap;
            j->out_cap = cap;
            j->out_bytes = 0;
            j->failed = 0;
        }
        tq_zpool P = {jobs, (int)nb, 0, PTHREAD_MUTEX_INITIALIZER};
        int nt = nthreads < (int)nb ? nthreads : (int)nb, started = 0;
        for (int t = 1; t < nt; t++) /* this thread is worker 0 */
            if (pthread_create(&th[t], NULL, tq_zworker, &P) == 0) started = t;
        tq_zworker(&P);
        for (int t = 1; t <= started; t++) pthread_join(th[t], NULL);
        for (size_t i = 0; i < nb && rc == TQ_OK; i++) {
            if (jobs[i].failed) {
                rc = tq_fail(TQ_ERR_NOMEM, "zstd failed on chunk %zu of part '%s' of tensor %s", c0 + i, pname, tname);
                break;
            }
            hsize_t offset[2] = {(hsize_t)((c0 + i) * stride), 0};
            errno = 0;
            if (H5Dwrite_chunk(ds, H5P_DEFAULT, 0, offset, jobs[i].out_bytes, jobs[i].out) < 0)
                rc = tq_hdf5_write_status("writing tensor data to", w->tmp);
        }
    }
out:
    (void)ndim;
    free(jobs);
    free(outbuf);
    free(th);
    return rc;
}

/* File (and memory: no conversion) type of a part: u8 for codes, IEEE fp16 for 2-byte parts (norms,
 * scales, mins, fp16 values), u16 for bf16 values (no bf16 type in HDF5 tools), IEEE fp32 for 4-byte
 * parts (codebooks, int8 row scales, f32 values). Little-endian; the caller closes it. */
static hid_t tq_part_type(const tq_codec* c, int es)
{
    if (es == 1) return H5Tcopy(H5T_STD_U8LE);
    if (es == 4) return H5Tcopy(H5T_IEEE_F32LE);
    if (c->kind == TQ_CODEC_BF16) return H5Tcopy(H5T_STD_U16LE);
    hid_t t = H5Tcopy(H5T_IEEE_F32LE);
    if (t < 0) return t;
    if (H5Tset_fields(t, 15, 10, 5, 0, 10) < 0 || H5Tset_size(t, 2) < 0 || H5Tset_ebias(t, 15) < 0) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

/* Create and write one part dataset under grp. */
static tq_status tq_write_part(tq_shard_writer* w, hid_t grp, const tq_codec* codec, const tq_qpart* p,
                               int64_t rows, const char* tname)
{
    tq_status rc = TQ_OK;
    hid_t sp = -1, dcpl = -1, ds = -1;
    int es = p->elem_size;
    if (es != 1 && es != 2 && es != 4) es = 1;
    if (p->bytes % (size_t)es || (p->row_bytes && p->row_bytes % (size_t)es)) es = 1;
    hid_t ftype = tq_part_type(codec, es);
    if (ftype < 0) return tq_fail(TQ_ERR_HDF5, "cannot make the HDF5 type of part '%s' (tensor %s)", p->name, tname);
    hsize_t dims[2], chunk[2];
    int ndim;
    if (p->row_bytes > 0 && rows > 0 && (uint64_t)rows * p->row_bytes == p->bytes) {
        ndim = 2;
        dims[0] = (hsize_t)rows;
        dims[1] = p->row_bytes / (size_t)es;
        size_t cr = TQ_CHUNK_TARGET / p->row_bytes;
        if (cr < 1) cr = 1;
        if (cr > (size_t)rows) cr = (size_t)rows;
        chunk[0] = cr;
        chunk[1] = dims[1];
    } else {
        ndim = 1;
        dims[0] = p->bytes / (size_t)es;
        size_t ce = TQ_CHUNK_TARGET / (size_t)es;
        chunk[0] = dims[0] < ce ? dims[0] : ce;
    }
    sp = H5Screate_simple(ndim, dims, NULL);
    dcpl = H5Pcreate(H5P_DATASET_CREATE);
    TQ_GOTO_IF(sp < 0 || dcpl < 0 || H5Pset_obj_track_times(dcpl, 0) < 0, TQ_ERR_HDF5, out);
    TQ_GOTO_IF(H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER) < 0, TQ_ERR_HDF5, out);
    const int zstd = w->level > 0 && p->bytes >= TQ_MIN_COMPRESS;
    if (zstd) {
        unsigned cd = (unsigned)w->level;
        TQ_GOTO_IF(H5Pset_chunk(dcpl, ndim, chunk) < 0, TQ_ERR_HDF5, out);
        TQ_GOTO_IF(H5Pset_filter(dcpl, TQ_H5Z_ZSTD, H5Z_FLAG_OPTIONAL, 1, &cd) < 0, TQ_ERR_HDF5, out);
    } else {
        TQ_GOTO_IF(H5Pset_layout(dcpl, H5D_CONTIGUOUS) < 0, TQ_ERR_HDF5, out);
    }
    ds = H5Dcreate2(grp, p->name, ftype, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    TQ_GOTO_IF(ds < 0, TQ_ERR_HDF5, out);
    if (zstd) {
        size_t chunk_bytes = (size_t)chunk[0] * (ndim == 2 ? p->row_bytes : (size_t)es);
        size_t stride = (size_t)chunk[0]; /* chunk step along dim 0 */
        rc = tq_write_chunks(w, ds, ndim, p->data, p->bytes, chunk_bytes, stride, tname, p->name);
    } else if (p->bytes > 0) {
        errno = 0;
        if (H5Dwrite(ds, ftype, H5S_ALL, H5S_ALL, H5P_DEFAULT, p->data) < 0) {
            rc = tq_hdf5_write_status("writing tensor data to", w->tmp);
            goto out;
        }
    }
out:
    if (ds >= 0) H5Dclose(ds);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (sp >= 0) H5Sclose(sp);
    H5Tclose(ftype);
    if (rc == TQ_ERR_HDF5)
        tq_fail(rc, "cannot write part '%s' of tensor %s into %s (HDF5)", p->name, tname, w->tmp);
    return rc;
}

tq_status tq_shard_add(tq_shard_writer* w, const tq_artifact_desc* d, const tq_qtensor* q, uint64_t* checksum_out)
{
    TQ_RETURN_IF(!w || !d || !d->name || !q || w->file < 0, TQ_ERR_ARG, "tq_shard_add: bad arguments");
    const char* name = d->name;
    size_t nl = strlen(name);
    TQ_RETURN_IF(nl == 0 || nl >= TQ_MAX_NAME || strchr(name, '/') || !strcmp(name, "."), TQ_ERR_ARG,
                 "tensor name '%s' cannot be stored (empty, too long or contains '/')", name);
    TQ_RETURN_IF(w->count > 0 && strcmp(w->last, name) >= 0, TQ_ERR_ARG,
                 "tensor %s added to %s out of order (after %s): add tensors sorted by name", name, w->path, w->last);
    TQ_RETURN_IF(d->orig_ndim < 0 || d->orig_ndim > TQ_MAX_DIMS, TQ_ERR_ARG, "tensor %s: bad ndim %d", name, d->orig_ndim);
    TQ_RETURN_IF(tq_dtype_size(d->orig_dtype) == 0, TQ_ERR_ARG, "tensor %s: invalid original dtype", name);
    int64_t numel = 1;
    for (int i = 0; i < d->orig_ndim; i++) numel *= d->orig_shape[i];
    int64_t lastdim = d->orig_ndim ? d->orig_shape[d->orig_ndim - 1] : 1;
    TQ_RETURN_IF(q->rows * q->cols != numel || q->cols != lastdim, TQ_ERR_ARG,
                 "tensor %s: quantized as %lld x %lld but its shape has %lld elements, last dim %lld", name,
                 (long long)q->rows, (long long)q->cols, (long long)numel, (long long)lastdim);
    /* the parts must be exactly what the codec describes */
    tq_qtensor lay;
    memset(&lay, 0, sizeof lay);
    TQ_FORWARD(tq_qtensor_layout(&lay, &q->codec, q->rows, q->cols, q->seed));
    TQ_RETURN_IF(lay.nparts != q->nparts, TQ_ERR_ARG, "tensor %s (%s): %d parts, codec describes %d", name,
                 q->codec.name, q->nparts, lay.nparts);
    for (int i = 0; i < q->nparts; i++) {
        const tq_qpart* p = &q->part[i];
        TQ_RETURN_IF(strcmp(p->name, lay.part[i].name) || p->bytes != lay.part[i].bytes ||
                         p->row_bytes != lay.part[i].row_bytes || p->elem_size != lay.part[i].elem_size,
                     TQ_ERR_ARG, "tensor %s (%s): part %d '%s' (%zu bytes) differs from the codec layout '%s' (%zu bytes)",
                     name, q->codec.name, i, p->name, p->bytes, lay.part[i].name, lay.part[i].bytes);
        TQ_RETURN_IF(p->bytes && !p->data, TQ_ERR_ARG, "tensor %s: part '%s' has no data", name, p->name);
        if (p->elem_size == 4 && (!strncmp(p->name, "scale", 5) || !strncmp(p->name, "codebook", 8))) {
            for (size_t j = 0; j + 4 <= p->bytes; j += 4) {
                uint32_t u;
                memcpy(&u, p->data + j, 4);
                TQ_RETURN_IF((u & 0x7f800000u) == 0x7f800000u, TQ_ERR_NUMERIC,
                             "tensor %s: part '%s' element %zu is NaN/Inf; refusing to write it into %s", name,
                             p->name, j / 4, w->path);
            }
        }
        if (tq_is_fp16_scale_part(p)) {
            const uint16_t* h = (const uint16_t*)p->data;
            for (size_t j = 0; j < p->bytes / 2; j++)
                TQ_RETURN_IF((h[j] & 0x7c00u) == 0x7c00u, TQ_ERR_NUMERIC,
                             "tensor %s: part '%s' element %zu is NaN/Inf; refusing to write it into %s", name,
                             p->name, j, w->path);
        }
    }
    uint64_t sum = tq_artifact_checksum(q);
    char hex[17], seedhex[17];
    tq_xxh_hex(sum, hex);
    tq_xxh_hex(q->seed, seedhex);

    tq_status rc = TQ_OK;
    hid_t g = H5Gcreate2(w->tensors, name, H5P_DEFAULT, w->gcpl, H5P_DEFAULT);
    TQ_GOTO_FAIL(g < 0, TQ_ERR_HDF5, out, "cannot create group for tensor %s in %s (HDF5)", name, w->tmp);
    hsize_t nd = (hsize_t)d->orig_ndim;
    uint64_t nbytes = 0;
    for (int i = 0; i < q->nparts; i++) nbytes += q->part[i].bytes;
    TQ_CHECK_GOTO(tq_attr_str(g, "codec", q->codec.name), out);
    TQ_CHECK_GOTO(tq_attr_i64(g, "group_size", q->codec.group), out);
    TQ_CHECK_GOTO(tq_attr_i64(g, "bits", q->codec.bits), out);
    TQ_CHECK_GOTO(tq_attr_i64(g, "rbits", q->codec.rbits), out);
    TQ_CHECK_GOTO(tq_attr_str(g, "seed", seedhex), out);
    TQ_CHECK_GOTO(tq_attr_i64(g, "rows", q->rows), out);
    TQ_CHECK_GOTO(tq_attr_i64(g, "cols", q->cols), out);
    TQ_CHECK_GOTO(tq_attr_str(g, "role", d->role ? d->role : "other"), out);
    TQ_CHECK_GOTO(tq_attr_str(g, "orig_dtype", tq_dtype_name(d->orig_dtype)), out);
    TQ_CHECK_GOTO(tq_attr_write(g, "orig_shape", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, &nd, d->orig_shape), out);
    TQ_CHECK_GOTO(tq_attr_i64(g, "nbytes", (int64_t)nbytes), out);
    TQ_CHECK_GOTO(tq_attr_str(g, "checksum", hex), out);
    TQ_CHECK_GOTO(tq_attr_str(g, "checksum_algo", "xxh3_64"), out);
    for (int i = 0; i < q->nparts; i++) TQ_CHECK_GOTO(tq_write_part(w, g, &q->codec, &q->part[i], q->rows, name), out);
    memcpy(w->last, name, nl + 1);
    w->count++;
    /* start writing this tensor's pages to disk now (asynchronously), so the fsync at commit only waits
     * for the tail: disk writes overlap with producing and hashing the rest */
    if (w->fd >= 0) (void)sync_file_range(w->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    if (checksum_out) *checksum_out = sum;
out:
    if (g >= 0) H5Gclose(g);
    return rc;
}

typedef struct {
    int fd;
    int err;
} tq_syncjob;

static void* tq_fsync_thread(void* arg)
{
    tq_syncjob* j = arg;
    if (fsync(j->fd) != 0) j->err = errno; /* the durable fsync (with retries) is tq_commit_rename's */
    return NULL;
}

tq_status tq_shard_commit(tq_shard_writer** pw)
{
    return tq_shard_commit_hash(pw, NULL);
}

tq_status tq_shard_commit_hash(tq_shard_writer** pw, uint64_t* file_xxh3)
{
    TQ_RETURN_IF(!pw || !*pw, TQ_ERR_ARG, "tq_shard_commit: no writer");
    tq_shard_writer* w = *pw;
    tq_status rc = TQ_OK;
    if (w->tensors >= 0 && H5Gclose(w->tensors) < 0) rc = TQ_ERR_HDF5;
    w->tensors = -1;
    if (w->gcpl >= 0) H5Pclose(w->gcpl);
    w->gcpl = -1;
    errno = 0;
    if (w->file >= 0 && H5Fclose(w->file) < 0) rc = TQ_ERR_HDF5;
    w->file = -1;
    if (rc != TQ_OK) {
        rc = tq_hdf5_write_status("closing shard", w->tmp);
        tq_shard_abort(pw);
        return rc;
    }
    /* whole-file checksum for the index (the file is hot in the page cache now), computed while a
     * helper thread waits in fsync for the disk: CPU and I/O overlap. tq_commit_rename's own fsync
     * then finds nothing left to write. */
    uint64_t fh = 0;
    tq_syncjob sj = {open(w->tmp, O_RDONLY | O_CLOEXEC), 0};
    pthread_t sth;
    int threaded = sj.fd >= 0 && pthread_create(&sth, NULL, tq_fsync_thread, &sj) == 0;
    rc = tq_artifact_file_xxh3(w->tmp, &fh);
    if (threaded) pthread_join(sth, NULL);
    if (sj.fd >= 0) close(sj.fd);
    if (rc == TQ_OK) rc = tq_commit_rename(w->tmp, w->path);
    if (rc != TQ_OK) unlink(w->tmp);
    if (rc == TQ_OK) tq_sidecar_write(w->path, fh);
    if (rc == TQ_OK && file_xxh3) *file_xxh3 = fh;
    free(w);
    *pw = NULL;
    return rc;
}

void tq_shard_abort(tq_shard_writer** pw)
{
    if (!pw || !*pw) return;
    tq_shard_writer* w = *pw;
    if (w->tensors >= 0) H5Gclose(w->tensors);
    if (w->gcpl >= 0) H5Pclose(w->gcpl);
    if (w->file >= 0) H5Fclose(w->file);
    if (w->tmp[0]) unlink(w->tmp);
    free(w);
    *pw = NULL;
}

// ------------------------------------------------------------------------------------------------
// reading tensor descriptions out of a shard (index writer, verify)

typedef struct {
    char** names;
    int64_t n, cap;
} tq_namelist;

static herr_t tq_collect_name(hid_t g, const char* name, const H5L_info_t* info, void* op)
{
    (void)g;
    (void)info;
    tq_namelist* l = op;
    if (l->n == l->cap) {
        int64_t nc = l->cap ? 2 * l->cap : 64;
        char** nn = realloc(l->names, (size_t)nc * sizeof *nn);
        if (!nn) return -1;
        l->names = nn;
        l->cap = nc;
    }
    l->names[l->n] = strdup(name);
    if (!l->names[l->n]) return -1;
    l->n++;
    return 0;
}

static void tq_namelist_free(tq_namelist* l)
{
    for (int64_t i = 0; i < l->n; i++) free(l->names[i]);
    free(l->names);
    memset(l, 0, sizeof *l);
}

/* Names under /tensors of an open shard, in name order. */
static tq_status tq_shard_list(hid_t f, const char* path, tq_namelist* l)
{
    memset(l, 0, sizeof *l);
    hid_t g = H5Gopen2(f, "tensors", H5P_DEFAULT);
    if (g < 0) return tq_fail(TQ_ERR_CORRUPT, "%s: no /tensors group (not a tqpipe shard or damaged)", path);
    hsize_t idx = 0;
    herr_t e = H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, &idx, tq_collect_name, l);
    H5Gclose(g);
    if (e < 0) {
        tq_namelist_free(l);
        return tq_fail(TQ_ERR_CORRUPT, "%s: cannot list /tensors (damaged file)", path);
    }
    return TQ_OK;
}

/* Check a shard's root attributes: format, version, shard number and count. */
static tq_status tq_shard_check_root(hid_t f, const char* path, int k, int n)
{
    char* fmt = tq_attr_read_str(f, "format");
    int ok = fmt && !strcmp(fmt, TQ_ARTIFACT_FORMAT);
    free(fmt);
    TQ_RETURN_IF(!ok, TQ_ERR_FORMAT, "%s: not a tqpipe artifact shard (attribute 'format' is not '%s')", path,
                 TQ_ARTIFACT_FORMAT);
    int64_t v = -1, sk = -1, sn = -1;
    TQ_RETURN_IF(tq_attr_read_i64(f, "format_version", &v) < 0, TQ_ERR_FORMAT, "%s: no format_version attribute", path);
    TQ_RETURN_IF(v != TQ_ARTIFACT_FORMAT_VERSION, TQ_ERR_FORMAT,
                 "%s: format version %lld, this tqpipe (%s) reads version %d; use a matching tqpipe", path,
                 (long long)v, TQ_VERSION, TQ_ARTIFACT_FORMAT_VERSION);
    TQ_RETURN_IF(tq_attr_read_i64(f, "shard", &sk) < 0 || tq_attr_read_i64(f, "shard_count", &sn) < 0, TQ_ERR_FORMAT,
                 "%s: no shard/shard_count attributes", path);
    TQ_RETURN_IF(sk != k || sn != n, TQ_ERR_CORRUPT, "%s: says it is shard %lld of %lld, expected %d of %d (renamed or mixed files?)",
                 path, (long long)sk + 1, (long long)sn, k + 1, n);
    return TQ_OK;
}

/* Read the description attributes of /tensors/<name> into t (shard, checksum from the shard). */
static tq_status tq_shard_read_desc(hid_t f, const char* path, const char* name, int k, tq_artifact_tensor* t)
{
    memset(t, 0, sizeof *t);
    char gp[TQ_MAX_NAME + 16];
    snprintf(gp, sizeof gp, "tensors/%s", name);
    hid_t g = H5Gopen2(f, gp, H5P_DEFAULT);
    if (g < 0) return tq_fail(TQ_ERR_NOTFOUND, "%s: tensor %s missing", path, name);
    tq_status rc = TQ_OK;
    char *codec = tq_attr_read_str(g, "codec"), *seed = tq_attr_read_str(g, "seed");
    char *role = tq_attr_read_str(g, "role"), *dt = tq_attr_read_str(g, "orig_dtype");
    char* sum = tq_attr_read_str(g, "checksum");
    int64_t gs = 0, rows = 0, cols = 0, nb = 0;
    int nd = tq_attr_read_i64v(g, "orig_shape", t->orig_shape, TQ_MAX_DIMS);
    if (!codec || !seed || !role || !dt || !sum || nd < 0 || tq_attr_read_i64(g, "group_size", &gs) < 0 ||
        tq_attr_read_i64(g, "rows", &rows) < 0 || tq_attr_read_i64(g, "cols", &cols) < 0 ||
        tq_attr_read_i64(g, "nbytes", &nb) < 0) {
        rc = tq_fail(TQ_ERR_CORRUPT, "%s: tensor %s has missing or damaged attributes", path, name);
        goto out;
    }
    snprintf(t->name, sizeof t->name, "%s", name);
    snprintf(t->role, sizeof t->role, "%s", role);
    if (tq_codec_parse(codec, (int)gs, &t->codec) != TQ_OK) {
        rc = tq_fail(TQ_ERR_FORMAT, "%s: tensor %s has unknown codec '%s' (group %lld); newer tqpipe?", path, name,
                     codec, (long long)gs);
        goto out;
    }
    t->orig_dtype = tq_dtype_parse(dt);
    t->orig_ndim = nd;
    t->rows = rows;
    t->cols = cols;
    t->bytes = (uint64_t)nb;
    t->shard = k;
    if (tq_parse_hex64(seed, &t->seed) < 0 || tq_parse_hex64(sum, &t->checksum) < 0 || t->orig_dtype == TQ_DTYPE_INVALID)
        rc = tq_fail(TQ_ERR_CORRUPT, "%s: tensor %s has a malformed seed, checksum or dtype attribute", path, name);
out:
    free(codec);
    free(seed);
    free(role);
    free(dt);
    free(sum);
    H5Gclose(g);
    return rc;
}

// ------------------------------------------------------------------------------------------------
// index

static json_t* tq_tensor_json(const tq_artifact_tensor* t)
{
    char seed[17], sum[17];
    tq_xxh_hex(t->seed, seed);
    tq_xxh_hex(t->checksum, sum);
    json_t* shape = json_array();
    for (int i = 0; i < t->orig_ndim; i++) json_array_append_new(shape, json_integer(t->orig_shape[i]));
    return json_pack("{s:i, s:s, s:i, s:s, s:o, s:I, s:I, s:s, s:s, s:I, s:s}", "shard", t->shard, "codec",
                     t->codec.name, "group_size", t->codec.group, "dtype", tq_dtype_name(t->orig_dtype), "shape",
                     shape, "rows", (json_int_t)t->rows, "cols", (json_int_t)t->cols, "role", t->role, "seed",
                     seed, "bytes", (json_int_t)t->bytes, "checksum", sum);
}

static int tq_cmp_tensor(const void* a, const void* b)
{
    return strcmp(((const tq_artifact_tensor*)a)->name, ((const tq_artifact_tensor*)b)->name);
}

static tq_status tq_index_dump(const char* dir, json_t* root)
{
    char path[4096];
    TQ_FORWARD(tq_join(path, sizeof path, dir, TQ_ARTIFACT_INDEX_NAME));
    char* text = json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    TQ_RETURN_IF(!text, TQ_ERR_NOMEM, "cannot serialise the index %s", path);
    size_t len = strlen(text);
    tq_status rc;
    char* buf = malloc(len + 2);
    if (!buf) {
        free(text);
        return tq_fail(TQ_ERR_NOMEM, "out of memory writing %s", path);
    }
    memcpy(buf, text, len);
    buf[len] = '\n';
    rc = tq_write_file_atomic(path, buf, len + 1);
    free(buf);
    free(text);
    return rc;
}

tq_status tq_artifact_write_index(const char* dir, int nshards, const tq_artifact_meta* meta)
{
    TQ_RETURN_IF(!dir || nshards < 1, TQ_ERR_ARG, "tq_artifact_write_index: bad arguments");
    TQ_FORWARD(tq_h5zstd_register());
    tq_status rc = TQ_OK;
    tq_artifact_tensor* ts = NULL;
    int64_t nt = 0, cap = 0;
    json_t* shards = json_array();
    json_t* root = NULL;
    int64_t total_params = 0;
    uint64_t total_bytes = 0;
    for (int k = 0; k < nshards; k++) {
        char name[64], path[4096];
        tq_artifact_shard_name(k, nshards, name, sizeof name);
        TQ_CHECK_GOTO(tq_join(path, sizeof path, dir, name), out);
        struct stat st;
        TQ_GOTO_FAIL(stat(path, &st) != 0, TQ_ERR_NOTFOUND, out,
                     "shard %s is missing: the pack stage did not finish; rerun it", path);
        hid_t f = tq_shard_open_ro(path);
        TQ_GOTO_FAIL(f < 0, TQ_ERR_CORRUPT, out, "cannot open shard %s as HDF5 (truncated or damaged)", path);
        tq_namelist l;
        rc = tq_shard_check_root(f, path, k, nshards);
        if (rc == TQ_OK) rc = tq_shard_list(f, path, &l);
        if (rc != TQ_OK) {
            H5Fclose(f);
            goto out;
        }
        for (int64_t i = 0; i < l.n && rc == TQ_OK; i++) {
            if (nt == cap) {
                int64_t nc = cap ? 2 * cap : 256;
                tq_artifact_tensor* nts = realloc(ts, (size_t)nc * sizeof *nts);
                if (!nts) {
                    rc = tq_fail(TQ_ERR_NOMEM, "out of memory");
                    break;
                }
                ts = nts;
                cap = nc;
            }
            rc = tq_shard_read_desc(f, path, l.names[i], k, &ts[nt]);
            if (rc == TQ_OK) {
                total_params += ts[nt].rows * ts[nt].cols;
                total_bytes += ts[nt].bytes;
                nt++;
            }
        }
        H5Fclose(f);
        uint64_t fh = 0;
        char hex[17];
        if (rc == TQ_OK) rc = tq_shard_file_checksum(path, &fh);
        tq_xxh_hex(fh, hex);
        json_array_append_new(shards, json_pack("{s:s, s:I, s:I, s:s}", "file", name, "bytes", (json_int_t)st.st_size,
                                                "tensors", (json_int_t)l.n, "xxh3", hex));
        tq_namelist_free(&l);
        if (rc != TQ_OK) goto out;
    }
    if (nt > 1) qsort(ts, (size_t)nt, sizeof *ts, tq_cmp_tensor);
    for (int64_t i = 1; i < nt; i++)
        TQ_GOTO_FAIL(!strcmp(ts[i].name, ts[i - 1].name), TQ_ERR_FORMAT, out,
                     "tensor %s is in two shards (%d and %d) of %s", ts[i].name, ts[i - 1].shard + 1, ts[i].shard + 1, dir);
    json_t* tens = json_object();
    for (int64_t i = 0; i < nt; i++) json_object_set_new(tens, ts[i].name, tq_tensor_json(&ts[i]));
    root = json_pack("{s:s, s:i, s:s, s:s, s:i, s:I, s:I, s:o, s:o, s:s, s:s, s:s, s:s, s:s}", "format",
                     TQ_ARTIFACT_FORMAT, "format_version", TQ_ARTIFACT_FORMAT_VERSION, "tqpipe_version", TQ_VERSION,
                     "model_name", meta && meta->model_name ? meta->model_name : "", "zstd_level",
                     meta ? meta->zstd_level : 0, "total_params", (json_int_t)total_params, "total_bytes",
                     (json_int_t)total_bytes, "shards", shards, "tensors", tens, "config_json",
                     meta && meta->config_json ? meta->config_json : "", "plan",
                     meta && meta->plan ? meta->plan : "", "provenance",
                     meta && meta->provenance ? meta->provenance : "", "job", meta && meta->job ? meta->job : "",
                     "metrics", meta && meta->metrics ? meta->metrics : "");
    shards = NULL;
    TQ_GOTO_FAIL(!root, TQ_ERR_NOMEM, out, "cannot build the index for %s (invalid UTF-8 in metadata?)", dir);
    rc = tq_index_dump(dir, root);
    for (int k = 0; rc == TQ_OK && k < nshards; k++) { /* the index now holds the file checksums */
        char name[64], path[4096], side[4200];
        tq_artifact_shard_name(k, nshards, name, sizeof name);
        if (tq_join(path, sizeof path, dir, name) != TQ_OK) continue;
        tq_sidecar_path(side, sizeof side, path);
        unlink(side);
    }
out:
    json_decref(shards);
    json_decref(root);
    free(ts);
    return rc;
}

tq_status tq_artifact_set_metrics(const char* dir, const char* metrics_json)
{
    TQ_RETURN_IF(!dir || !metrics_json, TQ_ERR_ARG, "tq_artifact_set_metrics: bad arguments");
    json_error_t e;
    json_t* m = json_loads(metrics_json, 0, &e);
    TQ_RETURN_IF(!m, TQ_ERR_FORMAT, "metrics are not valid JSON (line %d: %s)", e.line, e.text);
    json_decref(m);
    char path[4096];
    TQ_FORWARD(tq_join(path, sizeof path, dir, TQ_ARTIFACT_INDEX_NAME));
    json_t* root = json_load_file(path, JSON_REJECT_DUPLICATES, &e);
    TQ_RETURN_IF(!root, tq_file_exists(path) ? TQ_ERR_FORMAT : TQ_ERR_NOTFOUND, "cannot read index %s: %s (line %d)",
                 path, e.text, e.line);
    json_object_set_new(root, "metrics", json_string(metrics_json));
    tq_status rc = tq_index_dump(dir, root);
    json_decref(root);
    return rc;
}

// ------------------------------------------------------------------------------------------------
// reader

struct tq_artifact {
    char dir[4096];
    int nshards;
    char** shard_files;
    uint64_t* shard_bytes;
    uint64_t* shard_xxh3;    /* whole-file checksums (0 when the index has none) */
    int64_t* shard_tensors;
    int64_t n;
    tq_artifact_tensor* t;
    char *config_json, *plan, *provenance, *job, *metrics, *model_name;
    uint64_t total_bytes;
    int64_t total_params;
    hid_t f;        /* open shard (cache of one) */
    int f_shard;
};

static char* tq_json_strdup(json_t* root, const char* key)
{
    const char* s = json_string_value(json_object_get(root, key));
    return strdup(s ? s : "");
}

static tq_status tq_index_tensor(const char* path, const char* name, json_t* o, int nshards, tq_artifact_tensor* t)
{
    memset(t, 0, sizeof *t);
    TQ_RETURN_IF(strlen(name) >= sizeof t->name, TQ_ERR_FORMAT, "%s: tensor name too long: %.64s...", path, name);
    strcpy(t->name, name);
    json_t *shape = NULL;
    const char *codec = NULL, *dtype = NULL, *role = NULL, *seed = NULL, *sum = NULL;
    json_int_t shard = -1, gs = 0, rows = 0, cols = 0, bytes = 0;
    json_error_t e;
    TQ_RETURN_IF(json_unpack_ex(o, &e, 0, "{s:I, s:s, s:I, s:s, s:o, s:I, s:I, s:s, s:s, s:I, s:s}", "shard", &shard,
                                "codec", &codec, "group_size", &gs, "dtype", &dtype, "shape", &shape, "rows", &rows,
                                "cols", &cols, "role", &role, "seed", &seed, "bytes", &bytes, "checksum", &sum) != 0,
                 TQ_ERR_FORMAT, "%s: tensor %s: %s", path, name, e.text);
    TQ_RETURN_IF(shard < 0 || shard >= nshards, TQ_ERR_FORMAT, "%s: tensor %s: shard %lld out of range", path, name,
                 (long long)shard);
    TQ_RETURN_IF(tq_codec_parse(codec, (int)gs, &t->codec) != TQ_OK, TQ_ERR_FORMAT,
                 "%s: tensor %s: unknown codec '%s' group %lld (artifact from a newer tqpipe?)", path, name, codec,
                 (long long)gs);
    t->orig_dtype = tq_dtype_parse(dtype);
    TQ_RETURN_IF(!json_is_array(shape) || json_array_size(shape) > TQ_MAX_DIMS || t->orig_dtype == TQ_DTYPE_INVALID,
                 TQ_ERR_FORMAT, "%s: tensor %s: bad shape or dtype", path, name);
    t->orig_ndim = (int)json_array_size(shape);
    int64_t numel = 1;
    for (int i = 0; i < t->orig_ndim; i++) {
        t->orig_shape[i] = json_integer_value(json_array_get(shape, (size_t)i));
        numel *= t->orig_shape[i];
    }
    t->rows = rows;
    t->cols = cols;
    t->bytes = (uint64_t)bytes;
    t->shard = (int)shard;
    snprintf(t->role, sizeof t->role, "%s", role);
    TQ_RETURN_IF(rows < 0 || cols < 0 || rows * cols != numel, TQ_ERR_FORMAT,
                 "%s: tensor %s: rows x cols does not match the shape", path, name);
    TQ_RETURN_IF(tq_parse_hex64(seed, &t->seed) < 0 || tq_parse_hex64(sum, &t->checksum) < 0, TQ_ERR_FORMAT,
                 "%s: tensor %s: malformed seed or checksum", path, name);
    return TQ_OK;
}

tq_status tq_artifact_open(const char* dir, tq_artifact** out)
{
    TQ_RETURN_IF(!dir || !out, TQ_ERR_ARG, "tq_artifact_open: bad arguments");
    *out = NULL;
    TQ_FORWARD(tq_h5zstd_register());
    char path[4096];
    TQ_FORWARD(tq_join(path, sizeof path, dir, TQ_ARTIFACT_INDEX_NAME));
    TQ_RETURN_IF(!tq_file_exists(path), TQ_ERR_NOTFOUND,
                 "%s not found: %s is not a tqpipe artifact directory (or the pack stage did not finish)", path, dir);
    json_error_t e;
    json_t* root = json_load_file(path, JSON_REJECT_DUPLICATES, &e);
    TQ_RETURN_IF(!root, TQ_ERR_FORMAT, "index %s is not valid JSON (line %d: %s): truncated or damaged", path, e.line,
                 e.text);
    tq_status rc = TQ_OK;
    tq_artifact* a = calloc(1, sizeof *a);
    TQ_GOTO_FAIL(!a, TQ_ERR_NOMEM, out, "out of memory");
    a->f = -1;
    a->f_shard = -1;
    snprintf(a->dir, sizeof a->dir, "%s", dir);
    const char* fmt = json_string_value(json_object_get(root, "format"));
    json_t* ver = json_object_get(root, "format_version");
    TQ_GOTO_FAIL(!fmt || strcmp(fmt, TQ_ARTIFACT_FORMAT) || !json_is_integer(ver), TQ_ERR_FORMAT, out,
                 "%s: not a tqpipe artifact index (format '%s')", path, fmt ? fmt : "?");
    TQ_GOTO_FAIL(json_integer_value(ver) != TQ_ARTIFACT_FORMAT_VERSION, TQ_ERR_FORMAT, out,
                 "%s: format version %lld, this tqpipe (%s) reads version %d; use a matching tqpipe", path,
                 (long long)json_integer_value(ver), TQ_VERSION, TQ_ARTIFACT_FORMAT_VERSION);
    json_t* shards = json_object_get(root, "shards");
    json_t* tens = json_object_get(root, "tensors");
    TQ_GOTO_FAIL(!json_is_array(shards) || json_array_size(shards) < 1 || !json_is_object(tens), TQ_ERR_FORMAT, out,
                 "%s: 'shards' or 'tensors' missing", path);
    a->nshards = (int)json_array_size(shards);
    a->shard_files = calloc((size_t)a->nshards, sizeof *a->shard_files);
    a->shard_bytes = calloc((size_t)a->nshards, sizeof *a->shard_bytes);
    a->shard_xxh3 = calloc((size_t)a->nshards, sizeof *a->shard_xxh3);
    a->shard_tensors = calloc((size_t)a->nshards, sizeof *a->shard_tensors);
    TQ_GOTO_FAIL(!a->shard_files || !a->shard_bytes || !a->shard_tensors || !a->shard_xxh3, TQ_ERR_NOMEM, out, "out of memory");
    for (int k = 0; k < a->nshards; k++) {
        const char* file = NULL;
        json_int_t bytes = 0, nt = 0;
        TQ_GOTO_FAIL(json_unpack_ex(json_array_get(shards, (size_t)k), &e, 0, "{s:s, s:I, s:I}", "file", &file, "bytes",
                                    &bytes, "tensors", &nt) != 0,
                     TQ_ERR_FORMAT, out, "%s: shard entry %d: %s", path, k, e.text);
        char expect[64];
        tq_artifact_shard_name(k, a->nshards, expect, sizeof expect);
        TQ_GOTO_FAIL(strcmp(file, expect), TQ_ERR_FORMAT, out, "%s: shard %d is named %s, expected %s", path, k + 1, file,
                     expect);
        a->shard_files[k] = strdup(file);
        a->shard_bytes[k] = (uint64_t)bytes;
        const char* fx = json_string_value(json_object_get(json_array_get(shards, (size_t)k), "xxh3"));
        TQ_GOTO_FAIL(fx && tq_parse_hex64(fx, &a->shard_xxh3[k]) < 0, TQ_ERR_FORMAT, out, "%s: shard %d: bad xxh3 '%s'",
                     path, k + 1, fx);
        a->shard_tensors[k] = nt;
    }
    a->n = (int64_t)json_object_size(tens);
    a->t = calloc(a->n ? (size_t)a->n : 1, sizeof *a->t);
    TQ_GOTO_FAIL(!a->t, TQ_ERR_NOMEM, out, "out of memory");
    const char* key;
    json_t* val;
    int64_t i = 0;
    json_object_foreach(tens, key, val)
    {
        TQ_CHECK_GOTO(tq_index_tensor(path, key, val, a->nshards, &a->t[i]), out);
        a->total_bytes += a->t[i].bytes;
        a->total_params += a->t[i].rows * a->t[i].cols;
        i++;
    }
    if (a->n > 1) qsort(a->t, (size_t)a->n, sizeof *a->t, tq_cmp_tensor);
    a->config_json = tq_json_strdup(root, "config_json");
    a->plan = tq_json_strdup(root, "plan");
    a->provenance = tq_json_strdup(root, "provenance");
    a->job = tq_json_strdup(root, "job");
    a->metrics = tq_json_strdup(root, "metrics");
    a->model_name = tq_json_strdup(root, "model_name");
    TQ_GOTO_FAIL(!a->config_json || !a->plan || !a->provenance || !a->job || !a->metrics || !a->model_name, TQ_ERR_NOMEM,
                 out, "out of memory");
out:
    json_decref(root);
    if (rc != TQ_OK) {
        tq_artifact_close(&a);
        return rc;
    }
    *out = a;
    return TQ_OK;
}

void tq_artifact_close(tq_artifact** pa)
{
    if (!pa || !*pa) return;
    tq_artifact* a = *pa;
    if (a->f >= 0) H5Fclose(a->f);
    for (int k = 0; k < a->nshards && a->shard_files; k++) free(a->shard_files[k]);
    free(a->shard_files);
    free(a->shard_bytes);
    free(a->shard_xxh3);
    free(a->shard_tensors);
    free(a->t);
    free(a->config_json);
    free(a->plan);
    free(a->provenance);
    free(a->job);
    free(a->metrics);
    free(a->model_name);
    free(a);
    *pa = NULL;
}

int64_t tq_artifact_count(const tq_artifact* a) { return a ? a->n : 0; }
const tq_artifact_tensor* tq_artifact_tensor_at(const tq_artifact* a, int64_t i)
{
    return a && i >= 0 && i < a->n ? &a->t[i] : NULL;
}
const tq_artifact_tensor* tq_artifact_find(const tq_artifact* a, const char* name)
{
    if (!a || !name || strlen(name) >= TQ_MAX_NAME) return NULL;
    tq_artifact_tensor key;
    strcpy(key.name, name);
    return bsearch(&key, a->t, (size_t)a->n, sizeof *a->t, tq_cmp_tensor);
}
int tq_artifact_shard_count(const tq_artifact* a) { return a ? a->nshards : 0; }
const char* tq_artifact_dir(const tq_artifact* a) { return a ? a->dir : ""; }
const char* tq_artifact_config_json(const tq_artifact* a) { return a ? a->config_json : ""; }
const char* tq_artifact_plan(const tq_artifact* a) { return a ? a->plan : ""; }
const char* tq_artifact_provenance(const tq_artifact* a) { return a ? a->provenance : ""; }
const char* tq_artifact_job(const tq_artifact* a) { return a ? a->job : ""; }
const char* tq_artifact_metrics(const tq_artifact* a) { return a ? a->metrics : ""; }
const char* tq_artifact_model_name(const tq_artifact* a) { return a ? a->model_name : ""; }
uint64_t tq_artifact_total_bytes(const tq_artifact* a) { return a ? a->total_bytes : 0; }
int64_t tq_artifact_total_params(const tq_artifact* a) { return a ? a->total_params : 0; }

/* Internal (artifact_verify.c): shard file info from the index. */
const char* tq_artifact_shard_file(const tq_artifact* a, int k, uint64_t* bytes, int64_t* ntensors, uint64_t* xxh3);
const char* tq_artifact_shard_file(const tq_artifact* a, int k, uint64_t* bytes, int64_t* ntensors, uint64_t* xxh3)
{
    if (!a || k < 0 || k >= a->nshards) return NULL;
    if (xxh3) *xxh3 = a->shard_xxh3[k];
    if (bytes) *bytes = a->shard_bytes[k];
    if (ntensors) *ntensors = a->shard_tensors[k];
    return a->shard_files[k];
}

static tq_status tq_artifact_shard_handle(tq_artifact* a, int k, hid_t* f, char* path, size_t cap)
{
    TQ_FORWARD(tq_join(path, cap, a->dir, a->shard_files[k]));
    if (a->f_shard == k && a->f >= 0) {
        *f = a->f;
        return TQ_OK;
    }
    if (a->f >= 0) H5Fclose(a->f);
    a->f = -1;
    a->f_shard = -1;
    TQ_RETURN_IF(!tq_file_exists(path), TQ_ERR_NOTFOUND, "shard %s is missing (listed in %s/%s)", path, a->dir,
                 TQ_ARTIFACT_INDEX_NAME);
    struct stat st;
    if (stat(path, &st) == 0 && (uint64_t)st.st_size != a->shard_bytes[k])
        return tq_fail(TQ_ERR_CORRUPT, "shard %s is %lld bytes, the index records %llu: %s", path, (long long)st.st_size,
                       (unsigned long long)a->shard_bytes[k],
                       (uint64_t)st.st_size < a->shard_bytes[k] ? "truncated" : "modified");
    hid_t h = tq_shard_open_ro(path);
    TQ_RETURN_IF(h < 0, TQ_ERR_CORRUPT, "cannot open shard %s as HDF5 (truncated or damaged)", path);
    tq_status rc = tq_shard_check_root(h, path, k, a->nshards);
    if (rc != TQ_OK) {
        H5Fclose(h);
        return rc;
    }
    a->f = h;
    a->f_shard = k;
    *f = h;
    return TQ_OK;
}

/* Whole-dataset read of a tqpipe zstd dataset (chunks of whole rows, filter 32015 only): raw chunks
 * are read with H5Dread_chunk and decompressed by TQ_ARTIFACT_THREADS threads. Returns 0 when done,
 * 1 when the dataset is not of that shape (the caller then uses H5Dread), -1 on a decompression error
 * (the caller's H5Dread then reports it). */
typedef struct {
    uint8_t** raw;
    size_t* raw_bytes;
    uint8_t* dst;
    size_t chunk_bytes, total, nchunks;
    size_t next;
    int failed;
    pthread_mutex_t mu;
} tq_dpool;

static void* tq_dworker(void* arg)
{
    tq_dpool* P = arg;
    ZSTD_DCtx* d = ZSTD_createDCtx();
    uint8_t* tmp = NULL;
    for (;;) {
        pthread_mutex_lock(&P->mu);
        size_t k = P->next++;
        pthread_mutex_unlock(&P->mu);
        if (k >= P->nchunks) break;
        size_t off = k * P->chunk_bytes;
        size_t want = P->total - off < P->chunk_bytes ? P->total - off : P->chunk_bytes;
        unsigned long long n = ZSTD_getFrameContentSize(P->raw[k], P->raw_bytes[k]);
        if (!d || n != P->chunk_bytes) {
            P->failed = 1;
            continue;
        }
        uint8_t* out = P->dst + off;
        if (want < P->chunk_bytes) { /* edge chunk: decompress whole, keep the rows inside the dataset */
            if (!tmp) tmp = malloc(P->chunk_bytes);
            if (!tmp) {
                P->failed = 1;
                continue;
            }
            out = tmp;
        }
        size_t r = ZSTD_decompressDCtx(d, out, P->chunk_bytes, P->raw[k], P->raw_bytes[k]);
        if (ZSTD_isError(r) || r != P->chunk_bytes) P->failed = 1;
        else if (out == tmp) memcpy(P->dst + off, tmp, want);
    }
    free(tmp);
    ZSTD_freeDCtx(d);
    return NULL;
}

static int tq_read_chunks_parallel(hid_t ds, uint8_t* dst, size_t total)
{
    hid_t dcpl = H5Dget_create_plist(ds), fs = H5Dget_space(ds), ft = H5Dget_type(ds);
    int result = 1;
    tq_dpool P;
    size_t nraw = 0; /* entries of P.raw to free */
    memset(&P, 0, sizeof P);
    pthread_mutex_init(&P.mu, NULL);
    hsize_t dims[2] = {0, 0}, cdims[2] = {0, 0};
    int nd = fs >= 0 ? H5Sget_simple_extent_ndims(fs) : -1;
    unsigned flags = 0, cd[4] = {0};
    size_t ncd = 4;
    size_t es = ft >= 0 ? H5Tget_size(ft) : 0;
    if (dcpl < 0 || nd < 1 || nd > 2 || es == 0 || H5Pget_layout(dcpl) != H5D_CHUNKED || H5Pget_nfilters(dcpl) != 1 ||
        H5Pget_filter2(dcpl, 0, &flags, &ncd, cd, 0, NULL, NULL) != TQ_H5Z_ZSTD ||
        H5Pget_chunk(dcpl, nd, cdims) != nd || H5Sget_simple_extent_dims(fs, dims, NULL) != nd ||
        (nd == 2 && cdims[1] != dims[1]) || cdims[0] == 0)
        goto out;
    P.chunk_bytes = (size_t)cdims[0] * (nd == 2 ? (size_t)dims[1] : 1) * es;
    P.total = total;
    P.nchunks = (size_t)((dims[0] + cdims[0] - 1) / cdims[0]);
    P.dst = dst;
    if ((size_t)dims[0] * (nd == 2 ? (size_t)dims[1] : 1) * es != total) goto out;
    const size_t nchunks = P.nchunks;
    int nt = tq_zthreads();
    const size_t batch = (size_t)nt * 4; /* bounded memory: at most this many raw chunks at a time */
    P.raw = calloc(batch, sizeof *P.raw);
    P.raw_bytes = calloc(batch, sizeof *P.raw_bytes);
    result = -1;
    if (!P.raw || !P.raw_bytes) goto out;
    nraw = batch;
    for (size_t c0 = 0; c0 < nchunks; c0 += batch) {
        size_t nb = nchunks - c0 < batch ? nchunks - c0 : batch;
        for (size_t k = 0; k < nb; k++) { /* raw reads stay on this thread (HDF5 is not thread-safe) */
            hsize_t off[2] = {(hsize_t)(c0 + k) * cdims[0], 0};
            hsize_t sz = 0;
            uint32_t mask = 0;
            free(P.raw[k]);
            P.raw[k] = NULL;
            if (H5Dget_chunk_storage_size(ds, off, &sz) < 0 || sz == 0) goto out;
            P.raw[k] = malloc((size_t)sz);
            P.raw_bytes[k] = (size_t)sz;
            if (!P.raw[k] || H5Dread_chunk(ds, H5P_DEFAULT, off, &mask, P.raw[k]) < 0 || mask != 0) goto out;
        }
        P.dst = dst + c0 * P.chunk_bytes;
        P.total = total - c0 * P.chunk_bytes;
        P.nchunks = nb;
        P.next = 0;
        int n = nt < (int)nb ? nt : (int)nb, started = 0;
        pthread_t th[16];
        for (int t = 1; t < n; t++)
            if (pthread_create(&th[t], NULL, tq_dworker, &P) == 0) started = t;
        tq_dworker(&P);
        for (int t = 1; t <= started; t++) pthread_join(th[t], NULL);
        if (P.failed) break;
    }
    result = P.failed ? -1 : 0;
out:
    for (size_t k = 0; P.raw && k < nraw; k++) free(P.raw[k]);
    free(P.raw);
    free(P.raw_bytes);
    pthread_mutex_destroy(&P.mu);
    if (ft >= 0) H5Tclose(ft);
    if (fs >= 0) H5Sclose(fs);
    if (dcpl >= 0) H5Pclose(dcpl);
    return result;
}

/* Read rows [row0, row0+nrows) (whole tensor when row0 == 0 && nrows == t->rows) of every part. */
static tq_status tq_artifact_read_impl(tq_artifact* a, const tq_artifact_tensor* t, int64_t row0, int64_t nrows,
                                       tq_qtensor* q, int whole)
{
    TQ_RETURN_IF(!a || !t || !q, TQ_ERR_ARG, "tq_artifact_read: bad arguments");
    TQ_RETURN_IF(row0 < 0 || nrows < 0 || row0 + nrows > t->rows, TQ_ERR_ARG, "tensor %s: rows [%lld, %lld) out of range (%lld rows)",
                 t->name, (long long)row0, (long long)(row0 + nrows), (long long)t->rows);
    memset(q, 0, sizeof *q);
    hid_t f = -1;
    char path[4096];
    TQ_FORWARD(tq_artifact_shard_handle(a, t->shard, &f, path, sizeof path));
    tq_status rc = TQ_OK;
    hid_t g = -1;
    tq_qtensor full;
    TQ_CHECK_GOTO(tq_qtensor_layout(&full, &t->codec, t->rows, t->cols, t->seed), out);
    /* like tq_qtensor_alloc, without zeroing: every byte is read from the file below */
    TQ_CHECK_GOTO(tq_qtensor_layout(q, &t->codec, nrows, t->cols, t->seed), out);
    for (int i = 0; i < q->nparts; i++) {
        q->part[i].data = malloc(q->part[i].bytes ? q->part[i].bytes : 1);
        TQ_GOTO_FAIL(!q->part[i].data, TQ_ERR_NOMEM, out, "out of memory reading tensor %s (%zu bytes)", t->name,
                     q->part[i].bytes);
    }
    char gp[TQ_MAX_NAME + 16];
    snprintf(gp, sizeof gp, "tensors/%s", t->name);
    g = H5Gopen2(f, gp, H5P_DEFAULT);
    TQ_GOTO_FAIL(g < 0, TQ_ERR_CORRUPT, out, "%s: tensor %s listed in the index is missing from the shard", path, t->name);
    if (whole) {
        char* sum = tq_attr_read_str(g, "checksum");
        uint64_t s = 0;
        int bad = tq_parse_hex64(sum, &s) < 0 || s != t->checksum;
        free(sum);
        TQ_GOTO_FAIL(bad, TQ_ERR_CORRUPT, out, "%s: tensor %s: checksum attribute differs from the index", path, t->name);
    }
    for (int i = 0; i < q->nparts; i++) {
        tq_qpart* p = &q->part[i];
        const tq_qpart* fp = &full.part[i];
        hid_t ds = H5Dopen2(g, p->name, H5P_DEFAULT);
        TQ_GOTO_FAIL(ds < 0, TQ_ERR_CORRUPT, out, "%s: tensor %s: part '%s' missing", path, t->name, p->name);
        hid_t ft = H5Dget_type(ds), fs = H5Dget_space(ds), ms = -1;
        int ok = ft >= 0 && fs >= 0;
        size_t es = ok ? H5Tget_size(ft) : 0;
        hssize_t npts = ok ? H5Sget_simple_extent_npoints(fs) : -1;
        ok = ok && es > 0 && npts >= 0 && (size_t)npts * es == fp->bytes &&
             (H5Tget_class(ft) == H5T_INTEGER || H5Tget_class(ft) == H5T_FLOAT) && H5Tget_order(ft) == H5T_ORDER_LE;
        if (!ok) {
            rc = tq_fail(TQ_ERR_CORRUPT, "%s: tensor %s: part '%s' has %lld x %zu bytes, codec %s expects %zu", path,
                         t->name, p->name, (long long)npts, es, t->codec.name, fp->bytes);
        } else if (p->bytes > 0) {
            herr_t e;
            if (!whole && fp->row_bytes > 0 && H5Sget_simple_extent_ndims(fs) == 2) {
                hsize_t start[2] = {(hsize_t)row0, 0}, cnt[2] = {(hsize_t)nrows, fp->row_bytes / es};
                ms = H5Screate_simple(2, cnt, NULL);
                e = ms < 0 || H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, cnt, NULL) < 0
                        ? -1
                        : H5Dread(ds, ft, ms, fs, H5P_DEFAULT, p->data);
            } else if (!whole && fp->row_bytes > 0) {
                hsize_t start[1] = {(hsize_t)row0 * fp->row_bytes / es}, cnt[1] = {(hsize_t)nrows * fp->row_bytes / es};
                ms = H5Screate_simple(1, cnt, NULL);
                e = ms < 0 || H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, cnt, NULL) < 0
                        ? -1
                        : H5Dread(ds, ft, ms, fs, H5P_DEFAULT, p->data);
            } else {
                e = tq_read_chunks_parallel(ds, p->data, p->bytes) == 0
                        ? 0
                        : H5Dread(ds, ft, H5S_ALL, H5S_ALL, H5P_DEFAULT, p->data);
            }
            if (e < 0)
                rc = tq_fail(TQ_ERR_CORRUPT, "%s: tensor %s: cannot read part '%s' (damaged or truncated file)", path,
                             t->name, p->name);
        }
        if (ms >= 0) H5Sclose(ms);
        if (fs >= 0) H5Sclose(fs);
        if (ft >= 0) H5Tclose(ft);
        H5Dclose(ds);
        if (rc != TQ_OK) goto out;
    }
    if (whole) {
        uint64_t s = tq_artifact_checksum(q);
        if (s != t->checksum) {
            char h1[17], h2[17];
            tq_xxh_hex(t->checksum, h1);
            tq_xxh_hex(s, h2);
            rc = tq_fail(TQ_ERR_CORRUPT, "%s: tensor %s: checksum mismatch (recorded %s, data hashes to %s): the shard is damaged",
                         path, t->name, h1, h2);
        }
    }
out:
    if (g >= 0) H5Gclose(g);
    if (rc != TQ_OK) tq_qtensor_release(q);
    return rc;
}

tq_status tq_artifact_read(tq_artifact* a, const tq_artifact_tensor* t, tq_qtensor* q)
{
    TQ_RETURN_IF(!t, TQ_ERR_ARG, "tq_artifact_read: no tensor");
    return tq_artifact_read_impl(a, t, 0, t->rows, q, 1);
}

tq_status tq_artifact_read_rows(tq_artifact* a, const tq_artifact_tensor* t, int64_t row0, int64_t nrows, tq_qtensor* q)
{
    TQ_RETURN_IF(!t, TQ_ERR_ARG, "tq_artifact_read_rows: no tensor");
    return tq_artifact_read_impl(a, t, row0, nrows, q, 0);
}

tq_status tq_artifact_dequantize(tq_artifact* a, const tq_artifact_tensor* t, float* out, size_t out_cap)
{
    TQ_RETURN_IF(!t || !out, TQ_ERR_ARG, "tq_artifact_dequantize: bad arguments");
    TQ_RETURN_IF((uint64_t)t->rows * (uint64_t)t->cols > out_cap, TQ_ERR_ARG,
                 "tensor %s: output buffer holds %zu values, need %lld", t->name, out_cap, (long long)(t->rows * t->cols));
    tq_qtensor q;
    TQ_FORWARD(tq_artifact_read(a, t, &q));
    tq_status rc = tq_dequantize_ref(&q, out);
    tq_qtensor_release(&q);
    return rc;
}
