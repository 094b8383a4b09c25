#!/usr/bin/env python3
"""make_tokens.py — turn text into a tqpipe token file (.tok) with a Hugging Face tokenizer, for
`tqpipe eval --data FILE.tok` on models whose vocabulary tqpipe's C tokenizer does not handle.

Token file format: raw little-endian int32 token ids, nothing else (file size = 4 x count).

    pip install tokenizers
    python3 python/make_tokens.py --tokenizer CKPT_DIR/tokenizer.json ../shared/data/wikitext2_test.raw wiki.tok \
        [--bos 1] [--separator '<|endoftext|>'] [--max-tokens N]     (or --text FILE --out FILE)

With --separator the text is split into documents at lines equal to the separator, each stripped and
encoded on its own, with --bos ID prepended to each document when given (this is how tqpipe's C
tokenizer treats TinyStories for llama2.c models). Without it the whole text is one document.
Special tokens the tokenizer would add on its own are not added (add_special_tokens=False). SmolLM2 and
most GPT-2 style models are evaluated without BOS (its GGUF says add_bos_token false): leave --bos out."""
import argparse
import array
import os
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", required=True, help="tokenizer.json, or a checkpoint directory holding one")
    ap.add_argument("text_pos", nargs="?", metavar="TEXT", help="UTF-8 text file (or --text)")
    ap.add_argument("out_pos", nargs="?", metavar="OUT", help="output .tok file (or --out)")
    ap.add_argument("--text", help="UTF-8 text file")
    ap.add_argument("--out", help="output .tok file")
    ap.add_argument("--bos", type=int, default=None, help="token id prepended to every document")
    ap.add_argument("--separator", default=None, help="document separator line, e.g. '<|endoftext|>'")
    ap.add_argument("--max-tokens", type=int, default=0)
    a = ap.parse_args()
    a.text, a.out = a.text or a.text_pos, a.out or a.out_pos
    if not a.text or not a.out:
        ap.error("give the text file and the output file (TEXT OUT, or --text and --out)")
    try:
        from tokenizers import Tokenizer
    except ImportError:
        sys.exit("make_tokens.py needs the 'tokenizers' package: pip install tokenizers")
    path = a.tokenizer
    if os.path.isdir(path):
        path = os.path.join(path, "tokenizer.json")
    tok = Tokenizer.from_file(path)
    text = open(a.text, encoding="utf-8").read()
    if a.separator:
        docs, cur = [], []
        for line in text.split("\n"):
            if line.strip() == a.separator:
                docs.append("\n".join(cur))
                cur = []
            else:
                cur.append(line)
        docs.append("\n".join(cur))
        docs = [d.strip() for d in docs if d.strip()]
    else:
        docs = [text]
    ids = array.array("i")
    for d in docs:
        if a.bos is not None:
            ids.append(a.bos)
        ids.extend(tok.encode(d, add_special_tokens=False).ids)
        if a.max_tokens and len(ids) >= a.max_tokens:
            break
    if a.max_tokens:
        del ids[a.max_tokens:]
    if sys.byteorder != "little":
        ids.byteswap()
    tmp = a.out + ".tmp"
    with open(tmp, "wb") as f:
        ids.tofile(f)
    os.replace(tmp, a.out)
    print("%s: %d documents -> %d tokens -> %s" % (a.text, len(docs), len(ids), a.out))


if __name__ == "__main__":
    main()
