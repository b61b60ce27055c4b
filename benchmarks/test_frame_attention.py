"""C-TRS frame-masked attention: our Triton kernel vs its peers (``docs/benchmarks.md``).

Run (GPU, headline batch 8 192)::

    python -m pytest benchmarks/test_frame_attention.py -q --benchmark-json=bench_frame_attention.json

``HITRS_BENCH_BATCHES=1,64,1024,8192,32768,65535,131072`` selects the batch ladder;
``HITRS_BENCH_SMOKE=1`` (or no CUDA) runs tiny sizes with the kernel in the Triton
interpreter and GPU-only peers skipped with their reason: those numbers only prove
the benchmark works.

Peers: ours (``frame_masked_attention(backend="triton")``), A0 eager reference (+ A0c
``torch.compile`` of it, GPU), A1 SDPA mem-efficient with a bool mask, A2 SDPA cuDNN
(bf16), A3 SDPA default, A4 FlexAttention (Triton backend, 128- and 64-blocks), A5
unmasked flash (not a correct result: an upper bound), A6 xformers if it imports.
Every peer except A5 must pass the float64 oracle gate on a slice of the batch
before it is timed; a peer that fails is skipped with the error it made.

Row metrics: ms (median, p20, p80), sequences/s, TFLOP/s (dense 4 N^2 d H fwd, 2.5x
bwd, 3.5x fwd+bwd), GB/s and % of the HBM floor (fwd bytes 4 N H d x elem size, bwd
2x, fwd+bwd 3x; measured copy bandwidth), peak memory, the backend that ran.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import pytest
import torch

from benchmarks.common import SKIPPED, is_smoke, measured_hbm_bandwidth, peak_memory_bytes, record, time_fn
from benchmarks.registry import CTRS_SHAPES, HEADLINE_BATCH, SMOKE_BATCH, SMOKE_SHAPES, AttentionShape
from hitrs_fast.attention import frame_masked_attention
from hitrs_fast.reference.attention import naive_attention

SMOKE = is_smoke()
CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
GRID_LIMIT = 65535  # peers that put the batch on grid axis 1/z
MODES = ("fwd", "bwd", "full")
MODE_FACTOR = {"fwd": 1.0, "bwd": 2.5, "full": 3.5}  # FLOPs, as flash-attention's flops()
BYTES_FACTOR = {"fwd": 1.0, "bwd": 2.0, "full": 3.0}  # HBM bytes (docs/kernels/frame_attention.md)
# Oracle gate: a row counts only if it matches the float64 oracle. Benchmarks never import tests/, so the
# two numbers of tests/tolerances.py used here are restated: fp32 atol 1e-5 (+ rtol 1e-5); bf16 2x rule + 1e-2.
FP32_ATOL, FP32_RTOL, BF16_ATOL, LOW_PRECISION_FACTOR = 1e-5, 1e-5, 1e-2, 2.0


def _batches() -> tuple[int, ...]:
    if SMOKE:
        return SMOKE_BATCH
    env = os.environ.get("HITRS_BENCH_BATCHES")
    return tuple(int(b) for b in env.split(",")) if env else (HEADLINE_BATCH,)


SHAPES = SMOKE_SHAPES if SMOKE else CTRS_SHAPES
DTYPES = (torch.bfloat16, torch.float32)


class PeerUnavailable(Exception):
    """The peer cannot run here; the message is the reason printed at the end."""


def _allowed(shape: AttentionShape, device) -> torch.Tensor:
    return shape.mask().materialize(shape.num_tokens, shape.num_tokens, device=device)


def _aligned_bool_mask(shape: AttentionShape, device) -> torch.Tensor:
    """``zeros(N, N_pad)[:, :N]`` with N_pad a multiple of 8, filled from the rule (row stride aligned)."""
    n = shape.num_tokens
    n_pad = (n + 7) // 8 * 8
    m = torch.zeros(n, n_pad, dtype=torch.bool, device=device)[:, :n]
    m.copy_(_allowed(shape, device))
    return m


def _chunked(fn: Callable, limit: int) -> Callable:
    """Run ``fn`` on batch chunks of at most ``limit`` sequences (grid-limited peers)."""

    def run(q, k, v):
        if q.shape[0] <= limit:
            return fn(q, k, v)
        return torch.cat([fn(q[i:i + limit], k[i:i + limit], v[i:i + limit]) for i in range(0, q.shape[0], limit)])

    return run


def _sdpa(backend_name: str | None, shape: AttentionShape, dtype: torch.dtype, masked: bool = True):
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    mask = _aligned_bool_mask(shape, DEVICE) if masked else None
    backends = {"efficient": SDPBackend.EFFICIENT_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
                "flash": SDPBackend.FLASH_ATTENTION}

    def run(q, k, v):
        if backend_name is None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        with sdpa_kernel([backends[backend_name]]):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    return run


def make_peer(name: str, shape: AttentionShape, dtype: torch.dtype) -> tuple[Callable, str]:
    """Returns ``(fn(q, k, v) -> out [B, H, N, D], backend description)`` or raises PeerUnavailable."""
    mask = shape.mask()
    if name == "ours":
        return (lambda q, k, v: frame_masked_attention(q, k, v, mask, backend="triton"),
                "triton (interpreter)" if not CUDA else "triton")
    if name == "A0-eager":
        return (lambda q, k, v: naive_attention(q, k, v, mask)), "eager"
    if name == "A0c-compiled":
        if not CUDA:
            raise PeerUnavailable("GPU only (torch.compile of the eager reference is timed on CUDA)")
        return torch.compile(lambda q, k, v: naive_attention(q, k, v, mask)), "inductor"
    if name == "A1-sdpa-efficient":
        if not CUDA:
            raise PeerUnavailable("SDPA mem-efficient kernel needs CUDA")
        return _chunked(_sdpa("efficient", shape, dtype), GRID_LIMIT), "EFFICIENT_ATTENTION (chunked > 65535)"
    if name == "A2-sdpa-cudnn":
        if not CUDA:
            raise PeerUnavailable("cuDNN attention needs CUDA")
        if dtype != torch.bfloat16:
            raise PeerUnavailable("cuDNN attention is bf16 only")
        version = torch.backends.cudnn.version() or 0
        if version < 91501 and shape.num_tokens % 128:
            raise PeerUnavailable(f"cuDNN {version} < 9.15.1 mishandles N % 128 != 0 (pytorch #169849)")
        return _chunked(_sdpa("cudnn", shape, dtype), GRID_LIMIT), "CUDNN_ATTENTION (chunked > 65535)"
    if name == "A3-sdpa-default":
        return _sdpa(None, shape, dtype), "SDPA default (backend chosen by torch)"
    if name in ("A4-flex-128", "A4-flex-64"):
        if not CUDA:
            raise PeerUnavailable("FlexAttention's Triton kernel needs CUDA here")
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        block = 128 if name.endswith("128") else 64
        n = shape.num_tokens
        bm = create_block_mask(mask.mask_mod(), None, None, n, n, device=DEVICE, BLOCK_SIZE=block)
        flex = torch.compile(flex_attention, dynamic=False)
        fn = lambda q, k, v: flex(q, k, v, block_mask=bm, kernel_options={"BACKEND": "TRITON"})
        return _chunked(fn, GRID_LIMIT), f"flex TRITON block {block}"
    if name == "A5-flash-unmasked":
        if not CUDA:
            raise PeerUnavailable("flash attention needs CUDA")
        if dtype != torch.bfloat16:
            raise PeerUnavailable("flash attention is bf16/fp16 only")
        return _sdpa("flash", shape, dtype, masked=False), "FLASH_ATTENTION, NO MASK (upper bound, not correct)"
    if name == "A6-xformers":
        try:
            import xformers.ops as xops
        except Exception as exc:  # any import failure (missing, ABI mismatch) means: skip with the error
            raise PeerUnavailable(f"xformers does not import: {type(exc).__name__}: {exc}") from None
        if not CUDA:
            raise PeerUnavailable("xformers memory_efficient_attention needs CUDA")
        n = shape.num_tokens
        n_pad = (n + 7) // 8 * 8
        bias = torch.zeros(1, 1, n, n_pad, device=DEVICE, dtype=dtype)[..., :n]
        bias.masked_fill_(~_allowed(shape, DEVICE), float("-inf"))

        def run(q, k, v):
            b, h = q.shape[:2]
            out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                  attn_bias=bias.expand(b, h, n, n))
            return out.transpose(1, 2)

        return run, "xformers cutlassF"
    raise ValueError(f"unknown peer {name!r}")


PEERS = ("ours", "A0-eager", "A0c-compiled", "A1-sdpa-efficient", "A2-sdpa-cudnn", "A3-sdpa-default",
         "A4-flex-128", "A4-flex-64", "A5-flash-unmasked", "A6-xformers")


def make_inputs(shape: AttentionShape, batch: int, dtype: torch.dtype, grad: bool):
    """BNHD views of one ``[B, N, 3*H*D]`` projection (the real layout), plus dO."""
    n, h, d = shape.num_tokens, shape.heads, shape.head_dim
    x = torch.randn(batch, n, 3 * h * d, device=DEVICE, dtype=dtype, requires_grad=grad)
    q, k, v = (t.view(batch, n, h, d).transpose(1, 2) for t in x.split(h * d, dim=-1))
    return x, q, k, v, torch.randn(batch, h, n, d, device=DEVICE, dtype=dtype)


def oracle_gate(fn: Callable, shape: AttentionShape, dtype: torch.dtype, mode: str) -> tuple[bool, str]:
    """Peer vs the float64 eager reference on 3 sequences (output, and dx for bwd/full)."""
    torch.manual_seed(0)  # the gate is reproducible run to run
    x, q, k, v, do = make_inputs(shape, 3, dtype, grad=True)
    mask = shape.mask()
    check_grad = mode != "fwd"

    def grads(attend, cast):
        xs = x.detach().to(cast).requires_grad_()
        n, h, d = shape.num_tokens, shape.heads, shape.head_dim
        qs, ks, vs = (t.view(3, n, h, d).transpose(1, 2) for t in xs.split(h * d, dim=-1))
        out = attend(qs, ks, vs)
        if not check_grad:
            return out.detach(), None
        (gx,) = torch.autograd.grad(out, xs, do.to(cast))
        return out.detach(), gx

    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # the oracle runs without TF32
    try:
        ref = grads(lambda a, b, c: naive_attention(a, b, c, mask), torch.float64)
        eager = grads(lambda a, b, c: naive_attention(a, b, c, mask), dtype) if dtype != torch.float32 else None
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev
    got = grads(fn, dtype)
    report = []
    ok = True
    for i, name in enumerate(("out", "dx")):
        if got[i] is None:
            continue
        err = (got[i].double() - ref[i]).abs()
        if dtype == torch.float32:
            bad = bool((err > FP32_ATOL + FP32_RTOL * ref[i].abs()).any())
            bound = FP32_ATOL
        else:
            bound = LOW_PRECISION_FACTOR * (eager[i].double() - ref[i]).abs().max().item() + BF16_ATOL
            bad = bool(err.max() > bound) or not bool(torch.isfinite(got[i]).all())
        ok &= not bad
        report.append(f"{name} max err {err.max().item():.3g} (bound {bound:.3g})")
    return ok, "; ".join(report)


CASES = [
    pytest.param(peer, shape, dtype, mode, batch,
                 id=f"{peer}-{shape.name}-{str(dtype).removeprefix('torch.')}-{mode}-B{batch}")
    for shape in SHAPES for dtype in DTYPES for mode in MODES for batch in _batches() for peer in PEERS
    if not (SMOKE and peer not in ("ours", "A0-eager", "A3-sdpa-default") and mode != "fwd")
]


@pytest.mark.benchmark(group="frame_attention")
@pytest.mark.parametrize(("peer", "shape", "dtype", "mode", "batch"), CASES)
def test_frame_attention(benchmark, peer: str, shape: AttentionShape, dtype: torch.dtype, mode: str, batch: int):
    try:
        fn, backend_ran = make_peer(peer, shape, dtype)
    except PeerUnavailable as exc:
        SKIPPED.append((peer, str(exc)))
        pytest.skip(f"{peer}: {exc}")
    if peer == "A5-flash-unmasked":
        passed, gate = False, "not a correct result (no mask): upper bound only"
    else:
        passed, gate = oracle_gate(fn, shape, dtype, mode)
        if not passed:
            SKIPPED.append((f"{peer} {shape.name} {dtype} {mode}", f"failed the oracle gate: {gate}"))
            pytest.skip(f"{peer} failed the oracle gate: {gate}")

    x, q, k, v, do = make_inputs(shape, batch, dtype, grad=mode != "fwd")
    if mode == "fwd":
        def target():
            with torch.no_grad():
                return fn(q, k, v)
    elif mode == "bwd":
        out = fn(q, k, v)
        target = lambda: torch.autograd.grad(out, x, do, retain_graph=True)
    else:
        target = lambda: torch.autograd.grad(fn(q, k, v), x, do)
    target()  # compilation, autotuning and block-mask creation happen before timing
    timing = time_fn(target, warmup=1 if SMOKE else 25, rep=3 if SMOKE else 100)
    peak = peak_memory_bytes(target)
    benchmark.pedantic(lambda: (target(), torch.cuda.synchronize() if CUDA else None), rounds=1 if not SMOKE else 2,
                       iterations=1, warmup_rounds=0)

    seconds = timing["median_ms"] * 1e-3
    elem = torch.finfo(dtype).bits // 8
    flops = shape.fwd_flops() * MODE_FACTOR[mode] * batch
    nbytes = shape.fwd_bytes(elem) * BYTES_FACTOR[mode] * batch
    bandwidth = measured_hbm_bandwidth()
    record(benchmark, op="frame_attention", peer=peer, shape=shape.name, dtype=str(dtype).removeprefix("torch."),
           mode=mode, batch=batch, layout="BNHD views", **timing,
           seq_per_s=batch / seconds, tflops=flops / seconds / 1e12,
           useful_tflops=flops * (1 - shape.masked_fraction()) / seconds / 1e12,
           flop_formula=f"4*N^2*d*H x {MODE_FACTOR[mode]}", gbps=nbytes / seconds / 1e9,
           hbm_bandwidth_gbps=bandwidth / 1e9 if bandwidth else None,
           pct_floor=100 * (nbytes / bandwidth) / seconds if bandwidth else None,
           peak_mem_mb=peak / 2 ** 20 if peak is not None else None,
           tests_passed=passed, oracle_gate=gate, backend_ran=backend_ran)
    assert math.isfinite(timing["median_ms"])
