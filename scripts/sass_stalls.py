#!/usr/bin/env python3
"""Where a kernel's warps wait, per SASS instruction and per opcode, from an ncu source page.

    ncu --section SourceCounters --section WarpStateStats -k K -o rep ... ; \
    ncu --import rep.ncu-rep --page source --csv --print-source sass > sass.csv
    scripts/sass_stalls.py sass.csv[.gz] [--top 40] [--per WARP_TILES]

Reads the CSV's sampling columns by name (any column whose header mentions "Sampl" or
"stall"), so it survives ncu's column order; prints the instructions holding the most samples
with their address and text, then the samples summed per opcode; with --per, the executed
instructions per whole opcode divided by the warp-tiles (an instruction budget per tile).
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


def opcode(text):
    """The whole opcode of a SASS line (F2FP.F16.E4M3.UNPACK_B), after any predicate guard."""
    parts = text.strip().split()
    if parts and parts[0].startswith("@"):
        parts = parts[1:]
    return parts[0] if parts else "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--per", type=float, default=0.0,
                    help="also list executed warp instructions per opcode divided by this (e.g. the "
                         "warp-tiles the launch ran: tiles x consumer warps per tile), from the "
                         "'Instructions Executed' column")
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
        per_op[opcode(r[src]).split(".")[0]] += number(r[total_col])
    for op, n in per_op.most_common(25):
        print(f"{100 * n / total:6.2f} %  {op}")
    executed = next((i for i, c in enumerate(head) if c.lower() == "instructions executed"), None)
    if args.per > 0 and executed is not None:
        # Whole opcodes (F2FP.F16.E4M3.UNPACK_B and F2FP.BF16.F32.PACK_AB are different work).
        per_full = collections.Counter()
        for r in body:
            per_full[opcode(r[src])] += number(r[executed])
        all_ex = sum(per_full.values())
        print()
        print(f"executed warp instructions / {args.per:g}: {all_ex / args.per:.1f}")
        for op, n in per_full.most_common(args.top):
            print(f"{n / args.per:10.1f}  {op}")


if __name__ == "__main__":
    main()
