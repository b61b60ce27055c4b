"""Autotuning switches every kernel op shares: the interpreter, one config instead of a list, the GPU
generation, and the benchmarker the autotuners time configs with."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable

import torch
import triton

SINGLE_CONFIG_ENV = "HITRS_FAST_SINGLE_CONFIG"

Benchmarker = Callable[[Callable[[], object], list[float]], list[float]]
"""``(kernel_call, quantiles) -> times in ms``, the signature of ``triton.testing.do_bench``."""

# Set only inside ``benchmarker_override``.
_benchmarker: Benchmarker | None = None
# The newest autotuner of every kernel (by kernel name), for reports of what was chosen.
_autotuners: dict[str, object] = {}


def interpreting() -> bool:
    """Whether Triton runs kernels through its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def single_config() -> bool:
    """One config per kernel instead of the GPU lists: ``HITRS_FAST_SINGLE_CONFIG=1`` or the interpreter."""
    flag = os.environ.get(SINGLE_CONFIG_ENV, "0").strip().lower() not in ("", "0", "false", "no")
    return flag or interpreting()


def is_hopper_or_newer() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 9


def launch_args(named_args: dict, kwargs: dict) -> dict:
    """Every launch argument an ``early_config_prune`` function sees: the autotuner passes the positional ones
    in ``named_args`` and the keyword ones (every constexpr of our launchers) in ``kwargs``."""
    return {**named_args, **kwargs}


def cpu_timer(kernel_call, quantiles, reps: int = 3) -> list[float]:
    """The autotuner's benchmarker under the interpreter: wall-clock quantiles (ms) of ``reps`` calls.

    ``triton.testing.do_bench`` needs a GPU driver, which the interpreter does not have.
    These CPU times only let the tuning machinery run; they say nothing about GPU speed.
    """
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        kernel_call()
        times.append((time.perf_counter() - start) * 1e3)
    return torch.tensor(times, dtype=torch.float64).quantile(torch.tensor(quantiles, dtype=torch.float64)).tolist()


def benchmark(kernel_call, quantiles):
    """Times one config for an autotuner: the benchmarker of :func:`benchmarker_override` if one is set, else
    ``triton.testing.do_bench`` on a GPU and :func:`cpu_timer` in the interpreter."""
    if _benchmarker is not None:
        return _benchmarker(kernel_call, quantiles)
    if interpreting():
        return cpu_timer(kernel_call, quantiles)
    return triton.testing.do_bench(kernel_call, quantiles=quantiles)


@contextlib.contextmanager
def benchmarker_override(do_bench: Benchmarker | None):
    """Every autotuner of the package times configs with ``do_bench`` while the block runs (None: unchanged)."""
    global _benchmarker
    previous = _benchmarker
    if do_bench is not None:
        _benchmarker = do_bench
    try:
        yield
    finally:
        _benchmarker = previous


def autotune(kernel, configs: list[triton.Config], key: list[str], prune=None):
    """``triton.autotune`` of ``kernel`` over ``configs`` with :func:`benchmark` and an optional
    ``early_config_prune``; remembered for :func:`chosen_configs`."""
    tuner = triton.autotune(configs=configs, key=key, do_bench=benchmark,
                            prune_configs_by={"early_config_prune": prune} if prune is not None else None)(kernel)
    _autotuners[getattr(kernel, "__name__", repr(kernel))] = tuner
    return tuner


def chosen_configs() -> dict[str, dict[str, str]]:
    """The config each autotuned kernel chose, per autotune key, e.g. for a benchmark row: eager launches and the
    configs pinned into compiled graphs alike (:mod:`hitrs_fast.kernels.common.launch`)."""
    return {name: {str(k): str(v) for k, v in tuner.cache.items()} for name, tuner in _autotuners.items()
            if tuner.cache}
