"""A CPU training step gives the same bits at every torch thread count.

The checker runs each step under a dispatch mode that re-runs every op it sees with one thread and compares the
two results bit for bit, so a failure names the op (and shape) whose result depends on the thread count.
MKL's strict reproducible mode is on (``tests/conftest.py``, as in every command); the LayerNorm weight and bias
gradients come from ``hitrs_fast.reference.layer_norm``.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from hitrs_fast.config import HiTRSConfig
from hitrs_fast.models import HiTRS
from hitrs_fast.pretext import HiTRSForPretraining
from hitrs_fast.reference.layer_norm import layer_norm
from hitrs_fast.tasks import ActionRecognizer, FrameDetector, MotionPredictor, euclidean_loss

REPO = Path(__file__).resolve().parents[2]
THREADS = 3  # against 1; more threads than this machine's cores is fine, the split is what changes

# Ops that draw random numbers (the step below draws none, but a re-run would draw anew) or only allocate.
_NOT_RERUN = ("aten.bernoulli", "aten.rand", "aten.normal", "aten.uniform", "aten.multinomial", "aten.randperm",
              "aten.randint", "aten.exponential", "aten.empty", "aten.native_dropout")


class ThreadCountCheck(TorchDispatchMode):
    """Runs each out-of-place op at the ambient thread count and again at one thread; ``differing`` counts the
    ``(op, output shape)`` pairs whose floating outputs differ in any bit."""

    def __init__(self, threads: int) -> None:
        super().__init__()
        self.threads = threads
        self.differing: collections.Counter = collections.Counter()
        self.checked = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func)
        rerun = not (name.split(".")[1].endswith("_") or "out" in kwargs or name.startswith(_NOT_RERUN))
        reference = None
        if rerun:
            clone = lambda t: t.clone() if isinstance(t, torch.Tensor) else t  # noqa: E731
            torch.set_num_threads(1)
            try:
                reference = func(*tree_map(clone, args), **tree_map(clone, kwargs))
            finally:
                torch.set_num_threads(self.threads)
        out = func(*args, **kwargs)
        if reference is not None:
            self.checked += 1
            outs = out if isinstance(out, (tuple, list)) else [out]
            refs = reference if isinstance(reference, (tuple, list)) else [reference]
            for got, want in zip(outs, refs, strict=True):
                if (isinstance(got, torch.Tensor) and got.is_floating_point() and got.numel()
                        and not torch.equal(torch.nan_to_num(got), torch.nan_to_num(want))):
                    self.differing[(name, tuple(got.shape))] += 1
                    break
        return out


def check_step(step) -> None:
    """Runs ``step()`` (forward and backward) at ``THREADS`` threads under :class:`ThreadCountCheck`."""
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        with ThreadCountCheck(THREADS) as check:
            step()
    finally:
        torch.set_num_threads(before)
    assert check.checked > 50, "the step ran (almost) no ops under the checker"
    assert not check.differing, f"ops whose result depends on the thread count: {dict(check.differing)}"


def _skeletons(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, 25, 3, generator=torch.Generator().manual_seed(seed)) * 0.3


def test_layer_norm_matches_pytorch_and_its_affine_gradients_do_not_depend_on_threads():
    x = torch.randn(3000, 64, dtype=torch.float64, requires_grad=True)
    w = (1 + 0.1 * torch.randn(64, dtype=torch.float64)).requires_grad_()
    b = (0.1 * torch.randn(64, dtype=torch.float64)).requires_grad_()
    dy = torch.randn(3000, 64, dtype=torch.float64)
    want = torch.autograd.grad(torch.nn.functional.layer_norm(x, (64,), w, b, 1e-5), (x, w, b), dy)
    out = layer_norm(x, w, b, 1e-5)
    assert torch.equal(out, torch.nn.functional.layer_norm(x, (64,), w, b, 1e-5))  # forward: PyTorch's
    got = torch.autograd.grad(out, (x, w, b), dy)
    assert torch.equal(got[0], want[0])  # input gradient: PyTorch's
    for g, r in zip(got[1:], want[1:], strict=True):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)
    grads = {}
    x32, w32, b32, dy32 = (t.detach().float().requires_grad_() for t in (x, w, b, dy))
    for threads in (1, 2, 3):
        torch.set_num_threads(threads)
        grads[threads] = torch.autograd.grad(layer_norm(x32, w32, b32, 1e-5), (x32, w32, b32), dy32)
    torch.set_num_threads(1)
    for threads in (2, 3):
        assert all(torch.equal(a, c) for a, c in zip(grads[1], grads[threads], strict=True)), threads
    # bf16 activations with fp32 affine (autocast's mix): the same dtypes as PyTorch's.
    xb = torch.randn(8, 64, dtype=torch.bfloat16, requires_grad=True)
    outb = layer_norm(xb, w32, b32, 1e-5)
    assert outb.dtype == torch.nn.functional.layer_norm(xb, (64,), w32, b32, 1e-5).dtype
    gx, gw = torch.autograd.grad(outb.float().sum(), (xb, w32))
    assert gx.dtype == torch.bfloat16 and gw.dtype == torch.float32


def test_pretraining_step_is_the_same_at_every_thread_count():
    torch.manual_seed(0)
    model = HiTRSForPretraining(HiTRSConfig.preset("tiny"))  # backend auto: SDPA on the CPU, as the commands run
    x = _skeletons(4, 1, 40)
    lengths = torch.tensor([40, 33, 40, 21])

    def step():
        model(x, lengths, generator=torch.Generator().manual_seed(1))["loss"].backward()

    check_step(step)


def test_downstream_steps_are_the_same_at_every_thread_count():
    torch.manual_seed(0)
    cfg = HiTRSConfig.preset("tiny")
    motion = MotionPredictor(HiTRS(cfg), horizon=12, hidden=128, observe=24)
    torch.nn.init.normal_(motion.out.weight, std=0.01)  # a zero output layer would hide its input's bits
    windows = _skeletons(64, 36, seed=1)
    detector = FrameDetector(HiTRS(cfg), num_classes=5, head="tcn", tcn_layers=2)
    x_ctx = _skeletons(2, 2, 30 + 2 * detector.context, seed=2)
    labels = torch.randint(0, 6, (60,), generator=torch.Generator().manual_seed(3))
    recognizer = ActionRecognizer(HiTRS(cfg), num_classes=7)
    clips = _skeletons(8, 2, 30, seed=4)

    def step():
        euclidean_loss(motion(windows[:, :24]), windows[:, 24:]).backward()
        torch.nn.functional.cross_entropy(detector.window_logits(x_ctx).flatten(0, 1), labels).backward()
        torch.nn.functional.cross_entropy(recognizer(clips), torch.arange(8) % 7).backward()

    check_step(step)


@pytest.mark.slow
def test_pretraining_command_ends_on_the_same_model_at_1_and_3_threads(tmp_path):
    """The main job's command, a few steps, at two thread counts: the same encoder to the last bit and the same
    logged losses (a subprocess each: MKL's mode is set by the command before its first matrix product)."""
    runs = {}
    for threads in (1, THREADS):
        run_dir = tmp_path / f"t{threads}"
        cmd = [sys.executable, "training/pretrain.py", "--steps", "6", "--log-every", "1", "--probe", "off",
               "--no-progress", "--threads", str(threads), "--synthetic-per-class", "6", "--micro-batch", "16",
               "--run-dir", str(run_dir), "--cache-dir", str(tmp_path / "data")]
        env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
        env["OMP_NUM_THREADS"] = str(threads)
        subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True, timeout=600)
        losses = [json.loads(line).get("loss") for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        runs[threads] = (torch.load(run_dir / "encoder.pt", map_location="cpu")["state_dict"], losses)
    (one, losses_one), (many, losses_many) = runs[1], runs[THREADS]
    assert losses_one == losses_many
    assert one.keys() == many.keys()
    assert [k for k in one if not torch.equal(one[k], many[k])] == []
