"""``python -m hitrs_fast.data {convert,import,describe,validate,synthetic} ...``

* ``convert ntu --input DIR [--input DIR2] --output STORE [--dataset auto|ntu60|ntu120]
  [--body-selection hitrs|energy|agcn|tracked] [--missing-list FILE] [--workers N] [--skip-bad] [--overwrite]``
* ``convert pku --skeletons DIR --labels DIR [--split FILE] --output STORE [--frame-base one_inclusive|zero_exclusive]``
* ``import ctrgcn-npz --input FILE.npz --output STORE [--centring ...]``
* ``import stgcn --data X_data.npy --labels X_label.pkl [--data ... --labels ...] [--num-frame F.npy ...] --output``
* ``import pyskl --input FILE.pkl --output STORE``
* ``describe STORE [--json]``: counts, length statistics, classes, bodies, splits.
* ``validate STORE``: NaN/inf, all-zero samples, label ranges, split overlaps and §3 split sizes; exit 1 on problems.
* ``synthetic --output STORE [--kind trimmed|untrimmed|long] [--seed S] [--samples-per-class K] [--overwrite]``

Exit status: 0 ok, 1 validation problems, 2 bad input (the error names the file and line).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hitrs_fast.data.store import SkeletonStore

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


def _print_describe(d: dict[str, Any]) -> None:
    print(f"store      {d['path']}")
    print(
        f"source     {d['source']} (dataset {d['dataset']}), body selection {d['body_selection']}, "
        f"centring {d['centring']}, fps {d['fps']}, config {d['config_hash']}"
    )
    print(f"samples    {d['num_samples']}, frames {d['num_frames']}, [M, V, C] = {d['shape_tail_MVC']} {d['dtype']}")
    ln = d["lengths"]
    print(
        f"lengths    min {ln['min']}  p5 {ln['p5']:.0f}  median {ln['median']:.0f}  mean {ln['mean']:.1f}  "
        f"p95 {ln['p95']:.0f}  max {ln['max']}  (>300: {ln['over_300']})"
    )
    c = d["classes"]
    print(
        f"classes    {c['present']} present of {c['num_classes']}, per class {c['min_per_class']}..{c['max_per_class']}"
        f", unlabelled {c['unlabelled_samples']}"
    )
    print("bodies     " + ", ".join(f"{k}: {v}" for k, v in d["bodies"].items()))
    if d["splits"]:
        print("splits     " + ", ".join(f"{k}: {v}" for k, v in d["splits"].items()))
    else:
        print("splits     none")
    if "frame_labels" in d:
        f = d["frame_labels"]
        print(f"untrimmed  background {100 * f['background_fraction']:.1f}% of frames, {f['classes_present']} classes")
    if d["frame_base"]:
        print(f"frame base {d['frame_base']}")


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hitrs_fast.data", description="Skeleton data tools for hitrs_fast.")
    sub = p.add_subparsers(dest="command", required=True)

    conv = sub.add_parser("convert", help="convert a raw dataset into a store")
    csub = conv.add_subparsers(dest="dataset_kind", required=True)
    ntu = csub.add_parser("ntu", help="NTU RGB+D 60/120 .skeleton folders")
    ntu.add_argument("--input", action="append", required=True, type=Path, help="folder of .skeleton files (repeat)")
    ntu.add_argument("--output", required=True, type=Path)
    ntu.add_argument("--dataset", default="auto", choices=["auto", "ntu60", "ntu120"])
    ntu.add_argument("--body-selection", default="hitrs", choices=["hitrs", "energy", "agcn", "tracked"])
    ntu.add_argument("--missing-list", type=Path, default=None, help="override the bundled missing-skeleton list")
    ntu.add_argument("--workers", type=int, default=1, help="parser processes (the output does not depend on it)")
    ntu.add_argument("--skip-bad", action="store_true", help="skip and list bad files instead of stopping")
    ntu.add_argument("--overwrite", action="store_true")
    pku = csub.add_parser("pku", help="PKU-MMD Part I/II skeleton + label folders")
    pku.add_argument("--skeletons", required=True, type=Path)
    pku.add_argument("--labels", required=True, type=Path)
    pku.add_argument("--split", type=Path, default=None, help="4-line split file (cross-subject.txt, ...)")
    pku.add_argument("--output", required=True, type=Path)
    pku.add_argument("--frame-base", default="one_inclusive", choices=["one_inclusive", "zero_exclusive"])
    pku.add_argument("--skip-bad", action="store_true")
    pku.add_argument("--overwrite", action="store_true")

    imp = sub.add_parser("import", help="import a peer codebase's preprocessed arrays")
    isub = imp.add_subparsers(dest="format", required=True)
    cg = isub.add_parser("ctrgcn-npz", help="CTR-GCN/SGN/MAMP NTU60_XSub.npz & co")
    cg.add_argument("--input", required=True, type=Path)
    cg.add_argument("--output", required=True, type=Path)
    cg.add_argument("--centring", default="sequence_translation", choices=["sequence_translation", "none"])
    cg.add_argument("--skip-empty", action="store_true", help="skip all-zero rows instead of failing")
    cg.add_argument("--overwrite", action="store_true")
    st = isub.add_parser("stgcn", help="st-gcn/AimCLR/2s-AGCN (N,3,T,25,M) .npy + (names, labels) .pkl")
    st.add_argument("--data", action="append", required=True, type=Path)
    st.add_argument("--labels", action="append", required=True, type=Path)
    st.add_argument("--num-frame", action="append", type=Path, default=None, help="2s-AGCN {part}_num_frame.npy")
    st.add_argument("--output", required=True, type=Path)
    st.add_argument("--centring", default="none", choices=["none", "pre_normalization", "per_frame_relative"])
    st.add_argument("--overwrite", action="store_true")
    py = isub.add_parser("pyskl", help="PYSKL/mmaction2 annotation pickle")
    py.add_argument("--input", required=True, type=Path)
    py.add_argument("--output", required=True, type=Path)
    py.add_argument("--centring", default="none", choices=["none", "pyskl_prenormalize3d"])
    py.add_argument("--overwrite", action="store_true")

    de = sub.add_parser("describe", help="summarise a store")
    de.add_argument("path", type=Path)
    de.add_argument("--json", action="store_true", help="print JSON instead of text")
    va = sub.add_parser("validate", help="check a store; exit 1 on problems")
    va.add_argument("path", type=Path)

    sy = sub.add_parser("synthetic", help="write a synthetic store")
    sy.add_argument("--output", required=True, type=Path)
    sy.add_argument("--kind", default="trimmed", choices=["trimmed", "untrimmed", "long"])
    sy.add_argument("--seed", type=int, default=0)
    sy.add_argument("--samples-per-class", type=int, default=None)
    sy.add_argument("--overwrite", action="store_true")
    return p


def _run(args: argparse.Namespace) -> int:
    if args.command == "convert" and args.dataset_kind == "ntu":
        from hitrs_fast.data.ntu import convert_ntu

        report = convert_ntu(
            args.input,
            args.output,
            dataset=args.dataset,
            body_selection=args.body_selection,
            skip_bad=args.skip_bad,
            overwrite=args.overwrite,
            workers=args.workers,
            missing_list=args.missing_list,
        )
        print("\n".join(report.lines()))
        return 0 if report.counts_ok else 1
    if args.command == "convert" and args.dataset_kind == "pku":
        from hitrs_fast.data.pku import convert_pku

        rep = convert_pku(
            args.skeletons,
            args.labels,
            args.split,
            args.output,
            frame_base=args.frame_base,
            skip_bad=args.skip_bad,
            overwrite=args.overwrite,
        )
        print("\n".join(rep.lines()))
        return 0
    if args.command == "import":
        from hitrs_fast.data import importers

        if args.format == "ctrgcn-npz":
            root = importers.import_ctrgcn_npz(
                args.input, args.output, centring=args.centring, overwrite=args.overwrite, skip_empty=args.skip_empty
            )
        elif args.format == "stgcn":
            if len(args.data) != len(args.labels):
                raise ValueError(f"--data given {len(args.data)} times but --labels {len(args.labels)} times")
            if args.num_frame is not None and len(args.num_frame) != len(args.data):
                raise ValueError(f"--num-frame given {len(args.num_frame)} times, expected {len(args.data)}")
            root = importers.import_stgcn(
                list(zip(args.data, args.labels, strict=True)),
                args.output,
                num_frames=args.num_frame,
                centring=args.centring,
                overwrite=args.overwrite,
            )
        else:
            root = importers.import_pyskl(args.input, args.output, centring=args.centring, overwrite=args.overwrite)
        store = SkeletonStore(root)
        print(f"wrote {root}: {len(store)} samples, {int(store.lengths.sum())} frames, splits {store.split_names}")
        return 0
    if args.command == "describe":
        d = describe_store(SkeletonStore(args.path))
        if args.json:
            print(json.dumps(d, indent=2))
        else:
            _print_describe(d)
        return 0
    if args.command == "validate":
        store = SkeletonStore(args.path)
        problems, notes = validate_store(store)
        for line in notes:
            print(f"note: {line}")
        for line in problems:
            print(f"PROBLEM: {line}")
        print(f"{store.root}: {len(problems)} problems, {len(store)} samples checked")
        return 1 if problems else 0
    if args.command == "synthetic":
        # Imported lazily: the generator is only needed for this command.
        from hitrs_fast.data.synthetic import write_synthetic

        root = write_synthetic(
            args.output,
            kind=args.kind,
            seed=args.seed,
            samples_per_class=args.samples_per_class,
            overwrite=args.overwrite,
        )
        store = SkeletonStore(root)
        print(f"wrote {root}: {len(store)} samples, {int(store.lengths.sum())} frames, splits {store.split_names}")
        return 0
    raise AssertionError(f"unhandled command {args.command}")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 1 validation problems, 2 bad input)."""
    args = _build_parser().parse_args(argv)
    try:
        return _run(args)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
