"""Public joint-embedding API: module wiring, state_dict across backends, dispatch, errors."""

from __future__ import annotations

import warnings

import pytest
import torch

from hitrs_fast.embedding import JointEmbedding, TritonJointEmbedding, joint_embedding
from hitrs_fast.reference import naive_joint_embedding
from tests.support.devices import kernel_device
from tests.support.tolerances import assert_close_verbose, assert_low_precision_close, tolerance

KEYS = {"linear.weight", "linear.bias", "norm.weight", "norm.bias", "pos"}


def _params(v: int = 25, d: int = 32, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    return [torch.randn(d, 3, dtype=dtype), torch.randn(d, dtype=dtype), 1 + 0.1 * torch.randn(d, dtype=dtype),
            torch.randn(d, dtype=dtype), torch.randn(v, d, dtype=dtype)]


def test_state_dict_keys_and_shapes():
    sd = JointEmbedding(25, 3, 128).state_dict()
    assert set(sd) == KEYS
    assert sd["linear.weight"].shape == (128, 3) and sd["pos"].shape == (25, 128)


@pytest.mark.interpreter
@pytest.mark.parametrize(("src", "dst"), [("torch", "triton"), ("triton", "torch")])
def test_state_dict_round_trip_between_backends(src, dst):
    device = kernel_device()
    a = JointEmbedding(13, 3, 32, backend=src).to(device)
    with torch.no_grad():
        for p in a.parameters():
            p.add_(0.1 * torch.randn_like(p))  # move away from the init so a missed copy shows
    b = JointEmbedding(13, 3, 32, backend=dst).to(device)
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.randn(3, 13, 3, device=device)
    atol, rtol = tolerance("joint_embedding", torch.float32)
    assert_close_verbose(b(x), a(x), atol, rtol, f"{dst} after loading {src} weights")


def test_auto_on_cpu_is_the_reference_and_quiet():
    """Even under TRITON_INTERPRET=1 (set by conftest) auto never picks the slow interpreter."""
    x, params = torch.randn(2, 25, 3), _params()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = joint_embedding(x, *params, backend="auto")
        out64 = joint_embedding(x.double(), *[p.double() for p in params], backend="auto")
    assert torch.equal(out, naive_joint_embedding(x, *params))
    assert out64.dtype == torch.float64


def test_auto_reasons_on_cpu_mention_device(monkeypatch):
    """auto passes over the kernel on CPU for the device alone (quietly, see the test above)."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # as conftest sets it on CPU; the GPU campaign runs without it
    reasons = TritonJointEmbedding.device_reasons(torch.device("cpu"), requested=False)
    assert reasons and all("interpreter" in r for r in reasons)
    monkeypatch.delenv("TRITON_INTERPRET")
    reasons = TritonJointEmbedding.device_reasons(torch.device("cpu"), requested=False)
    assert reasons and all("is not CUDA" in r for r in reasons)


@pytest.mark.interpreter
def test_explicit_triton_refuses_float64_with_reason():
    x, params = torch.randn(2, 25, 3, dtype=torch.float64), _params(dtype=torch.float64)
    with pytest.raises(NotImplementedError, match=r"x dtype torch\.float64"):
        joint_embedding(x, *params, backend="triton")


@pytest.mark.interpreter
def test_explicit_triton_refuses_oversized_backward_tile():
    x, params = torch.randn(1, 200, 3), _params(v=200, d=256)
    with pytest.raises(NotImplementedError, match="backward tile"):
        joint_embedding(x, *params, backend="triton")


def test_module_matches_functional_reference():
    m = JointEmbedding(25, 3, 32, backend="torch")
    x = torch.randn(2, 4, 25, 3)
    ref = naive_joint_embedding(x, m.linear.weight, m.linear.bias, m.norm.weight, m.norm.bias, m.pos)
    assert torch.equal(m(x), ref)
    assert "backend='torch'" in repr(m)


def test_out_dtype_is_honoured_by_the_reference():
    x, params = torch.randn(2, 25, 3), _params()
    assert joint_embedding(x, *params, backend="torch", out_dtype=torch.bfloat16).dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert joint_embedding(x, *params, backend="torch").dtype == torch.bfloat16


@pytest.mark.parametrize(("case", "match"), [
    ("x_1d", "x must be a floating"),
    ("x_int", "x must be a floating"),
    ("weight_c", r"weight must be \[d, C=3\]"),
    ("bias", r"bias must be \[d=32\]"),
    ("pos", r"pos must be \[V=25, d=32\]"),
    ("device", "one device"),
])
def test_bad_inputs_raise_value_error(case, match):
    x, (w, b, g, beta, pos) = torch.randn(2, 25, 3), _params()
    if case == "x_1d":
        x = torch.randn(3)
    elif case == "x_int":
        x = torch.ones(2, 25, 3, dtype=torch.int64)
    elif case == "weight_c":
        w = torch.randn(32, 4)
    elif case == "bias":
        b = torch.randn(31)
    elif case == "pos":
        pos = torch.randn(24, 32)
    elif case == "device":
        pos = pos.to("meta")
    with pytest.raises(ValueError, match=match):
        joint_embedding(x, w, b, g, beta, pos)


def test_unknown_backend_raises():
    with pytest.raises(ValueError, match="backend must be one of"):
        joint_embedding(torch.randn(2, 25, 3), *_params(), backend="cuda")


def test_reference_gradcheck_float64():
    tensors = [torch.randn(2, 5, 3, dtype=torch.float64)] + _params(v=5, d=8, dtype=torch.float64)
    assert torch.autograd.gradcheck(naive_joint_embedding, [t.requires_grad_() for t in tensors])


def _bf16_module_with_offset_coordinates(backend: str, offset: float) -> tuple[JointEmbedding, torch.Tensor]:
    """A bf16 module (DeepSpeed's bf16 mode casts parameters only) and fp32 coordinates around ``offset``.

    With an offset the bias cancels ``W @ offset`` so the Linear output stays O(1): rounding the
    coordinates to bf16 (spacing 4 at 1000) would then change it by O(1), far beyond tolerance.
    """
    module = JointEmbedding(25, 3, 32, backend=backend)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))
        module.linear.bias.sub_(module.linear.weight.sum(1) * offset)
    device = kernel_device() if backend == "triton" else torch.device("cpu")
    module = module.to(device, torch.bfloat16)
    return module, offset + torch.randn(2, 3, 25, 3, device=device)


@pytest.mark.parametrize("offset", [0.0, 1000.0], ids=["unit", "offset1000"])
@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpreter)])
def test_fp32_coordinates_into_bf16_parameters(backend, offset):
    """fp32 coordinates, bf16 parameters: computed in fp32 (coordinates never rounded), output in the
    parameter dtype, every gradient in its own tensor's dtype; all against the float64 oracle by the
    2x rule, the reference error being the best possible one (the oracle rounded to that dtype)."""
    module, x = _bf16_module_with_offset_coordinates(backend, offset)
    x.requires_grad_()
    out = module(x)
    assert out.dtype == torch.bfloat16
    dy = torch.randn(out.shape, device=out.device).to(torch.bfloat16)
    out.backward(dy)
    params = [module.linear.weight, module.linear.bias, module.norm.weight, module.norm.bias, module.pos]
    leaves = [t.detach().double().requires_grad_() for t in (x, *params)]
    oracle = naive_joint_embedding(*leaves, eps=module.norm.eps)
    oracle.backward(dy.double())
    for name, got, ref in zip(("out", "dx", "dweight", "dbias", "dln_weight", "dln_bias", "dpos"),
                              (out, x.grad, *(p.grad for p in params)), (oracle, *(t.grad for t in leaves)),
                              strict=True):
        expected_dtype = torch.float32 if name == "dx" else torch.bfloat16
        assert got.dtype == expected_dtype, f"{name} is {got.dtype}"
        assert_low_precision_close(got, ref.to(expected_dtype), ref, "joint_embedding", f"{name} ({backend})")


def test_output_dtype_follows_autocast_then_out_dtype_then_parameters():
    module, x = _bf16_module_with_offset_coordinates("torch", 0.0)
    assert module(x).dtype == torch.bfloat16  # the parameters' dtype
    params = [module.linear.weight, module.linear.bias, module.norm.weight, module.norm.bias, module.pos]
    assert joint_embedding(x, *params, backend="torch", out_dtype=torch.float32).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.float16):
        assert module(x).dtype == torch.float16
