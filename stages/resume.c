/* resume.c — `tqpipe resume RUN`: find the first stage that is not done (or whose inputs changed) and
 * continue from there:
 *   - under Slurm (the run was submitted: RUN/slurm/jobs.tsv exists, sbatch is here, and we are not
 *     inside an allocation): resubmit the chain from that stage;
 *   - otherwise: run the stages locally under the current launcher (mpirun -np N with any N: units
 *     do not depend on the rank count), e.g. `mpirun -np 4 tqpipe resume runs/x`.
 * Finished units are never recomputed; a unit whose stored output fails its checksum is redone. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "fileio.h"
#include "log.h"
#include "rt.h"
#include "stage.h" /* defines: tq_run_open, tq_run_first_outdated, tq_run_stages, tq_submit_chain */
#include "stage_fmt.h"

/* Number of this run's Slurm jobs still queued or running (squeue). */
static int live_jobs(const char* run_dir)
{
    char p[TQ_PATH_MAX + 32];
    tq_fmt(p, sizeof p, "%s/slurm/jobs.tsv", run_dir);
    FILE* f = fopen(p, "r");
    if (!f) return 0;
    char ids[8192] = "", line[3 * TQ_PATH_MAX];
    while (fgets(line, sizeof line, f)) {
        char st[32], id[32];
        if (sscanf(line, "%31[^\t]\t%31[^\t]", st, id) == 2) {
            size_t l = strlen(ids);
            tq_fmt(ids + l, sizeof ids - l, "%s%s", l ? "," : "", id);
        }
    }
    fclose(f);
    if (!ids[0]) return 0;
    char cmd[8400];
    tq_fmt(cmd, sizeof cmd, "squeue -h -j %s -o %%i 2>/dev/null", ids);
    FILE* q = popen(cmd, "r");
    int n = 0;
    if (q) {
        while (fgets(line, sizeof line, q)) n++;
        pclose(q);
    }
    return n;
}

static void usage(FILE* f)
{
    fprintf(f, "usage: tqpipe resume RUN_DIR [--local | --slurm] [--dry-run]\n\n"
               "Continue a run from its first unfinished (or out-of-date) stage. A run that was submitted to\n"
               "Slurm is resubmitted from there (when sbatch is available and we are not inside a job);\n"
               "otherwise the stages run here under the current launcher, with any number of ranks.\n\n"
               "  --local     run the stages here even if the run was submitted to Slurm\n"
               "  --slurm     resubmit to Slurm even if the run was started locally\n"
               "  --dry-run   (Slurm) write the scripts, submit nothing\n");
}

int tq_cmd_resume(int argc, char** argv)
{
    const char* dir = NULL;
    int local = 0, slurm = 0, dry = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--local")) {
            local = 1;
        } else if (!strcmp(argv[i], "--slurm")) {
            slurm = 1;
        } else if (!strcmp(argv[i], "--dry-run")) {
            dry = 1;
        } else if (argv[i][0] != '-' && !dir) {
            dir = argv[i];
        } else {
            fprintf(stderr, "tqpipe resume: unexpected argument '%s'\n\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!dir || (local && slurm)) {
        usage(stderr);
        return 2;
    }
    tq_rt rt;
    if (tq_rt_init(&rt, &argc, &argv) != TQ_OK) {
        fprintf(stderr, "tqpipe resume: %s\n", tq_last_error());
        return 1;
    }
    tq_run run;
    tq_run_state st;
    tq_status rc = tq_run_open(dir, &run);
    if (rc == TQ_OK) rc = tq_state_load(run.dir, &st);
    rc = tq_rt_agree(&rt, rc);
    int ret = 1;
    if (rc != TQ_OK) {
        if (rt.rank == 0) fprintf(stderr, "tqpipe resume: %s\n", tq_last_error());
        goto out;
    }
    tq_slurm_env_load(run.dir);
    tq_stage_id from = tq_run_first_outdated(&run, &st);
    if (from == TQ_STAGE_COUNT) {
        if (rt.rank == 0) printf("nothing to resume: every stage of %s is done\n", run.dir);
        ret = 0;
        goto out;
    }
    char jobs[TQ_PATH_MAX + 32];
    tq_fmt(jobs, sizeof jobs, "%s/slurm/jobs.tsv", run.dir);
    int use_slurm = slurm || (!local && rt.size == 1 && tq_file_exists(jobs) && tq_slurm_available() && !getenv("SLURM_JOB_ID"));
    if (use_slurm) {
        int live = dry ? 0 : live_jobs(run.dir);
        if (live > 0) {
            fprintf(stderr, "tqpipe resume: %d Slurm job(s) of this run are still queued or running (tqpipe status %s);\n"
                            "  wait for them or scancel them first\n", live, run.dir);
            goto out;
        }
        printf("resubmitting %s from stage %s\n", run.dir, tq_stage_name(from));
        ret = tq_submit_chain(&run, from, dry);
    } else {
        TQ_LOG0(TQ_LOG_INFO, "resuming %s at stage %s on %d ranks", run.dir, tq_stage_name(from), rt.size);
        ret = tq_run_stages(&rt, &run, from, 0);
    }
out:
    tq_run_release(&run);
    tq_rt_finalize(&rt);
    return ret;
}
