"""PyTorch tensors through torch.ops.mlakv.*, against PyTorch references, on every device torch
offers: CUDA when available (the GPU kernels), and the CPU (the reference backend; this also checks
the custom-op plumbing without a GPU). Skipped without torch.

References are independent of the library: float8 conversions are torch's own, attention is a
float64 softmax over the dequantized cache."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import mlakv  # noqa: E402
from mlakv import dcp  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
MLA_FORMATS = ["bf16", "fp8", "fp8_ds_mla"]
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def rel_err(x, ref):
    x, ref = x.double(), ref.double()
    n = ref.norm()
    return ((x - ref).norm() / (n if n > 0 else 1)).item()


def to_e4m3(x: torch.Tensor) -> torch.Tensor:
    return x.float().to(torch.float8_e4m3fn).float()


def ref_dequant(fmt, latent, rope, scale):
    """What a cache of format fmt returns for float32 latent [T, 512] and rope [T, 64]."""
    if fmt == "bf16":
        return torch.cat([latent, rope], 1).bfloat16().float()
    if fmt == "fp8":
        return to_e4m3(torch.cat([latent, rope], 1) / scale) * scale
    tiles = latent.view(-1, 4, 128)
    s = torch.clamp(tiles.abs().amax(-1, keepdim=True) / 448, min=torch.finfo(torch.float32).tiny)
    return torch.cat([(to_e4m3(tiles / s) * s).reshape(-1, 512), rope.bfloat16().float()], 1)


def ref_dsv4(k):
    g = k.float()[:, :448].reshape(-1, 7, 64)
    m, e = torch.frexp(torch.clamp(g.abs().amax(-1, keepdim=True), min=1e-4) / 448)
    e = e - (m == 0.5).int()
    q = to_e4m3(torch.ldexp(g, -e)) * torch.ldexp(torch.ones_like(g), e)
    return torch.cat([q.reshape(-1, 448), k.float()[:, 448:]], 1)


def filled(fmt, nb, bs, dev, gen, scale=0.5):
    """A cache with every slot written, and the float32 rows it must return (slot order)."""
    cache = mlakv.empty_cache(fmt, nb, bs, device=dev, framework="torch", scale=scale if fmt == "fp8" else None)
    cap = cache.capacity
    slots = torch.arange(cap, dtype=torch.int64, device=dev)
    if fmt == "dsv4":
        k = torch.randn(cap, 512, generator=gen).bfloat16().to(dev)
        mlakv.dsv4_write(k, cache, slots)
        return cache, ref_dsv4(k.cpu())
    lat = torch.randn(cap, 512, generator=gen).bfloat16()
    rope = torch.randn(cap, 64, generator=gen).bfloat16()
    mlakv.write_cache(lat.to(dev), rope.to(dev), cache, slots)
    return cache, ref_dequant(fmt, lat.float(), rope.float(), scale)


@pytest.mark.parametrize("dev", DEVICES)
@pytest.mark.parametrize("fmt", MLA_FORMATS + ["dsv4"])
@pytest.mark.parametrize("bs", [1, 16, 64])
def test_write_gather_round_trip(dev, fmt, bs):
    gen = torch.Generator().manual_seed(bs)
    nb = max(2, 128 // bs)
    cache, want = filled(fmt, nb, bs, dev, gen)
    lens = torch.tensor([3, 0, 2 * bs + 5], dtype=torch.int32)
    starts = torch.tensor([1, 0, bs - 1], dtype=torch.int32)
    cu = torch.cat([torch.zeros(1, dtype=torch.int32), lens.cumsum(0).int()])
    mb = (int((starts + lens).max()) + bs - 1) // bs
    table = torch.randint(0, nb, (3, mb), generator=gen, dtype=torch.int32)
    rows = int(cu[-1])
    got = mlakv.gather_dequant_cache(cache, table.to(dev), cu.to(dev), seq_starts=starts.to(dev), num_tokens=rows,
                                     out_dtype="float32")
    got_bf = mlakv.gather_dequant_cache(cache, table.to(dev), cu.to(dev), seq_starts=starts.to(dev), num_tokens=rows)
    raw = mlakv.gather_cache(cache, table.to(dev), cu.to(dev), seq_starts=starts.to(dev), num_tokens=rows)
    assert got.device.type == dev and got_bf.dtype == torch.bfloat16
    expect = torch.empty(rows, cache.row_width)
    slot_of = []
    for b in range(3):
        for p in range(int(lens[b])):
            pos = int(starts[b]) + p
            slot = int(table[b, pos // bs]) * bs + pos % bs
            expect[int(cu[b]) + p] = want[slot]
            slot_of.append(slot)
    assert torch.equal(got.cpu(), expect)
    assert torch.equal(got_bf.cpu(), expect.bfloat16())
    # The raw rows, decoded by the same op from a one-block-per-token cache, give the same values.
    if fmt != "dsv4" and rows:
        packed = mlakv.Cache(raw.view(torch.uint8).reshape(rows, 1, -1), fmt, 1, scale=cache.scale)
        ident = torch.arange(rows, dtype=torch.int32, device=dev).reshape(rows, 1)
        cu1 = torch.arange(rows + 1, dtype=torch.int32, device=dev)
        again = mlakv.gather_dequant_cache(packed, ident, cu1, num_tokens=rows, out_dtype="float32")
        assert torch.equal(again.cpu(), expect)


@cuda_only
@pytest.mark.parametrize("fmt", MLA_FORMATS + ["dsv4"])
def test_gpu_cache_bytes_equal_cpu(fmt):
    """The GPU writers store the same bytes as the CPU reference."""
    gen = torch.Generator().manual_seed(3)
    caches = [mlakv.empty_cache(fmt, 8, 16, device=d, framework="torch", scale=0.25 if fmt == "fp8" else None) for d in ("cpu", "cuda")]
    slots = torch.randperm(128, generator=gen)[:100].long()
    slots[::7] = -1
    if fmt == "dsv4":
        k = torch.randn(100, 512, generator=gen).bfloat16()
        for c in caches:
            mlakv.dsv4_write(k.to(c.tensor.device), c, slots.to(c.tensor.device))
    else:
        lat, rope = torch.randn(100, 512, generator=gen), torch.randn(100, 64, generator=gen)
        for c in caches:
            d = c.tensor.device
            mlakv.write_cache(lat.to(d), rope.to(d), c, slots.to(d))
    torch.cuda.synchronize()
    assert torch.equal(caches[0].tensor, caches[1].tensor.cpu())


@pytest.mark.parametrize("dev", DEVICES)
def test_dsv4_dequant_gather(dev):
    gen = torch.Generator().manual_seed(9)
    bs = 64
    cache, want = filled("dsv4", 6, bs, dev, gen)
    seq_lens = torch.tensor([100, 0, 64, 7], dtype=torch.int32)
    gl = torch.tensor([40, 0, 64, 3], dtype=torch.int32)
    table = torch.randint(0, 6, (4, 2), generator=gen, dtype=torch.int32)
    out = torch.full((4, 80, 512), 3.0, dtype=torch.bfloat16, device=dev)
    mlakv.dsv4_dequant_gather(cache, table.to(dev), seq_lens.to(dev), out, gather_lens=gl.to(dev), offset=5)
    out = out.cpu()
    for r in range(4):
        n, L = int(gl[r]), int(seq_lens[r])
        for i in range(n):
            pos = L - n + i
            slot = int(table[r, pos // bs]) * bs + pos % bs
            assert torch.equal(out[r, 5 + i], want[slot].bfloat16())
        assert (out[r, :5] == 3).all() and (out[r, 5 + n:] == 3).all()


def ref_decode(q, rows, table, seq_lens, bs, sm, causal):
    """float64 softmax attention over the dequantized rows (indexed by slot)."""
    B, s_q, H, _ = q.shape
    out = torch.zeros(B, s_q, H, 512, dtype=torch.float64)
    lse = torch.full((B, s_q, H), -math.inf, dtype=torch.float64)
    for b in range(B):
        L = int(seq_lens[b])
        slots = [int(table[b, p // bs]) * bs + p % bs for p in range(L)]
        keys = rows[slots].double() if L else torch.zeros(0, 576, dtype=torch.float64)
        for i in range(s_q):
            vis = L - s_q + i + 1 if causal else L
            if vis <= 0:
                continue
            s = sm * (q[b, i].double() @ keys[:vis].T)  # [H, vis]
            lse[b, i] = torch.logsumexp(s, -1)
            out[b, i] = torch.softmax(s, -1) @ keys[:vis, :512]
    return out, lse


@pytest.mark.parametrize("dev", DEVICES)
@pytest.mark.parametrize("fmt", MLA_FORMATS)
@pytest.mark.parametrize("s_q", [1, 2])
def test_mla_decode_vs_fp64(dev, fmt, s_q):
    gen = torch.Generator().manual_seed(s_q)
    bs, H, nb = 64, 16, 12
    cache, rows = filled(fmt, nb, bs, dev, gen)
    seq_lens = torch.tensor([300, 1, 0, 129], dtype=torch.int32)
    table = torch.randint(0, nb, (4, 5), generator=gen, dtype=torch.int32)
    q = torch.randn(4, s_q, H, 576, generator=gen).bfloat16()
    sm = 1 / math.sqrt(192)
    out, lse = mlakv.mla_decode(q.to(dev), cache, table.to(dev), seq_lens.to(dev), sm)
    want_o, want_l = ref_decode(q, rows, table, seq_lens, bs, sm, True)
    assert out.dtype == torch.bfloat16 and lse.dtype == torch.float32 and out.device.type == dev
    out, lse = out.cpu(), lse.cpu()
    assert rel_err(out, want_o) <= 4e-3
    fin = torch.isfinite(want_l)
    lse_tol = 4e-3 if fmt == "fp8_ds_mla" else 1e-3
    assert (lse[fin].double() - want_l[fin]).abs().max().item() <= lse_tol
    assert torch.isneginf(lse[~fin]).all() and (out[2] == 0).all() and not out.isnan().any()


@pytest.mark.parametrize("dev", DEVICES)
def test_mla_decode_fp8_query(dev):
    gen = torch.Generator().manual_seed(4)
    cache, rows = filled("bf16", 4, 64, dev, gen)
    seq_lens = torch.tensor([200, 17], dtype=torch.int32)
    table = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]], dtype=torch.int32)
    qf = torch.randn(2, 1, 16, 576, generator=gen)
    q8 = (qf / 0.5).to(torch.float8_e4m3fn)
    q_scale = torch.tensor([0.5], device=dev)
    out, lse = mlakv.mla_decode(q8.to(dev), cache, table.to(dev), seq_lens.to(dev), 0.05, q_scale=q_scale,
                                out_dtype="float32")
    want_o, want_l = ref_decode(q8.float() * 0.5, rows, table, seq_lens, 64, 0.05, True)
    assert rel_err(out.cpu(), want_o) <= 4e-3
    assert (lse.cpu().double() - want_l).abs().max().item() <= 1e-3


@pytest.mark.parametrize("dev", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_merge_states(dev, dtype):
    gen = torch.Generator().manual_seed(1)
    N, H, D = 5, 8, 512
    oa, ob = torch.randn(N, H, D, generator=gen).to(dtype), torch.randn(N, H, D, generator=gen).to(dtype)
    la, lb = torch.randn(N, H, generator=gen) * 3, torch.randn(N, H, generator=gen) * 3
    la[0, 0], lb[0, 1], la[1, 1], lb[1, 1] = -math.inf, math.inf, math.nan, -math.inf
    out, lse = mlakv.merge_states(oa.to(dev), la.to(dev), ob.to(dev), lb.to(dev))
    clean = [torch.where(torch.isfinite(x), x, torch.full_like(x, -math.inf)).double() for x in (la, lb)]
    ref_l = torch.logaddexp(*clean)
    wa = torch.nan_to_num(torch.exp(clean[0] - ref_l), nan=0.0)
    wb = torch.nan_to_num(torch.exp(clean[1] - ref_l), nan=0.0)
    ref_o = oa.double() * wa[..., None] + ob.double() * wb[..., None]
    assert rel_err(out.cpu(), ref_o) <= (4e-3 if dtype == torch.bfloat16 else 1e-6)
    fin = torch.isfinite(ref_l)
    assert (lse.cpu()[fin].double() - ref_l[fin]).abs().max().item() <= 1e-5
    assert torch.isneginf(lse.cpu()[1, 1]) and (out.cpu()[1, 1] == 0).all()


@pytest.mark.parametrize("dev", DEVICES)
def test_dcp_slot_mapping_and_sharded_decode(dev):
    gen = torch.Generator().manual_seed(2)
    W, I, bs, H, nb = 2, 2, 16, 8, 16
    seq_lens = torch.tensor([70, 5], dtype=torch.int32)
    table = torch.randperm(nb, generator=gen)[:12].reshape(2, 6).int()
    pos = torch.cat([torch.arange(int(L)) for L in seq_lens]).long()
    req = torch.repeat_interleave(torch.arange(2), seq_lens.long()).int()
    lat, rope = torch.randn(len(pos), 512, generator=gen).bfloat16(), torch.randn(len(pos), 64, generator=gen).bfloat16()
    q = torch.randn(2, 1, H, 576, generator=gen).bfloat16().to(dev)
    full = mlakv.empty_cache("fp8", nb, bs, device=dev, framework="torch", scale=0.5)
    full_slots = torch.tensor([int(table[r, p // bs]) * bs + p % bs for p, r in zip(pos.tolist(), req.tolist())])
    mlakv.write_cache(lat.to(dev), rope.to(dev), full, full_slots.to(dev))
    want_o, want_l = mlakv.mla_decode(q, full, table.to(dev), seq_lens.to(dev), 0.05, out_dtype="float32")
    o = l = None
    for r in range(W):
        sm = dcp.slot_mapping(pos.to(dev), req.to(dev), table.to(dev), bs, world=W, rank=r, interleave=I)
        for t in range(len(pos)):
            p = int(pos[t])
            if dcp.owner(p, W, I) == r:
                j = dcp.local_index(p, W, I)
                assert int(sm[t]) == int(table[int(req[t]), j // bs]) * bs + j % bs
            else:
                assert int(sm[t]) == -1
        shard = mlakv.empty_cache("fp8", nb, bs, device=dev, framework="torch", scale=0.5)
        mlakv.write_cache(lat.to(dev), rope.to(dev), shard, sm)
        o_r, l_r = mlakv.mla_decode(q, shard, table.to(dev), seq_lens.to(dev), 0.05, out_dtype="float32",
                                    dcp_world_size=W, dcp_rank=r, dcp_interleave=I)
        o_r, l_r = o_r.reshape(2, H, 512), l_r.reshape(2, H)
        o, l = (o_r, l_r) if o is None else mlakv.merge_states(o, l, o_r, l_r)
    # CPU: fp64 accumulation, so the merge is exact to float rounding. GPU: the kernel rounds
    # probabilities to bf16 for the PV product, so shards differ from one pass within SPEC §6.
    tol_o, tol_l = (1e-5, 1e-5) if dev == "cpu" else (4e-3, 1e-3)
    assert rel_err(o.cpu(), want_o.reshape(2, H, 512).cpu()) <= tol_o
    assert (l.cpu() - want_l.reshape(2, H).cpu()).abs().max().item() <= tol_l


@pytest.mark.parametrize("dev", DEVICES)
def test_errors_name_the_argument(dev):
    cache = mlakv.empty_cache("bf16", 2, 16, device=dev, framework="torch")
    kv = torch.zeros(3, 512, dtype=torch.bfloat16, device=dev)
    pe = torch.zeros(3, 64, dtype=torch.bfloat16, device=dev)
    with pytest.raises(TypeError, match="slot_mapping"):
        mlakv.write_cache(kv, pe, cache, torch.zeros(3, dtype=torch.int32, device=dev))
    with pytest.raises(ValueError, match="k_pe"):
        mlakv.write_cache(kv, pe[:, :32], cache, torch.zeros(3, dtype=torch.int64, device=dev))
    with pytest.raises(TypeError, match="float8_e5m2"):
        mlakv.write_cache(kv.to(torch.float8_e5m2), pe, cache, torch.zeros(3, dtype=torch.int64, device=dev))
    if dev == "cuda":
        with pytest.raises(ValueError, match="slot_mapping is on cpu"):
            mlakv.write_cache(kv, pe, cache, torch.zeros(3, dtype=torch.int64))


@pytest.mark.parametrize("dev", DEVICES)
def test_torch_compile_mla_decode(dev):
    gen = torch.Generator().manual_seed(6)
    cache, _ = filled("fp8", 8, 64, dev, gen)
    table = torch.arange(8, dtype=torch.int32, device=dev).reshape(2, 4)
    seq_lens = torch.tensor([250, 31], dtype=torch.int32, device=dev)
    q = torch.randn(2, 1, 16, 576, generator=gen).bfloat16().to(dev)
    t, s = cache.tensor, cache.scale

    def step(q, table, seq_lens):
        out = torch.empty(2, 1, 16, 512, dtype=torch.bfloat16, device=q.device)
        lse = torch.empty(2, 1, 16, dtype=torch.float32, device=q.device)
        torch.ops.mlakv.mla_decode(q, t, table, seq_lens, out, lse, "fp8", s, 64, -1, 0, 0.05, True, None, None,
                                   1, 0, 1)
        return out.float() * 2, lse

    # On the CPU aot_eager checks the graph capture and fake implementations without compiling C++.
    compiled = torch.compile(step, fullgraph=True, backend="inductor" if dev == "cuda" else "aot_eager")
    o1, l1 = compiled(q, table, seq_lens)
    o2, l2 = step(q, table, seq_lens)
    assert torch.equal(o1, o2) and torch.equal(l1, l2)
    # The Pythonic wrapper traces too.
    wrapped = torch.compile(lambda q: mlakv.mla_decode(q, cache, table, seq_lens, 0.05)[0], fullgraph=True,
                            backend="inductor" if dev == "cuda" else "aot_eager")
    assert torch.equal(wrapped(q), o2.div(2).bfloat16())


@cuda_only
def test_cuda_graph_capture_decode():
    gen = torch.Generator().manual_seed(8)
    cache, rows = filled("fp8_ds_mla", 8, 64, "cuda", gen)
    B, H = 2, 16
    table = torch.arange(8, dtype=torch.int32, device="cuda").reshape(B, 4)
    seq_lens = torch.tensor([100, 200], dtype=torch.int32, device="cuda")
    q = torch.randn(B, 1, H, 576, generator=gen).bfloat16().cuda()
    out = torch.empty(B, 1, H, 512, dtype=torch.bfloat16, device="cuda")
    lse = torch.empty(B, 1, H, dtype=torch.float32, device="cuda")
    ws = torch.empty(mlakv.mla_decode_workspace_size(B, 1, H, "cuda"), dtype=torch.uint8, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture, as torch recommends
        mlakv.mla_decode(q, cache, table, seq_lens, 0.05, out=out, lse=lse, workspace=ws)
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        mlakv.mla_decode(q, cache, table, seq_lens, 0.05, out=out, lse=lse, workspace=ws)
    # New inputs in the same buffers: the replay must see them.
    q.copy_(torch.randn(B, 1, H, 576, generator=gen).bfloat16().cuda())
    seq_lens.copy_(torch.tensor([256, 7], dtype=torch.int32))
    g.replay()
    torch.cuda.synchronize()
    want_o, want_l = mlakv.mla_decode(q, cache, table, seq_lens, 0.05)
    assert torch.equal(out, want_o) and torch.equal(lse, want_l)
    ref_o, ref_l = ref_decode(q.cpu(), rows, table.cpu(), seq_lens.cpu(), 64, 0.05, True)
    assert rel_err(out.cpu(), ref_o) <= 4e-3
    assert (lse.cpu().double() - ref_l).abs().max().item() <= 4e-3


@cuda_only
def test_runs_on_the_current_stream():
    gen = torch.Generator().manual_seed(5)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        cache, rows = filled("bf16", 4, 16, "cuda", gen)
        cu = torch.tensor([0, 64], dtype=torch.int32, device="cuda")
        table = torch.arange(4, dtype=torch.int32, device="cuda").reshape(1, 4)
        got = mlakv.gather_dequant_cache(cache, table, cu, num_tokens=64, out_dtype="float32")
    s.synchronize()
    assert torch.equal(got.cpu(), rows)


@cuda_only
def test_cupy_arrays():
    cupy = pytest.importorskip("cupy")
    rng = np.random.default_rng(0)
    cache = mlakv.empty_cache("fp8_ds_mla", 4, 16, framework="cupy", device="cuda:0")
    lat = mlakv.float32_to_bf16(rng.standard_normal((64, 512)).astype(np.float32))
    rope = mlakv.float32_to_bf16(rng.standard_normal((64, 64)).astype(np.float32))
    mlakv.write_cache(cupy.asarray(lat), cupy.asarray(rope), cache, cupy.arange(64, dtype=cupy.int64))
    got = mlakv.gather_dequant_cache(cache, cupy.arange(4, dtype=cupy.int32).reshape(1, 4),
                                     cupy.asarray([0, 64], dtype=cupy.int32), num_tokens=64, out_dtype="float32")
    want = ref_dequant("fp8_ds_mla", torch.from_numpy(mlakv.bf16_to_float32(lat)),
                       torch.from_numpy(mlakv.bf16_to_float32(rope)), 1.0)
    assert torch.equal(torch.from_numpy(cupy.asnumpy(got)), want)
