/* verify.c — `tqpipe verify ARTIFACT_DIR [--plan PLAN]`: check a packed artifact end to end
 * (tq_artifact_verify): index format version, every shard present with the recorded size, the tensors
 * of every shard against the index (each exactly once), part sizes against the codec layout, every
 * XXH3-64 checksum recomputed, and the plan (given, else the one recorded in the index). Exit 0 when
 * everything checks, 1 naming the file and tensor of the first problem (every problem is logged),
 * 2 on usage errors. Under mpirun the shards are spread over the ranks (shard k on rank k % size).
 *
 *   tqpipe verify runs/stories260k/artifact
 *   mpirun -np 4 tqpipe verify /scratch/qwen3.5-122b/artifact --plan runs/q122/plan.txt */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "artifact.h" /* defines: tq_artifact_verify */
#include "commands.h"
#include "fileio.h"   /* defines: tq_read_file */
#include "log.h"
#include "rt.h"       /* defines: tq_rt_init, tq_rt_agree */

static void verify_usage(FILE* f)
{
    fprintf(f, "usage: tqpipe verify ARTIFACT_DIR [--plan PLAN_FILE] [--quiet]\n\n"
               "Recompute every tensor checksum of a tqpipe artifact and check the index against the shards\n"
               "and the bit plan (each tensor exactly once, codec as planned). Exit 0 when it verifies, 1 on\n"
               "the first problem (file and tensor named), 2 on bad usage. Under mpirun, shards are spread\n"
               "over the ranks.\n");
}

int tq_cmd_verify(int argc, char** argv)
{
    const char* dir = NULL;
    const char* plan_path = NULL;
    int quiet = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            verify_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--plan") && i + 1 < argc) {
            plan_path = argv[++i];
        } else if (!strcmp(argv[i], "--quiet") || !strcmp(argv[i], "-q")) {
            quiet = 1;
        } else if (argv[i][0] == '-' || dir) {
            fprintf(stderr, "tqpipe verify: unexpected argument '%s'\n", argv[i]);
            verify_usage(stderr);
            return 2;
        } else {
            dir = argv[i];
        }
    }
    if (!dir) {
        verify_usage(stderr);
        return 2;
    }
    tq_rt rt;
    if (tq_rt_init(&rt, &argc, &argv) != TQ_OK) {
        fprintf(stderr, "tqpipe verify: %s\n", tq_last_error());
        return 1;
    }
    char* plan = NULL;
    tq_status rc = TQ_OK;
    if (plan_path) rc = tq_read_file(plan_path, &plan, NULL);
    tq_verify_report rep;
    memset(&rep, 0, sizeof rep);
    double t0 = tq_rt_time();
    if (rc == TQ_OK) rc = tq_artifact_verify(dir, plan, rt.rank, rt.size, &rep);
    double dt = tq_rt_time() - t0;
    tq_status all = tq_rt_agree(&rt, rc);
    if (rt.size > 1 && !quiet)
        TQ_LOG(TQ_LOG_INFO, "verify: rank %d checked %lld tensors in %lld shards (%.1f MB)", rt.rank,
               (long long)rep.tensors_checked, (long long)rep.shards_checked, (double)rep.bytes_checked / 1e6);
    if (rt.rank == 0) {
        if (all == TQ_OK) {
            if (!quiet)
                printf("verify: OK %s: %lld tensors in %lld shards, %.1f MB checked in %.2f s (%.0f MB/s)%s\n", dir,
                       (long long)rep.tensors_checked, (long long)rep.shards_checked, (double)rep.bytes_checked / 1e6,
                       dt, dt > 0 ? (double)rep.bytes_checked / 1e6 / dt : 0.0, rt.size > 1 ? " on rank 0" : "");
        } else {
            fprintf(stderr, "tqpipe verify: FAILED %s: %s%s\n", dir, tq_last_error(),
                    rep.errors > 1 ? " (more problems logged above)" : "");
        }
    }
    free(plan);
    tq_rt_finalize(&rt);
    return all == TQ_OK ? 0 : 1;
}
