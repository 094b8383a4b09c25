/* sensitivity.c — `tqpipe sensitivity`: the sensitivity table (tensor x codec -> exact bytes, Ω) of a
 * checkpoint from the H files of `tqpipe calibrate`; input of `tqpipe allocate`.
 *   mpirun -np 2 tqpipe sensitivity --model ckpt/ --hessians run/hessian --codecs tq2,tq3,tq4,rtn8 \
 *       --gptq --out run/sensitivity.tsv */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "sensrun.h" /* defines: tq_sensitivity_run */

static void sensitivity_usage(FILE* f)
{
    fprintf(f,
            "usage: [mpirun -np N] tqpipe sensitivity --model CKPT_DIR --hessians DIR --codecs A,B,.. --out TABLE.tsv\n"
            "       [--gptq [--act-order] [--damp 0.01] [--block 128]] [--seed S]\n"
            "\n"
            "For every matrix and candidate codec: exact bytes and omega = tr(dW H dW^T) after quantizing\n"
            "(plainly, or with GPTQ). Matrices without an H file (embeddings, heads) use uniform token weights;\n"
            "norms and biases are listed once with their stored dtype. Codec labels: NAME or NAME:gG.\n"
            "--seed must be the job seed (rotation seeds = tq_tensor_seed(seed, tensor name)); default 1234.\n"
            "\n"
            "KL probe (recommended): --probe-data FILE --probe-tokens N [--probe-ctx 256] [--probe-codec tq2]\n"
            "  quantizes each matrix alone with the probe codec, measures the mean KL to the original model on\n"
            "  N tokens, and rescales that tensor's omegas by KL / omega(probe codec): omega then is in KL units,\n"
            "  comparable across layers and with the output head. One forward pass of N tokens per matrix.\n");
}

int tq_cmd_sensitivity(int argc, char** argv)
{
    tq_sens_opts o;
    memset(&o, 0, sizeof o);
    tq_gptq_opts_default(&o.gopts);
    o.seed = 1234;
    char* codecs = NULL;
    const char* list[64];
    for (int i = 1; i < argc; i++) {
        const char* a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            sensitivity_usage(stdout);
            free(codecs);
            return 0;
        } else if (!strcmp(a, "--model") && has) {
            o.model = argv[++i];
        } else if (!strcmp(a, "--hessians") && has) {
            o.hess_dir = argv[++i];
        } else if (!strcmp(a, "--codecs") && has) {
            free(codecs);
            codecs = strdup(argv[++i]);
        } else if (!strcmp(a, "--out") && has) {
            o.out = argv[++i];
        } else if (!strcmp(a, "--seed") && has) {
            o.seed = strtoull(argv[++i], NULL, 0);
        } else if (!strcmp(a, "--gptq")) {
            o.gptq = 1;
        } else if (!strcmp(a, "--act-order")) {
            o.gopts.act_order = 1;
        } else if (!strcmp(a, "--damp") && has) {
            o.gopts.damp = atof(argv[++i]);
        } else if (!strcmp(a, "--block") && has) {
            o.gopts.block = atoi(argv[++i]);
        } else if (!strcmp(a, "--probe-data") && has) {
            o.probe_data = argv[++i];
        } else if (!strcmp(a, "--probe-tokens") && has) {
            o.probe_tokens = atoi(argv[++i]);
        } else if (!strcmp(a, "--probe-ctx") && has) {
            o.probe_ctx = atoi(argv[++i]);
        } else if (!strcmp(a, "--probe-codec") && has) {
            o.probe_codec = argv[++i];
        } else if (!strcmp(a, "--tokenizer") && has) {
            o.tokenizer = argv[++i];
        } else if (!strcmp(a, "--quiet")) {
            o.quiet = 1;
        } else {
            fprintf(stderr, "tqpipe sensitivity: unknown or incomplete option '%s'\n\n", a);
            sensitivity_usage(stderr);
            free(codecs);
            return 2;
        }
    }
    if (o.probe_tokens > 0 && !o.probe_data) {
        fprintf(stderr, "tqpipe sensitivity: --probe-tokens needs --probe-data\n");
        free(codecs);
        return 2;
    }
    if (!o.model || !o.out || !codecs) {
        fprintf(stderr, "tqpipe sensitivity: --model, --codecs and --out are required\n\n");
        sensitivity_usage(stderr);
        free(codecs);
        return 2;
    }
    char* save = NULL;
    for (char* c = strtok_r(codecs, ",", &save); c && o.n_codecs < 64; c = strtok_r(NULL, ",", &save))
        list[o.n_codecs++] = c;
    o.codecs = list;
    tq_rt rt;
    if (tq_rt_init(&rt, &argc, &argv) != TQ_OK) {
        fprintf(stderr, "tqpipe sensitivity: %s\n", tq_last_error());
        free(codecs);
        return 1;
    }
    tq_sens_stats st;
    tq_status rc = tq_sensitivity_run(&rt, &o, &st);
    if (rc != TQ_OK) {
        if (rt.rank == 0) fprintf(stderr, "tqpipe sensitivity: %s\n", tq_last_error());
    } else if (rt.rank == 0 && !o.quiet) {
        printf("sensitivity: %lld tensors (%lld with H, %lld without), %lld rows, %d codecs%s, %.2f s -> %s\n",
               (long long)st.tensors, (long long)st.measured, (long long)st.no_h, (long long)st.rows, o.n_codecs,
               o.gptq ? " with GPTQ" : "", st.seconds, o.out);
        if (o.probe_tokens > 0)
            printf("sensitivity: KL probe over %lld matrices (%d tokens each, codec %s): %.2f s on rank 0\n",
                   (long long)st.probed, o.probe_tokens, o.probe_codec ? o.probe_codec : "tq2", st.probe_seconds);
    }
    tq_rt_finalize(&rt);
    free(codecs);
    return rc == TQ_OK ? 0 : 1;
}
