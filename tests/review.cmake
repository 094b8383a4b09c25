# Cross-cutting checks (helper "review"): the CLI contract of every subcommand (--help exits 0, an
# unknown option or command exits 2) and bad-input handling across the finished areas.
tq_add_script_test(cli_help SCRIPT cli_help.sh LABELS cpu TIMEOUT 120)
# Bad input on the CLI: missing files, truncated/malformed checkpoints, NaN, wrong shapes, unknown codec,
# bad job files, missing --hessians: exit code and a message naming the file/tensor and what to do.
tq_add_script_test(cli_bad_inputs SCRIPT bad_inputs.sh LABELS cpu TIMEOUT 120)
