#!/usr/bin/python3
"""Quantiles of a Prometheus histogram between two scrapes (after - before), as JSON.
   histogram_delta.py NAME BEFORE.txt AFTER.txt"""
import json
import re
import sys


def buckets(path, name):
    out, count, total = {}, 0.0, 0.0
    for line in open(path):
        if line.startswith(name + "_bucket"):
            le = re.search(r'le="([^"]+)"', line).group(1)
            out[float("inf") if le == "+Inf" else float(le)] = float(line.split()[-1])
        elif line.startswith(name + "_count"):
            count = float(line.split()[-1])
        elif line.startswith(name + "_sum"):
            total = float(line.split()[-1])
    return out, count, total


name, before, after = sys.argv[1:4]
b0, n0, s0 = buckets(before, name)
b1, n1, s1 = buckets(after, name)
edges = sorted(b1)
cum = [b1[e] - b0.get(e, 0.0) for e in edges]
n = n1 - n0


def quantile(q):
    # Linear interpolation inside the bucket, as Prometheus' histogram_quantile does.
    if n <= 0:
        return None
    rank = q * n
    prev_edge, prev_cum = 0.0, 0.0
    for e, c in zip(edges, cum):
        if c >= rank:
            if e == float("inf"):
                return prev_edge
            return prev_edge + (e - prev_edge) * ((rank - prev_cum) / max(c - prev_cum, 1e-12))
        prev_edge, prev_cum = e, c
    return edges[-2] if len(edges) > 1 else None


res = {"metric": name, "observations": n,
       "mean_ms": (s1 - s0) / n * 1e3 if n else None}
for q in (0.5, 0.9, 0.99):
    v = quantile(q)
    res[f"p{int(q * 100)}_ms"] = None if v is None else round(v * 1e3, 4)
res["buckets_ms"] = {("+Inf" if e == float("inf") else round(e * 1e3, 4)): c
                     for e, c in zip(edges, cum)}
print(json.dumps(res, indent=2))
