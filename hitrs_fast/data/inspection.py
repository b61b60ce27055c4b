"""Store inspection: a JSON-serialisable summary (:func:`describe_store`, :func:`describe_lines`) and
anomaly checks (:func:`validate_store`): NaN/inf, all-zero samples, label ranges, split overlaps and, for
complete NTU RGB+D stores, the published benchmark split sizes.

The command line (``python -m hitrs_fast.data describe|validate STORE``) prints what these return.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hitrs_fast.data.splits import compact_ranges
from hitrs_fast.data.store import SkeletonStore, split_contents

__all__ = ["describe_lines", "describe_store", "split_lines", "validate_store"]

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
    fl = None if store._frame_labels is None else np.asarray(store._frame_labels)
    if fl is None:  # trimmed: one label per sample
        labelled = store.labels[store.labels >= 0]
        counts = np.bincount(labelled) if labelled.size else np.zeros(0, dtype=np.int64)
        classes: dict[str, Any] = {"unit": "samples", "unlabelled_samples": int(np.count_nonzero(store.labels < 0))}
    else:  # untrimmed: one label per frame, 0 = background
        counts = np.bincount(fl[fl > 0]) if (fl > 0).any() else np.zeros(0, dtype=np.int64)
        classes = {"unit": "frames", "background_class": info.get("background_class", 0)}
    present = np.nonzero(counts)[0]
    classes.update({
        "num_classes": info.get("num_classes"),
        "present": int(present.size),
        "labels_present": [int(c) for c in present],
        "min_per_class": int(counts[present].min()) if present.size else 0,
        "max_per_class": int(counts[present].max()) if present.size else 0,
    })
    splits = {k: store.split_indices(k) for k in store.split_names}
    fields = {"setup": store.setup, "camera": store.camera, "performer": store.performer,
              "replication": store.replication}
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
        "classes": classes,
        "bodies": {str(int(b)): int(c) for b, c in zip(*np.unique(store.num_bodies, return_counts=True), strict=True)},
        "splits": {k: int(v.size) for k, v in splits.items()},
        "split_contents": split_contents(fields, splits),
        "split_rules": info.get("split_rules") or {},
    }
    if fl is not None:
        out["frame_labels"] = {
            "background_fraction": float(np.mean(fl == 0)) if fl.size else 0.0,
            "classes_present": int(present.size),
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
    source = [f"{key.replace('_', ' ')} {d[key]}" for key in ("dataset", "body_selection", "centring", "fps",
                                                               "frame_base") if d.get(key) is not None]
    out.append(f"source     {d['source']}" + (f" ({', '.join(source)})" if source else "")
               + f", config {d['config_hash']}")
    out.append(
        f"samples    {d['num_samples']}, frames {d['num_frames']}, [M, V, C] = {d['shape_tail_MVC']} {d['dtype']}"
    )
    ln = d["lengths"]
    out.append(
        f"lengths    min {ln['min']}  p5 {ln['p5']:.0f}  median {ln['median']:.0f}  mean {ln['mean']:.1f}  "
        f"p95 {ln['p95']:.0f}  max {ln['max']}  (>300: {ln['over_300']})"
    )
    c = d["classes"]
    labels = compact_ranges(c["labels_present"]) or "none"
    if c["unit"] == "samples":
        out.append(f"classes    {c['present']} present (labels {labels}; num_classes {c['num_classes']}), "
                   f"{c['min_per_class']}..{c['max_per_class']} samples per class"
                   + (f", {c['unlabelled_samples']} unlabelled samples" if c["unlabelled_samples"] else ""))
    else:
        f = d["frame_labels"]
        out.append(f"classes    {c['present']} action classes present in the per-frame labels (labels {labels}; "
                   f"num_classes {c['num_classes']} with background {c['background_class']}), "
                   f"{c['min_per_class']}..{c['max_per_class']} frames per class; background "
                   f"{100 * f['background_fraction']:.1f}% of the frames")
    out.append("bodies     " + ", ".join(f"{k}: {v}" for k, v in d["bodies"].items()))
    return out + split_lines(d)


def split_lines(d: dict[str, Any]) -> list[str]:
    """The ``splits`` lines of :func:`describe_lines`: each split's size, the setups / cameras / performers /
    repetitions it holds and, for a split of one's choosing, the rule that made it."""
    if not d["splits"]:
        return ["splits     none"]
    out = []
    for i, (name, size) in enumerate(d["splits"].items()):
        held = "; ".join(f"{field} {compact_ranges(ids)}" for field, ids in d["split_contents"].get(name, {}).items())
        rule = d["split_rules"].get(name)
        out.append(("splits     " if i == 0 else " " * 11) + f"{name}: {size}" + (f"  {held}" if held else "")
                   + (f"  (made by {rule})" if rule else ""))
    return out
