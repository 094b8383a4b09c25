#!/bin/bash
# down.sh — stop the single-host Slurm cluster of slurm/up.sh by its pid files (never by name).
#   slurm/down.sh [STATE_DIR]      (default /tmp/tqpipe-slurm); keeps the folder (logs) unless --purge
set -u
D=${1:-/tmp/tqpipe-slurm}
for p in slurmd slurmctld munged; do
  f="$D/$p.pid"
  [ -f "$f" ] || continue
  pid=$(cat "$f" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
  fi
  rm -f "$f"
done
[ "${2:-}" = "--purge" ] && rm -rf "$D"
echo "down.sh: stopped Slurm of $D" >&2
exit 0
