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
from hitrs_fast.models import host_checks_enabled
from hitrs_fast.windowing import pad_frames, stride1_clip_indices

# Replacement kinds of the masked joint prediction task.
KEEP, REPLACED, SWAPPED, UNCHANGED = 0, 1, 2, 3

_MASK32 = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """murmur3's 32-bit finaliser on int64 tensors holding values < 2^32."""
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = (x * 0x85EBCA6B) & _MASK32
    x = x ^ (x >> 13)
    x = (x * 0xC2B2AE35) & _MASK32
    return x ^ (x >> 16)


class SampleRandom:
    """Counter-based uniform draws with one stream per sample.

    Every draw for sample ``i`` depends only on ``(seed, sample_ids[i], call number,
    position inside the sample)``, never on the batch it sits in, its padding or the
    rank that holds it. That makes pre-training independent of the data-parallel
    split (2 ranks x B/2 draw what 1 rank x B draws) and exactly resumable.

    Args:
        seed: int, e.g. derived from the run seed and the step; or an int64 tensor of one element on the
            samples' device (the same draws), which a compiled step takes as a graph input: a Python int would be
            baked into the graph and every new seed would recompile it.
        sample_ids: int64 ``[B]`` global ids of the batch's samples.
    """

    def __init__(self, seed: int | torch.Tensor, sample_ids: torch.Tensor) -> None:
        if isinstance(seed, torch.Tensor):
            if seed.numel() != 1 or seed.is_floating_point():
                raise ValueError(f"SampleRandom: a seed tensor must hold one integer, got {seed.dtype} "
                                 f"{tuple(seed.shape)}")
            self.seed = seed.reshape(()).long() & _MASK32
        else:
            self.seed = int(seed) & _MASK32
        self.sample_ids = sample_ids.long()
        self.calls = 0

    @staticmethod
    def device_seed(seed: int, device: torch.device | str) -> torch.Tensor:
        """``seed`` as an int64 scalar tensor on ``device``, filled there (no host-to-device copy to wait for)."""
        return torch.full((), int(seed) & _MASK32, dtype=torch.int64, device=device)

    def rand(self, shape: tuple[int, ...], device: torch.device | str) -> torch.Tensor:
        """Uniform [0, 1) float32 of ``shape``; ``shape[0]`` is the batch."""
        self.calls += 1
        inner = 1
        for s in shape[1:]:
            inner *= s
        pos = torch.arange(inner, device=device, dtype=torch.int64).view(1, *shape[1:]) if len(shape) > 1 else \
            torch.zeros(1, dtype=torch.int64, device=device)
        ids = self.sample_ids.to(device).view(-1, *([1] * (len(shape) - 1)))
        h = _mix32(ids * 0x9E3779B1 + self.seed)
        h = _mix32(h ^ (self.calls * 0x7FEB352D))
        h = _mix32(h + pos * 0x27D4EB2F)
        h = _mix32(h ^ 0x165667B1)
        # 24 random bits -> exactly representable float32 in [0, 1).
        return (h >> 8).to(torch.float32) * (1.0 / (1 << 24))


Rng = torch.Generator | SampleRandom | None


def _rand(shape: tuple[int, ...], like: torch.Tensor, generator: Rng) -> torch.Tensor:
    if isinstance(generator, SampleRandom):
        return generator.rand(shape, like.device)
    return torch.rand(shape, device=like.device, generator=generator)


def _randint_below(high: torch.Tensor, generator: Rng) -> torch.Tensor:
    """Uniform integers in ``[0, high)`` elementwise (``high >= 1``)."""
    draw = (_rand(tuple(high.shape), high, generator) * high).long()
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
                generator: Rng = None) -> SpatialMask:
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
    # torch.where, not boolean-mask assignment: no device sync.
    kind = torch.where(replaced, REPLACED, torch.where(swapped, SWAPPED, torch.where(selected, UNCHANGED, KEEP)))
    return SpatialMask(masked, selected, kind.to(torch.int8))


def frame_motion(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Per-frame motion ``m_t = sum |x_t - x_{t-1}|`` (m_0 = 0, 0 past each length).

    x ``[B, T, V, C]`` -> ``[B, T]``.
    """
    m = (x[:, 1:] - x[:, :-1]).abs().sum(dim=(2, 3))
    m = torch.cat([m.new_zeros(x.shape[0], 1), m], dim=1)
    return m * (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None])


def sample_motion_clip(x: torch.Tensor, lengths: torch.Tensor, config: HiTRSConfig,
                       generator: Rng = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Picks the clip-order task's clip per sample.

    Stride-1 clip c (centred on raw frame c) scores mean motion over its valid frames
    (padding frames and the first raw frame count as invalid). The clip is drawn among
    clips with score > 0: uniformly (``config.clip_order_selection == "any_motion"``, the
    released rule) or with probability proportional to the squared score
    (``"motion_weighted"``: where sensor jitter alone makes every clip "move", the draw
    still lands mostly where the body moves).

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
    u = _rand((b, t), x, generator)
    if config.clip_order_selection == "motion_weighted":
        # Gumbel-max: argmax of log w - log(-log u) draws clip c with probability w_c / sum(w), w = score^2.
        mean = total / count.clamp_min(1)
        u = 2 * torch.log(mean.clamp_min(1e-12)) - torch.log(-torch.log(u.clamp(1e-7, 1 - 1e-7)))
    score = torch.where(eligible, u, -torch.inf)
    return score.argmax(dim=1), eligible.any(dim=1)


def frame_swap_pairs(clip_len: int, device: torch.device | str | None = None) -> torch.Tensor:
    """All unordered position pairs (p, q) with q - p >= 2, int64 ``[P, 2]`` (15 for 7)."""
    p, q = torch.triu_indices(clip_len, clip_len, offset=2, device=device)
    return torch.stack([p, q], dim=1)


def sample_frame_swap(batch: int, config: HiTRSConfig, device: torch.device | str,
                      generator: Rng = None) -> torch.Tensor:
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


def sample_clip_swap(num_context: torch.Tensor, width: int, generator: Rng = None) -> torch.Tensor:
    """Clip order of the video-order negative, int64 ``[B, width]``.

    With exactly 2 context clips they are swapped; otherwise a pair i < j with
    j - i >= 2 is drawn uniformly (what the released code's redraw-until-far-enough
    loop gives) and swapped. Slots past ``num_context[b]`` keep the identity.
    """
    if host_checks_enabled(num_context) and int(num_context.min()) < 2:
        raise ValueError(f"sample_clip_swap: every sample needs >= 2 context clips, got {int(num_context.min())}")
    n = num_context.long()
    # Pairs are numbered row by row: row i holds j = i+2 .. n-1, i.e. n-i-2 pairs, and
    # S(i) = i(n-2) - i(i-1)/2 pairs come before it. Decode a uniform pair number r.
    pairs = ((n - 1) * (n - 2) // 2).clamp_min(1)
    r = _randint_below(pairs, generator)
    i_all = torch.arange(width, device=n.device)[None, :]
    before = i_all * (n[:, None] - 2) - i_all * (i_all - 1) // 2
    row_ok = (before <= r[:, None]) & (i_all <= n[:, None] - 3)
    i = row_ok.long().sum(1) - 1
    j = i + 2 + (r - before.gather(1, i.clamp_min(0)[:, None])[:, 0])
    two = n == 2
    i, j = torch.where(two, 0, i), torch.where(two, 1, j)
    return _swap_positions(torch.arange(width, device=n.device).expand(n.shape[0], -1), i, j)
