#!/bin/bash
# artifact_cli.sh FIXTURE PLUGIN_DIR — the artifact commands end to end through the tqpipe binary:
# verify (OK, under mpirun -np 2, usage error, flipped byte, truncated shard, missing shard -> exit 1
# naming the file), export to safetensors, publish (artifact dir and run dir; refusal of a damaged one),
# and h5dump showing zstd-compressed data through the h5z_zstd plugin.
set -u
FIX=$1
PLUG=$2
BIN=${TQ_BIN:?TQ_BIN not set}
T=$(mktemp -d /tmp/tq_artifact_cli.XXXXXX)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAILED: $*"; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

"$FIX" "$T/art" --level 3 --shard-bytes 20000 >/dev/null || fail "fixture"
for c in verify export publish; do
  "$BIN" $c --help | grep -q "usage: tqpipe $c" || fail "$c --help"
done
"$BIN" verify >/dev/null 2>&1; [ $? -eq 2 ] || fail "verify without arguments should exit 2"

out=$("$BIN" verify "$T/art" 2>&1) || fail "verify of a good artifact: $out"
echo "$out" | grep -q "verify: OK" || fail "no OK line: $out"
echo "$out"
mpirun --allow-run-as-root --oversubscribe --mca btl_vader_single_copy_mechanism none -np 2 \
  "$BIN" verify "$T/art" > "$T/mpi.txt" 2>&1 || { cat "$T/mpi.txt"; fail "verify under mpirun -np 2"; }
grep -q "verify: OK" "$T/mpi.txt" || fail "mpirun verify printed no OK"

# plan check: a planned tensor that is not in the artifact
printf 'model.layers.99.mlp.up_proj.weight tq4\n' > "$T/plan.txt"
"$BIN" verify "$T/art" --plan "$T/plan.txt" > "$T/v.txt" 2>&1; [ $? -eq 1 ] || { cat "$T/v.txt"; fail "plan with a missing tensor"; }
grep -q "model.layers.99.mlp.up_proj.weight" "$T/v.txt" || { cat "$T/v.txt"; fail "plan: tensor not named"; }

# damage: flipped byte in the largest shard (mostly compressed chunks)
cp -r "$T/art" "$T/bad"
big=$(ls -S "$T"/bad/*.tqa.h5 | head -1)
size=$(stat -c %s "$big")
printf '\xa5' | dd of="$big" bs=1 seek=$((size * 3 / 4)) conv=notrunc status=none
"$BIN" verify "$T/bad" > "$T/v.txt" 2>&1; rc=$?
[ $rc -eq 1 ] || { cat "$T/v.txt"; fail "flipped byte: exit $rc, want 1"; }
grep -q "FAILED" "$T/v.txt" && grep -q "$(basename "$big")" "$T/v.txt" || { cat "$T/v.txt"; fail "flipped byte: file not named"; }
grep -q "tensor model\." "$T/v.txt" || { cat "$T/v.txt"; fail "flipped byte: tensor not named"; }
"$BIN" publish "$T/bad" "$T/pub_bad" > "$T/p.txt" 2>&1 && fail "publish of a damaged artifact succeeded"
grep -q "refusing to publish" "$T/p.txt" || { cat "$T/p.txt"; fail "publish refusal message"; }

rm -rf "$T/bad"; cp -r "$T/art" "$T/bad"
second=$(ls "$T"/bad/*.tqa.h5 | sed -n 2p)
truncate -s $(( $(stat -c %s "$second") / 2 )) "$second"
"$BIN" verify "$T/bad" > "$T/v.txt" 2>&1; [ $? -eq 1 ] || fail "truncated shard not detected"
grep -q "truncated" "$T/v.txt" || { cat "$T/v.txt"; fail "truncated: message"; }

rm -rf "$T/bad"; cp -r "$T/art" "$T/bad"
rm "$second"
"$BIN" verify "$T/bad" > "$T/v.txt" 2>&1; [ $? -eq 1 ] || fail "missing shard not detected"
grep -q "is missing" "$T/v.txt" || { cat "$T/v.txt"; fail "missing: message"; }

# export
"$BIN" export "$T/art" --to safetensors "$T/hf" --dtype bf16 >/dev/null 2>&1 || fail "export"
[ -f "$T/hf/config.json" ] || fail "export: no config.json"
ls "$T"/hf/*.safetensors >/dev/null 2>&1 || fail "export: no safetensors"
"$BIN" export "$T/art" --to gguf "$T/x" >/dev/null 2>&1; [ $? -eq 2 ] || fail "export --to gguf should be a usage error"

# publish: artifact dir, then a run dir (artifact in a subdirectory, job.yaml quoted)
"$BIN" publish "$T/art" "$T/pub" >/dev/null 2>&1 || fail "publish"
for f in README.md SHA256SUMS model.tqa.index.json; do [ -f "$T/pub/$f" ] || fail "publish: no $f"; done
(cd "$T/pub" && sha256sum -c --quiet SHA256SUMS) || fail "SHA256SUMS"
"$BIN" verify "$T/pub" >/dev/null 2>&1 || fail "published directory does not verify"
mkdir -p "$T/run"; cp -r "$T/art" "$T/run/artifact"
printf 'model: jobs/models/stories260K.bin\n# marker-line-for-test\n' > "$T/run/job.yaml"
"$BIN" publish "$T/run" "$T/pub3" >/dev/null 2>&1 || fail "publish of a run directory"
grep -q "marker-line-for-test" "$T/pub3/README.md" || fail "job file not quoted in the model card"

# h5dump: data of a zstd-compressed dataset through the plugin
if command -v h5dump >/dev/null; then
  first=$(ls "$T"/art/*.tqa.h5 | head -1)
  ds=$(h5ls -r "$first" | awk '$2 == "Dataset" {print $1; exit}')
  HDF5_PLUGIN_PATH="$PLUG" h5dump -d "$ds" "$first" > "$T/d.txt" 2>&1 || fail "h5dump with plugin"
  grep -q "(0" "$T/d.txt" || { cat "$T/d.txt"; fail "h5dump shows no data with the plugin"; }
  h5dump -p -H -d "$ds" "$first" | grep -q "FILTER_ID 32015" || fail "filter 32015 not listed"
else
  echo "note: h5dump not installed (Debian hdf5-tools): the plugin check was not run"
fi
echo "artifact_cli: ok"
