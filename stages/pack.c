/* pack.c — the pack stage: assemble complete tensors from quantize's unit outputs (checked against
 * their journaled XXH3-64 and their self-described layout, pipeline/unitstore.h) in sorted-name
 * order and write the HDF5 shards through pipeline/artifact.h, then the index (rank 0).
 *
 * Units of this stage are the shards: shard boundaries come from tq_artifact_assign_shards over the
 * packed sizes (rank-count independent); pending shards are balanced over the ranks of this run. A
 * shard is committed atomically by the artifact writer, then journaled with the XXH3-64 of the file,
 * so a resumed pack keeps finished shards (re-hashing them first) and the result is byte-identical
 * whatever the rank count or interruptions. A quantize unit whose bytes fail their checksum is
 * recorded as bad in quantize's journal and the quantize stage is set back to pending, so
 * `tqpipe resume` redoes exactly that unit and then pack. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "artifact.h"  /* defines: tq_shard_create, tq_shard_add, tq_artifact_write_index */
#include "ckpt.h"      /* defines: tq_ckpt_open, tq_ckpt_find */
#include "codec.h"     /* defines: tq_qtensor_alloc */
#include "fault.h"     /* defines: tq_fault_unit_done */
#include "fileio.h"    /* defines: tq_read_file */
#include "hash.h"      /* defines: tq_xxh_stream */
#include "log.h"
#include "stage.h"     /* defines: tq_stage_ctx, tq_plan_entries_read */
#include "stage_fmt.h" /* defines: tq_fmt */
#include "unitstore.h" /* defines: tq_unitrec_decode_into */

/* XXH3-64 of a whole file, streamed. */
static tq_status file_xxh(const char* path, uint64_t* out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return tq_fail(TQ_ERR_NOTFOUND, "%s is missing", path);
    tq_xxh_stream* s = tq_xxh_create();
    size_t cap = 4 << 20;
    uint8_t* buf = malloc(cap);
    tq_status rc = (s && buf) ? TQ_OK : tq_fail(TQ_ERR_NOMEM, "out of memory");
    while (rc == TQ_OK) {
        ssize_t n = read(fd, buf, cap);
        if (n < 0) rc = tq_errno_status(errno, "read", path);
        if (n <= 0) break;
        tq_xxh_update(s, buf, (size_t)n);
    }
    if (rc == TQ_OK) *out = tq_xxh_digest(s);
    tq_xxh_free(&s);
    free(buf);
    close(fd);
    return rc;
}

typedef struct {
    int64_t u0, u1; /* quantize units [u0, u1) of the tensor */
} urange;

tq_status tq_stage_pack(tq_stage_ctx* ctx)
{
    const tq_rt* rt = ctx->rt;
    tq_run* run = ctx->run;
    const tq_job* job = &run->job;
    tq_ckpt* c = NULL;
    tq_plan_entry* e = NULL;
    int64_t n = 0, nmine = 0, processed = 0, corrupt = 0;
    int64_t* mine = NULL;
    int* shard_of = NULL;
    uint64_t* tbytes = NULL;
    int nshards = 0;
    urange* ur = NULL;
    tq_manifest* qm = NULL;
    tq_manifest* m = NULL;
    char** keys = NULL;
    uint64_t* sbytes = NULL;
    char *plan_text = NULL, *prov = NULL;
    uint8_t* rec = NULL;
    size_t rcap = 0;
    char qdir[TQ_PATH_MAX + 32], p[TQ_PATH_MAX + 64];
    tq_fmt(qdir, sizeof qdir, "%s/quantize", run->dir);

    tq_status rc = tq_ckpt_open(run->model_dir, &c);
    if (rc == TQ_OK) {
        tq_fmt(p, sizeof p, "%s/codecs.tsv", qdir);
        rc = tq_plan_entries_read(p, &e, &n);
    }
    if (rc == TQ_OK) rc = tq_manifest_load(qdir, &qm);
    if (rc == TQ_OK) {
        shard_of = calloc((size_t)n + 1, sizeof(int));
        tbytes = calloc((size_t)n + 1, sizeof(uint64_t));
        ur = calloc((size_t)n + 1, sizeof(urange));
        if (!shard_of || !tbytes || !ur) rc = tq_fail(TQ_ERR_NOMEM, "out of memory");
    }
    for (int64_t i = 0; rc == TQ_OK && i < n; i++) {
        tbytes[i] = e[i].bytes;
        ur[i].u0 = ur[i].u1 = -1;
    }
    /* each tensor's units: quantize keys are "<name>@<row0>+<nrows>", sorted by (name, row0) */
    for (int64_t k = 0; rc == TQ_OK && k < qm->n; k++) {
        char name[TQ_MAX_NAME];
        const char* at = strrchr(qm->keys[k], '@');
        size_t l = at ? (size_t)(at - qm->keys[k]) : 0;
        if (!at || l >= sizeof name) {
            rc = tq_fail(TQ_ERR_FORMAT, "%s: bad unit key %s", qdir, qm->keys[k]);
            break;
        }
        memcpy(name, qm->keys[k], l);
        name[l] = '\0';
        const tq_plan_entry* pe = tq_plan_find(e, n, name);
        if (!pe) {
            rc = tq_fail(TQ_ERR_FORMAT, "%s: unit %s has no tensor in codecs.tsv", qdir, qm->keys[k]);
            break;
        }
        urange* r = &ur[pe - e];
        if (r->u0 < 0) r->u0 = k;
        else if (r->u1 != k) {
            rc = tq_fail(TQ_ERR_FORMAT, "%s: units of %s are not contiguous", qdir, name);
            break;
        }
        r->u1 = k + 1;
    }
    for (int64_t i = 0; rc == TQ_OK && i < n; i++)
        if (ur[i].u0 < 0) rc = tq_fail(TQ_ERR_FORMAT, "%s: tensor %s has no quantized units", qdir, e[i].name);
    if (rc == TQ_OK) rc = tq_artifact_assign_shards(tbytes, n, job->shard_size, shard_of, &nshards);
    if (rc == TQ_OK) {
        keys = calloc((size_t)nshards + 1, sizeof(char*));
        sbytes = calloc((size_t)nshards + 1, sizeof(uint64_t));
        if (!keys || !sbytes) rc = tq_fail(TQ_ERR_NOMEM, "out of memory");
        for (int k = 0; rc == TQ_OK && k < nshards; k++) {
            keys[k] = malloc(64);
            if (!keys[k]) {
                rc = tq_fail(TQ_ERR_NOMEM, "out of memory");
                break;
            }
            tq_artifact_shard_name(k, nshards, keys[k], 64);
        }
        for (int64_t i = 0; rc == TQ_OK && i < n; i++) sbytes[shard_of[i]] += tbytes[i];
    }
    /* metadata: the applied plan, provenance from ingest, the job text */
    if (rc == TQ_OK) {
        size_t cap = 64 + (size_t)n * (TQ_MAX_NAME + 32), len = 0;
        plan_text = malloc(cap);
        if (!plan_text) rc = tq_fail(TQ_ERR_NOMEM, "out of memory");
        else {
            len += (size_t)snprintf(plan_text, cap, "# tqpipe plan v1 (applied by the quantize stage)\n");
            for (int64_t i = 0; i < n; i++) {
                char lab[40];
                tq_stage_codec_label(e[i].codec, e[i].group, lab, sizeof lab);
                len += (size_t)snprintf(plan_text + len, cap - len, "%s %s\n", e[i].name, lab);
            }
        }
        tq_fmt(p, sizeof p, "%s/ingest/source.json", run->dir);
        if (rc == TQ_OK && tq_file_exists(p)) rc = tq_read_file(p, &prov, NULL);
    }
    TQ_CHECK_GOTO(tq_rt_agree(rt, rc), out);
    if (qm->n_done != qm->n) {
        rc = tq_fail(TQ_ERR_ARG, "quantize has %" PRId64 " of %" PRId64 " units done: run `tqpipe resume %s`", qm->n_done,
                     qm->n, run->dir);
        goto out;
    }

    /* schedule shards; re-hash finished shards first (a finished shard that changed is redone) */
    for (int pass = 0; pass < 2; pass++) {
        TQ_CHECK_GOTO(tq_stage_schedule(ctx, nshards, (const char* const*)keys, sbytes, 0, &m, &mine, &nmine), out);
        if (pass == 1 || !job->verify_on_resume || m->n_done == 0) break;
        tq_journal j;
        int64_t bad = 0, cnt = 0;
        rc = tq_journal_open(&j, ctx->dir, ctx->attempt, rt->rank, 0);
        for (int64_t k = 0; rc == TQ_OK && k < m->n; k++) {
            if (!m->st[k].done || cnt++ % rt->size != rt->rank) continue;
            uint64_t h = 0;
            tq_fmt(p, sizeof p, "%s/%s", run->artifact_dir, keys[k]);
            if (file_xxh(p, &h) != TQ_OK || h != m->st[k].xxh) {
                TQ_LOG(TQ_LOG_WARN, "pack: shard %s is missing or changed since it was written: redoing it", p);
                rc = tq_journal_bad(&j, k);
                bad++;
            }
        }
        {
            tq_status crc_ = tq_journal_close(&j);
            if (rc == TQ_OK) rc = crc_;
        }
        TQ_CHECK_GOTO(tq_rt_agree(rt, rc), out);
        TQ_CHECK_GOTO(tq_stage_sum_i64(rt, &bad, 1), out);
        ctx->redone_bad = bad;
        if (bad == 0) break;
        free(mine);
        mine = NULL;
        tq_manifest_free(&m);
    }

    tq_artifact_meta meta;
    memset(&meta, 0, sizeof meta);
    meta.config_json = tq_ckpt_config_json(c);
    meta.plan = plan_text;
    meta.provenance = prov;
    meta.job = run->job_text;
    meta.model_name = job->name;
    meta.zstd_level = job->zstd_level;
    {
        tq_journal j;
        rc = tq_journal_open(&j, ctx->dir, ctx->attempt, rt->rank, 0);
        tq_journal qj; /* bad quantize units found here */
        qj.jfd = qj.sfd = -1;
        for (int64_t s = 0; rc == TQ_OK && s < nmine; s++) {
            int k = (int)mine[s];
            tq_shard_writer* w = NULL;
            rc = tq_shard_create(run->artifact_dir, k, nshards, &meta, &w);
            for (int64_t i = 0; rc == TQ_OK && i < n; i++) {
                if (shard_of[i] != k) continue;
                const tq_tensor_info* t = tq_ckpt_find(c, e[i].name);
                if (!t) {
                    rc = tq_fail(TQ_ERR_NOTFOUND, "tensor %s of the plan is not in %s", e[i].name, run->model_dir);
                    break;
                }
                tq_codec cd;
                tq_qtensor q;
                memset(&q, 0, sizeof q);
                rc = tq_codec_parse(e[i].codec, e[i].group, &cd);
                if (rc == TQ_OK) rc = tq_qtensor_alloc(&q, &cd, e[i].rows, e[i].cols, tq_tensor_seed(job->seed, e[i].name));
                for (int64_t uk = ur[i].u0; rc == TQ_OK && uk < ur[i].u1; uk++) {
                    size_t len = (size_t)qm->st[uk].len;
                    if (len > rcap) {
                        free(rec);
                        rec = malloc(len);
                        rcap = rec ? len : 0;
                        if (!rec) {
                            rc = tq_fail(TQ_ERR_NOMEM, "out of memory");
                            break;
                        }
                    }
                    rc = tq_manifest_read_unit(qm, uk, rec, rcap);
                    if (rc == TQ_OK) {
                        int64_t r0, nr;
                        rc = tq_unitrec_decode_into(rec, len, &q, &r0, &nr, qm->keys[uk]);
                    }
                    if (rc == TQ_ERR_CORRUPT) {
                        char msg[1024];
                        tq_fmt(msg, sizeof msg, "%s", tq_last_error());
                        TQ_LOG(TQ_LOG_ERR, "%s", msg);
                        if (qj.jfd < 0) tq_journal_open(&qj, qdir, tq_manifest_next_attempt(qdir), 1000 + rt->rank, 0);
                        if (qj.jfd >= 0) tq_journal_bad(&qj, uk);
                        corrupt++;
                        rc = tq_fail(TQ_ERR_CORRUPT, "%s; quantize is set back to pending: run `tqpipe resume %s` to redo that unit and pack",
                                     msg, run->dir);
                    }
                }
                if (rc == TQ_OK) {
                    tq_artifact_desc d;
                    memset(&d, 0, sizeof d);
                    d.name = e[i].name;
                    d.role = e[i].role;
                    d.orig_dtype = t->dtype;
                    d.orig_ndim = t->ndim;
                    for (int dd = 0; dd < t->ndim && dd < TQ_MAX_DIMS; dd++) d.orig_shape[dd] = t->shape[dd];
                    rc = tq_shard_add(w, &d, &q, NULL);
                }
                tq_qtensor_release(&q);
            }
            if (rc == TQ_OK) rc = tq_shard_commit(&w);
            else tq_shard_abort(&w);
            uint64_t h = 0;
            tq_fmt(p, sizeof p, "%s/%s", run->artifact_dir, keys[k]);
            if (rc == TQ_OK) rc = file_xxh(p, &h);
            if (rc == TQ_OK) rc = tq_journal_put(&j, k, NULL, 0, &h, sbytes[k]);
            if (rc != TQ_OK) break;
            processed++;
            rc = tq_fault_unit_done();
        }
        {
            tq_status crc_ = tq_journal_close(&j);
            if (rc == TQ_OK) rc = crc_;
        }
        if (qj.jfd >= 0) (void)tq_journal_close(&qj);
    }
    {
        int64_t cc = corrupt;
        tq_status arc = tq_rt_agree(rt, rc);
        tq_stage_sum_i64(rt, &cc, 1);
        if (cc > 0 && rt->rank == 0) {
            tq_run_state st;
            if (tq_state_load(run->dir, &st) == TQ_OK) {
                strcpy(st.s[TQ_STAGE_QUANTIZE].status, "pending");
                tq_fmt(st.s[TQ_STAGE_QUANTIZE].error, sizeof st.s[TQ_STAGE_QUANTIZE].error,
                       "%" PRId64 " unit output(s) failed their checksum in pack: redo with tqpipe resume", cc);
                tq_state_save(run->dir, &st);
            }
        }
        rc = arc;
        if (rc != TQ_OK) goto out;
    }
    TQ_CHECK_GOTO(tq_stage_finish_units(ctx, processed, 0, &m), out);
    if (rt->rank == 0) {
        rc = tq_artifact_write_index(run->artifact_dir, nshards, &meta);
        char* idx = NULL;
        size_t len = 0;
        tq_fmt(p, sizeof p, "%s/%s", run->artifact_dir, TQ_ARTIFACT_INDEX_NAME);
        if (rc == TQ_OK) rc = tq_read_file(p, &idx, &len);
        if (rc == TQ_OK) ctx->output_hash = tq_xxh64(idx, len, 0);
        free(idx);
    }
    TQ_CHECK_GOTO(tq_rt_agree(rt, rc), out);
    TQ_CHECK_GOTO(tq_stage_bcast(rt, &ctx->output_hash, sizeof ctx->output_hash), out);
    ctx->bytes_out = 0;
    for (int k = 0; k < nshards; k++) ctx->bytes_out += sbytes[k];
    {
        char b[32];
        tq_fmt_bytes((double)ctx->bytes_out, b, sizeof b);
        tq_fmt(ctx->summary, sizeof ctx->summary, "%" PRId64 " tensors, %s packed into %d shard(s) in %s", n, b, nshards,
               run->artifact_dir);
    }
out:
    free(rec);
    free(mine);
    tq_manifest_free(&m);
    tq_manifest_free(&qm);
    if (keys)
        for (int k = 0; k < nshards; k++) free(keys[k]);
    free(keys);
    free(sbytes);
    free(shard_of);
    free(tbytes);
    free(ur);
    free(e);
    free(plan_text);
    free(prov);
    tq_ckpt_free(&c);
    return rc;
}
