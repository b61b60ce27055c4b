"""Produces ``docs/results.md``: what pre-training at each level of Hi-TRS brings to every downstream task
on the synthetic sets, in the layout of the paper's Table 4 (random init, F, F+C, F+C+V), CPU only.

    python training/results.py --jobs 2   # hours on CPU cores (see the page's timings); writes docs/results.md

For each seed (0, 1, 2 by default):

1. pre-train the ``tiny`` preset three times on the synthetic trimmed set of that seed, with the pretext
   tasks of the frame level only (F: masked joint prediction), of the frame and clip levels (F+C: + frame
   order) and of all three levels (F+C+V: + clip order and next-clip InfoNCE; the preset's default, so
   this run is ``make pretrain --seed S``): ``deepspeed training/pretrain.py --seed S [--set ...]`` in a
   subprocess, each with its 10 %-label linear probe;
2. with each of the three encoders and a random-init encoder, run (:func:`column_runs`)
   - recognition, linear evaluation (frozen encoder) on the same trimmed set,
   - recognition, semi-supervised fine-tuning on a 10 % class-balanced subset,
   - detection on the synthetic untrimmed set with the tcn head, the default (its head first trained alone on
     the frozen encoder: the frozen row; then everything fine-tuned), and on the frozen encoder with the
     runner-up context head and with the paper's per-frame clip head (protocol A),
   - motion prediction on the synthetic long set with the residual GRU decoder (likewise: frozen, then
     fine-tuned);
   plus, once per seed (:func:`seed_runs`), motion prediction with the encoder's input to the decoder zeroed
   (the ablation) beside the zero- and constant-velocity baselines, and the detection reference (the tcn
   head trained on every train label of the raw skeleton frames, no encoder: what the data allow this head
   without pre-training); all with the small recipes in
   ``training/configs/downstream/*_synthetic.json``;
3. optionally, for one seed (``--spread-seed``, default the first), the F+C+V column again with each of
   ``--spread-threads`` torch threads (none by default; the main runs use ``--threads``, default 1). Every
   command gives the same bits at any thread count (MKL's strict mode, thread-invariant LayerNorm gradients and
   clip gathers: ``tests/models/test_thread_invariance.py``), so the *thread spread*, the largest change per
   row, is a check that should read 0;
4. write mean ± sample s.d. over the seeds, the verdicts (a win needs a margin beyond both the s.d.s and the
   thread spread), the command, the device, versions, the date and timings.

Every run is reused when its directory under ``--run-dir`` already holds a finished run of the same
command and the same code (:func:`code_fingerprint`: the script, every package module it can import and its
recipes, and the encoder file it reads, so a change to them makes the run again, where the command line alone
would miss a changed recipe, and a change elsewhere, e.g. to another task's recipe or training module, keeps
it). ``--jobs N`` makes N runs at a time, each in a subprocess logging to ``<run dir>.log`` (a downstream run
waits for the pre-training it reads; the seeds are finished in order), then reads them all in the order one job
would; an interrupted invocation keeps its finished runs. Every number in the page is
read from the runs' ``summary.json`` / ``probe.json`` files.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import importlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from hitrs_fast.config import HiTRSConfig
from hitrs_fast.data.synthetic import cached_synthetic, synthetic_cache_path
from hitrs_fast.training import detect, predict_motion, recognize
from hitrs_fast.training.run import atomic_write_json

REPO = Path(__file__).resolve().parents[1]
TASKS = {"recognize": recognize.main, "detect": detect.main, "predict_motion": predict_motion.main}
RANDOM = "random init"
# Pre-trained columns: the pretext levels switched on (the tiny preset trains all three by default).
LEVELS: dict[str, dict[str, bool]] = {
    "F": {"use_clip_tasks": False, "use_video_tasks": False},
    "F+C": {"use_video_tasks": False},
    "F+C+V": {},
}
COLUMNS = (RANDOM, *LEVELS)
SPREAD_COLUMN = "F+C+V"  # re-run at other thread counts: the main job (its probe also re-runs random init's)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python training/results.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--pretrain-steps", type=int, default=None, help="default: the main job's (pretrain.py's)")
    p.add_argument("--per-class", type=int, default=150,
                   help="samples per class of the synthetic trimmed set (default: the main job's 150)")
    p.add_argument("--untrimmed-sequences", type=int, default=144, help="synthetic untrimmed set (detection)")
    p.add_argument("--long-sequences", type=int, default=96, help="synthetic long set (motion prediction)")
    p.add_argument("--run-dir", default="runs/results")
    p.add_argument("--output", default=str(REPO / "docs" / "results.md"))
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads of every main run (default 1)")
    p.add_argument("--spread-threads", type=int, nargs="*", default=[],
                   help="thread counts the spread seed's F+C+V column is re-run with, a check that the numbers do "
                   "not depend on the thread count (default none; e.g. 2 4)")
    p.add_argument("--spread-seed", type=int, default=None, help="default: the first of --seeds")
    p.add_argument("--levels", nargs="+", choices=list(LEVELS), default=list(LEVELS),
                   help="pre-trained columns to run beside random init (default all: F F+C F+C+V)")
    p.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS),
                   help="downstream tasks whose rows to run (default all: recognize detect predict_motion)")
    p.add_argument("--gather", action="store_true",
                   help="run nothing: write the page from the runs under --run-dir that finished (a missing run "
                   "leaves its cell empty)")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs made at a time, each a subprocess with --threads torch threads (default 1: one after "
                   "another, in this process); e.g. the number of cores / --threads")
    p.add_argument("--device", default="cpu")
    return p


# ----------------------------------------------------------------------------------------------- runs


class RunSpec(NamedTuple):
    """One downstream run: ``training/<script>.py`` with ``argv(init, ctx)``, stored in ``<tag>``;
    ``values(summary)`` maps result keys to numbers."""

    tag: str
    script: str
    stage: str  # its line in the timing table
    argv: Callable[[str, dict[str, Any]], list[str]]
    values: Callable[[dict[str, Any]], dict[str, float]]


def _det_values(prefix: str, frozen_prefix: str | None = None) -> Callable[[dict[str, Any]], dict[str, float]]:
    """mAP_a / mAP_v of the last epoch, and (``frozen_prefix``) of the head warm-up on the frozen encoder."""

    def values(s: dict[str, Any]) -> dict[str, float]:
        out = {f"{prefix}_mAP_a": s["last_epoch"]["mAP_a"], f"{prefix}_mAP_v": s["last_epoch"]["mAP_v"]}
        if frozen_prefix:
            warm = s["head_warmup"]["last_epoch"]
            out.update({f"{frozen_prefix}_mAP_a": warm["mAP_a"], f"{frozen_prefix}_mAP_v": warm["mAP_v"]})
        return out

    return values


def _motion_values(prefix: str, frozen_prefix: str | None = None) -> Callable[[dict[str, Any]], dict[str, float]]:
    """Mean MPJPE and MPJPE at the last predicted frame, and (``frozen_prefix``) of the decoder warm-up."""

    def values(s: dict[str, Any]) -> dict[str, float]:
        out = {prefix: s["last_epoch"]["mpjpe_mm"], f"{prefix}_400ms": s["last_epoch"]["per_frame_mm"][-1]}
        if frozen_prefix:
            warm = s["head_warmup"]["last_epoch"]
            out.update({frozen_prefix: warm["mpjpe_mm"], f"{frozen_prefix}_400ms": warm["mpjpe_last_frame_mm"]})
        return out

    return values


def _detect_argv(head: str, mode: str, sequences: int) -> Callable[[str, dict[str, Any]], list[str]]:
    return lambda init, c: ["--init", init, "--head", head, "--mode", mode, "--protocol", "A",
                            "--synthetic-sequences", str(sequences), "--data-seed", str(c["seed"]), *c["common"]]


def column_runs(args: argparse.Namespace) -> tuple[RunSpec, ...]:
    """The runs of every column (``init`` = ``random`` or an encoder.pt). The fine-tuning recipes of detection
    and motion prediction first train the head alone on the frozen encoder with the recipe's linear settings
    (``head_warmup``): that stage is the frozen-encoder row, its end the start of fine-tuning."""
    det = args.untrimmed_sequences
    return (
        RunSpec("motion-finetune", "predict_motion", "motion prediction (frozen, then fine-tuned)",
                lambda init, c: ["--mode", "finetune", "--init", init, *c["motion"]],
                _motion_values("motion_finetune", "motion_linear")),
        RunSpec("detect-tcn-finetune", "detect", "detection, tcn head (frozen, then fine-tuned)",
                _detect_argv("tcn", "finetune", det), _det_values("det_tcn_finetune", "det_tcn_linear")),
        RunSpec("detect-context-linear", "detect", "detection, context head, frozen",
                _detect_argv("context", "linear", det), _det_values("det_ctx_linear")),
        RunSpec("detect-clip-linear", "detect", "detection, clip head, frozen",
                _detect_argv("clip", "linear", det), _det_values("det_clip_linear")),
        RunSpec("rec-linear", "recognize", "recognition, linear",
                lambda init, c: ["--data", c["trimmed"], "--mode", "linear", "--init", init, *c["common"]],
                lambda s: {"rec_linear_top1": s["last_epoch"]["top1"]}),
        RunSpec("rec-semi10", "recognize", "recognition, 10 % fine-tune",
                lambda init, c: ["--data", c["trimmed"], "--mode", "finetune", "--label-fraction", "0.1",
                                 "--init", init, *c["common"]],
                lambda s: {"rec_semi_top1": s["last_epoch"]["top1"]}),
    )


def seed_runs(args: argparse.Namespace) -> tuple[RunSpec, ...]:
    """The runs made once per seed (they do not depend on a pre-trained encoder)."""

    def motion_baselines(s: dict[str, Any]) -> dict[str, float]:
        out = _motion_values("motion_ablation")(s)
        for name in ("zero_velocity", "constant_velocity"):
            out[f"motion_{name}"] = s[name]["mean_mm"]
            out[f"motion_{name}_400ms"] = s[name]["per_frame_mm"][-1]
        return out

    skeleton = _detect_argv("tcn", "linear", args.untrimmed_sequences)
    return (
        RunSpec("motion-ablation", "predict_motion", "motion prediction, ablation",
                lambda init, c: ["--mode", "finetune", "--init", "random", "--ablate-encoder", *c["motion"]],
                motion_baselines),
        RunSpec("detect-skeleton-reference", "detect", "detection, raw-skeleton reference",
                lambda init, c: skeleton("random", c) + ["--features", "skeleton"], _det_values("det_skeleton")),
    )


# Where the sources of each installed package live in the repository (pyproject.toml's package-dir).
SOURCE_ROOTS = {"hitrs_fast.kernels": "kernels", "hitrs_fast.configs": "training/configs", "hitrs_fast": "hitrs_fast"}
# The recipe files each script reads (besides its modules): its task's downstream recipes, or DeepSpeed's configs.
SCRIPT_DATA = {"recognize": "training/configs/downstream/recognition_*.json",
               "detect": "training/configs/downstream/detection_*.json",
               "predict_motion": "training/configs/downstream/motion_*.json",
               "pretrain": "training/configs/*.json"}


def _module_file(name: str) -> Path | None:
    """The repository file of module ``name`` of this package (None: another package, or not a module)."""
    for prefix, root in SOURCE_ROOTS.items():  # the longer prefixes first
        if name == prefix or name.startswith(prefix + "."):
            base = REPO.joinpath(root, *name[len(prefix):].split(".")[1:])
            for path in ((base.with_suffix(".py"),) if name != prefix else ()) + (base / "__init__.py",):
                if path.is_file():
                    return path
            return None
    return None


def _imports_of(path: Path, name: str) -> set[str]:
    """Every ``hitrs_fast`` module ``path`` (module ``name``) may import, at any depth of its code (imports
    inside functions included); ``from a import b`` counts ``a.b`` too, which is dropped if not a module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] == "hitrs_fast"}


def source_files(script: str) -> list[Path]:
    """The files a run of ``training/<script>.py`` depends on: the script, every package module it can import
    (the transitive closure of :func:`_imports_of`, packages' ``__init__`` included) and its recipe files."""
    files = {REPO / "training" / f"{script}.py", *REPO.glob(SCRIPT_DATA[script])}
    seen: set[str] = set()
    todo = list(_imports_of(REPO / "training" / f"{script}.py", "__main__"))
    while todo:
        parts = todo.pop().split(".")
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
            name = ".".join(parts[:depth])
            if name in seen:
                continue
            seen.add(name)
            path = _module_file(name)
            if path is not None:
                files.add(path)
                todo.extend(_imports_of(path, name))
    return sorted(files)


def code_fingerprint(script: str) -> str:
    """sha256 of what a run of ``training/<script>.py`` depends on besides its command line
    (:func:`source_files`): a change elsewhere (another task's recipe or training module, this page's renderer)
    keeps the run."""
    digest = hashlib.sha256()
    for path in source_files(script):
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


_CHILDREN: set[subprocess.Popen] = set()  # the runs of this invocation under way (--jobs)


def launch(cmd: list[str], env: dict[str, str], log: Path | None) -> int:
    """Run ``cmd`` in the repository (its output to ``log`` when given: parallel runs would interleave);
    returns its exit code."""
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") if log is not None else contextlib.nullcontext() as out:
        child = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out,
                                 stderr=subprocess.STDOUT if out is not None else None)
        _CHILDREN.add(child)
        try:
            return child.wait()
        finally:
            _CHILDREN.discard(child)


def stop_children(grace: float = 20.0) -> None:
    """Stop the runs under way: SIGTERM (a run stops cleanly on it, and unlike SIGINT a background job cannot
    have it ignored), then SIGKILL for any still running after ``grace`` seconds. Nothing is recorded for them."""
    children = list(_CHILDREN)
    for child in children:
        child.terminate()
    deadline = time.monotonic() + grace
    for child in children:
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _record(name: str, argv: list[str]) -> dict[str, Any]:
    """What a finished run must match to be reused: its command, its code and (``--init FILE``) the encoder it
    read, whose pre-training may have been made again under the same path."""
    record: dict[str, Any] = {"argv": argv, "code": code_fingerprint(name)}
    init = argv[argv.index("--init") + 1] if "--init" in argv else "random"
    if init != "random":
        record["encoder_sha256"] = _sha256(Path(init))
    return record


def _check_unchanged(before: dict[str, Any], after: dict[str, Any], what: str) -> None:
    if before != after:
        raise SystemExit(f"results.py: the code, recipes or encoder of {what} changed while it ran; its result is "
                         "not recorded (run again once the edits are done)")


def _run_script(name: str, argv: list[str], run_dir: Path, gather: bool = False,
                log: Path | None = None) -> dict[str, Any] | None:
    """``training/<name>.py ARGV --run-dir RUN_DIR``, reused when finished (``gather``: never run, None unless
    finished); run in this process, or (``log``) in a subprocess writing its output there."""
    summary = run_dir / "summary.json"
    argv_file = run_dir / "argv.json"
    record = _record(name, argv)
    if summary.exists() and argv_file.exists() and json.loads(argv_file.read_text()) == record:
        return json.loads(summary.read_text())  # an identical finished run (re-invocation after an interruption)
    if gather:
        return None
    if run_dir.exists():
        shutil.rmtree(run_dir)
    t0 = time.perf_counter()
    full = argv + ["--run-dir", str(run_dir), "--no-progress"]
    if log is None:
        rc = TASKS[name](full)
    else:
        rc = launch([sys.executable, str(REPO / "training" / f"{name}.py"), *full], dict(os.environ), log)
    if rc != 0:
        raise SystemExit(f"results.py: {name}.py {' '.join(argv)} failed with exit code {rc}"
                         + (f" (its output: {log})" if log else ""))
    _check_unchanged(record, _record(name, argv), str(run_dir))
    atomic_write_json(argv_file, record)
    out = json.loads(summary.read_text())
    out["wall_seconds"] = time.perf_counter() - t0
    atomic_write_json(summary, out)
    return out


class Pretraining(NamedTuple):
    """One pre-training run (a column's encoder): ``level`` on ``seed`` with ``threads``, in ``run_dir``."""

    level: str
    seed: int
    threads: int
    run_dir: Path


class Run(NamedTuple):
    """One downstream run: ``spec`` with ``argv`` in ``run_dir``, for ``column`` (None: a run of the seed, shown
    under random init); ``needs``: the pre-training whose encoder it reads (None: random init)."""

    spec: RunSpec
    column: str | None
    argv: list[str]
    run_dir: Path
    needs: Pretraining | None


def data_dir(args: argparse.Namespace) -> Path:
    """The synthetic sets' cache, shared by every seed, thread count and run."""
    return Path(args.run_dir) / "data"


def pretrain(job: Pretraining, args: argparse.Namespace,
             log: Path | None = None) -> tuple[Path, dict[str, Any], float] | None:
    """One pre-training run (DeepSpeed, in a subprocess; its output to ``log`` when given) with its probe;
    returns (encoder.pt, probe, seconds) (``args.gather``: None unless finished)."""
    run = job.run_dir
    options = ["--seed", str(job.seed), "--synthetic-per-class", str(args.per_class), "--cache-dir",
               str(data_dir(args))]
    options += ["--steps", str(args.pretrain_steps)] if args.pretrain_steps else []
    for field, value in LEVELS[job.level].items():
        options += ["--set", f"{field}={str(value).lower()}"]
    done = run / "results-run.json"  # the options of the finished run, its thread count and wall time
    if (run / "probe.json").exists() and done.exists():
        record = json.loads(done.read_text())
        same = (record["options"], record.get("code"), record["threads"]) == (options, code_fingerprint("pretrain"),
                                                                                job.threads)
        if same:
            return run / "encoder.pt", json.loads((run / "probe.json").read_text()), record["seconds"]
    if args.gather:
        return None
    if run.exists():
        shutil.rmtree(run)
    launcher = shutil.which("deepspeed") or str(Path(sys.executable).with_name("deepspeed"))
    with socket.socket() as sock:  # a free rendezvous port: other DeepSpeed jobs may hold the default 29500
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [launcher, "--master_port", str(port), str(REPO / "training" / "pretrain.py"), *options,
           "--run-dir", str(run), "--ckpt-every", "0"]
    print("+", " ".join(cmd), flush=True)
    code = code_fingerprint("pretrain")
    t0 = time.perf_counter()
    rc = launch(cmd, {**os.environ, "OMP_NUM_THREADS": str(job.threads)}, log)
    if rc != 0:
        raise SystemExit(f"results.py: pre-training {job.level} (seed {job.seed}) failed with exit code {rc}"
                         + (f" (its output: {log})" if log else ""))
    seconds = time.perf_counter() - t0
    _check_unchanged(code, code_fingerprint("pretrain"), str(run))
    atomic_write_json(done, {"options": options, "code": code, "threads": job.threads, "seconds": seconds})
    return run / "encoder.pt", json.loads((run / "probe.json").read_text()), seconds


Rows = dict[str, dict[str, list[float]]]  # result key -> column -> one value per seed


def seed_plan(seed: int, threads: int, columns: tuple[str, ...], args: argparse.Namespace, run_root: Path,
              seed_level: bool) -> tuple[list[Pretraining], list[Run]]:
    """The pre-training and downstream runs of one seed with ``threads`` torch threads for ``columns``
    (``seed_level``: with the seed's own runs; False for a thread re-run), in the order they are read."""
    ctx = {"seed": seed, "common": ["--cache-dir", str(data_dir(args)), "--seed", str(seed), "--threads", str(threads),
                                    "--device", args.device],
           "trimmed": str(synthetic_cache_path(data_dir(args), "trimmed", seed, args.per_class))}  # pre-training's set
    ctx["motion"] = ["--synthetic-sequences", str(args.long_sequences), "--data-seed", str(seed), *ctx["common"]]
    pretrainings = [Pretraining(level, seed, threads, run_root / f"pretrain-{level}-seed{seed}")
                    for level in LEVELS if level in columns]
    encoders: dict[str, Pretraining | None] = {RANDOM: None} if RANDOM in columns else {}
    encoders.update({job.level: job for job in pretrainings})
    runs = [Run(spec, None, spec.argv("random", ctx), run_root / f"s{seed}-{spec.tag}", None)
            for spec in (seed_runs(args) if seed_level else ()) if spec.script in args.tasks]
    # Row by row (every column of a run, then the next run): an interrupted invocation leaves whole rows.
    for spec in column_runs(args):
        if spec.script in args.tasks:
            for column, needs in encoders.items():
                init = "random" if needs is None else str(needs.run_dir / "encoder.pt")
                tag = column.replace(" ", "-").replace("+", "")
                runs.append(Run(spec, column, spec.argv(init, ctx), run_root / f"s{seed}-{tag}-{spec.tag}", needs))
    return pretrainings, runs


def run_seed(seed: int, threads: int, columns: tuple[str, ...], args: argparse.Namespace, run_root: Path,
             rows: Rows, timings: dict[str, float], per_frame: dict[str, list[list[float]]] | None) -> None:
    """Pre-training and every downstream run of one seed with ``threads`` torch threads, for ``columns`` (those
    already made by :func:`run_in_parallel` are read); appends their numbers to ``rows`` (and the motion errors per
    frame to ``per_frame``; None: a thread re-run, without the seed's own runs)."""
    def add(values: dict[str, float], column: str) -> None:
        for key, value in values.items():
            rows.setdefault(key, {}).setdefault(column, []).append(float(value))

    def timed(stage: str, seconds: float) -> None:
        timings[stage] = timings.get(stage, 0.0) + seconds

    pretrainings, runs = seed_plan(seed, threads, columns, args, run_root, per_frame is not None)
    missing = set()
    for job in pretrainings:
        done = pretrain(job, args)
        if done is None:
            missing.add(job)
            continue
        enc, probe, secs = done
        timed("pre-training (with its probe)", secs)
        add({"probe": probe["pretrained"]["test_top1"]}, job.level)
        if job.level == "F+C+V":  # its probe also measures random-init encoders (seeds seed + 1 + k)
            add({"probe": probe["random_init"]["test_top1"]}, RANDOM)
    for run in runs:
        r = None if run.needs in missing else _run_script(run.spec.script, run.argv, run.run_dir, args.gather)
        if r is None:
            continue
        add(run.spec.values(r), run.column or RANDOM)
        timed(run.spec.stage, r["wall_seconds"])
        if per_frame is None:
            continue
        if run.spec.tag == "motion-ablation":
            per_frame.setdefault("decoder without the encoder (ablation)", []).append(r["last_epoch"]["per_frame_mm"])
            for name in ("zero_velocity", "constant_velocity"):
                per_frame.setdefault(name.replace("_", "-"), []).append(r[name]["per_frame_mm"])
        elif run.spec.tag == "motion-finetune":
            per_frame.setdefault(run.column, []).append(r["last_epoch"]["per_frame_mm"])


Job = Pretraining | Run


def job_queue(plans: list[tuple[list[Pretraining], list[Run]]]) -> list[Job]:
    """Every job of ``plans`` once, in priority order: each plan's pre-trainings, then its runs, then the next
    plan's (the spread seed's re-run at the main thread count repeats the main runs: made once)."""
    queue: dict[Path, Job] = {}
    for pretrainings, runs in plans:
        for job in (*pretrainings, *runs):
            queue.setdefault(job.run_dir, job)
    return list(queue.values())


def next_job(queue: list[Job], finished: set[Pretraining]) -> Job | None:
    """The first job of ``queue`` (in priority order) that can start: a pre-training, or a run whose
    pre-training (``needs``) has ``finished``; None when every queued job waits for one."""
    for job in queue:
        if isinstance(job, Pretraining) or job.needs is None or job.needs in finished:
            return job
    return None


def run_in_parallel(jobs: int, plans: list[tuple[list[Pretraining], list[Run]]], seeds: set[int],
                    args: argparse.Namespace) -> None:
    """Make every run of ``plans`` (seed_plan's, of ``seeds``) with ``jobs`` at a time, each a subprocess logging
    to ``<run dir>.log``; a downstream run starts once the pre-training it reads has finished. The synthetic
    sets are generated first, one at a time (two commands must not write one set together).

    A free slot takes the first job of the plans' order that can start (:func:`next_job`): a plan's
    pre-training, then its runs, before the next plan's. The seeds are therefore finished one after the other
    (a later seed's jobs fill a slot only while the earlier seed's remaining runs wait for their encoder), so an
    invocation stopped part-way leaves whole seeds for ``--gather`` or a smaller ``--seeds``."""
    sets = ([("trimmed", args.per_class)] + [("untrimmed", args.untrimmed_sequences)] * ("detect" in args.tasks)
            + [("long", args.long_sequences)] * ("predict_motion" in args.tasks))
    for seed in sorted(seeds):
        for kind, size in sets:
            cached_synthetic(data_dir(args), kind, seed, size)
    queue = job_queue(plans)
    finished: set[Pretraining] = set()

    def make(job: Job) -> None:
        log = job.run_dir.with_name(job.run_dir.name + ".log")
        print(f"  start {job.run_dir.name}", flush=True)
        if isinstance(job, Pretraining):
            pretrain(job, args, log)
        else:
            _run_script(job.spec.script, job.argv, job.run_dir, log=log)
        print(f"  done  {job.run_dir.name}", flush=True)

    with ThreadPoolExecutor(jobs) as pool:  # every job is a subprocess: the threads only wait
        pending: dict[Any, Job] = {}
        try:
            while queue or pending:
                while len(pending) < jobs and (job := next_job(queue, finished)) is not None:
                    queue.remove(job)
                    pending[pool.submit(make, job)] = job
                if not pending:  # cannot happen: every run's pre-training is in its plan
                    raise RuntimeError(f"results.py: {len(queue)} run(s) wait for a pre-training that is not planned")
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    future.result()  # a failed run stops the invocation (its message names the run and log)
                    job = pending.pop(future)
                    if isinstance(job, Pretraining):
                        finished.add(job)
        except BaseException as error:
            print(f"results.py: stopping ({type(error).__name__}: {error}); interrupting {len(_CHILDREN)} run(s) "
                  "under way", file=sys.stderr, flush=True)
            pool.shutdown(wait=False, cancel_futures=True)
            stop_children()
            raise


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.spread_seed = args.seeds[0] if args.spread_seed is None else args.spread_seed
    if args.threads < 1 or any(n < 1 for n in args.spread_threads) or args.jobs < 1:
        raise SystemExit("results.py: --threads, --spread-threads and --jobs must be >= 1")
    for package in ("hitrs_fast", "hitrs_fast.kernels", "hitrs_fast.configs"):
        where = Path(importlib.import_module(package).__file__).resolve()
        if REPO not in where.parents:
            raise SystemExit(f"results.py: {package} is imported from {where.parent}, not from this checkout {REPO}: "
                             "the runs' fingerprints would describe other code (install this checkout)")
    args.run_dir = str(Path(args.run_dir).resolve())  # the runs are made from the repository's directory
    torch.set_num_threads(args.threads)
    root = Path(args.run_dir)
    root.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    # (seed, threads, columns, run root, seed level): the main runs, then the spread seed's thread re-runs
    invocations = [(seed, args.threads, (RANDOM, *args.levels), root, True) for seed in args.seeds]
    spread = args.spread_threads and SPREAD_COLUMN in args.levels
    if spread:
        invocations.append((args.spread_seed, args.threads, (SPREAD_COLUMN,), root, False))
        invocations += [(args.spread_seed, n, (SPREAD_COLUMN,), root / f"threads{n}", False)
                        for n in sorted(set(args.spread_threads) - {args.threads})]
    if args.jobs > 1 and not args.gather:
        plans = [seed_plan(seed, threads, columns, args, run_root, seed_level)
                 for seed, threads, columns, run_root, seed_level in invocations]
        run_in_parallel(args.jobs, plans, {invocation[0] for invocation in invocations}, args)
    rows: Rows = {}
    timings: dict[str, float] = {}
    per_frame: dict[str, list[list[float]]] = {}
    by_threads: dict[int, Rows] = {}  # thread count -> rows of the spread seed
    for seed, threads, columns, run_root, seed_level in invocations:
        if seed_level:
            run_seed(seed, threads, columns, args, run_root, rows, timings, per_frame)
        else:  # the spread seed's re-runs: the main thread count's are the main runs (not timed twice)
            run_seed(seed, threads, columns, args, run_root, by_threads.setdefault(threads, {}),
                     {} if threads == args.threads else timings, None)
    total = time.perf_counter() - t_start
    (root / "results.json").write_text(json.dumps({"rows": rows, "timings": timings, "per_frame": per_frame,
                                                   "by_threads": by_threads, "total_seconds": total}, indent=2))
    page = render(args, rows, timings, per_frame, total, sys.argv[1:] if argv is None else argv, by_threads,
                  args.spread_seed)
    Path(args.output).write_text(page)
    print(f"wrote {args.output} ({total / 60:.1f} min)")
    return 0


# --------------------------------------------------------------------------------------------- the page

# (label, metric, key, scale, higher is better): the rows every column has
TABLE = (
    ("pre-training probe: linear, frozen encoder, 10 % labels", "top-1 %", "probe", 100.0, True),
    ("recognition, linear (frozen encoder)", "top-1 %", "rec_linear_top1", 100.0, True),
    ("recognition, 10 % semi-supervised fine-tune", "top-1 %", "rec_semi_top1", 100.0, True),
    ("detection, tcn head, frozen encoder", "mAP_a % @0.5", "det_tcn_linear_mAP_a", 100.0, True),
    ("detection, tcn head, frozen encoder", "mAP_v % @0.5", "det_tcn_linear_mAP_v", 100.0, True),
    ("detection, tcn head, fine-tuned", "mAP_a % @0.5", "det_tcn_finetune_mAP_a", 100.0, True),
    ("detection, tcn head, fine-tuned", "mAP_v % @0.5", "det_tcn_finetune_mAP_v", 100.0, True),
    ("detection, context head (runner-up), frozen encoder", "mAP_a % @0.5", "det_ctx_linear_mAP_a", 100.0, True),
    ("detection, context head (runner-up), frozen encoder", "mAP_v % @0.5", "det_ctx_linear_mAP_v", 100.0, True),
    ("detection, clip head (paper's rule), frozen encoder", "mAP_a % @0.5", "det_clip_linear_mAP_a", 100.0, True),
    ("detection, clip head (paper's rule), frozen encoder", "mAP_v % @0.5", "det_clip_linear_mAP_v", 100.0, True),
    ("motion prediction, encoder fine-tuned + GRU", "MPJPE mm, mean", "motion_finetune", 1.0, False),
    ("motion prediction, encoder fine-tuned + GRU", "MPJPE mm @400 ms", "motion_finetune_400ms", 1.0, False),
    ("motion prediction, frozen encoder + GRU", "MPJPE mm, mean", "motion_linear", 1.0, False),
    ("motion prediction, frozen encoder + GRU", "MPJPE mm @400 ms", "motion_linear_400ms", 1.0, False),
)
# Rows measured once per seed (shown in the random-init column).
SEED_TABLE = (
    ("detection reference: tcn head on the raw skeleton frames (no encoder), all labels", "mAP_a % @0.5",
     "det_skeleton_mAP_a", 100.0),
    ("detection reference: tcn head on the raw skeleton frames (no encoder), all labels", "mAP_v % @0.5",
     "det_skeleton_mAP_v", 100.0),
    ("motion prediction, decoder without the encoder (ablation)", "MPJPE mm, mean", "motion_ablation", 1.0),
    ("motion prediction, decoder without the encoder (ablation)", "MPJPE mm @400 ms", "motion_ablation_400ms", 1.0),
    ("motion prediction, zero-velocity baseline", "MPJPE mm, mean", "motion_zero_velocity", 1.0),
    ("motion prediction, zero-velocity baseline", "MPJPE mm @400 ms", "motion_zero_velocity_400ms", 1.0),
    ("motion prediction, constant-velocity baseline", "MPJPE mm, mean", "motion_constant_velocity", 1.0),
    ("motion prediction, constant-velocity baseline", "MPJPE mm @400 ms", "motion_constant_velocity_400ms", 1.0),
)


def mean_std(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    a = np.asarray(values, dtype=np.float64) * scale
    if a.size == 1:  # one seed: a single value, no s.d. to show
        return f"{a[0]:.{digits}f}"
    return f"{a.mean():.{digits}f} ± {a.std(ddof=1):.{digits}f}"


def _tasks_of(level: str) -> str:
    """The pretext tasks (and weights) a column's pre-training trains."""
    cfg = HiTRSConfig.preset("tiny", **LEVELS[level])
    tasks = [(cfg.use_frame_tasks, f"masked joints x{cfg.weight_pose:g}"),
             (cfg.use_clip_tasks, f"frame order x{cfg.weight_clip_order:g}"),
             (cfg.use_video_tasks, f"clip order x{cfg.weight_video_order:g}"),
             (cfg.use_video_tasks, f"next-clip InfoNCE x{cfg.weight_nce:g}")]
    return ", ".join(label for on, label in tasks if on)


def thread_spread(by_threads: dict[int, Rows]) -> dict[str, float]:
    """Per result key: the largest change across thread counts (max - min) of one seed, over the re-run
    columns; empty without re-runs."""
    if len(by_threads) < 2:
        return {}
    spread: dict[str, float] = {}
    for key in set().union(*(r.keys() for r in by_threads.values())):
        for column in set().union(*(r.get(key, {}).keys() for r in by_threads.values())):
            values = [v for r in by_threads.values() for v in r.get(key, {}).get(column, [])]
            if len(values) > 1:
                spread[key] = max(spread.get(key, 0.0), max(values) - min(values))
    return spread


def verdict(pre: list[float], rnd: list[float], higher: bool, spread: float = 0.0) -> str:
    """``+`` when the pre-trained mean beats random init by more than the margin, the largest of the two
    s.d.s and the thread ``spread``; ``−`` when it loses by that much, ``=`` otherwise."""
    diff = (np.mean(pre) - np.mean(rnd)) * (1 if higher else -1)
    margin = max(np.std(pre, ddof=1), np.std(rnd, ddof=1)) if len(pre) > 1 else 0.0
    margin = max(margin, spread)
    return "+" if diff > margin else ("−" if diff < -margin else "=")


ONE_SEED = "not established (one seed: no s.d. to clear)"  # a goal that needs a margin beyond the s.d.s


def goals(rows: Rows, spread: dict[str, float]) -> list[str]:
    """One line per goal of the issue (motion prediction and the context detector), each ``met``, ``not met``
    or ``not measured`` with the numbers that decide it (F+C+V column, means over the seeds)."""
    fcv = "F+C+V"

    def col(key: str, column: str) -> list[float] | None:
        return rows.get(key, {}).get(column)

    def line(name: str, ok: bool | str | None, why: str) -> str:
        state = ok if isinstance(ok, str) else "not measured" if ok is None else ("met" if ok else "**not met**")
        return f"- {name}: {state}{' (' + why + ')' if why else ''}."

    out = []
    pre, zero, const = (col(k, c) for k, c in (("motion_finetune_400ms", fcv), ("motion_zero_velocity_400ms", RANDOM),
                                                ("motion_constant_velocity_400ms", RANDOM)))
    if pre and zero and const:
        p, z, c = np.mean(pre), np.mean(zero), np.mean(const)
        out.append(line("motion, F+C+V fine-tuned at 400 ms at least 20 % below zero-velocity", p <= 0.8 * z,
                        f"{p:.1f} vs {z:.1f} mm, {100 * (1 - p / z):.0f} % below"))
        out.append(line("motion, F+C+V fine-tuned at 400 ms below constant-velocity", p < c, f"{p:.1f} vs {c:.1f} mm"))
    else:
        out.append(line("motion against the zero- and constant-velocity baselines", None, ""))
    ablation = col("motion_ablation_400ms", RANDOM)
    if pre and ablation:
        v = verdict(pre, ablation, False, spread.get("motion_finetune_400ms", 0.0))
        worse = (f"; worse on {sum(a > b for a, b in zip(ablation, pre, strict=True))} of {len(pre)} seeds, paired"
                 if len(pre) == len(ablation) > 1 else "")
        out.append(line("motion, the encoder ablation clearly worse (beyond the s.d.s and thread spread)",
                        v == "+" if len(pre) > 1 else ONE_SEED,
                        f"{np.mean(ablation):.1f} mm without the encoder vs {np.mean(pre):.1f} mm with it{worse}"))
    rnd = col("motion_finetune_400ms", RANDOM)
    if pre and rnd and len(pre) != len(rnd):
        out.append(line("motion, pre-trained (F+C+V) better than random init on every seed", None,
                        "some seeds' runs are missing, so the seeds cannot be paired"))
    elif pre and rnd:
        wins = sum(a < b for a, b in zip(pre, rnd, strict=True))
        out.append(line("motion, pre-trained (F+C+V) better than random init on every seed (paired, 400 ms)",
                        wins == len(pre), f"{wins} of {len(pre)} seed{'s' if len(pre) > 1 else ''}"))
    det, det_rnd = col("det_tcn_finetune_mAP_a", fcv), col("det_tcn_finetune_mAP_a", RANDOM)
    if det:
        out.append(line("detection, tcn head (the context head the commands use) fine-tuned, mAP_a >= 50 %",
                        np.mean(det) >= 0.5,
                        f"{100 * np.mean(det):.1f} %"))
    if det and det_rnd:
        v = verdict(det, det_rnd, True, spread.get("det_tcn_finetune_mAP_a", 0.0))
        out.append(line("detection, pre-training better than random init by more than the larger s.d.",
                        v == "+" if len(det) > 1 else ONE_SEED,
                        f"{100 * np.mean(det):.1f} vs {100 * np.mean(det_rnd):.1f} % mAP_a"))
    if not det:
        out.append(line("detection with the tcn head", None, ""))
    skeleton = col("det_skeleton_mAP_a", RANDOM)
    if skeleton and det:
        ref, pre = 100 * np.mean(skeleton), 100 * np.mean(det)
        where = f"{ref - pre:.1f} points above" if ref >= pre else "below (so no bound)"
        out.append(f"- the raw-skeleton reference (the tcn head on every train label of the raw frames, no encoder) "
                   f"reaches {ref:.1f} % mAP_a, {where} the pre-trained tcn head's {pre:.1f} %.")
    return out


def paired_differences(seeds: list[int], a: list[float], b: list[float]) -> str:
    """``a - b`` seed by seed, then their mean ± s.d. (a paired difference leaves out what each seed's data does
    to both rows alike, which the s.d. of either row includes)."""
    d = np.subtract(a, b)
    each = ", ".join(f"seed {s}: {x:+.1f}" for s, x in zip(seeds, d, strict=True))
    return each + (f" mm; mean {d.mean():+.1f} ± {d.std(ddof=1):.1f} mm" if d.size > 1 else " mm")


def cpu_numerics() -> str:
    """The CPU and the code paths its float numerics took: PyTorch's CPU kernels (``ATEN_CPU_CAPABILITY``) and MKL's
    (``MKL_CBWR``, the commands' strict mode unless set) follow the CPU's vector unit, and so do the bits."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else model
    return (f"`{model}`; PyTorch's CPU kernels on its `{torch.backends.cpu.get_cpu_capability()}` path, MKL with "
            f"`MKL_CBWR={os.environ.get('MKL_CBWR', 'AUTO,STRICT')}`")


def render(args, rows, timings, per_frame, total, argv, by_threads=None, spread_seed=None) -> str:
    by_threads = by_threads or {}
    spread = thread_spread(by_threads)
    n = len(args.seeds)
    levels = list(args.levels)
    columns = (RANDOM, *levels)
    table = [row for row in TABLE if row[2] in rows]  # the rows of the tasks run
    cmd = "python training/results.py" + ("" if not argv else " " + " ".join(argv))
    steps = args.pretrain_steps or "the main job's default number of"
    out = [
        "# Downstream results on the synthetic sets: pre-training per level (the paper's Table 4 layout)",
        "",
        "Produced by one command on CPU; every number is read from the runs' `summary.json` / `probe.json` "
        "files (nothing is typed in by hand):",
        "",
        "```",
        cmd,
        "```",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; the runs' wall times add up to "
        f"{sum(timings.values()) / 60:.1f} min (this invocation: {total / 60:.1f} min; finished runs are reused) on "
        f"{args.threads} torch thread{'s' if args.threads > 1 else ''} per run"
        + (f", {args.jobs} runs at a time (`--jobs {args.jobs}`)" if args.jobs > 1 else "")
        + f" ({os.cpu_count()} logical CPUs visible, the CPU named below; the machine was "
        "shared with other jobs, so times are upper bounds).",
        f"- Device: CPU (`--device {args.device}`): {cpu_numerics()}. The runs give the same bits at any thread "
        "count on one kind of CPU, not on a CPU with another vector unit (e.g. AVX2 instead of AVX-512), whose "
        "numbers differ as a different seed's would (docs/training.md). "
        f"Versions: Python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}.",
        (f"- Seeds {args.seeds}: mean ± sample s.d. over {n} seeds." if n > 1 else
         f"- **One seed only** ({args.seeds[0]}): every cell is a single run, without an s.d.; the `+`/`−` "
         "verdicts below compare single values.")
        + " Each seed regenerates the synthetic sets, pre-trains, and seeds the random-init encoder, the heads "
        "and the data order.",
        f"- Pre-training: `tiny` preset, {steps} steps of 32 samples (`deepspeed training/pretrain.py`), synthetic "
        f"trimmed set with {args.per_class} samples per class (train/test split by subject). Columns: "
        + "; ".join(f"**{level}**: {_tasks_of(level)}" for level in levels)
        + ("" if levels == list(LEVELS) else " (not run by this command: "
           + ", ".join(level for level in LEVELS if level not in levels) + ")") + ".",
        f"- Data: detection on the synthetic untrimmed set ({args.untrimmed_sequences} sequences), motion "
        f"prediction on the synthetic long set ({args.long_sequences} sequences); train / test split by subject.",
        "- Recipes: `training/configs/downstream/*_synthetic.json`. All results are **last-epoch** numbers."
        + (" Gathered (`--gather`): each cell holds the runs that had finished; `–` marks a run not made."
           if args.gather else ""),
        "",
    ]
    seeds = [str(seed) for seed in build_parser().get_default("seeds") if seed not in args.seeds]
    missing = [what for what, left in (
        (f"seed{'s' * (len(seeds) > 1)} " + ", ".join(seeds), bool(seeds)),
        ("the levels " + ", ".join(level for level in LEVELS if level not in levels), levels != list(LEVELS)),
        ("the tasks " + ", ".join(task for task in TASKS if task not in args.tasks), list(args.tasks) != list(TASKS)),
    ) if left]
    if missing:
        out += [f"**A partial page**: it lacks {'; '.join(missing)}. `python training/results.py` (the "
                "defaults) makes the whole page, reusing the finished runs of this one.", ""]
    out += [
        "| task | metric | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for label, metric, key, scale, higher in table:
        means = {c: np.mean(rows[key][c]) for c in columns if c in rows[key]}
        best = max(means, key=means.get) if higher else min(means, key=means.get)
        cells = [(f"**{mean_std(rows[key][c], scale)}**" if c == best else mean_std(rows[key][c], scale))
                 if c in means else "–" for c in columns]
        out.append(f"| {label} | {metric} | " + " | ".join(cells) + " |")
    for label, metric, key, scale in SEED_TABLE:
        if key in rows:
            out.append(f"| {label} | {metric} | {mean_std(rows[key][RANDOM], scale)} |" + " – |" * len(levels))
    out += [
        "",
        "Best mean per row in bold. Chance level of recognition: 1 / number of classes (6.25 % for 16). The "
        "rows below the line of columns are measured once per seed and do not depend on an encoder.",
        "",
    ]
    if spread:
        out += [
            f"Thread spread: seed {spread_seed}'s F+C+V column (pre-training and every downstream run) run with "
            f"{', '.join(str(t) for t in sorted(by_threads))} torch threads: the same data, masks and batches, only "
            "the thread count differs (every run should give the same bits). Per row the value at each thread count "
            "and the spread, max − min "
            "(for the probe row also over the random-init encoders its probe measures):",
            "",
            "| task | metric | " + " | ".join(f"{t} thread{'s' if t > 1 else ''}" for t in sorted(by_threads))
            + " | spread |",
            "|---|---|" + "---|" * (len(by_threads) + 1),
        ]
        for label, metric, key, scale, _ in table:
            cells = [f"{by_threads[t][key][SPREAD_COLUMN][0] * scale:.1f}"
                     if SPREAD_COLUMN in by_threads[t].get(key, {}) else "–" for t in sorted(by_threads)]
            out.append(f"| {label} | {metric} | " + " | ".join(cells) + f" | {spread.get(key, 0.0) * scale:.1f} |")
        out.append("")
    margin = "the larger of the two s.d.s" + (" and the row's thread spread" if spread else "")
    out += [
        f"Pre-trained vs random init, per row (`+`: better by more than {margin}, `−`: worse by that much, `=`: "
        "within it):",
        "",
        "| task | metric | " + " | ".join(levels) + " |",
        "|---|---|" + "---|" * len(levels),
    ]
    for label, metric, key, _, higher in table:
        out.append(f"| {label} | {metric} | "
                   + " | ".join(verdict(rows[key][c], rows[key][RANDOM], higher, spread.get(key, 0.0))
                                if c in rows[key] and RANDOM in rows[key] else "–" for c in levels) + " |")
    out += ["", "The issue's goals on these sets, checked on the rows above:", ""] + goals(rows, spread)
    fcv = rows.get("motion_finetune_400ms", {}).get("F+C+V", [])
    for other, key in (("random init", "motion_finetune_400ms"),
                       ("the decoder without the encoder (ablation)", "motion_ablation_400ms")):
        base = rows.get(key, {}).get(RANDOM, [])  # the ablation is a once-per-seed row, kept in this column too
        if len(fcv) == len(base) == n:
            out += ["", f"Motion prediction at 400 ms, F+C+V fine-tuned minus {other}, per seed (paired; negative = "
                    f"the encoder as pre-trained helps): {paired_differences(args.seeds, fcv, base)}."]
    if per_frame:
        frames = len(next(iter(per_frame.values()))[0])
        out += [
            "",
            f"Motion prediction, MPJPE (mm) per predicted frame (1..{frames} at 30 fps), encoder fine-tuned, mean "
            "over seeds:",
            "",
            "| frame | " + " | ".join(str(i + 1) for i in range(frames)) + " |",
            "|---|" + "---|" * frames,
        ]
        for name, values in per_frame.items():
            out.append(f"| {name} | " + " | ".join(f"{v:.1f}" for v in np.mean(values, axis=0)) + " |")
    out += ["", "Wall time per stage (all seeds and columns, thread re-runs included):", "", "| stage | minutes |",
            "|---|---|"]
    out += [f"| {k} | {v / 60:.1f} |" for k, v in timings.items()]
    out += [
        "",
        "Notes:",
        "",
        "- These are tiny models trained for minutes on synthetic data: they test that every pipeline runs end "
        "to end and show the direction of each level's effect at this scale, not the paper's numbers.",
        "- The probe row is the main job's own evaluation (`make pretrain` prints it): a linear probe on 10 % of "
        "the train labels, averaged over 3 label draws (and 3 random-init encoders for the random column).",
        "- Detection: the tcn head (`--head tcn`, the default) reads the stride-1 clip embeddings centred on "
        "the 63 frames each side of the frame through a dilated temporal convolution (one MS-TCN stage: 6 "
        "residual layers of kernel 3, dilations 1 to 32, 256 channels); the runner-up context head (`--head "
        "context`) reads those centred on the frame and on 8 frames every 4 on each side (+-32 frames) through "
        "one hidden layer whose kernel spans the 17 clips; the clip head (`--head clip`) is the paper's "
        "per-frame rule, a linear layer on the clip centred on the frame. Frozen rows compute the clip "
        "embeddings once and train only the head on them; the fine-tuned row starts from that head (the frozen "
        "row's run is its warm-up). Segments come from the majority-filter post-processing of the recipe; ground "
        "truth is the runs of the per-frame labels. The raw-skeleton reference trains the tcn head alone on every "
        "train label with each frame's raw skeleton (root-relative joints and velocities, `--features "
        "skeleton`) where the clip embedding was: what the data allow this head without the encoder.",
        "- Motion prediction: a residual GRU decoder reads the last observed pose and smoothed velocity, then its "
        "own predictions, conditioned on the encoder's sequence features and its clip embeddings read in time "
        "order by a small GRU; the ablation zeroes that conditioning. The constant-velocity baseline repeats the "
        "velocity the decoder starts from (the mean of the last 4 frame differences). @400 ms is the 12th "
        "predicted frame.",
        "- Every run gives the same bits at any torch thread count (`--threads`) on one kind of CPU (MKL's strict "
        "reproducible mode, "
        "thread-invariant LayerNorm gradients and clip gathers, checked op by op in "
        "tests/models/test_thread_invariance.py); "
        + ("the thread spread above re-checks it on this page's runs, and every verdict needs a margin beyond it."
           if spread else "this command did not re-check it on its runs (`--spread-threads 2 4` re-runs the spread "
           "seed's F+C+V column, pre-training included, with 2 and 4 threads)."),
    ]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
