/* apply_plan.c — `tqpipe apply-plan`: write a fake-quantized checkpoint (every tensor quantized with its
 * plan codec, or one uniform codec, plainly or with GPTQ, then dequantized to fp32 safetensors) so
 * `tqpipe eval --model OUT --ref ORIGINAL` measures the damage of exactly that assignment.
 *   tqpipe apply-plan --model ckpt/ --plan run/plan.txt --gptq --hessians run/hessian --out /tmp/q */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "sensrun.h" /* defines: tq_apply_plan */

static void apply_usage(FILE* f)
{
    fprintf(f,
            "usage: tqpipe apply-plan --model CKPT_DIR (--plan plan.txt | --codec C [--embed]) --out DIR\n"
            "       [--gptq --hessians DIR [--act-order] [--damp 0.01]] [--seed S]\n"
            "\n"
            "Quantizes every tensor as the plan says (or every linear matrix with --codec; --embed also the\n"
            "embeddings/head), dequantizes, and writes DIR/model.safetensors (fp32) + config.json (+ tokenizer).\n"
            "Prints total bytes, bits/weight and the summed omega over calibrated tensors. Default seed 1234.\n");
}

int tq_cmd_apply_plan(int argc, char** argv)
{
    tq_apply_opts o;
    memset(&o, 0, sizeof o);
    tq_gptq_opts_default(&o.gopts);
    o.seed = 1234;
    for (int i = 1; i < argc; i++) {
        const char* a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            apply_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--model") && has) {
            o.model = argv[++i];
        } else if (!strcmp(a, "--plan") && has) {
            o.plan = argv[++i];
        } else if (!strcmp(a, "--codec") && has) {
            o.codec = argv[++i];
        } else if (!strcmp(a, "--embed")) {
            o.quant_embed = 1;
        } else if (!strcmp(a, "--hessians") && has) {
            o.hess_dir = argv[++i];
        } else if (!strcmp(a, "--gptq")) {
            o.gptq = 1;
        } else if (!strcmp(a, "--act-order")) {
            o.gopts.act_order = 1;
        } else if (!strcmp(a, "--damp") && has) {
            o.gopts.damp = atof(argv[++i]);
        } else if (!strcmp(a, "--seed") && has) {
            o.seed = strtoull(argv[++i], NULL, 0);
        } else if (!strcmp(a, "--out") && has) {
            o.out_dir = argv[++i];
        } else {
            fprintf(stderr, "tqpipe apply-plan: unknown or incomplete option '%s'\n\n", a);
            apply_usage(stderr);
            return 2;
        }
    }
    if (!o.model || !o.out_dir || (!o.plan == !o.codec)) {
        fprintf(stderr, "tqpipe apply-plan: --model, --out and one of --plan / --codec are required\n\n");
        apply_usage(stderr);
        return 2;
    }
    tq_apply_stats st;
    if (tq_apply_plan(&o, &st) != TQ_OK) {
        fprintf(stderr, "tqpipe apply-plan: %s\n", tq_last_error());
        return 1;
    }
    printf("apply-plan: %lld tensors, %lld quantized (%lld with GPTQ), %llu bytes = %.4f bpw, sum omega %.6e, "
           "%.2f s -> %s\n",
           (long long)st.tensors, (long long)st.quantized, (long long)st.gptq_applied, (unsigned long long)st.bytes,
           st.weights ? 8.0 * (double)st.bytes / (double)st.weights : 0.0, st.omega, st.seconds, o.out_dir);
    return 0;
}
