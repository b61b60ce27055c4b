"""Fused joint embedding vs eager and ``torch.compile`` of the reference.

One test per (mode, output dtype, frames) times the implementations below on the same
inputs and records one row each:

- ``eager``: :func:`hitrs_fast.reference.naive_joint_embedding` (4 kernels; under bf16
  autocast, which is how a bf16 model runs it, the LayerNorm computes in fp32);
- ``compiled``: ``torch.compile`` of the same function;
- ``triton``: :func:`hitrs_fast.embedding.joint_embedding` with ``backend="triton"`` and its
  default backward kernel (``frames``);
- ``triton-tokens`` (fwd+bwd only): the same with ``HITRS_FAST_EMBEDDING_BWD=tokens``, the other
  backward kernel, so one run A/Bs the two (a forward row would repeat ``triton``: the forward
  is the same kernel). Each Triton row names its backward kernel in ``bwd_kernel``.

Coordinates and parameters are fp32 (loader output, fp32 master weights); "bf16" means
bf16 activations out. The backward takes gradients with respect to the five parameters
only, as in training: the coordinates are data and need no gradient (asking for one would
make the eager peers compute a ``[tokens, d] x [d, 3]`` product the model never needs).

The compiled peer is compiled afresh for every case (``torch._dynamo.reset()`` first) and
must show a compiled region in the profiler before it is timed; a case that ran eagerly
is recorded as skipped, never as "compiled".

Bytes model per token (weights and PE stay cached), d = 128:

- fwd: read x (12 B) + write y (d * out bytes) = 524 B fp32 / 268 B bf16;
- fwd+bwd: fwd + mean/rstd write (8) + read dy, x, mean/rstd (d * out + 12 + 8)
  = 2 * d * out bytes + 40 = 1 064 B fp32 / 552 B bf16.

GB/s and % of the floor use the copy bandwidth measured on the GPU under test. On CPU
(smoke mode) the kernel runs through the interpreter on tiny sizes and no row is a
speed result.
"""

from __future__ import annotations

import contextlib
import os
from unittest import mock

import pytest
import torch

from benchmarks.common import (
    compile_failure_types,
    fresh_compile,
    is_smoke,
    measure_call,
    measured_hbm_bandwidth,
    not_compiled_reason,
    record,
    skip,
)
from benchmarks.registry import BATCH_LADDER, HEADLINE_BATCH, selected_batches
from hitrs_fast.config import HiTRSConfig
from hitrs_fast.embedding import joint_embedding
from hitrs_fast.kernels.joint_embedding import BWD_VARIANT_ENV
from hitrs_fast.reference import naive_joint_embedding

CONFIG = HiTRSConfig()
V, C, D = CONFIG.num_joints, CONFIG.in_channels, CONFIG.frame_dim
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# F-TRS embeds frames independently, so the "batch" of this op is frames (x [F, V, C]);
# HITRS_BENCH_BATCHES selects a subset of the ladder.
FRAMES = selected_batches(BATCH_LADDER)
OUT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TARGET_SPEEDUP, TARGET_FLOOR = 5.0, 0.70  # library target, fwd+bwd: >= 5x eager and >= 70 % of the floor
TRITON_BWD = {"triton-tokens": "tokens", "triton": "frames"}
"""Triton rows and the backward kernel (``HITRS_FAST_EMBEDDING_BWD``) each one runs."""


def bytes_per_token(mode: str, out_dtype: torch.dtype) -> int:
    """HBM bytes per token of a fused implementation (module docstring)."""
    out = D * torch.empty((), dtype=out_dtype).element_size()
    return 4 * C + out if mode == "fwd" else 2 * out + 4 * C * 2 + 8 * 2


def _inputs(frames: int) -> list[torch.Tensor]:
    g = torch.Generator(device=DEVICE).manual_seed(0)
    x = torch.randn(frames, V, C, device=DEVICE, generator=g)
    params = [torch.randn(D, C, device=DEVICE, generator=g) / C**0.5, 0.1 * torch.randn(D, device=DEVICE, generator=g),
              1 + 0.1 * torch.randn(D, device=DEVICE, generator=g), 0.1 * torch.randn(D, device=DEVICE, generator=g),
              torch.randn(V, D, device=DEVICE, generator=g)]
    return [x, *params]


def _reference_call(fn, out_dtype: torch.dtype):
    """The eager (or compiled) reference as a bf16 model runs it: under autocast, cast once at the end."""
    if out_dtype == torch.float32:
        return fn

    def call(*t):
        with torch.autocast(DEVICE, dtype=out_dtype):
            return fn(*t).to(out_dtype)

    return call


def _make_step(fn, tensors: list[torch.Tensor], mode: str):
    """fwd: ``fn(x, *params)`` without autograd; fwd+bwd: forward, then the gradients of the parameters."""
    if mode == "fwd":
        def forward():
            with torch.no_grad():
                return fn(*tensors)
        return forward
    x, params = tensors[0], [t.detach().requires_grad_() for t in tensors[1:]]
    dy = torch.randn_like(fn(x, *params).detach())
    return lambda: torch.autograd.grad(fn(x, *params), params, dy)


def _gate(fn, out_dtype: torch.dtype, tensors: list[torch.Tensor]) -> bool:
    """Output and parameter gradients of ``fn`` vs the float64 oracle on the first frames."""
    x, params = tensors[0][:64].detach(), [t.detach() for t in tensors[1:]]
    leaves = [t.clone().requires_grad_() for t in params]
    out = fn(x, *leaves)
    dy = torch.randn_like(out.float()).to(out.dtype)
    grads = torch.autograd.grad(out, leaves, dy)
    o_leaves = [t.double().requires_grad_() for t in params]
    oracle = naive_joint_embedding(x.double(), *o_leaves)
    o_grads = torch.autograd.grad(oracle, o_leaves, dy.double())
    pairs = [(out, oracle), *zip(grads, o_grads, strict=True)]
    if out_dtype == torch.float32:  # the tolerance-table row of joint_embedding
        return all(torch.allclose(a.double(), b, atol=1e-4, rtol=1e-4) for a, b in pairs)
    # bf16 sanity bound (5e-2, the tolerance-table row of bf16 joint_embedding), scaled by each tensor's magnitude
    # because the weight gradients are sums over thousands of tokens.
    return all((a.double() - b).abs().max() <= 5e-2 * max(1.0, b.abs().max().item()) for a, b in pairs)


@contextlib.contextmanager
def _backward_kernel(impl: str):
    """``HITRS_FAST_EMBEDDING_BWD`` for a Triton row while it is gated, warmed up and timed (read at every backward)."""
    if impl not in TRITON_BWD:
        yield
        return
    with mock.patch.dict(os.environ, {BWD_VARIANT_ENV: TRITON_BWD[impl]}):
        yield


def _synchronised(step) -> None:
    """pytest-benchmark's own timer must see finished GPU work."""
    step()
    if DEVICE == "cuda":
        torch.cuda.synchronize()


@pytest.mark.benchmark(group="joint_embedding")
@pytest.mark.parametrize("frames", FRAMES, ids=lambda f: f"F{f}")
@pytest.mark.parametrize("dtype_name", list(OUT_DTYPES))
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
def test_joint_embedding(benchmark, mode, dtype_name, frames):
    out_dtype = OUT_DTYPES[dtype_name]
    tensors = _inputs(frames)
    tokens = frames * V
    # Smoke: aot_eager proves the wiring without minutes of CPU inductor compilation (it runs no
    # inductor graph, so the smoke check asks for the compiled region only).
    compile_backend = "aot_eager" if is_smoke() else "inductor"
    impls = {
        "eager": _reference_call(naive_joint_embedding, out_dtype),
        "compiled": _reference_call(fresh_compile(naive_joint_embedding, backend=compile_backend, dynamic=False),
                                    out_dtype),
        # The A/B row first, so the default row can carry the ratio.
        **({"triton-tokens": lambda *t: joint_embedding(*t, backend="triton", out_dtype=out_dtype)}
           if mode != "fwd" else {}),
        "triton": lambda *t: joint_embedding(*t, backend="triton", out_dtype=out_dtype),
    }
    case = {"op": "joint_embedding", "mode": mode, "out_dtype": dtype_name, "frames": frames}
    floor_bytes = bytes_per_token(mode, out_dtype) * tokens
    bandwidth = measured_hbm_bandwidth()
    warmup, rep = (1, 3) if is_smoke() else (25, 100)
    times: dict[str, float] = {}
    failed: list[str] = []
    for name, fn in impls.items():
        with _backward_kernel(name):
            passed = _gate(fn, out_dtype, tensors)
            step = _make_step(fn, tensors, mode)
            step()  # compilation and autotuning happen before timing
            try:
                measured = measure_call(step, compiled=name == "compiled", inductor=compile_backend == "inductor",
                                        warmup=warmup, rep=rep)
            except compile_failure_types() as exc:
                skip(f"joint_embedding/{name} {mode} {dtype_name} F{frames}", not_compiled_reason(exc), **case)
                continue
        timing = measured["timing"]
        if passed:  # speedups only against implementations that passed their gate
            times[name] = timing["median_ms"]
        seconds = timing["median_ms"] * 1e-3
        row = {
            **case, "impl": name, "tokens": tokens, "headline": frames >= HEADLINE_BATCH, **timing,
            "tests_passed": passed, "tokens_per_s": tokens / seconds, "peak_memory_bytes": measured["peak_bytes"],
            "grads": "parameters only (coordinates are data)" if mode != "fwd" else None,
            "compiled_check": measured["compiled_check"], "bytes_model_per_token": bytes_per_token(mode, out_dtype),
            # GB/s against the fused bytes model for every impl: the time to move the
            # unavoidable bytes, so the columns compare directly.
            "model_gb_per_s": floor_bytes / seconds / 1e9,
            "pct_of_floor": None if bandwidth is None else 100.0 * floor_bytes / bandwidth / seconds,
            "measured_hbm_bytes_per_s": bandwidth,
        }
        if name in TRITON_BWD:
            valid = passed and not timing["smoke"]
            row["bwd_kernel"] = TRITON_BWD[name] if mode != "fwd" else None
            row["speedup_vs_eager"] = times["eager"] / times[name] if valid and "eager" in times else None
            row["speedup_vs_compiled"] = times["compiled"] / times[name] if valid and "compiled" in times else None
            if name == "triton" and mode != "fwd":  # the A/B: the default backward over the other one
                row["speedup_vs_tokens_bwd"] = (times["triton-tokens"] / times[name]
                                                if valid and "triton-tokens" in times else None)
            if row["speedup_vs_eager"] is not None and mode == "fwd+bwd" and row["pct_of_floor"] is not None:
                row["meets_target"] = (row["speedup_vs_eager"] >= TARGET_SPEEDUP
                                       and row["pct_of_floor"] >= 100 * TARGET_FLOOR)
        if name == "triton":
            record(benchmark, **row)
            rounds, warmup_rounds = (1, 0) if is_smoke() else (3, 1)  # the do_bench row above is the result
            with _backward_kernel(name):
                benchmark.pedantic(_synchronised, args=(step,), rounds=rounds, warmup_rounds=warmup_rounds)
        else:
            record(None, **row)
        if name in TRITON_BWD and not passed:
            failed.append(name)
    assert not failed, f"joint embedding {', '.join(failed)} failed the correctness gate; their timings are invalid"
