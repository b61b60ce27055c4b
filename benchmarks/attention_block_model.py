"""Performance model of the pre-LN attention sublayer (``x + dropout(W_o attention(LN(x) W_q, W_k, W_v))``).

A planning model, not a measurement. For every candidate implementation it lists the kernels that run,
each with its HBM bytes, its matrix FLOPs split by the kind of unit that executes them, its exp count and its
L2 re-read bytes, and predicts each kernel's time by the roofline: the largest of

- HBM bytes / achievable HBM bandwidth,
- sum over MMA kinds of FLOPs / that kind's achievable rate (the kinds share the tensor cores),
- exp count / MUFU exp rate,
- L2 re-read bytes / L2 bandwidth,

plus a fixed launch cost per kernel spread over the batch. A candidate's time is the sum of its kernels. Every
rate is an assumption listed in :class:`Machine` (planning values, unverified, to be replaced by measurements);
the executed FLOPs include the padding of the tiles each kernel really computes.

Run ``python -m benchmarks.attention_block_model`` for the tables of ``docs/kernels/attention_blocks.md``;
the block benchmarks print :func:`predict` beside each measured time.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

# MMA kinds: who executes a matrix product and at which achievable rate (Machine.rates).
CUBLAS = "cublas"  # cuBLAS GEMMs of PyTorch (and batched GEMMs of the eager reference)
WGMMA = "wgmma"  # Triton tl.dot with >= 64 rows per dot on Hopper: warp-group MMA
MMA_SYNC = "mma_sync"  # Triton tl.dot with 16- or 32-row tiles: the Ampere mma.sync path
PEER_MMA_SYNC = "peer_mma_sync"  # hand-written CUDA attention on the Ampere path (SDPA mem-efficient)
PEER_WGMMA = "peer_wgmma"  # hand-written Hopper attention (cuDNN)


@dataclass(frozen=True)
class Machine:
    """Achievable rates (planning values, unverified; measure and substitute).

    ``rates[dtype][kind]`` in FLOP/s. bf16 cuBLAS 600 TF is the value of the end-to-end FLOP model; Triton's
    own dots are assumed well below it at these tile sizes (wgmma 400 TF, about half of 790; mma.sync 250 TF,
    about FlashAttention-2's share of an H100). fp32 I/O: PyTorch matmuls run exact fp32 FMA (TF32 is off by
    default), Triton runs tf32x3 (three TF32 products per dot).
    """

    name: str = "H100 SXM"
    hbm: float = 3.0e12
    l2: float = 6.0e12
    exp: float = 3.9e12
    launch_s: float = 4e-6
    rates: dict = field(default_factory=lambda: {
        "bf16": {CUBLAS: 600e12, WGMMA: 400e12, MMA_SYNC: 250e12, PEER_MMA_SYNC: 300e12, PEER_WGMMA: 450e12},
        "fp32": {CUBLAS: 50e12, WGMMA: 80e12, MMA_SYNC: 50e12, PEER_MMA_SYNC: 40e12, PEER_WGMMA: 40e12},
    })


H100 = Machine()


@dataclass(frozen=True)
class Shape:
    """One sequence of the block: N tokens of width C, H heads of D; ``frame`` = the C-TRS mask."""

    name: str
    n: int
    c: int
    heads: int = 8
    head_dim: int = 64
    frame_mask: bool = True
    dtype: str = "bf16"
    dropout: bool = True  # training: dropout p > 0 after W_o

    @property
    def inner(self) -> int:
        return self.heads * self.head_dim

    @property
    def e(self) -> int:
        return 2 if self.dtype == "bf16" else 4


CTRS = Shape("C-TRS", n=176, c=256)
FTRS = Shape("F-TRS", n=25, c=128, frame_mask=False)


@dataclass
class Kernel:
    name: str
    hbm: float = 0.0  # bytes
    flops: dict = field(default_factory=dict)  # kind -> FLOPs
    exps: float = 0.0
    l2: float = 0.0  # bytes re-read from L2 (beyond the first HBM read)

    def time(self, m: Machine, dtype: str, batch: int) -> float:
        mma = sum(f / m.rates[dtype][kind] for kind, f in self.flops.items())
        return max(self.hbm / m.hbm, mma, self.exps / m.exp, self.l2 / m.l2) + m.launch_s / batch

    @property
    def total_flops(self) -> float:
        return sum(self.flops.values())


def pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def up(n: int, tile: int) -> int:
    return -(-n // tile) * tile


def gemm(name: str, m: int, k: int, n: int, e: int, read_a=True, read_b_bytes=0.0, write=True) -> Kernel:
    """A cuBLAS ``[m, k] @ [k, n]`` per sequence: activations in HBM, weights in L2 (``read_b_bytes`` for an
    activation B operand)."""
    return Kernel(name, hbm=(m * k * e if read_a else 0) + read_b_bytes + (m * n * e if write else 0),
                  flops={CUBLAS: 2.0 * m * k * n})


def elementwise(name: str, read: float, write: float) -> Kernel:
    return Kernel(name, hbm=read + write)


# ---- attention kernels alone (per sequence, all heads) -------------------------------------------------------

def attention_io(s: Shape) -> tuple[float, float]:
    """(bytes of one [N, H*D] activation, bytes of an fp32 [H, N] row statistic)."""
    return s.n * s.inner * s.e, 4.0 * s.heads * s.n


def split_attention(s: Shape, bm: int, bn: int, direction: str) -> list[Kernel]:
    """(a) the present kernels: one program per (q- or kv-tile, head); online softmax over BN-wide KV chunks;
    backward = delta preprocess + dK/dV kernel (4 matmuls) + dQ kernel (3 matmuls). K/V (or Q/dO) of a head
    are re-read from L2 by each neighbouring tile program."""
    act, stat = attention_io(s)
    kind = WGMMA if bm >= 64 else MMA_SYNC
    nq, nk = up(s.n, bm), up(s.n, bn)
    tile_mm = 2.0 * nq * nk * s.inner  # one [Nq, Nk] x D product over all heads
    n_qt, n_kt = nq // bm, nk // bn
    if direction == "fwd":
        return [Kernel(f"attn fwd (a) {bm}x{bn}", hbm=3 * act + act + stat, flops={kind: 2 * tile_mm},
                       exps=1.0 * nq * nk * s.heads * (1 + 1 / bn), l2=(n_qt - 1) * 2 * act)]
    return [Kernel("attn bwd (a) delta", hbm=2 * act + stat),
            Kernel(f"attn bwd (a) dK/dV {bm}x{bn}", hbm=4 * act + 2 * stat + 2 * act,
                   flops={WGMMA if bn >= 64 else MMA_SYNC: 4 * tile_mm}, exps=1.0 * nq * nk * s.heads,
                   l2=(n_kt - 1) * 2 * act),
            Kernel(f"attn bwd (a) dQ {bm}x{bn}", hbm=4 * act + 2 * stat + act, flops={kind: 3 * tile_mm},
                   exps=1.0 * nq * nk * s.heads, l2=(n_qt - 1) * 2 * act)]


def resident_attention(s: Shape, bm: int, direction: str, qkv_bytes: float | None = None) -> list[Kernel]:
    """(b) one program per (sequence, head): K and V loaded once and kept on chip, q-tiles of BM rows in a loop,
    the whole key row (next power of two of N) per tile in one single-pass softmax. Backward: one program per
    (sequence, head), dK/dV accumulated on chip over the q-tiles, delta = rowsum(P * dP) from the tile itself
    (O is not read), dQ of each tile written once: 5 matmuls, no atomics."""
    act, stat = attention_io(s)
    nq, npad = up(s.n, bm), pow2(max(s.n, 16))
    row_kind = WGMMA if bm >= 64 else MMA_SYNC
    tile_mm = 2.0 * nq * npad * s.inner
    if direction == "fwd":
        return [Kernel(f"attn fwd (b) BM={bm}", hbm=(3 * act if qkv_bytes is None else qkv_bytes) + act + stat,
                       flops={row_kind: 2 * tile_mm}, exps=1.0 * nq * npad * s.heads)]
    # S, dP, dQ have BM rows; dV += P^T dO and dK += dS^T Q have NP rows (wgmma whenever NP >= 64).
    col_kind = WGMMA if npad >= 64 else MMA_SYNC
    return [Kernel(f"attn bwd (b) BM={bm}", hbm=4 * act + stat + 3 * act,
                   flops={row_kind: 3 * tile_mm, col_kind: 2 * tile_mm} if row_kind != col_kind
                   else {row_kind: 5 * tile_mm}, exps=1.0 * nq * npad * s.heads)]


def peer_attention(s: Shape, peer: str, direction: str) -> list[Kernel]:
    """Fused attention of the peers, at their byte floor and their tile padding.

    sdpa_eff: SDPA memory-efficient (CUTLASS, 64 x 64 tiles at D = 64, mma.sync); cudnn: SDPA cuDNN (Hopper,
    128 x 128 tiles assumed); flex128 / flex64: FlexAttention (Triton, wgmma) with 128- or 64-blocks, backward
    as dK/dV and dQ programs (7 matmuls). Forward: read Q, K, V, write O and LSE; backward: read Q, K, V, O, dO,
    write dQ, dK, dV (FlashAttention-2 accounting)."""
    act, stat = attention_io(s)
    tile, kind, bwd_mm = {"sdpa_eff": (64, PEER_MMA_SYNC, 5), "cudnn": (128, PEER_WGMMA, 5),
                          "flex128": (128, WGMMA, 7), "flex64": (64, WGMMA, 7)}[peer]
    npad = up(s.n, tile)
    tile_mm = 2.0 * npad * npad * s.inner
    if direction == "fwd":
        return [Kernel(f"attn fwd {peer}", hbm=4 * act + stat, flops={kind: 2 * tile_mm},
                       exps=1.0 * npad * npad * s.heads)]
    return [Kernel(f"attn bwd {peer}", hbm=5 * act + 2 * stat + 3 * act, flops={kind: bwd_mm * tile_mm},
                   exps=(2.0 if bwd_mm == 7 else 1.0) * npad * npad * s.heads)]


def eager_reference_attention(s: Shape, direction: str) -> list[Kernel]:
    """The reference math in eager PyTorch: scores, mask fill, softmax and P materialised ([H, N, N])."""
    act, _ = attention_io(s)
    sc = 1.0 * s.heads * s.n * s.n * s.e
    mm = 2.0 * s.n * s.n * s.inner
    if direction == "fwd":
        return [elementwise("q * scale", act, act), Kernel("bmm Q K^T", hbm=2 * act + sc, flops={CUBLAS: mm}),
                elementwise("masked_fill", sc, sc), elementwise("softmax", sc, sc),
                Kernel("bmm P V", hbm=sc + act + act, flops={CUBLAS: mm}), elementwise("reshape copy", act, act)]
    return [elementwise("reshape copy bwd", act, act),
            Kernel("bmm dP = dO V^T", hbm=2 * act + sc, flops={CUBLAS: mm}),
            Kernel("bmm dV = P^T dO", hbm=sc + act + act, flops={CUBLAS: mm}),
            elementwise("softmax bwd", 2 * sc, sc), elementwise("masked_fill bwd", sc, sc),
            Kernel("bmm dQ = dS K", hbm=sc + act + act, flops={CUBLAS: mm}),
            Kernel("bmm dK = dS^T Q", hbm=sc + act + act, flops={CUBLAS: mm}), elementwise("scale bwd", act, act)]


# ---- whole blocks -------------------------------------------------------------------------------------------

def _ln_fwd(s: Shape) -> Kernel:
    x = s.n * s.c * s.e
    return elementwise("layer_norm", x, x + 8 * s.n)


def _tail_fwd(s: Shape, fused: bool) -> list[Kernel]:
    """W_o output Z -> dropout -> + x. ``fused``: one Inductor kernel; else eager dropout then add."""
    x, mask = s.n * s.c * s.e, s.n * s.c * (1 if s.dropout else 0)
    if fused:
        return [elementwise("dropout + residual", 2 * x, x + mask)]
    drop = [elementwise("dropout", x, x + mask)] if s.dropout else []
    return drop + [elementwise("residual add", 2 * x, x)]


def _tail_bwd(s: Shape, fused: bool) -> list[Kernel]:
    x, mask = s.n * s.c * s.e, s.n * s.c
    if not s.dropout:
        return []
    return [elementwise("dropout bwd", x + mask, x)]


def _ln_bwd(s: Shape, dxn_parts: int, fused: bool) -> list[Kernel]:
    """LayerNorm backward from ``dxn_parts`` partial input gradients, plus the residual gradient dY."""
    x = s.n * s.c * s.e
    if fused:
        return [elementwise("sum + layer_norm bwd + residual", (dxn_parts + 2) * x + 8 * s.n, x)]
    adds = [elementwise("dxn accumulate", 2 * x, x) for _ in range(dxn_parts - 1)]
    return adds + [elementwise("layer_norm bwd", 2 * x + 8 * s.n, x), elementwise("residual grad add", 2 * x, x)]


def composition(s: Shape, direction: str, attention: Callable[[str], list[Kernel]], *, fused_qkv: bool,
                compiled: bool, attention_writes_dqkv: bool = False) -> list[Kernel]:
    """LayerNorm, Q/K/V projections (three GEMMs or one), an attention, W_o, dropout and the residual."""
    n, c, inner, e = s.n, s.c, s.inner, s.e
    x, act = n * c * e, n * inner * e
    if direction == "fwd":
        proj = ([gemm("QKV GEMM", n, c, 3 * inner, e)] if fused_qkv
                else [gemm(f"{p} GEMM", n, c, inner, e) for p in "QKV"])
        return ([_ln_fwd(s)] + proj + attention("fwd") + [gemm("W_o GEMM", n, inner, c, e)]
                + _tail_fwd(s, fused=compiled))
    out = _tail_bwd(s, compiled)
    out += [gemm("dA = dZ W_o", n, c, inner, e), gemm("dW_o = dZ^T A", c, n, inner, e, read_b_bytes=act,
                                                      write=False)]
    out += attention("bwd")
    if fused_qkv:
        # One [N, 3I] gradient buffer (written by the attention backward itself, or a cat of three).
        cat = [] if attention_writes_dqkv else [elementwise("cat dQ dK dV", 3 * act, 3 * act)]
        out += cat + [gemm("dxn = dQKV W", n, 3 * inner, c, e),
                      gemm("dW_qkv = dQKV^T xn", 3 * inner, n, c, e, read_b_bytes=x, write=False)]
        out += _ln_bwd(s, 1, compiled)
    else:
        for p in "QKV":
            out += [gemm(f"dxn += d{p} W_{p.lower()}", n, inner, c, e),
                    gemm(f"dW_{p.lower()} = d{p}^T xn", inner, n, c, e, read_b_bytes=x, write=False)]
        out += _ln_bwd(s, 3, compiled)
    return out


def fused_prologue(s: Shape, direction: str, bm: int) -> list[Kernel]:
    """(c) LN + QKV projection + attention in one kernel per (sequence, head), writing A; W_o by cuBLAS.

    Each head's program loads x (HBM once per sequence: the H programs of a sequence run side by side, the
    other H - 1 loads hit L2), projects Q for its q-tiles and K, V for the whole padded row. Backward recomputes
    LN and Q, K, V, runs the attention backward and writes dQKV, which cuBLAS turns into dxn and dW_qkv."""
    n, c, inner, e = s.n, s.c, s.inner, s.e
    x, act = n * c * e, n * inner * e
    nq, npad = up(n, bm), pow2(max(n, 16))
    kind = WGMMA if bm >= 64 else MMA_SYNC
    proj = {kind: 2.0 * nq * c * inner, WGMMA: 2.0 * 2 * npad * c * inner}
    attn = resident_attention(s, bm, direction, qkv_bytes=0.0)[0]
    if direction == "fwd":
        k = Kernel(f"LN+QKV+attn fwd (c) BM={bm}", hbm=x + act + attention_io(s)[1],
                   flops=_add(proj, attn.flops), exps=attn.exps, l2=(s.heads - 1) * x)
        return [k, gemm("W_o GEMM", n, inner, c, e)] + _tail_fwd(s, fused=False)
    k = Kernel(f"LN+QKV+attn bwd (c) BM={bm}", hbm=x + act + attention_io(s)[1] + 3 * act,
               flops=_add(proj, attn.flops), exps=attn.exps, l2=(s.heads - 1) * x)
    return (_tail_bwd(s, False) + [gemm("dA = dZ W_o", n, c, inner, e),
                                   gemm("dW_o = dZ^T A", c, n, inner, e, read_b_bytes=act, write=False), k,
                                   elementwise("xn for dW", x, x), gemm("dxn = dQKV W", n, 3 * inner, c, e),
                                   gemm("dW_qkv = dQKV^T xn", 3 * inner, n, c, e, read_b_bytes=x, write=False)]
            + _ln_bwd(s, 1, False))


def _add(a: dict, b: dict) -> dict:
    return {k: a.get(k, 0.0) + b.get(k, 0.0) for k in set(a) | set(b)}


def fused_block(s: Shape, direction: str, rows: int) -> list[Kernel]:
    """(d) the whole sublayer in one kernel: LN, Q/K/V, attention, W_o, dropout and the residual.

    A program owns a tile of ``rows`` rows holding ``rows // N`` whole sequences (block-diagonal attention
    inside the tile) and loops over the heads, accumulating W_o's output on chip. Only x in and the output
    out touch HBM in the forward. The backward recomputes everything per tile, keeps dLN on chip for the
    LayerNorm backward and writes dQKV, A, xn and dZ for the cuBLAS weight gradients (a reduction over all rows).

    With N > rows (C-TRS in 128-row tiles) the tile holds part of a sequence and K, V of the whole padded
    sequence are recomputed by each of its q-tiles; K/V of all heads (N x 2I) never fit one SM."""
    n, c, inner, e = s.n, s.c, s.inner, s.e
    x, act = n * c * e, n * inner * e
    if n <= rows:
        per_tile = rows // n
        q_rows, k_rows, tiles = rows / per_tile, rows, 1.0 / per_tile  # per sequence
    else:
        q_rows, k_rows, tiles = up(n, rows), pow2(n), math.ceil(n / rows)
    proj_q = 2.0 * q_rows * c * inner
    # K and V: once per row of the tile when the tile holds whole sequences, else the whole padded sequence
    # again for each of its q-tiles.
    proj_kv = 2.0 * 2 * (q_rows if n <= rows else k_rows * tiles) * c * inner
    pair = 2.0 * q_rows * k_rows * inner  # one [q, k] x D product over all heads
    wo = 2.0 * q_rows * inner * c
    exps = q_rows * k_rows * s.heads
    kind = WGMMA if rows >= 64 else MMA_SYNC
    if direction == "fwd":
        return [Kernel(f"fused block fwd (d) {rows} rows", hbm=2 * x, flops={kind: proj_q + proj_kv + 2 * pair + wo},
                       exps=exps)]
    k = Kernel(f"fused block bwd (d) {rows} rows", hbm=2 * x + x + 3 * act + act + x + (x if s.dropout else 0),
               flops={kind: 2 * (proj_q + proj_kv) + 6 * pair + 2 * wo}, exps=exps)
    return [k, gemm("dW_qkv = dQKV^T xn", 3 * inner, n, c, e, read_b_bytes=x, write=False),
            gemm("dW_o = dZ^T A", c, n, inner, e, read_b_bytes=act, write=False)]


# ---- candidates ---------------------------------------------------------------------------------------------

def candidates(s: Shape) -> dict[str, Callable[[str], list[Kernel]]]:
    """Name -> ``direction -> kernels`` for the block of shape ``s`` ("peer:" names are the peers)."""
    peer_attn = "cudnn" if s.frame_mask and s.dtype == "bf16" else "sdpa_eff"
    out = {
        "peer: eager (reference math)": lambda d: composition(
            s, d, lambda dd: eager_reference_attention(s, dd), fused_qkv=False, compiled=False),
        "peer: eager + SDPA mem-efficient": lambda d: composition(
            s, d, lambda dd: peer_attention(s, "sdpa_eff", dd), fused_qkv=False, compiled=False),
        f"peer: torch.compile + SDPA ({peer_attn})": lambda d: composition(
            s, d, lambda dd: peer_attention(s, peer_attn, dd), fused_qkv=False, compiled=True),
        "peer: torch.compile + FlexAttention 128": lambda d: composition(
            s, d, lambda dd: peer_attention(s, "flex128", dd), fused_qkv=False, compiled=True),
        "peer: torch.compile + FlexAttention 64": lambda d: composition(
            s, d, lambda dd: peer_attention(s, "flex64", dd), fused_qkv=False, compiled=True),
    }
    if s.frame_mask and s.dtype == "bf16":
        out["peer: torch.compile + SDPA mem-efficient"] = lambda d: composition(
            s, d, lambda dd: peer_attention(s, "sdpa_eff", dd), fused_qkv=False, compiled=True)
    for bm, bn in ((16, 16), (32, 32), (64, 32)):
        if bm <= pow2(s.n):
            # The present kernel as the library's layer ran it (three QKV GEMMs), and inside the block's
            # composed path (one QKV GEMM, dQKV written by the kernel): HITRS_FAST_ATTENTION_KERNEL=split.
            for fused in (False, True):
                label = "fused QKV" if fused else "3 QKV GEMMs"
                out[f"(a) split {bm}x{bn}, {label} + cuBLAS"] = (lambda bm_, bn_, f_: lambda d: composition(
                    s, d, lambda dd: split_attention(s, bm_, bn_, dd), fused_qkv=f_, compiled=False,
                    attention_writes_dqkv=f_))(bm, bn, fused)
    for bm in (16, 32, 64):
        if bm <= pow2(s.n):
            out[f"(b) resident BM={bm} + cuBLAS"] = (lambda bm_: lambda d: composition(
                s, d, lambda dd: resident_attention(s, bm_, dd), fused_qkv=True, compiled=False,
                attention_writes_dqkv=True))(bm)
    out["(b) resident BM=16, 3 QKV GEMMs + cuBLAS"] = lambda d: composition(
        s, d, lambda dd: resident_attention(s, 16, dd), fused_qkv=False, compiled=False)
    for bm, bn in ((16, 16), (32, 32), (64, 32)):
        if bm <= pow2(s.n):
            out[f"(a) split {bm}x{bn} fwd, (b) resident BM=16 bwd + cuBLAS"] = (lambda bm_, bn_: lambda d: composition(
                s, d, lambda dd: split_attention(s, bm_, bn_, dd) if dd == "fwd" else resident_attention(s, 16, dd),
                fused_qkv=True, compiled=False, attention_writes_dqkv=True))(bm, bn)
    for bm in (16, 64):
        if bm <= pow2(s.n):
            out[f"(c) LN+QKV+attn BM={bm}, W_o cuBLAS"] = (lambda bm_: lambda d: fused_prologue(s, d, bm_))(bm)
    for rows in (32, 128):
        if rows >= 32:
            out[f"(d) fused block, {rows}-row tiles"] = (lambda r: lambda d: fused_block(s, d, r))(rows)
    return out


@dataclass(frozen=True)
class Prediction:
    name: str
    fwd_s: float
    bwd_s: float
    fwd_bytes: float
    bwd_bytes: float
    fwd_flops: float
    bwd_flops: float
    kernels: tuple[int, int]

    @property
    def total_s(self) -> float:
        return self.fwd_s + self.bwd_s


def predict_kernels(kernels: list[Kernel], s: Shape, m: Machine, batch: int) -> float:
    """Seconds per sequence of a kernel list."""
    return sum(k.time(m, s.dtype, batch) for k in kernels)


def predict(s: Shape, name: str, m: Machine = H100, batch: int = 8192) -> Prediction:
    """The model's figures for candidate ``name`` of :func:`candidates` (per sequence)."""
    build = candidates(s)[name]
    fwd, bwd = build("fwd"), build("bwd")
    return Prediction(name, predict_kernels(fwd, s, m, batch), predict_kernels(bwd, s, m, batch),
                      sum(k.hbm for k in fwd), sum(k.hbm for k in bwd), sum(k.total_flops for k in fwd),
                      sum(k.total_flops for k in bwd), (len(fwd), len(bwd)))


def predict_all(s: Shape, m: Machine = H100, batch: int = 8192) -> list[Prediction]:
    return [predict(s, name, m, batch) for name in candidates(s)]


def attention_only(s: Shape, m: Machine = H100, batch: int = 8192) -> list[tuple[str, float, float, float]]:
    """(name, fwd s, bwd s, fwd HBM bytes) per sequence for the bare attention kernels."""
    rows = []
    options = {f"(a) split {bm}x{bn}": (lambda d, bm=bm, bn=bn: split_attention(s, bm, bn, d))
               for bm, bn in ((16, 16), (32, 32), (64, 32)) if bm <= pow2(s.n)}
    options |= {f"(b) resident BM={bm}": (lambda d, bm=bm: resident_attention(s, bm, d))
                for bm in (16, 32, 64) if bm <= pow2(s.n)}
    options |= {f"peer {p}": (lambda d, p=p: peer_attention(s, p, d)) for p in ("sdpa_eff", "cudnn", "flex128")}
    act, stat = attention_io(s)
    rows.append(("HBM floor (read Q, K, V, write O; bwd: read Q, K, V, O, dO, write dQ, dK, dV)",
                 (4 * act) / m.hbm, (8 * act) / m.hbm, 4 * act))
    for name, build in options.items():
        fwd, bwd = build("fwd"), build("bwd")
        rows.append((name, predict_kernels(fwd, s, m, batch), predict_kernels(bwd, s, m, batch),
                     sum(k.hbm for k in fwd)))
    return rows


def built(s: Shape, impl: str) -> list[str]:
    """The candidates a benchmark implementation corresponds to (the fastest of them is its prediction).

    impl: ``ours`` (``FrameAttentionBlock(backend="triton")``: the fused kernel, or the composed path with the
    default kernel pair, split forward and resident backward), ``ours-resident`` and ``ours-split`` (the
    composed path with ``HITRS_FAST_ATTENTION_KERNEL=resident`` or ``split``), ``kernel+cublas`` (the layer's
    previous composition: three QKV GEMMs, the attention kernel, eager LayerNorm, dropout and residual), and the
    peers ``eager``, ``eager+sdpa``, ``compile+sdpa``, ``compile+flex``. The autotuners pick tiles on the GPU,
    so a family predicts its best tile; the resident kernel predicts its 16-row tile, the one configuration
    compiled for sm_90 without spills.
    """
    names = list(candidates(s))
    resident = capabilities_resident_fits(s)
    # The fused kernel: 16-bit dots, whole sequences in a 128-row tile (C <= 128) or a 64-row one (C <= 256).
    fused = s.dtype == "bf16" and s.c <= 256 and s.n <= (128 if s.c <= 128 else 64)
    split_fused_qkv = [n for n in names if n.startswith("(a) split") and n.endswith("fused QKV + cuBLAS")]
    mixed = [n for n in names if n.endswith("fwd, (b) resident BM=16 bwd + cuBLAS")]
    split_three = [n for n in names if n.startswith("(a) split") and "3 QKV GEMMs" in n]
    peer_attn = "cudnn" if s.frame_mask and s.dtype == "bf16" else "sdpa_eff"
    table = {
        "ours": (["(d) fused block, 128-row tiles"] if fused else mixed if resident else split_fused_qkv),
        "ours-resident": ["(b) resident BM=16 + cuBLAS"] if resident else split_fused_qkv,
        "ours-split": split_fused_qkv,
        "kernel+cublas": ["(b) resident BM=16, 3 QKV GEMMs + cuBLAS"] if resident else split_three,
        "eager": ["peer: eager (reference math)"],
        "eager+sdpa": ["peer: eager + SDPA mem-efficient"],
        "compile+sdpa": [f"peer: torch.compile + SDPA ({peer_attn})"],
        "compile+flex": ["peer: torch.compile + FlexAttention 128"],
    }
    return table[impl]


def capabilities_resident_fits(s: Shape) -> bool:
    """The resident kernel's limit (``kernels/capabilities.py``: 256 padded keys, K, V, dK, dV in 192 KiB)."""
    npad = pow2(max(s.n, 16))
    return npad <= 256 and 2 * npad * s.head_dim * (s.e + 4) <= 192 * 1024


def benchmark_prediction(s: Shape, impl: str, m: Machine = H100, batch: int = 8192) -> Prediction:
    """The model's prediction for a benchmark row (see :func:`built`)."""
    return min((predict(s, name, m, batch) for name in built(s, impl)), key=lambda p: p.total_s)


def best_peer(preds: list[Prediction]) -> Prediction:
    return min((p for p in preds if p.name.startswith("peer:")), key=lambda p: p.total_s)


def rate_for_ratio(s: Shape, name: str, target: float, m: Machine = H100, batch: int = 8192) -> float | None:
    """The Triton dot rate (wgmma = mma.sync, FLOP/s) at which candidate ``name`` would run ``target`` times
    faster than the best peer in forward + backward (peers keep their rates); None if no rate reaches it."""
    peer = best_peer(predict_all(s, m, batch)).total_s

    def total(rate: float) -> float:
        rates = {k: dict(v) for k, v in m.rates.items()}
        rates[s.dtype][WGMMA] = rates[s.dtype][MMA_SYNC] = rate
        return predict(s, name, replace(m, rates=rates), batch).total_s

    lo, hi = 1e12, 1e16
    if total(hi) * target > peer:
        return None
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if total(mid) * target > peer else (lo, mid)
    return hi


def table(s: Shape, m: Machine = H100, batch: int = 8192) -> str:
    preds = predict_all(s, m, batch)
    peer = best_peer(preds)
    unit = "frame" if s.n < 64 else "sequence"
    lines = [f"**{s.name} block, N = {s.n}, width {s.c}, {s.heads} x {s.head_dim}, {s.dtype}, "
             f"{'frame mask' if s.frame_mask else 'no mask'}, dropout {'on' if s.dropout else 'off'}; "
             f"{m.name}, B = {batch}; predicted ns per {unit}**", "",
             "| candidate | kernels fwd/bwd | HBM KB fwd / bwd | GFLOP fwd / bwd (executed) | fwd ns | bwd ns | "
             "fwd+bwd ns | fwd+bwd vs best peer |", "|---|---|---|---|---|---|---|---|"]
    for p in sorted(preds, key=lambda p: p.total_s):
        lines.append(f"| {p.name} | {p.kernels[0]} / {p.kernels[1]} | {p.fwd_bytes / 1e3:.0f} / "
                     f"{p.bwd_bytes / 1e3:.0f} | {p.fwd_flops / 1e9:.3f} / {p.bwd_flops / 1e9:.3f} | "
                     f"{p.fwd_s * 1e9:.0f} | {p.bwd_s * 1e9:.0f} | {p.total_s * 1e9:.0f} | "
                     f"{peer.total_s / p.total_s:.2f}x |")
    return "\n".join(lines)


def kernel_breakdown(s: Shape, name: str, m: Machine = H100, batch: int = 8192) -> str:
    build = candidates(s)[name]
    lines = [f"{name} ({s.name}, {s.dtype}):"]
    for direction in ("fwd", "bwd"):
        for k in build(direction):
            ns = k.time(m, s.dtype, batch) * 1e9
            lines.append(f"  {direction} {k.name:40s} HBM {k.hbm / 1e3:8.1f} KB  MMA {k.total_flops / 1e6:8.2f} M  "
                         f"exp {k.exps / 1e3:7.1f} k  L2 {k.l2 / 1e3:7.1f} KB  -> {ns:7.1f} ns")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8192)
    parser.add_argument("--breakdown", action="store_true", help="per-kernel terms of every candidate")
    args = parser.parse_args(argv)
    for base in (CTRS, FTRS):
        for dtype in ("bf16", "fp32"):
            s = replace(base, dtype=dtype)
            print(table(s, batch=args.batch), "\n")
            if args.breakdown:
                for name in candidates(s):
                    print(kernel_breakdown(s, name, batch=args.batch))
                print()
        s = base
        print(f"**{s.name} attention alone, bf16: predicted ns per {'frame' if s.n < 64 else 'sequence'}**\n")
        print("| kernel | fwd ns | bwd ns | fwd HBM KB |\n|---|---|---|---|")
        for name, f, b, by in attention_only(s, batch=args.batch):
            print(f"| {name} | {f * 1e9:.0f} | {b * 1e9:.0f} | {by / 1e3:.0f} |")
        print()
        preds = predict_all(s, batch=args.batch)
        for p in preds:
            if not p.name.startswith("peer:"):
                rate = rate_for_ratio(s, p.name, 2.0, batch=args.batch)
                print(f"{s.name} {p.name}: Triton dot rate for 2x the best peer (fwd+bwd): "
                      f"{'unreachable' if rate is None else f'{rate / 1e12:.0f} TFLOP/s'}")
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
