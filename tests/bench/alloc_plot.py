#!/usr/bin/env python3
"""alloc_plot.py RESULTS.tsv OUT.svg [TITLE] — KL (log scale) vs bits/weight from tests/bench/alloc_bench.sh
or tests/bench/alloc_stages_bench.sh, one series per method (uniform / Hessian allocation, plain / GPTQ).
Plain SVG, no plotting library."""
import math
import sys
from html import escape

rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])][1:]
title = sys.argv[3] if len(sys.argv) > 3 else "stories260K: KL to fp32 vs bits/weight (whole model, held-out stories, ctx 256)"
series = {}
for r in rows:
    series.setdefault(r[0], []).append((float(r[3]), float(r[4]), r[1]))
W, H, L, B, T, R = 720, 460, 70, 50, 30, 190
xs = [p[0] for s in series.values() for p in s]
ys = [p[1] for s in series.values() for p in s if p[1] > 0]
x0, x1 = math.floor(min(xs)), math.ceil(max(xs))
y0, y1 = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
fx = lambda x: L + (x - x0) / (x1 - x0) * (W - L - R)
fy = lambda y: T + (y1 - math.log10(max(y, 1e-9))) / (y1 - y0) * (H - T - B)
colors = {"uniform-plain": "#888888", "uniform-gptq": "#1f77b4", "alloc-plain": "#ff7f0e", "alloc-gptq": "#d62728"}
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{L}" y="18" font-size="14">{escape(title)}</text>']
for x in range(x0, x1 + 1):
    out.append(f'<line x1="{fx(x):.1f}" y1="{T}" x2="{fx(x):.1f}" y2="{H-B}" stroke="#eee"/>')
    out.append(f'<text x="{fx(x):.1f}" y="{H-B+16}" text-anchor="middle">{x}</text>')
for e in range(y0, y1 + 1):
    out.append(f'<line x1="{L}" y1="{fy(10**e):.1f}" x2="{W-R}" y2="{fy(10**e):.1f}" stroke="#eee"/>')
    out.append(f'<text x="{L-6}" y="{fy(10**e)+4:.1f}" text-anchor="end">1e{e}</text>')
out.append(f'<text x="{(L+W-R)/2}" y="{H-12}" text-anchor="middle">bits per weight (every byte counted)</text>')
out.append(f'<text x="16" y="{(T+H-B)/2}" transform="rotate(-90 16 {(T+H-B)/2})" text-anchor="middle">mean KL (nats)</text>')
for i, (name, pts) in enumerate(sorted(series.items())):
    pts = sorted(pts)
    c = colors.get(name, "black")
    d = " ".join(f"{'M' if k == 0 else 'L'}{fx(x):.1f},{fy(y):.1f}" for k, (x, y, _) in enumerate(pts))
    out.append(f'<path d="{d}" fill="none" stroke="{c}" stroke-width="2"/>')
    for x, y, lab in pts:
        out.append(f'<circle cx="{fx(x):.1f}" cy="{fy(y):.1f}" r="3" fill="{c}"><title>{escape(f"{name} {lab}: {x} bpw, KL {y}")}</title></circle>')
    out.append(f'<line x1="{W-R+15}" y1="{T+20+i*20}" x2="{W-R+40}" y2="{T+20+i*20}" stroke="{c}" stroke-width="2"/>')
    out.append(f'<text x="{W-R+46}" y="{T+24+i*20}">{name}</text>')
out.append("</svg>")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
