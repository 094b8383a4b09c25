/* main.c — the tqpipe command line: dispatches `tqpipe <command> [args]` to the stage files.
 * Every command answers --help. See README.md for the list and examples. */
#include <stdio.h>
#include <string.h>

#include "commands.h"

static int cmd_version(int argc, char** argv)
{
    (void)argc;
    (void)argv;
    printf("tqpipe %s\n", TQ_VERSION);
    return 0;
}

static const tq_command commands[] = {
    /* one line per command: {name, function, summary} */
    {"version", cmd_version, "print the version"},
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
