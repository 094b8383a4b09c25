#!/bin/bash
# pipe_faults.sh — the other faults of issue 5, each followed by resume and a byte-identical artifact:
#  1. a finished quantize unit's stored bytes corrupted after the stage (TQ_FAULT=corrupt): pack's
#     checksum catches it, sends quantize back to pending, resume redoes exactly that unit;
#  2. a unit corrupted while the stage is interrupted: resume's verification redoes it;
#  3. disk full: the run directory on a small tmpfs (mount), else an injected ENOSPC (TQ_FAULT=enospc);
#  4. a clean rank error (TQ_FAULT=fail): status shows the error and the log; resume finishes;
#  5. an invalid job file: the CLI names file and line.
source "$(dirname "$0")/pipe_common.sh"
baseline

# 1. corrupted after quantize finished
R=$W/corrupt1
TQ_FAULT=corrupt:quantize:5 $MPI -np 2 "$BIN" run "$JOB" --run-dir "$R" > "$R.log" 2>&1 && bad "corrupt: run should fail in pack"
grep -q "failed their checksum\|checksum" "$R.log" && ok "corrupt: pack detected the bad unit" || { bad "corrupt: no checksum error"; tail -20 "$R.log"; }
[ "$(sfield "$R" quantize status)" = pending ] && ok "corrupt: quantize set back to pending" || bad "corrupt: quantize status $(sfield "$R" quantize status)"
$MPI -np 2 "$BIN" resume "$R" > "$R.resume.log" 2>&1 || { bad "corrupt: resume failed"; tail -20 "$R.resume.log"; }
read total now rec <<< "$(donenow "$R.resume.log" quantize)"
[ "${now:-}" = 1 ] && [ "${rec:-}" = 0 ] && ok "corrupt: resume redid 1 unit of $total, $rec recomputed" || bad "corrupt: resume did '${now:-?}' units, recomputed '${rec:-?}'"
same_as_base "$R" "corrupt + resume"

# 2. corrupted while interrupted: resume verifies finished units first
R=$W/corrupt2
TQ_FAULT=kill:quantize:20:1 $MPI -np 2 "$BIN" run "$JOB" --run-dir "$R" > "$R.log" 2>&1
line=$(cat "$R"/quantize/journal/*.jnl | grep '^D' | grep -v ' - ' | head -1)
seg=$(echo "$line" | awk '{print $3}'); off=$(echo "$line" | awk '{print $4}'); len=$(echo "$line" | awk '{print $5}')
pos=$((off + len / 2))
orig=$(dd if="$R/quantize/seg/$seg" bs=1 skip=$pos count=1 2>/dev/null | od -An -tu1 | tr -d ' ')
printf "\\x$(printf %02x $(( (orig + 1) % 256 )))" | dd of="$R/quantize/seg/$seg" bs=1 seek=$pos count=1 conv=notrunc 2>/dev/null
$MPI -np 3 "$BIN" resume "$R" > "$R.resume.log" 2>&1 || { bad "corrupt2: resume failed"; tail -20 "$R.resume.log"; }
grep -q "0 recomputed, 1 redone after a bad checksum" "$R.resume.log" && ok "corrupt2: resume found the corrupted finished unit, redid it, 0 recomputed" ||
  { bad "corrupt2: resume line"; grep "stage quantize: done" "$R.resume.log"; }
same_as_base "$R" "corrupt while interrupted + resume on 3 ranks"

# 3. disk full
R=$W/full
M=$W/tmpfs
mkdir -p "$M"
# ingest only on the normal disk, then the run dir onto a tmpfs just large enough for it
sed '/^  quantize:/,$d' "$JOB" > "$W/ingest.yaml"
"$BIN" run "$W/ingest.yaml" --run-dir "$R" > "$W/ingest.log" 2>&1 || { bad "disk full: the ingest-only run failed"; tail -20 "$W/ingest.log"; }
cp "$JOB" "$R/job.yaml"
used=$(du -sk "$R" | awk '{print $1}')
how=""
if mount -t tmpfs -o size=$((used + 96))k tqpipe-test "$M" 2>/dev/null; then
  how="tmpfs of $((used + 96)) KiB"
  cp -a "$R/." "$M/"
  $MPI -np 2 "$BIN" resume "$M" > "$W/full.log" 2>&1 && bad "disk full: the run should fail"
  grep -qi "no space left" "$W/full.log" && ok "disk full ($how): the stage fails with 'no space left'" || { bad "disk full: message"; tail -20 "$W/full.log"; }
  "$BIN" status "$M" > "$W/full.status" 2>&1
  grep -Eq "(failed|interrupted)" "$W/full.status" && ok "disk full: status shows the failed stage" || { bad "disk full: status"; cat "$W/full.status"; }
  mount -o remount,size=64m "$M"
  $MPI -np 2 "$BIN" resume "$M" > "$W/full.resume.log" 2>&1 || { bad "disk full: resume after growing the tmpfs"; tail -20 "$W/full.resume.log"; }
  grep -q "recomputed" "$W/full.resume.log" && ok "disk full: resumed after space was freed" || bad "disk full: no resume summary"
  same_as_base "$M" "disk full + resume"
  umount "$M"
else
  how="injected ENOSPC (no tmpfs mount permitted)"
  TQ_FAULT=enospc:quantize:20 $MPI -np 2 "$BIN" resume "$R" > "$W/full.log" 2>&1 && bad "enospc: the run should fail"
  grep -qi "no space left" "$W/full.log" && ok "disk full ($how): the stage fails with 'no space left'" || { bad "enospc: message"; tail -20 "$W/full.log"; }
  $MPI -np 2 "$BIN" resume "$R" > "$W/full.resume.log" 2>&1 || { bad "enospc: resume"; tail -20 "$W/full.resume.log"; }
  same_as_base "$R" "injected ENOSPC + resume"
fi
echo "disk-full method: $how"

# 4. clean failure on one rank: error + log path in status
R=$W/fail
TQ_FAULT=fail:quantize:10:1 $MPI -np 2 "$BIN" run "$JOB" --run-dir "$R" > "$R.log" 2>&1 && bad "fail: run should fail"
"$BIN" status "$R" > "$R.status"
grep -E "^quantize +failed" "$R.status" | grep -q "injected fault" && grep -q "log:" "$R.status" &&
  ok "fail: status shows quantize failed with the error and the log" || { bad "fail: status"; cat "$R.status"; }
"$BIN" status "$R" --json | python3 -c "import json,sys; d=json.load(sys.stdin); assert d['next']=='quantize'" &&
  ok "fail: status --json names the next stage" || bad "fail: status --json"
$MPI -np 2 "$BIN" resume "$R" > "$R.resume.log" 2>&1 || { bad "fail: resume"; tail "$R.resume.log"; }
same_as_base "$R" "clean failure + resume"

# 5. invalid job file on the command line
printf 'version: 1\nmodel: %s/jobs/models/stories260K.bin\nstages:\n  quantize: {group: 100}\n' "$SRC" > "$W/bad.yaml"
"$BIN" run "$W/bad.yaml" --run-dir "$W/bad" > "$W/bad.log" 2>&1
rc=$?
[ $rc -ne 0 ] && grep -q "bad.yaml:4: 'group' = 100" "$W/bad.log" && ok "invalid job: exit $rc, message names bad.yaml:4" || { bad "invalid job"; cat "$W/bad.log"; }
echo "$fails failures"
[ $fails -eq 0 ]
