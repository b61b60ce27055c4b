"""Batched skeleton augmentations in torch (the released Hi-TRS family and peers' ops; ``docs/model.md``).

Every op works on a zero-padded batch ``x [B, M, T, V, C=3]`` with per-sample ``lengths [B]`` (frames
``t >= lengths[b]`` are padding and stay zero), on whatever device ``x`` lives on.

Parameter sampling is separate from application: ``sample_*`` functions and
:meth:`HiTRSAugment.sample_params` draw from a ``torch.Generator`` (on the CPU, so a seed gives the same
parameters on every device) and return tensors; :func:`apply` consumes an :class:`AugmentParams`. The DALI
pipeline (:mod:`hitrs_fast.data.dali`) consumes the very same :class:`AugmentParams`, which is how the two
backends are checked against each other.

One :class:`AugmentParams` expresses a full Hi-TRS draw, applied in this order:

1. spatial: ``x[b, m, t] <- A[b] @ x[b, m, t] + offsets[b]`` for ``t < lengths[b]``, bodies that are all
   zero skipped (``A`` = identity, ``s I`` (scale), a shear or a rotation; ``offsets`` = the 5-joint noise);
2. time interpolation with ratio ``r`` (``r = 0`` is the identity);
3. time crop dropping ``crop_start`` frames at the start and ``crop_drop - crop_start`` at the end;
4. optional crop-resize to a fixed length (:func:`crop_resize`, MAMP ``valid_crop_resize`` style), which
   the loader adds when asked for fixed-length batches.

Spatial ops skip a body that is all zeros (the official code tests "coordinates sum to 0"; testing every
entry is the robust form of the same rule); temporal ops move all bodies of a sample together.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

__all__ = [
    "SPATIAL_OPS",
    "TEMPORAL_OPS",
    "AugmentParams",
    "HiTRSAugment",
    "apply",
    "body_presence",
    "centre_crop_resize_params",
    "check_batch",
    "crop_resize",
    "rotation_matrix",
    "sample_crop",
    "sample_crop_resize",
    "sample_interpolation",
    "sample_joint_noise",
    "sample_rotation",
    "sample_scale",
    "sample_shear",
    "spatial_transform",
    "time_crop",
    "time_interpolate",
]

SPATIAL_OPS = ("none", "scale", "noise", "shear", "rotate")
TEMPORAL_OPS = ("none", "interpolate", "crop")


# --------------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------------

def check_batch(x: torch.Tensor, lengths: torch.Tensor) -> None:
    """Raise ValueError unless ``x`` is ``[B, M, T, V, 3]`` floating and ``lengths`` is ``[B]`` in ``[0, T]``."""
    if x.ndim != 5 or x.shape[-1] != 3:
        raise ValueError(f"x must be [B, M, T, V, 3], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"x must be floating point, got {x.dtype}")
    if lengths.shape != (x.shape[0],):
        raise ValueError(f"lengths must be [B] = [{x.shape[0]}], got shape {tuple(lengths.shape)}")
    if lengths.dtype.is_floating_point:
        raise ValueError(f"lengths must be an integer tensor, got {lengths.dtype}")
    if lengths.numel() and (int(lengths.min()) < 0 or int(lengths.max()) > x.shape[2]):
        raise ValueError(f"lengths must lie in [0, T={x.shape[2]}], got min {int(lengths.min())} "
                         f"max {int(lengths.max())}")


def _frame_mask(lengths: torch.Tensor, t: int, device: torch.device) -> torch.Tensor:
    """``[B, T]`` bool, True on real frames."""
    return torch.arange(t, device=device)[None, :] < lengths.to(device, non_blocking=True)[:, None]


def body_presence(x: torch.Tensor) -> torch.Tensor:
    """``[B, M]`` bool: the body has at least one non-zero coordinate."""
    return (x != 0).flatten(2).any(dim=2)


# --------------------------------------------------------------------------------------------------
# Parameter sampling (CPU generator -> CPU tensors)
# --------------------------------------------------------------------------------------------------

def _rand(n: int, generator: torch.Generator | None, *shape: int) -> torch.Tensor:
    return torch.rand((n, *shape), generator=generator, dtype=torch.float64)


def sample_scale(batch: int, generator: torch.Generator | None = None, low: float = 0.8,
                 high: float = 1.2) -> torch.Tensor:
    """Scale matrices ``[B, 3, 3]`` = ``s I`` with ``s ~ U(low, high)``."""
    s = low + (high - low) * _rand(batch, generator)
    return (s[:, None, None] * torch.eye(3, dtype=torch.float64)).float()


def sample_shear(batch: int, generator: torch.Generator | None = None, limit: float = 0.5) -> torch.Tensor:
    """Shear matrices ``[B, 3, 3]``: identity diagonal, six off-diagonals ~ U(-limit, limit)."""
    m = torch.eye(3, dtype=torch.float64).repeat(batch, 1, 1)
    off = ~torch.eye(3, dtype=torch.bool)
    m[:, off] = (2.0 * _rand(batch, generator, 6) - 1.0) * limit
    return m.float()


def rotation_matrix(angles: torch.Tensor) -> torch.Tensor:
    """``[..., 3]`` Euler angles (x, y, z; radians) -> ``[..., 3, 3]`` rotation ``Rz @ Ry @ Rx``."""
    c, s = torch.cos(angles), torch.sin(angles)
    one, zero = torch.ones_like(angles[..., 0]), torch.zeros_like(angles[..., 0])

    def mat(rows: list[list[torch.Tensor]]) -> torch.Tensor:
        return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)

    rx = mat([[one, zero, zero], [zero, c[..., 0], -s[..., 0]], [zero, s[..., 0], c[..., 0]]])
    ry = mat([[c[..., 1], zero, s[..., 1]], [zero, one, zero], [-s[..., 1], zero, c[..., 1]]])
    rz = mat([[c[..., 2], -s[..., 2], zero], [s[..., 2], c[..., 2], zero], [zero, zero, one]])
    return rz @ ry @ rx


def sample_rotation(batch: int, generator: torch.Generator | None = None, theta: float = 0.3) -> torch.Tensor:
    """Rotation matrices ``[B, 3, 3]``: Euler angles ~ U(-theta, theta) per axis, ``R = Rz Ry Rx`` (MAMP)."""
    angles = (2.0 * _rand(batch, generator, 3) - 1.0) * theta
    return rotation_matrix(angles).float()


def sample_joint_noise(batch: int, num_joints_total: int = 25, generator: torch.Generator | None = None,
                       num_joints: int = 5, limit: float = 0.2) -> torch.Tensor:
    """Joint offsets ``[B, V, 3]``: ``num_joints`` distinct joints get U(-limit, limit)^3, the rest 0."""
    if not 0 <= num_joints <= num_joints_total:
        raise ValueError(f"num_joints must lie in [0, {num_joints_total}], got {num_joints}")
    # argsort of iid uniforms = a uniformly random permutation; its first k entries a random k-subset.
    chosen = torch.rand((batch, num_joints_total), generator=generator).argsort(dim=1)[:, :num_joints]
    values = ((2.0 * _rand(batch, generator, num_joints, 3) - 1.0) * limit).float()
    offsets = torch.zeros(batch, num_joints_total, 3)
    offsets.scatter_(1, chosen[:, :, None].expand(-1, -1, 3), values)
    return offsets


def sample_interpolation(batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Interpolation ratios ``r ~ U(0, 1)`` ``[B]`` float32."""
    return _rand(batch, generator).float()


def sample_crop(lengths: torch.Tensor, generator: torch.Generator | None = None,
                max_ratio: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Hi-TRS time crop: ``rho ~ U(0, max_ratio)``, ``c = round(T rho)``, ``a ~ U{0..c}``.

    Returns ``(start [B], drop [B])`` int64: keep frames ``[a, T - (c - a))``, new length ``T - c``.
    """
    lengths = lengths.to("cpu", torch.float64)
    rho = max_ratio * _rand(lengths.shape[0], generator)
    drop = torch.round(lengths * rho)  # round half to even, as Python's round()
    start = torch.floor(_rand(lengths.shape[0], generator) * (drop + 1.0)).clamp(max=drop)
    return start.long(), drop.long()


def sample_crop_resize(lengths: torch.Tensor, generator: torch.Generator | None = None,
                       ratio: tuple[float, float] = (0.5, 1.0),
                       min_frames: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """MAMP/CTR-GCN ``valid_crop_resize`` training crop: ``p ~ U(ratio)``, length
    ``clamp(floor(p T), min_frames, T)``, start ``~ U{0..T - length}``. Returns ``(start, crop_len)`` int64 ``[B]``."""
    lengths = lengths.to("cpu", torch.int64)
    lo, hi = ratio
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"crop ratio must satisfy 0 < low <= high <= 1, got {ratio}")
    p = lo + (hi - lo) * _rand(lengths.shape[0], generator)
    crop = torch.floor(lengths.double() * p).long().clamp(min=min_frames)
    crop = torch.minimum(crop, lengths).clamp(min=1)
    start = torch.floor(_rand(lengths.shape[0], generator) * (lengths - crop + 1).double()).long()
    return torch.minimum(start, lengths - crop), crop


def centre_crop_resize_params(lengths: torch.Tensor, ratio: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """MAMP test-time crop: keep the centre ``ratio`` (bias ``int((1 - ratio) T / 2)`` each side)."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"centre crop ratio must lie in (0, 1], got {ratio}")
    lengths = lengths.to("cpu", torch.int64)
    bias = torch.floor((1.0 - ratio) * lengths.double() / 2.0).long()
    crop = (lengths - 2 * bias).clamp(min=1)
    return torch.minimum(bias, lengths - crop), crop


# --------------------------------------------------------------------------------------------------
# Application
# --------------------------------------------------------------------------------------------------

def spatial_transform(x: torch.Tensor, lengths: torch.Tensor, matrix: torch.Tensor | None = None,
                      offsets: torch.Tensor | None = None) -> torch.Tensor:
    """``x'[b, m, t, v] = matrix[b] @ x[b, m, t, v] + offsets[b, v]`` on real frames of non-zero bodies.

    Args:
        x: ``[B, M, T, V, 3]``; lengths: ``[B]``.
        matrix: ``[B, 3, 3]`` (identity when None).
        offsets: ``[B, V, 3]`` per-joint offsets constant over time (none when None).
    """
    check_batch(x, lengths)
    b, _, t, v, _ = x.shape
    out = x
    if matrix is not None:
        if matrix.shape != (b, 3, 3):
            raise ValueError(f"matrix must be [B, 3, 3] = [{b}, 3, 3], got {tuple(matrix.shape)}")
        # A @ 0 = 0, so padding and absent bodies stay zero without a mask. One bmm over [B, M*T*V, 3]
        # (an einsum here is ~10x slower on CPU: it permutes the 5-d operand first).
        matrix = matrix.to(x.device, x.dtype, non_blocking=True)
        out = torch.bmm(out.reshape(b, -1, 3), matrix.transpose(1, 2)).view(x.shape)
    if offsets is not None:
        if offsets.shape != (b, v, 3):
            raise ValueError(f"offsets must be [B, V, 3] = [{b}, {v}, 3], got {tuple(offsets.shape)}")
        keep = body_presence(x)[:, :, None] & _frame_mask(lengths, t, x.device)[:, None, :]  # [B, M, T]
        out = out + keep[..., None, None].to(x.dtype) * offsets.to(x.device, x.dtype, non_blocking=True)[:, None, None]
    return out


def time_interpolate(x: torch.Tensor, lengths: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``x'_t = x_t + r (x_{t+1} - x_t)`` for ``t < T - 1``, last real frame kept; ``r [B]`` in [0, 1]."""
    check_batch(x, lengths)
    b, _, t, _, _ = x.shape
    if r.shape != (b,):
        raise ValueError(f"r must be [B] = [{b}], got {tuple(r.shape)}")
    # Shift by one frame; the difference is zeroed from each sample's last real frame on, so that frame is
    # kept exactly and padding stays zero (the DALI path computes the same x + r * diff, diff = 0 there).
    nxt = torch.cat([x[:, :, 1:], x[:, :, -1:]], dim=2)
    last = lengths.to(x.device, non_blocking=True)[:, None] - 1
    moving = torch.arange(t, device=x.device)[None, :] < last  # [B, T]
    diff = (nxt - x) * moving[:, None, :, None, None].to(x.dtype)
    return x + r.to(x.device, x.dtype, non_blocking=True)[:, None, None, None, None] * diff


def _gather_frames(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``out[b, m, j] = x[b, m, idx[b, j]]`` for ``idx [B, J]`` (int64, in range)."""
    b, m, _, v, c = x.shape
    j = idx.shape[1]
    return torch.gather(x, 2, idx[:, None, :, None, None].expand(b, m, j, v, c))


def time_crop(x: torch.Tensor, lengths: torch.Tensor, start: torch.Tensor,
              drop: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop ``start`` frames at the beginning and ``drop - start`` at the end of each sample.

    Returns ``(x' [B, M, T, V, 3], lengths - drop)`` (lengths on their own device); frames beyond the new
    length are zero.
    """
    check_batch(x, lengths)
    b, _, t, _, _ = x.shape
    if start.shape != (b,) or drop.shape != (b,):
        raise ValueError(f"start and drop must be [B] = [{b}], got {tuple(start.shape)}, {tuple(drop.shape)}")
    # Checked where the parameters live (the CPU for the loaders' draws: no device sync).
    where = start.device
    if bool(((start < 0) | (start > drop) | (drop.to(where) >= lengths.to(where).clamp(min=1))).any()):
        raise ValueError("time_crop needs 0 <= start <= drop < length for every sample")
    new_len = lengths.to(torch.int64) - drop.to(lengths.device, torch.int64)  # on the lengths' device
    start = start.to(x.device, torch.int64, non_blocking=True)
    idx = (torch.arange(t, device=x.device)[None, :] + start[:, None]).clamp(max=t - 1)
    out = _gather_frames(x, idx)
    keep = _frame_mask(new_len, t, x.device)
    return out * keep[:, None, :, None, None].to(x.dtype), new_len


def crop_resize(x: torch.Tensor, lengths: torch.Tensor, start: torch.Tensor, crop_len: torch.Tensor,
                out_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop frames ``[start, start + crop_len)`` and resample them linearly to ``out_len`` frames.

    Linear interpolation with half-pixel centres, as ``F.interpolate(mode="bilinear",
    align_corners=False)`` on the time axis (MAMP / CTR-GCN ``valid_crop_resize``): source position
    ``max((j + 0.5) crop_len / out_len - 0.5, 0)``. Returns ``(x' [B, M, out_len, V, 3], lengths' = out_len)``.
    """
    check_batch(x, lengths)
    b = x.shape[0]
    if out_len < 1:
        raise ValueError(f"out_len must be >= 1, got {out_len}")
    i0, i1, w = _resize_indices(start, crop_len, lengths, out_len)
    x0 = _gather_frames(x, i0.to(x.device, non_blocking=True))
    x1 = _gather_frames(x, i1.to(x.device, non_blocking=True))
    out = x0 + w.to(x.device, x.dtype, non_blocking=True)[:, None, :, None, None] * (x1 - x0)
    return out, torch.full((b,), out_len, dtype=torch.int64, device=lengths.device)


def _resize_indices(start: torch.Tensor, crop_len: torch.Tensor, lengths: torch.Tensor,
                    out_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Frame indices ``i0, i1 [B, out_len]`` (int64) and weights ``w [B, out_len]`` (float32) of a crop-resize.

    Computed on the CPU in float64, then rounded once to float32: the DALI path uses these same arrays.
    """
    start = start.to("cpu", torch.int64)
    crop_len = crop_len.to("cpu", torch.int64)
    lengths = lengths.to("cpu", torch.int64)
    b = start.shape[0]
    if start.shape != (b,) or crop_len.shape != (b,) or lengths.shape != (b,):
        raise ValueError("start, crop_len and lengths must all be [B]")
    if bool(((crop_len < 1) | (start < 0) | (start + crop_len > lengths)).any()):
        raise ValueError("crop_resize needs crop_len >= 1 and 0 <= start <= length - crop_len for every sample")
    scale = crop_len.double()[:, None] / out_len
    src = ((torch.arange(out_len, dtype=torch.float64)[None, :] + 0.5) * scale - 0.5).clamp(min=0.0)
    lo = torch.floor(src).long()
    lo = torch.minimum(lo, crop_len[:, None] - 1)
    hi = torch.minimum(lo + 1, crop_len[:, None] - 1)
    w = (src - lo.double()).clamp(0.0, 1.0)
    w = torch.where(hi == lo, torch.zeros_like(w), w)
    return start[:, None] + lo, start[:, None] + hi, w.float()


@dataclass
class AugmentParams:
    """One draw of the Hi-TRS augmentation for a batch of ``B`` samples (identity entries where unused).

    Attributes:
        matrix: ``[B, 3, 3]`` float32 spatial matrix (identity, ``s I``, shear or rotation).
        offsets: ``[B, V, 3]`` float32 joint offsets (zero except the noised joints).
        interp_r: ``[B]`` float32 time-interpolation ratio (0 = identity).
        crop_start: ``[B]`` int64 frames dropped at the start.
        crop_drop: ``[B]`` int64 frames dropped in total (0 = identity).
        spatial_op, temporal_op: ``[B]`` int64 codes into :data:`SPATIAL_OPS` / :data:`TEMPORAL_OPS`
            (bookkeeping for tests and logs; application reads only the tensors above).
    """

    matrix: torch.Tensor
    offsets: torch.Tensor
    interp_r: torch.Tensor
    crop_start: torch.Tensor
    crop_drop: torch.Tensor
    spatial_op: torch.Tensor
    temporal_op: torch.Tensor

    @classmethod
    def identity(cls, batch: int, num_joints: int = 25) -> AugmentParams:
        z = torch.zeros(batch, dtype=torch.int64)
        return cls(torch.eye(3).repeat(batch, 1, 1), torch.zeros(batch, num_joints, 3), torch.zeros(batch),
                   z.clone(), z.clone(), z.clone(), z.clone())

    @property
    def batch_size(self) -> int:
        return int(self.matrix.shape[0])

    def select(self, index: torch.Tensor | slice) -> AugmentParams:
        """The parameters of a subset of samples (``index`` into the batch dimension)."""
        return replace(self, **{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def to(self, device: torch.device | str) -> AugmentParams:
        return replace(self, **{f.name: getattr(self, f.name).to(device, non_blocking=True) for f in fields(self)})


def apply(x: torch.Tensor, lengths: torch.Tensor, params: AugmentParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply one :class:`AugmentParams` draw: spatial, then interpolation, then crop.

    Args:
        x: ``[B, M, T, V, 3]`` zero-padded; lengths: ``[B]`` int.
    Returns:
        ``(x' [B, M, T, V, 3], lengths' [B])``; T is unchanged (crops only shorten ``lengths``).
    """
    check_batch(x, lengths)
    if params.batch_size != x.shape[0]:
        raise ValueError(f"params are for {params.batch_size} samples, x has {x.shape[0]}")
    if params.offsets.shape[1] != x.shape[3]:
        raise ValueError(f"params.offsets has {params.offsets.shape[1]} joints, x has V = {x.shape[3]}")
    x = spatial_transform(x, lengths, params.matrix, params.offsets)
    x = time_interpolate(x, lengths, params.interp_r)
    return time_crop(x, lengths, params.crop_start, params.crop_drop)


class HiTRSAugment:
    """The Hi-TRS policy: with probability ``p`` per sample, one spatial op uniform from
    {scale, noise, shear}, then one temporal op uniform from {interpolate, crop}; otherwise the identity.

    Usage::

        aug = HiTRSAugment(p=0.5)
        params = aug.sample_params(lengths, generator)      # CPU tensors, reproducible per seed
        x, lengths = aug.apply(x, lengths, params)           # on x's device
    """

    def __init__(self, p: float = 0.5, *, scale: tuple[float, float] = (0.8, 1.2), noise_joints: int = 5,
                 noise_limit: float = 0.2, shear_limit: float = 0.5, crop_max_ratio: float = 0.2,
                 num_joints: int = 25) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must lie in [0, 1], got {p}")
        if not 0.0 <= crop_max_ratio < 1.0:
            raise ValueError(f"crop_max_ratio must lie in [0, 1), got {crop_max_ratio}")
        self.p = p
        self.scale = scale
        self.noise_joints = noise_joints
        self.noise_limit = noise_limit
        self.shear_limit = shear_limit
        self.crop_max_ratio = crop_max_ratio
        self.num_joints = num_joints

    def __repr__(self) -> str:
        return (f"HiTRSAugment(p={self.p}, scale={self.scale}, noise_joints={self.noise_joints}, "
                f"noise_limit={self.noise_limit}, shear_limit={self.shear_limit}, "
                f"crop_max_ratio={self.crop_max_ratio})")

    def sample_params(self, lengths: torch.Tensor, generator: torch.Generator | None = None) -> AugmentParams:
        """Draw parameters for a batch with ``lengths [B]``; every candidate is drawn for every sample (a fixed
        number of draws per batch), then the chosen op's values are kept."""
        lengths = lengths.to("cpu", torch.int64)
        b = lengths.shape[0]
        gen = generator
        applied = torch.rand(b, generator=gen, dtype=torch.float64) < self.p
        spatial_choice = torch.randint(0, 3, (b,), generator=gen)  # 0 scale, 1 noise, 2 shear
        temporal_choice = torch.randint(0, 2, (b,), generator=gen)  # 0 interpolate, 1 crop
        scale_m = sample_scale(b, gen, *self.scale)
        noise = sample_joint_noise(b, self.num_joints, gen, self.noise_joints, self.noise_limit)
        shear_m = sample_shear(b, gen, self.shear_limit)
        r = sample_interpolation(b, gen)
        c_start, c_drop = sample_crop(lengths, gen, self.crop_max_ratio)

        params = AugmentParams.identity(b, self.num_joints)
        is_scale = applied & (spatial_choice == 0)
        is_noise = applied & (spatial_choice == 1)
        is_shear = applied & (spatial_choice == 2)
        params.matrix[is_scale] = scale_m[is_scale]
        params.matrix[is_shear] = shear_m[is_shear]
        params.offsets[is_noise] = noise[is_noise]
        is_interp = applied & (temporal_choice == 0)
        # A crop may not empty a sample: with max_ratio < 1 this only bites at T = 1.
        is_crop = applied & (temporal_choice == 1) & (c_drop < lengths)
        params.interp_r[is_interp] = r[is_interp]
        params.crop_start[is_crop] = c_start[is_crop]
        params.crop_drop[is_crop] = c_drop[is_crop]
        params.spatial_op = torch.where(applied, spatial_choice + 1, 0)
        params.temporal_op = torch.where(applied, temporal_choice + 1, 0)
        return params

    def apply(self, x: torch.Tensor, lengths: torch.Tensor,
              params: AugmentParams) -> tuple[torch.Tensor, torch.Tensor]:
        return apply(x, lengths, params)

    def __call__(self, x: torch.Tensor, lengths: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return apply(x, lengths, self.sample_params(lengths, generator))

