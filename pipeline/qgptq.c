/* qgptq.c — per-unit GPTQ for the quantize stage (contract in qgptq.h): which tensors get GPTQ, the H
 * file of a tensor's input (cached while consecutive units share it), the CPU / GPU dispatch, and the
 * plain fallback with one note per unsupported codec. */
#include "qgptq.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "arch.h"       /* defines: tq_role_parse, tq_role_is_linear */
#include "calib.h"      /* defines: tq_calib_input_key, tq_hess_file_load */
#include "ckpt.h"       /* defines: TQ_MAX_NAME */
#include "fileio.h"     /* defines: tq_file_exists */
#include "linalg_gpu.h" /* defines: tq_linalg_use_gpu, tq_gptq_quantize_gpu */
#include "log.h"        /* defines: TQ_LOG */
#include "rt.h"         /* defines: tq_rt_time */

#define TQ_QGPTQ_MAX_NOTES 32

struct tq_qgptq {
    char dir[4096];
    char fix[4096 + 256];
    tq_gptq_opts o;
    int allow_gpu;
    char key[TQ_MAX_NAME]; /* input key of the cached H ("" = none) */
    double* h;             /* [d x d], NULL when the key's file is diagonal-only */
    int64_t d;
    int diag;              /* the cached key's H file holds only diag(H): units quantized plainly */
    int noted_diag;
    char noted[TQ_QGPTQ_MAX_NOTES][16]; /* codecs already reported as "plain" */
    int n_noted;
    tq_qgptq_stats st;
};

tq_status tq_qgptq_create(const char* hess_dir, const tq_gptq_opts* o, int allow_gpu, const char* fix, tq_qgptq** out)
{
    if (!hess_dir || !out) return tq_fail(TQ_ERR_ARG, "gptq: NULL argument");
    *out = NULL;
    const char* hint = fix ? fix : "run `tqpipe calibrate --out DIR` (or the job's calibrate stage) first";
    struct stat sb;
    if (stat(hess_dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return tq_fail(TQ_ERR_NOTFOUND, "quantize with gptq: the H files directory %s is missing (%s): %s", hess_dir,
                       errno ? strerror(errno) : "not a directory", hint);
    tq_qgptq* g = calloc(1, sizeof *g);
    if (!g) return tq_fail(TQ_ERR_NOMEM, "gptq: out of memory");
    snprintf(g->dir, sizeof g->dir, "%s", hess_dir);
    snprintf(g->fix, sizeof g->fix, "%s", hint);
    if (o) g->o = *o;
    else tq_gptq_opts_default(&g->o);
    g->allow_gpu = allow_gpu;
    *out = g;
    return TQ_OK;
}

tq_status tq_qgptq_for_run(const char* run_dir, int job_gptq, int act_order, double damp, int allow_gpu,
                           tq_qgptq** out)
{
    if (!out) return tq_fail(TQ_ERR_ARG, "gptq: NULL argument");
    *out = NULL;
    if (!job_gptq) return TQ_OK;
    if (!run_dir) return tq_fail(TQ_ERR_ARG, "gptq: NULL run directory");
    char dir[4096], fix[4096 + 128];
    snprintf(dir, sizeof dir, "%s/calibrate/hessian", run_dir);
    snprintf(fix, sizeof fix, "run the calibrate stage first (`tqpipe stage calibrate --run %s`), or set gptq: false",
             run_dir);
    tq_gptq_opts o;
    tq_gptq_opts_default(&o);
    o.act_order = act_order;
    if (damp > 0) o.damp = damp;
    tq_status rc = tq_qgptq_create(dir, &o, allow_gpu, fix, out);
    if (rc == TQ_OK)
        TQ_LOG(TQ_LOG_DBG, "gptq: H files from %s (damp %g, act_order %d, block %d)", dir, o.damp, o.act_order, o.block);
    return rc;
}

void tq_qgptq_free(tq_qgptq** pg)
{
    if (!pg || !*pg) return;
    const tq_qgptq_stats* st = &(*pg)->st;
    if (st->gptq_units + st->plain_units > 0)
        TQ_LOG(TQ_LOG_INFO, "gptq: %lld units with GPTQ (%.2f s, %lld H files read), %lld plain", (long long)st->gptq_units,
               st->seconds, (long long)st->h_loads, (long long)st->plain_units);
    free((*pg)->h);
    free(*pg);
    *pg = NULL;
}

void tq_qgptq_get_stats(const tq_qgptq* g, tq_qgptq_stats* st)
{
    if (!st) return;
    if (g) *st = g->st;
    else memset(st, 0, sizeof *st);
}

int tq_qgptq_applies(const char* tensor, const char* role_name, int ndim, const tq_codec* c, const char** why)
{
    const char* w = NULL;
    tq_role r = role_name ? tq_role_parse(role_name) : TQ_ROLE_OTHER;
    if (r == TQ_ROLE_COUNT) r = TQ_ROLE_OTHER;
    if (ndim != 2) w = "not a 2-D matrix";
    else if (!tq_role_is_linear(r)) w = "not a linear layer";
    else if (r == TQ_ROLE_EMBED) w = "embedding (rows are looked up, not multiplied)";
    else if (!tq_gptq_supports(c)) w = "codec not supported by GPTQ (rtn2..8, int8, tq1..4, bin1 are)";
    (void)tensor;
    if (why) *why = w;
    return w == NULL;
}

/* Make g->h the H of `tensor`'s input (g->diag = 1 and no matrix when the file is diagonal-only). */
static tq_status load_h(tq_qgptq* g, const char* tensor, int64_t cols)
{
    char key[TQ_MAX_NAME];
    tq_calib_input_key(tensor, key);
    if (g->key[0] && !strcmp(key, g->key)) return TQ_OK;
    free(g->h);
    g->h = NULL;
    g->diag = 0;
    g->key[0] = '\0';
    char path[4096 + TQ_MAX_NAME + 16];
    snprintf(path, sizeof path, "%s/%s.hess.zst", g->dir, key);
    if (!tq_file_exists(path))
        return tq_fail(TQ_ERR_NOTFOUND, "quantize with gptq: tensor %s needs the H file %s, which is missing: %s", tensor,
                       path, g->fix);
    double* h = NULL;
    int64_t d = 0;
    int diag = 0;
    TQ_FORWARD(tq_hess_file_load(path, &h, &d, &diag, NULL));
    if (d != cols) {
        free(h);
        return tq_fail(TQ_ERR_FORMAT, "quantize with gptq: %s is %lld wide but tensor %s has %lld columns: %s", path,
                       (long long)d, tensor, (long long)cols, g->fix);
    }
    if (diag) { /* calibrated with --diag / expert_h: diag: no full H for this input */
        free(h);
        h = NULL;
    }
    g->h = h;
    g->d = d;
    g->diag = diag;
    snprintf(g->key, sizeof g->key, "%s", key);
    g->st.h_loads++;
    return TQ_OK;
}

static void note_plain(tq_qgptq* g, const tq_codec* c, const char* tensor, const char* why)
{
    for (int i = 0; i < g->n_noted; i++)
        if (!strcmp(g->noted[i], c->name)) return;
    if (g->n_noted < TQ_QGPTQ_MAX_NOTES) snprintf(g->noted[g->n_noted++], sizeof g->noted[0], "%s", c->name);
    TQ_LOG(TQ_LOG_INFO, "gptq: codec %s units (first: %s) are quantized plainly: %s", c->name, tensor, why);
}

tq_status tq_qgptq_quantize(tq_qgptq* g, const char* tensor, const char* role_name, int ndim, int allow_gpu,
                            const float* w, tq_qtensor* q, const char* what, int* applied)
{
    if (applied) *applied = 0;
    if (!tensor || !w || !q) return tq_fail(TQ_ERR_ARG, "gptq: NULL argument");
    if (!what) what = tensor;
    const char* why = NULL;
    if (!g || !tq_qgptq_applies(tensor, role_name, ndim, &q->codec, &why)) {
        /* plain: notes only for matrices a user might expect GPTQ on (an unsupported quantizing codec) */
        if (g) {
            g->st.plain_units++;
            tq_role r = role_name ? tq_role_parse(role_name) : TQ_ROLE_OTHER;
            const tq_codec_kind k = q->codec.kind;
            if (ndim == 2 && r != TQ_ROLE_COUNT && tq_role_is_linear(r) && r != TQ_ROLE_EMBED && k != TQ_CODEC_F32 &&
                k != TQ_CODEC_FP16 && k != TQ_CODEC_BF16)
                note_plain(g, &q->codec, tensor, why);
        }
        return allow_gpu ? tq_quantize_gpu(w, q, what) : tq_quantize_ref(w, q, what);
    }
    double t0 = tq_rt_time();
    TQ_FORWARD(load_h(g, tensor, q->cols));
    if (g->diag) {
        if (!g->noted_diag)
            TQ_LOG(TQ_LOG_INFO, "gptq: the H file of %s (%s) holds only diag(H) (calibrate --diag, or expert_h: diag for "
                   "experts): such tensors are quantized plainly", tensor, g->key);
        g->noted_diag = 1;
        g->st.plain_units++;
        return allow_gpu ? tq_quantize_gpu(w, q, what) : tq_quantize_ref(w, q, what);
    }
    tq_status rc;
#ifdef TQ_HAVE_CUDA
    if (g->allow_gpu && allow_gpu && tq_linalg_use_gpu()) rc = tq_gptq_quantize_gpu(w, g->h, &g->o, q, what);
    else
#endif
        rc = tq_gptq_quantize_ref(w, g->h, &g->o, q, what);
    g->st.seconds += tq_rt_time() - t0;
    if (rc != TQ_OK) return rc;
    g->st.gptq_units++;
    if (applied) *applied = 1;
    return TQ_OK;
}
