"""A full pre-training step (forward, backward, fused AdamW) in samples/s, per implementation.

Rows (``benchmarks/pretrain_step.STEP_IMPLS``, on one batch of 64 x 100-frame samples, official preset): the
Triton backend eager, under ``torch.compile`` and under ``torch.compile`` with CUDA graphs; the best compiled
peers (PyTorch SDPA attention under ``max-autotune`` and ``reduce-overhead``); the torch backend eager and
compiled. Every row passes the lengths as training does (the CPU for eager steps, the device for compiled ones)
and records the activation memory kept for backward, the allocator's peak, the autotuned configs that ran and,
for our rows on a GPU, a profile of one step (kernel time by category, launches, idle gaps).

A compiled row is compiled afresh (``torch._dynamo.reset()``) for its case and must show a compiled region (and
on CUDA Triton kernels) in the profiler before it is timed; a recompilation while timing raises. A case that ran
eagerly is skipped with the reason. ``HITRS_BENCH_STEP_ROWS`` (comma-separated implementation names) picks rows.

On CPU (smoke mode) the tiny preset runs a few samples of the torch rows (with the profile, to run its code);
the Triton rows, which would run through the interpreter, and the compiled ones are left to the tests (Inductor
on CPU takes minutes); no row is a speed result.
"""

from __future__ import annotations

import os

import pytest
import torch

from benchmarks.common import (
    compile_failure_types,
    is_smoke,
    measure_call,
    not_compiled_reason,
    record,
    skip,
)
from benchmarks.memory import saved_activation_bytes
from benchmarks.pretrain_step import (
    STEP_IMPLS,
    autotuned_configs,
    build,
    make_batch,
    make_step,
    step_profile,
    training_flops,
)
from hitrs_fast import HiTRSConfig
from hitrs_fast.sampling import SampleRandom

SMOKE = is_smoke()
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
PRESET = "tiny" if SMOKE else "official"
BATCH, FRAMES = (2, 20) if SMOKE else (64, 100)  # 64 x 100-frame samples: the released micro-batch
DTYPES = ("fp32",) if SMOKE else ("bf16", "fp32")
ROWS_ENV = "HITRS_BENCH_STEP_ROWS"
_wanted = [r for r in os.environ.get(ROWS_ENV, "").split(",") if r]
IMPLS = [impl for impl in STEP_IMPLS if not _wanted or impl.name in _wanted]
# bf16 first (each dtype in STEP_IMPLS order): a campaign part that runs out of time loses the least important rows.
CASES = [(impl, dtype) for dtype in DTYPES for impl in IMPLS if dtype == "bf16" or not impl.compiled]


@pytest.mark.benchmark(group="model_step")
@pytest.mark.parametrize(("impl", "dtype"), CASES, ids=[f"{i.name}-{d}" for i, d in CASES])
def test_pretraining_step(benchmark, impl, dtype):
    case = {"op": "model_step", "peer": impl.name, "dtype": dtype}
    if impl.compiled and SMOKE:
        reason = "torch.compile of the whole step is timed on a GPU only (tests/models/test_compiled_step.py " \
                 "compiles the Triton step with Inductor on CPU)"
        skip(f"model_step/{impl.name}", reason, **case)
        pytest.skip(reason)
    if impl.ours and DEVICE != "cuda":
        reason = "the Triton backend on CPU runs through the interpreter (minutes a step); the model's equivalence " \
                 "is tested in tests/"
        skip(f"model_step/{impl.name}", reason, **case)
        pytest.skip(reason)
    if impl.cuda_graphs and DEVICE != "cuda":
        skip(f"model_step/{impl.name}", "CUDA graphs need a GPU", **case)
        pytest.skip("CUDA graphs need a GPU")
    model, opt, forward = build(PRESET, impl, DEVICE)
    x, lengths = make_batch(BATCH, FRAMES, DEVICE)
    bf16 = dtype == "bf16"
    step = make_step(forward, opt, x, lengths, bf16, impl)

    def forward_only():
        with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=bf16):
            return model(x, lengths, generator=SampleRandom(0, torch.arange(BATCH, device=DEVICE)))

    losses = step()  # warm-up: compilation and autotuning happen before timing
    assert torch.isfinite(losses["loss"])
    saved, _ = saved_activation_bytes(forward_only, model.parameters())
    try:
        measured = measure_call(step, compiled=impl.compiled, warmup=3 if SMOKE else 200, rep=5 if SMOKE else 1000)
    except compile_failure_types() as exc:
        skip(f"model_step/{impl.name} {dtype}", not_compiled_reason(exc), **case)
        pytest.skip(not_compiled_reason(exc))
    benchmark.pedantic(step, rounds=1, iterations=1)
    timing, peak = measured["timing"], measured["peak_bytes"]
    profile = step_profile(step, timing["median_ms"]) if impl.ours or SMOKE else None  # smoke: the path runs
    seq_per_s = BATCH / (timing["median_ms"] * 1e-3)
    flops = training_flops(FRAMES, HiTRSConfig.preset(PRESET))
    record(benchmark, **case, shape=f"{PRESET}-B{BATCH}-T{FRAMES}", mode="fwd+bwd+opt", batch=BATCH, **timing,
           seq_per_s=seq_per_s, tflops=None if SMOKE else flops * seq_per_s / 1e12,
           precision="bf16 autocast, fp32 parameters" if bf16 else "fp32", backend_ran=impl.backend,
           compile_mode=impl.compile_mode or "eager", lengths_on="device" if impl.compiled else "cpu",
           saved_activation_mb_per_seq=saved / BATCH / 2**20, compiled_check=measured["compiled_check"],
           ran=measured["kernels"],  # the longest kernels the profiler saw (which SDPA backend, which GEMMs)
           peak_mem_mb=None if peak is None else peak / 2**20, autotuned=autotuned_configs() if impl.ours else None,
           profile=profile, kernel_launches=None if profile is None else profile["kernel_launches"])
