# Cross-cutting checks (helper "review"): the CLI contract of every subcommand (--help exits 0, an
# unknown option or command exits 2) and bad-input handling across the finished areas.
tq_add_script_test(cli_help SCRIPT cli_help.sh LABELS cpu TIMEOUT 120)
