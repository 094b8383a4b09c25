/* alloc_stages.c — the calibrate and allocate stages of a run (issue 7), plugged into the stage
 * registry (stages/stage.c). Both are COLLECTIVE.
 *   calibrate: job.calib_data, calib_tokens / calib_ctx sequences of calib_ctx tokens -> full H files in
 *              RUN/calibrate/hessian (pipeline/calib.h; identical for any rank count). When calib_data is
 *              the validate stage's data file, its first validate.max_tokens tokens (the ones validate
 *              scores) are held out: the stage writes the tokens after them to RUN/calibrate/tokens.tok
 *              (and their count to tokens.held) and calibrates on those (the probe and the guard below use
 *              them too; allocate warns when validate.max_tokens later outgrows the held-out count).
 *   allocate:  the sensitivity table RUN/sensitivity/table.tsv (reused when its key file matches:
 *              same candidate codecs, group, seed, GPTQ options and calibration output — so a new budget
 *              only re-solves), then the plan RUN/allocate/plan.txt (pipeline/allocate.h) that the quantize
 *              stage reads. Candidates: the stage's `allowed` list, else bin1 tq1 tq2 tq3 tq4 rtn2..rtn6
 *              rtn8 int8. Rules: the quantize stage's rules (role, or name substring) are fixed codecs
 *              (a warning when they pin more than 20 % of the budget); norms default to f32. Ω is measured
 *              as the quantize stage will store the tensor: plainly, or with GPTQ when quantize has
 *              gptq: true (embeddings stay plain, pipeline/qgptq.h).
 *              When the model has at most TQ_PROBE_MAX_WEIGHTS weights and TQ_PROBE_MAX_MATRICES matrices
 *              (the CPU forward pass is cheap and there are few tensors to probe one by one):
 *              - Ω is mapped to KL units with the KL probe (pipeline/sensrun.h: probe codecs bin1, tq2,
 *                tq4 on up to 512 calibration tokens);
 *              - a final GUARD: summed per-tensor KL underestimates the joint damage (errors of many
 *                tensors compound), so the candidates (the allocation minimizing Σ Ω, and Σ Ω^0.75 /
 *                Σ Ω^1.5, which spread / concentrate the damage; the uniform plans that fit the budget,
 *                the largest and those within 10 % of it) are measured whole — every tensor quantized as
 *                the quantize stage will — on up to 2048 calibration tokens (never validate's), and the
 *                lowest mean KL wins. The plan header lists every candidate with its bytes and KL.
 *              Every rank solves the same candidates; the guard deals them to the ranks. */
#include <inttypes.h>
#include <math.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "allocate.h"  /* defines: tq_allocate, tq_plan_write, tq_budget_parse */
#include "arch.h"      /* defines: tq_arch_from_ckpt */
#include "calib.h"     /* defines: tq_calibrate */
#include "fileio.h"    /* defines: tq_mkdirs, tq_read_file, tq_write_file_atomic */
#include "hash.h"      /* defines: tq_xxh64 */
#include "log.h"       /* defines: TQ_LOG0 */
#include "sensrun.h"   /* defines: tq_sensitivity_run */
#include "stage.h"     /* defines: tq_stage_ctx */
#include "validate.h"  /* defines: tq_load_tokens */

#define TQ_PROBE_MAX_WEIGHTS ((int64_t)200000000)
#define TQ_PROBE_MAX_MATRICES ((int64_t)4096) /* the probe runs ~3 forward passes per matrix */

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

/* RUN/calibrate/tokens.tok: the calibration tokens, when they had to be separated from validate's. */
static void calib_tokens_path(const tq_run* run, char out[TQ_PATH_MAX + 32])
{
    snprintf(out, TQ_PATH_MAX + 32, "%s/calibrate/tokens.tok", run->dir);
}

/* The calibration text is the validate stage's data file (validate enabled). */
static int calib_is_eval_data(const tq_job* job)
{
    char a[PATH_MAX], b[PATH_MAX];
    return job->stage[TQ_STAGE_VALIDATE].enabled && job->eval_data[0] && job->calib_data[0] &&
           realpath(job->calib_data, a) && realpath(job->eval_data, b) && !strcmp(a, b);
}

/* RUN/calibrate/tokens.held: how many leading tokens the calibrate stage held out ("%lld\n"). */
static void calib_held_path(const tq_run* run, char out[TQ_PATH_MAX + 32])
{
    snprintf(out, TQ_PATH_MAX + 32, "%s/calibrate/tokens.held", run->dir);
}

/* Validation must score tokens the calibration (and the allocate stage's probe and guard) never saw.
 * When calibrate.data is the same file as validate.data, both would start at its first token: then rank 0
 * writes the file's tokens AFTER the first validate.max_tokens to RUN/calibrate/tokens.tok (int32 ids) and
 * *skipped says how many were held out (0: different files, nothing written). COLLECTIVE. */
static tq_status calib_holdout(tq_stage_ctx* ctx, char tokf[TQ_PATH_MAX + 32], int64_t* skipped)
{
    const tq_job* job = &ctx->run->job;
    calib_tokens_path(ctx->run, tokf);
    int64_t skip = 0;
    tq_status rc = TQ_OK;
    if (ctx->rt->rank == 0) {
        if (calib_is_eval_data(job)) {
            int* toks = NULL;
            int64_t nt = 0;
            tq_ckpt* ck = NULL;
            tq_arch* ar = NULL;
            rc = tq_ckpt_open(ctx->run->model_dir, &ck);
            if (rc == TQ_OK) rc = tq_arch_from_ckpt(ck, &ar);
            if (rc == TQ_OK) {
                char tp[TQ_PATH_MAX + 32];
                snprintf(tp, sizeof tp, "%s/tokenizer.bin", ctx->run->model_dir);
                rc = tq_load_tokens(job->calib_data, job->tokenizer[0] ? job->tokenizer : tp, ar->vocab, 0, &toks, &nt);
            }
            skip = job->eval_max_tokens;
            if (rc == TQ_OK && (skip <= 0 || skip >= nt))
                rc = tq_fail(TQ_ERR_ARG,
                             "calibrate.data %s is also validate.data and validate scores all of its %" PRId64
                             " tokens: give calibrate other text, or set validate.max_tokens below %" PRId64
                             " (calibration then uses the tokens after them)",
                             job->calib_data, nt, nt);
            if (rc == TQ_OK) rc = tq_mkdirs(ctx->dir);
            if (rc == TQ_OK) {
                int64_t n = nt - skip;
                unsigned char* buf = malloc((size_t)n * 4);
                if (!buf) rc = tq_fail(TQ_ERR_NOMEM, "calibrate: out of memory for %" PRId64 " tokens", n);
                for (int64_t i = 0; buf && i < n; i++) {
                    uint32_t v = (uint32_t)toks[skip + i];
                    for (int k = 0; k < 4; k++) buf[4 * i + k] = (unsigned char)(v >> (8 * k));
                }
                if (buf) rc = tq_write_file_atomic(tokf, buf, (size_t)n * 4);
                free(buf);
            }
            if (rc == TQ_OK) {
                char hp[TQ_PATH_MAX + 32], txt[32];
                calib_held_path(ctx->run, hp);
                int l = snprintf(txt, sizeof txt, "%" PRId64 "\n", skip);
                rc = tq_write_file_atomic(hp, txt, (size_t)l);
            }
            if (rc == TQ_OK)
                TQ_LOG0(TQ_LOG_INFO,
                        "calibrate: %s is also the validate data: its first %" PRId64 " tokens are held out for validate, "
                        "calibration, probe and guard use the %" PRId64 " after them (%s)",
                        job->calib_data, skip, nt - skip, tokf);
            free(toks);
            tq_arch_free(&ar);
            tq_ckpt_free(&ck);
        }
    }
    TQ_FORWARD(tq_rt_agree(ctx->rt, rc));
    TQ_FORWARD(tq_stage_bcast(ctx->rt, &skip, (int)sizeof skip));
    *skipped = skip;
    return TQ_OK;
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
    /* layer-sharded calibration (helper gptqstage): job calibrate.parallel / mem_per_rank */
    o.parallel = !strcmp(job->calib_parallel, "layers") ? TQ_CALIB_PAR_LAYERS
                 : !strcmp(job->calib_parallel, "seq")  ? TQ_CALIB_PAR_SEQ
                                                        : TQ_CALIB_PAR_AUTO;
    o.mem_per_rank = (double)job->calib_mem_per_rank;
    o.diag_experts = job->calib_diag_experts;
    char tokf[TQ_PATH_MAX + 32];
    int64_t skipped = 0;
    TQ_FORWARD(calib_holdout(ctx, tokf, &skipped));
    if (skipped > 0) o.data = tokf;
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
             "%d x %d tokens on %d rank(s) (%s split), %.0f tokens/s, %" PRId64 " H files (%" PRId64 " experts pooled)",
             st.n_seqs, st.seq_len, st.ranks, st.parallel, st.tokens_per_s, st.n_inputs, st.pooled);
    return TQ_OK;
}

static void label_of(const char* codec, int group, char out[TQ_CODEC_LABEL])
{
    if (group > 0 && group != TQ_CODEC_DEFAULT_GROUP)
        snprintf(out, TQ_CODEC_LABEL, "%.15s:g%u", codec, (unsigned)(unsigned short)group);
    else
        snprintf(out, TQ_CODEC_LABEL, "%s", codec);
}

/* A copy of the table with every Ω raised to the power g (the guard's alternative objectives). */
static tq_status table_pow(const tq_sens_table* t, double g, tq_sens_table** out)
{
    TQ_FORWARD(tq_sens_table_create(out));
    for (int64_t i = 0; i < t->n; i++) {
        tq_sens_row r = t->rows[i];
        r.omega = r.omega > 0 ? pow(r.omega, g) : 0;
        TQ_FORWARD(tq_sens_table_add(*out, &r));
    }
    return TQ_OK;
}

/* Two plans assign the same codec to every tensor. */
static int plan_same(const tq_plan* a, const tq_plan* b)
{
    if (a->n != b->n) return 0;
    for (int64_t i = 0; i < a->n; i++)
        if (strcmp(a->e[i].tensor, b->e[i].tensor) || strcmp(a->e[i].codec, b->e[i].codec)) return 0;
    return 1;
}

/* The candidate plans of the guard: the allocation (objective Σ Ω^g for each g of guard_gamma, g = 1 first:
 * the plain solution), then the uniform plans of the candidate codecs that fit the budget, largest first
 * (at most TQ_GUARD_UNIFORM: the largest, and others within 10 % of the budget). Duplicates are dropped. Every rank builds the same list. Local. */
#define TQ_GUARD_MAX 8
#define TQ_GUARD_UNIFORM 3
#define TQ_GUARD_TOKENS 2048
static const double guard_gamma[] = {1.0, 0.75, 1.5};

typedef struct {
    tq_plan* p[TQ_GUARD_MAX];
    char what[TQ_GUARD_MAX][48];
    int n;
} plan_set;

static void plan_set_free(plan_set* s)
{
    for (int i = 0; i < s->n; i++) tq_plan_free(&s->p[i]);
    s->n = 0;
}

static int plan_set_add(plan_set* s, tq_plan* p, const char* what)
{
    for (int i = 0; i < s->n; i++)
        if (plan_same(s->p[i], p)) {
            tq_plan_free(&p);
            return 0;
        }
    if (s->n == TQ_GUARD_MAX) {
        tq_plan_free(&p);
        return 0;
    }
    s->p[s->n] = p;
    snprintf(s->what[s->n], sizeof s->what[s->n], "%s", what);
    s->n++;
    return 1;
}

static tq_status build_plans(const tq_sens_table* t, const tq_alloc_opts* ao, const char* const* cand, int nc,
                             int guard, plan_set* s)
{
    int ng = guard ? (int)(sizeof guard_gamma / sizeof guard_gamma[0]) : 1;
    for (int gi = 0; gi < ng; gi++) {
        tq_sens_table* tg = NULL;
        tq_plan* p = NULL;
        tq_status rc = guard_gamma[gi] == 1.0 ? tq_allocate(t, ao, &p) : table_pow(t, guard_gamma[gi], &tg);
        if (rc == TQ_OK && tg) rc = tq_allocate(tg, ao, &p);
        tq_sens_table_free(&tg);
        if (rc != TQ_OK) return rc;
        if (guard_gamma[gi] != 1.0) {
            /* report the plan's Ω in the table's own units */
            p->omega = 0;
            for (int64_t i = 0; i < p->n; i++) {
                p->e[i].omega = pow(p->e[i].omega, 1.0 / guard_gamma[gi]);
                p->omega += p->e[i].omega;
            }
            p->lower_bound = -1; /* no bound on this objective */
            p->proven_optimal = 0;
        }
        char what[48];
        if (guard_gamma[gi] == 1.0) snprintf(what, sizeof what, "allocation");
        else snprintf(what, sizeof what, "allocation of sum omega^%.2g", guard_gamma[gi]);
        plan_set_add(s, p, what);
    }
    if (!guard) return TQ_OK;
    tq_plan* u[TQ_JOB_MAX_LIST + 16];
    int uc[TQ_JOB_MAX_LIST + 16];
    int nu = 0;
    for (int c = 0; c < nc; c++) {
        tq_plan* p = NULL;
        tq_status rc = tq_plan_uniform(t, ao, cand[c], &p);
        if (rc != TQ_OK) {
            for (int k = 0; k < nu; k++) tq_plan_free(&u[k]);
            return rc;
        }
        if (p->total_bytes <= ao->budget_bytes) {
            uc[nu] = c;
            u[nu++] = p;
        } else {
            tq_plan_free(&p);
        }
    }
    for (int k = 0; k < nu; k++) /* largest first */
        for (int j = k + 1; j < nu; j++)
            if (u[j]->total_bytes > u[k]->total_bytes) {
                tq_plan* x = u[k];
                u[k] = u[j];
                u[j] = x;
                int y = uc[k];
                uc[k] = uc[j];
                uc[j] = y;
            }
    for (int k = 0; k < nu; k++) {
        char what[48];
        snprintf(what, sizeof what, "uniform %s", cand[uc[k]]);
        /* the largest that fits, and the others within 10 % of the budget (a much smaller one cannot win) */
        if (k < TQ_GUARD_UNIFORM && (k == 0 || u[k]->total_bytes >= ao->budget_bytes - ao->budget_bytes / 10))
            plan_set_add(s, u[k], what);
        else
            tq_plan_free(&u[k]);
    }
    return TQ_OK;
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
    char tokf[TQ_PATH_MAX + 32];
    snprintf(hess, sizeof hess, "%s/calibrate/hessian", ctx->run->dir);
    calib_tokens_path(ctx->run, tokf);
    /* probe and guard tokens: the calibration tokens (held out from validate when they share a file) */
    const char* pdata = tq_file_exists(tokf) ? tokf : job->calib_data;
    if (rt->rank == 0 && calib_is_eval_data(job)) {
        /* validate.max_tokens may have grown since calibrate ran (it is not one of calibrate's inputs) */
        char hp[TQ_PATH_MAX + 32];
        char* txt = NULL;
        size_t tl = 0;
        long long held = 0;
        calib_held_path(ctx->run, hp);
        if (tq_read_file(hp, &txt, &tl) == TQ_OK) held = atoll(txt);
        free(txt);
        if (held < job->eval_max_tokens)
            TQ_LOG0(TQ_LOG_WARN, "allocate: calibrate held out %lld tokens of %s but validate scores %" PRId64
                    ": validation is no longer held out; re-run the calibrate stage (`tqpipe stage calibrate`)",
                    held, job->calib_data, job->eval_max_tokens);
    }
    /* the table lives outside RUN/allocate (which is wiped when the budget changes) so a new budget
     * reuses it; its key file says what it was measured with */
    char sdir[TQ_PATH_MAX + 16];
    snprintf(sdir, sizeof sdir, "%s/sensitivity", ctx->run->dir);
    snprintf(table, sizeof table, "%s/table.tsv", sdir);
    snprintf(keyp, sizeof keyp, "%s/table.key", sdir);
    snprintf(plan_path, sizeof plan_path, "%s/plan.txt", ctx->dir);
    int64_t weights = 0, matrices = 0;
    {
        tq_ckpt* ck = NULL;
        if (tq_ckpt_open(ctx->run->model_dir, &ck) == TQ_OK) {
            for (int64_t i = 0; i < tq_ckpt_count(ck); i++) {
                weights += tq_tensor_numel(tq_ckpt_tensor(ck, i));
                matrices += tq_ckpt_tensor(ck, i)->ndim == 2;
            }
            tq_ckpt_free(&ck);
        }
    }
    /* the KL probe and the guard run the model on the calibration tokens: small models only */
    int probe = tq_file_exists(hess) && pdata[0] && weights > 0 && weights <= TQ_PROBE_MAX_WEIGHTS &&
                matrices <= TQ_PROBE_MAX_MATRICES;
    if (!probe && tq_file_exists(hess) && pdata[0])
        TQ_LOG0(TQ_LOG_INFO, "allocate: %" PRId64 " weights in %" PRId64 " matrices (probe limits %" PRId64 " / %" PRId64
                "): no KL probe or guard; the plan minimizes the summed Hessian damage", weights, matrices,
                TQ_PROBE_MAX_WEIGHTS, TQ_PROBE_MAX_MATRICES);
    /* the table's key: candidates, seed, model, probe data, the calibration output (its state hash) */
    char key[4096];
    int kl = snprintf(key, sizeof key, "model=%s seed=%" PRIu64 " hess=%s probe=%s gptq=%d,%d,%.9g", ctx->run->model_dir,
                      job->seed, tq_file_exists(hess) ? hess : "-", probe ? pdata : "-", job->gptq, job->gptq_act_order,
                      job->gptq_damp);
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
        /* the quantize stage's GPTQ (pipeline/qgptq.h): Ω after GPTQ, embeddings plain as it stores them */
        so.gptq = job->gptq;
        so.gptq_plain_embed = 1;
        tq_gptq_opts_default(&so.gopts);
        so.gopts.act_order = job->gptq_act_order;
        if (job->gptq_damp > 0) so.gopts.damp = job->gptq_damp;
        if (probe) {
            so.probe_data = pdata;
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
    /* every rank solves (deterministic: the same plans everywhere), the guard measures them in parallel */
    tq_sens_table* t = NULL;
    plan_set ps;
    memset(&ps, 0, sizeof ps);
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
    if (rc == TQ_OK) rc = build_plans(t, &ao, cand, nc, probe, &ps);
    rc = tq_rt_agree(rt, rc);
    double kls[TQ_GUARD_MAX] = {0};
    int best = 0;
    int gtok = 0;
    if (rc == TQ_OK && probe && ps.n > 1) {
        tq_plan_kl_opts ko;
        memset(&ko, 0, sizeof ko);
        ko.model = ctx->run->model_dir;
        ko.data = pdata;
        ko.tokenizer = job->tokenizer[0] ? job->tokenizer : NULL;
        ko.tokens = job->calib_tokens > 0 && job->calib_tokens < TQ_GUARD_TOKENS ? (int)job->calib_tokens : TQ_GUARD_TOKENS;
        ko.ctx = job->calib_ctx > 0 && job->calib_ctx < ko.tokens ? job->calib_ctx : 256;
        ko.seed = job->seed;
        ko.hess_dir = hess;
        ko.gptq = job->gptq;
        tq_gptq_opts_default(&ko.gopts);
        ko.gopts.act_order = job->gptq_act_order;
        if (job->gptq_damp > 0) ko.gopts.damp = job->gptq_damp;
        gtok = ko.tokens;
        double t0 = tq_rt_time();
        rc = tq_plan_kl(rt, &ko, (const tq_plan* const*)ps.p, ps.n, kls);
        for (int i = 1; rc == TQ_OK && i < ps.n; i++)
            if (kls[i] < kls[best]) best = i;
        if (rc == TQ_OK)
            TQ_LOG0(TQ_LOG_INFO, "allocate: guard measured %d candidate plans on %d calibration tokens in %.1f s: %s wins",
                    ps.n, gtok, tq_rt_time() - t0, ps.what[best]);
    }
    /* rank 0 writes the chosen plan */
    char summary[512] = "";
    uint64_t h = 0;
    if (rc == TQ_OK && rt->rank == 0) {
        tq_plan* plan = ps.p[best];
        int nl = 0;
        if (gtok > 0) {
            nl += snprintf(plan->notes + nl, sizeof plan->notes - (size_t)nl,
                           "guard: mean KL (nats/token) of each candidate plan on %d calibration tokens; the lowest is this plan",
                           gtok);
            for (int i = 0; i < ps.n && nl < (int)sizeof plan->notes - 128; i++) {
                const tq_plan* c = ps.p[i];
                nl += snprintf(plan->notes + nl, sizeof plan->notes - (size_t)nl, "\nguard: %-34s %8" PRIu64
                               " bytes (%.4f bpw) KL %.5f%s", ps.what[i], c->total_bytes,
                               8.0 * (double)c->total_bytes / (double)c->total_weights, kls[i], i == best ? "  <- chosen" : "");
            }
        }
        /* bytes the rules pin (the allocator cannot trade them): a large share starves the other tensors */
        uint64_t pinned = 0;
        for (int64_t i = 0; i < plan->n; i++)
            for (int r = 0; r < job->n_rules; r++) {
                const tq_codec_rule* ru = &job->rules[r];
                if ((ru->role[0] && !strcmp(ru->role, plan->e[i].role)) || (ru->match[0] && strstr(plan->e[i].tensor, ru->match))) {
                    pinned += plan->e[i].bytes;
                    break;
                }
            }
        if (pinned > ao.budget_bytes / 5)
            TQ_LOG0(TQ_LOG_WARN, "allocate: the quantize rules pin %" PRIu64 " bytes (%.0f%% of the budget) at fixed codecs; "
                    "the allocator only distributes the rest (drop rules such as role: embed when the allocate stage runs)",
                    pinned, 100.0 * (double)pinned / (double)ao.budget_bytes);
        rc = tq_plan_write(plan, plan_path);
        if (rc == TQ_OK) {
            double tw = (double)plan->total_weights;
            int sl = snprintf(summary, sizeof summary, "plan %" PRIu64 " bytes (%.4f bpw) <= budget %" PRIu64 "; %s",
                              plan->total_bytes, 8.0 * (double)plan->total_bytes / tw, plan->budget_bytes, ps.what[best]);
            if (gtok > 0)
                snprintf(summary + sl, sizeof summary - (size_t)sl, ", calibration KL %.4f (best of %d plans)", kls[best], ps.n);
            else
                snprintf(summary + sl, sizeof summary - (size_t)sl, ", sum omega %.4e, gap to bound %.3f%%%s", plan->omega,
                         plan->omega > 0 ? 100.0 * (plan->omega - plan->lower_bound) / plan->omega : 0.0,
                         plan->proven_optimal ? " (proven optimal)" : "");
            h = file_hash(plan_path);
        }
    }
    plan_set_free(&ps);
    tq_sens_table_free(&t);
    TQ_FORWARD(tq_rt_agree(rt, rc));
    TQ_FORWARD(tq_stage_bcast(rt, summary, (int)sizeof summary));
    TQ_FORWARD(tq_stage_bcast(rt, &h, (int)sizeof h));
    snprintf(ctx->summary, sizeof ctx->summary, "%s", summary);
    ctx->output_hash = h;
    ctx->units_total = 1;
    ctx->units_done_now = 1;
    return TQ_OK;
}
