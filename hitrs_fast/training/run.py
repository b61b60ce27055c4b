"""Run-level helpers shared by pre-training and the downstream tasks: command-line overrides, the ``--data``
store check, seed mixing, atomic file writes and the metrics logger (JSON lines, TensorBoard, loss curves)."""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np


class UsageError(ValueError):
    """A bad command-line argument, reported before any training starts."""


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``--set`` values, ``["dropout=0.1", "body_reduce=mean_present"]``, as a typed dict (JSON values, else
    strings). Every FIELD must be a :class:`~hitrs_fast.config.HiTRSConfig` field: an unknown one is a
    :class:`UsageError` naming the closest field and listing all of them."""
    from hitrs_fast.config import HiTRSConfig

    fields = [f.name for f in dataclasses.fields(HiTRSConfig)]
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"--set expects FIELD=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(f"--set {item}: {key!r} is not a model config field{hint}; fields: {', '.join(fields)}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def open_checked_store(path: str | os.PathLike, splits: list[tuple[str, str]]):
    """Opens the store of ``--data`` for a command: ``path`` must be a readable store, and each ``(option,
    split)`` a non-empty split of it. Every failure is a one-line :class:`UsageError` naming the option and
    the valid choices."""
    from hitrs_fast.data.store import SkeletonStore, StoreFormatError

    path = Path(path)
    if not (path / "meta.json").exists():
        raise UsageError(f"--data {path}: not a hitrs_fast store (no meta.json); convert a dataset with "
                         "`hitrs data convert ...` / `hitrs data import ...` or omit --data for the synthetic set")
    try:
        store = SkeletonStore(path)
    except (StoreFormatError, OSError) as e:
        raise UsageError(f"--data {path}: {e}") from None
    for option, split in splits:
        if split not in store.split_names:
            raise UsageError(f"{option} {split!r}: not a split of {path} (splits: {store.split_names})")
        if store.split_indices(split).size == 0:
            sizes = {k: int(store.split_indices(k).size) for k in store.split_names}
            raise UsageError(f"{option} {split!r}: the split is empty in {path} (split sizes: {sizes})")
    return store


def mix_seed(*parts: int) -> int:
    """One 32-bit seed from integer parts (e.g. ``(seed, step, micro, rank)``), through numpy's
    ``SeedSequence``: nearby tuples give unrelated seeds. Parts are taken modulo 2**32."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """Opens a temporary sibling of ``path`` for writing; on a clean exit it is flushed, fsynced and
    renamed over ``path``, on an exception it is removed. A reader (or a resumed run) sees the old
    file or the new one, never half of one.

    Examples::

        with atomic_file("run/summary.json") as f:
            f.write(text)
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_file: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name per writer (two processes may save the same file), created with "x" so that the
    # file gets the usual umask permissions.
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, mode.replace("w", "x")) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` to ``path`` through :func:`atomic_file`."""
    with atomic_file(path, "w") as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`atomic_file`: a killed run never leaves half a checkpoint."""
    import torch

    with atomic_file(path, "wb") as f:
        torch.save(obj, f)


class RunLogger:
    """Metrics sink of one run (rank 0 only writes).

    ``metrics.jsonl``: one JSON object per logged step; ``tensorboard/``: the same scalars;
    ``loss_curve.png``: drawn by :meth:`plot`. On resume, rows past the resumed step are
    dropped so the file holds one trajectory.
    """

    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True, resume_step: int | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self._tb = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.metrics_path.exists():
            kept = [line for line in self.metrics_path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            atomic_write_text(self.metrics_path, "".join(line + "\n" for line in kept))
        elif self.metrics_path.exists():
            self.metrics_path.unlink()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=resume_step)
        except ImportError:  # tensorboard is in the train extra; metrics.jsonl is always written
            self._tb = None

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": int(step), **{k: float(v) for k, v in values.items()}}
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(key, float(value), step)

    def rows(self) -> list[dict[str, float]]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def plot(self, keys: list[str], path: str | os.PathLike | None = None, title: str = "pre-training") -> Path | None:
        """Draws the logged curves of ``keys`` against the step into a PNG."""
        if not self.enabled:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.rows()
        path = Path(path or self.run_dir / "loss_curve.png")
        present = [k for k in keys if any(k in r for r in rows)]
        fig, axes = plt.subplots(1, max(1, len(present)), figsize=(3.2 * max(1, len(present)), 2.8), squeeze=False)
        for ax, key in zip(axes[0], present, strict=True):
            pts = [(r["step"], r[key]) for r in rows if key in r]
            ax.plot([p[0] for p in pts], [p[1] for p in pts])
            ax.set_title(key, fontsize=9)
            ax.set_xlabel("step", fontsize=8)
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
