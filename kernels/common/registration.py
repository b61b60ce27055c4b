"""Registration of an op's host functions with ``torch.library``, so ``torch.compile`` traces through them."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.library import triton_op

from hitrs_fast.kernels.common.tuning import interpreting


def register(name: str, fn: Callable, fake: Callable):
    """``triton_op`` on real Triton, so ``torch.compile`` (Inductor) sees the kernels; under
    ``TRITON_INTERPRET=1`` an opaque ``custom_op`` with a shape-only fake instead.

    Why: the interpreter turns ``@triton.jit`` into plain Python functions that ``wrap_triton`` cannot trace,
    so a ``triton_op`` body would run the kernel on fake tensors during compilation. The opaque op keeps
    ``torch.compile(fullgraph=True)`` tracing (one graph node) and runs the kernel for real at run time.
    The fake (shapes and dtypes only) also spares tracing the launcher under ``FakeTensorMode``.

    Args:
        name: ``"hitrs_fast::<op>"``.
        fn: the host function (annotated arguments: ``torch.library`` infers the schema from them).
        fake: ``fn``'s shape function.
    """
    if interpreting():
        op = torch.library.custom_op(name, mutates_args=())(fn)
        op.register_fake(fake)
        return op
    op = triton_op(name, mutates_args=())(fn)
    op.register_fake(fake)
    return op
