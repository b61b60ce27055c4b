"""User errors of the commands: each is one line ``<command>: error: ...`` on stderr with exit code 2 and
the valid choices, never a traceback; pre-training reports them before DeepSpeed is imported."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from hitrs_fast import HiTRS, HiTRSConfig
from hitrs_fast.cli import main as hitrs
from hitrs_fast.data.store import StoreSample, write_store


def one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"hitrs {command}: error: "), err
    return err


@pytest.fixture()
def store(tmp_path):
    """Six labelled 40-frame samples; split ``train`` holds four, ``test`` two, ``empty`` none."""
    rng = np.random.default_rng(0)
    samples = [StoreSample(f"s{i}", rng.normal(size=(40, 2, 25, 3)).astype(np.float32), label=i % 2)
               for i in range(6)]
    return write_store(tmp_path / "store", samples, info={"source": "test", "num_classes": 2},
                       splits={"train": np.arange(4), "test": np.array([4, 5]), "empty": np.array([], np.int64)})


@pytest.fixture()
def encoder_pt(tmp_path):
    cfg = HiTRSConfig.preset("tiny")
    path = tmp_path / "encoder.pt"
    torch.save({"state_dict": HiTRS(cfg, backend="torch").state_dict(), "config": cfg.to_dict(), "step": 1}, path)
    return path


@pytest.mark.parametrize("command", ["recognize", "detect", "predict-motion"])
def test_empty_split(command, store, tmp_path, capsys):
    argv = [command, "--data", str(store), "--split", "train", "--test-split", "empty",
            "--run-dir", str(tmp_path / "r")]
    assert hitrs(argv) == 2
    err = one_error_line(capsys, command)
    assert "--test-split 'empty': the split is empty" in err and "'train': 4" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("init", ["random", "checkpoint"])
def test_set_typo_names_the_field(init, store, encoder_pt, tmp_path, capsys):
    argv = ["recognize", "--data", str(store), "--set", "dropuot=0.1", "--run-dir", str(tmp_path / "r"),
            "--init", "random" if init == "random" else str(encoder_pt)]
    assert hitrs(argv) == 2
    err = one_error_line(capsys, "recognize")
    assert "'dropuot' is not a model config field (did you mean 'dropout'?); fields: num_joints," in err
    assert "architecture" not in err


def test_unknown_split_lists_the_splits(store, capsys):
    assert hitrs(["predict-motion", "--data", str(store), "--split", "xsub_train"]) == 2
    assert "--split 'xsub_train': not a split of" in one_error_line(capsys, "predict-motion")
    assert hitrs(["detect", "--data", str(store)]) == 2  # a trimmed store: no per-frame labels
    assert "hitrs data import frame-labels" in one_error_line(capsys, "detect")


def test_data_errors(tmp_path, capsys):
    assert hitrs(["data", "convert", "ntu", "--input", str(tmp_path / "none"), "--output", str(tmp_path / "o")]) == 2
    assert "not a directory" in one_error_line(capsys, "data")
    assert hitrs(["data", "describe", str(tmp_path / "none")]) == 2
    assert "not a directory" in one_error_line(capsys, "data")
    assert hitrs(["data", "import", "frame-labels", "--input", str(tmp_path), "--output", str(tmp_path / "o")]) == 2
    assert "no .npz files" in one_error_line(capsys, "data")


# Pre-training: each error stops the job before DeepSpeed is imported (a fresh interpreter checks sys.modules).
PRETRAIN = """
import sys
from hitrs_fast.training.pretrain import main
rc = main(sys.argv[1:], prog="hitrs pretrain")
assert "deepspeed" not in sys.modules, "DeepSpeed was imported before the arguments were checked"
sys.exit(rc)
"""


@pytest.mark.parametrize("argv,match", [
    (["--set", "dropuot=0.1"], "'dropuot' is not a model config field (did you mean 'dropout'?)"),
    (["--split", "empty"], "--split 'empty': the split is empty in"),
    (["--set", "clip_stride=30"], "--split 'train' of .*: no sample of at least 61 frames to pre-train on (4 samples, "
                                  "the longest 40 frames)"),
    (["--split", "nope"], "--split 'nope': not a split of .* (splits: ['empty', 'test', 'train'])"),
    (["--keep-checkpoints", "-1"], "--keep-checkpoints and --ckpt-every must be >= 0"),
    (["--ds-config", "nope.json"], "no packaged config of that name"),
])
def test_pretrain_errors_before_deepspeed(argv, match, store, tmp_path):
    result = subprocess.run([sys.executable, "-c", PRETRAIN, "--data", str(store), "--run-dir", str(tmp_path / "r"),
                             *argv], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("hitrs pretrain: error: "), err
    assert re.search(re.escape(match).replace(re.escape(".*"), ".*"), err), err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("option,value,match", [
    ("--index-list", "nope.txt", "--index-list nope.txt: [Errno 2] No such file or directory"),
    ("--recipe", "nope.json", "no packaged config of that name (available in hitrs_fast.configs/downstream: "
                              "['recognition_released.json', 'recognition_synthetic.json'])"),
    ("--init", "nowhere", "--init nowhere: no such file or directory; expected 'random', an encoder.pt"),
])
def test_missing_files(option, value, match, store, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert hitrs(["recognize", "--data", str(store), option, value]) == 2
    assert match in one_error_line(capsys, "recognize")


def test_pretrain_help_does_not_start_deepspeed():
    code = ("import sys\nfrom hitrs_fast.cli import main\ntry:\n    main(['pretrain', '--help'])\n"
            "except SystemExit as e:\n    assert e.code == 0\nassert 'deepspeed' not in sys.modules\nprint('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("usage: hitrs pretrain"), result.stderr


@pytest.mark.parametrize("argv,prog,message", [
    (["pretrain", "--steps", "x"], "hitrs pretrain", "argument --steps: invalid int value: 'x'"),
    (["recognize", "--mode", "lin"], "hitrs recognize", "argument --mode: invalid choice: 'lin'"),
    (["data", "convert", "ntu", "--output", "o"], "hitrs data convert ntu",
     "the following arguments are required: --input"),
    (["convert-checkpoint"], "hitrs convert-checkpoint", "the following arguments are required: checkpoint"),
])
def test_malformed_command_lines_are_one_line_with_help_pointer(argv, prog, message, capsys):
    with pytest.raises(SystemExit) as ei:
        hitrs(argv)
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"{prog}: error: {message}"), err
    assert err.rstrip().endswith(f"(see {prog} --help)"), err


def test_init_that_is_not_a_checkpoint_says_what_it_is(store, tmp_path, capsys):
    """A text file, and a pickle of objects other than tensors: one line saying what the file is, never torch's
    advice to load it with weights_only=False (which would run code stored in the file)."""
    text = tmp_path / "notes.txt"
    text.write_text("step,loss\n1,2.0\n")
    assert hitrs(["recognize", "--data", str(store), "--init", str(text)]) == 2
    err = one_error_line(capsys, "recognize")
    assert f"--init {text}: not a torch checkpoint" in err and "starts with 'step,loss'" in err, err
    objects = tmp_path / "objects.pt"
    torch.save({"args": argparse.Namespace(lr=0.1)}, objects)
    assert hitrs(["recognize", "--data", str(store), "--init", str(objects)]) == 2
    err = one_error_line(capsys, "recognize")
    assert "holds Python objects other than tensors" in err and "weights_only" not in err, err
