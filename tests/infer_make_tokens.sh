#!/bin/bash
# infer_make_tokens.sh — python/make_tokens.py writes raw little-endian int32 ids: a small byte-level BPE
# is trained on the TinyStories slice with the `tokenizers` package, the slice is tokenized with BOS per
# story, and the file must hold 4 bytes per id, one BOS per story, and decode back to every story.
# Then `tqpipe eval` reads the .tok file's format (ids checked against the vocabulary: out-of-range
# ids are refused). Skipped (77) when the tokenizers package is not installed.
set -eu
SRC=${TQ_SOURCE_DIR:?}
BIN=${TQ_BIN:?}
python3 -c 'import tokenizers' 2>/dev/null || { echo "python package tokenizers missing: skipped"; exit 77; }
W=$(mktemp -d /tmp/tq_infer_tok.XXXXXX)
trap 'rm -rf "$W"' EXIT
DATA="$SRC/jobs/data/tinystories_valid.txt"
python3 - "$DATA" "$W" <<'PY'
import sys
from tokenizers import Tokenizer, models, trainers, pre_tokenizers, decoders
t = Tokenizer(models.BPE(unk_token="<unk>"))
t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
t.decoder = decoders.ByteLevel()
t.train([sys.argv[1]], trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>"]))
t.save(sys.argv[2] + "/tokenizer.json")
PY
python3 "$SRC/python/make_tokens.py" --tokenizer "$W" --text "$DATA" --out "$W/t.tok" --bos 1 --separator '<|endoftext|>'
python3 - "$DATA" "$W" <<'PY'
import array, sys
from tokenizers import Tokenizer
t = Tokenizer.from_file(sys.argv[2] + "/tokenizer.json")
raw = open(sys.argv[2] + "/t.tok", "rb").read()
assert len(raw) % 4 == 0
ids = array.array("i"); ids.frombytes(raw)
docs = [d.strip() for d in open(sys.argv[1], encoding="utf-8").read().split("<|endoftext|>") if d.strip()]
parts, cur = [], None
for i in ids:
    if i == 1:
        cur = []; parts.append(cur)
    else:
        cur.append(i)
assert len(parts) == len(docs), (len(parts), len(docs))
bad = sum(t.decode(p) != d for p, d in zip(parts, docs))
assert bad == 0, "%d documents do not decode back" % bad
print("ok   %d documents, %d ids, decode round trip exact" % (len(docs), len(ids)))
PY
# this vocabulary has 400 ids, all below stories260K's 512: eval reads the file
"$BIN" convert "$SRC/jobs/models/stories260K.bin" "$W/hf" --quiet
"$BIN" eval --model "$W/hf" --data "$W/t.tok" --ctx 64 --max-tokens 2000 --no-ref --quiet --json > "$W/e.json"
python3 -c "import json,sys; j=json.load(open('$W/e.json')); assert j['tokens']==2000 and j['scored']>1900, j; print('ok   eval read the .tok file:', j['tokens'], 'tokens')"
printf '\x00\x10\x00\x00' >> "$W/t.tok" # id 4096: outside the vocabulary
if "$BIN" eval --model "$W/hf" --data "$W/t.tok" --no-ref --quiet > /dev/null 2> "$W/err"; then echo "FAILED out-of-range id accepted"; exit 1; fi
grep -q "outside the model's vocabulary" "$W/err" && echo "ok   out-of-range id refused: $(cat "$W/err" | head -1)"
