"""benchmarks/report.py: JSON rows -> markdown, speedups against the best correct peer."""

import json

import pytest

from benchmarks.report import add_speedups, main


def rows():
    base = {"op": "frame_attention", "shape": "N176", "dtype": "bfloat16", "mode": "fwd", "batch": 8192,
            "device": "GPU-X", "tests_passed": True}
    return [{**base, "peer": "triton", "seq_per_s": 3.0e6},
            {**base, "peer": "sdpa_cudnn", "seq_per_s": 1.0e6},
            {**base, "peer": "flex", "seq_per_s": 1.5e6},
            {**base, "peer": "unmasked_flash", "seq_per_s": 9.0e6},  # an upper bound, not a peer
            {**base, "peer": "sdpa_efficient", "seq_per_s": 2.5e6, "tests_passed": False}]


def test_speedup_is_against_best_correct_masked_peer():
    r = rows()
    add_speedups(r)
    assert r[0]["speedup_vs_best_peer"] == pytest.approx(2.0)
    assert "speedup_vs_best_peer" not in r[1]


def test_smoke_rows_refused(tmp_path):
    data = {"benchmarks": [{"extra_info": {**rows()[0], "smoke": True}}]}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SystemExit, match="not speed results"):
        main([str(path), "--out", str(tmp_path / "b.md")])


def test_renders_markdown(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"benchmarks": [{"extra_info": r} for r in rows()]}))
    out = tmp_path / "docs" / "b.md"
    out.parent.mkdir()
    assert main([str(path), "--out", str(out), "--assets", str(tmp_path / "docs" / "assets")]) == 0
    text = out.read_text()
    assert "GPU-X" in text and "| triton |" in text.replace("  ", " ") and "2" in text
    assert (tmp_path / "docs" / "assets" / "frame_attention.png").exists()
