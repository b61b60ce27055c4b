"""Importers into the canonical store: peer codebases' preprocessed arrays, and one's own per-frame labelled
sequences.

* :func:`import_ctrgcn_npz` — CTR-GCN / SGN / MAMP / STARS ``NTU60_XSub.npz`` & co: ``x_{train,test}``
  float32 ``(N, 300, 150)`` (actor 1's 25 joints as x y z, then actor 2), one-hot ``y_{train,test}``.
  Rows are streamed out of the zip member, never loading ``x_train`` (7.2 GB for NTU-60 xsub) whole.
* :func:`import_stgcn` — st-gcn / CrosSCLR / AimCLR / Hi-TRS / 2s-AGCN ``{part}_data.npy``
  ``(N, 3, T, 25, M)`` (memory-mapped) plus ``{part}_label.pkl`` = ``(names, labels)``, optionally
  ``{part}_num_frame.npy``.
* :func:`import_pyskl` — a PYSKL / mmaction2 pickle ``{"split": {...}, "annotations": [...]}``.
* :func:`import_frame_labels` — one's own untrimmed sequences with per-frame labels, one ``.npz`` per
  sequence (``joints`` + ``labels``), a folder per split; the store that detection trains on.

Valid length of a zero-padded sample: the index of its last frame holding any non-zero value, plus one.
For these files (all-zero frames only occur as padding, MAMP/SGN denoising step 6) this equals
CTR-GCN's ``valid_frame_num`` (the count of non-zero frames). Pickles are read with
:func:`hitrs_fast.data.safe_pickle.safe_load`.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hitrs_fast.data.ntu import NAME_RE, parse_ntu_name
from hitrs_fast.data.safe_pickle import safe_load
from hitrs_fast.data.splits import SplitRequest, with_requested
from hitrs_fast.data.store import StoreSample, write_store

__all__ = ["import_ctrgcn_npz", "import_frame_labels", "import_pyskl", "import_stgcn", "valid_length"]

_ROW_CHUNK = 256


def valid_length(x: np.ndarray) -> int:
    """Frames up to the last one with any non-zero value; ``x`` is ``[T, ...]`` (time first)."""
    nz = np.nonzero(x.reshape(x.shape[0], -1).any(axis=1))[0]
    return int(nz[-1]) + 1 if nz.size else 0


def _npz_member_rows(zf: zipfile.ZipFile, member: str, source: str) -> tuple[tuple[int, ...], Iterator[np.ndarray]]:
    """Shape of ``member`` and an iterator over chunks of its rows, decompressed on the fly."""
    f = zf.open(member)
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ValueError(f"{source}: member {member}: unsupported .npy version {version}")
    if fortran:
        raise ValueError(f"{source}: member {member}: Fortran-ordered arrays cannot be streamed; re-save C-ordered")
    if dtype.hasobject:
        raise ValueError(f"{source}: member {member}: object arrays are not allowed")
    row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize

    def rows() -> Iterator[np.ndarray]:
        try:
            for start in range(0, shape[0], _ROW_CHUNK):
                k = min(_ROW_CHUNK, shape[0] - start)
                buf = f.read(k * row)
                if len(buf) != k * row:
                    raise ValueError(f"{source}: member {member} truncated at row {start + len(buf) // row}")
                yield np.frombuffer(buf, dtype=dtype).reshape(k, *shape[1:])
        finally:
            f.close()

    return tuple(shape), rows()


def import_ctrgcn_npz(
    path: str | Path,
    output: str | Path,
    *,
    centring: str = "sequence_translation",
    overwrite: bool = False,
    skip_empty: bool = False,
    splits: SplitRequest | None = None,
) -> Path:
    """Import a CTR-GCN-style ``.npz`` (``x_train``/``y_train`` and/or ``x_test``/``y_test``).

    Sample ``i`` of part ``p`` is named ``{p}_{i:06d}`` and stored as ``[T_i, 2, 25, 3]`` with T_i its
    valid length; labels = argmax of the one-hot rows; splits ``train``/``test``. ``centring`` is recorded
    in ``meta.json`` (NTU files: ``sequence_translation``; MAMP's PKU files: ``none``).

    Raises:
        ValueError: missing keys, wrong shapes, a label row that is not one-hot, an all-zero sample (unless
            ``skip_empty``: then it is skipped and listed in ``meta.json``).
    """
    path = Path(path)
    zf = zipfile.ZipFile(path)
    members = {n[:-4]: n for n in zf.namelist() if n.endswith(".npy")}
    parts = [p for p in ("train", "test") if f"x_{p}" in members]
    if not parts:
        raise ValueError(f"{path}: expected keys x_train/y_train and/or x_test/y_test, found {sorted(members)}")
    with np.load(path, allow_pickle=False) as z:
        ys = {}
        for p in parts:
            if f"y_{p}" not in members:
                raise ValueError(f"{path}: x_{p} present but y_{p} missing")
            ys[p] = z[f"y_{p}"]  # small: (N, num_classes)
    num_classes = None
    labels: dict[str, np.ndarray] = {}
    for p in parts:
        y = ys[p]
        if y.ndim == 1:
            lab = y.astype(np.int64)
        elif y.ndim == 2:
            ok = np.isclose(y.sum(axis=1), 1.0) & np.isclose(y.max(axis=1), 1.0)
            if not ok.all():
                bad = int(np.nonzero(~ok)[0][0])
                raise ValueError(f"{path}: y_{p} row {bad} is not one-hot (sum {y[bad].sum()}, max {y[bad].max()})")
            lab = y.argmax(axis=1).astype(np.int64)
            num_classes = y.shape[1] if num_classes is None else max(num_classes, y.shape[1])
        else:
            raise ValueError(f"{path}: y_{p} has shape {y.shape}, expected (N, num_classes) one-hot or (N,)")
        labels[p] = lab
    skipped: list[str] = []
    shapes = {}
    for p in parts:
        shape, _ = _npz_member_rows(zf, members[f"x_{p}"], str(path))
        if len(shape) != 3 or shape[2] != 150:
            raise ValueError(f"{path}: x_{p} has shape {shape}, expected (N, T, 150) = 2 actors x 25 joints x 3")
        if shape[0] != labels[p].shape[0]:
            raise ValueError(f"{path}: x_{p} has {shape[0]} rows but y_{p} has {labels[p].shape[0]}")
        shapes[p] = shape

    def samples() -> Iterator[StoreSample]:
        for p in parts:
            _, chunks = _npz_member_rows(zf, members[f"x_{p}"], str(path))
            i = 0
            for chunk in chunks:
                for x in chunk:
                    t = valid_length(x)
                    name = f"{p}_{i:06d}"
                    if t == 0:
                        if not skip_empty:
                            raise ValueError(f"{path}: x_{p} row {i} is all zero (no valid frame)")
                        skipped.append(name)
                    else:
                        seq = x[:t].reshape(t, 2, 25, 3).astype(np.float32)
                        yield StoreSample(name, seq, int(labels[p][i]))
                    i += 1

    def make_splits(index: dict[str, Any]) -> dict[str, np.ndarray]:
        names = index["names"]
        return {p: np.asarray([k for k, n in enumerate(names) if n.startswith(p + "_")], dtype=np.int64) for p in parts}

    info = {
        "source": "ctrgcn_npz",
        "input": str(path),
        "body_selection": "sgn_denoised",
        "centring": centring,
        "num_classes": num_classes if num_classes is not None else int(max(lab.max() for lab in labels.values())) + 1,
        "joint_layout": "ntu25",
        "fps": 30,
        "skipped_empty": skipped,
        "split_rules": splits.describe() if splits else {},
    }
    try:
        return write_store(output, samples(), info=info, splits=with_requested(make_splits, splits),
                           overwrite=overwrite)
    finally:
        zf.close()


def _split_name_from(path: Path) -> str:
    stem = path.stem
    for suffix in ("_data_joint", "_data"):
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def import_stgcn(
    parts: Sequence[tuple[str | Path, str | Path]],
    output: str | Path,
    *,
    num_frames: Sequence[str | Path | None] | None = None,
    centring: str = "none",
    overwrite: bool = False,
    splits: SplitRequest | None = None,
) -> Path:
    """Import st-gcn-layout parts, each ``(data.npy (N, 3, T, 25, M), label.pkl (names, labels))``.

    The split of each part is named after the data file (``train_data.npy`` -> ``train``,
    ``val_data_joint.npy`` -> ``val``). Sample names lose their ``.skeleton`` extension; NTU names fill
    setup/camera/performer/replication. Lengths come from ``num_frames`` files when given (2s-AGCN
    ``{part}_num_frame.npy``), else from the last non-zero frame. ``centring``: ``none`` for
    st-gcn/AimCLR/Hi-TRS files, ``pre_normalization`` for 2s-AGCN/HiCo ``_data_joint`` files.
    """
    loaded = []
    for k, (data_path, label_path) in enumerate(parts):
        data_path, label_path = Path(data_path), Path(label_path)
        data = np.load(data_path, mmap_mode="r", allow_pickle=False)
        if data.ndim != 5 or data.shape[1] != 3 or data.shape[3] != 25:
            raise ValueError(f"{data_path}: shape {data.shape}, expected (N, C=3, T, V=25, M)")
        lab = safe_load(label_path)
        if not (isinstance(lab, (tuple, list)) and len(lab) == 2):
            raise ValueError(f"{label_path}: expected a pickled (names, labels) pair, found {type(lab).__name__}")
        names = [str(n) for n in lab[0]]
        labels = np.asarray(lab[1]).reshape(-1).astype(np.int64)
        if len(names) != data.shape[0] or labels.shape[0] != data.shape[0]:
            raise ValueError(
                f"{label_path}: {len(names)} names / {labels.shape[0]} labels for {data.shape[0]} samples "
                f"in {data_path}"
            )
        nf = None
        if num_frames is not None and num_frames[k] is not None:
            nf = np.load(num_frames[k], allow_pickle=False).reshape(-1).astype(np.int64)
            if nf.shape[0] != data.shape[0] or nf.min() < 1 or nf.max() > data.shape[2]:
                raise ValueError(f"{num_frames[k]}: expected {data.shape[0]} frame counts in [1, {data.shape[2]}]")
        loaded.append((_split_name_from(data_path), data_path, data, names, labels, nf))
    split_of: dict[str, str] = {}
    for split, data_path, _, names, _, _ in loaded:
        for n in names:
            stem = n[: -len(".skeleton")] if n.endswith(".skeleton") else n
            if stem in split_of:
                raise ValueError(f"{data_path}: duplicate sample {stem!r} (also in split {split_of[stem]!r})")
            split_of[stem] = split
    if len({s for s, *_ in loaded}) != len(loaded):
        raise ValueError(f"two parts map to the same split name: {[s for s, *_ in loaded]}")

    def samples() -> Iterator[StoreSample]:
        for _split, data_path, data, names, labels, nf in loaded:
            for i, n in enumerate(names):
                stem = n[: -len(".skeleton")] if n.endswith(".skeleton") else n
                x = np.asarray(data[i]).transpose(1, 3, 2, 0)  # (C, T, V, M) -> (T, M, V, C)
                t = int(nf[i]) if nf is not None else valid_length(x)
                if t == 0:
                    raise ValueError(f"{data_path}: sample {i} ({n}) is all zero (no valid frame)")
                meta = parse_ntu_name(stem) if NAME_RE.match(stem) else None
                yield StoreSample(
                    stem,
                    np.ascontiguousarray(x[:t], dtype=np.float32),
                    int(labels[i]),
                    *((meta.setup, meta.camera, meta.performer, meta.replication) if meta else (-1, -1, -1, -1)),
                )

    def make_splits(index: dict[str, Any]) -> dict[str, np.ndarray]:
        out: dict[str, list[int]] = {s: [] for s, *_ in loaded}
        for k, n in enumerate(index["names"]):
            out[split_of[n]].append(k)
        return {s: np.asarray(v, dtype=np.int64) for s, v in out.items()}

    all_labels = np.concatenate([lab for *_, lab, _ in loaded])
    info = {
        "source": "stgcn_npy",
        "inputs": [[str(d), str(lp)] for d, lp in parts],
        "body_selection": "as_imported",
        "centring": centring,
        "num_classes": int(all_labels.max()) + 1,
        "joint_layout": "ntu25",
        "fps": 30,
        "split_rules": splits.describe() if splits else {},
    }
    return write_store(output, samples(), info=info, splits=with_requested(make_splits, splits), overwrite=overwrite)


def import_pyskl(path: str | Path, output: str | Path, *, centring: str = "none", overwrite: bool = False,
                 splits: SplitRequest | None = None) -> Path:
    """Import a PYSKL pickle: ``annotations`` (``frame_dir``, ``total_frames``, ``label``, ``keypoint (M, T, V, C)``)
    and ``split`` (name -> list of ``frame_dir``). Body slots are zero-padded to the largest M.
    """
    path = Path(path)
    obj = safe_load(path)
    if not isinstance(obj, dict) or "annotations" not in obj:
        raise ValueError(f"{path}: expected a dict with 'annotations' (and 'split'), found {type(obj).__name__}")
    anns = obj["annotations"]
    split = obj.get("split", {})
    if not isinstance(anns, list) or not anns:
        raise ValueError(f"{path}: 'annotations' must be a non-empty list")
    max_m, vc = 0, None
    seen: set[str] = set()
    for k, a in enumerate(anns):
        for key in ("frame_dir", "label", "keypoint"):
            if key not in a:
                raise ValueError(f"{path}: annotation {k} lacks {key!r}")
        kp = np.asarray(a["keypoint"])
        if kp.ndim != 4:
            raise ValueError(
                f"{path}: annotation {k} ({a['frame_dir']}): keypoint shape {kp.shape}, expected (M, T, V, C)"
            )
        if vc is None:
            vc = kp.shape[2:]
        elif kp.shape[2:] != vc:
            raise ValueError(f"{path}: annotation {k}: keypoint (V, C) = {kp.shape[2:]}, earlier ones {vc}")
        if "total_frames" in a and int(a["total_frames"]) != kp.shape[1]:
            raise ValueError(
                f"{path}: annotation {k}: total_frames {a['total_frames']} but keypoint has T={kp.shape[1]}"
            )
        if kp.shape[1] < 1:
            raise ValueError(f"{path}: annotation {k} ({a['frame_dir']}): no frames")
        if str(a["frame_dir"]) in seen:
            raise ValueError(f"{path}: duplicate frame_dir {a['frame_dir']!r}")
        seen.add(str(a["frame_dir"]))
        max_m = max(max_m, kp.shape[0])
    for sname, ids in split.items():
        unknown = [i for i in ids if str(i) not in seen]
        if unknown:
            raise ValueError(f"{path}: split {sname!r} names {len(unknown)} unknown frame_dir, e.g. {unknown[0]!r}")

    def samples() -> Iterator[StoreSample]:
        for a in anns:
            kp = np.asarray(a["keypoint"], dtype=np.float32)
            x = np.zeros((kp.shape[1], max_m, *kp.shape[2:]), dtype=np.float32)
            x[:, : kp.shape[0]] = kp.transpose(1, 0, 2, 3)
            name = str(a["frame_dir"])
            meta = parse_ntu_name(name) if NAME_RE.match(name) else None
            yield StoreSample(
                name,
                x,
                int(a["label"]),
                *((meta.setup, meta.camera, meta.performer, meta.replication) if meta else (-1, -1, -1, -1)),
            )

    def make_splits(index: dict[str, Any]) -> dict[str, np.ndarray]:
        pos = {n: k for k, n in enumerate(index["names"])}
        return {str(s): np.asarray(sorted(pos[str(i)] for i in ids), dtype=np.int64) for s, ids in split.items()}

    assert vc is not None
    info = {
        "source": "pyskl_pkl",
        "input": str(path),
        "body_selection": "as_imported",
        "centring": centring,
        "num_classes": int(max(int(a["label"]) for a in anns)) + 1,
        "joint_layout": "ntu25" if vc == (25, 3) else f"V{vc[0]}xC{vc[1]}",
        "fps": 30,
        "split_rules": splits.describe() if splits else {},
    }
    return write_store(output, samples(), info=info, splits=with_requested(make_splits, splits), overwrite=overwrite)


FRAME_LABEL_KEYS = ("joints", "labels")


def _read_labelled_sequence(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One ``.npz`` of :func:`import_frame_labels` -> ``joints [T, M, V, C]`` float32, ``labels [T]`` int64."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in FRAME_LABEL_KEYS if k not in z.files]
            if missing:
                raise ValueError(f"{path}: lacks {missing}; expected arrays 'joints' [T, V, C] or [T, M, V, C] and "
                                 f"'labels' [T] (found {sorted(z.files)})")
            joints, labels = z["joints"], z["labels"]
    except (OSError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable .npz file ({e})") from None
    if joints.ndim == 3:
        joints = joints[:, None]
    if joints.ndim != 4 or joints.shape[0] < 1 or not np.issubdtype(joints.dtype, np.number):
        raise ValueError(f"{path}: joints has shape {joints.shape} ({joints.dtype}), expected numbers [T, V, C] "
                         "(one body) or [T, M, V, C], T >= 1")
    if not np.isfinite(joints).all():
        t = int(np.nonzero(~np.isfinite(joints).reshape(joints.shape[0], -1).all(axis=1))[0][0])
        raise ValueError(f"{path}: joints hold NaN/inf (first in frame {t})")
    if labels.shape != (joints.shape[0],):
        raise ValueError(f"{path}: labels has shape {labels.shape}, expected ({joints.shape[0]},): one label per "
                         "frame of joints")
    if not np.issubdtype(labels.dtype, np.integer):
        if not (np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels))):
            raise ValueError(f"{path}: labels must be integers (0 = background, 1..K = actions), got {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.int16).max):
        raise ValueError(f"{path}: labels must lie in [0, {np.iinfo(np.int16).max}] (0 = background), got range "
                         f"[{labels.min()}, {labels.max()}]")
    return joints.astype(np.float32), labels


def import_frame_labels(
    input_dir: str | Path,
    output: str | Path,
    *,
    class_names: str | Path | None = None,
    fps: float | None = None,
    overwrite: bool = False,
    splits: SplitRequest | None = None,
) -> Path:
    """Imports untrimmed sequences with per-frame labels (one's own recordings) into an untrimmed store.

    Layout of ``input_dir``: one folder per split, one ``.npz`` per sequence, named after the sequence::

        input_dir/train/walk_then_wave_01.npz   arrays: joints float [T, V, C] (one body) or [T, M, V, C],
        input_dir/test/...                              labels int [T]: 0 = background, 1..K = action classes

    ``.npz`` files directly in ``input_dir`` belong to no split. Sequence names must be unique over all folders.

    The class count comes from the data: K = the largest label (``meta.json``: ``num_classes`` = K + 1 with
    ``background_class`` 0). ``class_names``: an optional text file with the names of classes 1..K, one per
    line (K lines). ``fps`` is recorded in ``meta.json``.

    Raises:
        ValueError: a malformed file (naming it and what was expected), no ``.npz`` file, a class-name file
            whose line count is not K, or sequences of different ``[M, V, C]``.
    """
    root = Path(input_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"--input {root}: not a directory (expected one folder per split of .npz files)")
    files: dict[str, tuple[Path, str | None]] = {}
    for path in sorted(root.glob("*.npz")) + sorted(root.glob("*/*.npz")):
        split = None if path.parent == root else path.parent.name
        if path.stem in files:
            raise ValueError(f"duplicate sequence name {path.stem!r}: {files[path.stem][0]} and {path}")
        files[path.stem] = (path, split)
    if not files:
        raise ValueError(f"--input {root}: no .npz files (expected {root}/<split>/<sequence>.npz)")
    num_classes = 0
    for path, _ in files.values():  # first pass: validate every file and find K before writing anything
        num_classes = max(num_classes, int(_read_labelled_sequence(path)[1].max()))
    if num_classes == 0:
        raise ValueError(f"--input {root}: every frame of every sequence is labelled 0 (background); detection "
                         "needs action labels 1..K")
    names_list = None
    if class_names is not None:
        names_list = [ln.strip() for ln in Path(class_names).read_text(encoding="utf-8").splitlines() if ln.strip()]
        if len(names_list) != num_classes:
            raise ValueError(f"--class-names {class_names}: {len(names_list)} names, but the labels go up to "
                             f"{num_classes} (one name per class 1..{num_classes}, one per line)")

    def samples() -> Iterator[StoreSample]:
        for name, (path, _) in files.items():
            joints, labels = _read_labelled_sequence(path)
            yield StoreSample(name, joints, -1, frame_labels=labels)

    def make_splits(index: dict[str, Any]) -> dict[str, np.ndarray]:
        out: dict[str, list[int]] = {}
        for k, name in enumerate(index["names"]):
            split = files[name][1]
            if split is not None:
                out.setdefault(split, []).append(k)
        return {s: np.asarray(v, dtype=np.int64) for s, v in out.items()}

    first = _read_labelled_sequence(next(iter(files.values()))[0])[0]
    v, c = first.shape[2:]
    info = {
        "source": "frame_labels_npz",
        "input": str(root),
        "body_selection": "as_imported",
        "centring": "none",
        "num_classes": num_classes + 1,
        "background_class": 0,
        "class_names": ["background", *names_list] if names_list is not None else None,
        "joint_layout": "ntu25" if (v, c) == (25, 3) else f"V{v}xC{c}",
        "fps": fps,
        "split_rules": splits.describe() if splits else {},
    }
    return write_store(output, samples(), info=info, splits=with_requested(make_splits, splits), overwrite=overwrite)
