#!/bin/bash
# infer_ranks.sh — rank-count invariance: stories260K eval (tq3 keys + QJL, int8 values, against the
# fp16 reference; ctx 128, first 6000 tokens) under mpirun -np 1, 2, 4, with windows spread over ranks
# (--parallel seq) and with the 5 layers split over ranks (--parallel layers, activations sent rank to
# rank). PPL, KL and top-1 must agree to 1e-6 relative with the single-rank run.
set -eu
BIN=${TQ_BIN:?TQ_BIN not set}
SRC=${TQ_SOURCE_DIR:?}
W=$(mktemp -d /tmp/tq_infer_ranks.XXXXXX)
trap 'rm -rf "$W"' EXIT
MPI="mpirun --allow-run-as-root --oversubscribe --mca btl_vader_single_copy_mechanism none"
"$BIN" convert "$SRC/jobs/models/stories260K.bin" "$W/hf" --tokenizer "$SRC/jobs/models/tok512.bin" --quiet
ARGS="eval --model $W/hf --data $SRC/jobs/data/tinystories_valid.txt --ctx 128 --max-tokens 6000 --kv-k tq3 --qjl --kv-v int8 --json --quiet"
$BIN $ARGS --parallel seq > "$W/base.json"
fail=0
for mode in seq layers; do
  for np in 1 2 4; do
    timeout 240 $MPI -np $np "$BIN" $ARGS --parallel $mode > "$W/$mode$np.json" 2> "$W/$mode$np.err" || { echo "FAILED np $np $mode"; cat "$W/$mode$np.err"; fail=1; continue; }
    if python3 - "$W/base.json" "$W/$mode$np.json" "$mode" "$np" <<'PY'
import json, sys
a = json.load(open(sys.argv[1])); b = json.load(open(sys.argv[2]))
bad = [k for k in ("ppl", "kl", "top1", "ref_ppl") if abs(a[k] - b[k]) > 1e-6 * max(abs(a[k]), 1e-12)]
assert b["ranks"] == int(sys.argv[4]) and b["parallel"] == sys.argv[3], b
print(("FAILED" if bad else "ok  "), "np %s %-6s ppl %.9f kl %.9g top1 %.6f" % (sys.argv[4], sys.argv[3], b["ppl"], b["kl"], b["top1"]), bad or "")
sys.exit(1 if bad else 0)
PY
    then :; else fail=1; fi
  done
done
exit $fail
