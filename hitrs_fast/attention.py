"""``hitrs_fast.attention``: frame-masked attention, a drop-in for skeleton Transformers.

Functional form :func:`frame_masked_attention` (SDPA-like ``[B, H, N, D]``) and the
module :class:`MultiHeadAttention` / :class:`FrameMaskedAttention` with q/k/v/out
projections. The ``backend`` argument selects the implementation:

- ``"torch"``: the reference (materialised mask, the released code's math; the oracle);
- ``"sdpa"``: ``torch.nn.functional.scaled_dot_product_attention`` with the materialised
  boolean mask (PyTorch's fused kernels; about 3x the reference's speed on CPU);
- ``"triton"``: the Triton kernel ``hitrs_fast.kernels.frame_attention`` on CUDA, or on
  CPU tensors through the interpreter when ``TRITON_INTERPRET=1``; unsupported inputs
  raise ``NotImplementedError`` listing every reason;
- ``"auto"``: Triton on CUDA when :class:`TritonFrameAttention` accepts the inputs,
  else SDPA (warning once per reason, silently for plain CPU tensors).
  Under the CPU interpreter ``"auto"`` keeps the reference: the interpreter is orders
  of magnitude slower, so only an explicit ``backend="triton"`` runs it.

``HITRS_FAST_DISABLE_KERNELS=1`` makes ``"auto"`` use the reference (``"torch"``);
``HITRS_FAST_STRICT=1`` turns every fallback into an error (see :mod:`hitrs_fast.dispatch`).

The Triton kernel covers all three mask types (frame rule from indices, key padding
from a lengths vector), so no SDPA fallback is involved.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hitrs_fast.dispatch import BACKENDS, choose_backend, device_reasons, interpreter_mode, kernels_disabled
from hitrs_fast.masks import AttentionMask, FrameMask, KeyPaddingMask, NoMask
from hitrs_fast.reference.attention import naive_attention

OP_NAME = "frame_masked_attention"
ATTENTION_BACKENDS = (*BACKENDS, "sdpa")


class TritonFrameAttention:
    """Capabilities of the Triton backend (xformers-style declaration, checked without importing triton).

    Kept equal to the constants of ``hitrs_fast.kernels.frame_attention`` (a test checks it).
    """

    NAME = "triton"
    SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
    SUPPORTED_DEVICES = ("cuda", "cpu with TRITON_INTERPRET=1")
    SUPPORTED_HEAD_DIMS = (16, 32, 64, 128)
    MIN_TOKENS, MAX_TOKENS = 1, 4096
    SUPPORTED_MASKS = (FrameMask, NoMask, KeyPaddingMask)
    MIN_COMPUTE_CAPABILITY = (8, 0)
    IS_DETERMINISTIC = True

    @classmethod
    def not_supported_reasons(cls, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask,
                              requested: str = "triton") -> list[str]:
        """Every reason this backend cannot take the inputs ([] when it can)."""
        reasons = device_reasons(q, k, v)
        if q.device.type == "cpu" and interpreter_mode() and requested == "auto":
            # Worded with "is not CUDA" so the dispatcher stays quiet: this is the normal CPU path.
            reasons.append("device cpu is not CUDA (the Triton interpreter is used only with backend='triton')")
        if q.device.type == "cuda" and torch.cuda.get_device_capability(q.device) < cls.MIN_COMPUTE_CAPABILITY:
            cap = torch.cuda.get_device_capability(q.device)
            reasons.append(f"compute capability {cap} below {cls.MIN_COMPUTE_CAPABILITY}")
        if not (q.dtype == k.dtype == v.dtype):
            reasons.append(f"q, k, v dtypes differ ({q.dtype}, {k.dtype}, {v.dtype})")
        if q.dtype not in cls.SUPPORTED_DTYPES:
            reasons.append(f"dtype {q.dtype} not in (float32, bfloat16, float16)")
        if q.shape[-1] not in cls.SUPPORTED_HEAD_DIMS:
            reasons.append(f"head_dim {q.shape[-1]} not in {cls.SUPPORTED_HEAD_DIMS}")
        if not cls.MIN_TOKENS <= q.shape[2] <= cls.MAX_TOKENS:
            reasons.append(f"N = {q.shape[2]} not in [{cls.MIN_TOKENS}, {cls.MAX_TOKENS}]")
        if not isinstance(mask, cls.SUPPORTED_MASKS):
            reasons.append(f"mask type {type(mask).__name__} not in (FrameMask, NoMask, KeyPaddingMask)")
        elif isinstance(mask, KeyPaddingMask) and (mask.lengths.is_floating_point() or mask.lengths.is_complex()):
            reasons.append(f"KeyPaddingMask.lengths dtype {mask.lengths.dtype} is not an integer type")
        return reasons


def _check_args(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask) -> None:
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"{OP_NAME}: q, k, v must be [B, H, N, D] of one shape, got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if not isinstance(mask, (FrameMask, NoMask, KeyPaddingMask)):
        raise ValueError(f"{OP_NAME}: mask must be a FrameMask, NoMask or KeyPaddingMask, got {type(mask).__name__}")
    if isinstance(mask, FrameMask) and q.shape[2] != mask.num_tokens:
        raise ValueError(f"{OP_NAME}: {mask.describe()} covers {mask.num_tokens} tokens, q has N = {q.shape[2]}")
    if isinstance(mask, KeyPaddingMask) and tuple(mask.lengths.shape) != (q.shape[0],):
        raise ValueError(f"{OP_NAME}: KeyPaddingMask.lengths must be [B] = [{q.shape[0]}], "
                         f"got {tuple(mask.lengths.shape)}")


def _triton_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask,
                      scale: float) -> torch.Tensor:
    # Imported here: triton is loaded only when the Triton backend is first used.
    from hitrs_fast.kernels.frame_attention import MASK_FRAME, MASK_NONE, frame_attention

    if isinstance(mask, FrameMask):
        return frame_attention(q, k, v, scale=scale, mask_kind=MASK_FRAME, frame_size=mask.frame_size,
                               cls=mask.cls, allow_self=mask.allow_self)
    if isinstance(mask, KeyPaddingMask):
        return frame_attention(q, k, v, scale=scale, mask_kind=MASK_NONE,
                               lengths=mask.lengths.to(device=q.device, dtype=torch.int64),
                               cls_last_key=mask.cls_last)
    return frame_attention(q, k, v, scale=scale, mask_kind=MASK_NONE)


def frame_masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask,
                           *, scale: float | None = None, backend: str = "auto") -> torch.Tensor:
    """Masked attention with a typed mask.

    Args:
        q, k, v: ``[B, H, N, D]`` (SDPA layout; any strides, e.g. the BNHD view
            ``proj(x).view(B, N, H, D).transpose(1, 2)``, read in place by the kernel).
            For a :class:`FrameMask`, N = frame_size * num_frames (+1 with CLS).
        mask: :class:`~hitrs_fast.masks.FrameMask`, ``NoMask`` or ``KeyPaddingMask``
            (lengths ``[B]``). A key-padding row with no visible key (length 0, no CLS)
            gives zeros on the Triton backend and the mean of V on the reference.
        scale: default ``1 / sqrt(D)``.
        backend: ``"auto"``, ``"torch"`` or ``"triton"`` (module docstring).

    Returns:
        ``[B, H, N, D]`` in q's dtype. The Triton backend returns a view of a
        ``[B, N, H, D]`` buffer, so ``out.transpose(1, 2).reshape(B, N, H * D)`` copies nothing.
        Triton: float32 / float16 / bfloat16, D in {16, 32, 64, 128}, 1 <= N <= 4096.

    Examples::

        mask = FrameMask(frame_size=25, num_frames=7)            # N = 176, CLS last
        q = k = v = torch.randn(2, 8, 176, 64, device="cuda", dtype=torch.bfloat16)
        out = frame_masked_attention(q, k, v, mask)              # [2, 8, 176, 64]
    """
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"{OP_NAME}: backend must be one of {ATTENTION_BACKENDS}, got {backend!r}")
    _check_args(q, k, v, mask)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    if backend in ("auto", "triton"):
        reasons = TritonFrameAttention.not_supported_reasons(q, k, v, mask, requested=backend)
        chosen = choose_backend(OP_NAME, backend, reasons)
        backend = "sdpa" if chosen == "torch" and backend == "auto" and not kernels_disabled() else chosen
    if backend == "triton":
        return _triton_attention(q, k, v, mask, scale)
    if backend == "sdpa":
        return _sdpa_attention(q, k, v, mask, scale)
    return naive_attention(q, k, v, mask, scale)


def _sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask,
                    scale: float) -> torch.Tensor:
    """PyTorch SDPA with the materialised boolean mask (True = attend)."""
    allowed = None if isinstance(mask, NoMask) else mask.materialize(q.shape[-2], k.shape[-2], device=q.device)
    return nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale)


class MultiHeadAttention(nn.Module):
    """Multi-head attention with bias-free q/k/v/out projections (the released layer).

    Args:
        dim: model width d.
        num_heads, head_dim: inner width ``num_heads * head_dim`` (512 in Hi-TRS).
        backend: see :func:`frame_masked_attention`. The ``state_dict`` keys
            (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``) do not depend on it.

    ``forward(x [B, N, d], mask) -> [B, N, d]``.
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int, backend: str = "auto") -> None:
        super().__init__()
        if backend not in ATTENTION_BACKENDS:
            raise ValueError(f"{type(self).__name__}: backend must be one of {ATTENTION_BACKENDS}, got {backend!r}")
        inner = num_heads * head_dim
        self.num_heads, self.head_dim, self.backend = num_heads, head_dim, backend
        self.q_proj = nn.Linear(dim, inner, bias=False)
        self.k_proj = nn.Linear(dim, inner, bias=False)
        self.v_proj = nn.Linear(dim, inner, bias=False)
        self.out_proj = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, mask: AttentionMask = NoMask()) -> torch.Tensor:
        b, n, _ = x.shape
        # [B, N, H, D] viewed as [B, H, N, D]: the projection's own strides, no copy.
        q, k, v = (p(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        out = frame_masked_attention(q, k, v, mask, backend=self.backend)
        # The Triton output is a [B, N, H, D] buffer, so this reshape is a view there.
        return self.out_proj(out.transpose(1, 2).reshape(b, n, -1))


class FrameMaskedAttention(MultiHeadAttention):
    """:class:`MultiHeadAttention` with a fixed mask (default: the C-TRS clip mask).

    Same ``state_dict`` keys as :class:`MultiHeadAttention`, so weights move between
    backends and between the two classes unchanged.

    Examples::

        attn = FrameMaskedAttention(256, 8, 64, FrameMask(frame_size=25, num_frames=7))
        y = attn(torch.randn(4, 176, 256))   # [4, 176, 256]
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int, mask: AttentionMask = FrameMask(),
                 backend: str = "auto") -> None:
        super().__init__(dim, num_heads, head_dim, backend)
        self.mask = mask

    def forward(self, x: torch.Tensor, mask: AttentionMask | None = None) -> torch.Tensor:
        return super().forward(x, self.mask if mask is None else mask)
