"""Splits of one's choosing (hitrs_fast.data.splits) at conversion and import time: rules by performer /
camera / setup / repetition lists, split files, their errors, and what meta.json and describe say."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hitrs_fast.data.__main__ import main
from hitrs_fast.data.splits import SplitRequest, compact_ranges, parse_split_rule, read_split_file
from hitrs_fast.data.store import SkeletonStore
from tests.support.data_fixtures import write_ntu_skeleton


def test_parse_rules_and_ranges():
    assert parse_split_rule("train:performer=1-3,5") == ("train", {"performer": [1, 2, 3, 5]})
    assert parse_split_rule("t2:subject=4:view=2:repetition=1") == (
        "t2", {"performer": [4], "camera": [2], "replication": [1]})
    assert compact_ranges([5, 1, 2, 3, 8, 9]) == "1-3, 5, 8-9"
    for bad, match in [("train", "expected NAME:FIELD=LIST"), ("train:actor=1", "FIELD one of performer"),
                       ("train:performer=x", "'x' is not a number"), ("train:performer=3-1", "runs backwards"),
                       ("train:camera=1:camera=2", "camera given twice"), ("a b:camera=1", "expected NAME")]:
        with pytest.raises(ValueError, match=match):
            parse_split_rule(bad)


def test_split_files(tmp_path):
    text = tmp_path / "splits.txt"
    text.write_text("# my split\ntrain: a b\ntrain: c  # more\ntest: d\n")
    assert read_split_file(text) == {"train": ["a", "b", "c"], "test": ["d"]}
    js = tmp_path / "splits.json"
    js.write_text(json.dumps({"train": ["a"], "test": ["b", "c"]}))
    assert read_split_file(js) == {"train": ["a"], "test": ["b", "c"]}
    (tmp_path / "bad.txt").write_text("train a b\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: expected 'SPLIT: NAME NAME \.\.\.'"):
        read_split_file(tmp_path / "bad.txt")
    (tmp_path / "dup.txt").write_text("train: a a\n")
    with pytest.raises(ValueError, match="names 'a' twice"):
        read_split_file(tmp_path / "dup.txt")
    with pytest.raises(ValueError, match="defined twice"):
        SplitRequest(["train:performer=1"], js)


def test_indices_errors_name_what_is_present():
    index = {"names": ["s0", "s1", "s2"], "performer": np.array([1, 2, 4]), "camera": np.array([-1, -1, -1]),
             "setup": np.array([1, 1, 1]), "replication": np.array([1, 1, 1])}
    req = SplitRequest(["train:performer=1-2", "test:performer=4"])
    got = req.indices(index)
    assert got["train"].tolist() == [0, 1] and got["test"].tolist() == [2]
    with pytest.raises(ValueError, match=r"--split test: selects no sample \(present: performer 1-2, 4\)"):
        SplitRequest(["test:performer=3"]).indices(index)
    with pytest.raises(ValueError, match="no sample carries a camera id"):
        SplitRequest(["test:camera=1"]).indices(index)
    with pytest.raises(ValueError, match="split 'train' already exists"):
        req.indices(index, existing=["train"])


def _recordings(raw: Path) -> None:
    raw.mkdir()
    rng = np.random.default_rng(0)
    for p in (1, 2, 3, 4):
        for c in (1, 2):
            write_ntu_skeleton(raw / f"S001C{c:03d}P{p:03d}R001A001.skeleton", [1] * 5, rng)
    write_ntu_skeleton(raw / "S001C001P005R001A002.skeleton", [0] * 5, rng)  # no body in any frame


def test_convert_with_performer_split_and_an_empty_file(tmp_path, capsys):
    """``--split`` by performer list beside the NTU benchmarks; meta.json and describe list what each split
    holds; a file with no body in any frame is excluded and listed (not an all-zero sample)."""
    _recordings(tmp_path / "raw")
    out = tmp_path / "store"
    assert main(["convert", "ntu", "--input", str(tmp_path / "raw"), "--output", str(out), "--missing-list", "none",
                 "--split", "mine_train:performer=1-3", "--split", "mine_test:performer=4"]) == 0
    text = capsys.readouterr().out
    assert "mine_train: 6  setup 1; camera 1-2; performer 1-3; replication 1  (made by performer=1-3)" in text
    assert "excluded 1 file with no body in any frame (they would be all-zero samples):" in text
    assert "S001C001P005R001A002.skeleton" in text
    store = SkeletonStore(out)
    assert len(store) == 8 and "S001C001P005R001A002" not in store.names
    assert store.info["excluded_files"]["with no body in any frame (they would be all-zero samples)"][0].endswith(
        "S001C001P005R001A002.skeleton")
    assert store.performer[store.split_indices("mine_test")].tolist() == [4, 4]
    assert set(store.performer[store.split_indices("mine_train")].tolist()) == {1, 2, 3}
    assert "ntu60_xsub_train" in store.split_names  # the benchmarks stay
    meta = json.loads((out / "meta.json").read_text())
    assert meta["split_rules"] == {"mine_train": "performer=1-3", "mine_test": "performer=4"}
    assert meta["split_contents"]["mine_test"] == {"setup": [1], "camera": [1, 2], "performer": [4],
                                                   "replication": [1]}
    assert meta["num_classes"] == 1  # from the data: one action
    assert main(["describe", str(out)]) == 0
    assert "mine_test: 2  setup 1; camera 1-2; performer 4; replication 1  (made by performer=4)\n" in \
        capsys.readouterr().out


def test_bad_split_stops_before_writing(tmp_path, capsys):
    _recordings(tmp_path / "raw")
    out = tmp_path / "store"
    assert main(["convert", "ntu", "--input", str(tmp_path / "raw"), "--output", str(out),
                 "--split", "test:performer=9"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "python -m hitrs_fast.data: error: --split test: selects no sample (present: performer 1-4)", err
    assert not out.exists()
    assert main(["convert", "ntu", "--input", str(tmp_path / "raw"), "--output", str(out),
                 "--split", "test:performers=9"]) == 2
    assert "is not FIELD=LIST" in capsys.readouterr().err and not out.exists()


def test_import_frame_labels_with_a_split_file(tmp_path, capsys):
    seq = tmp_path / "takes"
    seq.mkdir()
    for i in range(3):
        np.savez(seq / f"take{i}.npz", joints=np.ones((12, 25, 3), np.float32) * (i + 1),
                 labels=np.r_[np.zeros(6, np.int64), np.ones(6, np.int64)])
    (tmp_path / "split.txt").write_text("train: take0 take1\ntest: take2\n")
    out = tmp_path / "store"
    assert main(["import", "frame-labels", "--input", str(seq), "--output", str(out), "--split-file",
                 str(tmp_path / "split.txt")]) == 0
    store = SkeletonStore(out)
    assert store.split_names == ["test", "train"] and store.split_indices("test").tolist() == [2]
    (tmp_path / "bad.txt").write_text("test: take9\n")
    assert main(["import", "frame-labels", "--input", str(seq), "--output", str(tmp_path / "o2"), "--split-file",
                 str(tmp_path / "bad.txt")]) == 2
    assert "names 1 samples that are not in the store, e.g. 'take9'" in capsys.readouterr().err
