/* alloc_stages.c — the calibrate and allocate stages of a run (issue 7), plugged into the stage
 * registry (stages/stage.c). Both are COLLECTIVE.
 *   calibrate: job.calib_data, calib_tokens / calib_ctx sequences of calib_ctx tokens -> full H files in
 *              RUN/calibrate/hessian (pipeline/calib.h; identical for any rank count).
 *   allocate:  the sensitivity table RUN/sensitivity/table.tsv (reused when its key file matches:
 *              same candidate codecs, group, seed and calibration output — so a new budget only re-solves),
 *              then the plan RUN/allocate/plan.txt (pipeline/allocate.h) that the quantize stage reads.
 *              Candidates: the stage's `allowed` list, else bin1 tq1 tq2 tq3 tq4 rtn2..rtn6 rtn8 int8.
 *              Rules: the quantize stage's rules (role, or name substring) are fixed codecs; norms default
 *              to f32. Ω is measured plainly (the quantize stage does not run GPTQ). When the model has at
 *              most TQ_PROBE_MAX_WEIGHTS weights, Ω is mapped to KL units with the KL probe (pipeline/
 *              sensrun.h: probe codecs bin1, tq2, tq4 on up to 512 calibration tokens). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "allocate.h"  /* defines: tq_allocate, tq_plan_write, tq_budget_parse */
#include "calib.h"     /* defines: tq_calibrate */
#include "fileio.h"    /* defines: tq_mkdirs, tq_read_file, tq_write_file_atomic */
#include "hash.h"      /* defines: tq_xxh64 */
#include "log.h"       /* defines: TQ_LOG0 */
#include "sensrun.h"   /* defines: tq_sensitivity_run */
#include "stage.h"     /* defines: tq_stage_ctx */

#define TQ_PROBE_MAX_WEIGHTS ((int64_t)200000000)

/* xxh64 over a file's bytes (0 when unreadable). */
static uint64_t file_hash(const char* path)
{
    char* b = NULL;
    size_t n = 0;
    if (tq_read_file(path, &b, &n) != TQ_OK) return 0;
    uint64_t h = tq_xxh64(b, n, 0);
    free(b);
    return h;
}

tq_status tq_stage_calibrate(tq_stage_ctx* ctx)
{
    const tq_job* job = &ctx->run->job;
    char out[TQ_PATH_MAX + 16];
    snprintf(out, sizeof out, "%s/hessian", ctx->dir);
    tq_calib_opts o;
    memset(&o, 0, sizeof o);
    o.model = ctx->run->model_dir;
    o.data = job->calib_data;
    o.tokenizer = job->tokenizer[0] ? job->tokenizer : NULL;
    o.seq_len = job->calib_ctx > 0 ? job->calib_ctx : 512;
    o.n_seqs = job->calib_tokens > 0 ? (int)(job->calib_tokens / o.seq_len) : 128;
    if (o.n_seqs < 1) o.n_seqs = 1;
    o.out_dir = out;
    o.quiet = 0;
    tq_calib_stats st;
    TQ_FORWARD(tq_calibrate(ctx->rt, &o, &st));
    ctx->units_total = st.n_inputs;
    ctx->units_done_now = st.n_inputs;
    /* output hash: the H files, in name order, on rank 0, broadcast */
    uint64_t h = 0;
    if (ctx->rt->rank == 0) {
        /* the names come from the checkpoint's inventory: hash each existing file in a stable order */
        tq_ckpt* ck = NULL;
        if (tq_ckpt_open(o.model, &ck) == TQ_OK) {
            for (int64_t i = 0; i < tq_ckpt_count(ck); i++) {
                char p[TQ_PATH_MAX + TQ_MAX_NAME + 32];
                snprintf(p, sizeof p, "%s/%s.hess.zst", out, tq_ckpt_tensor(ck, i)->name);
                uint64_t fh = tq_file_exists(p) ? file_hash(p) : 0;
                h = tq_xxh64(&fh, sizeof fh, h);
            }
            tq_ckpt_free(&ck);
        }
    }
    TQ_FORWARD(tq_stage_bcast(ctx->rt, &h, (int)sizeof h));
    ctx->output_hash = h;
    snprintf(ctx->summary, sizeof ctx->summary,
             "%d x %d tokens on %d rank(s), %.0f tokens/s, %" PRId64 " H files (%" PRId64 " experts pooled)", st.n_seqs,
             st.seq_len, st.ranks, st.tokens_per_s, st.n_inputs, st.pooled);
    return TQ_OK;
}

static void label_of(const char* codec, int group, char out[TQ_CODEC_LABEL])
{
    if (group > 0 && group != TQ_CODEC_DEFAULT_GROUP)
        snprintf(out, TQ_CODEC_LABEL, "%.15s:g%u", codec, (unsigned)(unsigned short)group);
    else
        snprintf(out, TQ_CODEC_LABEL, "%s", codec);
}

tq_status tq_stage_allocate(tq_stage_ctx* ctx)
{
    const tq_rt* rt = ctx->rt;
    const tq_job* job = &ctx->run->job;
    static const char* const defaults[] = {"bin1", "tq1", "tq2", "tq3", "tq4", "rtn2", "rtn3",
                                           "rtn4", "rtn5", "rtn6", "rtn8", "int8"};
    char labels[TQ_JOB_MAX_LIST + 16][TQ_CODEC_LABEL];
    const char* cand[TQ_JOB_MAX_LIST + 16];
    int nc = 0;
    int g = job->group > 0 ? job->group : TQ_CODEC_DEFAULT_GROUP;
    if (job->n_allowed > 0)
        for (int i = 0; i < job->n_allowed; i++) label_of(job->allowed[i], g, labels[nc++]);
    else
        for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++) label_of(defaults[i], g, labels[nc++]);
    for (int i = 0; i < nc; i++) cand[i] = labels[i];
    char hess[TQ_PATH_MAX + 32], table[TQ_PATH_MAX + 32], keyp[TQ_PATH_MAX + 32], plan_path[TQ_PATH_MAX + 32];
    snprintf(hess, sizeof hess, "%s/calibrate/hessian", ctx->run->dir);
    /* the table lives outside RUN/allocate (which is wiped when the budget changes) so a new budget
     * reuses it; its key file says what it was measured with */
    char sdir[TQ_PATH_MAX + 16];
    snprintf(sdir, sizeof sdir, "%s/sensitivity", ctx->run->dir);
    snprintf(table, sizeof table, "%s/table.tsv", sdir);
    snprintf(keyp, sizeof keyp, "%s/table.key", sdir);
    snprintf(plan_path, sizeof plan_path, "%s/plan.txt", ctx->dir);
    /* the table's key: candidates, seed, model, the calibration output (its state hash when present) */
    char key[4096];
    int kl = snprintf(key, sizeof key, "model=%s seed=%" PRIu64 " hess=%s", ctx->run->model_dir, job->seed,
                      tq_file_exists(hess) ? hess : "-");
    for (int i = 0; i < nc && kl < (int)sizeof key - 32; i++) kl += snprintf(key + kl, sizeof key - (size_t)kl, " %s", cand[i]);
    tq_status rc = TQ_OK;
    int reuse = 0;
    if (rt->rank == 0) {
        rc = tq_mkdirs(ctx->dir);
        if (rc == TQ_OK) rc = tq_mkdirs(sdir);
        char* old = NULL;
        size_t ol = 0;
        uint64_t hfiles = 0;
        tq_run_state rs;
        if (tq_state_load(ctx->run->dir, &rs) == TQ_OK) hfiles = rs.s[TQ_STAGE_CALIBRATE].output_hash[0] ? tq_xxh64(rs.s[TQ_STAGE_CALIBRATE].output_hash, 16, 0) : 0;
        kl += snprintf(key + kl, sizeof key - (size_t)kl, " calib=%016" PRIx64, hfiles);
        if (tq_file_exists(table) && tq_read_file(keyp, &old, &ol) == TQ_OK && ol == strlen(key) && !memcmp(old, key, ol))
            reuse = 1;
        free(old);
    }
    int flags[2] = {rc == TQ_OK, reuse};
    TQ_FORWARD(tq_rt_agree(rt, rc));
    TQ_FORWARD(tq_stage_bcast(rt, flags, (int)sizeof flags));
    reuse = flags[1];
    if (!reuse) {
        tq_sens_opts so;
        memset(&so, 0, sizeof so);
        so.model = ctx->run->model_dir;
        so.hess_dir = tq_file_exists(hess) ? hess : NULL;
        so.codecs = cand;
        so.n_codecs = nc;
        so.seed = job->seed;
        so.out = table;
        so.quiet = 1;
        tq_ckpt* ck = NULL;
        int64_t weights = 0;
        if (tq_ckpt_open(so.model, &ck) == TQ_OK) {
            for (int64_t i = 0; i < tq_ckpt_count(ck); i++) weights += tq_tensor_numel(tq_ckpt_tensor(ck, i));
            tq_ckpt_free(&ck);
        }
        if (so.hess_dir && job->calib_data[0] && weights > 0 && weights <= TQ_PROBE_MAX_WEIGHTS) {
            so.probe_data = job->calib_data;
            so.tokenizer = job->tokenizer[0] ? job->tokenizer : NULL;
            so.probe_tokens = job->calib_tokens > 0 && job->calib_tokens < 512 ? (int)job->calib_tokens : 512;
            so.probe_ctx = job->calib_ctx > 0 && job->calib_ctx < so.probe_tokens ? job->calib_ctx : 256;
            so.probe_codec = "bin1,tq2,tq4";
        }
        tq_sens_stats ss;
        TQ_FORWARD(tq_sensitivity_run(rt, &so, &ss));
        if (rt->rank == 0) rc = tq_write_file_atomic(keyp, key, strlen(key));
        TQ_FORWARD(tq_rt_agree(rt, rc));
        TQ_LOG0(TQ_LOG_INFO, "allocate: sensitivity table %s: %" PRId64 " rows in %.1f s%s", table, ss.rows, ss.seconds,
                so.probe_tokens ? " (KL probe)" : "");
    } else {
        TQ_LOG0(TQ_LOG_INFO, "allocate: reusing the sensitivity table %s (same codecs, seed and calibration)", table);
    }
    /* solve on rank 0, broadcast the outcome */
    char summary[512] = "";
    uint64_t h = 0;
    if (rt->rank == 0) {
        tq_sens_table* t = NULL;
        tq_plan* plan = NULL;
        tq_alloc_rule rules[TQ_JOB_MAX_RULES + 1];
        int nr = 0;
        for (int i = 0; i < job->n_rules; i++) {
            tq_alloc_rule* r = &rules[nr++];
            memset(r, 0, sizeof *r);
            if (job->rules[i].role[0]) snprintf(r->key, sizeof r->key, "%s", job->rules[i].role);
            else snprintf(r->key, sizeof r->key, "*%s*", job->rules[i].match);
            label_of(job->rules[i].codec, job->rules[i].group > 0 ? job->rules[i].group : g, r->codec);
        }
        memset(&rules[nr], 0, sizeof rules[nr]);
        snprintf(rules[nr].key, sizeof rules[nr].key, "norm");
        snprintf(rules[nr].codec, sizeof rules[nr].codec, "f32");
        nr++;
        tq_alloc_opts ao;
        memset(&ao, 0, sizeof ao);
        ao.rules = rules;
        ao.n_rules = nr;
        rc = tq_sens_table_load(table, &t);
        if (rc == TQ_OK) {
            char bud[64];
            if (job->budget_bytes) snprintf(bud, sizeof bud, "%" PRIu64, job->budget_bytes);
            else snprintf(bud, sizeof bud, "%.17gbpw", job->budget_bpw);
            rc = tq_budget_parse(bud, tq_sens_table_weights(t), &ao.budget_bytes);
        }
        if (rc == TQ_OK) rc = tq_allocate(t, &ao, &plan);
        if (rc == TQ_OK) rc = tq_plan_write(plan, plan_path);
        if (rc == TQ_OK) {
            double tw = (double)plan->total_weights;
            snprintf(summary, sizeof summary,
                     "plan %" PRIu64 " bytes (%.4f bpw) <= budget %" PRIu64 "; sum omega %.4e, gap to bound %.3f%%%s",
                     plan->total_bytes, 8.0 * (double)plan->total_bytes / tw, plan->budget_bytes, plan->omega,
                     plan->omega > 0 ? 100.0 * (plan->omega - plan->lower_bound) / plan->omega : 0.0,
                     plan->proven_optimal ? " (proven optimal)" : "");
            h = file_hash(plan_path);
        }
        tq_plan_free(&plan);
        tq_sens_table_free(&t);
    }
    TQ_FORWARD(tq_rt_agree(rt, rc));
    TQ_FORWARD(tq_stage_bcast(rt, summary, (int)sizeof summary));
    TQ_FORWARD(tq_stage_bcast(rt, &h, (int)sizeof h));
    snprintf(ctx->summary, sizeof ctx->summary, "%s", summary);
    ctx->output_hash = h;
    ctx->units_total = 1;
    ctx->units_done_now = 1;
    return TQ_OK;
}
