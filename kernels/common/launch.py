"""How every launcher starts a Triton kernel: ``launchable(kernel, *tensors)[grid](...)``.

``torch.library.wrap_triton`` is needed while torch traces (``torch.compile``, ``make_fx``, fake or
functional tensors): the graph must hold the kernel. On real tensors in eager mode it is harmful.
With wrapping enabled (torch's default outside a ``triton_op`` body) an autotuned kernel goes
through torch's higher-order-op dispatch, which runs the prune function, then launches a *new*
``triton.autotune`` object built from the kept configs with ``key=[]`` and Triton's default
benchmarker. Every eager launch therefore re-tunes from scratch, and the launcher's own key and
benchmarker are never used: on an H200 a direct call of ``frame_attention_fwd`` took about 15 s
per test case. ``triton_op`` bodies already launch directly in eager mode (torch disables
wrapping there); this module gives direct callers of the launchers the same behaviour.
"""

from __future__ import annotations

import torch
from torch.library import wrap_triton
from torch.utils._python_dispatch import _get_current_dispatch_mode

_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)


def traced(*tensors: torch.Tensor | None) -> bool:
    """Whether torch is tracing this launch: compiling, a dispatch mode active (make_fx, fake or
    functional tensors), or an argument that is a tensor subclass (FakeTensor, FunctionalTensor)."""
    if torch.compiler.is_compiling() or _get_current_dispatch_mode() is not None:
        return True
    return any(t is not None and type(t) not in _PLAIN_TENSORS for t in tensors)


def launchable(kernel, *tensors: torch.Tensor | None):
    """``kernel`` itself for an eager launch on real tensors, ``wrap_triton(kernel)`` while traced.

    Args:
        kernel: a ``triton.jit`` function or a ``triton.autotune`` object.
        tensors: the launch's tensor arguments (enough of them to tell fake from real).
    """
    return wrap_triton(kernel) if traced(*tensors) else kernel
