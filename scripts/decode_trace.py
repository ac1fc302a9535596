#!/usr/bin/env python3
"""Reads the stamps of a measurement build (cmake -DMLAKV_DECODE_TRACE=ON; `MLAKV_TRACE_DIR=dir
mlakv bench decode --only ...` writes dir/trace-<format>-<shape>.bin) and prints where a tile's
time goes per role, in clocks, and each traced CTA's start, schedule and end in ns.

  scripts/decode_trace.py FILE.bin [...]

Layout: uint64 [cta 8][role 3: producer, consumer wg 0, wg 1][k 64][event 8]; k = 63 holds the
CTA-wide %globaltimer stamps (start, scheduled, end, each role ready), clock64 at the start, and
the SM id; then four step-wide %globaltimer words (the attention grid's last CTA end, the combine
grid's CTA 0 start and its return from griddepcontrol.wait, the combine's last CTA end), and
combine CTAs 0-7's eight words each (start, schedule, past the wait, the first item's LSE, its
stores, end, the second item's LSE and stores).
Events per k: producer 2 iteration start, 0 stage empty, 3 (FP8) first raw unit landed, 4 (FP8)
first unit widened, 6 / 7 (FP8) the next unit's lookup done / its copies issued, 5 (FP8) the
issue returned, 1 stage published; bf16 (stamped on branch tma4d only): 6 the tile's flags stored, 7 (rows as M, TMA tiles) its
copies issued; consumers 0 stage full (RM: own tile begins), 1 (RM) stage
first / 5 publication first, 1 Q·Kᵀ done,
2 row maxima exchanged (RM: before the softmax), 3 P written (RM: published), 4 stage released,
5 (fp8 at 16 rows, the register-operand form) Q·Kᵀ's last block issued, 7 (the same) P·V's
last k-step issued,
6 (fp8_ds_mla, 16 rows) the owner's half of the tile widened, 7 (RM) the tile's bytes seen
landed (before its Q·Kᵀ).
"""
import statistics
import struct
import sys

CTAS, ROLES, TILES, EVENTS = 8, 3, 64, 8
ROLE = ["producer", "consumer 0", "consumer 1"]
# The producer's spans per tile: (from event, to event, name).
PRODUCER_SPANS = [
    (2, 0, "iteration start -> stage empty"),
    (0, 3, "stage empty -> first raw unit landed"),
    (3, 4, "first raw unit landed -> widened"),
    (4, 5, "first unit widened -> next copy issued"),
    (4, 6, "first unit widened -> next unit looked up"),
    (6, 7, "next unit looked up -> its copies issued (bf16: flags stored -> TMA copies issued)"),
    (0, 1, "stage empty -> stage published"),
    (0, 6, "stage empty -> 6 (bf16: flags stored; FP8: next unit looked up)"),
    (7, 1, "TMA copies issued -> stage published (bf16, rows as M)"),
]


def words(path):
    raw = open(path, "rb").read()
    return struct.unpack("<%dQ" % (len(raw) // 8), raw)


def load(path):
    v = words(path)
    return lambda c, r, k, e: v[((c * ROLES + r) * TILES + k) * EVENTS + e]


STEP_NAMES = ["attention grid's last CTA end", "combine CTA 0 start", "combine CTA 0 past its wait",
              "combine's last CTA end", "in-grid merge: last partial stored", "last arrival counted",
              "last merger past its wait", "last merger done"]


def step_count(path):
    """Step words in the file: 4 (attention end and the combine's three), 8 (the in-grid merge's
    four after them: builds from session 40 on), 0 in files from before either."""
    extra = len(words(path)) - CTAS * ROLES * TILES * EVENTS
    return 8 if extra in (8, 72) else 4 if extra in (4, 68) else 0


def step_words(path):
    """The step-wide %globaltimer words after the per-CTA ones, or None in files from before them."""
    v, n, k = words(path), CTAS * ROLES * TILES * EVENTS, step_count(path)
    return v[n:n + k] if k else None


def combine_ctas(path):
    """Combine CTAs 0-7's %globaltimer stamps (start, schedule, past the wait, first item's LSE,
    its stores, end, the second item's LSE and stores), or None in files from before them."""
    v, n = words(path), CTAS * ROLES * TILES * EVENTS + step_count(path)
    return [v[n + 8 * c:n + 8 * c + 8] for c in range(8)] if len(v) >= n + 64 else None


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def report(path):
    t = load(path)
    print("==", path)
    wide = TILES - 1
    starts = [t(c, 0, wide, 0) for c in range(CTAS) if t(c, 0, wide, 0)]
    if not starts:
        print("   no stamps")
        return
    t0 = min(starts)
    print("   CTA  SM   start  sched  ready(prod/wg0/wg1)  end(prod)  end(wg0)  end(wg1)   [ns from the first CTA's start]")
    for c in range(CTAS):
        s = t(c, 0, wide, 0)
        if not s:
            continue
        f = lambda r, e: (t(c, r, wide, e) - t0) if t(c, r, wide, e) else -1
        print("   %3d %3d %7d %6d %6d/%6d/%6d %10d %9d %9d" % (c, t(c, 0, wide, 4), s - t0, f(0, 1), f(0, 5), f(1, 5),
                                                          f(2, 5), f(0, 2), f(1, 2), f(2, 2)))
    sw = step_words(path)
    if sw and any(sw):
        print("   step: " + ", ".join("%s %d" % (n, x - t0) for n, x in zip(STEP_NAMES, sw) if x) + "   [ns from the first traced CTA's start]")
    cc = combine_ctas(path)
    if cc and any(any(x) for x in cc):
        print("   combine CTA: start, scheduled, past wait, LSE, stored, end, 2nd item LSE, stored   [ns from the first traced CTA's start]")
        for c, w in enumerate(cc):
            if w[0]:
                print("   %3d " % c + " ".join("%7d" % (x - t0 if x else -1) for x in w))
    # Per-tile phases in clocks (steady state: k >= 2), over the traced CTAs.
    ph = {}

    def add(name, x):
        ph.setdefault(name, []).append(x)

    for c in range(CTAS):
        for k in range(2, wide):
            e = lambda r, ev: t(c, r, k, ev)
            for a, z, name in PRODUCER_SPANS:
                if e(0, a) and e(0, z):
                    add("producer: " + name, e(0, z) - e(0, a))
            for r in (1, 2):
                if not e(r, 0):
                    continue
                if e(r, 1) and e(r, 1) > e(r, 0):
                    add("%s: start -> 1" % ROLE[r], e(r, 1) - e(r, 0))
                if e(r, 5):
                    add("%s: start -> publication first" % ROLE[r], e(r, 5) - e(r, 0))
                if e(r, 7) and e(0, 1):
                    add("%s: producer published -> bytes landed (RM)" % ROLE[r], e(r, 7) - e(0, 1))
                # (RS, fp8 at 16 rows: 5 Q·Kᵀ's last block issued, 7 P·V's last k-step issued)
                for a, b in ((1, 2), (2, 3), (3, 4), (0, 4), (7, 2), (5, 1), (3, 7), (7, 4)):
                    if e(r, a) and e(r, b) and e(r, b) >= e(r, a):
                        add("%s: %d -> %d" % (ROLE[r], a, b), e(r, b) - e(r, a))
                # own previous release to this tile's start (waiting for the stage or the other)
                for kp in range(k - 1, 0, -1):
                    if t(c, r, kp, 4):
                        add("%s: previous release -> start" % ROLE[r], e(r, 0) - t(c, r, kp, 4))
                        break
                # the producer's publication of this tile's stage to the consumer seeing it
                if e(0, 1):
                    add("%s: producer published -> start" % ROLE[r], e(r, 0) - e(0, 1))
    # A warpgroup's own tiles k - 2 and k: the CTA's time per two tiles.
    for c in range(CTAS):
        for k in range(4, wide):
            for r in (1, 2):
                if t(c, r, k, 0) and t(c, r, k - 2, 0) and t(c, r, k, 0) > t(c, r, k - 2, 0):
                    add("%s: own tile k - 2 start -> own tile k start" % ROLE[r], t(c, r, k, 0) - t(c, r, k - 2, 0))
    # The SM clock while the CTA ran: its last clock64 stamp against its roles' end (%globaltimer).
    for c in range(CTAS):
        c_start, g_start = t(c, 0, wide, 3), t(c, 0, wide, 0)
        last = max([t(c, r, k, e) for r in range(ROLES) for k in range(wide) for e in range(EVENTS)] + [0])
        g_end = max(t(c, r, wide, 2) for r in range(ROLES))
        if c_start and g_start and last > c_start and g_end > g_start:
            add("SM clock (MHz, at least; CTA stamps vs its end)", 1000.0 * (last - c_start) / (g_end - g_start))
    for name in sorted(ph):
        xs = ph[name]
        print("   %-52s median %7.0f clk  p10 %7.0f  p90 %7.0f  (n=%d)" % (
            name, med(xs), sorted(xs)[len(xs) // 10], sorted(xs)[(9 * len(xs)) // 10], len(xs)))
    # CTA 0's first tiles, relative to its start clock.
    c0 = t(0, 0, wide, 3)
    print("   CTA 0, clocks from its start (event: value):")
    for k in range(0, 8):
        cells = []
        for r in range(ROLES):
            evs = ["%d:%d" % (ev, t(0, r, k, ev) - c0) for ev in range(EVENTS) if t(0, r, k, ev)]
            cells.append("%s[%s]" % (ROLE[r][0] + ROLE[r][-1], " ".join(evs)))
        print("   k=%-2d %s" % (k, "  ".join(cells)))


if __name__ == "__main__":
    for p in sys.argv[1:]:
        try:
            report(p)
        except OSError as e:
            print("==", p, "unreadable:", e)
