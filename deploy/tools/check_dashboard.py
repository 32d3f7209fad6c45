#!/usr/bin/python3
"""Checks that a live Prometheus has data for every panel of a Grafana dashboard.

    check_dashboard.py PROMETHEUS_URL DASHBOARD.json [WAIT_SECONDS]

The metric names are read from the panels' PromQL (so a renamed or removed metric fails):
each must have at least one series, and each panel query, with Grafana's variables
replaced ($__rate_interval -> 1m, $__range -> 5m, $__interval -> 15s), must return at
least one finite value. Retries for up to WAIT_SECONDS (default 30) while scrapes catch up.
"""
import json
import math
import re
import sys
import time
import urllib.parse
import urllib.request

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or",
            "unless", "inf", "nan", "le"}
VARS = {"$__rate_interval": "1m", "$__range": "5m", "$__interval": "15s"}


def metric_names(expr):
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    names = []
    for m in re.finditer(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", e):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in KEYWORDS:
            continue
        names.append(word)
    return names


def query(base, q):
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{q}: {body}")
    return body["data"]["result"]


def finite(result):
    out = []
    for s in result:
        v = float(s["value"][1])
        if not math.isnan(v) and not math.isinf(v):
            out.append(v)
    return out


def panels(d):
    for p in d.get("panels", []):
        yield p
        yield from panels(p)


def main():
    base, path = sys.argv[1].rstrip("/"), sys.argv[2]
    wait = float(sys.argv[3]) if len(sys.argv) > 3 else 30
    dash = json.load(open(path))
    checks = []   # (panel title, kind, query)
    for p in panels(dash):
        for t in p.get("targets", []):
            expr = t.get("expr")
            if not expr:
                continue
            for name in metric_names(expr):
                checks.append((p["title"], "metric", name))
            q = expr
            for k, v in VARS.items():
                q = q.replace(k, v)
            checks.append((p["title"], "query", q))
    if not checks:
        sys.exit(f"{path}: no panel queries found")
    pending = list(dict.fromkeys(checks))
    deadline = time.time() + wait
    status = {}
    while True:
        still = []
        for title, kind, q in pending:
            if kind == "metric":
                res = query(base, f'count({{__name__="{q}"}})')
                ok = bool(res) and float(res[0]["value"][1]) > 0
                status[(title, kind, q)] = f"{int(float(res[0]['value'][1])) if res else 0} series"
            else:
                vals = finite(query(base, q))
                ok = bool(vals)
                status[(title, kind, q)] = f"{len(vals)} finite values"
            if not ok:
                still.append((title, kind, q))
        pending = still
        if not pending or time.time() > deadline:
            break
        time.sleep(2)
    failed = set(pending)
    metrics = sorted({q for _, k, q in status if k == "metric"})
    for key, st in status.items():
        title, kind, q = key
        mark = "FAIL" if key in failed else "ok  "
        if kind == "metric" or key in failed:
            print(f"{mark} [{title}] {kind} {q[:120]}: {st}")
    n_panels = len({t for t, _, _ in status})
    n_queries = sum(1 for k in status if k[1] == "query")
    print(f"dashboard: {n_panels} panels, {len(metrics)} metrics, {n_queries} queries, {len(failed)} without data")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
