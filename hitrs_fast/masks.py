"""Typed attention masks.

A mask is a small frozen description of which keys a query may attend to. The Triton kernels compute the
structured ones from token indices (or per-token ids) and skip fully masked tiles; only the SDPA and
reference paths call ``materialize``. Everything public uses True = attend, as SDPA does (the released
Hi-TRS code uses 1 = blocked; that convention stays out of the API).

Structured masks (kernel-computed; ``N`` tokens, an optional CLS token first or last that is in no frame, so
it attends to all and all attend to it):

- :class:`NoMask`: every key (F-TRS);
- :class:`FrameMask`: other frames only (C-TRS), ``allowed(q, k) = frame(q) != frame(k) or (allow_self and
  q == k)``, tokens frame-major (``f * frame_size + j``) or joint-major (``j * num_frames + f``);
- :class:`SlidingWindowMask`: frames within ``radius``, ``|frame(q) - frame(k)| <= radius``, either order;
- :class:`TokenIdMask`: the frame rule, a window, or same-segment-only on per-token ids given as data (any
  order, per sample: the tokens a masked autoencoder keeps); id -1 marks a global token (like CLS);
- :class:`KeyPaddingMask`: per-sample valid lengths, counted in tokens or frames (said explicitly), with
  the CLS position said explicitly.

``a & b`` combines masks (:class:`AndMask`: attend where both allow). The kernels take one structured mask
combined with one :class:`KeyPaddingMask`. :class:`DenseMask` wraps a boolean or float tensor as
``scaled_dot_product_attention`` takes it (SDPA and reference paths only).

Nothing here defaults a CLS position: :class:`FrameMask`, :class:`SlidingWindowMask` and
:class:`KeyPaddingMask` take ``cls`` as a required keyword.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import Literal

import torch

CLSPosition = Literal["first", "last", "none"]
TokenOrder = Literal["frame_major", "joint_major"]
CLS_POSITIONS = ("first", "last", "none")
TOKEN_ORDERS = ("frame_major", "joint_major")
GLOBAL_ID = -1
"""Frame / segment id of a token in no frame (CLS): it attends to every token and every token attends to it."""


class _Combinable:
    """``mask_a & mask_b``: an :class:`AndMask` (attend where both allow)."""

    def __and__(self, other: AttentionMask) -> AndMask:
        return AndMask.of(self, other)


def _check_cls(where: str, cls: str) -> None:
    if cls not in CLS_POSITIONS:
        raise ValueError(f"{where}: cls must be 'first', 'last' or 'none', got {cls!r}")


def _check_order(where: str, order: str) -> None:
    if order not in TOKEN_ORDERS:
        raise ValueError(f"{where}: order must be 'frame_major' or 'joint_major', got {order!r}")


def frame_ids(n: int, frame_size: int, num_frames: int, cls: CLSPosition, order: TokenOrder = "frame_major",
              device: torch.device | str | None = None) -> torch.Tensor:
    """Frame id of each of ``n`` tokens, int64 ``[n]``; CLS gets :data:`GLOBAL_ID`.

    Frame-major tokens are ``f * frame_size + j``, joint-major ones ``j * num_frames + f`` (after the CLS
    offset when CLS is first).
    """
    idx = torch.arange(n, device=device)
    t = idx - 1 if cls == "first" else idx
    fid = t // frame_size if order == "frame_major" else t % num_frames
    if cls == "first":
        fid = torch.where(idx == 0, GLOBAL_ID, fid)
    elif cls == "last":
        fid = torch.where(idx == n - 1, GLOBAL_ID, fid)
    return fid


def _frame_rule(f_q: torch.Tensor, f_k: torch.Tensor) -> torch.Tensor:
    """Other frame, or either token global: bool of the broadcast shape."""
    return (f_q != f_k) | (f_q == GLOBAL_ID) | (f_k == GLOBAL_ID)


def _window_rule(f_q: torch.Tensor, f_k: torch.Tensor, radius: int) -> torch.Tensor:
    return ((f_q - f_k).abs() <= radius) | (f_q == GLOBAL_ID) | (f_k == GLOBAL_ID)


@dataclass(frozen=True)
class NoMask(_Combinable):
    """Every query attends to every key (F-TRS)."""

    def materialize(self, n_q: int, n_k: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Returns bool ``[n_q, n_k]``, all True."""
        return torch.ones(n_q, n_k, dtype=torch.bool, device=device)

    def check(self, batch: int, n: int) -> str | None:
        return None

    def mask_mod(self) -> Callable:
        return lambda b, h, q, k: q >= 0

    def describe(self) -> str:
        return "NoMask()"


class _FrameLayout(_Combinable):
    """Tokens laid out as ``num_frames`` frames of ``frame_size`` joints (``order``) plus an optional CLS
    (``cls``): what :class:`FrameMask` and :class:`SlidingWindowMask` share (their fields, not declared here)."""

    @property
    def num_tokens(self) -> int:
        return self.frame_size * self.num_frames + (self.cls != "none")

    def frame_ids(self, n: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Frame id of each of ``n`` tokens, int64 ``[n]``; CLS gets -1."""
        return frame_ids(n, self.frame_size, self.num_frames, self.cls, self.order, device)


@dataclass(frozen=True)
class FrameMask(_FrameLayout):
    """C-TRS clip mask: tokens of the same frame do not see each other.

        allowed(q, k) = frame(q) != frame(k)  or  (allow_self and q == k)

    Args:
        frame_size: tokens per frame (joints, V).
        num_frames: frames F; ``N = frame_size * num_frames`` (+1 with CLS).
        cls: ``"first"``, ``"last"`` or ``"none"`` (required: no position is assumed). CLS belongs to no
            frame, so it attends to all tokens and all attend to it.
        allow_self: ``True`` is the released code (its mask is block-ones minus the identity); ``False`` the
            paper's literal reading. Every row keeps an allowed key as long as there are two frames or a CLS.
        order: ``"frame_major"`` (``token = f * frame_size + j``, Hi-TRS) or ``"joint_major"`` (``token =
            j * num_frames + f``).
    """

    frame_size: int = 25
    num_frames: int = 7
    _: KW_ONLY
    cls: CLSPosition
    allow_self: bool = True
    order: TokenOrder = "frame_major"

    def __post_init__(self) -> None:
        if self.frame_size < 1 or self.num_frames < 1:
            raise ValueError(f"FrameMask: frame_size and num_frames must be >= 1, "
                             f"got {self.frame_size}, {self.num_frames}")
        _check_cls("FrameMask", self.cls)
        _check_order("FrameMask", self.order)
        if self.cls == "none" and self.num_frames == 1 and not self.allow_self:
            raise ValueError("FrameMask: one frame, no CLS and allow_self=False leaves rows with no allowed key")

    def materialize(self, n_q: int | None = None, n_k: int | None = None,
                    device: torch.device | str | None = None) -> torch.Tensor:
        """Returns bool ``[N, N]`` (True = attend) with ``N = num_tokens``."""
        n = _covered(self, n_q, n_k)
        fid = self.frame_ids(n, device)
        allowed = _frame_rule(fid[:, None], fid[None, :])
        if self.allow_self:
            allowed |= torch.eye(n, dtype=torch.bool, device=device)
        return allowed

    def check(self, batch: int, n: int) -> str | None:
        return None if n == self.num_tokens else f"{self.describe()} covers {self.num_tokens} tokens, q has N = {n}"

    def mask_mod(self) -> Callable:
        """FlexAttention ``mask_mod`` closure implementing the same rule."""
        frame = _frame_fn(self.frame_size, self.num_frames, self.cls, self.order, self.num_tokens)
        allow_self = self.allow_self

        def mod(b, h, q, k):
            ok = _frame_rule(frame(q), frame(k))
            return (ok | (q == k)) if allow_self else ok

        return mod

    def describe(self) -> str:
        order = "" if self.order == "frame_major" else f", order={self.order!r}"
        return (f"FrameMask(frame_size={self.frame_size}, num_frames={self.num_frames}, "
                f"cls={self.cls!r}, allow_self={self.allow_self}{order})")


@dataclass(frozen=True)
class SlidingWindowMask(_FrameLayout):
    """Sliding temporal window: a token attends to the tokens of the frames within ``radius`` of its own.

        allowed(q, k) = |frame(q) - frame(k)| <= radius

    Args:
        frame_size, num_frames, cls, order: the token layout, as in :class:`FrameMask` (CLS in no frame).
        radius: frames each side, ``>= 0`` (0: the own frame only).
    """

    frame_size: int
    num_frames: int
    radius: int
    _: KW_ONLY
    cls: CLSPosition
    order: TokenOrder = "frame_major"

    def __post_init__(self) -> None:
        if self.frame_size < 1 or self.num_frames < 1 or self.radius < 0:
            raise ValueError(f"SlidingWindowMask: frame_size and num_frames must be >= 1 and radius >= 0, got "
                             f"{self.frame_size}, {self.num_frames}, {self.radius}")
        _check_cls("SlidingWindowMask", self.cls)
        _check_order("SlidingWindowMask", self.order)

    def materialize(self, n_q: int | None = None, n_k: int | None = None,
                    device: torch.device | str | None = None) -> torch.Tensor:
        """Returns bool ``[N, N]`` (True = attend)."""
        fid = self.frame_ids(_covered(self, n_q, n_k), device)
        return _window_rule(fid[:, None], fid[None, :], self.radius)

    def check(self, batch: int, n: int) -> str | None:
        return None if n == self.num_tokens else f"{self.describe()} covers {self.num_tokens} tokens, q has N = {n}"

    def mask_mod(self) -> Callable:
        frame = _frame_fn(self.frame_size, self.num_frames, self.cls, self.order, self.num_tokens)
        radius = self.radius
        return lambda b, h, q, k: _window_rule(frame(q), frame(k), radius)

    def describe(self) -> str:
        order = "" if self.order == "frame_major" else f", order={self.order!r}"
        return (f"SlidingWindowMask(frame_size={self.frame_size}, num_frames={self.num_frames}, "
                f"radius={self.radius}, cls={self.cls!r}{order})")


TOKEN_ID_RULES = ("other", "same", "window")


@dataclass(frozen=True, eq=False)
class TokenIdMask(_Combinable):
    """A rule on per-token frame / segment ids given as data, tokens in any order.

    Args:
        q_ids: integer ``[N]`` (shared by the batch) or ``[B, N]`` (per sample): the frame or segment of each
            query token. :data:`GLOBAL_ID` (-1) marks a global token (CLS): it attends to all, all attend to it.
        k_ids: the keys' ids, same shape rules; None: ``q_ids`` (self-attention).
        rule: ``"other"``: other ids only, the frame rule (``allowed = id_q != id_k or (allow_self and q ==
            k)``); ``"same"``: the own id only (segments, partitions); ``"window"``: ``|id_q - id_k| <= radius``.
        radius: the window's half width (``rule="window"`` only).
        allow_self: the diagonal under ``rule="other"``, as :class:`FrameMask` (default: the released code).
    """

    q_ids: torch.Tensor
    k_ids: torch.Tensor | None = None
    _: KW_ONLY
    rule: Literal["other", "same", "window"]
    radius: int = 0
    allow_self: bool = True

    def __post_init__(self) -> None:
        for name, ids in (("q_ids", self.q_ids), ("k_ids", self.k_ids)):
            if ids is None:
                continue
            if not isinstance(ids, torch.Tensor) or ids.is_floating_point() or ids.is_complex() \
                    or ids.dtype == torch.bool or ids.dim() not in (1, 2):
                raise ValueError(f"TokenIdMask: {name} must be an integer tensor [N] or [B, N], got "
                                 f"{_describe_value(ids)}")
        if self.k_ids is not None and self.k_ids.shape[-1] != self.q_ids.shape[-1]:
            raise ValueError(f"TokenIdMask: q_ids {tuple(self.q_ids.shape)} and k_ids {tuple(self.k_ids.shape)} "
                             "cover different token counts")
        if self.rule not in TOKEN_ID_RULES:
            raise ValueError(f"TokenIdMask: rule must be one of {TOKEN_ID_RULES}, got {self.rule!r}")
        if self.radius < 0 or (self.radius and self.rule != "window"):
            raise ValueError(f"TokenIdMask: radius {self.radius} needs rule='window' and radius >= 0")

    @property
    def keys(self) -> torch.Tensor:
        return self.q_ids if self.k_ids is None else self.k_ids

    def materialize(self, n_q: int | None = None, n_k: int | None = None,
                    device: torch.device | str | None = None) -> torch.Tensor:
        """Returns bool ``[N, N]`` (ids ``[N]``) or ``[B, 1, N, N]`` (per-sample ids), True = attend."""
        f_q = self.q_ids.to(device=device, dtype=torch.int64)
        f_k = self.keys.to(device=device, dtype=torch.int64)
        per_sample = f_q.dim() == 2 or f_k.dim() == 2
        f_q, f_k = f_q.unsqueeze(-1), f_k.unsqueeze(-2)
        if self.rule == "other":
            allowed = _frame_rule(f_q, f_k)
            if self.allow_self:
                allowed = allowed | torch.eye(allowed.shape[-1], dtype=torch.bool, device=allowed.device)
        else:
            allowed = _window_rule(f_q, f_k, self.radius)
        return allowed[:, None] if per_sample else allowed

    def check(self, batch: int, n: int) -> str | None:
        for name, ids in (("q_ids", self.q_ids), ("k_ids", self.keys)):
            if ids.shape[-1] != n or (ids.dim() == 2 and ids.shape[0] not in (1, batch)):
                return f"TokenIdMask.{name} must be [N] or [B, N] = [{batch}, {n}], got {tuple(ids.shape)}"
        return None

    def mask_mod(self) -> Callable:
        q_ids, k_ids = self.q_ids, self.keys
        rule, radius, allow_self = self.rule, self.radius, self.allow_self

        def ids_of(ids, b, i):
            return ids[b, i] if ids.dim() == 2 else ids[i]

        def mod(b, h, q, k):
            f_q, f_k = ids_of(q_ids, b, q), ids_of(k_ids, b, k)
            if rule != "other":
                return _window_rule(f_q, f_k, radius)
            ok = _frame_rule(f_q, f_k)
            return (ok | (q == k)) if allow_self else ok

        return mod

    def describe(self) -> str:
        extra = f", radius={self.radius}" if self.rule == "window" else ""
        extra += f", allow_self={self.allow_self}" if self.rule == "other" else ""
        return f"TokenIdMask(q_ids={list(self.q_ids.shape)}, rule={self.rule!r}{extra})"


LENGTH_UNITS = ("tokens", "frames")


@dataclass(frozen=True, eq=False)
class KeyPaddingMask(_Combinable):
    """Key padding (V-TRS, variable-length clips): the keys past each sample's valid length are blocked.

    Args:
        lengths: integer ``[B]``, the valid length of each sample, in ``unit``.
        unit: ``"tokens"`` or ``"frames"`` (required: a frame count read as a token count is a silent wrong
            answer). Frames are ``frame_size`` tokens each, frame-major.
        cls: where the sequence's CLS token sits, ``"first"``, ``"last"`` or ``"none"`` (required). A CLS is
            never padding: it stays visible whatever the length; ``lengths`` count the other tokens.
        frame_size: tokens per frame, with ``unit="frames"`` only.

    Keys visible to every query of sample b: the CLS (if any) and the first ``lengths[b]`` (x ``frame_size``)
    other tokens. A sample whose rows see no key at all (length 0, no CLS) gets O = 0 and zero gradients on
    every backend.
    """

    lengths: torch.Tensor
    _: KW_ONLY
    unit: Literal["tokens", "frames"]
    cls: CLSPosition
    frame_size: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.lengths, torch.Tensor) or self.lengths.dim() != 1:
            raise ValueError(f"KeyPaddingMask: lengths must be a 1-D integer tensor [B], got "
                             f"{_describe_value(self.lengths)}")
        if self.unit not in LENGTH_UNITS:
            raise ValueError(f"KeyPaddingMask: unit must be 'tokens' or 'frames', got {self.unit!r}")
        _check_cls("KeyPaddingMask", self.cls)
        if (self.unit == "frames") != (self.frame_size is not None) or (self.frame_size is not None
                                                                        and self.frame_size < 1):
            raise ValueError(f"KeyPaddingMask: frame_size (>= 1) goes with unit='frames' and only with it, got "
                             f"unit={self.unit!r}, frame_size={self.frame_size}")

    @property
    def is_integer(self) -> bool:
        lengths = self.lengths
        return not (lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool)

    def prefix_lengths(self, device: torch.device | str | None = None) -> torch.Tensor:
        """int64 ``[B]``: how many tokens from token 0 are visible, the leading CLS included (the trailing CLS
        is visible on top of these)."""
        lengths = self.lengths.to(device=device, dtype=torch.int64)
        if self.unit == "frames":
            lengths = lengths * self.frame_size
        return lengths + 1 if self.cls == "first" else lengths

    def materialize(self, n_q: int, n_k: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Returns bool ``[B, 1, n_q, n_k]`` (True = attend), broadcast over heads."""
        lengths = self.prefix_lengths(device if device is not None else self.lengths.device)
        k = torch.arange(n_k, device=lengths.device)
        allowed = k[None, :] < lengths[:, None]
        if self.cls == "last":
            allowed = allowed | (k == n_k - 1)[None, :]
        return allowed[:, None, None, :].expand(-1, 1, n_q, n_k)

    def check(self, batch: int, n: int) -> str | None:
        if tuple(self.lengths.shape) != (batch,):
            return f"KeyPaddingMask.lengths must be [B] = [{batch}], got {tuple(self.lengths.shape)}"
        return None

    def mask_mod(self, n_k: int | None = None) -> Callable:
        """FlexAttention ``mask_mod``; ``n_k`` (the key count) is needed with a trailing CLS."""
        if self.cls == "last" and n_k is None:
            raise ValueError("KeyPaddingMask.mask_mod: cls='last' needs n_k (the key count)")
        lengths, last = self.prefix_lengths(), self.cls == "last"
        return lambda b, h, q, k: (k < lengths[b]) | (last & (k == (n_k or 0) - 1))

    def describe(self) -> str:
        size = f", frame_size={self.frame_size}" if self.unit == "frames" else ""
        return f"KeyPaddingMask(lengths=[{self.lengths.numel()}], unit={self.unit!r}, cls={self.cls!r}{size})"


@dataclass(frozen=True, eq=False)
class DenseMask(_Combinable):
    """A mask tensor as ``torch.nn.functional.scaled_dot_product_attention`` takes ``attn_mask``.

    ``mask``: bool (True = attend) or float (added to the scores; -inf blocks), broadcastable to
    ``[B, H, N, N]``. It runs on the SDPA and reference backends: the kernels compute masks from token
    indices and cannot skip the blocks of an arbitrary tensor (a float one can go to the kernels as
    ``bias=``). Combining with ``&`` needs a boolean tensor.
    """

    mask: torch.Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.mask, torch.Tensor) or self.mask.dim() < 2 or self.mask.dim() > 4 \
                or not (self.mask.dtype == torch.bool or self.mask.is_floating_point()):
            raise ValueError(f"DenseMask: mask must be a bool or float tensor broadcastable to [B, H, N, N], got "
                             f"{_describe_value(self.mask)}")

    @property
    def additive(self) -> bool:
        return self.mask.dtype != torch.bool

    def materialize(self, n_q: int, n_k: int, device: torch.device | str | None = None) -> torch.Tensor:
        return self.mask.to(device) if device is not None else self.mask

    def check(self, batch: int, n: int) -> str | None:
        try:
            torch.broadcast_shapes(self.mask.shape, (batch, 1, n, n))
        except RuntimeError:
            return f"DenseMask {tuple(self.mask.shape)} does not broadcast to [B, H, N, N] = [{batch}, H, {n}, {n}]"
        if self.mask.dim() == 4 and self.mask.shape[0] not in (1, batch):
            return f"DenseMask {tuple(self.mask.shape)}: batch dim must be 1 or B = {batch}"
        return None

    def mask_mod(self) -> Callable:
        if self.additive:
            raise ValueError("DenseMask.mask_mod: a float mask is a score_mod, not a mask_mod")
        m = self.mask.reshape((1,) * (4 - self.mask.dim()) + tuple(self.mask.shape))
        return lambda b, h, q, k: m[b if m.shape[0] > 1 else 0, h if m.shape[1] > 1 else 0, q, k]

    def describe(self) -> str:
        return f"DenseMask({self.mask.dtype}, {list(self.mask.shape)})"


@dataclass(frozen=True, eq=False)
class AndMask(_Combinable):
    """Attend where every part allows: ``FrameMask(...) & KeyPaddingMask(...)``. Build it with ``&``.

    ``parts``: two or more boolean masks (no nested :class:`AndMask`, no float :class:`DenseMask`).
    """

    parts: tuple

    @staticmethod
    def of(*masks: AttentionMask) -> AndMask:
        parts: list = []
        for mask in masks:
            if isinstance(mask, torch.Tensor):
                mask = DenseMask(mask)
            if not isinstance(mask, MASK_TYPES):
                raise TypeError(f"mask & mask: {type(mask).__name__} is not an attention mask")
            parts.extend(mask.parts if type(mask) is AndMask else (mask,))
        return AndMask(tuple(parts))

    def __post_init__(self) -> None:
        if len(self.parts) < 2:
            raise ValueError("AndMask: needs two or more parts (build it with mask_a & mask_b)")
        for part in self.parts:
            if type(part) is AndMask or not isinstance(part, MASK_TYPES):
                raise ValueError(f"AndMask: parts must be masks other than AndMask, got {type(part).__name__}")
            if type(part) is DenseMask and part.additive:
                raise ValueError("AndMask: a float DenseMask cannot be combined with &; add it to the scores "
                                 "(bias=) or combine boolean masks")

    def materialize(self, n_q: int, n_k: int, device: torch.device | str | None = None) -> torch.Tensor:
        allowed = self.parts[0].materialize(n_q, n_k, device=device)
        for part in self.parts[1:]:
            allowed = allowed & part.materialize(n_q, n_k, device=device)
        return allowed

    def check(self, batch: int, n: int) -> str | None:
        return next((reason for part in self.parts if (reason := part.check(batch, n))), None)

    def mask_mod(self, n_k: int | None = None) -> Callable:
        mods = [part.mask_mod(n_k) if type(part) is KeyPaddingMask else part.mask_mod() for part in self.parts]

        def mod(b, h, q, k):
            ok = mods[0](b, h, q, k)
            for other in mods[1:]:
                ok = ok & other(b, h, q, k)
            return ok

        return mod

    def describe(self) -> str:
        return " & ".join(part.describe() for part in self.parts)


def _covered(mask: FrameMask | SlidingWindowMask, n_q: int | None, n_k: int | None) -> int:
    n = mask.num_tokens
    if (n_q is not None and n_q != n) or (n_k is not None and n_k != n):
        raise ValueError(f"{mask.describe()} covers {n} tokens, asked for [{n_q}, {n_k}]")
    return n


def _frame_fn(frame_size: int, num_frames: int, cls: str, order: str, n: int) -> Callable:
    """The frame of a token index tensor (FlexAttention closures): :func:`frame_ids` as a function."""

    def frame(i):
        t = i - 1 if cls == "first" else i
        fid = t // frame_size if order == "frame_major" else t % num_frames
        if cls == "first":
            return torch.where(i == 0, GLOBAL_ID, fid)
        if cls == "last":
            return torch.where(i == n - 1, GLOBAL_ID, fid)
        return fid

    return frame


def _describe_value(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor {list(value.shape)}"
    return type(value).__name__


AttentionMask = NoMask | FrameMask | SlidingWindowMask | TokenIdMask | KeyPaddingMask | DenseMask | AndMask
MASK_TYPES = (NoMask, FrameMask, SlidingWindowMask, TokenIdMask, KeyPaddingMask, DenseMask, AndMask)
"""Every mask class. Masks are matched by exact type (``type(mask) in MASK_TYPES``): a subclass that changes
``materialize`` would be computed one way by the kernels and another by SDPA, so it is refused."""
STRUCTURED_MASKS = (NoMask, FrameMask, SlidingWindowMask, TokenIdMask)
"""The rules the kernels compute from indices / ids (one of them, combined with a :class:`KeyPaddingMask`)."""
