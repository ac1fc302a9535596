#!/usr/bin/env python3
"""Randomized model checker for the barrier protocol of the decode kernel's CTA pairs (branch
`cluster`: src/cuda/mla_decode_sm90.cuh, the rows-as-M form with DecodeArgs::cluster = 2).

Two CTAs walk the same tiles. Per CTA: a producer (one model thread for the 128 real ones: their
arrivals are counted together) and 8 consumer warps; per stage (2) a "full" and an "empty"
mbarrier, modelled exactly: phase number, pending arrivals, transaction count (which may go
negative: complete-tx before expect-tx), a phase completing when both reach zero. Per tile:
  * the producer waits its own empty barrier (parity ((k >> 1) & 1) ^ 1: 16 arrivals, both CTAs'
    warps), then by the tile's kind:
      tma   (bf16, whole tile): expect-tx of the whole stage on its own full barrier with one
            arrival, the other arrivals, and its half of the boxes multicast: two delayed
            deliveries, one into each CTA's stage, each completing its bytes on that CTA's full
            barrier at whatever phase it is in when it lands;
      cpa   (bf16, a request's partial last tile): its own copies of the whole tile, landing later
            (the cp.async arrivals come with the landing), no cross-CTA traffic;
      fp8   (FP8 pairs): its half widened into its own stage at once, the same half by st.async
            into the peer's (a delayed delivery completing bytes on the peer's full barrier),
            expect-tx of the peer's half on its own barrier with its arrivals;
  * each consumer warp waits its full barrier (parity (k >> 1) & 1), reads the whole stage until
    its release (conservative: the kernel's reads lie inside that window), then arrives at its
    own empty barrier and, delayed, at the peer's;
  * at the end every role arrives at the cluster barrier; it completes once all 18 did and every
    remote operation they issued has landed (barrier.cluster.arrive.release); a CTA exits then.

Checks: deadlock; a consumer reading a stage half that does not hold its tile; a delivery into a
stage half that a warp of that CTA is still reading, or that holds a tile not yet read by all 8
warps; a barrier phase completing with a transaction count or arrivals meant for another phase
(caught as the checks above or as a stuck barrier); any delivery or arrival reaching a CTA after
it exited; at the end every barrier at its expected phase with nothing pending.

  python3 scripts/pair_protocol_model.py                 the protocol, many random runs
  python3 scripts/pair_protocol_model.py --mutate all    each broken variant must be caught

Not modelled: the memory model beyond "a passed wait sees what was delivered before the phase
completed", the seesaw between the two consumer warpgroups (main's, measured on the device), the
numerics, block-table lookups.
"""
import argparse
import os
import random
import sys

# Kernel lines the model mirrors (tripwire: the run fails if one is gone from the source).
MIRRORS = [
    "mbar_init(empty_bar(st), (ALT ? 4 : 8) * ncl);",
    "if (ncl > 1) mbar_arrive_remote(empty_bar(st), crank ^ 1);",
    "if (ncl > 1) mbar_wait<true>(empty_bar(st), ((k >> 1) & 1) ^ 1);",
    "mbar_arrive_expect_tx(full_bar(st), kStageBytes);",
    "if (pt == 0) mbar_arrive_expect_tx(full_bar(st), kPeerBytes);",
    "st_async16(rem + cb * 8192 + sw0, c0, rem_bar);",
    "if (ncl > 1) cluster_sync();  // no CTA's copies or arrivals reach a barrier before its init",
]

STAGE = 73728
HALF = STAGE // 2
WARPS = 8

MUTATIONS = {
    "empty_count_local": "empty barriers count only the CTA's own 8 warps (no remote arrivals expected)",
    "no_remote_release": "consumer warps arrive only at their own empty barrier (count still 16)",
    "producer_no_wait": "the producer skips its empty wait",
    "empty_parity": "the producer waits its empty barrier with parity (k >> 1) & 1",
    "no_expect_tx": "the tma producer arrives without expect-tx",
    "fp8_expect_whole": "the fp8 producer expects the whole stage from its peer",
    "no_cluster_sync": "a CTA exits once its own roles are done",
}


class Violation(Exception):
    pass


class Barrier:
    def __init__(self, name, count):
        self.name, self.count, self.pending, self.tx, self.phase = name, count, count, 0, 0

    def passes(self, parity):
        return (self.phase & 1) != parity

    def _maybe_complete(self):
        if self.pending == 0 and self.tx == 0:
            self.phase += 1
            self.pending = self.count
        elif self.pending < 0:
            raise Violation(f"{self.name}: more arrivals than its count in phase {self.phase}")

    def arrive(self, n=1, tx=0):
        self.tx += tx
        self.pending -= n
        self._maybe_complete()

    def complete_tx(self, nbytes):
        self.tx -= nbytes
        if self.tx < -(1 << 20):
            raise Violation(f"{self.name}: transaction count out of range")
        if self.pending == 0:
            self._maybe_complete()


class Sim:
    def __init__(self, tiles, rng, mut):
        self.tiles, self.rng, self.mut = tiles, rng, mut
        ec = WARPS if mut == "empty_count_local" else 2 * WARPS
        self.full = [[Barrier(f"full[{c}][{s}]", 1) for s in range(2)] for c in range(2)]
        self.empty = [[Barrier(f"empty[{c}][{s}]", ec) for s in range(2)] for c in range(2)]
        self.stage = [[[None, None] for _ in range(2)] for _ in range(2)]  # tile tag per half
        self.readers = [[set() for _ in range(2)] for _ in range(2)]       # warps reading [c][st]
        self.reads = [[{} for _ in range(2)] for _ in range(2)]            # tile -> warps that read it
        self.events = []  # (target cta, callable, issuer)
        self.exited = [False, False]
        self.arrived = set()  # roles at the final cluster barrier
        self.roles = []
        for c in range(2):
            self.roles.append(self.producer(c))
            for w in range(WARPS):
                self.roles.append(self.consumer(c, w))

    def deliver_half(self, c, st, half, k):
        def ev():
            if self.readers[c][st]:
                raise Violation(f"tile {k} lands in CTA {c} stage {st} while warps {sorted(self.readers[c][st])} read it")
            old = self.stage[c][st][half]
            if old is not None and len(self.reads[c][st].get(old, ())) < WARPS:
                raise Violation(f"tile {k} overwrites tile {old} in CTA {c} stage {st} before all warps read it")
            self.stage[c][st][half] = k
        return ev

    def producer(self, c):
        peer = c ^ 1
        for k, kind in enumerate(self.tiles):
            st, par = k & 1, ((k >> 1) & 1) ^ 1
            if self.mut == "empty_parity":
                par ^= 1
            if self.mut != "producer_no_wait":
                while not self.empty[c][st].passes(par):
                    yield
            full = self.full[c][st]
            if kind == "tma":
                for half, tgt in ((c, c), (c, peer)):  # this CTA's half of the boxes, into both
                    ev = self.deliver_half(tgt, st, half, k)
                    bar = self.full[tgt][st]
                    self.events.append((tgt, lambda ev=ev, bar=bar: (ev(), bar.complete_tx(HALF)), c))
                full.arrive(1, 0 if self.mut == "no_expect_tx" else STAGE)
            elif kind == "cpa":
                def land(c=c, st=st, k=k):
                    self.deliver_half(c, st, 0, k)()
                    self.deliver_half(c, st, 1, k)()
                    self.full[c][st].arrive(1)
                self.events.append((c, land, c))
            else:  # fp8: own half now, the same half to the peer by st.async
                self.deliver_half(c, st, c, k)()
                ev = self.deliver_half(peer, st, c, k)
                bar = self.full[peer][st]
                self.events.append((peer, lambda ev=ev, bar=bar: (ev(), bar.complete_tx(HALF)), c))
                full.arrive(1, STAGE if self.mut == "fp8_expect_whole" else HALF)
            yield
        yield from self.finish(c)

    def consumer(self, c, w):
        peer = c ^ 1
        for k in range(len(self.tiles)):
            st, par = k & 1, (k >> 1) & 1
            while not self.full[c][st].passes(par):
                yield
            if self.stage[c][st] != [k, k]:
                raise Violation(f"CTA {c} warp {w} reads tile {k} from stage {st} holding {self.stage[c][st]}")
            self.readers[c][st].add(w)
            self.reads[c][st].setdefault(k, set()).add(w)
            yield  # reading
            if self.stage[c][st] != [k, k]:
                raise Violation(f"CTA {c} stage {st} changed under warp {w} reading tile {k}")
            self.readers[c][st].discard(w)
            self.empty[c][st].arrive()
            if self.mut != "no_remote_release":
                bar = self.empty[peer][st]
                self.events.append((peer, bar.arrive, c))
            yield
        yield from self.finish(c)

    def finish(self, c):
        self.arrived.add(object())
        if self.mut == "no_cluster_sync":
            return
        while len(self.arrived) < 2 * (WARPS + 1) or self.events:
            yield

    def run(self):
        # One random step at a time: a role's next step (a wait that does not pass just yields)
        # or the landing of one operation in flight. Waits spin, so a stuck protocol shows as the
        # step limit.
        live = [(0 if i < WARPS + 1 else 1, r) for i, r in enumerate(self.roles)]
        done = [0, 0]
        for _ in range(200000):
            if not live and not self.events:
                break
            pick = self.rng.randrange(len(live) + len(self.events))
            if pick >= len(live):
                tgt, fn, _ = self.events.pop(pick - len(live))
                if self.exited[tgt]:
                    raise Violation(f"a remote operation reaches CTA {tgt} after it exited")
                fn()
                continue
            c, role = live[pick]
            try:
                next(role)
            except StopIteration:
                live.pop(pick)
                done[c] += 1
                self.exited[c] = done[c] == WARPS + 1
        else:
            raise Violation("no progress: a wait that never passes (deadlock)")
        n = len(self.tiles)
        for c in range(2):
            for st in range(2):
                uses = (n - st + 1) // 2
                if self.full[c][st].phase != uses or self.empty[c][st].phase != uses:
                    raise Violation(f"CTA {c} stage {st}: phases full {self.full[c][st].phase} empty "
                                    f"{self.empty[c][st].phase}, expected {uses}")


def one_run(seed, mut):
    rng = random.Random(seed)
    n = rng.randint(1, 9)
    kinds = ["fp8"] * n if rng.random() < 0.4 else [("cpa" if rng.random() < 0.2 else "tma") for _ in range(n)]
    Sim(kinds, rng, mut).run()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3000)
    ap.add_argument("--mutate", default="", help="a variant of MUTATIONS, or 'all'")
    a = ap.parse_args()
    src = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src", "cuda", "mla_decode_sm90.cuh")).read()
    gone = [m for m in MIRRORS if m not in src]
    if gone:
        print("the kernel no longer has the lines this model mirrors:\n  " + "\n  ".join(gone))
        sys.exit(1)
    if a.mutate:
        muts = list(MUTATIONS) if a.mutate == "all" else [a.mutate]
        bad = []
        for m in muts:
            caught = None
            for seed in range(a.runs):
                try:
                    one_run(seed, m)
                except Violation as v:
                    caught = str(v)
                    break
            print(f"{m:20s} {'caught: ' + caught if caught else 'NOT CAUGHT'}")
            if not caught:
                bad.append(m)
        sys.exit(1 if bad else 0)
    for seed in range(a.runs):
        try:
            one_run(seed, "")
        except Violation as v:
            print(f"seed {seed}: {v}")
            sys.exit(1)
    print(f"{a.runs} random runs: no violation")


if __name__ == "__main__":
    main()
