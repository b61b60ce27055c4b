"""Lookup of the JSON configs shipped with the package: DeepSpeed configs and downstream recipes.

The repository keeps them in ``training/configs/`` (DeepSpeed) and ``training/configs/downstream/``
(recipes), where users see and edit them; pyproject.toml installs that folder as the package
``hitrs_fast.configs``. Every lookup goes through :mod:`importlib.resources`, so an installed wheel
finds its own copies and an editable install reads the repository files.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hitrs_fast.training.run import UsageError

if TYPE_CHECKING:  # importlib.resources.abc is Python >= 3.11
    from importlib.resources.abc import Traversable

CONFIG_PACKAGE = "hitrs_fast.configs"
DEEPSPEED = ""  # DeepSpeed configs sit at the top of the package
RECIPES = "downstream"


def config_folder(folder: str) -> Traversable:
    """The packaged folder ``folder`` (:data:`DEEPSPEED` or :data:`RECIPES`)."""
    root = files(CONFIG_PACKAGE)
    return root / folder if folder else root


def config_names(folder: str, prefix: str = "") -> list[str]:
    """Sorted names of the packaged ``*.json`` files in ``folder`` that start with ``prefix``."""
    return sorted(p.name for p in config_folder(folder).iterdir()
                  if p.is_file() and p.name.endswith(".json") and p.name.startswith(prefix))


def load_config(name: str, folder: str, option: str, prefix: str = "") -> tuple[str, dict[str, Any]]:
    """Reads a JSON config given as a path or as the name of a packaged file.

    ``name`` is used as a path when such a file exists; otherwise it names a file of the packaged
    ``folder``. ``option`` (e.g. ``"--ds-config"``) and ``prefix`` (which packaged names to offer) only
    shape the error messages.

    Returns:
        ``(where, value)``: the file's location as a string (for logs and ``config.json``) and the
        parsed JSON.

    Raises:
        UsageError: no such file (listing the packaged names), or invalid JSON (with its line).
    """
    source: Path | Traversable = Path(name)
    if not source.is_file():
        source = config_folder(folder) / name
    if not source.is_file():
        where = CONFIG_PACKAGE + (f"/{folder}" if folder else "")
        raise UsageError(f"{option} {name!r}: no such file, and no packaged config of that name (available in "
                         f"{where}: {config_names(folder, prefix)})")
    try:
        return str(source), json.loads(source.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UsageError(f"{option} {source}: not valid JSON at line {e.lineno}: {e.msg}") from None
