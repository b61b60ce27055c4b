"""The pre-training step under ``torch.compile``: what is compiled, with which settings, and the inputs that keep
one graph per length bucket.

What a compiled step needs, and why:

- static shapes (``dynamic=False``): under ``torch.compile`` the encoder computes every padded slot and zeroes
  the padding instead of packing (``HiTRS.prepare``), so the graph has no data-dependent shape. Batches are padded
  to a few frame counts (``build_loader(length_buckets=...)``), one graph each: the recompile limit is raised to
  the number of buckets;
- ``fullgraph=True``: any graph break (a host sync, an unsupported call) is an error, not a silent slow path;
- inputs that change every step are tensors on the device: the lengths (moved with ``non_blocking``) and the
  pretext draws' seed (:meth:`~hitrs_fast.sampling.SampleRandom.device_seed`). A Python int would be a graph
  constant (one recompile per step), and a CPU tensor would keep CUDA graphs (``mode="reduce-overhead"``) off;
- the Triton kernels are ``torch.library`` ops, so Inductor fuses the elementwise work around them; autotuned
  kernels run the config this package's autotuner picks for the traced shapes
  (:mod:`hitrs_fast.kernels.common.launch`).

``HITRS_FAST_COMPILE_BACKEND`` replaces Inductor with another ``torch.compile`` backend (``aot_eager`` traces
forward and backward without generating code: a quick check that the step compiles as one graph).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from hitrs_fast.sampling import SampleRandom

COMPILE_CHOICES = ("auto", "on", "off")
"""``--compile``: ``auto`` compiles on CUDA (where it pays) and not on the CPU (minutes of code generation for a
few minutes of training), ``on`` / ``off`` force it."""
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
"""``torch.compile`` modes: ``reduce-overhead`` adds CUDA graphs (one per length bucket), ``max-autotune`` also
tunes Inductor's GEMM and fused-kernel templates."""
BACKEND_ENV = "HITRS_FAST_COMPILE_BACKEND"


def compile_backend() -> str:
    """The ``torch.compile`` backend: ``HITRS_FAST_COMPILE_BACKEND`` or ``inductor``."""
    return os.environ.get(BACKEND_ENV, "").strip() or "inductor"


def use_compile(choice: str, device: torch.device) -> bool:
    """Whether ``--compile choice`` compiles the step on ``device``."""
    if choice not in COMPILE_CHOICES:
        raise ValueError(f"--compile must be one of {COMPILE_CHOICES}, got {choice!r}")
    return choice == "on" or (choice == "auto" and device.type == "cuda")


@dataclass(frozen=True)
class CompileSettings:
    """How the step is compiled: ``mode`` (:data:`COMPILE_MODES`) and the number of length buckets (graphs)."""

    mode: str = "default"
    graphs: int = 1

    def __post_init__(self) -> None:
        if self.mode not in COMPILE_MODES:
            raise ValueError(f"compile mode must be one of {COMPILE_MODES}, got {self.mode!r}")
        if self.graphs < 1:
            raise ValueError(f"graphs must be >= 1, got {self.graphs}")

    def kwargs(self) -> dict:
        """``torch.compile`` keyword arguments (the backend comes from :func:`compile_backend`)."""
        backend = compile_backend()
        kwargs = {"fullgraph": True, "dynamic": False}
        if backend == "inductor" and self.mode != "default":
            kwargs["mode"] = self.mode
        return kwargs

    def allow_graphs(self) -> None:
        """Raises dynamo's recompile limit to hold one graph per bucket (never lowers it)."""
        config = torch._dynamo.config
        name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
        setattr(config, name, max(getattr(config, name), self.graphs + 1))


def compile_module(fn: torch.nn.Module | Callable, settings: CompileSettings) -> Callable:
    """``torch.compile(fn)`` with :func:`compile_backend` and ``settings``: a module or a bound ``forward`` (then
    the module's hooks, e.g. DeepSpeed's, stay outside the graph); the backward through AOTAutograd."""
    settings.allow_graphs()
    return torch.compile(fn, backend=compile_backend(), **settings.kwargs())


def step_inputs(x: torch.Tensor, lengths: torch.Tensor, sample_ids: torch.Tensor, seed: int,
                compiled: bool) -> tuple[torch.Tensor, torch.Tensor, SampleRandom]:
    """What one pre-training forward takes: ``(x, lengths, generator)``.

    Eager: lengths stay on the CPU (the encoder packs away batch padding from them, without a device sync) and
    the seed is an int. Compiled: lengths and seed are device tensors, graph inputs like ``x``.

    Args:
        x: ``[B, M, T, V, C]`` on the device. lengths: ``[B]`` int64 on the CPU (as the loader yields them).
        sample_ids: ``[B]`` int64 global sample ids on the device. seed: the step's pretext seed.
    """
    if not compiled:
        return x, lengths, SampleRandom(seed, sample_ids)
    return (x, lengths.to(x.device, non_blocking=True),
            SampleRandom(SampleRandom.device_seed(seed, x.device), sample_ids))


__all__ = ["BACKEND_ENV", "COMPILE_CHOICES", "COMPILE_MODES", "CompileSettings", "compile_backend",
           "compile_module", "step_inputs", "use_compile"]
