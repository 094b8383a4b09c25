/* st_writer.c — streaming safetensors writer (see st_writer.h for the API and the file layout).
 *
 * Memory is O(number of tensors): the header is built in memory (a few MB even for 40k-tensor MoE
 * checkpoints), tensor bytes go straight from the caller's buffer to pwrite at the precomputed offset.
 * Completeness is tracked as a byte count per tensor; finish() refuses to publish a file with holes. */
#include "st_writer.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fileio.h" // defines: tq_atomic_open/commit/abort, tq_pwrite_full, tq_mkdirs
#include "hash.h"   // defines: tq_xxh64 (name hash table)

#define TQ_ST_MAX_DIMS 8
#define TQ_ST_INDEX_NAME "model.safetensors.index.json"
#define TQ_ST_SINGLE_NAME "model.safetensors"

typedef struct {
    char* name;
    tq_dtype dtype;
    int ndim;
    int64_t shape[TQ_ST_MAX_DIMS];
    int64_t rows, cols;
    uint64_t nbytes;
    int file;         /* shard index */
    uint64_t off;     /* absolute offset in that file */
    uint64_t written; /* bytes written so far */
} tq_st_entry;

typedef struct {
    char path[4096]; /* final path */
    tq_atomic_file af;
    int open;
    int committed;
    uint64_t total; /* header + data bytes */
} tq_st_file;

struct tq_st_writer {
    int is_dir;
    char target[4096]; /* file path (file mode) or directory (dir mode) */
    uint64_t max_shard;
    json_t* meta;
    tq_st_entry* t;
    int64_t n, cap;
    int64_t* ht; /* open addressing: index into t, -1 empty */
    size_t ht_cap;
    tq_st_file* files;
    int nfiles;
    int begun, finished;
    uint64_t total;
};

// ------------------------------------------------------------------------------------------------
// name lookup

static size_t tq_st_slot(const char* name, size_t cap) { return (size_t)(tq_xxh64(name, strlen(name), 0x5eed) & (cap - 1)); }

static tq_status tq_st_ht_grow(tq_st_writer* w)
{
    size_t cap = w->ht_cap ? w->ht_cap * 2 : 1024;
    int64_t* ht = malloc(cap * sizeof *ht);
    if (!ht) return tq_fail(TQ_ERR_NOMEM, "st_writer: no memory for the tensor table");
    for (size_t i = 0; i < cap; i++) ht[i] = -1;
    for (int64_t i = 0; i < w->n; i++) {
        size_t s = tq_st_slot(w->t[i].name, cap);
        while (ht[s] >= 0) s = (s + 1) & (cap - 1);
        ht[s] = i;
    }
    free(w->ht);
    w->ht = ht;
    w->ht_cap = cap;
    return TQ_OK;
}

static int64_t tq_st_lookup(const tq_st_writer* w, const char* name)
{
    if (!w->ht_cap) return -1;
    size_t s = tq_st_slot(name, w->ht_cap);
    while (w->ht[s] >= 0) {
        if (!strcmp(w->t[w->ht[s]].name, name)) return w->ht[s];
        s = (s + 1) & (w->ht_cap - 1);
    }
    return -1;
}

// ------------------------------------------------------------------------------------------------
// create / declare

static tq_status tq_st_new(tq_st_writer** out, const char* target, int is_dir, uint64_t max_shard)
{
    if (!out || !target || !*target) return tq_fail(TQ_ERR_ARG, "st_writer: missing output path");
    *out = NULL;
    if (strlen(target) >= 4000) return tq_fail(TQ_ERR_ARG, "st_writer: path too long: %s", target);
    tq_st_writer* w = calloc(1, sizeof *w);
    if (!w) return tq_fail(TQ_ERR_NOMEM, "st_writer: no memory");
    w->is_dir = is_dir;
    w->max_shard = max_shard;
    snprintf(w->target, sizeof w->target, "%s", target);
    w->meta = json_object();
    if (!w->meta || json_object_set_new(w->meta, "format", json_string("pt")) != 0) {
        json_decref(w->meta);
        free(w);
        return tq_fail(TQ_ERR_NOMEM, "st_writer: no memory");
    }
    *out = w;
    return TQ_OK;
}

tq_status tq_st_writer_create_file(const char* path, tq_st_writer** out) { return tq_st_new(out, path, 0, 0); }

tq_status tq_st_writer_create_dir(const char* dir, uint64_t max_shard_bytes, tq_st_writer** out)
{
    TQ_FORWARD(tq_mkdirs(dir));
    return tq_st_new(out, dir, 1, max_shard_bytes);
}

tq_status tq_st_writer_set_metadata(tq_st_writer* w, const char* key, const char* value)
{
    if (!w || !key || !value) return tq_fail(TQ_ERR_ARG, "st_writer_set_metadata: NULL argument");
    if (w->begun) return tq_fail(TQ_ERR_ARG, "st_writer: metadata '%s' set after begin()", key);
    json_t* v = json_string(value);
    if (!v) return tq_fail(TQ_ERR_ARG, "st_writer: metadata '%s' is not valid UTF-8", key);
    if (json_object_set_new(w->meta, key, v) != 0) return tq_fail(TQ_ERR_ARG, "st_writer: bad metadata key '%s'", key);
    return TQ_OK;
}

tq_status tq_st_writer_add(tq_st_writer* w, const char* name, tq_dtype dtype, int ndim, const int64_t* shape)
{
    if (!w || !name) return tq_fail(TQ_ERR_ARG, "st_writer_add: NULL argument");
    if (w->begun) return tq_fail(TQ_ERR_ARG, "st_writer: tensor '%s' added after begin()", name);
    size_t nl = strlen(name);
    if (nl == 0 || nl >= 256 || !strcmp(name, "__metadata__"))
        return tq_fail(TQ_ERR_ARG, "st_writer: invalid tensor name '%s' (1..255 chars, not __metadata__)", name);
    if (tq_dtype_size(dtype) == 0) return tq_fail(TQ_ERR_ARG, "st_writer: tensor '%s' has an invalid dtype", name);
    if (ndim < 0 || ndim > TQ_ST_MAX_DIMS || (ndim > 0 && !shape))
        return tq_fail(TQ_ERR_ARG, "st_writer: tensor '%s' has %d dims (0..%d allowed)", name, ndim, TQ_ST_MAX_DIMS);
    uint64_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0) return tq_fail(TQ_ERR_ARG, "st_writer: tensor '%s' dim %d is negative", name, d);
        if (shape[d] > 0 && numel > (UINT64_MAX >> 4) / (uint64_t)shape[d])
            return tq_fail(TQ_ERR_ARG, "st_writer: tensor '%s' is too large", name);
        numel *= (uint64_t)shape[d];
    }
    if (tq_st_lookup(w, name) >= 0) return tq_fail(TQ_ERR_ARG, "st_writer: tensor '%s' declared twice", name);
    if (w->n == w->cap) {
        int64_t cap = w->cap ? w->cap * 2 : 256;
        tq_st_entry* t = realloc(w->t, (size_t)cap * sizeof *t);
        if (!t) return tq_fail(TQ_ERR_NOMEM, "st_writer: no memory for tensor '%s'", name);
        w->t = t;
        w->cap = cap;
    }
    if ((size_t)(w->n + 1) * 2 > w->ht_cap) TQ_FORWARD(tq_st_ht_grow(w));
    tq_st_entry* e = &w->t[w->n];
    memset(e, 0, sizeof *e);
    e->name = strdup(name);
    if (!e->name) return tq_fail(TQ_ERR_NOMEM, "st_writer: no memory for tensor '%s'", name);
    e->dtype = dtype;
    e->ndim = ndim;
    for (int d = 0; d < ndim; d++) e->shape[d] = shape[d];
    e->cols = ndim ? shape[ndim - 1] : 1;
    e->rows = 1;
    for (int d = 0; d + 1 < ndim; d++) e->rows *= shape[d];
    e->nbytes = numel * tq_dtype_size(dtype);
    e->file = -1;
    size_t s = tq_st_slot(name, w->ht_cap);
    while (w->ht[s] >= 0) s = (s + 1) & (w->ht_cap - 1);
    w->ht[s] = w->n;
    w->n++;
    w->total += e->nbytes;
    return TQ_OK;
}

// ------------------------------------------------------------------------------------------------
// layout and headers

typedef struct {
    int64_t idx;
    size_t esz;
} tq_st_order;

static int tq_st_order_cmp(const void* a, const void* b)
{
    const tq_st_order* x = a;
    const tq_st_order* y = b;
    if (x->esz != y->esz) return x->esz > y->esz ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Build file f's header, assign absolute offsets to its tensors, write the header into its temp file. */
static tq_status tq_st_write_header(tq_st_writer* w, int f, int64_t first, int64_t last, tq_st_order* scratch)
{
    int64_t m = last - first;
    for (int64_t i = 0; i < m; i++) {
        scratch[i].idx = first + i;
        scratch[i].esz = tq_dtype_size(w->t[first + i].dtype);
    }
    qsort(scratch, (size_t)m, sizeof *scratch, tq_st_order_cmp);
    tq_status rc = TQ_OK;
    char* text = NULL;
    unsigned char* hdr = NULL;
    json_t* root = json_object();
    TQ_GOTO_FAIL(!root, TQ_ERR_NOMEM, out, "st_writer: no memory for the header");
    TQ_GOTO_FAIL(json_object_set(root, "__metadata__", w->meta) != 0, TQ_ERR_NOMEM, out, "st_writer: no memory");
    uint64_t pos = 0;
    for (int64_t i = 0; i < m; i++) {
        tq_st_entry* e = &w->t[scratch[i].idx];
        json_t* shape = json_array();
        json_t* offs = json_array();
        json_t* obj = json_object();
        int bad = !shape || !offs || !obj;
        for (int d = 0; !bad && d < e->ndim; d++) bad |= json_array_append_new(shape, json_integer(e->shape[d])) != 0;
        bad = bad || json_array_append_new(offs, json_integer((json_int_t)pos)) != 0 ||
              json_array_append_new(offs, json_integer((json_int_t)(pos + e->nbytes))) != 0 ||
              json_object_set_new(obj, "dtype", json_string(tq_dtype_name(e->dtype))) != 0;
        if (!bad) {
            bad = json_object_set_new(obj, "shape", shape) != 0;
            shape = NULL;
        }
        if (!bad) {
            bad = json_object_set_new(obj, "data_offsets", offs) != 0;
            offs = NULL;
        }
        if (!bad) {
            bad = json_object_set_new(root, e->name, obj) != 0;
            obj = NULL;
        }
        json_decref(shape);
        json_decref(offs);
        json_decref(obj);
        TQ_GOTO_FAIL(bad, TQ_ERR_NOMEM, out, "st_writer: cannot build the header entry for '%s'", e->name);
        e->file = f;
        e->off = pos; /* relative for now */
        pos += e->nbytes;
    }
    text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    TQ_GOTO_FAIL(!text, TQ_ERR_NOMEM, out, "st_writer: cannot serialise the header of %s", w->files[f].path);
    size_t tl = strlen(text);
    size_t padded = (tl + 7) & ~(size_t)7;
    hdr = malloc(8 + padded);
    TQ_GOTO_FAIL(!hdr, TQ_ERR_NOMEM, out, "st_writer: no memory for the header");
    for (int b = 0; b < 8; b++) hdr[b] = (unsigned char)(((uint64_t)padded >> (8 * b)) & 0xff);
    memcpy(hdr + 8, text, tl);
    memset(hdr + 8 + tl, ' ', padded - tl);
    for (int64_t i = 0; i < m; i++) w->t[scratch[i].idx].off += 8 + padded;
    w->files[f].total = 8 + padded + pos;
    TQ_CHECK_GOTO(tq_pwrite_full(w->files[f].af.fd, hdr, 8 + padded, 0, w->files[f].af.tmp), out);
    /* Size the file now so a reader of the temp name sees the final length (holes until written). */
    TQ_GOTO_FAIL(ftruncate(w->files[f].af.fd, (off_t)w->files[f].total) != 0, TQ_ERR_IO, out,
                 "st_writer: cannot size %s to %llu bytes (disk full?)", w->files[f].af.tmp,
                 (unsigned long long)w->files[f].total);
out:
    free(hdr);
    free(text);
    json_decref(root);
    return rc;
}

tq_status tq_st_writer_begin(tq_st_writer* w)
{
    if (!w) return tq_fail(TQ_ERR_ARG, "st_writer_begin: NULL writer");
    if (w->begun) return tq_fail(TQ_ERR_ARG, "st_writer: begin() called twice");
    w->begun = 1;
    /* shard boundaries in declaration order */
    int64_t* starts = malloc((size_t)(w->n + 2) * sizeof *starts);
    tq_st_order* scratch = malloc((size_t)(w->n + 1) * sizeof *scratch);
    tq_status rc = TQ_OK;
    TQ_GOTO_FAIL(!starts || !scratch, TQ_ERR_NOMEM, out, "st_writer: no memory");
    int nf = 0;
    starts[nf++] = 0;
    if (w->is_dir && w->max_shard > 0) {
        uint64_t cur = 0;
        for (int64_t i = 0; i < w->n; i++) {
            if (cur > 0 && cur + w->t[i].nbytes > w->max_shard) {
                starts[nf++] = i;
                cur = 0;
            }
            cur += w->t[i].nbytes;
        }
    }
    starts[nf] = w->n;
    w->files = calloc((size_t)nf, sizeof *w->files);
    TQ_GOTO_FAIL(!w->files, TQ_ERR_NOMEM, out, "st_writer: no memory");
    w->nfiles = nf;
    for (int f = 0; f < nf; f++) {
        tq_st_file* F = &w->files[f];
        F->af.fd = -1;
        int k;
        if (!w->is_dir) k = snprintf(F->path, sizeof F->path, "%s", w->target);
        else if (nf == 1) k = snprintf(F->path, sizeof F->path, "%s/%s", w->target, TQ_ST_SINGLE_NAME);
        else k = snprintf(F->path, sizeof F->path, "%s/model-%05d-of-%05d.safetensors", w->target, f + 1, nf);
        TQ_GOTO_FAIL(k < 0 || (size_t)k >= sizeof F->path, TQ_ERR_ARG, out, "st_writer: path too long in %s", w->target);
    }
    for (int f = 0; f < nf; f++) {
        TQ_CHECK_GOTO(tq_atomic_open(&w->files[f].af, w->files[f].path), out);
        w->files[f].open = 1;
        TQ_CHECK_GOTO(tq_st_write_header(w, f, starts[f], starts[f + 1], scratch), out);
    }
out:
    free(starts);
    free(scratch);
    return rc;
}

// ------------------------------------------------------------------------------------------------
// data

static tq_status tq_st_find_for_write(tq_st_writer* w, const char* name, tq_st_entry** pe)
{
    if (!w || !name) return tq_fail(TQ_ERR_ARG, "st_writer_write: NULL argument");
    if (!w->begun || w->finished) return tq_fail(TQ_ERR_ARG, "st_writer: write of '%s' outside begin()..finish()", name);
    int64_t i = tq_st_lookup(w, name);
    if (i < 0) return tq_fail(TQ_ERR_ARG, "st_writer: tensor '%s' was never declared with tq_st_writer_add", name);
    *pe = &w->t[i];
    if (!w->files[(*pe)->file].open) return tq_fail(TQ_ERR_ARG, "st_writer: file for '%s' is not open", name);
    return TQ_OK;
}

static tq_status tq_st_put(tq_st_writer* w, tq_st_entry* e, uint64_t rel, const void* data, size_t nbytes)
{
    if (e->written + nbytes > e->nbytes)
        return tq_fail(TQ_ERR_ARG, "st_writer: more bytes written to '%s' than its size %llu (overlapping row ranges?)",
                       e->name, (unsigned long long)e->nbytes);
    tq_st_file* F = &w->files[e->file];
    TQ_FORWARD(tq_pwrite_full(F->af.fd, data, nbytes, e->off + rel, F->af.tmp));
    e->written += nbytes;
    return TQ_OK;
}

static tq_status tq_st_check_rows(const tq_st_entry* e, int64_t row0, int64_t nrows)
{
    if (row0 < 0 || nrows < 0 || row0 > e->rows || nrows > e->rows - row0)
        return tq_fail(TQ_ERR_ARG, "st_writer: rows [%lld, %lld) outside tensor '%s' (%lld rows)", (long long)row0,
                       (long long)(row0 + nrows), e->name, (long long)e->rows);
    return TQ_OK;
}

tq_status tq_st_writer_write(tq_st_writer* w, const char* name, const void* data, size_t nbytes)
{
    tq_st_entry* e;
    TQ_FORWARD(tq_st_find_for_write(w, name, &e));
    if ((uint64_t)nbytes != e->nbytes)
        return tq_fail(TQ_ERR_ARG, "st_writer: '%s' is %llu bytes, got %zu", name, (unsigned long long)e->nbytes, nbytes);
    return tq_st_put(w, e, 0, data, nbytes);
}

tq_status tq_st_writer_write_rows(tq_st_writer* w, const char* name, int64_t row0, int64_t nrows, const void* data,
                                  size_t nbytes)
{
    tq_st_entry* e;
    TQ_FORWARD(tq_st_find_for_write(w, name, &e));
    TQ_FORWARD(tq_st_check_rows(e, row0, nrows));
    uint64_t row_bytes = (uint64_t)e->cols * tq_dtype_size(e->dtype);
    if ((uint64_t)nbytes != (uint64_t)nrows * row_bytes)
        return tq_fail(TQ_ERR_ARG, "st_writer: %lld rows of '%s' are %llu bytes, got %zu", (long long)nrows, name,
                       (unsigned long long)((uint64_t)nrows * row_bytes), nbytes);
    return tq_st_put(w, e, (uint64_t)row0 * row_bytes, data, nbytes);
}

tq_status tq_st_writer_write_rows_f32(tq_st_writer* w, const char* name, int64_t row0, int64_t nrows,
                                      const float* data, int64_t n_values)
{
    tq_st_entry* e;
    TQ_FORWARD(tq_st_find_for_write(w, name, &e));
    TQ_FORWARD(tq_st_check_rows(e, row0, nrows));
    if (n_values != nrows * e->cols)
        return tq_fail(TQ_ERR_ARG, "st_writer: %lld rows of '%s' are %lld values, got %lld", (long long)nrows, name,
                       (long long)(nrows * e->cols), (long long)n_values);
    size_t esz = tq_dtype_size(e->dtype);
    uint64_t rel = (uint64_t)row0 * (uint64_t)e->cols * esz;
    if (e->dtype == TQ_F32) return tq_st_put(w, e, rel, data, (size_t)n_values * 4);
    enum { CHUNK = 1 << 16 };
    uint16_t* buf = malloc(CHUNK * sizeof *buf);
    if (!buf) return tq_fail(TQ_ERR_NOMEM, "st_writer: no memory to convert '%s'", name);
    tq_status rc = TQ_OK;
    for (int64_t i = 0; i < n_values && rc == TQ_OK; i += CHUNK) {
        int64_t k = n_values - i < CHUNK ? n_values - i : CHUNK;
        if (e->dtype == TQ_BF16)
            for (int64_t j = 0; j < k; j++) buf[j] = tq_f32_to_bf16(data[i + j]);
        else
            for (int64_t j = 0; j < k; j++) buf[j] = tq_f32_to_f16(data[i + j]);
        rc = tq_st_put(w, e, rel + (uint64_t)i * 2, buf, (size_t)k * 2);
    }
    free(buf);
    return rc;
}

// ------------------------------------------------------------------------------------------------
// finish

static tq_status tq_st_write_index(tq_st_writer* w)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", w->target, TQ_ST_INDEX_NAME);
    json_t* root = json_object();
    json_t* meta = json_object();
    json_t* map = json_object();
    tq_status rc = TQ_OK;
    char* text = NULL;
    int bad = !root || !meta || !map;
    bad = bad || json_object_set_new(meta, "total_size", json_integer((json_int_t)w->total)) != 0;
    for (int64_t i = 0; !bad && i < w->n; i++) {
        const char* base = strrchr(w->files[w->t[i].file].path, '/');
        bad = json_object_set_new(map, w->t[i].name, json_string(base ? base + 1 : w->files[w->t[i].file].path)) != 0;
    }
    if (!bad) {
        bad = json_object_set_new(root, "metadata", meta) != 0;
        meta = NULL;
    }
    if (!bad) {
        bad = json_object_set_new(root, "weight_map", map) != 0;
        map = NULL;
    }
    TQ_GOTO_FAIL(bad, TQ_ERR_NOMEM, out, "st_writer: cannot build %s", path);
    text = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
    TQ_GOTO_FAIL(!text, TQ_ERR_NOMEM, out, "st_writer: cannot serialise %s", path);
    size_t tl = strlen(text);
    text[tl] = '\0';
    {
        char* t2 = realloc(text, tl + 2);
        TQ_GOTO_FAIL(!t2, TQ_ERR_NOMEM, out, "st_writer: no memory");
        text = t2;
        text[tl] = '\n';
        text[tl + 1] = '\0';
    }
    rc = tq_write_file_atomic(path, text, tl + 1);
out:
    free(text);
    json_decref(meta);
    json_decref(map);
    json_decref(root);
    return rc;
}

tq_status tq_st_writer_finish(tq_st_writer* w)
{
    if (!w) return tq_fail(TQ_ERR_ARG, "st_writer_finish: NULL writer");
    if (!w->begun) TQ_FORWARD(tq_st_writer_begin(w));
    if (w->finished) return TQ_OK;
    for (int64_t i = 0; i < w->n; i++) {
        const tq_st_entry* e = &w->t[i];
        if (e->written != e->nbytes)
            return tq_fail(TQ_ERR_ARG, "st_writer: tensor '%s' is incomplete: %llu of %llu bytes written",
                           e->name, (unsigned long long)e->written, (unsigned long long)e->nbytes);
    }
    for (int f = 0; f < w->nfiles; f++) {
        TQ_FORWARD(tq_atomic_commit(&w->files[f].af));
        w->files[f].open = 0;
        w->files[f].committed = 1;
    }
    if (w->is_dir) {
        char stale[4200];
        if (w->nfiles > 1) {
            TQ_FORWARD(tq_st_write_index(w));
            snprintf(stale, sizeof stale, "%s/%s", w->target, TQ_ST_SINGLE_NAME); /* from an earlier run */
        } else {
            snprintf(stale, sizeof stale, "%s/%s", w->target, TQ_ST_INDEX_NAME);
        }
        unlink(stale);
    }
    w->finished = 1;
    return TQ_OK;
}

void tq_st_writer_free(tq_st_writer** pw)
{
    if (!pw || !*pw) return;
    tq_st_writer* w = *pw;
    for (int f = 0; f < w->nfiles; f++)
        if (w->files[f].open) tq_atomic_abort(&w->files[f].af);
    for (int64_t i = 0; i < w->n; i++) free(w->t[i].name);
    free(w->t);
    free(w->ht);
    free(w->files);
    json_decref(w->meta);
    free(w);
    *pw = NULL;
}

int tq_st_writer_file_count(const tq_st_writer* w) { return w ? w->nfiles : 0; }

const char* tq_st_writer_file_path(const tq_st_writer* w, int i)
{
    return (w && i >= 0 && i < w->nfiles) ? w->files[i].path : NULL;
}

uint64_t tq_st_writer_total_bytes(const tq_st_writer* w) { return w ? w->total : 0; }
