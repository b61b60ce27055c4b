"""Skip markers and device helpers, defined once for the whole suite.

``REQUIRES_CUDA``: marks (``requires_cuda`` + a skip without a CUDA device) for GPU-only
cases; combine with ``pytest.mark.slow`` for the big grids. ``record_launches``: the Triton
launches a launcher would make, recorded instead of made.
"""

import os
from dataclasses import dataclass

import pytest
import torch

CUDA = torch.cuda.is_available()

REQUIRES_CUDA = [pytest.mark.requires_cuda, pytest.mark.skipif(not CUDA, reason="needs a CUDA device")]


def kernel_device() -> torch.device:
    """The device Triton kernels run on: the active Triton driver's device (as the Triton tutorial does), or
    CPU under TRITON_INTERPRET=1, where Triton 3.9 finds no active driver on a machine without a GPU."""
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        return torch.device("cpu")
    import triton

    return triton.runtime.driver.active.get_active_torch_device()


@dataclass
class Launch:
    """One Triton launch a launcher asked for: ``kernel[grid](*args, **kwargs)``, kernel a JITFunction or Autotuner."""

    kernel: object
    grid: object
    args: tuple
    kwargs: dict

    def named_args(self) -> dict:
        """The positional arguments by name: what Triton's autotuner hands its prune function."""
        return dict(zip(self.kernel.arg_names, self.args, strict=False))


def record_launches(module, fn, *args, **kwargs) -> list[Launch]:
    """Runs launcher ``fn`` with ``module.launchable`` and ``module.launch_autotuned`` replaced by recorders: each
    launch it would make, none made."""
    launches = []

    class Recorder:
        def __init__(self, kernel) -> None:
            self.kernel = kernel

        def __getitem__(self, grid):
            return lambda *a, **kw: launches.append(Launch(self.kernel, grid, a, kw))

    def autotuned(autotuner, grid, launch_args, meta, tensors):
        launches.append(Launch(autotuner, grid, tuple(launch_args), dict(meta)))

    replaced = {"launchable": lambda kernel, *tensors: Recorder(kernel), "launch_autotuned": autotuned}
    saved = {name: getattr(module, name) for name in replaced if hasattr(module, name)}
    for name in saved:
        setattr(module, name, replaced[name])
    try:
        fn(*args, **kwargs)
    finally:
        for name, value in saved.items():
            setattr(module, name, value)
    return launches
