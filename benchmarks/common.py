"""Shared timing, memory, provenance and compile-check helpers for the benchmark suites.

Timing follows one protocol: on CUDA, ``triton.testing.do_bench`` medians with p20/p80
quantiles after warm-up; on CPU (smoke mode) a ``perf_counter`` loop whose numbers only
prove the benchmark runs and are marked ``smoke`` everywhere.

API (imported by every benchmark file)::

    is_smoke() -> bool
    time_fn(fn, *, warmup=25, rep=100) -> {"median_ms", "p20_ms", "p80_ms", "timer", "smoke"}
    peak_memory_bytes(fn) -> int | None
    provenance() -> dict
    copy_bandwidth(num_bytes) -> float                   # bytes/s of a device-to-device copy
    measured_hbm_bandwidth() -> float | None             # bytes/s, for floors; None in smoke mode
    record(benchmark, **extra_info) -> dict              # one result row
    skip(name, reason, **case)                           # one skipped peer / case, with its reason
    fresh_compile(fn, **options) -> compiled fn          # torch._dynamo.reset() first
    profile_call(fn) -> events                           # profiler events of one call
    compiled_evidence(events) -> str                     # raises NotCompiled if the call ran eagerly
    kernel_names(events) -> list[str]                    # the kernels the call launched
    no_recompile()                                       # context: a recompile or eager fallback raises
    measure_call(fn, compiled=...) -> dict               # all of the above for one warmed-up case

Rows and skips are also appended, one JSON object per line, to the file named by
``HITRS_BENCH_ROWS`` when it is set: the campaign (``benchmarks/campaign.py``) collects
them from there, so a part stopped by its timeout keeps every row it finished.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import os
import platform
import statistics
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

# Rows recorded during the session; benchmarks/conftest.py prints them at the end.
RESULTS: list[dict[str, Any]] = []
# Peers skipped, with their reason, printed at the end too.
SKIPPED: list[tuple[str, str]] = []

ROWS_ENV = "HITRS_BENCH_ROWS"
BANDWIDTH_ENV = "HITRS_BENCH_HBM_BYTES_PER_S"
BANDWIDTH_BUFFER_BYTES = 1 << 30  # >= 1 GB, so the copy streams through HBM, not the 50 MB L2


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
    commit = out.stdout.strip()
    if not commit:
        return None
    # The editable install rewrites the tracked egg-info metadata; that is not a change to the measured code.
    status = ["git", "status", "--porcelain", "--untracked-files=no", "--", ":/", ":(top,exclude)*.egg-info/*"]
    dirty = subprocess.run(status, cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=10,
                           check=False).stdout.strip()
    return commit + ("-dirty" if dirty else "")


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
        "python": platform.python_version(),
        "xformers": _version("xformers"),
        "flash_attn": _version("flash_attn"),
        "git_commit": _git_commit(),
        "smoke": is_smoke(),
    }


def provenance() -> dict[str, Any]:
    """Device name, driver, CUDA, torch, triton, cuDNN, xformers / flash-attn, git commit and timestamp."""
    return {**_static_provenance(), "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat()}


def copy_bandwidth(num_bytes: int, device: str = "cuda") -> float:
    """Bytes/s of a ``num_bytes`` device-to-device copy, counting 2 x size (one read, one write).

    On CUDA: the ``do_bench`` median. Elsewhere (smoke) a short ``perf_counter`` loop whose
    result only proves the code runs.
    """
    buffers = [torch.empty(num_bytes, dtype=torch.uint8, device=device) for _ in range(2)]
    timing = time_fn(lambda: buffers[1].copy_(buffers[0]), warmup=25, rep=200)
    buffers.clear()
    if device == "cuda":
        torch.cuda.empty_cache()
    return 2 * num_bytes / (timing["median_ms"] * 1e-3)


@functools.cache
def measured_hbm_bandwidth() -> float | None:
    """Device-to-device copy bandwidth in bytes/s (1 GiB buffer, bytes moved = 2 x size); None in smoke mode.

    Floors use this number rather than the spec sheet. The campaign measures it once and
    passes it on through ``HITRS_BENCH_HBM_BYTES_PER_S``.
    """
    if is_smoke():
        return None
    if os.environ.get(BANDWIDTH_ENV):
        return float(os.environ[BANDWIDTH_ENV])
    return copy_bandwidth(BANDWIDTH_BUFFER_BYTES)


def _append_line(obj: dict[str, Any]) -> None:
    path = os.environ.get(ROWS_ENV)
    if not path:
        return
    with open(path, "a") as f:
        f.write(json.dumps(obj, default=str) + "\n")


def record(benchmark: Any, **extra_info: Any) -> dict[str, Any]:
    """Fill ``benchmark.extra_info`` with provenance plus ``extra_info`` and keep the row for the summary table.

    ``benchmark`` may be None (rows recorded outside a pytest-benchmark fixture).
    """
    row = {**provenance(), **extra_info}
    if benchmark is not None:
        benchmark.extra_info.update(row)
    RESULTS.append(row)
    _append_line({"kind": "row", **row})
    return row


def skip(name: str, reason: str, **case: Any) -> None:
    """Note a peer (or one case of it) that did not run, with the reason printed at the end."""
    SKIPPED.append((name, reason))
    _append_line({"kind": "skip", "name": name, "reason": reason, **case})


class NotCompiled(RuntimeError):
    """A ``torch.compile``'d callable ran (partly) eagerly: it must not be timed as compiled."""


def fresh_compile(fn: Callable, **options: Any) -> Callable:
    """``torch.compile(fn, **options)`` after ``torch._dynamo.reset()``.

    Every case compiles its own graphs: without the reset, cases that compile the same
    code object pile up recompilations until dynamo's recompile limit (8) is hit, after
    which dynamo runs that code eagerly with a single log line and the "compiled" peer
    is silently timed eagerly.
    """
    import torch._dynamo

    torch._dynamo.reset()
    return torch.compile(fn, **options)


def profile_call(fn: Callable[[], Any]) -> list[Any]:
    """Profiler events (``key_averages``) of one synchronised ``fn()`` call: CPU ops, and GPU kernels on CUDA."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    _sync()
    with profile(activities=activities) as prof:
        fn()
        _sync()
    return list(prof.key_averages())


def _device_time(event: Any) -> float:
    for name in ("device_time_total", "cuda_time_total"):  # renamed across torch versions
        if hasattr(event, name):
            return float(getattr(event, name))
    return 0.0


_NOT_KERNELS = ("aten::", "cuda", "Torch-", "## ", "TorchDynamo", "AOTDispatcher", "Pregraph", "autograd::",
                "Memcpy", "Memset")


def kernel_names(events: list[Any], top: int = 4) -> list[str]:
    """The GPU kernels among profiler ``events``, longest total time first (on CPU: the aten ops)."""
    if torch.cuda.is_available():
        kernels = [e for e in events if _device_time(e) > 0 and not e.key.startswith(_NOT_KERNELS)]
        kernels.sort(key=_device_time, reverse=True)
    else:
        kernels = sorted((e for e in events if e.key.startswith("aten::")), key=lambda e: e.self_cpu_time_total,
                         reverse=True)
    return [e.key[:120] for e in kernels[:top]]


def compiled_evidence(events: list[Any], inductor: bool = True) -> str:
    """Proof, from the profiler events of one call, that a ``torch.compile`` graph really ran.

    Requires the events dynamo and inductor emit ("Torch-Compiled Region", the compiled FX
    graph call; the latter only when ``inductor``) and, on CUDA, at least one Triton
    kernel. Raises :class:`NotCompiled` otherwise, so a fallback to eager is never timed
    as compiled.
    """
    names = [e.key for e in events]
    regions = [n for n in names if n.startswith("Torch-Compiled Region")]
    graphs = [n for n in names if "CompiledFxGraph" in n]
    if not regions or (inductor and not graphs):
        raise NotCompiled(f"no compiled region ran (regions {len(regions)}, inductor graphs {len(graphs)}): "
                          "the call fell back to eager")
    evidence = f"{len(regions)} compiled region(s), {len(graphs)} inductor graph(s)"
    if inductor and torch.cuda.is_available():
        triton_kernels = [e.key for e in events if _device_time(e) > 0 and "triton" in e.key.lower()]
        if not triton_kernels:
            raise NotCompiled("a compiled region ran but launched no Triton kernel")
        evidence += f", Triton kernel e.g. {triton_kernels[0][:80]}"
    return evidence


def compile_failure_types() -> tuple[type[BaseException], ...]:
    """Exceptions meaning "this compiled callable would not run compiled" (names differ across torch versions)."""
    import torch._dynamo.exc as dynamo_exc

    names = ("RecompileError", "FailOnRecompileLimitHit", "RecompileLimitExceeded", "CacheLimitExceeded")
    return (NotCompiled, *(getattr(dynamo_exc, n) for n in names if hasattr(dynamo_exc, n)))


def not_compiled_reason(exc: BaseException) -> str:
    """The skip reason of a case whose compiled callable did not run compiled."""
    return f"not timed: the compiled callable did not run compiled ({type(exc).__name__}: {exc})"


def measure_call(fn: Callable[[], Any], *, compiled: bool = False, inductor: bool = True, warmup: int = 25,
                 rep: int = 100) -> dict[str, Any]:
    """Everything a row needs from an already warmed-up ``fn``.

    One profiled call gives the kernels that ran (and, when ``compiled``, the proof that the
    compiled code ran); then the timing and the peak memory, with recompilation forbidden.
    Returns ``{"timing", "peak_bytes", "kernels", "compiled_check"}``; raises one of
    :func:`compile_failure_types` when a compiled callable did not run compiled.
    """
    events = profile_call(fn)
    evidence = compiled_evidence(events, inductor) if compiled else None
    with no_recompile():
        timing = time_fn(fn, warmup=warmup, rep=rep)
        peak = peak_memory_bytes(fn)
    return {"timing": timing, "peak_bytes": peak, "kernels": kernel_names(events), "compiled_check": evidence}


@contextlib.contextmanager
def no_recompile() -> Iterator[None]:
    """While timing: a dynamo recompilation or FlexAttention's eager fallback raises instead of running."""
    import torch._dynamo

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=r".*called without torch\.compile")
        with torch._dynamo.config.patch(error_on_recompile=True):
            yield


if __name__ == "__main__":
    # `python -m benchmarks.common`: the provenance of this machine as one JSON object.
    print(json.dumps(provenance(), default=str))
