"""The one tolerance table of the test suite, and the verbose comparison helper.

Rule for low precision (the flash-attention rule): the kernel's error against the
float64 oracle may be at most ``LOW_PRECISION_FACTOR`` times the error of PyTorch in
the same dtype against the oracle, plus ``atol``. float32 is compared directly.
"""

from __future__ import annotations

import torch

LOW_PRECISION_FACTOR = 2.0

# (op, dtype) -> (atol, rtol). Gradients use the same row as the output.
TOLERANCES: dict[tuple[str, torch.dtype], tuple[float, float]] = {
    ("frame_attention", torch.float32): (1e-5, 1e-5),
    ("frame_attention", torch.float16): (1e-3, 0.0),
    ("frame_attention", torch.bfloat16): (1e-2, 0.0),
    # fp32 I/O with HITRS_FAST_FP32_PRECISION=tf32 (GPU only; the interpreter computes fp32): operands
    # rounded to 10 mantissa bits, relative error about 2^-11 per product, so ~1e-3 on unit-scale O and grads.
    ("frame_attention_tf32", torch.float32): (5e-3, 5e-3),
    # The attention sublayer (LN, projections, attention, W_o): weight gradients sum over every row, so they are
    # tens of times larger than the activations; fp32 keeps a relative bound.
    ("attention_block", torch.float32): (1e-4, 1e-4),
    ("attention_block", torch.float16): (2e-3, 0.0),
    ("attention_block", torch.bfloat16): (2e-2, 0.0),
    # The feed-forward sublayer: like the attention sublayer, its weight and bias gradients sum over every row.
    ("ffn_block", torch.float32): (1e-4, 1e-4),
    ("ffn_block", torch.float16): (2e-3, 0.0),
    ("ffn_block", torch.bfloat16): (2e-2, 0.0),
    ("joint_embedding", torch.float32): (1e-4, 1e-4),
    ("joint_embedding", torch.float16): (1e-2, 0.0),
    ("joint_embedding", torch.bfloat16): (5e-2, 0.0),
    # Whole model, torch backend vs another backend, float32 (losses and gradients).
    ("model", torch.float32): (1e-4, 1e-3),
    # Whole model in bf16 (2x rule against the torch backend in bf16, both against float64): losses and gradients.
    ("model", torch.bfloat16): (2e-2, 0.0),
}


def tolerance(op: str, dtype: torch.dtype) -> tuple[float, float]:
    try:
        return TOLERANCES[(op, dtype)]
    except KeyError:
        raise KeyError(f"no tolerance for op {op!r} in {dtype}; add a row to tests/support/tolerances.py") from None


def assert_close_verbose(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float, name: str) -> None:
    """Like torch.testing.assert_close but says where and how much, NaN and inf included."""
    actual_d, expected_d = actual.detach().double().cpu(), expected.detach().double().cpu()
    if actual_d.shape != expected_d.shape:
        raise AssertionError(f"{name}: shape {tuple(actual_d.shape)} != expected {tuple(expected_d.shape)}")
    bad_nonfinite = ~torch.isfinite(actual_d) & torch.isfinite(expected_d)
    diff = (actual_d - expected_d).abs()
    bound = atol + rtol * expected_d.abs()
    bad = (diff > bound) | bad_nonfinite
    if bad.any():
        flat = torch.where(bad_nonfinite, torch.inf, diff).flatten()
        worst = int(flat.argmax())
        idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), actual_d.shape))
        raise AssertionError(
            f"{name}: {int(bad.sum())} / {bad.numel()} elements out of tolerance (atol={atol}, rtol={rtol}); "
            f"non-finite where expected finite: {int(bad_nonfinite.sum())}; worst at {idx}: "
            f"actual {actual_d[idx].item():.6g} vs expected {expected_d[idx].item():.6g} "
            f"(|diff| {diff[idx].item():.3g})")


def assert_low_precision_close(actual: torch.Tensor, same_dtype_torch: torch.Tensor, oracle: torch.Tensor,
                               op: str, name: str, dtype: torch.dtype | None = None) -> None:
    """Kernel error vs oracle <= factor * (PyTorch same-dtype error vs oracle) + atol of the ``dtype`` row
    (default: actual's dtype; pass it for values computed in low precision but returned in fp32, e.g. losses)."""
    atol, _ = tolerance(op, actual.dtype if dtype is None else dtype)
    ref_err = (same_dtype_torch.double() - oracle.double()).abs().max().item()
    assert_close_verbose(actual, oracle, atol=LOW_PRECISION_FACTOR * ref_err + atol, rtol=0.0, name=name)
