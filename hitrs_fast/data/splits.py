"""Splits of one's choosing, made when a dataset is converted or imported (``hitrs data convert ntu``, ``hitrs
data import ...``): by lists of performers, cameras, setups or repetitions, or from a file naming the samples
of each split. They are written beside the converter's own splits (the NTU benchmarks stay the default).

A rule, ``--split NAME:FIELD=LIST[:FIELD=LIST...]``, puts into split ``NAME`` every sample whose ``FIELD``
is in ``LIST`` for every ``FIELD`` given (fields: :data:`SPLIT_FIELDS`, also ``subject``, ``view`` and
``repetition``; lists: ``1,2,3``, ``1-3`` or both, ``5,7-9``)::

    --split train:performer=1-3 --split test:performer=4
    --split train:camera=2,3:setup=1-10 --split test:camera=1:setup=1-10

A split file, ``--split-file FILE``, is either JSON, ``{"train": ["S001C001P001R001A001", ...], "test": [...]}``,
or text, one ``SPLIT: NAME NAME ...`` line or more per split (``#`` starts a comment)::

    train: S001C001P001R001A001 S001C001P001R001A002
    test:  S001C001P004R001A001

Every problem (a malformed rule, a field no sample carries, a split that selects nothing, a name that is not
in the store, a split defined twice) is a ``ValueError`` naming the option and what was expected.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SPLIT_FIELDS", "SplitRequest", "compact_ranges", "parse_split_rule", "read_split_file", "with_requested"]

SPLIT_FIELDS = ("performer", "camera", "setup", "replication")
FIELD_ALIASES = {"subject": "performer", "view": "camera", "repetition": "replication"}
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


def _parse_list(text: str, where: str) -> list[int]:
    values: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if m is None:
            raise ValueError(f"{where}: {part!r} is not a number or a range like 1-3")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise ValueError(f"{where}: range {part.strip()!r} runs backwards")
        values.extend(range(lo, hi + 1))
    return sorted(set(values))


def parse_split_rule(text: str) -> tuple[str, dict[str, list[int]]]:
    """``"train:performer=1-3:camera=2"`` -> ``("train", {"performer": [1, 2, 3], "camera": [2]})``."""
    where = f"--split {text}"
    name, _, rest = text.partition(":")
    if not _NAME_RE.match(name) or not rest:
        raise ValueError(f"{where}: expected NAME:FIELD=LIST[:FIELD=LIST...], e.g. train:performer=1-3 (fields: "
                         f"{', '.join(SPLIT_FIELDS)})")
    criteria: dict[str, list[int]] = {}
    for item in rest.split(":"):
        field, eq, values = item.partition("=")
        field = FIELD_ALIASES.get(field.strip(), field.strip())
        if not eq or field not in SPLIT_FIELDS:
            raise ValueError(f"{where}: {item!r} is not FIELD=LIST with FIELD one of {', '.join(SPLIT_FIELDS)}")
        if field in criteria:
            raise ValueError(f"{where}: {field} given twice")
        criteria[field] = _parse_list(values, where)
    return name, criteria


def read_split_file(path: str | Path) -> dict[str, list[str]]:
    """A split file (JSON or ``SPLIT: NAME ...`` lines) -> split name -> sample names."""
    path = Path(path)
    where = f"--split-file {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"{where}: {e.strerror or e}") from None
    if text.lstrip().startswith("{"):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON (line {e.lineno}: {e.msg})") from None
        if not all(isinstance(k, str) and isinstance(v, list) and all(isinstance(n, str) for n in v)
                   for k, v in raw.items()):
            raise ValueError(f"{where}: expected {{\"SPLIT\": [\"NAME\", ...], ...}}")
        out = {k: list(v) for k, v in raw.items()}
    else:
        out = {}
        for ln, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            split, colon, names = line.partition(":")
            if not colon or not _NAME_RE.match(split.strip()):
                raise ValueError(f"{where}:{ln}: expected 'SPLIT: NAME NAME ...', found {line[:60]!r}")
            out.setdefault(split.strip(), []).extend(names.split())
    for split, names in out.items():
        if not _NAME_RE.match(split):
            raise ValueError(f"{where}: split name {split!r}: letters, digits, '_', '-' and '.' only")
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise ValueError(f"{where}: split {split!r} names {dup!r} twice")
    return out


def compact_ranges(values: Sequence[int] | np.ndarray) -> str:
    """``[1, 2, 3, 5, 7, 8]`` -> ``"1-3, 5, 7-8"``."""
    vals = sorted({int(v) for v in values})
    runs: list[str] = []
    i = 0
    while i < len(vals):
        j = i
        while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
            j += 1
        runs.append(str(vals[i]) if i == j else f"{vals[i]}-{vals[j]}")
        i = j + 1
    return ", ".join(runs)


class SplitRequest:
    """The splits a user asked for on the command line: ``rules`` (``--split`` texts) and ``split_file``.

    :meth:`indices` turns them into store indices once the store's index is known (the ``splits`` callable
    of :func:`~hitrs_fast.data.store.write_store` receives it); :meth:`describe` is what ``meta.json`` records
    (``split_rules``)."""

    def __init__(self, rules: Sequence[str] = (), split_file: str | Path | None = None) -> None:
        self.rules = [parse_split_rule(r) for r in rules]  # checked before any file is read
        self.file = Path(split_file) if split_file is not None else None
        self.by_file = read_split_file(self.file) if self.file is not None else {}
        names = [n for n, _ in self.rules] + list(self.by_file)
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"split {dup[0]!r} is defined twice (by --split and --split-file, or twice)")

    def __bool__(self) -> bool:
        return bool(self.rules or self.by_file)

    def describe(self) -> dict[str, str]:
        out = {name: ":".join(f"{f}={compact_ranges(v).replace(' ', '')}" for f, v in crit.items())
               for name, crit in self.rules}
        out.update({name: f"names in {self.file}" for name in self.by_file})
        return out

    def indices(self, index: dict[str, Any], existing: Sequence[str] = ()) -> dict[str, np.ndarray]:
        """Store indices of each requested split. ``index``: the store's index in store order (``names`` and
        the per-sample arrays of :data:`SPLIT_FIELDS`); ``existing``: the converter's own split names, which a
        requested split may not reuse."""
        out: dict[str, np.ndarray] = {}
        for name, criteria in self.rules:
            keep = np.ones(len(index["names"]), dtype=bool)
            for field, values in criteria.items():
                have = np.asarray(index[field])
                if (have < 0).all():
                    raise ValueError(f"--split {name}:{field}=...: no sample carries a {field} id (they come from "
                                     "NTU-style names SsssCcccPpppRrrrAaaa); use --split-file with sample names")
                keep &= np.isin(have, values)
            if not keep.any():
                present = {f: compact_ranges(np.unique(np.asarray(index[f])[np.asarray(index[f]) >= 0]))
                           for f in criteria}
                raise ValueError(f"--split {name}: selects no sample (present: "
                                 + "; ".join(f"{f} {v or 'none'}" for f, v in present.items()) + ")")
            out[name] = np.nonzero(keep)[0].astype(np.int64)
        position = {n: k for k, n in enumerate(index["names"])}
        for name, names in self.by_file.items():
            unknown = [n for n in names if n not in position]
            if unknown:
                raise ValueError(f"--split-file {self.file}: split {name!r} names {len(unknown)} samples that are not "
                                 f"in the store, e.g. {unknown[0]!r} (excluded, or misspelt?)")
            if not names:
                raise ValueError(f"--split-file {self.file}: split {name!r} is empty")
            out[name] = np.sort(np.asarray([position[n] for n in names], dtype=np.int64))
        clash = sorted(set(out) & set(existing))
        if clash:
            raise ValueError(f"split {clash[0]!r} already exists in this store (splits {sorted(existing)}); "
                             "pick another name")
        return out


def with_requested(own: Callable[[dict[str, Any]], Mapping[str, np.ndarray]], request: SplitRequest | None
                   ) -> Callable[[dict[str, Any]], dict[str, np.ndarray]]:
    """The ``splits`` callable of :func:`~hitrs_fast.data.store.write_store` for a converter whose own splits
    come from ``own(index)``: those, plus the ones ``request`` asks for."""

    def make(index: dict[str, Any]) -> dict[str, np.ndarray]:
        out = dict(own(index))
        if request:
            out.update(request.indices(index, existing=list(out)))
        return out

    return make
