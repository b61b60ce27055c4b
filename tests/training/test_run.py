"""Run helpers shared by pre-training and the downstream tasks (hitrs_fast.training.run): atomic writes,
seed mixing and the heap trimmer."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

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


# A training-like allocation pattern in a fresh process: per step, activations of batch-dependent sizes (freed at
# the end of the step) and small tensors that outlive it; glibc's heap fragments and the resident size grows.
HEAP_WORKLOAD = """
import ctypes, json, sys
from collections import deque
import numpy as np, torch
from hitrs_fast.training.run import HeapTrimmer
ctypes.CDLL("libc.so.6").mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD where a long run's dynamic threshold ends up
trimmer = HeapTrimmer(fraction=0.0, factor=1.0)
rng, pins, rss = np.random.default_rng(0), deque(maxlen=400), []
for step in range(300):
    acts = []
    for _ in range(8):  # an activation, then a small tensor allocated after it, which pins the heap
        acts.append(torch.ones(int(rng.integers(64_000, 1_500_000))))
        pins.append(torch.ones(int(rng.integers(16, 4096))))
    del acts
    if step == 49:
        trimmer.floor = trimmer.resident_bytes() + (48 << 20)  # the budget: 48 MB above the warmed-up size
    if step >= 50 and sys.argv[1] == "trim":
        trimmer.step()
    rss.append(trimmer.resident_bytes())
print(json.dumps({"budget": trimmer.floor, "rss": rss[50:], "trims": trimmer.trims}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator and /proc/self/statm")
def test_heap_trimmer_bounds_resident_memory_over_hundreds_of_steps():
    """Without the trimmer the resident size climbs past the budget; with it, after each step it stays within
    the budget (the steps between two trims add what one step allocates, a few MB here)."""
    def run(mode):
        out = subprocess.run([sys.executable, "-c", HEAP_WORKLOAD, mode], capture_output=True, text=True,
                             timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    grown = run("none")
    if max(grown["rss"]) <= grown["budget"]:
        pytest.skip("this allocator does not fragment under the workload (not glibc?)")
    trimmed = run("trim")
    assert trimmed["trims"] >= 1
    assert max(trimmed["rss"]) <= trimmed["budget"], (max(trimmed["rss"]) - trimmed["budget"]) >> 20
