"""``hitrs_fast.kernels.common.launch``: launch directly on real tensors in eager mode, through ``wrap_triton``
while traced.

Why it matters (seen on an H200): wrapping in eager mode sends an autotuned kernel through torch's
higher-order-op path, which rebuilds it as a fresh autotuner with ``key=[]`` and Triton's benchmarker,
so every launch re-tuned and the launcher's key and benchmarker were lost. The traced side is proven
end to end by ``test_triton_gpu_paths.py::test_triton_op_graphs_hold_the_kernel_wrappers`` (the
compiled graphs hold one kernel-wrapper node per launch).
"""

from __future__ import annotations

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from hitrs_fast.kernels.common import launch


def test_real_tensors_in_eager_mode_launch_directly():
    kernel = object()
    x = torch.randn(3)
    assert not launch.traced(x, None, torch.nn.Parameter(x))
    assert launch.launchable(kernel, x) is kernel


def test_fake_tensors_and_dispatch_modes_are_traced():
    with FakeTensorMode() as mode:
        fake = torch.empty(3)
        assert launch.traced(fake)
    assert launch.traced(mode.from_tensor(torch.randn(3)))


def test_compiling_is_traced():
    def branch(x):
        return x + 1 if launch.traced(x) else x - 1

    x = torch.zeros(2)
    assert torch.equal(torch.compile(branch, backend="eager", fullgraph=True)(x), x + 1)
    assert torch.equal(branch(x), x - 1)
