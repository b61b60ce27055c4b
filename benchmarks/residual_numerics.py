"""Numerics gate of the bf16 residual stream (``HiTRSConfig.residual_stream="autocast"``): pre-training losses.

Three runs of the same pre-training from the same initial weights and batches: fp32 (the reference), bf16
autocast with the released fp32 residual stream, and bf16 autocast with a bf16 stream. The gate, the
flash-attention rule applied to the training curve: in every window of steps, the bf16 stream's mean loss stays
within twice the largest deviation of the fp32-stream bf16 run from the fp32 run (over all windows), plus the bf16
tolerance of the model's row in the tolerance table (2e-2). A bf16 stream that drifts further than bf16 autocast
itself already does fails.

    python -m benchmarks.residual_numerics [--steps 200] [--preset tiny] [--device cpu]

On a CPU this is the tiny preset under CPU bf16 autocast; it says whether the stream's rounding hurts the
optimisation, not how fast anything is.
"""

from __future__ import annotations

import argparse
import json

import torch

from hitrs_fast import HiTRSConfig, HiTRSForPretraining
from hitrs_fast.sampling import SampleRandom

LOW_PRECISION_FACTOR = 2.0
BF16_ATOL = 2e-2  # the ("model", bfloat16) row of tests/support/tolerances.py
RUNS = (("fp32", False, "parameters"), ("bf16 autocast, fp32 stream", True, "parameters"),
        ("bf16 autocast, bf16 stream", True, "autocast"))


def train_losses(config: HiTRSConfig, *, bf16: bool, steps: int, batch: int, frames: int, device: str,
                 seed: int = 0) -> list[float]:
    """Losses of ``steps`` AdamW steps on synthetic moving skeletons (the same batches for every run)."""
    torch.manual_seed(seed)
    model = HiTRSForPretraining(config, backend="torch").to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed + 1)
    base = torch.randn(64, 1, 25, 3, generator=g) * 0.3
    losses = []
    for step in range(steps):
        idx = torch.randint(0, base.shape[0], (batch,), generator=g)
        phase = torch.rand(batch, 1, 1, 1, generator=g) * 6.28
        t = torch.arange(frames).view(1, frames, 1, 1) * 0.2
        x = (base[idx] + 0.2 * torch.sin(t + phase) * torch.randn(batch, 1, 25, 3, generator=g)).to(device)
        lengths = torch.randint(config.min_pretrain_frames, frames + 1, (batch,), generator=g)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            out = model(x, lengths, generator=SampleRandom(1000 * seed + step, idx.to(device)))
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    return losses


def window_means(losses: list[float], window: int) -> list[float]:
    return [sum(losses[i:i + window]) / len(losses[i:i + window]) for i in range(0, len(losses), window)]


def gate(curves: dict[str, list[float]], window: int) -> dict:
    """The gate's numbers: per-window deviations from fp32 of both bf16 runs and whether the bf16 stream passes."""
    ref = window_means(curves["fp32"], window)
    dev = {name: [abs(a - b) for a, b in zip(window_means(curves[name], window), ref, strict=True)]
           for name, _, _ in RUNS[1:]}
    bound = LOW_PRECISION_FACTOR * max(dev["bf16 autocast, fp32 stream"]) + BF16_ATOL
    worst = max(dev["bf16 autocast, bf16 stream"])
    return {"window": window, "bound": bound, "worst_bf16_stream": worst,
            "worst_fp32_stream": max(dev["bf16 autocast, fp32 stream"]), "passed": worst <= bound}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--window", type=int, default=20)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    curves = {}
    for name, bf16, stream in RUNS:
        cfg = HiTRSConfig.preset(args.preset, residual_stream=stream)
        curves[name] = train_losses(cfg, bf16=bf16, steps=args.steps, batch=args.batch, frames=args.frames,
                                    device=args.device)
        print(f"{name}: first {curves[name][0]:.4f}, last-window mean "
              f"{window_means(curves[name], args.window)[-1]:.4f}", flush=True)
    result = gate(curves, args.window)
    print(json.dumps(result))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
