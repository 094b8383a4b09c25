#!/bin/bash
# alloc_stages_bench.sh [BUILD_DIR] [WORK_DIR] — issue 7 through the JOB STAGES (`tqpipe run`, np 2) on
# stories260K: calibrate (4096 tokens of jobs/data/tinystories_valid.txt after validate's first 4096,
# held out automatically) + allocate (default candidates, group 64, norms f32, KL probe + guard) +
# quantize + validate (the first 4096 tokens of the same file, ctx 256, fp16 KV), plain and with the
# quantize stage's GPTQ; against uniform jobs (every matrix, embedding included, at one codec).
# Allocation budgets: the exact sizes of uniform tq2 / tq3 / tq4, and 2.0 / 3.0 / 4.0 bpw.
# Writes WORK_DIR/results.tsv (method, codec_or_budget, bytes, bpw, kl, ppl, top1, plan) and prints it.
set -eu
BUILD=${1:-$(dirname "$0")/../../build}
W=${2:-/tmp/tq_alloc_stages_bench}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
B="$(cd "$BUILD" && pwd)/tqpipe"
UNIFORM=${UNIFORM:-"tq2 rtn2 tq3 rtn3 tq4 rtn4"}
export OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p "$W"
cd "$W"
DATA=$SRC/jobs/data/tinystories_valid.txt
job() { # job NAME CODEC GPTQ(0|1) "ALLOCATE SECTION or empty"
  {
    echo "version: 1"
    echo "name: $1"
    echo "model: $SRC/jobs/models/stories260K.bin"
    echo "tokenizer: $SRC/jobs/models/tok512.bin"
    echo "run_dir: $W/runs/$1"
    echo "seed: 1234"
    echo "stages:"
    echo "  ingest: {}"
    if [ -n "$4" ] || [ "$3" = 1 ]; then echo "  calibrate: {data: $DATA, tokens: 4096, ctx: 256}"; fi
    if [ -n "$4" ]; then echo "  allocate: {$4}"; fi
    echo "  quantize: {codec: $2, group: 64, rules: [{role: norm, codec: f32}]$([ "$3" = 1 ] && echo ', gptq: true')}"
    echo "  pack: {}"
    echo "  validate: {data: $DATA, ctx: 256, max_tokens: 4096, kv_codecs: [fp16]}"
  } > $1.yaml
  mpirun --oversubscribe -np 2 "$B" run $1.yaml > $1.log 2>&1 || { tail -20 $1.log; exit 1; }
}
row() { # row METHOD WHAT RUNNAME LOG
  local bytes kl ppl top1 plan
  bytes=$(awk -F'\t' '!/^#/ {s += $6} END {print s}' runs/$3/quantize/codecs.tsv)
  kl=$(sed -n 's/^validate .*KV fp16: .*KL \([0-9.]*\),.*/\1/p' $4)
  ppl=$(sed -n 's/^validate .*KV fp16: PPL \([0-9.]*\) .*/\1/p' $4)
  top1=$(sed -n 's/^validate .*top-1 \([0-9.]*\)%.*/\1/p' $4)
  plan=$(sed -n 's/^allocate .*<= budget [0-9]*; \([^,]*\).*/\1/p' $4)
  echo -e "$1\t$2\t$bytes\t$(awk -v b=$bytes 'BEGIN {printf "%.4f", 8 * b / 260032}')\t$kl\t$ppl\t$top1\t${plan:--}" >> results.tsv
}
echo -e "method\tcodec_or_budget\tbytes\tbpw\tkl\tppl\ttop1\tplan" > results.tsv
for g in 0 1; do
  sfx=$([ $g = 1 ] && echo gptq || echo plain)
  for c in $UNIFORM; do
    job u_${c}_$sfx $c $g ""
    row uniform-$sfx $c u_${c}_$sfx u_${c}_$sfx.log
  done
  # one run directory per mode: a new budget re-solves from the kept sensitivity table
  for c in tq2 tq3 tq4 2.0 3.0 4.0; do
    if [ -f runs/u_${c}_plain/quantize/codecs.tsv ]; then
      b=$(awk -F'\t' '!/^#/ {s += $6} END {print s}' runs/u_${c}_plain/quantize/codecs.tsv); spec="budget_bytes: $b"; what="<=$c ($b)"
    else
      spec="budget_bpw: $c"; what="<=${c}bpw"
    fi
    job a_$sfx tq4 $g "$spec"
    cp a_$sfx.log a_${sfx}_$c.log
    row alloc-$sfx "$what" a_$sfx a_${sfx}_$c.log
  done
done
ref=$(sed -n 's/^validate .*(ref \([0-9.]*\)).*/\1/p' u_tq4_plain.log | head -1)
echo "reference fp32 PPL $ref (held-out: first 4096 tokens of jobs/data/tinystories_valid.txt, ctx 256)"
column -t -s $'\t' results.tsv
