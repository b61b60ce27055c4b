"""Fused joint-embedding kernel vs the float64 reference: output and every gradient.

Runs the Triton kernel through the CPU interpreter (TRITON_INTERPRET=1, set by
tests/conftest.py) with tiny shapes; on a GPU the same tests run the compiled kernel.
Every kernel call happens under NaN-poisoned allocations. Tests marked with the
``bwd_variant`` fixture run once per backward kernel (``HITRS_FAST_EMBEDDING_BWD``).
"""

from __future__ import annotations

import pytest
import torch

from hitrs_fast.embedding import joint_embedding
from hitrs_fast.kernels import joint_embedding as kernel
from hitrs_fast.kernels.joint_embedding import ops as kernel_ops
from hitrs_fast.reference import naive_joint_embedding
from tests.support.nan_poison import poison_torch_empty
from tests.support.tolerances import LOW_PRECISION_FACTOR, assert_close_verbose, assert_low_precision_close, tolerance

pytestmark = pytest.mark.interpreter

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NAMES = ("x", "weight", "bias", "ln_weight", "ln_bias", "pos")


def _inputs(lead: tuple[int, ...], v: int, d: int, c: int = 3) -> list[torch.Tensor]:
    """float64 masters: unit-scale coordinates, LN affine away from (1, 0) so its gradient path is exercised."""
    g = torch.Generator().manual_seed(1234 + 7 * v + d)
    x = torch.randn(*lead, v, c, generator=g, dtype=torch.float64)
    w = torch.randn(d, c, generator=g, dtype=torch.float64) / c**0.5
    b = 0.1 * torch.randn(d, generator=g, dtype=torch.float64)
    gamma = 1.0 + 0.2 * torch.randn(d, generator=g, dtype=torch.float64)
    beta = 0.1 * torch.randn(d, generator=g, dtype=torch.float64)
    pos = torch.randn(v, d, generator=g, dtype=torch.float64)
    return [t.to(DEVICE) for t in (x, w, b, gamma, beta, pos)]


def _run(fn, tensors: list[torch.Tensor], dy: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    out = fn(*leaves)
    grads = torch.autograd.grad(out, leaves, dy.to(out.dtype))
    return out.detach(), [g.detach() for g in grads]


def _triton(*args, **kwargs):
    with poison_torch_empty():
        return joint_embedding(*args, backend="triton", **kwargs)


@pytest.fixture(params=kernel.BWD_VARIANTS)
def bwd_variant(request, monkeypatch):
    """Runs the test with each backward kernel (the launcher reads the variable at every backward)."""
    monkeypatch.setenv(kernel.BWD_VARIANT_ENV, request.param)
    return request.param


SHAPES = [
    pytest.param((2, 3), 25, 128, id="B2-F3-V25-d128"),
    pytest.param((1,), 25, 32, id="B1-V25-d32"),
    pytest.param((7,), 7, 32, id="B7-V7-d32"),
    pytest.param((3, 1), 13, 128, id="B3-F1-V13-d128"),
    pytest.param((5,), 25, 48, id="B5-V25-d48-masked"),
    pytest.param((2,), 7, 1, id="B2-V7-d1"),
    pytest.param((), 25, 32, id="no-lead-V25-d32"),
    pytest.param((1,), 25, 256, id="B1-V25-d256"),
    # The model's V and d with 275 tokens: 8 full 32-token tiles and a ragged 19-token one (tokens backward).
    pytest.param((11,), 25, 128, id="B11-V25-d128-ragged-tiles"),
]


@pytest.mark.parametrize(("lead", "v", "d"), SHAPES)
def test_fp32_matches_float64_oracle(lead, v, d, bwd_variant):
    master = _inputs(lead, v, d)
    oracle_out = naive_joint_embedding(*master)
    dy = torch.randn_like(oracle_out)
    oracle, oracle_grads = _run(naive_joint_embedding, master, dy)
    out, grads = _run(_triton, [t.float() for t in master], dy)
    atol, rtol = tolerance("joint_embedding", torch.float32)
    assert out.dtype == torch.float32 and out.shape == (*lead, v, d)
    assert_close_verbose(out, oracle, atol, rtol, "out")
    for name, g, ref in zip(NAMES, grads, oracle_grads, strict=True):
        assert g.dtype == torch.float32
        assert_close_verbose(g, ref, atol, rtol, f"d{name}")


@pytest.mark.parametrize(("lead", "v", "d"), [
    pytest.param((3,), 25, 128, id="B3-V25-d128"),
    pytest.param((2,), 13, 32, id="B2-V13-d32"),
])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_low_precision_within_twice_pytorch_error(lead, v, d, dtype, bwd_variant):
    """All inputs and parameters in bf16/fp16 (a ``model.to(dtype)``): the flash-attention 2x rule against
    the reference backend, which computes in fp32 and rounds once to the output dtype."""
    master = _inputs(lead, v, d)
    dy = torch.randn(*lead, v, d, dtype=torch.float64, device=DEVICE)
    low = [t.to(dtype) for t in master]
    # The oracle sees the same rounded inputs, so only the computation's error is compared.
    oracle, oracle_grads = _run(naive_joint_embedding, [t.double() for t in low], dy.to(dtype).double())
    torch_out, torch_grads = _run(naive_joint_embedding, low, dy)
    out, grads = _run(_triton, low, dy)
    assert out.dtype == dtype
    assert_low_precision_close(out, torch_out, oracle, "joint_embedding", "out")
    for name, g, tg, ref in zip(NAMES, grads, torch_grads, oracle_grads, strict=True):
        assert g.dtype == dtype
        assert_low_precision_close(g, tg, ref, "joint_embedding", f"d{name}")


# (frames, V, d) for the tokens kernel: token counts never a multiple of its tile, tiles that straddle frame
# boundaries, 1 frame and primes. Under the interpreter (4 programs at most) the last two give several programs
# with several tiles each, so the prefetch of the next tile's inputs and the ragged last tile both run.
TOKEN_TILINGS = [
    pytest.param(1, 25, 128, id="F1-V25-d128"),  # 25 tokens: tiles of 16 and 9
    pytest.param(13, 13, 32, id="F13-V13-d32"),  # 169 tokens: 3 tiles of 64, the last 41
    pytest.param(7, 25, 128, id="F7-V25-d128"),  # 175 tokens: 11 tiles of 16 over 4 programs
    pytest.param(37, 7, 32, id="F37-V7-d32"),  # 259 tokens: 5 tiles of 64 over 3 programs
]


def _tokens_tiling(frames: int, v: int, d: int) -> tuple[int, int, int, int]:
    """(programs, tokens, tokens per program, BLOCK_T) the tokens launcher picks on this device."""
    xf = torch.empty(frames, v, 3, device=DEVICE)
    programs, _, (tokens, per_program, _), meta = kernel_ops._launch_bwd_tokens(xf, torch.empty(0, device=DEVICE), d)
    return programs, tokens, per_program, meta["BLOCK_T"]


def test_token_tilings_cover_ragged_tiles_and_loops():
    """The parametrization of test_tokens_backward_tiles does what its comment says."""
    tilings = [_tokens_tiling(*p.values) for p in TOKEN_TILINGS]
    assert all(tokens % block_t for _, tokens, _, block_t in tilings), tilings
    if DEVICE == "cpu":
        assert any(programs >= 3 and per_program >= 2 * block_t for programs, _, per_program, block_t in tilings)


@pytest.mark.parametrize(("frames", "v", "d"), TOKEN_TILINGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
def test_tokens_backward_tiles(frames, v, d, dtype, monkeypatch):
    """Tokens kernel vs the float64 oracle, dx and every parameter gradient, everything in ``dtype``."""
    monkeypatch.setenv(kernel.BWD_VARIANT_ENV, "tokens")
    master = _inputs((frames,), v, d)
    dy = torch.randn(frames, v, d, dtype=torch.float64, device=DEVICE)
    low = [t.to(dtype) for t in master]
    oracle, oracle_grads = _run(naive_joint_embedding, [t.double() for t in low], dy.to(dtype).double())
    out, grads = _run(_triton, low, dy)
    if dtype == torch.float32:
        atol, rtol = tolerance("joint_embedding", dtype)
        for name, g, ref in zip(NAMES, grads, oracle_grads, strict=True):
            assert_close_verbose(g, ref, atol, rtol, f"d{name}")
        return
    _, torch_grads = _run(naive_joint_embedding, low, dy)
    atol, _ = tolerance("joint_embedding", dtype)
    for name, g, tg, ref in zip(NAMES, grads, torch_grads, oracle_grads, strict=True):
        assert g.dtype == dtype
        torch_err = (tg.double() - ref).abs().max().item()
        assert_close_verbose(g, ref, LOW_PRECISION_FACTOR * torch_err + atol + _interpreter_bf16_slack(ref, dtype),
                             0.0, f"d{name}")


def _interpreter_bf16_slack(ref: torch.Tensor, dtype: torch.dtype) -> float:
    """One bf16 ulp at the largest ``|ref|`` under the interpreter, else 0. Triton's interpreter converts fp32 to
    bf16 by truncation (a GPU rounds to nearest), so a gradient like dx ~ 17 can be 1 ulp (0.125) off where
    PyTorch's rounding happens to be within 1/4 ulp: the 2x rule alone would fail on the interpreter's rounding."""
    if DEVICE != "cpu" or dtype != torch.bfloat16:
        return 0.0
    return 2.0 ** (torch.frexp(ref.abs().max()).exponent.item() - 8)


def test_unknown_backward_variant_is_refused(monkeypatch):
    monkeypatch.setenv(kernel.BWD_VARIANT_ENV, "rows")
    x, *params = [t.float() for t in _inputs((2,), 25, 32)]
    out = _triton(x.requires_grad_(), *params)
    with pytest.raises(ValueError, match="HITRS_FAST_EMBEDDING_BWD='rows': expected one of frames, tokens"):
        out.sum().backward()


def test_bf16_output_from_fp32_inputs():
    """fp32 coordinates and weights, bf16 written once: error is the output rounding only."""
    master = _inputs((2, 2), 25, 128)
    dy = torch.randn(2, 2, 25, 128, dtype=torch.float64, device=DEVICE)
    oracle, oracle_grads = _run(naive_joint_embedding, master, dy)
    out, grads = _run(lambda *t: _triton(*t, out_dtype=torch.bfloat16), [t.float() for t in master], dy)
    assert out.dtype == torch.bfloat16
    assert_low_precision_close(out, oracle.to(torch.bfloat16), oracle, "joint_embedding", "out")
    # Gradients flow back in the fp32 parameter dtypes; dy was rounded to bf16 on the way in.
    _, oracle_grads_bf16_dy = _run(naive_joint_embedding, master, dy.to(torch.bfloat16).double())
    atol, rtol = tolerance("joint_embedding", torch.float32)
    for name, g, ref in zip(NAMES, grads, oracle_grads_bf16_dy, strict=True):
        assert g.dtype == torch.float32
        assert_close_verbose(g, ref, atol, rtol, f"d{name}")
    del oracle_grads


@pytest.mark.skipif(DEVICE != "cpu", reason="CPU autocast path; CUDA autocast is covered on GPU by the benchmark")
def test_autocast_gives_autocast_dtype_output():
    master = [t.float() for t in _inputs((3,), 25, 32)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = _triton(*master)
        ref = joint_embedding(*master, backend="torch")
    assert out.dtype == ref.dtype == torch.bfloat16
    oracle = naive_joint_embedding(*[t.double() for t in master])
    assert_low_precision_close(out, oracle.to(torch.bfloat16), oracle, "joint_embedding", "out")


def test_strided_input():
    """x as a transposed view ``[B, V, C]`` of a ``[V, B, C]`` buffer: strides go to the kernel, no copy."""
    master = _inputs((5,), 25, 32)
    x_t = master[0].transpose(0, 1).contiguous().transpose(0, 1)
    assert not x_t.is_contiguous()
    dy = torch.randn(5, 25, 32, dtype=torch.float64, device=DEVICE)
    oracle, oracle_grads = _run(naive_joint_embedding, master, dy)
    out, grads = _run(_triton, [x_t.float()] + [t.float() for t in master[1:]], dy)
    atol, rtol = tolerance("joint_embedding", torch.float32)
    assert_close_verbose(out, oracle, atol, rtol, "out")
    for name, g, ref in zip(NAMES, grads, oracle_grads, strict=True):
        assert_close_verbose(g, ref, atol, rtol, f"d{name}")


def test_empty_leading_dims():
    master = [t.float() for t in _inputs((0, 3), 25, 32)]
    out, grads = _run(_triton, master, torch.zeros(0, 3, 25, 32, device=DEVICE))
    assert out.shape == (0, 3, 25, 32)
    for g, t in zip(grads, master, strict=True):
        assert g.shape == t.shape and torch.equal(g, torch.zeros_like(t))


def test_backward_is_deterministic(bwd_variant):
    """Several backward programs (frames or tokens split across the persistent grid) reduce in a fixed order."""
    master = [t.float() for t in _inputs((11, 3), 25, 32)]
    dy = torch.randn(11, 3, 25, 32, device=DEVICE)
    _, first = _run(_triton, master, dy)
    _, second = _run(_triton, master, dy)
    for name, a, b in zip(NAMES, first, second, strict=True):
        assert torch.equal(a, b), f"d{name} differs between two identical backward runs"


def test_inference_skips_statistics_and_matches():
    master = [t.float() for t in _inputs((2,), 25, 32)]
    with torch.no_grad():
        out = _triton(*master)
    assert not out.requires_grad
    atol, rtol = tolerance("joint_embedding", torch.float32)
    assert_close_verbose(out, naive_joint_embedding(*[t.double() for t in master]), atol, rtol, "out")


def test_only_some_inputs_require_grad():
    """Frozen parameters: the Function returns None for them and the rest stays correct."""
    master = [t.float() for t in _inputs((2,), 25, 32)]
    x = master[0].clone().requires_grad_()
    pos = master[5].clone().requires_grad_()
    out = _triton(x, *master[1:5], pos)
    dy = torch.randn_like(out)
    dx, dpos = torch.autograd.grad(out, (x, pos), dy)
    ref = [t.double().requires_grad_() for t in (master[0], master[5])]
    ref_out = naive_joint_embedding(ref[0], *[t.double() for t in master[1:5]], ref[1])
    rdx, rdpos = torch.autograd.grad(ref_out, ref, dy.double())
    atol, rtol = tolerance("joint_embedding", torch.float32)
    assert_close_verbose(dx, rdx, atol, rtol, "dx")
    assert_close_verbose(dpos, rdpos, atol, rtol, "dpos")


def test_torch_compile_traces_through_registered_ops():
    """``torch.library.triton_op`` registration: a full graph, no break, same results as eager."""
    master = [t.float() for t in _inputs((2,), 25, 32)]
    backend = "inductor" if DEVICE == "cuda" else "aot_eager"  # inductor has no CPU path for Triton kernels
    fn = torch.compile(lambda *t: joint_embedding(*t, backend="triton"), fullgraph=True, backend=backend)
    dy = torch.randn(2, 25, 32, device=DEVICE)
    out, grads = _run(fn, master, dy)
    eager_out, eager_grads = _run(lambda *t: joint_embedding(*t, backend="triton"), master, dy)
    atol, rtol = tolerance("joint_embedding", torch.float32)
    assert_close_verbose(out, eager_out, atol, rtol, "compiled out")
    for name, g, ref in zip(NAMES, grads, eager_grads, strict=True):
        assert_close_verbose(g, ref, atol, rtol, f"compiled d{name}")
