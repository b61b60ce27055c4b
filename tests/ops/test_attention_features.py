"""``frame_masked_attention`` as a drop-in for other skeleton Transformers: additive bias (and its gradient), the
general masks, attention dropout, any head size, and one defined answer where a default could have guessed.

Every case runs on each backend (``torch``, ``sdpa``, and ``triton`` through the interpreter, NaN-poisoned)
against the independent float64 oracle of ``tests/support/attention_oracle.py``: output and the gradients of q, k,
v and the bias. The awkward shapes of the issue are here: N = 750 with 10 % of the frames kept, N = 64 and 96
partitions with a relative-position table, head_dim 3 and 24, batch 1.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

from hitrs_fast.attention import MultiHeadAttention, TritonFrameAttention, frame_masked_attention
from hitrs_fast.masks import (
    DenseMask,
    FrameMask,
    KeyPaddingMask,
    NoMask,
    SlidingWindowMask,
    TokenIdMask,
)
from tests.support.attention_oracle import oracle, padding_allowed, rule_allowed, token_frames
from tests.support.devices import kernel_device
from tests.support.nan_poison import poison_torch_empty
from tests.support.tolerances import assert_close_verbose, assert_low_precision_close, tolerance

OP = "frame_attention"
BACKENDS = ["torch", "sdpa", pytest.param("triton", marks=pytest.mark.interpreter)]


@dataclass(frozen=True)
class Case:
    """One attention problem: shapes, a mask with its independently built allowed pairs, a bias shape."""

    b: int
    h: int
    n: int
    d: int
    build: Callable[[torch.Generator], tuple]  # generator -> (mask, allowed or None)
    bias: tuple[int, ...] | None = None  # bias shape, broadcastable to [B, H, N, N]
    kernel: bool = True  # the Triton kernel takes the mask
    tile: int | None = None  # Triton: tune over this one square tile (fewer interpreter steps at large N)


def _frame(frame_size, num_frames, cls, order="frame_major", allow_self=True):
    n = frame_size * num_frames + (cls != "none")
    f = token_frames(n, frame_size, num_frames, cls, order)
    return lambda g: (FrameMask(frame_size, num_frames, cls=cls, order=order, allow_self=allow_self),
                      rule_allowed(f, f, "other", allow_self=allow_self))


def _window(frame_size, num_frames, radius, cls, order="frame_major", padding=None):
    n = frame_size * num_frames + (cls != "none")
    f = token_frames(n, frame_size, num_frames, cls, order)

    def build(g):
        mask, allowed = SlidingWindowMask(frame_size, num_frames, radius, cls=cls, order=order), rule_allowed(
            f, f, "window", radius)
        if padding is not None:
            frames = torch.tensor(padding)
            mask = mask & KeyPaddingMask(frames, unit="frames", frame_size=frame_size, cls=cls)
            allowed = allowed & padding_allowed([p * frame_size + (cls == "first") for p in padding], n, cls == "last")
        return mask, allowed

    return build


def _ids(b, n, rule, radius=0, allow_self=True, per_sample=True, high=6):
    def build(g):
        ids = torch.randint(-1, high, (b, n) if per_sample else (n,), generator=g)
        mask = TokenIdMask(ids, rule=rule, radius=radius, allow_self=allow_self)
        allowed = rule_allowed(ids, ids, "other" if rule == "other" else "window", radius, allow_self)
        return mask, allowed[:, None] if per_sample else allowed

    return build


def _kept_tokens(b, kept, frames, joints):
    """A masked autoencoder's encoder: per sample, ``kept`` of the ``frames * joints`` tokens (frame-major) at random,
    their frames as ids, attending within +-2 frames."""
    def build(g):
        picks = torch.stack([torch.randperm(frames * joints, generator=g)[:kept] for _ in range(b)])
        ids = picks // joints
        return TokenIdMask(ids, rule="window", radius=2), rule_allowed(ids, ids, "window", 2)[:, None]

    return build


def _padding(lengths, unit, cls, n, frame_size=1):
    def build(g):
        kwargs = {"frame_size": frame_size} if unit == "frames" else {}
        mask = KeyPaddingMask(torch.tensor(lengths), unit=unit, cls=cls, **kwargs)
        prefix = [length * frame_size + (cls == "first") for length in lengths]
        return mask, padding_allowed(prefix, n, cls == "last")

    return build


def _frame_and_padding(frame_size, num_frames, frames_kept):
    n = frame_size * num_frames + 1
    f = token_frames(n, frame_size, num_frames, "last")

    def build(g):
        mask = FrameMask(frame_size, num_frames, cls="last") & KeyPaddingMask(
            torch.tensor(frames_kept), unit="frames", frame_size=frame_size, cls="last")
        allowed = rule_allowed(f, f, "other") & padding_allowed([k * frame_size for k in frames_kept], n, True)
        return mask, allowed

    return build


def _dense(b, n, additive):
    def build(g):
        keep = torch.rand(b, 1, n, n, generator=g) > 0.4
        keep[0, 0, 1] = False  # a row with no visible key
        if additive:
            dense = torch.randn(b, 1, n, n, generator=g, dtype=torch.float64).masked_fill(~keep, float("-inf"))
            return DenseMask(dense.float()), None
        return DenseMask(keep), keep

    return build


CASES = {
    "frame-bias-HNN-relpos": Case(2, 2, 21, 16, _frame(5, 4, "last"), bias=(2, 21, 21)),
    "frame-joint-major-clsfirst-keybias": Case(2, 2, 21, 16, _frame(4, 5, "first", "joint_major"), bias=(2, 1, 1, 21)),
    "frame-noself-bias-1HNN": Case(2, 2, 20, 16, _frame(5, 4, "none", allow_self=False), bias=(1, 2, 20, 20)),
    "window-r1-D24": Case(2, 2, 30, 24, _window(5, 6, 1, "none")),
    "window-r2-joint-major-padding": Case(2, 1, 25, 16, _window(3, 8, 2, "last", "joint_major", padding=[8, 8])),
    "window-r1-frame-padding-bias": Case(2, 2, 31, 16, _window(5, 6, 1, "first", padding=[6, 2]), bias=(2, 2, 31, 31)),
    "ids-other-D3-bias": Case(2, 2, 24, 3, _ids(2, 24, "other"), bias=(1, 2, 24, 24)),
    "ids-same-shared": Case(2, 2, 24, 16, _ids(2, 24, "same", per_sample=False, high=4)),
    "ids-window-noself": Case(1, 2, 33, 16, _ids(1, 33, "window", radius=1)),
    "frame-and-frames-padding": Case(2, 2, 21, 16, _frame_and_padding(5, 4, [4, 1]), bias=(2, 21, 21)),
    "padding-tokens-cls-none-empty-rows": Case(2, 2, 12, 16, _padding([0, 7], "tokens", "none", 12)),
    "padding-frames-cls-first": Case(2, 1, 13, 16, _padding([1, 3], "frames", "first", 13, frame_size=4)),
    "ids-other-noself-empty-rows": Case(2, 1, 16, 16, _ids(2, 16, "other", allow_self=False, high=1)),
    "dense-bool": Case(2, 2, 14, 16, _dense(2, 14, additive=False), kernel=False),
    "dense-float-and-bias": Case(2, 2, 14, 16, _dense(2, 14, additive=True), bias=(2, 14, 14), kernel=False),
    "nomask-bias-B1-N64-partition": Case(1, 4, 64, 16, lambda g: (NoMask(), None), bias=(4, 64, 64)),
    "nomask-bias-B1-N96-partition-D24": Case(1, 2, 96, 24, lambda g: (NoMask(), None), bias=(2, 96, 96)),
    "mae-kept-10pct-of-N750": Case(2, 2, 75, 24, _kept_tokens(2, 75, 30, 25), tile=64),
    "N750-window-10pct-frames-kept-B1": Case(1, 1, 750, 16, _window(25, 30, 1, "none", padding=[3]), tile=64),
}


def _inputs(case: Case, dtype=torch.float32):
    g = torch.Generator().manual_seed(sum(map(ord, repr(case.n))) + case.b)
    device = kernel_device()
    q, k, v, do = (torch.randn(case.b, case.h, case.n, case.d, generator=g).to(device, dtype) for _ in range(4))
    mask, allowed = case.build(g)
    bias = None if case.bias is None else torch.randn(case.bias, generator=g).to(device, dtype)
    additive = mask.mask if type(mask) is DenseMask and mask.additive else None
    return q, k, v, do, mask, allowed, bias, additive


def run(backend: str, q, k, v, do, mask, bias, scale, dropout_p: float = 0.0) -> dict[str, torch.Tensor]:
    """Output and gradients of ``frame_masked_attention`` on one backend (allocations NaN-poisoned on Triton)."""
    leaves = {name: t.detach().clone().requires_grad_() for name, t in (("q", q), ("k", k), ("v", v))}
    if bias is not None:
        leaves["bias"] = bias.detach().clone().requires_grad_()
    poison = poison_torch_empty() if backend == "triton" else contextlib.nullcontext()
    with poison:
        out = frame_masked_attention(leaves["q"], leaves["k"], leaves["v"], mask, bias=leaves.get("bias"),
                                     scale=scale, dropout_p=dropout_p, backend=backend)
        out.backward(do)
    return {"out": out.detach(), **{f"d{name}": t.grad for name, t in leaves.items()}}


def _oracle_of(case: Case, q, k, v, do, mask, allowed, bias, additive, scale, **dropout):
    full_bias = bias.double() if bias is not None else None
    if additive is not None:  # a float dense mask is a bias without a gradient: fold it in the oracle's bias
        extra = additive.double().to(q.device)
        full_bias = extra if full_bias is None else full_bias + extra
    expected = oracle(q, k, v, do, allowed=None if allowed is None else allowed.to(q.device), bias=full_bias,
                      scale=scale, **dropout)
    if bias is None and "dbias" in expected:
        del expected["dbias"]
    if additive is not None and bias is not None:
        expected["dbias"] = _reduce_to(expected["dbias"], bias.shape)
    return expected


def _reduce_to(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """A ``[B, H, N, N]``-broadcast gradient summed back to ``shape``."""
    shape4 = (1,) * (4 - len(shape)) + tuple(shape)
    dims = [i for i, (g, s) in enumerate(zip(grad.shape, shape4, strict=True)) if s == 1 and g != 1]
    return (grad.sum(dims, keepdim=True) if dims else grad).reshape(shape)


def _compare(got: dict, expected: dict, where: str) -> None:
    atol, rtol = tolerance(OP, torch.float32)
    assert set(got) == set(expected), (sorted(got), sorted(expected))
    for name in expected:
        assert_close_verbose(got[name], expected[name], atol, rtol, f"{name} ({where})")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CASES))
def test_matches_float64_oracle(name: str, backend: str):
    case = CASES[name]
    q, k, v, do, mask, allowed, bias, additive = _inputs(case)
    scale = 1.0 / math.sqrt(case.d)
    if backend == "triton" and not case.kernel:
        with pytest.raises(NotImplementedError, match="a dense mask tensor: the kernel computes masks"):
            run(backend, q, k, v, do, mask, bias, scale)
        return
    with _tiles(case.tile if backend == "triton" else None):
        got = run(backend, q, k, v, do, mask, bias, scale)
    _compare(got, _oracle_of(case, q, k, v, do, mask, allowed, bias, additive, scale), f"{name}, {backend}")


def _tiles(tile: int | None):
    """The kernels' autotuner limited to one ``tile`` x ``tile`` config (None: the default config)."""
    if tile is None:
        return contextlib.nullcontext()
    import triton

    from hitrs_fast.kernels import frame_attention as fa

    return fa.autotune_configs([triton.Config({"BLOCK_M": tile, "BLOCK_N": tile, "WHOLE_ROW": False}, num_warps=4)],
                               [triton.Config({"BLOCK_M": tile, "BLOCK_N": tile}, num_warps=4)])


@pytest.mark.parametrize("backend", ["torch", "sdpa", pytest.param("triton", marks=pytest.mark.interpreter)])
def test_row_with_no_visible_key_is_zero_with_zero_gradients(backend):
    """Sample 0 has no key at all (length 0, no CLS): O = 0 and its q, k, v gradients are exactly 0 on every
    backend (before, Triton gave 0 and the reference the mean of V)."""
    case = CASES["padding-tokens-cls-none-empty-rows"]
    q, k, v, do, mask, *_ = _inputs(case)
    got = run(backend, q, k, v, do, mask, None, 0.25)
    for name in ("out", "dq", "dk", "dv"):
        assert torch.equal(got[name][0], torch.zeros_like(got[name][0])), name
        assert torch.isfinite(got[name]).all(), name


@pytest.mark.interpreter
def test_bf16_bias_window_by_the_2x_rule():
    """bf16 on the kernel with a bias and the window rule: within 2x PyTorch-in-bf16's error of the oracle."""
    case = CASES["window-r1-frame-padding-bias"]
    q, k, v, do, mask, allowed, bias, _ = _inputs(case, torch.bfloat16)
    got = run("triton", q, k, v, do, mask, bias, 0.25)
    same = run("torch", q, k, v, do, mask, bias, 0.25)
    expected = _oracle_of(case, q, k, v, do, mask, allowed, bias, None, 0.25)
    for name in expected:
        assert got[name].dtype == torch.bfloat16
        assert_low_precision_close(got[name], same[name], expected[name], OP, name=name)


@pytest.mark.interpreter
def test_bias_gradient_is_deterministic():
    """The bias gradient (a sum over the batch and the heads a shared table serves) is bit-identical run to run."""
    case = CASES["frame-bias-HNN-relpos"]
    q, k, v, do, mask, _, bias, _ = _inputs(case)
    first, second = (run("triton", q, k, v, do, mask, bias, 0.25) for _ in range(2))
    for name in first:
        assert torch.equal(first[name], second[name]), name


# ---- dropout -------------------------------------------------------------------------------------------------


@pytest.mark.interpreter
def test_triton_dropout_is_the_mask_it_says_forward_and_backward():
    """The kernel draws its keep mask from a seed taken from PyTorch's generator: with the same manual seed the seed
    is known, ``attention_dropout_mask`` writes the mask out, and the float64 oracle applying that mask gives the
    kernel's output and every gradient (bias included). The same seed repeats the result exactly."""
    from hitrs_fast.kernels.frame_attention import attention_dropout_mask

    case = CASES["frame-bias-HNN-relpos"]
    q, k, v, do, mask, allowed, bias, _ = _inputs(case)
    p = 0.3
    torch.manual_seed(11)
    seed = torch.randint(0, 2**31 - 1, (1,), device=q.device, dtype=torch.int64)
    torch.manual_seed(11)
    got = run("triton", q, k, v, do, mask, bias, 0.25, dropout_p=p)
    keep = attention_dropout_mask(seed, case.b, case.h, case.n, p)
    dropped = 1.0 - keep.float().mean().item()
    assert abs(dropped - p) < 0.05, f"dropped {dropped:.3f} of the probabilities, expected about {p}"
    expected = _oracle_of(case, q, k, v, do, mask, allowed, bias, None, 0.25, keep=keep.cpu(), dropout_p=p)
    _compare(got, expected, "dropout")
    torch.manual_seed(11)
    again = run("triton", q, k, v, do, mask, bias, 0.25, dropout_p=p)
    assert all(torch.equal(got[name], again[name]) for name in got), "same torch seed, same result"
    other = run("triton", q, k, v, do, mask, bias, 0.25, dropout_p=p)
    assert not torch.equal(got["out"], other["out"]), "the next call draws another mask"


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_is_never_silently_ignored(backend):
    """Training with attention dropout changes the output and each call draws anew; dropout_p = 0 (eval) does
    nothing; the expectation of the dropped output is the undropped one (mean over many draws; for the kernel its
    mask and rate are checked against the oracle instead)."""
    case = CASES["frame-bias-HNN-relpos"]
    q, k, v, _, mask, _, bias, _ = _inputs(case)
    plain = frame_masked_attention(q, k, v, mask, bias=bias, backend=backend)
    first = frame_masked_attention(q, k, v, mask, bias=bias, dropout_p=0.5, backend=backend)
    second = frame_masked_attention(q, k, v, mask, bias=bias, dropout_p=0.5, backend=backend)
    assert not torch.allclose(first, plain) and not torch.allclose(first, second)
    assert torch.equal(frame_masked_attention(q, k, v, mask, bias=bias, dropout_p=0.0, backend=backend), plain)
    if backend == "triton":
        return  # the kernel's mask against the oracle, and its rate: test_triton_dropout_is_the_mask_it_says
    draws = 64
    mean = sum(frame_masked_attention(q, k, v, mask, bias=bias, dropout_p=0.5, backend=backend)
               for _ in range(draws)) / draws
    assert (mean - plain).abs().mean() < 0.25 * plain.abs().mean(), "dropout is unbiased on average"


def test_module_attention_dropout_follows_training_mode():
    torch.manual_seed(0)
    attn = MultiHeadAttention(32, 4, fused_qkv=True, qkv_bias=True, attn_dropout=0.5, backend="sdpa")
    x = torch.randn(2, 9, 32)
    attn.train()
    assert not torch.allclose(attn(x), attn(x)), "training: dropout on"
    attn.eval()
    assert torch.equal(attn(x), attn(x)), "eval: dropout off"


# ---- what the API refuses or says ---------------------------------------------------------------------------


class MyFrameMask(FrameMask):
    def materialize(self, n_q=None, n_k=None, device=None):
        return torch.ones(self.num_tokens, self.num_tokens, dtype=torch.bool, device=device)


@pytest.mark.parametrize("backend", ["auto", "torch", "sdpa", "triton"])
def test_mask_subclass_is_refused_on_every_backend(backend):
    """A subclass overriding ``materialize`` would be honoured by SDPA and not by the kernel: refused everywhere."""
    q = torch.randn(1, 1, 11, 16)
    with pytest.raises(ValueError, match="mask type MyFrameMask subclasses FrameMask; subclasses are refused"):
        frame_masked_attention(q, q, q, MyFrameMask(5, 2, cls="last"), backend=backend)


@pytest.mark.interpreter
def test_frames_and_tokens_are_told_apart():
    """The same padding said in frames and in tokens gives the same result; said in frames it is not read as
    tokens (before, ``KeyPaddingMask(frame_counts)`` silently blocked all but the first few tokens)."""
    q = torch.randn(2, 2, 21, 16, device=kernel_device())
    frames = KeyPaddingMask(torch.tensor([3, 1]), unit="frames", frame_size=5, cls="last")
    tokens = KeyPaddingMask(torch.tensor([15, 5]), unit="tokens", cls="last")
    misread = KeyPaddingMask(torch.tensor([3, 1]), unit="tokens", cls="last")
    out = frame_masked_attention(q, q, q, frames, backend="triton")
    assert torch.equal(out, frame_masked_attention(q, q, q, tokens, backend="triton"))
    assert not torch.allclose(out, frame_masked_attention(q, q, q, misread, backend="triton"))


def test_attn_mask_keyword_as_sdpa():
    q, k, v = (torch.randn(2, 2, 10, 8) for _ in range(3))
    allowed = torch.rand(2, 1, 10, 10) > 0.3
    allowed[..., 0] = True
    out = frame_masked_attention(q, k, v, attn_mask=allowed)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(frame_masked_attention(q, k, v, allowed, backend="torch"), expected)
    with pytest.raises(ValueError, match="give the mask once"):
        frame_masked_attention(q, k, v, NoMask(), attn_mask=allowed)


def test_dense_mask_on_a_kernel_device_says_why_once(monkeypatch):
    """Where the kernel could run, a dense mask goes to SDPA with the reason as a warning."""
    monkeypatch.setattr(TritonFrameAttention, "device_reasons", classmethod(lambda cls, *a, **kw: []))
    q = torch.randn(1, 2, 10, 16)
    with pytest.warns(UserWarning, match="triton backend not used: a dense mask tensor.*running the sdpa backend"):
        frame_masked_attention(q, q, q, torch.ones(10, 10, dtype=torch.bool))


@pytest.mark.parametrize(("kwargs", "match"), [
    pytest.param({"bias": torch.zeros(3, 10, 10)}, r"bias \(3, 10, 10\) does not broadcast", id="bias-heads"),
    pytest.param({"bias": torch.zeros(10, 10, dtype=torch.int64)}, "bias must be a float tensor", id="bias-int"),
    pytest.param({"dropout_p": 1.0}, r"dropout_p must be in \[0, 1\)", id="dropout-1"),
    pytest.param({"mask": "frames"}, "mask must be a mask of hitrs_fast.masks or a bool / float tensor",
                 id="mask-str"),
    pytest.param({"mask": FrameMask(5, 2, cls="none")}, "covers 10 tokens, q has N = 11", id="frame-count"),
])
def test_bad_arguments_name_what_was_expected(kwargs, match):
    q = torch.randn(1, 2, 11, 16)
    with pytest.raises(ValueError, match=match):
        frame_masked_attention(q, q, q, **kwargs)


@pytest.mark.interpreter
@pytest.mark.parametrize("head_dim", [3, 6, 24, 48, 96])
def test_any_head_dim_on_the_kernel(head_dim):
    """Head sizes the kernel does not compile for are padded inside the op; results unchanged (the refused
    widths of a peer: 3 and 6)."""
    q, k, v, do = (torch.randn(1, 2, 26, head_dim, device=kernel_device()) for _ in range(4))
    mask = FrameMask(5, 5, cls="last")
    got = run("triton", q, k, v, do, mask, None, None)
    f = token_frames(26, 5, 5, "last")
    _compare(got, oracle(q, k, v, do, allowed=rule_allowed(f, f, "other").to(q.device), scale=head_dim ** -0.5),
             f"head_dim {head_dim}")
    assert TritonFrameAttention.not_supported_reasons(__import__("hitrs_fast.attention").attention.AttentionInputs(
        q, k, v, mask)) == []


def test_no_warning_for_the_models_masks_on_cpu():
    """The plain CPU path (SDPA) stays quiet for the masks the model uses."""
    q = torch.randn(2, 2, 26, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frame_masked_attention(q, q, q, FrameMask(25, 1, cls="last"))
        frame_masked_attention(q, q, q, KeyPaddingMask(torch.tensor([3, 25]), unit="tokens", cls="last"))
