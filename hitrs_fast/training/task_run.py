"""The run every downstream task shares (``hitrs_fast.training.recognize``, ``detect``, ``predict_motion``):
common arguments, the prologue (device, store, recipe, encoder + head, run directory) and the epilogue.

A task module builds its parser with :func:`task_parser`, then drives one :class:`TaskRun`::

    job = TaskRun(args, "motion", synthetic=("long", args.synthetic_sequences))     # device, store
    recipe = job.load_recipe(required=("hidden",))                                 # --set, recipe
    recipe = job.plan(steps_per_epoch=math.ceil(n / (batch_size * grad_accum)))    # epochs from the data
    model = job.build_model(lambda enc: MotionPredictor(enc, ...), train_windows=n)  # encoder + head, config.json
    res = job.fit(batches=..., loss_fn=..., evaluate=..., primary="mpjpe_mm", higher_is_better=False, desc=...)
    return job.finish({...})                                                        # summary.json

Run directory of every downstream run::

    RUN_DIR/config.json        resolved arguments + recipe + model config
    RUN_DIR/metrics.jsonl      one row per epoch; TensorBoard alongside (see hitrs_fast.training.loop)
    RUN_DIR/checkpoint.pt      last finished epoch, written atomically
    RUN_DIR/summary.json       final result: last-epoch and best-epoch metrics, labelled as such
    RUN_DIR/loss_curve.png     curves of the logged values
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hitrs_fast.models import HiTRS
from hitrs_fast.training.encoder import build_encoder, check_mode, freeze_encoder
from hitrs_fast.training.loop import FitResult, check_resumable, fit
from hitrs_fast.training.recipes import MODES, SCALE_WORDS, describe_scale, plan_epochs, resolve_recipe, store_scale
from hitrs_fast.training.run import (  # noqa: F401 - run_cli: the tasks' main
    CommandParser,
    RunSession,
    UsageError,
    add_run_arguments,
    atomic_write_json,
    open_checked_store,
    parse_overrides,
    run_cli,
    set_threads,
)

_ABSENT = object()  # an argument missing from an older run's config.json


def task_parser(script: str, doc: str | None, default_data: str, prog: str | None = None) -> argparse.ArgumentParser:
    """The parser of a downstream task holding the arguments every task shares (those of pre-training too,
    :func:`~hitrs_fast.training.run.add_run_arguments`); the task adds its own (its synthetic set's size, its
    options). ``prog``: the command shown in help and errors (default ``python training/<script>.py``; the
    ``hitrs`` command passes ``hitrs <task>``)."""
    p = CommandParser(prog=prog or f"python training/{script}.py", description=doc,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p, data_default=default_data, preset_default=None,
                      preset_help="for --init random (default tiny); with a checkpoint the checkpoint's config is "
                      "used and a different --preset is an error",
                      run_dir_default="runs/<task>-<mode>-<time>",
                      resume_help="continue from RUN_DIR/checkpoint.pt (the last finished epoch)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the generated synthetic set")
    p.add_argument("--init", default="random", help="'random', or a pre-trained encoder: an encoder.pt, a converted "
                   "released checkpoint (hitrs convert-checkpoint), a pre-training run directory, or a DeepSpeed "
                   "checkpoint directory (RUN/checkpoints or RUN/checkpoints/stepNNNNNNNN)")
    p.add_argument("--mode", default="finetune", choices=MODES,
                   help="linear: frozen encoder in eval mode, head only; finetune: everything trained; "
                   "scratch: random init with the from-scratch schedule")
    p.add_argument("--recipe", default=None, help="recipe JSON (a name in training/configs/downstream/ or a path); "
                   "default: the packaged recipe made for the size of the training split (its data_scale)")
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epoch count (and its minimum "
                   "number of optimizer steps)")
    p.add_argument("--lr", type=float, default=None, help="override the recipe's learning rate")
    p.add_argument("--batch-size", type=int, default=None, help="override the recipe's batch size")
    p.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available)")
    return p


def pick_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise UsageError(f"--device {name!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine")
    return dev


def open_store(data: str | None, default: Callable[[], Path], splits: tuple[str, ...]):
    """Opens ``--data`` (or the default synthetic store) and checks that ``(--split, --test-split)`` are
    non-empty splits of it (:func:`~hitrs_fast.training.run.open_checked_store`)."""
    path = Path(data) if data is not None else default()
    return open_checked_store(path, list(zip(("--split", "--test-split"), splits, strict=True)))


def make_run_dir(run_dir: str | None, task: str, mode: str, resume: bool) -> Path:
    path = Path(run_dir or f"runs/{task}-{mode}-{time.strftime('%Y%m%d-%H%M%S')}")
    if resume and not (path / "checkpoint.pt").exists():
        raise UsageError(f"--resume: no checkpoint.pt in {path}")
    path.mkdir(parents=True, exist_ok=True)
    return path


class TaskRun:
    """One downstream run, in the order every task follows.

    Constructing it checks ``--mode`` against ``--init``, picks the device and thread count, and opens
    the store (``--data``, or the built-in synthetic set ``synthetic = (kind, size)`` generated under
    ``--cache-dir`` with ``--data-seed``) with its two splits. Then :meth:`load_recipe`, :meth:`plan` (the
    epoch count from the size of the data), :meth:`build_model`, :meth:`fit`, :meth:`versus_baseline` and
    :meth:`finish`, in that order.

    Attributes:
        args, task, device, store: as given / opened.
        recipe_path, recipe: set by :meth:`load_recipe`.
        encoder_info, run_dir, model: set by :meth:`build_model`.
    """

    def __init__(self, args: argparse.Namespace, task: str, synthetic: tuple[str, int]) -> None:
        from hitrs_fast.data.synthetic import cached_synthetic

        check_mode(args.mode, args.init)
        self.args, self.task = args, task
        self.device = pick_device(args.device)
        set_threads(args.threads)
        self.session = RunSession.current()
        kind, size = synthetic
        self.store = open_store(args.data, lambda: cached_synthetic(args.cache_dir, kind, args.data_seed, size),
                                (args.split, args.test_split))

    def load_recipe(self, required: tuple[str, ...] = ()) -> dict[str, Any]:
        """Parses ``--set`` and resolves the recipe (command-line epochs, lr and batch size win);
        ``required``: task-specific keys the recipe must hold."""
        a = self.args
        self.overrides = parse_overrides(a.set)
        size = store_scale(self.task, self.store, a.split)
        self.recipe_path, self.recipe = resolve_recipe(
            self.task, a.recipe, size, a.mode, {"epochs": a.epochs, "lr": a.lr, "batch_size": a.batch_size},
            required)
        if a.recipe is None:
            scale = self.recipe.get("data_scale")
            made_for = f", made for {describe_scale(self.task, (scale['min'], scale['max']))}" if scale else ""
            print(f"recipe {Path(self.recipe_path).name}: chosen for the {size:,} {SCALE_WORDS[self.task]} of split "
                  f"{a.split!r}{made_for} (--recipe picks another)", flush=True)
        return self.recipe

    def plan(self, steps_per_epoch: int, steps_per_pass: int | None = None) -> dict[str, Any]:
        """Sets the run's epoch count from the data (:func:`~hitrs_fast.training.recipes.plan_epochs`: the
        recipe's ``min_steps`` and ``min_passes``; ``steps_per_pass`` defaults to an epoch) and prints it."""
        self.recipe, line = plan_epochs(self.recipe, steps_per_epoch, steps_per_pass or steps_per_epoch,
                                        self.args.epochs is not None)
        print(line, flush=True)
        return self.recipe

    def versus_baseline(self, metric: str, value: float, baseline: str, level: float, advice: str) -> dict[str, Any]:
        """Compares the last epoch's ``metric`` with what a trivial predictor scores on the same test data
        (``baseline``: "always background", "chance", ...); when it is no better, prints a WARNING line saying
        so with ``advice``. Returns the entry for ``summary.json``."""
        no_better = value <= level + 1e-6  # accuracies in float32: 1/3 may read 0.33333334
        if no_better:
            steps = self.recipe.get("optimizer_steps")
            print(f"WARNING: last epoch {metric} {value:.4f} is no better than {baseline} ({level:.4f}) on "
                  f"{self.args.test_split!r}: the model learned nothing usable in {steps} optimizer steps; {advice}",
                  flush=True)
        return {"metric": metric, "value": value, "baseline": baseline, "baseline_value": level,
                "no_better_than_baseline": no_better}

    def build_model(self, head: Callable[[HiTRS], nn.Module], **config: Any) -> nn.Module:
        """Builds the encoder (``--init``), the run directory and ``head(encoder)`` on the device (the
        encoder frozen in linear mode), and writes ``config.json`` with ``config`` as extra entries."""
        a = self.args
        encoder, self.encoder_info = build_encoder(a.init, a.preset, self.overrides, a.backend, a.seed)
        self.run_dir = make_run_dir(a.run_dir, self.task, a.mode, a.resume)
        torch.manual_seed(a.seed + 1)  # the head's init does not depend on how the encoder was built
        self.model = head(encoder).to(self.device)
        freeze_encoder(self.model, a.mode)
        if a.resume:  # before config.json is rewritten: a refused resume leaves the run as it was
            self._check_resumable()
        atomic_write_json(self.run_dir / "config.json", {
            "args": vars(a), "recipe_file": self.recipe_path, "recipe": self.recipe, "encoder": self.encoder_info,
            "data": str(self.store.root), **config})
        return self.model

    def _check_resumable(self) -> None:
        """:func:`check_resumable` on the run's checkpoint; a refusal names the arguments that differ from the
        run's ``config.json``."""
        ckpt = self.run_dir / "checkpoint.pt"
        try:
            check_resumable(self.model, self.recipe, torch.load(ckpt, map_location="cpu", weights_only=False,
                                                                mmap=True), ckpt)
        except UsageError as err:
            try:
                saved = json.loads((self.run_dir / "config.json").read_text())["args"]
            except (OSError, ValueError, KeyError):
                saved = None
            now = vars(self.args)
            changed = [] if saved is None else [
                f"--{k.replace('_', '-')} (run: {saved[k]!r}, now {now.get(k)!r})" if k in saved else
                f"--{k.replace('_', '-')} (not in the run's config.json, now {now[k]!r}: the run predates it)"
                for k in sorted(set(saved) | set(now)) if k not in ("resume", "no_progress")
                and saved.get(k, _ABSENT) != now.get(k, _ABSENT)]
            hint = f"; changed since the run started: {', '.join(changed)}" if changed else ""
            raise UsageError(f"{err}{hint}; resume with the arguments and version that started the run, or start a "
                             "new --run-dir") from None

    def fit(self, *, batches, loss_fn, evaluate, primary: str, higher_is_better: bool, desc: str) -> FitResult:
        """:func:`hitrs_fast.training.loop.fit` with this run's model, mode, recipe, directory, seed and
        resume / progress flags."""
        a = self.args
        return fit(model=self.model, mode=a.mode, recipe=self.recipe, run_dir=self.run_dir, batches=batches,
                   loss_fn=loss_fn, evaluate=evaluate, primary=primary, higher_is_better=higher_is_better,
                   seed=a.seed, resume=a.resume, desc=desc, progress=not a.no_progress, session=self.session)

    def finish(self, result: dict[str, Any]) -> dict[str, Any]:
        """Adds ``run_dir`` to ``result``, writes it as ``summary.json`` and returns it."""
        result = {**result, "run_dir": str(self.run_dir)}
        atomic_write_json(self.run_dir / "summary.json", result)
        return result
