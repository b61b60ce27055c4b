"""The whole-step performance model (``python -m benchmarks.step_model``): it runs, its fit reproduces the rows it
was fitted to, and its accounting is consistent (every design above the floor, fusion never adds bytes)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from benchmarks import step_model as sm
from hitrs_fast import HiTRSConfig


@pytest.fixture(scope="module")
def calibrated():
    return sm.calibrate()


def test_fit_reproduces_the_rows_it_was_fitted_to(calibrated):
    rows = {name: (pred, meas) for name, pred, meas in sm.calibration()}
    fitted = ["step, triton eager (today's Triton backend)",
              "C-TRS attention sublayer fwd+bwd, sublayer_ours_split"]
    for name in fitted:
        pred, meas = rows[name]
        assert pred == pytest.approx(meas, rel=0.03), name
    # The checks (not fitted): within 30 % of what the H200 measured.
    for name, (pred, meas) in rows.items():
        assert 0.7 < pred / meas < 1.3, (name, pred, meas)
    assert 0.3 < calibrated.eff_eager <= 1.0 and 0.3 < calibrated.eff_fused <= 1.0


def test_designs_are_above_the_floor_and_fusions_save_bytes(calibrated):
    cfg = HiTRSConfig.preset("official")
    w = sm.Workload(cfg, 64, 100)
    launches = sm.count_pretext_launches(cfg)
    params = sm._parameters(cfg)
    preds = {d.name: sm.predict(w, d, calibrated, launches, params) for d in sm.DESIGNS}
    floor = sm.floor_s(w, calibrated, launches, params)
    assert all(p.step_s > floor for p in preds.values())
    compiled = preds["triton + compile + CUDA graphs"]
    for better in ("triton + compile + CUDA graphs + bf16 residual", "triton + compile + CUDA graphs + fused FFN"):
        assert preds[better].bytes < compiled.bytes and preds[better].gpu_s < compiled.gpu_s
    # Eager steps are host-bound at this batch: the host cost per op was fitted to the Triton backend's step.
    assert preds["triton eager (today's Triton backend)"].host_s > preds["triton eager (today's Triton backend)"].gpu_s
    # CUDA graphs only remove host time.
    assert compiled.gpu_s == pytest.approx(preds["triton + compile"].gpu_s)


def test_part_accounting_matches_the_workload():
    """The C-TRS sequences the model counts are the step's: per sample 2 clip-order clips and W - 1 context clips
    with a graph (the official preset trains C-TRS through the video tasks) and 1 target clip without."""
    cfg = HiTRSConfig.preset("official")
    w = sm.Workload(cfg, 64, 100)
    assert (w.clips, w.grad_clips, w.nograd_clips, w.video_sequences) == (15, 64 * 16, 64, 128)
    tiny = sm.Workload(HiTRSConfig.preset("tiny"), 8, 40)  # video tasks train V-TRS only: context without a graph
    assert (tiny.grad_clips, tiny.nograd_clips) == (8 * 2, 8 * 6)
    d = replace(sm.DESIGNS[0], name="x")
    assert [p.name for p in sm.level_parts(w, d)].count("C-TRS attention sublayer") == 2 * cfg.clip_layers


def test_report_runs(capsys):
    assert sm.main(["--parts", "triton + compile + CUDA graphs"]) == 0
    out = capsys.readouterr().out
    assert "Calibration" in out and "Floor" in out and "C-TRS attention sublayer" in out
