/* verify_units.c — read + XXH3 + NaN/Inf count of work units (see verify_units.h).
 * The loop keeps one buffer of ~chunk_bytes: read (one pread per run of nearby units, or whole rows of
 * a large unit), hash, scan, next. A 1 MiB chunk stays in cache between the read copy and the two scans;
 * measured from page cache the loop costs ~1.3x the CPU of `cat` (XXH3 ~20 GB/s with AVX2 here, the
 * scan ~50 GB/s, the kernel copy ~7 GB/s): see tests/bench/inspect_bench.sh. */
#include "verify_units.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fileio.h" /* defines: tq_pread_full, tq_errno_status */
#include "hash.h" /* defines: tq_xxh_stream, tq_xxh64 */
#include "log.h"

// ------------------------------------------------------------------------------------------------
// NaN / Inf scan: branch-free counting loops that the compiler vectorizes.

/* Hot path: count elements whose exponent bits are all ones (NaN or Inf), one compare per element,
 * 16-bit lane counters (blocks of < 65536 elements cannot overflow them). The Inf/NaN split and the
 * first position are computed only when something was found (rare). target_clones builds an AVX2
 * version next to the baseline one and picks it at load time. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define TQ_SCAN_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define TQ_SCAN_CLONES
#endif

#pragma GCC push_options
#pragma GCC optimize("O3")
TQ_SCAN_CLONES static int64_t special16(const uint16_t* h, size_t n, uint16_t mask)
{
    int64_t total = 0;
    for (size_t i = 0; i < n;) {
        size_t m = n - i < 32768 ? n - i : 32768;
        uint16_t cnt = 0;
        const uint16_t* p = h + i;
#pragma GCC unroll 8
        for (size_t j = 0; j < m; j++) cnt = (uint16_t)(cnt + ((p[j] & mask) == mask));
        total += cnt;
        i += m;
    }
    return total;
}

TQ_SCAN_CLONES static int64_t special32(const uint32_t* u, size_t n)
{
    int64_t total = 0;
    for (size_t i = 0; i < n;) {
        size_t m = n - i < 32768 ? n - i : 32768;
        uint32_t cnt = 0;
        const uint32_t* p = u + i;
        for (size_t j = 0; j < m; j++) cnt += (p[j] & 0x7f800000u) == 0x7f800000u;
        total += cnt;
        i += m;
    }
    return total;
}
#pragma GCC pop_options

static void scan16(const uint16_t* h, size_t n, uint16_t expmask, uint16_t infval, int64_t* nspecial, int64_t* ninf)
{
    int64_t s = special16(h, n, expmask), f = 0;
    if (s)
        for (size_t i = 0; i < n; i++) f += (h[i] & 0x7fffu) == infval;
    *nspecial = s;
    *ninf = f;
}

static void scan32(const uint32_t* u, size_t n, int64_t* nspecial, int64_t* ninf)
{
    int64_t s = special32(u, n), f = 0;
    if (s)
        for (size_t i = 0; i < n; i++) f += (u[i] & 0x7fffffffu) == 0x7f800000u;
    *nspecial = s;
    *ninf = f;
}

static int64_t first_nonfinite(const void* data, tq_dtype t, size_t n)
{
    if (t == TQ_F32) {
        const uint32_t* u = data;
        for (size_t i = 0; i < n; i++)
            if ((u[i] & 0x7f800000u) == 0x7f800000u) return (int64_t)i;
    } else {
        const uint16_t* h = data;
        uint16_t m = t == TQ_BF16 ? 0x7f80u : 0x7c00u;
        for (size_t i = 0; i < n; i++)
            if ((h[i] & m) == m) return (int64_t)i;
    }
    return -1;
}

int64_t tq_count_nonfinite(const void* data, tq_dtype t, size_t n, int64_t* nan, int64_t* inf)
{
    int64_t s = 0, f = 0;
    if (t == TQ_F32) scan32(data, n, &s, &f);
    else if (t == TQ_BF16) scan16(data, n, 0x7f80u, 0x7f80u, &s, &f);
    else if (t == TQ_F16) scan16(data, n, 0x7c00u, 0x7c00u, &s, &f);
    *nan = s - f;
    *inf = f;
    return s ? first_nonfinite(data, t, n) : -1;
}

// ------------------------------------------------------------------------------------------------
// local verification

static tq_status verify_one(const tq_ckpt* c, const tq_unit* un, void** buf, size_t* cap, size_t chunk,
                            const tq_verify_opts* o, uint64_t* done, tq_unit_check* r)
{
    const tq_tensor_info* t = tq_ckpt_find(c, un->name);
    if (!t) return tq_fail(TQ_ERR_NOTFOUND, "tensor %s of the shard plan is not in checkpoint %s", un->name, tq_ckpt_dir(c));
    size_t es = tq_dtype_size(t->dtype);
    uint64_t row_bytes = (uint64_t)tq_tensor_cols(t) * es;
    if (row_bytes != un->row_bytes || un->row0 < 0 || un->row0 + un->nrows > tq_tensor_rows(t))
        return tq_fail(TQ_ERR_ARG, "unit %s rows [%lld, %lld) does not match the tensor in %s (%lld rows of %llu bytes)",
                       un->name, (long long)un->row0, (long long)(un->row0 + un->nrows), tq_ckpt_dir(c),
                       (long long)tq_tensor_rows(t), (unsigned long long)row_bytes);
    if (row_bytes == 0 || un->nrows == 0) {
        r->xxh = tq_xxh64("", 0, 0);
        return TQ_OK;
    }
    int64_t rows_per = (int64_t)(chunk / row_bytes);
    if (rows_per < 1) rows_per = 1;
    size_t need = (size_t)((rows_per < un->nrows ? rows_per : un->nrows) * (int64_t)row_bytes);
    if (need > *cap) { /* grows lazily up to the chunk (or one row when a row is larger) */
        void* nb = realloc(*buf, need);
        if (!nb) return tq_fail(TQ_ERR_NOMEM, "out of memory for a %zu-byte row of %s", need, un->name);
        *buf = nb;
        *cap = need;
    }
    tq_xxh_stream* hs = NULL;
    int one_chunk = un->nrows <= rows_per;
    if (!one_chunk) {
        hs = tq_xxh_create();
        if (!hs) return tq_fail(TQ_ERR_NOMEM, "out of memory (xxh state)");
    }
    tq_status rc = TQ_OK;
    for (int64_t row = 0; row < un->nrows; row += rows_per) {
        int64_t nr = un->nrows - row < rows_per ? un->nrows - row : rows_per;
        size_t nb = (size_t)nr * (size_t)row_bytes;
        rc = tq_ckpt_read_raw(c, t, un->row0 + row, nr, *buf, *cap);
        if (rc != TQ_OK) break;
        if (one_chunk) r->xxh = tq_xxh64(*buf, nb, 0);
        else tq_xxh_update(hs, *buf, nb);
        int64_t nan = 0, inf = 0;
        int64_t first = tq_count_nonfinite(*buf, t->dtype, nb / es, &nan, &inf);
        if (first >= 0 && r->first_bad < 0) r->first_bad = (int64_t)(row * (int64_t)(row_bytes / es)) + first;
        r->nan += nan;
        r->inf += inf;
        r->bytes += nb;
        *done += nb;
        if (o && o->progress) tq_progress_update(o->progress, o->progress_base + (double)*done);
    }
    if (!one_chunk) {
        if (rc == TQ_OK) r->xxh = tq_xxh_digest(hs);
        tq_xxh_free(&hs);
    }
    return rc;
}

static double thread_cpu(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return 0.0;
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* One requested unit, located in its file. */
typedef struct {
    int64_t pos;                /* index into out[] */
    const tq_tensor_info* t;
    uint64_t off, bytes;        /* absolute byte range in file t->file_idx */
} vu_entry;

static int cmp_entry(const void* a, const void* b)
{
    const vu_entry* x = a;
    const vu_entry* y = b;
    if (x->t->file_idx != y->t->file_idx) return x->t->file_idx < y->t->file_idx ? -1 : 1;
    if (x->off != y->off) return x->off < y->off ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/* Unit -> tensor for every unit: both lists are sorted by name, so one merge walk (cheaper than a
 * binary search with long common prefixes per unit); tq_ckpt_find when the orders disagree. */
static const tq_tensor_info* unit_tensor(const tq_ckpt* c, const tq_unit* un, int64_t* cursor)
{
    int64_t nt = tq_ckpt_count(c);
    while (*cursor < nt) {
        const tq_tensor_info* t = tq_ckpt_tensor(c, *cursor);
        int d = strcmp(t->name, un->name);
        if (d == 0) return t;
        if (d > 0) break;
        (*cursor)++;
    }
    return tq_ckpt_find(c, un->name);
}

static void account(tq_unit_check* r, const void* data, tq_dtype dt, size_t nb, uint64_t elem0)
{
    size_t es = tq_dtype_size(dt);
    int64_t nan = 0, inf = 0;
    int64_t first = tq_count_nonfinite(data, dt, nb / es, &nan, &inf);
    if (first >= 0 && r->first_bad < 0) r->first_bad = (int64_t)elem0 + first;
    r->nan += nan;
    r->inf += inf;
    r->bytes += nb;
}

/* Read a whole unit by itself through tq_ckpt_read_raw (the fallback that names the tensor when a
 * coalesced read failed). */
static tq_status verify_alone(const tq_ckpt* c, const tq_unit* un, void** buf, size_t* cap, size_t chunk,
                              uint64_t* done, const tq_verify_opts* o, tq_unit_check* r)
{
    r->bytes = 0;
    r->nan = r->inf = 0;
    r->first_bad = -1;
    uint64_t before = *done;
    tq_status rc = verify_one(c, un, buf, cap, chunk, o, done, r);
    if (rc != TQ_OK) *done = before + r->bytes;
    return rc;
}

tq_status tq_verify_units(const tq_ckpt* c, const tq_unitlist* u, const int64_t* idx, int64_t n,
                          const tq_verify_opts* opts, tq_unit_check* out, tq_verify_stats* st)
{
    if (!c || !u || n < 0 || (n > 0 && !out)) return tq_fail(TQ_ERR_ARG, "tq_verify_units: bad arguments");
    tq_verify_opts o = {0};
    if (opts) o = *opts;
    size_t chunk = o.chunk_bytes ? o.chunk_bytes : TQ_VERIFY_DEFAULT_CHUNK;
    chunk = chunk < 64 ? 64 : chunk & ~(size_t)63; /* whole elements in every piece */
    size_t cap = 0;
    void* buf = NULL; /* grows to what the largest read needs, at most ~chunk */
    vu_entry* e = malloc((size_t)(n ? n : 1) * sizeof *e);
    int nfiles = tq_ckpt_file_count(c);
    int* fds = malloc((size_t)(nfiles > 0 ? nfiles : 1) * sizeof *fds);
    if (!e || !fds) {
        free(e);
        free(fds);
        return tq_fail(TQ_ERR_NOMEM, "out of memory for %lld unit entries", (long long)n);
    }
    for (int f = 0; f < nfiles; f++) fds[f] = -1;
    tq_verify_stats s = {0};
    double t0 = tq_rt_time(), c0 = thread_cpu();
    uint64_t done = 0;
    tq_status first_err = TQ_OK;
    char first_msg[1024] = "";
#define VU_FAIL(r_, rc_)                                                                            \
    do {                                                                                           \
        (r_)->status = (int32_t)(rc_);                                                             \
        if (first_err == TQ_OK) {                                                                  \
            first_err = (rc_);                                                                     \
            snprintf(first_msg, sizeof first_msg, "%s", tq_last_error());                          \
        }                                                                                          \
        if (o.log_errors) TQ_LOG(TQ_LOG_WARN, "verify: %s", tq_last_error());                       \
    } while (0)

    /* 1. locate every unit; invalid ones fail right here */
    int64_t ne = 0, cursor = 0;
    for (int64_t i = 0; i < n; i++) {
        tq_unit_check* r = &out[i];
        memset(r, 0, sizeof *r);
        r->first_bad = -1;
        int64_t k = idx ? idx[i] : i;
        if (k < 0 || k >= u->n_units) {
            VU_FAIL(r, tq_fail(TQ_ERR_ARG, "unit index %lld out of range (%lld units)", (long long)k, (long long)u->n_units));
            continue;
        }
        const tq_unit* un = &u->units[k];
        if (idx && i > 0 && idx[i - 1] > k) cursor = 0; /* idx not ascending: restart the walk */
        const tq_tensor_info* t = unit_tensor(c, un, &cursor);
        uint64_t row_bytes = t ? (uint64_t)tq_tensor_cols(t) * tq_dtype_size(t->dtype) : 0;
        if (!t || row_bytes != un->row_bytes || un->row0 < 0 || un->nrows < 0 || un->row0 + un->nrows > tq_tensor_rows(t)) {
            tq_status rj = verify_alone(c, un, &buf, &cap, chunk, &done, &o, r); /* names the problem */
            if (rj == TQ_OK) rj = tq_fail(TQ_ERR_ARG, "unit %s does not match checkpoint %s", un->name, tq_ckpt_dir(c));
            VU_FAIL(r, rj);
            continue;
        }
        e[ne].pos = i;
        e[ne].t = t;
        e[ne].off = t->offset + (uint64_t)un->row0 * row_bytes;
        e[ne].bytes = (uint64_t)un->nrows * row_bytes;
        ne++;
    }
    /* 2. file order, then coalesced reads: a run of units close together in one file (gaps up to
     *    1/8 of the chunk, bytes of other ranks' units) is one pread of at most `chunk` bytes. */
    int sorted = 1; /* file-order callers pass sorted lists: skip the sort */
    for (int64_t i = 1; i < ne && sorted; i++) sorted = cmp_entry(&e[i - 1], &e[i]) <= 0;
    if (!sorted) qsort(e, (size_t)ne, sizeof *e, cmp_entry);
    const uint64_t max_gap = chunk / 8;
    for (int64_t a = 0; a < ne;) {
        const vu_entry* ea = &e[a];
        int f = ea->t->file_idx;
        int64_t b = a + 1;
        uint64_t run0 = ea->off, run1 = ea->off + ea->bytes;
        while (b < ne && e[b].t->file_idx == f && e[b].off >= run1 && e[b].off - run1 <= max_gap &&
               e[b].off + e[b].bytes - run0 <= chunk) {
            run1 = e[b].off + e[b].bytes;
            b++;
        }
        tq_status rc = TQ_OK;
        int64_t alone0 = a, alone1 = b; /* units to read one by one */
        if (b - a > 1) {
            /* several units close together: one pread on our own descriptor for the whole run */
            const char* path = tq_ckpt_file_path(c, f);
            if (fds[f] < 0) {
                fds[f] = open(path, O_RDONLY | O_CLOEXEC);
                if (fds[f] >= 0) (void)posix_fadvise(fds[f], 0, 0, POSIX_FADV_SEQUENTIAL);
            }
            size_t need = (size_t)(run1 - run0);
            if (fds[f] < 0) {
                rc = tq_errno_status(errno, "opening", path);
            } else if (need > cap) {
                void* nb = realloc(buf, need);
                if (nb) {
                    buf = nb;
                    cap = need;
                } else {
                    rc = tq_fail(TQ_ERR_NOMEM, "out of memory for a %zu-byte read buffer", need);
                }
            }
            if (rc == TQ_OK) rc = tq_pread_full(fds[f], buf, need, run0, path);
            for (int64_t j = a; rc == TQ_OK && j < b; j++) {
                tq_unit_check* r = &out[e[j].pos];
                const unsigned char* p = (const unsigned char*)buf + (e[j].off - run0);
                r->xxh = tq_xxh64(p, (size_t)e[j].bytes, 0);
                account(r, p, e[j].t->dtype, (size_t)e[j].bytes, 0);
                done += e[j].bytes;
            }
            /* on failure nothing was counted: redo them one by one for exact tensor names */
            if (rc == TQ_OK) alone1 = alone0;
        }
        /* one unit at a time through tq_ckpt_read_raw, in row chunks of ~chunk bytes */
        for (int64_t j = alone0; j < alone1; j++) {
            tq_unit_check* r = &out[e[j].pos];
            const tq_unit* un = &u->units[idx ? idx[e[j].pos] : e[j].pos];
            tq_status rj = verify_alone(c, un, &buf, &cap, chunk, &done, &o, r);
            if (rj != TQ_OK) VU_FAIL(r, rj);
        }
        if (o.progress) tq_progress_update(o.progress, o.progress_base + (double)done);
        a = b;
    }
#undef VU_FAIL
    for (int64_t i = 0; i < n; i++) {
        tq_unit_check* r = &out[i];
        if (r->status != TQ_OK) {
            r->xxh = 0;
            s.failed++;
        }
        s.units++;
        s.bytes += r->bytes;
        s.nan += r->nan;
        s.inf += r->inf;
    }
    s.seconds = tq_rt_time() - t0;
    s.cpu_seconds = thread_cpu() - c0;
    snprintf(s.first_error, sizeof s.first_error, "%s", first_msg);
    for (int f = 0; f < nfiles; f++)
        if (fds[f] >= 0) close(fds[f]);
    free(fds);
    free(e);
    free(buf);
    if (st) *st = s;
    if (first_err != TQ_OK) return tq_fail(first_err, "%s", first_msg);
    return TQ_OK;
}

uint64_t tq_verify_tensor_xxh(const tq_unit_check* checks, int64_t n)
{
    if (n == 1) return checks[0].xxh;
    tq_xxh_stream* s = tq_xxh_create();
    if (!s) return 0;
    for (int64_t i = 0; i < n; i++) {
        unsigned char le[8];
        for (int b = 0; b < 8; b++) le[b] = (unsigned char)(checks[i].xxh >> (8 * b));
        tq_xxh_update(s, le, 8);
    }
    uint64_t h = tq_xxh_digest(s);
    tq_xxh_free(&s);
    return h;
}

// ------------------------------------------------------------------------------------------------
// collective verification

/* What each rank sends to rank 0: its stats, then (unit index, result) pairs. */
typedef struct {
    int64_t unit;
    tq_unit_check r;
} unit_rec;

/* The collective part shared by both assignments: verify units u->units[mine[i]] (i < n) on this
 * rank, gather everything on rank 0, sum the totals everywhere. rc carries an earlier local error. */
static tq_status verify_collective(const tq_rt* rt, const tq_ckpt* c, const tq_unitlist* u, const int64_t* mine,
                                   int64_t n, tq_status rc, const tq_verify_opts* opts, tq_unit_check** all_out,
                                   tq_verify_stats** rank_stats_out, tq_verify_stats* total)
{
    *all_out = NULL;
    *rank_stats_out = NULL;
    memset(total, 0, sizeof *total);
    int rank = rt && rt->size > 0 ? rt->rank : 0;
    int size = rt && rt->size > 0 ? rt->size : 1;
    if (rc != TQ_OK) n = 0;
    size_t sendlen = sizeof(tq_verify_stats) + (size_t)n * sizeof(unit_rec);
    char* send = rc == TQ_OK ? calloc(1, sendlen) : NULL;
    tq_unit_check* res = rc == TQ_OK ? calloc((size_t)(n ? n : 1), sizeof *res) : NULL;
    if (rc == TQ_OK && (!send || !res)) rc = tq_fail(TQ_ERR_NOMEM, "out of memory for %lld unit results", (long long)n);
    tq_verify_stats st = {0};
    if (rc == TQ_OK) {
        /* Read errors are results, not failures of the collective: they go to rank 0 like the rest. */
        (void)tq_verify_units(c, u, mine, n, opts, res, &st);
        memcpy(send, &st, sizeof st);
        unit_rec* recs = (unit_rec*)(send + sizeof st);
        for (int64_t i = 0; i < n; i++) {
            recs[i].unit = mine[i];
            recs[i].r = res[i];
        }
    }
    free(res);
    rc = tq_rt_agree(rt, rc);
    if (rc != TQ_OK) {
        free(send);
        return rc;
    }

    void* gathered = NULL;
    size_t* counts = NULL;
    rc = tq_rt_gather_bytes(rt, send, sendlen, &gathered, &counts);
    free(send);
    rc = tq_rt_agree(rt, rc);
    if (rc != TQ_OK) {
        free(gathered);
        free(counts);
        return rc;
    }

    /* totals everywhere (so every rank can exit with the same code) */
    uint64_t sums[5] = {st.bytes, (uint64_t)st.units, (uint64_t)st.failed, (uint64_t)st.nan, (uint64_t)st.inf};
    double secs[2] = {st.seconds, st.cpu_seconds};
    tq_status mrc = tq_rt_allreduce_sum_u64(rt, sums, 5);
    if (mrc == TQ_OK) mrc = tq_rt_allreduce_max_f64(rt, secs, 2);
    if (mrc != TQ_OK) {
        free(gathered);
        free(counts);
        return mrc;
    }
    total->bytes = sums[0];
    total->units = (int64_t)sums[1];
    total->failed = (int64_t)sums[2];
    total->nan = (int64_t)sums[3];
    total->inf = (int64_t)sums[4];
    total->seconds = secs[0];
    total->cpu_seconds = secs[1];

    if (rank == 0) {
        int64_t nu = u->n_units;
        tq_unit_check* all = calloc((size_t)(nu ? nu : 1), sizeof *all);
        tq_verify_stats* rs = calloc((size_t)size, sizeof *rs);
        if (!all || !rs) {
            free(all);
            free(rs);
            free(gathered);
            free(counts);
            return tq_fail(TQ_ERR_NOMEM, "out of memory on rank 0 for %lld unit results", (long long)nu);
        }
        for (int64_t i = 0; i < nu; i++) {
            all[i].status = TQ_ERR_NOTFOUND; /* overwritten below: every unit belongs to one rank */
            all[i].first_bad = -1;
        }
        const char* p = gathered;
        for (int r = 0; r < size; r++) {
            memcpy(&rs[r], p, sizeof rs[r]);
            size_t nrec = (counts[r] - sizeof(tq_verify_stats)) / sizeof(unit_rec);
            const char* q = p + sizeof(tq_verify_stats);
            for (size_t i = 0; i < nrec; i++) {
                unit_rec rec;
                memcpy(&rec, q + i * sizeof rec, sizeof rec);
                if (rec.unit >= 0 && rec.unit < nu) all[rec.unit] = rec.r;
            }
            p += counts[r];
        }
        *all_out = all;
        *rank_stats_out = rs;
    }
    free(gathered);
    free(counts);
    return TQ_OK;
}

tq_status tq_verify_plan(const tq_rt* rt, const tq_ckpt* c, const tq_shardplan* plan, const tq_verify_opts* opts,
                         tq_unit_check** all_out, tq_verify_stats** rank_stats_out, tq_verify_stats* total)
{
    int rank = rt && rt->size > 0 ? rt->rank : 0;
    int size = rt && rt->size > 0 ? rt->size : 1;
    tq_status rc = TQ_OK;
    if (plan->n_ranks != size) rc = tq_fail(TQ_ERR_ARG, "shard plan has %d ranks but the job runs %d", plan->n_ranks, size);
    int64_t n = 0;
    const int64_t* mine = rc == TQ_OK ? tq_shardplan_rank_units(plan, rank, &n) : NULL;
    return verify_collective(rt, c, plan->units, mine, n, rc, opts, all_out, rank_stats_out, total);
}

typedef struct {
    int file;
    uint64_t off;
    int64_t unit;
} file_pos;

static int cmp_file_pos(const void* a, const void* b)
{
    const file_pos* x = a;
    const file_pos* y = b;
    if (x->file != y->file) return x->file < y->file ? -1 : 1;
    if (x->off != y->off) return x->off < y->off ? -1 : 1;
    return x->unit < y->unit ? -1 : x->unit > y->unit;
}

tq_status tq_verify_file_order(const tq_rt* rt, const tq_ckpt* c, const tq_unitlist* u, const tq_verify_opts* opts,
                               tq_unit_check** all_out, tq_verify_stats** rank_stats_out, tq_verify_stats* total)
{
    int rank = rt && rt->size > 0 ? rt->rank : 0;
    int size = rt && rt->size > 0 ? rt->size : 1;
    int64_t nu = u->n_units;
    file_pos* fp = malloc((size_t)(nu ? nu : 1) * sizeof *fp);
    int64_t* mine = malloc((size_t)(nu ? nu : 1) * sizeof *mine);
    tq_status rc = fp && mine ? TQ_OK : tq_fail(TQ_ERR_NOMEM, "out of memory for %lld units", (long long)nu);
    int64_t n = 0;
    if (rc == TQ_OK) {
        /* Every rank computes the same order and cut (no communication). Units whose tensor is not in
         * the checkpoint sort last and still get verified (and reported) by somebody. */
        uint64_t total_bytes = 0;
        int64_t cursor = 0;
        for (int64_t k = 0; k < nu; k++) {
            const tq_tensor_info* t = unit_tensor(c, &u->units[k], &cursor);
            fp[k].file = t ? t->file_idx : INT32_MAX;
            fp[k].off = t ? t->offset + (uint64_t)u->units[k].row0 * u->units[k].row_bytes : 0;
            fp[k].unit = k;
            total_bytes += u->units[k].bytes;
        }
        qsort(fp, (size_t)nu, sizeof *fp, cmp_file_pos);
        /* rank r takes the units whose first byte falls in [r, r+1) * total / size */
        uint64_t before = 0;
        for (int64_t i = 0; i < nu; i++) {
            int r = total_bytes ? (int)((__uint128_t)before * (unsigned)size / total_bytes) : (int)(i % size);
            if (r >= size) r = size - 1;
            if (r == rank) mine[n++] = fp[i].unit;
            before += u->units[fp[i].unit].bytes;
        }
    }
    free(fp);
    rc = verify_collective(rt, c, u, mine, n, rc, opts, all_out, rank_stats_out, total);
    free(mine);
    return rc;
}
