"""Typed attention masks.

A mask is a small frozen description of which keys a query may attend to. Kernels
compute the rule from token indices; only the reference path calls ``materialize``.
Everything public uses True = attend, as SDPA does (the released Hi-TRS code uses
1 = blocked; that convention stays out of the API).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

CLSPosition = Literal["first", "last", "none"]


@dataclass(frozen=True)
class NoMask:
    """Every query attends to every key (F-TRS)."""

    def materialize(self, n_q: int, n_k: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Returns bool ``[n_q, n_k]``, all True."""
        return torch.ones(n_q, n_k, dtype=torch.bool, device=device)

    def mask_mod(self) -> Callable:
        return lambda b, h, q, k: q >= 0

    def describe(self) -> str:
        return "NoMask()"


@dataclass(frozen=True)
class FrameMask:
    """C-TRS clip mask: tokens of the same frame do not see each other.

    Tokens are frame-major, ``token = f * frame_size + j``. The CLS token (first, last
    or absent) belongs to no frame, so it attends to all tokens and all attend to it.

        allowed(q, k) = frame(q) != frame(k)  or  (allow_self and q == k)

    ``allow_self=True`` is the released code (its mask is block-ones minus the
    identity); ``False`` is the paper's literal reading. Every row keeps at least one
    allowed key either way as long as there are two frames or a CLS token.
    """

    frame_size: int = 25
    num_frames: int = 7
    cls: CLSPosition = "last"
    allow_self: bool = True

    def __post_init__(self) -> None:
        if self.frame_size < 1 or self.num_frames < 1:
            raise ValueError(f"FrameMask: frame_size and num_frames must be >= 1, "
                             f"got {self.frame_size}, {self.num_frames}")
        if self.cls not in ("first", "last", "none"):
            raise ValueError(f"FrameMask: cls must be 'first', 'last' or 'none', got {self.cls!r}")
        if self.cls == "none" and self.num_frames == 1 and not self.allow_self:
            raise ValueError("FrameMask: one frame, no CLS and allow_self=False leaves rows with no allowed key")

    @property
    def num_tokens(self) -> int:
        return self.frame_size * self.num_frames + (self.cls != "none")

    def frame_ids(self, n: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Frame id of each of ``n`` tokens, int64 ``[n]``; CLS gets a unique id (-1)."""
        idx = torch.arange(n, device=device)
        if self.cls == "first":
            fid = torch.where(idx == 0, -1, (idx - 1) // self.frame_size)
        elif self.cls == "last":
            fid = torch.where(idx == n - 1, -1, idx // self.frame_size)
        else:
            fid = idx // self.frame_size
        return fid

    def materialize(self, n_q: int | None = None, n_k: int | None = None,
                    device: torch.device | str | None = None) -> torch.Tensor:
        """Returns bool ``[N, N]`` (True = attend) with ``N = num_tokens``."""
        n = self.num_tokens
        if (n_q is not None and n_q != n) or (n_k is not None and n_k != n):
            raise ValueError(f"{self.describe()} covers {n} tokens, asked for [{n_q}, {n_k}]")
        fid = self.frame_ids(n, device)
        allowed = (fid[:, None] != fid[None, :]) | (fid[:, None] == -1) | (fid[None, :] == -1)
        if self.allow_self:
            allowed |= torch.eye(n, dtype=torch.bool, device=device)
        return allowed

    def mask_mod(self) -> Callable:
        """FlexAttention ``mask_mod`` closure implementing the same rule."""
        fs, nf, cls, allow_self = self.frame_size, self.num_frames, self.cls, self.allow_self
        n = self.num_tokens

        def frame(i):
            if cls == "first":
                return torch.where(i == 0, -1, (i - 1) // fs)
            if cls == "last":
                return torch.where(i == n - 1, -1, i // fs)
            return i // fs

        def mod(b, h, q, k):
            fq, fk = frame(q), frame(k)
            ok = (fq != fk) | (fq == -1) | (fk == -1)
            return (ok | (q == k)) if allow_self else ok

        del nf
        return mod

    def describe(self) -> str:
        return (f"FrameMask(frame_size={self.frame_size}, num_frames={self.num_frames}, "
                f"cls={self.cls!r}, allow_self={self.allow_self})")


@dataclass(frozen=True, eq=False)
class KeyPaddingMask:
    """V-TRS key padding: keys at or beyond ``lengths[b]`` are blocked, except a
    trailing CLS token (``cls_last=True``) which is always visible.

    ``lengths``: int ``[B]``, the number of real (non-CLS) tokens per sample.
    """

    lengths: torch.Tensor
    cls_last: bool = True

    def materialize(self, n_q: int, n_k: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Returns bool ``[B, 1, n_q, n_k]`` (True = attend), broadcast over heads."""
        lengths = self.lengths.to(device) if device is not None else self.lengths
        k = torch.arange(n_k, device=lengths.device)
        allowed = k[None, :] < lengths[:, None]
        if self.cls_last:
            allowed = allowed | (k == n_k - 1)[None, :]
        return allowed[:, None, None, :].expand(-1, 1, n_q, n_k)

    def mask_mod(self) -> Callable:
        lengths, cls_last = self.lengths, self.cls_last

        def mod(b, h, q, k):
            return k < lengths[b]

        if cls_last:
            raise NotImplementedError("KeyPaddingMask.mask_mod with cls_last needs n_k; use materialize()")
        return mod

    def describe(self) -> str:
        return f"KeyPaddingMask(lengths=[{self.lengths.numel()}], cls_last={self.cls_last})"


AttentionMask = NoMask | FrameMask | KeyPaddingMask
