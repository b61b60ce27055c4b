"""The fused feed-forward sublayer (``kernels/ffn_block``) vs the float64 oracle: the output and the gradients of
x, the LayerNorm weight and bias, W1, b1, W2 and b2, every allocation NaN-poisoned.

Under the CPU interpreter the kernel's own Function runs fp32 dots too (a GPU takes 16-bit dots only), so fp32
checks its arithmetic at the table tolerance; bf16 / fp16 follow the 2x rule against the same composition in
PyTorch at that dtype. Row counts are awkward (primes, fewer rows than one tile, tiles with padding rows), widths
not powers of two, and the autotuned launch runs with several configs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import pytest
import torch
import triton

from hitrs_fast.feedforward import TritonFfnBlock, ffn_block
from hitrs_fast.kernels.capabilities import FFN_BLOCK_GPU_MIN_DOT
from hitrs_fast.reference.ffn import naive_ffn_block
from tests.support.devices import kernel_device
from tests.support.nan_poison import poison_torch_empty
from tests.support.oracle import (
    assert_backward_uses_the_forward_mask,
    assert_kernel_dropout,
    assert_matches_oracle,
)
from tests.support.tolerances import assert_low_precision_close

pytestmark = pytest.mark.interpreter

OP = "ffn_block"
FP32, BF16, FP16 = torch.float32, torch.bfloat16, torch.float16
NAMES = ("out", "dx", "dln_w", "dln_b", "dw1", "db1", "dw2", "db2")
ON_GPU = kernel_device().type == "cuda"


@dataclass(frozen=True)
class Case:
    rows: int
    width: int
    hidden: int
    dtype: torch.dtype = FP32

    def on_device(self) -> Case:
        """A GPU takes 16-bit dots and widths of at least FFN_BLOCK_GPU_MIN_DOT; the interpreter anything."""
        if not ON_GPU:
            return self
        return dataclasses.replace(self, width=max(self.width, FFN_BLOCK_GPU_MIN_DOT),
                                   hidden=max(self.hidden, FFN_BLOCK_GPU_MIN_DOT),
                                   dtype=BF16 if self.dtype == FP32 else self.dtype)


CASES = [
    pytest.param(Case(37, 32, 64), id="M37-C32-F64-fp32"),  # the tiny preset's widths; two tiles, one padded
    pytest.param(Case(5, 48, 40), id="M5-C48-F40-fp32"),  # fewer rows than a tile; C, F not powers of two
    pytest.param(Case(70, 80, 96, BF16), id="M70-C80-F96-bf16"),  # C in three chunks, the last one partial
    pytest.param(Case(33, 64, 128, FP16), id="M33-C64-F128-fp16"),
    pytest.param(Case(1, 256, 128, BF16), id="M1-C256-F128-bf16"),  # the C-TRS widths, one row
]


def make_params(case: Case, device: torch.device, dtype: torch.dtype | None = None) -> list[torch.Tensor]:
    """x, ln_w, ln_b, w1, b1, w2, b2 (unit-scale activations, 1/sqrt(fan-in) weights, non-zero biases)."""
    dtype = dtype or case.dtype
    g = torch.Generator().manual_seed(3)
    c, f = case.width, case.hidden
    tensors = [torch.randn(case.rows, c, generator=g) + 0.5, 1 + 0.1 * torch.randn(c, generator=g),
               0.1 * torch.randn(c, generator=g), torch.randn(f, c, generator=g) / math.sqrt(c),
               0.1 * torch.randn(f, generator=g), torch.randn(c, f, generator=g) / math.sqrt(f),
               0.1 * torch.randn(c, generator=g)]
    return [t.to(device=device, dtype=dtype) for t in tensors]


def fused_call(params, *, dropout: float = 0.0, seed: torch.Tensor | None = None) -> torch.Tensor:
    from hitrs_fast.kernels.ffn_block import FfnBlockFunction

    return FfnBlockFunction.apply(*params, seed, 1e-5, dropout)


def run(params, dy: torch.Tensor, route: str, **kwargs) -> list[torch.Tensor]:
    """Output and the 7 gradients: "fused" (the kernel's Function), "api" (``ffn_block(backend="triton")``) or
    "reference"."""
    leaves = [t.detach().requires_grad_() for t in params]
    if route == "reference":
        out = naive_ffn_block(*leaves, **kwargs)
    else:
        with poison_torch_empty():
            out = fused_call(leaves, **kwargs) if route == "fused" else ffn_block(*leaves, backend="triton")
            out.backward(dy.to(out.dtype))
        return [out.detach()] + [t.grad for t in leaves]
    out.backward(dy.to(out.dtype))
    return [out.detach()] + [t.grad for t in leaves]


def check(case: Case, got: list[torch.Tensor], params, dy: torch.Tensor) -> None:
    oracle = run([t.double() for t in params], dy.double(), "reference")
    assert_matches_oracle(NAMES, got, oracle, lambda: run(params, dy, "reference"), OP, case.dtype, str(case))


@pytest.mark.parametrize("case", CASES)
def test_matches_float64_oracle(case: Case):
    case = case.on_device()
    params = make_params(case, kernel_device())
    dy = torch.randn(params[0].shape, device=params[0].device, dtype=case.dtype)
    check(case, run(params, dy, "api" if case.dtype != FP32 or not ON_GPU else "fused"), params, dy)


def test_backward_is_deterministic():
    """Two backward runs (several programs, partial sums added on the host) are bit-identical."""
    case = Case(70, 32, 64, BF16).on_device()
    params = make_params(case, kernel_device())
    dy = torch.randn(params[0].shape, device=params[0].device, dtype=case.dtype)
    first, second = run(params, dy, "fused"), run(params, dy, "fused")
    for name, a, b in zip(NAMES, first, second, strict=True):
        assert torch.equal(a, b), name


def test_autocast_fp32_stream_bf16_dots():
    """Autocast over fp32 parameters and an fp32 residual stream (the released recipe): the kernel's dots run in
    bf16 and the output and every gradient come back fp32, within the 2x rule of the reference under autocast."""
    case = Case(40, 64, 64)
    params = make_params(case, kernel_device())
    dy = torch.randn(params[0].shape, device=params[0].device)
    device_type = params[0].device.type

    def autocast_run(backend: str) -> list[torch.Tensor]:
        leaves = [t.detach().requires_grad_() for t in params]
        with torch.autocast(device_type, dtype=BF16), poison_torch_empty():
            out = ffn_block(*leaves, backend=backend)
        out.backward(dy)
        return [out.detach()] + [t.grad for t in leaves]

    got, same = autocast_run("triton"), autocast_run("torch")
    oracle = run([t.double() for t in params], dy.double(), "reference")
    assert all(t.dtype == FP32 for t in got)
    for name, a, t, e in zip(NAMES, got, same, oracle, strict=True):
        assert_low_precision_close(a.to(BF16), t.to(BF16), e, OP, f"{name} (autocast)")


@pytest.mark.skipif(ON_GPU, reason="fp32 dots run under the interpreter only")
def test_dropout_rate_scale_repeatability_and_backward_mask():
    """The kernel's own dropout (Philox on the element index, not nn.Dropout's draw): the kept fraction is 1 - p
    within 5 binomial standard deviations, kept values are the FFN output scaled by 1 / (1 - p), a seed repeats
    its mask and another seed does not, and the gradients equal the float64 oracle run with the forward's mask."""
    case, p = Case(60, 32, 64), 0.25
    params = make_params(case, kernel_device())
    dy = torch.randn(params[0].shape, device=params[0].device)

    def dropped(seed: int):
        leaves = [t.detach().requires_grad_() for t in params]
        with poison_torch_empty():
            out = fused_call(leaves, dropout=p, seed=torch.tensor([seed]))
            out.backward(dy)
        return out.detach(), [t.grad for t in leaves]

    out, grads = dropped(1234)
    keep = assert_kernel_dropout(out - params[0], fused_call(params) - params[0], p)
    assert torch.equal(dropped(1234)[0], out) and not torch.equal(dropped(99)[0], out)
    assert_backward_uses_the_forward_mask(out, grads, params, dy, lambda *t, keep: naive_ffn_block(
        *t, dropout=p, keep=keep), keep, NAMES[1:], OP)


def test_autotuned_launch_with_several_configs_matches_the_oracle():
    """The production autotuned launch (key, prune, benchmarker) with every GPU config of BLOCK_K and warps,
    benchmarked under the interpreter: the config that wins gives the oracle's answer, forward and backward."""
    from hitrs_fast.kernels.common.tuning import benchmarker_override
    from hitrs_fast.kernels.ffn_block import ops

    calls = []

    def bench(kernel_call, quantiles):
        kernel_call()
        calls.append(1)
        return [1.0 + len(calls) % 3] * len(quantiles)

    case = Case(45, 48, 64)
    params = make_params(case, kernel_device())
    dy = torch.randn(params[0].shape, device=params[0].device)
    configs = [triton.Config({"BLOCK_K": bk}, num_warps=4, num_stages=1) for bk in (16, 32, 64)]
    saved = ops.gpu_configs, ops.single_config
    try:
        ops._autotuned.cache_clear()
        ops.gpu_configs, ops.single_config = (lambda: configs), (lambda: False)
        with benchmarker_override(bench):
            got = run(params, dy, "fused")
    finally:
        ops.gpu_configs, ops.single_config = saved
        ops._autotuned.cache_clear()
    assert len(calls) == 2 * len(configs), "every config (C = 48 pads to 64: none pruned) timed, fwd and bwd"
    check(case, got, params, dy)


def test_dispatch_reasons():
    """The fused kernel takes the model's widths; a hidden width beyond 256 goes to the reference with a reason."""
    case = Case(4, 32, 300)
    params = make_params(case, torch.device("cpu"))
    from hitrs_fast.feedforward import FfnInputs

    assert any("hidden width 300" in r for r in TritonFfnBlock.not_supported_reasons(FfnInputs(*params)))
    with pytest.raises(NotImplementedError, match="hidden width 300"):
        ffn_block(*params, backend="triton")
    with pytest.raises(ValueError, match=r"expected w1 \[F, C=32\]"):
        ffn_block(params[0], *params[1:3], params[5], params[4], params[3], params[6])
