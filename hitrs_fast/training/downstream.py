"""Shared machinery of the downstream scripts (``training/recognize.py``, ``training/detect.py``,
``training/predict_motion.py``): recipes, encoder loading, the epoch loop with resumable atomic
checkpoints, run directories and argument checks.

Run directory of every downstream run::

    RUN_DIR/config.json        resolved arguments + recipe + model config
    RUN_DIR/metrics.jsonl      one row per epoch (train loss, lr, evaluation metrics); TensorBoard alongside
    RUN_DIR/checkpoint.pt      last finished epoch (model, optimizer, history, best), written atomically
    RUN_DIR/summary.json       final result: last-epoch and best-epoch metrics, labelled as such
    RUN_DIR/loss_curve.png     curves of the logged values
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hitrs_fast.config import PRESETS, HiTRSConfig
from hitrs_fast.models import HiTRS
from hitrs_fast.training.optim import parameter_groups
from hitrs_fast.training.run import RunLogger, UsageError, atomic_write_json, parse_overrides

RECIPE_DIR = Path(__file__).resolve().parents[2] / "training" / "configs" / "downstream"
MODES = ("linear", "finetune", "scratch")
SCHEDULES = ("constant", "released_finetune", "released_scratch", "cosine")
# HiTRSConfig fields a downstream run may change on a loaded checkpoint: none of them changes a parameter shape.
RUNTIME_FIELDS = frozenset({
    "dropout", "body_reduce", "mask_ratio", "mask_replacement", "pose_loss", "nce_temperature", "nce_negatives",
    "weight_pose", "weight_clip_order", "weight_video_order", "weight_nce", "use_frame_tasks", "use_clip_tasks",
    "use_video_tasks",
})



# ----------------------------------------------------------------------------- arguments and recipes


def add_common_args(p: argparse.ArgumentParser, default_data: str) -> None:
    """Arguments shared by the three downstream scripts."""
    p.add_argument("--data", default=None, help=f"store directory; default: {default_data}, generated under "
                   "--cache-dir on first use")
    p.add_argument("--cache-dir", default="runs/data", help="where the synthetic set is generated")
    p.add_argument("--split", default="train", help="training split of the store (default: train)")
    p.add_argument("--test-split", default="test", help="evaluation split (default: test)")
    p.add_argument("--init", default="random", help="'random' or the path of a pre-training encoder.pt")
    p.add_argument("--mode", default="finetune", choices=MODES,
                   help="linear: frozen encoder in eval mode, head only; finetune: everything trained; "
                   "scratch: random init with the from-scratch schedule")
    p.add_argument("--preset", default=None, help=f"model preset for --init random: {sorted(PRESETS)} (default "
                   "tiny); with a checkpoint the checkpoint's config is used and a different --preset is an error")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a HiTRSConfig field (with a checkpoint only shape-free fields such as dropout "
                   "and body_reduce)")
    p.add_argument("--recipe", default=None, help="recipe JSON (a name in training/configs/downstream/ or a path); "
                   "default: the synthetic recipe on the synthetic sets, the released recipe otherwise")
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epoch count")
    p.add_argument("--lr", type=float, default=None, help="override the recipe's learning rate")
    p.add_argument("--batch-size", type=int, default=None, help="override the recipe's batch size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "triton"], help="model backend")
    p.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--run-dir", default=None, help="default: runs/<task>-<mode>-<time>")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")



def resolve_recipe(task: str, name: str | None, synthetic: bool, mode: str,
                   overrides: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """Loads a recipe file and returns ``(path, flat recipe for mode)``.

    A recipe is ``{"task": ..., "common": {...}, "linear": {...}, "finetune": {...}, "scratch": {...}}``;
    the mode's section overrides ``common``, then non-None ``overrides`` (command-line flags) win.
    """
    name = name or f"{task}_{'synthetic' if synthetic else 'released'}.json"
    path = Path(name)
    if not path.exists():
        path = RECIPE_DIR / name
    if not path.exists():
        available = sorted(p.name for p in RECIPE_DIR.glob(f"{task}_*.json"))
        raise UsageError(f"--recipe {name!r}: no such file (recipes for {task} in {RECIPE_DIR}: {available})")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UsageError(f"--recipe {path}: not valid JSON at line {e.lineno}: {e.msg}") from None
    if raw.get("task") != task:
        raise UsageError(f"--recipe {path}: is a recipe for task {raw.get('task')!r}, this script is {task!r}")
    if mode not in raw:
        have = sorted(k for k in raw if k in MODES)
        raise UsageError(f"--recipe {path}: has no section for mode {mode!r} (has {have})")
    recipe = {**raw.get("common", {}), **raw[mode]}
    recipe.update({k: v for k, v in overrides.items() if v is not None})
    for key in ("epochs", "batch_size", "lr"):
        if key not in recipe:
            raise UsageError(f"--recipe {path}: mode {mode!r} lacks {key!r}")
    if int(recipe["epochs"]) < 1 or int(recipe["batch_size"]) < 1 or not float(recipe["lr"]) > 0:
        raise UsageError(f"recipe {path} ({mode}): epochs and batch_size must be >= 1 and lr > 0, got "
                         f"{recipe['epochs']}, {recipe['batch_size']}, {recipe['lr']}")
    if recipe.get("schedule", "constant") not in SCHEDULES:
        raise UsageError(f"recipe {path} ({mode}): schedule {recipe.get('schedule')!r} not in {SCHEDULES}")
    if int(recipe.get("grad_accum", 1)) < 1:
        raise UsageError(f"recipe {path} ({mode}): grad_accum must be >= 1")
    recipe.setdefault("schedule", "constant")
    recipe.setdefault("grad_accum", 1)
    recipe.setdefault("weight_decay", 0.0)
    recipe.setdefault("grad_clip", 1.0)
    recipe.setdefault("eval_every", 1)
    return path, recipe


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """Learning-rate multiplier of 1-based ``epoch`` (``hitrs-model.md`` §8).

    - ``released_finetune``: 1 for e <= 20, else max(0.5 ** ceil((e - 20) / 10), 0.0025);
    - ``released_scratch``: 1 (<= 30), 0.5 (31-40), 0.25 (41-50), 0.125 (51-55), 0.0125 (> 55);
    - ``cosine``: 0.5 (1 + cos(pi (e - 1) / epochs)), for short recipes;
    - ``constant``: 1.
    """
    if schedule == "constant":
        return 1.0
    if schedule == "released_finetune":
        return 1.0 if epoch <= 20 else max(0.5 ** math.ceil((epoch - 20) / 10), 0.0025)
    if schedule == "released_scratch":
        for last, value in ((30, 1.0), (40, 0.5), (50, 0.25), (55, 0.125)):
            if epoch <= last:
                return value
        return 0.0125
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / max(1, epochs)))
    raise ValueError(f"unknown schedule {schedule!r}; available: {SCHEDULES}")


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


def ensure_synthetic(kind: str, cache_dir: str | os.PathLike, seed: int, **sizes: int) -> Path:
    """The built-in synthetic store of ``kind`` (generated once; cached by kind, seed and size)."""
    from hitrs_fast.data.synthetic import write_synthetic

    tag = "-".join(f"{k}{v}" for k, v in sorted(sizes.items()))
    path = Path(cache_dir) / (f"synthetic-{kind}-seed{seed}" + (f"-{tag}" if tag else ""))
    if not (path / "meta.json").exists():
        write_synthetic(path, kind, seed=seed, overwrite=path.exists(), **sizes)
    return path


def is_synthetic(store) -> bool:
    """True for the built-in synthetic sets: their default recipe is the small CPU one."""
    return store.info.get("source") == "synthetic"


def open_store(data: str | None, default: Callable[[], Path], splits: tuple[str, ...]):
    """Opens ``--data`` (or the default synthetic store) and checks the requested splits exist."""
    from hitrs_fast.data.store import SkeletonStore

    path = Path(data) if data is not None else default()
    if not (path / "meta.json").exists():
        raise UsageError(f"--data {path}: not a hitrs_fast store (no meta.json); convert a dataset with "
                         "`python -m hitrs_fast.data convert ...` or omit --data for the synthetic set")
    store = SkeletonStore(path)
    for split in splits:
        if split not in store.split_names:
            raise UsageError(f"split {split!r}: not in {path} (splits: {store.split_names})")
    return store


# ----------------------------------------------------------------------------- encoder loading


def load_encoder_checkpoint(path: str | os.PathLike, overrides: dict[str, Any] | None = None,
                            preset: str | None = None, backend: str = "auto") -> tuple[HiTRS, dict[str, Any]]:
    """Builds a :class:`HiTRS` from a pre-training ``encoder.pt`` and loads its weights strictly.

    The model config comes from the checkpoint (as in the released fine-tuning). ``overrides`` may only
    touch shape-free fields (:data:`RUNTIME_FIELDS`); ``preset``, when given, must describe the same
    architecture as the checkpoint. Every failure is a ValueError naming the file and the problem.

    Returns ``(encoder, info)`` with ``info = {"init": path, "step": ..., "config": ...}``.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--init {path}: no such file (expected a pre-training encoder.pt or 'random')")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a corrupt or foreign file
        raise UsageError(f"--init {path}: not a readable torch checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "config" not in ckpt:
        keys = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise UsageError(f"--init {path}: expected a dict with 'state_dict' and 'config' (training/pretrain.py's "
                         f"encoder.pt), got {keys}")
    try:
        config = HiTRSConfig.from_dict(ckpt["config"])
    except (TypeError, ValueError) as e:
        raise UsageError(f"--init {path}: invalid model config in the checkpoint: {e}") from None
    overrides = dict(overrides or {})
    shape_fields = sorted(set(overrides) - RUNTIME_FIELDS)
    if shape_fields:
        raise UsageError(f"--set {shape_fields}: cannot change these fields of the checkpoint {path} (they define "
                         f"the architecture); allowed with a checkpoint: {sorted(RUNTIME_FIELDS)}")
    if preset is not None:
        if preset not in PRESETS:
            raise UsageError(f"--preset {preset!r}: unknown; available: {sorted(PRESETS)}")
        wanted = HiTRSConfig.preset(preset).to_dict()
        have = config.to_dict()
        diff = [f"{k}: preset {wanted[k]!r} vs checkpoint {have[k]!r}" for k in sorted(wanted)
                if k not in RUNTIME_FIELDS and wanted[k] != have[k]]
        if diff:
            raise UsageError(f"--preset {preset} does not match the checkpoint {path}: " + "; ".join(diff))
    try:
        config = config.replace(**overrides)
    except (TypeError, ValueError) as e:
        raise UsageError(f"--set: {e}") from None
    encoder = HiTRS(config, backend=backend)
    state = ckpt["state_dict"]
    own = encoder.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        raise UsageError(f"--init {path}: weights do not match the config stored in the checkpoint "
                         f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected "
                         f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, shape mismatches {shapes[:5]})")
    encoder.load_state_dict(state, strict=True)
    return encoder, {"init": str(path), "step": ckpt.get("step"), "config": config.to_dict()}


def build_encoder(init: str, preset: str | None, overrides: dict[str, Any], backend: str,
                  seed: int) -> tuple[HiTRS, dict[str, Any]]:
    """``--init random`` (a seeded fresh encoder of ``preset``, default tiny) or a checkpoint path."""
    if init == "random":
        name = preset or "tiny"
        if name not in PRESETS:
            raise UsageError(f"--preset {name!r}: unknown; available: {sorted(PRESETS)}")
        try:
            config = HiTRSConfig.preset(name, **overrides)
        except (TypeError, ValueError) as e:
            raise UsageError(f"model config: {e}") from None
        torch.manual_seed(seed)
        return HiTRS(config, backend=backend), {"init": "random", "step": None, "config": config.to_dict()}
    return load_encoder_checkpoint(init, overrides, preset, backend)


def check_mode(mode: str, init: str) -> None:
    if mode == "scratch" and init != "random":
        raise UsageError(f"--mode scratch trains from random init; got --init {init} (use --mode finetune)")


def freeze_encoder(model: nn.Module, mode: str) -> None:
    """Linear mode: encoder parameters frozen (the head is the only trainable part)."""
    if mode == "linear":
        for p in model.encoder.parameters():
            p.requires_grad_(False)


def set_train_mode(model: nn.Module, mode: str) -> None:
    """``model.train()``, except that a frozen encoder stays in ``eval()`` (no dropout), as released."""
    model.train()
    if mode == "linear":
        model.encoder.eval()


# ----------------------------------------------------------------------------- run directory and loop


def make_run_dir(run_dir: str | None, task: str, mode: str, resume: bool) -> Path:
    path = Path(run_dir or f"runs/{task}-{mode}-{time.strftime('%Y%m%d-%H%M%S')}")
    if resume and not (path / "checkpoint.pt").exists():
        raise UsageError(f"--resume: no checkpoint.pt in {path}")
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary sibling, fsync, rename: a killed run never leaves half a checkpoint."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass
class FitResult:
    """What :func:`fit` returns. ``last`` / ``best``: ``{"epoch": e, **metrics}``; payloads are what the
    evaluation function returned beside its metrics at those epochs (e.g. test scores)."""

    last: dict[str, Any]
    best: dict[str, Any]
    history: list[dict[str, Any]]
    last_payload: Any = None
    best_payload: Any = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def fit(
    *,
    model: nn.Module,
    mode: str,
    recipe: dict[str, Any],
    run_dir: Path,
    batches: Callable[[int], Iterable[Any]],
    loss_fn: Callable[[Any], torch.Tensor],
    evaluate: Callable[[int], tuple[dict[str, float], Any]],
    primary: str,
    higher_is_better: bool,
    seed: int,
    resume: bool,
    desc: str,
    progress: bool = True,
) -> FitResult:
    """The shared epoch loop.

    Each epoch ``e = 1..epochs``: lr = recipe lr x :func:`lr_factor`; micro-batches from ``batches(e)``
    (``loss_fn`` returns the mean loss of one), ``grad_accum`` of them per AdamW step with global-norm
    clipping; evaluation every ``eval_every`` epochs and at the last; then the epoch checkpoint is written
    atomically. The torch RNG is re-seeded from ``(seed, epoch)`` at every epoch start, so a resumed run
    continues exactly. Best epoch = best ``primary`` metric (reported separately from the last epoch).
    """
    from tqdm.auto import tqdm

    epochs, accum = int(recipe["epochs"]), int(recipe["grad_accum"])
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise UsageError("nothing to train: every parameter is frozen")
    optimizer = torch.optim.AdamW(parameter_groups(model, float(recipe["weight_decay"])), lr=float(recipe["lr"]),
                                  betas=(0.9, 0.999), eps=1e-8)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {}
    last: dict[str, Any] = {}
    best_payload = last_payload = None
    start = 1
    ckpt_path = run_dir / "checkpoint.pt"
    if resume:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, best, last = state["history"], state["best"], state["last"]
        best_payload, last_payload = state.get("best_payload"), state.get("last_payload")
        start = int(state["epoch"]) + 1
    logger = RunLogger(run_dir, resume_step=start - 1 if resume else None)
    bar = tqdm(total=epochs, initial=start - 1, desc=desc, unit="epoch", dynamic_ncols=True, disable=not progress)
    t0 = time.perf_counter()
    for epoch in range(start, epochs + 1):
        torch.manual_seed(int(np.random.SeedSequence([seed, epoch, 1]).generate_state(1)[0]))
        factor = lr_factor(recipe["schedule"], epoch, epochs)
        for group in optimizer.param_groups:
            group["lr"] = float(recipe["lr"]) * factor
        set_train_mode(model, mode)
        losses: list[float] = []
        optimizer.zero_grad(set_to_none=True)
        pending = 0
        te = time.perf_counter()
        for batch in batches(epoch):
            loss = loss_fn(batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: non-finite loss {float(loss)} at epoch {epoch}")
            (loss / accum).backward()
            losses.append(float(loss.detach()))
            pending += 1
            if pending == accum:
                _step(optimizer, params, recipe)
                pending = 0
        if pending:  # a last partial accumulation still updates (scaled as if complete, as released)
            _step(optimizer, params, recipe)
        row: dict[str, Any] = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"),
                               "lr": float(recipe["lr"]) * factor, "epoch_seconds": time.perf_counter() - te}
        if epoch % int(recipe["eval_every"]) == 0 or epoch == epochs:
            model.eval()
            with torch.no_grad():
                metrics, payload = evaluate(epoch)
            row.update(metrics)
            last, last_payload = {"epoch": epoch, **metrics}, payload
            better = (not best or (metrics[primary] > best[primary] if higher_is_better
                                   else metrics[primary] < best[primary]))
            if better:
                best, best_payload = {"epoch": epoch, **metrics}, payload
        history.append(row)
        logger.log(epoch, {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "epoch"})
        save_atomic({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "history": history, "best": best, "last": last, "best_payload": best_payload,
                     "last_payload": last_payload}, ckpt_path)
        bar.set_postfix({"loss": f"{row['train_loss']:.4g}", **({primary: f"{row[primary]:.4g}"}
                                                               if primary in row else {})})
        bar.update(1)
    bar.close()
    logger.plot(["train_loss", primary], title=desc)
    logger.close()
    return FitResult(last=last, best=best, history=history, last_payload=last_payload, best_payload=best_payload,
                     seconds=time.perf_counter() - t0)


def _step(optimizer: torch.optim.Optimizer, params: list[torch.Tensor], recipe: dict[str, Any]) -> None:
    if recipe.get("grad_clip"):
        torch.nn.utils.clip_grad_norm_(params, float(recipe["grad_clip"]))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def write_config(run_dir: Path, args: argparse.Namespace, recipe_path: Path, recipe: dict[str, Any],
                 encoder_info: dict[str, Any], **extra: Any) -> None:
    atomic_write_json(run_dir / "config.json", {"args": vars(args), "recipe_file": str(recipe_path),
                                                "recipe": recipe, "encoder": encoder_info, **extra})


def mix_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


__all__ = ["MODES", "RECIPE_DIR", "RUNTIME_FIELDS", "FitResult", "UsageError", "add_common_args", "build_encoder",
           "check_mode", "ensure_synthetic", "fit", "freeze_encoder", "is_synthetic", "load_encoder_checkpoint",
           "lr_factor", "make_run_dir", "mix_seed", "open_store", "parse_overrides", "pick_device", "resolve_recipe",
           "save_atomic", "set_train_mode", "write_config"]
