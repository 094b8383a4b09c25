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
int tq_cmd_allocate(int argc, char** argv);
int tq_cmd_apply_plan(int argc, char** argv);
int tq_cmd_calibrate(int argc, char** argv);
int tq_cmd_sensitivity(int argc, char** argv);
int tq_cmd_codec_stats(int argc, char** argv);
int tq_cmd_convert(int argc, char** argv);
int tq_cmd_estimate(int argc, char** argv);
int tq_cmd_eval(int argc, char** argv);
int tq_cmd_export(int argc, char** argv);
int tq_cmd_generate(int argc, char** argv);
int tq_cmd_inspect(int argc, char** argv);
int tq_cmd_publish(int argc, char** argv);
int tq_cmd_resume(int argc, char** argv);
int tq_cmd_run(int argc, char** argv);
int tq_cmd_stage(int argc, char** argv);
int tq_cmd_status(int argc, char** argv);
int tq_cmd_submit(int argc, char** argv);
int tq_cmd_synth(int argc, char** argv);
int tq_cmd_verify(int argc, char** argv);

/* Shared parser for `tqpipe run|submit JOB [--run-dir DIR] [FLAG]`: fills job, run_dir and *flag_set
 * (when FLAG is given). Returns -1 to go on, or the exit code (0 after --help, 2 on a usage error, with
 * the usage printed). Defined in stages/run.c. */
#include <stdio.h>
int tq_cli_job_args(int argc, char** argv, const char* cmd, const char* flag, void (*usage)(FILE*),
                    const char** job, const char** run_dir, int* flag_set);

#endif
