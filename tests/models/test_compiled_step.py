"""The pre-training step of the Triton backend under ``torch.compile`` with Inductor, as training compiles it
(``hitrs_fast.training.compiled``): one graph forward and backward (``fullgraph=True``), the same losses and
gradients as the eager step, and no recompilation across batches of one length bucket. The eager side is the
reference backend with the same weights: tests/models/test_model_backends.py shows the eager Triton step equals it,
and under the interpreter an eager Triton step costs minutes that this comparison does not need.

On the CPU the kernels run through the Triton interpreter as opaque ops, so Inductor generates C++ for
everything around them: what it fuses differs from a GPU's Triton code, but the graph, the ops and their
registration are the ones a GPU compiles. A reduced tiny preset (one layer per level) keeps code generation
short. On a GPU the widths are the smallest every kernel takes there (C and head_dim 64) and the step runs under
bf16 autocast, so the fused attention and feed-forward sublayers are inside the compiled graph, traced through
their ``triton_op`` registration with pinned configs.
"""

from __future__ import annotations

import re
import time

import pytest
import torch
from torch._inductor.utils import run_and_get_code

from hitrs_fast import HiTRSConfig, HiTRSForPretraining
from hitrs_fast.sampling import SampleRandom
from hitrs_fast.training.compiled import CompileSettings, compile_module, step_inputs
from tests.support.devices import kernel_device
from tests.support.tolerances import assert_close_verbose, assert_low_precision_close, tolerance

ON_GPU = torch.cuda.is_available()
CONFIG = HiTRSConfig.preset("tiny", clip_layers=1, video_layers=1, dropout=0.0)
if ON_GPU:
    CONFIG = CONFIG.replace(frame_dim=64, clip_dim=64, video_dim=64, frame_ffn=64, clip_ffn=64, video_ffn=64,
                            num_heads=2, head_dim=64)
DTYPE = torch.bfloat16 if ON_GPU else torch.float32
BUCKET = 24  # frames: every batch below is padded to it


def _batch(lengths: list[int], seed: int, device: torch.device):
    g = torch.Generator().manual_seed(seed)
    b = len(lengths)
    x = torch.zeros(b, 1, BUCKET, 25, 3)
    for i, t in enumerate(lengths):
        x[i, 0, :t] = 0.3 * torch.randn(t, 25, 3, generator=g)
    return x.to(device), torch.tensor(lengths), torch.arange(b, device=device) + 100 * seed


def count_launches(code: str) -> int:
    """Kernel launches in the ``call`` function of an Inductor output module: its generated kernels (C++, or
    Triton ``.run``, our kernels included on a GPU), the extern calls (GEMMs) and the custom ops (our Triton
    kernels, opaque under the interpreter)."""
    body = re.split(r"\n\s*def call\(", code, maxsplit=1)[1]
    body = re.split(r"\n(?:runner = |\s*def )", body, maxsplit=1)[0]
    pattern = r"^\s+(?:\w+ = )?(cpp_fused_\w+\(|\w+\.run\(|extern_kernels\.\w+\(|torch\.ops\.\w+\.\w+)"
    return len(re.findall(pattern, body, flags=re.MULTILINE))


def _step(model, x, lengths, ids, seed: int, compiled: bool, dtype: torch.dtype = DTYPE):
    model.zero_grad(set_to_none=True)
    x, lengths, rng = step_inputs(x, lengths, ids, seed, compiled)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        out = model(x, lengths, generator=rng)
    out["loss"].backward()
    grads = {n.removeprefix("_orig_mod."): p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in out.items()}, grads


def test_triton_step_compiles_with_inductor_matches_eager_and_keeps_one_graph_per_bucket(capsys):
    torch.manual_seed(0)
    device = kernel_device()
    model = HiTRSForPretraining(CONFIG, backend="triton").to(device)
    eager = HiTRSForPretraining(CONFIG, backend="torch").to(device)
    eager.load_state_dict(model.state_dict())
    torch._dynamo.reset()
    compiled = compile_module(model, CompileSettings("default", graphs=1))

    x, lengths, ids = _batch([24, 19, 22], seed=1, device=device)
    start = time.perf_counter()
    got, codes = run_and_get_code(lambda: _step(compiled, x, lengths, ids, seed=11, compiled=True))
    seconds = time.perf_counter() - start
    forward_launches = count_launches(codes[0])
    assert forward_launches <= 100, f"{forward_launches} kernel launches in the compiled forward"
    want = _step(eager, x, lengths, ids, seed=11, compiled=False)
    assert got[0].keys() == want[0].keys() and got[1].keys() == want[1].keys()
    if DTYPE == torch.float32:
        atol, rtol = tolerance("model", DTYPE)
        for name in want[0]:
            assert_close_verbose(got[0][name], want[0][name], atol, rtol, f"compiled {name}")
        for name in want[1]:
            assert_close_verbose(got[1][name], want[1][name], atol, rtol, f"compiled grad {name}")
    else:  # bf16: compiled and eager each against the eager fp32 step, by the 2x rule
        oracle = _step(eager, x, lengths, ids, seed=11, compiled=False, dtype=torch.float32)
        for i, kind in ((0, "loss"), (1, "grad")):
            for name in want[i]:
                assert_low_precision_close(got[i][name], want[i][name], oracle[i][name], "model",
                                           f"compiled {kind} {name}", dtype=torch.bfloat16)

    # Other lengths, other samples, another seed, same bucket: the graph is reused (a recompile raises).
    x2, lengths2, ids2 = _batch([20, 24, 23], seed=2, device=device)
    with torch._dynamo.config.patch(error_on_recompile=True):
        got2 = _step(compiled, x2, lengths2, ids2, seed=12, compiled=True)
    want2 = _step(eager, x2, lengths2, ids2, seed=12, compiled=False)
    atol, rtol = tolerance("model", DTYPE)
    assert_close_verbose(got2[0]["loss"], want2[0]["loss"], atol, rtol, "second batch loss")
    with capsys.disabled():
        print(f"\n[compiled Triton step: Inductor compile + first step {seconds:.0f} s on this CPU; "
              f"{forward_launches} kernel launches in the forward graph, {count_launches(codes[-1])} in the "
              "backward]")


def test_sample_random_seed_tensor_draws_what_the_int_draws():
    """A compiled step takes its pretext seed as a device tensor: the draws are the int seed's."""
    ids = torch.arange(6) * 7
    for seed in (0, 12345, 2**40 + 3):
        a = SampleRandom(seed, ids).rand((6, 11), "cpu")
        b = SampleRandom(SampleRandom.device_seed(seed, "cpu"), ids).rand((6, 11), "cpu")
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="one integer"):
        SampleRandom(torch.tensor([1.5]), ids)
