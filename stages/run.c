/* run.c — `tqpipe run JOB`: every stage of a job, in order, under the current launcher
 *   mpirun -np 2 tqpipe run jobs/stories260k.yaml        (make run)
 *   srun tqpipe run jobs/qwen3.5-122b-a10b.yaml          (one allocation for everything)
 * Stages already done with unchanged inputs are skipped, so running the same command again after a
 * failure continues where it stopped (as `tqpipe resume RUN` does). Ends with a short summary: size
 * before/after, bits per weight, time per stage, validation metrics when present. */
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "commands.h"
#include "fileio.h" /* defines: tq_file_exists */
#include "log.h"
#include "rt.h"
#include "stage.h"     /* defines: tq_run_create, tq_stage_execute, tq_state_load */
#include "stage_fmt.h" /* defines: tq_fmt */

static uint64_t dir_bytes(const char* dir)
{
    uint64_t total = 0;
    DIR* d = opendir(dir);
    if (!d) return 0;
    struct dirent* e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[TQ_PATH_MAX + 300];
        struct stat sb;
        tq_fmt(p, sizeof p, "%s/%s", dir, e->d_name);
        if (stat(p, &sb) == 0 && S_ISREG(sb.st_mode)) total += (uint64_t)sb.st_size;
    }
    closedir(d);
    return total;
}

void tq_run_print_summary(const tq_run* run)
{
    tq_run_state st;
    if (tq_state_load(run->dir, &st) != TQ_OK) return;
    printf("\n== tqpipe run %s: summary ==\n", run->job.name);
    printf("%-10s %-8s %9s %12s  %s\n", "stage", "status", "seconds", "units", "notes");
    double total = 0;
    for (int i = 0; i < TQ_STAGE_COUNT; i++) {
        if (!run->job.stage[i].enabled) continue;
        const tq_stage_state* s = &st.s[i];
        char units[48];
        tq_fmt(units, sizeof units, "%" PRId64 "/%" PRId64, s->units_done, s->units_total);
        printf("%-10s %-8s %9.2f %12s  %s\n", tq_stage_name((tq_stage_id)i), s->status, s->seconds, units,
               !strcmp(s->status, "failed") ? s->error : s->summary);
        total += s->seconds;
    }
    /* size before / after and bits per weight, from the applied plan */
    char p[TQ_PATH_MAX + 64];
    tq_fmt(p, sizeof p, "%s/quantize/codecs.tsv", run->dir);
    tq_plan_entry* e = NULL;
    int64_t n = 0;
    if (tq_file_exists(p) && tq_plan_entries_read(p, &e, &n) == TQ_OK) {
        uint64_t before = 0, packed = 0;
        int64_t weights = 0;
        for (int64_t i = 0; i < n; i++) {
            before += (uint64_t)(e[i].rows * e[i].cols) * tq_dtype_size(e[i].dtype);
            packed += e[i].bytes;
            weights += e[i].rows * e[i].cols;
        }
        uint64_t disk = dir_bytes(run->artifact_dir);
        char a[32], b[32], c[32];
        tq_fmt_bytes((double)before, a, sizeof a);
        tq_fmt_bytes((double)packed, b, sizeof b);
        tq_fmt_bytes((double)disk, c, sizeof c);
        printf("size: %s before (%" PRId64 " weights) -> %s packed (%.3f bits/weight, %.2fx smaller); artifact on disk %s\n", a,
               weights, b, weights ? 8.0 * (double)packed / (double)weights : 0.0, packed ? (double)before / (double)packed : 0.0,
               c);
        free(e);
    }
    if (!strcmp(st.s[TQ_STAGE_VALIDATE].status, "done")) printf("metrics: %s\n", st.s[TQ_STAGE_VALIDATE].summary);
    printf("time: %.2f s over the stages run; artifact: %s", total, run->artifact_dir);
    if (!strcmp(st.s[TQ_STAGE_PUBLISH].status, "done")) printf("; published: %s", run->job.output);
    printf("\n");
    fflush(stdout);
}

int tq_run_stages(const tq_rt* rt, tq_run* run, tq_stage_id from, int force)
{
    tq_status rc = TQ_OK;
    for (int i = (int)from; i < TQ_STAGE_COUNT && rc == TQ_OK; i++) {
        if (!run->job.stage[i].enabled) continue;
        rc = tq_stage_execute(rt, run, (tq_stage_id)i, force, NULL);
        if (rc != TQ_OK && rt->rank == 0)
            fprintf(stderr, "tqpipe: stage %s failed: %s: %s\n  resume with: tqpipe resume %s   (state: tqpipe status %s)\n",
                    tq_stage_name((tq_stage_id)i), tq_status_str(rc), tq_last_error(), run->dir, run->dir);
    }
    if (rt->rank == 0) tq_run_print_summary(run);
    return rc == TQ_OK ? 0 : 1;
}

static void usage(FILE* f)
{
    fprintf(f, "usage: tqpipe run JOB.yaml [--run-dir DIR] [--force]\n\n"
               "Run every stage of the job in order under the current launcher, e.g.\n"
               "  mpirun -np 2 tqpipe run jobs/stories260k.yaml\n"
               "Stages that are done with unchanged inputs are skipped; an interrupted stage continues from its\n"
               "finished units. The run directory (job `run_dir:`, default runs/NAME) keeps the manifest.\n\n"
               "  --run-dir DIR   use DIR as the run directory (overrides the job's run_dir)\n"
               "  --force         redo every stage\n");
}

int tq_cli_job_args(int argc, char** argv, const char* cmd, const char* flag, void (*usage)(FILE*),
                    const char** job, const char** run_dir, int* flag_set)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--run-dir") && i + 1 < argc) {
            *run_dir = argv[++i];
        } else if (flag && !strcmp(argv[i], flag)) {
            *flag_set = 1;
        } else if (argv[i][0] != '-' && !*job) {
            *job = argv[i];
        } else {
            fprintf(stderr, "tqpipe %s: unexpected argument '%s'\n\n", cmd, argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!*job) {
        usage(stderr);
        return 2;
    }
    return -1;
}

int tq_cmd_run(int argc, char** argv)
{
    const char *job = NULL, *run_dir = NULL;
    int force = 0;
    int parsed = tq_cli_job_args(argc, argv, "run", "--force", usage, &job, &run_dir, &force);
    if (parsed >= 0) return parsed;
    tq_rt rt;
    if (tq_rt_init(&rt, &argc, &argv) != TQ_OK) {
        fprintf(stderr, "tqpipe run: %s\n", tq_last_error());
        return 1;
    }
    tq_run run;
    tq_status rc = tq_run_create(&rt, job, run_dir, &run);
    int ret = 1;
    if (rc != TQ_OK) {
        if (rt.rank == 0) fprintf(stderr, "tqpipe run: %s: %s\n", tq_status_str(rc), tq_last_error());
    } else {
        TQ_LOG0(TQ_LOG_INFO, "run %s: job %s, %d ranks, run directory %s", run.job.name, run.job.job_path, rt.size, run.dir);
        ret = tq_run_stages(&rt, &run, TQ_STAGE_INGEST, force);
    }
    tq_run_release(&run);
    tq_rt_finalize(&rt);
    return ret;
}
