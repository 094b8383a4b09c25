#!/usr/bin/env bash
# test_inspect.sh — `tqpipe inspect` end to end on real files:
#  - the bundled stories260K converted to HF (tqpipe convert): architecture, parameter count 260,032,
#    47 tensors, bytes by dtype/role, descriptor ok, plan summary; --verify under mpirun -np 2 and 1
#    with identical per-tensor XXH3 whatever the rank count, read chunk or reader thread; --json is
#    valid JSON;
#  - a 122B-A10B-shaped synthetic checkpoint (tqpipe synth, sharded): qwen3_5_moe, 37599 tensors,
#    plan for --ranks 64, --verify -np 2;
#  - failures, each exit 1 on every rank with a message naming what is wrong: a NaN written into
#    one f32 tensor (named, with row and col), an Inf in one bf16 expert tensor, a truncated file,
#    a config.json that no longer matches the tensors, and a llama2.c .bin given directly.
# Needs TQ_BIN, TQ_SOURCE_DIR; python3 (stdlib only) to patch bytes inside a safetensors file.
set -u
: "${TQ_BIN:?TQ_BIN not set}" "${TQ_SOURCE_DIR:?TQ_SOURCE_DIR not set}"
command -v python3 >/dev/null || { echo "python3 missing: skip"; exit 77; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPIRUN="mpirun --allow-run-as-root --oversubscribe --mca btl_vader_single_copy_mechanism none"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAILED: $*"; fails=$((fails + 1)); }
expect() { # file pattern description
    grep -Eq -- "$2" "$1" || { fail "$3: no line matching /$2/"; sed 's/^/    | /' "$1" | head -60; }
}

# poke FILE TENSOR ROW COL HEX: overwrite one element of TENSOR in safetensors FILE with raw bytes HEX
poke() {
    python3 - "$@" <<'PY'
import json, struct, sys
path, name, row, col, hexval = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
with open(path, "r+b") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    hdr = json.loads(f.read(n))
    t = hdr[name]
    es = {"F32": 4, "F16": 2, "BF16": 2}[t["dtype"]]
    cols = t["shape"][-1] if t["shape"] else 1
    off = 8 + n + t["data_offsets"][0] + (row * cols + col) * es
    b = bytes.fromhex(hexval)
    assert len(b) == es
    f.seek(off)
    f.write(b)
PY
}

# ---- stories260K -----------------------------------------------------------------------------------
m=$tmp/s260k
"$TQ_BIN" convert "$TQ_SOURCE_DIR/jobs/models/stories260K.bin" "$m" --quiet || { echo "convert failed"; exit 1; }
"$TQ_BIN" inspect "$m" >"$tmp/o" 2>"$tmp/e"; rc=$?
[ "$rc" = 0 ] || fail "inspect stories260K exit $rc"
expect "$tmp/o" '^architecture  llama: 5 layers, hidden 64, heads 8/4 x 8, vocab 512 \(tied\)' "stories architecture"
expect "$tmp/o" '^parameters    260,032 total, 260,032 active per token \(descriptor\); 260,032 in the files' "stories params"
expect "$tmp/o" '^tensors       47$' "stories tensor count"
expect "$tmp/o" '^descriptor    ok' "stories descriptor"
expect "$tmp/o" '^  F32 +47 tensors +1.04 MB 100.00%' "stories bytes by dtype"
expect "$tmp/o" '^  mlp_up +5 tensors +220.2 kB .* 55,040 params' "stories bytes by role"
expect "$tmp/o" '^shard plan    1 rank, 47 units' "stories plan"
"$TQ_BIN" inspect "$m" --ranks 4 >"$tmp/o" 2>&1 || fail "inspect --ranks 4"
expect "$tmp/o" '^shard plan    4 ranks, 47 units .* max/mean 1\.[0-9]+' "stories plan 4 ranks"

$MPIRUN -np 2 "$TQ_BIN" inspect "$m" --verify --progress 0.001 >"$tmp/o" 2>"$tmp/e"; rc=$?
[ "$rc" = 0 ] || fail "inspect --verify -np 2 exit $rc"
expect "$tmp/o" '^verify        47 tensors / 47 units, 1.04 MB read in [0-9.]+ s on 2 ranks: [0-9.]+ [kMG]B/s total' "verify summary"
expect "$tmp/o" '^  rank 1 +[0-9]+ units, [0-9.]+ kB in' "verify per-rank line"
expect "$tmp/o" '^  NaN/Inf     none' "verify nan none"
expect "$tmp/o" '^verify        ok$' "verify ok"
expect "$tmp/e" '\[r0\] INFO  verified 1.0 MB \(100%\) in [0-9.]+ s \([0-9.]+ [MG]B/s\), done' "progress final line"

# checksums do not depend on the rank count or the read chunk; --json is valid JSON
$MPIRUN -np 2 "$TQ_BIN" inspect "$m" --verify --list --progress 0 >"$tmp/l2" 2>/dev/null || fail "--list -np 2"
"$TQ_BIN" inspect "$m" --verify --list --chunk 1k --progress 0 >"$tmp/l1" 2>/dev/null || fail "--list --chunk 1k"
grep -c ' xxh3=[0-9a-f]\{16\} nan=0 inf=0$' "$tmp/l1" | grep -qx 47 || fail "--list: 47 tensors with xxh3"
$MPIRUN -np 2 "$TQ_BIN" inspect "$m" --verify --list --plan-order --progress 0 >"$tmp/l3" 2>/dev/null || fail "--plan-order -np 2"
diff <(grep xxh3= "$tmp/l1") <(grep xxh3= "$tmp/l2") >/dev/null || fail "xxh3 differs between 1 rank/1k chunks and 2 ranks"
diff <(grep xxh3= "$tmp/l1") <(grep xxh3= "$tmp/l3") >/dev/null || fail "xxh3 differs with --plan-order"
# the reader thread (forced on / off, small chunks: many reads in flight) changes nothing
"$TQ_BIN" inspect "$m" --verify --list --chunk 4k --reader on --progress 0 >"$tmp/l4" 2>/dev/null || fail "--reader on"
$MPIRUN -np 2 "$TQ_BIN" inspect "$m" --verify --list --chunk 4k --reader off --progress 0 >"$tmp/l5" 2>/dev/null || fail "--reader off"
diff <(grep xxh3= "$tmp/l1") <(grep xxh3= "$tmp/l4") >/dev/null || fail "xxh3 differs with --reader on"
diff <(grep xxh3= "$tmp/l1") <(grep xxh3= "$tmp/l5") >/dev/null || fail "xxh3 differs with --reader off"
"$TQ_BIN" inspect "$m" --verify --reader sometimes >/dev/null 2>&1; [ $? = 2 ] || fail "--reader sometimes: exit not 2"
"$TQ_BIN" inspect "$m" --verify --json --progress 0 >"$tmp/j" 2>/dev/null || fail "--json exit"
python3 - "$tmp/j" "$tmp/l1" <<'PY' || fail "json content"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["architecture"]["model_type"] == "llama", j["architecture"]
assert j["params_total"] == 260032 and j["params_files"] == 260032 and j["tensors"] == 47
assert j["descriptor_check"]["ok"] is True
assert j["by_dtype"]["F32"]["tensors"] == 47
assert j["verify"]["ok"] is True and j["verify"]["nan"] == 0 and j["verify"]["units"] == 47
assert j["verify"]["bytes"] == j["bytes"] == sum(t["bytes"] for t in j["tensor_list"])
lst = {l.split()[0]: l.split("xxh3=")[1].split()[0] for l in open(sys.argv[2]) if "xxh3=" in l}
for t in j["tensor_list"]:
    assert t["xxh3"] == lst[t["name"]], t["name"]
PY

# NaN in one f32 tensor: named with its row/col, exit 1 on every rank
cp -r "$m" "$tmp/nan"
poke "$tmp/nan/model.safetensors" model.layers.2.mlp.up_proj.weight 3 5 0000c07f
$MPIRUN -np 2 "$TQ_BIN" inspect "$tmp/nan" --verify --progress 0 >"$tmp/o" 2>"$tmp/e"; rc=$?
[ "$rc" != 0 ] || fail "NaN: exit 0"
expect "$tmp/o" '^  NaN/Inf     1 NaN, 0 Inf in 1 tensor:' "NaN summary"
expect "$tmp/o" '^    model.layers.2.mlp.up_proj.weight: 1 NaN, 0 Inf \(first at row 3, col 5\)' "NaN tensor named"
expect "$tmp/o" '^verify        FAILED' "NaN verify FAILED"
expect "$tmp/e" 'verification found NaN/Inf' "NaN error message"

# truncated file: every rank exits 1, message names the file and tensor
cp -r "$m" "$tmp/trunc"
truncate -s -100 "$tmp/trunc/model.safetensors"
$MPIRUN -np 2 "$TQ_BIN" inspect "$tmp/trunc" --verify >"$tmp/o" 2>"$tmp/e"; rc=$?
[ "$rc" != 0 ] || fail "truncated: exit 0"
expect "$tmp/e" 'model.safetensors: tensor [^ ]+: .*truncated' "truncated message"

# config that no longer matches the tensors
cp -r "$m" "$tmp/cfg"
sed -i 's/"num_hidden_layers": *5/"num_hidden_layers": 6/' "$tmp/cfg/config.json"
"$TQ_BIN" inspect "$tmp/cfg" >"$tmp/o" 2>"$tmp/e"; rc=$?
[ "$rc" = 1 ] || fail "descriptor mismatch: exit $rc"
expect "$tmp/o" '^descriptor    .*missing.*model.layers.5' "descriptor mismatch names the missing tensors"

# a llama2.c .bin given directly
"$TQ_BIN" inspect "$TQ_SOURCE_DIR/jobs/models/stories260K.bin" >"$tmp/o" 2>"$tmp/e"; rc=$?
[ "$rc" = 1 ] || fail ".bin: exit $rc"
expect "$tmp/e" 'tqpipe convert .*stories260K.bin OUT_DIR' ".bin hint"
"$TQ_BIN" inspect >/dev/null 2>&1; [ $? = 2 ] || fail "no PATH: exit not 2"
"$TQ_BIN" inspect --help | grep -q -- '--verify' || fail "--help"

# ---- 122B-A10B-shaped synthetic checkpoint ---------------------------------------------------------
s=$tmp/s122
"$TQ_BIN" synth --config "$TQ_SOURCE_DIR/jobs/configs/qwen3.5-122b-a10b.json" --scale 256 --scale-vocab --seed 3 \
    --shard-size 2M "$s" >/dev/null 2>&1 || { echo "synth failed"; exit 1; }
$MPIRUN -np 2 "$TQ_BIN" inspect "$s" --verify --ranks 64 --progress 0 >"$tmp/o" 2>"$tmp/e"; rc=$?
[ "$rc" = 0 ] || { fail "synth inspect exit $rc"; cat "$tmp/e"; }
expect "$tmp/o" '^architecture  qwen3_5_moe: 48 layers \(12 full \+ 36 linear attention\)' "synth architecture"
expect "$tmp/o" '^tensors       37599$' "synth tensor count"
expect "$tmp/o" '^descriptor    ok' "synth descriptor"
expect "$tmp/o" '^  expert_down +12288 tensors' "synth role experts"
expect "$tmp/o" '^shard plan    64 ranks, 37599 units' "synth plan 64"
expect "$tmp/o" '^verify        37599 tensors / 37599 units, .* on 2 ranks' "synth verify"
expect "$tmp/o" '^verify        ok$' "synth verify ok"

# an Inf in one bf16 expert tensor of the sharded checkpoint
t=model.language_model.layers.17.mlp.experts.200.down_proj.weight
f=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['weight_map'][sys.argv[2]])" "$s/model.safetensors.index.json" "$t")
poke "$s/$f" "$t" 1 2 80ff
$MPIRUN -np 2 "$TQ_BIN" inspect "$s" --verify --progress 0 >"$tmp/o" 2>"$tmp/e"; rc=$?
[ "$rc" != 0 ] || fail "Inf: exit 0"
expect "$tmp/o" "^    $t: 0 NaN, 1 Inf \\(first at row 1, col 2\\)" "Inf tensor named"
"$TQ_BIN" inspect "$s" --verify --reader on --chunk 64k --progress 0 >"$tmp/o" 2>"$tmp/e"; rc=$?
[ "$rc" != 0 ] || fail "Inf, reader thread: exit 0"
expect "$tmp/o" "^    $t: 0 NaN, 1 Inf \\(first at row 1, col 2\\)" "Inf tensor named (reader thread)"

if [ "$fails" != 0 ]; then
    echo "test_inspect: $fails failure(s)"
    exit 1
fi
echo "test_inspect: ok"
