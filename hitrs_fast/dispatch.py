"""Backend choice for the fused ops: an ordered list of backends, each declaring what it can run.

Every public op (:func:`hitrs_fast.attention.frame_masked_attention`, :func:`hitrs_fast.embedding.joint_embedding`)
has a priority list of :class:`Backend` classes, fastest first, the reference last. A backend says on which
devices it runs (:meth:`Backend.device_reasons`) and why it cannot take given inputs
(:meth:`Backend.not_supported_reasons`), as the operator classes of xformers' memory-efficient attention do.
``"auto"`` runs the first backend with no reason; a named backend runs when it has none and raises
``NotImplementedError`` with its reasons otherwise. Nothing here imports triton.

Passing over a backend that runs on the inputs' device (it cannot take these inputs: a dtype, a head
dimension, ...) warns once per message and names the backend that runs instead; passing over one that does
not run on the device at all (the Triton kernels on a plain CPU) is the expected path and stays quiet.

Environment variables (docs/env.md):

- ``HITRS_FAST_DISABLE_KERNELS=1``: ``"auto"`` skips every fused kernel (runs the reference);
- ``HITRS_FAST_STRICT=1``: ``"auto"`` raises instead of passing over its first backend, listing every reason;
- ``TRITON_INTERPRET=1``: Triton runs on CPU tensors through its interpreter (only when asked for by name).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from hitrs_fast.kernels.capabilities import MIN_COMPUTE_CAPABILITY


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


class Backend:
    """One implementation of an op; subclasses set ``NAME`` and override the reason methods.

    ``IS_KERNEL``: a fused kernel, which ``HITRS_FAST_DISABLE_KERNELS=1`` takes out of ``"auto"``.
    """

    NAME: ClassVar[str]
    IS_KERNEL: ClassVar[bool] = False

    @classmethod
    def device_reasons(cls, device: torch.device, requested: bool) -> list[str]:
        """Why this backend does not run on ``device`` ([] when it does); ``requested``: asked for by name."""
        return []

    @classmethod
    def not_supported_reasons(cls, inputs: Any) -> list[str]:
        """Why it cannot take ``inputs`` (an op-specific record) on a device it runs on."""
        return []


class TritonBackend(Backend):
    """Devices of every Triton kernel: CUDA (compute capability 8.0+), or CPU tensors through the interpreter
    when the backend is asked for by name (``"auto"`` never picks the interpreter: it is orders of magnitude
    slower than eager PyTorch)."""

    IS_KERNEL = True

    @classmethod
    def device_reasons(cls, device: torch.device, requested: bool) -> list[str]:
        if not _TRITON_FOUND:
            return ["triton is not installed"]
        if device.type == "cuda":
            cap = torch.cuda.get_device_capability(device)
            return [] if cap >= MIN_COMPUTE_CAPABILITY else [f"compute capability {cap} below {MIN_COMPUTE_CAPABILITY}"]
        if device.type == "cpu" and interpreter_mode():
            return [] if requested else ["device cpu: 'auto' never runs the Triton interpreter (ask for 'triton')"]
        return [f"device {device} is not CUDA (set TRITON_INTERPRET=1 to run Triton on CPU)"]


@functools.cache
def _warn_once(message: str) -> None:
    warnings.warn(message, stacklevel=4)


def _describe(passed_over: list[tuple[str, list[str]]]) -> str:
    return "; ".join(f"{name} backend not used: {'; '.join(reasons)}" for name, reasons in passed_over)


def choose_backend(op: str, priority: Sequence[type[Backend]], requested: str, inputs: Any,
                   device: torch.device) -> type[Backend]:
    """The backend of ``priority`` that runs ``inputs`` on ``device``.

    Args:
        op: the op's public name, for messages.
        priority: backend classes, fastest first; the last must take every input (the reference).
        requested: ``"auto"`` or a backend's ``NAME``.
        inputs: the op's inputs record, handed to :meth:`Backend.not_supported_reasons`.
        device: where the inputs live.

    Raises:
        ValueError: ``requested`` is not ``"auto"`` or a backend name.
        NotImplementedError: the named backend (or, in strict mode, the first ``"auto"`` candidate) cannot run;
            the message lists every reason.
    """
    names = tuple(b.NAME for b in priority)
    if requested != "auto":
        if requested not in names:
            raise ValueError(f"{op}: backend must be one of {('auto', *names)}, got {requested!r}")
        backend = priority[names.index(requested)]
        reasons = backend.device_reasons(device, requested=True) + backend.not_supported_reasons(inputs)
        if reasons:
            raise NotImplementedError(f"{op}: {backend.NAME} backend not used: {'; '.join(reasons)}. "
                                      f"(reference backend: {names[-1]!r})")
        return backend
    candidates = [b for b in priority if not (b.IS_KERNEL and kernels_disabled())]
    passed_over: list[tuple[str, list[str]]] = []
    noisy = False  # a backend that runs on this device was passed over because of the inputs
    for backend in candidates:
        device_reasons = backend.device_reasons(device, requested=False)
        reasons = device_reasons + backend.not_supported_reasons(inputs)  # all of them, for the messages
        if not reasons:
            if passed_over and strict_mode():
                raise NotImplementedError(f"{op}: {_describe(passed_over)} (HITRS_FAST_STRICT=1; would run "
                                          f"{backend.NAME!r})")
            if noisy:
                _warn_once(f"{op}: {_describe(passed_over)}; running the {backend.NAME} backend.")
            return backend
        passed_over.append((backend.NAME, reasons))
        noisy = noisy or not device_reasons
    raise NotImplementedError(f"{op}: no backend can run these inputs: {_describe(passed_over)}")


__all__ = ["Backend", "TritonBackend", "choose_backend", "interpreter_mode", "kernels_disabled", "strict_mode"]
