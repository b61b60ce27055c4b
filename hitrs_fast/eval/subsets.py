"""Labelled subsets for semi-supervised evaluation (``docs/data.md``, NTU benchmarks).

Two sources:

* :func:`class_balanced_subset`, the library's seeded sampler: ``max(1, round(p * n_c))`` samples of every
  class present (AimCLR's per-class rule, with round-half-up), chosen deterministically from the seed and
  the samples' names (or their positions in the store's sorted-name order). It needs no RNG state, gives
  the same subset on every machine and numpy version, and nests: for one seed the 1 % subset is contained
  in the 5 % subset, which is contained in the 10 % subset.
* :func:`load_index_list`, for published index lists such as yuxiaochen1103/Hi-TRS
  ``data/NTU_60_data_idx/{xsub,xview}/{one,five,ten}_idx_list.pkl`` (420 / 2 005 / 4 009 indices for xsub).
  Those indices refer to the authors' ``os.listdir`` order at preprocessing time, which depends on their
  filesystem, **not** to the sorted order of the library's store; they select the intended samples only
  if the training set is enumerated in that exact order. Loading one warns about this.

Examples::

    >>> labels = np.repeat(np.arange(3), [100, 50, 7])
    >>> idx = class_balanced_subset(labels, 0.1, seed=0)
    >>> np.bincount(labels[idx]).tolist()   # round(10), round(5), max(1, round(0.7))
    [10, 5, 1]
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "SEMI_SUPERVISED_FRACTIONS",
    "class_balanced_subset",
    "load_index_list",
    "per_class_counts",
]

# The Hi-TRS list names and the fractions they stand for.
SEMI_SUPERVISED_FRACTIONS: dict[str, float] = {"one": 0.01, "five": 0.05, "ten": 0.10}


def _as_labels(labels: Any) -> np.ndarray:
    if hasattr(labels, "detach"):  # torch tensor, without importing torch here
        labels = labels.detach().cpu().numpy()
    a = np.asarray(labels)
    if a.ndim != 1:
        raise ValueError(f"labels: expected int [N], got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if not np.issubdtype(a.dtype, np.floating) or not np.all(a == np.round(a)):
            raise ValueError(f"labels: expected integer class ids, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.size and a.min() < 0:
        raise ValueError(
            f"labels: expected class ids >= 0, got {a.min()} at index {int(np.argmin(a))} "
            "(unlabelled samples, -1 in the store, must be removed first)"
        )
    return a


def per_class_counts(labels: Any, fraction: float) -> dict[int, int]:
    """Number of samples :func:`class_balanced_subset` takes from each present class.

    ``n_take(c) = min(n_c, max(1, floor(fraction * n_c + 0.5)))``, i.e. round half up, at least one.

    Args:
        labels: int ``[N]`` class ids >= 0 (numpy, torch or a sequence).
        fraction: in (0, 1].

    Returns:
        ``{class id: count}`` over the classes present, ascending.
    """
    y = _as_labels(labels)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    classes, n_c = np.unique(y, return_counts=True)
    # floor(x + 0.5) rather than Python's round(): no banker's rounding, so 2.5 -> 3 like the papers' arithmetic.
    take = np.minimum(n_c, np.maximum(1, np.floor(fraction * n_c + 0.5).astype(np.int64)))
    return {int(c): int(t) for c, t in zip(classes, take, strict=True)}


def _rank_key(seed: int, label: int, key: str) -> bytes:
    return hashlib.blake2b(f"{seed}\x1f{label}\x1f{key}".encode(), digest_size=8).digest()


def class_balanced_subset(
    labels: Any,
    fraction: float,
    seed: int = 0,
    names: Sequence[str] | None = None,
) -> np.ndarray:
    """Seeded, class-balanced subset of a labelled training split.

    Every sample gets a pseudo-random rank ``blake2b(seed, label, key)`` where ``key`` is its name (when
    ``names`` is given) or its position in ``labels``; within each class the ``n_take(c)`` samples with the
    smallest ranks are taken (:func:`per_class_counts`). Consequences:

    * deterministic for a seed, independent of numpy's RNG streams and of the machine;
    * with ``names``, independent of the order in which samples are listed; without, ``labels`` must be in
      the store's sorted-name order (the library's canonical order) for the subset to be reproducible
      from another listing;
    * nested across fractions for one seed (1 % subset ⊂ 5 % ⊂ 10 %).

    Args:
        labels: int ``[N]`` class ids >= 0 of the training split (numpy, torch or a sequence).
        fraction: in (0, 1], e.g. 0.01, 0.05, 0.10 (see :data:`SEMI_SUPERVISED_FRACTIONS`).
        seed: any integer. Default 0 (the papers' seed).
        names: optional ``N`` unique sample names (e.g. ``S001C001P001R001A001``).

    Returns:
        int64 ``[n]`` ascending indices into ``labels``.
    """
    y = _as_labels(labels)
    counts = per_class_counts(y, fraction)
    if int(seed) != seed:
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != y.shape[0]:
            raise ValueError(f"names: {len(names)} names for {y.shape[0]} labels")
        if len(set(names)) != len(names):
            raise ValueError("names: sample names must be unique")
    chosen: list[np.ndarray] = []
    for c, n_take in counts.items():
        members = np.nonzero(y == c)[0]
        keys = [names[i] for i in members] if names is not None else [str(i) for i in members]
        ranks = [_rank_key(int(seed), c, k) for k in keys]
        order = sorted(range(len(members)), key=ranks.__getitem__)
        chosen.append(members[np.asarray(order[:n_take], dtype=np.int64)])
    if not chosen:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def load_index_list(
    path: str | os.PathLike,
    num_samples: int | None = None,
    order_verified: bool = False,
) -> np.ndarray:
    """Loads a published list of training-sample indices.

    Formats, chosen by extension:

    * ``.npy``: an integer array (loaded with ``allow_pickle=False``);
    * ``.txt``: integers separated by whitespace and/or commas;
    * ``.pkl`` / ``.pickle``: a pickled list (or tuple / numpy array) of ints, read with the restricted
      unpickler :func:`hitrs_fast.data.safe_pickle.safe_load`, which refuses arbitrary objects (never
      :mod:`pickle` itself: a pickle from the internet can run code).

    Args:
        path: the list file.
        num_samples: size of the indexed split; when given, every index must lie in 0..num_samples-1.
        order_verified: set True once you have checked that your split is enumerated in the list authors'
            order; suppresses the warning.

    Returns:
        int64 ``[n]`` indices in the file's order.

    Raises:
        ValueError: unknown extension, non-integer, negative, out-of-range or duplicate entries, empty list;
            for pickles also an unsafe or unreadable pickle.

    Warns:
        UserWarning: (unless ``order_verified``) published lists index the authors' ``os.listdir`` order.
    """
    p = Path(path)
    ext = p.suffix.lower()
    if ext == ".npy":
        try:
            raw: Any = np.load(p, allow_pickle=False)
        except ValueError as err:
            raise ValueError(f"{p}: not a plain numeric .npy array ({err})") from None
    elif ext == ".txt":
        text = p.read_text()
        tokens = text.replace(",", " ").split()
        try:
            raw = [int(t) for t in tokens]
        except ValueError:
            bad = next(t for t in tokens if not t.lstrip("+-").isdigit())
            line = next(i for i, ln in enumerate(text.splitlines(), 1) if bad in ln.replace(",", " ").split())
            raise ValueError(f"{p}:{line}: expected integer indices, got {bad!r}") from None
    elif ext in (".pkl", ".pickle"):
        raw = _load_pickled_list(p)
    else:
        raise ValueError(f"{p}: unsupported index-list format {ext!r}; expected .npy, .txt or .pkl")

    a = np.asarray(raw)
    if a.ndim != 1:
        raise ValueError(f"{p}: expected a flat list of indices, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{p}: the index list is empty")
    if not np.issubdtype(a.dtype, np.integer):
        if a.dtype == object or not np.issubdtype(a.dtype, np.number) or not np.all(a == np.round(a)):
            raise ValueError(f"{p}: expected integer indices, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.min() < 0:
        raise ValueError(f"{p}: negative index {a.min()} at position {int(np.argmin(a))}")
    if num_samples is not None and a.max() >= num_samples:
        raise ValueError(f"{p}: index {a.max()} at position {int(np.argmax(a))} out of range for {num_samples} samples")
    uniq, cnt = np.unique(a, return_counts=True)
    if np.any(cnt > 1):
        raise ValueError(f"{p}: index {int(uniq[np.argmax(cnt > 1)])} appears {int(cnt.max())} times")
    if not order_verified:
        warnings.warn(
            f"{p}: published index lists refer to the authors' os.listdir order at preprocessing time, which "
            "depends on their filesystem; they select the intended samples only if your split is enumerated in "
            "that exact order (the library's store is sorted by name). Otherwise use class_balanced_subset. "
            "Pass order_verified=True to silence this warning.",
            UserWarning,
            stacklevel=2,
        )
    return a


def _load_pickled_list(p: Path) -> Any:
    # Imported here: the restricted unpickler belongs to the data package and is only needed for .pkl lists.
    from hitrs_fast.data.safe_pickle import safe_load

    obj = safe_load(p)  # UnsafePickleError (a ValueError) for anything but plain containers and numpy arrays
    if isinstance(obj, list | tuple) and any(isinstance(x, bool) or not isinstance(x, int | np.integer) for x in obj):
        bad = next(x for x in obj if isinstance(x, bool) or not isinstance(x, int | np.integer))
        raise ValueError(f"{p}: expected a pickled list of ints, found {type(bad).__name__} {bad!r}")
    return obj
