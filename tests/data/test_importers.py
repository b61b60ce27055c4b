"""Importers (CTR-GCN npz, st-gcn npy+pkl, PYSKL pkl) and the restricted unpickler."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from hitrs_fast.data import importers
from hitrs_fast.data.importers import import_ctrgcn_npz, import_pyskl, import_stgcn, valid_length
from hitrs_fast.data.safe_pickle import UnsafePickleError, safe_load, safe_loads
from hitrs_fast.data.store import SkeletonStore
from tests.support.data_fixtures import write_ctrgcn_npz, write_pyskl, write_stgcn


@pytest.mark.parametrize("compressed", [False, True])
def test_ctrgcn_npz(tmp_path: Path, compressed: bool, monkeypatch) -> None:
    fx = write_ctrgcn_npz(tmp_path / "a.npz")
    if compressed:
        with np.load(tmp_path / "a.npz") as z:
            np.savez_compressed(tmp_path / "a.npz", **{k: z[k] for k in z.files})
    monkeypatch.setattr(importers, "_ROW_CHUNK", 3)  # several chunks per part
    s = SkeletonStore(import_ctrgcn_npz(tmp_path / "a.npz", tmp_path / "s"))
    assert s.names == [f"test_{i:06d}" for i in range(2)] + [f"train_{i:06d}" for i in range(4)]
    for part, start in (("test", 0), ("train", 2)):
        lengths, labels, x = fx[f"lengths_{part}"], fx[f"labels_{part}"], fx[f"x_{part}"]
        for i in range(len(lengths)):
            k = start + i
            assert s.lengths[k] == lengths[i] and s.labels[k] == labels[i]
            np.testing.assert_array_equal(s.sequence(k), x[i, : lengths[i]].reshape(-1, 2, 25, 3))
        assert s.split_indices(part).tolist() == list(range(start, start + len(lengths)))
    assert s.num_bodies[1] == 1 and s.num_bodies[3] == 1  # the single-actor rows
    assert s.info["source"] == "ctrgcn_npz" and s.info["num_classes"] == 60
    assert s.info["centring"] == "sequence_translation"


def test_ctrgcn_npz_errors(tmp_path: Path) -> None:
    fx = write_ctrgcn_npz(tmp_path / "a.npz")
    x = fx["x_train"].copy()
    x[2] = 0.0
    y = np.eye(60)[fx["labels_train"]]
    np.savez(tmp_path / "empty.npz", x_train=x, y_train=y)
    with pytest.raises(ValueError, match="x_train row 2 is all zero"):
        import_ctrgcn_npz(tmp_path / "empty.npz", tmp_path / "s")
    assert not (tmp_path / "s").exists()
    s = SkeletonStore(import_ctrgcn_npz(tmp_path / "empty.npz", tmp_path / "s", skip_empty=True))
    assert len(s) == 3 and s.info["skipped_empty"] == ["train_000002"]
    y2 = y.copy()
    y2[1, :2] = 0.5
    np.savez(tmp_path / "soft.npz", x_train=x, y_train=y2)
    with pytest.raises(ValueError, match="y_train row 1 is not one-hot"):
        import_ctrgcn_npz(tmp_path / "soft.npz", tmp_path / "s2")
    np.savez(tmp_path / "shape.npz", x_train=x[:, :, :75], y_train=y)
    with pytest.raises(ValueError, match=r"expected \(N, T, 150\)"):
        import_ctrgcn_npz(tmp_path / "shape.npz", tmp_path / "s2")
    np.savez(tmp_path / "nolabel.npz", x_train=x)
    with pytest.raises(ValueError, match="y_train missing"):
        import_ctrgcn_npz(tmp_path / "nolabel.npz", tmp_path / "s2")
    assert valid_length(np.zeros((5, 3))) == 0 and valid_length(np.array([[0], [1], [0]])) == 2


def test_stgcn(tmp_path: Path) -> None:
    fx = write_stgcn(tmp_path / "st", "train")
    fv = write_stgcn(tmp_path / "st2", "val", seed=1)
    # The val part reuses names: rename them so the parts are disjoint.
    names_v = ["S003C001P007R001A002.skeleton", "S003C002P008R001A003.skeleton", "S003C003P009R001A004.skeleton"]
    with open(tmp_path / "st2" / "val_label.pkl", "wb") as f:
        pickle.dump((names_v, fv["labels"]), f)
    s = SkeletonStore(
        import_stgcn(
            [
                (tmp_path / "st" / "train_data.npy", tmp_path / "st" / "train_label.pkl"),
                (tmp_path / "st2" / "val_data.npy", tmp_path / "st2" / "val_label.pkl"),
            ],
            tmp_path / "s",
        )
    )
    stems = [n[: -len(".skeleton")] for n in fx["names"]]
    assert s.names == sorted(stems + [n[: -len(".skeleton")] for n in names_v])
    for i in range(3):
        k = s.names.index(stems[i])
        assert s.lengths[k] == fx["lengths"][i] and s.labels[k] == fx["labels"][i] and s.source_index[k] == i
        want = fx["data"][i].transpose(1, 3, 2, 0)[: fx["lengths"][i]]
        np.testing.assert_array_equal(s.sequence(k), want)
    k50 = s.names.index("S001C002P001R002A050")
    assert s.num_bodies[k50] == 2 and s.camera[k50] == 2 and s.performer[k50] == 1 and s.replication[k50] == 2
    assert sorted(s.split_names) == ["train", "val"]
    assert [s.names[i] for i in s.split_indices("train")] == sorted(stems)
    # 2s-AGCN num_frame files override the zero-tail rule.
    np.save(tmp_path / "nf.npy", np.array([10, 5, 7]))
    s2 = SkeletonStore(
        import_stgcn(
            [(tmp_path / "st" / "train_data.npy", tmp_path / "st" / "train_label.pkl")],
            tmp_path / "s2",
            num_frames=[tmp_path / "nf.npy"],
        )
    )
    assert [s2.lengths[s2.names.index(n)] for n in stems] == [10, 5, 7]


def test_stgcn_errors(tmp_path: Path) -> None:
    write_stgcn(tmp_path / "st")
    with open(tmp_path / "st" / "bad_label.pkl", "wb") as f:
        pickle.dump((["a"], [1]), f)
    with pytest.raises(ValueError, match="1 names / 1 labels for 3 samples"):
        import_stgcn([(tmp_path / "st" / "train_data.npy", tmp_path / "st" / "bad_label.pkl")], tmp_path / "s")
    np.save(tmp_path / "st" / "x_data.npy", np.zeros((3, 3, 10, 20, 2), np.float32))
    with pytest.raises(ValueError, match=r"expected \(N, C=3, T, V=25, M\)"):
        import_stgcn([(tmp_path / "st" / "x_data.npy", tmp_path / "st" / "train_label.pkl")], tmp_path / "s")


def test_pyskl(tmp_path: Path) -> None:
    payload = write_pyskl(tmp_path / "p.pkl")
    s = SkeletonStore(import_pyskl(tmp_path / "p.pkl", tmp_path / "s"))
    anns = payload["annotations"]
    assert s.names == [a["frame_dir"] for a in anns] and s.lengths.tolist() == [7, 5]
    np.testing.assert_array_equal(s.sequence(0), anns[0]["keypoint"].transpose(1, 0, 2, 3))
    np.testing.assert_array_equal(s.sequence(1)[:, 0], anns[1]["keypoint"][0])
    assert not s.sequence(1)[:, 1].any() and s.num_bodies.tolist() == [2, 1]
    assert s.labels.tolist() == [0, 12] and s.performer.tolist() == [1, 3]
    assert s.split_indices("xsub_train").tolist() == [0] and s.split_indices("xsub_val").tolist() == [1]
    payload["split"]["xsub_val"].append("S999C001P001R001A001")
    with open(tmp_path / "bad.pkl", "wb") as f:
        pickle.dump(payload, f)
    with pytest.raises(ValueError, match="unknown frame_dir"):
        import_pyskl(tmp_path / "bad.pkl", tmp_path / "s2")


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_safe_pickle_rejects_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps((["S001C001P001R001A001"], [_Evil(marker)])))
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl: refusing to load global (posix|os)\.system"):
        safe_load(p)
    assert not marker.exists()
    # The importer goes through the same loader.
    write_stgcn(tmp_path / "st")
    with pytest.raises(UnsafePickleError):
        import_stgcn([(tmp_path / "st" / "train_data.npy", p)], tmp_path / "s")
    assert not marker.exists()
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        safe_loads(b"cbuiltins\neval\n(S'1'\ntR.")
    with pytest.raises(ValueError, match="not a readable pickle"):
        safe_loads(b"\x80\x04garbage")


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_safe_pickle_accepts_plain_data_and_numpy(protocol: int) -> None:
    obj = {
        "names": ["a", "b"],
        "labels": (1, 2),
        "x": np.arange(6, dtype=np.float32).reshape(2, 3),
        "i": np.int64(7),
        "misc": [None, True, 1.5, b"raw"],
    }
    got = safe_loads(pickle.dumps(obj, protocol=protocol))
    assert got["names"] == obj["names"] and got["labels"] == obj["labels"] and got["misc"] == obj["misc"]
    np.testing.assert_array_equal(got["x"], obj["x"])
    assert got["i"] == 7 and got["x"].dtype == np.float32


def _labelled(path: Path, labels, bodies: int | None = None, v: int = 25) -> np.ndarray:
    """Writes ``path`` (.npz with ``joints`` and ``labels``) and returns the joints as stored ``[T, M, V, 3]``."""
    rng = np.random.default_rng(len(labels))
    shape = (len(labels), v, 3) if bodies is None else (len(labels), bodies, v, 3)
    joints = rng.normal(size=shape).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, joints=joints, labels=np.asarray(labels))
    return joints if bodies is not None else joints[:, None]


def test_frame_labels_import(tmp_path: Path) -> None:
    src = tmp_path / "mine"
    a = _labelled(src / "train" / "a.npz", [0, 0, 2, 2, 2, 0])
    b = _labelled(src / "train" / "b.npz", [1, 1, 0, 3])
    c = _labelled(src / "test" / "c.npz", [0, 3, 3])
    _labelled(src / "extra.npz", [0, 1])  # directly in the input folder: in no split
    (tmp_path / "names.txt").write_text("wave\nsit down\n\njump\n")
    s = SkeletonStore(importers.import_frame_labels(src, tmp_path / "s", class_names=tmp_path / "names.txt", fps=25))
    assert s.names == ["a", "b", "c", "extra"] and s.shape_tail == (1, 25, 3)
    assert {k: s.split_indices(k).tolist() for k in s.split_names} == {"test": [2], "train": [0, 1]}
    np.testing.assert_array_equal(s.sequence(0), a)
    np.testing.assert_array_equal(s.sequence(2), c)
    np.testing.assert_array_equal(s.frame_labels(1), [1, 1, 0, 3])
    assert s.labels.tolist() == [-1] * 4 and len(b) == 4
    assert s.info["num_classes"] == 4 and s.info["background_class"] == 0 and s.info["fps"] == 25
    assert s.info["class_names"] == ["background", "wave", "sit down", "jump"]
    from hitrs_fast.training.detect import num_action_classes

    assert num_action_classes(s) == 3  # K from the data, not a fixed PKU-MMD head


@pytest.mark.parametrize("case,match", [
    ("missing_key", r"lacks \['labels'\]"),
    ("length", r"labels has shape \(3,\), expected \(4,\)"),
    ("negative", r"labels must lie in \[0, 32767\]"),
    ("float_labels", "labels must be integers"),
    ("joints_rank", r"joints has shape \(4, 3\)"),
    ("background_only", "every frame of every sequence is labelled 0"),
    ("duplicate", "duplicate sequence name 'a'"),
    ("class_names", "--class-names .*: 1 names, but the labels go up to 2"),
])
def test_frame_labels_import_errors(tmp_path: Path, case: str, match: str) -> None:
    src = tmp_path / "in"
    names = None
    if case == "missing_key":
        (src / "train").mkdir(parents=True)
        np.savez(src / "train" / "a.npz", joints=np.zeros((4, 25, 3)))
    elif case == "length":
        (src / "train").mkdir(parents=True)
        np.savez(src / "train" / "a.npz", joints=np.zeros((4, 25, 3)), labels=np.array([0, 1, 1]))
    elif case == "negative":
        _labelled(src / "train" / "a.npz", [0, -1, 1])
    elif case == "float_labels":
        _labelled(src / "train" / "a.npz", [0.0, 0.5, 1.0])
    elif case == "joints_rank":
        (src / "train").mkdir(parents=True)
        np.savez(src / "train" / "a.npz", joints=np.zeros((4, 3)), labels=np.zeros(4, int))
    elif case == "background_only":
        _labelled(src / "train" / "a.npz", [0, 0, 0])
    elif case == "duplicate":
        _labelled(src / "train" / "a.npz", [0, 1])
        _labelled(src / "test" / "a.npz", [0, 1])
    else:
        _labelled(src / "train" / "a.npz", [0, 1, 2])
        names = tmp_path / "names.txt"
        names.write_text("only one\n")
    with pytest.raises(ValueError, match=match):
        importers.import_frame_labels(src, tmp_path / "out", class_names=names)
    assert not (tmp_path / "out").exists()
