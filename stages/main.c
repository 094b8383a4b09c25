/* main.c — the tqpipe command line: dispatches `tqpipe <command> [args]` to the stage files.
 * Every command answers --help. See README.md for the list and examples. */
#include <stdio.h>
#include <string.h>

#include "commands.h"

static int cmd_version(int argc, char** argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: tqpipe version\n\nprint the tqpipe version\n");
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "tqpipe version: unknown option '%s'\nusage: tqpipe version\n", argv[1]);
        return 2;
    }
    printf("tqpipe %s\n", TQ_VERSION);
    return 0;
}

static const tq_command commands[] = {
    /* one line per command: {name, function, summary} */
    {"version", cmd_version, "print the version"},
    {"convert", tq_cmd_convert, "llama2.c .bin -> Hugging Face safetensors checkpoint (and --reverse)"},
    {"synth", tq_cmd_synth, "write a synthetic checkpoint with the exact inventory of a config.json"},
    {"inspect", tq_cmd_inspect, "describe a checkpoint; --verify reads every byte over the MPI ranks"},
    {"codec-stats", tq_cmd_codec_stats, "bits/weight, NMSE, max error and speed of one codec (Gaussian or a tensor)"},
    {"estimate", tq_cmd_estimate, "memory planner: weights, KV cache and state for a config or checkpoint"},
    {"verify", tq_cmd_verify, "check a packed artifact: every checksum, index vs shards vs plan"},
    {"export", tq_cmd_export, "dequantize an artifact into a Hugging Face safetensors checkpoint"},
    {"calibrate", tq_cmd_calibrate, "accumulate H = X^T X / n of every linear input over calibration data"},
    {"sensitivity", tq_cmd_sensitivity, "omega = tr(dW H dW^T) and exact bytes per tensor x codec (table for allocate)"},
    {"allocate", tq_cmd_allocate, "choose a codec per tensor under a size budget (sensitivity table -> plan.txt)"},
    {"apply-plan", tq_cmd_apply_plan, "fake-quantized checkpoint from a plan or one codec (plain or GPTQ), for eval"},
    {"eval", tq_cmd_eval, "perplexity, KL and top-1 of a checkpoint or artifact, with KV cache codecs (MPI)"},
    {"generate", tq_cmd_generate, "greedy decoding from BOS (+ prompt), printed like llama2.c"},
    {"publish", tq_cmd_publish, "verified artifact -> upload directory with model card and SHA256SUMS"},
    {"run", tq_cmd_run, "run every stage of a job file under the current launcher (mpirun / srun)"},
    {"stage", tq_cmd_stage, "run one stage of a run directory (finished units are skipped)"},
    {"submit", tq_cmd_submit, "submit a job to Slurm: one sbatch script per stage, chained afterok"},
    {"status", tq_cmd_status, "progress of a run: units, rate, ETA, failures, Slurm job states"},
    {"resume", tq_cmd_resume, "continue a run from its first unfinished stage (Slurm or local)"},
};

static void usage(FILE* f)
{
    fprintf(f, "tqpipe %s — compress LLM checkpoints on HPC clusters\n\n", TQ_VERSION);
    fprintf(f, "usage: tqpipe <command> [options]   (tqpipe <command> --help for details)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char** argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("tqpipe %s\n", TQ_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "tqpipe: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
