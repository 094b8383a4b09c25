#!/usr/bin/env python3
"""infer_hybrid_cfg.py — tiny configs of the hybrid families for tests/infer_hybrid.sh: the real
jobs/configs files (qwen3.5-0.8b dense, qwen3.5-35b-a3b MoE, qwen3-next-80b-a3b) cut to 8 layers
(2 full attention), hidden 64, head_dim 32 (rotary 8 dims), DeltaNet 2 key / 4 value heads of 16
(dense: 2 / 2, as the 0.8B has equal counts), 8 experts top-2, vocab 512. qwen3_next also gets a dense
layer (mlp_only_layers [2]) and the MoE a fused-expert variant is made by synth --fused-experts.

usage: infer_hybrid_cfg.py SRC_DIR OUT_DIR   (writes OUT_DIR/{qwen3_5,qwen3_5_moe,qwen3_next}.json)
       infer_hybrid_cfg.py --check-norms CKPT_DIR...  (synth wrote zero-centred norms, see check_zero_centred())"""
import json
import sys


def make_configs(src, out):
    for name, f in [("qwen3_5", "qwen3.5-0.8b.json"), ("qwen3_5_moe", "qwen3.5-35b-a3b.json"),
                    ("qwen3_next", "qwen3-next-80b-a3b.json")]:
        c = json.load(open(src + "/jobs/configs/" + f))
        tc = c.get("text_config", c)
        L = 8
        tc.update(num_hidden_layers=L, layer_types=tc["layer_types"][:L] if "layer_types" in tc else None,
                  hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=32, vocab_size=512,
                  linear_num_key_heads=2, linear_num_value_heads=2 if name == "qwen3_5" else 4,
                  linear_key_head_dim=16, linear_value_head_dim=16)
        if tc["layer_types"] is None:
            del tc["layer_types"]
        if "intermediate_size" in tc:
            tc["intermediate_size"] = 96
        if "num_experts" in tc:
            tc.update(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=48)
        if name == "qwen3_next":
            tc["mlp_only_layers"] = [2]
        json.dump(c, open("%s/%s.json" % (out, name), "w"), indent=1)


def check_zero_centred(ckpt_dir):
    """Real Qwen3.5 / Qwen3-Next checkpoints store zero-centred norm weights (the model multiplies by
    1 + w, w near 0), and tqpipe synth writes them that way for these families; the DeltaNet gated norm
    (linear_attn.norm) is a plain weight near 1. Fail if synth's norms are not in that form."""
    import glob
    import struct
    import numpy as np
    seen = 0
    for f in glob.glob(ckpt_dir + "/*.safetensors"):
        with open(f, "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            hdr = json.loads(fh.read(n))
            for name, info in hdr.items():
                if name == "__metadata__" or not name.endswith("norm.weight"):
                    continue
                b, e = info["data_offsets"]
                fh.seek(8 + n + b)
                a = np.frombuffer(fh.read(e - b), dtype="<f4")
                want = 1.0 if "linear_attn." in name else 0.0
                if abs(float(a.mean()) - want) > 0.1:
                    sys.exit("%s: %s has mean %.3f, expected about %.1f" % (ckpt_dir, name, a.mean(), want))
                seen += 1
    if seen == 0:
        sys.exit("%s: no norm weights found" % ckpt_dir)


if __name__ == "__main__":
    if sys.argv[1] == "--check-norms":
        for d in sys.argv[2:]:
            check_zero_centred(d)
    else:
        make_configs(sys.argv[1], sys.argv[2])
