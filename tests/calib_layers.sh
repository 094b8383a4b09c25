#!/bin/bash
# calib_layers.sh MPIRUN — layer-sharded calibration (pipeline/calib.h tq_calibrate, --parallel layers):
# stories260K (5 layers) calibrated with the sequence split on 1 rank, the layer split on 2 and 4 ranks,
# the sequence split on 2 ranks, and auto with a 2 MiB per-rank limit on 2 ranks (must choose layers);
# every H file byte-identical (cmp), same file set, the per-rank bytes the layer split reports are
# below the sequence split's, and `calibrate --estimate` predicts them from config.json. Then a tiny
# MoE with --diag-experts (layer split on 3 ranks vs sequence split).
set -u
B=${TQ_BIN:?TQ_BIN not set}
S=${TQ_SOURCE_DIR:?TQ_SOURCE_DIR not set}
MPIRUN=${1:-mpirun}
M="$MPIRUN --allow-run-as-root --oversubscribe --mca btl_vader_single_copy_mechanism none"
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
fail() { echo "FAILED: $*"; exit 1; }
export OPENBLAS_NUM_THREADS=1
"$B" convert "$S/jobs/models/stories260K.bin" "$t/m" --tokenizer "$S/jobs/models/tok512.bin" > /dev/null || fail convert
cal() { # $1 np, $2 out, rest: options
  local np=$1 out=$2
  shift 2
  $M -np "$np" "$B" calibrate --model "$t/m" --data "$S/jobs/data/tinystories_valid.txt" --seqs 6 --len 200 \
    --out "$t/$out" "$@" > "$t/$out.log" 2>&1 || { cat "$t/$out.log"; fail "calibrate np $np $*"; }
}
cal 1 seq1 --parallel seq
cal 2 lay2 --parallel layers
cal 4 lay4 --parallel layers
cal 2 seq2 --parallel seq
cal 2 auto2 --mem-per-rank 2MiB
grep -q "parallel layers" "$t/lay2.log" || fail "np 2 --parallel layers did not report the layer split"
grep -q "parallel layers" "$t/auto2.log" || fail "auto with a 2 MiB limit did not choose layers: $(grep parallel "$t/auto2.log")"
grep -q "parallel seq" "$t/seq2.log" || fail "--parallel seq not honoured"
n=$(ls "$t/seq1" | wc -l)
[ "$n" -eq 21 ] || fail "expected 21 H files (5 layers x 4 inputs + head), found $n"
for d in lay2 lay4 seq2 auto2; do
  [ "$(ls "$t/$d" | wc -l)" -eq "$n" ] || fail "$d holds $(ls "$t/$d" | wc -l) files, not $n"
  for f in "$t"/seq1/*.hess.zst; do
    cmp -s "$f" "$t/$d/$(basename "$f")" || fail "$(basename "$f") differs between seq np 1 and $d"
  done
done
# per-rank bytes: "fp32 weights X MiB + accumulators Y MiB (sequence split would hold Z MiB per rank)"
per() { sed -n 's/.*fp32 weights \([0-9.]*\) MiB + accumulators \([0-9.]*\) MiB (sequence split would hold \([0-9.]*\) MiB.*/\1 \2 \3/p' "$1"; }
read w4 a4 z4 <<< "$(per "$t/lay4.log")"
python3 -c "import sys; sys.exit(0 if $w4 + $a4 < $z4 else 1)" || fail "layer split per rank $w4 + $a4 MiB not below $z4 MiB"
# --estimate (config.json only) predicts the same per-rank weights and accumulators
"$B" calibrate --estimate --model "$t/m" --ranks 4 --len 200 > "$t/est.txt" || fail "--estimate"
read ew ea <<< "$(sed -n 's/.*--parallel layers (max of 4) *weights *\([0-9.]*\) MiB + accumulators *\([0-9.]*\) MiB.*/\1 \2/p' "$t/est.txt")"
[ "$ew" = "$w4" ] && [ "$ea" = "$a4" ] || fail "estimate $ew + $ea MiB differs from the run's $w4 + $a4 MiB: $(cat "$t/est.txt")"
# MoE (qwen3-moe-tiny, synthetic weights, random tokens) with --diag-experts: routed experts get diagonal
# files (header flags bit 0), everything else full H; layer split on 3 ranks == sequence split on 1
"$B" synth --config "$S/jobs/configs/qwen3-moe-tiny.json" --dtype f32 --shard-size 0 "$t/moe" > /dev/null || fail "synth moe"
python3 -c "
import struct, random
random.seed(7)
open('$t/moe.tok', 'wb').write(struct.pack('<2048i', *[random.randrange(512) for _ in range(2048)]))" || fail "moe tokens"
for spec in "1 seq" "3 layers"; do
  set -- $spec
  $M -np $1 "$B" calibrate --model "$t/moe" --data "$t/moe.tok" --seqs 6 --len 128 --diag-experts --parallel $2 \
    --out "$t/moe$1" > "$t/moe$1.log" 2>&1 || { cat "$t/moe$1.log"; fail "moe calibrate np $1"; }
done
nm=0
for f in "$t"/moe1/*.hess.zst; do
  cmp -s "$f" "$t/moe3/$(basename "$f")" || fail "moe $(basename "$f") differs between seq np 1 and layers np 3"
  flag=$(od -An -tu4 -j12 -N4 "$f" | tr -d ' ')
  case "$(basename "$f")" in
    *.mlp.experts.*) [ "$flag" = 1 ] || fail "$(basename "$f") should be diagonal (flags $flag)" ;;
    *) [ "$flag" = 0 ] || fail "$(basename "$f") should be full (flags $flag)" ;;
  esac
  nm=$((nm + 1))
done
[ "$nm" -eq "$(ls "$t/moe3" | wc -l)" ] && [ "$nm" -eq 62 ] || fail "moe: $nm files (expected 62 in both)"
echo "ok: MoE --diag-experts: $nm H files identical (seq np 1, layers np 3), experts diagonal"
echo "ok: $n H files byte-identical for seq np 1/2 and layers np 2/4 (auto chose layers); np 4 layers: weights $w4 MiB + accumulators $a4 MiB per rank vs $z4 MiB sequence split"
