"""``training/results.py``: the page it writes from the runs' numbers (the runs themselves are the commands
tested elsewhere)."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _results_module():
    spec = importlib.util.spec_from_file_location("results_script", REPO / "training" / "results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_verdict_needs_a_margin_beyond_the_spread():
    results = _results_module()
    assert results.verdict([0.6, 0.62, 0.64], [0.3, 0.31, 0.32], higher=True) == "+"
    assert results.verdict([0.3, 0.5, 0.7], [0.3, 0.31, 0.32], higher=True) == "="   # s.d. 0.2 covers 0.19
    assert results.verdict([50.0, 51.0, 52.0], [40.0, 40.5, 41.0], higher=False) == "−"  # MPJPE: lower is better


def test_render_lays_out_the_levels_and_marks_the_best():
    results = _results_module()
    seeds = [0, 1, 2]
    higher = {"probe", "rec_linear_top1", "rec_semi_top1", "det_mAP_a", "det_mAP_v"}
    rows = {}
    for _, _, key, _, _ in results.TABLE:
        base = 0.3 if key in higher else 80.0
        step = 0.1 if key in higher else -5.0
        rows[key] = {c: [base + i * step + 0.001 * s for s in seeds] for i, c in enumerate(results.COLUMNS)}
    rows["motion_ablation"] = {results.RANDOM: [90.0, 91.0, 92.0]}
    rows["motion_zero_velocity"] = {results.RANDOM: [95.0, 95.0, 95.0]}
    per_frame = {"F+C+V": [[1.0, 2.0]] * 3, "zero-velocity": [[2.0, 3.0]] * 3}
    args = argparse.Namespace(seeds=seeds, pretrain_steps=None, per_class=150, threads=2, device="cpu")
    page = results.render(args, rows, {"pre-training (with its probe)": 600.0}, per_frame, 60.0, [])
    assert "| task | metric | random init | F | F+C | F+C+V |" in page
    probe_row = next(line for line in page.splitlines() if line.startswith("| pre-training probe"))
    assert probe_row.endswith("| **60.1 ± 0.1** |")  # F+C+V best, in bold
    motion_row = next(line for line in page.splitlines() if line.startswith("| motion prediction, encoder fine"))
    assert motion_row.endswith("| **65.0 ± 0.0** |")  # lower MPJPE is better
    assert "| 90.0 ± 0.0 | –" not in page and "| 91.0 ± 1.0 | – | – | – |" in page
    verdicts = [line for line in page.splitlines() if line.endswith("| + | + | + |")]
    assert len(verdicts) == len(results.TABLE)


def test_render_of_one_seed_says_so_and_shows_single_values():
    results = _results_module()
    rows = {key: {c: [0.5 + 0.1 * i] for i, c in enumerate(results.COLUMNS)} for _, _, key, _, _ in results.TABLE}
    rows["motion_ablation"] = {results.RANDOM: [90.0]}
    rows["motion_zero_velocity"] = {results.RANDOM: [95.0]}
    args = argparse.Namespace(seeds=[0], pretrain_steps=None, per_class=150, threads=1, device="cpu")
    page = results.render(args, rows, {"pre-training (with its probe)": 600.0}, {"F+C+V": [[1.0, 2.0]]}, 60.0,
                          ["--seeds", "0"])
    assert "python training/results.py --seeds 0" in page and "**One seed only** (0)" in page
    probe_row = next(line for line in page.splitlines() if line.startswith("| pre-training probe"))
    assert probe_row.endswith("| 50.0 | 60.0 | 70.0 | **80.0** |") and "±" not in probe_row
