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


def _rows(results, seeds: list[int]) -> dict:
    """Every table row, column i at ``base + i * step`` (F+C+V best), plus the once-per-seed rows."""
    rows = {}
    for _, _, key, _, higher in results.TABLE:
        base, step = (0.3, 0.1) if higher else (80.0, -5.0)
        rows[key] = {c: [base + i * step + 0.001 * s for s in seeds] for i, c in enumerate(results.COLUMNS)}
    for _, _, key, _ in results.SEED_TABLE:
        rows[key] = {results.RANDOM: [90.0 + s for s in seeds]}
    return rows


def _args(seeds: list[int], threads: int = 1, levels: tuple[str, ...] = ("F", "F+C", "F+C+V")) -> argparse.Namespace:
    return argparse.Namespace(seeds=seeds, spread_seed=seeds[0], pretrain_steps=None, per_class=150, threads=threads,
                              device="cpu", untrimmed_sequences=48, long_sequences=96, levels=list(levels),
                              tasks=["recognize", "detect", "predict_motion"],
                              gather=False, jobs=1)


def test_verdict_needs_a_margin_beyond_the_spread():
    results = _results_module()
    assert results.verdict([0.6, 0.62, 0.64], [0.3, 0.31, 0.32], higher=True) == "+"
    assert results.verdict([0.3, 0.5, 0.7], [0.3, 0.31, 0.32], higher=True) == "="   # s.d. 0.2 covers 0.19
    assert results.verdict([50.0, 51.0, 52.0], [40.0, 40.5, 41.0], higher=False) == "−"  # MPJPE: lower is better
    # A difference the seeds' s.d.s would call a win, inside what the thread count alone moves: no verdict.
    assert results.verdict([0.6, 0.62, 0.64], [0.3, 0.31, 0.32], higher=True, spread=0.35) == "="
    assert results.verdict([0.6, 0.62, 0.64], [0.3, 0.31, 0.32], higher=True, spread=0.25) == "+"


def test_thread_spread_is_the_largest_range_over_the_rerun_columns():
    results = _results_module()
    rnd, fcv = results.RANDOM, results.SPREAD_COLUMN
    by_threads = {1: {"probe": {rnd: [0.66], fcv: [0.72]}, "motion_finetune": {fcv: [48.0]}},
                  2: {"probe": {rnd: [0.61], fcv: [0.80]}, "motion_finetune": {fcv: [48.5]}},
                  4: {"probe": {rnd: [0.66], fcv: [0.76]}, "motion_finetune": {fcv: [48.1]}}}
    spread = results.thread_spread(by_threads)
    assert spread["probe"] == 0.80 - 0.72 and spread["motion_finetune"] == 48.5 - 48.0
    by_threads[2]["probe"][rnd] = [0.50]  # the random-init encoders' probe moves more: it sets the spread
    assert results.thread_spread(by_threads)["probe"] == 0.66 - 0.50
    assert results.thread_spread({1: by_threads[1]}) == {}  # one thread count: nothing measured


def test_render_lays_out_the_levels_and_marks_the_best():
    results = _results_module()
    seeds = [0, 1, 2]
    rows = _rows(results, seeds)
    per_frame = {"F+C+V": [[1.0, 2.0]] * 3, "zero-velocity": [[2.0, 3.0]] * 3}
    page = results.render(_args(seeds), rows, {"pre-training (with its probe)": 600.0}, per_frame, 60.0, [])
    assert "| task | metric | random init | F | F+C | F+C+V |" in page
    probe_row = next(line for line in page.splitlines() if line.startswith("| pre-training probe"))
    assert probe_row.endswith("| **60.1 ± 0.1** |")  # F+C+V best, in bold
    motion_row = next(line for line in page.splitlines() if line.startswith("| motion prediction, encoder fine"))
    assert motion_row.endswith("| **65.0 ± 0.0** |")  # lower MPJPE is better
    assert "| motion prediction, zero-velocity baseline | MPJPE mm @400 ms | 91.0 ± 1.0 | – | – | – |" in page
    verdicts = [line for line in page.splitlines() if line.endswith("| + | + | + |")]
    assert len(verdicts) == len(results.TABLE)
    # Paired motion differences at 400 ms, seed by seed and their mean ± s.d.
    assert "minus random init, per seed (paired; negative = the encoder as pre-trained helps): seed 0: -15.0, " \
        "seed 1: -15.0, seed 2: -15.0 mm; mean -15.0 ± 0.0 mm." in page
    assert "minus the decoder without the encoder (ablation), per seed (paired; negative = the encoder as " \
        "pre-trained helps): seed 0: -25.0, seed 1: -26.0, seed 2: -27.0 mm; mean -26.0 ± 1.0 mm." in page
    assert ("- motion, the encoder ablation clearly worse (beyond the s.d.s and thread spread): met (91.0 mm "
            "without the encoder vs 65.0 mm with it; worse on 3 of 3 seeds, paired).") in page
    assert "Thread spread" not in page  # no re-runs at other thread counts given
    assert "A partial page" not in page
    two = results.render(_args([0, 1]), _rows(results, [0, 1]), {}, {}, 60.0, [])
    assert "**A partial page**: it lacks seed 2." in two


def test_render_shows_the_thread_spread_and_every_verdict_uses_it():
    results = _results_module()
    seeds = [0, 1, 2]
    rows = _rows(results, seeds)
    by_threads = {}
    for t, shift in ((1, 0.0), (2, 0.5), (4, -0.4)):  # the main job's columns move by up to 0.9 (90 points)
        by_threads[t] = {key: {c: [v[0] + shift] for c, v in cols.items() if c == results.SPREAD_COLUMN}
                         for key, cols in rows.items()}
    page = results.render(_args(seeds), rows, {"pre-training (with its probe)": 600.0}, {}, 60.0, [], by_threads, 0)
    assert "Thread spread: seed 0's F+C+V column (pre-training and every downstream run) run with 1, 2, 4" in page
    assert "| task | metric | 1 thread | 2 threads | 4 threads | spread |" in page
    assert "| pre-training probe: linear, frozen encoder, 10 % labels | top-1 % | 60.0 | 110.0 | 20.0 | 90.0 |" in page
    # Every row moves by 0.9 across thread counts: 90 points for the fractions, where F+C+V's lead of 30 points
    # is then a tie, and 0.9 mm for MPJPE, where its lead of 15 mm stays a win.
    verdict_rows = page.split("Pre-trained vs random init")[1].splitlines()
    probe_verdict = next(line for line in verdict_rows if line.startswith("| pre-training probe"))
    assert probe_verdict.endswith("| = | = | = |")
    motion_verdict = next(line for line in verdict_rows if line.startswith("| motion prediction, encoder fine"))
    assert motion_verdict.endswith("| + | + | + |")


def test_render_of_one_seed_says_so_and_shows_single_values():
    results = _results_module()
    rows = _rows(results, [0])
    page = results.render(_args([0]), rows, {"pre-training (with its probe)": 600.0}, {"F+C+V": [[1.0, 2.0]]},
                          60.0, ["--seeds", "0"])
    assert "python training/results.py --seeds 0" in page and "**One seed only** (0)" in page
    probe_row = next(line for line in page.splitlines() if line.startswith("| pre-training probe"))
    assert probe_row.endswith("| 30.0 | 40.0 | 50.0 | **60.0** |") and "±" not in probe_row
    # The bits depend on the CPU's code paths: the page names them.
    import torch

    assert f"PyTorch's CPU kernels on its `{torch.backends.cpu.get_cpu_capability()}` path, MKL with `MKL_CBWR=" in page


def test_render_of_some_levels_and_tasks_shows_only_those_and_checks_the_goals():
    """A page of the F+C+V column and the motion and detection rows only (``--levels F+C+V --tasks detect
    predict_motion``): no empty column, no recognition row, and every goal says met / not met with its numbers."""
    results = _results_module()
    rows = {key: {c: v for c, v in cols.items() if c in (results.RANDOM, "F+C+V")}
            for key, cols in _rows(results, [0]).items() if not key.startswith("rec_")}
    rows["motion_finetune_400ms"] = {results.RANDOM: [55.0], "F+C+V": [50.0]}
    rows["motion_zero_velocity_400ms"] = {results.RANDOM: [60.0]}
    rows["motion_constant_velocity_400ms"] = {results.RANDOM: [80.0]}
    rows["motion_ablation_400ms"] = {results.RANDOM: [52.0]}
    rows["det_tcn_finetune_mAP_a"] = {results.RANDOM: [0.30], "F+C+V": [0.40]}
    rows["det_skeleton_mAP_a"] = {results.RANDOM: [0.95]}
    page = results.render(_args([0], levels=("F+C+V",)), rows, {}, {}, 60.0, ["--levels", "F+C+V"])
    assert "| task | metric | random init | F+C+V |" in page and "| recognition" not in page
    assert "(not run by this command: F, F+C)." in page
    assert "**A partial page**: it lacks seeds 1, 2; the levels F, F+C." in page
    goal = "- motion, F+C+V fine-tuned at 400 ms at least 20 % below zero-velocity: **not met** (50.0 vs 60.0 mm"
    assert goal in page
    assert "- motion, F+C+V fine-tuned at 400 ms below constant-velocity: met (50.0 vs 80.0 mm)." in page
    assert "- motion, pre-trained (F+C+V) better than random init on every seed (paired, 400 ms): met (1 of 1 seed)." \
        in page
    assert ("- detection, tcn head (the context head the commands use) fine-tuned, mAP_a >= 50 %: **not met** "
            "(40.0 %).") in page
    # One seed cannot show a win beyond an s.d.: neither goal that needs one is called met.
    assert ("- detection, pre-training better than random init by more than the larger s.d.: not established "
            "(one seed: no s.d. to clear) (40.0 vs 30.0 % mAP_a).") in page
    assert ("- motion, the encoder ablation clearly worse (beyond the s.d.s and thread spread): not established "
            "(one seed: no s.d. to clear) (52.0 mm without the encoder vs 50.0 mm with it).") in page
    assert ("- the raw-skeleton reference (the tcn head on every train label of the raw frames, no encoder) reaches "
            "95.0 % mAP_a, 55.0 points above the pre-trained tcn head's 40.0 %.") in page


def _counting_task(calls: list) -> object:
    """A fake task that records its argv in ``calls`` and writes a summary whose value is the call count."""
    import json

    def fake_task(argv):
        calls.append(argv)
        run_dir = Path(argv[argv.index("--run-dir") + 1])
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "summary.json").write_text(json.dumps({"value": len(calls)}))
        return 0

    return fake_task


def test_a_finished_run_is_reused_only_for_the_same_command_and_code(tmp_path, monkeypatch):
    """A re-invocation reuses a finished run; a changed recipe file (same command line) makes it again."""
    results = _results_module()
    calls = []
    monkeypatch.setitem(results.TASKS, "recognize", _counting_task(calls))
    monkeypatch.setattr(results, "code_fingerprint", lambda script: "code-a")
    first = results._run_script("recognize", ["--mode", "linear"], tmp_path / "run")
    again = results._run_script("recognize", ["--mode", "linear"], tmp_path / "run")
    assert len(calls) == 1 and first["value"] == again["value"] == 1
    assert results._run_script("recognize", ["--mode", "finetune"], tmp_path / "run")["value"] == 2
    monkeypatch.setattr(results, "code_fingerprint", lambda script: "code-b")  # e.g. a recipe file edited
    assert results._run_script("recognize", ["--mode", "finetune"], tmp_path / "run")["value"] == 3
    assert results._run_script("recognize", ["--mode", "finetune"], tmp_path / "run", gather=True)["value"] == 3


def test_a_run_is_made_again_when_the_encoder_it_reads_was_made_again(tmp_path, monkeypatch):
    """The encoder is named by its path only: a pre-training made again (other code or options) under the
    same path must remake the runs that read it."""
    results = _results_module()
    calls = []
    monkeypatch.setitem(results.TASKS, "recognize", _counting_task(calls))
    monkeypatch.setattr(results, "code_fingerprint", lambda script: "code")
    encoder = tmp_path / "pretrain" / "encoder.pt"
    encoder.parent.mkdir()
    encoder.write_bytes(b"first")
    argv = ["--mode", "linear", "--init", str(encoder)]
    assert results._run_script("recognize", argv, tmp_path / "run")["value"] == 1
    assert results._run_script("recognize", argv, tmp_path / "run")["value"] == 1
    encoder.write_bytes(b"made again")
    assert results._run_script("recognize", argv, tmp_path / "run")["value"] == 2


def test_a_run_whose_code_changed_while_it_ran_is_not_recorded(tmp_path, monkeypatch):
    import json

    import pytest

    results = _results_module()
    code = ["before"]

    def fake_task(argv):
        run_dir = Path(argv[argv.index("--run-dir") + 1])
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "summary.json").write_text(json.dumps({"value": 1}))
        code[0] = "edited"  # e.g. a recipe saved while the run was training
        return 0

    monkeypatch.setitem(results.TASKS, "recognize", fake_task)
    monkeypatch.setattr(results, "code_fingerprint", lambda script: code[0])
    with pytest.raises(SystemExit, match="changed while it ran; its result is not recorded"):
        results._run_script("recognize", ["--mode", "linear"], tmp_path / "run")
    assert not (tmp_path / "run" / "argv.json").exists()
    assert results._run_script("recognize", ["--mode", "linear"], tmp_path / "run", gather=True) is None


def test_a_runs_fingerprint_covers_what_its_script_imports_and_reads_and_nothing_else(tmp_path, monkeypatch):
    """A run is made again when a module its script can import changes (also one imported inside a function,
    relatively) or its task's recipe; another task's recipe or module, or the renderer, keeps it."""
    results = _results_module()
    files = {
        "training/recognize.py": "from hitrs_fast.training.recognize import main\n",
        "training/results.py": "# the renderer\n",
        "hitrs_fast/__init__.py": "",
        "hitrs_fast/training/__init__.py": "",
        "hitrs_fast/training/recognize.py": "def main():\n    from ..heads import A\n    return A\n",
        "hitrs_fast/heads.py": "from . import kernels\nA = 1\n",
        "kernels/__init__.py": "",
        "hitrs_fast/motion.py": "B = 1\n",
        "training/configs/downstream/recognition_synthetic.json": '{"lr": 0.001}',
        "training/configs/downstream/motion_synthetic.json": '{"lr": 0.001}',
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(results, "REPO", tmp_path)
    assert [str(f.relative_to(tmp_path)) for f in results.source_files("recognize")] == [
        "hitrs_fast/__init__.py", "hitrs_fast/heads.py", "hitrs_fast/training/__init__.py",
        "hitrs_fast/training/recognize.py", "kernels/__init__.py",
        "training/configs/downstream/recognition_synthetic.json", "training/recognize.py"]

    def fingerprint():
        return results.code_fingerprint("recognize")

    base = fingerprint()
    for name, edit, changes in (("training/results.py", "# changed\n", False),
                                ("hitrs_fast/motion.py", "B = 2\n", False),
                                ("training/configs/downstream/motion_synthetic.json", '{"lr": 0.002}', False),
                                ("training/configs/downstream/recognition_synthetic.json", '{"lr": 0.002}', True),
                                ("hitrs_fast/heads.py", "from . import kernels\nA = 2\n", True),
                                ("kernels/__init__.py", "C = 1\n", True)):
        before = (tmp_path / name).read_text()
        (tmp_path / name).write_text(edit)
        assert (fingerprint() != base) == changes, name
        (tmp_path / name).write_text(before)
    assert fingerprint() == base


def test_every_module_a_script_loads_is_in_its_fingerprint():
    """The import scan misses nothing the real scripts load at import (dynamic imports would escape it)."""
    import subprocess
    import sys

    results = _results_module()
    for script in results.SCRIPT_DATA:
        path = str(REPO / "training" / f"{script}.py")
        loaded = subprocess.run(
            [sys.executable, "-c", f"import sys, runpy; runpy.run_path({path!r}, run_name='imported')\n"
             "print(' '.join(m for m in sys.modules if m.startswith('hitrs_fast')))"],
            capture_output=True, text=True, timeout=300, check=True).stdout.split()
        covered = set(results.source_files(script))
        missing = [m for m in loaded if (path := results._module_file(m)) is not None and path not in covered]
        assert loaded and not missing, (script, missing)


def _fake_summary(run_dir: Path) -> dict:
    """A summary with every key the page reads, its numbers drawn from the run's name (the same in any run
    root)."""
    import zlib

    v = zlib.crc32(run_dir.name.encode()) % 1000 / 1000
    motion = {"mean_mm": 50 + v, "per_frame_mm": [10 + v * i for i in range(12)]}
    return {"last_epoch": {"top1": v, "mAP_a": v, "mAP_v": v / 2, "mpjpe_mm": 40 + v,
                           "per_frame_mm": motion["per_frame_mm"]},
            "head_warmup": {"last_epoch": {"mAP_a": v / 3, "mAP_v": v / 4, "mpjpe_mm": 41 + v,
                                           "mpjpe_last_frame_mm": 60 + v}},
            "zero_velocity": motion, "constant_velocity": motion}


def _fake_run(argv: list[str]) -> None:
    import json

    run_dir = Path(argv[argv.index("--run-dir") + 1])
    run_dir.mkdir(parents=True)
    if "--ckpt-every" in argv:  # a pre-training
        (run_dir / "encoder.pt").write_bytes(b"")
        (run_dir / "probe.json").write_text(json.dumps({"pretrained": {"test_top1": 0.8},
                                                        "random_init": {"test_top1": 0.6}}))
    else:
        assert argv[argv.index("--init") + 1] == "random" or Path(argv[argv.index("--init") + 1]).exists()
        (run_dir / "summary.json").write_text(json.dumps(_fake_summary(run_dir)))


def test_parallel_runs_give_the_page_of_sequential_ones_and_wait_for_their_encoders(tmp_path, monkeypatch):
    """``--jobs 3``: at most 3 runs at a time (and more than one), every downstream run after the
    pre-training whose encoder it reads, the synthetic sets made before any run; the rows equal ``--jobs 1``'s."""
    import json
    import threading
    import time

    import pytest

    results = _results_module()
    lock, events, running, peak = threading.Lock(), [], [0], [0]
    made_sets = []

    def fake_launch(cmd, env, log):
        assert made_sets and log is not None
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            events.append(("start", cmd))
        # One slow pre-training: the runs reading its encoder would otherwise start before it ends.
        time.sleep(1.0 if cmd[cmd.index("--run-dir") + 1].endswith("pretrain-F-seed0") else 0.05)
        _fake_run(cmd)
        with lock:
            running[0] -= 1
            events.append(("end", cmd))
        return 0

    monkeypatch.setattr(results, "launch", fake_launch)
    monkeypatch.setattr(results, "cached_synthetic", lambda *a: made_sets.append(a))
    monkeypatch.setattr(results, "code_fingerprint", lambda script: "code")
    common = ["--seeds", "0", "1", "--levels", "F", "F+C+V", "--spread-threads", "2"]
    for task in results.TASKS:  # the parallel pass makes every run: reading them must not make any
        monkeypatch.setitem(results.TASKS, task, lambda argv: pytest.fail(f"made in-process: {argv}"))
    assert results.main([*common, "--jobs", "3", "--run-dir", str(tmp_path / "par"),
                         "--output", str(tmp_path / "par.md")]) == 0
    assert peak[0] == 3
    finished: set[str] = set()
    for kind, cmd in events:
        run_dir = cmd[cmd.index("--run-dir") + 1]
        if kind == "end":
            finished.add(run_dir)
        elif "--init" in cmd and cmd[cmd.index("--init") + 1] != "random":
            assert str(Path(cmd[cmd.index("--init") + 1]).parent) in finished, run_dir
    assert len(finished) == len(events) // 2  # every run made once
    assert {(kind, seed) for _, kind, seed, _ in made_sets} == {(k, s) for k in ("trimmed", "untrimmed", "long")
                                                                for s in (0, 1)}

    # The same invocation one run at a time, in this process (the fake tasks), reads the same numbers.
    def sequential_launch(cmd, env, log):  # a pre-training is always a subprocess, a downstream run is not
        assert "--ckpt-every" in cmd and log is None, cmd
        _fake_run(cmd)
        return 0

    monkeypatch.setattr(results, "launch", sequential_launch)
    for task in results.TASKS:
        monkeypatch.setitem(results.TASKS, task, lambda argv: _fake_run(argv) or 0)
    assert results.main([*common, "--run-dir", str(tmp_path / "seq"), "--output", str(tmp_path / "seq.md")]) == 0
    par, seq = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("par", "seq"))
    assert par["rows"] == seq["rows"] and par["per_frame"] == seq["per_frame"]
    assert par["by_threads"] == seq["by_threads"] and set(par["by_threads"]) == {"1", "2"}
    assert "3 runs at a time (`--jobs 3`)" in (tmp_path / "par.md").read_text()
    assert "runs at a time" not in (tmp_path / "seq.md").read_text()


def test_parallel_runs_finish_the_seeds_in_order(tmp_path):
    """A free slot takes the earliest seed's next job that can start: its pre-training, then its runs; a later
    seed's job only while the earlier seed's remaining runs wait for their encoder."""
    results = _results_module()
    args = _args([0, 1], levels=("F+C+V",))
    args.run_dir = str(tmp_path)
    plans = [results.seed_plan(seed, 1, (results.RANDOM, "F+C+V"), args, tmp_path, True) for seed in (0, 1)]
    queue = results.job_queue(plans + [results.seed_plan(0, 1, ("F+C+V",), args, tmp_path, False)])
    assert len(queue) == sum(len(p) + len(r) for p, r in plans)  # the spread re-run at 1 thread: the main runs
    (pre0,), runs0 = plans[0]
    (pre1,), runs1 = plans[1]
    waiting0 = [run for run in runs0 if run.needs == pre0]
    assert waiting0 and len(waiting0) < len(runs0)

    def take(finished):
        job = results.next_job(queue, finished)
        queue.remove(job)
        return job

    assert take(set()) == pre0
    assert [take(set()) for _ in range(len(runs0) - len(waiting0))] == [r for r in runs0 if r.needs is None]
    assert take(set()) == pre1  # seed 0's remaining runs wait for its encoder
    assert take({pre0}) == waiting0[0]  # once it exists they come before seed 1's
    while queue[0] in waiting0:
        take({pre0})
    assert results.next_job(queue, {pre0}) == runs1[0] and results.next_job(queue[:0], set()) is None
    assert all(results.next_job([run], {pre0}) is None for run in runs1 if run.needs == pre1)


def test_a_failed_parallel_run_stops_the_invocation_and_names_its_log(tmp_path, monkeypatch):
    import time

    import pytest

    results = _results_module()
    started = []

    def fake_launch(cmd, env, log):
        started.append(cmd)
        if "--ckpt-every" in cmd:
            _fake_run(cmd)
            return 0
        time.sleep(0.2)
        log.write_text("Traceback ...\n")
        return 1

    monkeypatch.setattr(results, "launch", fake_launch)
    monkeypatch.setattr(results, "cached_synthetic", lambda *a: None)
    monkeypatch.setattr(results, "code_fingerprint", lambda script: "code")
    with pytest.raises(SystemExit, match=r"failed with exit code 1 \(its output: .*\.log\)"):
        results.main(["--seeds", "0", "--levels", "F+C+V", "--jobs", "2", "--run-dir", str(tmp_path / "r"),
                      "--output", str(tmp_path / "page.md")])
    # The pre-training, the two runs that started with it and at most one per job while the failure was seen;
    # not the other 10 queued runs.
    assert len(started) <= 5
    assert not (tmp_path / "page.md").exists()


def test_a_failed_parallel_run_interrupts_the_runs_under_way(tmp_path, monkeypatch):
    """Real subprocesses: one run sleeps for minutes, the other fails; the invocation stops within seconds (the
    sleeper is terminated, then killed) instead of waiting for it. A log's folder is made when missing."""
    import functools
    import sys
    import time

    import pytest

    results = _results_module()
    real_launch = results.launch
    downstream = []

    def launch(cmd, env, log):
        if "--ckpt-every" in cmd:
            _fake_run(cmd)
            return real_launch([sys.executable, "-c", "pass"], env, log)
        downstream.append(cmd)
        # The sleeper ignores SIGINT and SIGTERM, as a run might: it must still be stopped.
        code = ("import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)") if len(downstream) == 1 else \
            "import time; time.sleep(1); exit(3)"
        return real_launch([sys.executable, "-c", code], env, log)

    monkeypatch.setattr(results, "launch", launch)
    monkeypatch.setattr(results, "cached_synthetic", lambda *a: None)
    monkeypatch.setattr(results, "code_fingerprint", lambda script: "code")
    monkeypatch.setattr(results, "stop_children", functools.partial(results.stop_children, grace=2.0))
    t0 = time.perf_counter()
    with pytest.raises(SystemExit, match="failed with exit code 3"):
        results.main(["--seeds", "0", "--levels", "F+C+V", "--tasks", "recognize", "--jobs", "2",
                      "--run-dir", str(tmp_path / "runs" / "new"), "--output", str(tmp_path / "page.md")])
    assert time.perf_counter() - t0 < 30
    log = tmp_path / "threads2" / "pretrain.log"  # a thread re-run's folder does not exist yet
    assert real_launch([sys.executable, "-c", "print('out')"], {}, log) == 0 and log.read_text() == "out\n"
