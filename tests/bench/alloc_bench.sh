#!/bin/bash
# alloc_bench.sh [BUILD_DIR] [WORK_DIR] — issue 7 measurements on stories260K (CPU):
#   calibration (first half of jobs/data/tinystories_valid.txt, 64 x 256 tokens), sensitivity tables
#   (plain and GPTQ; Ω mapped to KL units by the KL probe on 1024 calibration tokens with bin1, tq2, tq4),
#   then KL / PPL on the other half (held-out stories, ctx 256, first EVAL_TOKENS
#   tokens) for (a) uniform codecs, (b) Hessian allocation at the same total bytes, each (c) without
#   and with GPTQ. Every matrix (embedding too) is quantized; norms stay f32; bits/weight count every
#   byte of every tensor. Prints a markdown table and writes WORK_DIR/results.tsv.
set -eu
BUILD=${1:-$(dirname "$0")/../../build}
W=${2:-/tmp/tq_alloc_bench}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
B="$(cd "$BUILD" && pwd)/tqpipe"
EVAL_TOKENS=${EVAL_TOKENS:-8192}
CODECS=${CODECS:-"bin1 tq1 tq2 rtn2 tq3 rtn3 tq4 rtn4 rtn6 rtn8"}
CAND=bin1,tq1,tq2,rtn2,tq3,rtn3,tq4,rtn4,rtn5,rtn6,rtn8,int8,f32
mkdir -p "$W"
cd "$W"
[ -d ck ] || "$B" convert "$SRC/jobs/models/stories260K.bin" ck --tokenizer "$SRC/jobs/models/tok512.bin" >/dev/null
awk -v RS='<\\|endoftext\\|>\n' 'NR<=88 {printf "%s<|endoftext|>\n", $0}' "$SRC/jobs/data/tinystories_valid.txt" > calib.txt
awk -v RS='<\\|endoftext\\|>\n' 'NR>88 {printf "%s<|endoftext|>\n", $0}' "$SRC/jobs/data/tinystories_valid.txt" > eval.txt
"$B" calibrate --model ck --data calib.txt --seqs 64 --len 256 --out hess --quiet
PROBE="--probe-data calib.txt --probe-tokens 1024 --probe-codec bin1,tq2,tq4"
"$B" sensitivity --model ck --hessians hess --codecs $CAND $PROBE --out sens_plain.tsv --quiet
"$B" sensitivity --model ck --hessians hess --codecs $CAND $PROBE --gptq --out sens_gptq.tsv --quiet
ev() { # model dir -> "kl ppl top1"
  "$B" eval --model "$1" --ref ck --data eval.txt --ctx 256 --max-tokens $EVAL_TOKENS --json 2>/dev/null |
    python3 -c 'import json,sys; m=json.load(sys.stdin); print("%.5f %.4f %.4f" % (m["kl"], m["ppl"], m["top1"]))'
}
ref=$("$B" eval --model ck --data eval.txt --ctx 256 --max-tokens $EVAL_TOKENS --no-ref --json 2>/dev/null |
      python3 -c 'import json,sys; print("%.4f" % json.load(sys.stdin)["ppl"])')
echo -e "method\tcodec_or_budget\tbytes\tbpw\tkl\tppl\ttop1" > results.tsv
for c in $CODECS; do
  for g in plain gptq; do
    extra=""; [ $g = gptq ] && extra="--gptq --hessians hess"
    out=$("$B" apply-plan --model ck --codec $c --embed $extra --out u_${c}_$g)
    bytes=$(echo "$out" | sed -n 's/.* \([0-9]*\) bytes = \([0-9.]*\) bpw.*/\1/p')
    bpw=$(echo "$out" | sed -n 's/.* \([0-9]*\) bytes = \([0-9.]*\) bpw.*/\2/p')
    echo -e "uniform-$g\t$c\t$bytes\t$bpw\t$(ev u_${c}_$g | tr ' ' '\t')" >> results.tsv
    # allocation at the same total bytes
    "$B" allocate --table sens_$g.tsv --budget $bytes --keep norm=f32 --out plan_${c}_$g.txt --quiet
    out=$("$B" apply-plan --model ck --plan plan_${c}_$g.txt $extra --out a_${c}_$g)
    abytes=$(echo "$out" | sed -n 's/.* \([0-9]*\) bytes = \([0-9.]*\) bpw.*/\1/p')
    abpw=$(echo "$out" | sed -n 's/.* \([0-9]*\) bytes = \([0-9.]*\) bpw.*/\2/p')
    echo -e "alloc-$g\t<=$bytes\t$abytes\t$abpw\t$(ev a_${c}_$g | tr ' ' '\t')" >> results.tsv
  done
done
echo "reference fp32 PPL $ref (held-out stories, ctx 256, $EVAL_TOKENS tokens)"
column -t -s $'\t' results.tsv
