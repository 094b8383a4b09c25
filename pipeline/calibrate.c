/* calibrate.c — the calibration driver: token windows through the forward pass (pipeline/model.h, its
 * linear-input hook), one H accumulator per linear input (pipeline/calib.h), exact reduction across
 * ranks, few-token pooling of MoE experts, zstd files on rank 0. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch.h"     /* defines: tq_arch, tq_role_is_linear */
#include "calib.h"
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

tq_status tq_calibrate(const tq_rt* rt, const tq_calib_opts* o, tq_calib_stats* st)
{
    if (!rt || !o || !o->model || !o->data || !o->out_dir || !st)
        return tq_fail(TQ_ERR_ARG, "calibrate: missing arguments (model, data, output directory)");
    memset(st, 0, sizeof *st);
    tq_status rc = TQ_OK;
    tq_wsource* src = NULL;
    tq_model* m = NULL;
    tq_calib* c = NULL;
    tq_kv_cache* kv = NULL;
    int* toks = NULL;
    float* x = NULL;
    float* logits = NULL;
    double* hbuf = NULL;
    double* pbuf = NULL;
    int64_t ntok = 0, local_tokens = 0;
    int n_seqs = 0, seq_len = 0;
    double t0 = tq_rt_time();
    obs_ctx oc;
    tq_ops_set_threads(o->threads > 0 ? o->threads : 1);
    TQ_GOTO_FAIL(!tq_model_set_observer, TQ_ERR_UNSUPPORTED, agree,
                 "calibrate: this build's forward pass (pipeline/model.c) has no linear-input hook");
    TQ_CHECK_GOTO(tq_wsource_ckpt(o->model, &src), agree);
    TQ_CHECK_GOTO(tq_model_load(src, 0, -1, &m), agree);
    const tq_arch* a = tq_model_arch(m);
    char tokp[4096];
    const char* tokenizer = o->tokenizer;
    if (!tokenizer) {
        snprintf(tokp, sizeof tokp, "%s/tokenizer.bin", o->model);
        if (tq_file_exists(tokp)) tokenizer = tokp;
    }
    TQ_CHECK_GOTO(tq_load_tokens(o->data, tokenizer, tq_model_vocab(m), 0, &toks, &ntok), agree);
    seq_len = o->seq_len > 0 ? o->seq_len : 2048;
    if (seq_len > tq_model_max_position(m)) seq_len = tq_model_max_position(m);
    n_seqs = o->n_seqs > 0 ? o->n_seqs : 128;
    if ((int64_t)n_seqs * seq_len > ntok) {
        int avail = (int)(ntok / seq_len);
        TQ_LOG0(TQ_LOG_WARN, "calibrate: %s holds %lld tokens: %d sequences of %d instead of %d", o->data,
                (long long)ntok, avail, seq_len, n_seqs);
        n_seqs = avail;
    }
    TQ_GOTO_FAIL(n_seqs <= 0, TQ_ERR_ARG, agree, "calibrate: %s holds %lld tokens, fewer than one sequence of %d",
                 o->data, (long long)ntok, seq_len);
    TQ_CHECK_GOTO(tq_calib_create(&c), agree);
    for (int64_t i = 0; i < a->n_tensors; i++) {
        const tq_arch_tensor* t = &a->tensors[i];
        if (!tq_role_is_linear(t->role) || t->ndim != 2 || !is_input_key(t->name)) continue;
        TQ_CHECK_GOTO(tq_calib_add(c, t->name, t->shape[1], o->diag_only, NULL), agree);
        st->bytes_per_rank += o->diag_only ? 20u * (uint64_t)t->shape[1]
                                           : 4u * (uint64_t)(t->shape[1] * t->shape[1]) +
                                                 16u * (uint64_t)(t->shape[1] * (t->shape[1] + 1) / 2);
    }
    /* the output head's input (final normed hidden states): the head is the embedding when tied */
    int64_t head_idx = -1;
    for (int64_t i = 0; i < a->n_tensors; i++) {
        const tq_arch_tensor* t = &a->tensors[i];
        if (t->ndim == 2 && (t->role == TQ_ROLE_LM_HEAD || (a->tied_embeddings && t->role == TQ_ROLE_EMBED))) {
            TQ_CHECK_GOTO(tq_calib_add(c, t->name, t->shape[1], o->diag_only, &head_idx), agree);
            st->bytes_per_rank += o->diag_only ? 20u * (uint64_t)t->shape[1]
                                               : 4u * (uint64_t)(t->shape[1] * t->shape[1]) +
                                                     16u * (uint64_t)(t->shape[1] * (t->shape[1] + 1) / 2);
            break;
        }
    }
    logits = malloc((size_t)TQ_HEAD_CHUNK * (size_t)tq_model_vocab(m) * sizeof(float));
    TQ_GOTO_FAIL(!logits, TQ_ERR_NOMEM, agree, "calibrate: out of memory for logits");
    oc.c = c;
    tq_model_set_observer(m, on_input, &oc);
    x = malloc((size_t)seq_len * (size_t)tq_model_hidden(m) * sizeof(float));
    TQ_GOTO_FAIL(!x, TQ_ERR_NOMEM, agree, "calibrate: out of memory for activations");
    tq_kv_codec f16;
    TQ_CHECK_GOTO(tq_kv_codec_parse("fp16", 0, &f16), agree);
    TQ_CHECK_GOTO(tq_model_kv_create(m, &f16, &f16, seq_len, 0, &kv), agree);
agree:
    rc = tq_rt_agree(rt, rc);
    if (rc != TQ_OK) goto out;
    {
        tq_progress* pr = tq_progress_start(rt, "calibrated", (double)n_seqs * seq_len, "tokens", o->quiet ? 0 : 10);
        for (int s = rt->rank; s < n_seqs && rc == TQ_OK; s += rt->size) {
            tq_kv_reset(kv);
            rc = tq_model_embed(m, toks + (size_t)s * seq_len, seq_len, x);
            if (rc == TQ_OK) rc = tq_model_layers(m, kv, x, seq_len, 0);
            /* tq_model_head normalizes x in place: then x holds the head's input rows */
            for (int r0 = 0; r0 < seq_len && rc == TQ_OK && head_idx >= 0; r0 += TQ_HEAD_CHUNK) {
                int nr = seq_len - r0 < TQ_HEAD_CHUNK ? seq_len - r0 : TQ_HEAD_CHUNK;
                float* xr = x + (size_t)r0 * tq_model_hidden(m);
                rc = tq_model_head(m, xr, nr, logits);
                if (rc == TQ_OK) rc = tq_calib_observe(c, head_idx, xr, nr, tq_model_hidden(m));
            }
            if (rc == TQ_OK) rc = tq_calib_end_sequence(c);
            local_tokens += seq_len;
            tq_progress_update(pr, (double)local_tokens);
        }
        tq_progress_finish(&pr);
    }
    rc = tq_rt_agree(rt, rc);
    if (rc != TQ_OK) goto out;
    TQ_CHECK_GOTO(tq_calib_reduce(c, rt), out);
    /* rank 0: finalize, pool experts with few tokens, write */
    if (rt->rank == 0) {
        rc = tq_mkdirs(o->out_dir);
        int64_t dmax = 1;
        for (int64_t i = 0; i < c->n; i++)
            if (c->e[i].h.d > dmax) dmax = c->e[i].h.d;
        size_t cap = o->diag_only ? (size_t)dmax : (size_t)dmax * (size_t)dmax;
        hbuf = malloc(cap * sizeof(double));
        pbuf = malloc(cap * sizeof(double));
        if (rc == TQ_OK && (!hbuf || !pbuf)) rc = tq_fail(TQ_ERR_NOMEM, "calibrate: out of memory writing H");
        for (int64_t i = 0; i < c->n && rc == TQ_OK; i++) {
            tq_calib_entry* e = &c->e[i];
            uint64_t nmin = o->min_expert_tokens ? o->min_expert_tokens : (uint64_t)e->h.d;
            char key[TQ_MAX_NAME + 8];
            int expert = expert_pool_key(e->name, key, sizeof key);
            if (e->h.rows == 0 && !expert) {
                TQ_LOG0(TQ_LOG_WARN, "calibrate: no token reached %s: no H written", e->name);
                continue;
            }
            if (e->h.rows > 0) rc = tq_hess_finalize(&e->h, e->h.rows, hbuf);
            if (rc == TQ_OK && expert && e->h.rows < nmin) {
                /* pool: the exact sums of every expert of this layer and projection */
                tq_hess pool;
                rc = tq_hess_init(&pool, e->h.d, e->h.diag_only);
                for (int64_t j = 0; j < c->n && rc == TQ_OK; j++) {
                    char kj[TQ_MAX_NAME + 8];
                    if (expert_pool_key(c->e[j].name, kj, sizeof kj) && !strcmp(kj, key))
                        rc = tq_hess_merge(&pool, &c->e[j].h);
                }
                if (rc == TQ_OK && pool.rows == 0) {
                    TQ_LOG0(TQ_LOG_WARN, "calibrate: no token reached any expert of %s: no H written", key);
                    tq_hess_release(&pool);
                    continue;
                }
                if (rc == TQ_OK) rc = tq_hess_finalize(&pool, pool.rows, pbuf);
                tq_hess_release(&pool);
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
    }
    rc = tq_rt_agree(rt, rc);
    {
        double v[3] = {(double)local_tokens, (double)st->n_inputs, (double)st->pooled};
        if (rc == TQ_OK) rc = tq_rt_allreduce_sum_f64(rt, v, 3);
        st->tokens = (int64_t)v[0];
        st->n_inputs = (int64_t)v[1];
        st->pooled = (int64_t)v[2];
    }
    st->n_seqs = n_seqs;
    st->seq_len = seq_len;
    st->ranks = rt->size;
    st->seconds = tq_rt_time() - t0;
    st->tokens_per_s = st->seconds > 0 ? (double)st->tokens / st->seconds : 0;
out:
    free(hbuf);
    free(pbuf);
    free(x);
    free(logits);
    free(toks);
    tq_kv_free(&kv);
    tq_calib_free(&c);
    tq_model_free(&m);
    tq_wsource_free(&src);
    return rc;
}
