"""``hitrs data {convert,import,describe,validate,synthetic} ...`` (also ``python -m hitrs_fast.data``)

* ``convert ntu --input DIR [--input DIR2] --output STORE [--dataset auto|ntu60|ntu120]
  [--body-selection hitrs|energy|agcn|tracked] [--missing-list FILE|none] [--workers N] [--skip-bad] [--overwrite]
  [--split NAME:FIELD=LIST ...] [--split-file FILE]``: splits of one's choosing beside the NTU benchmarks
  (``hitrs_fast.data.splits``; also on every ``import`` below)
* ``convert pku --skeletons DIR --labels DIR [--split FILE] --output STORE [--frame-base one_inclusive|zero_exclusive]``
* ``import ctrgcn-npz --input FILE.npz --output STORE [--centring ...]``
* ``import stgcn --data X_data.npy --labels X_label.pkl [--data ... --labels ...] [--num-frame F.npy ...] --output``
* ``import pyskl --input FILE.pkl --output STORE``
* ``import frame-labels --input DIR --output STORE [--class-names FILE] [--fps F]``: one's own untrimmed
  sequences, ``DIR/<split>/<name>.npz`` holding ``joints`` and per-frame ``labels`` (0 = background)
* ``describe STORE [--json]``: counts, length statistics, classes, bodies, splits.
* ``validate STORE``: NaN/inf, all-zero samples, label ranges, split overlaps and NTU benchmark split sizes;
  exit 1 on problems.
* ``synthetic --output STORE [--kind trimmed|untrimmed|long] [--seed S] [--samples-per-class K] [--overwrite]``

Exit status: 0 ok, 1 validation problems, 2 bad input (the error names the file and line).

This module only parses arguments and dispatches; the work is done by ``hitrs_fast.data.ntu``, ``pku``,
``importers``, ``inspection`` and ``synthetic``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from hitrs_fast.cli import CommandParser
from hitrs_fast.data.inspection import describe_lines, describe_store, split_lines, validate_store
from hitrs_fast.data.splits import SplitRequest
from hitrs_fast.data.store import SkeletonStore


def _add_split_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", action="append", default=[], metavar="NAME:FIELD=LIST",
                   help="add a split of your choosing: the samples whose FIELD (performer, camera, setup, replication) "
                   "is in LIST, e.g. --split train:performer=1-3 --split test:performer=4 (repeatable; several "
                   "FIELD=LIST joined by ':' must all hold)")
    p.add_argument("--split-file", type=Path, default=None, metavar="FILE",
                   help="add the splits a file names: JSON {\"train\": [names], ...} or lines 'SPLIT: NAME NAME ...'")


def _build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = CommandParser(prog=prog or "python -m hitrs_fast.data", description="Skeleton data tools for hitrs_fast.")
    sub = p.add_subparsers(dest="command", required=True)

    conv = sub.add_parser("convert", help="convert a raw dataset into a store")
    csub = conv.add_subparsers(dest="dataset_kind", required=True)
    ntu = csub.add_parser("ntu", help="NTU RGB+D 60/120 .skeleton folders")
    ntu.add_argument("--input", action="append", required=True, type=Path, help="folder of .skeleton files (repeat)")
    ntu.add_argument("--output", required=True, type=Path)
    ntu.add_argument("--dataset", default="auto", choices=["auto", "ntu60", "ntu120"])
    ntu.add_argument("--body-selection", default="hitrs", choices=["hitrs", "energy", "agcn", "tracked"])
    ntu.add_argument("--missing-list", default=None, metavar="FILE|none",
                     help="samples to exclude: default the bundled official missing-skeleton list; a file in its "
                     "format replaces it; 'none' excludes nothing (own recordings named like NTU files)")
    ntu.add_argument("--workers", type=int, default=1, help="parser processes (the output does not depend on it)")
    ntu.add_argument("--skip-bad", action="store_true", help="skip and list bad files instead of stopping")
    ntu.add_argument("--overwrite", action="store_true")
    _add_split_options(ntu)
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
    _add_split_options(cg)
    st = isub.add_parser("stgcn", help="st-gcn/AimCLR/2s-AGCN (N,3,T,25,M) .npy + (names, labels) .pkl")
    st.add_argument("--data", action="append", required=True, type=Path)
    st.add_argument("--labels", action="append", required=True, type=Path)
    st.add_argument("--num-frame", action="append", type=Path, default=None, help="2s-AGCN {part}_num_frame.npy")
    st.add_argument("--output", required=True, type=Path)
    st.add_argument("--centring", default="none", choices=["none", "pre_normalization", "per_frame_relative"])
    st.add_argument("--overwrite", action="store_true")
    _add_split_options(st)
    py = isub.add_parser("pyskl", help="PYSKL/mmaction2 annotation pickle")
    py.add_argument("--input", required=True, type=Path)
    py.add_argument("--output", required=True, type=Path)
    py.add_argument("--centring", default="none", choices=["none", "pyskl_prenormalize3d"])
    py.add_argument("--overwrite", action="store_true")
    _add_split_options(py)
    fl = isub.add_parser("frame-labels", help="own untrimmed sequences with per-frame labels (detection)",
                         description="DIR/<split>/<sequence>.npz, each with 'joints' [T, V, C] or [T, M, V, C] and "
                         "'labels' [T] (0 = background, 1..K = actions); one folder per split; K from the data.")
    fl.add_argument("--input", required=True, type=Path, help="folder with one sub-folder of .npz files per split")
    fl.add_argument("--output", required=True, type=Path)
    fl.add_argument("--class-names", type=Path, default=None, help="text file: names of classes 1..K, one per line")
    fl.add_argument("--fps", type=float, default=None, help="frame rate, recorded in meta.json")
    fl.add_argument("--overwrite", action="store_true")
    _add_split_options(fl)

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
    # Splits of one's choosing: checked (and their file read) before any conversion starts.
    requested = SplitRequest(args.split, args.split_file) if hasattr(args, "split_file") else None
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
            splits=requested,
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
                args.input, args.output, centring=args.centring, overwrite=args.overwrite, skip_empty=args.skip_empty,
                splits=requested,
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
                splits=requested,
            )
        elif args.format == "frame-labels":
            root = importers.import_frame_labels(args.input, args.output, class_names=args.class_names, fps=args.fps,
                                                 overwrite=args.overwrite, splits=requested)
        else:
            root = importers.import_pyskl(args.input, args.output, centring=args.centring, overwrite=args.overwrite,
                                          splits=requested)
        store = SkeletonStore(root)
        print(f"wrote {root}: {len(store)} samples, {int(store.lengths.sum())} frames, splits {store.split_names}")
        print("\n".join(split_lines(describe_store(store))))
        return 0
    if args.command == "describe":
        d = describe_store(SkeletonStore(args.path))
        if args.json:
            print(json.dumps(d, indent=2))
        else:
            print("\n".join(describe_lines(d)))
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


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 1 validation problems, 2 bad input, in one line)."""
    parser = _build_parser(prog)
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (ValueError, OSError, KeyError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
