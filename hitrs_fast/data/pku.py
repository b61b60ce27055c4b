"""PKU-MMD Part I / Part II reader and converter to an untrimmed canonical store.

* Skeleton file: one line per frame (30 fps), 150 whitespace-separated floats = person 1's joints 1..25 as
  (x, y, z), then person 2 (zeros when absent); lines after the first usually start with a space.
* Label file (same base name, ``.txt`` or ``.label``): one ``label,start,end,confidence`` line per action
  instance; labels 1..51, confidence 1 (slight) or 2 (strong).
* Split file: 4 lines, ``Training videos: `` / ids / ``Validataion videos: `` (sic) / ids, ids separated by
  ``,`` with trailing commas.

Per-frame labels: 0 = background, an instance of label k marks its frames k. Which frames an instance
covers depends on ``frame_base``:

* ``one_inclusive`` (default; Levigty/AimCLR): frames ``start-1 .. end-1`` (0-based), i.e. ``[start-1, end)``;
* ``zero_exclusive`` (maoyunyao/MAMP): frames ``[start, end)``.

The choice is recorded in ``meta.json`` (``frame_base``) together with the raw instances, so evaluators
can map predictions back to label-file coordinates.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hitrs_fast.data.store import StoreSample, write_store

__all__ = [
    "FRAME_BASES",
    "PkuConversionReport",
    "PkuFormatError",
    "convert_pku",
    "frame_labels_from_instances",
    "read_pku_labels",
    "read_pku_skeleton",
    "read_pku_split",
]

FRAME_BASES = ("one_inclusive", "zero_exclusive")
FLOATS_PER_LINE = 150
NUM_LABELS = 51
FPS = 30
# Frame numbers are held as int64; a larger one in a label file is a format error, not an overflow.
_MAX_FRAME = int(np.iinfo(np.int64).max)
PART1_RE = re.compile(r"^\d{4}-[LMR]$")
PART2_RE = re.compile(r"^A\d{2}N\d{2}-[LMR]$")
_SKELETON_SUFFIXES = (".txt", ".skeleton")
_LABEL_SUFFIXES = (".txt", ".label")


class PkuFormatError(ValueError):
    """A malformed PKU-MMD file; the message reads ``<file>:<line>: <what was found / expected>``."""

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        self.path, self.line, self.detail = str(path), line, message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.line, self.detail))


def read_pku_skeleton(path: str | Path) -> np.ndarray:
    """One skeleton file -> ``[T, 2, 25, 3]`` float32 (person 1, person 2; x, y, z).

    Raises:
        PkuFormatError: empty file, a line without exactly 150 values, non-numeric or non-finite values,
            a blank line followed by more data.
    """
    path = Path(path)
    lines = path.read_text(encoding="ascii", errors="replace").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise PkuFormatError(path, 1, f"empty file: expected one line of {FLOATS_PER_LINE} floats per frame")
    rows = [ln.split() for ln in lines]
    for i, toks in enumerate(rows):
        if len(toks) != FLOATS_PER_LINE:
            raise PkuFormatError(
                path, i + 1, f"expected {FLOATS_PER_LINE} values (2 persons x 25 joints x 3), found {len(toks)}"
            )
    try:
        arr = np.array(rows, dtype=np.float64)
    except ValueError:
        for i, toks in enumerate(rows):
            for tok in toks:
                try:
                    float(tok)
                except ValueError:
                    raise PkuFormatError(path, i + 1, f"non-numeric value {tok!r}: expected a float") from None
        raise
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        i = int(np.nonzero(~finite)[0][0])
        raise PkuFormatError(path, i + 1, "non-finite value (NaN/inf): expected finite coordinates")
    return arr.astype(np.float32).reshape(-1, 2, 25, 3)


def read_pku_labels(path: str | Path) -> np.ndarray:
    """One label file -> ``[K, 4]`` int64 rows ``(label, start, end, confidence)`` in file order.

    Raises:
        PkuFormatError: a line without 4 comma-separated integers, a label outside 1..51, start > end,
            a negative frame or one beyond the int64 range, or a confidence outside {1, 2}.
    """
    path = Path(path)
    out = []
    for i, line in enumerate(path.read_text(encoding="ascii", errors="replace").splitlines()):
        if not line.strip():
            continue
        toks = [t.strip() for t in line.split(",")]
        while toks and toks[-1] == "":
            toks.pop()  # tolerate a trailing comma
        if len(toks) != 4:
            raise PkuFormatError(path, i + 1, f"expected 'label,start,end,confidence', found {line.strip()!r}")
        try:
            label, start, end, conf = (int(t) for t in toks)
        except ValueError:
            raise PkuFormatError(path, i + 1, f"expected 4 integers, found {line.strip()!r}") from None
        if not 1 <= label <= NUM_LABELS:
            raise PkuFormatError(path, i + 1, f"label {label}: expected 1..{NUM_LABELS}")
        if start < 0 or end < start or end > _MAX_FRAME:
            raise PkuFormatError(path, i + 1, f"frames start={start} end={end}: expected 0 <= start <= end "
                                 f"<= {_MAX_FRAME}")
        if conf not in (1, 2):
            raise PkuFormatError(path, i + 1, f"confidence {conf}: expected 1 (slight) or 2 (strong)")
        out.append((label, start, end, conf))
    return np.asarray(out, dtype=np.int64).reshape(-1, 4)


def read_pku_split(path: str | Path) -> dict[str, list[str]]:
    """A 4-line split file -> ``{"train": [...], "test": [...]}`` (ids in file order).

    Accepts ``Validataion`` (sic, as distributed) and ``Validation``; ids are split on ``,``, stripped,
    empties dropped.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    # Headers first, so that a missing or misspelt one is reported on its own line.
    if lines and not lines[0].strip().lower().startswith("training videos"):
        raise PkuFormatError(path, 1, f"expected 'Training videos:', found {lines[0].strip()!r}")
    if len(lines) >= 3:
        h2 = lines[2].strip().lower()
        if not (h2.startswith("validataion videos") or h2.startswith("validation videos")):
            raise PkuFormatError(path, 3, f"expected 'Validataion videos:', found {lines[2].strip()!r}")
    if len(lines) != 4:
        # The first missing line, or the first extra one.
        raise PkuFormatError(path, min(len(lines), 4) + 1,
                             f"expected 4 lines (header, ids, header, ids), found {len(lines)}")
    parts = {}
    for key, ln in (("train", 1), ("test", 3)):
        ids = [t.strip() for t in lines[ln].split(",") if t.strip()]
        if not ids:
            raise PkuFormatError(path, ln + 1, "expected comma-separated video ids, found none")
        parts[key] = ids
    overlap = set(parts["train"]) & set(parts["test"])
    if overlap:
        raise PkuFormatError(path, None, f"{len(overlap)} ids in both splits, e.g. {sorted(overlap)[0]!r}")
    return parts


def frame_labels_from_instances(
    instances: np.ndarray, num_frames: int, frame_base: str = "one_inclusive", source: str | Path = "<labels>"
) -> tuple[np.ndarray, int]:
    """Per-frame labels ``[T]`` int16 (0 = background) from ``[K, 4]`` instances.

    Instances are painted in file order (a later one wins where two overlap). An instance running past the
    last frame is clipped; one starting beyond it raises.

    Returns:
        (frame labels, number of clipped instances).
    """
    if frame_base not in FRAME_BASES:
        raise ValueError(f"frame_base {frame_base!r}: expected one of {FRAME_BASES}")
    fl = np.zeros(num_frames, dtype=np.int16)
    clipped = 0
    shift = 1 if frame_base == "one_inclusive" else 0
    for k, (label, start, end, _conf) in enumerate(np.asarray(instances).reshape(-1, 4)):
        # one_inclusive: [start - 1, end); zero_exclusive: [start, end). Both end at `end` (exclusive).
        lo, hi = int(start) - shift, int(end)
        if frame_base == "one_inclusive" and start < 1:
            raise PkuFormatError(source, k + 1, f"start frame {start} with frame_base one_inclusive: expected >= 1")
        if lo >= num_frames:
            raise PkuFormatError(
                source, k + 1, f"instance frames [{start}, {end}] start after the skeleton's last frame ({num_frames})"
            )
        if hi > num_frames:
            clipped += 1
            hi = num_frames
        fl[lo:hi] = label
    return fl, clipped


@dataclass
class PkuConversionReport:
    output: Path
    num_samples: int = 0
    num_frames: int = 0
    bad_files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"wrote {self.output}: {self.num_samples} videos, {self.num_frames} frames"]
        if self.bad_files:
            out.append(f"skipped {len(self.bad_files)} bad files:")
            out.extend(f"  {b}" for b in self.bad_files)
        out.extend(self.notes)
        return out


def _find(folder: Path, stem: str, suffixes: tuple[str, ...]) -> Path | None:
    for s in suffixes:
        p = folder / f"{stem}{s}"
        if p.is_file():
            return p
    return None


def convert_pku(
    skeletons: str | Path,
    labels: str | Path,
    split: str | Path | None,
    output: str | Path,
    *,
    frame_base: str = "one_inclusive",
    skip_bad: bool = False,
    overwrite: bool = False,
) -> PkuConversionReport:
    """Convert PKU-MMD skeleton + label folders into an untrimmed store (``frame_labels.npy``).

    Every skeleton file in ``skeletons`` (``XXXX-V`` or ``AxxNyy-V``, ``.txt`` or ``.skeleton``) needs a
    label file of the same base name in ``labels``. The split file's train/test ids become the
    ``train``/``test`` splits (ids without a skeleton file are reported, not fatal).
    """
    if frame_base not in FRAME_BASES:
        raise ValueError(f"frame_base {frame_base!r}: expected one of {FRAME_BASES}")
    skeletons, labels = Path(skeletons), Path(labels)
    for d in (skeletons, labels):
        if not d.is_dir():
            raise FileNotFoundError(f"PKU-MMD input {d}: not a directory")
    report = PkuConversionReport(output=Path(output))
    stems: dict[str, Path] = {}
    for p in sorted(skeletons.iterdir()):
        if not p.is_file() or p.suffix not in _SKELETON_SUFFIXES:
            continue
        if not (PART1_RE.match(p.stem) or PART2_RE.match(p.stem)):
            err = PkuFormatError(p, None, f"unexpected file name {p.name!r}: expected XXXX-V or AxxNyy-V (V in L/M/R)")
            if not skip_bad:
                raise err
            report.bad_files.append(str(err))
            continue
        if p.stem in stems:
            raise ValueError(f"duplicate video {p.stem!r}: {stems[p.stem]} and {p}")
        stems[p.stem] = p
    if not stems:
        raise FileNotFoundError(f"no PKU-MMD skeleton files (XXXX-V.txt / .skeleton) in {skeletons}")
    parts = {"I" if PART1_RE.match(s) else "II" for s in stems}
    split_ids = read_pku_split(split) if split is not None else None
    instances: dict[str, list[list[int]]] = {}
    clipped_total = [0]

    def samples() -> Iterator[StoreSample]:
        for stem in sorted(stems):
            try:
                lab_path = _find(labels, stem, _LABEL_SUFFIXES)
                if lab_path is None:
                    raise PkuFormatError(labels / f"{stem}.txt", None, "label file missing (tried .txt and .label)")
                seq = read_pku_skeleton(stems[stem])
                inst = read_pku_labels(lab_path)
                fl, clipped = frame_labels_from_instances(inst, seq.shape[0], frame_base, lab_path)
            except PkuFormatError as e:
                if not skip_bad:
                    raise
                report.bad_files.append(str(e))
                continue
            clipped_total[0] += clipped
            instances[stem] = inst.tolist()
            yield StoreSample(stem, seq, frame_labels=fl)

    def make_splits(index: dict[str, Any]) -> dict[str, np.ndarray]:
        if split_ids is None:
            return {}
        pos = {n: i for i, n in enumerate(index["names"])}
        out = {}
        for key, ids in split_ids.items():
            absent = [v for v in ids if v not in pos]
            if absent:
                report.notes.append(f"split {key}: {len(absent)} of {len(ids)} ids have no converted video")
            out[key] = np.asarray(sorted(pos[v] for v in ids if v in pos), dtype=np.int64)
        in_none = len(pos) - sum(a.size for a in out.values())
        if in_none:
            report.notes.append(f"{in_none} videos are in neither split")
        return out

    info = {
        "source": "pku_mmd",
        "dataset": "pku_mmd_part" + "+".join(sorted(parts)),
        "body_selection": "pku_two_person",
        "centring": "none",
        "num_classes": NUM_LABELS + 1,
        "background_class": 0,
        "joint_layout": "ntu25",
        "fps": FPS,
        "frame_base": frame_base,
        "split_file": str(split) if split is not None else None,
        # Filled while the samples stream; write_store serialises info after the last sample.
        "label_instances": instances,
        "skipped_files": report.bad_files,
    }
    root = write_store(output, samples(), info=info, splits=make_splits, overwrite=overwrite)
    from hitrs_fast.data.store import SkeletonStore

    store = SkeletonStore(root)
    report.num_samples = len(store)
    report.num_frames = int(store.lengths.sum())
    if clipped_total[0]:
        report.notes.append(f"{clipped_total[0]} instances ran past their video's last frame and were clipped")
    return report
