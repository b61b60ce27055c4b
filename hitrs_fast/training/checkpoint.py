"""Checkpoints that are never left half-written.

DeepSpeed writes a tagged directory; only after every rank has finished does rank 0
point the ``latest_tag`` file at it (atomic rename). A run killed mid-save therefore
resumes from the previous complete checkpoint, and the partial directory is removed
by the next save.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from hitrs_fast.training.run import atomic_torch_save, atomic_write_text

LATEST = "latest_tag"
COMPLETE = "COMPLETE"  # written into a tag directory once every rank has finished saving it


def _is_rank0() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def barrier() -> None:
    """Waits for every rank (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class CheckpointManager:
    """Saves and restores a DeepSpeed engine plus client state under ``root``; keeps the newest ``keep``
    complete checkpoints (0: all of them)."""

    def __init__(self, root: str | os.PathLike, keep: int = 2) -> None:
        self.root = Path(root)
        self.keep = keep

    def latest_tag(self) -> str | None:
        path = self.root / LATEST
        if not path.exists():
            return None
        tag = path.read_text().strip()
        if not (self.root / tag).is_dir():
            raise FileNotFoundError(f"{path} names checkpoint {tag!r}, which does not exist under {self.root}")
        return tag

    @staticmethod
    def tag_for(step: int) -> str:
        """The directory name of the checkpoint after ``step`` optimizer steps (``step00000050``)."""
        return f"step{step:08d}"

    def save(self, engine: Any, step: int, client_state: dict[str, Any]) -> str:
        tag = self.tag_for(step)
        engine.save_checkpoint(str(self.root), tag=tag, client_state=client_state, save_latest=False)
        barrier()
        if _is_rank0():
            atomic_write_text(self.root / tag / COMPLETE, f"{step}\n")
            atomic_write_text(self.root / LATEST, tag + "\n")
            self._prune()
        barrier()
        return tag

    def load(self, engine: Any) -> dict[str, Any] | None:
        tag = self.latest_tag()
        if tag is None:
            return None
        _, client_state = engine.load_checkpoint(str(self.root), tag=tag)
        if client_state is None:
            raise RuntimeError(f"checkpoint {self.root / tag} could not be loaded")
        return client_state

    def _prune(self) -> None:
        """Keeps the newest ``keep`` complete checkpoints (all for 0); removes older ones and partial
        directories left by a killed save."""
        tags = sorted(p.name for p in self.root.iterdir() if p.is_dir() and p.name.startswith("step"))
        complete = [t for t in tags if (self.root / t / COMPLETE).exists()]
        keep = set(complete[-self.keep:] if self.keep else complete)
        for name in tags:
            if name not in keep:
                shutil.rmtree(self.root / name, ignore_errors=True)


def save_module_atomic(module: torch.nn.Module, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
    """Saves ``{"state_dict": module.state_dict(), **extra}`` to ``path`` atomically (:func:`atomic_torch_save`)."""
    atomic_torch_save({"state_dict": module.state_dict(), **(extra or {})}, path)
