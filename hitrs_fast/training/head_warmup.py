"""Head warm-up before fine-tuning (linear probing, then fine-tuning: Kumar et al., ICLR 2022, "Fine-Tuning can
Distort Pretrained Features and Underperform Out-of-Distribution", arXiv:2202.10054).

A new head on a pre-trained encoder first trains alone on the frozen encoder's features, which a task
computes once (cheap), so that fine-tuning starts from a head that already reads the features instead of
sending a random head's gradients into the encoder. A recipe asks for it in its fine-tuning sections::

    "finetune": {"lr": 1e-3, ..., "head_warmup": {"epochs": 12, "lr": 3e-3, "schedule": "cosine"}}

The keys of ``head_warmup`` replace the recipe's for the warm-up; the warm-up's epochs, metrics and
checkpoint go to ``RUN_DIR/head-warmup/`` and the fine-tuning starts from its last epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from hitrs_fast.training.loop import FitResult, fit
from hitrs_fast.training.run import RunSession


def wants_head_warmup(job) -> bool:
    """Whether ``job`` (a :class:`~hitrs_fast.training.task_run.TaskRun` after ``load_recipe``) warms its head
    up: its recipe has ``head_warmup``, the encoder trains (not linear mode) and the run does not resume
    (the checkpoint then holds the warmed-up head)."""
    return bool(job.recipe.get("head_warmup")) and job.args.mode != "linear" and not job.args.resume


def head_warmup_recipe(job) -> dict[str, Any]:
    """The recipe of the warm-up: ``job.recipe`` with its ``head_warmup`` keys in place of its own (a task's
    batches read their sampling settings, e.g. ``batch_size``, from it while the warm-up runs)."""
    return {**job.recipe, **job.recipe["head_warmup"]}


def warm_up_head(job, *, batches: Callable[[int], Iterable[Any]], loss_fn: Callable[[Any], torch.Tensor],
                 evaluate: Callable[[int], tuple[dict[str, float], Any]], primary: str, higher_is_better: bool,
                 desc: str) -> FitResult:
    """Trains ``job.model``'s head alone (encoder frozen, in eval mode) with the recipe's ``head_warmup``
    settings (:func:`head_warmup_recipe`; call it where :func:`wants_head_warmup`). ``batches`` / ``loss_fn``
    / ``evaluate`` read the frozen encoder's cached features, ``batches`` with the warm-up's sampling
    settings. Returns the warm-up's :class:`FitResult`."""
    recipe = head_warmup_recipe(job)
    # Its checkpoints are not the run's: an interruption during the warm-up reports that the run has no
    # checkpoint to resume from (a --resume skips the warm-up and needs the fine-tuning's checkpoint).
    trainable = [p for p in job.model.encoder.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        return fit(model=job.model, mode="linear", recipe=recipe, run_dir=job.run_dir / "head-warmup",
                   batches=batches, loss_fn=loss_fn, evaluate=evaluate, primary=primary,
                   higher_is_better=higher_is_better, seed=job.args.seed, resume=False, desc=f"{desc} head warm-up",
                   progress=not job.args.no_progress, session=RunSession("head warm-up", []))
    finally:
        for p in trainable:
            p.requires_grad_(True)
