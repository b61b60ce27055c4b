"""The canonical on-disk skeleton store.

A store is a directory::

    data.npy          float32 [sum_i T_i, M, V, C]   all samples' frames back to back, no padding
    index.npz         offsets int64[N], lengths int64[N], num_bodies int8[N], labels int64[N] (-1 = unlabelled),
                      setup / camera / performer / replication int16[N] (-1 = unknown),
                      source_index int64[N] (position of each sample in the writer's input order)
    names.txt         one sample name per line, in store order (sorted by name)
    frame_labels.npy  optional int16 [sum_i T_i]: per-frame labels of untrimmed sequences, 0 = background
    splits.npz        optional: split name -> int64 indices into the store order
    meta.json         sidecar: format_version, source, body_selection, centring, num_classes, joint_layout, the
                      size of each split and which setups / cameras / performers / repetitions it holds
                      (split_contents), how splits of one's choosing were made (split_rules), ...

Every reader, converter and importer in :mod:`hitrs_fast.data` produces this layout, and the loaders
(:mod:`hitrs_fast.data.loader`, :mod:`hitrs_fast.data.dali`) slice ``data.npy`` directly through a
memory map: sample ``i`` is ``data[offsets[i] : offsets[i] + lengths[i]]`` with shape ``[T_i, M, V, C]``.

:func:`write_store` streams: it holds one sample at a time (plus O(N) index integers), writes into a
temporary sibling directory and renames it into place at the very end, so an exception or an interrupt
never leaves a half-written store behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

__all__ = [
    "FORMAT_VERSION",
    "SkeletonStore",
    "StoreFormatError",
    "StoreSample",
    "config_hash",
    "split_contents",
    "write_store",
]

FORMAT_VERSION = 1

_DATA = "data.npy"
_INDEX = "index.npz"
_NAMES = "names.txt"
_FRAME_LABELS = "frame_labels.npy"
_SPLITS = "splits.npz"
_META = "meta.json"

# Fixed-size .npy header: written once with a placeholder shape, rewritten in place with the final
# frame count once the stream ends. 128 bytes holds a 4-d shape with 20-digit dimensions; a multiple
# of 64 keeps the payload aligned as numpy itself does.
_HEADER_BYTES = 128
# Frames per chunk when a store must be permuted into sorted order after writing.
_COPY_CHUNK_FRAMES = 1 << 16

_INDEX_INT16_FIELDS = ("setup", "camera", "performer", "replication")


class StoreFormatError(ValueError):
    """A store directory is missing a file or holds inconsistent contents; the message names the file."""


@dataclass
class StoreSample:
    """One sample of a store.

    Attributes:
        name: unique sample name (e.g. ``S001C002P003R002A013``); the store is sorted by it.
        data: ``[T, M, V, C]`` float32 joint coordinates (T frames, M body slots, V joints, C coords).
            Samples read back from a :class:`SkeletonStore` hold a read-only memmap view.
        label: 0-based class id, -1 = unlabelled.
        setup, camera, performer, replication: NTU metadata, -1 = unknown.
        frame_labels: ``[T]`` per-frame labels for untrimmed sequences (0 = background), else None.
    """

    name: str
    data: np.ndarray
    label: int = -1
    setup: int = -1
    camera: int = -1
    performer: int = -1
    replication: int = -1
    frame_labels: np.ndarray | None = None


def config_hash(config: Mapping[str, Any]) -> str:
    """A short, stable hash of a JSON-serialisable preprocessing config (sorted keys, sha256, 16 hex)."""
    blob = json.dumps(_jsonable(dict(config)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """A version-1.0 .npy header of exactly ``_HEADER_BYTES`` bytes (space padded, newline terminated)."""
    d = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": tuple(shape)}
    text = repr(d).encode("latin1")
    prefix = b"\x93NUMPY\x01\x00"
    room = _HEADER_BYTES - len(prefix) - 2 - 1  # 2 bytes header length, 1 byte newline
    if len(text) > room:
        raise ValueError(f"shape {shape} does not fit a {_HEADER_BYTES}-byte .npy header")
    body = text + b" " * (room - len(text)) + b"\n"
    return prefix + len(body).to_bytes(2, "little") + body


class _NpyStreamWriter:
    """Appends rows of a fixed trailing shape to a .npy file whose leading dimension is only known at the end."""

    def __init__(self, path: Path, tail: tuple[int, ...], dtype: np.dtype) -> None:
        self.path = path
        self.tail = tuple(int(t) for t in tail)
        self.dtype = np.dtype(dtype)
        self.rows = 0
        self._f: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed in finish()/abort()
        self._f.write(_npy_header((0, *self.tail), self.dtype))

    def append(self, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr, dtype=self.dtype)
        self._f.write(arr.tobytes())
        self.rows += arr.shape[0]

    def finish(self) -> None:
        self._f.seek(0)
        self._f.write(_npy_header((self.rows, *self.tail), self.dtype))
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()

    def abort(self) -> None:
        if not self._f.closed:
            self._f.close()


def split_contents(fields: Mapping[str, np.ndarray], splits: Mapping[str, np.ndarray]
                   ) -> dict[str, dict[str, list[int]]]:
    """Which setups, cameras, performers and repetitions each split holds: split -> field -> sorted ids.
    ``fields``: the per-sample arrays (store order); a field no sample of the split carries (-1) is left out."""
    out: dict[str, dict[str, list[int]]] = {}
    for name, idx in splits.items():
        held = {f: np.unique(np.asarray(fields[f])[idx]) for f in _INDEX_INT16_FIELDS}
        out[name] = {f: [int(v) for v in ids if v >= 0] for f, ids in held.items() if (ids >= 0).any()}
    return out


def _looks_like_store(path: Path) -> bool:
    return (path / _META).is_file() and (path / _INDEX).is_file()


def write_store(
    root: str | os.PathLike,
    samples: Iterable[StoreSample],
    *,
    info: dict,
    splits: Mapping[str, np.ndarray] | Callable[[dict[str, Any]], Mapping[str, np.ndarray]] | None = None,
    overwrite: bool = False,
) -> Path:
    """Stream ``samples`` into a canonical store at ``root`` and return its path.

    Args:
        root: the store directory to create.
        samples: any iterable of :class:`StoreSample`; consumed once, one sample held at a time. Every
            sample must share the trailing shape ``[M, V, C]`` of the first; ``T`` may be anything >= 1.
            Names must be unique. Input order is free: if it is not sorted by name, the store is
            permuted into sorted order in a second, chunked pass.
        info: sidecar entries written to ``meta.json`` (``source``, ``body_selection``, ``num_classes``,
            ``fps``, ...). Defaults filled in: ``centring="none"``, ``joint_layout="ntu25"``,
            ``num_classes = max(label) + 1``, ``config_hash`` (hash of ``info``). Read after the last
            sample, so a converter may fill it while ``samples`` streams.
        splits: split name -> int64 indices into the *input order* of ``samples`` (remapped to store
            order on write); or a callable receiving the final index (a dict with ``names`` and the
            ``index.npz`` arrays, all in store order) and returning split name -> store indices. The
            callable form suits converters that skip bad inputs and so cannot know indices up front.
        overwrite: replace an existing store at ``root``. A non-empty directory that is not a store is
            never replaced.

    Raises:
        FileExistsError: ``root`` exists and ``overwrite`` is False (or it is not a store).
        ValueError: a sample with the wrong rank/shape, an empty sequence, a duplicate name, a bad split.

    Steps: check the destination; stream and validate the samples into a temporary sibling directory
    (:class:`_SampleStream`); sort by name (:func:`_sort_by_name`); write the index, names, splits and
    ``meta.json``; rename the directory into place (:func:`_replace_into_place`). Any exception, an
    interrupt included, removes the temporary directory.
    """
    root = Path(root)
    _check_destination(root, overwrite)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    stream = _SampleStream(tmp)
    try:
        for k, sample in enumerate(samples):
            stream.add(k, sample)
        stream.finish()
        order, index, names = _sort_by_name(tmp, stream)
        split_map = _store_order_splits(splits, order, index, names)
        np.savez(tmp / _INDEX, **index)
        (tmp / _NAMES).write_text("".join(f"{nm}\n" for nm in names), encoding="utf-8")
        if split_map:
            np.savez(tmp / _SPLITS, **split_map)
        meta = _build_meta(info, index, stream.tail, len(names), int(index["lengths"].sum()),
                           stream.has_frame_labels, split_map)
        (tmp / _META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        _replace_into_place(tmp, root, overwrite)
    except BaseException:
        # BaseException: a KeyboardInterrupt mid-conversion must clean up too.
        stream.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


class _SampleStream:
    """First pass of :func:`write_store`: validates each sample and appends its frames to ``data.npy``
    (and its per-frame labels to ``frame_labels.npy``) in input order, keeping only the O(N) index lists."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.names: list[str] = []
        self._seen: set[str] = set()
        self.lengths: list[int] = []
        self.labels: list[int] = []
        self.meta_fields: dict[str, list[int]] = {k: [] for k in _INDEX_INT16_FIELDS}
        self.num_bodies: list[int] = []
        self._data: _NpyStreamWriter | None = None
        self._frame_labels: _NpyStreamWriter | None = None
        self._has_fl: bool | None = None  # decided by the first sample

    @property
    def tail(self) -> tuple[int, ...]:
        """``(M, V, C)`` of the first sample."""
        assert self._data is not None
        return self._data.tail

    @property
    def has_frame_labels(self) -> bool:
        return self._frame_labels is not None

    def add(self, k: int, s: StoreSample) -> None:
        """Checks sample ``k`` (input position) against the store rules and the earlier samples, then writes it."""
        d = np.asarray(s.data)
        if d.ndim != 4:
            raise ValueError(f"sample {k} ({s.name!r}): data must be [T, M, V, C], got shape {d.shape}")
        if d.shape[0] < 1:
            raise ValueError(f"sample {k} ({s.name!r}): empty sequence (T = 0); stores hold T >= 1")
        if "\n" in s.name or "\r" in s.name or not s.name:
            raise ValueError(f"sample {k}: name {s.name!r} must be non-empty and contain no line break")
        if s.name in self._seen:
            raise ValueError(f"sample {k}: duplicate name {s.name!r}; store names must be unique")
        self._seen.add(s.name)
        if self._data is None:
            self._data = _NpyStreamWriter(self.tmp / _DATA, d.shape[1:], np.float32)
        elif d.shape[1:] != self._data.tail:
            raise ValueError(
                f"sample {k} ({s.name!r}): trailing shape [M, V, C] = {list(d.shape[1:])} differs from the "
                f"first sample's {list(self._data.tail)}"
            )
        this_fl = s.frame_labels is not None
        if self._has_fl is None:
            self._has_fl = this_fl
            if this_fl:
                self._frame_labels = _NpyStreamWriter(self.tmp / _FRAME_LABELS, (), np.int16)
        elif this_fl != self._has_fl:
            raise ValueError(
                f"sample {k} ({s.name!r}): frame_labels {'given' if this_fl else 'missing'}, but "
                f"{'not ' if this_fl else ''}given for earlier samples; a store is all trimmed or all untrimmed"
            )
        if this_fl:
            fl = np.asarray(s.frame_labels)
            if fl.shape != (d.shape[0],):
                raise ValueError(f"sample {k} ({s.name!r}): frame_labels shape {fl.shape}, expected ({d.shape[0]},)")
            if fl.size and (fl.min() < np.iinfo(np.int16).min or fl.max() > np.iinfo(np.int16).max):
                raise ValueError(f"sample {k} ({s.name!r}): frame_labels outside the int16 range")
            assert self._frame_labels is not None
            self._frame_labels.append(fl.astype(np.int16))
        self._data.append(d)
        self.names.append(s.name)
        self.lengths.append(int(d.shape[0]))
        self.labels.append(int(s.label))
        for f in _INDEX_INT16_FIELDS:
            self.meta_fields[f].append(int(getattr(s, f)))
        # A slot is "occupied" if it ever holds a non-zero value (NaN counts: it is data, not padding).
        self.num_bodies.append(int(np.count_nonzero((d != 0).reshape(d.shape[0], d.shape[1], -1).any(axis=(0, 2)))))

    def finish(self) -> None:
        """Completes the .npy headers; an empty stream is an error (a store holds at least one sample)."""
        if self._data is None:
            raise ValueError("write_store: no samples; a store holds at least one sample")
        self._data.finish()
        if self._frame_labels is not None:
            self._frame_labels.finish()

    def abort(self) -> None:
        for w in (self._data, self._frame_labels):
            if w is not None:
                w.abort()


def _offsets(lengths: np.ndarray) -> np.ndarray:
    """Start frame of each sample: the running sum of ``lengths`` (int64), 0 first."""
    offsets = np.zeros(lengths.shape[0], dtype=np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    return offsets


def _sort_by_name(tmp: Path, stream: _SampleStream) -> tuple[np.ndarray, dict[str, np.ndarray], list[str]]:
    """Second pass: puts the written frames in name order (only when the input was not sorted).

    Returns:
        ``order`` (int64 ``[N]``, store position -> input position), the ``index.npz`` arrays in store
        order, and the sorted names.
    """
    n = len(stream.names)
    lengths = np.asarray(stream.lengths, dtype=np.int64)
    order = np.asarray(sorted(range(n), key=stream.names.__getitem__), dtype=np.int64)
    if not np.all(order == np.arange(n)):
        input_offsets = _offsets(lengths)
        _permute_frames(tmp / _DATA, input_offsets, lengths, order)
        if stream.has_frame_labels:
            _permute_frames(tmp / _FRAME_LABELS, input_offsets, lengths, order)
    lengths = lengths[order]
    index: dict[str, np.ndarray] = {
        "offsets": _offsets(lengths),
        "lengths": lengths,
        "num_bodies": np.asarray(stream.num_bodies, dtype=np.int8)[order],
        "labels": np.asarray(stream.labels, dtype=np.int64)[order],
        "source_index": order.copy(),
    }
    for f in _INDEX_INT16_FIELDS:
        index[f] = np.asarray(stream.meta_fields[f], dtype=np.int16)[order]
    return order, index, [stream.names[i] for i in order]


def _store_order_splits(
    splits: Mapping[str, np.ndarray] | Callable[[dict[str, Any]], Mapping[str, np.ndarray]] | None,
    order: np.ndarray,
    index: dict[str, np.ndarray],
    names: list[str],
) -> dict[str, np.ndarray]:
    """The ``splits`` argument of :func:`write_store` as checked, sorted store indices per split."""
    n = len(names)
    if callable(splits):
        return {str(k): _check_split(k, v, n) for k, v in splits({"names": names, **index}).items()}
    if splits is None:
        return {}
    # Input-order indices -> store order.
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.arange(n, dtype=np.int64)
    return {str(k): np.sort(inverse[_check_split(k, v, n)]) for k, v in splits.items()}


def _check_destination(root: Path, overwrite: bool) -> None:
    if not root.exists():
        return
    if not overwrite:
        raise FileExistsError(f"{root} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    if not root.is_dir():
        raise FileExistsError(f"{root} exists and is not a directory; refusing to replace it")
    if any(root.iterdir()) and not _looks_like_store(root):
        raise FileExistsError(f"{root} is a non-empty directory that is not a skeleton store; refusing to replace it")


def _replace_into_place(tmp: Path, root: Path, overwrite: bool) -> None:
    _check_destination(root, overwrite)  # the destination may have appeared while we were writing
    if root.exists():
        trash = root.parent / f".{root.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
        os.replace(root, trash)
        try:
            os.replace(tmp, root)
        except BaseException:
            os.replace(trash, root)
            raise
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, root)


def _check_split(name: Any, idx: Any, n: int) -> np.ndarray:
    a = np.asarray(idx)
    if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"split {name!r}: expected a 1-d integer index array, got dtype {a.dtype} shape {a.shape}")
    a = a.astype(np.int64)
    if a.size and (a.min() < 0 or a.max() >= n):
        raise ValueError(f"split {name!r}: indices must lie in [0, {n}), got range [{a.min()}, {a.max()}]")
    if np.unique(a).size != a.size:
        raise ValueError(f"split {name!r}: duplicate indices")
    return np.sort(a)


def _permute_frames(path: Path, offsets: np.ndarray, lengths: np.ndarray, order: np.ndarray) -> None:
    """Rewrite the .npy at ``path`` so that sample ``order[j]`` comes j-th; chunked, never fully in RAM."""
    src = np.load(path, mmap_mode="r")
    out_path = path.with_name(path.name + ".sorted")
    w = _NpyStreamWriter(out_path, src.shape[1:], src.dtype)
    try:
        for i in order:
            o, ln = int(offsets[i]), int(lengths[i])
            for c in range(o, o + ln, _COPY_CHUNK_FRAMES):
                w.append(src[c : min(c + _COPY_CHUNK_FRAMES, o + ln)])
        w.finish()
    except BaseException:
        w.abort()
        raise
    del src
    os.replace(out_path, path)


def _build_meta(
    info: Mapping[str, Any],
    index: Mapping[str, np.ndarray],
    tail: tuple[int, ...],
    n: int,
    frames: int,
    has_frame_labels: bool,
    split_map: Mapping[str, np.ndarray],
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "source": "unknown",
        "body_selection": None,
        "centring": "none",
        "joint_layout": "ntu25",
        "class_names": None,
        "fps": None,
        "frame_base": None,
    }
    meta.update(_jsonable(dict(info)))
    labels = index["labels"]
    if meta.get("num_classes") is None:
        meta["num_classes"] = int(labels.max()) + 1 if labels.size and labels.max() >= 0 else 0
    if meta.get("config_hash") is None:
        meta["config_hash"] = config_hash({k: v for k, v in meta.items() if k != "config_hash"})
    meta.update(
        {
            "format_version": FORMAT_VERSION,
            "num_samples": n,
            "num_frames": frames,
            "shape_tail": {"M": int(tail[0]), "V": int(tail[1]), "C": int(tail[2])} if len(tail) == 3 else list(tail),
            "dtype": "float32",
            "untrimmed": has_frame_labels,
            "splits": {k: int(v.size) for k, v in split_map.items()},
            "split_contents": split_contents(index, split_map),
        }
    )
    return meta


class SkeletonStore:
    """Read access to a canonical store; ``data.npy`` is memory-mapped read-only.

    Attributes (all in store order, length N):
        names: sample names (sorted).
        offsets, lengths: int64 frame offset / count of each sample in ``data``.
        labels: int64 class ids (-1 = unlabelled).
        num_bodies: int8 number of body slots ever occupied.
        setup, camera, performer, replication: int16 metadata (-1 = unknown).
        source_index: int64 position of each sample in the writer's input order.
        data: the ``[sum T, M, V, C]`` float32 memmap.
        info: the parsed ``meta.json``.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: not a directory (expected a skeleton store)")
        for fname in (_DATA, _INDEX, _NAMES, _META):
            if not (self.root / fname).is_file():
                raise StoreFormatError(
                    f"{self.root / fname}: missing; a store needs {_DATA}, {_INDEX}, {_NAMES} and {_META}"
                )

        meta_path = self.root / _META
        try:
            self.info: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise StoreFormatError(f"{meta_path}: not valid JSON ({e})") from e
        version = self.info.get("format_version")
        if version != FORMAT_VERSION:
            raise StoreFormatError(f"{meta_path}: format_version {version!r}, this library reads {FORMAT_VERSION}")

        data_path = self.root / _DATA
        try:
            self.data: np.ndarray = np.load(data_path, mmap_mode="r")
        except (ValueError, OSError) as e:
            raise StoreFormatError(f"{data_path}: not a readable .npy file ({e})") from e
        if self.data.ndim != 4 or self.data.dtype != np.float32:
            raise StoreFormatError(
                f"{data_path}: expected float32 [sum T, M, V, C], got {self.data.dtype} shape {self.data.shape}"
            )

        index_path = self.root / _INDEX
        try:
            with np.load(index_path, allow_pickle=False) as z:
                index = {k: z[k] for k in z.files}
        except (ValueError, OSError) as e:
            raise StoreFormatError(f"{index_path}: not a readable .npz file ({e})") from e
        required = ("offsets", "lengths", "num_bodies", "labels", *_INDEX_INT16_FIELDS)
        missing = [k for k in required if k not in index]
        if missing:
            raise StoreFormatError(f"{index_path}: missing arrays {missing}; has {sorted(index)}")
        n = index["offsets"].shape[0]
        for k in required:
            if index[k].shape != (n,):
                raise StoreFormatError(f"{index_path}: array {k!r} has shape {index[k].shape}, expected ({n},)")
        self.offsets = index["offsets"].astype(np.int64, copy=False)
        self.lengths = index["lengths"].astype(np.int64, copy=False)
        self.num_bodies = index["num_bodies"].astype(np.int8, copy=False)
        self.labels = index["labels"].astype(np.int64, copy=False)
        self.setup = index["setup"].astype(np.int16, copy=False)
        self.camera = index["camera"].astype(np.int16, copy=False)
        self.performer = index["performer"].astype(np.int16, copy=False)
        self.replication = index["replication"].astype(np.int16, copy=False)
        self.source_index = index.get("source_index", np.arange(n, dtype=np.int64)).astype(np.int64, copy=False)
        if n and (self.lengths.min() < 1):
            bad = int(np.argmin(self.lengths))
            raise StoreFormatError(f"{index_path}: sample {bad} has length {self.lengths[bad]}, expected >= 1")
        expected_offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64) if n else self.offsets
        if not np.array_equal(self.offsets, expected_offsets):
            bad = int(np.nonzero(self.offsets != expected_offsets)[0][0])
            raise StoreFormatError(
                f"{index_path}: offsets[{bad}] = {self.offsets[bad]}, expected {expected_offsets[bad]} "
                "(offsets must be the running sum of lengths)"
            )
        total = int(self.lengths.sum())
        if total != self.data.shape[0]:
            raise StoreFormatError(f"{data_path}: {self.data.shape[0]} frames, but {index_path} lengths sum to {total}")

        names_path = self.root / _NAMES
        self.names: list[str] = names_path.read_text(encoding="utf-8").splitlines()
        if len(self.names) != n:
            raise StoreFormatError(f"{names_path}: {len(self.names)} names, expected {n} (one per sample)")

        fl_path = self.root / _FRAME_LABELS
        self._frame_labels: np.ndarray | None = None
        if fl_path.is_file():
            try:
                self._frame_labels = np.load(fl_path, mmap_mode="r")
            except (ValueError, OSError) as e:
                raise StoreFormatError(f"{fl_path}: not a readable .npy file ({e})") from e
            if self._frame_labels.shape != (total,) or not np.issubdtype(self._frame_labels.dtype, np.integer):
                raise StoreFormatError(
                    f"{fl_path}: expected integer [{total}], got {self._frame_labels.dtype} {self._frame_labels.shape}"
                )

        splits_path = self.root / _SPLITS
        self._splits: dict[str, np.ndarray] = {}
        if splits_path.is_file():
            try:
                with np.load(splits_path, allow_pickle=False) as z:
                    self._splits = {k: z[k].astype(np.int64) for k in z.files}
            except (ValueError, OSError) as e:
                raise StoreFormatError(f"{splits_path}: not a readable .npz file ({e})") from e
            for k, v in self._splits.items():
                if v.ndim != 1 or (v.size and (v.min() < 0 or v.max() >= n)):
                    raise StoreFormatError(f"{splits_path}: split {k!r} holds indices outside [0, {n})")

    def __len__(self) -> int:
        return int(self.offsets.shape[0])

    def _check_index(self, i: int) -> int:
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"sample index {i} out of range for a store of {n} samples")
        return i

    def sequence(self, i: int) -> np.ndarray:
        """Sample ``i`` as a read-only ``[T_i, M, V, C]`` float32 memmap view."""
        i = self._check_index(i)
        o = int(self.offsets[i])
        return self.data[o : o + int(self.lengths[i])]

    def frame_labels(self, i: int) -> np.ndarray | None:
        """Per-frame labels ``[T_i]`` (0 = background) of an untrimmed store, or None for a trimmed one."""
        i = self._check_index(i)
        if self._frame_labels is None:
            return None
        o = int(self.offsets[i])
        return self._frame_labels[o : o + int(self.lengths[i])]

    def __getitem__(self, i: int) -> StoreSample:
        i = self._check_index(i)
        return StoreSample(
            name=self.names[i],
            data=self.sequence(i),
            label=int(self.labels[i]),
            setup=int(self.setup[i]),
            camera=int(self.camera[i]),
            performer=int(self.performer[i]),
            replication=int(self.replication[i]),
            frame_labels=self.frame_labels(i),
        )

    @property
    def split_names(self) -> list[str]:
        return sorted(self._splits)

    def split_indices(self, name: str) -> np.ndarray:
        """Store indices (int64, sorted) of split ``name``; KeyError listing the available splits."""
        try:
            return self._splits[name]
        except KeyError:
            avail = ", ".join(self.split_names) or "none (no splits.npz)"
            raise KeyError(f"split {name!r} not in store {self.root}; available: {avail}") from None

    @property
    def shape_tail(self) -> tuple[int, int, int]:
        """``(M, V, C)``."""
        return tuple(int(x) for x in self.data.shape[1:])  # type: ignore[return-value]

    def __repr__(self) -> str:
        return (
            f"SkeletonStore({str(self.root)!r}, N={len(self)}, frames={self.data.shape[0]}, "
            f"[M, V, C]={list(self.data.shape[1:])}, source={self.info.get('source')!r})"
        )

