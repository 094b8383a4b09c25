#!/usr/bin/env bash
# test_codec_stats.sh — `tqpipe codec-stats` end to end: on 2^20 Gaussian values tq1..tq4 (plain norm)
# are within 2% of the Beta(d=128) Lloyd-Max NMSE of REFERENCE.md §1, the least-squares norm is no
# worse, tq4r4 is ~1e-4, bin1 is exactly 1.125 bits/weight; --tensor on stories260K (172 columns);
# bad arguments exit 2; the same run twice prints the same numbers.
set -u
BIN=${TQ_BIN:-${1:-}}
[ -x "$BIN" ] || { echo "TQ_BIN not set"; exit 1; }
SRC=${TQ_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fail=0
field() { sed -n "s/^ *\"$2\": *\"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}$/\1/p" "$1" | head -1; }
check() { # check NAME VALUE LO HI
    if awk -v v="$2" -v lo="$3" -v hi="$4" 'BEGIN{exit !(v+0 >= lo+0 && v+0 <= hi+0)}'; then
        echo "ok: $1 = $2 in [$3, $4]"
    else
        echo "FAILED: $1 = $2 not in [$3, $4]"; fail=1
    fi
}
ref=(0 0.3609 0.1160 0.0340 0.0093)
for b in 1 2 3 4; do
    "$BIN" codec-stats --codec tq$b --gaussian 1048576 --plain-norm --json > "$TMP/p$b.json" 2>/dev/null || { echo "FAILED: tq$b plain"; fail=1; }
    "$BIN" codec-stats --codec tq$b --gaussian 1048576 --json > "$TMP/l$b.json" 2>/dev/null || { echo "FAILED: tq$b"; fail=1; }
    r=${ref[$b]}
    check "tq$b plain-norm NMSE" "$(field "$TMP/p$b.json" nmse)" "$(awk -v r=$r 'BEGIN{print r*0.98}')" "$(awk -v r=$r 'BEGIN{print r*1.02}')"
    check "tq$b least-squares NMSE" "$(field "$TMP/l$b.json" nmse)" "$(awk -v r=$r 'BEGIN{print r*0.96}')" "$(field "$TMP/p$b.json" nmse)"
done
check "tq4 bits/weight" "$(field "$TMP/l4.json" bits_per_weight)" 4.1254 4.1255
"$BIN" codec-stats --codec tq4r4 --gaussian 1048576 --json > "$TMP/r.json" 2>/dev/null || { echo "FAILED: tq4r4"; fail=1; }
check "tq4r4 NMSE" "$(field "$TMP/r.json" nmse)" 5e-5 1.3e-4
"$BIN" codec-stats --codec bin1 --gaussian 1048576 --json > "$TMP/b.json" 2>/dev/null || { echo "FAILED: bin1"; fail=1; }
check "bin1 bits/weight" "$(field "$TMP/b.json" bits_per_weight)" 1.125 1.125
check "bin1 NMSE (1 - 2/pi = 0.3634)" "$(field "$TMP/b.json" nmse)" 0.355 0.365
# determinism of the printed numbers
"$BIN" codec-stats --codec tq4r4 --gaussian 1048576 --json > "$TMP/r2.json" 2>/dev/null
[ "$(field "$TMP/r.json" nmse)" = "$(field "$TMP/r2.json" nmse)" ] && echo "ok: same NMSE twice" || { echo "FAILED: NMSE differs between runs"; fail=1; }
# usage errors
"$BIN" codec-stats --codec tq9 --gaussian 10 >/dev/null 2>&1; [ $? -eq 2 ] && echo "ok: unknown codec -> 2" || { echo "FAILED: unknown codec exit"; fail=1; }
"$BIN" codec-stats --codec tq4 >/dev/null 2>&1; [ $? -eq 2 ] && echo "ok: no source -> 2" || { echo "FAILED: no source exit"; fail=1; }
"$BIN" codec-stats --help | grep -q -- "--gaussian" && echo "ok: --help" || { echo "FAILED: --help"; fail=1; }
# a real tensor: stories260K w2 (down_proj, 64 x 172: blocks 128+32+8+4)
if "$BIN" convert "$SRC/jobs/models/stories260K.bin" "$TMP/st" --quiet >/dev/null 2>&1; then
    T="$TMP/st:model.layers.0.mlp.down_proj.weight"
    "$BIN" codec-stats --codec tq4 --tensor "$T" --json > "$TMP/t.json" 2>/dev/null || { echo "FAILED: --tensor"; fail=1; }
    check "stories260K down_proj rows" "$(field "$TMP/t.json" rows)" 64 64
    check "stories260K down_proj tq4 bytes (64*(86+8)+4*64)" "$(field "$TMP/t.json" bytes)" 6272 6272
    check "stories260K down_proj tq4 NMSE" "$(field "$TMP/t.json" nmse)" 0.001 0.0105
    "$BIN" codec-stats --codec tq4 --tensor "$TMP/st:no.such.tensor" >/dev/null 2>&1; [ $? -eq 1 ] && echo "ok: missing tensor -> 1" || { echo "FAILED: missing tensor exit"; fail=1; }
else
    echo "FAILED: tqpipe convert of stories260K (needed for --tensor)"; fail=1
fi
exit $fail
