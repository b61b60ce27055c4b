"""Run directories: resolved config, metrics as JSON lines, TensorBoard events, loss curves,
and atomic file writes."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


class UsageError(ValueError):
    """A bad command-line argument, reported before any training starts."""


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["dropout=0.1", "body_reduce=mean_present"]`` -> typed dict (JSON values, else strings)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"--set expects FIELD=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` to a temporary sibling, fsyncs and renames it over ``path``: a reader
    sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


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
