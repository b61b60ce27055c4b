"""A full pre-training step (forward, backward, optimizer) in sequences/s.

Rows: the torch backend, ``torch.compile`` of the torch backend, and the Triton backend,
each on the same batch, with the activation memory kept for backward per sequence
(counted exactly through saved-tensor hooks on any device) and, on CUDA, the allocator's
peak. Target on a GPU (``docs/benchmarks.md``): Triton backend >= 2x the torch
backend on the official config in bf16.

On CPU (smoke mode) the tiny preset runs a few samples; the Triton backend would run
through the interpreter and is skipped with the reason printed; no row is a speed result.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.common import SKIPPED, is_smoke, peak_memory_bytes, record, time_fn
from benchmarks.memory import saved_activation_bytes
from hitrs_fast import HiTRSConfig, HiTRSForPretraining
from hitrs_fast.sampling import SampleRandom

SMOKE = is_smoke()
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
PRESET = "tiny" if SMOKE else "official"
BATCH, FRAMES = (4, 24) if SMOKE else (64, 100)  # 64 x 100-frame samples: the released micro-batch
DTYPES = ("fp32",) if SMOKE else ("bf16", "fp32")
TRAIN_FLOP_PER_SAMPLE_T100 = 57.3e9  # forward + backward, official preset, T = 100


def make_batch():
    g = torch.Generator(device=DEVICE).manual_seed(0)
    x = torch.randn(BATCH, FRAMES, 25, 3, device=DEVICE, generator=g) * 0.2
    lengths = torch.full((BATCH,), FRAMES, device=DEVICE)
    return x, lengths


def build(backend: str, compiled: bool):
    torch.manual_seed(0)
    model = HiTRSForPretraining(HiTRSConfig.preset(PRESET), backend=backend).to(DEVICE)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=DEVICE == "cuda")
    forward = torch.compile(model) if compiled else model
    return model, opt, forward


@pytest.mark.benchmark(group="model_step")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", ["torch", "torch+compile", "triton"])
def test_pretraining_step(benchmark, impl, dtype):
    if impl == "triton" and DEVICE != "cuda":
        reason = "Triton backend on CPU runs through the interpreter; model equivalence is tested in tests/"
        SKIPPED.append((f"model_step/{impl}", reason))
        pytest.skip(reason)
    if impl == "torch+compile" and SMOKE:
        reason = "torch.compile of the whole model is timed on GPU only (CPU compile takes minutes)"
        SKIPPED.append((f"model_step/{impl}", reason))
        pytest.skip(reason)
    backend = "triton" if impl == "triton" else "torch"
    model, opt, forward = build(backend, compiled=impl == "torch+compile")
    x, lengths = make_batch()
    ids = torch.arange(BATCH, device=DEVICE)
    amp = torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=dtype == "bf16")

    def step():
        with amp:
            out = forward(x, lengths, generator=SampleRandom(0, ids))
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        return out

    def forward_only():
        with amp:
            return forward(x, lengths, generator=SampleRandom(0, ids))

    losses = step()  # warm-up: compilation and autotuning happen before timing
    assert torch.isfinite(losses["loss"])
    saved, _ = saved_activation_bytes(forward_only, model.parameters())
    timing = time_fn(step, warmup=3 if SMOKE else 200, rep=5 if SMOKE else 1000)
    benchmark.pedantic(step, rounds=1, iterations=1)
    seq_per_s = BATCH / (timing["median_ms"] * 1e-3)
    record(benchmark, op="model_step", peer=impl, shape=f"{PRESET}-B{BATCH}-T{FRAMES}", dtype=dtype, mode="fwd+bwd+opt",
           batch=BATCH, **timing, seq_per_s=seq_per_s,
           tflops=None if SMOKE else TRAIN_FLOP_PER_SAMPLE_T100 * seq_per_s / 1e12,
           saved_activation_mb_per_seq=saved / BATCH / 2**20, backend_ran=backend,
           peak_mem_mb=None if (peak := peak_memory_bytes(step)) is None else peak / 2**20)
