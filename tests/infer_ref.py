#!/usr/bin/env python3
"""infer_ref.py — an independent numpy (float64) forward pass of the Llama / Qwen2 / Qwen3 / Qwen3-MoE
families, written from the Hugging Face modeling conventions (rotate_half RoPE, q/k RMSNorm per head for
qwen3, q/k/v biases, GQA, router softmax -> top-k -> renormalize when norm_topk_prob), used by
tests/infer_families.sh to check tqpipe's C forward pass.

usage: infer_ref.py CKPT_DIR TOKENS.tok CTX   -> prints the mean NLL over windows of CTX tokens
(stride CTX, first token of each window is context only: the protocol of pipeline/validate.h)."""
import json
import struct
import sys

import numpy as np


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        base = 8 + n
        out = {}
        for name, info in hdr.items():
            if name == "__metadata__":
                continue
            b, e = info["data_offsets"]
            f.seek(base + b)
            raw = f.read(e - b)
            dt = info["dtype"]
            if dt == "F32":
                a = np.frombuffer(raw, dtype="<f4").astype(np.float64)
            elif dt == "F16":
                a = np.frombuffer(raw, dtype="<f2").astype(np.float64)
            elif dt == "BF16":
                u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
                a = u.view(np.float32).astype(np.float64)
            else:
                raise SystemExit("unsupported dtype " + dt)
            out[name] = a.reshape(info["shape"])
    return out


def rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x, pos, theta):  # x [T, H, d], rotate_half
    d = x.shape[-1]
    inv = 1.0 / theta ** (np.arange(0, d, 2) / d)
    ang = pos[:, None] * inv[None, :]
    c = np.concatenate([np.cos(ang), np.cos(ang)], -1)[:, None, :]
    s = np.concatenate([np.sin(ang), np.sin(ang)], -1)[:, None, :]
    rot = np.concatenate([-x[..., d // 2:], x[..., : d // 2]], -1)
    return x * c + rot * s


def silu(x):
    return x / (1.0 + np.exp(-x))


def forward(W, cfg, toks):
    T = len(toks)
    h = cfg["hidden_size"]
    nq, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or h // nq
    eps = cfg["rms_norm_eps"]
    theta = cfg.get("rope_theta", 10000.0)
    x = W["model.embed_tokens.weight"][toks]
    pos = np.arange(T, dtype=np.float64)
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        xb = rmsnorm(x, W[p + "input_layernorm.weight"], eps)

        def lin(name, inp):
            y = inp @ W[p + name + ".weight"].T
            if p + name + ".bias" in W:
                y = y + W[p + name + ".bias"]
            return y

        q = lin("self_attn.q_proj", xb).reshape(T, nq, hd)
        k = lin("self_attn.k_proj", xb).reshape(T, nkv, hd)
        v = lin("self_attn.v_proj", xb).reshape(T, nkv, hd)
        if p + "self_attn.q_norm.weight" in W:
            q = rmsnorm(q, W[p + "self_attn.q_norm.weight"], eps)
            k = rmsnorm(k, W[p + "self_attn.k_norm.weight"], eps)
        q, k = rope(q, pos, theta), rope(k, pos, theta)
        g = nq // nkv
        att = np.zeros((T, nq, hd))
        for hh in range(nq):
            s = q[:, hh, :] @ k[:, hh // g, :].T / np.sqrt(hd) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            att[:, hh, :] = s @ v[:, hh // g, :]
        x = x + lin("self_attn.o_proj", att.reshape(T, nq * hd))
        xb = rmsnorm(x, W[p + "post_attention_layernorm.weight"], eps)
        if p + "mlp.gate.weight" in W:
            E, K = cfg["num_experts"], cfg["num_experts_per_tok"]
            lg = xb @ W[p + "mlp.gate.weight"].T
            pr = np.exp(lg - lg.max(-1, keepdims=True))
            pr /= pr.sum(-1, keepdims=True)
            out = np.zeros_like(xb)
            for t in range(T):
                top = np.argsort(-pr[t], kind="stable")[:K]
                wts = pr[t, top]
                if cfg.get("norm_topk_prob"):
                    wts = wts / wts.sum()
                for e, wt in zip(top, wts):
                    pe = p + "mlp.experts.%d." % e
                    a = silu(xb[t] @ W[pe + "gate_proj.weight"].T) * (xb[t] @ W[pe + "up_proj.weight"].T)
                    out[t] += wt * (a @ W[pe + "down_proj.weight"].T)
            x = x + out
        else:
            a = silu(xb @ W[p + "mlp.gate_proj.weight"].T) * (xb @ W[p + "mlp.up_proj.weight"].T)
            x = x + a @ W[p + "mlp.down_proj.weight"].T
    x = rmsnorm(x, W["model.norm.weight"], eps)
    head = W.get("lm_head.weight", W["model.embed_tokens.weight"])
    if cfg.get("tie_word_embeddings", False):
        head = W["model.embed_tokens.weight"]
    return x @ head.T


def main():
    d, tokf, ctx = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cfg = json.load(open(d + "/config.json"))
    W = load_safetensors(d + "/model.safetensors")
    toks = np.fromfile(tokf, dtype="<i4")
    nll, cnt = 0.0, 0
    for b in range(0, len(toks), ctx):
        w = toks[b: b + ctx]
        if len(w) < 2:
            break
        lg = forward(W, cfg, w)
        m = lg.max(-1, keepdims=True)
        lse = (m + np.log(np.exp(lg - m).sum(-1, keepdims=True)))[:, 0]
        for t in range(len(w) - 1):
            nll += lse[t] - lg[t, w[t + 1]]
            cnt += 1
        if b + ctx >= len(toks):
            break
    print("%.10f %d" % (nll / cnt, cnt))


if __name__ == "__main__":
    main()
