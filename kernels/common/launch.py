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

Under ``torch.compile`` an autotuned kernel is launched with one pinned config (:func:`launch_autotuned`): the
config this package's autotuner picks for the traced shapes, with its own key and benchmarker. Left to itself,
tracing would prune the configs and Inductor would rebuild the autotuner with ``key=[]``, tune every call site
again with its own benchmarker at the first run of the compiled graph (dozens of configs per site) and never
say which config won; pinned, the compiled graph runs the config an eager launch of the same shapes runs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import triton
from torch._subclasses.fake_tensor import unset_fake_temporarily
from torch.library import wrap_triton
from torch.utils._python_dispatch import _disable_current_modes, _get_current_dispatch_mode

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


def autotune_key(autotuner, args: tuple, meta: dict) -> tuple:
    """The cache key ``triton.autotune`` computes for a launch: the values of its ``key`` arguments, then the
    dtype of every tensor argument, in argument order."""
    # Positional arguments are a prefix of arg_names (the constexprs come by keyword).
    positional = dict(zip(autotuner.arg_names, args, strict=False))
    named = {k: v for k, v in {**positional, **meta}.items() if k in autotuner.arg_names}
    return (*(named[k] for k in autotuner.keys if k in named),
            *(str(v.dtype) for v in named.values() if hasattr(v, "dtype")))


def _real_like(t, seen: dict[int, torch.Tensor]) -> torch.Tensor:
    """A real tensor of ``t``'s shape, strides, dtype and device (random floats; integer tensors hold 1, a valid
    length and seed), made outside any fake or tracing mode."""
    if id(t) not in seen:
        real = torch.empty_strided(tuple(t.shape), tuple(t.stride()), dtype=t.dtype, device=t.device)
        seen[id(t)] = real.normal_() if real.is_floating_point() else real.fill_(1)
    return seen[id(t)]


def pinned_config(autotuner, grid: Callable | tuple, args: tuple, meta: dict):
    """The config ``autotuner`` runs for a launch with ``args`` and ``meta`` (real, fake or functional tensors).

    Its prune function first; then its cache under this package's key (:func:`autotune_key`); a cache miss is
    tuned on the spot, on real tensors of the traced shapes, by the autotuner itself (its configs, benchmarker
    and cache), exactly as the first eager launch of those shapes would.
    """
    named = dict(zip(autotuner.arg_names, args, strict=False))
    configs = list(autotuner.configs)
    if autotuner.early_config_prune is not None and len(configs) > 1:
        configs = autotuner.early_config_prune(configs, named, **meta)
    if len(configs) == 1:
        return configs[0]
    key = autotune_key(autotuner, args, meta)
    if key not in autotuner.cache:
        with unset_fake_temporarily(), _disable_current_modes():
            seen: dict[int, torch.Tensor] = {}
            real = tuple(_real_like(a, seen) if isinstance(a, torch.Tensor) else a for a in args)
            autotuner[grid](*real, **meta)
    return autotuner.cache[key]


def launch_autotuned(autotuner, grid: Callable | tuple, args: tuple, meta: dict,
                     tensors: tuple[torch.Tensor | None, ...]) -> None:
    """Launches ``autotuner[grid](*args, **meta)``: directly on real tensors in eager mode (its key, cache and
    benchmarker), with the :func:`pinned_config` through ``wrap_triton`` while torch traces.

    Args:
        autotuner: a ``triton.autotune`` object.
        grid: the launch grid, or a function of the config's meta-parameters.
        args, meta: positional launch arguments and keyword constexprs.
        tensors: enough of the launch's tensors to tell fake from real (:func:`traced`).
    """
    if not traced(*tensors):
        autotuner[grid](*args, **meta)
        return
    config = pinned_config(autotuner, grid, args, meta)
    # A one-config autotuner is how a traced launch carries num_warps / num_stages (torch refuses them as kwargs).
    wrap_triton(triton.autotune(configs=[config], key=[])(autotuner.fn))[grid](*args, **meta)
