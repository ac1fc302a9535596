#!/usr/bin/env python3
"""Sums an ncu source page (`ncu -i R.ncu-rep --page source --csv --print-source sass > F.csv`) by
stall reason and lists the SASS lines with the most warp samples and their two main stalls.

  scripts/ncu_sass_top.py F.csv [lines]
"""
import csv, sys, collections
f = sys.argv[1]
rows = list(csv.reader(open(f)))
hdr = rows[1]; data = rows[2:]
ix = {h: i for i, h in enumerate(hdr)}
S = ix["Warp Stall Sampling (All Samples)"]
stalls = [h for h in hdr if h.startswith("stall_") and "Not Issued" not in h]
tot = collections.Counter()
allsum = 0
for r in data:
    try: n = int(r[S])
    except: continue
    allsum += n
    for h in stalls:
        try: tot[h] += int(r[ix[h]])
        except: pass
print("total samples", allsum, "instructions", len(data))
for h, v in tot.most_common(12): print("  %-24s %6.1f%%" % (h, 100 * v / allsum))
# top lines
top = sorted(data, key=lambda r: -int(r[S]) if r[S].isdigit() else 0)[:int(sys.argv[2]) if len(sys.argv) > 2 else 40]
for r in top:
    n = int(r[S]); best = sorted(((int(r[ix[h]]) if r[ix[h]].isdigit() else 0, h) for h in stalls), reverse=True)[:2]
    print("%6d %5.1f%% %-6s %s  %s" % (n, 100 * n / allsum, r[0][-5:], r[1].strip()[:60], " ".join("%s:%d" % (h[6:], v) for v, h in best)))
