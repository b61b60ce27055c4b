"""The epoch loop shared by the downstream tasks, with a resumable checkpoint after every epoch.

What it writes into the run directory::

    RUN_DIR/metrics.jsonl      one row per epoch (train loss, lr, evaluation metrics); TensorBoard alongside
    RUN_DIR/checkpoint.pt      last finished epoch (model, optimizer, history, best), written atomically
    RUN_DIR/loss_curve.png     curves of the logged values
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hitrs_fast.training.encoder import set_train_mode
from hitrs_fast.training.optim import lr_factor, parameter_groups
from hitrs_fast.training.run import HeapTrimmer, RunLogger, RunSession, UsageError, atomic_torch_save, mix_seed


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


def optimizer_groups(model: nn.Module, recipe: dict[str, Any]) -> list[dict]:
    """The AdamW parameter groups :func:`fit` builds for ``model`` under ``recipe`` (a recipe's
    ``encoder_lr_scale`` splits off ``model.encoder``)."""
    return parameter_groups(model, float(recipe["weight_decay"]), recipe.get("encoder_lr_scale"))


def check_resumable(model: nn.Module, recipe: dict[str, Any], state: dict[str, Any], ckpt_path: Path) -> None:
    """Refuses (:class:`UsageError`, one line) to resume the checkpoint ``state`` (read from ``ckpt_path``) into
    ``model`` when its tensors' names or shapes differ (e.g. another head option), or when its optimiser's
    parameter groups differ from those ``recipe`` builds (e.g. another ``encoder_lr_scale`` or ``--mode``)."""
    saved, built = state["model"], model.state_dict()
    differ = sorted(set(saved) ^ set(built)) + [k for k in built if k in saved and saved[k].shape != built[k].shape]
    if differ:
        key = differ[0]
        where = (f"{key}: checkpoint {tuple(saved[key].shape)}, built {tuple(built[key].shape)}"
                 if key in saved and key in built else f"{key} only in the {'checkpoint' if key in saved else 'model'}")
        raise UsageError(f"--resume: {ckpt_path} was written for another model than these arguments build "
                         f"({len(differ)} tensors differ, e.g. {where})")
    saved_groups = [len(g["params"]) for g in state["optimizer"]["param_groups"]]
    built_groups = [len(g["params"]) for g in optimizer_groups(model, recipe)]
    if saved_groups != built_groups:
        raise UsageError(f"--resume: {ckpt_path} was written with another optimiser than these arguments and recipe "
                         f"build (parameter groups of {saved_groups} tensors, now {built_groups}: the recipe's "
                         "encoder_lr_scale or --mode changed)")


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
    session: RunSession | None = None,
) -> FitResult:
    """The shared epoch loop.

    Each epoch ``e = 1..epochs``: lr = recipe lr x :func:`lr_factor`; micro-batches from ``batches(e)``
    (``loss_fn`` returns the mean loss of one), ``grad_accum`` of them per AdamW step with global-norm
    clipping; evaluation every ``eval_every`` epochs and at the last; then the epoch checkpoint is written
    atomically. The torch RNG is re-seeded from ``(seed, epoch)`` at every epoch start, so a resumed run
    continues exactly. Best epoch = best ``primary`` metric (reported separately from the last epoch).
    ``session`` (default: the current :class:`~hitrs_fast.training.run.RunSession`) hears of every epoch
    checkpoint, so an interruption names the last one.
    """
    from tqdm.auto import tqdm

    session = session or RunSession.current()
    session.started(run_dir)
    epochs, accum = int(recipe["epochs"]), int(recipe["grad_accum"])
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise UsageError("nothing to train: every parameter is frozen")
    # A recipe's encoder_lr_scale (fine-tuning) trains model.encoder at lr x that scale, same schedule.
    optimizer = torch.optim.AdamW(optimizer_groups(model, recipe), lr=float(recipe["lr"]), betas=(0.9, 0.999),
                                  eps=1e-8)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {}
    last: dict[str, Any] = {}
    best_payload = last_payload = None
    start = 1
    ckpt_path = run_dir / "checkpoint.pt"
    if resume:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        check_resumable(model, recipe, state, ckpt_path)  # one line, not torch's list of every tensor
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, best, last = state["history"], state["best"], state["last"]
        best_payload, last_payload = state.get("best_payload"), state.get("last_payload")
        start = int(state["epoch"]) + 1
        session.resuming(f"epoch {start - 1}", ckpt_path, f"{epochs}")
    logger = RunLogger(run_dir, resume_step=start - 1 if resume else None)
    # A bar on a terminal; otherwise (a log file, a pipe, --no-progress) one plain line per epoch.
    bar = tqdm(total=epochs, initial=start - 1, desc=desc, unit="epoch", dynamic_ncols=True,
               disable=None if progress else True)
    heap = HeapTrimmer()  # keeps the resident size of a long CPU run flat
    t0 = time.perf_counter()
    for epoch in range(start, epochs + 1):
        torch.manual_seed(mix_seed(seed, epoch, 1))
        factor = lr_factor(recipe["schedule"], epoch, epochs)
        for group in optimizer.param_groups:
            group["lr"] = float(recipe["lr"]) * factor * group.get("lr_scale", 1.0)
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
                heap.step()
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
        with session.saving(f"epoch {epoch}", ckpt_path):
            atomic_torch_save({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                               "history": history, "best": best, "last": last, "best_payload": best_payload,
                               "last_payload": last_payload}, ckpt_path)
        shown = {"loss": f"{row['train_loss']:.4g}", **({primary: f"{row[primary]:.4g}"} if primary in row else {})}
        if bar.disable:
            print(f"{desc}: epoch {epoch}/{epochs} " + " ".join(f"{k} {v}" for k, v in shown.items()), flush=True)
        bar.set_postfix(shown)
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
