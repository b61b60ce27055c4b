"""``hitrs pretrain --compile on``: DeepSpeed runs the compiled forward, batches come padded to length buckets, the
padding is logged, and ``--max-seconds-this-run`` stops at a logged step with a checkpoint.

The compile backend is ``aot_eager`` (``HITRS_FAST_COMPILE_BACKEND``): forward and backward traced as one graph
each, as Inductor receives them; Inductor's own code generation of the step is tested in
tests/models/test_compiled_step.py.
"""

from __future__ import annotations

import json

from tests.training.test_pretrain import finish, launch, needs_deepspeed


@needs_deepspeed
def test_compiled_pretraining_with_length_buckets_and_a_time_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("HITRS_FAST_COMPILE_BACKEND", "aot_eager")
    run_dir = tmp_path / "compiled"
    finish(launch(tmp_path, run_dir, "--compile", "on", "--length-buckets", "2", "--steps", "6", "--micro-batch", "4",
                  "--log-every", "2", "--max-seconds-this-run", "0"), run_dir, timeout=1800)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["compile"] is True and config["compile_backend"] == "aot_eager" and config["length_buckets"] == 2
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2], "a time limit of 0 s stops at the first logged step"
    assert rows[0]["padding"] >= 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 2 and (run_dir / "checkpoints" / "latest_tag").read_text().strip() == "step00000002"
    buckets = summary["padding"]["length_buckets"]
    assert 1 <= len(buckets) <= 2 and buckets == sorted(buckets)
    assert summary["padding"]["frames_per_real_frame"] >= 1.0
    assert "compiled step: torch.compile aot_eager" in run_dir.with_suffix(".log").read_text()
