"""NTU RGB+D 60/120 raw ``.skeleton`` reader, body selection and converter to the canonical store.

File layout (shahroudy/NTURGB-D ``Matlab/read_skeleton_file.m``; ``docs/data.md``), ASCII, LF or CRLF::

    numFrames
      per frame: numBodies                       (0 is legal: no body lines follow)
        per body: bodyID clipedEdges handLeftConfidence handLeftState handRightConfidence
                  handRightState isResticted leanX leanY trackingState        (10 fields; bodyID a uint64)
                  numJoints                                                  (25)
                  25 lines: x y z depthX depthY colorX colorY oW oX oY oZ trackingState  (12 fields)

Every deviation raises :class:`SkeletonFormatError` naming the file, the 1-based line and what was expected.

Body selection presets turn the variable list of bodies per frame into ``[T, 2, 25, 3]`` (x, y, z in metres):

* ``hitrs`` (default, yuxiaochen1103/Hi-TRS ``prepare_NTU_60.py``): slot m of frame t = the m-th body listed
  in frame t (m < 2), file order, no tracking and no denoising.
* ``energy`` (alias ``agcn``; 2s-AGCN / HiCo ``ntu_gendata.py``): fill 4 slots the same way, rank the slots
  by motion energy (sum over x, y, z of the std over the slot's non-zero frames) and keep the 2 highest,
  highest first (ties keep slot order).
* ``tracked``: one track per distinct bodyID (first appearance order), the same energy ranking over the
  tracks, the 2 highest kept; a body keeps its slot even when the Kinect lists it in another position.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from hitrs_fast.data.splits import SplitRequest, with_requested
from hitrs_fast.data.store import StoreSample, write_store

__all__ = [
    "BODY_SELECTIONS",
    "EXPECTED_COUNTS",
    "NAME_RE",
    "NTU120_XSUB_TRAIN_PERFORMERS",
    "NTU60_XSUB_TRAIN_PERFORMERS",
    "ConversionReport",
    "NtuName",
    "SkeletonBody",
    "SkeletonFile",
    "SkeletonFormatError",
    "benchmark_splits",
    "bundled_missing_list",
    "convert_ntu",
    "load_ntu_sequence",
    "parse_missing_list",
    "parse_ntu_name",
    "read_skeleton_file",
    "select_bodies",
]

NAME_RE = re.compile(r"^S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})$")
NUM_JOINTS = 25
JOINT_FIELDS = 12
BODY_FIELDS = 10
BODY_SELECTIONS = ("hitrs", "energy", "agcn", "tracked")
NTU60_MAX_SETUP = 17
FPS = 30

NTU60_XSUB_TRAIN_PERFORMERS = frozenset(
    (1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38)
)
NTU120_XSUB_TRAIN_PERFORMERS = NTU60_XSUB_TRAIN_PERFORMERS | frozenset(
    (45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83, 84, 85, 86, 89, 91, 92, 93,
     94, 95, 97, 98, 100, 103)
)  # fmt: skip
NTU60_XVIEW_TRAIN_CAMERAS = frozenset((2, 3))

# Usable samples per benchmark split after removing the missing-skeleton samples (docs/data.md).
EXPECTED_COUNTS: dict[str, int] = {
    "ntu60_xsub_train": 40091,
    "ntu60_xsub_test": 16487,
    "ntu60_xview_train": 37646,
    "ntu60_xview_test": 18932,
    "ntu120_xsub_train": 63026,
    "ntu120_xsub_test": 50919,
    "ntu120_xset_train": 54468,
    "ntu120_xset_test": 59477,
}
RAW_TOTALS = {"ntu60": 56880, "ntu120": 114480}
# Reasons a file is left out of a store (ConversionReport.excluded keys start with them).
EXCLUDED_MISSING = "on the missing-skeleton list"
EXCLUDED_SETUP = "from setups S018+, not part of NTU-60"
EXCLUDED_EMPTY = "with no body in any frame (they would be all-zero samples)"
NO_MISSING_LIST = "none"  # --missing-list none: exclude nothing
USABLE_TOTALS = {"ntu60": 56578, "ntu120": 113945}
MISSING_COUNTS = {"ntu60": 302, "ntu120": 535}


class SkeletonFormatError(ValueError):
    """A malformed skeleton file; the message reads ``<file>:<line>: <what was found / expected>``."""

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.detail = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Worker processes send errors back pickled; keep the three constructor arguments.
        return (type(self), (self.path, self.line, self.detail))


@dataclass(frozen=True)
class NtuName:
    """Fields of an NTU sample name ``SsssCcccPpppRrrrAaaa``; ``label`` is ``action - 1`` (0-based)."""

    name: str
    setup: int
    camera: int
    performer: int
    replication: int
    action: int

    @property
    def label(self) -> int:
        return self.action - 1


def parse_ntu_name(name: str, path: str | Path | None = None) -> NtuName:
    """Parse a sample name (a file stem, without ``.skeleton``) with :data:`NAME_RE`.

    Raises:
        SkeletonFormatError: the name does not match ``^S\\d{3}C\\d{3}P\\d{3}R\\d{3}A\\d{3}$`` or a field is 0.
    """
    m = NAME_RE.match(name)
    where = path if path is not None else name
    if m is None:
        raise SkeletonFormatError(
            where, None, f"unexpected sample name {name!r}: expected SsssCcccPpppRrrrAaaa (e.g. S001C002P003R002A013)"
        )
    s, c, p, r, a = (int(g) for g in m.groups())
    if min(s, c, p, r, a) < 1:
        raise SkeletonFormatError(where, None, f"sample name {name!r}: setup/camera/performer/replication/action >= 1")
    return NtuName(name, s, c, p, r, a)


@dataclass
class SkeletonBody:
    """One body in one frame.

    Attributes:
        body_id: the Kinect tracking id (uint64, parsed as an exact integer).
        info: ``[9]`` float64, the 9 body fields after bodyID (clipedEdges ... trackingState).
        joints: ``[25, 12]`` float64, x y z depthX depthY colorX colorY orientationW/X/Y/Z trackingState.
    """

    body_id: int
    info: np.ndarray
    joints: np.ndarray


@dataclass
class SkeletonFile:
    """A parsed ``.skeleton`` file: ``frames[t]`` is the list of bodies of frame t, in file order."""

    path: Path
    frames: list[list[SkeletonBody]]

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def max_bodies(self) -> int:
        return max((len(f) for f in self.frames), default=0)


class _Lines:
    """Line cursor with 1-based numbering for error messages."""

    def __init__(self, path: Path, lines: list[str]) -> None:
        self.path = path
        self.lines = lines
        self.pos = 0

    def error(self, line: int | None, msg: str) -> SkeletonFormatError:
        return SkeletonFormatError(self.path, line, msg)

    def take(self, what: str) -> tuple[list[str], int]:
        if self.pos >= len(self.lines):
            raise self.error(self.pos + 1, f"unexpected end of file (truncated?): expected {what}")
        self.pos += 1
        return self.lines[self.pos - 1].split(), self.pos

    def take_int(self, what: str, lo: int, hi: int | None = None) -> int:
        toks, ln = self.take(what)
        if len(toks) != 1:
            raise self.error(ln, f"expected {what} (one integer), found {len(toks)} fields: {' '.join(toks)[:80]!r}")
        try:
            v = int(toks[0])
        except ValueError:
            raise self.error(ln, f"expected {what} (an integer), found {toks[0]!r}") from None
        if v < lo or (hi is not None and v > hi):
            rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            raise self.error(ln, f"{what} = {v}, expected {rng}")
        return v


def read_skeleton_file(path: str | Path) -> SkeletonFile:
    """Parse one NTU RGB+D ``.skeleton`` file (LF or CRLF).

    Raises:
        SkeletonFormatError: empty or truncated file, wrong field or joint counts, non-numeric fields,
            non-finite x/y/z, non-ASCII bytes or trailing content; the message names the file and line.
    """
    path = Path(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        bad = raw[e.start : e.start + 1]
        raise SkeletonFormatError(path, line, f"non-ASCII byte {bad!r}: expected an ASCII file") from None
    lines = text.splitlines()
    if not any(ln.strip() for ln in lines):
        raise SkeletonFormatError(path, 1, "empty file: expected the number of frames on the first line")
    cur = _Lines(path, lines)
    num_frames = cur.take_int("the number of frames", 1)
    frames: list[list[SkeletonBody]] = []
    for t in range(num_frames):
        where = f"frame {t + 1} of {num_frames}"
        nb = cur.take_int(f"the number of bodies of {where}", 0)
        bodies = []
        for b in range(nb):
            bwhere = f"body {b + 1} of {nb} in {where}"
            toks, ln = cur.take(f"the {BODY_FIELDS} body fields of {bwhere}")
            if len(toks) != BODY_FIELDS:
                raise cur.error(ln, f"expected {BODY_FIELDS} body fields of {bwhere}, found {len(toks)}")
            try:
                body_id = int(toks[0])
            except ValueError:
                raise cur.error(ln, f"bodyID of {bwhere} must be an integer, found {toks[0]!r}") from None
            info = _parse_floats(cur, ln, toks[1:], f"body fields of {bwhere}")
            cur.take_int(f"the number of joints of {bwhere} ({NUM_JOINTS})", NUM_JOINTS, NUM_JOINTS)
            joints = _parse_joint_block(cur, bwhere)
            bodies.append(SkeletonBody(body_id, info, joints))
        frames.append(bodies)
    for k in range(cur.pos, len(lines)):
        if lines[k].strip():
            raise cur.error(k + 1, f"unexpected content after the last of {num_frames} frames: {lines[k][:80]!r}")
    return SkeletonFile(path, frames)


def _parse_floats(cur: _Lines, ln: int, toks: Sequence[str], what: str) -> np.ndarray:
    try:
        return np.array(toks, dtype=np.float64)
    except ValueError:
        for tok in toks:
            try:
                float(tok)
            except ValueError:
                raise cur.error(ln, f"non-numeric value {tok!r} in {what}: expected a number") from None
        raise


def _parse_joint_block(cur: _Lines, bwhere: str) -> np.ndarray:
    start = cur.pos
    block = cur.lines[start : start + NUM_JOINTS]
    split = [ln.split() for ln in block]
    for j, toks in enumerate(split):
        if len(toks) != JOINT_FIELDS:
            raise cur.error(
                start + j + 1, f"expected {JOINT_FIELDS} fields on joint line {j + 1} of {bwhere}, found {len(toks)}"
            )
    if len(split) < NUM_JOINTS:
        raise cur.error(
            start + len(split) + 1,
            f"unexpected end of file (truncated?): expected joint line {len(split) + 1} of {NUM_JOINTS} of {bwhere}",
        )
    cur.pos += NUM_JOINTS
    try:
        joints = np.array(split, dtype=np.float64)
    except ValueError:
        for j, toks in enumerate(split):
            _parse_floats(cur, start + j + 1, toks, f"joint line {j + 1} of {bwhere}")
        raise
    finite = np.isfinite(joints[:, :3])
    if not finite.all():
        j = int(np.nonzero(~finite.all(axis=1))[0][0])
        raise cur.error(
            start + j + 1, f"non-finite coordinate {joints[j, :3].tolist()} on joint line {j + 1} of {bwhere}: "
            "expected finite x y z"
        )
    return joints


def _nonzero_std_energy(slot: np.ndarray) -> float:
    """AGCN ``get_nonzero_std``: slot ``[T, V, 3]`` -> sum over xyz of the std over non-zero frames."""
    keep = slot.reshape(slot.shape[0], -1).sum(axis=1) != 0
    s = slot[keep]
    if s.shape[0] == 0:
        return 0.0
    return float(s[..., 0].std() + s[..., 1].std() + s[..., 2].std())


def select_bodies(sk: SkeletonFile, preset: str = "hitrs", max_bodies: int = 2) -> np.ndarray:
    """Select ``max_bodies`` body slots of a parsed file.

    Returns:
        ``[T, max_bodies, 25, 3]`` float32 x, y, z (metres); empty slots are 0.
    """
    t = sk.num_frames
    if preset == "hitrs":
        out = np.zeros((t, max_bodies, NUM_JOINTS, 3), dtype=np.float32)
        for i, bodies in enumerate(sk.frames):
            for m, body in enumerate(bodies[:max_bodies]):
                out[i, m] = body.joints[:, :3]
        return out
    if preset in ("energy", "agcn"):
        # AGCN reads up to 4 bodies per frame into slots by list position, then ranks the slots.
        slots = np.zeros((4, t, NUM_JOINTS, 3), dtype=np.float64)
        for i, bodies in enumerate(sk.frames):
            for m, body in enumerate(bodies[:4]):
                slots[m, i] = body.joints[:, :3]
    elif preset == "tracked":
        ids: dict[int, int] = {}
        for bodies in sk.frames:
            for body in bodies:
                ids.setdefault(body.body_id, len(ids))
        slots = np.zeros((max(len(ids), 1), t, NUM_JOINTS, 3), dtype=np.float64)
        for i, bodies in enumerate(sk.frames):
            for body in bodies:
                slots[ids[body.body_id], i] = body.joints[:, :3]
    else:
        raise ValueError(f"body selection {preset!r}: expected one of {BODY_SELECTIONS}")
    energy = np.array([_nonzero_std_energy(s) for s in slots])
    order = np.argsort(-energy, kind="stable")[:max_bodies]
    out = np.zeros((t, max_bodies, NUM_JOINTS, 3), dtype=np.float32)
    for m, k in enumerate(order):
        out[:, m] = slots[k]
    return out


def load_ntu_sequence(path: str | Path, body_selection: str = "hitrs") -> np.ndarray:
    """Read one file and apply a body-selection preset: ``[T, 2, 25, 3]`` float32."""
    return select_bodies(read_skeleton_file(path), body_selection)


def parse_missing_list(path_or_text: str | Path, *, is_text: bool = False) -> set[str]:
    """Names of a missing-skeleton list (official 3-line-header variant or header-less peer copy).

    Rule: keep the stripped lines that match :data:`NAME_RE`, ignore everything else (the official lists start
    with a 3-line header, peer copies have none).
    """
    text = path_or_text if is_text else Path(path_or_text).read_text(encoding="utf-8", errors="replace")
    assert isinstance(text, str)
    return {s for s in (ln.strip() for ln in text.splitlines()) if NAME_RE.match(s)}


def bundled_missing_list(dataset: str) -> set[str]:
    """The official missing-skeleton names bundled with the library (302 for ntu60, 535 for ntu120)."""
    if dataset not in MISSING_COUNTS:
        raise ValueError(f"dataset {dataset!r}: expected 'ntu60' or 'ntu120'")
    text = resources.files("hitrs_fast.data").joinpath(f"resources/{dataset}_missing_skeletons.txt").read_text()
    names = parse_missing_list(text, is_text=True)
    if len(names) != MISSING_COUNTS[dataset]:
        raise RuntimeError(
            f"bundled {dataset} missing list holds {len(names)} names, expected {MISSING_COUNTS[dataset]}"
        )
    return names


def benchmark_splits(
    setup: np.ndarray, camera: np.ndarray, performer: np.ndarray, dataset: str
) -> dict[str, np.ndarray]:
    """The NTU benchmark splits (xsub, xview; NTU-120: xsub, xset) as int64 index arrays over the given
    per-sample metadata.

    NTU-60 splits only cover setups 1..17; an ``ntu120`` store carries all four benchmarks, an ``ntu60``
    store the two NTU-60 ones.
    """
    setup = np.asarray(setup)
    camera = np.asarray(camera)
    performer = np.asarray(performer)
    in60 = setup <= NTU60_MAX_SETUP
    xsub60 = np.isin(performer, sorted(NTU60_XSUB_TRAIN_PERFORMERS))
    xview60 = np.isin(camera, sorted(NTU60_XVIEW_TRAIN_CAMERAS))
    masks = {
        "ntu60_xsub_train": in60 & xsub60,
        "ntu60_xsub_test": in60 & ~xsub60,
        "ntu60_xview_train": in60 & xview60,
        "ntu60_xview_test": in60 & ~xview60,
    }
    if dataset == "ntu120":
        xsub120 = np.isin(performer, sorted(NTU120_XSUB_TRAIN_PERFORMERS))
        even = setup % 2 == 0
        masks.update(
            {
                "ntu120_xsub_train": xsub120,
                "ntu120_xsub_test": ~xsub120,
                "ntu120_xset_train": even,
                "ntu120_xset_test": ~even,
            }
        )
    return {k: np.nonzero(v)[0].astype(np.int64) for k, v in masks.items()}


def expected_count_report(splits: dict[str, np.ndarray], setup: np.ndarray, dataset: str) -> tuple[list[str], bool]:
    """Compare split sizes with :data:`EXPECTED_COUNTS` when the store holds a complete dataset.

    Returns:
        (report lines, ok): ``ok`` is False only when a complete dataset's split sizes mismatch them.
    """
    lines: list[str] = []
    ok = True
    setup = np.asarray(setup)
    groups = [("ntu60", int(np.count_nonzero(setup <= NTU60_MAX_SETUP)))]
    if dataset == "ntu120":
        groups.append(("ntu120", int(setup.size)))
    for group, have in groups:
        names = [k for k in EXPECTED_COUNTS if k.startswith(group + "_") and k in splits]
        if have != USABLE_TOTALS[group]:
            lines.append(
                f"{group}: {have} usable samples, a complete dataset has {USABLE_TOTALS[group]}; "
                "split sizes not compared with the published benchmark sizes"
            )
            continue
        for k in names:
            got, exp = int(splits[k].size), EXPECTED_COUNTS[k]
            if got != exp:
                ok = False
                lines.append(f"MISMATCH {k}: {got} samples, expected {exp} (the published benchmark size)")
            else:
                lines.append(f"{k}: {got} samples (matches the published benchmark size)")
    return lines, ok


@dataclass
class ConversionReport:
    """What a conversion did; ``lines()`` renders it for the CLI.

    ``excluded`` maps each reason (:data:`EXCLUDED_MISSING`, :data:`EXCLUDED_SETUP`) to the files it excluded.
    """

    output: Path
    num_samples: int = 0
    num_frames: int = 0
    bad_files: list[str] = field(default_factory=list)
    excluded: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    counts_ok: bool = True

    @property
    def excluded_missing(self) -> int:
        return sum(len(v) for k, v in self.excluded.items() if k.startswith(EXCLUDED_MISSING))

    def lines(self) -> list[str]:
        out = [f"wrote {self.output}: {self.num_samples} samples, {self.num_frames} frames"]
        for reason, paths in self.excluded.items():
            out.append(f"excluded {len(paths)} file{'s' if len(paths) != 1 else ''} {reason}:")
            out.extend(f"  {p}" for p in paths)
        if self.bad_files:
            out.append(f"skipped {len(self.bad_files)} bad files:")
            out.extend(f"  {b}" for b in self.bad_files)
        out.extend(self.notes)
        return out


def _load_one(args: tuple[str, str]) -> tuple[str, np.ndarray | None, Exception | None]:
    path, preset = args
    try:
        return path, load_ntu_sequence(path, preset), None
    except (SkeletonFormatError, OSError) as e:
        return path, None, e


def _scan_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    files: dict[str, Path] = {}
    for d in inputs:
        d = Path(d)
        if not d.is_dir():
            raise FileNotFoundError(f"NTU input {d}: not a directory")
        for p in sorted(d.iterdir()):
            if p.suffix != ".skeleton" or not p.is_file():
                continue
            if p.stem in files:
                raise ValueError(f"duplicate sample {p.stem!r}: in {files[p.stem]} and {p}")
            files[p.stem] = p
    if not files:
        raise FileNotFoundError(f"no .skeleton files found in {', '.join(str(d) for d in inputs)}")
    return [files[k] for k in sorted(files)]


def convert_ntu(
    inputs: Sequence[str | Path],
    output: str | Path,
    *,
    dataset: str = "auto",
    body_selection: str = "hitrs",
    skip_bad: bool = False,
    overwrite: bool = False,
    workers: int = 1,
    missing_list: str | Path | None = None,
    splits: SplitRequest | None = None,
) -> ConversionReport:
    """Convert folders of NTU ``.skeleton`` files into a canonical store.

    Samples are sorted by name; those on the missing-skeleton list (the bundled official list, or the file
    ``missing_list``; ``"none"`` excludes nothing) are excluded; for ``dataset="ntu60"`` files from setups
    >= 18 are excluded. Every excluded file is listed in the report and in ``meta.json`` (``excluded_files``).
    ``auto`` picks ``ntu120`` when any setup >= 18 is present. A file whose frames all hold 0 bodies is
    excluded and listed too (it would be an all-zero sample). The splits of :func:`benchmark_splits` go to
    ``splits.npz``, with those of ``splits`` (splits of one's choosing, :mod:`hitrs_fast.data.splits`) beside
    them. ``num_classes`` in ``meta.json`` comes from the data: the largest action present.

    Args:
        workers: parse files in this many processes (results are consumed in sorted order, so the store
            is identical for any value).
        skip_bad: skip and list malformed files instead of stopping at the first one.

    Raises:
        SkeletonFormatError: the first bad file (bad name or content) when ``skip_bad`` is False; nothing
            is left at ``output`` then.
    """
    if body_selection not in BODY_SELECTIONS:
        raise ValueError(f"body selection {body_selection!r}: expected one of {BODY_SELECTIONS}")
    if dataset not in ("auto", "ntu60", "ntu120"):
        raise ValueError(f"dataset {dataset!r}: expected auto, ntu60 or ntu120")
    report = ConversionReport(output=Path(output))
    files = _scan_inputs(inputs)
    parsed: list[tuple[Path, NtuName]] = []
    for p in files:
        try:
            parsed.append((p, parse_ntu_name(p.stem, p)))
        except SkeletonFormatError as e:
            if not skip_bad:
                raise
            report.bad_files.append(str(e))
    if dataset == "auto":
        dataset = "ntu120" if any(n.setup > NTU60_MAX_SETUP for _, n in parsed) else "ntu60"
    raw_count = len(parsed)
    if dataset == "ntu60":
        beyond = [str(p) for p, n in parsed if n.setup > NTU60_MAX_SETUP]
        if beyond:
            report.excluded[f"{EXCLUDED_SETUP} (--dataset ntu120 keeps them)"] = beyond
        parsed = [(p, n) for p, n in parsed if n.setup <= NTU60_MAX_SETUP]
        raw_count = len(parsed)
    if missing_list is None:
        missing, list_name = bundled_missing_list(dataset), f"the bundled {dataset} list"
    elif str(missing_list) == NO_MISSING_LIST:
        missing, list_name = set(), NO_MISSING_LIST
    else:
        missing, list_name = parse_missing_list(missing_list), str(missing_list)
    keep = [(p, n) for p, n in parsed if n.name not in missing]
    listed = [str(p) for p, n in parsed if n.name in missing]
    if listed:
        report.excluded[f"{EXCLUDED_MISSING} ({list_name}; --missing-list none keeps them)"] = listed
    if not keep:
        raise ValueError(f"no convertible NTU samples in {', '.join(str(d) for d in inputs)}")
    meta_by_name = {n.name: n for _, n in keep}

    def samples() -> Iterator[StoreSample]:
        jobs = [(str(p), body_selection) for p, _ in keep]
        results: Iterable[tuple[str, np.ndarray | None, Exception | None]]
        pool = None
        if workers > 1:
            import multiprocessing as mp

            pool = mp.get_context("spawn").Pool(workers)
            results = pool.imap(_load_one, jobs, chunksize=16)
        else:
            results = map(_load_one, jobs)
        try:
            for path, arr, err in results:
                if err is not None:
                    if not skip_bad:
                        raise err
                    report.bad_files.append(str(err))
                    continue
                n = meta_by_name[Path(path).stem]
                assert arr is not None
                if not arr.any():
                    report.excluded.setdefault(EXCLUDED_EMPTY, []).append(path)
                    continue
                yield StoreSample(n.name, arr, n.label, n.setup, n.camera, n.performer, n.replication)
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()

    split_box: dict[str, np.ndarray] = {}

    def make_splits(index: dict[str, Any]) -> dict[str, np.ndarray]:
        split_box.update(with_requested(
            lambda ix: benchmark_splits(ix["setup"], ix["camera"], ix["performer"], dataset), splits)(index))
        return split_box

    info = {
        "source": "ntu_skeleton",
        "dataset": dataset,
        "body_selection": body_selection,
        "centring": "none",
        "num_classes": None,  # from the data: the largest action present (write_store)
        "joint_layout": "ntu25",
        "fps": FPS,
        "missing_list": str(missing_list) if missing_list is not None else f"bundled {dataset}",
        "excluded_files": report.excluded,
        "inputs": [str(Path(d)) for d in inputs],
        "split_rules": splits.describe() if splits else {},
        # Filled while the samples stream; write_store serialises info only after the last sample.
        "skipped_files": report.bad_files,
    }
    root = write_store(output, samples(), info=info, splits=make_splits, overwrite=overwrite)
    from hitrs_fast.data.store import SkeletonStore

    store = SkeletonStore(root)
    report.num_samples = len(store)
    report.num_frames = int(store.lengths.sum())
    if raw_count != RAW_TOTALS[dataset]:
        report.notes.append(
            f"input holds {raw_count} {dataset} files, the complete dataset {RAW_TOTALS[dataset]}: "
            "an incomplete input (fine for fixtures and subsets)"
        )
    from hitrs_fast.data.inspection import describe_store, split_lines

    report.notes.extend(split_lines(describe_store(store)))
    lines, ok = expected_count_report(split_box, store.setup, dataset)
    report.notes.extend(lines)
    report.counts_ok = ok
    if not ok:
        warnings.warn(f"{root}: split sizes differ from the published benchmark sizes: " + "; ".join(lines),
                      stacklevel=2)
    return report
