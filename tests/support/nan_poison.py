"""NaN-poisoned allocations: any element a kernel forgets to write fails loudly.

``poison_torch_empty`` patches ``torch.empty``, ``torch.empty_like`` and
``Tensor.new_empty`` so that floating-point allocations come back filled with NaN.
"""

from __future__ import annotations

import contextlib

import torch


def _fill_nan(t: torch.Tensor) -> torch.Tensor:
    if t.is_floating_point():
        t.fill_(float("nan"))
    return t


@contextlib.contextmanager
def poison_torch_empty():
    empty, empty_like, new_empty = torch.empty, torch.empty_like, torch.Tensor.new_empty

    def p_empty(*args, **kwargs):
        return _fill_nan(empty(*args, **kwargs))

    def p_empty_like(*args, **kwargs):
        return _fill_nan(empty_like(*args, **kwargs))

    def p_new_empty(self, *args, **kwargs):
        return _fill_nan(new_empty(self, *args, **kwargs))

    torch.empty, torch.empty_like, torch.Tensor.new_empty = p_empty, p_empty_like, p_new_empty
    try:
        yield
    finally:
        torch.empty, torch.empty_like, torch.Tensor.new_empty = empty, empty_like, new_empty
