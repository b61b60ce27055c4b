"""Benchmark session setup and the end-of-session summary table.

Without CUDA the Triton kernels run through the interpreter, which must be enabled
before triton is imported (tests/conftest.py does the same for the test suite).
"""

import os
import time

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch._dynamo  # noqa: E402

from benchmarks.common import RESULTS, SKIPPED, is_smoke, skip  # noqa: E402

# Epoch seconds after which no further case starts (set by benchmarks/campaign.py from the part's time
# budget): the remaining cases are skipped and recorded as not reached, so the part ends cleanly.
DEADLINE_ENV = "HITRS_BENCH_DEADLINE"
NOT_REACHED = "not reached: this part's time budget in the campaign was spent"

# A compiled peer that hits dynamo's recompile limit must fail loudly, never run on eagerly.
if hasattr(torch._dynamo.config, "fail_on_recompile_limit_hit"):
    torch._dynamo.config.fail_on_recompile_limit_hit = True

COLUMNS = ("op", "peer", "shape", "dtype", "mode", "batch", "median_ms", "seq_per_s", "tflops", "gbps",
           "pct_floor", "peak_mem_mb", "tests_passed", "backend_ran")


def pytest_runtest_setup(item):
    deadline = os.environ.get(DEADLINE_ENV)
    if deadline and time.time() > float(deadline):
        skip(item.name, NOT_REACHED, not_reached=True)
        pytest.skip(NOT_REACHED)


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not RESULTS and not SKIPPED:
        return
    write = terminalreporter.write_line
    title = "benchmark rows" + (" (SMOKE: CPU / interpreter timings, not speed results)" if is_smoke() else "")
    rows = [[_fmt(r.get(c) if c != "peer" else r.get("peer", r.get("impl"))) for c in COLUMNS] for r in RESULTS]
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for c in COLUMNS:
            table.add_column(c, no_wrap=True)
        for r in rows:
            table.add_row(*r)
        console = Console(width=max(240, terminalreporter._tw.fullwidth), force_terminal=False)
        with console.capture() as capture:
            console.print(table)
        for line in capture.get().splitlines():
            write(line)
    except ImportError:
        widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(COLUMNS)]
        write(title)
        write("  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True)))
        for r in rows:
            write("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    if RESULTS:
        first = RESULTS[0]
        write(f"provenance: device={first.get('device')} torch={first.get('torch')} triton={first.get('triton')} "
              f"cuda={first.get('cuda')} cudnn={first.get('cudnn')} commit={first.get('git_commit')}")
    reached = sorted({(n, r) for n, r in SKIPPED if r != NOT_REACHED})
    if reached:
        write("skipped peers:")
        for name, reason in reached:
            write(f"  {name}: {reason}")
    not_reached = [n for n, r in SKIPPED if r == NOT_REACHED]
    if not_reached:
        write(f"{len(not_reached)} cases {NOT_REACHED}")
