/* submit.c — `tqpipe submit JOB [--dry-run]`: one sbatch script per stage of the job (from its first
 * unfinished stage), each with commented #SBATCH lines from the job's resources and an srun launch
 * of `tqpipe stage NAME --run RUN`, submitted as a chain: every job after the first depends on the
 * previous with --dependency=afterok and --kill-on-invalid-dep=yes (a failed stage cancels the rest
 * instead of leaving them pending forever). Prints job ids and log paths; records them in
 * RUN/slurm/jobs.tsv (stage, job id, submit time, script, log) for status and resume.
 * Scripts are marked --requeue: a job that Slurm requeues (node failure, preemption) reruns the same
 * stage, which continues from its finished units. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "fileio.h" /* defines: tq_write_file_atomic, tq_mkdirs */
#include "log.h"
#include "rt.h"
#include "stage.h"     /* defines: tq_run_create, tq_state_load */
#include "stage_fmt.h" /* defines: tq_fmt */

static int have_program(const char* name)
{
    const char* path = getenv("PATH");
    if (!path) return 0;
    char buf[8192];
    tq_fmt(buf, sizeof buf, "%s", path);
    char* save = NULL;
    for (char* d = strtok_r(buf, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        char p[8400];
        tq_fmt(p, sizeof p, "%s/%s", d, name);
        if (access(p, X_OK) == 0) return 1;
    }
    return 0;
}

int tq_slurm_available(void) { return have_program("sbatch") && have_program("squeue"); }

/* The local test cluster (slurm/up.sh) is found through SLURM_CONF: remember it in the run so that
 * status / resume from another shell talk to the same cluster. */
void tq_slurm_env_load(const char* run_dir)
{
    if (getenv("SLURM_CONF")) return;
    char p[TQ_PATH_MAX + 32], line[TQ_PATH_MAX + 32];
    tq_fmt(p, sizeof p, "%s/slurm/slurm_conf", run_dir);
    FILE* f = fopen(p, "r");
    if (!f) return;
    if (fgets(line, sizeof line, f)) {
        char* nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        if (line[0] && tq_file_exists(line)) setenv("SLURM_CONF", line, 0);
    }
    fclose(f);
}

static tq_status write_script(const tq_run* run, tq_stage_id s, int seq, const char* tqpipe, char* script, size_t scap,
                              char* log, size_t lcap)
{
    const tq_resources* r = &run->job.stage[s].res;
    const char* name = tq_stage_name(s);
    char dir[TQ_PATH_MAX + 32];
    tq_fmt(dir, sizeof dir, "%s/slurm/logs", run->dir);
    TQ_FORWARD(tq_mkdirs(dir));
    tq_fmt(script, scap, "%s/slurm/%02d-%s.sbatch", run->dir, seq, name);
    tq_fmt(log, lcap, "%s/slurm/logs/%s-%%j.out", run->dir, name);
    size_t cap = 16384, n = 0;
    char* b = malloc(cap);
    if (!b) return tq_fail(TQ_ERR_NOMEM, "out of memory");
#define W(...)                                                                                                     \
    do {                                                                                                           \
        int k_ = tq_fmt(b + n, cap - n, __VA_ARGS__);                                                              \
        if (k_ > 0) n += (size_t)k_;                                                                               \
    } while (0)
    time_t now = time(NULL);
    char ts[32];
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    W("#!/bin/bash\n");
    W("# tqpipe stage '%s' of job '%s' (%s), written by `tqpipe submit` at %s.\n", name, run->job.name, run->job.job_path, ts);
    W("# Submit the whole chain with `tqpipe submit JOB`; after a failure, `tqpipe resume %s`.\n", run->dir);
    W("#SBATCH --job-name=tq-%s-%s   # name shown by squeue / sacct\n", run->job.name, name);
    if (r->nodes) W("#SBATCH --nodes=%d   # nodes for this stage (job: resources.nodes)\n", r->nodes);
    if (r->ntasks) W("#SBATCH --ntasks=%d   # MPI ranks in total (work units are balanced over them)\n", r->ntasks);
    if (r->ntasks_per_node) W("#SBATCH --ntasks-per-node=%d   # ranks per node (one per GPU is usual)\n", r->ntasks_per_node);
    if (r->cpus_per_task) W("#SBATCH --cpus-per-task=%d   # cores per rank (CPU quantization threads, I/O)\n", r->cpus_per_task);
    if (r->gpus_per_task) W("#SBATCH --gpus-per-task=%d   # GPUs per rank (quantize/validate run on them when present)\n", r->gpus_per_task);
    if (r->time[0]) W("#SBATCH --time=%s   # wall-time limit; a stage that hits it resumes from its finished units\n", r->time);
    if (r->partition[0]) W("#SBATCH --partition=%s   # partition (queue)\n", r->partition);
    if (r->account[0]) W("#SBATCH --account=%s   # account charged\n", r->account);
    if (r->qos[0]) W("#SBATCH --qos=%s   # quality of service\n", r->qos);
    if (r->mem[0]) W("#SBATCH --mem=%s   # memory per node (bounded per rank by the largest work unit)\n", r->mem);
    if (r->constraint[0]) W("#SBATCH --constraint=%s   # node features\n", r->constraint);
    W("#SBATCH --output=%s   # every rank's log (srun -l prefixes the rank)\n", log);
    W("#SBATCH --open-mode=append   # a requeued job appends to the same log\n");
    W("#SBATCH --requeue   # on node failure Slurm requeues the job; the stage continues from finished units\n");
    W("set -eu\n");
    W("if [ -z \"${SLURM_JOB_ID:-}\" ]; then\n");
    W("  echo \"$0 is a Slurm batch script: submit it with sbatch (or run 'tqpipe submit %s')\" >&2\n", run->job.job_path);
    W("  echo \"---> HINT: to run without Slurm use: mpirun -np N %s run %s\" >&2\n", tqpipe, run->job.job_path);
    W("  exit 1\n");
    W("fi\n");
    W("export TQ_LOG_PATH=\"%s/slurm/logs/%s-${SLURM_JOB_ID}.out\"\n", run->dir, name);
    W("echo \"tqpipe stage %s: job ${SLURM_JOB_ID} (restart ${SLURM_RESTART_COUNT:-0}) on ${SLURM_JOB_NODELIST:-?}\"\n", name);
    W("srun -l -u --mpi=pmix --kill-on-bad-exit=1 %s stage %s --run %s\n", tqpipe, name, run->dir);
#undef W
    tq_status rc = tq_write_file_atomic(script, b, n);
    free(b);
    if (rc == TQ_OK) {
        /* executable, for people who read and run them by hand */
        if (chmod(script, 0755) != 0) TQ_LOG(TQ_LOG_WARN, "chmod %s failed", script);
    }
    return rc;
}

/* Run `sbatch --parsable [deps] script`, returning the job id. */
static tq_status sbatch(const char* script, const char* dep, char* id, size_t cap)
{
    char cmd[TQ_PATH_MAX * 2];
    if (dep && *dep)
        tq_fmt(cmd, sizeof cmd, "sbatch --parsable --dependency=afterok:%s --kill-on-invalid-dep=yes '%s' 2>&1", dep, script);
    else
        tq_fmt(cmd, sizeof cmd, "sbatch --parsable '%s' 2>&1", script);
    FILE* p = popen(cmd, "r");
    if (!p) return tq_errno_status(errno, "popen sbatch for", script);
    char out[4096] = "";
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    char* nl = strchr(out, '\n');
    if (nl) *nl = '\0';
    char* semi = strchr(out, ';');
    if (semi) *semi = '\0';
    if (st != 0 || !out[0] || strspn(out, "0123456789") != strlen(out))
        return tq_fail(TQ_ERR_IO, "sbatch %s failed: %s", script, out[0] ? out : "(no output)");
    tq_fmt(id, cap, "%s", out);
    return TQ_OK;
}

int tq_submit_chain(const tq_run* run, tq_stage_id from, int dry_run)
{
    char tqpipe[TQ_PATH_MAX];
    ssize_t l = readlink("/proc/self/exe", tqpipe, sizeof tqpipe - 1);
    if (l <= 0) strcpy(tqpipe, "tqpipe");
    else tqpipe[l] = '\0';
    if (!dry_run && !tq_slurm_available()) {
        fprintf(stderr, "tqpipe submit: sbatch/squeue not found: run this on a Slurm login node, or use --dry-run to only write the scripts\n"
                        "---> HINT: without Slurm, run the job with: mpirun -np N %s run %s\n", tqpipe, run->job.job_path);
        return 1;
    }
    const char* sc = getenv("SLURM_CONF");
    if (sc && !dry_run) {
        char p[TQ_PATH_MAX + 32];
        tq_fmt(p, sizeof p, "%s/slurm/slurm_conf", run->dir);
        char text[TQ_PATH_MAX + 2];
        int n = tq_fmt(text, sizeof text, "%s\n", sc);
        char sd[TQ_PATH_MAX + 32];
        tq_fmt(sd, sizeof sd, "%s/slurm", run->dir);
        if (n > 0 && tq_mkdirs(sd) == TQ_OK) tq_write_file_atomic(p, text, (size_t)n);
    }
    char prev[64] = "";
    char jobs[TQ_PATH_MAX + 32];
    tq_fmt(jobs, sizeof jobs, "%s/slurm/jobs.tsv", run->dir);
    int seq = 0;
    for (int s = (int)from; s < TQ_STAGE_COUNT; s++) {
        if (!run->job.stage[s].enabled) continue;
        seq++;
        char script[TQ_PATH_MAX + 64], log[TQ_PATH_MAX + 64];
        tq_status rc = write_script(run, (tq_stage_id)s, s, tqpipe, script, sizeof script, log, sizeof log);
        if (rc != TQ_OK) {
            fprintf(stderr, "tqpipe submit: %s\n", tq_last_error());
            return 1;
        }
        if (dry_run) {
            printf("%-10s %s\n           sbatch --parsable%s%s%s %s\n", tq_stage_name((tq_stage_id)s), script,
                   seq > 1 ? " --dependency=afterok:<" : "", seq > 1 ? "previous job id" : "",
                   seq > 1 ? "> --kill-on-invalid-dep=yes" : "", script);
            continue;
        }
        struct timeval tv;
        gettimeofday(&tv, NULL);
        char id[64];
        rc = sbatch(script, prev, id, sizeof id);
        if (rc != TQ_OK) {
            fprintf(stderr, "tqpipe submit: %s\n", tq_last_error());
            if (prev[0]) fprintf(stderr, "  jobs already submitted stay queued; cancel them with scancel if needed\n");
            return 1;
        }
        char real_log[TQ_PATH_MAX + 64];
        tq_fmt(real_log, sizeof real_log, "%s/slurm/logs/%s-%s.out", run->dir, tq_stage_name((tq_stage_id)s), id);
        printf("%-10s job %-8s log %s\n", tq_stage_name((tq_stage_id)s), id, real_log);
        FILE* f = fopen(jobs, "a");
        if (f) {
            fprintf(f, "%s\t%s\t%.3f\t%s\t%s\n", tq_stage_name((tq_stage_id)s), id, (double)tv.tv_sec + tv.tv_usec * 1e-6,
                    script, real_log);
            fflush(f);
            fsync(fileno(f));
            fclose(f);
        }
        tq_fmt(prev, sizeof prev, "%s", id);
    }
    if (seq == 0) printf("nothing to submit: every stage of %s is done\n", run->dir);
    else if (dry_run) printf("(dry run: scripts written, nothing submitted)\n");
    else printf("follow with: tqpipe status %s\n", run->dir);
    fflush(stdout);
    return 0;
}

static void usage(FILE* f)
{
    fprintf(f, "usage: tqpipe submit JOB.yaml [--run-dir DIR] [--dry-run]\n\n"
               "Write one sbatch script per stage into RUN/slurm/ (resources from the job) and submit them as a\n"
               "chain (afterok, kill-on-invalid-dep). Stages already done are not submitted again.\n"
               "Prints job ids and log paths; follow with `tqpipe status RUN`, recover with `tqpipe resume RUN`.\n\n"
               "  --run-dir DIR   run directory (overrides the job's run_dir)\n"
               "  --dry-run       write the scripts and show the sbatch commands, submit nothing\n");
}

int tq_cmd_submit(int argc, char** argv)
{
    const char *job = NULL, *run_dir = NULL;
    int dry = 0;
    int parsed = tq_cli_job_args(argc, argv, "submit", "--dry-run", usage, &job, &run_dir, &dry);
    if (parsed >= 0) return parsed;
    tq_rt rt;
    if (tq_rt_init(&rt, &argc, &argv) != TQ_OK) {
        fprintf(stderr, "tqpipe submit: %s\n", tq_last_error());
        return 1;
    }
    int ret = 1;
    tq_run run;
    tq_status rc = tq_run_create(&rt, job, run_dir, &run);
    if (rc != TQ_OK) {
        fprintf(stderr, "tqpipe submit: %s: %s\n", tq_status_str(rc), tq_last_error());
    } else {
        tq_run_state st;
        rc = tq_state_load(run.dir, &st);
        if (rc != TQ_OK) fprintf(stderr, "tqpipe submit: %s\n", tq_last_error());
        else ret = tq_submit_chain(&run, tq_run_first_outdated(&run, &st), dry);
    }
    tq_run_release(&run);
    tq_rt_finalize(&rt);
    return ret;
}
