"""Interruption of a downstream command by a real signal (hitrs_fast.training.run.RunSession): one line naming the
last complete checkpoint and the command that resumes, exit 128 + signal, no traceback; the resumed run says
where it continues. Pre-training's SIGINT is exercised by tests/journey (through the installed command)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from hitrs_fast.data.store import StoreSample, write_store
from hitrs_fast.training.run import Interrupted, RunSession


@pytest.fixture()
def store(tmp_path):
    rng = np.random.default_rng(0)
    samples = [StoreSample(f"s{i}", rng.normal(size=(24, 1, 25, 3)).astype(np.float32), label=i % 2)
               for i in range(6)]
    return write_store(tmp_path / "store", samples, info={"source": "test"},
                       splits={"train": np.arange(4), "test": np.array([4, 5])})


def hitrs_command(args: list[str]) -> list[str]:
    """``hitrs ARGS`` as this interpreter runs it."""
    return [sys.executable, "-m", "hitrs_fast.cli", *args]


def test_sigterm_names_the_last_checkpoint_and_the_resume_command(store, tmp_path):
    run_dir = tmp_path / "run"
    argv = ["recognize", "--data", str(store), "--mode", "linear", "--epochs", "100000", "--run-dir", str(run_dir),
            "--backend", "torch", "--device", "cpu", "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(hitrs_command(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env=env)
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # a few more epochs
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    line = err.strip()
    prefix = f"hitrs recognize: interrupted (SIGTERM); last complete checkpoint: {run_dir / 'checkpoint.pt'} (epoch "
    assert line.startswith(prefix), line
    epoch = int(line[len(prefix):].split(")")[0])
    assert epoch >= 1 and json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["step"] >= epoch
    resume = line.split("; resume: ", 1)[1]
    words = shlex.split(resume)
    kept = [a for i, a in enumerate(argv) if a != "--run-dir" and argv[i - 1] != "--run-dir"]
    assert words == ["hitrs", *kept, "--run-dir", str(run_dir), "--resume"], resume
    # The printed command resumes (two more epochs: the last --epochs wins).
    done = subprocess.run(hitrs_command([*words[1:], "--epochs", str(epoch + 2)]), capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"resuming from epoch {epoch} of {epoch + 2} ({run_dir / 'checkpoint.pt'})" in done.stdout
    assert json.loads((run_dir / "summary.json").read_text())["last_epoch"]["epoch"] == epoch + 2


def test_resume_command_keeps_the_arguments_and_sets_run_dir_and_resume():
    session = RunSession("hitrs pretrain", ["--data", "my store", "--run-dir=old", "--steps", "9", "--resume"])
    session.started("runs/pre")
    assert session.interrupted_message(signal.SIGINT) == (
        "hitrs pretrain: interrupted (SIGINT) before its first checkpoint in runs/pre; nothing to resume, run the "
        "command again")
    session.checkpoint_saved("step 4", "runs/pre/checkpoints/step00000004")
    assert session.interrupted_message(signal.SIGINT) == (
        "hitrs pretrain: interrupted (SIGINT); last complete checkpoint: runs/pre/checkpoints/step00000004 (step 4); "
        "resume: hitrs pretrain --data 'my store' --steps 9 --run-dir runs/pre --resume")


def test_a_signal_during_a_checkpoint_write_waits_and_names_that_checkpoint(tmp_path):
    """A signal between the checkpoint's write and its record once named the checkpoint before (CI saw the
    printed resume continue from epoch 27 when the line said 26): inside ``saving`` it waits for the record."""
    session = RunSession("hitrs", ["recognize"])
    session.started(tmp_path)
    session.checkpoint_saved("epoch 1", tmp_path / "checkpoint.pt")
    with session.active():
        with pytest.raises(Interrupted) as caught:
            with session.saving("epoch 2", tmp_path / "checkpoint.pt"):
                os.kill(os.getpid(), signal.SIGTERM)  # delivered here, mid-write
                written = True  # the write goes on to its end
    assert written and caught.value.exit_status == 143
    assert "(epoch 2)" in session.interrupted_message(signal.SIGTERM)
    # Outside a save the signal interrupts at once.
    with session.active():
        with pytest.raises(Interrupted):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
