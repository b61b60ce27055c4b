"""The one registry of benchmark shapes (C-TRS clip attention, F-TRS, V-TRS). No benchmark hard-codes its own sizes.

Each :class:`AttentionShape` is one (N, d, H, mask) workload; batch sizes come from
:data:`BATCH_LADDER` (GPU) or :data:`SMOKE_BATCH` (CPU smoke mode).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from benchmarks.common import is_smoke
from hitrs_fast.masks import AttentionMask, FrameMask, NoMask, SlidingWindowMask

JOINTS = 25


@dataclass(frozen=True)
class AttentionShape:
    """One attention workload: ``num_tokens`` tokens, ``heads`` x ``head_dim``, a mask kind."""

    name: str
    num_tokens: int
    heads: int
    head_dim: int
    mask_kind: str  # "frame" (C-TRS), "none" (F-TRS), "key_padding" (V-TRS)
    num_frames: int = 0

    def mask(self) -> AttentionMask:
        """The typed mask of this workload (key padding lengths are drawn by the benchmark)."""
        if self.mask_kind == "frame":
            return FrameMask(frame_size=JOINTS, num_frames=self.num_frames, cls="last", allow_self=True)
        return NoMask()

    def fwd_flops(self) -> float:
        """Dense forward FLOPs per sequence, 4 N^2 d H (flash-attention's ``flops()``)."""
        return 4.0 * self.num_tokens ** 2 * self.head_dim * self.heads

    def fwd_bytes(self, elem_size: int) -> float:
        """Forward HBM bytes per sequence: read Q, K, V and write O once."""
        return 4.0 * self.num_tokens * self.heads * self.head_dim * elem_size

    def masked_fraction(self) -> float:
        if self.mask_kind != "frame":
            return 0.0
        n = self.num_tokens
        # Same-frame pairs minus the diagonal, which stays allowed.
        return self.num_frames * (JOINTS * JOINTS - JOINTS) / n ** 2


def ctrs(num_frames: int, head_dim: int, heads: int = 8) -> AttentionShape:
    n = JOINTS * num_frames + 1
    return AttentionShape(f"ctrs-F{num_frames}-N{n}-H{heads}-D{head_dim}", n, heads, head_dim, "frame", num_frames)


OFFICIAL_CTRS = ctrs(7, 64)
"""The official C-TRS clip attention: 7 frames x 25 joints + CLS = 176 tokens, H 8, d 64."""

REDUCED_CTRS = (ctrs(6, 32), ctrs(6, 64))
"""The reduced variant, N 151 with d 32 and 64."""

EXTRA_CTRS = (ctrs(4, 64), ctrs(10, 64))
"""N 101 (below FlexAttention's 128 decode threshold) and N 251."""

FTRS = AttentionShape("ftrs-N25-H8-D64", JOINTS, 8, 64, "none")
"""F-TRS: one frame of 25 joints, no mask."""

VTRS = AttentionShape("vtrs-N44-H8-D64", 44, 8, 64, "key_padding")
"""V-TRS on NTU: up to 43 clip tokens + CLS, per-sample key padding."""

CTRS_SHAPES = (OFFICIAL_CTRS, *REDUCED_CTRS, *EXTRA_CTRS)
ALL_SHAPES = (*CTRS_SHAPES, FTRS, VTRS)

@dataclass(frozen=True)
class BlockShape:
    """One attention-sublayer workload: the attention ``attention`` inside a block of model width ``width``."""

    name: str
    attention: AttentionShape
    width: int


CTRS_BLOCK = BlockShape("block-ctrs-N176-C256-H8-D64", OFFICIAL_CTRS, 256)
"""The official C-TRS sublayer: width 256 around the official clip attention."""

FTRS_BLOCK = BlockShape("block-ftrs-N25-C128-H8-D64", FTRS, 128)
"""The F-TRS sublayer: width 128, one frame of 25 joints, no mask."""

BLOCK_SHAPES = (CTRS_BLOCK, FTRS_BLOCK)

SMOKE_BLOCK_SHAPES = (BlockShape("block-smoke-ctrs-N26-C32-H2-D16", ctrs(1, 16, heads=2), 32),
                      BlockShape("block-smoke-ftrs-N25-C32-H2-D16", AttentionShape("ftrs-N25-H2-D16", JOINTS, 2, 16,
                                                                                   "none"), 32))
"""CPU smoke sizes of the sublayer benchmark."""

BATCH_LADDER = (1, 64, 1024, 8192, 32768, 65535, 131072)
"""Sequences per call. Headline numbers use B >= 8192, where launch and guard overheads are negligible."""

HEADLINE_BATCH = 8192

SMOKE_SHAPES = (ctrs(1, 16, heads=2), ctrs(2, 32, heads=2))
"""CPU smoke sizes: the interpreter runs these in seconds."""

SMOKE_BATCH = (2,)


def selected_batches(default: tuple[int, ...]) -> tuple[int, ...]:
    """Batch sizes of a run: :data:`SMOKE_BATCH` in smoke mode, else ``HITRS_BENCH_BATCHES=1,64,...`` or ``default``."""
    if is_smoke():
        return SMOKE_BATCH
    env = os.environ.get("HITRS_BENCH_BATCHES")
    if not env:
        return default
    try:
        return tuple(int(b) for b in env.split(","))
    except ValueError:
        raise ValueError(f"HITRS_BENCH_BATCHES: expected comma-separated integers, got {env!r}") from None


@dataclass(frozen=True)
class PeerShape:
    """A peer skeleton Transformer's attention (issue 24): ``num_tokens`` tokens, ``heads`` x ``head_dim``, an
    additive ``[H, N, N]`` bias (a relative-position table) and/or a sliding temporal window over frames of
    ``frame_size`` tokens (``radius`` frames each side), at ``batch`` sequences."""

    name: str
    num_tokens: int
    heads: int
    head_dim: int
    bias: bool
    radius: int | None  # None: no window
    frame_size: int = JOINTS
    batch: int = 1024

    def mask(self) -> AttentionMask:
        if self.radius is None:
            return NoMask()
        return SlidingWindowMask(self.frame_size, self.num_tokens // self.frame_size, self.radius, cls="none")

    def fwd_flops(self) -> float:
        return 4.0 * self.num_tokens ** 2 * self.head_dim * self.heads


PEER_SHAPES = (
    PeerShape("partition-N64-H8-D32-bias", 64, 8, 32, bias=True, radius=None, batch=8192),
    PeerShape("partition-N96-H4-D24-bias", 96, 4, 24, bias=True, radius=None, batch=8192),
    PeerShape("window-N300-H8-D64-r1-bias", 300, 8, 64, bias=True, radius=1, batch=512),
    PeerShape("window-N750-H8-D64-r2", 750, 8, 64, bias=False, radius=2, batch=128),
)
"""The peers' shapes (N 64-750, head_dim 24-64; 24 is padded to 32 inside our op): partitioned attention with a
relative-position bias, and a sliding window over 25-joint frames with and without a bias."""

SMOKE_PEER_SHAPES = (PeerShape("smoke-window-N26-H1-D16-r0-bias", 26, 1, 16, bias=True, radius=0, frame_size=13,
                               batch=1),)
"""CPU smoke size of the peer-shape benchmark."""
