"""Masked attention at the peers' shapes (issue 24): an additive ``[H, N, N]`` bias and / or a sliding temporal
window, ours vs SDPA with a float mask vs FlexAttention (``score_mod`` for the bias, a block mask for the window).

Run (GPU)::

    python -m pytest benchmarks/test_attention_features.py -q -s

Shapes: ``benchmarks.registry.PEER_SHAPES`` (N 64-750, head_dim 16-64, each at its own batch); ``HITRS_BENCH_SMOKE=1``
(or no CUDA) runs ``SMOKE_PEER_SHAPES`` with our kernel in the Triton interpreter and SDPA, FlexAttention skipped
with its reason: those numbers only prove the benchmark works.

Peers (each gets the same ``q, k, v [B, H, N, D]`` BNHD views and the same bias tensor; gradients w.r.t. q, k, v,
the bias is a constant, so no peer pays for its gradient):

- ``ours``: ``frame_masked_attention(q, k, v, SlidingWindowMask(...) or None, bias=bias, backend="triton")``;
- ``sdpa-float-mask``: ``scaled_dot_product_attention`` with the float mask ``bias`` + ``-inf`` outside the window,
  ``[H, N, N]`` broadcast over the batch (what a peer writes without a structured mask);
- ``flex``: compiled FlexAttention, ``score_mod`` adding ``bias[h, q, k]`` and the window as a block mask.

Every peer passes a float64 oracle gate (output, and dQ, dK, dV for ``full``) before it is timed; ours failing it
fails the case. Modes: ``fwd`` and ``full`` (forward + backward).
"""

from __future__ import annotations

import math

import pytest
import torch

from benchmarks.common import (
    compile_failure_types,
    fresh_compile,
    is_smoke,
    measure_call,
    not_compiled_reason,
    record,
    skip,
)
from benchmarks.registry import PEER_SHAPES, SMOKE_PEER_SHAPES, PeerShape
from hitrs_fast.attention import frame_masked_attention
from hitrs_fast.masks import NoMask
from hitrs_fast.reference.attention import naive_attention

SMOKE = is_smoke()
CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
PEERS = ("ours", "sdpa-float-mask", "flex")
MODES = ("fwd", "full")
MODE_FACTOR = {"fwd": 1.0, "full": 3.5}
FP32_ATOL, BF16_ATOL, LOW_PRECISION_FACTOR = 1e-5, 1e-2, 2.0  # tests/support/tolerances.py, restated
DTYPES = (torch.bfloat16,) if not SMOKE else (torch.float32,)


class PeerUnavailable(Exception):
    """The peer cannot run here; the message is the reason."""


def _bias(shape: PeerShape, dtype: torch.dtype) -> torch.Tensor | None:
    if not shape.bias:
        return None
    g = torch.Generator().manual_seed(0)
    return torch.randn(shape.heads, shape.num_tokens, shape.num_tokens, generator=g).to(DEVICE, dtype)


def make_peer(name: str, shape: PeerShape, bias: torch.Tensor | None):
    """``fn(q, k, v) -> out`` of one peer, or PeerUnavailable."""
    mask = shape.mask()
    if name == "ours":
        return lambda q, k, v: frame_masked_attention(q, k, v, mask, bias=bias, backend="triton")
    if name == "sdpa-float-mask":
        n = shape.num_tokens
        float_mask = torch.zeros(n, n, device=DEVICE, dtype=bias.dtype if bias is not None else torch.float32)
        if not isinstance(mask, NoMask):
            float_mask = float_mask.masked_fill(~mask.materialize(n, n, device=DEVICE), float("-inf"))
        float_mask = float_mask + bias if bias is not None else float_mask

        def sdpa(q, k, v):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=float_mask.to(q.dtype))

        return sdpa
    if name == "flex":
        if not CUDA:
            raise PeerUnavailable("FlexAttention is compiled for CUDA here (CPU smoke: not run)")
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        n = shape.num_tokens
        block_mask = None
        if not isinstance(mask, NoMask):
            block_mask = create_block_mask(mask.mask_mod(), None, None, n, n, device=DEVICE)
        score_mod = None
        if bias is not None:
            def score_mod(score, b, h, q_idx, k_idx):
                return score + bias[h, q_idx, k_idx]
        flex = fresh_compile(flex_attention, dynamic=False, fullgraph=True)
        return lambda q, k, v: flex(q, k, v, score_mod=score_mod, block_mask=block_mask)
    raise ValueError(name)


def make_inputs(shape: PeerShape, batch: int, dtype: torch.dtype, grad: bool):
    n, h, d = shape.num_tokens, shape.heads, shape.head_dim
    leaves = [torch.randn(batch, n, h * d, device=DEVICE, dtype=dtype, requires_grad=grad) for _ in range(3)]
    return [t.view(batch, n, h, d).transpose(1, 2) for t in leaves] + [torch.randn(batch, h, n, d, device=DEVICE,
                                                                                    dtype=dtype)]


def oracle_gate(fn, shape: PeerShape, bias, dtype, mode) -> tuple[bool, str]:
    """The peer vs the float64 reference on 2 sequences: output (and dQ, dK, dV in ``full``)."""
    torch.manual_seed(0)
    q, k, v, do = make_inputs(shape, 2, dtype, grad=False)
    mask = shape.mask()

    def run(attend, cast):
        leaves = [t.detach().to(cast).requires_grad_(mode == "full") for t in (q, k, v)]
        out = attend(*leaves)
        if mode == "fwd":
            return (out.detach(),)
        return (out.detach(), *torch.autograd.grad(out, leaves, do.to(cast)))

    def reference(cast):
        b = bias.to(cast) if bias is not None else None
        return run(lambda a, c, e: naive_attention(a, c, e, mask, bias=b), cast)

    ref = reference(torch.float64)
    same = reference(dtype) if dtype != torch.float32 else None
    got = run(fn, dtype)
    ok, report = True, []
    for i, name in enumerate(("out", "dq", "dk", "dv")[:len(got)]):
        err = (got[i].double() - ref[i]).abs().max().item()
        bound = FP32_ATOL if same is None else LOW_PRECISION_FACTOR * (same[i].double() - ref[i]).abs().max().item() \
            + BF16_ATOL
        ok &= err <= bound + (1e-5 * ref[i].abs().max().item() if same is None else 0.0)
        report.append(f"{name} max err {err:.3g} (bound {bound:.3g})")
    return ok, "; ".join(report)


CASES = [pytest.param(peer, shape, dtype, mode, id=f"{peer}-{shape.name}-{str(dtype)[6:]}-{mode}")
         for shape in (SMOKE_PEER_SHAPES if SMOKE else PEER_SHAPES) for dtype in DTYPES for peer in PEERS
         for mode in MODES]


@pytest.mark.benchmark(group="attention_features")
@pytest.mark.parametrize(("peer", "shape", "dtype", "mode"), CASES)
def test_attention_features(benchmark, peer: str, shape: PeerShape, dtype: torch.dtype, mode: str):
    batch = shape.batch
    case = {"op": "attention_features", "peer": peer, "shape": shape.name, "dtype": str(dtype)[6:], "mode": mode,
            "batch": batch}
    bias = _bias(shape, dtype)
    try:
        fn = make_peer(peer, shape, bias)
        passed, gate = oracle_gate(fn, shape, bias, dtype, mode)
    except PeerUnavailable as exc:
        skip(peer, str(exc), **case)
        pytest.skip(str(exc))
    except compile_failure_types() as exc:
        skip(f"{peer} {shape.name}", not_compiled_reason(exc), **case)
        pytest.skip(not_compiled_reason(exc))
    if not passed:
        if peer == "ours":
            pytest.fail(f"our kernel failed the oracle gate: {gate}")
        skip(f"{peer} {shape.name} {mode}", f"failed the oracle gate: {gate}", **case)
        pytest.skip(gate)
    q, k, v, do = make_inputs(shape, batch, dtype, grad=mode == "full")
    if mode == "fwd":
        def target():
            with torch.no_grad():
                return fn(q, k, v)
    else:
        target = lambda: torch.autograd.grad(fn(q, k, v), (q, k, v), do)
    target()  # compilation and autotuning before timing
    measured = measure_call(target, compiled=peer == "flex", warmup=1 if SMOKE else 25, rep=3 if SMOKE else 100)
    benchmark.pedantic(lambda: (target(), torch.cuda.synchronize() if CUDA else None), rounds=1, iterations=1,
                       warmup_rounds=0)
    timing = measured["timing"]
    seconds = timing["median_ms"] * 1e-3
    record(benchmark, **case, layout="BNHD views, grads w.r.t. q, k, v; bias constant", **timing,
           seq_per_s=batch / seconds, tflops=shape.fwd_flops() * MODE_FACTOR[mode] * batch / seconds / 1e12,
           flop_formula=f"4*N^2*d*H x {MODE_FACTOR[mode]} (dense)", peak_mem_mb=(
               measured["peak_bytes"] / 2**20 if measured["peak_bytes"] is not None else None),
           tests_passed=passed, oracle_gate=gate, backend_ran=peer, kernels=measured["kernels"],
           compiled_check=measured["compiled_check"])
    assert math.isfinite(timing["median_ms"])
