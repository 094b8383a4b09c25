/* allocate.c — `tqpipe allocate`: choose one codec per tensor from a sensitivity table under a size
 * budget (bits/weight over the whole model, or bytes) and write the editable plan file.
 *   tqpipe allocate --table run/sensitivity.tsv --budget 2.5bpw --out run/plan.txt
 *   tqpipe allocate --table T.tsv --budget 18GB --keep norm=f32 --keep embed=int8 --out plan.txt
 * Re-running with another budget reuses the same table (no calibration). Local, no MPI. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "allocate.h" /* defines: tq_allocate, tq_budget_parse, tq_plan_write */
#include "commands.h"
#include "fileio.h"   /* defines: tq_read_file */

static void allocate_usage(FILE* f)
{
    fprintf(f,
            "usage: tqpipe allocate --table TABLE.tsv --budget B --out plan.txt [options]\n"
            "\n"
            "Chooses one codec per tensor minimizing the sum of the predicted damage omega = tr(dW H dW^T)\n"
            "subject to total bytes <= budget (every tensor counted, quantized or not).\n"
            "\n"
            "  --table FILE     sensitivity table (TSV: tensor role rows cols codec bytes omega)\n"
            "  --budget B       2.5bpw (bits/weight over every weight), or bytes: 18GB, 18GiB, 81260, 64KiB\n"
            "  --out FILE       plan file to write (one 'TENSOR CODEC' per line, comments give bytes/omega)\n"
            "  --keep ROLE=CODEC  fix a codec for a role (norm, embed, router, ...) or a tensor glob; repeatable\n"
            "  --rules FILE     same, one 'KEY CODEC' per line\n"
            "  --codecs A,B,..  allowed codecs (default: every codec in the table)\n"
            "  --core N         tensors searched exactly by branch and bound (default 48)\n"
            "  --max-nodes N    branch-and-bound node limit (default 4000000)\n"
            "  --quiet          no summary on stdout\n");
}

int tq_cmd_allocate(int argc, char** argv)
{
    const char* table = NULL;
    const char* budget = NULL;
    const char* outp = NULL;
    const char* rules_file = NULL;
    char* codecs_arg = NULL;
    int quiet = 0;
    tq_alloc_rule* rules = NULL;
    int n_rules = 0, cap_rules = 0;
    const char** codecs = NULL;
    int n_codecs = 0;
    tq_sens_table* t = NULL;
    tq_plan* plan = NULL;
    tq_alloc_opts o;
    memset(&o, 0, sizeof o);
    int ret = 1;
    for (int i = 1; i < argc; i++) {
        const char* a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            allocate_usage(stdout);
            ret = 0;
            goto out;
        } else if (!strcmp(a, "--table") && has) {
            table = argv[++i];
        } else if (!strcmp(a, "--budget") && has) {
            budget = argv[++i];
        } else if (!strcmp(a, "--out") && has) {
            outp = argv[++i];
        } else if (!strcmp(a, "--rules") && has) {
            rules_file = argv[++i];
        } else if (!strcmp(a, "--codecs") && has) {
            codecs_arg = strdup(argv[++i]);
        } else if (!strcmp(a, "--core") && has) {
            o.solver.core = atoll(argv[++i]);
        } else if (!strcmp(a, "--max-nodes") && has) {
            o.solver.max_nodes = atoll(argv[++i]);
        } else if (!strcmp(a, "--quiet")) {
            quiet = 1;
        } else if (!strcmp(a, "--keep") && has) {
            tq_alloc_rule* r1 = NULL;
            int n1 = 0;
            if (tq_alloc_rules_parse(argv[++i], "--keep", &r1, &n1) != TQ_OK || n1 != 1) {
                fprintf(stderr, "tqpipe allocate: --keep %s: expected ROLE=CODEC or TENSOR_GLOB=CODEC (%s)\n", argv[i],
                        tq_last_error());
                free(r1);
                ret = 2;
                goto out;
            }
            if (n_rules == cap_rules) {
                cap_rules = cap_rules ? 2 * cap_rules : 8;
                rules = realloc(rules, (size_t)cap_rules * sizeof *rules);
                if (!rules) goto out;
            }
            rules[n_rules++] = r1[0];
            free(r1);
        } else {
            fprintf(stderr, "tqpipe allocate: unknown or incomplete option '%s'\n\n", a);
            allocate_usage(stderr);
            ret = 2;
            goto out;
        }
    }
    if (!table || !budget || !outp) {
        fprintf(stderr, "tqpipe allocate: --table, --budget and --out are required\n\n");
        allocate_usage(stderr);
        ret = 2;
        goto out;
    }
    if (rules_file) {
        char* text = NULL;
        size_t len = 0;
        tq_alloc_rule* rf = NULL;
        int nf = 0;
        if (tq_read_file(rules_file, &text, &len) != TQ_OK || tq_alloc_rules_parse(text, rules_file, &rf, &nf) != TQ_OK) {
            fprintf(stderr, "tqpipe allocate: %s\n", tq_last_error());
            free(text);
            goto out;
        }
        free(text);
        /* --keep rules come first (they win) */
        rules = realloc(rules, (size_t)(n_rules + nf + 1) * sizeof *rules);
        if (!rules) {
            free(rf);
            goto out;
        }
        memcpy(rules + n_rules, rf, (size_t)nf * sizeof *rules);
        n_rules += nf;
        free(rf);
    }
    if (codecs_arg) {
        codecs = calloc(strlen(codecs_arg) + 1, sizeof *codecs);
        if (!codecs) goto out;
        char* save = NULL;
        for (char* c = strtok_r(codecs_arg, ",", &save); c; c = strtok_r(NULL, ",", &save)) codecs[n_codecs++] = c;
    }
    if (tq_sens_table_load(table, &t) != TQ_OK) {
        fprintf(stderr, "tqpipe allocate: %s\n", tq_last_error());
        goto out;
    }
    int64_t total_weights = tq_sens_table_weights(t);
    if (tq_budget_parse(budget, total_weights, &o.budget_bytes) != TQ_OK) {
        fprintf(stderr, "tqpipe allocate: %s\n", tq_last_error());
        ret = 2;
        goto out;
    }
    o.rules = rules;
    o.n_rules = n_rules;
    o.codecs = codecs;
    o.n_codecs = codecs ? n_codecs : 0;
    if (tq_allocate(t, &o, &plan) != TQ_OK) {
        fprintf(stderr, "tqpipe allocate: %s\n", tq_last_error());
        goto out;
    }
    if (tq_plan_write(plan, outp) != TQ_OK) {
        fprintf(stderr, "tqpipe allocate: %s\n", tq_last_error());
        goto out;
    }
    if (!quiet) {
        double tw = (double)plan->total_weights;
        double gap = plan->omega - plan->lower_bound;
        printf("allocate: %lld tensors, budget %llu bytes (%.4f bpw), plan %llu bytes (%.4f bpw)\n",
               (long long)plan->n, (unsigned long long)plan->budget_bytes, 8.0 * (double)plan->budget_bytes / tw,
               (unsigned long long)plan->total_bytes, 8.0 * (double)plan->total_bytes / tw);
        printf("allocate: sum omega %.6e, lower bound %.6e, gap %.3e (%.4f%%), proven optimal: %s\n", plan->omega,
               plan->lower_bound, gap, plan->omega > 0 ? 100.0 * gap / plan->omega : 0.0,
               plan->proven_optimal ? "yes" : "no");
        printf("allocate: wrote %s\n", outp);
    }
    ret = 0;
out:
    tq_plan_free(&plan);
    tq_sens_table_free(&t);
    free(rules);
    free(codecs);
    free(codecs_arg);
    return ret;
}
