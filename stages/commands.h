/* commands.h — the tqpipe subcommands. Each is implemented in its own stages/ file as
 *   int tq_cmd_<name>(int argc, char** argv)   (argv[0] is the subcommand name)
 * returning a process exit code (0 ok, 1 failure, 2 usage error), printing --help text itself, and
 * registered with one line in the table in stages/main.c. MPI is initialised by the command itself
 * (tq_rt_init) when it needs ranks. */
#ifndef TQ_COMMANDS_H
#define TQ_COMMANDS_H

typedef int (*tq_cmd_fn)(int argc, char** argv);

typedef struct {
    const char* name;
    tq_cmd_fn fn;
    const char* summary;
} tq_command;

/* Declarations: one line per command (keep sorted). */

#endif
