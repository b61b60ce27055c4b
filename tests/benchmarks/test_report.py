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


def campaign_results(tests_passed: bool, mode: str = "gpu", commit: str = "abc123") -> dict:
    base = {"op": "frame_attention", "shape": "ctrs-F7-N176-H8-D64", "dtype": "bfloat16", "mode": "full",
            "batch": 8192, "tests_passed": True, "smoke": mode == "dry-run", "median_ms": 5.0}
    return {
        "schema": "hitrs_fast.campaign/1", "mode": mode, "command": "bash benchmarks/campaign.sh out",
        "started": "2026-01-01T00:00:00+00:00",
        "provenance": {"device": "GPU-X", "torch": "2.11", "triton": "3.6", "git_commit": commit},
        "tests": {"passed": tests_passed, "paths": ["tests/kernels"], "tests": 10, "passed_tests": 10 if tests_passed
                  else 9, "failures": 0 if tests_passed else 1, "errors": 0, "skipped": 0},
        "parts": [{"name": "attention", "status": "passed", "seconds": 1.0, "budget_s": 360, "note": ""}],
        "rows": [{**base, "peer": "ours", "seq_per_s": 3.0e6},
                 {**base, "peer": "A4-flex-128", "seq_per_s": 1.5e6},
                 {**base, "peer": "A5-flash-unmasked", "seq_per_s": 9.0e6, "tests_passed": False}],
        "skipped": [{"name": "A6-xformers", "reason": "xformers does not import"}], "failures": [],
    }


def test_campaign_tables_name_the_provenance_and_give_speedups_for_a_passing_build():
    from benchmarks.report import render_campaign

    text = render_campaign(campaign_results(tests_passed=True))
    assert "× best correct masked peer" in text and "| 2 |" in text  # 3.0e6 / 1.5e6; A5 is no peer
    attention = text.split("### C-TRS attention")[1]
    assert "GPU-X" in attention and "abc123" in attention and "bash benchmarks/campaign.sh out" in attention
    assert "A6-xformers" in text and "xformers does not import" in text


def test_campaign_tables_withhold_speedups_when_the_tests_fail():
    from benchmarks.report import render_campaign

    text = render_campaign(campaign_results(tests_passed=False))
    assert "withheld" in text and "× best correct masked peer" not in text and "FAILED" in text


def test_dry_run_tables_show_no_timing():
    from benchmarks.report import render_campaign

    text = render_campaign(campaign_results(tests_passed=True, mode="dry-run"))
    assert "Dry run" in text and "3,000,000" not in text and "| smoke |" in text


def test_merging_campaign_files_of_different_commits_is_refused(tmp_path):
    paths = []
    for commit in ("abc", "def"):
        paths.append(tmp_path / f"{commit}.json")
        paths[-1].write_text(json.dumps(campaign_results(True, commit=commit)))
    with pytest.raises(SystemExit, match="different commits"):
        main([*map(str, paths), "--out", str(tmp_path / "t.md")])
    paths[1].write_text(json.dumps(campaign_results(True, commit="abc")))
    assert main([*map(str, paths), "--out", str(tmp_path / "t.md")]) == 0


def test_attention_block_section_compares_our_rows_with_the_best_peer_and_shows_the_prediction():
    """Our block rows (ours, ours-resident, ours-split, kernel+cublas) are never a peer of one another; each
    gets its speedup over the fastest correct peer composition, next to the model's predicted time."""
    from benchmarks.report import render_campaign

    results = campaign_results(tests_passed=True)
    base = {"op": "attention_block", "shape": "block-ftrs-N25-C128-H8-D64", "dtype": "bf16", "mode": "full",
            "batch": 8192, "tests_passed": True, "smoke": False}
    results["rows"] = [{**base, "peer": "ours", "seq_per_s": 4.0e6, "predicted_ms": 1.70},
                       {**base, "peer": "kernel+cublas", "seq_per_s": 3.0e6, "predicted_ms": 2.29},
                       {**base, "peer": "compile+sdpa", "seq_per_s": 2.0e6, "predicted_ms": 2.22},
                       {**base, "peer": "eager", "seq_per_s": 1.0e6, "predicted_ms": 3.38}]
    section = render_campaign(results).split("## Attention sublayer")[1]
    assert "predicted ms" in section and "× best peer" in section
    assert "| ours | block-ftrs-N25-C128-H8-D64 | bf16 | full | 8192 | 1.7 | 4,000,000 | 2 |" in section
    assert "| kernel+cublas | block-ftrs-N25-C128-H8-D64 | bf16 | full | 8192 | 2.29 | 3,000,000 | 1.5 |" in section


def test_step_section_compares_ours_with_the_best_peer_and_profiles_our_fastest_row():
    """Model-step rows: every Triton row (eager, compiled, CUDA graphs) is ours, compared with the fastest peer
    row; the profile of our fastest bf16 row is a table by kernel category, with the configs that ran."""
    from benchmarks.report import render_campaign

    results = campaign_results(tests_passed=True)
    base = {"op": "model_step", "shape": "official-B64-T100", "dtype": "bf16", "mode": "fwd+bwd+opt", "batch": 64,
            "tests_passed": True, "smoke": False}
    profile = {"categories": {"attention (ours)": {"ms": 5.0, "launches": 30}, "GEMM": {"ms": 6.0, "launches": 90},
                              "idle / launch gaps": {"ms": 1.0, "launches": None}},
               "kernel_launches": 120, "kernel_ms": 11.0}
    results["rows"] = [
        {**base, "peer": "triton+compile", "median_ms": 20.0, "seq_per_s": 3200.0, "profile": profile,
         "autotuned": {"frame_attention_fwd_kernel": {"(256, 14)": "BLOCK_M: 16"}}},
        {**base, "peer": "triton", "median_ms": 50.0, "seq_per_s": 1280.0, "profile": profile},
        {**base, "peer": "sdpa+compile max-autotune", "median_ms": 30.0, "seq_per_s": 2133.3},
        {**base, "peer": "torch", "median_ms": 80.0, "seq_per_s": 800.0}]
    text = render_campaign(results).split("## Pre-training step")[1]
    assert "| triton+compile |" in text and "| 1.5 |" in text  # 3200 / 2133.3
    profile_part = text.split("### Where one step of `triton+compile` goes (20.0 ms")[1]
    assert "| attention (ours) | 5 | 0.25 | 30 |" in profile_part
    assert "`frame_attention_fwd_kernel`: `(256, 14)` → `BLOCK_M: 16`" in profile_part
