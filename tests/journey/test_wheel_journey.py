"""A researcher's journey with their own data, through the console commands of an installed wheel, run from
outside the repository: the commands of the README's *Commands* block, exactly as written there (with this
test's small budget appended): raw NTU ``.skeleton`` files -> ``hitrs data convert`` with splits chosen by
performer -> ``hitrs pretrain`` (interrupted by SIGINT, resumed with the command it printed, then by a DeepSpeed
launch of the installed module) -> ``hitrs recognize``, ``hitrs data import frame-labels`` + ``hitrs detect``
(which must learn beyond always-background), ``hitrs predict-motion``.

The wheel is built from a copy of the sources (the checkout stays clean; the build must print no packaging
warning) and installed with ``--no-deps`` into a fresh virtual environment that sees this environment's packages
(torch, DeepSpeed, ...) through a ``.pth`` file, so nothing is downloaded; ``import hitrs_fast`` there resolves
to the wheel (checked). The README's install lines are checked against the wheel's requirements: the CPU build
of torch they install first satisfies them (so pip keeps it) and is the Makefile's pin.
Run with ``pytest -s`` to see every command and what it printed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import zipfile
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
# On the official NTU-60 missing-skeleton list: a user's own file of that name is excluded (and listed).
LISTED_NAME = "S001C003P002R002A012"
EMPTY_NAME = "S001C001P001R002A001"  # no body in any frame: excluded and listed, not an all-zero sample
# What the journey appends to each README command: its small budget, and the detection inputs.
BUDGET = {
    "pretrain": ["--steps", "40", "--micro-batch", "4", "--ckpt-every", "2", "--log-every", "1", "--probe", "off",
                 "--threads", "1"],
    "recognize": ["--mode", "linear"],
    "import": ["--class-names", "my_takes/classes.txt"],
    "detect": ["--mode", "linear", "--epochs", "3"],
    "predict-motion": ["--mode", "linear", "--epochs", "1"],
}


def readme_commands() -> list[list[str]]:
    """The ``hitrs`` lines of the README's *Commands* block, as argument lists."""
    block = (ROOT / "README.md").read_text().split("## Commands (installed package)", 1)[1]
    block = block.split("```bash", 1)[1].split("```", 1)[0]
    return [shlex.split(line.split("#", 1)[0]) for line in block.splitlines() if line.startswith("hitrs ")]


def test_readme_install_lines_keep_a_cpu_torch():
    """The README installs a CPU build of torch first, pinned as the Makefile pins it, then the package from the
    clone; the package's requirements (train extra included) accept that torch and name no CUDA library."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    text = (ROOT / "README.md").read_text().split("## Install", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = [line for line in text.splitlines() if line.startswith("pip install")]
    pin = re.search(r"^TORCH_SPEC \?= torch==(\S+)$", (ROOT / "Makefile").read_text(), flags=re.M).group(1)
    assert lines[0] == f'pip install "torch=={pin}+cpu" --index-url https://download.pytorch.org/whl/cpu', lines
    assert lines[1:] == ['pip install ".[train]"', 'pip install ".[train]"'], lines
    project = (ROOT / "pyproject.toml").read_text()
    deps = re.search(r"^dependencies = \[(.*?)^\]", project, flags=re.M | re.S).group(1)
    train = re.search(r"^train = \[(.*?)\]", project, flags=re.M).group(1)
    reqs = [Requirement(r) for r in re.findall(r'"([^"]+)"', deps + train)]
    torch_req = next(r for r in reqs if r.name == "torch")
    assert torch_req.specifier.contains(Version(f"{pin}+cpu"), prereleases=False)
    assert not [r.name for r in reqs if r.name.startswith("nvidia")]


def build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    for rel in SOURCES:
        path = ROOT / rel
        if path.is_dir():
            shutil.copytree(path, src / rel, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, src / rel)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                            str(tmp / "dist"), str(src)], check=True, capture_output=True, text=True)
    log = built.stdout + built.stderr
    # setuptools' packaging warnings (a deprecated license table, a package left out of the configuration, ...)
    assert not re.search(r"\w+Warning:", log), log
    (wheel,) = (tmp / "dist").glob("hitrs_fast-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    assert "hitrs_fast/data/resources/ntu60_missing_skeletons.txt" in names
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


def action_motion(action: int, performer: int, rng: np.random.Generator, frames: int = 80) -> np.ndarray:
    """``[frames, 1, 25, 3]``: one standing pose (1.7 m tall, 3 m from the camera), scaled to the performer's
    size, doing action 1 (waving the right arm), 2 (swaying sideways) or 3 (squatting), with 5 mm of noise."""
    pose = np.random.default_rng(0).uniform(-0.25, 0.25, size=(25, 3)) * [1, 3.4, 0.4]
    pose = pose * (0.9 + 0.05 * performer) + np.random.default_rng(performer).normal(scale=0.01, size=(25, 3))
    pose = pose + [0, 0, 3]
    t = np.linspace(0, 1, frames)[:, None]
    move = np.zeros((frames, 25, 3))
    if action == 1:
        move[:, 8:12, 1] = 0.4 * np.sin(2 * np.pi * 3 * t)
    elif action == 2:
        move[:, :, 0] = 0.2 * np.sin(2 * np.pi * 2 * t)
    else:
        move[:, :, 1] = -0.3 * np.abs(np.sin(2 * np.pi * 1.5 * t))
    return (pose + move + rng.normal(scale=0.005, size=move.shape))[:, None]


def write_recordings(raw: Path) -> None:
    """26 raw .skeleton files of 80 one-body frames: actions 1-3, performers 1-4, cameras 1-2, plus one file
    named like an entry of the official missing-skeleton list and one whose frames hold no body."""
    raw.mkdir()
    rng = np.random.default_rng(0)
    for a in (1, 2, 3):
        for p in (1, 2, 3, 4):
            for c in (1, 2):
                write_ntu_skeleton(raw / f"S001C{c:03d}P{p:03d}R001A{a:03d}.skeleton", [1] * 80, rng,
                                   xyz=action_motion(a, p, rng))
    write_ntu_skeleton(raw / f"{LISTED_NAME}.skeleton", [1] * 80, rng)
    write_ntu_skeleton(raw / f"{EMPTY_NAME}.skeleton", [0] * 80, rng)


def write_labelled_sequences(store: SkeletonStore, out: Path) -> None:
    """Untrimmed sequences from the converted recordings: two actions per sequence, each after 20 frames of
    rest (label 0), one folder per split; class names for labels 1..3."""
    for split in ("train", "test"):
        (out / split).mkdir(parents=True)
        idx = store.split_indices(split)
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
        print(f"\n$ {shlex.join(cmd)}\n{out.strip()}")
        assert result.returncode == 0, out[-4000:]
        return out

    where = run("python", "-c", "import hitrs_fast; print(hitrs_fast.__file__)")
    assert where.strip().startswith(str(env)), where  # the wheel, not the checkout

    commands = {" ".join(c[1:3]) if c[1] == "data" else c[1]: c for c in readme_commands()}
    assert list(commands) == ["data convert", "data describe", "pretrain", "recognize", "data import", "detect",
                              "predict-motion"], list(commands)
    write_recordings(work / "my_skeletons")

    out = run(*commands["data convert"])
    assert "wrote stores/mine: 24 samples, 1920 frames" in out
    assert f"on the missing-skeleton list (the bundled ntu60 list; --missing-list none keeps them):\n  my_skeletons/" \
           f"{LISTED_NAME}.skeleton" in out
    assert f"excluded 1 file with no body in any frame (they would be all-zero samples):\n  my_skeletons/" \
           f"{EMPTY_NAME}.skeleton" in out
    out = run(*commands["data describe"])
    assert "           test: 6  setup 1; camera 1-2; performer 4; replication 1  (made by performer=4)\n" in out
    assert "           train: 18  setup 1; camera 1-2; performer 1-3; replication 1  (made by performer=1-3)\n" in out
    assert "classes    3 present (labels 0-2; num_classes 3)" in out

    # Pre-training, interrupted by Ctrl-C after its first checkpoint: one line, exit 130, the resume command.
    cmd = [*commands["pretrain"], *BUDGET["pretrain"]]
    print(f"\n$ {shlex.join(cmd)}   (SIGINT after the first checkpoint)")
    proc = subprocess.Popen(cmd, cwd=work, env=shell, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (work / "runs/pre/encoder.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    print(stdout.strip() + "\n" + stderr.strip())
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr[-4000:]
    (line,) = stderr.strip().splitlines()
    m = re.fullmatch(r"hitrs pretrain: interrupted \(SIGINT\); last complete checkpoint: runs/pre/checkpoints/"
                     r"step(\d{8}) \(step (\d+)\); resume: (.*)", line)
    assert m and int(m.group(1)) == int(m.group(2)) < 40, line
    step = int(m.group(2))
    resume = shlex.split(m.group(3))
    i = cmd.index("--run-dir")
    assert resume == [*cmd[:i], *cmd[i + 2:], "--run-dir", "runs/pre", "--resume"], resume
    out = run(*resume, "--max-steps-this-run", "2")
    assert f"resuming from step {step} of 40 (runs/pre/checkpoints/step{step:08d})" in out
    assert f"step {step + 2}/40 loss" in out and "\r" not in out
    assert torch.load(work / "runs/pre/encoder.pt", weights_only=True)["step"] == step + 2
    out = run("deepspeed", "--master_port", str(free_port()), "--module", "hitrs_fast.training.pretrain", *cmd[2:],
              "--resume", "--keep-checkpoints", "1", "--max-steps-this-run", "2")
    assert f"step {step + 4}/40 loss" in out and f"step {step + 2}/40" not in out
    assert sorted(p.name for p in (work / "runs/pre/checkpoints").iterdir()) == ["latest_tag", f"step{step + 4:08d}"]
    assert torch.load(work / "runs/pre/encoder.pt", weights_only=True)["step"] == step + 4

    out = run(*commands["recognize"], *BUDGET["recognize"])
    assert "recipe recognition_synthetic.json: chosen for the 18 training samples" in out
    assert re.search(r"training: \d+ epochs x 2 optimizer steps = \d+ steps \(the recipe's 60 epochs raised to make "
                     r"at least 300 steps\)", out), out
    summary = json.loads((work / "runs/rec/summary.json").read_text())
    assert summary["num_classes"] == 3 and summary["test_samples"] == 6
    assert summary["last_epoch"]["epoch"] * 2 >= 300

    write_labelled_sequences(SkeletonStore(work / "stores/mine"), work / "my_takes")
    out = run(*commands["data import"], *BUDGET["import"])
    assert "wrote stores/takes: 12 samples, 2400 frames, splits ['test', 'train']" in out
    out = run(*commands["detect"], *BUDGET["detect"])
    summary = json.loads((work / "runs/det/summary.json").read_text())
    assert summary["num_action_classes"] == 3 and summary["test_videos"] == 3 and "mAP_a" in summary["last_epoch"]
    verdict = summary["versus_baseline"]
    assert not verdict["no_better_than_baseline"] and "WARNING" not in out, verdict  # learned beyond background
    assert summary["last_epoch"]["mAP_a"] > 0

    out = run(*commands["predict-motion"], *BUDGET["predict-motion"])
    summary = json.loads((work / "runs/motion/summary.json").read_text())
    assert summary["verdict"] in out and summary["test_windows"] == 6
    assert f"{summary['train_windows']} from 'train'" in out  # the window counts are printed, not only in the summary
    assert summary["worse_than_zero_velocity"] == (summary["last_epoch"]["mpjpe_mm"] >
                                                   summary["zero_velocity"]["mean_mm"])
