"""NTU RGB+D reader, body selection, missing lists, splits and the converter (fixtures: data_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hitrs_fast.data import ntu
from hitrs_fast.data.ntu import (
    EXPECTED_COUNTS,
    SkeletonFormatError,
    benchmark_splits,
    bundled_missing_list,
    convert_ntu,
    expected_count_report,
    parse_missing_list,
    parse_ntu_name,
    read_skeleton_file,
    select_bodies,
)
from hitrs_fast.data.store import SkeletonStore
from tests.support.data_fixtures import (
    BODY_ID_BASE,
    expected_hitrs,
    make_ntu_fixture,
    write_missing_lists,
    write_ntu_skeleton,
)


@pytest.fixture
def fixture_dir(tmp_path: Path):
    files = make_ntu_fixture(tmp_path / "ntu")
    return tmp_path / "ntu", files


def test_fixture_files_parse(fixture_dir) -> None:
    _, files = fixture_dir
    for key in ("zero_body", "three_bodies", "two_person", "crlf", "missing_listed"):
        f = files[key]
        sk = read_skeleton_file(f.path)
        assert sk.num_frames == len(f.xyz)
        assert [[b.body_id for b in fr] for fr in sk.frames] == f.body_ids
        got = select_bodies(sk, "hitrs")
        assert got.shape == (len(f.xyz), 2, 25, 3) and got.dtype == np.float32
        np.testing.assert_array_equal(got, expected_hitrs(f))
    zb = read_skeleton_file(files["zero_body"].path)
    assert len(zb.frames[2]) == 0 and not select_bodies(zb)[2].any()
    tb = read_skeleton_file(files["three_bodies"].path)
    assert tb.max_bodies == 3
    np.testing.assert_array_equal(select_bodies(tb)[1, 1], files["three_bodies"].xyz[1][1])
    # bodyID is an exact integer (a float64 would round 72057594037928936 to ...8936.0 +/- 8).
    assert tb.frames[0][0].body_id == BODY_ID_BASE + 1000 and isinstance(tb.frames[0][0].body_id, int)
    assert tb.frames[0][0].joints.shape == (25, 12)
    assert b"\r\n" in files["crlf"].path.read_bytes()


def test_name_parsing() -> None:
    n = parse_ntu_name("S018C003P045R002A120")
    assert (n.setup, n.camera, n.performer, n.replication, n.action, n.label) == (18, 3, 45, 2, 120, 119)
    for bad in ("S01C001P001R001A001", "S001C001P001R001A001_rgb", "xS001C001P001R001A001", "S001C001P001R001A000"):
        with pytest.raises(SkeletonFormatError, match="sample name"):
            parse_ntu_name(bad)


def _valid_lines(tmp_path: Path) -> list[str]:
    p = tmp_path / "tmpl.skeleton"
    write_ntu_skeleton(p, [1, 1], np.random.default_rng(0))
    return p.read_text().splitlines()


# Layout of the 2-frame, 1-body template: line 1 numFrames, 2 numBodies, 3 body fields, 4 numJoints,
# 5..29 joints, 30 numBodies of frame 2, 31 body fields, 32 numJoints, 33..57 joints.
def _replace(lines: list[str], line: int, text: str) -> list[str]:
    out = list(lines)
    out[line - 1] = text
    return out


def _set_field(lines: list[str], line: int, k: int, value: str) -> list[str]:
    toks = lines[line - 1].split()
    toks[k] = value
    return _replace(lines, line, " ".join(toks))


BAD_CASES = {
    "truncated": (lambda ls: ls[:40], 41, "unexpected end of file"),
    "truncated_mid_frames": (lambda ls: ls[:29], 30, "number of bodies of frame 2 of 2"),
    "joint_count": (lambda ls: _replace(ls, 4, "24"), 4, r"number of joints .* = 24, expected in \[25, 25\]"),
    "joint_fields": (lambda ls: _replace(ls, 7, " ".join(ls[6].split()[:11])), 7, "expected 12 fields on joint line 3"),
    "non_numeric_joint": (lambda ls: _set_field(ls, 40, 4, "abc"), 40, "non-numeric value 'abc'"),
    "nan_coordinate": (lambda ls: _set_field(ls, 12, 1, "nan"), 12, "non-finite coordinate"),
    "inf_coordinate": (lambda ls: _set_field(ls, 35, 2, "inf"), 35, "non-finite coordinate"),
    "body_fields": (lambda ls: _replace(ls, 31, "1 2 3"), 31, "expected 10 body fields"),
    "body_id_float": (lambda ls: _set_field(ls, 3, 0, "7.2e16"), 3, "bodyID .* must be an integer"),
    "frame_count": (lambda ls: _replace(ls, 1, "two"), 1, "the number of frames .*an integer"),
    "negative_bodies": (lambda ls: _replace(ls, 2, "-1"), 2, "expected >= 0"),
    "extra_content": (lambda ls: ls + ["5"], 58, "unexpected content after the last of 2 frames"),
    "empty": (lambda ls: [""], 1, "empty file"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_files_name_file_and_line(tmp_path: Path, case: str) -> None:
    mutate, line, match = BAD_CASES[case]
    p = tmp_path / "S001C001P001R001A001.skeleton"
    p.write_text("\n".join(mutate(_valid_lines(tmp_path))) + "\n")
    with pytest.raises(SkeletonFormatError, match=match) as ei:
        read_skeleton_file(p)
    assert isinstance(ei.value, ValueError)
    assert str(ei.value).startswith(f"{p}:{line}: "), str(ei.value)
    assert ei.value.line == line


def test_non_ascii_and_zero_length_files(tmp_path: Path) -> None:
    p = tmp_path / "S001C001P001R001A001.skeleton"
    lines = _valid_lines(tmp_path)
    p.write_bytes(("\n".join(lines[:5]) + "\n").encode() + b"\xff\n")
    with pytest.raises(SkeletonFormatError, match=f"{p}:6: non-ASCII"):
        read_skeleton_file(p)
    p.write_bytes(b"")
    with pytest.raises(SkeletonFormatError, match=f"{p}:1: empty file"):
        read_skeleton_file(p)


def test_energy_and_tracked_selection(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    # Three bodies listed in every frame, motion std 0.001 / 0.3 / 0.1: energy keeps slots 1 then 2.
    f = write_ntu_skeleton(tmp_path / "S001C001P001R001A050.skeleton", [3] * 8, rng, motion=[0.001, 0.3, 0.1])
    sk = read_skeleton_file(f.path)
    got = select_bodies(sk, "energy")
    np.testing.assert_array_equal(got[:, 0], np.stack([fr[1] for fr in f.xyz]))
    np.testing.assert_array_equal(got[:, 1], np.stack([fr[2] for fr in f.xyz]))
    np.testing.assert_array_equal(select_bodies(sk, "agcn"), got)
    np.testing.assert_array_equal(select_bodies(sk, "hitrs")[:, 1], np.stack([fr[1] for fr in f.xyz]))

    # Two bodies that swap list positions half-way: tracked keeps each bodyID in one slot.
    a, b = BODY_ID_BASE + 7, BODY_ID_BASE + 9
    ids = [[a, b]] * 4 + [[b, a]] * 4
    f2 = write_ntu_skeleton(tmp_path / "S001C001P001R001A051.skeleton", [2] * 8, rng, body_ids=ids, motion=[0.3, 0.01])
    sk2 = read_skeleton_file(f2.path)
    tracked = select_bodies(sk2, "tracked")
    want_a = np.stack([f2.xyz[t][ids[t].index(a)] for t in range(8)])
    want_b = np.stack([f2.xyz[t][ids[t].index(b)] for t in range(8)])
    e_a, e_b = (sum(float(w[..., c].std()) for c in range(3)) for w in (want_a, want_b))
    first, second = (want_a, want_b) if e_a >= e_b else (want_b, want_a)
    np.testing.assert_array_equal(tracked[:, 0], first)
    np.testing.assert_array_equal(tracked[:, 1], second)
    hitrs = select_bodies(sk2, "hitrs")
    assert not np.array_equal(hitrs[:, 0], tracked[:, 0]) and not np.array_equal(hitrs[:, 0], tracked[:, 1])
    with pytest.raises(ValueError, match="body selection 'sgn'"):
        select_bodies(sk2, "sgn")


def test_missing_lists(tmp_path: Path) -> None:
    m60, m120 = bundled_missing_list("ntu60"), bundled_missing_list("ntu120")
    assert len(m60) == 302 and len(m120) == 535
    assert m60 <= m120
    assert all(parse_ntu_name(n).setup <= 17 for n in m60)
    assert all(parse_ntu_name(n).setup >= 18 for n in m120 - m60) and len(m120 - m60) == 233
    names = sorted(m60)[:20]
    official, bare = write_missing_lists(tmp_path, names)
    assert parse_missing_list(official) == parse_missing_list(bare) == set(names)


def test_benchmark_splits_and_expected_counts() -> None:
    setup = np.array([1, 2, 17, 18, 19])
    camera = np.array([1, 2, 3, 1, 2])
    performer = np.array([1, 3, 2, 45, 44])
    s60 = benchmark_splits(setup, camera, performer, "ntu60")
    assert sorted(s60) == ["ntu60_xsub_test", "ntu60_xsub_train", "ntu60_xview_test", "ntu60_xview_train"]
    assert s60["ntu60_xsub_train"].tolist() == [0, 2] and s60["ntu60_xsub_test"].tolist() == [1]
    assert s60["ntu60_xview_train"].tolist() == [1, 2] and s60["ntu60_xview_test"].tolist() == [0]
    s120 = benchmark_splits(setup, camera, performer, "ntu120")
    assert s120["ntu120_xsub_train"].tolist() == [0, 2, 3] and s120["ntu120_xsub_test"].tolist() == [1, 4]
    assert s120["ntu120_xset_train"].tolist() == [1, 3] and s120["ntu120_xset_test"].tolist() == [0, 2, 4]
    # A complete NTU-60 store: sizes compared with the published benchmark sizes.
    full = np.ones(56578, dtype=np.int16)
    good = {k: np.arange(v) for k, v in EXPECTED_COUNTS.items() if k.startswith("ntu60")}
    lines, ok = expected_count_report(good, full, "ntu60")
    assert ok and len(lines) == 4
    bad = dict(good, ntu60_xsub_train=np.arange(40090))
    lines, ok = expected_count_report(bad, full, "ntu60")
    assert not ok and any("MISMATCH ntu60_xsub_train: 40090 samples, expected 40091" in ln for ln in lines)
    lines, ok = expected_count_report(bad, full[:10], "ntu60")
    assert ok and "not compared" in lines[0]


def test_convert_fixture_skip_bad(fixture_dir, tmp_path: Path) -> None:
    src, files = fixture_dir
    (src / "README.txt").write_text("not a skeleton file")  # ignored: not *.skeleton
    (src / "S001C002P002R001A001_copy.skeleton").write_text("1\n0\n")  # unexpected name: a bad file
    report = convert_ntu([src], tmp_path / "store", skip_bad=True)
    s = SkeletonStore(tmp_path / "store")
    keys = ["three_bodies", "zero_body", "crlf", "two_person"]
    assert s.names == sorted(files[k].name for k in keys)
    assert report.num_samples == 4 and report.excluded_missing == 1
    assert len(report.bad_files) == 2
    assert any("S003C002P003R001A005.skeleton:43: unexpected end of file" in b for b in report.bad_files)
    assert any("_copy.skeleton" in b and "unexpected sample name" in b for b in report.bad_files)
    assert s.info["skipped_files"] == report.bad_files
    by_name = {f.name: f for f in files.values()}
    for i, n in enumerate(s.names):
        np.testing.assert_array_equal(s.sequence(i), expected_hitrs(by_name[n]))
        meta = parse_ntu_name(n)
        assert s.labels[i] == meta.label and s.camera[i] == meta.camera and s.performer[i] == meta.performer
    assert s.info["dataset"] == "ntu60" and s.info["body_selection"] == "hitrs"
    assert s.info["num_classes"] == int(s.labels.max()) + 1  # from the data (50 here), not NTU-60's 60
    assert s.num_bodies.tolist() == [2, 1, 1, 2]
    # S001C001P003R001A002 (P003, C001) is test for both; S001C002P001R001A001 (P001, C002) train for both.
    names = s.names
    assert [names[i] for i in s.split_indices("ntu60_xsub_train")] == ["S001C002P001R001A001", "S002C003P001R002A050"]
    assert [names[i] for i in s.split_indices("ntu60_xview_test")] == ["S001C001P003R001A002", "S002C001P003R002A010"]
    with pytest.raises(KeyError):
        s.split_indices("ntu120_xsub_train")
    assert any("incomplete input" in ln for ln in report.lines())


def test_convert_stops_at_first_bad_file_and_leaves_nothing(fixture_dir, tmp_path: Path) -> None:
    src, files = fixture_dir
    out = tmp_path / "out"
    with pytest.raises(SkeletonFormatError) as ei:
        convert_ntu([src], out / "store")
    assert str(ei.value).startswith(f"{files['truncated'].path}:43: ")
    assert not (out / "store").exists()
    assert [p.name for p in out.iterdir()] == []  # no temporary sibling either


def test_convert_interrupted_leaves_nothing(fixture_dir, tmp_path: Path, monkeypatch) -> None:
    src, files = fixture_dir
    files["truncated"].path.unlink()
    calls = []
    real = ntu.load_ntu_sequence

    def flaky(path, preset="hitrs"):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(path, preset)

    monkeypatch.setattr(ntu, "load_ntu_sequence", flaky)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(KeyboardInterrupt):
        convert_ntu([src], out / "store")
    assert list(out.iterdir()) == []


def test_convert_ntu120_deterministic_workers_and_missing_override(fixture_dir, tmp_path: Path) -> None:
    src, files = fixture_dir
    files["truncated"].path.unlink()
    extra = tmp_path / "ntu120"
    extra.mkdir()
    rng = np.random.default_rng(9)
    write_ntu_skeleton(extra / "S018C001P045R001A061.skeleton", [1, 1, 1], rng)
    write_ntu_skeleton(extra / "S019C002P044R002A120.skeleton", [2, 2], rng)
    r1 = convert_ntu([src, extra], tmp_path / "a", body_selection="energy")
    r2 = convert_ntu([extra, src], tmp_path / "b", body_selection="energy", workers=2)
    a, b = SkeletonStore(tmp_path / "a"), SkeletonStore(tmp_path / "b")
    assert a.info["dataset"] == "ntu120" and a.info["num_classes"] == 120 and r1.num_samples == r2.num_samples == 6
    assert (tmp_path / "a" / "data.npy").read_bytes() == (tmp_path / "b" / "data.npy").read_bytes()
    assert a.names == b.names and a.labels.tolist() == b.labels.tolist()
    assert sorted(a.split_names) == sorted(EXPECTED_COUNTS)
    names = a.names
    assert [names[i] for i in a.split_indices("ntu120_xset_train")] == [
        "S002C001P003R002A010", "S002C003P001R002A050", "S018C001P045R001A061"
    ]  # fmt: skip
    assert [names[i] for i in a.split_indices("ntu120_xsub_train")] == [
        "S001C002P001R001A001", "S002C003P001R002A050", "S018C001P045R001A061"
    ]  # fmt: skip
    assert "S018C001P045R001A061" not in [names[i] for i in a.split_indices("ntu60_xsub_train")]
    # ntu60 from the same folders: S018+ excluded and reported; a header-less missing list keeps the listed file.
    _, bare = write_missing_lists(tmp_path / "lists", ["S001C001P003R001A002"])
    r3 = convert_ntu([src, extra], tmp_path / "c", dataset="ntu60", missing_list=bare)
    c = SkeletonStore(tmp_path / "c")
    assert "S001C002P005R002A008" in c.names and "S001C001P003R001A002" not in c.names
    assert not any(n.startswith("S018") for n in c.names)
    assert any("excluded 2 files from setups S018+" in ln for ln in r3.lines())
    with pytest.raises(FileExistsError):
        convert_ntu([src], tmp_path / "c")
    convert_ntu([src], tmp_path / "c", overwrite=True)


def test_every_excluded_file_is_listed_and_none_keeps_them(fixture_dir, tmp_path: Path, capsys) -> None:
    """A user's own recording may be named like an entry of the official missing-skeleton list: the report
    names the file and the reason, and ``--missing-list none`` keeps it."""
    from hitrs_fast.data.__main__ import main

    src, files = fixture_dir
    files["truncated"].path.unlink()
    listed = files["missing_listed"].path
    assert main(["convert", "ntu", "--input", str(src), "--output", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out.splitlines()
    k = out.index("excluded 1 file on the missing-skeleton list (the bundled ntu60 list; --missing-list none keeps "
                  "them):")
    assert out[k + 1] == f"  {listed}"
    assert SkeletonStore(tmp_path / "a").info["excluded_files"] == {out[k][len("excluded 1 file "):-1]: [str(listed)]}
    assert main(["convert", "ntu", "--input", str(src), "--output", str(tmp_path / "b"), "--missing-list", "none"]) == 0
    assert not any(line.startswith("excluded") for line in capsys.readouterr().out.splitlines())
    b = SkeletonStore(tmp_path / "b")
    assert listed.stem in b.names and len(b) == 5 and b.info["missing_list"] == "none"
