"""Shared timing, memory and provenance helpers for the benchmark suites.

Timing (``docs/benchmarks.md``): on CUDA, ``triton.testing.do_bench`` medians
with p20/p80 quantiles after warm-up; on CPU (smoke mode) a ``perf_counter`` loop
whose numbers only prove the benchmark runs and are marked ``smoke`` everywhere.

API (imported by every benchmark file)::

    is_smoke() -> bool
    time_fn(fn, *, warmup=25, rep=100) -> {"median_ms", "p20_ms", "p80_ms", "timer", "smoke"}
    peak_memory_bytes(fn) -> int | None
    provenance() -> dict
    measured_hbm_bandwidth() -> float | None      # bytes/s
    record(benchmark, **extra_info) -> dict
"""

from __future__ import annotations

import datetime
import functools
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

# Rows recorded during the session; benchmarks/conftest.py prints them at the end.
RESULTS: list[dict[str, Any]] = []
# Peers skipped, with their reason, printed at the end too.
SKIPPED: list[tuple[str, str]] = []


def is_smoke() -> bool:
    """True when there is no CUDA device or ``HITRS_BENCH_SMOKE=1``: tiny sizes, no speed claims."""
    flag = os.environ.get("HITRS_BENCH_SMOKE", "0").strip().lower() not in ("", "0", "false", "no")
    return flag or not torch.cuda.is_available()


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def time_fn(fn: Callable[[], Any], *, warmup: int = 25, rep: int = 100) -> dict[str, Any]:
    """Median / p20 / p80 time of ``fn()`` in milliseconds.

    On CUDA ``warmup`` and ``rep`` are milliseconds of warm-up and measurement as in
    ``triton.testing.do_bench`` (which flushes L2 between calls and synchronises). In
    smoke mode they are call counts (capped small) of a synchronised ``perf_counter``
    loop, and the result carries ``smoke=True``: it is not a speed result.
    """
    if not is_smoke():
        import triton.testing

        med, p20, p80 = triton.testing.do_bench(fn, warmup=warmup, rep=rep, quantiles=[0.5, 0.2, 0.8])
        return {"median_ms": float(med), "p20_ms": float(p20), "p80_ms": float(p80), "timer": "do_bench",
                "smoke": False}
    for _ in range(max(1, min(warmup, 2))):
        fn()
    _sync()
    samples = []
    for _ in range(max(3, min(rep, 5))):
        t0 = time.perf_counter()
        fn()
        _sync()
        samples.append((time.perf_counter() - t0) * 1e3)
    q = statistics.quantiles(samples, n=10, method="inclusive")
    return {"median_ms": statistics.median(samples), "p20_ms": q[1], "p80_ms": q[7],
            "timer": "perf_counter (smoke, not a speed result)", "smoke": True}


def peak_memory_bytes(fn: Callable[[], Any]) -> int | None:
    """Peak CUDA memory allocated during one ``fn()`` call, above what was live before; None off CUDA."""
    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated() - base)


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except Exception as exc:  # an optional peer may fail to import in many ways (ImportError, OSError, ...)
        return f"not importable ({type(exc).__name__})"
    return str(getattr(mod, "__version__", "unknown"))


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _driver_version() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


@functools.cache
def _static_provenance() -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    cudnn = torch.backends.cudnn.version() if cuda and torch.backends.cudnn.is_available() else None
    return {
        "device": torch.cuda.get_device_name() if cuda else f"cpu ({platform.processor() or platform.machine()})",
        "driver": _driver_version() if cuda else None,
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
        "triton": _version("triton"),
        "cudnn": cudnn,
        "xformers": _version("xformers"),
        "flash_attn": _version("flash_attn"),
        "git_commit": _git_commit(),
        "smoke": is_smoke(),
    }


def provenance() -> dict[str, Any]:
    """Device name, driver, CUDA, torch, triton, cuDNN, xformers / flash-attn, git commit and timestamp."""
    return {**_static_provenance(), "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat()}


@functools.cache
def measured_hbm_bandwidth() -> float | None:
    """Device-to-device copy bandwidth in bytes/s (1 GiB buffer, bytes moved = 2 x size); None off CUDA.

    Floors in reports use this number rather than the spec sheet.
    """
    if is_smoke():
        return None
    import triton.testing

    n = 1 << 30
    buffers = [torch.empty(n, dtype=torch.uint8, device="cuda") for _ in range(2)]
    ms = triton.testing.do_bench(lambda: buffers[1].copy_(buffers[0]), warmup=25, rep=200, quantiles=[0.5])
    ms = ms[0] if isinstance(ms, (list, tuple)) else ms
    buffers.clear()
    torch.cuda.empty_cache()
    return 2 * n / (ms * 1e-3)


def record(benchmark: Any, **extra_info: Any) -> dict[str, Any]:
    """Fill ``benchmark.extra_info`` with provenance plus ``extra_info`` and keep the row for the summary table.

    ``benchmark`` may be None (rows recorded outside a pytest-benchmark fixture).
    """
    row = {**provenance(), **extra_info}
    if benchmark is not None:
        benchmark.extra_info.update(row)
    RESULTS.append(row)
    return row
