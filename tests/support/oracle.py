"""The comparison every fused sublayer test makes: a result list (output, then each gradient) against the float64
oracle, by the rule of the tolerance table."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from tests.support.tolerances import assert_close_verbose, assert_low_precision_close, tolerance


def assert_matches_oracle(names: Sequence[str], got: Sequence[torch.Tensor], oracle: Sequence[torch.Tensor],
                          same_dtype: Callable[[], Sequence[torch.Tensor]], op: str, dtype: torch.dtype,
                          label: str) -> None:
    """fp32 at the table's tolerance of ``op``; 16-bit by the 2x rule against ``same_dtype()`` (the reference
    computed in ``dtype``, called only then). Every result must come back in ``dtype``."""
    if dtype == torch.float32:
        atol, rtol = tolerance(op, dtype)
        for name, a, e in zip(names, got, oracle, strict=True):
            assert_close_verbose(a, e, atol, rtol, f"{name} ({label})")
    else:
        for name, a, t, e in zip(names, got, same_dtype(), oracle, strict=True):
            assert_low_precision_close(a, t, e, op, f"{name} ({label})")
    assert all(t.dtype == dtype for t in got)


def assert_kernel_dropout(dropped: torch.Tensor, undropped: torch.Tensor, p: float) -> torch.Tensor:
    """A kernel's own dropout mask (Philox, not ``nn.Dropout``'s draw: a statistical check) read off its output:
    ``dropped`` is what the sublayer added with dropout p, ``undropped`` without. The kept fraction is 1 - p within
    5 binomial standard deviations and kept values are scaled by 1 / (1 - p). Returns the keep mask."""
    keep = dropped != 0
    rate = keep.float().mean().item()
    assert abs(rate - (1 - p)) < 5 * (p * (1 - p) / keep.numel()) ** 0.5, f"kept {rate:.4f}, expected {1 - p}"
    assert_close_verbose(dropped[keep], (undropped / (1 - p))[keep], 1e-5, 1e-5, "kept values")
    return keep


def assert_backward_uses_the_forward_mask(out: torch.Tensor, grads: Sequence[torch.Tensor],
                                          params: Sequence[torch.Tensor], dy: torch.Tensor,
                                          reference: Callable[..., torch.Tensor], keep: torch.Tensor,
                                          names: Sequence[str], op: str) -> None:
    """Output and gradients equal the float64 ``reference(*leaves, keep=keep)`` run with the mask read off the
    forward's output: a backward that regenerated another mask fails dx and every weight gradient."""
    leaves = [t.detach().double().requires_grad_() for t in params]
    expected = reference(*leaves, keep=keep)
    expected.backward(dy.double())
    atol, rtol = tolerance(op, torch.float32)
    assert_close_verbose(out, expected, atol, rtol, "out")
    for name, a, leaf in zip(names, grads, leaves, strict=True):
        assert_close_verbose(a, leaf.grad, atol, rtol, name)
