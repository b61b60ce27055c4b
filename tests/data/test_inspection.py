"""Store inspection (hitrs_fast.data.inspection): describe_store / describe_lines numbers on a hand-built
store, and validate_store problems and notes."""

from __future__ import annotations

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
    assert d["classes"] == {"num_classes": 3, "present": 2, "unlabelled_samples": 1, "min_per_class": 1,
                            "max_per_class": 2}
    assert d["bodies"] == {"1": 2, "2": 2} and d["splits"] == {"test": 2, "train": 2}
    lines = describe_lines(d)
    assert lines[0] == f"store      {store.root}" and "splits     test: 2, train: 2" in lines
    assert any(line.startswith("lengths    min 10 ") and "(>300: 1)" in line for line in lines)


def test_validate_reports_problems_and_notes(tmp_path):
    store = _store(tmp_path, [0, 5, 1, 1], [5, 5, 5, 400], {"train": [0, 1, 2], "test": [2, 3]}, bad=1)
    problems, notes = validate_store(store)
    assert any("1 samples hold NaN/inf, e.g. s01" in p for p in problems)
    assert any("labels outside [0, 3)" in p and "s01: 5" in p for p in problems)
    assert any("splits train and test share 1 samples, e.g. s02" in p for p in problems)
    assert any("longer than 300 frames (max 400)" in n for n in notes)
