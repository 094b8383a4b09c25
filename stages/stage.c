/* stage.c — the stage registry and `tqpipe stage NAME --run DIR`: run one stage of an existing run
 * under the current launcher (mpirun, srun, or none). Finished units are skipped; a stage whose
 * inputs changed since it last ran is redone and the later stages are marked stale (pipeline/stage.c).
 *
 * Registry: one entry per tq_stage_id. calibrate and allocate (issue 7) plug in here: write
 * `tq_status tq_stage_<name>(tq_stage_ctx*)` in a stages/ file and put it in the table. */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "log.h"
#include "rt.h"
#include "stage.h" /* defines: tq_stage_execute, tq_run_open */

static const tq_stage_def registry[TQ_STAGE_COUNT] = {
    {TQ_STAGE_INGEST, tq_stage_ingest, "convert a llama2.c file, shard plan, read + checksum every byte, descriptor check"},
    {TQ_STAGE_CALIBRATE, tq_stage_calibrate, "H = X^T X / n of every linear input over the calibration data (exact across ranks)"},
    {TQ_STAGE_ALLOCATE, tq_stage_allocate, "sensitivity table + codec per tensor under the budget -> RUN/allocate/plan.txt"},
    {TQ_STAGE_QUANTIZE, tq_stage_quantize, "quantize every unit with its codec (GPU when present) and store it durably"},
    {TQ_STAGE_PACK, tq_stage_pack, "assemble tensors and write the HDF5 shards + index"},
    {TQ_STAGE_VALIDATE, tq_stage_validate, "perplexity / KL / top-1 of the artifact against the original"},
    {TQ_STAGE_PUBLISH, tq_stage_publish, "upload folder: shards, index, model card, SHA256SUMS"},
};

const tq_stage_def* tq_stage_registry(tq_stage_id id)
{
    return (id >= 0 && id < TQ_STAGE_COUNT) ? &registry[id] : NULL;
}

static void usage(FILE* f)
{
    fprintf(f, "usage: tqpipe stage NAME --run RUN_DIR [--force]\n\n"
               "Run one stage of a run directory under the current launcher (mpirun -np N, srun, or alone).\n"
               "Finished work units are kept; a stage whose inputs changed (job options, a new plan, an\n"
               "earlier stage's output) is redone and the stages after it are marked stale.\n\n"
               "  --force   redo the stage even when it is up to date\n\nstages:\n");
    for (int i = 0; i < TQ_STAGE_COUNT; i++)
        fprintf(f, "  %-10s %s\n", tq_stage_name((tq_stage_id)i), registry[i].summary);
}

int tq_cmd_stage(int argc, char** argv)
{
    const char *name = NULL, *dir = NULL;
    int force = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--run") && i + 1 < argc) {
            dir = argv[++i];
        } else if (!strcmp(argv[i], "--force")) {
            force = 1;
        } else if (argv[i][0] != '-' && !name) {
            name = argv[i];
        } else {
            fprintf(stderr, "tqpipe stage: unexpected argument '%s'\n\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!name || !dir) {
        usage(stderr);
        return 2;
    }
    tq_stage_id id = tq_stage_parse(name);
    if (id == TQ_STAGE_COUNT) {
        fprintf(stderr, "tqpipe stage: unknown stage '%s'\n\n", name);
        usage(stderr);
        return 2;
    }
    tq_rt rt;
    if (tq_rt_init(&rt, &argc, &argv) != TQ_OK) {
        fprintf(stderr, "tqpipe stage: %s\n", tq_last_error());
        return 1;
    }
    tq_run run;
    tq_status rc = tq_run_open(dir, &run);
    rc = tq_rt_agree(&rt, rc);
    if (rc == TQ_OK && !run.job.stage[id].enabled)
        rc = tq_fail(TQ_ERR_ARG, "stage '%s' is not in the job's stages (%s)", name, run.job.job_path);
    if (rc == TQ_OK) rc = tq_stage_execute(&rt, &run, id, force, NULL);
    if (rc != TQ_OK && rt.rank == 0)
        fprintf(stderr, "tqpipe stage %s: %s: %s\n  state: tqpipe status %s\n", name, tq_status_str(rc), tq_last_error(), dir);
    tq_run_release(&run);
    tq_rt_finalize(&rt);
    return rc == TQ_OK ? 0 : 1;
}
