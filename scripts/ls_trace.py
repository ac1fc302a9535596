#!/usr/bin/env python3
"""Reads the lock-step decode form's stamps (cmake -DMLAKV_DECODE_TRACE=ON, then
`MLAKV_DECODE_FORM=ls MLAKV_TRACE_DIR=dir mlakv bench decode --only ...`) and prints, per traced
CTA, each warpgroup's hand-offs within a pair of tiles as the median over the pairs, in clocks
from warpgroup 0's start of the pair, and the median pair.

  scripts/ls_trace.py FILE.bin [...]

Where src/cuda/mla_decode_sm90_ls.cuh stamps (role, event): warpgroup 0 on role 1 and on role 0
events 0-3, warpgroup 1 on role 2 and on role 0 events 4-7 (the file layout is decode_trace.py's).
"""
import statistics
import sys

from decode_trace import CTAS, TILES, load

# (role, event) and name, per warpgroup, in program order.
EVENTS = {
    0: [((1, 0), "top"), ((1, 7), "lookups done"), ((1, 1), "f0 arrived"), ((1, 2), "f1 seen"),
        ((0, 2), "P0V0L waited"), ((1, 5), "P1V1L issued"), ((1, 3), "P0 stored"), ((1, 4), "K0 0-3 refilled"),
        ((0, 3), "P1V1L waited"), ((1, 6), "K1 0-3 refilled"), ((0, 0), "QK part 1 issued"), ((0, 1), "QK part 2 issued")],
    1: [((2, 0), "top"), ((2, 7), "lookups done"), ((2, 1), "f0 seen"), ((2, 2), "f1 arrived"),
        ((0, 6), "P1V1R waited"), ((2, 3), "K1 4-8 refilled"), ((2, 4), "P0 seen"), ((2, 5), "P0V0R issued"),
        ((0, 7), "P0V0R waited"), ((2, 6), "K0 4-8 refilled"), ((0, 4), "QK part 1 issued"), ((0, 5), "QK part 2 issued")],
}


def report(path):
    t = load(path)
    print("==", path)
    for c in range(CTAS):
        starts = {k: t(c, 1, k, 0) for k in range(1, TILES - 1)}
        for wg, events in EVENTS.items():
            rows = []
            for k, t0 in starts.items():
                ev = [t(c, r, k, e) for (r, e), _ in events]
                if t0 and all(ev):
                    rows.append([x - t0 for x in ev])
            if rows:
                med = [statistics.median(col) for col in zip(*rows)]
                print(f"   cta {c} wg{wg} (n={len(rows)}): " + ", ".join(f"{n} {m:.0f}" for (_, n), m in zip(events, med)))
        pairs = [starts[k + 1] - starts[k] for k in range(1, TILES - 2) if starts[k] and starts[k + 1]]
        if pairs:
            print(f"   cta {c}: a pair every {statistics.median(pairs):.0f} clocks (n={len(pairs)})")


if __name__ == "__main__":
    for p in sys.argv[1:]:
        report(p)
