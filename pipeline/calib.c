/* calib.c — calibration accumulators per linear layer input, exact cross-rank reduction, the
 * zstd-compressed H file (format in calib.h) and few-token pooling for MoE experts. */
#include "calib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h> /* defines: ZSTD_compress, ZSTD_decompress */

#include "fileio.h" /* defines: tq_write_file_atomic, tq_read_file, tq_mkdirs */
#include "hash.h"   /* defines: tq_xxh64 */
#include "linalg_gpu.h" /* defines: tq_linalg_use_gpu, tq_hess_add_gpu (helper gpu7) */

#define TQ_HESS_MAGIC "TQHESS1"
#define TQ_HESS_HDR 48
#define TQ_REDUCE_CHUNK ((int64_t)1 << 20) /* entries per allreduce: 24 MiB of limbs */

tq_status tq_calib_create(tq_calib** out)
{
    if (!out) return tq_fail(TQ_ERR_ARG, "calib: NULL argument");
    *out = calloc(1, sizeof **out);
    return *out ? TQ_OK : tq_fail(TQ_ERR_NOMEM, "calib: out of memory");
}

void tq_calib_free(tq_calib** pc)
{
    if (!pc || !*pc) return;
    for (int64_t i = 0; i < (*pc)->n; i++) tq_hess_release(&(*pc)->e[i].h);
    free((*pc)->e);
    free(*pc);
    *pc = NULL;
}

tq_status tq_calib_add(tq_calib* c, const char* name, int64_t d, int diag_only, int64_t* idx)
{
    if (!c || !name || strlen(name) >= TQ_MAX_NAME) return tq_fail(TQ_ERR_ARG, "calib: bad tensor name");
    if (tq_calib_find(c, name) >= 0) return tq_fail(TQ_ERR_ARG, "calib: tensor %s added twice", name);
    if (c->n == c->cap) {
        int64_t nc = c->cap ? 2 * c->cap : 64;
        tq_calib_entry* ne = realloc(c->e, (size_t)nc * sizeof *ne);
        if (!ne) return tq_fail(TQ_ERR_NOMEM, "calib: out of memory");
        c->e = ne;
        c->cap = nc;
    }
    tq_calib_entry* e = &c->e[c->n];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    TQ_FORWARD(tq_hess_init(&e->h, d, diag_only));
    if (idx) *idx = c->n;
    c->n++;
    return TQ_OK;
}

int64_t tq_calib_find(const tq_calib* c, const char* name)
{
    if (!c || !name) return -1;
    for (int64_t i = 0; i < c->n; i++)
        if (!strcmp(c->e[i].name, name)) return i;
    return -1;
}

tq_status tq_calib_observe(tq_calib* c, int64_t idx, const float* x, int64_t n, int64_t ldx)
{
    if (!c || idx < 0 || idx >= c->n) return tq_fail(TQ_ERR_ARG, "calib: bad accumulator index %lld", (long long)idx);
#ifdef TQ_HAVE_CUDA
    if (tq_linalg_use_gpu()) return tq_hess_add_gpu(&c->e[idx].h, x, n, ldx, c->e[idx].name);
#endif
    return tq_hess_add_ref(&c->e[idx].h, x, n, ldx, c->e[idx].name);
}

tq_status tq_calib_end_sequence(tq_calib* c)
{
    if (!c) return tq_fail(TQ_ERR_ARG, "calib: NULL argument");
    for (int64_t i = 0; i < c->n; i++)
        if (c->e[i].h.blk_rows > 0) TQ_FORWARD(tq_hess_flush(&c->e[i].h, c->e[i].name));
    return TQ_OK;
}

tq_status tq_calib_reduce(tq_calib* c, const tq_rt* rt)
{
    if (!c || !rt) return tq_fail(TQ_ERR_ARG, "calib reduce: NULL argument");
    tq_status local = TQ_OK;
    for (int64_t i = 0; i < c->n && local == TQ_OK; i++)
        if (c->e[i].h.blk_rows > 0)
            local = tq_fail(TQ_ERR_ARG, "calib reduce: %s has unflushed rows (call tq_calib_end_sequence first)",
                            c->e[i].name);
    /* every rank must hold the same entries: agree on the count first */
    uint64_t cnt[2] = {(uint64_t)c->n, 1};
    TQ_FORWARD(tq_rt_allreduce_sum_u64(rt, cnt, 2));
    if (local == TQ_OK && cnt[0] != (uint64_t)c->n * cnt[1])
        local = tq_fail(TQ_ERR_ARG, "calib reduce: ranks hold different numbers of accumulators");
    TQ_FORWARD(tq_rt_agree(rt, local));
    if (rt->size <= 1) return TQ_OK;
    uint64_t* limbs = malloc((size_t)(TQ_HESS_LIMBS * TQ_REDUCE_CHUNK) * sizeof(uint64_t));
    uint64_t* rows = malloc((size_t)(c->n > 0 ? c->n : 1) * sizeof(uint64_t));
    tq_status rc = TQ_OK;
    if (!limbs || !rows) rc = tq_fail(TQ_ERR_NOMEM, "calib reduce: out of memory");
    rc = tq_rt_agree(rt, rc);
    if (rc != TQ_OK) goto out;
    for (int64_t i = 0; i < c->n; i++) {
        tq_hess* h = &c->e[i].h;
        for (int64_t e0 = 0; e0 < h->n_entries; e0 += TQ_REDUCE_CHUNK) {
            int64_t ne = h->n_entries - e0 < TQ_REDUCE_CHUNK ? h->n_entries - e0 : TQ_REDUCE_CHUNK;
            tq_hess_export_limbs(h, e0, ne, limbs);
            TQ_CHECK_GOTO(tq_rt_allreduce_sum_u64(rt, limbs, (int)(TQ_HESS_LIMBS * ne)), out);
            tq_hess_import_limbs(h, e0, ne, limbs);
        }
        rows[i] = h->rows;
    }
    TQ_CHECK_GOTO(tq_rt_allreduce_sum_u64(rt, rows, (int)c->n), out);
    for (int64_t i = 0; i < c->n; i++) c->e[i].h.rows = rows[i];
out:
    free(limbs);
    free(rows);
    return rc;
}

tq_status tq_calib_finalize(const tq_calib* c, int64_t idx, double* out, uint64_t* rows)
{
    if (!c || idx < 0 || idx >= c->n) return tq_fail(TQ_ERR_ARG, "calib: bad accumulator index");
    const tq_hess* h = &c->e[idx].h;
    if (h->rows == 0)
        return tq_fail(TQ_ERR_ARG, "calib: no calibration token reached %s (more sequences, or pool it)",
                       c->e[idx].name);
    if (rows) *rows = h->rows;
    return tq_hess_finalize(h, h->rows, out);
}

// ------------------------------------------------------------------------------------------------
// files

static void put_u32(uint8_t* p, uint32_t v)
{
    memcpy(p, &v, 4);
}
static void put_u64(uint8_t* p, uint64_t v)
{
    memcpy(p, &v, 8);
}
static uint32_t get_u32(const uint8_t* p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static uint64_t get_u64(const uint8_t* p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

tq_status tq_hess_file_save(const char* path, const double* h, int64_t d, int diag_only, uint64_t rows)
{
    if (!path || !h || d <= 0) return tq_fail(TQ_ERR_ARG, "hessian file: bad arguments");
    int64_t ne = diag_only ? d : d * (d + 1) / 2;
    size_t raw = (size_t)ne * sizeof(double);
    double* pay = malloc(raw);
    size_t bound = ZSTD_compressBound(raw);
    uint8_t* buf = malloc(TQ_HESS_HDR + bound);
    tq_status rc = TQ_OK;
    TQ_GOTO_FAIL(!pay || !buf, TQ_ERR_NOMEM, out, "hessian file %s: out of memory", path);
    if (diag_only) {
        memcpy(pay, h, raw);
    } else {
        int64_t e = 0;
        for (int64_t i = 0; i < d; i++)
            for (int64_t j = i; j < d; j++) pay[e++] = h[i * d + j];
    }
    memcpy(buf, TQ_HESS_MAGIC, 8);
    put_u32(buf + 8, 1);
    put_u32(buf + 12, diag_only ? 1u : 0u);
    put_u64(buf + 16, (uint64_t)d);
    put_u64(buf + 24, rows);
    put_u64(buf + 32, (uint64_t)raw);
    put_u64(buf + 40, tq_xxh64(pay, raw, 0));
    size_t z = ZSTD_compress(buf + TQ_HESS_HDR, bound, pay, raw, 3);
    TQ_GOTO_FAIL(ZSTD_isError(z), TQ_ERR_IO, out, "hessian file %s: zstd: %s", path, ZSTD_getErrorName(z));
    rc = tq_write_file_atomic(path, buf, TQ_HESS_HDR + z);
out:
    free(pay);
    free(buf);
    return rc;
}

tq_status tq_hess_file_load(const char* path, double** h, int64_t* d, int* diag_only, uint64_t* rows)
{
    if (!path || !h || !d || !diag_only) return tq_fail(TQ_ERR_ARG, "hessian file: NULL argument");
    *h = NULL;
    char* text = NULL;
    size_t len = 0;
    TQ_FORWARD(tq_read_file(path, &text, &len));
    tq_status rc = TQ_OK;
    double* pay = NULL;
    double* full = NULL;
    const uint8_t* b = (const uint8_t*)text;
    TQ_GOTO_FAIL(len < TQ_HESS_HDR || memcmp(b, TQ_HESS_MAGIC, 8), TQ_ERR_FORMAT, out,
                 "%s: not a tqpipe Hessian file (bad magic or truncated header)", path);
    TQ_GOTO_FAIL(get_u32(b + 8) != 1, TQ_ERR_FORMAT, out, "%s: unsupported version %u", path, get_u32(b + 8));
    int diag = (int)(get_u32(b + 12) & 1u);
    int64_t dd = (int64_t)get_u64(b + 16);
    uint64_t raw = get_u64(b + 32);
    TQ_GOTO_FAIL(dd <= 0 || dd > (1 << 20), TQ_ERR_FORMAT, out, "%s: bad dimension %lld", path, (long long)dd);
    int64_t ne = diag ? dd : dd * (dd + 1) / 2;
    TQ_GOTO_FAIL(raw != (uint64_t)ne * sizeof(double), TQ_ERR_FORMAT, out, "%s: payload size does not match d", path);
    pay = malloc((size_t)raw);
    TQ_GOTO_FAIL(!pay, TQ_ERR_NOMEM, out, "%s: out of memory", path);
    size_t got = ZSTD_decompress(pay, (size_t)raw, b + TQ_HESS_HDR, len - TQ_HESS_HDR);
    TQ_GOTO_FAIL(ZSTD_isError(got) || got != raw, TQ_ERR_CORRUPT, out, "%s: corrupt zstd payload (%s)", path,
                 ZSTD_isError(got) ? ZSTD_getErrorName(got) : "short");
    TQ_GOTO_FAIL(tq_xxh64(pay, (size_t)raw, 0) != get_u64(b + 40), TQ_ERR_CORRUPT, out,
                 "%s: checksum mismatch: recompute the calibration", path);
    if (diag) {
        full = pay;
        pay = NULL;
    } else {
        full = malloc((size_t)(dd * dd) * sizeof(double));
        TQ_GOTO_FAIL(!full, TQ_ERR_NOMEM, out, "%s: out of memory", path);
        int64_t e = 0;
        for (int64_t i = 0; i < dd; i++)
            for (int64_t j = i; j < dd; j++, e++) full[i * dd + j] = full[j * dd + i] = pay[e];
    }
    *h = full;
    full = NULL;
    *d = dd;
    *diag_only = diag;
    if (rows) *rows = get_u64(b + 24);
out:
    free(text);
    free(pay);
    free(full);
    return rc;
}

tq_status tq_calib_save(const tq_calib* c, const char* dir)
{
    if (!c || !dir) return tq_fail(TQ_ERR_ARG, "calib save: NULL argument");
    TQ_FORWARD(tq_mkdirs(dir));
    for (int64_t i = 0; i < c->n; i++) {
        const tq_hess* h = &c->e[i].h;
        if (h->rows == 0) continue; /* nothing observed: callers pool or skip it */
        size_t n = h->diag_only ? (size_t)h->d : (size_t)h->d * (size_t)h->d;
        double* out = malloc(n * sizeof(double));
        if (!out) return tq_fail(TQ_ERR_NOMEM, "calib save: out of memory for %s", c->e[i].name);
        tq_status rc = tq_hess_finalize(h, h->rows, out);
        char path[4096 + TQ_MAX_NAME];
        snprintf(path, sizeof path, "%s/%s.hess.zst", dir, c->e[i].name);
        if (rc == TQ_OK) rc = tq_hess_file_save(path, out, h->d, h->diag_only, h->rows);
        free(out);
        TQ_FORWARD(rc);
    }
    return TQ_OK;
}

void tq_calib_pool(double* h_e, uint64_t n_e, const double* h_pool, int64_t d, int diag_only, uint64_t n_min)
{
    if (n_min == 0) n_min = (uint64_t)d;
    if (n_e >= n_min) return;
    double a = (double)n_e / (double)n_min, b = 1.0 - a;
    size_t n = diag_only ? (size_t)d : (size_t)d * (size_t)d;
    for (size_t k = 0; k < n; k++) h_e[k] = a * h_e[k] + b * h_pool[k];
}

void tq_calib_input_key(const char* weight, char out[TQ_MAX_NAME])
{
    snprintf(out, TQ_MAX_NAME, "%s", weight);
    /* hybrid families (helper "hybrid"): DeltaNet in_proj_z/b/a share in_proj_qkv's input, qwen3_next's
     * in_proj_ba shares in_proj_qkvz's, the shared expert's gate shares its gate_proj's */
    static const char* const from[] = {"self_attn.k_proj.weight", "self_attn.v_proj.weight", "up_proj.weight",
                                       "linear_attn.in_proj_z.weight", "linear_attn.in_proj_b.weight",
                                       "linear_attn.in_proj_a.weight", "linear_attn.in_proj_ba.weight",
                                       "mlp.shared_expert_gate.weight"};
    static const char* const to[] = {"self_attn.q_proj.weight", "self_attn.q_proj.weight", "gate_proj.weight",
                                     "linear_attn.in_proj_qkv.weight", "linear_attn.in_proj_qkv.weight",
                                     "linear_attn.in_proj_qkv.weight", "linear_attn.in_proj_qkvz.weight",
                                     "mlp.shared_expert.gate_proj.weight"};
    size_t lw = strlen(out);
    for (int i = 0; i < (int)(sizeof from / sizeof from[0]); i++) {
        size_t lf = strlen(from[i]);
        if (lw >= lf && !strcmp(out + lw - lf, from[i]) && (lw == lf || out[lw - lf - 1] == '.')) {
            snprintf(out + lw - lf, TQ_MAX_NAME - (lw - lf), "%s", to[i]);
            return;
        }
    }
}
