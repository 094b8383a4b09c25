#!/bin/bash
# pipe_batch.sh — the quantize stage's batched engine (pipeline/qbatch.h) gives the same bytes as the
# one-unit-at-a-time path, whatever the batch size, reader thread, worker count, rank count or device
# split, and keeps resume exact:
#  - three synthetic checkpoints: f16 in 2 shards, f32 with fused 3-D experts in one file, and the
#    Qwen3.5-122B-A10B inventory (37,599 tensors, bf16) at scale 128; a codec mix (tq4, tq2r2, rtn4,
#    ter, bin1, int8, bf16) and 16 KiB units (row slices);
#  - reference: device cpu + TQ_QBATCH=0 (per unit); every variant's quantize output hash (codecs.tsv
#    + the XXH3 of every unit record, in unit order) must equal it; on a GPU machine the variants run
#    on the GPU, so this also checks GPU batches against the CPU reference;
#  - SIGKILL a rank mid-stage with batches of several units (f16 model), resume on another rank count: 0 units
#    recomputed, same hash; pack's artifact of a batched run equals the reference run's, shard by shard;
#  - a NaN in a tensor (ingest verification off): the stage fails naming tensor, row and column, and
#    the units committed before it stay done.
source "$(dirname "$0")/pipe_common.sh"
python3 -c "import json" 2> /dev/null || { echo "SKIP: python3 needed"; exit 77; }
cfg=$SRC/jobs/configs
qhash() { sfield "$1" quantize output_hash; }
mkjob() { # $1 out, $2 model, $3 device, $4 verify
  cat > "$1" <<YAML
version: 1
name: batchtest
model: $2
seed: 7
stages:
  ingest: {verify: $4, check_arch: false}
  quantize:
    codec: tq4
    group: 64
    device: $3
    max_unit_bytes: 16KiB
    rules:
      - {role: norm, codec: bf16}
      - {role: embed, codec: int8}
      - {match: down_proj, codec: rtn4}
      - {match: q_proj, codec: tq2r2}
      - {match: k_proj, codec: ter}
      - {match: v_proj, codec: bin1}
  pack: {zstd_level: 1, shard_size: 256KiB}
YAML
}
"$BIN" synth --config "$cfg/qwen3-moe-tiny.json" --dtype f16 --shard-size 300K "$W/m-f16" > /dev/null || bad "synth f16"
"$BIN" synth --config "$cfg/qwen3-moe-tiny.json" --dtype f32 --fused-experts --shard-size 0 "$W/m-f32" > /dev/null || bad "synth f32"
"$BIN" synth --config "$cfg/qwen3.5-122b-a10b.json" --scale 128 --scale-vocab --shard-size 8M "$W/m-122b" > /dev/null || bad "synth 122b"

for m in f16 f32 122b; do
  M=$W/m-$m
  mkjob "$W/ref-$m.yaml" "$M" cpu true
  mkjob "$W/job-$m.yaml" "$M" auto true
  # reference: CPU, one unit at a time
  TQ_QBATCH=0 "$BIN" run "$W/ref-$m.yaml" --run-dir "$W/ref-$m" > "$W/ref-$m.log" 2>&1 || { bad "$m: reference run"; tail "$W/ref-$m.log"; continue; }
  ref=$(qhash "$W/ref-$m")
  units=$(sfield "$W/ref-$m" quantize units_total)
  R=$W/run-$m
  sed '/^  pack:/d' "$W/job-$m.yaml" > "$W/jobq-$m.yaml"
  $MPI -np 2 "$BIN" run "$W/jobq-$m.yaml" --run-dir "$R" > "$R.log" 2>&1 || { bad "$m: batched run"; tail "$R.log"; continue; }
  [ "$(qhash "$R")" = "$ref" ] && ok "$m: $units units, batched on 2 ranks = per-unit CPU reference ($ref)" ||
    bad "$m: batched 2 ranks $(qhash "$R") != reference $ref"
  i=0
  # (the 122B inventory's 37,621 units: only the variants that matter, to stay fast)
  variants=("3|TQ_QBATCH_BYTES=64K TQ_QBATCH_UNITS=7 TQ_QBATCH_READER=0 TQ_QBATCH_THREADS=3"
            "2|TQ_QBATCH_GPU_MIN=0 TQ_QBATCH_UNITS=100")
  [ $m = 122b ] || variants+=("1|TQ_QBATCH=0" "1|TQ_QBATCH=1" "4|TQ_QBATCH_BYTES=1 TQ_QBATCH_THREADS=2"
                               "1|TQ_QBATCH_GPU_MIN=4096 TQ_QBATCH_UNITS=50")
  for v in "${variants[@]}"; do
    np=${v%%|*}; envs=${v#*|}; i=$((i + 1))
    env $envs $MPI -np $np "$BIN" stage quantize --run "$R" --force > "$R.v$i.log" 2>&1 || { bad "$m: variant '$envs' on $np ranks failed"; tail "$R.v$i.log"; continue; }
    h=$(qhash "$R")
    [ "$h" = "$ref" ] && ok "$m: $np rank(s), $envs: same hash" || bad "$m: $np rank(s), $envs: hash $h != $ref"
    [ "$(sfield "$R" quantize units_done)" = "$units" ] || bad "$m: variant $i: units_done != $units"
  done
  # small batches really happened (64 KiB / 7 units)
  nb=$(grep -o "units in [0-9]* batches" "$R.v1.log" | head -1 | awk '{print $3}')
  [ -n "$nb" ] && [ "$nb" -gt 1 ] && ok "$m: 64 KiB / 7-unit batches: $nb batches on rank 0" || bad "$m: expected several batches, log says '${nb:-none}'"
done

# the tensor table (pipeline/ckpt_table.h): quantize opened the checkpoint from ingest's table; the
# checkpoint re-exported with another tensor order (same names and data, other offsets, same size)
# makes it stale: parsed again, same output, and rebuilt for the next run
R=$W/run-f32
case "$(sfield "$R" quantize summary)" in
  *"(unit table)"*) ok "table: quantize opened the checkpoint from ingest's tensor table" ;;
  *) bad "table: quantize did not use the table: $(sfield "$R" quantize summary)" ;;
esac
python3 - "$W/m-f32/model.safetensors" <<'PY' || bad "table: could not re-export the checkpoint"
import json, struct, sys
p = sys.argv[1]
b = open(p, "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
meta = h.pop("__metadata__", None)
names = sorted(h, key=lambda k: h[k]["data_offsets"][0], reverse=True)
out, data, off = {}, [], 0
if meta is not None: out["__metadata__"] = meta
for k in names:
    s, e = h[k]["data_offsets"]
    out[k] = dict(h[k], data_offsets=[off, off + e - s]); data.append(b[8 + n + s:8 + n + e]); off += e - s
hdr = json.dumps(out, separators=(",", ":")).encode()
hdr += b" " * ((8 - len(hdr) % 8) % 8)
open(p, "wb").write(struct.pack("<Q", len(hdr)) + hdr + b"".join(data))
PY
TQ_QBATCH_STATS=1 "$BIN" stage quantize --run "$R" --force > "$R.stale.log" 2>&1 || { bad "table: quantize after the re-export"; tail "$R.stale.log"; }
grep -q "tensor table .* changed" "$R.stale.log" && grep -q "ckpt [0-9.]* (headers parsed)" "$R.stale.log" &&
  ok "table: re-exported checkpoint detected (stale table), headers parsed" || bad "table: stale table not reported"
[ "$(qhash "$R")" = "$(qhash "$W/ref-f32")" ] && ok "table: same output hash after the re-export" || bad "table: hash after the re-export differs"
"$BIN" stage quantize --run "$R" --force > "$R.stale2.log" 2>&1 || bad "table: quantize with the rebuilt table"
case "$(sfield "$R" quantize summary)" in
  *"(unit table)"*) [ "$(qhash "$R")" = "$(qhash "$W/ref-f32")" ] && ok "table: rebuilt table used, same hash" || bad "table: rebuilt table, hash differs" ;;
  *) bad "table: not rebuilt" ;;
esac

# kill a rank mid-stage (batches of 4 units under TQ_FAULT), resume on another rank count
R=$W/kill
$MPI -np 2 "$BIN" run "$W/job-f16.yaml" --run-dir "$R" > /dev/null 2>&1 || bad "kill: first full run"
TQ_FAULT=kill:quantize:21:1 $MPI -np 2 "$BIN" stage quantize --run "$R" --force > "$R.kill.log" 2>&1 && bad "kill: the killed run exited 0"
$MPI -np 3 "$BIN" resume "$R" > "$R.resume.log" 2>&1 || { bad "kill: resume"; tail -20 "$R.resume.log"; }
read total now rec <<< "$(donenow "$R.resume.log" quantize)"
if [ -n "${total:-}" ] && [ "$rec" = 0 ] && [ "$now" -gt 0 ] && [ "$now" -lt "$total" ]; then
  ok "kill: rank 1 killed after 21 units, resumed on 3 ranks: $now of $total units done now, 0 recomputed"
else bad "kill: resume did '${total:-?} ${now:-?} ${rec:-?}'"; fi
[ "$(qhash "$R")" = "$(qhash "$W/ref-f16")" ] && ok "kill: resumed hash = reference" || bad "kill: hash after resume differs"
(cd "$R/artifact" && sha256sum model-*.tqa.h5) > "$W/kill.sums"
(cd "$W/ref-f16/artifact" && sha256sum model-*.tqa.h5) > "$W/ref.sums"
[ -s "$W/ref.sums" ] && diff -q "$W/kill.sums" "$W/ref.sums" > /dev/null &&
  ok "kill: artifact ($(wc -l < "$W/ref.sums") shards) byte-identical to the per-unit CPU reference" || bad "kill: artifact differs from the reference"

# NaN in a tensor, ingest verification off: the stage names it; units before it stay done
M=$W/m-nan
cp -r "$W/m-f32" "$M"
python3 - "$M/model.safetensors" <<'PY' || bad "nan: could not patch the checkpoint"
import json, struct, sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
name = sorted(k for k in h if k != "__metadata__" and "layers.3" in k and "o_proj" in k)[0]
s = 8 + n + h[name]["data_offsets"][0]
cols = h[name]["shape"][-1]
struct.pack_into("<f", b, s + 4 * (2 * cols + 5), float("nan"))  # row 2, col 5
open(p, "wb").write(b)
print(name)
PY
mkjob "$W/nan.yaml" "$M" cpu false
sed -i '/^  pack:/d' "$W/nan.yaml"
TQ_QBATCH_UNITS=3 "$BIN" run "$W/nan.yaml" --run-dir "$W/nan" > "$W/nan.log" 2>&1 && bad "nan: the run should fail"
grep -q "layers.3.self_attn.o_proj.weight.* row 2 col 5: value is NaN" "$W/nan.log" &&
  ok "nan: the stage fails naming the tensor, row 2 col 5" || { bad "nan: message"; grep -i "nan" "$W/nan.log" | head -5; }
done_units=$(cat "$W"/nan/quantize/journal/*.jnl 2> /dev/null | grep -c '^D')
[ "$done_units" -gt 0 ] && ok "nan: $done_units units committed before the failing batch stay done" || bad "nan: no unit committed"
echo "$fails failures"
[ $fails -eq 0 ]
