"""Store inspection: a JSON-serialisable summary (:func:`describe_store`, :func:`describe_lines`) and
anomaly checks (:func:`validate_store`): NaN/inf, all-zero samples, label ranges, split overlaps and, for
complete NTU RGB+D stores, the published benchmark split sizes.

The command line (``python -m hitrs_fast.data describe|validate STORE``) prints what these return.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hitrs_fast.data.store import SkeletonStore

__all__ = ["describe_lines", "describe_store", "validate_store"]

_CHUNK_FRAMES = 1 << 16


def _frame_flags(store: SkeletonStore) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame (non-finite anywhere, non-zero anywhere) flags, computed in chunks over the memmap."""
    n = store.data.shape[0]
    nonfinite = np.zeros(n, dtype=bool)
    nonzero = np.zeros(n, dtype=bool)
    for s in range(0, n, _CHUNK_FRAMES):
        chunk = np.asarray(store.data[s : s + _CHUNK_FRAMES]).reshape(min(_CHUNK_FRAMES, n - s), -1)
        nonfinite[s : s + chunk.shape[0]] = ~np.isfinite(chunk).all(axis=1)
        nonzero[s : s + chunk.shape[0]] = (chunk != 0).any(axis=1)
    return nonfinite, nonzero


def _per_sample_any(store: SkeletonStore, flags: np.ndarray) -> np.ndarray:
    if len(store) == 0:
        return np.zeros(0, dtype=bool)
    return np.add.reduceat(flags.astype(np.int64), store.offsets) > 0


def describe_store(store: SkeletonStore) -> dict[str, Any]:
    """A JSON-serialisable summary of a store."""
    lengths = store.lengths
    info = store.info
    labelled = store.labels[store.labels >= 0]
    counts = np.bincount(labelled) if labelled.size else np.zeros(0, dtype=np.int64)
    out: dict[str, Any] = {
        "path": str(store.root),
        "source": info.get("source"),
        "dataset": info.get("dataset"),
        "num_samples": len(store),
        "num_frames": int(lengths.sum()),
        "shape_tail_MVC": list(store.shape_tail),
        "dtype": str(store.data.dtype),
        "body_selection": info.get("body_selection"),
        "centring": info.get("centring"),
        "fps": info.get("fps"),
        "frame_base": info.get("frame_base"),
        "config_hash": info.get("config_hash"),
        "lengths": {
            "min": int(lengths.min()),
            "p5": float(np.percentile(lengths, 5)),
            "median": float(np.median(lengths)),
            "mean": float(lengths.mean()),
            "p95": float(np.percentile(lengths, 95)),
            "max": int(lengths.max()),
            "over_300": int(np.count_nonzero(lengths > 300)),
        },
        "classes": {
            "num_classes": info.get("num_classes"),
            "present": int(np.count_nonzero(counts)),
            "unlabelled_samples": int(np.count_nonzero(store.labels < 0)),
            "min_per_class": int(counts[counts > 0].min()) if counts.any() else 0,
            "max_per_class": int(counts.max()) if counts.size else 0,
        },
        "bodies": {str(int(b)): int(c) for b, c in zip(*np.unique(store.num_bodies, return_counts=True), strict=True)},
        "splits": {k: int(store.split_indices(k).size) for k in store.split_names},
    }
    fl = store._frame_labels
    if fl is not None:
        fl_arr = np.asarray(fl)
        out["frame_labels"] = {
            "background_fraction": float(np.mean(fl_arr == 0)) if fl_arr.size else 0.0,
            "classes_present": int(np.unique(fl_arr[fl_arr > 0]).size),
        }
    return out


def validate_store(store: SkeletonStore) -> tuple[list[str], list[str]]:
    """Check a store for anomalies.

    Returns:
        (problems, notes): problems make ``validate`` exit 1; notes are informational.
    """
    problems: list[str] = []
    notes: list[str] = []
    n = len(store)
    names = store.names
    if len(set(names)) != n:
        problems.append("names.txt: duplicate sample names")
    if any(a > b for a, b in zip(names, names[1:], strict=False)):
        problems.append("names.txt: names not sorted (the store order must be sorted by name)")
    nonfinite, nonzero = _frame_flags(store)
    bad = np.nonzero(_per_sample_any(store, nonfinite))[0]
    if bad.size:
        problems.append(f"{bad.size} samples hold NaN/inf, e.g. {names[bad[0]]} (index {bad[0]})")
    empty = np.nonzero(~_per_sample_any(store, nonzero))[0]
    if empty.size:
        problems.append(f"{empty.size} samples are all zero, e.g. {names[empty[0]]} (index {empty[0]})")
    long = int(np.count_nonzero(store.lengths > 300))
    if long:
        notes.append(f"{long} samples are longer than 300 frames (max {int(store.lengths.max())}); lengths are stored")
    num_classes = store.info.get("num_classes")
    untrimmed = store._frame_labels is not None
    if isinstance(num_classes, int) and num_classes > 0:
        if not untrimmed:
            out_of_range = np.nonzero((store.labels < -1) | (store.labels >= num_classes))[0]
            if out_of_range.size:
                i = out_of_range[0]
                problems.append(
                    f"{out_of_range.size} labels outside [0, {num_classes}) (and not -1), "
                    f"e.g. {names[i]}: {store.labels[i]}"
                )
        else:
            fl = np.asarray(store._frame_labels)
            if fl.size and (fl.min() < 0 or fl.max() >= num_classes):
                problems.append(f"frame labels outside [0, {num_classes}): range [{fl.min()}, {fl.max()}]")
    else:
        notes.append(f"meta.json num_classes = {num_classes!r}: label range not checked")
    unl = int(np.count_nonzero(store.labels < 0))
    if unl and not untrimmed:
        notes.append(f"{unl} unlabelled samples (label -1)")
    split_names = store.split_names
    for k in split_names:
        if k.endswith("_train") and k[: -len("_train")] + "_test" in split_names:
            other = k[: -len("_train")] + "_test"
            inter = np.intersect1d(store.split_indices(k), store.split_indices(other))
            if inter.size:
                problems.append(f"splits {k} and {other} share {inter.size} samples, e.g. {names[inter[0]]}")
    if "train" in split_names and "test" in split_names:
        inter = np.intersect1d(store.split_indices("train"), store.split_indices("test"))
        if inter.size:
            problems.append(f"splits train and test share {inter.size} samples, e.g. {names[inter[0]]}")
    if store.info.get("source") == "ntu_skeleton":
        from hitrs_fast.data.ntu import expected_count_report

        splits = {k: store.split_indices(k) for k in split_names}
        lines, ok = expected_count_report(splits, store.setup, str(store.info.get("dataset", "ntu60")))
        (notes if ok else problems).extend(line for line in lines if ok or line.startswith("MISMATCH"))
    return problems, notes


def describe_lines(d: dict[str, Any]) -> list[str]:
    """The text form of :func:`describe_store` (what ``python -m hitrs_fast.data describe`` prints)."""
    out = [f"store      {d['path']}"]
    out.append(
        f"source     {d['source']} (dataset {d['dataset']}), body selection {d['body_selection']}, "
        f"centring {d['centring']}, fps {d['fps']}, config {d['config_hash']}"
    )
    out.append(
        f"samples    {d['num_samples']}, frames {d['num_frames']}, [M, V, C] = {d['shape_tail_MVC']} {d['dtype']}"
    )
    ln = d["lengths"]
    out.append(
        f"lengths    min {ln['min']}  p5 {ln['p5']:.0f}  median {ln['median']:.0f}  mean {ln['mean']:.1f}  "
        f"p95 {ln['p95']:.0f}  max {ln['max']}  (>300: {ln['over_300']})"
    )
    c = d["classes"]
    out.append(
        f"classes    {c['present']} present of {c['num_classes']}, per class {c['min_per_class']}..{c['max_per_class']}"
        f", unlabelled {c['unlabelled_samples']}"
    )
    out.append("bodies     " + ", ".join(f"{k}: {v}" for k, v in d["bodies"].items()))
    if d["splits"]:
        out.append("splits     " + ", ".join(f"{k}: {v}" for k, v in d["splits"].items()))
    else:
        out.append("splits     none")
    if "frame_labels" in d:
        f = d["frame_labels"]
        out.append(
            f"untrimmed  background {100 * f['background_fraction']:.1f}% of frames, {f['classes_present']} classes"
        )
    if d["frame_base"]:
        out.append(f"frame base {d['frame_base']}")
    return out
