#!/bin/bash
# pipe_slurm.sh — the pipeline under a real local Slurm (slurm/up.sh: munged + slurmctld + slurmd):
#  1. submit -> status -> artifact verified (and byte-identical to a local mpirun run); prints the
#     scheduling overhead per stage (from when a job could start to its stage starting);
#  2. a stage that fails: its dependents are cancelled (kill-on-invalid-dep), status shows the error
#     and the log, `tqpipe resume` resubmits from that stage and finishes;
#  3. a job that Slurm requeues mid-stage (scontrol requeue) continues from its finished units.
# Skips (77) when Slurm is not installed, when not root, or when ports 6817/6818 are taken.
source "$(dirname "$0")/pipe_common.sh"
export PATH=$PATH:/usr/sbin
command -v slurmctld > /dev/null || { echo "slurmctld not installed: skipped"; exit 77; }
[ "$(id -u)" = 0 ] || { echo "needs root (slurmd): skipped"; exit 77; }
if (ss -ltn 2>/dev/null || netstat -ltn 2>/dev/null) | grep -Eq ':(6817|6818)\b'; then
  echo "ports 6817/6818 are in use (another Slurm?): skipped"; exit 77
fi
D=$W/slurm
out=$("$SRC/slurm/up.sh" "$D") || { echo "slurm/up.sh failed"; cat "$D"/log/*.log 2>/dev/null | tail -20; exit 1; }
eval "$out"
trap '"$SRC/slurm/down.sh" "$D"; cleanup' EXIT
baseline

# wait until stage $2 of run $1 has status $3 (or a deadline of $4 s)
wait_status() {
  local t=0
  while [ $t -lt $(($4 * 2)) ]; do
    [ -f "$1/state.json" ] && [ "$(sfield "$1" $2 status 2>/dev/null)" = "$3" ] && return 0
    sleep 0.5; t=$((t + 1))
  done
  return 1
}
jobid() { awk -v s=$2 '$1 == s {id = $2} END {print id}' "$1/slurm/jobs.tsv"; }

# 1. submit -> status -> verify
R=$W/s1
"$BIN" submit "$JOB" --run-dir "$R" > "$R.submit" 2>&1 || { bad "submit"; cat "$R.submit"; }
[ "$(grep -c ' job [0-9]* *log ' "$R.submit")" = 4 ] && ok "submit: 4 chained jobs with ids and log paths" || { bad "submit output"; cat "$R.submit"; }
grep -q -- "--kill-on-invalid-dep\|afterok" "$R"/slurm/03-quantize.sbatch && bad "dependency must be on the sbatch command line, not in the script" || true
grep -q "^#SBATCH --ntasks=2 " "$R"/slurm/00-ingest.sbatch && ok "sbatch script asks for the job's 2 tasks" || bad "no '#SBATCH --ntasks=2' line"
grep -q "^srun -l -u --mpi=pmix --kill-on-bad-exit=1 " "$R"/slurm/03-quantize.sbatch && ok "scripts launch with srun --mpi=pmix --kill-on-bad-exit=1" || bad "srun line"
(unset SLURM_JOB_ID; bash "$R"/slurm/03-quantize.sbatch > "$W/outside.log" 2>&1); rc=$?
[ $rc -ne 0 ] && grep -q "sbatch" "$W/outside.log" && ok "a stage script refuses to run outside Slurm (exit $rc)" || bad "outside-Slurm guard"
wait_status "$R" publish done 120 && ok "submitted chain finished" || { bad "chain did not finish"; "$BIN" status "$R"; tail -30 "$R"/slurm/logs/*; }
"$BIN" status "$R" > "$R.status"
[ "$(grep -cE '^(ingest|quantize|pack|publish) +done .*slurm job [0-9]+' "$R.status")" = 4 ] && ok "status: every stage done, with its Slurm job" || { bad "status"; cat "$R.status"; }
"$BIN" verify "$R/artifact" > "$R.verify" 2>&1 && ok "tqpipe verify: artifact verified" || { bad "verify"; cat "$R.verify"; }
same_as_base "$R" "Slurm run"
"$BIN" status "$R" --json | python3 -c "
import json, sys
d = json.load(sys.stdin)
for s in d['stages']:
    print('scheduling overhead %-9s %.2f s (job %s)' % (s['stage'], s.get('sched_overhead_s', -1), s.get('slurm_job', '?')))"

# 2. failure -> dependents cancelled -> resume resubmits
R=$W/s2
TQ_FAULT=fail:quantize:10:1 "$BIN" submit "$JOB" --run-dir "$R" > "$R.submit" 2>&1 || bad "submit 2"
wait_status "$R" quantize failed 90 && ok "failing stage recorded as failed" || { bad "quantize did not fail"; "$BIN" status "$R"; }
pk=$(jobid "$R" pack)
# Slurm cancels the dependent at its next scheduling pass (sched_interval=1 s); allow for a loaded machine
for _ in $(seq 1 60); do
  st=$(squeue -h -t all -j "$pk" -o %T 2>/dev/null)
  [ "$st" = PENDING ] || break
  sleep 1
done
[ "$st" = CANCELLED ] && ok "dependent job $pk cancelled (kill-on-invalid-dep)" || bad "pack job state '$st'"
"$BIN" status "$R" > "$R.status"
log=$(grep -E '^quantize +failed' "$R.status" | sed -E 's/.*log: ([^;]*).*/\1/')
grep -E '^quantize +failed' "$R.status" | grep -q "injected fault" && [ -f "$log" ] &&
  ok "status: quantize failed, error shown, log $log exists" || { bad "status after failure"; cat "$R.status"; }
unset TQ_FAULT
"$BIN" resume "$R" > "$R.resume" 2>&1 || { bad "resume (Slurm)"; cat "$R.resume"; }
grep -q "resubmitting .* from stage quantize" "$R.resume" && ok "resume resubmitted from quantize" || { bad "resume output"; cat "$R.resume"; }
wait_status "$R" publish done 120 && ok "resubmitted chain finished" || { bad "resubmitted chain"; "$BIN" status "$R"; }
q=$(jobid "$R" quantize)
read total now rec <<< "$(donenow "$R/slurm/logs/quantize-$q.out" quantize)"
[ "${rec:-x}" = 0 ] && [ "${now:-84}" -lt "${total:-0}" ] && ok "resumed quantize: $now of $total units done now, $rec recomputed" || bad "resumed quantize '$total $now $rec'"
same_as_base "$R" "Slurm failure + resume"

# 3. requeue mid-stage
R=$W/s3
TQ_FAULT=slow:quantize:150 "$BIN" submit "$JOB" --run-dir "$R" > "$R.submit" 2>&1 || bad "submit 3"
t=0
while [ $t -lt 240 ]; do
  n=$(cat "$R"/quantize/journal/*.jnl 2>/dev/null | grep -c '^D')
  [ "${n:-0}" -ge 10 ] && break
  sleep 0.5; t=$((t + 1))
done
q=$(jobid "$R" quantize)
scontrol requeue "$q" && ok "requeued quantize job $q after $n units" || bad "scontrol requeue"
wait_status "$R" publish done 150 && ok "requeued chain finished" || { bad "requeued chain"; "$BIN" status "$R"; tail -20 "$R"/slurm/logs/quantize-*.out; }
att=$(sfield "$R" quantize attempt)
read total now rec <<< "$(donenow "$R/slurm/logs/quantize-$q.out" quantize)"
[ "$att" -ge 2 ] && [ "${rec:-x}" = 0 ] && [ "${now:-84}" -lt "${total:-0}" ] &&
  ok "requeued job continued from its finished units: attempt $att, $now of $total done after the requeue, $rec recomputed" ||
  { bad "requeue: attempt $att, '$total $now $rec'"; tail -30 "$R/slurm/logs/quantize-$q.out"; }
grep -q "restart 1" "$R/slurm/logs/quantize-$q.out" && ok "the requeued run appended to the same log" || bad "requeue log"
same_as_base "$R" "Slurm requeue"
echo "$fails failures"
[ $fails -eq 0 ]
