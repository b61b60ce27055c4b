"""Downstream recipes: which epochs, batch size, learning rate and schedule a task trains with.

A recipe is a JSON file ``{"task": ..., "data_scale": {...}, "common": {...}, "linear": {...},
"finetune": {...}, "scratch": {...}}`` shipped in ``training/configs/downstream/`` (package
``hitrs_fast.configs``), or any file given by path. The mode's section overrides ``common``; command-line
flags override both.

``data_scale`` states the amount of training data the recipe was made for, ``{"unit": ..., "min": a,
"max": b}`` (``max`` null: no upper bound), in the task's unit (:data:`SCALE_UNITS`): samples of the
training split for recognition (its epochs are passes over them), frames of the training split for
detection and motion prediction (they draw windows from them). Without ``--recipe`` the packaged recipe
whose range holds the store's training split is used; a recipe given by name or path whose range does not
hold it is refused with the name of the one that fits. A recipe without ``data_scale`` (a user's own file)
is used as given.

How long a run trains follows from the data too (:func:`plan_epochs`): ``min_steps`` (optimizer steps) and
``min_passes`` (passes over the training split: its samples for recognition, its windows for motion
prediction, its frames for detection) raise the recipe's ``epochs`` until both are reached, so a small
training split is not left with a few dozen steps. ``--epochs`` on the command line is taken as given.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hitrs_fast.training.config_files import RECIPES, config_names, load_config
from hitrs_fast.training.optim import SCHEDULES
from hitrs_fast.training.run import UsageError

MODES = ("linear", "finetune", "scratch")
SCALE_UNITS = {"recognition": "train_samples", "detection": "train_frames", "motion": "train_frames"}
_UNIT_WORDS = {"train_samples": "training samples", "train_frames": "training frames"}
SCALE_WORDS = {task: _UNIT_WORDS[unit] for task, unit in SCALE_UNITS.items()}


def store_scale(task: str, store, split: str) -> int:
    """The size of ``split`` of ``store`` in ``task``'s unit (:data:`SCALE_UNITS`)."""
    idx = store.split_indices(split)
    if SCALE_UNITS[task] == "train_samples":
        return int(idx.size)
    return int(np.asarray(store.lengths)[idx].sum())


def scale_range(task: str, where: str, raw: dict[str, Any]) -> tuple[int, int | None] | None:
    """``(min, max)`` of a recipe's ``data_scale`` (``max`` None: unbounded), or None when it has none."""
    scale = raw.get("data_scale")
    if scale is None:
        return None
    unit = SCALE_UNITS[task]
    if not isinstance(scale, dict) or scale.get("unit") != unit or not isinstance(scale.get("min"), int) \
            or not (scale.get("max") is None or isinstance(scale.get("max"), int)):
        raise UsageError(f"recipe {where}: data_scale must be {{\"unit\": \"{unit}\", \"min\": int, \"max\": int or "
                         f"null}}, got {scale!r}")
    lo, hi = scale["min"], scale.get("max")
    if lo < 0 or (hi is not None and hi < lo):
        raise UsageError(f"recipe {where}: data_scale needs 0 <= min <= max, got {lo}..{hi}")
    return lo, hi


def describe_scale(task: str, bounds: tuple[int, int | None]) -> str:
    """``"1 to 9,999 training samples"`` / ``"10,000 or more training frames"``."""
    lo, hi = bounds
    unit = SCALE_WORDS[task]
    return f"{lo:,} or more {unit}" if hi is None else f"{lo:,} to {hi:,} {unit}"


def _holds(bounds: tuple[int, int | None], size: int) -> bool:
    lo, hi = bounds
    return size >= lo and (hi is None or size <= hi)


def packaged_scales(task: str) -> dict[str, tuple[int, int | None]]:
    """The packaged recipes of ``task`` that state a data scale: name -> ``(min, max)``."""
    out = {}
    for name in config_names(RECIPES, prefix=f"{task}_"):
        where, raw = load_config(name, RECIPES, "--recipe")
        if isinstance(raw, dict) and raw.get("task") == task:
            bounds = scale_range(task, where, raw)
            if bounds is not None:
                out[name] = bounds
    return out


def recipe_for_scale(task: str, size: int) -> str:
    """The name of the packaged recipe of ``task`` made for ``size`` training units."""
    scales = packaged_scales(task)
    fits = [name for name, bounds in scales.items() if _holds(bounds, size)]
    if len(fits) != 1:
        listed = "; ".join(f"{n}: {describe_scale(task, b)}" for n, b in scales.items())
        raise UsageError(f"no single packaged {task} recipe is made for {size:,} {SCALE_WORDS[task]} "
                         f"({listed}); pass --recipe FILE")
    return fits[0]


def resolve_recipe(task: str, name: str | None, size: int, mode: str, overrides: dict[str, Any],
                   required: tuple[str, ...] = ()) -> tuple[str, dict[str, Any]]:
    """Loads a recipe and returns ``(where, flat recipe for mode)``.

    Args:
        task: ``"recognition"``, ``"detection"`` or ``"motion"``; the file's ``task`` must match.
        name: ``--recipe`` (a packaged name or a path); None = the packaged recipe made for ``size``
            (:func:`recipe_for_scale`).
        size: the training split's size in the task's unit (:func:`store_scale`).
        mode: one of :data:`MODES`.
        overrides: command-line values (``epochs``, ``lr``, ``batch_size``); None entries are ignored.
        required: task-specific keys the flat recipe must hold.

    Returns:
        ``(where, recipe)`` with defaults filled in: ``schedule`` constant, ``grad_accum`` 1,
        ``weight_decay`` 0, ``grad_clip`` 1, ``eval_every`` 1; ``data_scale`` copied from the file when it
        has one.

    Raises:
        UsageError: an unknown or invalid recipe, or one made for another data scale (naming the one to use).
    """
    name = name or recipe_for_scale(task, size)
    path, raw = load_config(name, RECIPES, "--recipe", prefix=f"{task}_")
    if not isinstance(raw, dict) or raw.get("task") != task:
        found = raw.get("task") if isinstance(raw, dict) else type(raw).__name__
        raise UsageError(f"--recipe {path}: is a recipe for task {found!r}, this script is {task!r}")
    bounds = scale_range(task, path, raw)
    if bounds is not None and not _holds(bounds, size):
        fit = recipe_for_scale(task, size)
        raise UsageError(f"--recipe {name}: made for {describe_scale(task, bounds)}, but the training split has "
                         f"{size:,}: use --recipe {fit} (made for {describe_scale(task, packaged_scales(task)[fit])}),"
                         " or a recipe file of your own without \"data_scale\"")
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
    scale = recipe.get("encoder_lr_scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0:
        raise UsageError(f"recipe {path} ({mode}): encoder_lr_scale (the encoder's lr / lr) must be a number > 0, "
                         f"got {scale!r}")
    if recipe.get("schedule", "constant") not in SCHEDULES:
        raise UsageError(f"recipe {path} ({mode}): schedule {recipe.get('schedule')!r} not in {SCHEDULES}")
    if int(recipe.get("grad_accum", 1)) < 1:
        raise UsageError(f"recipe {path} ({mode}): grad_accum must be >= 1")
    for key in ("min_steps", "min_passes"):
        if not isinstance(recipe.get(key, 0), int) or recipe.get(key, 0) < 0:
            raise UsageError(f"recipe {path} ({mode}): {key} must be an integer >= 0, got {recipe.get(key)!r}")
    for key in required:
        if key not in recipe:
            raise UsageError(f"recipe {path} ({mode}): lacks {key!r}")
    recipe.setdefault("schedule", "constant")
    recipe.setdefault("grad_accum", 1)
    recipe.setdefault("weight_decay", 0.0)
    recipe.setdefault("grad_clip", 1.0)
    recipe.setdefault("eval_every", 1)
    if bounds is not None:
        recipe["data_scale"] = dict(raw["data_scale"])
    return path, recipe


def plan_epochs(recipe: dict[str, Any], steps_per_epoch: int, steps_per_pass: int, epochs_given: bool
                ) -> tuple[dict[str, Any], str]:
    """The epoch count of a run: the recipe's ``epochs``, raised until the run makes at least ``min_steps``
    optimizer steps and ``min_passes`` passes over the training data (``steps_per_pass`` optimizer steps
    each); ``epochs_given`` (``--epochs``): taken as given. ``eval_every`` grows in proportion, so the run
    evaluates as often as the recipe says.

    Returns ``(recipe with "epochs", "eval_every" and "optimizer_steps" set, a line that says so)``.
    """
    epochs, every = int(recipe["epochs"]), int(recipe["eval_every"])
    needed = max(int(recipe.get("min_steps", 0)), int(recipe.get("min_passes", 0)) * steps_per_pass)
    planned = epochs if epochs_given else max(epochs, math.ceil(needed / max(steps_per_epoch, 1)))
    total = planned * steps_per_epoch
    why = []
    if recipe.get("min_steps"):
        why.append(f"at least {recipe['min_steps']} steps")
    if recipe.get("min_passes"):
        why.append(f"at least {recipe['min_passes']} passes over the training data ({steps_per_pass} steps each)")
    if epochs_given:
        reason = "--epochs as given" + (f"; the recipe asks for {' and '.join(why)}" if why and total < needed else "")
    elif planned > epochs:
        reason = f"the recipe's {epochs} epochs raised to make {' and '.join(why)}"
    else:
        reason = f"the recipe's epochs{' (' + ', '.join(why) + ')' if why else ''}"
    plan = {**recipe, "epochs": planned, "eval_every": max(1, round(every * planned / epochs)) if planned > epochs
            else every, "optimizer_steps": total}
    return plan, f"training: {planned} epochs x {steps_per_epoch} optimizer steps = {total} steps ({reason})"
