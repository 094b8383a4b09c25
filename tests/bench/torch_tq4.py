#!/usr/bin/env python3
"""torch_tq4.py — a straightforward PyTorch tq4 (the baseline tqpipe's CUDA codec is compared with).

Same shape and work as tqpipe's tq4 at g = 128 on a bf16 tensor: random signs per column, Hadamard
rotation of each 128-column block as a matmul with the normalized 128 x 128 Sylvester matrix, block L2
norms, bucketize against the 15 boundaries, least-squares norm <y,c>/<c,c> stored as fp16, 4-bit codes
packed two per byte. Dequantize: unpack, centroid * norm, inverse rotation, signs, bf16.
Timed with CUDA events (3 warm-ups, median of --iters); also measures the device-to-device copy
bandwidth in the same process. With --tqpipe-json (written by bench_codec_gpu --json) it prints the
tqpipe / PyTorch speed ratios.
  python3 torch_tq4.py [--rows 8192] [--cols 28672] [--iters 20] [--tqpipe-json FILE]
"""
import argparse
import json
import math

import torch


def hadamard(d, device):
    h = torch.ones(1, 1, device=device)
    while h.shape[0] < d:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h / math.sqrt(d)


# 4-bit Lloyd-Max centroids of N(0,1) (symmetric); scaled by 1/sqrt(d) for a coordinate of a unit vector
GAUSS16 = [0.1284, 0.3881, 0.6568, 0.9424, 1.2562, 1.6181, 2.0690, 2.7326]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=8192)
    ap.add_argument("--cols", type=int, default=28672)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--tqpipe-json", default=None)
    a = ap.parse_args()
    dev = "cuda"
    g = 128
    R, C = a.rows, a.cols
    assert C % g == 0
    torch.manual_seed(0)
    w = (torch.randn(R, C, device=dev) * 0.02).to(torch.bfloat16)
    signs = torch.where(torch.rand(C, device=dev) < 0.5, -1.0, 1.0)
    H = hadamard(g, dev)
    cb = torch.tensor([-v for v in reversed(GAUSS16)] + GAUSS16, device=dev) / math.sqrt(g)
    bnd = 0.5 * (cb[1:] + cb[:-1])

    def quantize(w):
        x = w.float() * signs
        y = (x.view(R, C // g, g) @ H)
        n = y.norm(dim=-1, keepdim=True)
        u = y / n.clamp_min(1e-30)
        codes = torch.bucketize(u, bnd)
        c = cb[codes]
        norm = ((y * c).sum(-1) / (c * c).sum(-1)).to(torch.float16)
        cu = codes.view(R, C).to(torch.uint8)
        packed = cu[:, 0::2] | (cu[:, 1::2] << 4)
        return packed, norm

    def dequantize(packed, norm):
        lo = (packed & 15).long()
        hi = (packed >> 4).long()
        codes = torch.stack([lo, hi], -1).view(R, C // g, g)
        y = cb[codes] * norm.float().unsqueeze(-1)
        x = (y @ H).view(R, C) * signs
        return x.to(torch.bfloat16)

    def bench(fn):
        e0 = torch.cuda.Event(enable_timing=True)
        e1 = torch.cuda.Event(enable_timing=True)
        for _ in range(3):
            fn()
        ts = []
        for _ in range(a.iters):
            e0.record()
            fn()
            e1.record()
            torch.cuda.synchronize()
            ts.append(e0.elapsed_time(e1))
        ts.sort()
        return ts[len(ts) // 2]

    dst = torch.empty_like(w)
    copy_ms = bench(lambda: dst.copy_(w))
    nbytes = w.numel() * 2
    copy_gbs = 2 * nbytes / (copy_ms * 1e-3) / 1e9
    packed, norm = quantize(w)
    q_ms = bench(lambda: quantize(w))
    d_ms = bench(lambda: dequantize(packed, norm))
    # sanity: the round trip's NMSE is that of a 4-bit quantizer (~0.0095 on Gaussian data)
    wr = dequantize(packed, norm).float()
    nmse = ((wr - w.float()) ** 2).sum() / (w.float() ** 2).sum()
    moved = nbytes + packed.numel() + norm.numel() * 2
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}: tensor {R} x {C} bf16")
    print(f"torch D2D copy: {copy_ms:.3f} ms, {copy_gbs:.1f} GB/s (read + write)")
    print(f"torch tq4 quantize: {q_ms:.3f} ms ({moved / (q_ms * 1e-3) / 1e9:.1f} GB/s effective); "
          f"dequantize: {d_ms:.3f} ms ({moved / (d_ms * 1e-3) / 1e9:.1f} GB/s effective); round-trip NMSE {nmse:.5f}")
    if a.tqpipe_json:
        with open(a.tqpipe_json) as f:
            t = json.load(f)
        tq = t["codecs"].get("tq4")
        if tq:
            print(f"tqpipe tq4 quantize {tq['quant_ms']:.3f} ms vs PyTorch {q_ms:.3f} ms: "
                  f"tqpipe is {q_ms / tq['quant_ms']:.1f}x faster")
            print(f"tqpipe tq4 dequantize {tq['dequant_ms']:.3f} ms vs PyTorch {d_ms:.3f} ms: "
                  f"tqpipe is {d_ms / tq['dequant_ms']:.1f}x faster")


if __name__ == "__main__":
    main()
