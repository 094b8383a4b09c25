#!/bin/bash
# test_synth.sh — `tqpipe synth`: determinism (same seed -> identical sha256 of every file; other seed ->
# different), chunking/sharding independence of the values, descriptor == checkpoint for dense, MoE,
# hybrid and fused-expert configs, weight statistics, the 122B-A10B structural case (~108 MB), bad input.
# usage: test_synth.sh PATH/TO/test_archcheck   (env TQ_BIN = tqpipe, TQ_SOURCE_DIR = repo)
set -u
CHECK=${1:?usage: test_synth.sh test_archcheck}
BIN=${TQ_BIN:?TQ_BIN not set}
SRC=${TQ_SOURCE_DIR:?TQ_SOURCE_DIR not set}
CFG=$SRC/jobs/configs
T=$(mktemp -d /tmp/tq_test_synth.XXXXXX)
trap 'rm -rf "$T"' EXIT
fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAILED $*"; fail=1; }
sums() { (cd "$1" && sha256sum $(ls | sort)); }

"$BIN" synth --help | grep -q -- "--scale" && ok "--help" || bad "--help"

# determinism
"$BIN" synth --config "$CFG/qwen3-moe-tiny.json" --seed 7 --shard-size 100K "$T/a" > /dev/null || bad "synth a"
"$BIN" synth --config "$CFG/qwen3-moe-tiny.json" --seed 7 --shard-size 100K "$T/b" > /dev/null || bad "synth b"
"$BIN" synth --config "$CFG/qwen3-moe-tiny.json" --seed 8 --shard-size 100K "$T/c" > /dev/null || bad "synth c"
[ "$(ls "$T/a" | grep -c safetensors)" -ge 3 ] && ok "sharded into $(ls "$T/a" | grep -c '^model-') files" || bad "no shards"
[ "$(sums "$T/a")" = "$(sums "$T/b")" ] && ok "same seed -> identical sha256 of every file" || bad "same seed differs"
sa=$(cd "$T/a" && cat model-*.safetensors | sha256sum); sc=$(cd "$T/c" && cat model-*.safetensors | sha256sum)
[ "$sa" != "$sc" ] && ok "different seed -> different weights" || bad "different seed gave identical weights"

# values independent of sharding / write chunking: digest of fp32 values equal for one file vs shards
"$BIN" synth --config "$CFG/qwen3-moe-tiny.json" --seed 7 --shard-size 0 "$T/d" > /dev/null || bad "synth d"
[ -f "$T/d/model.safetensors" ] && ok "--shard-size 0 -> model.safetensors" || bad "no single file"
da=$("$CHECK" "$T/a" | grep digest); dd=$("$CHECK" "$T/d" | grep digest)
[ -n "$da" ] && [ "$da" = "$dd" ] && ok "values independent of sharding ($da)" || bad "digest $da vs $dd"

# descriptor == checkpoint, weight statistics: dense llama, dense hybrid, MoE hybrid (per-expert and fused)
"$BIN" synth --config "$CFG/smollm2-135m.json" --scale 8 --seed 1 "$T/smol" > /dev/null || bad "synth smollm2"
"$CHECK" "$T/smol" --stats > "$T/smol.txt" && ok "smollm2/8: $(grep -E '^params|norm mean' "$T/smol.txt" | tr '\n' ' ')" \
    || { bad "smollm2 check"; cat "$T/smol.txt"; }
"$BIN" synth --config "$CFG/qwen3.5-0.8b.json" --scale 16 --scale-vocab --seed 3 --dtype f32 "$T/q08" > /dev/null \
    || bad "synth 0.8b"
"$CHECK" "$T/q08" --stats > "$T/q08.txt" && ok "qwen3.5-0.8b/16 f32: $(grep -E '^params' "$T/q08.txt")" \
    || { bad "0.8b check"; cat "$T/q08.txt"; }
grep -q '"vocab_size": 15520' "$T/q08/config.json" && ok "--scale-vocab wrote vocab 15520" || bad "vocab not scaled"
"$BIN" synth --config "$CFG/qwen3.5-35b-a3b.json" --scale 64 --seed 2 --fused-experts --scale-vocab "$T/q35f" > /dev/null \
    || bad "synth 35b fused"
"$CHECK" "$T/q35f" --stats > "$T/q35f.txt" && grep -q "fused 1" "$T/q35f.txt" && ok "35B-A3B/64 fused experts detected" \
    || { bad "35b fused"; cat "$T/q35f.txt"; }

# the 122B-A10B structural test case
"$BIN" synth --config "$CFG/qwen3.5-122b-a10b.json" --scale 64 --seed 1 --shard-size 20M "$T/q122" > "$T/q122.log" \
    || { bad "synth 122b"; cat "$T/q122.log"; }
cat "$T/q122.log"
"$CHECK" "$T/q122" > "$T/q122.txt" || { bad "122b check"; cat "$T/q122.txt"; }
grep -q "^tensors 37599$" "$T/q122.txt" && ok "122B inventory: 37599 tensors (every layer, every expert)" \
    || bad "122b tensor count: $(grep tensors "$T/q122.txt")"
n=$(ls "$T/q122" | grep -c '^model-'); sz=$(du -sb "$T/q122" | cut -f1)
[ "$n" -ge 5 ] && [ "$sz" -lt 130000000 ] && ok "122B/64: $n shards, $sz bytes on disk" || bad "122B/64: $n shards, $sz bytes"
[ -f "$T/q122/model.safetensors.index.json" ] && ok "index written" || bad "no index"

# bad input
out=$("$BIN" synth --config "$SRC/tests/golden/does-not-exist.json" "$T/x" 2>&1); rc=$?
[ $rc -eq 1 ] && ok "missing config -> exit 1" || bad "missing config rc $rc: $out"
echo '{"model_type":"llama","num_hidden_layers":2,"vocab_size":10,"num_attention_heads":2,"intermediate_size":8}' > "$T/bad.json"
out=$("$BIN" synth --config "$T/bad.json" "$T/x" 2>&1); rc=$?
[ $rc -eq 1 ] && echo "$out" | grep -q hidden_size && ok "bad config names the field: $out" || bad "bad config rc $rc: $out"
"$BIN" synth --config "$T/bad.json" --scale 0 "$T/x" > /dev/null 2>&1; [ $? -eq 2 ] && ok "--scale 0 -> usage error" || bad "--scale 0"
[ ! -e "$T/x/model.safetensors" ] && ok "nothing written on error" || bad "partial output on error"

[ $fail -eq 0 ] && echo "test_synth: all ok" || echo "test_synth: FAILED"
exit $fail
