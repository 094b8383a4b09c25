#!/bin/bash
# pipe_resume.sh — kill a rank (SIGKILL, TQ_FAULT=kill) in the middle of each stage, resume with a
# different number of ranks, and require: the stage continues from its finished units (0 recomputed,
# only the rest done now), status shows the interruption, and the final artifact is byte-identical
# (sha256 of every shard) to an uninterrupted run.
source "$(dirname "$0")/pipe_common.sh"
baseline
# stage  kill-after  rank  resume-ranks
for spec in "ingest 20 1 1" "quantize 30 0 3" "quantize 12 1 4" "pack 1 1 1"; do
  set -- $spec
  st=$1; k=$2; rk=$3; np=$4
  R=$W/run-$st-$k
  TQ_FAULT=kill:$st:$k:$rk $MPI -np 2 "$BIN" run "$JOB" --run-dir "$R" > "$R.kill.log" 2>&1
  rc=$?
  [ $rc -ne 0 ] && ok "$st: rank $rk killed after $k units (mpirun exit $rc)" || bad "$st: the killed run exited 0"
  "$BIN" status "$R" > "$R.status" 2>&1
  grep -Eq "^$st +(interrupted|failed)" "$R.status" && ok "$st: status shows the stage interrupted" || { bad "$st: status"; cat "$R.status"; }
  grep -q "tqpipe resume" "$R.status" || bad "$st: status does not say how to resume"
  $MPI -np $np "$BIN" resume "$R" > "$R.resume.log" 2>&1 || { bad "$st: resume on $np ranks failed"; tail -20 "$R.resume.log"; continue; }
  read total now rec <<< "$(donenow "$R.resume.log" $st)"
  if [ -n "${total:-}" ] && [ "$rec" = 0 ] && [ "$now" -lt "$total" ] && [ "$now" -gt 0 ]; then
    ok "$st: resumed on $np ranks: $now of $total units done now, $rec recomputed"
  else bad "$st: resume did '${total:-?} ${now:-?} ${rec:-?}' (total, done now, recomputed)"; fi
  [ "$(sfield "$R" $st recomputed)" = 0 ] || bad "$st: state says recomputed != 0"
  [ "$(sfield "$R" publish status)" = done ] || bad "$st: publish not done after resume"
  same_as_base "$R" "$st killed + resumed on $np ranks"
done
# a second resume has nothing to do; `stage` on a done stage is skipped
R=$W/run-quantize-30
"$BIN" resume "$R" 2>&1 | grep -q "nothing to resume" && ok "resume of a finished run: nothing to do" || bad "second resume"
"$BIN" stage quantize --run "$R" 2>&1 | grep -q "up to date" && ok "stage on a finished stage: skipped" || bad "stage skip"
# changed inputs: a different default codec invalidates quantize and everything after it
sed 's/codec: tq4/codec: tq3/' "$JOB" > "$W/job3.yaml"
cp "$W/job3.yaml" "$R/job.yaml"
$MPI -np 2 "$BIN" resume "$R" > "$W/changed.log" 2>&1 || { bad "resume after a job change"; tail "$W/changed.log"; }
grep -q "stage quantize: its inputs changed" "$W/changed.log" && grep -q "invalidated: pack publish" "$W/changed.log" &&
  ok "changed job options: quantize redone, pack and publish invalidated (said so)" || { bad "invalidation message"; grep -i "changed\|invalid" "$W/changed.log"; }
[ "$(sfield "$R" ingest attempt)" = 1 ] && ok "ingest (unchanged inputs) kept" || bad "ingest should not have rerun"
sums "$R" | diff -q - "$W/base.sums" > /dev/null && bad "tq3 artifact equals the tq4 one" || ok "tq3 artifact differs from tq4"
echo "$fails failures"
[ $fails -eq 0 ]
