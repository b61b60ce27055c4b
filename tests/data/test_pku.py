"""PKU-MMD skeleton / label / split readers, frame-label conventions and the converter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hitrs_fast.data.pku import (
    PkuFormatError,
    convert_pku,
    frame_labels_from_instances,
    read_pku_labels,
    read_pku_skeleton,
    read_pku_split,
)
from hitrs_fast.data.store import SkeletonStore
from tests.support.data_fixtures import write_pku_fixture


@pytest.fixture
def fx(tmp_path: Path):
    return write_pku_fixture(tmp_path / "pku")


def test_readers(fx) -> None:
    seq = read_pku_skeleton(fx.skeletons / "0002-L.txt")
    assert seq.shape == (20, 2, 25, 3) and seq.dtype == np.float32
    np.testing.assert_array_equal(seq, fx.sequences["0002-L"])
    assert not seq[0, 1].any() and seq[1, 1].any()  # second person absent in some frames
    assert (fx.skeletons / "0002-L.txt").read_text().splitlines()[1].startswith(" ")
    lab = read_pku_labels(fx.labels / "0002-L.txt")
    assert lab.tolist() == [list(r) for r in fx.instances["0002-L"]]
    assert read_pku_labels(fx.labels / "0291-M.label").tolist() == [[9, 2, 10, 1]]
    split = read_pku_split(fx.split)
    assert split == {"train": ["0002-L", "0003-L"], "test": ["0291-M", "0292-M"]}


def test_frame_label_conventions() -> None:
    inst = np.array([[3, 1, 3, 1], [7, 5, 6, 2]])
    one, clipped = frame_labels_from_instances(inst, 8, "one_inclusive")
    assert one.tolist() == [3, 3, 3, 0, 7, 7, 0, 0] and clipped == 0
    zero, _ = frame_labels_from_instances(inst, 8, "zero_exclusive")
    assert zero.tolist() == [0, 3, 3, 0, 0, 7, 0, 0]
    # An instance ending at the last frame (one_inclusive end == T) is not clipped; past it, it is.
    _, clipped = frame_labels_from_instances(np.array([[1, 5, 8, 1]]), 8)
    assert clipped == 0
    fl, clipped = frame_labels_from_instances(np.array([[1, 5, 10, 1]]), 8)
    assert clipped == 1 and fl.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    with pytest.raises(PkuFormatError, match=r"start after the skeleton's last frame \(8\)"):
        frame_labels_from_instances(np.array([[1, 1, 2, 1], [1, 9, 10, 1]]), 8, source="x.txt")
    with pytest.raises(PkuFormatError, match="expected >= 1"):
        frame_labels_from_instances(np.array([[1, 0, 2, 1]]), 8, "one_inclusive")
    with pytest.raises(ValueError, match="frame_base 'one_exclusive'"):
        frame_labels_from_instances(inst, 8, "one_exclusive")


def _row(n: int = 150, bad: str | None = None) -> str:
    vals = ["0.5"] * n
    if bad is not None:
        vals[7] = bad
    return " ".join(vals)


@pytest.mark.parametrize(
    "lines, line, match",
    [
        ([_row(), _row(149)], 2, "expected 150 values .* found 149"),
        ([_row(), _row(), _row(bad="x1")], 3, "non-numeric value 'x1'"),
        ([_row(bad="nan")], 1, "non-finite"),
        ([_row(), "", _row()], 2, "found 0"),
        ([""], 1, "empty file"),
    ],
)
def test_bad_skeleton_files(tmp_path: Path, lines: list[str], line: int, match: str) -> None:
    p = tmp_path / "0002-L.txt"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(PkuFormatError, match=match) as ei:
        read_pku_skeleton(p)
    assert str(ei.value).startswith(f"{p}:{line}: ")


@pytest.mark.parametrize(
    "text, line, match",
    [
        ("1,2,3,1\n4,5,6\n", 2, "expected 'label,start,end,confidence'"),
        ("1,2,x,1\n", 1, "expected 4 integers"),
        ("52,2,3,1\n", 1, r"label 52: expected 1\.\.51"),
        ("5,9,3,1\n", 1, "expected 0 <= start <= end"),
        ("5,2,3,1\n5,2,3,3\n", 2, "confidence 3"),
        # Past int64: a format error naming the line, not numpy's OverflowError.
        ("5,2,3,1\n5,2,99999999999999999999,1\n", 2, "expected 0 <= start <= end <= 9223372036854775807"),
        ("5,99999999999999999999,99999999999999999999,2\n", 1, "expected 0 <= start <= end <= 9223372036854775807"),
    ],
)
def test_bad_label_files(tmp_path: Path, text: str, line: int, match: str) -> None:
    p = tmp_path / "0002-L.txt"
    p.write_text(text)
    with pytest.raises(PkuFormatError, match=match) as ei:
        read_pku_labels(p)
    assert str(ei.value).startswith(f"{p}:{line}: ")


def test_label_frames_up_to_the_int64_limit_are_read(tmp_path: Path) -> None:
    p = tmp_path / "a.txt"
    p.write_text("5,2,9223372036854775807,2\n")
    assert read_pku_labels(p).tolist() == [[5, 2, 2**63 - 1, 2]]


def test_label_trailing_comma_and_blank_lines(tmp_path: Path) -> None:
    p = tmp_path / "a.txt"
    p.write_text("3,1,4,1,\n\n5,6,9,2\n")
    assert read_pku_labels(p).tolist() == [[3, 1, 4, 1], [5, 6, 9, 2]]


@pytest.mark.parametrize(
    "text, match",
    [
        ("Training videos: \n0002-L, \n", "expected 4 lines"),
        ("Train: \n0002-L, \nValidataion videos: \n0291-M,\n", "expected 'Training videos:'"),
        ("Training videos: \n0002-L, \nTest videos: \n0291-M,\n", "expected 'Validataion videos:'"),
        ("Training videos: \n0002-L, \nValidation videos: \n0002-L,\n", "1 ids in both splits"),
        ("Training videos: \n , \nValidation videos: \n0002-L,\n", "found none"),
    ],
)
def test_bad_split_files(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "split.txt"
    p.write_text(text)
    with pytest.raises(PkuFormatError, match=match):
        read_pku_split(p)


@pytest.mark.parametrize(
    "text, line, match",
    [
        # The second header missing: reported on line 3 with what is there, not as a line count.
        ("Training videos: \n0002-L, \n0291-M,\n", 3, "expected 'Validataion videos:', found '0291-M,'"),
        ("Training videos: \n0002-L, \n", 3, "expected 4 lines .* found 2"),
        ("Training videos: \n0002-L, \nValidation videos: \n", 4, "expected 4 lines .* found 3"),
        ("Training videos: \n0002-L, \nValidation videos: \n0291-M,\n0292-M,\n", 5, "expected 4 lines .* found 5"),
        ("0002-L, \nValidation videos: \n0291-M,\n", 1, "expected 'Training videos:', found '0002-L,'"),
    ],
)
def test_bad_split_files_name_the_line(tmp_path: Path, text: str, line: int, match: str) -> None:
    p = tmp_path / "split.txt"
    p.write_text(text)
    with pytest.raises(PkuFormatError, match=match) as ei:
        read_pku_split(p)
    assert str(ei.value).startswith(f"{p}:{line}: ")


@pytest.mark.parametrize("frame_base", ["one_inclusive", "zero_exclusive"])
def test_convert(fx, tmp_path: Path, frame_base: str) -> None:
    report = convert_pku(fx.skeletons, fx.labels, fx.split, tmp_path / "store", frame_base=frame_base)
    s = SkeletonStore(tmp_path / "store")
    assert s.names == ["0002-L", "0291-M"] and report.num_samples == 2 and report.num_frames == 32
    for i, n in enumerate(s.names):
        np.testing.assert_array_equal(s.sequence(i), fx.sequences[n])
        want, _ = frame_labels_from_instances(np.array(fx.instances[n]), len(fx.sequences[n]), frame_base)
        np.testing.assert_array_equal(s.frame_labels(i), want)
    fl0 = s.frame_labels(0)
    if frame_base == "one_inclusive":
        assert fl0[0] == 3 and fl0[-1] == 51  # instance at frame 1 and one ending at the last frame
    else:
        assert fl0[0] == 0 and fl0[1] == 3
    assert s.info["frame_base"] == frame_base and s.info["num_classes"] == 52 and s.info["fps"] == 30
    assert s.info["label_instances"]["0002-L"] == [list(r) for r in fx.instances["0002-L"]]
    assert s.labels.tolist() == [-1, -1]
    assert s.split_indices("train").tolist() == [0] and s.split_indices("test").tolist() == [1]
    assert any("1 of 2 ids have no converted video" in ln for ln in report.lines())


def test_convert_errors(fx, tmp_path: Path) -> None:
    (fx.labels / "0291-M.label").unlink()
    with pytest.raises(PkuFormatError, match="0291-M.txt: label file missing"):
        convert_pku(fx.skeletons, fx.labels, fx.split, tmp_path / "out" / "s")
    assert not (tmp_path / "out" / "s").exists() and list((tmp_path / "out").iterdir()) == []
    report = convert_pku(fx.skeletons, fx.labels, fx.split, tmp_path / "s2", skip_bad=True)
    assert report.num_samples == 1 and len(report.bad_files) == 1
    (fx.skeletons / "video7.txt").write_text(_row() + "\n")
    with pytest.raises(PkuFormatError, match="unexpected file name 'video7.txt'"):
        convert_pku(fx.skeletons, fx.labels, None, tmp_path / "s3")
