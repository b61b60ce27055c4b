"""One Hi-TRS pre-training step on a fixed batch, and the FLOP model used to turn its rate into MFU.

Shared by ``benchmarks/test_model_step.py`` (per-step ``do_bench`` medians, memory) and
``benchmarks/pretrain_throughput.py`` (samples/s of a training loop, MFU).

The step is what a training micro-step does: ``HiTRSForPretraining`` forward, backward of
``out["loss"]``, one AdamW step. "bf16" runs the forward under
``torch.autocast(device, torch.bfloat16)`` with fp32 parameters (mixed precision); a model
cast with ``model.to(torch.bfloat16)`` is not used.

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
from typing import Any

import torch

from hitrs_fast import HiTRSConfig, HiTRSForPretraining
from hitrs_fast.sampling import SampleRandom

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


def make_batch(batch: int, frames: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinates ``[B, T, 25, 3]`` (fp32, loader-like scale) and lengths ``[B]`` = T."""
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, frames, 25, 3, device=device, generator=g) * 0.2
    return x, torch.full((batch,), frames, device=device)


def build(preset: str, backend: str, device: str, compiled: bool = False,
          compile_fn: Callable | None = None) -> tuple[torch.nn.Module, torch.optim.Optimizer, Callable]:
    """Model (fp32 parameters), fused AdamW on CUDA, and the callable the step runs (``compile_fn(model)``)."""
    torch.manual_seed(0)
    model = HiTRSForPretraining(HiTRSConfig.preset(preset), backend=backend).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda" or None)
    forward = (compile_fn or torch.compile)(model) if compiled else model
    return model, opt, forward


def make_step(forward: Callable, opt: torch.optim.Optimizer, x: torch.Tensor, lengths: torch.Tensor,
              bf16: bool) -> Callable[[int], dict[str, Any]]:
    """``step(i)``: forward (bf16 autocast if asked) + backward + AdamW; pretext draws seeded by ``i``."""
    device = x.device.type
    ids = torch.arange(x.shape[0], device=x.device)

    def step(i: int = 0) -> dict[str, Any]:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            out = forward(x, lengths, generator=SampleRandom(i, ids))
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        return out

    return step
