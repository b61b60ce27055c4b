"""A researcher's journey with their own data, through the console commands of an installed wheel, run from
outside the repository: raw NTU ``.skeleton`` files -> ``hitrs data convert`` -> ``hitrs pretrain`` (then
resumed by a DeepSpeed launch of the installed module) -> ``hitrs recognize``, ``hitrs data import
frame-labels`` + ``hitrs detect``, ``hitrs predict-motion``, each ``--init`` in another of its forms.

The wheel is built from a copy of the sources (the checkout stays clean) and installed with ``--no-deps``
into a fresh virtual environment that sees this environment's packages (torch, DeepSpeed, ...) through a
``.pth`` file, so nothing is downloaded; ``import hitrs_fast`` there resolves to the wheel (checked).
Run with ``pytest -s`` to see every command and what it printed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

from hitrs_fast.data.store import SkeletonStore
from tests.support.data_fixtures import write_ntu_skeleton

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "hitrs_fast", "kernels", "training/configs")
needs_deepspeed = pytest.mark.skipif(shutil.which("deepspeed", path=os.path.dirname(sys.executable)) is None,
                                     reason="deepspeed launcher not installed (train extra)")
SPLITS = ["--split", "ntu60_xsub_train", "--test-split", "ntu60_xsub_test"]
# On the official NTU-60 missing-skeleton list: a user's own file of that name is excluded (and listed).
LISTED_NAME = "S001C003P002R002A012"


def build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    for rel in SOURCES:
        path = ROOT / rel
        if path.is_dir():
            shutil.copytree(path, src / rel, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, src / rel)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp / "dist"), str(src)], check=True, capture_output=True)
    (wheel,) = (tmp / "dist").glob("hitrs_fast-*.whl")
    return wheel


def make_env(tmp: Path, wheel: Path) -> Path:
    """A venv with the wheel installed and this environment's site-packages visible behind its own."""
    env = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    py = env / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    parents = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "_parent_environment.pth").write_text("".join(p + "\n" for p in parents))
    # The parent's .pth hooks do not run for a plain path entry; setuptools' distutils hook is the one an
    # installed environment would have (without it setuptools warns at import). The parent's editable
    # hitrs-fast hook is deliberately not copied.
    for parent in parents:
        hook = Path(parent) / "distutils-precedence.pth"
        if hook.is_file():
            shutil.copy(hook, site / hook.name)
    # --ignore-installed: the parent's editable hitrs-fast is visible on sys.path, but not this environment's.
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--ignore-installed",
                    "-q", str(wheel)], check=True, capture_output=True)
    # What `pip install deepspeed` puts into an environment's bin/: the launcher on this interpreter.
    launcher = env / "bin" / "deepspeed"
    launcher.write_text(f"#!{py}\nimport sys\nfrom deepspeed.launcher.runner import main\nsys.exit(main())\n")
    launcher.chmod(0o755)
    return env


def write_recordings(raw: Path) -> None:
    """25 raw .skeleton files of 80 one-body frames: actions 1-3, performers 1-4 (xsub: P003 is test),
    cameras 1-2, plus one file named like an entry of the official missing-skeleton list."""
    raw.mkdir()
    rng = np.random.default_rng(0)
    for a in (1, 2, 3):
        for p in (1, 2, 3, 4):
            for c in (1, 2):
                write_ntu_skeleton(raw / f"S001C{c:03d}P{p:03d}R001A{a:03d}.skeleton", [1] * 80, rng)
    write_ntu_skeleton(raw / f"{LISTED_NAME}.skeleton", [1] * 80, rng)


def write_labelled_sequences(store: SkeletonStore, out: Path) -> None:
    """Untrimmed sequences from the converted recordings: two actions per sequence, each after 20 frames of
    rest (label 0), one folder per split; class names for labels 1..3."""
    for split, source in (("train", "ntu60_xsub_train"), ("test", "ntu60_xsub_test")):
        (out / split).mkdir(parents=True)
        idx = store.split_indices(source)
        for j in range(0, len(idx) - 1, 2):
            parts, labels = [], []
            for i in idx[j:j + 2]:
                seq = np.asarray(store.sequence(i))[:, 0]
                parts += [np.repeat(seq[:1], 20, axis=0), seq]
                labels += [np.zeros(20, np.int64), np.full(len(seq), store.labels[i] + 1)]
            np.savez(out / split / f"{split}{j:03d}.npz", joints=np.concatenate(parts), labels=np.concatenate(labels))
    (out / "classes.txt").write_text("drink water\neat meal\nbrush teeth\n")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@needs_deepspeed
def test_journey_through_the_installed_commands(tmp_path):
    env = make_env(tmp_path, build_wheel(tmp_path))
    work = tmp_path / "work"
    work.mkdir()
    shell = {**os.environ, "PATH": f"{env / 'bin'}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
             "PYTHONUNBUFFERED": "1"}
    shell.pop("PYTHONPATH", None)

    def run(*cmd: str) -> str:
        result = subprocess.run(list(cmd), cwd=work, env=shell, capture_output=True, text=True, timeout=600)
        out = result.stdout + result.stderr
        print(f"\n$ {' '.join(cmd)}\n{out.strip()}")
        assert result.returncode == 0, out[-4000:]
        return out

    where = run("python", "-c", "import hitrs_fast; print(hitrs_fast.__file__)")
    assert where.strip().startswith(str(env)), where  # the wheel, not the checkout

    write_recordings(work / "raw")
    out = run("hitrs", "data", "convert", "ntu", "--input", "raw", "--output", "store")
    assert "wrote store: 24 samples, 1920 frames" in out
    assert f"on the missing-skeleton list (the bundled ntu60 list; --missing-list none keeps them):\n  raw/" \
           f"{LISTED_NAME}.skeleton" in out

    pretrain = ["--data", "store", *SPLITS, "--steps", "4", "--micro-batch", "4", "--ckpt-every", "2",
                "--log-every", "1", "--probe", "off", "--run-dir", "runs/pre"]
    out = run("hitrs", "pretrain", *pretrain, "--max-steps-this-run", "2")
    assert "step 2/4 loss" in out and "\r" not in out
    assert torch.load(work / "runs/pre/encoder.pt", weights_only=True)["step"] == 2
    out = run("deepspeed", "--master_port", str(free_port()), "--module", "hitrs_fast.training.pretrain", *pretrain,
              "--resume", "--keep-checkpoints", "1")
    assert "step 4/4 loss" in out and "step 2/4" not in out
    assert sorted(p.name for p in (work / "runs/pre/checkpoints").iterdir()) == ["latest_tag", "step00000004"]
    assert torch.load(work / "runs/pre/encoder.pt", weights_only=True)["step"] == 4

    out = run("hitrs", "recognize", "--data", "store", *SPLITS, "--init", "runs/pre", "--mode", "linear",
              "--epochs", "2", "--run-dir", "runs/rec")
    assert "recipe recognition_synthetic.json: chosen for the 18 training samples" in out
    summary = json.loads((work / "runs/rec/summary.json").read_text())
    assert summary["num_classes"] == 3 and summary["test_samples"] == 6

    write_labelled_sequences(SkeletonStore(work / "store"), work / "labelled")
    out = run("hitrs", "data", "import", "frame-labels", "--input", "labelled", "--output", "detstore",
              "--class-names", "labelled/classes.txt")
    assert "wrote detstore: 12 samples, 2400 frames, splits ['test', 'train']" in out
    out = run("hitrs", "detect", "--data", "detstore", "--init", "runs/pre/checkpoints", "--mode", "linear",
              "--epochs", "1", "--run-dir", "runs/det")
    summary = json.loads((work / "runs/det/summary.json").read_text())
    assert summary["num_action_classes"] == 3 and summary["test_videos"] == 3 and "mAP_a" in summary["last_epoch"]

    out = run("hitrs", "predict-motion", "--data", "store", *SPLITS, "--init", "runs/pre/encoder.pt", "--mode",
              "linear", "--epochs", "1", "--run-dir", "runs/motion")
    summary = json.loads((work / "runs/motion/summary.json").read_text())
    assert summary["verdict"] in out and summary["test_windows"] == 6
    assert summary["worse_than_zero_velocity"] == (summary["last_epoch"]["mpjpe_mm"] >
                                                   summary["zero_velocity"]["mean_mm"])
