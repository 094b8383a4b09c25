/* calibrate.c — `tqpipe calibrate`: run calibration token windows through a checkpoint and write
 * H = XᵀX/n of every linear layer's input (full, or --diag) as zstd files (pipeline/calib.h).
 *   mpirun -np 4 tqpipe calibrate --model ckpt/ --data calib.tok --seqs 128 --len 2048 --out run/hessian
 * Sequences dealt round-robin to the ranks (--parallel seq) or layers split over the ranks (--parallel
 * layers, pipeline parallel); the files are byte-identical for any rank count and either mode. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calib.h" /* defines: tq_calibrate */
#include "commands.h"
#include "fileio.h"  /* defines: tq_read_file */
#include "jobspec.h" /* defines: tq_parse_size */
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
            "  --diag-experts     diag(H) for routed MoE experts only, full H elsewhere (GPTQ then\n"
            "                     quantizes the experts plainly; the accumulators shrink ~d/2-fold)\n"
            "  --min-expert-tokens N   pooling threshold (default: the input dimension)\n"
            "  --threads N        BLAS threads per rank (default 1)\n"
            "  --parallel MODE    auto (default), seq or layers:\n"
            "                       seq: every rank holds the whole model in fp32 and every accumulator;\n"
            "                            sequences are dealt round-robin; per rank 4*params + all accumulators\n"
            "                       layers: rank r of P holds layers [r*L/P, (r+1)*L/P) (first: + embedding,\n"
            "                            last: + final norm and head) and only their accumulators; activations\n"
            "                            [len x hidden] fp32 pass rank to rank; per rank 4*(its params) + its\n"
            "                            accumulators + 4*len*hidden + its KV cache\n"
            "                       auto: layers when more than one rank and the seq figure exceeds --mem-per-rank\n"
            "  --mem-per-rank SIZE   auto's limit per rank (e.g. 64GiB; default 16GiB)\n"
            "  --out DIR          output directory\n"
            "  --quiet\n"
            "\n"
            "       tqpipe calibrate --estimate --model DIR|config.json [--ranks P] [--len L] [--diag|--diag-experts]\n"
            "  prints the per-rank bytes of both layouts for P ranks from config.json alone (no weights read)\n"
            "\n"
            "Accumulator bytes per linear input of width d: 4*d^2 + 16*d*(d+1)/2 (full), 20*d (--diag).\n"
            "The H files are byte-identical for any rank count and either parallel mode.\n");
}

static void mib_line(const char* what, uint64_t w, uint64_t acc, uint64_t buf)
{
    printf("  %-28s weights %10.1f MiB + accumulators %10.1f MiB + buffers %8.1f MiB = %10.2f GiB\n", what,
           (double)w / 1048576.0, (double)acc / 1048576.0, (double)buf / 1048576.0,
           (double)(w + acc + buf) / 1073741824.0);
}

/* --estimate: the per-rank memory of both layouts from config.json. */
static int calibrate_estimate(const char* model, int ranks, int len, int diag)
{
    char path[4096];
    size_t n = strlen(model);
    if (n > 5 && !strcmp(model + n - 5, ".json")) snprintf(path, sizeof path, "%s", model);
    else snprintf(path, sizeof path, "%s/config.json", model);
    char* text = NULL;
    tq_calib_mem mem;
    if (tq_read_file(path, &text, NULL) != TQ_OK || tq_calib_estimate(text, ranks, len, diag, &mem) != TQ_OK) {
        fprintf(stderr, "tqpipe calibrate: %s\n", tq_last_error());
        free(text);
        return 1;
    }
    free(text);
    printf("calibrate memory per rank for %s: %d layers, %d rank(s), sequences of %d tokens, %s H, %lld inputs\n",
           path, mem.layers, mem.ranks, mem.len, diag == 1 ? "diagonal" : diag == 2 ? "expert-diagonal" : "full",
           (long long)mem.n_inputs);
    mib_line("--parallel seq (every rank)", mem.seq_weights, mem.seq_acc, mem.seq_buffers);
    char what[64];
    snprintf(what, sizeof what, "--parallel layers (max of %d)", mem.active);
    mib_line(what, mem.lay_weights, mem.lay_acc, mem.lay_buffers);
    return 0;
}

int tq_cmd_calibrate(int argc, char** argv)
{
    tq_calib_opts o;
    memset(&o, 0, sizeof o);
    int estimate = 0, est_ranks = 1;
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
        } else if (!strcmp(a, "--parallel") && has) {
            const char* v = argv[++i];
            if (!strcmp(v, "auto")) o.parallel = TQ_CALIB_PAR_AUTO;
            else if (!strcmp(v, "seq")) o.parallel = TQ_CALIB_PAR_SEQ;
            else if (!strcmp(v, "layers")) o.parallel = TQ_CALIB_PAR_LAYERS;
            else {
                fprintf(stderr, "tqpipe calibrate: --parallel '%s': use auto, seq or layers\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--mem-per-rank") && has) {
            uint64_t b = 0;
            if (tq_parse_size(argv[++i], &b) != 0 || b == 0) {
                fprintf(stderr, "tqpipe calibrate: --mem-per-rank '%s': not a size (e.g. 64GiB)\n", argv[i]);
                return 2;
            }
            o.mem_per_rank = (double)b;
        } else if (!strcmp(a, "--estimate")) {
            estimate = 1;
        } else if (!strcmp(a, "--ranks") && has) {
            est_ranks = atoi(argv[++i]);
            if (est_ranks < 1) {
                fprintf(stderr, "tqpipe calibrate: --ranks must be >= 1\n");
                return 2;
            }
        } else if (!strcmp(a, "--diag-experts")) {
            o.diag_experts = 1;
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
    if (estimate) {
        if (!o.model) {
            fprintf(stderr, "tqpipe calibrate: --estimate needs --model DIR or --model config.json\n\n");
            calibrate_usage(stderr);
            return 2;
        }
        return calibrate_estimate(o.model, est_ranks, o.seq_len, o.diag_only ? 1 : o.diag_experts ? 2 : 0);
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
        printf("calibrate: %lld H files (%s) in %s, %lld experts pooled\n", (long long)st.n_inputs,
               o.diag_only ? "diagonal" : o.diag_experts ? "full, experts diagonal" : "full", o.out_dir,
               (long long)st.pooled);
        printf("calibrate: parallel %s; per rank (largest): fp32 weights %.1f MiB + accumulators %.1f MiB "
               "(sequence split would hold %.1f MiB per rank)\n",
               st.parallel, (double)st.weight_bytes_per_rank / 1048576.0, (double)st.bytes_per_rank / 1048576.0,
               (double)st.seq_bytes_per_rank / 1048576.0);
    }
    tq_rt_finalize(&rt);
    return rc == TQ_OK ? 0 : 1;
}
