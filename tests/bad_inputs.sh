#!/usr/bin/env bash
# bad_inputs.sh — bad input through the CLI (helper "review"): each case must exit 1 (or 2 for a usage
# error) within the time limit, never crash, with a message that names the file / tensor / option and says
# what to do. Cases: missing files and run dirs, a truncated safetensors file, malformed config.json, a
# NaN in a tensor, a tensor whose shape does not match config.json, an unknown codec, a bad job file, a
# --hessians directory that is missing or empty. Env: TQ_BIN, TQ_SOURCE_DIR (set by CTest); python3.
set -euo pipefail
BIN=${TQ_BIN:?TQ_BIN not set}
SRC=${TQ_SOURCE_DIR:?TQ_SOURCE_DIR not set}
command -v python3 > /dev/null || { echo "python3 missing (needed to patch safetensors bytes): skipped"; exit 77; }
T=$(mktemp -d /tmp/tq_bad_inputs.XXXXXX)
trap 'rm -rf "$T"' EXIT
cd "$T"
fails=0
n=0
# expect RC PATTERN... -- CMD...: run CMD (timeout 60 s), require exit RC and every PATTERN (grep -E) in its output
expect() {
    local want=$1; shift
    local pats=()
    while [ "$1" != -- ]; do pats+=("$1"); shift; done
    shift
    n=$((n + 1))
    local rc=0
    timeout 60 "$@" < /dev/null > out.txt 2>&1 || rc=$?
    local ok=1
    [ "$rc" -eq "$want" ] || { echo "FAILED: exit $rc, want $want: $*"; ok=0; }
    for p in "${pats[@]}"; do
        grep -Eq -- "$p" out.txt || { echo "FAILED: no /$p/ in the output of: $*"; ok=0; }
    done
    if [ $ok = 1 ]; then echo "ok: $(head -c 200 out.txt | head -1)"; else sed 's/^/    | /' out.txt | head -5; fails=$((fails + 1)); fi
}
# patch CKPT_DIR MODE: rewrite model.safetensors (nan: a NaN in q_proj of layer 1; reshape: q_proj [32,128])
patch() {
    python3 - "$1/model.safetensors" "$2" <<'PY'
import json, struct, sys
path, mode = sys.argv[1], sys.argv[2]
d = open(path, "rb").read()
n = struct.unpack("<Q", d[:8])[0]
h = json.loads(d[8:8 + n])
body = bytearray(d[8 + n:])
t = h["model.layers.1.self_attn.q_proj.weight"]
if mode == "nan":
    o = t["data_offsets"][0] + 4 * (2 * t["shape"][1] + 7)
    body[o:o + 4] = bytes.fromhex("0000c07f")
else:
    t["shape"] = [32, 128]
js = json.dumps(h).encode()
js += b" " * ((8 - len(js) % 8) % 8)
open(path, "wb").write(struct.pack("<Q", len(js)) + js + bytes(body))
PY
}

"$BIN" convert "$SRC/jobs/models/stories260K.bin" ck --tokenizer "$SRC/jobs/models/tok512.bin" --quiet > /dev/null
Q=model.layers.1.self_attn.q_proj.weight

# missing inputs
expect 1 "/nonexistent/ck" "checkpoint directory" -- "$BIN" inspect /nonexistent/ck
expect 1 "/nonexistent/x.bin" -- "$BIN" convert /nonexistent/x.bin out
expect 1 "/nonexistent/job.yaml" "check the path" -- "$BIN" run /nonexistent/job.yaml
expect 1 "/nonexistent/run" "not a tqpipe run directory" "tqpipe run JOB" -- "$BIN" status /nonexistent/run
expect 1 "/nonexistent/run" "not a tqpipe run directory" -- "$BIN" resume /nonexistent/run
expect 1 "/nonexistent/art" "not a tqpipe artifact" -- "$BIN" verify /nonexistent/art
expect 1 "/nonexistent/t.tsv" "check the path" -- "$BIN" allocate --table /nonexistent/t.tsv --budget 3bpw --out p.txt
expect 1 "/nonexistent/d.txt" "check the path" -- "$BIN" calibrate --model ck --data /nonexistent/d.txt --out h
expect 1 "--hessians /nonexistent/h" "tqpipe calibrate" -- "$BIN" sensitivity --model ck --hessians /nonexistent/h --codecs tq4 --out s.tsv
mkdir -p emptyh
expect 1 "--hessians emptyh holds no \*\.hess\.zst" "tqpipe calibrate" -- "$BIN" sensitivity --model ck --hessians emptyh --codecs tq4 --out s.tsv
expect 1 "--hessians emptyh" -- "$BIN" apply-plan --model ck --codec tq4 --gptq --hessians emptyh --out ap

# truncated / malformed checkpoint
mkdir trunc && cp ck/* trunc/ && truncate -s 300000 trunc/model.safetensors
expect 1 "trunc/model.safetensors" "tensor model\." "truncated" "re-download or re-export" -- "$BIN" inspect trunc
expect 1 "trunc/model.safetensors" "truncated" -- "$BIN" apply-plan --model trunc --codec tq4 --out ap
mkdir badcfg && cp ck/* badcfg/ && echo '{"model_type": "llama", "hidden_size": ' > badcfg/config.json
expect 1 "badcfg/config.json" "fix" -- "$BIN" inspect badcfg
expect 1 "badcfg/config.json" "invalid JSON at line" "fix the file" -- "$BIN" estimate badcfg

# NaN in a tensor
cp -r ck nan && patch nan nan
expect 1 "$Q row 2 col 7: value is NaN" "check the checkpoint" -- "$BIN" apply-plan --model nan --codec tq4 --out ap
expect 1 "$Q" "NaN" -- "$BIN" codec-stats --codec tq4 --tensor "nan:$Q"

# a tensor whose shape does not match config.json
cp -r ck shape && patch shape reshape
expect 1 "$Q is \[32,128\], expected \[64,64\]" "config.json belongs" -- "$BIN" apply-plan --model shape --codec tq4 --out ap
expect 1 "$Q is \[32,128\], expected \[64,64\]" -- "$BIN" sensitivity --model shape --codecs tq4 --out s.tsv

# unknown codec
expect 2 "unknown codec 'tq9'" "known codecs are" -- "$BIN" codec-stats --codec tq9 --gaussian 100
expect 1 "unknown codec 'tq9'" -- "$BIN" apply-plan --model ck --codec tq9 --out ap

# bad job files: syntax error, unknown stage, unknown codec, missing model (each names file:line)
printf 'version: 1\nmodel: [unclosed\n' > j1.yaml
printf 'version: 1\nmodel: %s\nstages:\n  frobnicate: {}\n' "$SRC/jobs/models/stories260K.bin" > j2.yaml
printf 'version: 1\nmodel: %s\nstages:\n  quantize: {codec: tq9}\n' "$SRC/jobs/models/stories260K.bin" > j3.yaml
printf 'version: 1\nmodel: /nonexistent/m.bin\nstages:\n  ingest: {}\n' > j4.yaml
expect 1 "j1.yaml:[0-9]+: YAML syntax error" -- "$BIN" run j1.yaml --run-dir r1
expect 1 "j2.yaml:4: unknown key 'frobnicate'" "known: ingest" -- "$BIN" run j2.yaml --run-dir r2
expect 1 "j3.yaml:4: .*unknown codec 'tq9'" -- "$BIN" run j3.yaml --run-dir r3
expect 1 "j4.yaml:2: model '/nonexistent/m.bin' not found" -- "$BIN" submit j4.yaml --run-dir r4 --dry-run
[ ! -e r1 ] && [ ! -e r2 ] || { echo "FAILED: a run directory was created for an invalid job"; fails=$((fails + 1)); }

echo "$n cases, $fails failures"
[ "$fails" -eq 0 ]
