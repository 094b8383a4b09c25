/* sensrun.c — whole-checkpoint drivers of issue 7: the sensitivity table (tensors dealt round-robin to
 * the ranks, rows gathered on rank 0) and the fake-quantized checkpoint writer used to measure a plan.
 * See sensrun.h. */
#include "sensrun.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "allocate.h"  /* defines: tq_plan_load, tq_plan_codec */
#include "arch.h"      /* defines: tq_arch_from_json, tq_arch_find, tq_role_name */
#include "calib.h"     /* defines: tq_calib_input_key, tq_hess_file_load */
#include "ckpt.h"      /* defines: tq_ckpt_open, tq_ckpt_read_f32 */
#include "fileio.h"    /* defines: tq_file_exists, tq_read_file, tq_write_file_atomic */
#include "linalg_gpu.h" /* defines: tq_linalg_use_gpu, tq_gptq_quantize_gpu (helper gpu7) */
#include "log.h"       /* defines: TQ_LOG0 */
#include "sensitivity.h"
#include "model.h"     /* defines: tq_wsource, tq_model_load, tq_model_forward */
#include "qgptq.h"     /* defines: tq_qgptq_create, tq_qgptq_quantize */
#include "st_writer.h" /* defines: tq_st_writer_* */
#include "validate.h"  /* defines: tq_load_tokens */

typedef enum { K_MATRIX_H = 0, K_MATRIX_UNIFORM, K_OTHER } tensor_kind;

/* How a tensor is treated: matrices of a linear role with a calibrated input, matrices without one
 * (embeddings, heads, anything whose H file is missing), everything else. */
static tensor_kind classify(const tq_tensor_info* t, tq_role role, const char* hess_dir, char* hpath, size_t cap)
{
    if (t->ndim != 2 || !tq_role_is_linear(role)) return K_OTHER;
    if (!hess_dir) return K_MATRIX_UNIFORM;
    char key[TQ_MAX_NAME];
    tq_calib_input_key(t->name, key);
    snprintf(hpath, cap, "%s/%s.hess.zst", hess_dir, key);
    return tq_file_exists(hpath) ? K_MATRIX_H : K_MATRIX_UNIFORM;
}

/* --hessians DIR must be a directory holding at least one H file: a wrong path would otherwise make every
 * matrix silently fall back to the uniform (H-less) measure. */
static tq_status check_hess_dir(const char* dir)
{
    if (!dir) return TQ_OK;
    DIR* d = opendir(dir);
    if (!d)
        return tq_fail(TQ_ERR_NOTFOUND, "--hessians %s: %s; give the output directory of `tqpipe calibrate`",
                       dir, strerror(errno));
    int found = 0;
    struct dirent* e;
    while (!found && (e = readdir(d))) {
        size_t n = strlen(e->d_name);
        found = n > 9 && !strcmp(e->d_name + n - 9, ".hess.zst");
    }
    closedir(d);
    if (!found)
        return tq_fail(TQ_ERR_NOTFOUND, "--hessians %s holds no *.hess.zst file; run `tqpipe calibrate --out %s` first",
                       dir, dir);
    return TQ_OK;
}

/* The tensors must be those config.json describes (names and shapes, in the checkpoint's own expert layout):
 * a mismatched config would otherwise give a table or checkpoint that fails only later, in eval. */
static tq_status check_descriptor(const tq_ckpt* ck)
{
    tq_arch* la = NULL;
    tq_status rc = tq_arch_from_ckpt(ck, &la);
    if (rc == TQ_OK) rc = tq_arch_check_ckpt(la, ck);
    tq_arch_free(&la);
    return rc;
}

static const char* dtype_codec(tq_dtype d)
{
    return d == TQ_BF16 ? "bf16" : d == TQ_F16 ? "fp16" : "f32";
}

static tq_role role_of(const tq_arch* a, const char* name)
{
    const tq_arch_tensor* at = a ? tq_arch_find(a, name) : NULL;
    return at ? at->role : TQ_ROLE_OTHER;
}

/* Ω of w quantized with codec c; uniform mode uses diag H = 1/rows. */
static tq_status measure(const float* w, int64_t R, int64_t N, const double* h, int diag, const tq_codec* c,
                         uint64_t seed, const tq_gptq_opts* g, const char* what, double* omega, uint64_t* bytes,
                         double* uni)
{
    if (h) return tq_sens_measure(w, R, N, h, diag, c, seed, g && !diag ? g : NULL, what, omega, bytes);
    return tq_sens_measure(w, R, N, uni, 1, c, seed, NULL, what, omega, bytes);
}

// ------------------------------------------------------------------------------------------------
// KL probe

#define TQ_MAX_PROBE 4

/* A weight source that serves one tensor from memory and everything else from a checkpoint; with a
 * plan, every tensor read from the checkpoint is first quantized with its plan codec (plainly, or through
 * the quantize stage's GPTQ service when gq is set) and dequantized, exactly as the quantize stage
 * stores it. */
typedef struct {
    tq_wsource* inner;
    const char* name;
    const float* data;
    size_t n;
    const tq_plan* plan; /* NULL: the checkpoint's own weights */
    uint64_t seed;       /* job seed (rotation seed of a tensor = tq_tensor_seed(seed, name)) */
    tq_qgptq* gq;        /* with a plan: GPTQ where the quantize stage applies it; NULL: plain */
} swap_src;

static const char* sw_config(void* ctx)
{
    swap_src* s = ctx;
    return s->inner->config_json(s->inner->ctx);
}
static int sw_has(void* ctx, const char* name)
{
    swap_src* s = ctx;
    return s->inner->has(s->inner->ctx, name);
}
static tq_status sw_shape(void* ctx, const char* name, int64_t* rows, int64_t* cols)
{
    swap_src* s = ctx;
    return s->inner->shape(s->inner->ctx, name, rows, cols);
}
static tq_status sw_read(void* ctx, const char* name, float* dst, size_t cap)
{
    swap_src* s = ctx;
    if (s->name && !strcmp(name, s->name)) {
        if (cap < s->n) return tq_fail(TQ_ERR_ARG, "probe: buffer too small for %s", name);
        memcpy(dst, s->data, s->n * sizeof(float));
        return TQ_OK;
    }
    TQ_FORWARD(s->inner->read(s->inner->ctx, name, dst, cap));
    const tq_alloc_entry* pe = s->plan ? tq_plan_entry_of(s->plan, name) : NULL;
    if (!pe) return TQ_OK;
    tq_codec c;
    TQ_FORWARD(tq_codec_label_parse(pe->codec, &c));
    if (c.kind == TQ_CODEC_F32) return TQ_OK;
    int64_t rows = 0, cols = 0;
    TQ_FORWARD(s->inner->shape(s->inner->ctx, name, &rows, &cols));
    if ((size_t)rows * (size_t)cols > cap) return tq_fail(TQ_ERR_ARG, "plan source: buffer too small for %s", name);
    tq_qtensor q;
    memset(&q, 0, sizeof q);
    tq_status rc = tq_qtensor_alloc(&q, &c, rows, cols, tq_tensor_seed(s->seed, name));
    if (rc == TQ_OK && s->gq) rc = tq_qgptq_quantize(s->gq, name, pe->role, rows > 1 ? 2 : 1, 0, dst, &q, name, NULL);
    else if (rc == TQ_OK) rc = tq_quantize_ref(dst, &q, name);
    if (rc == TQ_OK) rc = tq_dequantize_ref(&q, dst);
    tq_qtensor_release(&q);
    return rc;
}

/* A weight source that reads through ss: inner's tensors, with ss's swapped tensor or plan applied. */
static tq_wsource swap_source(const tq_wsource* inner, swap_src* ss)
{
    tq_wsource sw = *inner;
    sw.ctx = ss;
    sw.config_json = sw_config;
    sw.has = sw_has;
    sw.shape = sw_shape;
    sw.read = sw_read;
    sw.close = NULL;
    return sw;
}

typedef struct {
    int ctx, nwin;
    int64_t ntok;
    int* toks;
    int vocab;
    float* ref_lp;  /* [ntok x vocab] reference log-probabilities */
    float* logits;  /* [ctx x vocab] */
} probe_state;

static void log_softmax(float* v, int n)
{
    double mx = v[0];
    for (int i = 1; i < n; i++)
        if (v[i] > mx) mx = v[i];
    double s = 0;
    for (int i = 0; i < n; i++) s += exp((double)v[i] - mx);
    double ls = mx + log(s);
    for (int i = 0; i < n; i++) v[i] = (float)((double)v[i] - ls);
}

/* Run the probe windows through the model from src; ref: store log-probs, else return the mean KL. */
static tq_status probe_run(probe_state* P, tq_wsource* src, int ref, double* kl)
{
    tq_model* m = NULL;
    tq_kv_cache* kv = NULL;
    tq_status rc = tq_model_load(src, 0, -1, &m);
    tq_kv_codec f16;
    if (rc == TQ_OK) rc = tq_kv_codec_parse("fp16", 0, &f16);
    if (rc == TQ_OK) rc = tq_model_kv_create(m, &f16, &f16, P->ctx, 0, &kv);
    double sum = 0;
    int64_t cnt = 0;
    for (int w = 0; w < P->nwin && rc == TQ_OK; w++) {
        tq_kv_reset(kv);
        rc = tq_model_forward(m, kv, P->toks + (size_t)w * P->ctx, P->ctx, 0, P->logits);
        for (int t = 0; t < P->ctx && rc == TQ_OK; t++) {
            float* lg = P->logits + (size_t)t * P->vocab;
            float* rl = P->ref_lp + ((size_t)w * P->ctx + t) * P->vocab;
            log_softmax(lg, P->vocab);
            if (ref) {
                memcpy(rl, lg, (size_t)P->vocab * sizeof(float));
            } else {
                double k = 0;
                for (int v = 0; v < P->vocab; v++) k += exp((double)rl[v]) * ((double)rl[v] - (double)lg[v]);
                sum += k;
                cnt++;
            }
        }
    }
    if (kl) *kl = cnt ? sum / (double)cnt : 0;
    tq_kv_free(&kv);
    tq_model_free(&m);
    return rc;
}

/* Load the probe tokens (the first `tokens` of `data`), cut them into windows of `ctx` (default 256) and
 * store the reference log-probabilities of `src` (the original model). Free with probe_free. */
static tq_status probe_init(probe_state* P, tq_wsource* src, const char* model, const char* data,
                            const char* tokenizer, int vocab, int tokens, int ctx)
{
    char tokp[4096];
    if (!tokenizer) {
        snprintf(tokp, sizeof tokp, "%s/tokenizer.bin", model);
        if (tq_file_exists(tokp)) tokenizer = tokp;
    }
    TQ_FORWARD(tq_load_tokens(data, tokenizer, vocab, tokens, &P->toks, &P->ntok));
    P->vocab = vocab;
    P->ctx = ctx > 0 ? ctx : 256;
    if (P->ctx > P->ntok) P->ctx = (int)P->ntok;
    P->nwin = P->ctx > 0 ? (int)(P->ntok / P->ctx) : 0;
    if (P->nwin <= 0 || P->vocab <= 0) return tq_fail(TQ_ERR_ARG, "probe: no probe window in %s", data);
    P->ref_lp = malloc((size_t)P->nwin * P->ctx * (size_t)P->vocab * sizeof(float));
    P->logits = malloc((size_t)P->ctx * (size_t)P->vocab * sizeof(float));
    if (!P->ref_lp || !P->logits)
        return tq_fail(TQ_ERR_NOMEM, "probe: out of memory (%d x %d log-probabilities)", P->nwin * P->ctx, P->vocab);
    return probe_run(P, src, 1, NULL);
}

static void probe_free(probe_state* P)
{
    free(P->toks);
    free(P->ref_lp);
    free(P->logits);
    memset(P, 0, sizeof *P);
}

/* Scale the Ω of every matrix row of `t` (this rank's rows) by its measured KL gain. */
static tq_status probe_scale(const tq_sens_opts* o, tq_ckpt* ck, const tq_arch* a, tq_sens_table* t,
                             tq_sens_stats* st)
{
    tq_status rc = TQ_OK;
    probe_state P;
    memset(&P, 0, sizeof P);
    tq_wsource* inner = NULL;
    tq_wsource sw;
    swap_src ss;
    float* w = NULL;
    float* dq = NULL;
    double* h = NULL;
    double* uni = NULL;
    tq_qtensor q;
    memset(&q, 0, sizeof q);
    tq_codec pc[TQ_MAX_PROBE];
    int npc = 0;
    double t0 = tq_rt_time();
    {
        char list[256];
        snprintf(list, sizeof list, "%s", o->probe_codec ? o->probe_codec : "tq2");
        char* save = NULL;
        for (char* c = strtok_r(list, ",", &save); c && npc < TQ_MAX_PROBE; c = strtok_r(NULL, ",", &save))
            TQ_CHECK_GOTO(tq_codec_label_parse(c, &pc[npc++]), out);
    }
    TQ_CHECK_GOTO(tq_wsource_ckpt(o->model, &inner), out);
    TQ_CHECK_GOTO(probe_init(&P, inner, o->model, o->probe_data, o->tokenizer, a ? a->vocab : 0, o->probe_tokens,
                             o->probe_ctx),
                  out);
    memset(&ss, 0, sizeof ss);
    ss.inner = inner;
    sw = swap_source(inner, &ss);
    for (int64_t i0 = 0; i0 < t->n && rc == TQ_OK;) {
        int64_t i1 = i0;
        while (i1 < t->n && !strcmp(t->rows[i1].tensor, t->rows[i0].tensor)) i1++;
        const tq_sens_row* r = &t->rows[i0];
        const tq_tensor_info* ti = tq_ckpt_find(ck, r->tensor);
        tq_role role = role_of(a, r->tensor);
        char hpath[4096 + TQ_MAX_NAME];
        tensor_kind k = ti ? classify(ti, role, o->hess_dir, hpath, sizeof hpath) : K_OTHER;
        if (k != K_OTHER) {
            size_t n = (size_t)r->rows * (size_t)r->cols;
            free(w);
            free(dq);
            free(uni);
            free(h);
            h = NULL;
            w = malloc(n * sizeof(float));
            dq = malloc(n * sizeof(float));
            uni = malloc((size_t)r->cols * sizeof(double));
            TQ_GOTO_FAIL(!w || !dq || !uni, TQ_ERR_NOMEM, out, "probe: out of memory for %s", r->tensor);
            for (int64_t j = 0; j < r->cols; j++) uni[j] = 1.0 / (double)r->rows;
            TQ_CHECK_GOTO(tq_ckpt_read_f32(ck, ti, 0, r->rows, w, n * sizeof(float)), out);
            int64_t hd = 0;
            int diag = 0;
            if (k == K_MATRIX_H) TQ_CHECK_GOTO(tq_hess_file_load(hpath, &h, &hd, &diag, NULL), out);
            uint64_t seed = tq_tensor_seed(o->seed, r->tensor);
            /* one point (Ω, KL) per probe codec; fit KL = a·Ω^p in log-log (p = 1 with one point) */
            double lx[TQ_MAX_PROBE], ly[TQ_MAX_PROBE];
            int np = 0;
            for (int pi = 0; pi < npc; pi++) {
                TQ_CHECK_GOTO(tq_qtensor_alloc(&q, &pc[pi], r->rows, r->cols, seed), out);
                TQ_CHECK_GOTO(tq_quantize_ref(w, &q, r->tensor), out);
                TQ_CHECK_GOTO(tq_dequantize_ref(&q, dq), out);
                tq_qtensor_release(&q);
                for (size_t j = 0; j < n; j++) w[j] -= dq[j];
                double om = h ? tq_omega(w, r->rows, r->cols, h, diag) : tq_omega(w, r->rows, r->cols, uni, 1);
                for (size_t j = 0; j < n; j++) w[j] += dq[j];
                ss.name = r->tensor;
                ss.data = dq;
                ss.n = n;
                double kl = 0;
                TQ_CHECK_GOTO(probe_run(&P, &sw, 0, &kl), out);
                if (om > 0 && kl > 0) {
                    lx[np] = log(om);
                    ly[np] = log(kl);
                    np++;
                }
            }
            double pw = 1, la = 0;
            if (np == 1) {
                la = ly[0] - lx[0];
            } else if (np >= 2) {
                double mx = 0, my = 0, sxx = 0, sxy = 0;
                for (int k2 = 0; k2 < np; k2++) {
                    mx += lx[k2] / np;
                    my += ly[k2] / np;
                }
                for (int k2 = 0; k2 < np; k2++) {
                    sxx += (lx[k2] - mx) * (lx[k2] - mx);
                    sxy += (lx[k2] - mx) * (ly[k2] - my);
                }
                pw = sxx > 1e-12 ? sxy / sxx : 1;
                if (pw < 0.5) pw = 0.5;
                if (pw > 3) pw = 3;
                la = my - pw * mx;
            }
            for (int64_t j = i0; j < i1; j++) {
                double om = t->rows[j].omega;
                t->rows[j].omega = np == 0 || om <= 0 ? 0 : exp(la + pw * log(om));
            }
            st->probed++;
        }
        i0 = i1;
    }
out:
    st->probe_seconds = tq_rt_time() - t0;
    tq_qtensor_release(&q);
    tq_wsource_free(&inner);
    probe_free(&P);
    free(w);
    free(dq);
    free(h);
    free(uni);
    return rc;
}

tq_status tq_sensitivity_run(const tq_rt* rt, const tq_sens_opts* o, tq_sens_stats* st)
{
    if (!rt || !o || !o->model || !o->out || !st || o->n_codecs <= 0)
        return tq_fail(TQ_ERR_ARG, "sensitivity: missing arguments (model, codecs, output)");
    memset(st, 0, sizeof *st);
    double t0 = tq_rt_time();
    tq_status rc = TQ_OK;
    tq_ckpt* ck = NULL;
    tq_arch* a = NULL;
    tq_sens_table* local = NULL;
    tq_sens_table* all = NULL;
    char* text = NULL;
    void* gathered = NULL;
    size_t* counts = NULL;
    float* w = NULL;
    double* h = NULL;
    double* uni = NULL;
    size_t wcap = 0;
    tq_codec* cod = calloc((size_t)o->n_codecs, sizeof *cod);
    TQ_GOTO_FAIL(!cod, TQ_ERR_NOMEM, agree, "sensitivity: out of memory");
    TQ_CHECK_GOTO(check_hess_dir(o->hess_dir), agree);
    for (int i = 0; i < o->n_codecs; i++) TQ_CHECK_GOTO(tq_codec_label_parse(o->codecs[i], &cod[i]), agree);
    TQ_CHECK_GOTO(tq_ckpt_open(o->model, &ck), agree);
    if (tq_ckpt_config_json(ck)) {
        TQ_CHECK_GOTO(tq_arch_from_json(tq_ckpt_config_json(ck), &a), agree);
        TQ_CHECK_GOTO(check_descriptor(ck), agree);
    }
    TQ_CHECK_GOTO(tq_sens_table_create(&local), agree);
agree:
    rc = tq_rt_agree(rt, rc);
    if (rc != TQ_OK) goto out;
    {
        int64_t nt = tq_ckpt_count(ck);
        tq_progress* pr = tq_progress_start(rt, "measured", (double)nt, "tensors", o->quiet ? 0 : 10);
        int64_t done = 0;
        for (int64_t i = rt->rank; i < nt && rc == TQ_OK; i += rt->size) {
            const tq_tensor_info* t = tq_ckpt_tensor(ck, i);
            tq_role role = role_of(a, t->name);
            char hpath[4096 + TQ_MAX_NAME];
            tensor_kind k = classify(t, role, o->hess_dir, hpath, sizeof hpath);
            tq_sens_row row;
            memset(&row, 0, sizeof row);
            snprintf(row.tensor, sizeof row.tensor, "%s", t->name);
            snprintf(row.role, sizeof row.role, "%s", tq_role_name(role));
            row.rows = tq_tensor_rows(t);
            row.cols = tq_tensor_cols(t);
            st->tensors++;
            if (k == K_OTHER) {
                snprintf(row.codec, sizeof row.codec, "%s", dtype_codec(t->dtype));
                row.bytes = t->nbytes;
                row.omega = 0;
                rc = tq_sens_table_add(local, &row);
                done++;
                tq_progress_update(pr, (double)done);
                continue;
            }
            size_t n = (size_t)row.rows * (size_t)row.cols;
            if (n > wcap) {
                free(w);
                w = malloc(n * sizeof(float));
                wcap = n;
                if (!w) {
                    rc = tq_fail(TQ_ERR_NOMEM, "sensitivity: out of memory for %s", t->name);
                    break;
                }
            }
            free(uni);
            uni = malloc((size_t)row.cols * sizeof(double));
            if (!uni) {
                rc = tq_fail(TQ_ERR_NOMEM, "sensitivity: out of memory");
                break;
            }
            for (int64_t j = 0; j < row.cols; j++) uni[j] = 1.0 / (double)row.rows;
            rc = tq_ckpt_read_f32(ck, t, 0, row.rows, w, n * sizeof(float));
            int64_t hd = 0;
            int diag = 0;
            free(h);
            h = NULL;
            if (rc == TQ_OK && k == K_MATRIX_H) {
                rc = tq_hess_file_load(hpath, &h, &hd, &diag, NULL);
                if (rc == TQ_OK && hd != row.cols)
                    rc = tq_fail(TQ_ERR_FORMAT, "%s: H of dimension %lld for %s with %lld columns", hpath, (long long)hd,
                                 t->name, (long long)row.cols);
            }
            if (k == K_MATRIX_H) st->measured++;
            else st->no_h++;
            uint64_t seed = tq_tensor_seed(o->seed, t->name);
            for (int c = 0; c < o->n_codecs && rc == TQ_OK; c++) {
                int g = o->gptq && !(o->gptq_plain_embed && role == TQ_ROLE_EMBED);
                rc = measure(w, row.rows, row.cols, h, diag, &cod[c], seed, g ? &o->gopts : NULL, t->name, &row.omega,
                             &row.bytes, uni);
                tq_codec_label(&cod[c], row.codec);
                if (rc == TQ_OK) rc = tq_sens_table_add(local, &row);
            }
            done++;
            tq_progress_update(pr, (double)done);
        }
        tq_progress_finish(&pr);
    }
    rc = tq_rt_agree(rt, rc);
    if (rc != TQ_OK) goto out;
    if (o->probe_tokens > 0) {
        rc = tq_rt_agree(rt, probe_scale(o, ck, a, local, st));
        if (rc != TQ_OK) goto out;
    }
    /* gather the rows (as text) on rank 0, sort by tensor name (codec order kept), write */
    {
        size_t len = 0;
        TQ_CHECK_GOTO(tq_sens_table_format(local, &text, &len), out);
        /* skip the two header lines: only data rows travel */
        char* body = strchr(text, '\n');
        body = body ? strchr(body + 1, '\n') : NULL;
        body = body ? body + 1 : text + len;
        rc = tq_rt_gather_bytes(rt, body, (size_t)(text + len - body), &gathered, &counts);
        rc = tq_rt_agree(rt, rc);
        if (rc != TQ_OK) goto out;
        if (rt->rank == 0) {
            size_t tot = 0;
            for (int r = 0; r < rt->size; r++) tot += counts[r];
            const char* hdr = "tensor\trole\trows\tcols\tcodec\tbytes\tomega\n";
            char* buf = malloc(strlen(hdr) + tot + 1);
            if (!buf) {
                rc = tq_fail(TQ_ERR_NOMEM, "sensitivity: out of memory");
            } else {
                memcpy(buf, hdr, strlen(hdr));
                memcpy(buf + strlen(hdr), gathered, tot);
                buf[strlen(hdr) + tot] = 0;
                rc = tq_sens_table_parse(buf, strlen(hdr) + tot, "gathered rows", &all);
                free(buf);
            }
            if (rc == TQ_OK) {
                /* stable sort by tensor name: insertion by blocks (rows of a tensor are contiguous) */
                tq_sens_row* tmp = malloc((size_t)(all->n > 0 ? all->n : 1) * sizeof *tmp);
                int64_t* start = malloc((size_t)(all->n + 1) * sizeof(int64_t));
                int64_t nb = 0;
                if (!tmp || !start) {
                    rc = tq_fail(TQ_ERR_NOMEM, "sensitivity: out of memory");
                } else {
                    for (int64_t i = 0; i < all->n; i++)
                        if (i == 0 || strcmp(all->rows[i].tensor, all->rows[i - 1].tensor)) start[nb++] = i;
                    start[nb] = all->n;
                    /* selection of blocks in name order (nb is the tensor count: fine for tables) */
                    char* used = calloc((size_t)(nb > 0 ? nb : 1), 1);
                    int64_t out_i = 0;
                    for (int64_t k = 0; k < nb && used; k++) {
                        int64_t best = -1;
                        for (int64_t b = 0; b < nb; b++)
                            if (!used[b] && (best < 0 || strcmp(all->rows[start[b]].tensor, all->rows[start[best]].tensor) < 0))
                                best = b;
                        used[best] = 1;
                        for (int64_t i = start[best]; i < start[best + 1]; i++) tmp[out_i++] = all->rows[i];
                    }
                    if (!used) rc = tq_fail(TQ_ERR_NOMEM, "sensitivity: out of memory");
                    else memcpy(all->rows, tmp, (size_t)all->n * sizeof *tmp);
                    free(used);
                }
                free(tmp);
                free(start);
            }
            if (rc == TQ_OK) rc = tq_sens_table_save(all, o->out);
            if (rc == TQ_OK) st->rows = all->n;
        }
        rc = tq_rt_agree(rt, rc);
    }
    {
        double v[4] = {(double)st->tensors, (double)st->measured, (double)st->no_h, (double)st->probed};
        if (rc == TQ_OK) rc = tq_rt_allreduce_sum_f64(rt, v, 4);
        st->tensors = (int64_t)v[0];
        st->measured = (int64_t)v[1];
        st->no_h = (int64_t)v[2];
        st->probed = (int64_t)v[3];
    }
    st->seconds = tq_rt_time() - t0;
out:
    free(cod);
    free(w);
    free(h);
    free(uni);
    free(text);
    free(gathered);
    free(counts);
    tq_sens_table_free(&local);
    tq_sens_table_free(&all);
    tq_arch_free(&a);
    tq_ckpt_free(&ck);
    return rc;
}

// ------------------------------------------------------------------------------------------------
// measured KL of whole plans

tq_status tq_plan_kl(const tq_rt* rt, const tq_plan_kl_opts* o, const tq_plan* const* plans, int n, double* kl)
{
    if (!rt || !o || !o->model || !o->data || o->tokens <= 0 || (n > 0 && (!plans || !kl)))
        return tq_fail(TQ_ERR_ARG, "plan KL: missing arguments (model, data, tokens, plans)");
    for (int i = 0; i < n; i++) kl[i] = 0;
    probe_state P;
    memset(&P, 0, sizeof P);
    tq_wsource* inner = NULL;
    tq_arch* a = NULL;
    tq_status rc = tq_wsource_ckpt(o->model, &inner);
    if (rc == TQ_OK) rc = tq_arch_from_json(inner->config_json(inner->ctx), &a);
    if (rc == TQ_OK) rc = probe_init(&P, inner, o->model, o->data, o->tokenizer, a->vocab, o->tokens, o->ctx);
    tq_qgptq* gq = NULL;
    if (rc == TQ_OK && o->gptq) rc = tq_qgptq_create(o->hess_dir, &o->gopts, 0, "run the calibrate stage first", &gq);
    rc = tq_rt_agree(rt, rc);
    swap_src ss;
    memset(&ss, 0, sizeof ss);
    ss.inner = inner;
    ss.seed = o->seed;
    ss.gq = gq;
    tq_wsource sw;
    if (inner) sw = swap_source(inner, &ss);
    for (int i = rt->rank; i < n && rc == TQ_OK; i += rt->size) {
        ss.plan = plans[i];
        rc = probe_run(&P, &sw, 0, &kl[i]);
    }
    rc = tq_rt_agree(rt, rc);
    if (rc == TQ_OK && n > 0) rc = tq_rt_agree(rt, tq_rt_allreduce_sum_f64(rt, kl, n));
    probe_free(&P);
    tq_qgptq_free(&gq);
    tq_arch_free(&a);
    tq_wsource_free(&inner);
    return rc;
}

// ------------------------------------------------------------------------------------------------
// fake-quantized checkpoint

tq_status tq_apply_plan(const tq_apply_opts* o, tq_apply_stats* st)
{
    if (!o || !o->model || !o->out_dir || !st || (!o->plan && !o->codec))
        return tq_fail(TQ_ERR_ARG, "apply-plan: missing arguments (model, plan or codec, output)");
    if (o->gptq && !o->hess_dir) return tq_fail(TQ_ERR_ARG, "apply-plan: GPTQ needs the H files (--hessians DIR)");
    if (check_hess_dir(o->hess_dir) != TQ_OK) return TQ_ERR_NOTFOUND;
    memset(st, 0, sizeof *st);
    double t0 = tq_rt_time();
    tq_status rc = TQ_OK;
    tq_ckpt* ck = NULL;
    tq_arch* a = NULL;
    tq_plan* plan = NULL;
    tq_st_writer* wr = NULL;
    float* w = NULL;
    float* dq = NULL;
    double* h = NULL;
    tq_qtensor q;
    memset(&q, 0, sizeof q);
    TQ_CHECK_GOTO(tq_ckpt_open(o->model, &ck), out);
    TQ_GOTO_FAIL(!tq_ckpt_config_json(ck), TQ_ERR_FORMAT, out, "%s: no config.json", o->model);
    TQ_CHECK_GOTO(tq_arch_from_json(tq_ckpt_config_json(ck), &a), out);
    TQ_CHECK_GOTO(check_descriptor(ck), out);
    if (o->plan) TQ_CHECK_GOTO(tq_plan_load(o->plan, &plan), out);
    TQ_CHECK_GOTO(tq_st_writer_create_dir(o->out_dir, 0, &wr), out);
    int64_t nt = tq_ckpt_count(ck);
    for (int64_t i = 0; i < nt; i++) {
        const tq_tensor_info* t = tq_ckpt_tensor(ck, i);
        TQ_CHECK_GOTO(tq_st_writer_add(wr, t->name, TQ_F32, t->ndim, t->shape), out);
    }
    TQ_CHECK_GOTO(tq_st_writer_begin(wr), out);
    for (int64_t i = 0; i < nt; i++) {
        const tq_tensor_info* t = tq_ckpt_tensor(ck, i);
        tq_role role = role_of(a, t->name);
        int64_t R = tq_tensor_rows(t), N = tq_tensor_cols(t);
        size_t n = (size_t)R * (size_t)N;
        free(w);
        free(dq);
        w = malloc(n * sizeof(float));
        dq = malloc(n * sizeof(float));
        TQ_GOTO_FAIL(!w || !dq, TQ_ERR_NOMEM, out, "apply-plan: out of memory for %s", t->name);
        TQ_CHECK_GOTO(tq_ckpt_read_f32(ck, t, 0, R, w, n * sizeof(float)), out);
        const char* label = NULL;
        if (plan) {
            label = tq_plan_codec(plan, t->name);
            TQ_GOTO_FAIL(!label, TQ_ERR_ARG, out, "%s does not name tensor %s: every tensor needs a line", o->plan,
                         t->name);
        } else if (t->ndim == 2 && tq_role_is_linear(role) &&
                   (o->quant_embed || (role != TQ_ROLE_EMBED && role != TQ_ROLE_LM_HEAD))) {
            label = o->codec;
        }
        st->tensors++;
        st->weights += (int64_t)n;
        tq_codec c;
        if (label) TQ_CHECK_GOTO(tq_codec_label_parse(label, &c), out);
        int lossless = !label || c.kind == TQ_CODEC_F32;
        if (lossless) {
            st->bytes += label ? tq_codec_bytes(&c, R, N) : t->nbytes;
            TQ_CHECK_GOTO(tq_st_writer_write_rows_f32(wr, t->name, 0, R, w, (int64_t)n), out);
            continue;
        }
        st->bytes += tq_codec_bytes(&c, R, N);
        st->quantized++;
        char hpath[4096 + TQ_MAX_NAME];
        tensor_kind k = classify(t, role, o->hess_dir, hpath, sizeof hpath);
        int64_t hd = 0;
        int diag = 0;
        free(h);
        h = NULL;
        if (k == K_MATRIX_H) {
            TQ_CHECK_GOTO(tq_hess_file_load(hpath, &h, &hd, &diag, NULL), out);
            TQ_GOTO_FAIL(hd != N, TQ_ERR_FORMAT, out, "%s: dimension %lld, tensor %s has %lld columns", hpath,
                         (long long)hd, t->name, (long long)N);
        }
        TQ_CHECK_GOTO(tq_qtensor_alloc(&q, &c, R, N, tq_tensor_seed(o->seed, t->name)), out);
        if (o->gptq && h && !diag && tq_gptq_supports(&c)) {
#ifdef TQ_HAVE_CUDA
            if (tq_linalg_use_gpu()) TQ_CHECK_GOTO(tq_gptq_quantize_gpu(w, h, &o->gopts, &q, t->name), out);
            else
#endif
                TQ_CHECK_GOTO(tq_gptq_quantize_ref(w, h, &o->gopts, &q, t->name), out);
            st->gptq_applied++;
        } else {
            TQ_CHECK_GOTO(tq_quantize_ref(w, &q, t->name), out);
        }
        TQ_CHECK_GOTO(tq_dequantize_ref(&q, dq), out);
        tq_qtensor_release(&q);
        if (h) {
            for (size_t j = 0; j < n; j++) w[j] -= dq[j];
            st->omega += tq_omega(w, R, N, h, diag);
        }
        TQ_CHECK_GOTO(tq_st_writer_write_rows_f32(wr, t->name, 0, R, dq, (int64_t)n), out);
    }
    TQ_CHECK_GOTO(tq_st_writer_finish(wr), out);
    /* config.json and tokenizer.bin beside */
    {
        char p[4096 + 64];
        const char* cfg = tq_ckpt_config_json(ck);
        snprintf(p, sizeof p, "%s/config.json", o->out_dir);
        TQ_CHECK_GOTO(tq_write_file_atomic(p, cfg, strlen(cfg)), out);
        char src[4096 + 64];
        snprintf(src, sizeof src, "%s/tokenizer.bin", o->model);
        if (tq_file_exists(src)) {
            char* buf = NULL;
            size_t len = 0;
            TQ_CHECK_GOTO(tq_read_file(src, &buf, &len), out);
            snprintf(p, sizeof p, "%s/tokenizer.bin", o->out_dir);
            rc = tq_write_file_atomic(p, buf, len);
            free(buf);
            if (rc != TQ_OK) goto out;
        }
    }
    st->seconds = tq_rt_time() - t0;
out:
    tq_qtensor_release(&q);
    free(w);
    free(dq);
    free(h);
    tq_st_writer_free(&wr);
    tq_plan_free(&plan);
    tq_arch_free(&a);
    tq_ckpt_free(&ck);
    return rc;
}
