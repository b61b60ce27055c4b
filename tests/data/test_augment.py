"""Batched torch augmentations (hitrs_fast.data.augment): invariants and hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hitrs_fast.data import augment as A


def _batch(lengths: list[int], m: int = 2, v: int = 25, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random zero-padded batch; sample 1's second body is all zeros."""
    g = torch.Generator().manual_seed(seed)
    lengths_t = torch.tensor(lengths)
    t = max(lengths)
    x = torch.randn(len(lengths), m, t, v, 3, generator=g) + 2.0
    x = x * (torch.arange(t)[None, :] < lengths_t[:, None])[:, None, :, None, None]
    if len(lengths) > 1 and m > 1:
        x[1, 1] = 0
    return x, lengths_t


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------- sampling


def test_scale_range():
    m = A.sample_scale(2000, _gen())
    s = m[:, 0, 0]
    assert s.min() >= 0.8 and s.max() <= 1.2 and s.max() - s.min() > 0.35
    torch.testing.assert_close(m, s[:, None, None] * torch.eye(3))


def test_shear_identity_diagonal():
    m = A.sample_shear(2000, _gen())
    assert torch.equal(m.diagonal(dim1=1, dim2=2), torch.ones(2000, 3))
    off = m[:, ~torch.eye(3, dtype=torch.bool)]
    assert off.abs().max() <= 0.5 and off.abs().max() > 0.45 and (off != 0).all()


def test_rotation_is_orthonormal_and_bounded():
    r = A.sample_rotation(500, _gen(), theta=0.3)
    torch.testing.assert_close(r @ r.transpose(1, 2), torch.eye(3).expand(500, 3, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(500), atol=1e-6, rtol=0)
    # R = Rz Ry Rx: R[2, 0] = -sin(ry), so |ry| <= theta.
    assert r[:, 2, 0].abs().max() <= math.sin(0.3) + 1e-6


def test_noise_hits_exactly_five_distinct_joints():
    off = A.sample_joint_noise(1000, 25, _gen())
    hit = (off != 0).any(dim=2)
    assert torch.equal(hit.sum(dim=1), torch.full((1000,), 5))
    assert off.abs().max() <= 0.2
    assert hit.float().mean(dim=0).min() > 0.1  # every joint gets picked sometimes (uniform: 0.2)


def test_crop_keeps_at_least_80_percent():
    lengths = torch.randint(1, 301, (5000,), generator=_gen())
    start, drop = A.sample_crop(lengths, _gen(1))
    assert (drop >= 0).all() and (start >= 0).all() and (start <= drop).all()
    assert (lengths - drop >= torch.floor(0.8 * lengths.double()).long()).all()
    assert drop.max() > 40 and (drop == 0).any()  # the full range is used


def test_crop_resize_window_rule():
    lengths = torch.tensor([300, 100, 50, 10])
    start, crop = A.sample_crop_resize(lengths, _gen(), (0.5, 1.0), min_frames=64)
    assert torch.equal(crop[2:], lengths[2:])  # shorter than 64 frames: the whole sample
    assert (crop[:2] >= 64).all() and (crop <= lengths).all() and (start + crop <= lengths).all()
    s, c = A.centre_crop_resize_params(torch.tensor([100, 40]), 0.95)
    assert s.tolist() == [2, 1] and c.tolist() == [96, 38]


# ------------------------------------------------------------------------------------------- hand-computed ops


def test_scale_shear_rotation_by_hand():
    x = torch.zeros(1, 1, 2, 2, 3)
    x[0, 0, :, 0] = torch.tensor([1.0, 2.0, 3.0])
    x[0, 0, :, 1] = torch.tensor([1.0, 0.0, 0.0])
    lengths = torch.tensor([2])
    y = A.spatial_transform(x, lengths, 1.1 * torch.eye(3)[None])
    torch.testing.assert_close(y, 1.1 * x)
    shear = torch.tensor([[[1.0, 0.1, 0.2], [0.3, 1.0, 0.4], [0.5, 0.6, 1.0]]])
    y = A.spatial_transform(x, lengths, shear)
    # [1, 2, 3] -> [1 + 0.2 + 0.6, 0.3 + 2 + 1.2, 0.5 + 1.2 + 3]
    torch.testing.assert_close(y[0, 0, 0, 0], torch.tensor([1.8, 3.5, 4.7]))
    rz90 = A.rotation_matrix(torch.tensor([[0.0, 0.0, math.pi / 2]]))
    y = A.spatial_transform(x, lengths, rz90)
    torch.testing.assert_close(y[0, 0, 0, 1], torch.tensor([0.0, 1.0, 0.0]), atol=1e-7, rtol=0)


def test_joint_noise_by_hand():
    x, lengths = _batch([5, 3], v=6)
    off = torch.zeros(2, 6, 3)
    off[:, 2] = torch.tensor([0.1, -0.2, 0.05])
    y = A.spatial_transform(x, lengths, None, off)
    d = y - x
    torch.testing.assert_close(d[0, :, :, 2], off[0, 2].expand(2, 5, 3))  # constant over real frames
    assert torch.equal(d[:, :, :, [0, 1, 3, 4, 5]], torch.zeros_like(d[:, :, :, [0, 1, 3, 4, 5]]))
    assert torch.equal(y[1, 0, 3:], torch.zeros_like(y[1, 0, 3:]))  # padding of sample 1 stays zero
    assert torch.equal(y[1, 1], torch.zeros_like(y[1, 1]))          # its all-zero body untouched


def test_time_interpolate_by_hand():
    x = torch.zeros(2, 1, 4, 1, 3)
    x[0, 0, :3, 0, 0] = torch.tensor([0.0, 1.0, 4.0])  # length 3
    x[1, 0, :, 0, 0] = torch.tensor([2.0, 2.0, 0.0, 6.0])
    y = A.time_interpolate(x, torch.tensor([3, 4]), torch.tensor([0.5, 0.25]))
    torch.testing.assert_close(y[0, 0, :, 0, 0], torch.tensor([0.5, 2.5, 4.0, 0.0]))  # last kept, pad 0
    torch.testing.assert_close(y[1, 0, :, 0, 0], torch.tensor([2.0, 1.5, 1.5, 6.0]))


def test_time_crop_by_hand():
    x = torch.arange(1, 7, dtype=torch.float32).reshape(1, 1, 6, 1, 1).expand(2, 1, 6, 1, 3).clone()
    x[1, :, 4:] = 0
    y, new_len = A.time_crop(x, torch.tensor([6, 4]), torch.tensor([1, 0]), torch.tensor([2, 1]))
    assert new_len.tolist() == [4, 3]
    assert y[0, 0, :, 0, 0].tolist() == [2, 3, 4, 5, 0, 0]
    assert y[1, 0, :, 0, 0].tolist() == [1, 2, 3, 0, 0, 0]
    with pytest.raises(ValueError, match="time_crop"):
        A.time_crop(x, torch.tensor([6, 4]), torch.tensor([0, 0]), torch.tensor([0, 4]))


def test_crop_resize_by_hand_and_against_interpolate():
    x = torch.zeros(1, 1, 3, 1, 3)
    x[0, 0, :2, 0, 0] = torch.tensor([0.0, 1.0])
    y, lengths = A.crop_resize(x, torch.tensor([2]), torch.tensor([0]), torch.tensor([2]), 4)
    torch.testing.assert_close(y[0, 0, :, 0, 0], torch.tensor([0.0, 0.25, 0.75, 1.0]))
    assert lengths.tolist() == [4]
    xb, lb = _batch([30, 17, 9, 64])
    start = torch.tensor([3, 0, 2, 0])
    crop = torch.tensor([20, 17, 5, 64])
    for out_len in (7, 24, 120):
        y, _ = A.crop_resize(xb, lb, start, crop, out_len)
        for b in range(4):
            seg = xb[b, :, start[b] : start[b] + crop[b]]                         # [M, L, V, C]
            # float64 oracle: PyTorch's float32 path rounds its source positions in float32.
            flat = seg.double().permute(0, 2, 3, 1).reshape(1, 1, -1, int(crop[b]))
            ref = F.interpolate(flat, size=(flat.shape[2], out_len), mode="bilinear", align_corners=False)
            ref = ref.reshape(2, 25, 3, out_len).permute(0, 3, 1, 2)
            torch.testing.assert_close(y[b], ref.float())  # default float32 tolerances


# ------------------------------------------------------------------------------------------- the policy


def test_policy_p0_is_identity_and_p1_always_augments():
    x, lengths = _batch([20, 13, 7, 1])
    y, ly = A.HiTRSAugment(p=0.0)(x, lengths, _gen())
    assert torch.equal(y, x) and torch.equal(ly, lengths)
    params = A.HiTRSAugment(p=1.0).sample_params(torch.randint(1, 100, (3000,), generator=_gen()), _gen(1))
    assert (params.spatial_op >= 1).all() and (params.spatial_op <= 3).all()
    assert (params.temporal_op >= 1).all() and (params.temporal_op <= 2).all()
    for codes, k in ((params.spatial_op - 1, 3), (params.temporal_op - 1, 2)):
        freq = torch.bincount(codes, minlength=k).double() / 3000
        assert ((freq - 1 / k).abs() < 0.04).all()
    half = A.HiTRSAugment(p=0.5).sample_params(torch.full((4000,), 50), _gen(2))
    assert abs((half.spatial_op > 0).double().mean().item() - 0.5) < 0.04
    assert torch.equal(half.spatial_op > 0, half.temporal_op > 0)  # both or neither


def test_policy_params_match_their_op_codes():
    params = A.HiTRSAugment(p=1.0).sample_params(torch.full((600,), 40), _gen(3))
    eye = torch.eye(3)
    scale = params.spatial_op == 1
    noise = params.spatial_op == 2
    shear = params.spatial_op == 3
    assert torch.allclose(params.matrix[noise], eye.expand(int(noise.sum()), 3, 3))
    assert (params.matrix[scale].diagonal(dim1=1, dim2=2).std(dim=1) < 1e-7).all()
    assert torch.equal(params.matrix[shear].diagonal(dim1=1, dim2=2), torch.ones(int(shear.sum()), 3))
    assert ((params.offsets[noise] != 0).any(dim=2).sum(dim=1) == 5).all()
    assert (params.offsets[~noise] == 0).all()
    interp, crop = params.temporal_op == 1, params.temporal_op == 2
    assert (params.crop_drop[interp] == 0).all() and (params.interp_r[crop] == 0).all()
    assert (params.crop_drop[crop] <= 8).all()


def test_policy_deterministic_per_generator():
    x, lengths = _batch([20, 13, 7, 11])
    aug = A.HiTRSAugment(p=1.0)
    y1, l1 = aug(x, lengths, _gen(7))
    y2, l2 = aug(x, lengths, _gen(7))
    y3, _ = aug(x, lengths, _gen(8))
    assert torch.equal(y1, y2) and torch.equal(l1, l2) and not torch.equal(y1, y3)


@pytest.mark.parametrize("seed", range(6))
def test_padding_and_absent_bodies_stay_zero(seed):
    x, lengths = _batch([25, 18, 6, 1, 12], seed=seed)
    aug = A.HiTRSAugment(p=1.0)
    params = aug.sample_params(lengths, _gen(seed))
    y, new_len = A.apply(x, lengths, params)
    assert y.shape == x.shape
    assert (new_len <= lengths).all() and (new_len >= 1).all()
    pad = torch.arange(x.shape[2])[None, :] >= new_len[:, None]  # [B, T]
    assert (y.permute(0, 2, 1, 3, 4)[pad] == 0).all()
    assert (y[1, 1] == 0).all()
    real = ~pad
    assert (y.permute(0, 2, 1, 3, 4)[real][:, 0] != 0).any(dim=(1, 2)).all()  # real frames stay non-zero
    # A crop-resize on top keeps every frame real.
    z, lz = A.crop_resize(y, new_len, torch.zeros(5, dtype=torch.long), new_len, 16)
    assert z.shape[2] == 16 and (lz == 16).all() and (z[1, 1] == 0).all()


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"\[B, M, T, V, 3\]"):
        A.apply(torch.zeros(2, 10, 25, 3), torch.tensor([1, 2]), A.AugmentParams.identity(2))
    with pytest.raises(ValueError, match="lengths"):
        A.apply(torch.zeros(2, 1, 10, 25, 3), torch.tensor([1, 11]), A.AugmentParams.identity(2))
    with pytest.raises(ValueError, match="params are for"):
        A.apply(torch.zeros(2, 1, 10, 25, 3), torch.tensor([1, 2]), A.AugmentParams.identity(3))
    with pytest.raises(ValueError, match="p must"):
        A.HiTRSAugment(p=1.5)
