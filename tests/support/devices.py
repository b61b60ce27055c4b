"""Skip markers and device helpers, defined once for the whole suite.

``REQUIRES_CUDA``: marks (``requires_cuda`` + a skip without a CUDA device) for GPU-only
cases; combine with ``pytest.mark.slow`` for the big grids.
"""

import os

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
