"""Downstream recipes: which epochs, batch size, learning rate and schedule a task trains with.

A recipe is a JSON file ``{"task": ..., "common": {...}, "linear": {...}, "finetune": {...},
"scratch": {...}}`` shipped in ``training/configs/downstream/`` (package ``hitrs_fast.configs``), or
any file given by path. The mode's section overrides ``common``; command-line flags override both.
"""

from __future__ import annotations

from typing import Any

from hitrs_fast.training.config_files import RECIPES, load_config
from hitrs_fast.training.optim import SCHEDULES
from hitrs_fast.training.run import UsageError

MODES = ("linear", "finetune", "scratch")


def resolve_recipe(task: str, name: str | None, synthetic: bool, mode: str, overrides: dict[str, Any],
                   required: tuple[str, ...] = ()) -> tuple[str, dict[str, Any]]:
    """Loads a recipe and returns ``(where, flat recipe for mode)``.

    Args:
        task: ``"recognition"``, ``"detection"`` or ``"motion"``; the file's ``task`` must match.
        name: ``--recipe`` (a packaged name or a path); None = ``<task>_synthetic.json`` on the
            built-in synthetic sets, ``<task>_released.json`` otherwise.
        synthetic: whether the store is a built-in synthetic set.
        mode: one of :data:`MODES`.
        overrides: command-line values (``epochs``, ``lr``, ``batch_size``); None entries are ignored.
        required: task-specific keys the flat recipe must hold.

    Returns:
        ``(where, recipe)`` with defaults filled in: ``schedule`` constant, ``grad_accum`` 1,
        ``weight_decay`` 0, ``grad_clip`` 1, ``eval_every`` 1.
    """
    name = name or f"{task}_{'synthetic' if synthetic else 'released'}.json"
    path, raw = load_config(name, RECIPES, "--recipe", prefix=f"{task}_")
    if not isinstance(raw, dict) or raw.get("task") != task:
        found = raw.get("task") if isinstance(raw, dict) else type(raw).__name__
        raise UsageError(f"--recipe {path}: is a recipe for task {found!r}, this script is {task!r}")
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
    for key in required:
        if key not in recipe:
            raise UsageError(f"recipe {path} ({mode}): lacks {key!r}")
    recipe.setdefault("schedule", "constant")
    recipe.setdefault("grad_accum", 1)
    recipe.setdefault("weight_decay", 0.0)
    recipe.setdefault("grad_clip", 1.0)
    recipe.setdefault("eval_every", 1)
    return path, recipe
