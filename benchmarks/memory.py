"""Activation memory saved for backward, counted exactly on any device.

``saved_activation_bytes(fn)`` runs ``fn()`` (a forward pass) under
``torch.autograd.graph.saved_tensors_hooks`` and sums the bytes of the distinct
storages autograd keeps for backward, parameters excluded. It is a count, not a timing:
valid on CPU. On CUDA the suite also reports the allocator's peak.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


def saved_activation_bytes(fn: Callable[[], Any], params: Iterable[torch.Tensor] = ()) -> tuple[int, Any]:
    """Returns ``(bytes kept for backward, fn's result)``; keep the result alive until counted."""
    skip = {p.untyped_storage().data_ptr() for p in params}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in skip and ptr != 0:
            seen[ptr] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = fn()
    return sum(seen.values()), result
