"""Run helpers shared by pre-training and the downstream tasks (hitrs_fast.training.run): atomic writes
and seed mixing."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch

from hitrs_fast.training.checkpoint import save_module_atomic
from hitrs_fast.training.run import atomic_file, atomic_torch_save, atomic_write_json, atomic_write_text, mix_seed


def test_atomic_write_replaces_whole_file_with_usual_permissions(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two" and os.listdir(path.parent) == ["a.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600
    atomic_write_json(tmp_path / "b.json", {"z": 1, "a": [1, 2]})
    assert (tmp_path / "b.json").read_text().startswith('{\n  "a"')


def test_atomic_file_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_torch_save({"epoch": 1}, path)
    with pytest.raises(RuntimeError, match="killed"), atomic_file(path, "wb") as f:
        f.write(b"half a checkpoint")
        raise RuntimeError("killed")
    assert torch.load(path, weights_only=True) == {"epoch": 1} and os.listdir(tmp_path) == ["ckpt.pt"]
    with pytest.raises(ValueError, match="mode"), atomic_file(path, "a"):
        pass


def test_save_module_atomic_round_trip(tmp_path):
    module = torch.nn.Linear(3, 2)
    save_module_atomic(module, tmp_path / "enc" / "encoder.pt", {"step": 7})
    loaded = torch.load(tmp_path / "enc" / "encoder.pt", weights_only=True)
    assert loaded["step"] == 7 and torch.equal(loaded["state_dict"]["weight"], module.weight.detach())


def test_mix_seed_is_seed_sequence_of_the_parts_mod_2_32():
    assert mix_seed(3, 5, 1) == int(np.random.SeedSequence([3, 5, 1]).generate_state(1)[0])
    assert mix_seed(-1, 2) == mix_seed(2**32 - 1, 2)
    assert len({mix_seed(0, step, 0, 0) for step in range(100)}) == 100
