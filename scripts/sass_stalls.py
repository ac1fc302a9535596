#!/usr/bin/env python3
"""Where a kernel's warps wait, per SASS instruction and per opcode, from an ncu source page.

    ncu --section SourceCounters --section WarpStateStats -k K -o rep ... ; \
    ncu --import rep.ncu-rep --page source --csv --print-source sass > sass.csv
    scripts/sass_stalls.py sass.csv[.gz] [--top 40]

Reads the CSV's sampling columns by name (any column whose header mentions "Sampl" or
"stall"), so it survives ncu's column order; prints the instructions holding the most samples
with their address and text, then the samples summed per opcode.
"""
import argparse
import collections
import csv
import gzip
import io
import sys


def open_text(path):
    raw = open(path, "rb").read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return io.StringIO(raw.decode("utf-8", "replace"))


def number(s):
    try:
        return float(s.replace(",", ""))
    except (ValueError, AttributeError):
        return 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv")
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args()
    rows = list(csv.reader(open_text(args.csv)))
    head_i = next((i for i, r in enumerate(rows) if any(c.strip() == "Source" for c in r)), None)
    if head_i is None:
        sys.exit("sass_stalls: no header row with a 'Source' column")
    head = [c.strip() for c in rows[head_i]]
    src = head.index("Source")
    addr = head.index("Address") if "Address" in head else None
    samp = [i for i, c in enumerate(head) if "sampl" in c.lower() or "stall" in c.lower()]
    if not samp:
        sys.exit("sass_stalls: no sampling columns in " + ", ".join(head))
    total_col = next((i for i in samp if "all samples" in head[i].lower()), samp[0])
    body = [r for r in rows[head_i + 1:] if len(r) == len(head)]
    total = sum(number(r[total_col]) for r in body) or 1.0
    print(f"{len(body)} instructions, {total:.0f} samples in '{head[total_col]}'")
    print("sampling columns: " + "; ".join(head[i] for i in samp))
    print()
    for r in sorted(body, key=lambda r: -number(r[total_col]))[: args.top]:
        n = number(r[total_col])
        at = r[addr] if addr is not None else ""
        print(f"{100 * n / total:6.2f} %  {at:>8}  {r[src].strip()[:90]}")
    print()
    per_op = collections.Counter()
    for r in body:
        op = r[src].strip().split(" ")[0] if r[src].strip() else "?"
        if op.startswith("@"):  # predicate guard: the opcode follows it
            parts = r[src].strip().split()
            op = parts[1] if len(parts) > 1 else op
        per_op[op.split(".")[0]] += number(r[total_col])
    for op, n in per_op.most_common(25):
        print(f"{100 * n / total:6.2f} %  {op}")


if __name__ == "__main__":
    main()
