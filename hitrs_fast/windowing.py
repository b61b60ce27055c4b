"""Clip windowing of the released code, by formula.

With ``pad = (clip_len // 2) * dilation`` zero frames at each end (6 for 7 / 2), clip k
takes padded frames ``stride * k + dilation * i`` for ``i < clip_len``: raw frames
``7k - 6, 7k - 4, ..., 7k + 6``, centred on raw frame 7k. ``W = ceil(T / stride)``.
Clip k holds raw frames of parity k mod 2 only, so every raw frame lands in at most one
clip (up to 3 tail frames of the other parity land in none).
"""

from __future__ import annotations

import torch

from hitrs_fast.config import HiTRSConfig


def num_clips(lengths: torch.Tensor, config: HiTRSConfig) -> torch.Tensor:
    """``W = ceil(T / stride)`` per sample, int64 ``[B]``."""
    return torch.div(lengths + config.clip_stride - 1, config.clip_stride, rounding_mode="floor")


def clip_frame_indices(num: int, config: HiTRSConfig, device: torch.device | str | None = None) -> torch.Tensor:
    """Padded frame indices of clips 0..num-1, int64 ``[num, clip_len]``."""
    k = torch.arange(num, device=device)[:, None]
    i = torch.arange(config.clip_len, device=device)[None, :]
    return config.clip_stride * k + config.clip_dilation * i


def stride1_clip_indices(num: int, config: HiTRSConfig, device: torch.device | str | None = None) -> torch.Tensor:
    """Padded frame indices of the stride-1 clips centred on raw frames 0..num-1, ``[num, clip_len]``."""
    c = torch.arange(num, device=device)[:, None]
    i = torch.arange(config.clip_len, device=device)[None, :]
    return c + config.clip_dilation * i


def pad_frames(x: torch.Tensor, config: HiTRSConfig) -> torch.Tensor:
    """Zero-pads ``clip_pad`` frames at both ends of dim 1: ``[B, T, ...] -> [B, T + 2 pad, ...]``."""
    pad = x.new_zeros(x.shape[0], config.clip_pad, *x.shape[2:])
    return torch.cat([pad, x, pad], dim=1)
