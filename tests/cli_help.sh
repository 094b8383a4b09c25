#!/usr/bin/env bash
# cli_help.sh — the command-line contract of every subcommand (helper "review"):
#   - `tqpipe --help` exits 0 and lists the commands; each listed command answers `--help` with exit 0
#     and a "usage: ... tqpipe <command>" line (except `version`, which prints the version);
#   - each command given an unknown option exits 2 (usage error) and names the option;
#   - `tqpipe` with no command and with an unknown command exits 2.
# Env: TQ_BIN (set by CTest).
set -euo pipefail
BIN=${TQ_BIN:?TQ_BIN not set (run through ctest)}
T=$(mktemp -d /tmp/tq_cli_help.XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
bad() { echo "FAILED: $*"; fails=$((fails + 1)); }

"$BIN" --help > "$T/help"
cmds=$(awk '/^commands:/ {f = 1; next} f && NF {print $1}' "$T/help")
n=$(echo "$cmds" | grep -c .)
[ "$n" -ge 15 ] || bad "tqpipe --help lists only $n commands"
for c in $cmds; do
    rc=0; timeout 20 "$BIN" "$c" --help > "$T/out" 2>&1 < /dev/null || rc=$?
    [ "$rc" -eq 0 ] || { bad "$c --help: exit $rc"; continue; }
    grep -q "usage: .*tqpipe $c" "$T/out" || { bad "$c --help: no 'usage: tqpipe $c' line"; head -3 "$T/out"; }
    rc=0; timeout 20 "$BIN" "$c" --no-such-option > "$T/out" 2>&1 < /dev/null || rc=$?
    [ "$rc" -eq 2 ] || bad "$c --no-such-option: exit $rc, want 2"
    grep -q -- "--no-such-option" "$T/out" || { bad "$c: unknown option not named"; head -3 "$T/out"; }
    if [ "$c" = version ]; then
        "$BIN" version | grep -q '^tqpipe [0-9]' || bad "version: no version line"
    fi
done
rc=0; "$BIN" no-such-command > "$T/out" 2>&1 || rc=$?
[ "$rc" -eq 2 ] || bad "unknown command: exit $rc, want 2"
grep -q "unknown command 'no-such-command'" "$T/out" || bad "unknown command not named"
rc=0; "$BIN" > /dev/null 2>&1 || rc=$?
[ "$rc" -eq 2 ] || bad "no command: exit $rc, want 2"
echo "$n commands checked, $fails failures"
[ "$fails" -eq 0 ]
