/* quantize.c — the quantize stage: every rank takes its pending units (row slices of tensors; the
 * unit list is ingest's, so it never depends on the rank count), reads the rows as fp32, quantizes
 * them with the codec the plan assigns (RUN/allocate/plan.txt when the allocate stage ran, else the
 * job's rules and default codec) on the GPU when one is present (kernels/codec.h tq_quantize) or on
 * the CPU, and stores the packed slice durably: appended to the rank's segment file and fdatasync'd,
 * then journaled with its XXH3-64 (pipeline/manifest.h). Memory per rank: one unit's fp32 rows + its
 * packed bytes. Seeds: tq_tensor_seed(job seed, tensor name), so slices and reruns give the same bytes.
 *
 *   RUN/quantize/codecs.tsv   the plan actually applied (rank 0, atomic), read by pack:
 *       # tqpipe codecs v1
 *       <tensor>\t<codec label>\t<role>\t<rows>\t<cols>\t<packed bytes>\t<source dtype>
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch.h"      /* defines: tq_arch_from_json, tq_arch_find, tq_role_name */
#include "ckpt.h"      /* defines: tq_ckpt_read_f32 */
#include "ckpt_table.h" /* defines: tq_ckpt_open_table (helper pipe3) */
#include "codec.h"     /* defines: tq_codec_parse, tq_quantize, tq_codec_bytes */
#include "fault.h"     /* defines: tq_fault_unit_done */
#include "fileio.h"    /* defines: tq_write_file_atomic, tq_read_file */
#include "hash.h"      /* defines: tq_xxh64 */
#include "log.h"
#include "qbatch.h"     /* defines: tq_qbatch_quantize (helper pipebatch) */
#include "qgptq.h"     /* defines: tq_qgptq_for_run, tq_qgptq_quantize (helper gptqstage) */
#include "shardplan.h" /* defines: tq_units_from_ckpt */
#include "stage.h"     /* defines: tq_stage_ctx, tq_plan_entry */
#include "stage_fmt.h" /* defines: tq_fmt */
#include "unitstore.h" /* defines: tq_unitrec_encode */

static const char* dtype_codec(tq_dtype t) { return t == TQ_BF16 ? "bf16" : t == TQ_F16 ? "fp16" : "f32"; }

static int entry_cmp(const void* a, const void* b)
{
    return strcmp(((const tq_plan_entry*)a)->name, ((const tq_plan_entry*)b)->name);
}

const tq_plan_entry* tq_plan_find(const tq_plan_entry* e, int64_t n, const char* name)
{
    tq_plan_entry key;
    tq_fmt(key.name, sizeof key.name, "%s", name);
    return bsearch(&key, e, (size_t)n, sizeof *e, entry_cmp);
}

/* plan.txt of allocate: "TENSOR CODEC[:gG]" lines, '#' comments */
static tq_status apply_plan_file(const char* path, tq_plan_entry* e, int64_t n)
{
    char* text = NULL;
    TQ_FORWARD(tq_read_file(path, &text, NULL));
    tq_status rc = TQ_OK;
    int lineno = 0;
    char* save = NULL;
    int64_t set = 0;
    for (char* l = strtok_r(text, "\n", &save); l && rc == TQ_OK; l = strtok_r(NULL, "\n", &save)) {
        lineno++;
        char* hash = strchr(l, '#');
        if (hash) *hash = '\0';
        char name[TQ_MAX_NAME], label[64];
        int k = sscanf(l, "%255s %63s", name, label);
        if (k <= 0) continue;
        if (k != 2) {
            rc = tq_fail(TQ_ERR_FORMAT, "%s:%d: expected 'TENSOR CODEC'", path, lineno);
            break;
        }
        tq_plan_entry* pe = (tq_plan_entry*)tq_plan_find(e, n, name);
        if (!pe) {
            rc = tq_fail(TQ_ERR_FORMAT, "%s:%d: tensor %s is not in the checkpoint", path, lineno, name);
            break;
        }
        if (tq_stage_codec_unlabel(label, pe->codec, &pe->group) != 0) {
            rc = tq_fail(TQ_ERR_FORMAT, "%s:%d: bad codec label '%s'", path, lineno, label);
            break;
        }
        set++;
    }
    free(text);
    if (rc == TQ_OK && set != n)
        rc = tq_fail(TQ_ERR_FORMAT, "%s names %" PRId64 " of the %" PRId64 " tensors; a plan must cover every tensor", path, set, n);
    return rc;
}

tq_status tq_stage_codec_plan(const tq_run* run, const tq_ckpt* c, tq_plan_entry** out, int64_t* nout, int* from_plan)
{
    const tq_job* job = &run->job;
    int64_t n = tq_ckpt_count(c);
    tq_plan_entry* e = calloc((size_t)n + 1, sizeof *e);
    if (!e) return tq_fail(TQ_ERR_NOMEM, "out of memory");
    tq_arch* a = NULL;
    const char* cfg = tq_ckpt_config_json(c);
    if (!cfg || tq_arch_from_json(cfg, &a) != TQ_OK) {
        TQ_LOG0(TQ_LOG_WARN, "no architecture descriptor for %s (%s): every tensor gets role 'other'", run->model_dir,
                cfg ? tq_last_error() : "no config.json");
        a = NULL;
    }
    tq_status rc = TQ_OK;
    for (int64_t i = 0; i < n && rc == TQ_OK; i++) {
        const tq_tensor_info* t = tq_ckpt_tensor(c, i);
        tq_plan_entry* pe = &e[i];
        tq_fmt(pe->name, sizeof pe->name, "%s", t->name);
        const tq_arch_tensor* at = a ? tq_arch_find(a, t->name) : NULL;
        tq_role role = at ? at->role : TQ_ROLE_OTHER;
        tq_fmt(pe->role, sizeof pe->role, "%s", tq_role_name(role));
        pe->rows = tq_tensor_rows(t);
        pe->cols = tq_tensor_cols(t);
        pe->dtype = t->dtype;
        /* rule, else default codec for matrices, else keep the source precision */
        int hit = 0;
        for (int r = 0; r < job->n_rules && !hit; r++) {
            const tq_codec_rule* ru = &job->rules[r];
            if ((ru->role[0] && strcmp(ru->role, pe->role)) || (ru->match[0] && !strstr(t->name, ru->match))) continue;
            tq_fmt(pe->codec, sizeof pe->codec, "%s", ru->codec);
            pe->group = ru->group ? ru->group : job->group;
            hit = 1;
        }
        if (!hit) {
            if ((a ? tq_role_is_linear(role) : t->ndim >= 2)) {
                tq_fmt(pe->codec, sizeof pe->codec, "%s", job->codec);
                pe->group = job->group;
            } else {
                tq_fmt(pe->codec, sizeof pe->codec, "%s", dtype_codec(t->dtype));
                pe->group = job->group;
            }
        }
    }
    tq_arch_free(&a);
    *from_plan = 0;
    if (rc == TQ_OK && job->stage[TQ_STAGE_ALLOCATE].enabled) {
        char p[TQ_PATH_MAX + 32];
        tq_fmt(p, sizeof p, "%s/allocate/plan.txt", run->dir);
        if (tq_file_exists(p)) {
            rc = apply_plan_file(p, e, n);
            *from_plan = 1;
        } else {
            rc = tq_fail(TQ_ERR_NOTFOUND, "%s is missing: the allocate stage did not leave a plan", p);
        }
    }
    for (int64_t i = 0; i < n && rc == TQ_OK; i++) {
        tq_codec cd;
        if (tq_codec_parse(e[i].codec, e[i].group, &cd) != TQ_OK) {
            rc = tq_fail(TQ_ERR_ARG, "tensor %s: codec %s (group %d): %s", e[i].name, e[i].codec, e[i].group, tq_last_error());
            break;
        }
        e[i].bytes = tq_codec_bytes(&cd, e[i].rows, e[i].cols);
        if (job->n_allowed > 0 && e[i].codec[0]) {
            int ok = !strcmp(e[i].codec, "f32") || !strcmp(e[i].codec, "bf16") || !strcmp(e[i].codec, "fp16");
            for (int k = 0; k < job->n_allowed; k++)
                if (!strcmp(job->allowed[k], e[i].codec)) ok = 1;
            if (!ok)
                rc = tq_fail(TQ_ERR_ARG, "tensor %s gets codec %s, which the job's 'allowed' list does not contain", e[i].name,
                             e[i].codec);
        }
    }
    if (rc != TQ_OK) {
        free(e);
        return rc;
    }
    qsort(e, (size_t)n, sizeof *e, entry_cmp);
    *out = e;
    *nout = n;
    return TQ_OK;
}

tq_status tq_plan_entries_write(const char* path, const tq_plan_entry* e, int64_t n)
{
    size_t cap = 64 + (size_t)n * (TQ_MAX_NAME + 128), len = 0;
    char* b = malloc(cap);
    if (!b) return tq_fail(TQ_ERR_NOMEM, "out of memory");
    len += (size_t)snprintf(b, cap, "# tqpipe codecs v1\n");
    for (int64_t i = 0; i < n; i++) {
        char lab[40];
        tq_stage_codec_label(e[i].codec, e[i].group, lab, sizeof lab);
        len += (size_t)snprintf(b + len, cap - len, "%s\t%s\t%s\t%" PRId64 "\t%" PRId64 "\t%" PRIu64 "\t%s\n", e[i].name,
                                lab, e[i].role, e[i].rows, e[i].cols, e[i].bytes, tq_dtype_name(e[i].dtype));
    }
    tq_status rc = tq_write_file_atomic(path, b, len);
    free(b);
    return rc;
}

tq_status tq_plan_entries_read(const char* path, tq_plan_entry** out, int64_t* nout)
{
    char* text = NULL;
    size_t len = 0;
    TQ_FORWARD(tq_read_file(path, &text, &len));
    int64_t cap = 1024, n = 0;
    tq_plan_entry* e = malloc((size_t)cap * sizeof *e);
    tq_status rc = e ? TQ_OK : tq_fail(TQ_ERR_NOMEM, "out of memory");
    int lineno = 0;
    char* save = NULL;
    for (char* l = strtok_r(text, "\n", &save); l && rc == TQ_OK; l = strtok_r(NULL, "\n", &save)) {
        lineno++;
        if (l[0] == '#') {
            if (lineno == 1 && strcmp(l, "# tqpipe codecs v1"))
                rc = tq_fail(TQ_ERR_FORMAT, "%s:1: not a tqpipe codecs file (v1)", path);
            continue;
        }
        if (n == cap) {
            cap *= 2;
            tq_plan_entry* ne = realloc(e, (size_t)cap * sizeof *e);
            if (!ne) {
                rc = tq_fail(TQ_ERR_NOMEM, "out of memory");
                break;
            }
            e = ne;
        }
        tq_plan_entry* pe = &e[n];
        memset(pe, 0, sizeof *pe);
        char lab[64], dt[16];
        long long rows, cols;
        unsigned long long bytes;
        if (sscanf(l, "%255[^\t]\t%63[^\t]\t%31[^\t]\t%lld\t%lld\t%llu\t%15s", pe->name, lab, pe->role, &rows, &cols, &bytes,
                   dt) != 7 ||
            tq_stage_codec_unlabel(lab, pe->codec, &pe->group) != 0) {
            rc = tq_fail(TQ_ERR_FORMAT, "%s:%d: malformed line", path, lineno);
            break;
        }
        pe->rows = rows;
        pe->cols = cols;
        pe->bytes = bytes;
        pe->dtype = tq_dtype_parse(dt);
        n++;
    }
    free(text);
    if (rc != TQ_OK) {
        free(e);
        return rc;
    }
    *out = e;
    *nout = n;
    return TQ_OK;
}

tq_status tq_stage_quantize(tq_stage_ctx* ctx)
{
    const tq_rt* rt = ctx->rt;
    tq_run* run = ctx->run;
    const tq_job* job = &run->job;
    tq_ckpt* c = NULL;
    tq_unitlist* u = NULL;
    char** keys = NULL;
    uint64_t* bytes = NULL;
    tq_manifest* m = NULL;
    int64_t *mine = NULL, nmine = 0, processed = 0;
    tq_plan_entry* plan = NULL;
    int64_t nplan = 0;
    int from_plan = 0;
    float* w = NULL;
    size_t wcap = 0;
    tq_journal j;
    j.jfd = j.sfd = -1;
    double t_read = 0, t_quant = 0, t_write = 0;
    int use_gpu = 0;
    tq_qgptq* gq = NULL; /* GPTQ against RUN/calibrate/hessian when the job asks (pipeline/qgptq.h) */
    tq_qstage_times ph;  /* phase timers (pipeline/qbatch.h, helper pipe3) */
    tq_qbatch_stats bs;
    memset(&ph, 0, sizeof ph);
    memset(&bs, 0, sizeof bs);
    double tp = tq_rt_time();

    tq_status rc;
    {
        /* headers from ingest's tensor table when it matches the files (pipeline/ckpt_table.h); rank 0
         * rebuilds a stale one */
        char tp_[TQ_PATH_MAX + 64], id_[TQ_PATH_MAX + 32];
        tq_fmt(id_, sizeof id_, "%s/ingest", run->dir);
        tq_fmt(tp_, sizeof tp_, "%s/%s", id_, TQ_CKPT_TABLE_NAME);
        rc = tq_ckpt_open_table(run->model_dir, tp_, rt->rank == 0 && tq_file_exists(id_), &c, &ph.table);
    }
    ph.ckpt = tq_rt_time() - tp;
    tp = tq_rt_time();
    if (rc == TQ_OK) rc = tq_units_from_ckpt(c, job->max_unit_bytes, 1, &u);
    if (rc == TQ_OK) rc = tq_stage_unit_keys(u, &keys, &bytes);
    ph.units = tq_rt_time() - tp;
    tp = tq_rt_time();
    if (rc == TQ_OK) rc = tq_stage_codec_plan(run, c, &plan, &nplan, &from_plan);
    if (rc == TQ_OK && !strcmp(job->device, "gpu") && !tq_gpu_available())
        rc = tq_fail(TQ_ERR_NOGPU, "the job asks for device: gpu but this rank sees no GPU (or tqpipe was built without CUDA)");
    use_gpu = strcmp(job->device, "cpu") && tq_gpu_available();
    if (rc == TQ_OK) rc = tq_qgptq_for_run(run->dir, job->gptq, job->gptq_act_order, job->gptq_damp, use_gpu, &gq);
    TQ_CHECK_GOTO(tq_rt_agree(rt, rc), out);
    if (rt->rank == 0) {
        char p[TQ_PATH_MAX + 32];
        tq_fmt(p, sizeof p, "%s/codecs.tsv", ctx->dir);
        rc = tq_plan_entries_write(p, plan, nplan);
    }
    TQ_CHECK_GOTO(tq_rt_agree(rt, rc), out);
    ph.plan = tq_rt_time() - tp;
    tp = tq_rt_time();
    if (!gq && tq_qbatch_enabled()) {
        /* batched: each rank takes a contiguous region of the files (coalesced, sequential reads) of
         * about equal work (weights x codec cost) */
        int64_t* forder = NULL;
        uint64_t* fcost = NULL;
        rc = tq_rt_agree(rt, tq_qbatch_file_order(c, u, plan, nplan, &forder, &fcost));
        if (rc == TQ_OK)
            rc = tq_stage_schedule_ordered(ctx, u->n_units, (const char* const*)keys, bytes, forder, fcost,
                                           job->verify_on_resume, &m, &mine, &nmine);
        free(forder);
        free(fcost);
        if (rc != TQ_OK) goto out;
    } else
        TQ_CHECK_GOTO(tq_stage_schedule(ctx, u->n_units, (const char* const*)keys, bytes, job->verify_on_resume, &m, &mine, &nmine),
                      out);
    ph.schedule = tq_rt_time() - tp;
    TQ_LOG0(TQ_LOG_INFO, "quantize: %" PRId64 " tensors, codecs from %s, on %s", nplan,
            from_plan ? "the allocate plan" : "the job's rules and default", use_gpu ? "the GPU" : "the CPU");

    rc = tq_journal_open(&j, ctx->dir, ctx->attempt, rt->rank, 1);
    uint64_t my_bytes = 0;
    for (int64_t i = 0; i < nmine; i++) my_bytes += u->units[mine[i]].bytes;
    int64_t tb[1] = {(int64_t)my_bytes};
    TQ_CHECK_GOTO(tq_rt_agree(rt, rc), out);
    tq_stage_sum_i64(rt, tb, 1);
    tq_progress* prog = tq_progress_start(rt, "quantized", (double)tb[0], "B", 10.0);
    double done_b = 0;
    int64_t nloop = nmine; /* the per-unit loop below: GPTQ jobs and TQ_QBATCH=0 */
    if (!gq && tq_qbatch_enabled()) {
        /* batched engine (pipeline/qbatch.h, helper pipebatch): same bytes, one read / compute / commit per batch */
        tq_qbatch_opts bo;
        tq_qbatch_default_opts(rt, use_gpu, &bo);
        rc = tq_qbatch_quantize(rt, c, u, keys, mine, nmine, plan, nplan, job->seed, &bo, &j, prog, &bs);
        processed = bs.units;
        t_read = bs.t_read;
        t_quant = bs.t_quant + bs.t_wait;
        t_write = bs.t_write;
        nloop = 0;
    }
    for (int64_t i = 0; rc == TQ_OK && i < nloop; i++) {
        int64_t k = mine[i];
        const tq_unit* un = &u->units[k];
        const tq_tensor_info* t = tq_ckpt_find(c, un->name);
        const tq_plan_entry* pe = tq_plan_find(plan, nplan, un->name);
        if (!t || !pe) {
            rc = tq_fail(TQ_ERR_NOTFOUND, "unit %s: tensor not in the checkpoint / plan", keys[k]);
            break;
        }
        int64_t cols = tq_tensor_cols(t);
        size_t need = (size_t)un->nrows * (size_t)cols * sizeof(float);
        if (need > wcap) {
            free(w);
            w = malloc(need);
            wcap = w ? need : 0;
            if (!w) {
                rc = tq_fail(TQ_ERR_NOMEM, "out of memory (%zu bytes) for unit %s", need, keys[k]);
                break;
            }
        }
        double t0 = tq_rt_time();
        rc = tq_ckpt_read_f32(c, t, un->row0, un->nrows, w, wcap);
        if (rc != TQ_OK) break;
        double t1 = tq_rt_time();
        tq_codec cd;
        tq_qtensor q;
        memset(&q, 0, sizeof q);
        rc = tq_codec_parse(pe->codec, pe->group, &cd);
        if (rc == TQ_OK) rc = tq_qtensor_alloc(&q, &cd, un->nrows, cols, tq_tensor_seed(job->seed, un->name));
        if (rc == TQ_OK) rc = tq_qgptq_quantize(gq, un->name, pe->role, t->ndim, use_gpu, w, &q, keys[k], NULL);
        double t2 = tq_rt_time();
        uint8_t* rec = NULL;
        size_t rlen = 0;
        if (rc == TQ_OK) rc = tq_unitrec_encode(&q, un->row0, un->tensor_rows, &rec, &rlen);
        tq_qtensor_release(&q);
        if (rc == TQ_OK) rc = tq_journal_put(&j, k, rec, rlen, NULL, (uint64_t)rlen);
        free(rec);
        double t3 = tq_rt_time();
        t_read += t1 - t0;
        t_quant += t2 - t1;
        t_write += t3 - t2;
        if (rc != TQ_OK) break;
        processed++;
        done_b += (double)un->bytes;
        tq_progress_update(prog, done_b);
        rc = tq_fault_unit_done();
    }
    double tw = tq_rt_time();
    tq_progress_finish(&prog);
    tp = tq_rt_time();
    ph.wait = tp - tw;
    {
        tq_status crc_ = tq_journal_close(&j);
        if (rc == TQ_OK) rc = crc_;
    }
    tw = tq_rt_time();
    rc = tq_rt_agree(rt, rc); /* a rank done early waits here for the others: counted as wait, not finish */
    ph.wait += tq_rt_time() - tw;
    tp += tq_rt_time() - tw;
    if (rc != TQ_OK) goto out;
    TQ_CHECK_GOTO(tq_stage_finish_units(ctx, processed, 0, &m), out);

    /* output identity: the applied plan + every unit's checksum, in unit order */
    {
        char p[TQ_PATH_MAX + 32];
        tq_fmt(p, sizeof p, "%s/codecs.tsv", ctx->dir);
        char* text = NULL;
        size_t len = 0;
        rc = tq_read_file(p, &text, &len);
        uint64_t h = rc == TQ_OK ? tq_xxh64(text, len, 0) : 0;
        free(text);
        for (int64_t i = 0; i < m->n; i++) {
            uint64_t v[2] = {h, m->st[i].xxh};
            h = tq_xxh64(v, sizeof v, 0);
        }
        ctx->output_hash = h;
    }
    TQ_CHECK_GOTO(tq_rt_agree(rt, rc), out);
    ctx->bytes_in = tq_unitlist_bytes(u);
    ctx->bytes_out = 0;
    int64_t weights = 0;
    for (int64_t i = 0; i < nplan; i++) {
        ctx->bytes_out += plan[i].bytes;
        weights += plan[i].rows * plan[i].cols;
    }
    {
        /* slowest rank's time split (read / quantize / write), for the summary */
        int64_t tt[3] = {(int64_t)(t_read * 1e6), (int64_t)(t_quant * 1e6), (int64_t)(t_write * 1e6)};
        tq_stage_sum_i64(rt, tt, 3);
        char a[32], b[32];
        tq_fmt_bytes((double)ctx->bytes_in, a, sizeof a);
        tq_fmt_bytes((double)ctx->bytes_out, b, sizeof b);
        tq_fmt(ctx->summary, sizeof ctx->summary, "%s -> %s (%.3f bits/weight); rank-seconds read %.2f, quantize %.2f, write+sync %.2f",
               a, b, weights ? 8.0 * (double)ctx->bytes_out / (double)weights : 0.0, tt[0] * 1e-6, tt[1] * 1e-6,
               tt[2] * 1e-6);
        ph.finish = tq_rt_time() - tp;
        char phs[320];
        tq_qbatch_report(rt, &ph, &bs, phs, sizeof phs);
        size_t sl = strlen(ctx->summary);
        if (!gq && tq_qbatch_enabled()) tq_fmt(ctx->summary + sl, sizeof ctx->summary - sl, "; %s", phs);
    }
out:
    tq_qgptq_free(&gq);
    free(w);
    free(plan);
    free(mine);
    tq_manifest_free(&m);
    tq_stage_unit_keys_free(keys, bytes);
    tq_unitlist_free(&u);
    tq_ckpt_free(&c);
    return rc;
}
