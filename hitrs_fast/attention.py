"""``hitrs_fast.attention``: masked attention, a drop-in for skeleton Transformers.

Functional form :func:`frame_masked_attention` (SDPA-like ``[B, H, N, D]``: typed or dense masks, an additive
bias with its gradient, attention dropout, any head size) and the module :class:`MultiHeadAttention` /
:class:`FrameMaskedAttention` with q/k/v/out projections (optional biases, split or fused ``qkv`` layout, loaders
for the common checkpoint layouts: :func:`convert_attention_state_dict`); the whole pre-LN attention sublayer as
:func:`frame_attention_block` / :class:`FrameAttentionBlock` (its own backends, :data:`BLOCK_PRIORITY`, same
names). Attention backends, in the order ``"auto"`` tries them (:data:`PRIORITY`):

- ``"triton"`` (:class:`TritonFrameAttention`): the Triton kernel ``hitrs_fast.kernels.frame_attention`` on
  CUDA; on CPU tensors through the interpreter when asked for by name under ``TRITON_INTERPRET=1``;
- ``"sdpa"`` (:class:`SdpaFrameAttention`): ``torch.nn.functional.scaled_dot_product_attention`` with the
  materialised mask (PyTorch's fused kernels; about 3x the reference's speed on CPU);
- ``"torch"`` (:class:`ReferenceFrameAttention`): the reference (materialised mask, plain softmax; the oracle).

``"auto"`` runs the first that takes the inputs (:mod:`hitrs_fast.dispatch`): Triton on CUDA, SDPA
elsewhere; ``HITRS_FAST_DISABLE_KERNELS=1`` makes it run the reference, ``HITRS_FAST_STRICT=1`` makes
passing over Triton an error. The Triton kernel computes every structured mask of :mod:`hitrs_fast.masks`
(alone or ``&`` one :class:`~hitrs_fast.masks.KeyPaddingMask`) from indices or ids; a
:class:`~hitrs_fast.masks.DenseMask` (a tensor) runs on SDPA, with the reason given once.

Every backend gives a row with no visible key ``O = 0`` and zero gradients, and draws attention dropout only
when ``dropout_p > 0`` (the Triton kernel from a seed taken from PyTorch's generator, SDPA and the reference
through PyTorch: the same rate, not the same mask).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from hitrs_fast.dispatch import Backend, TritonBackend, choose_backend
from hitrs_fast.kernels.capabilities import (
    ATTENTION_BLOCK_DETERMINISTIC,
    FRAME_ATTENTION_DETERMINISTIC,
    MASK_FRAME,
    MASK_NONE,
    MASK_WINDOW,
    attention_block_reasons,
    frame_attention_bias_reasons,
    frame_attention_reasons,
    padded_head_dim,
)
from hitrs_fast.masks import (
    MASK_TYPES,
    STRUCTURED_MASKS,
    AndMask,
    AttentionMask,
    DenseMask,
    FrameMask,
    KeyPaddingMask,
    NoMask,
    SlidingWindowMask,
    TokenIdMask,
)
from hitrs_fast.reference.attention import allowed_and_additive, naive_attention, naive_attention_block
from hitrs_fast.reference.layer_norm import layer_norm

OP_NAME = "frame_masked_attention"


@dataclass(frozen=True)
class TensorSpec:
    """A tensor's shape, dtype and device, for capability checks of a tensor that does not exist yet."""

    shape: torch.Size
    dtype: torch.dtype
    device: torch.device

    def dim(self) -> int:
        return len(self.shape)


@dataclass(frozen=True)
class AttentionInputs:
    """What a backend is asked to take: ``q, k, v [B, H, N, D]`` (tensors, or :class:`TensorSpec` for checks
    only), the typed mask, the additive bias (or None) and the dropout rate."""

    q: torch.Tensor | TensorSpec
    k: torch.Tensor | TensorSpec
    v: torch.Tensor | TensorSpec
    mask: AttentionMask
    bias: torch.Tensor | None = None
    dropout_p: float = 0.0


def _kernel_parts(mask: AttentionMask) -> tuple[AttentionMask | None, KeyPaddingMask | None] | str:
    """The mask as (one structured rule or None, key padding or None), or why the kernel cannot compute it."""
    if type(mask) is DenseMask:
        return ("a dense mask tensor: the kernel computes masks from token indices and ids and cannot skip the "
                "blocks of an arbitrary tensor (use a mask of hitrs_fast.masks, or give a float mask as bias=)")
    if type(mask) is KeyPaddingMask:
        return None, mask
    if type(mask) is not AndMask:
        return mask, None
    parts = [part for part in mask.parts if type(part) is not NoMask]
    padding = [part for part in parts if type(part) is KeyPaddingMask]
    rules = [part for part in parts if type(part) in STRUCTURED_MASKS]
    if len(padding) > 1 or len(rules) > 1 or len(padding) + len(rules) != len(parts):
        return (f"mask {mask.describe()}: the kernel combines one structured mask with one KeyPaddingMask (this "
                "combination runs on SDPA)")
    return (rules[0] if rules else None), (padding[0] if padding else None)


def kernel_mask_reasons(mask: AttentionMask) -> list[str]:
    """Why the Triton attention kernels cannot compute ``mask`` ([] when they can)."""
    parts = _kernel_parts(mask)
    if isinstance(parts, str):
        return [parts]
    rule, padding = parts
    if padding is not None and not padding.is_integer:
        return [f"KeyPaddingMask.lengths dtype {padding.lengths.dtype} is not an integer type"]
    return []


def kernel_mask_args(mask: AttentionMask, device: torch.device) -> dict:
    """The Triton attention kernels' mask arguments (keyword arguments of
    :func:`hitrs_fast.kernels.frame_attention.frame_attention`) for a mask they take (:func:`kernel_mask_reasons`)."""
    parts = _kernel_parts(mask)
    if isinstance(parts, str):
        raise ValueError(f"kernel_mask_args: {parts}")
    rule, padding = parts
    args = _rule_args(rule)
    if padding is not None:
        args.update(lengths=padding.prefix_lengths(device), cls_last_key=padding.cls == "last")
    return args


def _rule_args(rule: AttentionMask | None) -> dict:
    if type(rule) is FrameMask:
        args = {"mask_kind": MASK_FRAME, "frame_size": rule.frame_size, "cls": rule.cls, "allow_self": rule.allow_self}
        if rule.order == "joint_major":
            args.update(order="joint_major", num_frames=rule.num_frames)
        return args
    if type(rule) is SlidingWindowMask:
        args = {"mask_kind": MASK_WINDOW, "frame_size": rule.frame_size, "cls": rule.cls, "window": rule.radius}
        if rule.order == "joint_major":
            args.update(order="joint_major", num_frames=rule.num_frames)
        return args
    if type(rule) is TokenIdMask:
        kind = MASK_FRAME if rule.rule == "other" else MASK_WINDOW
        return {"mask_kind": kind, "cls": "none", "allow_self": rule.allow_self, "window": rule.radius,
                "q_ids": rule.q_ids, "k_ids": rule.keys}
    return {"mask_kind": MASK_NONE, "cls": "none"}


def _rows_can_be_empty(mask: AttentionMask, bias: torch.Tensor | None) -> bool:
    """Whether some row may see no key at all (then every backend returns O = 0 there). False only where the mask
    guarantees a key per row: the SDPA path then needs no fix-up (the model's masks)."""
    if bias is not None or type(mask) in (DenseMask, AndMask):
        return True
    if type(mask) is KeyPaddingMask:
        return mask.cls == "none"
    if type(mask) is TokenIdMask:
        return mask.rule == "other" and not mask.allow_self
    return False  # NoMask; FrameMask and SlidingWindowMask keep a key per row by construction


class TritonFrameAttention(TritonBackend):
    """The Triton kernel; its limits are declared in ``hitrs_fast.kernels.capabilities``. A head_dim the kernel does
    not compile for is zero-padded to the next one (16, 32, 64, 128) inside the op."""

    NAME = "triton"
    IS_DETERMINISTIC = FRAME_ATTENTION_DETERMINISTIC

    @classmethod
    def not_supported_reasons(cls, inputs: AttentionInputs) -> list[str]:
        q = inputs.q
        reasons = frame_attention_reasons(q, inputs.k, inputs.v, pad_head_dim=True)
        reasons += kernel_mask_reasons(inputs.mask)
        if inputs.bias is not None and q.dim() == 4:
            b, h, n, _ = q.shape
            reasons += frame_attention_bias_reasons(inputs.bias, b, h, n)
        return reasons

    @staticmethod
    def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask, scale: float, *,
            bias: torch.Tensor | None = None, dropout_p: float = 0.0) -> torch.Tensor:
        # Imported here: triton is loaded only when the Triton backend is first used.
        from hitrs_fast.kernels.frame_attention import frame_attention

        d = q.shape[-1]
        padded = padded_head_dim(d)
        if padded != d:
            # Zero columns add nothing to any score and give zero output columns (sliced off below).
            q, k, v = (nn.functional.pad(t, (0, padded - d)) for t in (q, k, v))
        out = frame_attention(q, k, v, scale=scale, bias=bias, dropout_p=dropout_p, **kernel_mask_args(mask, q.device))
        return out[..., :d] if padded != d else out


class SdpaFrameAttention(Backend):
    """PyTorch SDPA with the materialised mask (bool, or float with the bias added); any device, any float dtype.
    Rows with no visible key are given every key and then zeroed, so no backend of SDPA can return NaN there."""

    NAME = "sdpa"
    IS_KERNEL = True

    @staticmethod
    def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask, scale: float, *,
            bias: torch.Tensor | None = None, dropout_p: float = 0.0) -> torch.Tensor:
        allowed, additive = allowed_and_additive(mask, q.shape[-2], q.device)
        attn_mask = allowed
        if bias is not None or additive is not None:
            terms = [t.to(q.dtype) for t in (bias, additive) if t is not None]
            attn_mask = terms[0] if len(terms) == 1 else terms[0] + terms[1]
            if allowed is not None:
                attn_mask = attn_mask.masked_fill(~allowed, float("-inf"))
        if attn_mask is None or not _rows_can_be_empty(mask, bias):
            return nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p,
                                                              scale=scale)
        if attn_mask.dtype == torch.bool:
            empty = ~attn_mask.any(dim=-1, keepdim=True)
            attn_mask = attn_mask | empty
        else:
            empty = (attn_mask == float("-inf")).all(dim=-1, keepdim=True)
            attn_mask = attn_mask.masked_fill(empty, 0.0)
        out = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p,
                                                         scale=scale)
        return out.masked_fill(empty, 0.0)


class ReferenceFrameAttention(Backend):
    """The reference: plain softmax attention with a materialised mask (the oracle)."""

    NAME = "torch"

    @staticmethod
    def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask, scale: float, *,
            bias: torch.Tensor | None = None, dropout_p: float = 0.0) -> torch.Tensor:
        return naive_attention(q, k, v, mask, scale, bias=bias, dropout_p=dropout_p)


PRIORITY: tuple[type[Backend], ...] = (TritonFrameAttention, SdpaFrameAttention, ReferenceFrameAttention)
ATTENTION_BACKENDS = ("auto", *(b.NAME for b in PRIORITY))


def as_mask(mask: AttentionMask | torch.Tensor | None, attn_mask: torch.Tensor | None = None,
            op: str = OP_NAME) -> AttentionMask:
    """The typed mask of ``mask`` (a mask of :mod:`hitrs_fast.masks`, a bool / float tensor as SDPA's
    ``attn_mask``, or None: no mask) or of SDPA's keyword ``attn_mask``. A subclass of a mask class is refused:
    the kernels would compute the base class's rule while SDPA used the subclass's ``materialize``."""
    if attn_mask is not None:
        if mask is not None:
            raise ValueError(f"{op}: give the mask once, as mask or as attn_mask")
        mask = attn_mask
    if mask is None:
        return NoMask()
    if isinstance(mask, torch.Tensor):
        return DenseMask(mask)
    if type(mask) not in MASK_TYPES:
        base = next((t.__name__ for t in MASK_TYPES if isinstance(mask, t)), None)
        if base is not None:
            raise ValueError(f"{op}: mask type {type(mask).__name__} subclasses {base}; subclasses are refused "
                             f"(the kernels compute {base}'s rule, not an override); pass "
                             "DenseMask(mask.materialize(N, N)) for a custom rule")
        raise ValueError(f"{op}: mask must be a mask of hitrs_fast.masks or a bool / float tensor, got "
                         f"{type(mask).__name__}")
    return mask


def _check_args(op: str, q: torch.Size, k: torch.Size, v: torch.Size, mask: AttentionMask,
                bias: torch.Tensor | None, dropout_p: float) -> None:
    """Checks the shapes of q, k, v (``[B, H, N, D]``, one shape) against the mask, the bias and the rate."""
    if len(q) != 4 or k != q or v != q:
        raise ValueError(f"{op}: q, k, v must be [B, H, N, D] of one shape, got {tuple(q)}, {tuple(k)}, {tuple(v)}")
    b, h, n, _ = q
    reason = mask.check(b, n)
    if reason:
        raise ValueError(f"{op}: {reason}")
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or not bias.is_floating_point() or bias.dim() > 4:
            raise ValueError(f"{op}: bias must be a float tensor broadcastable to [B, H, N, N], got "
                             f"{getattr(bias, 'dtype', type(bias).__name__)} {list(getattr(bias, 'shape', []))}")
        full = (b, h, n, n)
        shape = (1,) * (4 - bias.dim()) + tuple(bias.shape)
        if any(s not in (1, f) for s, f in zip(shape, full, strict=True)):
            raise ValueError(f"{op}: bias {tuple(bias.shape)} does not broadcast to [B, H, N, N] = {list(full)}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"{op}: dropout_p must be in [0, 1), got {dropout_p}")


def frame_masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           mask: AttentionMask | torch.Tensor | None = None, *, bias: torch.Tensor | None = None,
                           dropout_p: float = 0.0, scale: float | None = None, backend: str = "auto",
                           attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Masked softmax attention: ``softmax(scale * Q K^T + bias, masked) V``, with dropout on the probabilities.

    Args:
        q, k, v: ``[B, H, N, D]`` (SDPA layout; any strides, e.g. the BNHD view
            ``proj(x).view(B, N, H, D).transpose(1, 2)``, read in place by the kernel). Any D: the Triton
            backend pads it to 16, 32, 64 or 128 inside (D <= 128).
        mask: a mask of :mod:`hitrs_fast.masks` (:class:`~hitrs_fast.masks.FrameMask`, ``SlidingWindowMask``,
            ``TokenIdMask``, ``KeyPaddingMask``, ``NoMask``, ``a & b``), or a bool / float tensor broadcastable to
            ``[B, H, N, N]`` as SDPA takes it (True = attend; float added to the scores). None: no mask. A row
            with no visible key gives O = 0 and zero gradients on every backend.
        bias: additive score bias, float, broadcastable to ``[B, H, N, N]`` (a relative-position table gathered
            to ``[H, N, N]``, per sample ``[B, 1, N, N]``, ...); differentiable on every backend.
        dropout_p: attention dropout on the probabilities, applied whenever > 0 (as SDPA: pass 0 in eval).
        scale: default ``1 / sqrt(D)``.
        backend: ``"auto"``, ``"triton"``, ``"sdpa"`` or ``"torch"`` (module docstring).
        attn_mask: SDPA's name for a mask tensor (give ``mask`` or ``attn_mask``, not both).

    Returns:
        ``[B, H, N, D]`` in q's dtype. The Triton backend returns a view of a
        ``[B, N, H, D]`` buffer, so ``out.transpose(1, 2).reshape(B, N, H * D)`` copies nothing.
        Triton: float32 / float16 / bfloat16, D <= 128, 1 <= N <= 4096.

    Examples::

        mask = FrameMask(frame_size=25, num_frames=7, cls="last")   # N = 176
        q = k = v = torch.randn(2, 8, 176, 64, device="cuda", dtype=torch.bfloat16)
        out = frame_masked_attention(q, k, v, mask)                 # [2, 8, 176, 64]
    """
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"{OP_NAME}: backend must be one of {ATTENTION_BACKENDS}, got {backend!r}")
    mask = as_mask(mask, attn_mask)
    dropout_p = float(dropout_p)
    _check_args(OP_NAME, q.shape, k.shape, v.shape, mask, bias, dropout_p)
    if bias is not None and bias.device != q.device:
        raise ValueError(f"{OP_NAME}: bias is on {bias.device}, q on {q.device}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    chosen = choose_backend(OP_NAME, PRIORITY, backend, AttentionInputs(q, k, v, mask, bias, dropout_p), q.device)
    return chosen.run(q, k, v, mask, scale, bias=bias, dropout_p=dropout_p)


STATE_DICT_LAYOUTS = ("split", "fused", "timm", "nn.MultiheadAttention")
"""Checkpoint layouts :func:`convert_attention_state_dict` reads: ``split`` (``q_proj``, ``k_proj``, ``v_proj``,
``out_proj`` ``.weight`` / ``.bias``: this module's default, also Hugging Face's names), ``fused`` / ``timm`` (timm's
``Attention``: ``qkv.weight [3 I, d]``, ``qkv.bias`` or BEiT-style ``q_bias`` + ``v_bias``, ``proj.weight``,
``proj.bias``) and ``nn.MultiheadAttention`` (``in_proj_weight [3 E, E]`` or ``q/k/v_proj_weight``,
``in_proj_bias``, ``out_proj.weight``, ``out_proj.bias``)."""


def _read_attention(state: Mapping[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor | None]:
    """The checkpoint as ``w_q, w_k, w_v, b_q, b_k, b_v, w_o, b_o`` (biases None when absent)."""
    get = state.get
    if layout == "split":
        out = {f"w_{n}": get(f"{n}_proj.weight") for n in "qkv"} | {f"b_{n}": get(f"{n}_proj.bias") for n in "qkv"}
        out.update(w_o=get("out_proj.weight"), b_o=get("out_proj.bias"))
        required = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "out_proj.weight")
    elif layout in ("fused", "timm"):
        required = ("qkv.weight", "proj.weight")
        w = get("qkv.weight")
        out = dict(zip(("w_q", "w_k", "w_v"), w.chunk(3) if w is not None else (None,) * 3, strict=True))
        bias = get("qkv.bias")
        if bias is None and get("q_bias") is not None:  # BEiT / data2vec: q and v biases, k bias zero
            bias = torch.cat([get("q_bias"), torch.zeros_like(get("q_bias")), get("v_bias")])
        out.update(zip(("b_q", "b_k", "b_v"), bias.chunk(3) if bias is not None else (None,) * 3, strict=True))
        out.update(w_o=get("proj.weight"), b_o=get("proj.bias"))
    elif layout == "nn.MultiheadAttention":
        for unsupported in ("bias_k", "bias_v"):
            if unsupported in state:
                raise ValueError(f"convert_attention_state_dict: {unsupported} (add_bias_kv=True) has no equivalent "
                                 "here")
        if get("in_proj_weight") is not None:
            w = get("in_proj_weight")
            out = dict(zip(("w_q", "w_k", "w_v"), w.chunk(3), strict=True))
            required = ("in_proj_weight", "out_proj.weight")
        else:
            out = {f"w_{n}": get(f"{n}_proj_weight") for n in "qkv"}
            required = ("q_proj_weight", "k_proj_weight", "v_proj_weight", "out_proj.weight")
        bias = get("in_proj_bias")
        out.update(zip(("b_q", "b_k", "b_v"), bias.chunk(3) if bias is not None else (None,) * 3, strict=True))
        out.update(w_o=get("out_proj.weight"), b_o=get("out_proj.bias"))
    else:
        raise ValueError(f"convert_attention_state_dict: layout must be one of {STATE_DICT_LAYOUTS}, got {layout!r}")
    missing = [key for key in required if key not in state]
    if missing:
        raise ValueError(f"convert_attention_state_dict: a {layout!r} checkpoint needs {missing}; it has "
                         f"{sorted(state)}")
    return out


def convert_attention_state_dict(state: Mapping[str, torch.Tensor], layout: str, *, fused_qkv: bool = False,
                                 qkv_bias: bool | None = None, out_bias: bool | None = None) -> dict[str, torch.Tensor]:
    """A peer's attention ``state_dict`` in :class:`MultiHeadAttention`'s keys.

    Args:
        state: the attention module's own entries (strip the peer's prefix first, e.g. ``blocks.0.attn.``).
        layout: one of :data:`STATE_DICT_LAYOUTS`.
        fused_qkv: the target module's layout (``qkv`` / ``proj`` if True, else ``q_proj`` ... ``out_proj``).
        qkv_bias, out_bias: the target's biases (None: as the checkpoint has them). A bias the checkpoint has and
            the target lacks is an error, never dropped; one the target has and the checkpoint lacks is zero.

    Returns:
        ``{key: tensor}`` for ``MultiHeadAttention(..., fused_qkv=fused_qkv, qkv_bias=..., out_bias=...)``.
    """
    parts = _read_attention(state, layout)
    has_qkv_bias = any(parts[f"b_{n}"] is not None for n in "qkv")
    qkv_bias = has_qkv_bias if qkv_bias is None else qkv_bias
    out_bias = parts["b_o"] is not None if out_bias is None else out_bias
    for name, present, wanted in (("q/k/v", has_qkv_bias, qkv_bias), ("output", parts["b_o"] is not None, out_bias)):
        if present and not wanted:
            raise ValueError(f"convert_attention_state_dict: the checkpoint has {name} projection biases; build the "
                             f"module with {'qkv_bias' if name == 'q/k/v' else 'out_bias'}=True")
    ws = [parts[f"w_{n}"] for n in "qkv"]
    bs = [parts[f"b_{n}"] if parts[f"b_{n}"] is not None else ws[i].new_zeros(ws[i].shape[0])
          for i, n in enumerate("qkv")]
    b_o = parts["b_o"] if parts["b_o"] is not None else parts["w_o"].new_zeros(parts["w_o"].shape[0])
    out: dict[str, torch.Tensor] = {}
    if fused_qkv:
        out["qkv.weight"] = torch.cat(ws)
        if qkv_bias:
            out["qkv.bias"] = torch.cat(bs)
        out["proj.weight"] = parts["w_o"]
        if out_bias:
            out["proj.bias"] = b_o
        return out
    for n, w, bias in zip("qkv", ws, bs, strict=True):
        out[f"{n}_proj.weight"] = w
        if qkv_bias:
            out[f"{n}_proj.bias"] = bias
    out["out_proj.weight"] = parts["w_o"]
    if out_bias:
        out["out_proj.bias"] = b_o
    return out


class MultiHeadAttention(nn.Module):
    """Multi-head attention with q/k/v/out projections (bias-free and split by default: the released layer).

    Args:
        dim: model width d.
        num_heads, head_dim: inner width ``num_heads * head_dim`` (512 in Hi-TRS); head_dim None: ``dim //
            num_heads``. Any head_dim (the Triton backend pads it inside).
        backend: see :func:`frame_masked_attention`. The ``state_dict`` keys do not depend on it.
        qkv_bias, out_bias: biases of the q/k/v and of the output projection (peer layers have them).
        fused_qkv: one ``qkv`` projection ``[3 * inner, d]`` and ``proj`` (timm's keys) instead of ``q_proj``,
            ``k_proj``, ``v_proj``, ``out_proj``.
        attn_dropout: dropout on the attention probabilities, in training mode (every backend).

    ``forward(x [B, N, d], mask=None, bias=None) -> [B, N, d]``: ``mask`` and ``bias`` as in
    :func:`frame_masked_attention`. Peer checkpoints load with :meth:`load_peer_state_dict`.
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int | None = None, backend: str = "auto", *,
                 qkv_bias: bool = False, out_bias: bool = False, fused_qkv: bool = False,
                 attn_dropout: float = 0.0) -> None:
        super().__init__()
        if backend not in ATTENTION_BACKENDS:
            raise ValueError(f"{type(self).__name__}: backend must be one of {ATTENTION_BACKENDS}, got {backend!r}")
        if not 0.0 <= attn_dropout < 1.0:
            raise ValueError(f"{type(self).__name__}: attn_dropout must be in [0, 1), got {attn_dropout}")
        head_dim = dim // num_heads if head_dim is None else head_dim
        inner = num_heads * head_dim
        self.num_heads, self.head_dim, self.backend = num_heads, head_dim, backend
        self.fused_qkv, self.attn_dropout = fused_qkv, float(attn_dropout)
        if fused_qkv:
            self.qkv = nn.Linear(dim, 3 * inner, bias=qkv_bias)
            self.proj = nn.Linear(inner, dim, bias=out_bias)
        else:
            self.q_proj = nn.Linear(dim, inner, bias=qkv_bias)
            self.k_proj = nn.Linear(dim, inner, bias=qkv_bias)
            self.v_proj = nn.Linear(dim, inner, bias=qkv_bias)
            self.out_proj = nn.Linear(inner, dim, bias=out_bias)

    @property
    def output(self) -> nn.Linear:
        """The output projection (``out_proj``, or ``proj`` with the fused layout)."""
        return self.proj if self.fused_qkv else self.out_proj

    def projection_weights(self) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor | None, ...]]:
        """``(w_q, w_k, w_v), (b_q, b_k, b_v)``: ``[H * D, d]`` weights (views of ``qkv`` when fused) and biases."""
        if self.fused_qkv:
            bias = self.qkv.bias
            return self.qkv.weight.chunk(3), (bias.chunk(3) if bias is not None else (None,) * 3)
        projections = (self.q_proj, self.k_proj, self.v_proj)
        return tuple(p.weight for p in projections), tuple(p.bias for p in projections)

    def forward(self, x: torch.Tensor, mask: AttentionMask | torch.Tensor | None = None, *,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        b, n, _ = x.shape
        if self.fused_qkv:
            # [B, N, 3, H, D]: q, k, v are BNHD views of the one projection, no copy.
            q, k, v = (t.transpose(1, 2) for t in self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).unbind(2))
        else:
            # [B, N, H, D] viewed as [B, H, N, D]: the projection's own strides, no copy.
            q, k, v = (p(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
                       for p in (self.q_proj, self.k_proj, self.v_proj))
        out = frame_masked_attention(q, k, v, mask, bias=bias, dropout_p=self.attn_dropout if self.training else 0.0,
                                     backend=self.backend)
        # The Triton output is a [B, N, H, D] buffer, so this reshape is a view there.
        return self.output(out.transpose(1, 2).reshape(b, n, -1))

    def load_peer_state_dict(self, state: Mapping[str, torch.Tensor], layout: str, strict: bool = True):
        """Loads a peer attention's ``state_dict`` (layout: :data:`STATE_DICT_LAYOUTS`) into this module's keys;
        ``load_state_dict``'s result."""
        converted = convert_attention_state_dict(state, layout, fused_qkv=self.fused_qkv,
                                                 qkv_bias=self.projection_weights()[1][0] is not None,
                                                 out_bias=self.output.bias is not None)
        return self.load_state_dict(converted, strict=strict)

    @classmethod
    def from_torch(cls, mha: nn.MultiheadAttention, backend: str = "auto", fused_qkv: bool = True
                   ) -> MultiHeadAttention:
        """The same attention as ``mha`` (weights, biases, dropout), batch-first ``[B, N, d]``. ``mha``'s masks use
        True = blocked; here True = attend (``KeyPaddingMask`` or ``~key_padding_mask``)."""
        if mha.bias_k is not None or mha.add_zero_attn or not mha._qkv_same_embed_dim:
            raise ValueError("MultiHeadAttention.from_torch: add_bias_kv, add_zero_attn and kdim / vdim other than "
                             "embed_dim have no equivalent here")
        module = cls(mha.embed_dim, mha.num_heads, backend=backend, qkv_bias=mha.in_proj_bias is not None,
                     out_bias=mha.out_proj.bias is not None, fused_qkv=fused_qkv, attn_dropout=mha.dropout)
        module.load_peer_state_dict(mha.state_dict(), "nn.MultiheadAttention")
        return module.to(mha.out_proj.weight.device, mha.out_proj.weight.dtype)


class FrameMaskedAttention(MultiHeadAttention):
    """:class:`MultiHeadAttention` with a fixed mask (e.g. the C-TRS clip mask).

    Same ``state_dict`` keys as :class:`MultiHeadAttention`, so weights move between
    backends and between the two classes unchanged. ``options``: :class:`MultiHeadAttention`'s keywords.

    Examples::

        attn = FrameMaskedAttention(256, 8, 64, FrameMask(frame_size=25, num_frames=7, cls="last"))
        y = attn(torch.randn(4, 176, 256))   # [4, 176, 256]
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int | None, mask: AttentionMask, backend: str = "auto",
                 **options) -> None:
        super().__init__(dim, num_heads, head_dim, backend, **options)
        self.mask = mask

    def forward(self, x: torch.Tensor, mask: AttentionMask | torch.Tensor | None = None, *,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x, self.mask if mask is None else mask, bias=bias)


BLOCK_OP_NAME = "frame_attention_block"


@dataclass(frozen=True)
class BlockInputs:
    """What a block backend is asked to take: x ``[B, N, C]``, the sublayer's weights, the mask and H; optional
    projection biases, an additive attention bias and the attention-dropout rate in effect (0 outside training)."""

    x: torch.Tensor
    ln_weight: torch.Tensor
    ln_bias: torch.Tensor
    w_q: torch.Tensor
    w_k: torch.Tensor
    w_v: torch.Tensor
    w_o: torch.Tensor
    mask: AttentionMask
    heads: int
    b_q: torch.Tensor | None = None
    b_k: torch.Tensor | None = None
    b_v: torch.Tensor | None = None
    b_o: torch.Tensor | None = None
    attn_bias: torch.Tensor | None = None
    attn_dropout: float = 0.0

    @property
    def peer_extras(self) -> list[str]:
        """What the fused kernel does not compute: projection biases, an attention bias, attention dropout."""
        extras = [name for name in ("b_q", "b_k", "b_v", "b_o", "attn_bias") if getattr(self, name) is not None]
        return extras + (["attn_dropout"] if self.attn_dropout > 0.0 else [])

    @property
    def compute_dtype(self) -> torch.dtype:
        """The projections' dtype: the autocast dtype when autocast is on for x's device, else the weights'."""
        device = self.x.device.type
        return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else self.w_q.dtype

    @property
    def head_dim(self) -> int:
        return self.w_q.shape[0] // self.heads

    def attention_meta(self) -> AttentionInputs:
        """The attention the composed path would run, as ``[B, H, N, D]`` shape-and-dtype stand-ins (no tensor is
        made: a meta tensor would break ``torch.compile(fullgraph=True)``)."""
        b, n, _ = self.x.shape
        q = TensorSpec(torch.Size((b, self.heads, n, self.head_dim)), self.compute_dtype, self.x.device)
        return AttentionInputs(q, q, q, self.mask, self.attn_bias, self.attn_dropout)


class TritonAttentionBlock(TritonBackend):
    """The Triton block, on the design the performance model picks per shape (docs/kernels/attention_blocks.md).

    - fused (``hitrs_fast.kernels.attention_block``): LN, Q/K/V, attention, W_o, dropout and the residual in
      one kernel each way, for sequences that fit a program tile whole (F-TRS: 5 frames per 128 rows) with a
      frame mask or none. Forward HBM traffic: x in, out out. Backward: reads x and dy, writes dx and, for
      the cuBLAS weight gradients (reductions over every row), dQKV, A, LN(x) and dZ.
    - composed (longer sequences, key padding, the other masks, projection or attention biases, attention
      dropout): LayerNorm, one cuBLAS GEMM with the concatenated ``[3I, C]`` weight, the attention kernel on that
      projection in place (its backward writes one ``[B, N, 3I]`` gradient), cuBLAS W_o, dropout and the residual
      in PyTorch.
    """

    NAME = "triton"
    IS_DETERMINISTIC = ATTENTION_BLOCK_DETERMINISTIC and FRAME_ATTENTION_DETERMINISTIC

    @staticmethod
    def fused_reasons(inputs: BlockInputs) -> list[str]:
        """Why the fused kernel does not take the inputs ([] when it does)."""
        b, n, c = inputs.x.shape
        reasons = attention_block_reasons(b, n, c, inputs.heads, inputs.head_dim, inputs.x.dtype,
                                          inputs.compute_dtype, on_gpu=inputs.x.device.type == "cuda")
        if isinstance(inputs.mask, KeyPaddingMask):
            reasons.append("key padding is not fused")
        elif not isinstance(inputs.mask, NoMask) and not (type(inputs.mask) is FrameMask
                                                          and inputs.mask.order == "frame_major"):
            reasons.append(f"mask {type(inputs.mask).__name__} is not fused (frame-major FrameMask or NoMask)")
        if inputs.peer_extras:
            reasons.append(f"{', '.join(inputs.peer_extras)} not fused")
        return reasons

    @classmethod
    def not_supported_reasons(cls, inputs: BlockInputs) -> list[str]:
        if not cls.fused_reasons(inputs):
            return []
        return TritonFrameAttention.not_supported_reasons(inputs.attention_meta())

    @classmethod
    def run(cls, inputs: BlockInputs, eps: float, dropout: float, training: bool, scale: float) -> torch.Tensor:
        x, cdt = inputs.x, inputs.compute_dtype
        if not cls.fused_reasons(inputs):
            from hitrs_fast.kernels.attention_block import AttentionBlockFunction

            active = training and dropout > 0.0
            # The dropout seed comes from PyTorch's generator (repeatable under torch.manual_seed), on the device.
            seed = torch.randint(0, 2**31 - 1, (1,), device=x.device, dtype=torch.int64) if active else None
            mask = kernel_mask_args(inputs.mask, x.device)
            wqkv = torch.cat([inputs.w_q, inputs.w_k, inputs.w_v]).to(cdt)
            return AttentionBlockFunction.apply(
                x, inputs.ln_weight, inputs.ln_bias, wqkv, inputs.w_o.to(cdt), seed, inputs.heads, float(eps),
                scale, mask["mask_kind"], mask.get("frame_size", 1), _cls_code(mask["cls"]),
                mask.get("allow_self", True), float(dropout) if active else 0.0)
        xn = layer_norm(x, inputs.ln_weight, inputs.ln_bias, eps)
        qkv = nn.functional.linear(xn, torch.cat([inputs.w_q, inputs.w_k, inputs.w_v]), _qkv_bias(inputs))
        attended = _attend_qkv(qkv, inputs, scale)
        return x + nn.functional.dropout(nn.functional.linear(attended, inputs.w_o, inputs.b_o), dropout, training)


def _qkv_bias(inputs: BlockInputs) -> torch.Tensor | None:
    """The concatenated ``[3I]`` projection bias (a missing one zero), None without biases."""
    biases = (inputs.b_q, inputs.b_k, inputs.b_v)
    if all(b is None for b in biases):
        return None
    inner = inputs.w_q.shape[0]
    return torch.cat([b if b is not None else inputs.w_q.new_zeros(inner) for b in biases])


def _attend_qkv(qkv: torch.Tensor, inputs: BlockInputs, scale: float) -> torch.Tensor:
    """The Triton attention of one ``[B, N, 3I]`` projection, ``[B, N, I]``: in place when the head size is one the
    kernel compiles for, else through the padding op (q, k, v views)."""
    from hitrs_fast.kernels.frame_attention import frame_attention_qkv

    b, n, _ = qkv.shape
    mask = inputs.mask
    extras = {}
    if inputs.attn_bias is not None:
        extras["bias"] = inputs.attn_bias
    if inputs.attn_dropout > 0.0:
        extras["dropout_p"] = inputs.attn_dropout
    if padded_head_dim(inputs.head_dim) == inputs.head_dim:
        return frame_attention_qkv(qkv, inputs.heads, scale=scale, **kernel_mask_args(mask, qkv.device), **extras)
    q, k, v = (t.transpose(1, 2) for t in qkv.view(b, n, 3, inputs.heads, inputs.head_dim).unbind(2))
    out = TritonFrameAttention.run(q, k, v, mask, scale, bias=inputs.attn_bias, dropout_p=inputs.attn_dropout)
    return out.transpose(1, 2).reshape(b, n, -1)


def _cls_code(cls: str) -> int:
    from hitrs_fast.kernels.frame_attention import CLS_CODES

    return CLS_CODES[cls]


class SdpaAttentionBlock(Backend):
    """The released layer's composition around PyTorch SDPA (:class:`SdpaFrameAttention`)."""

    NAME = "sdpa"
    IS_KERNEL = True

    @staticmethod
    def run(inputs: BlockInputs, eps: float, dropout: float, training: bool, scale: float) -> torch.Tensor:
        return naive_attention_block(*_block_tensors(inputs), inputs.mask, inputs.heads, eps=eps, dropout=dropout,
                                     training=training, scale=scale, attend=SdpaFrameAttention.run,
                                     **_block_extras(inputs))


class ReferenceAttentionBlock(Backend):
    """The reference: the released layer's math, op by op (the oracle)."""

    NAME = "torch"

    @staticmethod
    def run(inputs: BlockInputs, eps: float, dropout: float, training: bool, scale: float) -> torch.Tensor:
        return naive_attention_block(*_block_tensors(inputs), inputs.mask, inputs.heads, eps=eps, dropout=dropout,
                                     training=training, scale=scale, **_block_extras(inputs))


def _block_tensors(inputs: BlockInputs) -> tuple[torch.Tensor, ...]:
    return inputs.x, inputs.ln_weight, inputs.ln_bias, inputs.w_q, inputs.w_k, inputs.w_v, inputs.w_o


def _block_extras(inputs: BlockInputs) -> dict:
    """The peer-layer keywords of :func:`naive_attention_block` (its attention dropout applies in training only, and
    ``inputs.attn_dropout`` is already 0 outside training)."""
    return {"b_q": inputs.b_q, "b_k": inputs.b_k, "b_v": inputs.b_v, "b_o": inputs.b_o,
            "attn_bias": inputs.attn_bias, "attn_dropout": inputs.attn_dropout}


BLOCK_PRIORITY: tuple[type[Backend], ...] = (TritonAttentionBlock, SdpaAttentionBlock, ReferenceAttentionBlock)


def frame_attention_block(x: torch.Tensor, ln_weight: torch.Tensor, ln_bias: torch.Tensor, w_q: torch.Tensor,
                          w_k: torch.Tensor, w_v: torch.Tensor, w_o: torch.Tensor, mask: AttentionMask = NoMask(),
                          *, heads: int, eps: float = 1e-5, dropout: float = 0.0, training: bool = False,
                          scale: float | None = None, backend: str = "auto", b_q: torch.Tensor | None = None,
                          b_k: torch.Tensor | None = None, b_v: torch.Tensor | None = None,
                          b_o: torch.Tensor | None = None, attn_bias: torch.Tensor | None = None,
                          attn_dropout: float = 0.0) -> torch.Tensor:
    """The pre-LN attention sublayer of the released TRS layer: ``x + dropout(W_o attention(LN(x) W_q, W_k, W_v))``.

    Args:
        x: ``[B, N, C]`` token features (layout in the README). For a :class:`~hitrs_fast.masks.FrameMask`,
            N = frame_size * num_frames (+1 with CLS).
        ln_weight, ln_bias: LayerNorm affine ``[C]``; eps its epsilon.
        w_q, w_k, w_v: ``[H * D, C]``; w_o: ``[C, H * D]`` (bias-free, as released).
        mask: a mask of :mod:`hitrs_fast.masks` or a mask tensor (as :func:`frame_masked_attention`).
        heads: H.
        dropout, training: dropout after W_o (active when ``training`` and ``dropout > 0``). The torch and
            sdpa backends draw ``nn.Dropout``'s mask; the fused Triton kernel draws its own (same rate, from
            a seed taken from PyTorch's generator).
        scale: softmax scale, default ``1 / sqrt(D)``.
        backend: ``"auto"``, ``"triton"``, ``"sdpa"`` or ``"torch"`` (:class:`TritonAttentionBlock` for what
            Triton runs per shape).
        b_q, b_k, b_v: optional ``[H * D]`` projection biases; b_o: optional ``[C]`` output bias (peer layers).
        attn_bias: optional additive score bias broadcastable to ``[B, H, N, N]`` (differentiable).
        attn_dropout: dropout on the attention probabilities, when ``training``.

    Returns:
        ``[B, N, C]`` in x's dtype (projections in the autocast dtype under autocast).

    Examples::

        x = torch.randn(4, 25, 128)                                  # 4 frames of 25 joints (F-TRS)
        w = [torch.randn(512, 128) * 0.05 for _ in range(3)]
        y = frame_attention_block(x, torch.ones(128), torch.zeros(128), *w, torch.randn(128, 512) * 0.05,
                                  heads=8)                             # [4, 25, 128]
    """
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"{BLOCK_OP_NAME}: backend must be one of {ATTENTION_BACKENDS}, got {backend!r}")
    if x.dim() != 3:
        raise ValueError(f"{BLOCK_OP_NAME}: x must be [B, N, C], got {tuple(x.shape)}")
    b, n, c = x.shape
    if w_q.dim() != 2 or w_q.shape[1] != c or w_q.shape[0] % heads or w_k.shape != w_q.shape \
            or w_v.shape != w_q.shape or w_o.shape != (c, w_q.shape[0]):
        raise ValueError(f"{BLOCK_OP_NAME}: expected w_q, w_k, w_v [H*D, C={c}] with H = {heads} and w_o [C, H*D], "
                         f"got {tuple(w_q.shape)}, {tuple(w_k.shape)}, {tuple(w_v.shape)}, {tuple(w_o.shape)}")
    if ln_weight.shape != (c,) or ln_bias.shape != (c,):
        raise ValueError(f"{BLOCK_OP_NAME}: ln_weight and ln_bias must be [C={c}], got {tuple(ln_weight.shape)}, "
                         f"{tuple(ln_bias.shape)}")
    for name, bias, size in (("b_q", b_q, w_q.shape[0]), ("b_k", b_k, w_q.shape[0]), ("b_v", b_v, w_q.shape[0]),
                             ("b_o", b_o, c)):
        if bias is not None and tuple(bias.shape) != (size,):
            raise ValueError(f"{BLOCK_OP_NAME}: {name} must be [{size}], got {tuple(bias.shape)}")
    head_dim = w_q.shape[0] // heads
    q_shape = torch.Size((b, heads, n, head_dim))
    mask = as_mask(mask, op=BLOCK_OP_NAME)
    attn_dropout = float(attn_dropout) if training else 0.0
    _check_args(BLOCK_OP_NAME, q_shape, q_shape, q_shape, mask, attn_bias, attn_dropout)
    scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
    inputs = BlockInputs(x, ln_weight, ln_bias, w_q, w_k, w_v, w_o, mask, int(heads), b_q, b_k, b_v, b_o, attn_bias,
                         attn_dropout)
    chosen = choose_backend(BLOCK_OP_NAME, BLOCK_PRIORITY, backend, inputs, x.device)
    return chosen.run(inputs, eps, float(dropout), bool(training), scale)


class FrameAttentionBlock(nn.Module):
    """The pre-LN attention sublayer of the released TRS layer, ``x + dropout(W_o attention(LN(x) W_q, ·W_k, ·W_v))``.

    Args:
        dim: model width C. num_heads, head_dim: H and D (inner width ``H * D``).
        dropout: dropout after W_o (p; active in training mode).
        backend: see :func:`frame_attention_block`.
        attention_options: :class:`MultiHeadAttention`'s keywords for peer layers (``qkv_bias``, ``out_bias``,
            ``fused_qkv``, ``attn_dropout``); such a block runs the composed path.

    ``state_dict`` keys: ``attn_norm.{weight,bias}``, ``attn.{q,k,v,out}_proj.weight`` (the reference layer's
    attention half; every backend; ``attn.qkv`` / ``attn.proj`` and the biases as chosen).
    ``forward(x [B, N, C], mask=NoMask(), bias=None) -> [B, N, C]``.

    Examples::

        block = FrameAttentionBlock(256, 8, 64, dropout=0.2)
        y = block(torch.randn(4, 176, 256), FrameMask(frame_size=25, num_frames=7, cls="last"))   # [4, 176, 256]
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int, dropout: float = 0.0, backend: str = "auto",
                 **attention_options) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, num_heads, head_dim, backend=backend, **attention_options)
        self.dropout = nn.Dropout(dropout)
        self.backend = backend

    def attention_block(self, x: torch.Tensor, mask: AttentionMask = NoMask(),
                        bias: torch.Tensor | None = None) -> torch.Tensor:
        attn = self.attn
        (w_q, w_k, w_v), (b_q, b_k, b_v) = attn.projection_weights()
        return frame_attention_block(x, self.attn_norm.weight, self.attn_norm.bias, w_q, w_k, w_v, attn.output.weight,
                                     mask, heads=attn.num_heads, eps=self.attn_norm.eps, dropout=self.dropout.p,
                                     training=self.training, backend=self.backend, b_q=b_q, b_k=b_k, b_v=b_v,
                                     b_o=attn.output.bias, attn_bias=bias, attn_dropout=attn.attn_dropout)

    def forward(self, x: torch.Tensor, mask: AttentionMask = NoMask(),
                bias: torch.Tensor | None = None) -> torch.Tensor:
        return self.attention_block(x, mask, bias)
