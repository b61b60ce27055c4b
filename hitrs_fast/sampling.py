"""Pretext-task sampling, vectorised over the batch and run on the data's device.

The released code draws these per sample with Python loops in its data loader; here
each draw is one batched tensor op with an optional ``torch.Generator`` (on the data's
device) so that a seed gives the same draws. Samplers are checked by invariants
(selection rate, replacement shares, swap distances), not by matching a Python RNG.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hitrs_fast.config import HiTRSConfig
from hitrs_fast.windowing import pad_frames, stride1_clip_indices

# Replacement kinds of the masked joint prediction task.
KEEP, REPLACED, SWAPPED, UNCHANGED = 0, 1, 2, 3


def _rand(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, device=like.device, generator=generator)


def _randint_below(high: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Uniform integers in ``[0, high)`` elementwise (``high >= 1``)."""
    draw = (torch.rand(high.shape, device=high.device, generator=generator) * high).long()
    return torch.minimum(draw, high - 1)


@dataclass
class SpatialMask:
    """Result of :func:`mask_joints`.

    masked_x: ``[B, T, V, C]`` input with the replacements applied.
    selected: bool ``[B, T, V]`` entries whose coordinates are predicted.
    kind: int8 ``[B, T, V]``: KEEP (not selected), REPLACED, SWAPPED or UNCHANGED.
    """

    masked_x: torch.Tensor
    selected: torch.Tensor
    kind: torch.Tensor


def mask_joints(x: torch.Tensor, lengths: torch.Tensor, config: HiTRSConfig,
                generator: torch.Generator | None = None) -> SpatialMask:
    """Frame-level masking: each real (frame, joint) entry is selected with
    ``config.mask_ratio``; selected entries are replaced 80 % (constant (1,1,1), or a
    uniform random coordinate inside the sample's own range), 10 % by another joint at
    another frame of the same sample, 10 % left unchanged.

    x: ``[B, T, V, C]`` (zeros past each length), lengths ``[B]`` (>= 2).
    """
    b, t, v, c = x.shape
    real = (torch.arange(t, device=x.device)[None, :] < lengths[:, None])[..., None].expand(b, t, v)
    selected = (_rand((b, t, v), x, generator) < config.mask_ratio) & real
    u = _rand((b, t, v), x, generator)
    replaced = selected & (u < 0.8)
    swapped = selected & (u >= 0.8) & (u < 0.9)

    if config.mask_replacement == "ones":
        fill = torch.ones_like(x)
    else:
        # Per-axis uniform over the sample's own coordinate range (real frames only).
        big = torch.finfo(x.dtype).max
        lo = torch.where(real[..., None], x, big).amin(dim=(1, 2), keepdim=True)
        hi = torch.where(real[..., None], x, -big).amax(dim=(1, 2), keepdim=True)
        fill = lo + _rand(x.shape, x, generator) * (hi - lo)

    # Another joint (uniform over the V-1 others) at another frame (uniform over the T_b-1 others).
    joint = torch.arange(v, device=x.device)[None, None, :]
    other_joint = (joint + 1 + _randint_below(torch.full((b, t, v), v - 1, device=x.device), generator)) % v
    frame = torch.arange(t, device=x.device)[None, :, None]
    len_b = lengths[:, None, None].expand(b, t, v)
    other_frame = (frame + 1 + _randint_below((len_b - 1).clamp_min(1), generator)) % len_b
    batch = torch.arange(b, device=x.device)[:, None, None]
    donor = x[batch, other_frame, other_joint]  # [B, T, V, C]

    masked = torch.where(replaced[..., None], fill, x)
    masked = torch.where(swapped[..., None], donor, masked)
    kind = torch.zeros(b, t, v, dtype=torch.int8, device=x.device)
    kind[selected] = UNCHANGED
    kind[replaced] = REPLACED
    kind[swapped] = SWAPPED
    return SpatialMask(masked, selected, kind)


def frame_motion(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Per-frame motion ``m_t = sum |x_t - x_{t-1}|`` (m_0 = 0, 0 past each length).

    x ``[B, T, V, C]`` -> ``[B, T]``.
    """
    m = (x[:, 1:] - x[:, :-1]).abs().sum(dim=(2, 3))
    m = torch.cat([m.new_zeros(x.shape[0], 1), m], dim=1)
    return m * (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None])


def sample_motion_clip(x: torch.Tensor, lengths: torch.Tensor, config: HiTRSConfig,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Picks the clip-order task's clip per sample.

    Stride-1 clip c (centred on raw frame c) scores mean motion over its valid frames
    (padding frames and the first raw frame count as invalid). The clip is drawn
    uniformly among clips with score > 0.

    Returns:
        start ``[B]``: padded index of the clip's first frame (= c);
        valid: bool ``[B]``, False when no clip moves (the sample is left out of the loss).
    """
    b, t = x.shape[:2]
    motion = pad_frames(frame_motion(x, lengths)[..., None], config)[..., 0]  # [B, T + 2 pad]
    frame = torch.arange(t, device=x.device)
    valid = ((frame[None, :] >= 1) & (frame[None, :] < lengths[:, None])).to(motion.dtype)
    valid = pad_frames(valid[..., None], config)[..., 0]
    idx = stride1_clip_indices(t, config, x.device)  # [T, F]
    total, count = motion[:, idx].sum(-1), valid[:, idx].sum(-1)  # [B, T]
    eligible = (total > 0) & (count > 0) & (frame[None, :] < lengths[:, None])
    score = torch.where(eligible, _rand((b, t), x, generator), -1.0)
    return score.argmax(dim=1), eligible.any(dim=1)


def frame_swap_pairs(clip_len: int, device: torch.device | str | None = None) -> torch.Tensor:
    """All unordered position pairs (p, q) with q - p >= 2, int64 ``[P, 2]`` (15 for 7)."""
    p, q = torch.triu_indices(clip_len, clip_len, offset=2, device=device)
    return torch.stack([p, q], dim=1)


def sample_frame_swap(batch: int, config: HiTRSConfig, device: torch.device | str,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Frame order of the negative clip: identity with two positions >= 2 apart swapped.

    Returns int64 ``[B, clip_len]`` permutations.
    """
    pairs = frame_swap_pairs(config.clip_len, device)
    pick = pairs[_randint_below(torch.full((batch,), len(pairs), device=device), generator)]  # [B, 2]
    return _swap_positions(torch.arange(config.clip_len, device=device).expand(batch, -1), pick[:, 0], pick[:, 1])


def _swap_positions(order: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    rows = torch.arange(order.shape[0], device=order.device)
    out = order.clone()
    out[rows, i], out[rows, j] = order[rows, j], order[rows, i]
    return out


def sample_clip_swap(num_context: torch.Tensor, width: int,
                     generator: torch.Generator | None = None, max_rounds: int = 1000) -> torch.Tensor:
    """Clip order of the video-order negative, int64 ``[B, width]``.

    With exactly 2 context clips they are swapped; otherwise two clips i, j with
    |i - j| >= 2 are drawn uniformly (ordered draws redrawn until far enough, as the
    released code, but for the whole batch at once) and swapped. Slots past
    ``num_context[b]`` keep the identity.
    """
    if int(num_context.min()) < 2:
        raise ValueError(f"sample_clip_swap: every sample needs >= 2 context clips, got {int(num_context.min())}")
    n = num_context
    i = _randint_below(n, generator)
    j = _randint_below(n, generator)
    for _ in range(max_rounds):
        redo = ((i - j).abs() < 2) & (n > 2)
        if not bool(redo.any()):
            break
        i = torch.where(redo, _randint_below(n, generator), i)
        j = torch.where(redo, _randint_below(n, generator), j)
    else:
        raise RuntimeError("sample_clip_swap: rejection sampling did not converge")
    two = n == 2
    i, j = torch.where(two, 0, i), torch.where(two, 1, j)
    return _swap_positions(torch.arange(width, device=n.device).expand(n.shape[0], -1), i, j)
