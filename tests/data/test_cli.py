"""``python -m hitrs_fast.data``: convert, import, describe, validate, synthetic; exit codes and messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hitrs_fast.data.__main__ import main
from hitrs_fast.data.inspection import validate_store
from hitrs_fast.data.store import SkeletonStore, StoreSample, write_store
from tests.support.data_fixtures import make_ntu_fixture, write_ctrgcn_npz, write_pku_fixture, write_pyskl, write_stgcn


def test_convert_ntu_describe_validate(tmp_path: Path, capsys) -> None:
    files = make_ntu_fixture(tmp_path / "ntu")
    out = tmp_path / "store"
    assert main(["convert", "ntu", "--input", str(tmp_path / "ntu"), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{files['truncated'].path}:43: unexpected end of file" in err
    assert not out.exists()
    assert main(["convert", "ntu", "--input", str(tmp_path / "ntu"), "--output", str(out), "--skip-bad"]) == 0
    text = capsys.readouterr().out
    assert "wrote" in text and "skipped 1 bad files" in text and "S003C002P003R001A005" in text
    assert main(["convert", "ntu", "--input", str(tmp_path / "ntu"), "--output", str(out), "--skip-bad"]) == 2
    assert "overwrite" in capsys.readouterr().err
    assert main(["describe", str(out)]) == 0
    text = capsys.readouterr().out
    assert "samples    4, frames 18" in text and "ntu60_xsub_train: 2" in text and "bodies     1: 2, 2: 2" in text
    assert main(["describe", str(out), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["num_samples"] == 4 and d["lengths"]["max"] == 6 and d["splits"]["ntu60_xview_test"] == 2
    assert main(["validate", str(out)]) == 0
    assert "0 problems" in capsys.readouterr().out


def _store_with(tmp_path: Path, name: str, mutate) -> Path:
    rng = np.random.default_rng(0)
    ss = [StoreSample(f"s{i}", rng.normal(size=(4, 2, 25, 3)).astype(np.float32), label=i) for i in range(3)]
    mutate(ss)
    return write_store(tmp_path / name, ss, info={"source": "test", "num_classes": 3},
                       splits={"train": np.array([0, 1]), "test": np.array([1, 2])})  # fmt: skip


def test_validate_finds_problems(tmp_path: Path, capsys) -> None:
    def nan(ss):
        ss[1].data[2, 0, 3, 1] = np.nan

    def zero(ss):
        ss[2].data[:] = 0.0

    def label(ss):
        ss[0].label = 7

    for name, mut, msg in [
        ("nan", nan, "1 samples hold NaN/inf, e.g. s1"),
        ("zero", zero, "1 samples are all zero, e.g. s2"),
        ("label", label, r"labels outside [0, 3)"),
    ]:
        root = _store_with(tmp_path, name, mut)
        assert main(["validate", str(root)]) == 1
        out = capsys.readouterr().out
        assert msg in out and "splits train and test share 1 samples" in out
        problems, _ = validate_store(SkeletonStore(root))
        assert len(problems) == 2


def test_validate_ntu_expected_count_mismatch(tmp_path: Path) -> None:
    # A "complete" NTU-60 store of 56 578 one-frame samples whose split sizes are wrong.
    n = 56578
    data = np.ones((1, 1, 1, 3), dtype=np.float32)

    def gen():
        for i in range(n):
            yield StoreSample(f"s{i:06d}", data, label=0, setup=1, camera=1 + i % 3, performer=1 + i % 40)

    from hitrs_fast.data.ntu import benchmark_splits

    def splits(index):
        return benchmark_splits(index["setup"], index["camera"], index["performer"], "ntu60")

    root = write_store(tmp_path / "big", gen(), info={"source": "ntu_skeleton", "dataset": "ntu60", "num_classes": 60},
                       splits=splits)  # fmt: skip
    problems, _ = validate_store(SkeletonStore(root))
    assert any(p.startswith("MISMATCH ntu60_xsub_train:") and "expected 40091" in p for p in problems)


def test_convert_pku_and_imports(tmp_path: Path, capsys) -> None:
    fx = write_pku_fixture(tmp_path / "pku")
    rc = main(["convert", "pku", "--skeletons", str(fx.skeletons), "--labels", str(fx.labels), "--split",
               str(fx.split), "--output", str(tmp_path / "p"), "--frame-base", "zero_exclusive"])  # fmt: skip
    assert rc == 0 and SkeletonStore(tmp_path / "p").info["frame_base"] == "zero_exclusive"
    assert main(["validate", str(tmp_path / "p")]) == 0
    assert main(["describe", str(tmp_path / "p")]) == 0
    assert "% of the frames" in capsys.readouterr().out

    write_ctrgcn_npz(tmp_path / "a.npz")
    assert main(["import", "ctrgcn-npz", "--input", str(tmp_path / "a.npz"), "--output", str(tmp_path / "c")]) == 0
    assert len(SkeletonStore(tmp_path / "c")) == 6
    write_stgcn(tmp_path / "st")
    rc = main(["import", "stgcn", "--data", str(tmp_path / "st" / "train_data.npy"),
               "--labels", str(tmp_path / "st" / "train_label.pkl"), "--output", str(tmp_path / "g")])  # fmt: skip
    assert rc == 0 and SkeletonStore(tmp_path / "g").split_names == ["train"]
    write_pyskl(tmp_path / "y.pkl")
    assert main(["import", "pyskl", "--input", str(tmp_path / "y.pkl"), "--output", str(tmp_path / "y")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["import", "pyskl", "--input", str(tmp_path / "nope.pkl"), "--output", str(tmp_path / "z")]) == 2
    assert "nope.pkl" in capsys.readouterr().err


def test_synthetic_command(tmp_path: Path) -> None:
    pytest.importorskip("hitrs_fast.data.synthetic")
    rc = main(["synthetic", "--output", str(tmp_path / "syn"), "--kind", "trimmed", "--seed", "3",
               "--samples-per-class", "1"])  # fmt: skip
    assert rc == 0
    s = SkeletonStore(tmp_path / "syn")
    assert s.info["source"] == "synthetic" and len(s) > 0
    assert main(["validate", str(tmp_path / "syn")]) == 0


def test_import_is_light() -> None:
    # hitrs_fast.data adds only itself and the numpy-only store to what `import hitrs_fast` loads.
    code = (
        "import sys, hitrs_fast; before = set(sys.modules); import hitrs_fast.data; "
        "new = sorted(m for m in set(sys.modules) - before if m.startswith(('hitrs_fast', 'torch', 'triton'))); "
        "assert new == ['hitrs_fast.data', 'hitrs_fast.data.store'], new; "
        "assert 'nvidia.dali' not in sys.modules and 'deepspeed' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
