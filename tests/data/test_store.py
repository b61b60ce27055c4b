"""The canonical store: round trip, sorting, splits, frame labels, atomic writes and load-time validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hitrs_fast.data.store import SkeletonStore, StoreFormatError, StoreSample, write_store


def _sample(name: str, t: int, rng: np.random.Generator, label: int = 0, m: int = 2, **kw) -> StoreSample:
    return StoreSample(name, rng.normal(size=(t, m, 25, 3)).astype(np.float32), label, **kw)


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_round_trip_sorted_input(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    samples = [_sample(f"s{i}", t, rng, label=i % 3, setup=i + 1, camera=2) for i, t in enumerate([5, 1, 7])]
    samples[1].data[:, 1] = 0.0  # one body slot never occupied
    root = write_store(tmp_path / "st", samples, info={"source": "test", "num_classes": 3})
    s = SkeletonStore(root)
    assert len(s) == 3 and s.names == ["s0", "s1", "s2"]
    assert s.lengths.tolist() == [5, 1, 7] and s.offsets.tolist() == [0, 5, 6]
    assert s.num_bodies.tolist() == [2, 1, 2] and s.num_bodies.dtype == np.int8
    assert s.labels.tolist() == [0, 1, 2] and s.setup.tolist() == [1, 2, 3] and s.performer.tolist() == [-1] * 3
    for i, smp in enumerate(samples):
        np.testing.assert_array_equal(s.sequence(i), smp.data)
        got = s[i]
        assert got.name == smp.name and got.label == smp.label and got.frame_labels is None
        assert not got.data.flags.writeable
    np.testing.assert_array_equal(s[-1].data, samples[2].data)
    with pytest.raises(IndexError):
        s.sequence(3)
    # data.npy is a plain .npy (fixed-size streamed header) that numpy reads without the memmap too.
    full = np.load(root / "data.npy")
    assert full.shape == (13, 2, 25, 3) and full.dtype == np.float32
    meta = json.loads((root / "meta.json").read_text())
    assert meta["format_version"] == 1 and meta["centring"] == "none" and meta["joint_layout"] == "ntu25"
    assert meta["num_samples"] == 3 and meta["num_frames"] == 13 and len(meta["config_hash"]) == 16
    assert (root / "names.txt").read_text() == "s0\ns1\ns2\n"
    assert not (root / "frame_labels.npy").exists() and not (root / "splits.npz").exists()
    assert _leftovers(tmp_path) == []


def test_unsorted_input_is_permuted_and_splits_remapped(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    samples = [_sample(n, t, rng, label=k) for k, (n, t) in enumerate([("c", 3), ("a", 4), ("b", 2), ("d", 1)])]
    # Split indices refer to input order: {c, b} and {a, d}.
    root = write_store(
        tmp_path / "st", iter(samples), info={"source": "t"}, splits={"x": np.array([0, 2]), "y": np.array([3, 1])}
    )
    s = SkeletonStore(root)
    assert s.names == ["a", "b", "c", "d"]
    assert s.source_index.tolist() == [1, 2, 0, 3]
    assert s.labels.tolist() == [1, 2, 0, 3]
    for i, k in enumerate(s.source_index):
        np.testing.assert_array_equal(s.sequence(i), samples[k].data)
    assert [s.names[i] for i in s.split_indices("x")] == ["b", "c"]
    assert [s.names[i] for i in s.split_indices("y")] == ["a", "d"]
    with pytest.raises(KeyError, match="available: x, y"):
        s.split_indices("train")
    assert not (root / "data.npy.sorted").exists()


def test_callable_splits_see_store_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    samples = [_sample(n, 2, rng, label=lab) for n, lab in [("b", 1), ("a", 0), ("c", 1)]]

    def splits(index: dict) -> dict:
        assert index["names"] == ["a", "b", "c"]
        return {"ones": np.nonzero(index["labels"] == 1)[0]}

    s = SkeletonStore(write_store(tmp_path / "st", samples, info={}, splits=splits))
    assert s.split_indices("ones").tolist() == [1, 2]


def test_frame_labels_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    samples = []
    for n, t in [("v2", 6), ("v1", 4)]:
        smp = _sample(n, t, rng)
        smp.frame_labels = rng.integers(0, 52, size=t)
        samples.append(smp)
    s = SkeletonStore(write_store(tmp_path / "st", samples, info={"source": "t"}))
    assert s.info["untrimmed"] is True
    np.testing.assert_array_equal(s.frame_labels(0), samples[1].frame_labels)
    np.testing.assert_array_equal(s.frame_labels(1), samples[0].frame_labels)
    assert s[0].frame_labels is not None and s.frame_labels(0).dtype == np.int16


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda ss: ss.append(ss[0]), "duplicate name 'a'"),
        (lambda ss: ss.append(StoreSample("z", np.zeros((3, 1, 25, 3), np.float32))), "trailing shape"),
        (lambda ss: ss.append(StoreSample("z", np.zeros((3, 25, 3), np.float32))), r"must be \[T, M, V, C\]"),
        (lambda ss: ss.append(StoreSample("z", np.zeros((0, 2, 25, 3), np.float32))), "empty sequence"),
        (lambda ss: ss.append(StoreSample("z\nq", np.zeros((1, 2, 25, 3), np.float32))), "line break"),
        (
            lambda ss: ss.append(StoreSample("z", np.zeros((2, 2, 25, 3), np.float32), frame_labels=np.zeros(2))),
            "a store is all trimmed or all untrimmed",
        ),
        (
            lambda ss: ss.__setitem__(0, StoreSample("a", ss[0].data, frame_labels=np.zeros(99))),
            "frame_labels shape",
        ),
    ],
)
def test_bad_samples_raise_and_leave_nothing(tmp_path: Path, mutate, match: str) -> None:
    rng = np.random.default_rng(4)
    ss = [_sample("a", 3, rng), _sample("b", 2, rng)]
    mutate(ss)
    with pytest.raises(ValueError, match=match):
        write_store(tmp_path / "st", ss, info={})
    assert not (tmp_path / "st").exists() and _leftovers(tmp_path) == []


def test_bad_splits(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    ss = [_sample("a", 3, rng), _sample("b", 2, rng)]
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 2\)"):
        write_store(tmp_path / "st", ss, info={}, splits={"s": np.array([0, 2])})
    with pytest.raises(ValueError, match="duplicate indices"):
        write_store(tmp_path / "st", ss, info={}, splits={"s": np.array([1, 1])})
    with pytest.raises(ValueError, match="no samples"):
        write_store(tmp_path / "st", [], info={})
    assert not (tmp_path / "st").exists() and _leftovers(tmp_path) == []


def test_interrupted_write_leaves_nothing(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)

    def gen():
        yield _sample("a", 3, rng)
        yield _sample("b", 3, rng)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_store(tmp_path / "st", gen(), info={})
    assert list(tmp_path.iterdir()) == []


def test_overwrite_rules(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    root = write_store(tmp_path / "st", [_sample("a", 3, rng)], info={"source": "first"})
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_store(root, [_sample("b", 3, rng)], info={})
    assert SkeletonStore(root).info["source"] == "first"
    write_store(root, [_sample("b", 2, rng)], info={"source": "second"}, overwrite=True)
    s = SkeletonStore(root)
    assert s.info["source"] == "second" and s.names == ["b"]
    other = tmp_path / "not_a_store"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a skeleton store"):
        write_store(other, [_sample("a", 1, rng)], info={}, overwrite=True)
    assert (other / "precious.txt").read_text() == "keep me"
    assert _leftovers(tmp_path) == []


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    root = write_store(tmp_path / "st", [_sample("a", 3, rng), _sample("b", 2, rng)], info={})
    (root / "names.txt").write_text("a\n")
    with pytest.raises(StoreFormatError, match=r"names\.txt: 1 names, expected 2"):
        SkeletonStore(root)
    (root / "names.txt").write_text("a\nb\n")
    idx = dict(np.load(root / "index.npz"))
    idx["offsets"] = np.array([0, 2])
    np.savez(root / "index.npz", **idx)
    with pytest.raises(StoreFormatError, match=r"index\.npz: offsets\[1\] = 2, expected 3"):
        SkeletonStore(root)
    idx["offsets"] = np.array([0, 3])
    idx["lengths"] = np.array([3, 3])
    np.savez(root / "index.npz", **idx)
    with pytest.raises(StoreFormatError, match=r"data\.npy: 5 frames, but .*index\.npz lengths sum to 6"):
        SkeletonStore(root)
    (root / "meta.json").unlink()
    with pytest.raises(StoreFormatError, match=r"meta\.json: missing"):
        SkeletonStore(root)
    with pytest.raises(FileNotFoundError):
        SkeletonStore(tmp_path / "nope")
