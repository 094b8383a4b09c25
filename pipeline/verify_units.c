/* verify_units.c — read + XXH3 + NaN/Inf count of work units (see verify_units.h).
 * The units are sorted by file offset and cut into reads of at most ~chunk bytes (a run of nearby
 * small units, or row pieces of a large one), each pread into a reused buffer. Every unit's bytes are
 * then checked in blocks of VU_BLOCK (L1-sized): XXH3 of the block (which pulls it from L2 into L1),
 * then the NaN/Inf test of the same block while it is there, so the data crosses the memory bus once
 * (in the kernel's copy). The NaN/Inf test is a max over the exponent|mantissa bits (two vector ops
 * per 32 bytes, explicit AVX2/SSE2 with a portable C fallback); the exact NaN/Inf counts and the first
 * position are computed only for data that holds one (rare). Optionally a reader thread does the
 * preads, up to VU_SLOTS reads ahead, so a rank with a second core checks while the kernel copies.
 * Measured from page cache against `cat`: tests/bench/inspect_bench.sh. */
#include "verify_units.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fileio.h" /* defines: tq_pread_full, tq_errno_status */
#include "hash.h"   /* defines: tq_xxh_stream, tq_xxh64 */
#include "log.h"

/* Check granule: hash + scan per block of this many bytes (a multiple of 4: whole elements); 16 KiB
 * stays in a 32 KiB L1 next to the hash state. Units up to this size are hashed in one call. */
#define VU_BLOCK ((size_t)16 << 10)

// ------------------------------------------------------------------------------------------------
// NaN / Inf scan

/* Hot path: is any element NaN or Inf? A float is NaN or Inf exactly when its exponent bits are all
 * ones, i.e. when its exponent|mantissa bits (sign cleared) are >= the exponent mask: 0x7f80 (bf16),
 * 0x7c00 (f16), 0x7f800000 (f32). So one AND and one unsigned max per vector, one compare per call.
 * x86-64: AVX2 when the CPU has it (checked once), else SSE2 (every x86-64); elsewhere portable C.
 * Loads are unaligned-safe (safetensors does not promise aligned tensors). */
static uint32_t max_bits_c(const unsigned char* p, size_t n, size_t es)
{
    uint32_t m = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t v;
        if (es == 2) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            v = h & 0x7fffu;
        } else {
            memcpy(&v, p + 4 * i, 4);
            v &= 0x7fffffffu;
        }
        m = v > m ? v : m;
    }
    return m;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

__attribute__((target("avx2"))) static uint32_t max_bits_avx2(const unsigned char* p, size_t n, size_t es)
{
    size_t nb = n * es, i = 0;
    __m256i m0 = _mm256_setzero_si256(), m1 = m0, m2 = m0, m3 = m0;
    if (es == 2) {
        const __m256i k = _mm256_set1_epi16(0x7fff);
        for (; i + 128 <= nb; i += 128) {
            m0 = _mm256_max_epu16(m0, _mm256_and_si256(k, _mm256_loadu_si256((const __m256i*)(p + i))));
            m1 = _mm256_max_epu16(m1, _mm256_and_si256(k, _mm256_loadu_si256((const __m256i*)(p + i + 32))));
            m2 = _mm256_max_epu16(m2, _mm256_and_si256(k, _mm256_loadu_si256((const __m256i*)(p + i + 64))));
            m3 = _mm256_max_epu16(m3, _mm256_and_si256(k, _mm256_loadu_si256((const __m256i*)(p + i + 96))));
        }
        for (; i + 32 <= nb; i += 32)
            m0 = _mm256_max_epu16(m0, _mm256_and_si256(k, _mm256_loadu_si256((const __m256i*)(p + i))));
        m0 = _mm256_max_epu16(_mm256_max_epu16(m0, m1), _mm256_max_epu16(m2, m3));
        __m128i x = _mm_max_epu16(_mm256_castsi256_si128(m0), _mm256_extracti128_si256(m0, 1));
        x = _mm_max_epu16(x, _mm_srli_si128(x, 8));
        x = _mm_max_epu16(x, _mm_srli_si128(x, 4));
        x = _mm_max_epu16(x, _mm_srli_si128(x, 2));
        uint32_t m = (uint32_t)_mm_extract_epi16(x, 0);
        uint32_t t = max_bits_c(p + i, (nb - i) / 2, 2);
        return t > m ? t : m;
    }
    const __m256i k = _mm256_set1_epi32(0x7fffffff);
    for (; i + 128 <= nb; i += 128) {
        m0 = _mm256_max_epu32(m0, _mm256_and_si256(k, _mm256_loadu_si256((const __m256i*)(p + i))));
        m1 = _mm256_max_epu32(m1, _mm256_and_si256(k, _mm256_loadu_si256((const __m256i*)(p + i + 32))));
        m2 = _mm256_max_epu32(m2, _mm256_and_si256(k, _mm256_loadu_si256((const __m256i*)(p + i + 64))));
        m3 = _mm256_max_epu32(m3, _mm256_and_si256(k, _mm256_loadu_si256((const __m256i*)(p + i + 96))));
    }
    for (; i + 32 <= nb; i += 32)
        m0 = _mm256_max_epu32(m0, _mm256_and_si256(k, _mm256_loadu_si256((const __m256i*)(p + i))));
    m0 = _mm256_max_epu32(_mm256_max_epu32(m0, m1), _mm256_max_epu32(m2, m3));
    __m128i x = _mm_max_epu32(_mm256_castsi256_si128(m0), _mm256_extracti128_si256(m0, 1));
    x = _mm_max_epu32(x, _mm_srli_si128(x, 8));
    x = _mm_max_epu32(x, _mm_srli_si128(x, 4));
    uint32_t m = (uint32_t)_mm_cvtsi128_si32(x);
    uint32_t t = max_bits_c(p + i, (nb - i) / 4, 4);
    return t > m ? t : m;
}

/* SSE2 (x86-64 baseline): 16-bit lanes hold 15-bit values, so the signed max is the unsigned max;
 * 32-bit lanes: compare 31-bit values signed and blend (SSE2 has no 32-bit max). */
static uint32_t max_bits_sse2(const unsigned char* p, size_t n, size_t es)
{
    size_t nb = n * es, i = 0;
    __m128i m0 = _mm_setzero_si128(), m1 = m0;
    if (es == 2) {
        const __m128i k = _mm_set1_epi16(0x7fff);
        for (; i + 32 <= nb; i += 32) {
            m0 = _mm_max_epi16(m0, _mm_and_si128(k, _mm_loadu_si128((const __m128i*)(p + i))));
            m1 = _mm_max_epi16(m1, _mm_and_si128(k, _mm_loadu_si128((const __m128i*)(p + i + 16))));
        }
        m0 = _mm_max_epi16(m0, m1);
        m0 = _mm_max_epi16(m0, _mm_srli_si128(m0, 8));
        m0 = _mm_max_epi16(m0, _mm_srli_si128(m0, 4));
        m0 = _mm_max_epi16(m0, _mm_srli_si128(m0, 2));
        uint32_t m = (uint32_t)_mm_extract_epi16(m0, 0);
        uint32_t t = max_bits_c(p + i, (nb - i) / 2, 2);
        return t > m ? t : m;
    }
    const __m128i k = _mm_set1_epi32(0x7fffffff);
    for (; i + 16 <= nb; i += 16) {
        __m128i v = _mm_and_si128(k, _mm_loadu_si128((const __m128i*)(p + i)));
        __m128i gt = _mm_cmpgt_epi32(v, m0);
        m0 = _mm_or_si128(_mm_and_si128(gt, v), _mm_andnot_si128(gt, m0));
    }
    uint32_t lanes[4], m = 0;
    _mm_storeu_si128((__m128i*)lanes, m0);
    for (int j = 0; j < 4; j++) m = lanes[j] > m ? lanes[j] : m;
    uint32_t t = max_bits_c(p + i, (nb - i) / 4, 4);
    return t > m ? t : m;
}

static uint32_t max_bits(const void* data, size_t n, size_t es)
{
    return __builtin_cpu_supports("avx2") ? max_bits_avx2(data, n, es) : max_bits_sse2(data, n, es);
}
#else
static uint32_t max_bits(const void* data, size_t n, size_t es) { return max_bits_c(data, n, es); }
#endif

/* Exact counts: branch-free loops that the compiler vectorizes (target_clones: an AVX2 version next
 * to the baseline one, picked at load time). Only run on data that holds a NaN/Inf (rare). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define TQ_SCAN_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define TQ_SCAN_CLONES
#endif

#pragma GCC push_options
#pragma GCC optimize("O3")
/* Exact count of elements whose exponent bits are all ones (NaN or Inf), 16-bit lane counters
 * (blocks of < 65536 elements cannot overflow them). */
TQ_SCAN_CLONES static int64_t special16(const uint16_t* h, size_t n, uint16_t mask)
{
    int64_t total = 0;
    for (size_t i = 0; i < n;) {
        size_t m = n - i < 32768 ? n - i : 32768;
        uint16_t cnt = 0;
        const uint16_t* p = h + i;
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

/* 1 when any of the n elements is NaN or Inf (every element looked at). */
static int any_nonfinite(const void* data, tq_dtype t, size_t n)
{
    if (t == TQ_F32) return max_bits(data, n, 4) >= 0x7f800000u;
    if (t == TQ_BF16) return max_bits(data, n, 2) >= 0x7f80u;
    if (t == TQ_F16) return max_bits(data, n, 2) >= 0x7c00u;
    return 0;
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

/* The exact counts (slow path, only for data that holds a NaN/Inf). */
static int64_t count_exact(const void* data, tq_dtype t, size_t n, int64_t* nan, int64_t* inf)
{
    int64_t s = 0, f = 0;
    if (t == TQ_F32) {
        const uint32_t* u = data;
        s = special32(u, n);
        for (size_t i = 0; s && i < n; i++) f += (u[i] & 0x7fffffffu) == 0x7f800000u;
    } else if (t == TQ_BF16 || t == TQ_F16) {
        const uint16_t* h = data;
        uint16_t m = t == TQ_BF16 ? 0x7f80u : 0x7c00u;
        s = special16(h, n, m);
        for (size_t i = 0; s && i < n; i++) f += (h[i] & 0x7fffu) == m;
    }
    *nan = s - f;
    *inf = f;
    return s ? first_nonfinite(data, t, n) : -1;
}

int64_t tq_count_nonfinite(const void* data, tq_dtype t, size_t n, int64_t* nan, int64_t* inf)
{
    if (!any_nonfinite(data, t, n)) {
        *nan = *inf = 0;
        return -1;
    }
    return count_exact(data, t, n, nan, inf);
}

// ------------------------------------------------------------------------------------------------
// checking bytes that are in memory

/* NaN/Inf of nb bytes whose first element is element elem0 of unit r. */
static void scan_into(tq_unit_check* r, const unsigned char* p, size_t nb, tq_dtype dt, uint64_t elem0)
{
    size_t es = tq_dtype_size(dt);
    if (!es || !any_nonfinite(p, dt, nb / es)) return;
    int64_t nan = 0, inf = 0;
    int64_t first = count_exact(p, dt, nb / es, &nan, &inf);
    if (first >= 0 && r->first_bad < 0) r->first_bad = (int64_t)elem0 + first;
    r->nan += nan;
    r->inf += inf;
}

/* Bytes [uoff, uoff + nb) of unit r in blocks of VU_BLOCK: feed each block to the running hash hs,
 * then scan it while it is in L1. */
static void check_piece(tq_unit_check* r, const unsigned char* p, size_t nb, tq_dtype dt, uint64_t uoff,
                        tq_xxh_stream* hs)
{
    size_t es = tq_dtype_size(dt);
    for (size_t o = 0; o < nb; o += VU_BLOCK) {
        size_t k = nb - o < VU_BLOCK ? nb - o : VU_BLOCK;
        tq_xxh_update(hs, p + o, k);
        scan_into(r, p + o, k, dt, es ? (uoff + o) / es : 0);
    }
    r->bytes += nb;
}

/* A whole unit in memory: one-shot XXH3 when it fits one block, else the block loop. */
static void check_unit(tq_unit_check* r, const unsigned char* p, size_t nb, tq_dtype dt, tq_xxh_stream* hs)
{
    if (nb <= VU_BLOCK) {
        r->xxh = tq_xxh64(p, nb, 0);
        scan_into(r, p, nb, dt, 0);
        r->bytes += nb;
        return;
    }
    tq_xxh_reset(hs);
    check_piece(r, p, nb, dt, 0, hs);
    r->xxh = tq_xxh_digest(hs);
}

// ------------------------------------------------------------------------------------------------
// local verification

static double thread_cpu(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return 0.0;
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A whole unit read by itself through tq_ckpt_read_raw in row chunks of ~chunk bytes: the fallback
 * after a failed read (its error names the tensor and file) and the path for units that do not match
 * their tensor (which it names). Resets r's counts first. */
static tq_status verify_alone(const tq_ckpt* c, const tq_unit* un, void** buf, size_t* cap, size_t chunk,
                              tq_xxh_stream* hs, uint64_t* done, tq_unit_check* r)
{
    r->bytes = 0;
    r->nan = r->inf = 0;
    r->first_bad = -1;
    r->xxh = 0;
    const tq_tensor_info* t = tq_ckpt_find(c, un->name);
    if (!t) return tq_fail(TQ_ERR_NOTFOUND, "tensor %s of the shard plan is not in checkpoint %s", un->name, tq_ckpt_dir(c));
    size_t es = tq_dtype_size(t->dtype);
    uint64_t row_bytes = (uint64_t)tq_tensor_cols(t) * es;
    if (row_bytes != un->row_bytes || un->row0 < 0 || un->nrows < 0 || un->row0 + un->nrows > tq_tensor_rows(t))
        return tq_fail(TQ_ERR_ARG, "unit %s rows [%lld, %lld) does not match the tensor in %s (%lld rows of %llu bytes)",
                       un->name, (long long)un->row0, (long long)(un->row0 + un->nrows), tq_ckpt_dir(c),
                       (long long)tq_tensor_rows(t), (unsigned long long)row_bytes);
    tq_xxh_reset(hs);
    if (row_bytes == 0 || un->nrows == 0) {
        r->xxh = tq_xxh_digest(hs); /* = XXH3-64 of nothing */
        return TQ_OK;
    }
    int64_t rows_per = (int64_t)(chunk / row_bytes);
    if (rows_per < 1) rows_per = 1;
    size_t need = (size_t)((rows_per < un->nrows ? rows_per : un->nrows) * (int64_t)row_bytes);
    if (need > *cap) { /* grows up to the chunk (or one row when a row is larger) */
        void* nb = realloc(*buf, need);
        if (!nb) return tq_fail(TQ_ERR_NOMEM, "out of memory for a %zu-byte row of %s", need, un->name);
        *buf = nb;
        *cap = need;
    }
    for (int64_t row = 0; row < un->nrows; row += rows_per) {
        int64_t nr = un->nrows - row < rows_per ? un->nrows - row : rows_per;
        size_t nb = (size_t)nr * (size_t)row_bytes;
        TQ_FORWARD(tq_ckpt_read_raw(c, t, un->row0 + row, nr, *buf, *cap));
        check_piece(r, *buf, nb, t->dtype, (uint64_t)row * row_bytes, hs);
        *done += nb;
    }
    r->xxh = tq_xxh_digest(hs);
    return TQ_OK;
}

/* One requested unit, located in its file. */
typedef struct {
    int64_t pos;                /* index into out[] */
    uint64_t off, bytes;        /* absolute byte range in file `file` */
    uint64_t row_bytes;
    int file;                   /* = t->file_idx (copied: the sort and the read plan touch no tensor) */
    tq_dtype dt;
    int redone;                 /* a read of it failed: verified by itself (verify_alone) */
} vu_entry;

/* One pread: bytes [off, off + len) of file `file`, either covering whole units e[a..b) (piece 0)
 * or bytes [uoff, uoff + len) of the single unit e[a] (piece 1: a unit larger than the chunk). */
typedef struct {
    uint64_t off, uoff;
    size_t len;
    int64_t a, b;
    int file, piece;
} vu_read;

static int cmp_entry(const void* a, const void* b)
{
    const vu_entry* x = a;
    const vu_entry* y = b;
    if (x->file != y->file) return x->file < y->file ? -1 : 1;
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

/* The reads for entries e[0..ne) (sorted): a run of units close together in one file (gaps up to 1/8
 * of the chunk: bytes of other ranks' units) is one read of at most `chunk` bytes; a unit larger than
 * that is read in pieces of whole rows (at least one row). *max_len: the largest read. */
static vu_read* plan_reads(const vu_entry* e, int64_t ne, size_t chunk, int64_t* nr_out, size_t* max_len)
{
    int64_t cap = ne + 16, nr = 0;
    vu_read* rd = malloc((size_t)cap * sizeof *rd);
    *max_len = 0;
    const uint64_t max_gap = chunk / 8;
    for (int64_t a = 0; rd && a < ne;) {
        const vu_entry* ea = &e[a];
        int f = ea->file;
        int64_t b = a + 1;
        uint64_t run0 = ea->off, run1 = ea->off + ea->bytes;
        while (b < ne && e[b].file == f && e[b].off >= run1 && e[b].off - run1 <= max_gap &&
               e[b].off + e[b].bytes - run0 <= chunk) {
            run1 = e[b].off + e[b].bytes;
            b++;
        }
        uint64_t row_bytes = ea->row_bytes;
        uint64_t step = run1 - run0; /* one read for the run */
        int piece = 0;
        if (b == a + 1 && ea->bytes > chunk) {
            uint64_t rows_per = chunk / row_bytes;
            step = (rows_per ? rows_per : 1) * row_bytes;
            piece = 1;
        }
        for (uint64_t o = run0; o < run1; o += step) {
            if (nr == cap) {
                cap = cap * 3 / 2 + 16;
                vu_read* g = realloc(rd, (size_t)cap * sizeof *rd);
                if (!g) {
                    free(rd);
                    return NULL;
                }
                rd = g;
            }
            vu_read* r = &rd[nr++];
            r->off = o;
            r->len = (size_t)(run1 - o < step ? run1 - o : step);
            r->uoff = o - run0;
            r->a = a;
            r->b = b;
            r->file = f;
            r->piece = piece;
            if (r->len > *max_len) *max_len = r->len;
        }
        a = b;
    }
    *nr_out = nr;
    return rd;
}

// ------------------------------------------------------------------------------------------------
// the reads: in the calling thread, or by a reader thread VU_SLOTS reads ahead

#define VU_SLOTS 3

typedef struct {
    const tq_ckpt* c;
    const vu_read* rd;
    int64_t nreads;
    int* fds;                       /* [files] our descriptors, opened on first use */
    unsigned char* slot[VU_SLOTS];  /* threaded: read k lands in slot[k % VU_SLOTS]; else slot[0] */
    tq_status st[VU_SLOTS];
    int threaded;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;              /* both directions: a slot filled, a slot freed */
    int64_t produced, consumed;     /* reads finished by the reader / released by the checker */
    int stop;
    double cpu;                     /* the reader thread's CPU seconds (read after the join) */
} vu_fetch;

static tq_status vu_read_one(vu_fetch* f, int64_t k, unsigned char* dst)
{
    const vu_read* q = &f->rd[k];
    const char* path = tq_ckpt_file_path(f->c, q->file);
    if (f->fds[q->file] < 0) {
        f->fds[q->file] = open(path, O_RDONLY | O_CLOEXEC);
        if (f->fds[q->file] < 0) return tq_errno_status(errno, "opening", path);
        (void)posix_fadvise(f->fds[q->file], 0, 0, POSIX_FADV_SEQUENTIAL);
    }
    return tq_pread_full(f->fds[q->file], dst, q->len, q->off, path);
}

static void* vu_reader_main(void* arg)
{
    vu_fetch* f = arg;
    double c0 = thread_cpu();
    for (int64_t k = 0; k < f->nreads; k++) {
        pthread_mutex_lock(&f->mu);
        while (!f->stop && k - f->consumed >= VU_SLOTS) pthread_cond_wait(&f->cv, &f->mu);
        int stop = f->stop;
        pthread_mutex_unlock(&f->mu);
        if (stop) break;
        tq_status rc = vu_read_one(f, k, f->slot[k % VU_SLOTS]);
        pthread_mutex_lock(&f->mu);
        f->st[k % VU_SLOTS] = rc;
        f->produced = k + 1;
        pthread_cond_broadcast(&f->cv);
        pthread_mutex_unlock(&f->mu);
    }
    f->cpu = thread_cpu() - c0;
    return NULL;
}

/* Buffers of max_len bytes; a reader thread when asked for and there is more than one read (falls
 * back to reading in the calling thread when the thread cannot start). */
static tq_status vu_fetch_start(vu_fetch* f, const tq_ckpt* c, const vu_read* rd, int64_t nreads, int* fds,
                                size_t max_len, int threaded)
{
    memset(f, 0, sizeof *f);
    f->c = c;
    f->rd = rd;
    f->nreads = nreads;
    f->fds = fds;
    int nslots = threaded && nreads > 1 ? VU_SLOTS : 1;
    for (int i = 0; i < nslots && max_len; i++)
        if (!(f->slot[i] = malloc(max_len))) return tq_fail(TQ_ERR_NOMEM, "out of memory for %d read buffers of %zu bytes", nslots, max_len);
    if (nslots > 1) {
        pthread_mutex_init(&f->mu, NULL);
        pthread_cond_init(&f->cv, NULL);
        f->threaded = pthread_create(&f->th, NULL, vu_reader_main, f) == 0;
        if (!f->threaded) {
            pthread_cond_destroy(&f->cv);
            pthread_mutex_destroy(&f->mu);
        }
    }
    return TQ_OK;
}

/* The bytes of read k (waits for the reader); *rc its read status. Reads are taken in order. */
static const unsigned char* vu_fetch_get(vu_fetch* f, int64_t k, tq_status* rc)
{
    if (!f->threaded) {
        *rc = vu_read_one(f, k, f->slot[0]);
        return f->slot[0];
    }
    pthread_mutex_lock(&f->mu);
    while (f->produced <= k) pthread_cond_wait(&f->cv, &f->mu);
    *rc = f->st[k % VU_SLOTS];
    pthread_mutex_unlock(&f->mu);
    return f->slot[k % VU_SLOTS];
}

/* Done with read k (taken or skipped): its slot is free again. */
static void vu_fetch_release(vu_fetch* f, int64_t k)
{
    if (!f->threaded) return;
    pthread_mutex_lock(&f->mu);
    while (f->produced <= k) pthread_cond_wait(&f->cv, &f->mu); /* a skipped read: let it land first */
    f->consumed = k + 1;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

/* Stops and joins the reader; returns its CPU seconds. */
static double vu_fetch_end(vu_fetch* f)
{
    double cpu = 0;
    if (f->threaded) {
        pthread_mutex_lock(&f->mu);
        f->stop = 1;
        pthread_cond_broadcast(&f->cv);
        pthread_mutex_unlock(&f->mu);
        pthread_join(f->th, NULL);
        pthread_cond_destroy(&f->cv);
        pthread_mutex_destroy(&f->mu);
        cpu = f->cpu;
        f->threaded = 0;
    }
    for (int i = 0; i < VU_SLOTS; i++) {
        free(f->slot[i]);
        f->slot[i] = NULL;
    }
    return cpu;
}

int tq_verify_reader_auto(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 0;
    long cpus = CPU_COUNT(&set), online = sysconf(_SC_NPROCESSORS_ONLN);
    /* a launcher gave this rank a slice of >= 2 CPUs (srun -c 2, mpirun --map-by slot:PE=2); an unbound
     * process shares the node with whoever else runs there, where the second thread measured slower */
    return cpus >= 2 && cpus < online;
}

tq_status tq_verify_units(const tq_ckpt* c, const tq_unitlist* u, const int64_t* idx, int64_t n,
                          const tq_verify_opts* opts, tq_unit_check* out, tq_verify_stats* st)
{
    if (!c || !u || n < 0 || (n > 0 && !out)) return tq_fail(TQ_ERR_ARG, "tq_verify_units: bad arguments");
    tq_verify_opts o = {0};
    if (opts) o = *opts;
    size_t chunk = o.chunk_bytes ? o.chunk_bytes : TQ_VERIFY_DEFAULT_CHUNK;
    chunk = chunk < 64 ? 64 : chunk & ~(size_t)63; /* whole elements in every piece */
    size_t alone_cap = 0;
    void* alone_buf = NULL; /* verify_alone's (only after a failure or for a mismatched unit) */
    vu_entry* e = malloc((size_t)(n ? n : 1) * sizeof *e);
    int nfiles = tq_ckpt_file_count(c);
    int* fds = malloc((size_t)(nfiles > 0 ? nfiles : 1) * sizeof *fds);
    tq_xxh_stream* hs = tq_xxh_create();
    if (!e || !fds || !hs) {
        free(e);
        free(fds);
        tq_xxh_free(&hs);
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

    /* 1. locate every unit; invalid ones fail right here, empty ones are done */
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
            tq_status rj = verify_alone(c, un, &alone_buf, &alone_cap, chunk, hs, &done, r); /* names the problem */
            if (rj == TQ_OK) rj = tq_fail(TQ_ERR_ARG, "unit %s does not match checkpoint %s", un->name, tq_ckpt_dir(c));
            VU_FAIL(r, rj);
            continue;
        }
        if (row_bytes == 0 || un->nrows == 0) {
            r->xxh = tq_xxh64("", 0, 0);
            continue;
        }
        e[ne].pos = i;
        e[ne].file = t->file_idx;
        e[ne].dt = t->dtype;
        e[ne].row_bytes = row_bytes;
        e[ne].off = t->offset + (uint64_t)un->row0 * row_bytes;
        e[ne].bytes = (uint64_t)un->nrows * row_bytes;
        e[ne].redone = 0;
        ne++;
    }
    /* 2. file order, cut into reads */
    int sorted = 1; /* file-order callers pass sorted lists: skip the sort */
    for (int64_t i = 1; i < ne && sorted; i++) sorted = cmp_entry(&e[i - 1], &e[i]) <= 0;
    if (!sorted) qsort(e, (size_t)ne, sizeof *e, cmp_entry);
    int64_t nreads = 0;
    size_t max_len = 0;
    vu_read* rd = plan_reads(e, ne, chunk, &nreads, &max_len);
    vu_fetch fetch;
    memset(&fetch, 0, sizeof fetch);
    tq_status frc = rd ? vu_fetch_start(&fetch, c, rd, nreads, fds, max_len, o.reader_thread)
                       : tq_fail(TQ_ERR_NOMEM, "out of memory for the read plan of %lld units", (long long)ne);
    if (frc != TQ_OK) {
        first_err = frc;
        snprintf(first_msg, sizeof first_msg, "%s", tq_last_error());
        for (int64_t j = 0; j < ne; j++) out[e[j].pos].status = (int32_t)first_err;
        nreads = 0;
    }

    /* 3. read, check, next */
    for (int64_t k = 0; k < nreads; k++) {
        const vu_read* q = &rd[k];
        vu_entry* ea = &e[q->a];
        if (q->piece && ea->redone) { /* an earlier piece failed: the unit was redone whole */
            vu_fetch_release(&fetch, k);
            continue;
        }
        tq_status rc = TQ_OK;
        const unsigned char* buf = vu_fetch_get(&fetch, k, &rc);
        if (rc == TQ_OK && q->piece) {
            tq_unit_check* r = &out[ea->pos];
            if (q->uoff == 0) tq_xxh_reset(hs);
            check_piece(r, buf, q->len, ea->dt, q->uoff, hs);
            if (q->uoff + q->len == ea->bytes) r->xxh = tq_xxh_digest(hs);
            done += q->len;
        } else if (rc == TQ_OK) {
            for (int64_t j = q->a; j < q->b; j++) {
                check_unit(&out[e[j].pos], buf + (e[j].off - q->off), (size_t)e[j].bytes,
                           e[j].dt, hs);
                done += e[j].bytes;
            }
        } else {
            /* nothing of this read was counted: redo its units one by one for exact tensor names */
            for (int64_t j = q->a; j < q->b; j++) {
                tq_unit_check* r = &out[e[j].pos];
                const tq_unit* un = &u->units[idx ? idx[e[j].pos] : e[j].pos];
                done -= r->bytes; /* pieces of this unit already counted */
                e[j].redone = 1;
                tq_status rj = verify_alone(c, un, &alone_buf, &alone_cap, chunk, hs, &done, r);
                if (rj != TQ_OK) VU_FAIL(r, rj);
            }
        }
        vu_fetch_release(&fetch, k);
        if (o.progress) tq_progress_update(o.progress, o.progress_base + (double)done);
    }
    double reader_cpu = vu_fetch_end(&fetch); /* also frees the buffers after a failed start */
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
    s.cpu_seconds = thread_cpu() - c0 + reader_cpu;
    snprintf(s.first_error, sizeof s.first_error, "%s", first_msg);
    for (int f = 0; f < nfiles; f++)
        if (fds[f] >= 0) close(fds[f]);
    free(fds);
    free(e);
    free(rd);
    free(alone_buf);
    tq_xxh_free(&hs);
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
