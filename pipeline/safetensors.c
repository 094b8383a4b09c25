/* safetensors.c — the Hugging Face checkpoint reader behind ckpt.h (and the in-memory validators of
 * safetensors.h used by fuzz targets and tests). File formats: see safetensors.h.
 *
 * Opening reads only the 8-byte length and the JSON header of each file (plus the index and
 * config.json); tensor data is read on demand with pread (one tensor or a row range), into the
 * caller's buffer, so memory never depends on the model size. Every check that can fail on a damaged
 * or hostile file is done at open time and reports the file and tensor plus what to do:
 *   header length (>= 2, <= TQ_ST_MAX_HEADER, inside the file), JSON syntax, object layout,
 *   dtype (F32/F16/BF16; other known dtypes -> TQ_ERR_UNSUPPORTED), shape (<= 8 dims, >= 0,
 *   no overflow), shape x dtype size == data_offsets span, spans inside the file, no overlaps;
 *   index: weight_map entries name existing files in the same directory, every indexed tensor is in
 *   the file the index names, and no file holds a tensor the index does not map to it. */
#include "ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"      // defines: tq_pread_full, tq_read_file, tq_errno_status
#include "safetensors.h" // defines: TQ_ST_MAX_HEADER, in-memory validators

#define TQ_ST_INDEX "model.safetensors.index.json"
#define TQ_ST_SINGLE "model.safetensors"

struct tq_ckpt {
    char dir[4096];
    char* config;
    int nfiles;
    char** paths;
    int* fds;
    uint64_t* sizes;
    tq_tensor_info* t;
    int64_t n;
};

typedef struct {
    tq_tensor_info* v;
    int64_t n, cap;
} tq_tvec;

static tq_status tq_tvec_push(tq_tvec* tv, tq_tensor_info** out)
{
    if (tv->n == tv->cap) {
        int64_t cap = tv->cap ? tv->cap * 2 : 64;
        tq_tensor_info* v = realloc(tv->v, (size_t)cap * sizeof *v);
        if (!v) return tq_fail(TQ_ERR_NOMEM, "no memory for the tensor list");
        tv->v = v;
        tv->cap = cap;
    }
    *out = &tv->v[tv->n++];
    memset(*out, 0, sizeof **out);
    return TQ_OK;
}

// ------------------------------------------------------------------------------------------------
// header parsing (shared by files and buffers)

static const char* tq_st_hint = "the file is damaged or not a safetensors file: re-download or re-export it";

/* Check the u64 header length against the file size. */
static tq_status tq_st_check_prefix(const char* file, uint64_t hlen, uint64_t file_size)
{
    if (file_size < 8)
        return tq_fail(TQ_ERR_CORRUPT, "%s: %llu bytes, shorter than the 8-byte header length: the file is truncated; %s",
                       file, (unsigned long long)file_size, tq_st_hint);
    if (hlen < 2 || hlen > TQ_ST_MAX_HEADER)
        return tq_fail(TQ_ERR_FORMAT, "%s: header length %llu is outside 2..%llu bytes; %s", file,
                       (unsigned long long)hlen, (unsigned long long)TQ_ST_MAX_HEADER, tq_st_hint);
    if (8 + hlen > file_size)
        return tq_fail(TQ_ERR_CORRUPT, "%s: header of %llu bytes does not fit in the file (%llu bytes): the file is truncated; %s",
                       file, (unsigned long long)hlen, (unsigned long long)file_size, tq_st_hint);
    return TQ_OK;
}

static int tq_st_known_dtype(const char* s)
{
    static const char* const other[] = {"F64", "I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64", "BOOL",
                                        "F8_E4M3", "F8_E5M2", "F8_E8M0", "E8M0", "F4", "F6_E2M3", "F6_E3M2"};
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++)
        if (!strcmp(s, other[i])) return 1;
    return 0;
}

typedef struct {
    uint64_t begin, end;
    int64_t idx;
} tq_span;

static int tq_span_cmp(const void* a, const void* b)
{
    const tq_span* x = a;
    const tq_span* y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* Parse one header's JSON; append its tensors (absolute offsets) to tv. */
static tq_status tq_st_parse_header(const char* file, int file_idx, const char* json, size_t json_len,
                                    uint64_t data_start, uint64_t file_size, tq_tvec* tv)
{
    json_error_t jerr;
    json_t* root = json_loadb(json, json_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return tq_fail(TQ_ERR_FORMAT, "%s: safetensors header is not valid JSON (line %d, column %d: %s); %s", file,
                       jerr.line, jerr.column, jerr.text, tq_st_hint);
    tq_status rc = TQ_OK;
    tq_span* spans = NULL;
    int64_t first = tv->n;
    TQ_GOTO_FAIL(!json_is_object(root), TQ_ERR_FORMAT, out, "%s: safetensors header is not a JSON object; %s", file,
                 tq_st_hint);
    const char* key;
    json_t* val;
    json_object_foreach(root, key, val)
    {
        if (!strcmp(key, "__metadata__")) {
            TQ_GOTO_FAIL(!json_is_object(val), TQ_ERR_FORMAT, out, "%s: \"__metadata__\" is not an object; %s", file,
                         tq_st_hint);
            const char* mk;
            json_t* mv;
            json_object_foreach(val, mk, mv)
            {
                TQ_GOTO_FAIL(!json_is_string(mv), TQ_ERR_FORMAT, out,
                             "%s: \"__metadata__\" entry \"%s\" is not a string; %s", file, mk, tq_st_hint);
            }
            continue;
        }
        size_t kl = strlen(key);
        TQ_GOTO_FAIL(kl == 0 || kl >= TQ_MAX_NAME, TQ_ERR_FORMAT, out,
                     "%s: tensor name of %zu characters (1..%d allowed): %.80s...", file, kl, TQ_MAX_NAME - 1, key);
        TQ_GOTO_FAIL(!json_is_object(val), TQ_ERR_FORMAT, out, "%s: tensor %s: entry is not an object; %s", file, key,
                     tq_st_hint);
        json_t* jd = json_object_get(val, "dtype");
        json_t* js = json_object_get(val, "shape");
        json_t* jo = json_object_get(val, "data_offsets");
        TQ_GOTO_FAIL(!json_is_string(jd), TQ_ERR_FORMAT, out, "%s: tensor %s: missing or non-string \"dtype\"; %s", file,
                     key, tq_st_hint);
        const char* ds = json_string_value(jd);
        tq_dtype dt = tq_dtype_parse(ds);
        if (dt == TQ_DTYPE_INVALID) {
            if (tq_st_known_dtype(ds))
                rc = tq_fail(TQ_ERR_UNSUPPORTED,
                             "%s: tensor %s has dtype %s; only F32, F16 and BF16 are supported: convert the checkpoint "
                             "to bf16 (e.g. with transformers, torch_dtype=bfloat16) and retry",
                             file, key, ds);
            else
                rc = tq_fail(TQ_ERR_FORMAT, "%s: tensor %s has unknown dtype \"%.32s\"; %s", file, key, ds, tq_st_hint);
            goto out;
        }
        TQ_GOTO_FAIL(!json_is_array(js), TQ_ERR_FORMAT, out, "%s: tensor %s: missing or non-array \"shape\"; %s", file,
                     key, tq_st_hint);
        size_t nd = json_array_size(js);
        TQ_GOTO_FAIL(nd > TQ_MAX_DIMS, TQ_ERR_FORMAT, out, "%s: tensor %s has %zu dimensions (at most %d supported)",
                     file, key, nd, TQ_MAX_DIMS);
        size_t esz = tq_dtype_size(dt);
        uint64_t numel = 1;
        int64_t shape[TQ_MAX_DIMS];
        for (size_t d = 0; d < nd; d++) {
            json_t* x = json_array_get(js, d);
            TQ_GOTO_FAIL(!json_is_integer(x) || json_integer_value(x) < 0, TQ_ERR_FORMAT, out,
                         "%s: tensor %s: shape entry %zu is not a non-negative integer; %s", file, key, d, tq_st_hint);
            shape[d] = (int64_t)json_integer_value(x);
            uint64_t s = (uint64_t)shape[d];
            TQ_GOTO_FAIL(s > 0 && numel > ((uint64_t)1 << 60) / s, TQ_ERR_FORMAT, out,
                         "%s: tensor %s: shape is absurdly large; %s", file, key, tq_st_hint);
            numel *= s;
        }
        TQ_GOTO_FAIL(!json_is_array(jo) || json_array_size(jo) != 2 || !json_is_integer(json_array_get(jo, 0)) ||
                         !json_is_integer(json_array_get(jo, 1)),
                     TQ_ERR_FORMAT, out, "%s: tensor %s: \"data_offsets\" must be [begin, end] integers; %s", file, key,
                     tq_st_hint);
        json_int_t b = json_integer_value(json_array_get(jo, 0));
        json_int_t e = json_integer_value(json_array_get(jo, 1));
        TQ_GOTO_FAIL(b < 0 || e < b, TQ_ERR_FORMAT, out, "%s: tensor %s: data_offsets [%lld, %lld] are invalid; %s", file,
                     key, (long long)b, (long long)e, tq_st_hint);
        uint64_t nbytes = numel * esz;
        TQ_GOTO_FAIL((uint64_t)(e - b) != nbytes, TQ_ERR_FORMAT, out,
                     "%s: tensor %s: shape x %s size = %llu bytes but data_offsets [%lld, %lld] span %llu bytes; %s",
                     file, key, ds, (unsigned long long)nbytes, (long long)b, (long long)e,
                     (unsigned long long)(e - b), tq_st_hint);
        TQ_GOTO_FAIL((uint64_t)e > file_size - data_start, TQ_ERR_CORRUPT, out,
                     "%s: tensor %s: data [%llu, %llu) ends past the end of the file (%llu bytes): the file is "
                     "truncated; re-download or re-export it",
                     file, key, (unsigned long long)(data_start + (uint64_t)b),
                     (unsigned long long)(data_start + (uint64_t)e), (unsigned long long)file_size);
        tq_tensor_info* t = NULL;
        TQ_CHECK_GOTO(tq_tvec_push(tv, &t), out);
        memcpy(t->name, key, kl + 1);
        t->dtype = dt;
        t->ndim = (int)nd;
        for (size_t d = 0; d < nd; d++) t->shape[d] = shape[d];
        t->file_idx = file_idx;
        t->offset = data_start + (uint64_t)b;
        t->nbytes = nbytes;
    }
    /* overlaps */
    {
        int64_t m = tv->n - first;
        if (m > 1) {
            spans = malloc((size_t)m * sizeof *spans);
            TQ_GOTO_FAIL(!spans, TQ_ERR_NOMEM, out, "no memory to check %s", file);
            for (int64_t i = 0; i < m; i++) {
                spans[i].begin = tv->v[first + i].offset;
                spans[i].end = spans[i].begin + tv->v[first + i].nbytes;
                spans[i].idx = first + i;
            }
            qsort(spans, (size_t)m, sizeof *spans, tq_span_cmp);
            uint64_t max_end = 0;
            int64_t max_idx = -1;
            for (int64_t i = 0; i < m; i++) {
                if (spans[i].end == spans[i].begin) continue; /* empty tensors overlap nothing */
                TQ_GOTO_FAIL(max_idx >= 0 && spans[i].begin < max_end, TQ_ERR_FORMAT, out,
                             "%s: tensors %s and %s overlap (bytes [%llu, %llu) and [%llu, %llu)); %s", file,
                             tv->v[max_idx].name, tv->v[spans[i].idx].name,
                             (unsigned long long)tv->v[max_idx].offset, (unsigned long long)max_end,
                             (unsigned long long)spans[i].begin, (unsigned long long)spans[i].end, tq_st_hint);
                if (spans[i].end > max_end) {
                    max_end = spans[i].end;
                    max_idx = spans[i].idx;
                }
            }
        }
    }
out:
    free(spans);
    json_decref(root);
    if (rc != TQ_OK) tv->n = first;
    return rc;
}

static uint64_t tq_le64(const unsigned char* p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

tq_status tq_st_validate_buffer(const void* data, size_t len, const char* label, int64_t* n_tensors)
{
    const char* file = label ? label : "(buffer)";
    if (n_tensors) *n_tensors = 0;
    if (!data && len) return tq_fail(TQ_ERR_ARG, "tq_st_validate_buffer: NULL data");
    if (len < 8) return tq_st_check_prefix(file, 0, len);
    uint64_t hlen = tq_le64(data);
    TQ_FORWARD(tq_st_check_prefix(file, hlen, len));
    tq_tvec tv = {0};
    tq_status rc = tq_st_parse_header(file, 0, (const char*)data + 8, (size_t)hlen, 8 + hlen, len, &tv);
    if (rc == TQ_OK && n_tensors) *n_tensors = tv.n;
    free(tv.v);
    return rc;
}

// ------------------------------------------------------------------------------------------------
// index parsing

typedef struct {
    const char* name; /* points into the JSON tree */
    const char* file;
    int file_idx;
} tq_ientry;

typedef struct {
    json_t* root;
    tq_ientry* e;
    int64_t n;
    const char** files; /* distinct, sorted */
    int nfiles;
} tq_index;

static void tq_index_free(tq_index* ix)
{
    free(ix->e);
    free(ix->files);
    json_decref(ix->root);
    memset(ix, 0, sizeof *ix);
}

static int tq_ientry_by_file(const void* a, const void* b)
{
    return strcmp(((const tq_ientry*)a)->file, ((const tq_ientry*)b)->file);
}

static int tq_ientry_by_name(const void* a, const void* b)
{
    return strcmp(((const tq_ientry*)a)->name, ((const tq_ientry*)b)->name);
}

static tq_status tq_index_parse(const char* label, const char* text, size_t len, tq_index* ix)
{
    memset(ix, 0, sizeof *ix);
    json_error_t jerr;
    ix->root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!ix->root)
        return tq_fail(TQ_ERR_FORMAT, "%s: not valid JSON (line %d, column %d: %s): regenerate the index or re-download it",
                       label, jerr.line, jerr.column, jerr.text);
    tq_status rc = TQ_OK;
    json_t* map = json_is_object(ix->root) ? json_object_get(ix->root, "weight_map") : NULL;
    TQ_GOTO_FAIL(!json_is_object(map), TQ_ERR_FORMAT, out,
                 "%s: no \"weight_map\" object (expected {\"weight_map\": {\"tensor\": \"file.safetensors\"}})", label);
    json_t* meta = json_object_get(ix->root, "metadata");
    TQ_GOTO_FAIL(meta && !json_is_object(meta) && !json_is_null(meta), TQ_ERR_FORMAT, out,
                 "%s: \"metadata\" is not an object", label);
    size_t n = json_object_size(map);
    TQ_GOTO_FAIL(n == 0, TQ_ERR_FORMAT, out, "%s: \"weight_map\" is empty", label);
    ix->e = calloc(n, sizeof *ix->e);
    TQ_GOTO_FAIL(!ix->e, TQ_ERR_NOMEM, out, "no memory for %s", label);
    const char* key;
    json_t* val;
    json_object_foreach(map, key, val)
    {
        size_t kl = strlen(key);
        TQ_GOTO_FAIL(kl == 0 || kl >= TQ_MAX_NAME || !strcmp(key, "__metadata__"), TQ_ERR_FORMAT, out,
                     "%s: invalid tensor name in weight_map (%zu characters): %.80s", label, kl, key);
        TQ_GOTO_FAIL(!json_is_string(val), TQ_ERR_FORMAT, out, "%s: tensor %s: file name is not a string", label, key);
        const char* f = json_string_value(val);
        size_t fl = strlen(f);
        TQ_GOTO_FAIL(fl == 0 || fl >= 256 || strchr(f, '/') || !strcmp(f, ".") || !strcmp(f, ".."), TQ_ERR_FORMAT, out,
                     "%s: tensor %s: file \"%.80s\" must be a plain file name in the checkpoint directory", label, key, f);
        ix->e[ix->n].name = key;
        ix->e[ix->n].file = f;
        ix->n++;
    }
    /* distinct files */
    qsort(ix->e, (size_t)ix->n, sizeof *ix->e, tq_ientry_by_file);
    ix->files = malloc((size_t)ix->n * sizeof *ix->files);
    TQ_GOTO_FAIL(!ix->files, TQ_ERR_NOMEM, out, "no memory for %s", label);
    for (int64_t i = 0; i < ix->n; i++) {
        if (i == 0 || strcmp(ix->e[i].file, ix->e[i - 1].file)) ix->files[ix->nfiles++] = ix->e[i].file;
        ix->e[i].file_idx = ix->nfiles - 1;
    }
    qsort(ix->e, (size_t)ix->n, sizeof *ix->e, tq_ientry_by_name);
out:
    if (rc != TQ_OK) tq_index_free(ix);
    return rc;
}

tq_status tq_st_validate_index_text(const char* text, size_t len, const char* label, int64_t* n_entries, int* n_files)
{
    if (n_entries) *n_entries = 0;
    if (n_files) *n_files = 0;
    if (!text && len) return tq_fail(TQ_ERR_ARG, "tq_st_validate_index_text: NULL text");
    tq_index ix;
    TQ_FORWARD(tq_index_parse(label ? label : "(index)", text ? text : "", len, &ix));
    if (n_entries) *n_entries = ix.n;
    if (n_files) *n_files = ix.nfiles;
    tq_index_free(&ix);
    return TQ_OK;
}

// ------------------------------------------------------------------------------------------------
// opening a checkpoint

static int tq_tensor_by_name(const void* a, const void* b)
{
    return strcmp(((const tq_tensor_info*)a)->name, ((const tq_tensor_info*)b)->name);
}

static tq_status tq_ckpt_open_file(tq_ckpt* c, int idx, tq_tvec* tv)
{
    const char* path = c->paths[idx];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return tq_errno_status(errno, "opening checkpoint file", path);
    c->fds[idx] = fd;
    struct stat st;
    if (fstat(fd, &st) != 0) return tq_errno_status(errno, "stat of", path);
    if (!S_ISREG(st.st_mode)) return tq_fail(TQ_ERR_FORMAT, "%s is not a regular file", path);
    c->sizes[idx] = (uint64_t)st.st_size;
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    unsigned char pre[8];
    if (c->sizes[idx] < 8) return tq_st_check_prefix(path, 0, c->sizes[idx]);
    TQ_FORWARD(tq_pread_full(fd, pre, 8, 0, path));
    uint64_t hlen = tq_le64(pre);
    TQ_FORWARD(tq_st_check_prefix(path, hlen, c->sizes[idx]));
    char* hdr = malloc((size_t)hlen + 1);
    if (!hdr) return tq_fail(TQ_ERR_NOMEM, "no memory for the %llu-byte header of %s", (unsigned long long)hlen, path);
    tq_status rc = tq_pread_full(fd, hdr, (size_t)hlen, 8, path);
    if (rc == TQ_OK) rc = tq_st_parse_header(path, idx, hdr, (size_t)hlen, 8 + hlen, c->sizes[idx], tv);
    free(hdr);
    return rc;
}

static tq_status tq_ckpt_alloc_files(tq_ckpt* c, int n)
{
    c->paths = calloc((size_t)n, sizeof *c->paths);
    c->fds = malloc((size_t)n * sizeof *c->fds);
    c->sizes = calloc((size_t)n, sizeof *c->sizes);
    if (!c->paths || !c->fds || !c->sizes) return tq_fail(TQ_ERR_NOMEM, "no memory to open %s", c->dir);
    for (int i = 0; i < n; i++) c->fds[i] = -1;
    c->nfiles = n;
    return TQ_OK;
}

static tq_status tq_ckpt_set_path(tq_ckpt* c, int i, const char* dir, const char* name)
{
    size_t need = strlen(dir) + strlen(name) + 2;
    c->paths[i] = malloc(need);
    if (!c->paths[i]) return tq_fail(TQ_ERR_NOMEM, "no memory");
    snprintf(c->paths[i], need, "%s/%s", dir, name);
    return TQ_OK;
}

/* Sharded checkpoint: parse the index, open every file it names, cross-check. */
static tq_status tq_ckpt_open_index(tq_ckpt* c, const char* index_path, tq_tvec* tv)
{
    char* text = NULL;
    size_t len = 0;
    TQ_FORWARD(tq_read_file(index_path, &text, &len));
    tq_index ix;
    tq_status rc = tq_index_parse(index_path, text, len, &ix);
    free(text);
    if (rc != TQ_OK) return rc;
    TQ_CHECK_GOTO(tq_ckpt_alloc_files(c, ix.nfiles), out);
    for (int f = 0; f < ix.nfiles; f++) {
        TQ_CHECK_GOTO(tq_ckpt_set_path(c, f, c->dir, ix.files[f]), out);
        if (!tq_file_exists(c->paths[f])) {
            const char* example = "";
            for (int64_t i = 0; i < ix.n; i++)
                if (ix.e[i].file_idx == f) {
                    example = ix.e[i].name;
                    break;
                }
            rc = tq_fail(TQ_ERR_NOTFOUND,
                         "%s names file %s (e.g. for tensor %s) but %s does not exist: the download is incomplete; "
                         "fetch the missing shard",
                         index_path, ix.files[f], example, c->paths[f]);
            goto out;
        }
    }
    for (int f = 0; f < ix.nfiles; f++) {
        int64_t before = tv->n;
        TQ_CHECK_GOTO(tq_ckpt_open_file(c, f, tv), out);
        /* every tensor in this file must be mapped to this file by the index */
        for (int64_t i = before; i < tv->n; i++) {
            tq_ientry key = {.name = tv->v[i].name};
            const tq_ientry* hit = bsearch(&key, ix.e, (size_t)ix.n, sizeof *ix.e, tq_ientry_by_name);
            TQ_GOTO_FAIL(!hit, TQ_ERR_FORMAT, out,
                         "%s: tensor %s is in the file but not in %s: the index is stale; regenerate it or re-download "
                         "the checkpoint",
                         c->paths[f], tv->v[i].name, index_path);
            TQ_GOTO_FAIL(hit->file_idx != f, TQ_ERR_FORMAT, out,
                         "%s: tensor %s is in this file but %s maps it to %s: the index is stale; regenerate it",
                         c->paths[f], tv->v[i].name, index_path, hit->file);
        }
    }
    /* every index entry found: entries in files are unique and each maps to its own file, so counts match
     * exactly when nothing is missing. Name the first missing one otherwise. */
    if (tv->n != ix.n) {
        qsort(tv->v, (size_t)tv->n, sizeof *tv->v, tq_tensor_by_name);
        for (int64_t i = 0; i < ix.n; i++) {
            tq_tensor_info key;
            snprintf(key.name, sizeof key.name, "%s", ix.e[i].name);
            if (!bsearch(&key, tv->v, (size_t)tv->n, sizeof *tv->v, tq_tensor_by_name)) {
                rc = tq_fail(TQ_ERR_FORMAT,
                             "%s maps tensor %s to %s but that file does not contain it: the shard is from another "
                             "version of the checkpoint; re-download it",
                             index_path, ix.e[i].name, c->paths[ix.e[i].file_idx]);
                goto out;
            }
        }
        rc = tq_fail(TQ_ERR_FORMAT, "%s: %lld index entries but %lld tensors found", index_path, (long long)ix.n,
                     (long long)tv->n);
    }
out:
    tq_index_free(&ix);
    return rc;
}

static int tq_ends_with(const char* s, const char* suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

tq_status tq_ckpt_open(const char* path, tq_ckpt** out)
{
    if (!path || !out) return tq_fail(TQ_ERR_ARG, "tq_ckpt_open: NULL argument");
    *out = NULL;
    if (strlen(path) >= 3800) return tq_fail(TQ_ERR_ARG, "checkpoint path too long: %s", path);
    struct stat st;
    if (stat(path, &st) != 0) {
        int err = errno;
        return tq_fail(err == ENOENT ? TQ_ERR_NOTFOUND : TQ_ERR_IO, "checkpoint %s: %s; give a Hugging Face checkpoint directory (config.json + *.safetensors) or one .safetensors file",
                       path, strerror(err));
    }
    tq_ckpt* c = calloc(1, sizeof *c);
    if (!c) return tq_fail(TQ_ERR_NOMEM, "no memory to open %s", path);
    tq_tvec tv = {0};
    tq_status rc = TQ_OK;
    char idx_path[4200], single[4200], cfg[4200];
    int use_index = 0;
    const char* single_name = NULL;
    if (S_ISDIR(st.st_mode)) {
        snprintf(c->dir, sizeof c->dir, "%s", path);
        size_t dl = strlen(c->dir);
        while (dl > 1 && c->dir[dl - 1] == '/') c->dir[--dl] = '\0';
        snprintf(idx_path, sizeof idx_path, "%s/%s", c->dir, TQ_ST_INDEX);
        snprintf(single, sizeof single, "%s/%s", c->dir, TQ_ST_SINGLE);
        if (tq_file_exists(idx_path)) use_index = 1;
        else if (tq_file_exists(single)) single_name = TQ_ST_SINGLE;
        else {
            char other[256] = "";
            DIR* d = opendir(c->dir);
            struct dirent* de;
            while (d && (de = readdir(d)))
                if (tq_ends_with(de->d_name, ".safetensors")) {
                    snprintf(other, sizeof other, "%s", de->d_name);
                    break;
                }
            if (d) closedir(d);
            if (other[0])
                rc = tq_fail(TQ_ERR_NOTFOUND,
                             "%s has %s but neither %s nor %s: fetch the index of the sharded checkpoint, or pass the "
                             ".safetensors file itself",
                             c->dir, other, TQ_ST_SINGLE, TQ_ST_INDEX);
            else
                rc = tq_fail(TQ_ERR_NOTFOUND,
                             "%s has neither %s nor %s: pass a Hugging Face checkpoint directory (tqpipe convert makes "
                             "one from a llama2.c .bin, tqpipe synth a synthetic one)",
                             c->dir, TQ_ST_SINGLE, TQ_ST_INDEX);
            goto fail;
        }
    } else {
        /* a file: the directory is its parent (config.json is looked up there) */
        snprintf(c->dir, sizeof c->dir, "%s", path);
        char* slash = strrchr(c->dir, '/');
        if (slash == c->dir) c->dir[1] = '\0';
        else if (slash) *slash = '\0';
        else snprintf(c->dir, sizeof c->dir, ".");
        const char* base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
        if (tq_ends_with(path, ".index.json")) {
            snprintf(idx_path, sizeof idx_path, "%s", path);
            use_index = 1;
        } else {
            single_name = base;
        }
    }
    if (use_index) {
        TQ_CHECK_GOTO(tq_ckpt_open_index(c, idx_path, &tv), fail);
    } else {
        TQ_CHECK_GOTO(tq_ckpt_alloc_files(c, 1), fail);
        TQ_CHECK_GOTO(tq_ckpt_set_path(c, 0, c->dir, single_name), fail);
        TQ_CHECK_GOTO(tq_ckpt_open_file(c, 0, &tv), fail);
    }
    qsort(tv.v, (size_t)tv.n, sizeof *tv.v, tq_tensor_by_name);
    for (int64_t i = 1; i < tv.n; i++)
        TQ_GOTO_FAIL(!strcmp(tv.v[i].name, tv.v[i - 1].name), TQ_ERR_FORMAT, fail,
                     "%s: tensor %s appears in %s and %s", c->dir, tv.v[i].name, c->paths[tv.v[i - 1].file_idx],
                     c->paths[tv.v[i].file_idx]);
    c->t = tv.v;
    c->n = tv.n;
    tv.v = NULL;
    snprintf(cfg, sizeof cfg, "%s/config.json", c->dir);
    if (tq_file_exists(cfg)) {
        size_t len = 0;
        TQ_CHECK_GOTO(tq_read_file(cfg, &c->config, &len), fail);
        json_error_t jerr;
        json_t* j = json_loadb(c->config, len, 0, &jerr);
        TQ_GOTO_FAIL(!j || !json_is_object(j), TQ_ERR_FORMAT, fail,
                     "%s is not a JSON object (line %d: %s): fix or re-download it", cfg, j ? 0 : jerr.line,
                     j ? "not an object" : jerr.text);
        json_decref(j);
    }
    *out = c;
    return TQ_OK;
fail:
    free(tv.v);
    tq_ckpt_free(&c);
    return rc;
}

void tq_ckpt_free(tq_ckpt** pc)
{
    if (!pc || !*pc) return;
    tq_ckpt* c = *pc;
    for (int i = 0; i < c->nfiles; i++) {
        if (c->fds && c->fds[i] >= 0) close(c->fds[i]);
        if (c->paths) free(c->paths[i]);
    }
    free(c->paths);
    free(c->fds);
    free(c->sizes);
    free(c->t);
    free(c->config);
    free(c);
    *pc = NULL;
}

// ------------------------------------------------------------------------------------------------
// accessors

int64_t tq_ckpt_count(const tq_ckpt* c) { return c ? c->n : 0; }

const tq_tensor_info* tq_ckpt_tensor(const tq_ckpt* c, int64_t i)
{
    return (c && i >= 0 && i < c->n) ? &c->t[i] : NULL;
}

const tq_tensor_info* tq_ckpt_find(const tq_ckpt* c, const char* name)
{
    if (!c || !name || strlen(name) >= TQ_MAX_NAME) return NULL;
    tq_tensor_info key;
    snprintf(key.name, sizeof key.name, "%s", name);
    return bsearch(&key, c->t, (size_t)c->n, sizeof *c->t, tq_tensor_by_name);
}

int tq_ckpt_file_count(const tq_ckpt* c) { return c ? c->nfiles : 0; }

const char* tq_ckpt_file_path(const tq_ckpt* c, int file_idx)
{
    return (c && file_idx >= 0 && file_idx < c->nfiles) ? c->paths[file_idx] : NULL;
}

const char* tq_ckpt_dir(const tq_ckpt* c) { return c ? c->dir : NULL; }

const char* tq_ckpt_config_json(const tq_ckpt* c) { return c ? c->config : NULL; }

int64_t tq_tensor_cols(const tq_tensor_info* t) { return (t && t->ndim > 0) ? t->shape[t->ndim - 1] : 1; }

int64_t tq_tensor_rows(const tq_tensor_info* t)
{
    if (!t) return 0;
    int64_t r = 1;
    for (int d = 0; d + 1 < t->ndim; d++) r *= t->shape[d];
    return r;
}

int64_t tq_tensor_numel(const tq_tensor_info* t)
{
    if (!t) return 0;
    int64_t r = 1;
    for (int d = 0; d < t->ndim; d++) r *= t->shape[d];
    return r;
}

// ------------------------------------------------------------------------------------------------
// reads

static tq_status tq_ckpt_range(const tq_ckpt* c, const tq_tensor_info* t, int64_t row0, int64_t nrows,
                               uint64_t* off, size_t* n)
{
    if (!c || !t) return tq_fail(TQ_ERR_ARG, "tq_ckpt_read: NULL argument");
    if (t->file_idx < 0 || t->file_idx >= c->nfiles)
        return tq_fail(TQ_ERR_ARG, "tensor %s: file index %d not in this checkpoint", t->name, t->file_idx);
    int64_t rows = tq_tensor_rows(t);
    if (row0 < 0 || nrows < 0 || row0 > rows || nrows > rows - row0)
        return tq_fail(TQ_ERR_ARG, "tensor %s: rows [%lld, %lld) outside its %lld rows", t->name, (long long)row0,
                       (long long)(row0 + nrows), (long long)rows);
    uint64_t rb = (uint64_t)tq_tensor_cols(t) * tq_dtype_size(t->dtype);
    *off = t->offset + (uint64_t)row0 * rb;
    *n = (size_t)((uint64_t)nrows * rb);
    return TQ_OK;
}

static tq_status tq_ckpt_pread(const tq_ckpt* c, const tq_tensor_info* t, void* dst, size_t n, uint64_t off)
{
    tq_status rc = tq_pread_full(c->fds[t->file_idx], dst, n, off, c->paths[t->file_idx]);
    if (rc != TQ_OK) {
        char prev[1024];
        snprintf(prev, sizeof prev, "%s", tq_last_error());
        tq_fail(rc, "reading tensor %s: %s", t->name, prev);
    }
    return rc;
}

tq_status tq_ckpt_read_raw(const tq_ckpt* c, const tq_tensor_info* t, int64_t row0, int64_t nrows, void* dst,
                           size_t dst_cap)
{
    uint64_t off;
    size_t n;
    TQ_FORWARD(tq_ckpt_range(c, t, row0, nrows, &off, &n));
    if (n > dst_cap)
        return tq_fail(TQ_ERR_ARG, "tensor %s: %lld rows need %zu bytes, buffer holds %zu", t->name, (long long)nrows, n,
                       dst_cap);
    if (n == 0) return TQ_OK;
    return tq_ckpt_pread(c, t, dst, n, off);
}

tq_status tq_ckpt_read_f32(const tq_ckpt* c, const tq_tensor_info* t, int64_t row0, int64_t nrows, float* dst,
                           size_t dst_cap)
{
    uint64_t off;
    size_t n;
    TQ_FORWARD(tq_ckpt_range(c, t, row0, nrows, &off, &n));
    size_t esz = tq_dtype_size(t->dtype);
    size_t numel = esz ? n / esz : 0;
    if (numel > dst_cap / sizeof(float))
        return tq_fail(TQ_ERR_ARG, "tensor %s: %lld rows need %zu fp32 bytes, buffer holds %zu", t->name,
                       (long long)nrows, numel * sizeof(float), dst_cap);
    if (numel == 0) return TQ_OK;
    if (t->dtype == TQ_F32) return tq_ckpt_pread(c, t, dst, n, off);
    /* 16-bit: read in chunks into a small staging buffer and widen */
    const size_t chunk = (size_t)1 << 19; /* elements: 1 MiB of bf16/f16 */
    uint16_t* buf = malloc((numel < chunk ? numel : chunk) * sizeof *buf);
    if (!buf) return tq_fail(TQ_ERR_NOMEM, "no memory to read tensor %s", t->name);
    tq_status rc = TQ_OK;
    for (size_t i = 0; i < numel && rc == TQ_OK; i += chunk) {
        size_t k = numel - i < chunk ? numel - i : chunk;
        rc = tq_ckpt_pread(c, t, buf, k * 2, off + i * 2);
        if (rc == TQ_OK) tq_convert_to_f32(dst + i, buf, t->dtype, k);
    }
    free(buf);
    return rc;
}

// ------------------------------------------------------------------------------------------------
// batched reads

typedef struct {
    int file;
    uint64_t off;
    int64_t idx;
} tq_forder;

static int tq_forder_cmp(const void* a, const void* b)
{
    const tq_forder* x = a;
    const tq_forder* y = b;
    if (x->file != y->file) return x->file < y->file ? -1 : 1;
    if (x->off != y->off) return x->off < y->off ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

tq_status tq_ckpt_file_order(const tq_ckpt* c, int64_t* idx, int64_t n)
{
    if (!c || !idx || n < c->n)
        return tq_fail(TQ_ERR_ARG, "tq_ckpt_file_order: need room for %lld indices", (long long)(c ? c->n : 0));
    tq_forder* o = malloc((size_t)(c->n + 1) * sizeof *o);
    if (!o) return tq_fail(TQ_ERR_NOMEM, "no memory to order the tensors of %s", c->dir);
    for (int64_t i = 0; i < c->n; i++) {
        o[i].file = c->t[i].file_idx;
        o[i].off = c->t[i].offset;
        o[i].idx = i;
    }
    qsort(o, (size_t)c->n, sizeof *o, tq_forder_cmp);
    for (int64_t i = 0; i < c->n; i++) idx[i] = o[i].idx;
    free(o);
    return TQ_OK;
}

tq_status tq_ckpt_read_batch(const tq_ckpt* c, const int64_t* idx, int64_t n, void* dst, size_t dst_cap)
{
    if (!c || (!idx && n > 0) || n < 0) return tq_fail(TQ_ERR_ARG, "tq_ckpt_read_batch: bad argument");
    char* out = dst;
    size_t used = 0;
    int64_t i = 0;
    while (i < n) {
        TQ_RETURN_IF(idx[i] < 0 || idx[i] >= c->n, TQ_ERR_ARG, "tq_ckpt_read_batch: tensor index %lld out of range",
                     (long long)idx[i]);
        const tq_tensor_info* first = &c->t[idx[i]];
        uint64_t run = first->nbytes;
        int64_t j = i + 1;
        while (j < n && idx[j] >= 0 && idx[j] < c->n) {
            const tq_tensor_info* t = &c->t[idx[j]];
            if (t->file_idx != first->file_idx || t->offset != first->offset + run) break;
            run += t->nbytes;
            j++;
        }
        TQ_RETURN_IF(run > dst_cap - used, TQ_ERR_ARG, "tq_ckpt_read_batch: buffer of %zu bytes too small at tensor %s",
                     dst_cap, first->name);
        if (run) TQ_FORWARD(tq_ckpt_pread(c, first, out + used, (size_t)run, first->offset));
        used += (size_t)run;
        i = j;
    }
    return TQ_OK;
}

// ------------------------------------------------------------------------------------------------
// a handle from a stored tensor table (pipeline/ckpt_table.c, helper pipe3; additive)

tq_status tq_ckpt_assemble(const char* dir, int nfiles, char** paths, int* fds, uint64_t* sizes, tq_tensor_info* t,
                           int64_t n, char* config, tq_ckpt** out)
{
    *out = NULL;
    tq_ckpt* c = calloc(1, sizeof *c);
    if (!c || strlen(dir) >= sizeof c->dir) {
        for (int i = 0; i < nfiles; i++) {
            if (fds && fds[i] >= 0) close(fds[i]);
            if (paths) free(paths[i]);
        }
        free(paths);
        free(fds);
        free(sizes);
        free(t);
        free(config);
        free(c);
        return tq_fail(TQ_ERR_NOMEM, "no memory to open %s", dir);
    }
    snprintf(c->dir, sizeof c->dir, "%s", dir);
    c->nfiles = nfiles;
    c->paths = paths;
    c->fds = fds;
    c->sizes = sizes;
    c->t = t;
    c->n = n;
    c->config = config;
    *out = c;
    return TQ_OK;
}
