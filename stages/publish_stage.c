/* publish_stage.c — the last two stages of a run, both single-unit:
 *   validate  evaluates the packed artifact against the original weights (pipeline/validate.h:
 *             perplexity, KL, top-1 agreement) once per KV codec of the job, writes
 *             RUN/validate/metrics.json and records the metrics in the artifact index
 *             (tq_artifact_set_metrics, crash-safe).
 *   publish   builds the upload directory (job `output:`) with tq_publish: shards, index, model card,
 *             SHA256SUMS, LICENSE from the source folder. Refuses an artifact that does not verify. */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "artifact.h"  /* defines: tq_publish, tq_artifact_set_metrics */
#include "fileio.h"    /* defines: tq_write_file_atomic, tq_read_file */
#include "hash.h"      /* defines: tq_xxh64 */
#include "log.h"
#include "stage.h"     /* defines: tq_stage_ctx */
#include "stage_fmt.h" /* defines: tq_fmt */
#include "validate.h"  /* defines: tq_validate, tq_eval_opts */

tq_status tq_stage_validate(tq_stage_ctx* ctx)
{
    const tq_rt* rt = ctx->rt;
    tq_run* run = ctx->run;
    const tq_job* job = &run->job;
    int nkv = job->n_kv > 0 ? job->n_kv : 1;
    json_t* arr = json_array();
    tq_status rc = TQ_OK;
    char summary[512] = "";
    for (int i = 0; i < nkv && rc == TQ_OK; i++) {
        const char* kv = job->n_kv > 0 ? job->kv_codecs[i] : "fp16";
        tq_eval_opts o;
        tq_eval_opts_init(&o);
        o.artifact = run->artifact_dir;
        o.ref = run->model_dir;
        o.seed = job->seed;
        o.kv_k = kv;
        o.kv_v = kv;
        o.data = job->eval_data;
        o.tokenizer = job->tokenizer[0] ? job->tokenizer : NULL;
        o.ctx = job->eval_ctx;
        o.stride = job->eval_stride;
        o.max_tokens = job->eval_max_tokens;
        o.quiet = 1;
        o.device = !strcmp(job->eval_device, "cpu") ? 1 : !strcmp(job->eval_device, "gpu") ? 2 : 0; /* tq_device */
        o.gpu_weights = job->eval_gpu_weights[0] ? job->eval_gpu_weights : NULL; /* auto: the artifact stays packed */
        tq_eval_metrics mt;
        char* js = NULL;
        rc = tq_validate(rt, &o, &mt, &js);
        if (rc == TQ_OK) {
            json_error_t je;
            json_t* one = js ? json_loads(js, 0, &je) : NULL;
            if (one) json_array_append_new(arr, one);
            size_t l = strlen(summary);
            tq_fmt(summary + l, sizeof summary - l, "%sKV %s: PPL %.4f (ref %.4f), KL %.5f, top-1 %.2f%%", i ? "; " : "", kv,
                   mt.ppl, mt.ref_ppl, mt.kl, 100.0 * mt.top1);
            TQ_LOG0(TQ_LOG_INFO, "validate: KV %s, ctx %d stride %d, %" PRId64 " tokens scored: PPL %.4f (reference %.4f), KL %.5f nats, top-1 %.2f%%",
                    kv, mt.ctx, mt.stride, mt.scored, mt.ppl, mt.ref_ppl, mt.kl, 100.0 * mt.top1);
        }
        free(js);
    }
    rc = tq_rt_agree(rt, rc);
    if (rc == TQ_OK && rt->rank == 0) {
        json_t* root = json_pack("{s:s,s:o}", "data", job->eval_data, "runs", arr);
        arr = NULL;
        char* text = root ? json_dumps(root, JSON_INDENT(1) | JSON_SORT_KEYS) : NULL;
        json_decref(root);
        if (!text) rc = tq_fail(TQ_ERR_NOMEM, "out of memory");
        else {
            char p[TQ_PATH_MAX + 32];
            tq_fmt(p, sizeof p, "%s/metrics.json", ctx->dir);
            rc = tq_write_file_atomic(p, text, strlen(text));
            if (rc == TQ_OK) rc = tq_artifact_set_metrics(run->artifact_dir, text);
            ctx->output_hash = tq_xxh64(text, strlen(text), 0);
            free(text);
        }
    }
    json_decref(arr);
    TQ_FORWARD(tq_rt_agree(rt, rc));
    TQ_FORWARD(tq_stage_bcast(rt, &ctx->output_hash, sizeof ctx->output_hash));
    ctx->units_total = 1;
    ctx->units_done_now = 1;
    tq_fmt(ctx->summary, sizeof ctx->summary, "%s", summary);
    return TQ_OK;
}

tq_status tq_stage_publish(tq_stage_ctx* ctx)
{
    const tq_rt* rt = ctx->rt;
    tq_run* run = ctx->run;
    tq_status rc = TQ_OK;
    if (rt->rank == 0) {
        char src[TQ_PATH_MAX];
        tq_fmt(src, sizeof src, "%s", run->job.model);
        /* LICENSE* is taken from the folder of the job's `license:` file, else from the model's folder */
        if (run->job.license[0]) tq_fmt(src, sizeof src, "%s", run->job.license);
        if (run->job.model_is_llama2c || run->job.license[0]) {
            char* slash = strrchr(src, '/');
            if (slash) *slash = '\0';
        }
        rc = tq_publish(run->artifact_dir, run->job.output, run->job.job_path, src);
        char p[TQ_PATH_MAX + 32];
        tq_fmt(p, sizeof p, "%s/SHA256SUMS", run->job.output);
        char* sums = NULL;
        size_t len = 0;
        if (rc == TQ_OK && tq_read_file(p, &sums, &len) == TQ_OK) ctx->output_hash = tq_xxh64(sums, len, 0);
        free(sums);
    }
    TQ_FORWARD(tq_rt_agree(rt, rc));
    TQ_FORWARD(tq_stage_bcast(rt, &ctx->output_hash, sizeof ctx->output_hash));
    ctx->units_total = 1;
    ctx->units_done_now = 1;
    tq_fmt(ctx->summary, sizeof ctx->summary, "published to %s", run->job.output);
    return TQ_OK;
}
