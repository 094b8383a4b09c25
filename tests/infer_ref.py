#!/usr/bin/env python3
"""infer_ref.py — an independent numpy (float64) forward pass of the Llama / Qwen2 / Qwen3 / Qwen3-MoE
families, written from the Hugging Face modeling conventions (rotate_half RoPE, q/k RMSNorm per head for
qwen3, q/k/v biases, GQA, router softmax -> top-k -> renormalize when norm_topk_prob), used by
tests/infer_families.sh to check tqpipe's C forward pass.
Hybrid families (qwen3_5, qwen3_5_moe, qwen3_next; helper "hybrid", tests/infer_hybrid.sh), from
transformers' modeling_qwen3_5.py / modeling_qwen3_next.py: zero-centered RMSNorm (x_n * (1 + w)) for
the layer, q/k and final norms; gated full attention (q_proj per head [query | gate], output * sigmoid(gate),
partial rotary on the first head_dim * partial_rotary_factor dims, text positions = 1-D rope); Gated DeltaNet
linear attention (causal depthwise conv + SiLU, L2-normalized q/k, q / sqrt(dk), beta = sigmoid(b),
g = -exp(A_log) softplus(a + dt_bias), recurrent delta rule, RMSNormGated with silu(z), qwen3_next's
per-key-head interleaved in_proj_qkvz / in_proj_ba); MoE with a sigmoid-gated shared expert; fused
3-D experts (gate_up_proj [E, 2I, h], gate rows first).

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


def softplus(x):
    return np.where(x > 20.0, x, np.log1p(np.exp(np.minimum(x, 20.0))))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def rope_partial(x, pos, theta, rot):  # rotate_half on the first rot dims only
    return np.concatenate([rope(x[..., :rot], pos, theta), x[..., rot:]], -1)


def moe(W, p, cfg, xb):
    E, K = cfg["num_experts"], cfg["num_experts_per_tok"]
    lg = xb @ W[p + "mlp.gate.weight"].T
    pr = np.exp(lg - lg.max(-1, keepdims=True))
    pr /= pr.sum(-1, keepdims=True)
    out = np.zeros_like(xb)
    fused = p + "mlp.experts.gate_up_proj" in W
    for t in range(xb.shape[0]):
        top = np.argsort(-pr[t], kind="stable")[:K]
        wts = pr[t, top]
        if cfg.get("norm_topk_prob") or cfg.get("model_type", "").startswith("qwen3_5_moe"):
            wts = wts / wts.sum()  # Qwen3_5MoeTopKRouter always renormalizes
        for e, wt in zip(top, wts):
            if fused:
                gu = W[p + "mlp.experts.gate_up_proj"][e]
                gw, uw = gu[: gu.shape[0] // 2], gu[gu.shape[0] // 2:]
                dw = W[p + "mlp.experts.down_proj"][e]
            else:
                pe = p + "mlp.experts.%d." % e
                gw, uw, dw = W[pe + "gate_proj.weight"], W[pe + "up_proj.weight"], W[pe + "down_proj.weight"]
            out[t] += wt * ((silu(xb[t] @ gw.T) * (xb[t] @ uw.T)) @ dw.T)
    if p + "mlp.shared_expert_gate.weight" in W:
        ps = p + "mlp.shared_expert."
        se = (silu(xb @ W[ps + "gate_proj.weight"].T) * (xb @ W[ps + "up_proj.weight"].T)) @ W[ps + "down_proj.weight"].T
        out += sigmoid(xb @ W[p + "mlp.shared_expert_gate.weight"].T) * se
    return out


def deltanet(W, p, cfg, xb, eps):
    T = xb.shape[0]
    Hk, Hv = cfg["linear_num_key_heads"], cfg["linear_num_value_heads"]
    dk, dv = cfg["linear_key_head_dim"], cfg["linear_value_head_dim"]
    r = Hv // Hk
    p = p + "linear_attn."
    if p + "in_proj_qkvz.weight" in W:  # qwen3_next: grouped per key head
        qkvz = (xb @ W[p + "in_proj_qkvz.weight"].T).reshape(T, Hk, 2 * dk + 2 * r * dv)
        q, k = qkvz[..., :dk], qkvz[..., dk:2 * dk]
        v = qkvz[..., 2 * dk:2 * dk + r * dv].reshape(T, Hv * dv)
        z = qkvz[..., 2 * dk + r * dv:].reshape(T, Hv, dv)
        ba = (xb @ W[p + "in_proj_ba.weight"].T).reshape(T, Hk, 2 * r)
        b, a = ba[..., :r].reshape(T, Hv), ba[..., r:].reshape(T, Hv)
        mix = np.concatenate([q.reshape(T, -1), k.reshape(T, -1), v], -1)
    else:
        mix = xb @ W[p + "in_proj_qkv.weight"].T
        z = (xb @ W[p + "in_proj_z.weight"].T).reshape(T, Hv, dv)
        b, a = xb @ W[p + "in_proj_b.weight"].T, xb @ W[p + "in_proj_a.weight"].T
    cw = W[p + "conv1d.weight"][:, 0, :]  # [C, K]
    Kc = cw.shape[1]
    pad = np.concatenate([np.zeros((Kc - 1, mix.shape[1])), mix], 0)
    conv = np.stack([(pad[t:t + Kc] * cw.T).sum(0) for t in range(T)])
    mix = silu(conv)
    kd = Hk * dk
    q = mix[:, :kd].reshape(T, Hk, dk)
    k = mix[:, kd:2 * kd].reshape(T, Hk, dk)
    v = mix[:, 2 * kd:].reshape(T, Hv, dv)
    q = q / np.sqrt((q * q).sum(-1, keepdims=True) + 1e-6) / np.sqrt(dk)
    k = k / np.sqrt((k * k).sum(-1, keepdims=True) + 1e-6)
    q, k = np.repeat(q, r, axis=1), np.repeat(k, r, axis=1)  # repeat_interleave
    beta = sigmoid(b)
    g = -np.exp(W[p + "A_log"]) * softplus(a + W[p + "dt_bias"])
    S = np.zeros((Hv, dk, dv))
    o = np.zeros((T, Hv, dv))
    for t in range(T):
        S = S * np.exp(g[t])[:, None, None]
        mem = np.einsum("hkv,hk->hv", S, k[t])
        d = (v[t] - mem) * beta[t][:, None]
        S = S + k[t][:, :, None] * d[:, None, :]
        o[t] = np.einsum("hkv,hk->hv", S, q[t])
    o = o / np.sqrt(np.mean(o * o, -1, keepdims=True) + eps) * W[p + "norm.weight"] * silu(z)
    return o.reshape(T, Hv * dv) @ W[p + "out_proj.weight"].T


def forward_hybrid(W, cfg, toks, P):
    T = len(toks)
    nq, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg["head_dim"]
    eps = cfg["rms_norm_eps"]
    rp = cfg.get("rope_parameters") or {}
    theta = cfg.get("rope_theta", rp.get("rope_theta", 10000.0))
    prf = cfg.get("partial_rotary_factor", rp.get("partial_rotary_factor", 1.0))
    rot = int(hd * prf)
    n_layers = cfg["num_hidden_layers"]
    lt = cfg.get("layer_types") or ["full_attention" if (i + 1) % cfg.get("full_attention_interval", 4) == 0
                                    else "linear_attention" for i in range(n_layers)]

    def norm(x, w):  # zero-centered RMSNorm
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * (1.0 + w)

    x = W[P + "embed_tokens.weight"][toks]
    pos = np.arange(T, dtype=np.float64)
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(n_layers):
        p = P + "layers.%d." % l
        xb = norm(x, W[p + "input_layernorm.weight"])
        if lt[l] == "linear_attention":
            x = x + deltanet(W, p, cfg, xb, eps)
        else:
            qg = (xb @ W[p + "self_attn.q_proj.weight"].T).reshape(T, nq, 2 * hd)
            q, gate = qg[..., :hd], qg[..., hd:].reshape(T, nq * hd)
            k = (xb @ W[p + "self_attn.k_proj.weight"].T).reshape(T, nkv, hd)
            v = (xb @ W[p + "self_attn.v_proj.weight"].T).reshape(T, nkv, hd)
            q = norm(q, W[p + "self_attn.q_norm.weight"])
            k = norm(k, W[p + "self_attn.k_norm.weight"])
            q, k = rope_partial(q, pos, theta, rot), rope_partial(k, pos, theta, rot)
            g = nq // nkv
            att = np.zeros((T, nq, hd))
            for hh in range(nq):
                s = q[:, hh, :] @ k[:, hh // g, :].T / np.sqrt(hd) + mask
                s = np.exp(s - s.max(-1, keepdims=True))
                s /= s.sum(-1, keepdims=True)
                att[:, hh, :] = s @ v[:, hh // g, :]
            x = x + (att.reshape(T, nq * hd) * sigmoid(gate)) @ W[p + "self_attn.o_proj.weight"].T
        xb = norm(x, W[p + "post_attention_layernorm.weight"])
        if p + "mlp.gate.weight" in W:
            x = x + moe(W, p, cfg, xb)
        else:
            x = x + (silu(xb @ W[p + "mlp.gate_proj.weight"].T) * (xb @ W[p + "mlp.up_proj.weight"].T)) @ \
                W[p + "mlp.down_proj.weight"].T
    x = norm(x, W[P + "norm.weight"])
    if cfg.get("tie_word_embeddings", False) or "lm_head.weight" not in W:
        return x @ W[P + "embed_tokens.weight"].T
    return x @ W["lm_head.weight"].T


def forward(W, cfg, toks):
    if cfg.get("model_type", "").startswith("qwen3_5") or cfg.get("model_type") == "qwen3_next":
        P = [n for n in W if n.endswith("embed_tokens.weight")][0][: -len("embed_tokens.weight")]
        return forward_hybrid(W, cfg, toks, P)
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
    if "text_config" in cfg:  # Qwen3.5 VLM layout
        tc = dict(cfg["text_config"])
        tc.setdefault("tie_word_embeddings", cfg.get("tie_word_embeddings", False))
        cfg = tc
    import glob
    W = {}
    for f in sorted(glob.glob(d + "/*.safetensors")):
        W.update(load_safetensors(f))
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
