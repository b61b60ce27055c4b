"""The bf16 residual stream (``HiTRSConfig.residual_stream``): what it changes, and its numerics gate.

Under autocast the released model's C-TRS and V-TRS streams are fp32 (fp32 positions and CLS added to the bf16
input map); ``"autocast"`` keeps them in the autocast dtype. Without autocast the two settings are the same model
bit for bit. The gate (``benchmarks/residual_numerics.py``, 200 steps in docs/benchmarks.md) runs here on a short
curve: the bf16 stream's losses stay as close to fp32 training as bf16 autocast's own.
"""

from __future__ import annotations

import torch

from benchmarks.residual_numerics import RUNS, gate, train_losses
from hitrs_fast import HiTRS, HiTRSConfig

TINY = HiTRSConfig.preset("tiny")


def _stream_dtypes(config: HiTRSConfig, autocast: bool) -> dict[str, torch.dtype]:
    torch.manual_seed(0)
    model = HiTRS(config).eval()
    seen = {}
    for name in ("clip_encoder", "video_encoder"):
        layer = getattr(model, name).transformer.layers[0]
        layer.register_forward_pre_hook(lambda m, args, name=name: seen.__setitem__(name, args[0].dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        model(torch.randn(2, 1, 30, 25, 3), torch.tensor([30, 21]))
    return seen


def test_stream_dtype_follows_the_setting():
    assert _stream_dtypes(TINY, autocast=True) == {"clip_encoder": torch.float32, "video_encoder": torch.float32}
    bf16 = TINY.replace(residual_stream="autocast")
    assert _stream_dtypes(bf16, autocast=True) == {"clip_encoder": torch.bfloat16, "video_encoder": torch.bfloat16}
    assert _stream_dtypes(bf16, autocast=False) == {"clip_encoder": torch.float32, "video_encoder": torch.float32}


def test_without_autocast_the_settings_are_the_same_model():
    x, lengths = torch.randn(2, 2, 30, 25, 3), torch.tensor([30, 17])
    outs = []
    for stream in ("parameters", "autocast"):
        torch.manual_seed(0)
        outs.append(HiTRS(TINY.replace(residual_stream=stream)).eval()(x, lengths).pooled)
    assert torch.equal(*outs)


def test_bf16_stream_training_stays_within_the_gate():
    # Short: bf16 matmuls are slow on a CPU (the 200-step gate is the script's, recorded in docs/benchmarks.md).
    curves = {name: train_losses(TINY.replace(residual_stream=stream), bf16=bf16, steps=12, batch=4, frames=20,
                                 device="cpu") for name, bf16, stream in RUNS}
    result = gate(curves, window=4)
    assert result["passed"], result
