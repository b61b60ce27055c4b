"""Store inspection (hitrs_fast.data.inspection): describe_store / describe_lines numbers on a hand-built
store, and validate_store problems and notes."""

from __future__ import annotations

import json

import numpy as np

from hitrs_fast.data.inspection import describe_lines, describe_store, validate_store
from hitrs_fast.data.store import SkeletonStore, StoreSample, write_store


def _store(tmp_path, labels, lengths, splits, num_classes=3, bad=None):
    samples = []
    for i, (label, t) in enumerate(zip(labels, lengths, strict=True)):
        x = np.ones((t, 2, 25, 3), dtype=np.float32)
        x[:, 1] = 0 if i % 2 else 1  # odd samples: one body
        if bad == i:
            x[0, 0, 0, 0] = np.nan
        samples.append(StoreSample(f"s{i:02d}", x, label=label))
    return SkeletonStore(write_store(tmp_path / "store", samples, info={"num_classes": num_classes}, splits=splits))


def test_describe_counts(tmp_path):
    store = _store(tmp_path, [0, 0, 2, -1], [10, 20, 30, 400], {"train": [0, 1], "test": [2, 3]})
    d = describe_store(store)
    assert d["num_samples"] == 4 and d["num_frames"] == 460 and d["shape_tail_MVC"] == [2, 25, 3]
    assert d["lengths"]["min"] == 10 and d["lengths"]["max"] == 400 and d["lengths"]["median"] == 25.0
    assert d["lengths"]["over_300"] == 1
    assert d["classes"] == {"unit": "samples", "num_classes": 3, "present": 2, "labels_present": [0, 2],
                            "unlabelled_samples": 1, "min_per_class": 1, "max_per_class": 2}
    assert d["bodies"] == {"1": 2, "2": 2} and d["splits"] == {"test": 2, "train": 2}
    lines = describe_lines(d)
    assert lines[0] == f"store      {store.root}" and "splits     test: 2" in lines and "           train: 2" in lines
    assert "classes    2 present (labels 0, 2; num_classes 3), 1..2 samples per class, 1 unlabelled samples" in lines
    assert lines[1] == f"source     unknown (centring none), config {d['config_hash']}"  # no "dataset None"
    assert any(line.startswith("lengths    min 10 ") and "(>300: 1)" in line for line in lines)


def test_validate_reports_problems_and_notes(tmp_path):
    store = _store(tmp_path, [0, 5, 1, 1], [5, 5, 5, 400], {"train": [0, 1, 2], "test": [2, 3]}, bad=1)
    problems, notes = validate_store(store)
    assert any("1 samples hold NaN/inf, e.g. s01" in p for p in problems)
    assert any("labels outside [0, 3)" in p and "s01: 5" in p for p in problems)
    assert any("splits train and test share 1 samples, e.g. s02" in p for p in problems)
    assert any("longer than 300 frames (max 400)" in n for n in notes)


def test_describe_untrimmed_counts_frames_and_lists_what_each_split_holds(tmp_path):
    """An untrimmed store: classes from the per-frame labels (not 'unlabelled' samples); each split's performers,
    cameras, setups and repetitions, in describe and in meta.json."""
    samples = []
    for i, (perf, cam) in enumerate([(1, 1), (2, 1), (3, 2), (4, 2)]):
        labels = np.zeros(30, dtype=np.int64)
        labels[10:20] = 1 + i % 3  # actions 1, 2, 3, 1
        samples.append(StoreSample(f"s{i}", np.ones((30, 1, 25, 3), np.float32), performer=perf, camera=cam, setup=1,
                                   frame_labels=labels))
    root = write_store(tmp_path / "u", samples, info={"num_classes": 4, "background_class": 0},
                       splits={"train": [0, 1, 3], "test": [2]})
    d = describe_store(SkeletonStore(root))
    assert d["classes"]["unit"] == "frames" and d["classes"]["present"] == 3
    assert "unlabelled_samples" not in d["classes"]
    assert d["classes"]["min_per_class"] == 10 and d["classes"]["max_per_class"] == 20
    assert d["split_contents"] == {"train": {"setup": [1], "camera": [1, 2], "performer": [1, 2, 4]},
                                   "test": {"setup": [1], "camera": [2], "performer": [3]}}
    lines = describe_lines(d)
    assert any(line.startswith("classes    3 action classes present in the per-frame labels (labels 1-3;")
               and "background 66.7% of the frames" in line for line in lines), lines
    assert "splits     test: 1  setup 1; camera 2; performer 3" in lines
    assert "           train: 3  setup 1; camera 1-2; performer 1-2, 4" in lines
    meta = json.loads((root / "meta.json").read_text())
    assert meta["split_contents"] == d["split_contents"]
