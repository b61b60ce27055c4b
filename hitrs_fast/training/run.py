"""The harness of the training commands (``hitrs pretrain``, ``recognize``, ``detect``, ``predict-motion``,
``convert-checkpoint``): the options pre-training and the downstream tasks share, the run session (signals,
last checkpoint, resume command), the heap trimmer that keeps a long CPU run's memory flat, command-line
overrides, the ``--data`` store check, seed mixing, atomic file writes and the metrics logger (JSON lines,
TensorBoard, loss curves).

A command's ``main(argv, prog)`` is ``run_cli(parser, body, argv)``: it parses the arguments (a malformed
command line is one line ``PROG: error: ... (see PROG --help)``, exit 2), runs ``body(args)`` inside a
:class:`RunSession` and turns what stops it into one line on stderr and an exit status:

====================  =========================================================================  ======
what stops the body   what the user reads                                                         status
====================  =========================================================================  ======
nothing               the command's own output                                                    0
:class:`UsageError`   ``PROG: error: MESSAGE``                                                    2
SIGINT / SIGTERM      ``PROG: interrupted (SIGINT) ...; last complete checkpoint: ...; resume:``  130 / 143
====================  =========================================================================  ======
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import secrets
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, ClassVar

import numpy as np

from hitrs_fast.cli import CommandParser  # noqa: F401 - the commands' parser class, imported from here


class UsageError(ValueError):
    """A bad command-line argument, reported before any training starts."""


def add_run_arguments(p: argparse.ArgumentParser, *, data_default: str, preset_default: str | None,
                      preset_help: str, run_dir_default: str, resume_help: str) -> None:
    """The options pre-training and every downstream task share, declared once: data (``--data``,
    ``--cache-dir``, ``--split``, ``--test-split``), model (``--preset``, ``--set``, ``--backend``), run
    (``--seed``, ``--threads``, ``--run-dir``, ``--resume``, ``--no-progress``). What differs between the
    commands (defaults, what resuming reads) comes in as arguments."""
    from hitrs_fast.config import PRESETS
    from hitrs_fast.models import MODEL_BACKENDS

    p.add_argument("--data", default=None, help=f"store directory (hitrs data convert / import); default: "
                   f"{data_default}, generated under --cache-dir on first use")
    p.add_argument("--cache-dir", default="runs/data", help="where the synthetic set is generated")
    p.add_argument("--split", default="train", help="training split of the store (default: train)")
    p.add_argument("--test-split", default="test", help="evaluation split of the store (default: test)")
    p.add_argument("--preset", default=preset_default, help=f"model preset: {sorted(PRESETS)}; {preset_help}")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override one HiTRSConfig field, e.g. --set dropout=0.1 (repeatable)")
    p.add_argument("--backend", default="auto", choices=list(MODEL_BACKENDS),
                   help="model backend (auto: the Triton kernels on CUDA; sdpa: PyTorch SDPA attention)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--run-dir", default=None, help=f"default: {run_dir_default}")
    p.add_argument("--resume", action="store_true", help=resume_help)
    p.add_argument("--no-progress", action="store_true", help="no progress bar: one line per logged step or epoch "
                   "instead (also what happens when the output is not a terminal)")


def set_threads(threads: int | None) -> None:
    """``--threads``: torch's CPU threads (None: torch's choice)."""
    import torch

    if threads is None:
        return
    if threads < 1:
        raise UsageError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)


def reproducible_cpu_gemms() -> None:
    """Asks MKL, PyTorch's CPU BLAS, for its strict reproducible mode (``MKL_CBWR=AUTO,STRICT``) unless the
    environment already chooses one.

    By default MKL splits some GEMMs differently with the thread count (the motion decoder's ``[256, 128] x
    [128, 75]`` products change in the last bits between 1 and 4 threads), and training amplifies the last bits
    into a different model. In strict mode a GEMM gives the same bits at every thread count (on a 2-core CPU the
    default pre-training job ran about 4 % slower with it, one noisy measurement). MKL reads the variable when it first
    runs, so this must come before the process's first matrix product: every command calls it first (it does
    nothing for a process that has already multiplied, nor on a CUDA device).
    """
    os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")


JEMALLOC_HINT = ("jemalloc keeps the memory flat at full speed: LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 "
                 "MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1 (apt install libjemalloc2; docs/training.md)")


class HeapTrimmer:
    """Hands the memory glibc's allocator holds free back to the OS once the process has grown past a budget.

    A CPU training step allocates and frees hundreds of MB in tensors whose sizes follow the batch; glibc
    serves them from its heap, which fragments: the freed memory stays resident and the heap keeps growing (the
    default tiny pre-training job: 1.5 GB at step 10, 3.1 GB at step 100, 6.2 GB at step 800). Returning the
    free pages (``malloc_trim``) is not free: they are faulted in again by the next steps, which cost the
    default job a quarter of its speed when done whenever the process doubled (docs/training.md). So
    :meth:`step`, called after each optimizer step, reads the resident size (one read of ``/proc/self/statm``)
    and trims only when it exceeds ``budget``: ``fraction`` of the machine's memory, or ``factor`` x the size
    right after the last trim when that is larger. Below the budget it costs nothing; above it the process
    stays near the budget instead of growing until the machine runs out, and the first trim prints how to keep
    the memory flat at full speed instead: jemalloc (:data:`JEMALLOC_HINT`). Does nothing without glibc or
    ``/proc`` (macOS, musl)."""

    def __init__(self, fraction: float = 0.25, factor: float = 2.0) -> None:
        import ctypes
        import ctypes.util

        self.factor = factor
        self.trims = 0
        self._after_trim = 0
        self._trim = self._statm = None
        try:
            self._page = os.sysconf("SC_PAGE_SIZE")
            self.floor = int(fraction * os.sysconf("SC_PHYS_PAGES") * self._page)
            self._statm = open("/proc/self/statm", "rb")  # noqa: SIM115 - read once per step, closed with the process
            self._trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError, ValueError):
            self._trim = None

    def resident_bytes(self) -> int | None:
        """This process's resident memory in bytes (None without ``/proc``)."""
        if self._statm is None:
            return None
        self._statm.seek(0)
        return int(self._statm.read().split()[1]) * self._page

    @property
    def budget(self) -> int:
        return max(self.floor, int(self.factor * self._after_trim))

    def step(self) -> None:
        if self._trim is None:
            return
        now = self.resident_bytes()
        if now > self.budget:
            self._trim(0)
            self.trims += 1
            self._after_trim = self.resident_bytes()
            if self.trims == 1 and is_rank0():
                print(f"note: resident memory reached {now / 2**30:.1f} GB, above its budget of "
                      f"{self.budget / 2**30:.1f} GB: glibc's heap fragments under batches of varying size, and "
                      f"handing its free pages back (done from now on) costs speed; {JEMALLOC_HINT}",
                      file=sys.stderr, flush=True)


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived (raised by :class:`RunSession`'s handler, like ``KeyboardInterrupt``, so that
    every ``finally`` and atomic write on the way out runs)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        """128 + the signal number, the shell's convention: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum


def is_rank0() -> bool:
    """Whether this process speaks for the job (rank 0 of a DeepSpeed launch, or a single process)."""
    return os.environ.get("RANK", "0") == "0"


class RunSession:
    """One command being run: its command line, run directory and last complete checkpoint, so that an
    interruption ends with one line naming that checkpoint and the command that resumes from it.

    :func:`run_cli` makes one per command and makes it :meth:`current` while the command runs; the training
    code reports :meth:`started` (the run directory), writes each checkpoint inside :meth:`saving` (or reports
    :meth:`checkpoint_saved` after it) and :meth:`resuming` when it continues from one."""

    _current: ClassVar[RunSession | None] = None

    def __init__(self, prog: str, argv: Sequence[str]) -> None:
        self.prog, self.argv = prog, list(argv)
        self.run_dir: Path | None = None
        self.checkpoint: tuple[str, str] | None = None  # (what, e.g. "step 50", path)
        self._holding = False  # inside saving(): a signal waits until the checkpoint is written and recorded
        self._pending: int | None = None

    @classmethod
    def current(cls) -> RunSession:
        """The session of the running command; outside :func:`run_cli` (a test, a notebook) a session of its own."""
        if cls._current is None:
            cls._current = RunSession(os.path.basename(sys.argv[0]) or "python", sys.argv[1:])
        return cls._current

    def started(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)

    def checkpoint_saved(self, what: str, path: str | os.PathLike) -> None:
        """A complete checkpoint now exists at ``path`` (``what``: ``"step 50"``, ``"epoch 3"``)."""
        self.checkpoint = (what, str(path))

    @contextmanager
    def saving(self, what: str, path: str | os.PathLike) -> Iterator[None]:
        """Writes a checkpoint: SIGINT / SIGTERM arriving inside wait until the block has ended and the
        checkpoint is recorded, so the interruption names what is on disk (a signal between the write and
        its record would name the checkpoint before, and the printed resume would not say where it goes on)."""
        self._holding, self._pending = True, None
        try:
            yield
            self.checkpoint_saved(what, path)
        finally:
            self._holding = False
        if self._pending is not None:
            raise Interrupted(self._pending)

    def resuming(self, what: str, path: str | os.PathLike, total: str) -> None:
        """Prints where a ``--resume`` run continues (``resuming from step 50 of 400 (PATH)``); that
        checkpoint is the last complete one until the run writes another."""
        self.checkpoint_saved(what, path)
        if is_rank0():
            print(f"resuming from {what} of {total} ({path})", flush=True)

    def resume_command(self) -> str:
        """The command line that continues this run: the same arguments with ``--run-dir`` this run's
        directory and ``--resume``."""
        argv, skip = [], False
        for arg in self.argv:
            if skip:
                skip = False
            elif arg == "--run-dir":
                skip = True
            elif not arg.startswith("--run-dir=") and arg != "--resume":
                argv.append(arg)
        return f"{self.prog} {shlex.join([*argv, '--run-dir', str(self.run_dir), '--resume'])}"

    def interrupted_message(self, signum: int) -> str:
        head = f"{self.prog}: interrupted ({signal.Signals(signum).name})"
        if self.checkpoint is None:
            where = f" in {self.run_dir}" if self.run_dir is not None else ""
            return f"{head} before its first checkpoint{where}; nothing to resume, run the command again"
        what, path = self.checkpoint
        return f"{head}; last complete checkpoint: {path} ({what}); resume: {self.resume_command()}"

    @contextmanager
    def active(self) -> Iterator[RunSession]:
        """Makes this the :meth:`current` session and, in the main thread, turns SIGINT and SIGTERM into
        :class:`Interrupted`; restores the previous handlers on the way out."""
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            def interrupt(signum, frame):
                if self._holding:
                    self._pending = signum
                    return
                raise Interrupted(signum)

            handlers = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
        previous, RunSession._current = RunSession._current, self
        try:
            yield self
        finally:
            RunSession._current = previous
            for s, h in handlers.items():
                signal.signal(s, h)


def run_cli(parser: argparse.ArgumentParser, body: Callable[[argparse.Namespace], Any],
            argv: Sequence[str] | None) -> int:
    """A command's ``main``: parses ``argv`` (one-line errors with a :class:`CommandParser`), runs ``body(args)``
    in a :class:`RunSession`, and returns its exit status: 0, 2 with one line ``PROG: error: ...`` on a
    :class:`UsageError`, 130 / 143 with one line naming the last complete checkpoint and the command that
    resumes on SIGINT / SIGTERM (no traceback)."""
    reproducible_cpu_gemms()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    session = RunSession(parser.prog, argv)
    try:
        with session.active():
            body(args)
    except UsageError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        if is_rank0():
            print(("\n" if sys.stderr.isatty() else "") + session.interrupted_message(e.signum), file=sys.stderr,
                  flush=True)
        return e.exit_status
    return 0


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
