"""Activation memory kept for backward per pre-training sequence, by backend.

    python -m benchmarks.activation_memory [--preset official] [--frames 100] [--batch 2]

An exact count through saved-tensor hooks (``benchmarks/memory.py``), so it holds on any
device; on CPU the Triton backend runs through the interpreter (slow but exact). On a GPU
the campaign also records the allocator's peak (``benchmarks/test_model_step.py``).
"""

from __future__ import annotations

import argparse
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from benchmarks.memory import saved_activation_bytes  # noqa: E402
from hitrs_fast import HiTRSConfig, HiTRSForPretraining  # noqa: E402
from hitrs_fast.sampling import SampleRandom  # noqa: E402


def count(preset: str, backend: str, batch: int, frames: int, dtype: torch.dtype) -> float:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = HiTRSForPretraining(HiTRSConfig.preset(preset), backend=backend).to(device)
    x = torch.randn(batch, frames, 25, 3, device=device) * 0.2
    lengths = torch.full((batch,), frames, device=device)

    def forward():
        with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
            return model(x, lengths, generator=SampleRandom(0, torch.arange(batch)))

    saved, _ = saved_activation_bytes(forward, model.parameters())
    return saved / batch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="official")
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--backends", default="torch,sdpa,triton")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    args = p.parse_args(argv)
    dtype = torch.float32 if args.dtype == "fp32" else torch.bfloat16
    print(f"saved activations per sequence, preset {args.preset}, T = {args.frames}, {args.dtype}, "
          f"device {'cuda' if torch.cuda.is_available() else 'cpu'}")
    for backend in args.backends.split(","):
        # "sdpa" is the attention path "auto" takes off CUDA; the model-level name is "auto".
        mb = count(args.preset, "auto" if backend == "sdpa" else backend, args.batch, args.frames, dtype) / 2**20
        print(f"  {backend:<8} {mb:10.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
