"""The attention sublayer on Triton vs the float64 oracle: output and the gradients of x, the LayerNorm weight
and bias, W_q, W_k, W_v and W_o.

Two routes, both under the CPU interpreter with every allocation NaN-poisoned:

- ``fused``: the fused kernel's autograd Function called directly (``AttentionBlockFunction``), so fp32 dots
  (which the dispatcher keeps off the fused kernel on a GPU) check its arithmetic exactly;
- ``api``: ``frame_attention_block(..., backend="triton")``, which picks the fused kernel for sequences that
  fit a tile (F-TRS) in 16-bit and the composed path (LayerNorm, one QKV GEMM, the attention kernel on the
  projection in place, W_o) otherwise.

Widths and head counts are small unless the case is about them: the interpreter's cost grows with heads x
tile, and 2 CPU cores run the suite. fp32 is compared at the table tolerance, bf16 / fp16 by the 2x rule
against the same composition in PyTorch at that dtype.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import pytest
import torch

from hitrs_fast.attention import TritonAttentionBlock, frame_attention_block
from hitrs_fast.kernels.capabilities import ATTENTION_BLOCK_GPU_MIN_DOT
from hitrs_fast.masks import FrameMask, KeyPaddingMask, NoMask
from hitrs_fast.reference.attention import naive_attention_block
from tests.support.devices import kernel_device
from tests.support.nan_poison import poison_torch_empty
from tests.support.oracle import assert_backward_uses_the_forward_mask, assert_matches_oracle
from tests.support.tolerances import assert_close_verbose, assert_low_precision_close, tolerance

pytestmark = pytest.mark.interpreter

OP = "attention_block"
FP32, BF16, FP16 = torch.float32, torch.bfloat16, torch.float16
NAMES = ("out", "dx", "dln_w", "dln_b", "dw_q", "dw_k", "dw_v", "dw_o")
ON_GPU = kernel_device().type == "cuda"
FP32_DOTS_ONLY_INTERPRETED = pytest.mark.skipif(
    ON_GPU, reason="fp32 dots run under the interpreter only (a GPU refuses them: test_gpu_refuses_what_it_cannot_run)")


@dataclass(frozen=True)
class Case:
    batch: int
    width: int
    heads: int
    head_dim: int
    dtype: torch.dtype = FP32
    mask: str = "none"  # "none" (F-TRS, 25 tokens), "frame" (frames x 25 + CLS) or "padding"
    frames: int = 1
    allow_self: bool = True
    lengths: tuple[int, ...] = ()
    route: str = "api"  # "api" or "fused"
    path: str = "fused"  # what the api route must pick: "fused" or "composed"

    def on_device(self) -> Case:
        """The case as a GPU can run it: the fused kernel takes 16-bit dots there, with C and head_dim of at
        least ``ATTENTION_BLOCK_GPU_MIN_DOT`` (smaller ones are not yet proven there); unchanged under the
        interpreter."""
        if not ON_GPU or (self.route == "api" and self.path == "composed"):
            return self
        return dataclasses.replace(self, width=max(self.width, ATTENTION_BLOCK_GPU_MIN_DOT),
                                   head_dim=max(self.head_dim, ATTENTION_BLOCK_GPU_MIN_DOT),
                                   dtype=BF16 if self.dtype == FP32 else self.dtype)

    @property
    def tokens(self) -> int:
        return 25 * self.frames + (self.mask != "none")

    def typed_mask(self):
        if self.mask == "frame":
            return FrameMask(frame_size=25, num_frames=self.frames, cls="last", allow_self=self.allow_self)
        if self.mask == "padding":
            return KeyPaddingMask(torch.tensor(self.lengths), unit="tokens", cls="last")
        return NoMask()


CASES = [
    # Fused kernel, fp32 dots: 7 frames in 5-frame tiles (two programs, the second part padding), no mask.
    pytest.param(Case(7, 32, 2, 16, route="fused"), id="B7-N25-C32-H2-D16-fp32-fused-nomask"),
    # Fused kernel, frame mask inside the tile (C-TRS with F = 1), width 64, prime batch, 4 sequences a tile.
    pytest.param(Case(5, 64, 2, 16, mask="frame", route="fused"), id="B5-N26-C64-H2-D16-fp32-fused-frame"),
    pytest.param(Case(3, 64, 2, 32, mask="frame", frames=2, allow_self=False, route="fused"),
                 id="B3-N51-C64-H2-D32-fp32-fused-frame2-noself"),
    # Fused through the dispatcher: the F-TRS widths and heads (C 128, 8 x 64) in bf16, one frame (B = 1).
    pytest.param(Case(1, 128, 8, 64, BF16), id="B1-N25-C128-H8-D64-bf16-api-fused-ftrs"),
    pytest.param(Case(13, 32, 2, 16, FP16), id="B13-N25-C32-H2-D16-fp16-api-fused"),
    pytest.param(Case(2, 64, 2, 16, BF16, mask="frame"), id="B2-N26-C64-H2-D16-bf16-api-fused-frame"),
    # Composed: the official C-TRS token count and N = 151, fp32 (fp32 never takes the fused kernel) and bf16.
    pytest.param(Case(1, 64, 2, 16, mask="frame", frames=7, path="composed"),
                 id="B1-N176-C64-H2-D16-fp32-api-composed"),
    pytest.param(Case(3, 64, 2, 32, BF16, mask="frame", frames=6, allow_self=False, path="composed"),
                 id="B3-N151-C64-H2-D32-bf16-api-composed-noself"),
    pytest.param(Case(7, 32, 2, 16, path="composed"), id="B7-N25-C32-H2-D16-fp32-api-composed-ftrs"),
    # Key padding (V-TRS) is never fused.
    pytest.param(Case(3, 32, 2, 16, FP16, mask="padding", lengths=(1, 13, 25), path="composed"),
                 id="B3-N26-C32-H2-D16-fp16-api-composed-keypad"),
]


def make_params(case: Case, device: torch.device, dtype: torch.dtype | None = None) -> list[torch.Tensor]:
    """x, ln_w, ln_b, w_q, w_k, w_v, w_o of the case (unit-scale activations, 1/sqrt(fan-in) weights)."""
    dtype = dtype or case.dtype
    g = torch.Generator().manual_seed(7)
    c, inner = case.width, case.heads * case.head_dim
    tensors = [torch.randn(case.batch, case.tokens, c, generator=g), 1 + 0.1 * torch.randn(c, generator=g),
               0.1 * torch.randn(c, generator=g)]
    tensors += [torch.randn(inner, c, generator=g) / math.sqrt(c) for _ in range(3)]
    tensors.append(torch.randn(c, inner, generator=g) / math.sqrt(inner))
    return [t.to(device=device, dtype=dtype) for t in tensors]


def fused_call(case: Case, params, *, dropout: float = 0.0, seed: torch.Tensor | None = None) -> torch.Tensor:
    """The fused kernel's Function on leaves ``params`` (the QKV weight concatenated, so gradients reach each)."""
    from hitrs_fast.kernels import frame_attention as fa
    from hitrs_fast.kernels.attention_block import AttentionBlockFunction

    x, ln_w, ln_b, w_q, w_k, w_v, w_o = params
    frame = case.mask == "frame"
    return AttentionBlockFunction.apply(
        x, ln_w, ln_b, torch.cat([w_q, w_k, w_v]), w_o, seed, case.heads, 1e-5, 1.0 / math.sqrt(case.head_dim),
        fa.MASK_FRAME if frame else fa.MASK_NONE, 25, fa.CLS_LAST if frame else fa.CLS_NONE, case.allow_self,
        dropout)


def run(case: Case, params, dy: torch.Tensor, route: str) -> list[torch.Tensor]:
    """Output and the 7 gradients of one route: "fused", "api" (backend triton) or "reference"."""
    leaves = [t.detach().requires_grad_() for t in params]
    if route == "reference":
        out = naive_attention_block(*leaves, case.typed_mask(), case.heads)
    else:
        with poison_torch_empty():
            if route == "fused":
                out = fused_call(case, leaves)
            else:
                out = frame_attention_block(*leaves, case.typed_mask(), heads=case.heads, backend="triton")
            out.backward(dy.to(out.dtype))
        return [out.detach()] + [t.grad for t in leaves]
    out.backward(dy.to(out.dtype))
    return [out.detach()] + [t.grad for t in leaves]


def check(case: Case, got: list[torch.Tensor], params, dy: torch.Tensor) -> None:
    oracle = run(case, [t.double() for t in params], dy.double(), "reference")
    assert_matches_oracle(NAMES, got, oracle, lambda: run(case, params, dy, "reference"), OP, case.dtype, str(case))


@pytest.mark.parametrize("case", CASES)
def test_matches_float64_oracle(case: Case):
    case = case.on_device()
    params = make_params(case, kernel_device())
    dy = torch.randn(params[0].shape, device=params[0].device, dtype=case.dtype)
    if case.route == "api":
        from hitrs_fast.attention import BlockInputs

        inputs = BlockInputs(*params, case.typed_mask(), case.heads)
        assert (not TritonAttentionBlock.fused_reasons(inputs)) == (case.path == "fused"), "unexpected path"
    check(case, run(case, params, dy, case.route), params, dy)


def test_fused_backward_is_deterministic():
    """Two backward runs of the fused kernel (several programs, LN partials summed on the host) are
    bit-identical."""
    case = Case(11, 32, 2, 16, BF16, route="fused").on_device()
    params = make_params(case, kernel_device())
    dy = torch.randn(params[0].shape, device=params[0].device, dtype=case.dtype)
    first, second = run(case, params, dy, "fused"), run(case, params, dy, "fused")
    for name, a, b in zip(NAMES, first, second, strict=True):
        assert torch.equal(a, b), name


def test_fused_autocast_fp32_activations_bf16_dots():
    """Autocast over fp32 parameters and activations (the recipe without DeepSpeed): the fused kernel runs its
    dots in bf16 and returns fp32 output and fp32 gradients, within the 2x rule of the same composition under
    autocast in PyTorch. On a GPU the head is ``ATTENTION_BLOCK_GPU_MIN_DOT`` wide (what the fused kernel takes
    there) and the autocast is CUDA's."""
    case = Case(6, 64, 1, ATTENTION_BLOCK_GPU_MIN_DOT) if ON_GPU else Case(6, 64, 2, 16)
    params = make_params(case, kernel_device())
    dy = torch.randn(params[0].shape, device=params[0].device)
    device_type = params[0].device.type

    def autocast_run(backend: str) -> list[torch.Tensor]:
        leaves = [t.detach().requires_grad_() for t in params]
        with torch.autocast(device_type, dtype=BF16), poison_torch_empty():
            out = frame_attention_block(*leaves, NoMask(), heads=case.heads, backend=backend)
        out.backward(dy)
        return [out.detach()] + [t.grad for t in leaves]

    from hitrs_fast.attention import BlockInputs

    with torch.autocast(device_type, dtype=BF16):
        assert not TritonAttentionBlock.fused_reasons(BlockInputs(*params, NoMask(), case.heads))
    got, same = autocast_run("triton"), autocast_run("torch")
    oracle = run(case, [t.double() for t in params], dy.double(), "reference")
    assert all(t.dtype == FP32 for t in got)
    for name, a, t, e in zip(NAMES, got, same, oracle, strict=True):
        assert_low_precision_close(a.to(BF16), t.to(BF16), e, OP, f"{name} (autocast)")


# ---- dropout -----------------------------------------------------------------------------------------


def _dropout_run(case: Case, params, dy, p: float, seed: int):
    """The fused kernel with dropout p and a seed; returns (out, grads, keep mask recovered from the output)."""
    leaves = [t.detach().requires_grad_() for t in params]
    with poison_torch_empty():
        out = fused_call(case, leaves, dropout=p, seed=torch.tensor([seed], device=params[0].device))
        out.backward(dy)
        z = fused_call(case, [t.detach() for t in params]) - params[0]  # the same sublayer without dropout
    dropped = out.detach() - params[0]
    keep = dropped != 0
    return out.detach(), [t.grad for t in leaves], keep, dropped, z


@FP32_DOTS_ONLY_INTERPRETED
def test_fused_dropout_rate_scale_and_repeatability():
    """The kernel's own dropout (Philox on the element index; not nn.Dropout's draw, hence a statistical test):
    the kept fraction is 1 - p within 5 binomial standard deviations, kept values are W_o's output scaled by
    1 / (1 - p), the same seed gives the same mask, another seed another one."""
    case, p = Case(20, 32, 2, 16, route="fused"), 0.2
    params = make_params(case, kernel_device())
    dy = torch.randn(params[0].shape, device=params[0].device)
    _, _, keep, dropped, z = _dropout_run(case, params, dy, p, seed=1234)
    n = keep.numel()
    assert abs(keep.float().mean().item() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n), keep.float().mean()
    assert_close_verbose(dropped[keep], (z / (1 - p))[keep], 1e-5, 1e-5, "kept values")
    assert torch.equal(_dropout_run(case, params, dy, p, seed=1234)[2], keep)
    assert not torch.equal(_dropout_run(case, params, dy, p, seed=99)[2], keep)


@FP32_DOTS_ONLY_INTERPRETED
def test_fused_dropout_backward_uses_the_forward_mask():
    """The backward regenerates the forward's mask: gradients equal the float64 oracle run with the mask read
    off the forward's output (a mask the backward got wrong fails dx and every weight gradient)."""
    case, p = Case(7, 32, 2, 16, route="fused"), 0.3
    params = make_params(case, kernel_device())
    dy = torch.randn(params[0].shape, device=params[0].device)
    out, grads, keep, _, _ = _dropout_run(case, params, dy, p, seed=4321)
    assert_backward_uses_the_forward_mask(out, grads, params, dy, lambda *t, keep: naive_attention_block(
        *t, NoMask(), case.heads, dropout=p, keep=keep), keep, NAMES[1:], OP)


def test_composed_dropout_is_the_reference_mask():
    """On the composed path dropout is ``nn.functional.dropout`` drawn at the reference's place in PyTorch's
    random stream: the same seed gives the reference's mask exactly (output and gradients at fp32 tolerance)."""
    case = Case(2, 64, 2, 16, mask="frame", frames=2, path="composed")
    params = make_params(case, kernel_device())
    dy = torch.randn(params[0].shape, device=params[0].device)

    def go(backend: str, dtype=FP32) -> list[torch.Tensor]:
        leaves = [t.detach().to(dtype).requires_grad_() for t in params]
        torch.manual_seed(11)
        out = frame_attention_block(*leaves, case.typed_mask(), heads=case.heads, dropout=0.25, training=True,
                                    backend=backend)
        out.backward(dy.to(dtype))
        return [out.detach()] + [t.grad for t in leaves]

    got, oracle = go("triton"), go("torch", torch.float64)
    assert torch.equal(got[0] == params[0], oracle[0].float() == params[0]), "dropped positions differ"
    atol, rtol = tolerance(OP, FP32)
    for name, a, e in zip(NAMES, got, oracle, strict=True):
        assert_close_verbose(a, e, atol, rtol, name)


@pytest.mark.skipif(not ON_GPU, reason="GPU rules: the interpreter runs fp32 dots and every width")
def test_gpu_refuses_what_it_cannot_run():
    """On a GPU the launcher refuses fp32 dots (shared memory) and widths / head dims below
    ``ATTENTION_BLOCK_GPU_MIN_DOT`` (an illegal memory access was seen there) with a reason, and the dispatcher
    sends such sublayers to the composed path, which gives the oracle's answer."""
    for case, words in ((Case(3, 64, 1, 64, route="fused"), "fp32 dots"),
                        (Case(3, 32, 2, 16, BF16, route="fused"), "not proven on a GPU")):
        params = make_params(case, kernel_device())
        with pytest.raises(ValueError, match=words):
            fused_call(case, params)
    from hitrs_fast.attention import BlockInputs

    case = Case(13, 32, 2, 16, FP16, path="composed")
    params = make_params(case, kernel_device())
    assert any("not proven on a GPU" in r for r in
               TritonAttentionBlock.fused_reasons(BlockInputs(*params, case.typed_mask(), case.heads)))
    dy = torch.randn(params[0].shape, device=params[0].device, dtype=case.dtype)
    check(case, run(case, params, dy, "api"), params, dy)
