/* calibrate.c — `tqpipe calibrate`: run calibration token windows through a checkpoint and write
 * H = XᵀX/n of every linear layer's input (full, or --diag) as zstd files (pipeline/calib.h).
 *   mpirun -np 4 tqpipe calibrate --model ckpt/ --data calib.tok --seqs 128 --len 2048 --out run/hessian
 * Sequences are dealt round-robin to the ranks; the files are byte-identical for any rank count. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calib.h" /* defines: tq_calibrate */
#include "commands.h"
#include "rt.h"    /* defines: tq_rt_init */

static void calibrate_usage(FILE* f)
{
    fprintf(f,
            "usage: [mpirun -np N] tqpipe calibrate --model CKPT_DIR --data FILE --out DIR [options]\n"
            "\n"
            "Accumulates H = X^T X / n over the inputs X of every linear layer (fp32 per sequence, exact sums\n"
            "across sequences and ranks) and writes DIR/<weight>.hess.zst (k/v share q_proj's file, up shares\n"
            "gate_proj's). MoE experts that see fewer than --min-expert-tokens tokens are blended with the\n"
            "layer's pooled H.\n"
            "\n"
            "  --model DIR        Hugging Face checkpoint (llama, mistral, qwen2, qwen3, qwen3_moe,\n"
            "                     qwen3_5, qwen3_5_moe, qwen3_next)\n"
            "  --data FILE        .tok (int32 ids) or UTF-8 text (llama2.c tokenizer: --tokenizer or DIR/tokenizer.bin)\n"
            "  --tokenizer FILE   llama2.c tokenizer for text data\n"
            "  --seqs N           calibration sequences (default 128)\n"
            "  --len L            tokens per sequence (default min(2048, max_position))\n"
            "  --diag             keep only diag(H) (sensitivity without GPTQ; 20 bytes per column)\n"
            "  --min-expert-tokens N   pooling threshold (default: the input dimension)\n"
            "  --threads N        BLAS threads per rank (default 1)\n"
            "  --out DIR          output directory\n"
            "  --quiet\n");
}

int tq_cmd_calibrate(int argc, char** argv)
{
    tq_calib_opts o;
    memset(&o, 0, sizeof o);
    for (int i = 1; i < argc; i++) {
        const char* a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            calibrate_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--model") && has) {
            o.model = argv[++i];
        } else if (!strcmp(a, "--data") && has) {
            o.data = argv[++i];
        } else if (!strcmp(a, "--tokenizer") && has) {
            o.tokenizer = argv[++i];
        } else if (!strcmp(a, "--out") && has) {
            o.out_dir = argv[++i];
        } else if (!strcmp(a, "--seqs") && has) {
            o.n_seqs = atoi(argv[++i]);
        } else if (!strcmp(a, "--len") && has) {
            o.seq_len = atoi(argv[++i]);
        } else if (!strcmp(a, "--min-expert-tokens") && has) {
            o.min_expert_tokens = strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(a, "--threads") && has) {
            o.threads = atoi(argv[++i]);
        } else if (!strcmp(a, "--diag")) {
            o.diag_only = 1;
        } else if (!strcmp(a, "--quiet")) {
            o.quiet = 1;
        } else {
            fprintf(stderr, "tqpipe calibrate: unknown or incomplete option '%s'\n\n", a);
            calibrate_usage(stderr);
            return 2;
        }
    }
    if (!o.model || !o.data || !o.out_dir) {
        fprintf(stderr, "tqpipe calibrate: --model, --data and --out are required\n\n");
        calibrate_usage(stderr);
        return 2;
    }
    tq_rt rt;
    if (tq_rt_init(&rt, &argc, &argv) != TQ_OK) {
        fprintf(stderr, "tqpipe calibrate: %s\n", tq_last_error());
        return 1;
    }
    tq_calib_stats st;
    tq_status rc = tq_calibrate(&rt, &o, &st);
    if (rc != TQ_OK) {
        if (rt.rank == 0) fprintf(stderr, "tqpipe calibrate: %s\n", tq_last_error());
    } else if (rt.rank == 0 && !o.quiet) {
        printf("calibrate: %d sequences x %d tokens on %d rank(s): %lld tokens in %.2f s (%.0f tokens/s)\n", st.n_seqs,
               st.seq_len, st.ranks, (long long)st.tokens, st.seconds, st.tokens_per_s);
        printf("calibrate: %lld H files (%s) in %s, %lld experts pooled; accumulators %.1f MiB per rank\n",
               (long long)st.n_inputs, o.diag_only ? "diagonal" : "full", o.out_dir, (long long)st.pooled,
               (double)st.bytes_per_rank / 1048576.0);
    }
    tq_rt_finalize(&rt);
    return rc == TQ_OK ? 0 : 1;
}
