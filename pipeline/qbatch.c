/* qbatch.c — the quantize stage's batched engine (see qbatch.h for what and why).
 *
 * Flow per rank:
 *   plan    every unit resolved once (tensor, codec, layout, record size, file range), sorted by file
 *           offset, cut into batches; each batch laid out once: raw source bytes (runs of contiguous
 *           file ranges read with one pread each, every unit aligned to its element size), records
 *           back to back (exactly the bytes the segment gets), GPU parts 256-byte aligned.
 *   reader  thread: batch b+1's reads into the free one of two raw slots.
 *   compute header + zeroed parts of every record; GPU units: H2D, launches (check = 0), D2H; CPU
 *           units: small ones over T worker threads, big ones one by one with the codec's threads;
 *           GPU sync; GPU outputs copied into the records and checked for NaN/Inf (a unit with a
 *           non-finite input or output is redone on the CPU, which reports the error exactly as the
 *           per-unit path does); XXH3-64 of each record.
 *   commit  one pwrite of the batch's records + one journal commit (tq_journal_put_batch), on a
 *           writer thread: batch b is made durable while batch b + 1 computes (two record arenas);
 *           its units count as done (progress, fault hook) once that commit has returned. */
#include "qbatch.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "codec.h"      /* defines: tq_codec_parse, tq_qtensor_layout, tq_quantize_ref, tq_codec_set_threads */
#include "codec_gpu.h"  /* defines: tq_quantize_gpu_dev */
#include "dtype.h"      /* defines: tq_convert_to_f32, tq_dtype_size */
#include "fault.h"      /* defines: tq_fault_active, tq_fault_unit_done */
#include "fileio.h"     /* defines: tq_pread_full, tq_errno_status */
#include "hash.h"       /* defines: tq_xxh64 */
#include "log.h"
#include "qbatch_gpu.h" /* defines: tq_qgpu_* */
#include "unitstore.h"  /* defines: tq_unitrec_header */

#define QB_ALIGN 256
#define QB_SMALL_ELEMS ((int64_t)1 << 16) /* below this the codec runs single-threaded: pool it */

static size_t align_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

static uint64_t env_u64(const char* name, uint64_t def)
{
    const char* e = getenv(name);
    if (!e || !*e) return def;
    char* end = NULL;
    double v = strtod(e, &end);
    if (end && (*end == 'k' || *end == 'K')) v *= 1024.0;
    else if (end && (*end == 'm' || *end == 'M')) v *= 1048576.0;
    else if (end && (*end == 'g' || *end == 'G')) v *= 1073741824.0;
    return v < 0 ? def : (uint64_t)v;
}

int tq_qbatch_enabled(void)
{
    const char* e = getenv("TQ_QBATCH");
    return !(e && !strcmp(e, "0"));
}

void tq_qbatch_default_opts(const tq_rt* rt, int use_gpu, tq_qbatch_opts* o)
{
    memset(o, 0, sizeof *o);
    o->batch_bytes = env_u64("TQ_QBATCH_BYTES", (uint64_t)8 << 20);
    if (o->batch_bytes < 1) o->batch_bytes = 1;
    o->batch_units = (int64_t)env_u64("TQ_QBATCH_UNITS", 16384);
    if (tq_fault_active() && o->batch_units > 4) o->batch_units = 4;
    if (o->batch_units < 1) o->batch_units = 1;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1) cores = 1;
    int per = rt && rt->local_size > 0 ? (int)(cores / rt->local_size) : (int)cores;
    uint64_t t = env_u64("TQ_QBATCH_THREADS", env_u64("TQ_THREADS", (uint64_t)(per < 1 ? 1 : per)));
    o->threads = t < 1 ? 1 : t > 256 ? 256 : (int)t;
    o->use_gpu = use_gpu;
    /* A GPU of its own (ranks on the node <= GPUs it sees): every unit goes to the GPU (1.9-3x faster
     * than the split on the H100 with one rank). Ranks sharing a GPU: a unit goes to the GPU when the
     * CPU workers would take longer than a launch (~10 us of host time), about 1024 weights per worker
     * thread (as fast or faster than all-GPU with 4 ranks on one H100). */
    int ngpu = use_gpu ? tq_qgpu_count() : 0;
    int local = rt && rt->local_size > 0 ? rt->local_size : 1;
    o->gpu_own = ngpu > 0 && local <= ngpu;
    uint64_t def_min = o->gpu_own ? 0 : (uint64_t)1024 * (uint64_t)o->threads;
    o->gpu_min_elems = (int64_t)env_u64("TQ_QBATCH_GPU_MIN", def_min);
    o->reader = env_u64("TQ_QBATCH_READER", 1) != 0;
}

// ------------------------------------------------------------------------------------------------
// file order

typedef struct {
    int file;
    uint64_t off;
    int64_t idx;
} forder;

static int forder_cmp(const void* a, const void* b)
{
    const forder* x = a;
    const forder* y = b;
    if (x->file != y->file) return x->file < y->file ? -1 : 1;
    if (x->off != y->off) return x->off < y->off ? -1 : 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

static uint64_t codec_factor(const tq_plan_entry* pe)
{
    tq_codec cd;
    if (!pe || tq_codec_parse(pe->codec, pe->group, &cd) != TQ_OK) return 8;
    switch (cd.kind) {
    case TQ_CODEC_TQ: return 8;
    case TQ_CODEC_TQR: return 16;
    case TQ_CODEC_BIN1: return 4;
    case TQ_CODEC_TER:
    case TQ_CODEC_RTN: return 3;
    case TQ_CODEC_INT8: return 2;
    default: return 0;
    }
}

/* The plan entry of tensor t: the plan lists the checkpoint's tensors in the same (name) order, so t's
 * index finds it without a name search (tq_plan_find formats a key and bisects: 37,599 times per
 * stage); tq_plan_find otherwise. */
static const tq_plan_entry* plan_of(const tq_ckpt* c, const tq_tensor_info* t, const tq_plan_entry* plan, int64_t nplan,
                                    const char* name)
{
    if (!plan) return NULL;
    if (t && nplan > 0 && tq_ckpt_count(c) == nplan) {
        const tq_tensor_info* t0 = tq_ckpt_tensor(c, 0);
        if (t >= t0 && t < t0 + nplan) {
            const tq_plan_entry* pe = &plan[t - t0];
            if (!strcmp(pe->name, t->name)) return pe;
        }
    }
    return tq_plan_find(plan, nplan, name);
}

tq_status tq_qbatch_file_order(const tq_ckpt* c, const tq_unitlist* u, const tq_plan_entry* plan, int64_t nplan,
                               int64_t** order, uint64_t** cost)
{
    *order = NULL;
    if (cost) {
        *cost = malloc((size_t)(u->n_units + 1) * sizeof **cost);
        if (!*cost) return tq_fail(TQ_ERR_NOMEM, "out of memory weighing %" PRId64 " units", u->n_units);
        for (int64_t i = 0; i < u->n_units; i++) {
            const tq_unit* un = &u->units[i];
            const tq_tensor_info* t = tq_ckpt_find(c, un->name);
            uint64_t numel = t ? (uint64_t)un->nrows * (uint64_t)tq_tensor_cols(t) : 0;
            (*cost)[i] = numel * codec_factor(plan_of(c, t, plan, nplan, un->name)) + un->bytes + 1;
        }
    }
    forder* f = malloc((size_t)(u->n_units + 1) * sizeof *f);
    int64_t* o = malloc((size_t)(u->n_units + 1) * sizeof *o);
    if (!f || !o) {
        free(f);
        free(o);
        if (cost) {
            free(*cost);
            *cost = NULL;
        }
        return tq_fail(TQ_ERR_NOMEM, "out of memory ordering %" PRId64 " units", u->n_units);
    }
    for (int64_t i = 0; i < u->n_units; i++) {
        const tq_unit* un = &u->units[i];
        const tq_tensor_info* t = tq_ckpt_find(c, un->name);
        f[i].file = t ? t->file_idx : 1 << 30;
        f[i].off = t ? t->offset + (uint64_t)un->row0 * un->row_bytes : 0;
        f[i].idx = i;
    }
    qsort(f, (size_t)u->n_units, sizeof *f, forder_cmp);
    for (int64_t i = 0; i < u->n_units; i++) o[i] = f[i].idx;
    free(f);
    *order = o;
    return TQ_OK;
}

// ------------------------------------------------------------------------------------------------
// plan: units and batches

typedef struct {
    int64_t k;                 /* unit index in the stage's unit list */
    const tq_unit* un;
    const tq_tensor_info* t;
    const char* key;
    tq_codec cd;
    uint64_t seed;
    int fidx;
    uint64_t foff;             /* source byte range in file fidx */
    size_t nraw, esize;
    int64_t numel;
    size_t hdr_len, rec_len;   /* record = header + parts */
    size_t dev_len;            /* GPU: parts, each 256-aligned */
    int on_gpu;
    /* within its batch */
    size_t raw_off, rec_off, dev_off;
    uint64_t xxh;
    tq_status rc;
    char* msg;                 /* error message of a failed unit (malloc'd) */
} qunit;

typedef struct {
    int64_t first, n;          /* into the sorted qunit array */
    size_t raw_len, rec_len, dev_len;
    uint64_t src_bytes;
    int64_t n_gpu;
} qbatch;

static int qunit_cmp(const void* a, const void* b)
{
    const qunit* x = a;
    const qunit* y = b;
    if (x->fidx != y->fidx) return x->fidx < y->fidx ? -1 : 1;
    if (x->foff != y->foff) return x->foff < y->foff ? -1 : 1;
    return (x->k > y->k) - (x->k < y->k);
}

/* q's layout with part data pointing at base (parts back to back, or each aligned when align > 1) */
static void point_parts(tq_qtensor* q, uint8_t* base, size_t align)
{
    size_t o = 0;
    for (int i = 0; i < q->nparts; i++) {
        q->part[i].data = base ? base + o : NULL;
        o += align > 1 ? align_up(q->part[i].bytes, align) : q->part[i].bytes;
    }
}

// ------------------------------------------------------------------------------------------------
// the engine's state

typedef struct {
    int64_t batch;             /* batch held, -1 = empty */
    int full;
    uint8_t* raw;
    tq_status rc;
    char msg[1024];
    double t_read;
} qslot;

typedef struct {
    const tq_rt* rt;
    const tq_ckpt* c;
    const tq_qbatch_opts* o;
    qunit* q;
    int64_t nq;
    qbatch* b;
    int64_t nb;
    size_t raw_max, rec_max, dev_max;
    int64_t f32_max;           /* elements of the largest big CPU unit */
    int64_t small_max;         /* elements of the largest small CPU unit */
    int* fds;
    int nfiles;
    /* buffers */
    qslot slot[2];
    int pinned;
    uint8_t* rec;              /* the record arena of the batch being computed (one of recbuf) */
    uint8_t* recbuf[2];        /* double buffered: batch b + 1 computes while batch b is written */
    uint8_t* hout;             /* pinned copy of the GPU output arena */
    float* f32;
    tq_qgpu* gpu;
    /* reader thread */
    pthread_t reader;
    int reader_on;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    double t_wait;
    /* worker pool of the current batch */
    const qbatch* cur;
    const uint8_t* cur_raw;
    int64_t* small;
    int64_t nsmall;
    atomic_llong next;
} qengine;

static tq_status plan_units(qengine* E, const tq_unitlist* u, char* const* keys, const int64_t* mine, int64_t nmine,
                            const tq_plan_entry* plan, int64_t nplan, uint64_t job_seed)
{
    const tq_qbatch_opts* o = E->o;
    E->q = calloc((size_t)nmine + 1, sizeof *E->q);
    if (!E->q) return tq_fail(TQ_ERR_NOMEM, "out of memory planning %" PRId64 " units", nmine);
    E->nq = nmine;
    for (int64_t i = 0; i < nmine; i++) {
        qunit* x = &E->q[i];
        x->k = mine[i];
        x->un = &u->units[x->k];
        x->key = keys[x->k];
        x->t = tq_ckpt_find(E->c, x->un->name);
        const tq_plan_entry* pe = plan_of(E->c, x->t, plan, nplan, x->un->name);
        if (!x->t || !pe) return tq_fail(TQ_ERR_NOTFOUND, "unit %s: tensor not in the checkpoint / plan", x->key);
        TQ_FORWARD(tq_codec_parse(pe->codec, pe->group, &x->cd));
        int64_t cols = tq_tensor_cols(x->t);
        x->seed = tq_tensor_seed(job_seed, x->un->name);
        tq_qtensor ql;
        TQ_FORWARD(tq_qtensor_layout(&ql, &x->cd, x->un->nrows, cols, x->seed));
        TQ_FORWARD(tq_unitrec_header(&ql, x->un->row0, x->un->tensor_rows, NULL, 0, &x->hdr_len));
        x->rec_len = x->hdr_len;
        x->dev_len = 0;
        for (int p = 0; p < ql.nparts; p++) {
            x->rec_len += ql.part[p].bytes;
            x->dev_len += align_up(ql.part[p].bytes, QB_ALIGN);
        }
        x->esize = tq_dtype_size(x->t->dtype);
        if (x->esize == 0) return tq_fail(TQ_ERR_FORMAT, "unit %s: unsupported source dtype", x->key);
        x->numel = x->un->nrows * cols;
        x->nraw = (size_t)x->numel * x->esize;
        x->fidx = x->t->file_idx;
        x->foff = x->t->offset + (uint64_t)x->un->row0 * (uint64_t)cols * x->esize;
        x->on_gpu = o->use_gpu && x->numel > 0 && x->numel >= o->gpu_min_elems &&
                    (x->t->dtype == TQ_BF16 || x->t->dtype == TQ_F32);
    }
    qsort(E->q, (size_t)nmine, sizeof *E->q, qunit_cmp);

    /* batches */
    E->b = calloc((size_t)nmine + 1, sizeof *E->b);
    if (!E->b) return tq_fail(TQ_ERR_NOMEM, "out of memory planning batches");
    E->nb = 0;
    qbatch* cur = NULL;
    for (int64_t i = 0; i < nmine; i++) {
        qunit* x = &E->q[i];
        if (!cur || cur->n >= o->batch_units || (cur->src_bytes > 0 && cur->src_bytes + x->nraw > o->batch_bytes)) {
            cur = &E->b[E->nb++];
            cur->first = i;
        }
        cur->n++;
        cur->src_bytes += x->nraw;
    }
    /* layout of each batch */
    for (int64_t bi = 0; bi < E->nb; bi++) {
        qbatch* B = &E->b[bi];
        size_t pos = 0, rec = 0, dev = 0;
        const qunit* prev = NULL;
        for (int64_t i = B->first; i < B->first + B->n; i++) {
            qunit* x = &E->q[i];
            int cont = prev && prev->fidx == x->fidx && prev->foff + prev->nraw == x->foff &&
                       (prev->raw_off + prev->nraw) % x->esize == 0;
            if (cont) {
                x->raw_off = prev->raw_off + prev->nraw;
            } else {
                size_t start = align_up(pos, QB_ALIGN);
                /* keep the file's alignment modulo 256 when it suits the element size (so a run of
                 * units needs no copy), else start the unit on a 256-byte boundary */
                size_t shift = (size_t)(x->foff % QB_ALIGN);
                x->raw_off = start + (shift % x->esize == 0 ? shift : 0);
            }
            pos = x->raw_off + x->nraw;
            x->rec_off = rec;
            rec += x->rec_len;
            if (x->on_gpu) {
                x->dev_off = dev;
                dev += x->dev_len;
                B->n_gpu++;
            }
            /* fp32 staging: big CPU units one at a time, small ones per worker; a GPU unit may still
             * be redone on the CPU (non-finite values, unsupported shape), so it counts too */
            if (x->numel >= QB_SMALL_ELEMS || x->on_gpu) {
                if (x->numel > E->f32_max) E->f32_max = x->numel;
            }
            if (x->numel < QB_SMALL_ELEMS && x->numel > E->small_max) E->small_max = x->numel;
            prev = x;
        }
        B->raw_len = pos;
        B->rec_len = rec;
        B->dev_len = dev;
        if (pos > E->raw_max) E->raw_max = pos;
        if (rec > E->rec_max) E->rec_max = rec;
        if (dev > E->dev_max) E->dev_max = dev;
    }
    return TQ_OK;
}

// ------------------------------------------------------------------------------------------------
// reads

static tq_status read_batch(qengine* E, const qbatch* B, uint8_t* raw, double* secs)
{
    double t0 = tq_rt_time();
    int64_t i = B->first, end = B->first + B->n;
    while (i < end) {
        const qunit* x = &E->q[i];
        int64_t k = i + 1;
        size_t n = x->nraw;
        while (k < end && E->q[k].fidx == x->fidx && E->q[k].foff == x->foff + n && E->q[k].raw_off == x->raw_off + n) {
            n += E->q[k].nraw;
            k++;
        }
        if (n > 0) {
            int f = x->fidx;
            if (f < 0 || f >= E->nfiles) return tq_fail(TQ_ERR_ARG, "unit %s: bad file index %d", x->key, f);
            const char* path = tq_ckpt_file_path(E->c, f);
            if (E->fds[f] < 0) {
                E->fds[f] = open(path, O_RDONLY | O_CLOEXEC);
                if (E->fds[f] < 0) return tq_errno_status(errno, "open", path);
#ifdef POSIX_FADV_SEQUENTIAL
                posix_fadvise(E->fds[f], 0, 0, POSIX_FADV_SEQUENTIAL);
#endif
            }
            tq_status rc = tq_pread_full(E->fds[f], raw + x->raw_off, n, x->foff, path);
            if (rc != TQ_OK) {
                char prev[1024];
                snprintf(prev, sizeof prev, "%s", tq_last_error());
                return tq_fail(rc, "reading unit %s: %s", x->key, prev);
            }
        }
        i = k;
    }
    *secs += tq_rt_time() - t0;
    return TQ_OK;
}

static void* reader_main(void* arg)
{
    qengine* E = arg;
    for (int64_t b = 0; b < E->nb; b++) {
        qslot* s = &E->slot[b % 2];
        pthread_mutex_lock(&E->mu);
        while (s->full && !E->stop) pthread_cond_wait(&E->cv, &E->mu);
        int stop = E->stop;
        pthread_mutex_unlock(&E->mu);
        if (stop) break;
        double t = 0;
        tq_status rc = read_batch(E, &E->b[b], s->raw, &t);
        pthread_mutex_lock(&E->mu);
        s->rc = rc;
        if (rc != TQ_OK) snprintf(s->msg, sizeof s->msg, "%s", tq_last_error());
        s->t_read += t;
        s->batch = b;
        s->full = 1;
        pthread_cond_broadcast(&E->cv);
        pthread_mutex_unlock(&E->mu);
        if (rc != TQ_OK) break;
    }
    return NULL;
}

/* the raw slot holding batch b (reads it here when there is no reader thread) */
static tq_status acquire_batch(qengine* E, int64_t b, qslot** out)
{
    qslot* s = &E->slot[b % 2];
    if (!E->reader_on) {
        s->rc = read_batch(E, &E->b[b], s->raw, &s->t_read);
        s->batch = b;
        *out = s;
        return s->rc;
    }
    double t0 = tq_rt_time();
    pthread_mutex_lock(&E->mu);
    while (!(s->full && s->batch == b)) pthread_cond_wait(&E->cv, &E->mu);
    tq_status rc = s->rc;
    pthread_mutex_unlock(&E->mu);
    E->t_wait += tq_rt_time() - t0;
    *out = s;
    if (rc != TQ_OK) return tq_fail(rc, "%s", s->msg);
    return TQ_OK;
}

static void release_slot(qengine* E, qslot* s)
{
    if (!E->reader_on) return;
    pthread_mutex_lock(&E->mu);
    s->full = 0;
    pthread_cond_broadcast(&E->cv);
    pthread_mutex_unlock(&E->mu);
}

// ------------------------------------------------------------------------------------------------
// compute

static void unit_fail(qunit* x, tq_status rc)
{
    x->rc = rc;
    free(x->msg);
    x->msg = strdup(tq_last_error());
}

/* The unit's record header + zeroed parts in the arena; q gets the layout with parts in the record. */
static tq_status record_prepare(qengine* E, qunit* x, tq_qtensor* q)
{
    TQ_FORWARD(tq_qtensor_layout(q, &x->cd, x->un->nrows, tq_tensor_cols(x->t), x->seed));
    uint8_t* r = E->rec + x->rec_off;
    size_t hl = 0;
    TQ_FORWARD(tq_unitrec_header(q, x->un->row0, x->un->tensor_rows, r, x->rec_len, &hl));
    if (hl != x->hdr_len) return tq_fail(TQ_ERR_ARG, "unit %s: record header changed size", x->key);
    memset(r + hl, 0, x->rec_len - hl);
    point_parts(q, r + hl, 1);
    return TQ_OK;
}

/* CPU quantization of one unit into its record (scratch holds numel floats). */
static void cpu_unit(qengine* E, qunit* x, const uint8_t* raw, float* scratch)
{
    tq_qtensor q;
    tq_status rc = record_prepare(E, x, &q);
    if (rc == TQ_OK) {
        tq_convert_to_f32(scratch, raw + x->raw_off, x->t->dtype, (size_t)x->numel);
        rc = tq_quantize_ref(scratch, &q, x->key);
    }
    if (rc != TQ_OK) {
        unit_fail(x, rc);
        return;
    }
    x->xxh = tq_xxh64(E->rec + x->rec_off, x->rec_len, 0);
    x->rc = TQ_OK;
}

typedef struct {
    qengine* E;
    float* scratch;
} worker_arg;

static void* worker_main(void* arg)
{
    worker_arg* W = arg;
    qengine* E = W->E;
    for (;;) {
        long long i = atomic_fetch_add(&E->next, 1);
        if (i >= E->nsmall) break;
        cpu_unit(E, &E->q[E->small[i]], E->cur_raw, W->scratch);
    }
    return NULL;
}

/* any non-finite value among n elements of dtype t */
static int raw_nonfinite(const uint8_t* p, tq_dtype t, int64_t n)
{
    if (t == TQ_BF16 || t == TQ_F16) {
        const uint16_t m = t == TQ_BF16 ? 0x7f80u : 0x7c00u;
        const uint16_t* s = (const uint16_t*)p;
        int bad = 0;
        for (int64_t i = 0; i < n; i++) bad |= (s[i] & m) == m;
        return bad;
    }
    const uint32_t* s = (const uint32_t*)p;
    int bad = 0;
    for (int64_t i = 0; i < n; i++) bad |= (s[i] & 0x7f800000u) == 0x7f800000u;
    return bad;
}

/* a GPU unit's packed parts hold an fp16/f32 Inf/NaN where the reference would have failed */
static int parts_nonfinite(const tq_qtensor* q)
{
    for (int i = 0; i < q->nparts; i++) {
        const tq_qpart* p = &q->part[i];
        if (!p->data || p->bytes == 0) continue;
        if (p->elem_size == 2) {
            if (raw_nonfinite(p->data, q->codec.kind == TQ_CODEC_BF16 ? TQ_BF16 : TQ_F16, (int64_t)(p->bytes / 2))) return 1;
        } else if (p->elem_size == 4) {
            if (raw_nonfinite(p->data, TQ_F32, (int64_t)(p->bytes / 4))) return 1;
        }
    }
    return 0;
}

static tq_status compute_batch(qengine* E, const qbatch* B, const uint8_t* raw, tq_qbatch_stats* st)
{
    const int64_t end = B->first + B->n;
    int64_t n_gpu = 0;
    double t0 = tq_rt_time();
    /* 1. GPU units: one H2D, launches, one D2H (async) */
    if (B->n_gpu > 0) {
        TQ_FORWARD(tq_qgpu_h2d(E->gpu, raw, B->raw_len));
        TQ_FORWARD(tq_qgpu_zero_out(E->gpu, B->dev_len));
        uint8_t* din = tq_qgpu_din(E->gpu);
        uint8_t* dout = tq_qgpu_dout(E->gpu);
        for (int64_t i = B->first; i < end; i++) {
            qunit* x = &E->q[i];
            x->rc = TQ_OK;
            if (!x->on_gpu) continue;
            if (raw_nonfinite(raw + x->raw_off, x->t->dtype, x->numel)) {
                x->on_gpu = 0; /* the CPU reports it, naming row and column */
                st->gpu_fallback++;
                continue;
            }
            tq_qtensor q;
            tq_status rc = record_prepare(E, x, &q);
            if (rc != TQ_OK) return rc;
            /* host copies of per-tensor parts (codebooks) go straight into the record */
            uint8_t* dparts[TQ_QT_MAX_PARTS] = {0};
            size_t o = 0;
            for (int p = 0; p < q.nparts; p++) {
                dparts[p] = dout + x->dev_off + o;
                o += align_up(q.part[p].bytes, QB_ALIGN);
                if (q.part[p].row_bytes) q.part[p].data = NULL;
            }
            rc = tq_quantize_gpu_dev(tq_qgpu_stream(E->gpu), din + x->raw_off, x->t->dtype, &q, dparts, x->key, 0);
            if (rc == TQ_ERR_UNSUPPORTED) {
                x->on_gpu = 0; /* e.g. rows too wide for the kernels' shared memory */
                st->gpu_fallback++;
                continue;
            }
            if (rc != TQ_OK) return rc;
            n_gpu++;
        }
        if (n_gpu > 0) TQ_FORWARD(tq_qgpu_d2h(E->gpu, E->hout, B->dev_len));
        else TQ_FORWARD(tq_qgpu_sync(E->gpu)); /* every unit fell back: the H2D must not outlive the slot */
    }
    double t1 = tq_rt_time();
    st->t_launch += t1 - t0;
    /* 2. CPU units: small ones over the workers, big ones with the codec's threads */
    E->nsmall = 0;
    for (int64_t i = B->first; i < end; i++) {
        qunit* x = &E->q[i];
        if (x->on_gpu) continue;
        x->rc = TQ_OK;
        if (x->numel < QB_SMALL_ELEMS) E->small[E->nsmall++] = i;
    }
    if (E->nsmall > 0) {
        E->cur = B;
        E->cur_raw = raw;
        atomic_store(&E->next, 0);
        int nt = E->o->threads;
        if (nt > E->nsmall) nt = (int)E->nsmall;
        pthread_t th[256];
        worker_arg wa[256];
        int started[256];
        /* worker scratch: the tail of the fp32 buffer, small_max floats per thread */
        for (int t = 0; t < nt; t++) {
            wa[t].E = E;
            wa[t].scratch = E->f32 + (size_t)E->f32_max + (size_t)t * (size_t)E->small_max;
            started[t] = 0;
        }
        for (int t = 1; t < nt; t++) started[t] = pthread_create(&th[t], NULL, worker_main, &wa[t]) == 0;
        worker_main(&wa[0]);
        for (int t = 1; t < nt; t++)
            if (started[t]) pthread_join(th[t], NULL);
        /* a worker that could not start leaves its units to the others: atomic counter, nothing lost */
    }
    for (int64_t i = B->first; i < end; i++) {
        qunit* x = &E->q[i];
        if (!x->on_gpu && x->numel >= QB_SMALL_ELEMS) cpu_unit(E, x, raw, E->f32);
    }
    double t2 = tq_rt_time();
    st->t_cpu += t2 - t1;
    /* 3. GPU results into the records */
    if (n_gpu > 0) {
        TQ_FORWARD(tq_qgpu_sync(E->gpu));
        st->t_gsync += tq_rt_time() - t2;
        t2 = tq_rt_time();
        for (int64_t i = B->first; i < end; i++) {
            qunit* x = &E->q[i];
            if (!x->on_gpu) continue;
            tq_qtensor q;
            TQ_FORWARD(tq_qtensor_layout(&q, &x->cd, x->un->nrows, tq_tensor_cols(x->t), x->seed));
            uint8_t* dst = E->rec + x->rec_off + x->hdr_len;
            size_t o = 0, d = 0;
            for (int p = 0; p < q.nparts; p++) {
                /* per-row parts from the device; per-tensor parts (codebooks) were written to the record
                 * by tq_quantize_gpu_dev itself (its host copy) */
                if (q.part[p].row_bytes) memcpy(dst + d, E->hout + x->dev_off + o, q.part[p].bytes);
                o += align_up(q.part[p].bytes, QB_ALIGN);
                d += q.part[p].bytes;
            }
            point_parts(&q, dst, 1);
            if (parts_nonfinite(&q)) {
                st->gpu_fallback++;
                cpu_unit(E, x, raw, E->f32); /* the reference's error (or its bytes) */
                continue;
            }
            x->xxh = tq_xxh64(E->rec + x->rec_off, x->rec_len, 0);
        }
        st->t_post += tq_rt_time() - t2;
    }
    for (int64_t i = B->first; i < end; i++) {
        if (E->q[i].on_gpu) st->gpu_units++;
        else st->cpu_units++;
    }
    return TQ_OK;
}

// ------------------------------------------------------------------------------------------------
// the loop

/* One batch's commit, run on a writer thread so that the durable write (pwrite + fdatasync of the
 * segment and the journal) of batch b overlaps the computation of batch b + 1. */
typedef struct {
    tq_journal* j;
    const qbatch* B;
    int64_t n;                 /* units committed (a failed unit's batch: the ones before it) */
    int64_t *idx;
    size_t* lens;
    uint64_t *xxh, *aux;
    const uint8_t* rec;
    tq_status rc;
    char msg[1024];
    double secs;
    pthread_t th;
    int threaded;
} qcommit;

static void* commit_main(void* arg)
{
    qcommit* C = arg;
    double t0 = tq_rt_time();
    C->rc = tq_journal_put_batch(C->j, C->n, C->idx, C->rec, C->lens, C->xxh, C->aux);
    if (C->rc != TQ_OK) snprintf(C->msg, sizeof C->msg, "%s", tq_last_error());
    C->secs = tq_rt_time() - t0;
    return NULL;
}

static void commit_start(qengine* E, qcommit* C, tq_journal* j, const qbatch* B, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        const qunit* x = &E->q[B->first + i];
        C->idx[i] = x->k;
        C->lens[i] = x->rec_len;
        C->xxh[i] = x->xxh;
        C->aux[i] = (uint64_t)x->rec_len;
    }
    C->j = j;
    C->B = B;
    C->n = n;
    C->rec = E->rec;
    C->rc = TQ_OK;
    C->msg[0] = '\0';
    C->threaded = pthread_create(&C->th, NULL, commit_main, C) == 0;
    if (!C->threaded) commit_main(C);
}

/* Wait for a commit; then its units count as done: stats, progress, and the per-unit fault hook. */
static tq_status commit_finish(qengine* E, qcommit* C, tq_progress* prog, double* done_b, tq_qbatch_stats* st)
{
    double t0 = tq_rt_time();
    if (C->threaded) pthread_join(C->th, NULL);
    st->t_wwait += tq_rt_time() - t0;
    C->threaded = 0;
    st->t_write += C->secs;
    if (C->rc != TQ_OK) return tq_fail(C->rc, "%s", C->msg);
    for (int64_t i = 0; i < C->n; i++) {
        const qunit* x = &E->q[C->B->first + i];
        st->units++;
        st->bytes_in += x->nraw;
        st->bytes_out += x->rec_len;
        *done_b += (double)x->un->bytes;
    }
    st->batches++;
    tq_progress_update(prog, *done_b);
    for (int64_t i = 0; i < C->n; i++) TQ_FORWARD(tq_fault_unit_done());
    return TQ_OK;
}

tq_status tq_qbatch_quantize(const tq_rt* rt, const tq_ckpt* c, const tq_unitlist* u, char* const* keys,
                             const int64_t* mine, int64_t nmine, const tq_plan_entry* plan, int64_t nplan,
                             uint64_t job_seed, const tq_qbatch_opts* o, tq_journal* j, tq_progress* prog,
                             tq_qbatch_stats* st)
{
    memset(st, 0, sizeof *st);
    qengine E;
    memset(&E, 0, sizeof E);
    E.rt = rt;
    E.c = c;
    E.o = o;
    E.slot[0].batch = E.slot[1].batch = -1;
    pthread_mutex_init(&E.mu, NULL);
    pthread_cond_init(&E.cv, NULL);
    qcommit cm[2];
    memset(cm, 0, sizeof cm);
    int pending = -1; /* the commit in flight (index into cm) */
    double done_b = 0;
    int saved_threads = 0;
    double t_start = tq_rt_time(), t_loop0 = t_start;
    tq_status rc = plan_units(&E, u, keys, mine, nmine, plan, nplan, job_seed);
    if (rc != TQ_OK || nmine == 0) goto out;

    /* buffers, once, for the largest batch */
    E.nfiles = tq_ckpt_file_count(c);
    E.fds = malloc((size_t)(E.nfiles + 1) * sizeof(int));
    TQ_GOTO_FAIL(!E.fds, TQ_ERR_NOMEM, out, "out of memory");
    for (int f = 0; f < E.nfiles; f++) E.fds[f] = -1;
    int64_t maxn = 0;
    for (int64_t b = 0; b < E.nb; b++)
        if (E.b[b].n > maxn) maxn = E.b[b].n;
    for (int64_t b = 0; b < E.nb; b++)
        if (E.b[b].n_gpu > 0) E.pinned = 1;
    if (E.pinned) {
        rc = tq_qgpu_create(rt ? rt->local_rank : 0, &E.gpu);
        if (rc == TQ_OK) rc = tq_qgpu_reserve(E.gpu, E.raw_max + QB_ALIGN, E.dev_max + QB_ALIGN);
        if (rc == TQ_OK) rc = tq_qgpu_host_alloc(E.dev_max + QB_ALIGN, 1, (void**)&E.hout);
        if (rc != TQ_OK) goto out;
        st->mem_dev = E.raw_max + E.dev_max;
    }
    for (int s = 0; s < 2 && rc == TQ_OK; s++) rc = tq_qgpu_host_alloc(E.raw_max + QB_ALIGN, E.pinned, (void**)&E.slot[s].raw);
    for (int s = 0; s < 2 && rc == TQ_OK; s++) rc = tq_qgpu_host_alloc(E.rec_max + 1, 0, (void**)&E.recbuf[s]);
    if (rc != TQ_OK) goto out;
    {
        size_t nf = (size_t)E.f32_max + (size_t)o->threads * (size_t)E.small_max + 1;
        E.f32 = malloc(nf * sizeof(float));
        E.small = malloc((size_t)(maxn + 1) * sizeof(int64_t));
        int ok = E.f32 && E.small;
        for (int k = 0; k < 2; k++) {
            cm[k].idx = malloc((size_t)(maxn + 1) * sizeof *cm[k].idx);
            cm[k].lens = malloc((size_t)(maxn + 1) * sizeof *cm[k].lens);
            cm[k].xxh = malloc((size_t)(maxn + 1) * sizeof *cm[k].xxh);
            cm[k].aux = malloc((size_t)(maxn + 1) * sizeof *cm[k].aux);
            ok = ok && cm[k].idx && cm[k].lens && cm[k].xxh && cm[k].aux;
        }
        TQ_GOTO_FAIL(!ok, TQ_ERR_NOMEM, out, "out of memory (%zu bytes) for the quantize workers", nf * sizeof(float));
        st->mem_host = 2 * (E.raw_max + QB_ALIGN) + 2 * E.rec_max + nf * sizeof(float) + (E.pinned ? E.dev_max : 0);
    }
    char gdesc[128] = "";
    if (E.pinned)
        snprintf(gdesc, sizeof gdesc, " + GPU (%s; units of >= %" PRId64 " weights)", o->gpu_own ? "its own" : "shared by the node's ranks",
                 o->gpu_min_elems);
    TQ_LOG(TQ_LOG_DBG, "qbatch: raw %zu, records %zu, device %zu, fp32 %" PRId64 " + %d x %" PRId64 " elements",
           E.raw_max, E.rec_max, E.dev_max, E.f32_max, o->threads, E.small_max);
    TQ_LOG0(TQ_LOG_INFO, "quantize: %" PRId64 " units in %" PRId64 " batches (<= %" PRIu64 " B / %" PRId64
            " units each), %d CPU worker(s)%s; buffers %.1f MB host%s",
            nmine, E.nb, o->batch_bytes, o->batch_units, o->threads, gdesc, st->mem_host / 1e6, E.pinned ? " + device" : "");

    t_loop0 = tq_rt_time();
    st->t_setup = t_loop0 - t_start;
    saved_threads = 1;
    tq_codec_set_threads(o->threads); /* also spares a sysconf (an open of /sys) per codec call */
    E.reader_on = o->reader && E.nb > 1;
    if (E.reader_on && pthread_create(&E.reader, NULL, reader_main, &E) != 0) E.reader_on = 0;

    for (int64_t b = 0; b < E.nb && rc == TQ_OK; b++) {
        if (rt && tq_rt_peer_failed(rt)) break; /* another rank failed: stop, the agreement reports it */
        const qbatch* B = &E.b[b];
        qslot* s = NULL;
        rc = acquire_batch(&E, b, &s);
        if (rc != TQ_OK) break;
        double t0 = tq_rt_time();
        E.rec = E.recbuf[b % 2]; /* the other arena may still be being written by batch b - 1's commit */
        rc = compute_batch(&E, B, s->raw, st);
        release_slot(&E, s);
        st->t_quant += tq_rt_time() - t0;
        if (rc != TQ_OK) break;
        /* the first failed unit (file order) ends the stage; the units before it are kept */
        int64_t nok = B->n;
        for (int64_t i = 0; i < B->n; i++)
            if (E.q[B->first + i].rc != TQ_OK) {
                nok = i;
                break;
            }
        if (pending >= 0) {
            rc = commit_finish(&E, &cm[pending], prog, &done_b, st);
            pending = -1;
            if (rc != TQ_OK) break;
        }
        commit_start(&E, &cm[b % 2], j, B, nok);
        pending = (int)(b % 2);
        if (nok < B->n) {
            rc = commit_finish(&E, &cm[pending], prog, &done_b, st);
            pending = -1;
            const qunit* x = &E.q[B->first + nok];
            if (rc == TQ_OK) rc = tq_fail(x->rc, "%s", x->msg ? x->msg : "quantize failed");
            break;
        }
    }
    if (pending >= 0) {
        tq_status crc = commit_finish(&E, &cm[pending], prog, &done_b, st);
        if (rc == TQ_OK) rc = crc;
        pending = -1;
    }

out:
    if (st->t_setup == 0) st->t_setup = tq_rt_time() - t_start;
    else st->t_loop = tq_rt_time() - t_loop0;
    if (E.reader_on) {
        pthread_mutex_lock(&E.mu);
        E.stop = 1;
        pthread_cond_broadcast(&E.cv);
        pthread_mutex_unlock(&E.mu);
        pthread_join(E.reader, NULL);
    }
    st->t_read = E.slot[0].t_read + E.slot[1].t_read;
    st->t_wait = E.t_wait;
    if (saved_threads) tq_codec_set_threads(0);
    if (E.fds)
        for (int f = 0; f < E.nfiles; f++)
            if (E.fds[f] >= 0) close(E.fds[f]);
    free(E.fds);
    for (int s = 0; s < 2; s++) tq_qgpu_host_free(E.slot[s].raw, E.pinned);
    tq_qgpu_host_free(E.hout, 1);
    tq_qgpu_free(&E.gpu);
    for (int s = 0; s < 2; s++) free(E.recbuf[s]);
    free(E.f32);
    free(E.small);
    if (E.q)
        for (int64_t i = 0; i < E.nq; i++) free(E.q[i].msg);
    free(E.q);
    free(E.b);
    for (int k = 0; k < 2; k++) {
        if (cm[k].threaded) pthread_join(cm[k].th, NULL);
        free(cm[k].idx);
        free(cm[k].lens);
        free(cm[k].xxh);
        free(cm[k].aux);
    }
    pthread_mutex_destroy(&E.mu);
    pthread_cond_destroy(&E.cv);
    return rc;
}

// ------------------------------------------------------------------------------------------------
// where the time went

void tq_qbatch_report(const tq_rt* rt, const tq_qstage_times* ph, const tq_qbatch_stats* st, char* out, size_t cap)
{
    double v[13] = {ph->ckpt, ph->units, ph->plan, ph->schedule, st->t_setup, st->t_loop, st->t_wait, st->t_cpu,
                    st->t_launch + st->t_gsync + st->t_post, st->t_wwait, ph->finish, ph->table ? 0.0 : 1.0, ph->wait};
    const char* e = getenv("TQ_QBATCH_STATS");
    if (e && *e && strcmp(e, "0"))
        TQ_LOG(TQ_LOG_INFO,
               "quantize phases (this rank, s): ckpt %.3f (%s), units %.3f, plan %.3f, schedule %.3f, engine setup %.3f; "
               "loop %.3f = read wait %.3f + CPU %.3f + GPU launch %.3f / wait %.3f / records %.3f + write wait %.3f; "
               "wait for other ranks %.3f, finish %.3f; reader thread %.3f, writer thread %.3f; %" PRId64 " units (%" PRId64 " GPU, %" PRId64
               " CPU, %" PRId64 " fell back) in %" PRId64 " batches",
               ph->ckpt, ph->table ? "unit table" : "headers parsed", ph->units, ph->plan, ph->schedule, st->t_setup,
               st->t_loop, st->t_wait, st->t_cpu, st->t_launch, st->t_gsync, st->t_post, st->t_wwait, ph->wait, ph->finish,
               st->t_read, st->t_write, st->units, st->gpu_units, st->cpu_units, st->gpu_fallback, st->batches);
    if (rt) tq_rt_allreduce_max_f64(rt, v, 13);
    if (out && cap)
        snprintf(out, cap,
                 "slowest rank, s: ckpt %.2f%s, units %.2f, plan %.2f, schedule %.2f, engine %.2f, loop %.2f (read wait "
                 "%.2f, CPU %.2f, GPU %.2f, write wait %.2f), rank wait %.2f, finish %.2f",
                 v[0], v[11] > 0 ? " (headers parsed)" : " (unit table)", v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8],
                 v[9], v[12], v[10]);
}
