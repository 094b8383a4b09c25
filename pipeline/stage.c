/* stage.c — run directory, state.json, and the driver that runs one stage (see stage.h).
 * This file and rt.c are where MPI is called directly: a broadcast of rank 0's decision and sums of
 * unit counters; everything else goes through tq_rt_agree. */
#include "stage.h"

#include <ctype.h>
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <jansson.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "fault.h"  /* defines: tq_fault_begin, tq_fault_corrupt_unit */
#include "fileio.h" /* defines: tq_write_file_atomic, tq_read_file, tq_mkdirs */
#include "hash.h"   /* defines: tq_xxh64, tq_xxh_hex */
#include "log.h"
#include "stage_fmt.h" /* defines: tq_fmt */

static double now_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec * 1e-6;
}

void tq_fmt_bytes(double b, char* out, size_t cap)
{
    if (b >= 1e12) tq_fmt(out, cap, "%.2f TB", b / 1e12);
    else if (b >= 1e9) tq_fmt(out, cap, "%.2f GB", b / 1e9);
    else if (b >= 1e6) tq_fmt(out, cap, "%.2f MB", b / 1e6);
    else if (b >= 1e3) tq_fmt(out, cap, "%.1f kB", b / 1e3);
    else tq_fmt(out, cap, "%.0f B", b);
}

static int rm_cb(const char* path, const struct stat* sb, int flag, struct FTW* ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

tq_status tq_rmtree(const char* path)
{
    if (!tq_file_exists(path)) return TQ_OK;
    if (nftw(path, rm_cb, 32, FTW_DEPTH | FTW_PHYS) != 0) return tq_errno_status(errno, "remove", path);
    return TQ_OK;
}

void tq_stage_codec_label(const char* codec, int group, char* out, size_t cap)
{
    if (group == 128 || group == 0) tq_fmt(out, cap, "%s", codec);
    else tq_fmt(out, cap, "%s:g%d", codec, group);
}

int tq_stage_codec_unlabel(const char* label, char codec[16], int* group)
{
    const char* c = strstr(label, ":g");
    size_t n = c ? (size_t)(c - label) : strlen(label);
    if (n == 0 || n >= 16) return -1;
    memcpy(codec, label, n);
    codec[n] = '\0';
    *group = 128;
    if (c) {
        char* end = NULL;
        long g = strtol(c + 2, &end, 10);
        if (*end || g <= 0) return -1;
        *group = (int)g;
    }
    return 0;
}

// ------------------------------------------------------------------------------------------------
// run directory

static tq_status run_paths(tq_run* run)
{
    tq_fmt(run->dir, sizeof run->dir, "%s", run->job.run_dir);
    if (run->job.model_is_llama2c) tq_fmt(run->model_dir, sizeof run->model_dir, "%s/model", run->dir);
    else tq_fmt(run->model_dir, sizeof run->model_dir, "%s", run->job.model);
    tq_fmt(run->artifact_dir, sizeof run->artifact_dir, "%s/artifact", run->dir);
    return TQ_OK;
}

tq_status tq_run_create(const tq_rt* rt, const char* job_path, const char* run_dir_override, tq_run* run)
{
    memset(run, 0, sizeof *run);
    tq_status rc = tq_job_load(job_path, NULL, run_dir_override, &run->job);
    if (rc == TQ_OK) rc = tq_read_file(job_path, &run->job_text, NULL);
    rc = tq_rt_agree(rt, rc);
    if (rc != TQ_OK) return rc;
    run_paths(run);
    if (rt->rank == 0) {
        rc = tq_mkdirs(run->dir);
        char p[TQ_PATH_MAX + 32];
        if (rc == TQ_OK) {
            tq_fmt(p, sizeof p, "%s/job.yaml", run->dir);
            char* old = NULL;
            if (tq_file_exists(p) && tq_read_file(p, &old, NULL) == TQ_OK && strcmp(old, run->job_text))
                TQ_LOG(TQ_LOG_INFO, "the job file differs from the one %s last ran with: stages whose inputs changed will be redone",
                       run->dir);
            free(old);
            rc = tq_write_file_atomic(p, run->job_text, strlen(run->job_text));
        }
        if (rc == TQ_OK) {
            json_t* j = json_pack("{s:s,s:i,s:s,s:s,s:s,s:s,s:s}", "format", TQ_RUN_FORMAT, "version", TQ_RUN_VERSION,
                                  "job_path", run->job.job_path, "launch_dir", run->job.launch_dir, "run_dir", run->dir,
                                  "output", run->job.output, "tqpipe", TQ_VERSION);
            /* the ${VARS} the job text uses, as they are now: reopening the run (stage, status, resume
             * from another shell or a batch job) resolves the same paths */
            json_t* env = json_object();
            for (const char* q = run->job_text; (q = strstr(q, "${")) != NULL; q += 2) {
                char name[128];
                size_t k = 0;
                while (k + 1 < sizeof name && (isalnum((unsigned char)q[2 + k]) || q[2 + k] == '_')) {
                    name[k] = q[2 + k];
                    k++;
                }
                name[k] = '\0';
                const char* v = k ? getenv(name) : NULL;
                if (v) json_object_set_new(env, name, json_string(v));
            }
            if (j) json_object_set_new(j, "env", env);
            else json_decref(env);
            char* s = j ? json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
            tq_fmt(p, sizeof p, "%s/run.json", run->dir);
            rc = s ? tq_write_file_atomic(p, s, strlen(s)) : tq_fail(TQ_ERR_NOMEM, "out of memory");
            free(s);
            json_decref(j);
        }
    }
    return tq_rt_agree(rt, rc);
}

tq_status tq_run_open(const char* run_dir, tq_run* run)
{
    memset(run, 0, sizeof *run);
    char p[TQ_PATH_MAX + 32];
    tq_fmt(p, sizeof p, "%s/run.json", run_dir);
    if (!tq_file_exists(p))
        return tq_fail(TQ_ERR_NOTFOUND, "%s is not a tqpipe run directory (no run.json); start one with `tqpipe run JOB` or `tqpipe submit JOB`",
                       run_dir);
    json_error_t je;
    json_t* j = json_load_file(p, 0, &je);
    if (!j) return tq_fail(TQ_ERR_FORMAT, "%s:%d: %s", p, je.line, je.text);
    const char *fmt = NULL, *job_path = NULL, *launch = NULL, *output = NULL;
    int ver = 0;
    tq_status rc = TQ_OK;
    if (json_unpack_ex(j, &je, 0, "{s:s,s:i,s:s,s:s,s:s}", "format", &fmt, "version", &ver, "job_path", &job_path,
                       "launch_dir", &launch, "output", &output) != 0 ||
        strcmp(fmt, TQ_RUN_FORMAT)) {
        rc = tq_fail(TQ_ERR_FORMAT, "%s: not a tqpipe run.json (%s)", p, je.text);
        goto out;
    }
    if (ver != TQ_RUN_VERSION) {
        rc = tq_fail(TQ_ERR_FORMAT, "%s: run format version %d, this tqpipe reads %d", p, ver, TQ_RUN_VERSION);
        goto out;
    }
    tq_fmt(p, sizeof p, "%s/job.yaml", run_dir);
    TQ_CHECK_GOTO(tq_read_file(p, &run->job_text, NULL), out);
    {
        const char* k;
        json_t* v;
        json_object_foreach(json_object_get(j, "env"), k, v)
        {
            if (json_is_string(v)) setenv(k, json_string_value(v), 0);
        }
    }
    {
        char* real = realpath(run_dir, NULL);
        rc = tq_job_parse(run->job_text, job_path, launch, real ? real : run_dir, &run->job);
        free(real);
    }
    if (rc != TQ_OK) goto out;
    tq_fmt(run->job.output, sizeof run->job.output, "%s", output);
    run_paths(run);
out:
    json_decref(j);
    return rc;
}

void tq_run_release(tq_run* run)
{
    free(run->job_text);
    run->job_text = NULL;
}

// ------------------------------------------------------------------------------------------------
// state.json

static void copy_str(char* dst, size_t cap, json_t* o, const char* key)
{
    const char* s = json_string_value(json_object_get(o, key));
    tq_fmt(dst, cap, "%s", s ? s : "");
}

tq_status tq_state_load(const char* run_dir, tq_run_state* st)
{
    memset(st, 0, sizeof *st);
    for (int i = 0; i < TQ_STAGE_COUNT; i++) strcpy(st->s[i].status, "pending");
    char p[TQ_PATH_MAX + 32];
    tq_fmt(p, sizeof p, "%s/state.json", run_dir);
    if (!tq_file_exists(p)) return TQ_OK;
    json_error_t je;
    json_t* j = json_load_file(p, 0, &je);
    if (!j) return tq_fail(TQ_ERR_FORMAT, "%s:%d: %s (delete it to rebuild the state from the manifests)", p, je.line, je.text);
    json_t* v = json_object_get(j, "version");
    if (!json_is_integer(v) || json_integer_value(v) != TQ_RUN_VERSION) {
        json_decref(j);
        return tq_fail(TQ_ERR_FORMAT, "%s: state version mismatch (this tqpipe reads %d)", p, TQ_RUN_VERSION);
    }
    json_t* stages = json_object_get(j, "stages");
    for (int i = 0; i < TQ_STAGE_COUNT; i++) {
        json_t* o = json_object_get(stages, tq_stage_name((tq_stage_id)i));
        if (!o) continue;
        tq_stage_state* s = &st->s[i];
        copy_str(s->status, sizeof s->status, o, "status");
        copy_str(s->input_hash, sizeof s->input_hash, o, "input_hash");
        copy_str(s->output_hash, sizeof s->output_hash, o, "output_hash");
        copy_str(s->error, sizeof s->error, o, "error");
        copy_str(s->log, sizeof s->log, o, "log");
        copy_str(s->host, sizeof s->host, o, "host");
        copy_str(s->slurm_job, sizeof s->slurm_job, o, "slurm_job");
        copy_str(s->summary, sizeof s->summary, o, "summary");
        s->attempt = (int)json_integer_value(json_object_get(o, "attempt"));
        s->ranks = (int)json_integer_value(json_object_get(o, "ranks"));
        s->pid = (int)json_integer_value(json_object_get(o, "pid"));
        s->started = json_number_value(json_object_get(o, "started"));
        s->finished = json_number_value(json_object_get(o, "finished"));
        s->seconds = json_number_value(json_object_get(o, "seconds"));
        s->units_total = json_integer_value(json_object_get(o, "units_total"));
        s->units_done = json_integer_value(json_object_get(o, "units_done"));
        s->recomputed = json_integer_value(json_object_get(o, "recomputed"));
        s->redone_bad = json_integer_value(json_object_get(o, "redone_bad"));
        s->bytes_in = (uint64_t)json_integer_value(json_object_get(o, "bytes_in"));
        s->bytes_out = (uint64_t)json_integer_value(json_object_get(o, "bytes_out"));
    }
    json_decref(j);
    return TQ_OK;
}

tq_status tq_state_save(const char* run_dir, const tq_run_state* st)
{
    json_t* stages = json_object();
    for (int i = 0; i < TQ_STAGE_COUNT; i++) {
        const tq_stage_state* s = &st->s[i];
        json_t* o = json_pack("{s:s,s:s,s:s,s:i,s:i,s:f,s:f,s:f,s:I,s:I,s:I,s:I,s:I,s:I,s:s,s:s,s:s,s:s,s:s,s:i}",
                              "status", s->status, "input_hash", s->input_hash, "output_hash", s->output_hash, "attempt",
                              s->attempt, "ranks", s->ranks, "started", s->started, "finished", s->finished, "seconds",
                              s->seconds, "units_total", (json_int_t)s->units_total, "units_done",
                              (json_int_t)s->units_done, "recomputed", (json_int_t)s->recomputed, "redone_bad",
                              (json_int_t)s->redone_bad, "bytes_in", (json_int_t)s->bytes_in, "bytes_out",
                              (json_int_t)s->bytes_out, "error", s->error, "log", s->log, "host", s->host, "slurm_job",
                              s->slurm_job, "summary", s->summary, "pid", s->pid);
        if (o) json_object_set_new(stages, tq_stage_name((tq_stage_id)i), o);
    }
    json_t* j = json_pack("{s:s,s:i,s:o}", "format", "tqpipe-run-state", "version", TQ_RUN_VERSION, "stages", stages);
    char* text = j ? json_dumps(j, JSON_INDENT(1) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    if (!text) return tq_fail(TQ_ERR_NOMEM, "out of memory writing state.json");
    char p[TQ_PATH_MAX + 32];
    tq_fmt(p, sizeof p, "%s/state.json", run_dir);
    tq_status rc = tq_write_file_atomic(p, text, strlen(text));
    free(text);
    return rc;
}

tq_stage_id tq_run_first_incomplete(const tq_run* run, const tq_run_state* st)
{
    for (int i = 0; i < TQ_STAGE_COUNT; i++)
        if (run->job.stage[i].enabled && strcmp(st->s[i].status, "done")) return (tq_stage_id)i;
    return TQ_STAGE_COUNT;
}

// ------------------------------------------------------------------------------------------------
// MPI helpers

tq_status tq_stage_sum_i64(const tq_rt* rt, int64_t* v, int n)
{
    if (rt->size <= 1) return TQ_OK;
    if (MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS)
        return tq_fail(TQ_ERR_MPI, "MPI_Allreduce of stage counters failed");
    return TQ_OK;
}

tq_status tq_stage_bcast(const tq_rt* rt, void* buf, int n)
{
    if (rt->size <= 1) return TQ_OK;
    if (MPI_Bcast(buf, n, MPI_BYTE, 0, MPI_COMM_WORLD) != MPI_SUCCESS)
        return tq_fail(TQ_ERR_MPI, "MPI_Bcast of the stage decision failed");
    return TQ_OK;
}

// ------------------------------------------------------------------------------------------------
// the driver

static void input_hash(const tq_run* run, const tq_run_state* st, tq_stage_id id, char out[17])
{
    char buf[16384];
    tq_job_stage_fingerprint(&run->job, id, buf, sizeof buf);
    size_t n = strlen(buf);
    for (int i = 0; i < (int)id; i++)
        if (run->job.stage[i].enabled)
            n += (size_t)snprintf(buf + n, sizeof buf - n, " %s=%s", tq_stage_name((tq_stage_id)i), st->s[i].output_hash);
    tq_xxh_hex(tq_xxh64(buf, strlen(buf), 0), out);
}

tq_stage_id tq_run_first_outdated(const tq_run* run, const tq_run_state* st)
{
    for (int i = 0; i < TQ_STAGE_COUNT; i++) {
        if (!run->job.stage[i].enabled) continue;
        if (strcmp(st->s[i].status, "done")) return (tq_stage_id)i;
        char ih[17];
        input_hash(run, st, (tq_stage_id)i, ih);
        if (strcmp(ih, st->s[i].input_hash)) return (tq_stage_id)i;
    }
    return TQ_STAGE_COUNT;
}

static void stage_dir(const tq_run* run, tq_stage_id id, char* out, size_t cap)
{
    tq_fmt(out, cap, "%s/%s", run->dir, tq_stage_name(id));
}

/* Clear a stage's outputs (its folder; pack: also the artifact). */
static tq_status clear_stage(const tq_run* run, tq_stage_id id)
{
    char d[TQ_PATH_MAX + 32];
    stage_dir(run, id, d, sizeof d);
    TQ_FORWARD(tq_rmtree(d));
    if (id == TQ_STAGE_PACK) TQ_FORWARD(tq_rmtree(run->artifact_dir));
    return TQ_OK;
}

typedef struct {
    int32_t action; /* 0 run, 1 skip, 2 error */
    int32_t attempt;
    int32_t status;
    char msg[1024];
} decision;

tq_status tq_stage_execute(const tq_rt* rt, tq_run* run, tq_stage_id id, int force, int* skipped)
{
    if (skipped) *skipped = 0;
    const tq_stage_def* def = tq_stage_registry(id);
    decision d;
    memset(&d, 0, sizeof d);
    tq_run_state st;
    char ih[17] = "";
    if (rt->rank == 0) {
        tq_status rc = tq_state_load(run->dir, &st);
        if (rc == TQ_OK && (!def || !def->fn))
            rc = tq_fail(TQ_ERR_UNSUPPORTED, "stage '%s' is not available in this build of tqpipe (%s); remove it from the job's stages",
                         tq_stage_name(id), def && def->summary ? def->summary : "no implementation");
        for (int i = 0; rc == TQ_OK && i < (int)id; i++)
            if (run->job.stage[i].enabled && strcmp(st.s[i].status, "done"))
                rc = tq_fail(TQ_ERR_ARG, "stage '%s' needs stage '%s' first (it is %s): run `tqpipe resume %s`",
                             tq_stage_name(id), tq_stage_name((tq_stage_id)i), st.s[i].status, run->dir);
        tq_stage_state* ss = &st.s[id];
        if (rc == TQ_OK) {
            input_hash(run, &st, id, ih);
            if (!strcmp(ss->status, "done") && !strcmp(ss->input_hash, ih) && !force) {
                d.action = 1;
            } else {
                int changed = ss->input_hash[0] && strcmp(ss->input_hash, ih);
                if (changed || (force && !strcmp(ss->status, "done"))) {
                    char later[256] = "";
                    for (int k = id + 1; k < TQ_STAGE_COUNT; k++)
                        if (run->job.stage[k].enabled && strcmp(st.s[k].status, "pending")) {
                            strcpy(st.s[k].status, "stale");
                            strncat(later, " ", sizeof later - strlen(later) - 1);
                            strncat(later, tq_stage_name((tq_stage_id)k), sizeof later - strlen(later) - 1);
                        }
                    TQ_LOG(TQ_LOG_WARN, "stage %s: %s: redoing it from scratch%s%s", tq_stage_name(id),
                           changed ? "its inputs changed (job options or an earlier stage's output, e.g. a new plan)"
                                   : "--force",
                           later[0] ? "; invalidated:" : "", later);
                    rc = clear_stage(run, id);
                }
            }
        }
        if (rc == TQ_OK && d.action == 0) {
            char sd[TQ_PATH_MAX + 32];
            stage_dir(run, id, sd, sizeof sd);
            d.attempt = tq_manifest_next_attempt(sd);
            strcpy(ss->status, "running");
            strcpy(ss->input_hash, ih);
            ss->output_hash[0] = '\0';
            ss->attempt = d.attempt;
            ss->ranks = rt->size;
            ss->started = now_s();
            ss->finished = 0;
            ss->error[0] = '\0';
            ss->pid = (int)getpid();
            if (gethostname(ss->host, sizeof ss->host) != 0) strcpy(ss->host, "?");
            ss->host[sizeof ss->host - 1] = '\0';
            const char* sj = getenv("SLURM_JOB_ID");
            tq_fmt(ss->slurm_job, sizeof ss->slurm_job, "%s", sj ? sj : "");
            const char* lp = getenv("TQ_LOG_PATH");
            tq_fmt(ss->log, sizeof ss->log, "%s", lp ? lp : "(stderr of the launching command)");
            rc = tq_state_save(run->dir, &st);
        }
        if (rc != TQ_OK) {
            d.action = 2;
            d.status = (int32_t)rc;
            tq_fmt(d.msg, sizeof d.msg, "%s", tq_last_error());
        }
    }
    TQ_FORWARD(tq_stage_bcast(rt, &d, (int)sizeof d));
    if (d.action == 2) return tq_fail((tq_status)d.status, "%s", d.msg);
    if (d.action == 1) {
        TQ_LOG0(TQ_LOG_INFO, "stage %s: up to date (inputs unchanged), skipped", tq_stage_name(id));
        if (skipped) *skipped = 1;
        return TQ_OK;
    }

    tq_stage_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.rt = rt;
    ctx.run = run;
    ctx.id = id;
    ctx.attempt = d.attempt;
    stage_dir(run, id, ctx.dir, sizeof ctx.dir);
    tq_status rc = tq_rt_agree(rt, rt->rank == 0 ? tq_mkdirs(ctx.dir) : TQ_OK);
    if (rc != TQ_OK) return rc;
    TQ_LOG0(TQ_LOG_INFO, "stage %s: start (attempt %d, %d ranks)", tq_stage_name(id), d.attempt, rt->size);
    tq_fault_begin(tq_stage_name(id), rt->rank);
    double t0 = tq_rt_time();
    rc = def->fn(&ctx);
    rc = tq_rt_agree(rt, rc);
    double secs = tq_rt_time() - t0;
    if (rt->rank == 0) {
        char msg[1024];
        tq_fmt(msg, sizeof msg, "%s", tq_last_error());
        tq_status lrc = tq_state_load(run->dir, &st);
        if (lrc == TQ_OK) {
            tq_stage_state* ss = &st.s[id];
            strcpy(ss->status, rc == TQ_OK ? "done" : "failed");
            ss->finished = now_s();
            ss->seconds = secs;
            ss->units_total = ctx.units_total;
            ss->units_done = ctx.units_done_before + ctx.units_done_now;
            if (ss->units_done > ss->units_total) ss->units_done = ss->units_total;
            ss->recomputed = ctx.recomputed;
            ss->redone_bad = ctx.redone_bad;
            ss->bytes_in = ctx.bytes_in;
            ss->bytes_out = ctx.bytes_out;
            tq_fmt(ss->summary, sizeof ss->summary, "%s", ctx.summary);
            if (rc == TQ_OK) tq_xxh_hex(ctx.output_hash, ss->output_hash);
            else tq_fmt(ss->error, sizeof ss->error, "%s: %s", tq_status_str(rc), msg);
            lrc = tq_state_save(run->dir, &st);
        }
        if (lrc != TQ_OK) TQ_LOG(TQ_LOG_ERR, "cannot record the state of stage %s: %s", tq_stage_name(id), tq_last_error());
        tq_fail(rc, "%s", msg);
    }
    if (rc == TQ_OK)
        TQ_LOG0(TQ_LOG_INFO, "stage %s: done in %.2f s (%" PRId64 " units, %" PRId64 " done now, %" PRId64
                " recomputed, %" PRId64 " redone after a bad checksum)%s%s",
                tq_stage_name(id), secs, ctx.units_total, ctx.units_done_now, ctx.recomputed, ctx.redone_bad,
                ctx.summary[0] ? ": " : "", ctx.summary);
    return rc;
}

// ------------------------------------------------------------------------------------------------
// unit scheduling

static int keys_equal(const tq_manifest* m, int64_t n, const char* const* keys)
{
    if (m->n != n) return 0;
    for (int64_t i = 0; i < n; i++)
        if (strcmp(m->keys[i], keys[i])) return 0;
    return 1;
}

static int cmp_i64(const void* a, const void* b)
{
    int64_t x = *(const int64_t*)a, y = *(const int64_t*)b;
    return (x > y) - (x < y);
}

/* Contiguous assignment: the pending units, taken in `order` (e.g. checkpoint file order), are cut into
 * nranks consecutive ranges of about equal weight (bytes or an estimated cost; a unit goes to the rank
 * whose share holds the middle of its weight), so each rank reads one region of the files and its
 * reads coalesce. The imbalance is at most the heaviest unit. *mine gets this rank's units in
 * ascending index order. */
static tq_status assign_contiguous(const tq_manifest* m, const uint64_t* bytes, const int64_t* order, int nranks,
                                   int rank, int64_t** mine, int64_t* nmine)
{
    double total = 0;
    for (int64_t i = 0; i < m->n; i++)
        if (!m->st[i].done) total += (double)(bytes && bytes[i] ? bytes[i] : 1);
    *mine = malloc((size_t)(m->n + 1) * sizeof(int64_t));
    if (!*mine) return tq_fail(TQ_ERR_NOMEM, "out of memory scheduling %s", m->dir);
    int64_t cnt = 0;
    double cum = 0;
    for (int64_t r = 0; r < m->n; r++) {
        int64_t i = order[r];
        if (i < 0 || i >= m->n) return tq_fail(TQ_ERR_ARG, "unit order: index %" PRId64 " out of range", i);
        if (m->st[i].done) continue;
        double b = (double)(bytes && bytes[i] ? bytes[i] : 1);
        int owner = total > 0 ? (int)((cum + 0.5 * b) * nranks / total) : 0;
        if (owner >= nranks) owner = nranks - 1;
        if (owner == rank) (*mine)[cnt++] = i;
        cum += b;
    }
    qsort(*mine, (size_t)cnt, sizeof(int64_t), cmp_i64);
    *nmine = cnt;
    return TQ_OK;
}


/* The pending units of m dealt to the ranks by the shard plan (largest first onto the least loaded rank;
 * bytes[i] = unit i's weight, NULL = 1 each): this rank's manifest indices into *mine (malloc'd). */
static tq_status assign_balanced(const tq_manifest* m, const uint64_t* bytes, int nranks, int rank, const char* dir,
                                 int64_t** mine, int64_t* nmine)
{
    int64_t np = m->n - m->n_done;
    tq_status rc = TQ_OK;
    tq_unitlist sub;
    memset(&sub, 0, sizeof sub);
    int64_t* map = malloc((size_t)(np + 1) * sizeof(int64_t));
    sub.units = calloc((size_t)np + 1, sizeof(tq_unit));
    if (!map || !sub.units) {
        free(map);
        free(sub.units);
        return tq_fail(TQ_ERR_NOMEM, "out of memory scheduling %s", dir);
    }
    int64_t q = 0;
    for (int64_t i = 0; i < m->n; i++) {
        if (m->st[i].done) continue;
        tq_fmt(sub.units[q].name, sizeof sub.units[q].name, "%s", m->keys[i]);
        sub.units[q].row0 = 0;
        sub.units[q].nrows = 1;
        sub.units[q].tensor_rows = 1;
        sub.units[q].bytes = bytes ? (bytes[i] ? bytes[i] : 1) : 1;
        sub.units[q].row_bytes = sub.units[q].bytes;
        map[q++] = i;
    }
    sub.n_units = np;
    if (np > 0) {
        tq_shardplan* plan = NULL;
        rc = tq_shardplan_assign(&sub, nranks, &plan);
        if (rc == TQ_OK) {
            int64_t cnt = 0;
            const int64_t* idx = tq_shardplan_rank_units(plan, rank, &cnt);
            *mine = malloc((size_t)(cnt + 1) * sizeof(int64_t));
            if (!*mine) rc = tq_fail(TQ_ERR_NOMEM, "out of memory");
            else {
                for (int64_t i = 0; i < cnt; i++) (*mine)[i] = map[idx[i]];
                *nmine = cnt;
            }
        }
        tq_shardplan_free(&plan);
    } else {
        *mine = malloc(sizeof(int64_t));
    }
    free(map);
    free(sub.units);
    return rc;
}

static tq_status schedule_impl(tq_stage_ctx* ctx, int64_t n, const char* const* keys, const uint64_t* bytes,
                               const int64_t* order, const uint64_t* cost, int verify, tq_manifest** mout,
                               int64_t** mine, int64_t* nmine);

tq_status tq_stage_schedule(tq_stage_ctx* ctx, int64_t n, const char* const* keys, const uint64_t* bytes, int verify,
                            tq_manifest** mout, int64_t** mine, int64_t* nmine)
{
    return schedule_impl(ctx, n, keys, bytes, NULL, NULL, verify, mout, mine, nmine);
}

tq_status tq_stage_schedule_ordered(tq_stage_ctx* ctx, int64_t n, const char* const* keys, const uint64_t* bytes,
                                    const int64_t* order, const uint64_t* cost, int verify, tq_manifest** mout,
                                    int64_t** mine, int64_t* nmine)
{
    return schedule_impl(ctx, n, keys, bytes, order, cost, verify, mout, mine, nmine);
}

static tq_status schedule_impl(tq_stage_ctx* ctx, int64_t n, const char* const* keys, const uint64_t* bytes,
                               const int64_t* order, const uint64_t* cost, int verify, tq_manifest** mout,
                               int64_t** mine, int64_t* nmine)
{
    const tq_rt* rt = ctx->rt;
    *mout = NULL;
    *mine = NULL;
    *nmine = 0;
    tq_status rc = TQ_OK;
    if (rt->rank == 0) {
        char p[TQ_PATH_MAX + 32];
        tq_fmt(p, sizeof p, "%s/units.tsv", ctx->dir);
        if (tq_file_exists(p)) {
            tq_manifest* old = NULL;
            rc = tq_manifest_load(ctx->dir, &old);
            if (rc != TQ_OK || !keys_equal(old, n, keys)) {
                TQ_LOG(TQ_LOG_WARN, "stage %s: the unit list changed (%s): restarting the stage's units",
                       tq_stage_name(ctx->id), rc != TQ_OK ? tq_last_error() : "different units");
                tq_manifest_free(&old);
                char sub[TQ_PATH_MAX + 32];
                const char* parts[] = {"units.tsv", "manifest.tsv", "journal", "seg"};
                rc = TQ_OK;
                for (int i = 0; i < 4 && rc == TQ_OK; i++) {
                    tq_fmt(sub, sizeof sub, "%s/%s", ctx->dir, parts[i]);
                    rc = tq_rmtree(sub);
                }
            }
            tq_manifest_free(&old);
        }
        if (rc == TQ_OK && !tq_file_exists(p)) rc = tq_units_write(ctx->dir, n, keys, bytes);
    }
    TQ_FORWARD(tq_rt_agree(rt, rc));
    tq_manifest* m = NULL;
    TQ_FORWARD(tq_rt_agree(rt, tq_manifest_load(ctx->dir, &m)));
    ctx->units_total = n;

    /* verify finished outputs: done unit k (in index order) is checked by rank k % size */
    if (verify && m->n_done > 0) {
        tq_journal j;
        int64_t bad = 0;
        rc = tq_journal_open(&j, ctx->dir, ctx->attempt, rt->rank, 0);
        int64_t k = 0;
        uint8_t* buf = NULL;
        size_t cap = 0;
        for (int64_t i = 0; rc == TQ_OK && i < m->n; i++) {
            if (!m->st[i].done || m->st[i].len == 0) continue;
            if (k++ % rt->size != rt->rank) continue;
            if (m->st[i].len > cap) {
                free(buf);
                cap = (size_t)m->st[i].len;
                buf = malloc(cap);
                if (!buf) {
                    rc = tq_fail(TQ_ERR_NOMEM, "out of memory verifying %s", ctx->dir);
                    break;
                }
            }
            tq_status vr = tq_manifest_read_unit(m, i, buf, cap);
            if (vr == TQ_ERR_CORRUPT) {
                TQ_LOG(TQ_LOG_WARN, "%s", tq_last_error());
                rc = tq_journal_bad(&j, i);
                bad++;
            } else if (vr != TQ_OK) {
                rc = vr;
            }
        }
        free(buf);
        if (j.jfd >= 0) {
            tq_status crc_ = tq_journal_close(&j);
            if (rc == TQ_OK) rc = crc_;
        }
        TQ_FORWARD(tq_rt_agree(rt, rc));
        TQ_FORWARD(tq_stage_sum_i64(rt, &bad, 1));
        ctx->redone_bad = bad;
        if (bad > 0) {
            tq_manifest_free(&m);
            TQ_FORWARD(tq_rt_agree(rt, tq_manifest_load(ctx->dir, &m)));
        }
    }
    ctx->units_done_before = m->n_done;

    /* pending units, balanced over the ranks of this run */
    int64_t np = m->n - m->n_done;
    rc = order ? assign_contiguous(m, cost ? cost : bytes, order, rt->size, rt->rank, mine, nmine)
               : assign_balanced(m, bytes, rt->size, rt->rank, ctx->dir, mine, nmine);
    rc = tq_rt_agree(rt, rc);
    if (rc != TQ_OK) {
        free(*mine);
        *mine = NULL;
        *nmine = 0;
        tq_manifest_free(&m);
        return rc;
    }
    if (rt->rank == 0 && ctx->units_done_before > 0)
        TQ_LOG(TQ_LOG_INFO, "stage %s: resuming: %" PRId64 " of %" PRId64 " units already done, %" PRId64 " to do",
               tq_stage_name(ctx->id), ctx->units_done_before, n, np);
    *mout = m;
    return TQ_OK;
}

tq_status tq_stage_finish_units(tq_stage_ctx* ctx, int64_t processed, int64_t recomputed, tq_manifest** m)
{
    const tq_rt* rt = ctx->rt;
    int64_t v[2] = {processed, recomputed};
    TQ_FORWARD(tq_stage_sum_i64(rt, v, 2));
    ctx->units_done_now = v[0];
    ctx->recomputed = v[1];
    tq_rt_barrier(rt);
    tq_status rc = TQ_OK;
    tq_manifest_free(m);
    if (rt->rank == 0) {
        rc = tq_manifest_load(ctx->dir, m);
        if (rc == TQ_OK) rc = tq_manifest_compact(*m);
        if (rc == TQ_OK && (*m)->n_done != (*m)->n)
            rc = tq_fail(TQ_ERR_CORRUPT, "stage %s: %" PRId64 " of %" PRId64 " units are not done after the stage ran",
                         tq_stage_name(ctx->id), (*m)->n - (*m)->n_done, (*m)->n);
        int64_t cu = tq_fault_corrupt_unit(tq_stage_name(ctx->id));
        if (rc == TQ_OK && cu >= 0 && cu < (*m)->n && (*m)->st[cu].len > 0) {
            char p[TQ_PATH_MAX + 64];
            tq_fmt(p, sizeof p, "%s/seg/%s", ctx->dir, (*m)->st[cu].seg);
            FILE* f = fopen(p, "r+b");
            if (f) {
                long off = (long)((*m)->st[cu].off + (*m)->st[cu].len / 2);
                fseek(f, off, SEEK_SET);
                int c = fgetc(f);
                fseek(f, off, SEEK_SET);
                fputc((c ^ 0x5a) & 0xff, f);
                fclose(f);
                TQ_LOG(TQ_LOG_WARN, "TQ_FAULT: corrupted the output of unit %" PRId64 " (%s) in %s", cu, (*m)->keys[cu], p);
            }
        }
        tq_manifest_free(m);
    }
    TQ_FORWARD(tq_rt_agree(rt, rc));
    return tq_rt_agree(rt, tq_manifest_load(ctx->dir, m));
}
