"""Frame-masked attention kernels vs the float64 reference: output, LSE and all gradients.

Every Triton case runs under the CPU interpreter (``TRITON_INTERPRET=1``, set by
tests/conftest.py without CUDA) with outputs and scratch NaN-poisoned. ``config=None``
cases go through the autograd Function and the registered op (autotuning collapsed to
one config in the interpreter) on the kernel the environment picks (resident where it
fits); explicit configs call the launchers directly with an explicit kernel: the split
kernels' two forward variants (online / whole row) and tile skipping (16-wide tiles with
``allow_self=False``), and the resident kernels' q-tile heights. Big grids are GPU-only
(``slow`` + ``requires_cuda``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
import torch
import triton
import triton.language as tl

from hitrs_fast.kernels.frame_attention.kernels import _head_and_tile
from hitrs_fast.masks import FrameMask, KeyPaddingMask, NoMask
from hitrs_fast.reference.attention import naive_attention
from tests.support.devices import REQUIRES_CUDA, kernel_device, record_launches
from tests.support.nan_poison import poison_torch_empty
from tests.support.tolerances import assert_close_verbose, assert_low_precision_close, tolerance

OP = "frame_attention"


@dataclass(frozen=True)
class Case:
    batch: int
    heads: int
    frames: int
    head_dim: int
    dtype: torch.dtype = torch.float32
    cls: str = "last"
    allow_self: bool = True
    mask: str = "frame"  # "frame", "none" or "padding"
    lengths: tuple[int, ...] = ()
    cls_last_key: bool = True
    bnhd: bool = True  # BNHD views of a [B, N, 3*H*D] projection, else contiguous [B, H, N, D]
    config: dict | None = field(default=None, hash=False)
    variant: str | None = None  # with a config: "split" or "resident"

    def __post_init__(self) -> None:
        if (self.config is None) != (self.variant is None):
            raise ValueError("a Case with an explicit config names its kernel (variant) and vice versa")

    @property
    def num_tokens(self) -> int:
        if self.mask == "frame":
            return 25 * self.frames + (self.cls != "none")
        return 25 * self.frames + int(self.mask == "padding" and self.cls_last_key)

    def typed_mask(self):
        if self.mask == "frame":
            return FrameMask(frame_size=25, num_frames=self.frames, cls=self.cls, allow_self=self.allow_self)
        if self.mask == "padding":
            return KeyPaddingMask(torch.tensor(self.lengths), unit="tokens",
                                  cls="last" if self.cls_last_key else "none")
        return NoMask()


SPLIT, RESIDENT = "split", "resident"
ONLINE16 = {"BLOCK_M": 16, "BLOCK_N": 16, "WHOLE_ROW": False}
ONLINE64 = {"BLOCK_M": 64, "BLOCK_N": 64, "WHOLE_ROW": False}
WHOLE64 = {"BLOCK_M": 64, "BLOCK_N": 16, "WHOLE_ROW": True}
WHOLE32 = {"BLOCK_M": 32, "BLOCK_N": 16, "WHOLE_ROW": True}
RES16, RES64 = {"BLOCK_M": 16}, {"BLOCK_M": 64}
FP32, BF16, FP16 = torch.float32, torch.bfloat16, torch.float16

CASES = [
    pytest.param(Case(1, 8, 7, 64, config=ONLINE64, variant=SPLIT), id="B1-F7-N176-H8-D64-fp32-bnhd-online64"),
    pytest.param(Case(1, 2, 7, 64, config=WHOLE64, variant=SPLIT), id="B1-F7-N176-H2-D64-fp32-bnhd-wholerow"),
    pytest.param(Case(1, 2, 6, 32, config=WHOLE64, allow_self=False, variant=SPLIT),
                 id="B1-F6-N151-H2-D32-fp32-noself-wholerow"),
    pytest.param(Case(2, 2, 2, 32), id="B2-F2-N51-H2-D32-fp32-bnhd-autograd"),
    pytest.param(Case(3, 2, 1, 16), id="B3-F1-N26-H2-D16-fp32-autograd"),
    pytest.param(Case(7, 1, 1, 16, bnhd=False, config=WHOLE32, variant=SPLIT), id="B7-F1-N26-H1-D16-fp32-contiguous"),
    pytest.param(Case(1, 2, 3, 32, allow_self=False, config=ONLINE16, variant=SPLIT),
                 id="B1-F3-N76-H2-D32-fp32-noself-skip16"),
    pytest.param(Case(1, 2, 3, 32, allow_self=True, config=ONLINE16, variant=SPLIT),
                 id="B1-F3-N76-H2-D32-fp32-self-tile16"),
    pytest.param(Case(2, 1, 2, 16, cls="none"), id="B2-F2-N50-H1-D16-fp32-nocls"),
    pytest.param(Case(2, 1, 2, 16, cls="first", allow_self=False), id="B2-F2-N51-H1-D16-fp32-clsfirst-noself"),
    pytest.param(Case(1, 1, 1, 128, config=WHOLE32, variant=SPLIT), id="B1-F1-N26-H1-D128-fp32"),
    pytest.param(Case(1, 1, 2, 64, bnhd=False), id="B1-F2-N51-H1-D64-fp32-contiguous"),
    pytest.param(Case(3, 2, 1, 16, mask="none"), id="B3-N25-H2-D16-fp32-nomask-ftrs"),
    pytest.param(Case(3, 2, 1, 16, mask="padding", lengths=(1, 7, 25)), id="B3-N26-H2-D16-fp32-keypad-clslast"),
    pytest.param(Case(2, 1, 1, 32, mask="padding", lengths=(2, 15), cls_last_key=False, config=ONLINE16,
                      variant=SPLIT),
                 id="B2-N25-H1-D32-fp32-keypad-nocls-tile16"),
    pytest.param(Case(1, 1, 41, 16, config={"BLOCK_M": 128, "BLOCK_N": 128, "WHOLE_ROW": False}, variant=SPLIT),
                 id="B1-F41-N1026-H1-D16-fp32-online128"),
    pytest.param(Case(2, 2, 2, 32, dtype=BF16), id="B2-F2-N51-H2-D32-bf16-autograd"),
    # The one-axis grid: 5 * 3 * 5 = 75 programs, tile index fastest; distinct B and H so a
    # swapped or shifted decode lands on another head's data, NaN-poisoned outputs catch any unwritten tile.
    pytest.param(Case(5, 3, 3, 16, config=ONLINE16, variant=SPLIT), id="B5-F3-N76-H3-D16-fp32-grid-tile16"),
    pytest.param(Case(1, 2, 2, 32, dtype=FP16, allow_self=False, config=WHOLE64, variant=SPLIT),
                 id="B1-F2-N51-H2-D32-fp16-wholerow"),
    # The resident kernels (one program per (sequence, head)) with both q-tile heights, both masks, key
    # padding, CLS first and none, fp32, bf16 and fp16. N = 176 bf16 D = 64 is the official shape (K, V, dK, dV
    # take exactly the 192 KiB limit); one head keeps it cheap under the interpreter.
    pytest.param(Case(1, 1, 7, 64, dtype=BF16, config=RES64, variant=RESIDENT),
                 id="B1-F7-N176-H1-D64-bf16-resident64"),
    pytest.param(Case(1, 2, 6, 32, allow_self=False, config=RES16, variant=RESIDENT),
                 id="B1-F6-N151-H2-D32-fp32-noself-resident16"),
    pytest.param(Case(3, 2, 2, 16, cls="first", config=RES16, variant=RESIDENT),
                 id="B3-F2-N51-H2-D16-fp32-clsfirst-resident16"),
    pytest.param(Case(2, 1, 2, 32, dtype=FP16, cls="none", config=RES64, variant=RESIDENT),
                 id="B2-F2-N50-H1-D32-fp16-nocls-resident64"),
    pytest.param(Case(3, 2, 1, 16, mask="padding", lengths=(1, 7, 25), config=RES16, variant=RESIDENT),
                 id="B3-N26-H2-D16-fp32-keypad-resident16"),
    pytest.param(Case(2, 2, 1, 32, mask="none", bnhd=False, config=RES16, variant=RESIDENT),
                 id="B2-N25-H2-D32-fp32-nomask-contiguous-resident16"),
    pytest.param(Case(1, 8, 7, 64, dtype=BF16), id="B1-F7-N176-H8-D64-bf16-autograd", marks=pytest.mark.slow),
    pytest.param(Case(8192, 8, 7, 64, dtype=BF16), id="B8192-F7-N176-H8-D64-bf16",
                 marks=[pytest.mark.slow, *REQUIRES_CUDA]),
    pytest.param(Case(65537, 1, 7, 64, dtype=BF16), id="B65537-F7-N176-H1-D64-bf16-gridlimit",
                 marks=[pytest.mark.slow, *REQUIRES_CUDA]),
    pytest.param(Case(7, 8, 6, 32, dtype=FP16, allow_self=False), id="B7-F6-N151-H8-D32-fp16",
                 marks=[pytest.mark.slow, *REQUIRES_CUDA]),
]


def make_inputs(case: Case, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    b, h, n, d = case.batch, case.heads, case.num_tokens, case.head_dim
    if case.bnhd:
        # The producer's layout: one [B, N, 3*H*D] projection, each of q/k/v a BNHD view.
        x = torch.randn(b, n, 3 * h * d, device=device, dtype=case.dtype)
        return tuple(t.view(b, n, h, d).transpose(1, 2) for t in x.split(h * d, dim=-1))
    return tuple(torch.randn(b, h, n, d, device=device, dtype=case.dtype) for _ in range(3))


def reference_lse(q: torch.Tensor, k: torch.Tensor, mask, scale: float) -> torch.Tensor:
    """Natural-log LSE of the masked scores, ``[B, H, N]``, in q's dtype."""
    scores = (q * scale) @ k.transpose(-2, -1)
    if not isinstance(mask, NoMask):
        allowed = mask.materialize(q.shape[-2], k.shape[-2], device=q.device)
        scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.logsumexp(scores, dim=-1)


def eager_attention(q, k, v, mask, scale):
    """The reference math with blocked scores at -inf: ``naive_attention``'s -1e9 fill overflows float16."""
    scores = (q * scale) @ k.transpose(-2, -1)
    if not isinstance(mask, NoMask):
        scores = scores.masked_fill(~mask.materialize(q.shape[-2], k.shape[-2], device=q.device), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def reference_run(q, k, v, do, mask, scale, dtype):
    """Output, LSE and gradients of the reference in ``dtype`` (float64 = the oracle).

    float64 and float32 use ``naive_attention`` itself; float16 / bfloat16 (PyTorch in the
    kernel's dtype, for the 2x rule) use the same math with a -inf fill.
    """
    leaves = [t.detach().to(dtype).requires_grad_() for t in (q, k, v)]
    attend = naive_attention if dtype in (torch.float64, torch.float32) else eager_attention
    out = attend(*leaves, mask, scale)
    out.backward(do.to(dtype))
    lse = reference_lse(*(t.detach() for t in leaves[:2]), mask, scale)
    return [out.detach(), lse] + [t.grad for t in leaves]


def kernel_run(case: Case, q, k, v, do, mask, scale):
    """Output, LSE, dq, dk, dv of the kernel, with every allocation NaN-poisoned."""
    from hitrs_fast.kernels import frame_attention as fa

    cls_pos = fa.CLS_CODES[case.cls if case.mask == "frame" else "none"]
    kind = fa.MASK_FRAME if case.mask == "frame" else fa.MASK_NONE
    lengths = mask.lengths.to(q.device) if case.mask == "padding" else None
    with poison_torch_empty():
        if case.config is None:
            leaves = [t.detach().requires_grad_() for t in (q, k, v)]
            out, lse = fa.frame_attention(*leaves, scale=scale, mask_kind=kind, frame_size=25,
                                          cls=case.cls if case.mask == "frame" else "none",
                                          allow_self=case.allow_self, lengths=lengths,
                                          cls_last_key=case.cls_last_key, return_lse=True)
            out.backward(do)
            grads = [t.grad for t in leaves]
        else:
            args = (lengths, scale, kind, 25, cls_pos, case.allow_self, case.cls_last_key)
            out, lse = fa.frame_attention_fwd(q, k, v, *args, config=case.config, variant=case.variant)
            bwd_config = {key: val for key, val in case.config.items() if key != "WHOLE_ROW"}
            grads = list(fa.frame_attention_bwd(do, q, k, v, out, lse, *args, config=bwd_config,
                                                variant=case.variant))
    return [out.detach(), lse] + grads


NAMES = ("out", "lse", "dq", "dk", "dv")


def check_against_oracle(case: Case, got: list[torch.Tensor], q, k, v, do, mask, scale, op: str = OP) -> None:
    """``got`` (out, lse, dq, dk, dv) against the float64 oracle: fp32 at the table tolerance of ``op``,
    16-bit by the 2x-PyTorch rule; dtypes as the kernel promises."""
    oracle = reference_run(q, k, v, do, mask, scale, torch.float64)
    if case.dtype == torch.float32:
        atol, rtol = tolerance(op, torch.float32)
        for name, a, e in zip(NAMES, got, oracle, strict=True):
            assert_close_verbose(a, e, atol=atol, rtol=rtol, name=f"{name} ({case})")
    else:
        same_dtype = reference_run(q, k, v, do, mask, scale, case.dtype)
        for name, a, t, e in zip(NAMES, got, same_dtype, oracle, strict=True):
            assert_low_precision_close(a, t, e, op, name=f"{name} ({case})")
    assert got[1].dtype == torch.float32
    assert all(g.dtype == case.dtype for g in (got[0], *got[2:]))


@pytest.mark.interpreter
@pytest.mark.parametrize("case", CASES)
def test_matches_float64_reference(case: Case):
    device = kernel_device()
    q, k, v = make_inputs(case, device)
    mask = case.typed_mask()
    scale = 1.0 / math.sqrt(case.head_dim)
    do = torch.randn(q.shape, device=device, dtype=case.dtype)

    got = kernel_run(case, q, k, v, do, mask, scale)
    check_against_oracle(case, got, q, k, v, do, mask, scale)


@pytest.mark.interpreter
def test_output_is_bnhd_buffer():
    """O and the gradients are [B, N, H, D] buffers: the [B, N, H*D] view for W_o copies nothing."""
    from hitrs_fast.kernels.frame_attention import frame_attention

    b, h, n, d = 2, 2, 26, 16
    x = torch.randn(b, n, 3 * h * d, device=kernel_device(), requires_grad=True)
    q, k, v = (t.view(b, n, h, d).transpose(1, 2) for t in x.split(h * d, dim=-1))
    out = frame_attention(q, k, v, frame_size=25)
    assert out.transpose(1, 2).is_contiguous()
    assert out.transpose(1, 2).reshape(b, n, h * d).data_ptr() == out.data_ptr()
    out.sum().backward()
    assert x.grad.shape == x.shape and torch.isfinite(x.grad).all()


@pytest.mark.interpreter
@pytest.mark.parametrize("dtype", [pytest.param(FP32, id="fp32"), pytest.param(BF16, id="bf16")])
def test_extreme_logits_stay_finite(dtype: torch.dtype):
    """Scores around +-1e4 (q, k ~ 100 * N(0, 1), D 16): no NaN or inf anywhere, O a convex mix of V."""
    case = Case(1, 2, 2, 16, dtype=dtype)
    q, k, v = make_inputs(case, kernel_device())
    q, k = q * 100, k * 100
    do = torch.randn(q.shape, device=q.device, dtype=dtype)
    out, lse, dq, dk, dv = kernel_run(case, q, k, v, do, case.typed_mask(), 0.25)
    for name, t in zip(NAMES, (out, lse, dq, dk, dv), strict=True):
        assert torch.isfinite(t).all(), f"{name} has non-finite values"
    assert lse.abs().max() > 1e3, "the scores were meant to be extreme"
    vmin = v.float().amin(dim=2, keepdim=True)
    vmax = v.float().amax(dim=2, keepdim=True)
    slack = 1e-2 if dtype == BF16 else 1e-5
    assert ((out.float() >= vmin - slack) & (out.float() <= vmax + slack)).all()


@pytest.mark.interpreter
@pytest.mark.parametrize("case", [
    pytest.param(Case(3, 2, 2, 32, allow_self=False), id="B3-F2-N51-H2-D32-fp32-autograd"),
    pytest.param(Case(1, 1, 2, 32, dtype=BF16, config=ONLINE16, variant=SPLIT), id="B1-F2-N51-H1-D32-bf16-tile16"),
    pytest.param(Case(2, 2, 2, 32, dtype=BF16, config=RES16, variant=RESIDENT), id="B2-F2-N51-H2-D32-bf16-resident"),
])
def test_deterministic(case: Case):
    """Same input -> bit-identical output, LSE and gradients (no atomics anywhere)."""
    q, k, v = make_inputs(case, kernel_device())
    do = torch.randn(q.shape, device=q.device, dtype=case.dtype)
    mask = case.typed_mask()
    first = kernel_run(case, q, k, v, do, mask, 0.2)
    second = kernel_run(case, q, k, v, do, mask, 0.2)
    for name, a, b in zip(NAMES, first, second, strict=True):
        assert torch.equal(a, b), f"{name} differs between two identical runs"


@pytest.mark.interpreter
def test_fp64_reference_passes_gradcheck():
    """The oracle itself: float64 reference gradients agree with finite differences."""
    mask = FrameMask(frame_size=3, num_frames=2, cls="last", allow_self=False)
    q, k, v = (torch.randn(1, 1, 7, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(lambda a, b, c: naive_attention(a, b, c, mask), (q, k, v))


@pytest.mark.interpreter
def test_launcher_rejects_bad_inputs():
    from hitrs_fast.kernels.frame_attention import frame_attention_fwd

    q = torch.randn(1, 1, 26, 24, device=kernel_device())
    with pytest.raises(ValueError, match="head_dim 24"):
        frame_attention_fwd(q, q, q, None, 0.2, 1, 25, 2, True, True)
    q = torch.randn(2, 1, 26, 16, device=kernel_device())
    with pytest.raises(ValueError, match=r"lengths must be \[B\]"):
        frame_attention_fwd(q, q, q, torch.tensor([3]), 0.2, 0, 25, 0, True, True)
    with pytest.raises(ValueError, match="one shape"):
        frame_attention_fwd(q, q[:1], q, None, 0.2, 1, 25, 2, True, True)


@pytest.mark.interpreter
def test_same_frame_tile_is_skipped():
    """With 16-wide tiles and allow_self=False, q-tile 0 (tokens 0-15, all frame 0) never touches
    kv-tile 0. NaN in V rows 0-15 would reach O rows 0-15 through ``p (= 0) @ V`` if that tile
    were computed; skipped, those rows stay finite and match the oracle."""
    from hitrs_fast.kernels import frame_attention as fa

    case = Case(1, 1, 2, 16, allow_self=False, config=ONLINE16, variant=SPLIT)
    q, k, v = make_inputs(case, kernel_device())
    v = v.clone()
    v[:, :, :16] = float("nan")
    out, _ = fa.frame_attention_fwd(q, k, v, None, 0.25, fa.MASK_FRAME, 25, fa.CLS_LAST, False, True,
                                    config=ONLINE16, variant=SPLIT)
    assert torch.isnan(out[:, :, 16:25]).all(), "rows that attend to keys 0-15 must see the NaN"
    v_clean = v.nan_to_num(0.0)
    expected = naive_attention(q.double(), k.double(), v_clean.double(), case.typed_mask(), 0.25)
    atol, rtol = tolerance(OP, torch.float32)
    assert_close_verbose(out[:, :, :16], expected[:, :, :16], atol, rtol, "rows 0-15")


@triton.jit
def _decode_probe(OUT, N, BLOCK: tl.constexpr):
    i_bh, i_tile = _head_and_tile(N, BLOCK)
    pid = tl.program_id(0)
    tl.store(OUT + 2 * pid, i_bh)
    tl.store(OUT + 2 * pid + 1, i_tile)


@pytest.mark.interpreter
def test_grid_decode_puts_the_tiles_of_one_head_next_to_each_other():
    """Program p of the one-axis grid is (head p // tiles, tile p % tiles): consecutive programs share a
    head, so its K/V is re-read from L2, not HBM. Every (head, tile) pair appears exactly once."""
    heads, n, block = 21, 176, 16
    tiles = triton.cdiv(n, block)
    out = torch.full((heads * tiles, 2), -1, dtype=torch.int64, device=kernel_device())
    _decode_probe[(heads * tiles,)](out, n, BLOCK=block)
    pid = torch.arange(heads * tiles, device=out.device)
    assert torch.equal(out[:, 0], pid // tiles) and torch.equal(out[:, 1], pid % tiles)


@pytest.mark.interpreter
@pytest.mark.parametrize("precision", ["tf32x3", "ieee", "tf32"])
def test_fp32_precision_setting(monkeypatch, precision):
    """Every HITRS_FAST_FP32_PRECISION value is accepted by tl.dot (the interpreter validates it, then
    computes in fp32 whatever it is). On a GPU ieee and tf32x3 must meet the fp32 row of the table;
    plain TF32 rounds operands to 10 mantissa bits and has its own row."""
    from hitrs_fast.kernels import frame_attention as fa

    monkeypatch.setenv(fa.FP32_PRECISION_ENV, precision)
    case = Case(2, 2, 2, 32, allow_self=False)
    q, k, v = make_inputs(case, kernel_device())
    do = torch.randn(q.shape, device=q.device)
    mask, scale = case.typed_mask(), 1.0 / math.sqrt(case.head_dim)
    assert fa.common_meta(q, fa.MASK_FRAME, 25, fa.CLS_LAST, False, False, True)["INPUT_PRECISION"] == precision
    got = kernel_run(case, q, k, v, do, mask, scale)
    gpu_tf32 = precision == "tf32" and q.device.type == "cuda"
    check_against_oracle(case, got, q, k, v, do, mask, scale, op="frame_attention_tf32" if gpu_tf32 else OP)


@pytest.mark.interpreter
def test_fp32_precision_default_and_bad_value(monkeypatch):
    from hitrs_fast.kernels import frame_attention as fa

    q = torch.randn(1, 1, 26, 16, device=kernel_device())
    monkeypatch.delenv(fa.FP32_PRECISION_ENV, raising=False)
    assert fa.common_meta(q, 1, 25, 2, True, False, True)["INPUT_PRECISION"] == "tf32x3"
    # 16-bit operands always take the tensor cores; the setting is not consulted for them.
    monkeypatch.setenv(fa.FP32_PRECISION_ENV, "fast")
    assert fa.common_meta(q.bfloat16(), 1, 25, 2, True, False, True)["INPUT_PRECISION"] == "tf32"
    with pytest.raises(ValueError, match="HITRS_FAST_FP32_PRECISION='fast': expected one of tf32x3, ieee, tf32"):
        fa.frame_attention_fwd(q, q, q, None, 0.25, 1, 25, 2, True, True)


@pytest.mark.interpreter
@pytest.mark.parametrize("mode", ["autocast-fp32-params", "bf16-params"])
def test_multi_head_attention_bf16_training_modes(mode):
    """``MultiHeadAttention(backend="triton")`` in the two bf16 training set-ups: CPU autocast over fp32
    parameters, and bf16 parameters with bf16 activations (DeepSpeed's bf16 mode casts the parameters;
    the layer before hands bf16 on). Output and the gradients of x and of every projection against the
    float64 module, by the 2x rule against the same module on the eager reference backend."""
    from hitrs_fast.attention import MultiHeadAttention

    mask = FrameMask(frame_size=25, num_frames=2, cls="last", allow_self=True)
    device = kernel_device()
    oracle_module = MultiHeadAttention(32, 2, 16, backend="torch").to(device, torch.float64)
    x = torch.randn(2, mask.num_tokens, 32, dtype=torch.float64, device=device)
    dy = torch.randn_like(x)

    def run(backend: str, dtype: torch.dtype) -> list[torch.Tensor]:
        module = MultiHeadAttention(32, 2, 16, backend=backend)
        module.load_state_dict(oracle_module.state_dict())
        module = module.to(device, dtype)
        leaf = x.to(dtype).requires_grad_()
        use_autocast = mode.startswith("autocast") and dtype != torch.float64
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_autocast), poison_torch_empty():
            out = module(leaf, mask)
        out.backward(dy.to(out.dtype))
        return [out.detach(), leaf.grad] + [p.grad for p in module.parameters()]

    dtype = torch.float32 if mode.startswith("autocast") else torch.bfloat16
    got, same, oracle = run("triton", dtype), run("torch", dtype), run("torch", torch.float64)
    names = ["out", "dx"] + [f"d{name}" for name, _ in oracle_module.named_parameters()]
    assert got[0].dtype == torch.bfloat16
    assert all(g.dtype == dtype for g in got[1:]), "gradients come back in the parameter / input dtype"
    for name, a, t, e in zip(names, got, same, oracle, strict=True):
        assert_low_precision_close(a, t, e, OP, name=f"{name} ({mode})")


def _kernel_name(kernel) -> str:
    """The Python name behind a recorded launch (an Autotuner wraps a JITFunction wraps the function)."""
    while hasattr(kernel, "fn"):
        kernel = kernel.fn
    return kernel.__name__


@pytest.mark.interpreter
@pytest.mark.parametrize("env, n, d, dtype, expected", [
    pytest.param(None, 176, 64, BF16, "split", id="default-N176-D64-bf16-split"),
    pytest.param(None, 176, 64, FP32, "split", id="default-N176-D64-fp32-split"),
    pytest.param(None, 26, 128, BF16, "split", id="default-N26-D128-bf16"),
    pytest.param(None, 301, 32, BF16, "split", id="default-N301-more-than-256-keys-split"),
    pytest.param("resident", 176, 64, BF16, "resident", id="env-resident"),
    pytest.param("split", 176, 64, BF16, "split", id="env-split"),
    pytest.param("resident", 176, 64, FP32, "split", id="env-resident-falls-back"),
    pytest.param("split,resident", 176, 64, BF16, "split,resident", id="env-split-fwd-resident-bwd"),
    pytest.param(" resident , split", 176, 64, BF16, "resident,split", id="env-resident-fwd-split-bwd"),
])
def test_kernel_choice(monkeypatch, env, n, d, dtype, expected):
    """``HITRS_FAST_ATTENTION_KERNEL`` picks the kernels per direction (so one GPU run can A/B them); the default
    is split both ways (measured fastest on a GPU), and resident gives way to split where its K, V, dK, dV would
    not fit. The resident kernels launch one program per (sequence, head); split launches tile programs and, backward,
    three kernels."""
    from hitrs_fast.kernels import capabilities
    from hitrs_fast.kernels import frame_attention as fa

    if env is None:
        monkeypatch.delenv(capabilities.FRAME_ATTENTION_KERNEL_ENV, raising=False)
    else:
        monkeypatch.setenv(capabilities.FRAME_ATTENTION_KERNEL_ENV, env)
    b, h = 3, 2
    q = torch.zeros(b, h, n, d, dtype=dtype)
    lse = torch.zeros(b, h, n)
    args = (None, 0.125, fa.MASK_FRAME, 25, fa.CLS_LAST if n % 25 == 1 else fa.CLS_NONE, True, True)
    fwd = record_launches(fa.ops, fa.frame_attention_fwd, q, q, q, *args)
    bwd = record_launches(fa.ops, fa.frame_attention_bwd, q, q, q, q, q, lse, *args)
    kernels = {"resident": (["frame_attention_resident_fwd_kernel"], ["frame_attention_resident_bwd_kernel"]),
               "split": (["frame_attention_fwd_kernel"], ["frame_attention_bwd_preprocess_kernel",
                                                         "frame_attention_bwd_dkdv_kernel",
                                                         "frame_attention_bwd_dq_kernel"])}
    fwd_kernel, bwd_kernel = (expected.split(",") * 2)[:2]
    assert [_kernel_name(launch.kernel) for launch in fwd] == kernels[fwd_kernel][0]
    assert [_kernel_name(launch.kernel) for launch in bwd] == kernels[bwd_kernel][1]
    for launches, kernel in ((fwd, fwd_kernel), (bwd, bwd_kernel)):
        if kernel == "resident":
            assert all(launch.grid == (b * h,) for launch in launches)


@pytest.mark.interpreter
def test_kernel_choice_rejects_bad_values(monkeypatch):
    from hitrs_fast.kernels import capabilities
    from hitrs_fast.kernels import frame_attention as fa

    q = torch.zeros(1, 1, 26, 16)
    for value in ("fast", "split,split,split"):
        monkeypatch.setenv(capabilities.FRAME_ATTENTION_KERNEL_ENV, value)
        with pytest.raises(ValueError, match=f"HITRS_FAST_ATTENTION_KERNEL='{value}': expected one of resident, "
                                             "split, or two of them as FWD,BWD"):
            fa.frame_attention_fwd(q, q, q, None, 0.25, 1, 25, 2, True, True)
    monkeypatch.delenv(capabilities.FRAME_ATTENTION_KERNEL_ENV)
    big = torch.zeros(1, 1, 176, 64)
    with pytest.raises(ValueError, match="resident kernel does not fit N = 176, D = 64, torch.float32"):
        fa.frame_attention_fwd(big, big, big, None, 0.125, 1, 25, 2, True, True, variant="resident")


@pytest.mark.interpreter
def test_resident_backward_never_reads_the_output():
    """The resident backward takes delta = rowsum(P * dP) from its own whole-row tile, so O is not read:
    an all-NaN O still gives the oracle's gradients (the split backward's rowsum(dO * O) would be NaN)."""
    from hitrs_fast.kernels import frame_attention as fa

    case = Case(2, 2, 2, 32, config=RES16, variant=RESIDENT)
    q, k, v = make_inputs(case, kernel_device())
    do = torch.randn(q.shape, device=q.device)
    mask, scale = case.typed_mask(), 1.0 / math.sqrt(case.head_dim)
    args = (None, scale, fa.MASK_FRAME, 25, fa.CLS_LAST, True, True)
    out, lse = fa.frame_attention_fwd(q, k, v, *args, config=RES16, variant=RESIDENT)
    grads = fa.frame_attention_bwd(do, q, k, v, torch.full_like(out, float("nan")), lse, *args, config=RES16,
                                   variant=RESIDENT)
    check_against_oracle(case, [out, lse, *grads], q, k, v, do, mask, scale)


@pytest.mark.interpreter
@pytest.mark.parametrize("dtype", [pytest.param(FP32, id="fp32"), pytest.param(BF16, id="bf16")])
def test_qkv_projection_path(dtype):
    """``frame_attention_qkv`` reads q, k, v in place from one [B, N, 3*H*D] projection and hands back one
    gradient of that shape, written by the kernel into a single buffer (no cat): output and dqkv against the
    float64 oracle (fp32 at the table tolerance, bf16 by the 2x rule)."""
    from hitrs_fast.kernels.frame_attention import frame_attention_qkv, qkv_views

    b, h, d, mask = 2, 2, 16, FrameMask(frame_size=25, num_frames=2, cls="last")
    n = mask.num_tokens
    qkv = torch.randn(b, n, 3 * h * d, device=kernel_device(), dtype=dtype)
    do = torch.randn(b, n, h * d, device=qkv.device, dtype=dtype)

    def reference(dt):
        leaf = qkv.detach().to(dt).requires_grad_()
        attend = naive_attention if dt in (torch.float64, FP32) else eager_attention
        out = attend(*qkv_views(leaf, h), mask, 0.25).transpose(1, 2).reshape(b, n, h * d)
        out.backward(do.to(dt))
        return out.detach(), leaf.grad

    leaf = qkv.detach().requires_grad_()
    with poison_torch_empty():
        out = frame_attention_qkv(leaf, h, scale=0.25, frame_size=25)
        out.backward(do)
    assert out.shape == (b, n, h * d) and leaf.grad.shape == qkv.shape
    oracle, same = reference(torch.float64), reference(dtype)
    for name, got, t, e in zip(("out", "dqkv"), (out.detach(), leaf.grad), same, oracle, strict=True):
        if dtype == FP32:
            assert_close_verbose(got, e, *tolerance(OP, FP32), name=name)
        else:
            assert_low_precision_close(got, t, e, OP, name=name)
