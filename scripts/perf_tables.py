#!/usr/bin/env python3
"""Markdown tables for docs/PERF.md from the JSON that `mlakv bench` writes.

usage: scripts/perf_tables.py cache docs/perf/cache.json
       scripts/perf_tables.py dcp docs/perf/dcp.json
       scripts/perf_tables.py decode docs/perf/decode.json
       scripts/perf_tables.py ab ab-base-1.json ab-sub-1.json ab-base-2.json ...  (scripts/ab-decode.sh)
"""
import json
import os
import statistics
import sys
from collections import OrderedDict


def header(d):
    return f"{d['device']}, {d['date']}, copy ceiling {d['copy_gbps']:.0f} GB/s"


def cache(d):
    shapes = list(OrderedDict.fromkeys(r["shape"] for r in d["results"]))
    rows = OrderedDict()
    for r in d["results"]:
        rows.setdefault((r["op"], r["format"]), {})[r["shape"]] = r
    out = [f"_{header(d)}; % of copy (µs)_", "", "| op | format | " + " | ".join(shapes) + " |",
           "|---|---|" + "---|" * len(shapes)]
    for (op, fmt), by in rows.items():
        cells = [f"{by[s]['pct_of_copy']:.1f} % ({by[s]['us']:.1f})" if s in by else "" for s in shapes]
        out.append(f"| {op} | {fmt} | " + " | ".join(cells) + " |")
    return out


def dcp(d):
    step = {}
    for r in d["results"]:
        if r["op"] == "dcp_decode_step":
            step[(r["format"], int(r["batch"]), int(r["context"]), int(r["world"]))] = r
    out = [f"_{header(d)}; one layer, 16 heads per rank, block size 64_", "",
           "| format | B | context | W=1 µs | W=2 µs | W=2 / W=1 | W=2 collectives µs |", "|---|---|---|---|---|---|---|"]
    for (fmt, b, ctx, w), r in step.items():
        if w != 1 or (fmt, b, ctx, 2) not in step:
            continue
        r2 = step[(fmt, b, ctx, 2)]
        out.append(f"| {fmt} | {b} | {ctx // 1024}K | {r['us']:.1f} | {r2['us']:.1f} | {r2['us'] / r['us']:.2f} | "
                   f"{r2.get('comm_us', 0):.1f} |")
    out += ["", "| context gather, W=2, 32K | µs | all-gather µs | wire MB | vs bf16 on the wire |", "|---|---|---|---|---|"]
    for r in d["results"]:
        if r["op"] == "dcp_gather_context":
            out.append(f"| {r['format']} | {r['us']:.1f} | {r['comm_us']:.1f} | {r['wire_bytes'] / 1e6:.1f} | "
                       f"{r.get('speedup_vs_bf16_wire', 1.0):.2f}× |")
    out += ["", "| KV bytes per GPU, one 128K request | W=1 MB | W=2 MB |", "|---|---|---|"]
    kv = {}
    for r in d["results"]:
        if r["op"] == "dcp_kv_bytes":
            kv.setdefault(r["format"], {})[int(r["world"])] = r["bytes_per_gpu"] / 1e6
    for fmt, by in kv.items():
        out.append(f"| {fmt} | {by.get(1, 0):.1f} | {by.get(2, 0):.1f} |")
    return out


def decode(d):
    out = [f"_{header(d)}_", "", "| format | B | H | context | s_q | µs | GB/s | % of copy | TFLOP/s |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in d["results"]:
        out.append(f"| {r['format']} | {int(r['batch'])} | {int(r['heads'])} | {int(r['context'])} | {int(r['s_q'])} | "
                   f"{r['us']:.1f} | {r['gbps']:.0f} | {r['pct_of_copy']:.1f} | {r['tflops']:.1f} |")
    return out


def ab(paths):
    """Per decode case, each build's median µs over its rounds (files ab-<build>-<round>.json)."""
    us = OrderedDict()
    builds = []
    for p in paths:
        build = os.path.basename(p)[3:].rsplit("-", 1)[0]
        if build not in builds:
            builds.append(build)
        for r in json.load(open(p))["results"]:
            us.setdefault(f"{r['format']} {r['shape']}", {}).setdefault(build, []).append(r["us"])
    out = ["| case | " + " | ".join(f"{b} µs" for b in builds) + " | last / first |", "|---|" + "---|" * (len(builds) + 1)]
    for case, by in us.items():
        med = [statistics.median(by[b]) if b in by else float("nan") for b in builds]
        out.append(f"| {case} | " + " | ".join(f"{m:.1f}" for m in med) + f" | {med[-1] / med[0]:.3f} |")
    return out


if __name__ == "__main__":
    kind, path = sys.argv[1], sys.argv[2]
    if kind == "ab":
        print("\n".join(ab(sys.argv[2:])))
        sys.exit(0)
    print("\n".join({"cache": cache, "dcp": dcp, "decode": decode}[kind](json.load(open(path)))))
