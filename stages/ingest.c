/* ingest.c — the first stage: make the input a Hugging Face checkpoint (llama2.c .bin -> RUN/model
 * via convert), cut it into work units (pipeline/shardplan.h; rank-count independent), read every
 * byte of every unit over the ranks (pipeline/verify_units.h: XXH3-64 + NaN/Inf), check the tensor
 * inventory against the architecture descriptor, and record the source checksums (provenance) that
 * the artifact carries:
 *
 *   RUN/ingest/source.json   {"format":"tqpipe-source","version":1,"model":..., "files":[{name,bytes}],
 *                             "tensors":{name: xxh}, "units":N, "bytes":B}
 *
 * Each unit's checksum is journaled as it is verified, so a killed ingest resumes where it stopped. */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "arch.h"         /* defines: tq_arch_from_json, tq_arch_check_ckpt */
#include "ckpt.h"         /* defines: tq_ckpt_open */
#include "ckpt_table.h"   /* defines: tq_ckpt_open_table (helper pipe3) */
#include "commands.h"     /* defines: tq_cmd_convert */
#include "fault.h"        /* defines: tq_fault_unit_done */
#include "fileio.h"       /* defines: tq_write_file_atomic */
#include "hash.h"         /* defines: tq_xxh64 */
#include "log.h"
#include "shardplan.h"    /* defines: tq_units_from_ckpt, tq_unit_key */
#include "stage.h"        /* defines: tq_stage_ctx, tq_stage_schedule */
#include "stage_fmt.h"    /* defines: tq_fmt */
#include "verify_units.h" /* defines: tq_verify_units, tq_verify_tensor_xxh */

/* Convert a llama2.c checkpoint into RUN/model (rank 0; skipped when already there). */
static tq_status convert_model(tq_stage_ctx* ctx)
{
    tq_run* run = ctx->run;
    char st[TQ_PATH_MAX + 32];
    tq_fmt(st, sizeof st, "%s/model.safetensors", run->model_dir);
    if (tq_file_exists(st)) return TQ_OK;
    TQ_LOG(TQ_LOG_INFO, "converting %s (llama2.c) into %s", run->job.model, run->model_dir);
    char* av[8];
    int ac = 0;
    av[ac++] = (char*)"convert";
    av[ac++] = run->job.model;
    av[ac++] = run->model_dir;
    if (run->job.tokenizer[0]) {
        av[ac++] = (char*)"--tokenizer";
        av[ac++] = run->job.tokenizer;
    }
    av[ac++] = (char*)"--quiet";
    av[ac] = NULL;
    if (tq_cmd_convert(ac, av) != 0)
        return tq_fail(TQ_ERR_FORMAT, "converting %s into %s failed (see the message above); check the file or convert it by hand with `tqpipe convert`",
                       run->job.model, run->model_dir);
    return TQ_OK;
}

/* keys + bytes of a unit list (malloc'd arrays of pointers into one block) */
tq_status tq_stage_unit_keys(const tq_unitlist* u, char*** keys_out, uint64_t** bytes_out)
{
    char** keys = calloc((size_t)u->n_units + 1, sizeof(char*));
    uint64_t* bytes = calloc((size_t)u->n_units + 1, sizeof(uint64_t));
    char* block = malloc((size_t)u->n_units * (TQ_MAX_NAME + 48) + 1);
    if (!keys || !bytes || !block) {
        free(keys);
        free(bytes);
        free(block);
        return tq_fail(TQ_ERR_NOMEM, "out of memory for %" PRId64 " unit keys", u->n_units);
    }
    char* p = block;
    for (int64_t i = 0; i < u->n_units; i++) {
        int n = tq_unit_key(&u->units[i], p, TQ_MAX_NAME + 48);
        if (n < 0) n = 0;
        keys[i] = p;
        p += n + 1;
        bytes[i] = u->units[i].bytes;
    }
    *keys_out = keys;
    *bytes_out = bytes;
    return TQ_OK;
}

void tq_stage_unit_keys_free(char** keys, uint64_t* bytes)
{
    if (keys) free(keys[0]);
    free(keys);
    free(bytes);
}

static tq_status write_source_json(tq_stage_ctx* ctx, const tq_ckpt* c, const tq_unitlist* u, const tq_manifest* m,
                                   uint64_t* hash_out)
{
    json_t* root = json_object();
    json_t* files = json_array();
    json_t* tensors = json_object();
    tq_status rc = TQ_OK;
    for (int f = 0; f < tq_ckpt_file_count(c); f++) {
        const char* path = tq_ckpt_file_path(c, f);
        struct stat sb;
        const char* base = strrchr(path, '/');
        json_array_append_new(files, json_pack("{s:s,s:I}", "name", base ? base + 1 : path, "bytes",
                                               (json_int_t)(stat(path, &sb) == 0 ? sb.st_size : 0)));
    }
    /* tensor checksum from its units, in row order (units are sorted by (name, row0)) */
    tq_unit_check* chk = calloc((size_t)u->n_units + 1, sizeof *chk);
    if (!chk) rc = tq_fail(TQ_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; rc == TQ_OK && i < u->n_units;) {
        int64_t j = i;
        while (j < u->n_units && !strcmp(u->units[j].name, u->units[i].name)) {
            chk[j - i].xxh = m->st[j].xxh;
            j++;
        }
        char hx[17];
        tq_xxh_hex(tq_verify_tensor_xxh(chk, j - i), hx);
        json_object_set_new(tensors, u->units[i].name, json_string(hx));
        i = j;
    }
    free(chk);
    json_object_set_new(root, "format", json_string("tqpipe-source"));
    json_object_set_new(root, "version", json_integer(1));
    json_object_set_new(root, "model", json_string(ctx->run->job.model));
    json_object_set_new(root, "checksum", json_string("xxh3-64 per tensor (slices combined as in verify_units.h)"));
    json_object_set_new(root, "units", json_integer((json_int_t)u->n_units));
    json_object_set_new(root, "bytes", json_integer((json_int_t)tq_unitlist_bytes(u)));
    json_object_set_new(root, "files", files);
    json_object_set_new(root, "tensors", tensors);
    char* text = rc == TQ_OK ? json_dumps(root, JSON_INDENT(1) | JSON_SORT_KEYS) : NULL;
    json_decref(root);
    if (rc != TQ_OK) return rc;
    if (!text) return tq_fail(TQ_ERR_NOMEM, "out of memory writing source.json");
    char p[TQ_PATH_MAX + 32];
    tq_fmt(p, sizeof p, "%s/source.json", ctx->dir);
    rc = tq_write_file_atomic(p, text, strlen(text));
    *hash_out = tq_xxh64(text, strlen(text), 0);
    free(text);
    return rc;
}

tq_status tq_stage_ingest(tq_stage_ctx* ctx)
{
    const tq_rt* rt = ctx->rt;
    tq_run* run = ctx->run;
    tq_status rc = TQ_OK;
    if (run->job.model_is_llama2c) TQ_FORWARD(tq_rt_agree(rt, rt->rank == 0 ? convert_model(ctx) : TQ_OK));

    tq_ckpt* c = NULL;
    tq_unitlist* u = NULL;
    char** keys = NULL;
    uint64_t* bytes = NULL;
    tq_manifest* m = NULL;
    int64_t* mine = NULL;
    int64_t nmine = 0, processed = 0, bad_units = 0;
    tq_journal j;
    j.jfd = j.sfd = -1;
    {
        /* rank 0 leaves the tensor table the later stages open the checkpoint from (ckpt_table.h) */
        char tp_[TQ_PATH_MAX + 64];
        tq_fmt(tp_, sizeof tp_, "%s/%s", ctx->dir, TQ_CKPT_TABLE_NAME);
        rc = tq_ckpt_open_table(run->model_dir, tp_, rt->rank == 0, &c, NULL);
    }
    if (rc == TQ_OK) rc = tq_units_from_ckpt(c, run->job.max_unit_bytes, 1, &u);
    if (rc == TQ_OK) rc = tq_stage_unit_keys(u, &keys, &bytes);
    TQ_CHECK_GOTO(tq_rt_agree(rt, rc), out);
    TQ_CHECK_GOTO(tq_stage_schedule(ctx, u->n_units, (const char* const*)keys, bytes, 0, &m, &mine, &nmine), out);

    if (run->job.ingest_verify) {
        rc = tq_journal_open(&j, ctx->dir, ctx->attempt, rt->rank, 0);
        uint64_t total = 0;
        for (int64_t i = 0; i < nmine; i++) total += u->units[mine[i]].bytes;
        int64_t tb[1] = {(int64_t)total};
        tq_stage_sum_i64(rt, tb, 1);
        tq_progress* prog = tq_progress_start(rt, "verified", (double)tb[0], "B", 10.0);
        double done_b = 0;
        /* verify in batches (one pass over the files per batch: large merged reads), journal each unit */
        const int64_t maxb = tq_fault_active() ? 1 : 256;
        tq_unit_check* ck = malloc((size_t)maxb * sizeof *ck);
        if (!ck) rc = tq_fail(TQ_ERR_NOMEM, "out of memory");
        tq_verify_opts vo = {0};
        vo.reader_thread = tq_verify_reader_auto(); /* prefetch thread only when the rank owns >= 2 CPUs */
        for (int64_t i = 0; rc == TQ_OK && i < nmine;) {
            int64_t nb = 0;
            uint64_t bb = 0;
            while (i + nb < nmine && nb < maxb && (nb == 0 || bb + u->units[mine[i + nb]].bytes <= (64u << 20)))
                bb += u->units[mine[i + nb++]].bytes;
            tq_verify_stats vs;
            rc = tq_verify_units(c, u, mine + i, nb, &vo, ck, &vs);
            for (int64_t b = 0; rc == TQ_OK && b < nb; b++) {
                int64_t k = mine[i + b];
                if (ck[b].nan || ck[b].inf) {
                    TQ_LOG(TQ_LOG_ERR, "%s: %" PRId64 " NaN and %" PRId64 " Inf values in rows %" PRId64 "..%" PRId64
                           " (first at element %" PRId64 ")", u->units[k].name, ck[b].nan, ck[b].inf, u->units[k].row0,
                           u->units[k].row0 + u->units[k].nrows - 1, ck[b].first_bad);
                    bad_units++;
                }
                uint64_t aux = ((uint64_t)(ck[b].nan > 0xffffffff ? 0xffffffff : ck[b].nan) << 32) |
                               (uint64_t)(ck[b].inf > 0xffffffff ? 0xffffffff : ck[b].inf);
                rc = tq_journal_put(&j, k, NULL, 0, &ck[b].xxh, aux);
                if (rc != TQ_OK) break;
                processed++;
                done_b += (double)u->units[k].bytes;
                rc = tq_fault_unit_done();
            }
            tq_progress_update(prog, done_b);
            i += nb;
        }
        free(ck);
        tq_progress_finish(&prog);
        {
            tq_status crc_ = tq_journal_close(&j);
            if (rc == TQ_OK) rc = crc_;
        }
    } else {
        /* no byte verification: record the units as seen so the stage still completes per unit */
        rc = tq_journal_open(&j, ctx->dir, ctx->attempt, rt->rank, 0);
        for (int64_t i = 0; rc == TQ_OK && i < nmine; i++) {
            uint64_t zero = 0;
            rc = tq_journal_put(&j, mine[i], NULL, 0, &zero, 0);
            processed++;
        }
        {
            tq_status crc_ = tq_journal_close(&j);
            if (rc == TQ_OK) rc = crc_;
        }
    }
    TQ_CHECK_GOTO(tq_rt_agree(rt, rc), out);
    TQ_CHECK_GOTO(tq_stage_finish_units(ctx, processed, 0, &m), out);

    /* NaN/Inf anywhere (also in units verified by an earlier attempt) -> refuse the input */
    if (rt->rank == 0) {
        int64_t nbad = 0;
        const char* first = NULL;
        for (int64_t i = 0; i < m->n; i++)
            if (m->st[i].aux) {
                if (!first) first = m->keys[i];
                nbad++;
            }
        (void)bad_units;
        if (nbad)
            rc = tq_fail(TQ_ERR_NUMERIC, "%s: %" PRId64 " work units hold NaN or Inf values, first %s; fix the checkpoint (tqpipe inspect --verify lists them)",
                         run->model_dir, nbad, first);
        if (rc == TQ_OK && run->job.ingest_check_arch) {
            const char* cfg = tq_ckpt_config_json(c);
            tq_arch* a = NULL;
            if (!cfg) {
                TQ_LOG(TQ_LOG_WARN, "%s has no config.json: descriptor check skipped", run->model_dir);
            } else {
                rc = tq_arch_from_json(cfg, &a);
                if (rc == TQ_ERR_UNSUPPORTED) {
                    TQ_LOG(TQ_LOG_WARN, "descriptor check skipped: %s", tq_last_error());
                    rc = TQ_OK;
                } else if (rc == TQ_OK) {
                    rc = tq_arch_check_ckpt(a, c);
                }
                tq_arch_free(&a);
            }
        }
        if (rc == TQ_OK) rc = write_source_json(ctx, c, u, m, &ctx->output_hash);
    }
    TQ_CHECK_GOTO(tq_rt_agree(rt, rc), out);
    TQ_CHECK_GOTO(tq_stage_bcast(rt, &ctx->output_hash, sizeof ctx->output_hash), out);
    ctx->bytes_in = tq_unitlist_bytes(u);
    {
        char b[32];
        tq_fmt_bytes((double)ctx->bytes_in, b, sizeof b);
        tq_fmt(ctx->summary, sizeof ctx->summary, "%" PRId64 " tensors, %s in %" PRId64 " units verified",
               tq_ckpt_count(c), b, u->n_units);
    }
out:
    free(mine);
    tq_manifest_free(&m);
    tq_stage_unit_keys_free(keys, bytes);
    tq_unitlist_free(&u);
    tq_ckpt_free(&c);
    return rc;
}
