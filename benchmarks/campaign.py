"""The benchmark campaign: every GPU measurement of hitrs_fast in one command, on a bare GPU machine.

    bash benchmarks/campaign.sh [--dry-run] [--parts PART,...] OUT_DIR
    python -m benchmarks.campaign [--dry-run] [--parts PART,...] OUT_DIR     # the same

Parts, in order, each in its own process with its own time budget (``PARTS`` below; on one
H100 the budgets add up to 21.8 minutes, inside a 22.3-minute cap for the whole campaign; one
device call may run 10 minutes, so split it with ``--parts``):

- provenance: GPU, driver, CUDA, torch, triton, cuDNN, Python, commit, date (stops the GPU
  campaign on a machine without CUDA);
- install: ``pip install --no-deps --no-build-isolation -e .``, then a check that
  ``hitrs_fast.kernels`` imports from this checkout (fallback below);
- tests: the kernel correctness tests, natively (tests/kernels, the attention and embedding API
  tests, the model across backends, the sync-free and compiled step, the bf16 steps), without the
  slow ahead-of-time compile sweep, one pytest process per test file (an illegal memory access
  poisons the CUDA context of its process: on the first GPU run one crash turned 238 later tests
  into errors), each with a fair share of the part's time (on the second run one file spent all of
  it), with ``HITRS_FAST_SINGLE_CONFIG=1`` (tuning every config for each of some 250 test shapes
  takes far longer than the part has; the autotune tests tune their own short lists, and
  ``test_every_gpu_config_matches_the_reference`` runs each config a GPU tunes over at the
  model's shapes); speedups are withheld unless they pass;
- bandwidth: device-to-device copy of 1 GiB (bytes = 2 x size), the memory floor;
- attention: C-TRS attention, registry shapes in order, fwd / bwd / fwd+bwd, bf16 and fp32,
  B = 8 192, against every peer that loads (our rows: the default kernel pair, resident, split);
- blocks: the attention sublayer (C-TRS and F-TRS: LayerNorm, QKV, attention, W_o, dropout,
  residual) against the peers' compositions, fwd and fwd+bwd, with the performance model's
  predicted time on every row;
- embedding: fused joint embedding vs eager and ``torch.compile``;
- model_step: one pre-training step, torch / Triton / torch + compile backends;
- pretrain: pre-training samples/s and MFU, Triton vs torch backend, bf16.

Inside the pytest parts, cases that would start after the part's deadline are skipped as
"not reached" (``HITRS_BENCH_DEADLINE``), so a part ends by itself; a hard timeout still
stops one that hangs. A failing or timed-out part does not stop the campaign (only a
failed install does: nothing else can run). Every failure is collected; the exit status
is 1 if anything failed, after everything is written. ``--parts`` runs a subset
(provenance and install always run), e.g. to split the campaign over several commands of
at most 10 minutes; ``python -m benchmarks.report A/results.json B/results.json`` merges them.

OUT_DIR receives four files, rewritten after every part so an interrupted campaign
leaves what it measured:

- ``results.json``: provenance, install, tests, bandwidth, every part's status, every
  row and every skipped peer with its reason, the failures;
- ``tables.md``: the markdown tables of ``python -m benchmarks.report`` (device,
  versions, commit, date and command on each table);
- ``campaign.log``: the output of every part;
- ``summary.txt``: the parts, the failures and the skipped peers, in a few lines.

``--dry-run`` (or ``HITRS_CAMPAIGN_DRY_RUN=1``) runs every part on the CPU in smoke mode:
tiny sizes, Triton through its interpreter, short budgets. It catches a missing import
or a broken part without a GPU; none of its timings is a speed result.

Install fallback: with setuptools < 77 the editable install fails (the SPDX license field), and below 64 pip
installs through ``setup.py develop``, which cannot map the top-level ``kernels/`` folder to
``hitrs_fast.kernels``. The campaign then writes a two-file import hook into the
interpreter's site-packages (``hitrs_fast_campaign_hook.pth`` and
``_hitrs_fast_campaign_hook.py``, which maps that one package to ``kernels/``), checks
the import again, and removes both files when it ends. If the import still fails, the
campaign stops with the reason.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = "hitrs_fast.campaign/1"
OUT_FILES = ("results.json", "tables.md", "campaign.log", "summary.txt")
# On the GPU: the kernels, the ops, the model across backends, the sync-free compiled step and the bf16 steps,
# natively. The dry run proves the bare-image install and runs the kernel tests under the image's triton (its
# interpreter); the op and model files add only interpreter minutes there (the main suite runs them on CPU) and
# would not fit the part's budget.
TEST_PATHS = {"gpu": ("tests/kernels", "tests/ops", "tests/models/test_model_backends.py",
                      "tests/models/test_static_shapes.py", "tests/models/test_mixed_precision.py",
                      "tests/models/test_compiled_step.py"),
              "dry-run": ("tests/kernels",),
              # --quick: the tests that gate the quick campaign's rows (the kernels of the step, the model across
              # backends, the compiled Triton step), the slowest first files left out.
              "gpu-quick": ("tests/kernels/test_ffn_block.py", "tests/kernels/test_attention_block.py",
                            "tests/models/test_model_backends.py", "tests/models/test_compiled_step.py",
                            "tests/kernels/test_frame_attention.py"),
              "dry-run-quick": ("tests/kernels/test_ffn_block.py", "tests/kernels/test_attention_block.py")}
# The ahead-of-time sm_90 compile sweep (marked slow) proves on CPU what a GPU run shows natively.
TEST_MARKERS = "not slow"
TOTAL_BUDGET_S = {"gpu": 1460, "dry-run": 1290, "gpu-quick": 480, "dry-run-quick": 900}
TEST_FILE_MIN_S = 45  # the least a test file is given (a cold Triton cache compiles every kernel it runs)
REPORT_RESERVE_S = 15  # kept back from the last parts for writing the report
MAX_LOG_LINES_PER_PART = 20000
HOOK_MODULE = "_hitrs_fast_campaign_hook"
HOOK_PTH = "hitrs_fast_campaign_hook.pth"


@dataclass
class Part:
    name: str
    budget_s: dict[str, int]  # per mode: "gpu", "dry-run"
    description: str
    command: Callable[[Campaign], list[str]] | None = None  # None: runs in-process
    env: dict[str, str] = field(default_factory=dict)  # extra environment of this part


@dataclass
class Campaign:
    out: Path
    dry_run: bool
    selected: list[str]
    command: str
    quick: bool = False
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="hitrs-campaign-")))
    started: float = field(default_factory=time.monotonic)
    results: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    log: TextIO | None = None
    hook_files: list[Path] = field(default_factory=list)

    @property
    def mode(self) -> str:
        """The budget key: ``gpu`` or ``dry-run``, with ``-quick`` for ``--quick``."""
        return ("dry-run" if self.dry_run else "gpu") + ("-quick" if self.quick else "")

    def remaining(self) -> float:
        return TOTAL_BUDGET_S[self.mode] - (time.monotonic() - self.started)

    def say(self, text: str) -> None:
        """One line to the terminal and the log."""
        print(text, flush=True)
        if self.log is not None:
            self.log.write(text + "\n")
            self.log.flush()


# ---------------------------------------------------------------------------------------------
# Running a part
# ---------------------------------------------------------------------------------------------

def run_logged(c: Campaign, cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> tuple[int, bool]:
    """Run ``cmd`` (cwd = repository root), copying its output to the terminal and the log.

    Returns ``(exit status, timed out)``. On timeout the whole process group gets SIGTERM,
    then SIGKILL 10 s later.
    """
    c.say("+ " + shlex.join(cmd))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env or c.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", start_new_session=True)
    lines = 0

    def pump() -> None:
        nonlocal lines
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            lines += 1
            if c.log is not None and lines <= MAX_LOG_LINES_PER_PART:
                c.log.write(line)
        sys.stdout.flush()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        timed_out = True
        for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
    reader.join(timeout=10)
    if c.log is not None and lines > MAX_LOG_LINES_PER_PART:
        c.log.write(f"[... {lines - MAX_LOG_LINES_PER_PART} more lines not logged]\n")
    return proc.returncode if proc.returncode is not None else -9, timed_out


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a timeout kill
            continue
    return out


def junit_counts(path: Path) -> dict[str, Any]:
    """tests / failures / errors / skipped and the failing test ids of a pytest ``--junitxml`` file."""
    if not path.exists():
        return {"junit": "missing"}
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    failing = [f"{case.get('classname')}::{case.get('name')}" for case in root.iter("testcase")
               if case.find("failure") is not None or case.find("error") is not None]
    return {**counts, "passed_tests": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
            "failing": failing[:20]}


# ---------------------------------------------------------------------------------------------
# Parts
# ---------------------------------------------------------------------------------------------

def provenance_part(c: Campaign, timeout: float) -> tuple[str, str]:
    out = c.work / "provenance.json"
    env = {**c.env, "HITRS_BENCH_ROWS": ""}
    cmd = [sys.executable, "-c", "import json, sys; from benchmarks.common import provenance; "
           f"open({str(out)!r}, 'w').write(json.dumps(provenance(), default=str)); "
           "print(json.dumps(provenance(), indent=1, default=str))"]
    rc, timed_out = run_logged(c, cmd, timeout, env)
    if rc != 0 or not out.exists():
        return "failed", "timed out" if timed_out else f"exit status {rc}"
    prov = json.loads(out.read_text())
    prov["nvidia_smi"] = _nvidia_smi()
    prov["campaign_started"] = c.results["started"]
    c.results["provenance"] = prov
    if not c.dry_run and str(prov.get("device", "")).startswith("cpu"):
        return "stop", "no CUDA device: the GPU campaign needs one (use --dry-run for the CPU check)"
    return "passed", f"{prov.get('device')}, torch {prov.get('torch')}, triton {prov.get('triton')}"


def _nvidia_smi() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _import_check(c: Campaign, timeout: float) -> tuple[bool, str]:
    """Does ``hitrs_fast`` (with ``hitrs_fast.kernels``) import from this checkout, from the repository root?"""
    code = ("import hitrs_fast, hitrs_fast.kernels; print(hitrs_fast.__file__); print(hitrs_fast.kernels.__file__)")
    try:
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=c.env, capture_output=True, text=True,
                             timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return False, f"import check timed out after {timeout:.0f} s"
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return False, f"import failed: {last}"
    files = [Path(line).resolve() for line in out.stdout.split()]
    expected = [ROOT / "hitrs_fast" / "__init__.py", ROOT / "kernels" / "__init__.py"]
    if files != expected:
        return False, f"imports resolve to {[str(f) for f in files]}, not this checkout {[str(e) for e in expected]}"
    return True, "hitrs_fast and hitrs_fast.kernels import from this checkout"


def hook_source(root: Path) -> str:
    """The fallback import hook: ``hitrs_fast.kernels`` -> ``<root>/kernels`` (plus ``<root>`` on sys.path)."""
    return f'''"""Written by hitrs_fast's benchmarks/campaign.py because the editable install could not map kernels/ to
hitrs_fast.kernels (setuptools < 64). The campaign removes this file and {HOOK_PTH} when it ends."""
import importlib.abc
import importlib.util
import sys

_ROOT = {str(root)!r}
if _ROOT not in sys.path:
    sys.path.append(_ROOT)


class KernelsFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != "hitrs_fast.kernels":
            return None
        return importlib.util.spec_from_file_location(fullname, _ROOT + "/kernels/__init__.py",
                                                      submodule_search_locations=[_ROOT + "/kernels"])


sys.meta_path.insert(0, KernelsFinder())
'''


def _write_hook(c: Campaign) -> tuple[bool, str]:
    site = Path(sysconfig.get_paths()["purelib"])
    module, pth = site / f"{HOOK_MODULE}.py", site / HOOK_PTH
    try:
        module.write_text(hook_source(ROOT))
        pth.write_text(f"import {HOOK_MODULE}\n")
    except OSError as exc:
        return False, f"cannot write the import hook into {site}: {exc}"
    c.hook_files = [pth, module]
    return True, f"import hook written to {site}"


def remove_hook(c: Campaign) -> None:
    for path in c.hook_files:
        path.unlink(missing_ok=True)
    c.hook_files = []


def install_part(c: Campaign, timeout: float) -> tuple[str, str]:
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-e", str(ROOT)]
    deadline = time.monotonic() + timeout
    rc, timed_out = run_logged(c, cmd, timeout)
    pip_note = "pip timed out" if timed_out else f"pip exit status {rc}"
    ok, detail = _import_check(c, max(10.0, deadline - time.monotonic()))
    info: dict[str, Any] = {"command": shlex.join(cmd), "pip_status": rc, "setuptools": _setuptools_version()}
    if rc == 0 and ok:
        c.results["install"] = {**info, "method": "editable install", "check": detail,
                                "wheelhouse": install_wheelhouse(c, max(10.0, deadline - time.monotonic()))}
        return "passed", (f"editable install, setuptools {info['setuptools']}; {detail}; "
                          f"{c.results['install']['wheelhouse']}")
    c.say(f"install: {pip_note}; {detail}. Trying the fallback import hook.")
    written, where = _write_hook(c)
    ok2, detail2 = _import_check(c, max(10.0, deadline - time.monotonic())) if written else (False, where)
    c.results["install"] = {**info, "method": "fallback import hook" if ok2 else "failed",
                            "first_check": detail, "check": detail2, "hook": where}
    if ok2:
        return "passed", (f"fallback import hook ({pip_note}; setuptools {info['setuptools']}: {detail}); "
                          f"{detail2}")
    return "stop", (f"cannot make hitrs_fast importable: {pip_note}; {detail}; fallback: {detail2}. "
                    "Install setuptools >= 77 (`python -m pip install 'setuptools>=77'` with a carried wheel) "
                    "and rerun")


WHEELHOUSE = ".wheelhouse"
WHEELHOUSE_PACKAGES = ("deepspeed", "tqdm", "matplotlib")


def install_wheelhouse(c: Campaign, timeout: float) -> str:
    """Installs DeepSpeed and what pre-training imports from a carried ``.wheelhouse`` (``bash
    benchmarks/wheelhouse.sh`` builds it; the image has no network), without touching the index. Returns a note."""
    house = ROOT / WHEELHOUSE
    if not house.is_dir():
        return f"no {WHEELHOUSE}/ carried (DeepSpeed as the image has it)"
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links", str(house),
           *WHEELHOUSE_PACKAGES]
    rc, timed_out = run_logged(c, cmd, timeout)
    if rc != 0 or timed_out:
        note = f"{WHEELHOUSE}/ install failed ({'timed out' if timed_out else f'exit status {rc}'})"
        c.failures.append(f"install: {note}")
        return note
    return f"{', '.join(WHEELHOUSE_PACKAGES)} installed from {WHEELHOUSE}/"


def _setuptools_version() -> str | None:
    try:
        out = subprocess.run([sys.executable, "-c", "import setuptools; print(setuptools.__version__)"],
                             capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def test_files(paths: tuple[str, ...]) -> list[str]:
    """The ``test_*.py`` files of ``paths`` (folders expanded, sorted), relative to the repository root."""
    files: list[str] = []
    for path in paths:
        full = ROOT / path
        found = sorted(full.rglob("test_*.py")) if full.is_dir() else [full]
        files += [str(f.relative_to(ROOT)) for f in found]
    return files


def tests_part(c: Campaign, timeout: float) -> tuple[str, str]:
    """The correctness tests, one pytest process per file (a kernel that faults takes only its own file down),
    under one shared deadline; the counts of every file's junit report added up."""
    deadline = time.monotonic() + timeout
    env = part_env(c, (QUICK_BY_NAME if c.quick else PARTS_BY_NAME)["tests"], timeout)
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "passed_tests": 0}
    failing: list[str] = []
    problems: list[str] = []
    files = test_files(TEST_PATHS[c.mode])
    for i, path in enumerate(files):
        left = deadline - time.monotonic()
        if left < 5:
            problems.append(f"{len(files) - i} files not run, the part's budget was spent (from {path})")
            break
        name = f"tests-{i:02d}"
        cmd = pytest_cmd(c, name, [path, "-m", TEST_MARKERS], benchmark=False)
        junit = c.work / f"{name}.xml"
        rc, timed_out = run_logged(c, cmd, file_timeout(left, len(files) - i), env)
        counts = junit_counts(junit)
        for key in totals:
            totals[key] += int(counts.get(key, 0))
        failing += counts.get("failing", [])
        if timed_out:
            problems.append(f"{path} timed out")
        elif rc not in (0, 5) and not counts.get("failing"):  # 5: nothing collected (all deselected)
            why = "no junit report" if "junit" in counts else "no failing test"
            problems.append(f"{path} exit status {rc} ({why})")
    passed = not failing and not problems and totals["tests"] > 0
    c.results["tests"] = {"passed": passed, "paths": list(TEST_PATHS[c.mode]), "files": len(files), **totals,
                          "failing": failing[:40], "problems": problems}
    note = (f"{len(files)} files; pytest {totals['passed_tests']} passed, {totals['failures']} failed, "
            f"{totals['errors']} errors, {totals['skipped']} skipped")
    if failing:
        note += "; failing: " + ", ".join(failing[:5])
    if problems:
        note += "; " + "; ".join(problems)
    return ("passed" if passed else "failed"), note


def file_timeout(left: float, files_left: int) -> float:
    """One test file's share of the part's remaining time: twice the even share (files differ in cost), at
    least ``TEST_FILE_MIN_S``, never more than what is left. What a file does not use passes to the next."""
    return min(left, max(TEST_FILE_MIN_S, 2.0 * left / files_left))


def pytest_cmd(c: Campaign, name: str, paths: list[str], benchmark: bool = True) -> list[str]:
    """pytest with a junit file to count failures; benchmark suites time with do_bench, not pytest-benchmark."""
    return [sys.executable, "-m", "pytest", *paths, "-q", "-p", "no:cacheprovider",
            *(["--benchmark-disable"] if benchmark else []), f"--junitxml={c.work / (name + '.xml')}"]


PARTS = (
    Part("provenance", {"gpu": 30, "dry-run": 60}, "GPU, driver, CUDA, torch, triton, cuDNN, commit, date"),
    Part("install", {"gpu": 60, "dry-run": 120}, "pip install --no-deps --no-build-isolation -e ."),
    # Dry run: tests/kernels under the image's triton 3.6, cold cache (the sm_90 compiles alone ~3 min): ~8 min.
    Part("tests", {"gpu": 300, "dry-run": 600}, "kernel correctness tests (native on the GPU), a process per file",
         env={"HITRS_FAST_SINGLE_CONFIG": "1"}),
    Part("bandwidth", {"gpu": 30, "dry-run": 60}, "device-to-device copy bandwidth, 1 GiB",
         lambda c: [sys.executable, "-m", "benchmarks.bandwidth", *(["--smoke"] if c.dry_run else [])]),
    Part("attention", {"gpu": 280, "dry-run": 240}, "C-TRS attention vs peers, B = 8192",
         lambda c: pytest_cmd(c, "attention", ["benchmarks/test_frame_attention.py"])),
    Part("blocks", {"gpu": 190, "dry-run": 150}, "attention sublayer (C-TRS, F-TRS) vs peer compositions, B = 8192",
         lambda c: pytest_cmd(c, "blocks", ["benchmarks/test_attention_block.py"])),
    Part("features", {"gpu": 120, "dry-run": 90},
         "drop-in attention at the peers' shapes (bias, sliding window): ours vs SDPA float mask vs FlexAttention",
         lambda c: pytest_cmd(c, "features", ["benchmarks/test_attention_features.py"])),
    Part("embedding", {"gpu": 120, "dry-run": 120}, "fused joint embedding vs eager / compiled, 8192 frames",
         lambda c: pytest_cmd(c, "embedding", ["benchmarks/test_joint_embedding.py"]),
         {"HITRS_BENCH_BATCHES": "8192"}),
    Part("model_step", {"gpu": 120, "dry-run": 120}, "pre-training step per backend",
         lambda c: pytest_cmd(c, "model_step", ["benchmarks/test_model_step.py"])),
    Part("pretrain", {"gpu": 180, "dry-run": 240}, "pre-training samples/s and MFU, triton vs torch, bf16",
         lambda c: [sys.executable, "-m", "benchmarks.pretrain_throughput", "--backends", "triton,torch",
                    "--work-dir", str(c.work / "pretrain"), *(["--smoke"] if c.dry_run else [])]),
)
# --quick: what decides the design, in one device call of at most 8 minutes (a lent GPU gives 10 per command and
# 15 per session, start-up included). Rows in order of importance: a part that runs out of time loses the last.
QUICK_STEP_ROWS = ("triton+compile", "sdpa+compile max-autotune", "triton", "triton+compile+cudagraphs",
                   "sdpa+compile reduce-overhead", "torch")
QUICK_PARTS = (
    Part("provenance", {"gpu-quick": 15, "dry-run-quick": 60}, "GPU, driver, CUDA, torch, triton, cuDNN, commit, date"),
    Part("install", {"gpu-quick": 45, "dry-run-quick": 120},
         "pip install --no-deps --no-build-isolation -e . (and carried wheels, if any)"),
    Part("tests", {"gpu-quick": 100, "dry-run-quick": 240}, "the correctness tests that gate the quick rows",
         env={"HITRS_FAST_SINGLE_CONFIG": "1"}),
    Part("bandwidth", {"gpu-quick": 15, "dry-run-quick": 60}, "device-to-device copy bandwidth, 1 GiB",
         lambda c: [sys.executable, "-m", "benchmarks.bandwidth", *(["--smoke"] if c.dry_run else [])]),
    Part("model_step", {"gpu-quick": 170, "dry-run-quick": 150},
         "one pre-training step: Triton eager / compiled / CUDA graphs vs the best compiled peers, with a profile",
         lambda c: pytest_cmd(c, "model_step", ["benchmarks/test_model_step.py"]),
         {"HITRS_BENCH_STEP_ROWS": ",".join(QUICK_STEP_ROWS)}),
    Part("blocks", {"gpu-quick": 45, "dry-run-quick": 90},
         "the F-TRS attention sublayer: fused kernel vs compiled SDPA",
         lambda c: pytest_cmd(c, "blocks", ["benchmarks/test_attention_block.py", "-k",
                                            "ftrs and bf16 and (ours- or compile+sdpa)"])),
    Part("attention", {"gpu-quick": 40, "dry-run-quick": 90}, "C-TRS attention, official shape, bf16: ours vs cuDNN",
         lambda c: pytest_cmd(c, "attention", ["benchmarks/test_frame_attention.py", "-k",
                                               "bfloat16 and (ours-split or A2-sdpa-cudnn)"]),
         {"HITRS_BENCH_SHAPES": "first", "HITRS_BENCH_BATCHES": "8192"}),
    Part("pretrain", {"gpu-quick": 50, "dry-run-quick": 240},
         "deepspeed training/pretrain.py, bf16 ZeRO-1, Triton backend, timed 30 s (if DeepSpeed is installed)",
         lambda c: [sys.executable, "-m", "benchmarks.pretrain_throughput", "--backends", "triton", "--path",
                    "deepspeed-or-skip", "--compile", "off", "--seconds", "30", "--work-dir", str(c.work / "pretrain"),
                    *(["--smoke"] if c.dry_run else [])]),
)
PART_NAMES = tuple(p.name for p in PARTS)
PARTS_BY_NAME = {p.name: p for p in PARTS}
QUICK_BY_NAME = {p.name: p for p in QUICK_PARTS}
ALWAYS = ("provenance", "install")
IN_PROCESS = {"provenance": provenance_part, "install": install_part, "tests": tests_part}


def part_env(c: Campaign, part: Part, timeout: float) -> dict[str, str]:
    # Cases that would start after the deadline are skipped as "not reached": the part ends by itself,
    # with margin left for one slow case (a compilation) before the hard timeout.
    deadline = time.time() + timeout - min(60.0, 0.2 * timeout)
    env = {**c.env, "HITRS_BENCH_ROWS": str(c.work / f"{part.name}.jsonl"), "HITRS_BENCH_DEADLINE": f"{deadline:.0f}",
           **part.env}
    bandwidth = (c.results.get("bandwidth") or {}).get("hbm_bytes_per_s")
    if bandwidth:
        env["HITRS_BENCH_HBM_BYTES_PER_S"] = repr(bandwidth)
    return env


def _part_note(record: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    not_reached = sum(bool(r.get("not_reached")) for r in rows)
    note = f"{record['rows']} rows, {record['skips'] - not_reached} skipped"
    if not_reached:
        note += f", {not_reached} cases not reached within the budget"
    counts = record.get("pytest") or {}
    if "tests" in counts:
        note += (f"; pytest {counts['passed_tests']} passed, {counts['failures']} failed, {counts['errors']} errors, "
                 f"{counts['skipped']} skipped")
    return note


def run_part(c: Campaign, part: Part) -> dict[str, Any]:
    budget = part.budget_s[c.mode]
    left = c.remaining() - REPORT_RESERVE_S
    timeout = min(budget, left)
    record: dict[str, Any] = {"name": part.name, "description": part.description, "budget_s": budget}
    c.say(f"\n==== {part.name}: {part.description} (budget {budget} s, {c.remaining():.0f} s left in the campaign)")
    if left < 5:
        record.update(status="not run", note="the campaign's time budget was spent before this part")
        c.failures.append(f"{part.name}: not run, the campaign's time budget was spent")
        return record
    t0 = time.monotonic()
    if part.command is None:
        status, note = IN_PROCESS[part.name](c, timeout)
        record.update(status=status, note=note, seconds=round(time.monotonic() - t0, 1))
        if status != "passed":
            c.failures.append(f"{part.name}: {note}")
        return record
    cmd = part.command(c)
    env = part_env(c, part, timeout)
    rc, timed_out = run_logged(c, cmd, timeout, env)
    rows = read_jsonl(Path(env["HITRS_BENCH_ROWS"]))
    record.update(command=shlex.join(cmd), exit_status=rc, seconds=round(time.monotonic() - t0, 1),
                  rows=sum(r.get("kind") == "row" for r in rows), skips=sum(r.get("kind") == "skip" for r in rows))
    junit = c.work / f"{part.name}.xml"
    if cmd[1:3] == ["-m", "pytest"]:
        record["pytest"] = junit_counts(junit)
    c.results.setdefault("rows", []).extend({**r, "part": part.name} for r in rows if r.get("kind") == "row")
    c.results.setdefault("skipped", []).extend({**r, "part": part.name} for r in rows if r.get("kind") == "skip")
    if part.name == "bandwidth":
        measured = [r for r in rows if r.get("op") == "copy_bandwidth"]
        c.results["bandwidth"] = measured[-1] if measured else None
    if timed_out:
        record.update(status="timeout", note=f"stopped after {timeout:.0f} s; {record['rows']} rows kept")
    elif rc != 0:
        failing = record.get("pytest", {}).get("failing") or []
        record.update(status="failed", note=f"exit status {rc}" + (f"; failing: {', '.join(failing[:5])}"
                                                                  if failing else ""))
    else:
        record.update(status="passed", note=_part_note(record, rows))
    if record["status"] != "passed":
        c.failures.append(f"{part.name}: {record['note']}")
    return record


# ---------------------------------------------------------------------------------------------
# Writing the results
# ---------------------------------------------------------------------------------------------

def summary_text(results: dict[str, Any]) -> str:
    prov = results.get("provenance") or {}
    mode = results["mode"] + (", quick" if results.get("quick") else "") + (
        ": CPU smoke, no speed results" if results["mode"] == "dry-run" else "")
    lines = [f"hitrs_fast benchmark campaign ({mode})",
             f"device {prov.get('device')} | torch {prov.get('torch')} | triton {prov.get('triton')} | "
             f"commit {prov.get('git_commit')} | started {results.get('started')}",
             f"command: {results.get('command')}", "",
             f"{'part':<12}{'status':<10}{'seconds':>9}{'budget':>8}  note"]
    for part in results.get("parts", []):
        lines.append(f"{part['name']:<12}{part['status']:<10}{part.get('seconds', '-'):>9}{part['budget_s']:>8}  "
                     f"{part.get('note', '')}")
    failures = results.get("failures", [])
    lines += ["", f"failures ({len(failures)}):"] + [f"  - {f}" for f in failures]
    every = results.get("skipped", [])
    skipped = sorted({(s.get("name", "?"), s.get("reason", "")) for s in every if not s.get("not_reached")})
    lines += ["", f"skipped peers / cases ({len(skipped)}):"] + [f"  - {n}: {r}" for n, r in skipped]
    not_reached = [s for s in every if s.get("not_reached")]
    if not_reached:
        lines += ["", f"not measured, the part's time budget was spent ({len(not_reached)} cases), e.g. "
                  + ", ".join(s.get("name", "?") for s in not_reached[:3])]
    if "exit_status" in results:
        lines += ["", f"exit status {results['exit_status']}"]
    return "\n".join(lines) + "\n"


def write_outputs(c: Campaign) -> None:
    """results.json, tables.md and summary.txt from the current state (called after every part)."""
    c.results["failures"] = list(c.failures)
    c.results["elapsed_s"] = round(time.monotonic() - c.started, 1)
    (c.out / "results.json").write_text(json.dumps(c.results, indent=1, default=str) + "\n")
    try:
        from benchmarks.report import render_campaign

        (c.out / "tables.md").write_text(render_campaign(c.results))
    except Exception as exc:  # the report must never cost the measurements: results.json is already written
        note = f"report: rendering tables.md failed ({type(exc).__name__}: {exc})"
        if note not in c.failures:
            c.failures.append(note)
            c.results["failures"] = list(c.failures)
            (c.out / "results.json").write_text(json.dumps(c.results, indent=1, default=str) + "\n")
    (c.out / "summary.txt").write_text(summary_text(c.results))


def base_env(dry_run: bool) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("HITRS_BENCH_SMOKE", None)
    if dry_run:
        env["HITRS_BENCH_SMOKE"] = "1"
        env.setdefault("OMP_NUM_THREADS", "1")  # tiny ops on a shared CPU: threads only contend
        env.setdefault("HITRS_BENCH_SHAPES", "first")
    return env


def run(c: Campaign, parts: tuple[Part, ...] = PARTS) -> int:
    """Run the selected ``parts`` in order; returns the exit status (1 if anything failed)."""
    c.out.mkdir(parents=True, exist_ok=True)
    c.env = base_env(c.dry_run)
    c.results = {"schema": SCHEMA, "mode": "dry-run" if c.dry_run else "gpu", "quick": c.quick, "command": c.command,
                 "parts_selected": c.selected,
                 "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 "budget_s": TOTAL_BUDGET_S[c.mode], "parts": [], "rows": [], "skipped": []}
    c.log = open(c.out / "campaign.log", "w")
    try:
        c.say(f"hitrs_fast benchmark campaign, mode {c.mode}, parts {','.join(c.selected)}, output {c.out}")
        for part in parts:
            if part.name not in c.selected:
                continue
            record = run_part(c, part)
            c.results["parts"].append(record)
            c.say(f"==== {part.name}: {record['status']} ({record.get('note', '')})")
            write_outputs(c)
            if record["status"] == "stop":
                c.say(f"campaign stopped: {record['note']}")
                break
    finally:
        remove_hook(c)
        shutil.rmtree(c.work, ignore_errors=True)  # scratch: junit files, rows, DeepSpeed runs
        c.results["exit_status"] = 1 if c.failures else 0
        c.results["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        write_outputs(c)
        c.say("\n" + (c.out / "summary.txt").read_text())
        c.say(f"wrote {', '.join(str(c.out / f) for f in OUT_FILES)}")
        c.log.close()
        c.log = None
    return c.results["exit_status"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/campaign.sh", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", type=Path, help="where results.json, tables.md, campaign.log and summary.txt go")
    p.add_argument("--dry-run", action="store_true", help="CPU smoke run of every part (also HITRS_CAMPAIGN_DRY_RUN=1)")
    p.add_argument("--quick", action="store_true",
                   help="the rows that decide the design, in one command of at most 8 minutes on one GPU")
    p.add_argument("--parts", default=None,
                   help=f"comma-separated subset of {','.join(PART_NAMES)} (with --quick: of "
                   f"{','.join(p.name for p in QUICK_PARTS)}; provenance and install always run)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    parts = QUICK_PARTS if args.quick else PARTS
    names = tuple(p.name for p in parts)
    wanted = [p for p in args.parts.split(",") if p] if args.parts else list(names)
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        print(f"--parts: unknown parts {unknown}; known: {','.join(names)}", file=sys.stderr)
        return 2
    dry = args.dry_run or os.environ.get("HITRS_CAMPAIGN_DRY_RUN", "0").strip().lower() not in ("", "0", "false", "no")
    selected = [p for p in names if p in ALWAYS or p in wanted]
    launcher = os.environ.get("HITRS_CAMPAIGN_LAUNCHER", "python -m benchmarks.campaign")
    command = " ".join([launcher, *(shlex.quote(a) for a in argv)])
    # campaign.sh changes to the repository root; a relative OUT_DIR means the caller's directory.
    out = Path(os.environ.get("HITRS_CAMPAIGN_CWD", os.getcwd())) / args.out_dir
    if out.exists() and not out.is_dir():
        print(f"OUT_DIR {args.out_dir}: exists and is not a directory", file=sys.stderr)
        return 2
    return run(Campaign(out=out.resolve(), dry_run=dry, selected=selected, command=command, quick=args.quick),
               parts)


if __name__ == "__main__":
    raise SystemExit(main())
