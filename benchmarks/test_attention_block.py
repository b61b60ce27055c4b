"""The pre-LN attention sublayer, ``x + dropout(W_o attention(LN(x) W_q, W_k, W_v))``: ours vs the peers' compositions.

Run (GPU, B = 8 192 sequences of the C-TRS block and 8 192 frames of the F-TRS block)::

    python -m pytest benchmarks/test_attention_block.py -q

Rows (``peer``), all on the same weights and inputs, training mode with dropout 0.2 after W_o:

- ``ours``: ``frame_attention_block(backend="triton")``: the fused kernel where it applies (F-TRS in bf16), else
  the composed path (one QKV GEMM, the attention kernels on the projection in place, W_o) with the default
  kernel pair (split forward, resident backward);
- ``ours-resident``, ``ours-split``: the composed path with ``HITRS_FAST_ATTENTION_KERNEL=resident`` / ``split``
  (the A/B of the attention kernels; skipped where the fused kernel runs, which has no attention kernel to pick);
- ``kernel+cublas``: the layer before the block existed: LayerNorm, three QKV GEMMs, the Triton attention op, the
  W_o GEMM, dropout and the residual, op by op;
- peers: ``eager`` (the reference math: scores, mask fill, softmax), ``eager+sdpa`` (SDPA with the boolean
  mask), ``compile+sdpa`` and ``compile+flex`` (``torch.compile`` of the composition with SDPA, and with
  FlexAttention on 128-blocks; compiled afresh per case, the profiler must show the compiled region ran).

Modes ``fwd`` (no autograd) and ``full`` (forward and the gradients of x and every weight). dtypes: bf16 (bf16
parameters and activations, DeepSpeed's bf16 mode) and fp32. Every row passes a float64 oracle gate on a few
sequences first (dropout off there); our rows failing it fail the case, a peer failing it is skipped.

Each row carries ``predicted_ms``: the performance model's time for that implementation on an H100
(``benchmarks/attention_block_model.py``; docs/kernels/attention_blocks.md), beside the measured median. In smoke
mode (CPU) the kernels run in the Triton interpreter on tiny shapes and nothing is a speed result.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from benchmarks.attention_block_model import Shape, benchmark_prediction
from benchmarks.common import (
    compile_failure_types,
    fresh_compile,
    is_smoke,
    measure_call,
    not_compiled_reason,
    record,
    skip,
)
from benchmarks.registry import (
    BLOCK_SHAPES,
    HEADLINE_BATCH,
    SMOKE_BLOCK_SHAPES,
    BlockShape,
    selected_batches,
)
from hitrs_fast.attention import (
    BlockInputs,
    TritonAttentionBlock,
    frame_attention_block,
    frame_masked_attention,
)
from hitrs_fast.kernels.capabilities import FRAME_ATTENTION_KERNEL_ENV
from hitrs_fast.reference.attention import naive_attention_block

SMOKE = is_smoke()
CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
DROPOUT = 0.2
MODES = ("fwd", "full")
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
IMPLS = ("ours", "ours-resident", "ours-split", "kernel+cublas", "eager", "eager+sdpa", "compile+sdpa",
         "compile+flex")
COMPILED = ("compile+sdpa", "compile+flex")
KERNEL_ENV = {"ours-resident": "resident", "ours-split": "split"}
# Oracle gate; benchmarks never import tests/, so the numbers of the tolerance table are restated: fp32 atol and
# rtol 1e-4 (attention_block); 16-bit: 2x the eager composition's error in that dtype + 2e-2 of the magnitude.
FP32_TOL, LOW_ATOL, LOW_FACTOR = 1e-4, 2e-2, 2.0
GATE_BATCH = 7  # two fused tiles of 5 frames at F-TRS


def _model_shape(shape: BlockShape, dtype_name: str) -> Shape:
    a = shape.attention
    return Shape(shape.name, a.num_tokens, shape.width, a.heads, a.head_dim, a.mask_kind == "frame", dtype_name)


def make_params(shape: BlockShape, batch: int, dtype: torch.dtype) -> list[torch.Tensor]:
    """x ``[B, N, C]`` and the sublayer's weights (LN affine, W_q, W_k, W_v ``[H*D, C]``, W_o ``[C, H*D]``)."""
    g = torch.Generator(device=DEVICE).manual_seed(0)
    a, c = shape.attention, shape.width
    inner = a.heads * a.head_dim
    tensors = [torch.randn(batch, a.num_tokens, c, device=DEVICE, generator=g),
               1 + 0.1 * torch.randn(c, device=DEVICE, generator=g), 0.1 * torch.randn(c, device=DEVICE, generator=g)]
    tensors += [torch.randn(inner, c, device=DEVICE, generator=g) / math.sqrt(c) for _ in range(3)]
    tensors.append(torch.randn(c, inner, device=DEVICE, generator=g) / math.sqrt(inner))
    return [t.to(dtype) for t in tensors]


def make_impl(impl: str, shape: BlockShape) -> Callable:
    """``fn(x, ln_w, ln_b, w_q, w_k, w_v, w_o, training) -> out [B, N, C]`` of one implementation."""
    a = shape.attention
    mask, heads = a.mask(), a.heads
    kwargs = {"heads": heads, "dropout": DROPOUT}
    if impl in ("ours", "ours-resident", "ours-split"):
        return lambda *t, training: frame_attention_block(*t, mask, **kwargs, training=training, backend="triton")
    if impl == "kernel+cublas":
        def triton_attention(q, k, v, m, scale):
            return frame_masked_attention(q, k, v, m, scale=scale, backend="triton")

        return lambda *t, training: naive_attention_block(*t, mask, **kwargs, training=training,
                                                          attend=triton_attention)
    if impl == "eager":
        return lambda *t, training: naive_attention_block(*t, mask, **kwargs, training=training)
    if impl == "eager+sdpa":
        return lambda *t, training: frame_attention_block(*t, mask, **kwargs, training=training, backend="sdpa")
    backend = "aot_eager" if SMOKE else "inductor"  # CPU inductor compiles for minutes; smoke proves the wiring
    if impl == "compile+sdpa":
        fn = lambda *t, training: frame_attention_block(*t, mask, **kwargs, training=training, backend="sdpa")
        return fresh_compile(fn, backend=backend, dynamic=False, fullgraph=True)
    if impl == "compile+flex":
        from torch.nn.attention.flex_attention import flex_attention

        from benchmarks.test_frame_attention import block_mask, flex_kernel_options

        bm, options = block_mask(a, 128), flex_kernel_options()
        flex = lambda q, k, v, m, scale: flex_attention(q, k, v, block_mask=bm, scale=scale, kernel_options=options)
        fn = lambda *t, training: naive_attention_block(*t, mask, **kwargs, training=training, attend=flex)
        return fresh_compile(fn, backend=backend, dynamic=False, fullgraph=True)
    raise ValueError(f"unknown implementation {impl!r}")


def oracle_gate(fn: Callable, shape: BlockShape, dtype: torch.dtype, mode: str) -> tuple[bool, str]:
    """Output (and for ``full`` the gradients of x and every weight) vs the float64 composition, dropout off."""
    torch.manual_seed(0)
    params = make_params(shape, GATE_BATCH, torch.float32)
    mask, heads = shape.attention.mask(), shape.attention.heads
    dy = torch.randn_like(params[0])

    def run(attend, cast):
        leaves = [t.detach().to(cast).requires_grad_(mode == "full") for t in params]
        out = attend(*leaves)
        if mode != "full":
            return [out.detach()]
        return [out.detach(), *torch.autograd.grad(out, leaves, dy.to(out.dtype))]

    reference = lambda *t: naive_attention_block(*t, mask, heads)
    oracle = run(reference, torch.float64)
    eager = run(reference, dtype) if dtype != torch.float32 else None
    got = run(lambda *t: fn(*t, training=False), dtype)
    ok, report = True, []
    for i, name in enumerate(("out", "dx", "dln_w", "dln_b", "dw_q", "dw_k", "dw_v", "dw_o")[:len(got)]):
        err = (got[i].double() - oracle[i]).abs()
        scale = max(1.0, oracle[i].abs().max().item())
        if dtype == torch.float32:
            bound = FP32_TOL * scale
            bad = bool((err > FP32_TOL + FP32_TOL * oracle[i].abs()).any())
        else:
            bound = LOW_FACTOR * (eager[i].double() - oracle[i]).abs().max().item() + LOW_ATOL * scale
            bad = bool(err.max() > bound) or not bool(torch.isfinite(got[i]).all())
        ok &= not bad
        report.append(f"{name} max err {err.max().item():.3g} (bound {bound:.3g})")
    return ok, "; ".join(report)


def _smoke_runs(impl: str, shape: BlockShape, dtype_name: str, mode: str) -> bool:
    """Smoke mode: compiled peers only once (first shape, fp32, fwd); the rest forward and backward."""
    if impl in COMPILED:
        return shape == SMOKE_BLOCK_SHAPES[0] and dtype_name == "fp32" and mode == "fwd"
    return True


SHAPES = SMOKE_BLOCK_SHAPES if SMOKE else BLOCK_SHAPES
# bf16 of both shapes first (the H200 run's budget ended inside the C-TRS fp32 rows, before any F-TRS row), the
# headline shape first within a dtype: a campaign part stopped by its time budget loses the least important rows.
CASES = [
    pytest.param(impl, shape, dtype_name, mode, batch, id=f"{impl}-{shape.name}-{dtype_name}-{mode}-B{batch}")
    for dtype_name in DTYPES for shape in SHAPES for mode in MODES for impl in IMPLS
    for batch in selected_batches((HEADLINE_BATCH,)) if not SMOKE or _smoke_runs(impl, shape, dtype_name, mode)
]


@pytest.mark.benchmark(group="attention_block")
@pytest.mark.parametrize(("impl", "shape", "dtype_name", "mode", "batch"), CASES)
def test_attention_block(benchmark, monkeypatch, impl: str, shape: BlockShape, dtype_name: str, mode: str,
                         batch: int):
    dtype = DTYPES[dtype_name]
    case = {"op": "attention_block", "peer": impl, "shape": shape.name, "dtype": dtype_name, "mode": mode,
            "batch": batch}
    params = make_params(shape, batch, dtype)
    if impl in KERNEL_ENV:
        if not TritonAttentionBlock.fused_reasons(BlockInputs(*params, shape.attention.mask(), shape.attention.heads)):
            reason = "the fused kernel runs here: there is no attention kernel to choose"
            skip(f"{impl} {shape.name} {dtype_name}", reason, **case)
            pytest.skip(reason)
        monkeypatch.setenv(FRAME_ATTENTION_KERNEL_ENV, KERNEL_ENV[impl])
    if impl == "compile+flex" and not CUDA and not SMOKE:
        pytest.skip("FlexAttention is timed on CUDA")
    ours = impl.startswith("ours") or impl == "kernel+cublas"
    try:
        fn = make_impl(impl, shape)
        passed, gate = oracle_gate(fn, shape, dtype, mode)
        if not passed and ours:
            pytest.fail(f"{impl} failed the oracle gate: {gate}")
        if not passed:
            skip(f"{impl} {shape.name} {dtype_name} {mode}", f"failed the oracle gate: {gate}", **case)
            pytest.skip(f"{impl} failed the oracle gate: {gate}")
        if mode == "fwd":
            def target():
                with torch.no_grad():
                    return fn(*params, training=True)
        else:
            leaves = [t.detach().requires_grad_() for t in params]
            dy = torch.randn_like(params[0])
            target = lambda: torch.autograd.grad(fn(*leaves, training=True), leaves, dy)
        target()  # compilation and autotuning before timing
        measured = measure_call(target, compiled=impl in COMPILED, inductor=not SMOKE, warmup=1 if SMOKE else 25,
                                rep=3 if SMOKE else 100)
    except compile_failure_types() as exc:
        skip(f"{impl} {shape.name} {dtype_name} {mode}", not_compiled_reason(exc), **case)
        pytest.skip(not_compiled_reason(exc))
    except Exception as exc:  # a peer's own error (unsupported configuration, out of memory) skips that peer
        if ours:
            raise
        reason = f"raised {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        skip(f"{impl} {shape.name} {dtype_name} {mode}", reason, **case)
        pytest.skip(reason)
    benchmark.pedantic(lambda: (target(), torch.cuda.synchronize() if CUDA else None), rounds=1, iterations=1,
                       warmup_rounds=0)
    timing, peak = measured["timing"], measured["peak_bytes"]
    # The model describes the GPU shapes; a smoke shape borrows the prediction of the GPU shape it stands for.
    model_block = BLOCK_SHAPES[SHAPES.index(shape)]
    prediction = benchmark_prediction(_model_shape(model_block, dtype_name), impl, batch=batch)
    predicted_s = (prediction.fwd_s if mode == "fwd" else prediction.total_s) * batch
    seconds = timing["median_ms"] * 1e-3
    record(benchmark, **case, **timing, seq_per_s=batch / seconds, predicted_ms=predicted_s * 1e3,
           predicted_for=f"{prediction.name} (H100 model of {model_block.name}, B = {batch})",
           measured_over_predicted=None if timing["smoke"] else seconds / predicted_s,
           peak_mem_mb=peak / 2 ** 20 if peak is not None else None, tests_passed=passed, oracle_gate=gate,
           kernels=measured["kernels"], compiled_check=measured["compiled_check"], dropout=DROPOUT,
           headline=batch >= HEADLINE_BATCH)
    assert math.isfinite(timing["median_ms"])
