"""One Hi-TRS pre-training step on a fixed batch, and the FLOP model used to turn its rate into MFU.

Shared by ``benchmarks/test_model_step.py`` (per-step ``do_bench`` medians, memory, a profile) and
``benchmarks/pretrain_throughput.py`` (samples/s of a training loop, MFU).

The step is what a training micro-step does: ``HiTRSForPretraining`` forward, backward of
``out["loss"]``, one fused AdamW step. "bf16" runs the forward under
``torch.autocast(device, torch.bfloat16)`` with fp32 parameters (mixed precision); a model
cast with ``model.to(torch.bfloat16)`` is not used. Each implementation (:data:`STEP_IMPLS`) is a model
backend and a ``torch.compile`` mode, compiled as training compiles it (:mod:`hitrs_fast.training.compiled`):
eager steps take the lengths on the CPU, as the loader yields them (the encoder packs away batch padding
without a device sync); compiled ones take lengths and the pretext seed as device tensors.

FLOP model (2 FLOPs per multiply-add, dense attention, each sample at its own length T;
W = ceil(T / clip_stride) clips):

- F-TRS runs over T + 2 * clip_pad frames (the end padding is part of the model): per
  frame, ``frame_layers`` x (V tokens of linear work + dense attention over V) plus the
  joint embedding;
- C-TRS runs over W + 2 clips ((W - 1) context + 1 target + 2 clip-order): per clip,
  ``clip_layers`` x (N = clip_len * V + 1 tokens of linear work + attention over N) plus
  the clip input map;
- V-TRS runs twice over W tokens (+ CLS in attention) plus its input map;
- training = 3 x forward, except the target clip, which runs without gradient (1 x).

Per token per layer the linear work is 2 * (4 * dim * H * d_head + 2 * dim * ffn). For the
official preset at T = 100 this gives 19.7 GFLOP forward and 57.3 GFLOP per training
sample (50 frames: 32.4; 300 frames: 156.9).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from hitrs_fast import HiTRSConfig, HiTRSForPretraining
from hitrs_fast.training.compiled import CompileSettings, compile_module, step_inputs

PEAK_ENV = "HITRS_BENCH_PEAK_TFLOPS"


def _linear(dim: int, ffn: int, cfg: HiTRSConfig) -> float:
    """FLOPs of one token through one layer's projections (Q, K, V, O) and feed-forward."""
    inner = cfg.num_heads * cfg.head_dim
    return 2.0 * (4 * dim * inner + 2 * dim * ffn)


def _attention(tokens: int, cfg: HiTRSConfig) -> float:
    """Dense attention FLOPs of one sequence in one layer: 4 N^2 H d."""
    return 4.0 * tokens * tokens * cfg.num_heads * cfg.head_dim


def forward_flops_by_level(frames: int, cfg: HiTRSConfig) -> dict[str, float]:
    """Forward FLOPs of one pre-training sample of ``frames`` frames, per level, plus one C-TRS clip's cost."""
    v = cfg.num_joints
    clips = math.ceil(frames / cfg.clip_stride)
    per_frame = (cfg.frame_layers * (v * _linear(cfg.frame_dim, cfg.frame_ffn, cfg) + _attention(v, cfg))
                 + v * 2 * cfg.in_channels * cfg.frame_dim)
    n = cfg.clip_tokens
    per_clip = (cfg.clip_layers * (n * _linear(cfg.clip_dim, cfg.clip_ffn, cfg) + _attention(n, cfg))
                + n * 2 * cfg.frame_dim * cfg.clip_dim)
    per_video_pass = (cfg.video_layers * (clips * _linear(cfg.video_dim, cfg.video_ffn, cfg)
                                          + _attention(clips + 1, cfg))
                      + clips * 2 * cfg.clip_dim * cfg.video_dim)
    return {"frame": (frames + 2 * cfg.clip_pad) * per_frame, "clip": (clips + 2) * per_clip,
            "video": 2 * per_video_pass, "one_clip": per_clip}


def training_flops(frames: int, cfg: HiTRSConfig) -> float:
    """Model FLOPs of one pre-training sample (forward + backward) of ``frames`` frames."""
    f = forward_flops_by_level(frames, cfg)
    return 3.0 * (f["frame"] + f["clip"] + f["video"]) - 2.0 * f["one_clip"]


def peak_bf16_flops(device_name: str) -> float | None:
    """Dense bf16 tensor-core peak of the GPU (spec sheet), or ``HITRS_BENCH_PEAK_TFLOPS``; None if unknown."""
    if os.environ.get(PEAK_ENV):
        return float(os.environ[PEAK_ENV]) * 1e12
    name = device_name.upper()
    if "H100" in name and "PCIE" in name:
        return 756e12
    if "H100" in name and "NVL" in name:
        return 835e12
    if "H100" in name or "H200" in name:
        return 989e12  # SXM; H200 has the same GH100 compute
    return None


@dataclass(frozen=True)
class StepImpl:
    """How a step row runs: the model ``backend`` and the ``torch.compile`` mode (None: eager)."""

    name: str
    backend: str
    compile_mode: str | None = None

    @property
    def compiled(self) -> bool:
        return self.compile_mode is not None

    @property
    def ours(self) -> bool:
        return self.backend == "triton"

    @property
    def cuda_graphs(self) -> bool:
        return self.compile_mode == "reduce-overhead"


STEP_IMPLS = (
    # Ours: the Triton kernels under torch.compile (Inductor fuses around them), with and without CUDA graphs.
    StepImpl("triton+compile", "triton", "default"),
    StepImpl("triton+compile+cudagraphs", "triton", "reduce-overhead"),
    # The best compiled peers: PyTorch SDPA attention (cuDNN on Hopper) with max-autotune, and with CUDA graphs.
    StepImpl("sdpa+compile max-autotune", "sdpa", "max-autotune"),
    StepImpl("sdpa+compile reduce-overhead", "sdpa", "reduce-overhead"),
    StepImpl("triton", "triton"),
    StepImpl("torch", "torch"),
    # The first GPU run's compiled peer: the reference math (materialised scores) under torch.compile.
    StepImpl("torch+compile", "torch", "default"),
    StepImpl("triton+compile max-autotune", "triton", "max-autotune"),
)
"""In the order a time-boxed campaign runs them: the rows that decide the design first."""
IMPLS_BY_NAME = {impl.name: impl for impl in STEP_IMPLS}


def make_batch(batch: int, frames: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinates ``[B, T, 25, 3]`` (fp32, loader-like scale) on ``device`` and lengths ``[B]`` = T on the CPU,
    where the loader yields them."""
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, frames, 25, 3, device=device, generator=g) * 0.2
    return x, torch.full((batch,), frames)


def build(preset: str, impl: StepImpl, device: str,
          config: HiTRSConfig | None = None) -> tuple[torch.nn.Module, torch.optim.Optimizer, Callable]:
    """Model (fp32 parameters), fused AdamW on CUDA, and the callable the step runs (compiled afresh, after
    ``torch._dynamo.reset()``, for a compiled ``impl``)."""
    torch.manual_seed(0)
    model = HiTRSForPretraining(config or HiTRSConfig.preset(preset), backend=impl.backend).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda" or None)
    if not impl.compiled:
        return model, opt, model
    torch._dynamo.reset()
    return model, opt, compile_module(model, CompileSettings(impl.compile_mode))


def make_step(forward: Callable, opt: torch.optim.Optimizer, x: torch.Tensor, lengths: torch.Tensor,
              bf16: bool, impl: StepImpl) -> Callable[[int], dict[str, Any]]:
    """``step(i)``: forward (bf16 autocast if asked) + backward + AdamW; pretext draws seeded by ``i``."""
    device = x.device.type
    ids = torch.arange(x.shape[0], device=x.device)

    def step(i: int = 0) -> dict[str, Any]:
        if impl.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's graph outputs may be overwritten
        inputs, lens, rng = step_inputs(x, lengths, ids, i, impl.compiled)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            out = forward(inputs, lens, generator=rng)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        return out

    return step


def autotuned_configs() -> dict[str, dict[str, str]]:
    """The config every autotuned kernel of this package chose, per kernel and key (eager launches and the configs
    pinned into compiled graphs); empty before a Triton kernel ran."""
    import sys

    tuning = sys.modules.get("hitrs_fast.kernels.common.tuning")
    return tuning.chosen_configs() if tuning is not None else {}


# Profile categories of one step's GPU kernels, by kernel name (first match wins).
PROFILE_CATEGORIES = (
    ("attention (ours)", ("frame_attention_",)),
    ("fused sublayers and embedding (ours)", ("attention_block_", "ffn_block_", "joint_embedding_")),
    ("attention (peer)", ("fmha", "flash", "cudnn", "attention", "sdpa")),
    ("GEMM", ("gemm", "cutlass", "xmma", "nvjet", "cublas", "triton_tem_", "matmul", "splitk")),
    ("optimizer", ("adam", "multi_tensor")),
    ("Inductor fused kernels", ("triton_",)),
    ("other (eager ATen kernels)", ("",)),
)


def step_profile(step: Callable[[], Any], step_ms: float) -> dict[str, Any]:
    """Where one step's GPU time goes: kernel time and launches per :data:`PROFILE_CATEGORIES`, and the rest of
    ``step_ms`` (the step's median) as idle / launch gaps. On CPU: the op counts only (no GPU timeline)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    if cuda:
        torch.cuda.synchronize()
    with profile(activities=activities) as prof:
        step()
        if cuda:
            torch.cuda.synchronize()
    table = {name: {"ms": 0.0, "launches": 0} for name, _ in PROFILE_CATEGORIES}
    kernels = [e for e in prof.events() if cuda and e.device_type == torch.autograd.DeviceType.CUDA
               and not e.name.startswith(("Memcpy", "Memset"))]
    for event in kernels:
        name = event.name.lower()
        category = next(c for c, keys in PROFILE_CATEGORIES if any(k in name for k in keys))
        table[category]["ms"] += event.device_time_total / 1e3 if hasattr(event, "device_time_total") \
            else event.cuda_time_total / 1e3
        table[category]["launches"] += 1
    busy = sum(v["ms"] for v in table.values())
    table["idle / launch gaps"] = {"ms": max(0.0, step_ms - busy) if cuda else None, "launches": None}
    return {"categories": table, "kernel_launches": len(kernels) if cuda else None,
            "kernel_ms": busy if cuda else None}
