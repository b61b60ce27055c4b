"""benchmarks/campaign.py and the fairness machinery of the benchmark suites.

The campaign's own dry run (every real part on the CPU) is run by CI from a bare
environment (`make campaign-dry-run-bare`); these tests cover its driver with fake parts
in seconds, and the helpers that keep compiled peers and gradients honest.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmarks import campaign
from benchmarks.campaign import Campaign, Part
from benchmarks.common import NotCompiled, compiled_evidence, no_recompile, profile_call
from benchmarks.pretrain_step import peak_bf16_flops, training_flops
from hitrs_fast import HiTRSConfig
from tests.support.tolerances import LOW_PRECISION_FACTOR, tolerance

ROOT = Path(__file__).resolve().parents[2]


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


WRITE_ROW = ("import json, os; open(os.environ['HITRS_BENCH_ROWS'], 'a').write("
             "json.dumps({'kind': 'row', 'op': 'fake', 'peer': 'ours', 'value': 1}) + '\\n')")


def fake_parts() -> tuple[Part, ...]:
    budget = {"gpu": 30, "dry-run": 30}
    return (
        Part("first", budget, "writes one row", lambda c: _py(WRITE_ROW)),
        Part("broken", budget, "exits 1", lambda c: _py("import sys; print('boom'); sys.exit(1)")),
        Part("slow", {"gpu": 2, "dry-run": 2}, "outlives its budget", lambda c: _py("import time; time.sleep(60)")),
        Part("last", budget, "still runs after the failures", lambda c: _py(WRITE_ROW)),
    )


def test_failures_are_collected_and_everything_is_written(tmp_path):
    parts = fake_parts()
    c = Campaign(out=tmp_path / "out", dry_run=True, selected=[p.name for p in parts], command="test",
                 work=tmp_path / "work")
    c.work.mkdir()
    status = campaign.run(c, parts)
    assert status == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(campaign.OUT_FILES)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [(p["name"], p["status"]) for p in results["parts"]] == [
        ("first", "passed"), ("broken", "failed"), ("slow", "timeout"), ("last", "passed")]
    assert len(results["failures"]) == 2 and results["exit_status"] == 1
    assert [r["part"] for r in results["rows"]] == ["first", "last"]
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert "broken: exit status 1" in summary and "slow: stopped after" in summary and "exit status 1" in summary
    assert "boom" in (tmp_path / "out" / "campaign.log").read_text()
    assert "## Failures" in (tmp_path / "out" / "tables.md").read_text()


def test_campaign_sh_rejects_unknown_parts(tmp_path):
    out = subprocess.run(["bash", str(ROOT / "benchmarks" / "campaign.sh"), "--parts", "nope", str(tmp_path)],
                         capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable}, timeout=60)
    assert out.returncode == 2 and "unknown parts ['nope']" in out.stderr


def test_deadline_skips_the_remaining_cases_as_not_reached(tmp_path):
    rows = tmp_path / "rows.jsonl"
    env = {**os.environ, "HITRS_BENCH_SMOKE": "1", "HITRS_BENCH_DEADLINE": "0", "HITRS_BENCH_ROWS": str(rows)}
    out = subprocess.run([sys.executable, "-m", "pytest", "benchmarks/test_model_step.py", "-q", "-p",
                          "no:cacheprovider"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:]
    lines = [json.loads(line) for line in rows.read_text().splitlines()]
    assert lines and all(r["kind"] == "skip" and r.get("not_reached") for r in lines)


def test_fallback_hook_maps_the_kernels_folder(tmp_path):
    path = tmp_path / "hook_under_test.py"
    path.write_text(campaign.hook_source(ROOT))
    spec = importlib.util.spec_from_file_location("hook_under_test", path)
    module = importlib.util.module_from_spec(spec)
    before = list(sys.meta_path)
    try:
        spec.loader.exec_module(module)
        finder = sys.meta_path[0]
        assert isinstance(finder, module.KernelsFinder)
        found = finder.find_spec("hitrs_fast.kernels")
        assert Path(found.origin) == ROOT / "kernels" / "__init__.py"
        assert finder.find_spec("hitrs_fast.models") is None
    finally:
        sys.meta_path[:] = before


def test_compiled_evidence_catches_an_eager_fallback():
    import torch._dynamo

    def f(x):
        return torch.sin(x) * 2 + 1

    with pytest.raises(NotCompiled):
        compiled_evidence(profile_call(lambda: f(torch.ones(8))))
    torch._dynamo.reset()
    compiled = torch.compile(f, dynamic=False)
    compiled(torch.ones(8))
    assert "compiled region" in compiled_evidence(profile_call(lambda: compiled(torch.ones(8))))
    # The recompile limit reached: dynamo runs the new shape eagerly, which the check must see.
    with torch._dynamo.config.patch(recompile_limit=1, fail_on_recompile_limit_hit=False):
        with pytest.raises(NotCompiled):
            compiled_evidence(profile_call(lambda: compiled(torch.ones(9))))
    # While timing (a fresh compilation, as every benchmark case has), a recompilation raises instead of running.
    torch._dynamo.reset()
    compiled(torch.ones(8))
    with pytest.raises(torch._dynamo.exc.RecompileError), no_recompile():
        compiled(torch.ones(10))
    torch._dynamo.reset()


def test_attention_gradients_are_taken_with_respect_to_q_k_v_views():
    from benchmarks.registry import SMOKE_SHAPES
    from benchmarks.test_frame_attention import make_inputs, make_peer, oracle_gate

    shape = SMOKE_SHAPES[0]
    q, k, v, do = make_inputs(shape, 2, torch.float32, grad=True, device="cpu")
    n, h, d = shape.num_tokens, shape.heads, shape.head_dim
    for t in (q, k, v):
        assert t.shape == (2, h, n, d) and t.stride() == (n * h * d, d, h * d, 1)  # BNHD view
        assert t._base is not None and t._base.shape == (2, n, h * d) and t._base.is_leaf
    assert len({t._base.data_ptr() for t in (q, k, v)}) == 3  # three projections, no fused QKV tensor
    eager, _ = make_peer("A0-eager", shape, torch.float32)
    assert oracle_gate(eager, shape, torch.float32, "full")[0]
    # A peer 1e-4 off in its output (and so in dQ/dK/dV) fails the float32 gate.
    wrong = lambda a, b, c: eager(a, b, c) * (1 + 1e-4)
    ok, report = oracle_gate(wrong, shape, torch.float32, "full")
    assert not ok and "dq" in report


def test_benchmark_gate_restates_the_tolerance_table():
    from benchmarks import test_frame_attention as bench

    assert (bench.FP32_ATOL, bench.FP32_RTOL) == tolerance("frame_attention", torch.float32)
    assert bench.BF16_ATOL == tolerance("frame_attention", torch.bfloat16)[0]
    assert bench.LOW_PRECISION_FACTOR == LOW_PRECISION_FACTOR


@pytest.mark.parametrize(("frames", "gflop"), [(50, 32.4), (100, 57.3), (300, 156.9)])
def test_training_flops_of_the_official_preset(frames, gflop):
    assert training_flops(frames, HiTRSConfig.preset("official")) / 1e9 == pytest.approx(gflop, rel=2e-3)


def test_peak_flops_by_device_name(monkeypatch):
    monkeypatch.delenv("HITRS_BENCH_PEAK_TFLOPS", raising=False)
    assert peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_bf16_flops("NVIDIA H200") == 989e12
    assert peak_bf16_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_bf16_flops("NVIDIA A100-SXM4-80GB") is None
    monkeypatch.setenv("HITRS_BENCH_PEAK_TFLOPS", "312")
    assert peak_bf16_flops("NVIDIA A100-SXM4-80GB") == 312e12


def test_tests_part_runs_each_file_in_its_own_process(tmp_path, monkeypatch):
    """A test file whose process dies (as a CUDA illegal memory access kills every later test in its process)
    fails alone: the files after it still run and count, and the part reports the crash."""
    folder = tmp_path / "suite"
    folder.mkdir()
    (folder / "test_a_crash.py").write_text("import os\n\ndef test_dies():\n    os._exit(3)\n")
    (folder / "test_b_fine.py").write_text("def test_one():\n    pass\n\ndef test_two():\n    pass\n")
    (folder / "test_c_fails.py").write_text("def test_wrong():\n    assert 1 == 2\n")
    monkeypatch.setattr(campaign, "ROOT", tmp_path)
    monkeypatch.setitem(campaign.TEST_PATHS, "dry-run", ("suite",))
    c = Campaign(out=tmp_path / "out", dry_run=True, selected=["tests"], command="test", work=tmp_path / "work")
    c.work.mkdir()
    c.env = dict(os.environ)
    assert campaign.test_files(("suite",)) == [f"suite/test_{n}.py" for n in ("a_crash", "b_fine", "c_fails")]
    status, note = campaign.tests_part(c, timeout=120)
    tests = c.results["tests"]
    assert status == "failed" and not tests["passed"]
    assert tests["passed_tests"] == 2 and tests["failures"] == 1
    assert any("test_a_crash.py exit status 3" in p for p in tests["problems"]), tests["problems"]
    assert "test_wrong" in note and "3 files" in note


def test_tests_part_gives_each_file_a_fair_share(tmp_path, monkeypatch):
    """A file that hangs is stopped at its share of the part's time, and the files after it still run (on the
    second GPU run the first file used the whole part). The part runs every file with one kernel config."""
    folder = tmp_path / "suite"
    folder.mkdir()
    (folder / "test_a_hangs.py").write_text("import time\n\ndef test_hangs():\n    time.sleep(600)\n")
    (folder / "test_b_config.py").write_text(
        "import os\n\ndef test_single_config():\n    assert os.environ['HITRS_FAST_SINGLE_CONFIG'] == '1'\n")
    for name in ("c", "d"):
        (folder / f"test_{name}_fine.py").write_text("def test_fine():\n    pass\n")
    monkeypatch.setattr(campaign, "ROOT", tmp_path)
    monkeypatch.setattr(campaign, "TEST_FILE_MIN_S", 5)
    monkeypatch.setitem(campaign.TEST_PATHS, "dry-run", ("suite",))
    c = Campaign(out=tmp_path / "out", dry_run=True, selected=["tests"], command="test", work=tmp_path / "work")
    c.work.mkdir()
    c.env = dict(os.environ)
    started = time.monotonic()
    status, note = campaign.tests_part(c, timeout=40)
    assert time.monotonic() - started < 39
    tests = c.results["tests"]
    assert status == "failed" and tests["passed_tests"] == 3, note  # the hanging file had 2 x 40 s / 4 files
    assert any("test_a_hangs.py timed out" in p for p in tests["problems"]), tests["problems"]
    assert campaign.file_timeout(300, 12) == 50 and campaign.file_timeout(100, 1) == 100
    assert campaign.file_timeout(20, 10) == 5 and campaign.file_timeout(3, 4) == 3


def test_quick_campaign_fits_one_eight_minute_call():
    """--quick: every part has a budget for both modes, the GPU budgets fit the 480 s cap of one device call (the
    limit is 10 minutes, and start-up counts against the 15 a session gets), and the rows that decide the design
    come first."""
    from benchmarks.campaign import QUICK_PARTS, QUICK_STEP_ROWS, TOTAL_BUDGET_S
    from benchmarks.pretrain_step import IMPLS_BY_NAME

    assert all({"gpu-quick", "dry-run-quick"} <= set(p.budget_s) for p in QUICK_PARTS)
    assert sum(p.budget_s["gpu-quick"] for p in QUICK_PARTS) <= TOTAL_BUDGET_S["gpu-quick"] <= 480
    assert [p.name for p in QUICK_PARTS][:3] == ["provenance", "install", "tests"]
    assert QUICK_STEP_ROWS[0] == "triton+compile" and set(QUICK_STEP_ROWS) <= set(IMPLS_BY_NAME)


def test_quick_campaign_rejects_parts_it_does_not_have(tmp_path):
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "campaign.sh"), "--quick", "--parts", "embedding",
                           str(tmp_path / "out")], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable}, timeout=60)
    assert done.returncode == 2 and "unknown parts ['embedding']" in done.stderr
