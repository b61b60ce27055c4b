"""Backend choice for the fused ops, with readable reasons.

Each op asks :func:`choose_backend` with the reasons the Triton path cannot take the
given inputs (an empty list when it can). Environment variables (see docs/env.md):

- ``HITRS_FAST_DISABLE_KERNELS=1``: always use the reference;
- ``HITRS_FAST_STRICT=1``: raise instead of falling back;
- ``TRITON_INTERPRET=1``: Triton runs on CPU tensors through its interpreter.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings

import torch

BACKENDS = ("auto", "torch", "triton")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "0").strip().lower() not in ("", "0", "false", "no")


def kernels_disabled() -> bool:
    return _env_flag("HITRS_FAST_DISABLE_KERNELS")


def strict_mode() -> bool:
    return _env_flag("HITRS_FAST_STRICT")


def interpreter_mode() -> bool:
    return _env_flag("TRITON_INTERPRET")


# find_spec locates triton without importing it (import stays lazy).
_TRITON_FOUND = importlib.util.find_spec("triton") is not None


def triton_importable() -> bool:
    return _TRITON_FOUND


def device_reasons(*tensors: torch.Tensor) -> list[str]:
    """Why Triton cannot run on these tensors' device ([] when it can)."""
    reasons = []
    if not triton_importable():
        reasons.append("triton is not installed")
    for t in tensors:
        if t.device.type == "cuda":
            continue
        if t.device.type == "cpu" and interpreter_mode():
            continue
        reasons.append(f"device {t.device} is not CUDA (set TRITON_INTERPRET=1 to run Triton on CPU)")
        break
    return reasons


@functools.cache
def _warn_once(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def choose_backend(op: str, requested: str, reasons: list[str]) -> str:
    """Returns ``"torch"`` or ``"triton"``.

    ``requested="triton"`` (or strict mode) raises ``NotImplementedError`` listing the
    reasons; ``"auto"`` falls back to the reference and warns once per reason, except
    for the plain "not on CUDA" case, which is the expected CPU path and stays quiet.
    """
    if requested not in BACKENDS:
        raise ValueError(f"{op}: backend must be one of {BACKENDS}, got {requested!r}")
    if requested == "torch":
        return "torch"
    if requested == "auto" and kernels_disabled():
        return "torch"
    if not reasons:
        return "triton"
    message = f"{op}: triton backend not used: {'; '.join(reasons)}."
    if requested == "triton" or strict_mode():
        raise NotImplementedError(message + " (reference backend: 'torch')")
    if not all("is not CUDA" in r for r in reasons):
        _warn_once(message + " Falling back to reference.")
    return "torch"
