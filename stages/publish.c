/* publish.c — `tqpipe publish RUN_OR_ARTIFACT OUT/ [--job FILE] [--source DIR]`: a self-contained
 * directory ready to upload to a model hub (shards, index, model card README.md, SHA256SUMS, license
 * copied from the source checkpoint). The work is tq_publish (pipeline/artifact_publish.c), which the
 * pipeline's publish stage calls with explicit paths. Refuses an artifact that does not verify.
 *
 * RUN_OR_ARTIFACT is an artifact directory (it holds model.tqa.index.json) or a run directory: then
 * the artifact is looked for in its immediate subdirectories (and theirs), and RUN/job.yaml (if any)
 * is quoted as the job file unless --job is given. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "artifact.h" /* defines: tq_publish, TQ_ARTIFACT_INDEX_NAME */
#include "commands.h"
#include "fileio.h"   /* defines: tq_file_exists */

static void publish_usage(FILE* f)
{
    fprintf(f, "usage: tqpipe publish RUN_OR_ARTIFACT_DIR OUT_DIR [--job JOB_FILE] [--source CHECKPOINT_DIR]\n\n"
               "Verify the artifact, then write OUT_DIR: shards + index, README.md model card, SHA256SUMS and\n"
               "the source checkpoint's LICENSE files. --job: the job file quoted in the card (default: the\n"
               "one recorded in the artifact, or RUN/job.yaml); --source: where to find LICENSE files\n"
               "(default: the source path recorded in the artifact's provenance).\n");
}

static int has_index(const char* dir)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", dir, TQ_ARTIFACT_INDEX_NAME);
    return tq_file_exists(p);
}

/* Find an artifact directory at most two levels below run (first in name order). */
static int find_artifact(const char* run, int depth, char* out, size_t cap)
{
    if (has_index(run)) {
        snprintf(out, cap, "%s", run);
        return 1;
    }
    if (depth == 0) return 0;
    struct dirent** list = NULL;
    int n = scandir(run, &list, NULL, alphasort);
    int found = 0;
    for (int i = 0; i < n; i++) {
        char sub[4200];
        struct stat st;
        snprintf(sub, sizeof sub, "%s/%s", run, list[i]->d_name);
        if (!found && list[i]->d_name[0] != '.' && stat(sub, &st) == 0 && S_ISDIR(st.st_mode))
            found = find_artifact(sub, depth - 1, out, cap);
        free(list[i]);
    }
    free(list);
    return found;
}

int tq_cmd_publish(int argc, char** argv)
{
    const char* in = NULL;
    const char* out = NULL;
    const char* job = NULL;
    const char* source = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            publish_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--job") && i + 1 < argc) {
            job = argv[++i];
        } else if (!strcmp(argv[i], "--source") && i + 1 < argc) {
            source = argv[++i];
        } else if (argv[i][0] == '-' || (in && out)) {
            fprintf(stderr, "tqpipe publish: unexpected argument '%s'\n", argv[i]);
            publish_usage(stderr);
            return 2;
        } else if (!in) {
            in = argv[i];
        } else {
            out = argv[i];
        }
    }
    if (!in || !out) {
        publish_usage(stderr);
        return 2;
    }
    char art[4200];
    if (!find_artifact(in, 2, art, sizeof art)) {
        fprintf(stderr, "tqpipe publish: no %s in %s or its subdirectories: give an artifact directory or a run "
                        "directory whose pack stage finished\n", TQ_ARTIFACT_INDEX_NAME, in);
        return 1;
    }
    char runjob[4200];
    if (!job && strcmp(art, in)) {
        snprintf(runjob, sizeof runjob, "%s/job.yaml", in);
        if (tq_file_exists(runjob)) job = runjob;
    }
    tq_status rc = tq_publish(art, out, job, source);
    if (rc != TQ_OK) {
        fprintf(stderr, "tqpipe publish: %s (%s)\n", tq_last_error(), tq_status_str(rc));
        return 1;
    }
    printf("publish: %s -> %s\n", art, out);
    return 0;
}
