/* status.c — `tqpipe status RUN [--json]`: per stage, its state, units done/total (from the manifest
 * and the live journals, so it is current while a stage runs), rate and ETA, failures with their
 * error and log path, and the Slurm jobs of the run (squeue; sacct where accounting is enabled).
 * A stage recorded as running whose process is gone (same host, pid dead) and that has no live Slurm
 * job is shown as "interrupted": `tqpipe resume RUN` continues it. Local, read-only. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "commands.h"
#include "fileio.h"
#include "manifest.h" /* defines: tq_manifest_load */
#include "stage.h"    /* defines: tq_run_open, tq_state_load */
#include "stage_fmt.h"

typedef struct {
    char stage[32], id[32], script[TQ_PATH_MAX], log[TQ_PATH_MAX], state[32], reason[64];
    double submitted;
} slurm_job;

static int load_jobs(const char* run_dir, slurm_job** out)
{
    char p[TQ_PATH_MAX + 32];
    tq_fmt(p, sizeof p, "%s/slurm/jobs.tsv", run_dir);
    FILE* f = fopen(p, "r");
    *out = NULL;
    if (!f) return 0;
    int n = 0, cap = 0;
    char line[3 * TQ_PATH_MAX];
    while (fgets(line, sizeof line, f)) {
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            slurm_job* nj = realloc(*out, (size_t)cap * sizeof **out);
            if (!nj) break;
            *out = nj;
        }
        slurm_job* j = &(*out)[n];
        memset(j, 0, sizeof *j);
        if (sscanf(line, "%31[^\t]\t%31[^\t]\t%lf\t%4095[^\t]\t%4095[^\t\n]", j->stage, j->id, &j->submitted, j->script, j->log) == 5)
            n++;
    }
    fclose(f);
    return n;
}

/* Fill state/reason from squeue, else sacct (when accounting exists). */
static void slurm_states(slurm_job* js, int n)
{
    if (n == 0 || !tq_slurm_available()) return;
    char ids[8192] = "";
    for (int i = 0; i < n; i++) {
        size_t l = strlen(ids);
        tq_fmt(ids + l, sizeof ids - l, "%s%s", l ? "," : "", js[i].id);
    }
    char cmd[8400];
    tq_fmt(cmd, sizeof cmd, "squeue -h -t all -j %s -o '%%i %%T %%r' 2>/dev/null", ids);
    FILE* p = popen(cmd, "r");
    char line[512];
    if (p) {
        while (fgets(line, sizeof line, p)) {
            char id[32], st[32], rs[64] = "";
            if (sscanf(line, "%31s %31s %63s", id, st, rs) >= 2)
                for (int i = 0; i < n; i++)
                    if (!strcmp(js[i].id, id)) {
                        tq_fmt(js[i].state, sizeof js[i].state, "%s", st);
                        tq_fmt(js[i].reason, sizeof js[i].reason, "%s", rs);
                    }
        }
        pclose(p);
    }
    tq_fmt(cmd, sizeof cmd, "sacct -n -P -X -j %s -o JobID,State,ExitCode 2>/dev/null", ids);
    p = popen(cmd, "r");
    if (p) {
        while (fgets(line, sizeof line, p)) {
            char id[32], st[32], ec[32];
            if (sscanf(line, "%31[^|]|%31[^|]|%31s", id, st, ec) == 3)
                for (int i = 0; i < n; i++)
                    if (!strcmp(js[i].id, id) && !js[i].state[0]) {
                        tq_fmt(js[i].state, sizeof js[i].state, "%s", st);
                        tq_fmt(js[i].reason, sizeof js[i].reason, "exit %s", ec);
                    }
        }
        pclose(p);
    }
    for (int i = 0; i < n; i++)
        if (!js[i].state[0]) tq_fmt(js[i].state, sizeof js[i].state, "%s", "gone");
}

/* 1 when pid is a live process on this host (a zombie counts as gone) */
static int pid_alive(int pid)
{
    if (pid <= 0) return 0;
    if (kill(pid, 0) != 0 && errno == ESRCH) return 0;
    char p[64], buf[512];
    tq_fmt(p, sizeof p, "/proc/%d/stat", pid);
    FILE* f = fopen(p, "r");
    if (!f) return 1; /* no /proc: trust kill() */
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char* rp = strrchr(buf, ')');
    return !(rp && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X'));
}

static void fmt_secs(double s, char* out, size_t cap)
{
    if (s < 0) tq_fmt(out, cap, "-");
    else if (s < 120) tq_fmt(out, cap, "%.0f s", s);
    else if (s < 7200) tq_fmt(out, cap, "%.1f min", s / 60);
    else tq_fmt(out, cap, "%.1f h", s / 3600);
}

static void usage(FILE* f)
{
    fprintf(f, "usage: tqpipe status RUN_DIR [--json]\n\n"
               "Per stage: state, units done/total, rate and ETA, failures with their error and log path, and the\n"
               "Slurm jobs of the run (squeue; sacct where accounting exists). Read-only.\n");
}

int tq_cmd_status(int argc, char** argv)
{
    const char* dir = NULL;
    int as_json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--json")) {
            as_json = 1;
        } else if (argv[i][0] != '-' && !dir) {
            dir = argv[i];
        } else {
            fprintf(stderr, "tqpipe status: unexpected argument '%s'\n\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!dir) {
        usage(stderr);
        return 2;
    }
    tq_run run;
    tq_status rc = tq_run_open(dir, &run);
    tq_run_state st;
    if (rc == TQ_OK) rc = tq_state_load(run.dir, &st);
    if (rc != TQ_OK) {
        fprintf(stderr, "tqpipe status: %s\n", tq_last_error());
        tq_run_release(&run);
        return 1;
    }
    tq_slurm_env_load(run.dir);
    slurm_job* js = NULL;
    int nj = load_jobs(run.dir, &js);
    slurm_states(js, nj);
    char host[64] = "";
    if (gethostname(host, sizeof host) != 0) host[0] = '\0';
    struct timeval tv;
    gettimeofday(&tv, NULL);
    double now = (double)tv.tv_sec + tv.tv_usec * 1e-6;

    json_t* jroot = json_object();
    json_t* jst = json_array();
    if (!as_json) printf("run %s (job %s)\n%-10s %-12s %14s %8s %12s %10s  %s\n", run.dir, run.job.job_path, "stage", "state",
                         "units", "done", "rate", "ETA", "details");
    int any_failed = 0;
    for (int i = 0; i < TQ_STAGE_COUNT; i++) {
        if (!run.job.stage[i].enabled) continue;
        tq_stage_state* s = &st.s[i];
        char sd[TQ_PATH_MAX + 32], state[32];
        tq_fmt(sd, sizeof sd, "%s/%s", run.dir, tq_stage_name((tq_stage_id)i));
        tq_fmt(state, sizeof state, "%s", s->status);
        int64_t done = s->units_done, total = s->units_total;
        double rate_b = 0, eta = -1, rate_u = 0;
        tq_manifest* m = NULL;
        uint64_t db = 0, left = 0;
        int64_t nd = 0;
        double last = 0;
        if (strcmp(s->status, "pending") && strcmp(s->status, "stale") && tq_manifest_load(sd, &m) == TQ_OK) {
            done = m->n_done;
            total = m->n;
            last = m->last_time;
            for (int64_t k = 0; k < m->n; k++) {
                if (m->st[k].done && m->st[k].attempt == s->attempt) {
                    db += m->bytes[k];
                    nd++;
                }
                if (!m->st[k].done) left += m->bytes[k];
            }
            tq_manifest_free(&m);
        }
        /* a running stage whose process is gone */
        slurm_job* sj = NULL;
        for (int k = 0; k < nj; k++)
            if (!strcmp(js[k].stage, tq_stage_name((tq_stage_id)i))) sj = &js[k]; /* latest submission */
        int slurm_live = sj && (!strcmp(sj->state, "RUNNING") || !strcmp(sj->state, "PENDING") ||
                                !strcmp(sj->state, "CONFIGURING") || !strcmp(sj->state, "COMPLETING") ||
                                !strcmp(sj->state, "REQUEUED"));
        if (!strcmp(s->status, "running") && !slurm_live && !strcmp(s->host, host) && !pid_alive(s->pid))
            tq_fmt(state, sizeof state, "interrupted");
        if (!strcmp(s->status, "pending") && sj && slurm_live) tq_fmt(state, sizeof state, "queued");
        /* rate of this attempt: from its start to now (running) or to its last finished unit */
        double span = (!strcmp(state, "running") ? now : last) - s->started;
        if (s->started > 0 && span > 0 && nd > 0) {
            rate_b = (double)db / span;
            rate_u = (double)nd / span;
            if (left > 0 && rate_b > 0 && !strcmp(state, "running")) eta = (double)left / rate_b;
        }
        if (!strcmp(state, "failed") || !strcmp(state, "interrupted")) any_failed = 1;
        char units[48], pct[16], rate[32], etas[32], rb[32];
        tq_fmt(units, sizeof units, "%" PRId64 "/%" PRId64, done, total);
        tq_fmt(pct, sizeof pct, "%.0f%%", total ? 100.0 * (double)done / (double)total : 0.0);
        tq_fmt_bytes(rate_b, rb, sizeof rb);
        if (rate_b > 0) tq_fmt(rate, sizeof rate, "%s/s", rb);
        else tq_fmt(rate, sizeof rate, "-");
        fmt_secs(eta, etas, sizeof etas);
        char details[2048] = "";
        if (!strcmp(state, "failed") || !strcmp(state, "interrupted"))
            tq_fmt(details, sizeof details, "%s%s log: %s", s->error[0] ? s->error : "process gone (killed?)", s->error[0] ? ";" : ";",
                   s->log[0] ? s->log : "-");
        else if (!strcmp(state, "done"))
            tq_fmt(details, sizeof details, "%.2f s, attempt %d on %d ranks; %" PRId64 " recomputed, %" PRId64 " redone (bad checksum)",
                   s->seconds, s->attempt, s->ranks, s->recomputed, s->redone_bad);
        else if (!strcmp(state, "stale"))
            tq_fmt(details, sizeof details, "an earlier stage changed: will be redone");
        if (sj) {
            size_t l = strlen(details);
            tq_fmt(details + l, sizeof details - l, "%sslurm job %s %s%s%s", l ? "; " : "", sj->id, sj->state,
                   sj->reason[0] && strcmp(sj->reason, "None") ? " " : "",
                   sj->reason[0] && strcmp(sj->reason, "None") ? sj->reason : "");
            /* scheduling overhead: from when the job could start (submitted, and the previous stage
             * finished) to when the stage started on its ranks */
            double eligible = sj->submitted;
            for (int k = i - 1; k >= 0; k--)
                if (run.job.stage[k].enabled) {
                    if (st.s[k].finished > eligible) eligible = st.s[k].finished;
                    break;
                }
            if (s->started > 0 && sj->submitted > 0 && s->started >= sj->submitted) {
                l = strlen(details);
                tq_fmt(details + l, sizeof details - l, " (started %.2f s after it became eligible)", s->started - eligible);
            }
        }
        if (as_json) {
            json_t* o = json_pack("{s:s,s:s,s:I,s:I,s:f,s:f,s:f,s:s,s:s,s:i,s:I,s:I,s:f,s:f}", "stage",
                                  tq_stage_name((tq_stage_id)i), "state", state, "units_done", (json_int_t)done,
                                  "units_total", (json_int_t)total, "rate_bytes_per_s", rate_b, "rate_units_per_s", rate_u,
                                  "eta_s", eta, "error", s->error, "log", s->log, "attempt", s->attempt, "recomputed",
                                  (json_int_t)s->recomputed, "redone_bad", (json_int_t)s->redone_bad, "started", s->started,
                                  "seconds", s->seconds);
            if (o && sj) {
                double eligible = sj->submitted;
                for (int k = i - 1; k >= 0; k--)
                    if (run.job.stage[k].enabled) {
                        if (st.s[k].finished > eligible) eligible = st.s[k].finished;
                        break;
                    }
                json_object_set_new(o, "sched_overhead_s", json_real(s->started > 0 ? s->started - eligible : -1));
                json_object_set_new(o, "slurm_job", json_string(sj->id));
                json_object_set_new(o, "slurm_state", json_string(sj->state));
                json_object_set_new(o, "submitted", json_real(sj->submitted));
            }
            if (o) json_array_append_new(jst, o);
        } else {
            printf("%-10s %-12s %14s %8s %12s %10s  %s\n", tq_stage_name((tq_stage_id)i), state, units, pct, rate, etas, details);
        }
    }
    tq_stage_id next = tq_run_first_incomplete(&run, &st);
    if (as_json) {
        json_object_set_new(jroot, "run", json_string(run.dir));
        json_object_set_new(jroot, "stages", jst);
        json_object_set_new(jroot, "next", json_string(next == TQ_STAGE_COUNT ? "" : tq_stage_name(next)));
        char* t = json_dumps(jroot, JSON_INDENT(1));
        if (t) printf("%s\n", t);
        free(t);
    } else {
        json_decref(jst);
        if (next == TQ_STAGE_COUNT) printf("all stages done; artifact: %s\n", run.artifact_dir);
        else if (any_failed) printf("next: tqpipe resume %s   (continues at stage %s)\n", run.dir, tq_stage_name(next));
    }
    json_decref(jroot);
    free(js);
    tq_run_release(&run);
    return 0;
}
