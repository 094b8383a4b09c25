/* calibrate.c — the calibration driver: token windows through the forward pass (pipeline/model.h, its
 * linear-input hook), one H accumulator per linear input (pipeline/calib.h), few-token pooling of MoE
 * experts, zstd files. Two rank layouts with identical files (calib.h, tq_calibrate): sequence split
 * (whole model per rank, exact reduction across ranks, rank 0 writes) and layer split (pipeline
 * parallel: each rank its layers and their accumulators, activations passed rank to rank with
 * pipeline/comm_infer.h, each rank writes its own files). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch.h"     /* defines: tq_arch, tq_role_is_linear */
#include "calib.h"
#include "comm_infer.h" /* defines: tq_comm_send_f32, tq_comm_recv_f32 */
#include "fileio.h"   /* defines: tq_file_exists, tq_mkdirs */
#include "log.h"      /* defines: TQ_LOG0 */
#include "model.h"    /* defines: tq_model_*, tq_wsource_ckpt */
#include "ops.h"      /* defines: tq_ops_set_threads */
#include "validate.h" /* defines: tq_load_tokens */

/* The hook may be missing if model.c changes: a weak reference lets tqcore link either way. */
extern void tq_model_set_observer(tq_model* m, tq_linear_observer fn, void* ctx) __attribute__((weak));

#define TQ_HEAD_CHUNK 64 /* rows per output-head call during calibration (bounds the logits buffer) */

typedef struct {
    tq_calib* c;
} obs_ctx;

static tq_status on_input(void* ctx, const char* weight, const float* x, int rows, int cols)
{
    obs_ctx* oc = ctx;
    int64_t idx = tq_calib_find(oc->c, weight);
    if (idx < 0) return tq_fail(TQ_ERR_ARG, "calibrate: the forward pass reported an unknown linear input %s", weight);
    if (oc->c->e[idx].h.d != cols)
        return tq_fail(TQ_ERR_ARG, "calibrate: %s input has %d columns, expected %lld", weight, cols,
                       (long long)oc->c->e[idx].h.d);
    return tq_calib_observe(oc->c, idx, x, rows, cols);
}

static int ends_with(const char* s, const char* suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* The input keys the hook reports (model.h): q_proj, o_proj, gate_proj, down_proj, mlp.gate (router). */
static int is_input_key(const char* name)
{
    return ends_with(name, ".self_attn.q_proj.weight") || ends_with(name, ".self_attn.o_proj.weight") ||
           ends_with(name, ".gate_proj.weight") || ends_with(name, ".down_proj.weight") ||
           ends_with(name, ".mlp.gate.weight") || ends_with(name, ".linear_attn.in_proj_qkv.weight") ||
           ends_with(name, ".linear_attn.in_proj_qkvz.weight") || ends_with(name, ".linear_attn.out_proj.weight");
}

/* "P.mlp.experts.E.S" -> pool key "P.mlp.experts.*.S" (0 when not an expert). */
static int expert_pool_key(const char* name, char* key, size_t cap)
{
    const char* p = strstr(name, ".mlp.experts.");
    if (!p) return 0;
    const char* e = p + strlen(".mlp.experts.");
    const char* dot = strchr(e, '.');
    if (!dot) return 0;
    snprintf(key, cap, "%.*s*%s", (int)(e - name), name, dot);
    return 1;
}

/* Bytes of one accumulator of input dimension d (hessian.h). */
static uint64_t acc_bytes(int64_t d, int diag_only)
{
    return diag_only ? 20u * (uint64_t)d : 4u * (uint64_t)(d * d) + 16u * (uint64_t)(d * (d + 1) / 2);
}

/* 1 when tensor t gets a diagonal accumulator: diag 1 = every input, 2 = routed experts only. */
static int tensor_diag(const tq_arch_tensor* t, int diag)
{
    return diag == 1 || (diag == 2 && t->expert >= 0);
}

/* Index of the tensor whose input the output head reads (lm_head, or the tied embedding), -1 if none. */
static int64_t head_tensor(const tq_arch* a)
{
    for (int64_t i = 0; i < a->n_tensors; i++) {
        const tq_arch_tensor* t = &a->tensors[i];
        if (t->ndim == 2 && (t->role == TQ_ROLE_LM_HEAD || (a->tied_embeddings && t->role == TQ_ROLE_EMBED))) return i;
    }
    return -1;
}

/* 1 when arch tensor t gets an accumulator (a linear input key the hook reports). */
static int calibrated(const tq_arch_tensor* t)
{
    return tq_role_is_linear(t->role) && t->ndim == 2 && is_input_key(t->name);
}

/* Entry indices ordered so that the experts of one layer and projection (same pool key) are adjacent. */
typedef struct {
    int64_t idx;
    int expert;
    char key[TQ_MAX_NAME + 8];
} pool_slot;

static int pool_slot_cmp(const void* pa, const void* pb)
{
    const pool_slot* a = pa;
    const pool_slot* b = pb;
    if (a->expert != b->expert) return a->expert - b->expert;
    int k = a->expert ? strcmp(a->key, b->key) : 0;
    return k ? k : (a->idx > b->idx) - (a->idx < b->idx);
}

/* Finalize, pool experts with few tokens, and write every accumulator of c that has tokens (or is a
 * pooled expert). Local: the caller holds every expert of each layer it writes. Entries are visited
 * grouped by pool key, and each group's pooled H is built once, the first time a member needs it
 * (linear in the number of entries: a 122B layer has 256 experts x 2 inputs). */
static tq_status save_entries(const tq_calib* c, const tq_calib_opts* o, tq_calib_stats* st)
{
    tq_status rc = tq_mkdirs(o->out_dir);
    size_t cap = 1;
    for (int64_t i = 0; i < c->n; i++) {
        size_t need = c->e[i].h.diag_only ? (size_t)c->e[i].h.d : (size_t)c->e[i].h.d * (size_t)c->e[i].h.d;
        if (need > cap) cap = need;
    }
    double* hbuf = malloc(cap * sizeof(double));
    double* pbuf = malloc(cap * sizeof(double));
    pool_slot* slots = malloc((size_t)(c->n > 0 ? c->n : 1) * sizeof *slots);
    if (rc == TQ_OK && (!hbuf || !pbuf || !slots)) rc = tq_fail(TQ_ERR_NOMEM, "calibrate: out of memory writing H");
    for (int64_t i = 0; rc == TQ_OK && i < c->n; i++) {
        slots[i].idx = i;
        slots[i].key[0] = '\0';
        slots[i].expert = expert_pool_key(c->e[i].name, slots[i].key, sizeof slots[i].key);
    }
    if (rc == TQ_OK) qsort(slots, (size_t)c->n, sizeof *slots, pool_slot_cmp);
    int64_t group0 = 0;      /* first slot of the current pool-key group */
    int pool_state = 0;      /* for the current group: 0 not built, 1 built in pbuf, -1 no token reached it */
    uint64_t pool_rows = 0;
    for (int64_t s = 0; s < c->n && rc == TQ_OK; s++) {
        const pool_slot* sl = &slots[s];
        const tq_calib_entry* e = &c->e[sl->idx];
        if (s > 0 && (sl->expert != slots[s - 1].expert || (sl->expert && strcmp(sl->key, slots[s - 1].key)))) {
            group0 = s;
            pool_state = 0;
        }
        uint64_t nmin = o->min_expert_tokens ? o->min_expert_tokens : (uint64_t)e->h.d;
        int expert = sl->expert;
        if (e->h.rows == 0 && !expert) {
            TQ_LOG(TQ_LOG_WARN, "calibrate: no token reached %s: no H written", e->name);
            continue;
        }
        if (e->h.rows > 0) rc = tq_hess_finalize(&e->h, e->h.rows, hbuf);
        if (rc == TQ_OK && expert && e->h.rows < nmin) {
            if (pool_state == 0) {
                /* pool: the exact sums of every expert of this layer and projection (this group) */
                tq_hess pool;
                rc = tq_hess_init(&pool, e->h.d, e->h.diag_only);
                for (int64_t j = group0; j < c->n && rc == TQ_OK; j++) {
                    if (j > group0 && strcmp(slots[j].key, slots[group0].key)) break;
                    rc = tq_hess_merge(&pool, &c->e[slots[j].idx].h);
                }
                pool_rows = pool.rows;
                if (rc == TQ_OK && pool.rows > 0) rc = tq_hess_finalize(&pool, pool.rows, pbuf);
                tq_hess_release(&pool);
                pool_state = pool_rows > 0 ? 1 : -1;
                if (rc == TQ_OK && pool_state < 0)
                    TQ_LOG(TQ_LOG_WARN, "calibrate: no token reached any expert of %s: no H written", sl->key);
            }
            if (pool_state < 0) continue;
            if (rc == TQ_OK) {
                if (e->h.rows == 0) memset(hbuf, 0, cap * sizeof(double));
                tq_calib_pool(hbuf, e->h.rows, pbuf, e->h.d, e->h.diag_only, nmin);
                st->pooled++;
            }
        }
        if (rc == TQ_OK) {
            char path[4096 + TQ_MAX_NAME];
            snprintf(path, sizeof path, "%s/%s.hess.zst", o->out_dir, e->name);
            rc = tq_hess_file_save(path, hbuf, e->h.d, e->h.diag_only, e->h.rows);
            st->n_inputs++;
        }
    }
    free(slots);
    free(hbuf);
    free(pbuf);
    return rc;
}

/* Head rows x [T x hidden] (tq_model_head normalizes in place, then x holds the head's input rows). */
static tq_status observe_head(tq_model* m, tq_calib* c, int64_t head_idx, float* x, int T, float* logits)
{
    for (int r0 = 0; r0 < T; r0 += TQ_HEAD_CHUNK) {
        int nr = T - r0 < TQ_HEAD_CHUNK ? T - r0 : TQ_HEAD_CHUNK;
        float* xr = x + (size_t)r0 * tq_model_hidden(m);
        TQ_FORWARD(tq_model_head(m, xr, nr, logits));
        TQ_FORWARD(tq_calib_observe(c, head_idx, xr, nr, tq_model_hidden(m)));
    }
    return TQ_OK;
}

/* Per-rank figures of layer range [l0, l1) (first / last stage flags) of arch a. */
static void range_mem(const tq_arch* a, int l0, int l1, int first, int last, int len, int diag, uint64_t* w,
                      uint64_t* acc, uint64_t* buf)
{
    *w = *acc = 0;
    int64_t hi = head_tensor(a);
    int has_lm_head = 0;
    for (int64_t i = 0; i < a->n_tensors; i++) has_lm_head |= a->tensors[i].role == TQ_ROLE_LM_HEAD;
    for (int64_t i = 0; i < a->n_tensors; i++) {
        const tq_arch_tensor* t = &a->tensors[i];
        uint64_t b = 4u * (uint64_t)tq_arch_tensor_numel(t);
        if (t->layer >= 0) {
            if (t->layer < l0 || t->layer >= l1) continue;
            *w += b;
            if (calibrated(t)) *acc += acc_bytes(t->shape[1], tensor_diag(t, diag));
        } else if (t->role == TQ_ROLE_EMBED) {
            if (first || (last && !has_lm_head)) *w += b;
        } else if (last) {
            *w += b; /* final norm, lm_head */
        }
    }
    if (last && hi >= 0) *acc += acc_bytes(a->tensors[hi].shape[1], diag == 1);
    uint64_t kv = 0;
    for (int l = l0; l < l1; l++)
        if (a->layer_types[l] == TQ_LAYER_FULL_ATTN) kv += 2u * 2u * (uint64_t)a->n_kv_heads * (uint64_t)a->head_dim * (uint64_t)len;
    *buf = 4u * (uint64_t)len * (uint64_t)a->hidden + kv + (last ? 4u * TQ_HEAD_CHUNK * (uint64_t)a->vocab : 0);
}

tq_status tq_calib_estimate(const char* config_json, int ranks, int seq_len, int diag, tq_calib_mem* out)
{
    if (!config_json || !out || ranks < 1) return tq_fail(TQ_ERR_ARG, "calibrate estimate: bad arguments");
    memset(out, 0, sizeof *out);
    tq_arch* a = NULL;
    TQ_FORWARD(tq_arch_from_json(config_json, &a));
    const int L = a->n_layers;
    int len = seq_len > 0 ? seq_len : 2048;
    if (a->max_position > 0 && len > a->max_position) len = a->max_position;
    out->ranks = ranks;
    out->layers = L;
    out->len = len;
    out->active = ranks < L ? ranks : L;
    if (out->active < 1) out->active = 1;
    range_mem(a, 0, L, 1, 1, len, diag, &out->seq_weights, &out->seq_acc, &out->seq_buffers);
    for (int r = 0; r < out->active; r++) {
        uint64_t w, acc, buf;
        int l0 = (int)((int64_t)r * L / out->active), l1 = (int)((int64_t)(r + 1) * L / out->active);
        range_mem(a, l0, l1, r == 0, r == out->active - 1, len, diag, &w, &acc, &buf);
        if (w + acc + buf > out->lay_total) {
            out->lay_total = w + acc + buf;
            out->lay_weights = w;
            out->lay_acc = acc;
            out->lay_buffers = buf;
        }
    }
    for (int64_t i = 0; i < a->n_tensors; i++) out->n_inputs += calibrated(&a->tensors[i]);
    out->n_inputs += head_tensor(a) >= 0;
    tq_arch_free(&a);
    return TQ_OK;
}

tq_status tq_calibrate(const tq_rt* rt, const tq_calib_opts* o, tq_calib_stats* st)
{
    if (!rt || !o || !o->model || !o->data || !o->out_dir || !st)
        return tq_fail(TQ_ERR_ARG, "calibrate: missing arguments (model, data, output directory)");
    memset(st, 0, sizeof *st);
    tq_status rc = TQ_OK;
    tq_wsource* src = NULL;
    tq_arch* arch = NULL;
    tq_model* m = NULL;
    tq_calib* c = NULL;
    tq_kv_cache* kv = NULL;
    int* toks = NULL;
    float* x = NULL;
    float* logits = NULL;
    int64_t ntok = 0, local_tokens = 0;
    int n_seqs = 0, seq_len = 0;
    int layers_mode = 0, active = 1, l0 = 0, l1 = -1, first = 1, last = 1;
    int64_t head_idx = -1;
    const int dmode = o->diag_only ? 1 : o->diag_experts ? 2 : 0;
    double t0 = tq_rt_time();
    obs_ctx oc;
    tq_ops_set_threads(o->threads > 0 ? o->threads : 1);
    TQ_GOTO_FAIL(!tq_model_set_observer, TQ_ERR_UNSUPPORTED, agree,
                 "calibrate: this build's forward pass (pipeline/model.c) has no linear-input hook");
    TQ_GOTO_FAIL(o->parallel < TQ_CALIB_PAR_AUTO || o->parallel > TQ_CALIB_PAR_LAYERS, TQ_ERR_ARG, agree,
                 "calibrate: parallel mode %d is not auto, seq or layers", o->parallel);
    TQ_CHECK_GOTO(tq_wsource_ckpt(o->model, &src), agree);
    TQ_CHECK_GOTO(tq_arch_from_json(src->config_json(src->ctx), &arch), agree);
    {
        /* the sequence-split footprint per rank: the fp32 model plus every accumulator */
        uint64_t acc_all = 0;
        for (int64_t i = 0; i < arch->n_tensors; i++)
            if (calibrated(&arch->tensors[i]))
                acc_all += acc_bytes(arch->tensors[i].shape[1], tensor_diag(&arch->tensors[i], dmode));
        int64_t hi = head_tensor(arch);
        if (hi >= 0) acc_all += acc_bytes(arch->tensors[hi].shape[1], o->diag_only);
        st->seq_bytes_per_rank = 4u * (uint64_t)tq_arch_param_count(arch) + acc_all;
        double lim = o->mem_per_rank > 0 ? o->mem_per_rank : 16.0 * (double)(1ull << 30);
        layers_mode = o->parallel == TQ_CALIB_PAR_LAYERS ||
                      (o->parallel == TQ_CALIB_PAR_AUTO && rt->size > 1 && (double)st->seq_bytes_per_rank > lim);
        const int L = arch->n_layers;
        if (layers_mode) {
            active = rt->size < L ? rt->size : L; /* ranks beyond the layer count hold nothing */
            if (active < 1) active = 1;
            if (rt->rank < active) {
                l0 = (int)((int64_t)rt->rank * L / active);
                l1 = (int)((int64_t)(rt->rank + 1) * L / active);
            }
            first = rt->rank == 0;
            last = rt->rank == active - 1;
        }
        snprintf(st->parallel, sizeof st->parallel, "%s", layers_mode ? "layers" : "seq");
    }
    if (!layers_mode || rt->rank < active) TQ_CHECK_GOTO(tq_model_load(src, l0, l1, &m), agree);
    {
        char tokp[4096];
        const char* tokenizer = o->tokenizer;
        if (!tokenizer) {
            snprintf(tokp, sizeof tokp, "%s/tokenizer.bin", o->model);
            if (tq_file_exists(tokp)) tokenizer = tokp;
        }
        TQ_CHECK_GOTO(tq_load_tokens(o->data, tokenizer, arch->vocab, 0, &toks, &ntok), agree);
    }
    seq_len = o->seq_len > 0 ? o->seq_len : 2048;
    if (arch->max_position > 0 && seq_len > arch->max_position) seq_len = arch->max_position;
    n_seqs = o->n_seqs > 0 ? o->n_seqs : 128;
    if ((int64_t)n_seqs * seq_len > ntok) {
        int avail = (int)(ntok / seq_len);
        TQ_LOG0(TQ_LOG_WARN, "calibrate: %s holds %lld tokens: %d sequences of %d instead of %d", o->data,
                (long long)ntok, avail, seq_len, n_seqs);
        n_seqs = avail;
    }
    TQ_GOTO_FAIL(n_seqs <= 0, TQ_ERR_ARG, agree, "calibrate: %s holds %lld tokens, fewer than one sequence of %d",
                 o->data, (long long)ntok, seq_len);
    /* accumulators: every calibrated input (seq), or those of this rank's layers (layers); the head's on the
     * last stage. Same order as the descriptor in both modes. */
    TQ_CHECK_GOTO(tq_calib_create(&c), agree);
    if (m) {
        for (int64_t i = 0; i < arch->n_tensors; i++) {
            const tq_arch_tensor* t = &arch->tensors[i];
            if (!calibrated(t) || (layers_mode && (t->layer < l0 || t->layer >= l1))) continue;
            TQ_CHECK_GOTO(tq_calib_add(c, t->name, t->shape[1], tensor_diag(t, dmode), NULL), agree);
            st->bytes_per_rank += acc_bytes(t->shape[1], tensor_diag(t, dmode));
        }
        int64_t hi = head_tensor(arch);
        if (hi >= 0 && last) {
            TQ_CHECK_GOTO(tq_calib_add(c, arch->tensors[hi].name, arch->tensors[hi].shape[1], o->diag_only, &head_idx),
                          agree);
            st->bytes_per_rank += acc_bytes(arch->tensors[hi].shape[1], o->diag_only);
        }
        if (last) {
            logits = malloc((size_t)TQ_HEAD_CHUNK * (size_t)tq_model_vocab(m) * sizeof(float));
            TQ_GOTO_FAIL(!logits, TQ_ERR_NOMEM, agree, "calibrate: out of memory for logits");
        }
        oc.c = c;
        tq_model_set_observer(m, on_input, &oc);
        x = malloc((size_t)seq_len * (size_t)tq_model_hidden(m) * sizeof(float));
        TQ_GOTO_FAIL(!x, TQ_ERR_NOMEM, agree, "calibrate: out of memory for activations");
        tq_kv_codec f16;
        TQ_CHECK_GOTO(tq_kv_codec_parse("fp16", 0, &f16), agree);
        TQ_CHECK_GOTO(tq_model_kv_create(m, &f16, &f16, seq_len, 0, &kv), agree);
        st->weight_bytes_per_rank = (uint64_t)tq_model_weight_bytes(m);
    }
    tq_arch_free(&arch);
    tq_wsource_free(&src);
agree:
    rc = tq_rt_agree(rt, rc);
    if (rc != TQ_OK) goto out;
    if (!layers_mode) {
        tq_progress* pr = tq_progress_start(rt, "calibrated", (double)n_seqs * seq_len, "tokens", o->quiet ? 0 : 10);
        for (int s = rt->rank; s < n_seqs && rc == TQ_OK; s += rt->size) {
            tq_kv_reset(kv);
            rc = tq_model_embed(m, toks + (size_t)s * seq_len, seq_len, x);
            if (rc == TQ_OK) rc = tq_model_layers(m, kv, x, seq_len, 0);
            if (rc == TQ_OK && head_idx >= 0) rc = observe_head(m, c, head_idx, x, seq_len, logits);
            if (rc == TQ_OK) rc = tq_calib_end_sequence(c);
            local_tokens += seq_len;
            tq_progress_update(pr, (double)local_tokens);
        }
        tq_progress_finish(&pr);
        rc = tq_rt_agree(rt, rc);
        if (rc != TQ_OK) goto out;
        TQ_CHECK_GOTO(tq_calib_reduce(c, rt), out);
        if (rt->rank == 0) rc = save_entries(c, o, st);
    } else {
        /* pipeline: every sequence through every active rank in order; the neighbours of a failed rank
         * wait in point-to-point calls, so a failure there stops the job (as validate's pipeline mode) */
        tq_progress* pr = tq_progress_start(rt, "calibrated", (double)n_seqs * seq_len, "tokens", o->quiet ? 0 : 10);
        for (int s = 0; s < n_seqs && rc == TQ_OK && m; s++) {
            const int tag = s & 0x7fff, H = tq_model_hidden(m);
            tq_kv_reset(kv);
            if (first) rc = tq_model_embed(m, toks + (size_t)s * seq_len, seq_len, x);
            else rc = tq_comm_recv_f32(rt, rt->rank - 1, tag, x, (size_t)seq_len * H);
            if (rc == TQ_OK) rc = tq_model_layers(m, kv, x, seq_len, 0);
            if (rc == TQ_OK && !last) rc = tq_comm_send_f32(rt, rt->rank + 1, tag, x, (size_t)seq_len * H);
            if (rc == TQ_OK && last && head_idx >= 0) rc = observe_head(m, c, head_idx, x, seq_len, logits);
            if (rc == TQ_OK) rc = tq_calib_end_sequence(c);
            if (rc != TQ_OK && active > 1)
                tq_rt_abort(rc, "calibrate: rank %d (layers %d..%d) failed in sequence %d: %s", rt->rank, l0, l1 - 1, s,
                            tq_last_error());
            if (first) local_tokens += seq_len;
            tq_progress_update(pr, (double)(s + 1) * seq_len / (double)active); /* summed over the active ranks */
        }
        tq_progress_finish(&pr);
        rc = tq_rt_agree(rt, rc);
        if (rc != TQ_OK) goto out;
        /* one owner per accumulator: no reduction; each rank writes its own layers' files */
        if (m) rc = save_entries(c, o, st);
    }
    rc = tq_rt_agree(rt, rc);
    {
        double v[3] = {(double)local_tokens, (double)st->n_inputs, (double)st->pooled};
        if (rc == TQ_OK) rc = tq_rt_allreduce_sum_f64(rt, v, 3);
        st->tokens = (int64_t)v[0];
        st->n_inputs = (int64_t)v[1];
        st->pooled = (int64_t)v[2];
        double b[2] = {(double)st->bytes_per_rank, (double)st->weight_bytes_per_rank};
        if (rc == TQ_OK) rc = tq_rt_allreduce_max_f64(rt, b, 2);
        st->bytes_per_rank = (uint64_t)b[0];
        st->weight_bytes_per_rank = (uint64_t)b[1];
    }
    st->n_seqs = n_seqs;
    st->seq_len = seq_len;
    st->ranks = rt->size;
    st->seconds = tq_rt_time() - t0;
    st->tokens_per_s = st->seconds > 0 ? (double)st->tokens / st->seconds : 0;
out:
    free(x);
    free(logits);
    free(toks);
    tq_kv_free(&kv);
    tq_calib_free(&c);
    tq_model_free(&m);
    tq_arch_free(&arch);
    tq_wsource_free(&src);
    return rc;
}
