"""The public ``hitrs_fast.attention`` API: dispatch and its reasons, env vars, strict errors,
module checkpoints across backends, mask materialisation, torch.compile traceability."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch

import hitrs_fast.attention as attention
from hitrs_fast.attention import (
    AttentionInputs,
    FrameMaskedAttention,
    MultiHeadAttention,
    SdpaFrameAttention,
    TritonFrameAttention,
    frame_masked_attention,
)
from hitrs_fast.masks import DenseMask, FrameMask, KeyPaddingMask, NoMask
from hitrs_fast.reference.attention import naive_attention
from tests.support.devices import REQUIRES_CUDA, kernel_device
from tests.support.tolerances import assert_close_verbose, tolerance

FRAME2 = FrameMask(num_frames=2, cls="last")


def qkv(b=2, h=2, n=51, d=16, dtype=torch.float32, device="cpu"):
    return tuple(torch.randn(b, h, n, d, dtype=dtype, device=device) for _ in range(3))


@pytest.fixture
def record_backend(monkeypatch):
    """Replaces the Triton call by a recorder, so dispatch is observed without running a kernel."""
    calls = []

    def fake(q, k, v, mask, scale, **extras):
        calls.append("triton")
        return naive_attention(q, k, v, mask, scale, **extras)

    monkeypatch.setattr(TritonFrameAttention, "run", staticmethod(fake))
    return calls


@pytest.mark.parametrize(("kwargs", "mask", "expected"), [
    pytest.param({"dtype": torch.float64}, FRAME2, "dtype torch.float64 not in", id="fp64"),
    pytest.param({"d": 160}, FRAME2, "head_dim 160 > 128", id="head-dim-160"),
    pytest.param({"n": 4097}, NoMask(), "N = 4097 not in [1, 4096]", id="N-4097"),
    pytest.param({}, DenseMask(torch.ones(51, 51, dtype=torch.bool)), "a dense mask tensor: the kernel computes",
                 id="dense-mask"),
    pytest.param({"b": 2}, KeyPaddingMask(torch.tensor([1.0, 2.0]), unit="tokens", cls="last"),
                 "is not an integer type", id="float-lengths"),
])
def test_reasons_name_each_capability(kwargs, mask, expected):
    q, k, v = qkv(**kwargs)
    reasons = TritonFrameAttention.not_supported_reasons(AttentionInputs(q, k, v, mask))
    assert any(expected in r for r in reasons), reasons


def test_reasons_empty_for_supported_inputs_on_kernel_device(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    q, k, v = qkv(dtype=torch.bfloat16, d=64)
    assert TritonFrameAttention.device_reasons(q.device, requested=True) == []
    assert TritonFrameAttention.not_supported_reasons(AttentionInputs(q, k, v, FRAME2)) == []


def test_auto_on_cpu_never_runs_the_interpreter_and_says_why(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert "never runs the Triton interpreter" in TritonFrameAttention.device_reasons(torch.device("cpu"), False)[0]
    monkeypatch.delenv("TRITON_INTERPRET")
    assert "is not CUDA" in TritonFrameAttention.device_reasons(torch.device("cpu"), True)[0]


def test_auto_on_cpu_interpreter_does_not_use_triton(monkeypatch, record_backend):
    """The interpreter is far too slow for a model: only an explicit backend='triton' runs it
    (auto takes SDPA on CPU)."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    q, k, v = qkv()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the plain CPU path must stay quiet
        out = frame_masked_attention(q, k, v, FrameMask(num_frames=2, cls="last"))
    assert record_backend == []
    frame_masked_attention(q, k, v, FrameMask(num_frames=2, cls="last"), backend="triton")
    assert record_backend == ["triton"]
    atol, rtol = tolerance("frame_attention", torch.float32)
    assert_close_verbose(out, naive_attention(q, k, v, FRAME2), atol, rtol, "auto == reference")


def test_auto_picks_triton_when_supported_unless_disabled(monkeypatch, record_backend):
    monkeypatch.setattr(TritonFrameAttention, "device_reasons", classmethod(lambda cls, *a, **k: []))
    q, k, v = qkv()
    frame_masked_attention(q, k, v, FrameMask(num_frames=2, cls="last"))
    assert record_backend == ["triton"]
    monkeypatch.setenv("HITRS_FAST_DISABLE_KERNELS", "1")
    frame_masked_attention(q, k, v, FrameMask(num_frames=2, cls="last"))
    assert record_backend == ["triton"], "HITRS_FAST_DISABLE_KERNELS=1 must force the reference"
    frame_masked_attention(q, k, v, FrameMask(num_frames=2, cls="last"), backend="torch")
    assert record_backend == ["triton"]


def test_explicit_triton_with_unsupported_inputs_raises_with_reasons(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    q, k, v = qkv(dtype=torch.float64, d=160)
    with pytest.raises(NotImplementedError) as info:
        frame_masked_attention(q, k, v, FrameMask(num_frames=2, cls="last"), backend="triton")
    assert str(info.value) == ("frame_masked_attention: triton backend not used: dtype torch.float64 not in "
                               "(float32, bfloat16, float16); head_dim 160 > 128. (reference backend: 'torch')")


def test_strict_mode_turns_fallback_into_error(monkeypatch):
    monkeypatch.setenv("HITRS_FAST_STRICT", "1")
    q, k, v = qkv(dtype=torch.float64)
    with pytest.raises(NotImplementedError, match="dtype torch.float64"):
        frame_masked_attention(q, k, v, FrameMask(num_frames=2, cls="last"))


@pytest.mark.parametrize(("args", "match"), [
    pytest.param((torch.zeros(2, 2, 51, 16), torch.zeros(2, 2, 50, 16)), "of one shape", id="shape"),
    pytest.param((torch.zeros(2, 2, 40, 16),) * 2, "covers 51 tokens", id="frame-count"),
])
def test_bad_arguments_raise_value_error(args, match):
    q, k = args
    with pytest.raises(ValueError, match=match):
        frame_masked_attention(q, k, k, FrameMask(num_frames=2, cls="last"))


def test_bad_backend_and_lengths_raise_value_error():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="backend must be one of"):
        frame_masked_attention(q, k, v, NoMask(), backend="cuda")
    with pytest.raises(ValueError, match=r"lengths must be \[B\] = \[2\]"):
        frame_masked_attention(q, k, v, KeyPaddingMask(torch.tensor([3]), unit="tokens", cls="last"))
    with pytest.raises(ValueError, match="backend must be one of"):
        MultiHeadAttention(32, 2, 16, backend="fast")


def test_capabilities_are_the_kernel_module_limits():
    """Declared once: the dispatcher's backend and the kernel launcher read the same reasons."""
    from hitrs_fast.kernels import capabilities
    from hitrs_fast.kernels import frame_attention as fa

    assert fa.not_supported_reasons is capabilities.frame_attention_reasons
    assert fa.SUPPORTED_DTYPES is capabilities.FRAME_ATTENTION_DTYPES
    assert TritonFrameAttention.IS_DETERMINISTIC == fa.IS_DETERMINISTIC
    q, k, v = qkv(dtype=torch.float64, d=80)
    with pytest.raises(ValueError, match="dtype torch.float64 not in"):
        fa.frame_attention_fwd(q, k, v, None, 0.1, fa.MASK_NONE, 25, fa.CLS_NONE, True, False)


def test_warning_names_the_backend_that_runs(monkeypatch):
    """A backend that runs on the device but not on these inputs is passed over loudly, naming what runs."""
    monkeypatch.setattr(TritonFrameAttention, "device_reasons", classmethod(lambda cls, *a, **k: []))
    q, k, v = qkv(dtype=torch.float64)
    with pytest.warns(UserWarning, match=r"triton backend not used: dtype torch\.float64 .*; running the sdpa backend"):
        out = frame_masked_attention(q, k, v, FrameMask(num_frames=2, cls="last"))
    torch.testing.assert_close(out, naive_attention(q, k, v, FrameMask(num_frames=2, cls="last")))


def test_import_loads_no_triton():
    code = ("import sys, hitrs_fast.attention, hitrs_fast.masks; "
            "assert 'triton' not in sys.modules and 'hitrs_fast.kernels.frame_attention' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(("mask", "row_counts"), [
    # joint rows: all but the 24 other joints of their frame; CLS row sees everything.
    pytest.param(FrameMask(num_frames=7, cls="last"), {0: 152, 24: 152, 150: 152, 174: 152, 175: 176},
                 id="F7-cls-last-self"),
    pytest.param(FrameMask(num_frames=7, cls="last", allow_self=False), {0: 151, 174: 151, 175: 176},
                 id="F7-cls-last-noself"),
    pytest.param(FrameMask(num_frames=7, cls="first"), {0: 176, 1: 152, 175: 152}, id="F7-cls-first"),
    pytest.param(FrameMask(num_frames=2, cls="none"), {0: 26, 49: 26}, id="F2-no-cls"),
    pytest.param(FrameMask(num_frames=1, cls="last"), {0: 2, 24: 2, 25: 26}, id="F1-cls"),
])
def test_frame_mask_materialize_counts(mask, row_counts):
    allowed = mask.materialize()
    n = mask.num_tokens
    assert allowed.shape == (n, n)
    counts = allowed.sum(-1)
    for row, count in row_counts.items():
        assert counts[row] == count, f"row {row}: {int(counts[row])} allowed keys, expected {count}"
    assert torch.equal(allowed, allowed.T), "the frame rule is symmetric"
    if mask.cls != "none":
        cls_row = 0 if mask.cls == "first" else n - 1
        assert allowed[:, cls_row].all() and allowed[cls_row].all()


def test_frame_mask_materialize_pairs_small():
    """Two frames of 2 joints + CLS last, enumerated by hand."""
    m = FrameMask(frame_size=2, num_frames=2, cls="last", allow_self=False).materialize().int()
    assert m.tolist() == [[0, 0, 1, 1, 1],
                          [0, 0, 1, 1, 1],
                          [1, 1, 0, 0, 1],
                          [1, 1, 0, 0, 1],
                          [1, 1, 1, 1, 1]]


@pytest.mark.interpreter
@pytest.mark.parametrize("mask", [
    pytest.param(FrameMask(num_frames=2, cls="last"), id="frame"),
    pytest.param(KeyPaddingMask(torch.tensor([3, 25]), unit="tokens", cls="last"), id="key-padding"),
    pytest.param(NoMask(), id="no-mask"),
])
def test_module_state_dict_and_outputs_across_backends(mask):
    # F-TRS frames have 25 tokens; V-TRS here 25 clip tokens + a trailing CLS.
    n = {FrameMask: getattr(mask, "num_tokens", 0), KeyPaddingMask: 26, NoMask: 25}[type(mask)]
    device = kernel_device()
    torch_mod = FrameMaskedAttention(48, 2, 16, mask, backend="torch").to(device)
    triton_mod = FrameMaskedAttention(48, 2, 16, mask, backend="triton").to(device)
    assert list(torch_mod.state_dict()) == list(triton_mod.state_dict()) == [
        "q_proj.weight", "k_proj.weight", "v_proj.weight", "out_proj.weight"]
    triton_mod.load_state_dict(torch_mod.state_dict(), strict=True)
    torch_mod.load_state_dict(triton_mod.state_dict(), strict=True)
    x = torch.randn(2, n, 48, device=device, requires_grad=True)
    y_ref = torch_mod(x)
    (gx_ref,) = torch.autograd.grad(y_ref.sum(), x)
    y = triton_mod(x)
    (gx,) = torch.autograd.grad(y.sum(), x)
    atol, rtol = tolerance("frame_attention", torch.float32)
    assert_close_verbose(y, y_ref, atol, rtol, "module output")
    assert_close_verbose(gx, gx_ref, atol, rtol, "module input grad")


@pytest.mark.interpreter
def test_torch_compile_fullgraph_traces_triton_path():
    """fullgraph=True: no graph break through dispatch, the autograd Function and the registered op.

    On CPU the interpreter cannot run Inductor's Triton codegen, so ``aot_eager`` is used; there
    the op is an opaque custom op (see ``hitrs_fast.kernels.common.registration.register``).
    """
    mask = FrameMask(num_frames=1, cls="last")
    q, k, v = (t.requires_grad_() for t in qkv(b=1, h=2, n=26, d=16, device=kernel_device()))

    def f(q, k, v):
        return frame_masked_attention(q, k, v, mask, backend="triton")

    with warnings.catch_warnings():
        # Dynamo notes that it traces through dispatch's functools.cache; harmless here.
        warnings.filterwarnings("ignore", message=".*lru_cache.*")
        out = torch.compile(f, backend="aot_eager", fullgraph=True)(q, k, v)
        (gq,) = torch.autograd.grad(out.sum(), q)
    out_ref = naive_attention(q, k, v, mask)
    (gq_ref,) = torch.autograd.grad(out_ref.sum(), q)
    atol, rtol = tolerance("frame_attention", torch.float32)
    assert_close_verbose(out, out_ref, atol, rtol, "compiled output")
    assert_close_verbose(gq, gq_ref, atol, rtol, "compiled dq")


@pytest.mark.parametrize("dtype", [pytest.param(torch.bfloat16, id="bf16", marks=REQUIRES_CUDA)])
def test_auto_uses_triton_on_cuda(record_backend, dtype):
    q, k, v = qkv(dtype=dtype, d=64, device="cuda")
    frame_masked_attention(q, k, v, FrameMask(num_frames=2, cls="last"))
    assert record_backend == ["triton"]


@pytest.mark.parametrize("mask", [FrameMask(cls="last"), FrameMask(cls="first", allow_self=False), NoMask()],
                         ids=["frame-last", "frame-first-noself", "nomask"])
def test_sdpa_backend_matches_reference(mask):
    n = 176 if not isinstance(mask, NoMask) else 25
    q, k, v = (torch.randn(3, 2, n, 16, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(frame_masked_attention(q, k, v, mask, backend="sdpa"),
                               frame_masked_attention(q, k, v, mask, backend="torch"))


def test_sdpa_backend_key_padding():
    q, k, v = (torch.randn(3, 2, 6, 16, dtype=torch.float64) for _ in range(3))
    mask = KeyPaddingMask(torch.tensor([5, 2, 1]), unit="tokens", cls="last")
    torch.testing.assert_close(frame_masked_attention(q, k, v, mask, backend="sdpa"),
                               frame_masked_attention(q, k, v, mask, backend="torch"))


def test_auto_on_cpu_uses_sdpa_unless_kernels_disabled(monkeypatch):
    calls = []
    monkeypatch.setattr(SdpaFrameAttention, "run", staticmethod(lambda *a, **kw: calls.append("sdpa") or a[0]))
    q = torch.randn(1, 1, 176, 16)
    attention.frame_masked_attention(q, q, q, FrameMask(cls="last"))
    assert calls == ["sdpa"]
    monkeypatch.setenv("HITRS_FAST_DISABLE_KERNELS", "1")
    attention.frame_masked_attention(q, q, q, FrameMask(cls="last"))
    assert calls == ["sdpa"]
