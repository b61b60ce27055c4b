"""C-TRS frame-masked attention: our Triton kernel vs the peers (A0-A6 below).

Run (GPU, headline batch 8 192)::

    python -m pytest benchmarks/test_frame_attention.py -q

``HITRS_BENCH_BATCHES=1,64,1024,8192,32768,65535,131072`` selects the batch ladder and
``HITRS_BENCH_SHAPES=ctrs-F7-N176-H8-D64,...`` a subset of the registry's C-TRS shapes
(``first``: the headline shape only); ``HITRS_BENCH_SMOKE=1`` (or no CUDA) runs the
registry's tiny smoke shapes with the kernel in the Triton interpreter and GPU-only
peers skipped with their reason: those numbers only prove the benchmark works.

Peers: ours (``frame_masked_attention(backend="triton")`` with the default kernel pair, split forward
and resident backward), ours-resident and ours-split (``HITRS_FAST_ATTENTION_KERNEL=resident`` /
``split``: the A/B of the two attention kernels), A0 eager reference (+ A0c
``torch.compile`` of it), A1 SDPA mem-efficient with a bool mask, A2 SDPA cuDNN (bf16),
A3 SDPA default, A4 FlexAttention (compiled, Triton backend, 128- and 64-blocks), A5
unmasked flash (not a correct result: an upper bound), A6 xformers if it imports.

Fairness rules, each enforced here:

- inputs: q, k and v are BNHD views ``[B, H, N, D]`` of three separate ``[B, N, H*D]``
  projection outputs (the model's layout); gradients are taken with respect to q, k and
  v themselves, so no peer pays for an autograd ``cat`` of a fused QKV tensor;
- compiled peers (A0c, A4): one compiled callable per (shape, dtype, batch) after
  ``torch._dynamo.reset()``, block masks built once per shape, compilation and
  autotuning before timing; the profiler must show the compiled region (and on CUDA a
  Triton kernel) ran, and any recompilation while timing raises: a case that fell back
  to eager is skipped with that reason, never timed as compiled;
- every peer except A5 passes the float64 oracle gate (output and dQ, dK, dV) on three
  sequences before it is timed; a peer that fails, or raises (unsupported configuration,
  out of memory), is skipped with the error it made; our kernel failing fails the case;
- grid-limited peers (batch on grid axis 1/z, limit 65 535) are called in chunks.

Row metrics: ms (median, p20, p80), sequences/s, TFLOP/s (dense 4 N^2 d H fwd, 2.5x
bwd, 3.5x fwd+bwd), GB/s and % of the HBM floor (fwd bytes 4 N H d x elem size, bwd
2x, fwd+bwd 3x; measured copy bandwidth), peak memory, the kernels that ran.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable

import pytest
import torch

from benchmarks.common import (
    compile_failure_types,
    fresh_compile,
    is_smoke,
    measure_call,
    measured_hbm_bandwidth,
    not_compiled_reason,
    record,
    skip,
)
from benchmarks.registry import CTRS_SHAPES, HEADLINE_BATCH, SMOKE_SHAPES, AttentionShape, selected_batches
from hitrs_fast.attention import frame_masked_attention
from hitrs_fast.kernels.capabilities import FRAME_ATTENTION_KERNEL_ENV
from hitrs_fast.reference.attention import naive_attention

SMOKE = is_smoke()
CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
GRID_LIMIT = 65535  # peers that put the batch on grid axis 1/z
MODES = ("fwd", "bwd", "full")
MODE_FACTOR = {"fwd": 1.0, "bwd": 2.5, "full": 3.5}  # FLOPs, as flash-attention's flops()
BYTES_FACTOR = {"fwd": 1.0, "bwd": 2.0, "full": 3.0}  # HBM bytes: bwd reads q, k, v, o, dO, writes dq, dk, dv
# Oracle gate. Benchmarks never import tests/, so the two numbers of tests/tolerances.py used
# here are restated: fp32 atol 1e-5 (+ rtol 1e-5); bf16: 2x eager's error + 1e-2.
FP32_ATOL, FP32_RTOL, BF16_ATOL, LOW_PRECISION_FACTOR = 1e-5, 1e-5, 1e-2, 2.0
GATE_BATCH = 3

PEERS = ("ours", "ours-resident", "ours-split", "A0-eager", "A0c-compiled", "A1-sdpa-efficient", "A2-sdpa-cudnn",
         "A3-sdpa-default", "A4-flex-128", "A4-flex-64", "A5-flash-unmasked", "A6-xformers")
COMPILED_PEERS = ("A0c-compiled", "A4-flex-128", "A4-flex-64")
# Our rows and the attention kernels they force (None: the default pair).
OURS_KERNELS = {"ours": None, "ours-resident": "resident", "ours-split": "split"}


def _shapes() -> tuple[AttentionShape, ...]:
    registry = SMOKE_SHAPES if SMOKE else CTRS_SHAPES
    env = os.environ.get("HITRS_BENCH_SHAPES")
    if not env:
        return registry
    if env == "first":  # the headline shape only (the registry lists it first)
        return registry[:1]
    by_name = {s.name: s for s in registry}
    unknown = sorted(set(env.split(",")) - set(by_name))
    if unknown:
        raise ValueError(f"HITRS_BENCH_SHAPES: unknown shapes {unknown}; known: {sorted(by_name)}")
    return tuple(by_name[n] for n in env.split(","))


DTYPES = (torch.bfloat16, torch.float32)


class PeerUnavailable(Exception):
    """The peer cannot run here; the message is the reason printed at the end."""


def _allowed(shape: AttentionShape, device) -> torch.Tensor:
    return shape.mask().materialize(shape.num_tokens, shape.num_tokens, device=device)


def _aligned_bool_mask(shape: AttentionShape, device) -> torch.Tensor:
    """``zeros(N, N_pad)[:, :N]`` with N_pad a multiple of 8, filled from the rule (row stride aligned)."""
    n = shape.num_tokens
    n_pad = (n + 7) // 8 * 8
    m = torch.zeros(n, n_pad, dtype=torch.bool, device=device)[:, :n]
    m.copy_(_allowed(shape, device))
    return m


def _chunked(fn: Callable, limit: int) -> Callable:
    """Run ``fn`` on batch chunks of at most ``limit`` sequences (grid-limited peers)."""

    def run(q, k, v):
        if q.shape[0] <= limit:
            return fn(q, k, v)
        return torch.cat([fn(q[i:i + limit], k[i:i + limit], v[i:i + limit]) for i in range(0, q.shape[0], limit)])

    return run


def _sdpa(backend_name: str | None, shape: AttentionShape, masked: bool = True):
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    mask = _aligned_bool_mask(shape, DEVICE) if masked else None
    backends = {"efficient": SDPBackend.EFFICIENT_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
                "flash": SDPBackend.FLASH_ATTENTION}

    def run(q, k, v):
        if backend_name is None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        with sdpa_kernel([backends[backend_name]]):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    return run


@functools.cache
def block_mask(shape: AttentionShape, block: int):
    """FlexAttention block mask of ``shape``, built once per (shape, block size) and shared by every case."""
    from torch.nn.attention.flex_attention import create_block_mask

    n = shape.num_tokens
    return create_block_mask(shape.mask().mask_mod(), None, None, n, n, device=DEVICE, BLOCK_SIZE=block)


@functools.cache
def flex_kernel_options() -> dict:
    """Force FlexAttention's Triton kernel: below N = 128 its AUTO choice is the decode kernel, which puts
    B*H on grid axis 1 and writes fp32 partials. ``BACKEND`` where this torch knows it, else the older knob."""
    try:
        from torch.nn.attention.flex_attention import FlexKernelOptions

        known = set(getattr(FlexKernelOptions, "__annotations__", {}))
    except ImportError:
        known = set()
    return {"BACKEND": "TRITON"} if "BACKEND" in known else {"FORCE_USE_FLEX_ATTENTION": True}


def make_peer(name: str, shape: AttentionShape, dtype: torch.dtype) -> tuple[Callable, str]:
    """Returns ``(fn(q, k, v) -> out [B, H, N, D], backend description)`` or raises PeerUnavailable.

    Compiled peers come back freshly compiled (``torch._dynamo.reset()`` first): build one per case.
    """
    mask = shape.mask()
    if name in OURS_KERNELS:
        kernels = OURS_KERNELS[name] or "split fwd, resident bwd"
        return (lambda q, k, v: frame_masked_attention(q, k, v, mask, backend="triton"),
                f"triton {kernels}" + (" (interpreter)" if not CUDA else ""))
    if name == "A0-eager":
        return (lambda q, k, v: naive_attention(q, k, v, mask)), "eager"
    if name == "A0c-compiled":
        compiled = fresh_compile(lambda q, k, v: naive_attention(q, k, v, mask), dynamic=False, fullgraph=True)
        return compiled, "inductor"
    if name == "A1-sdpa-efficient":
        if not CUDA:
            raise PeerUnavailable("SDPA mem-efficient kernel needs CUDA")
        return _chunked(_sdpa("efficient", shape), GRID_LIMIT), "EFFICIENT_ATTENTION (chunked > 65535)"
    if name == "A2-sdpa-cudnn":
        if not CUDA:
            raise PeerUnavailable("cuDNN attention needs CUDA")
        if dtype != torch.bfloat16:
            raise PeerUnavailable("cuDNN attention is bf16 only")
        version = torch.backends.cudnn.version() or 0
        if version < 91501 and shape.num_tokens % 128:
            raise PeerUnavailable(f"cuDNN {version} < 9.15.1 mishandles N % 128 != 0 (pytorch #169849)")
        return _chunked(_sdpa("cudnn", shape), GRID_LIMIT), "CUDNN_ATTENTION (chunked > 65535)"
    if name == "A3-sdpa-default":
        return _sdpa(None, shape), "SDPA default"
    if name in ("A4-flex-128", "A4-flex-64"):
        from torch.nn.attention.flex_attention import flex_attention

        block = 128 if name.endswith("128") else 64
        bm = block_mask(shape, block)
        options = flex_kernel_options()
        flex = fresh_compile(flex_attention, dynamic=False, fullgraph=True)
        fn = lambda q, k, v: flex(q, k, v, block_mask=bm, kernel_options=options)
        return _chunked(fn, GRID_LIMIT), f"flex {next(iter(options))}={next(iter(options.values()))} block {block}"
    if name == "A5-flash-unmasked":
        if not CUDA:
            raise PeerUnavailable("flash attention needs CUDA")
        if dtype != torch.bfloat16:
            raise PeerUnavailable("flash attention is bf16/fp16 only")
        return _sdpa("flash", shape, masked=False), "FLASH_ATTENTION, NO MASK (upper bound, not correct)"
    if name == "A6-xformers":
        try:
            import xformers.ops as xops
        except Exception as exc:  # any import failure (missing, ABI mismatch) means: skip with the error
            raise PeerUnavailable(f"xformers does not import: {type(exc).__name__}: {exc}") from None
        if not CUDA:
            raise PeerUnavailable("xformers memory_efficient_attention needs CUDA")
        n = shape.num_tokens
        n_pad = (n + 7) // 8 * 8
        bias = torch.zeros(1, 1, n, n_pad, device=DEVICE, dtype=dtype)[..., :n]
        bias.masked_fill_(~_allowed(shape, DEVICE), float("-inf"))

        def run(q, k, v):
            b, h = q.shape[:2]
            out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                  attn_bias=bias.expand(b, h, n, n))
            return out.transpose(1, 2)

        return run, "xformers cutlassF"
    raise ValueError(f"unknown peer {name!r}")


def describe_kernels(kernels: list[str]) -> str:
    """Which attention implementation the profiled kernel names belong to."""
    joined = " ".join(kernels).lower()
    for needle, label in (("cudnn", "cuDNN"), ("fmha_cutlass", "mem-efficient (cutlass)"),
                          ("efficient_attention", "mem-efficient"), ("flash_fwd", "flash"), ("flash_bwd", "flash"),
                          ("triton", "Triton")):
        if needle in joined:
            return label
    return kernels[0] if kernels else "unknown"


def make_inputs(shape: AttentionShape, batch: int, dtype: torch.dtype, grad: bool, device: str = DEVICE):
    """q, k, v ``[B, H, N, D]``: BNHD views of three ``[B, N, H*D]`` leaves (the projections' layout); dO."""
    n, h, d = shape.num_tokens, shape.heads, shape.head_dim
    leaves = [torch.randn(batch, n, h * d, device=device, dtype=dtype, requires_grad=grad) for _ in range(3)]
    q, k, v = (t.view(batch, n, h, d).transpose(1, 2) for t in leaves)
    return q, k, v, torch.randn(batch, h, n, d, device=device, dtype=dtype)


def _views_as(tensors, dtype: torch.dtype, grad: bool):
    """The same values as BNHD views of new ``[B, N, H*D]`` leaves in ``dtype``."""
    b, h, n, d = tensors[0].shape
    leaves = [t.detach().transpose(1, 2).reshape(b, n, h * d).to(dtype).requires_grad_(grad) for t in tensors]
    return [t.view(b, n, h, d).transpose(1, 2) for t in leaves]


def oracle_gate(fn: Callable, shape: AttentionShape, dtype: torch.dtype, mode: str) -> tuple[bool, str]:
    """Peer vs the float64 eager reference on 3 sequences: the output, and dQ, dK, dV for bwd / full."""
    torch.manual_seed(0)  # the gate is reproducible run to run
    q, k, v, do = make_inputs(shape, GATE_BATCH, dtype, grad=False)
    mask = shape.mask()
    check_grad = mode != "fwd"
    # On CUDA the inputs require grad in every mode, so a compiled peer traces one gate graph for fwd, bwd and
    # full (fewer compilations); on CPU FlexAttention has no backward, so the fwd gate runs without autograd.
    grad_inputs = check_grad or CUDA

    def run(attend, cast):
        qs, ks, vs = _views_as((q, k, v), cast, grad_inputs)
        out = attend(qs, ks, vs)
        if not check_grad:
            return (out.detach(),)
        return (out.detach(), *torch.autograd.grad(out, (qs, ks, vs), do.to(cast)))

    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # the oracle runs without TF32
    try:
        ref = run(lambda a, b, c: naive_attention(a, b, c, mask), torch.float64)
        eager = run(lambda a, b, c: naive_attention(a, b, c, mask), dtype) if dtype != torch.float32 else None
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev
    got = run(fn, dtype)
    report = []
    ok = True
    for i, name in enumerate(("out", "dq", "dk", "dv")[:len(got)]):
        err = (got[i].double() - ref[i]).abs()
        if dtype == torch.float32:
            bad = bool((err > FP32_ATOL + FP32_RTOL * ref[i].abs()).any())
            bound = FP32_ATOL
        else:
            bound = LOW_PRECISION_FACTOR * (eager[i].double() - ref[i]).abs().max().item() + BF16_ATOL
            bad = bool(err.max() > bound) or not bool(torch.isfinite(got[i]).all())
        ok &= not bad
        report.append(f"{name} max err {err.max().item():.3g} (bound {bound:.3g})")
    return ok, "; ".join(report)


def _smoke_runs(peer: str, shape: AttentionShape, dtype: torch.dtype, mode: str) -> bool:
    """Smoke mode: every peer forward; backward only for the cheap ones; compiled peers (tens of seconds of CPU
    compilation each) on the first smoke shape in fp32 only, which is enough to prove their path works."""
    if peer in COMPILED_PEERS:
        return mode == "fwd" and shape == SMOKE_SHAPES[0] and dtype == torch.float32
    if peer in ("ours-resident", "ours-split"):
        return shape == SMOKE_SHAPES[0]
    return mode == "fwd" or peer in ("ours", "A0-eager", "A3-sdpa-default")


# Order: shape, dtype, peer, mode, batch. The headline shape (first in the registry) runs first, so a
# campaign part stopped by its time budget loses the least important rows.
CASES = [
    pytest.param(peer, shape, dtype, mode, batch,
                 id=f"{peer}-{shape.name}-{str(dtype).removeprefix('torch.')}-{mode}-B{batch}")
    for shape in _shapes() for dtype in DTYPES for peer in PEERS for batch in selected_batches((HEADLINE_BATCH,))
    for mode in MODES if not SMOKE or _smoke_runs(peer, shape, dtype, mode)
]

_compiled_cache: dict[tuple, tuple[Callable, str]] = {}


def peer_for_case(peer: str, shape: AttentionShape, dtype: torch.dtype, batch: int) -> tuple[Callable, str]:
    """The callable of one case. A compiled peer is compiled once per (peer, shape, dtype, batch) and reused by
    that key's fwd / bwd / full cases (their graphs stay far below the recompile limit); a new key resets
    dynamo and compiles afresh."""
    if peer not in COMPILED_PEERS:
        return make_peer(peer, shape, dtype)
    key = (peer, shape, dtype, batch)
    if key not in _compiled_cache:
        _compiled_cache.clear()
        _compiled_cache[key] = make_peer(peer, shape, dtype)
    return _compiled_cache[key]


def measure(fn: Callable, shape: AttentionShape, dtype: torch.dtype, case: dict, benchmark):
    """Oracle gate, warm-up (compilation, autotuning), compiled-path proof, then the timings of one case.

    Returns ``(gate passed, gate report, measure_call's dict)``. A peer that fails the gate is skipped here
    (our kernel failing it fails the case)."""
    peer, mode, batch = case["peer"], case["mode"], case["batch"]
    if peer == "A5-flash-unmasked":
        passed, gate = False, "not a correct result (no mask): upper bound only"
    else:
        passed, gate = oracle_gate(fn, shape, dtype, mode)
        if not passed and peer in OURS_KERNELS:
            pytest.fail(f"our kernel failed the oracle gate: {gate}")
        if not passed:
            skip(f"{peer} {shape.name} {case['dtype']} {mode}", f"failed the oracle gate: {gate}", **case)
            pytest.skip(f"{peer} failed the oracle gate: {gate}")
    q, k, v, do = make_inputs(shape, batch, dtype, grad=mode != "fwd")
    if mode == "fwd":
        def target():
            with torch.no_grad():
                return fn(q, k, v)
    elif mode == "bwd":
        out = fn(q, k, v)
        target = lambda: torch.autograd.grad(out, (q, k, v), do, retain_graph=True)
    else:
        target = lambda: torch.autograd.grad(fn(q, k, v), (q, k, v), do)
    target()  # compilation, autotuning and block-mask creation happen before timing
    measured = measure_call(target, compiled=peer in COMPILED_PEERS, warmup=1 if SMOKE else 25,
                            rep=3 if SMOKE else 100)
    benchmark.pedantic(lambda: (target(), torch.cuda.synchronize() if CUDA else None), rounds=1, iterations=1,
                       warmup_rounds=0)
    return passed, gate, measured


@pytest.mark.benchmark(group="frame_attention")
@pytest.mark.parametrize(("peer", "shape", "dtype", "mode", "batch"), CASES)
def test_frame_attention(benchmark, monkeypatch, peer: str, shape: AttentionShape, dtype: torch.dtype, mode: str,
                         batch: int):
    dtype_name = str(dtype).removeprefix("torch.")
    if OURS_KERNELS.get(peer):
        monkeypatch.setenv(FRAME_ATTENTION_KERNEL_ENV, OURS_KERNELS[peer])
    case = {"op": "frame_attention", "peer": peer, "shape": shape.name, "dtype": dtype_name, "mode": mode,
            "batch": batch}
    try:
        fn, backend_ran = peer_for_case(peer, shape, dtype, batch)
    except PeerUnavailable as exc:
        skip(peer, str(exc), **case)
        pytest.skip(f"{peer}: {exc}")
    try:
        passed, gate, measured = measure(fn, shape, dtype, case, benchmark)
    except compile_failure_types() as exc:
        skip(f"{peer} {shape.name} {dtype_name} {mode}", not_compiled_reason(exc), **case)
        pytest.skip(not_compiled_reason(exc))
    except Exception as exc:  # a peer's own error (unsupported config, out of memory) skips that peer only
        if peer in OURS_KERNELS:
            raise
        reason = f"raised {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        skip(f"{peer} {shape.name} {dtype_name} {mode}", reason, **case)
        pytest.skip(reason)
    timing, peak = measured["timing"], measured["peak_bytes"]
    if peer == "A3-sdpa-default" and CUDA:
        backend_ran = f"SDPA default -> {describe_kernels(measured['kernels'])}"

    seconds = timing["median_ms"] * 1e-3
    elem = torch.finfo(dtype).bits // 8
    flops = shape.fwd_flops() * MODE_FACTOR[mode] * batch
    nbytes = shape.fwd_bytes(elem) * BYTES_FACTOR[mode] * batch
    bandwidth = measured_hbm_bandwidth()
    record(benchmark, **case, layout="BNHD views, grads w.r.t. q, k, v", **timing,
           seq_per_s=batch / seconds, tflops=flops / seconds / 1e12,
           useful_tflops=flops * (1 - shape.masked_fraction()) / seconds / 1e12,
           flop_formula=f"4*N^2*d*H x {MODE_FACTOR[mode]}", gbps=nbytes / seconds / 1e9,
           hbm_bandwidth_gbps=bandwidth / 1e9 if bandwidth else None,
           pct_floor=100 * (nbytes / bandwidth) / seconds if bandwidth else None,
           peak_mem_mb=peak / 2 ** 20 if peak is not None else None,
           tests_passed=passed, oracle_gate=gate, backend_ran=backend_ran, kernels=measured["kernels"],
           compiled_check=measured["compiled_check"], headline=batch >= HEADLINE_BATCH)
    assert math.isfinite(timing["median_ms"])
