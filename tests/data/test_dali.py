"""DALI pipeline (hitrs_fast.data.dali) against the torch augmentation path, on the CPU.

Skipped, with the reason, only when ``nvidia.dali`` cannot be imported at all.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hitrs_fast.data import augment as A
from hitrs_fast.data.dali import dali_available

_OK, _WHY = dali_available()
pytestmark = pytest.mark.skipif(not _OK, reason=f"DALI unavailable: {_WHY}")


def _sequences(lengths: list[int], m: int = 2, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    seqs = [(rng.standard_normal((n, m, 25, 3)) + 2.0).astype(np.float32) for n in lengths]
    if len(seqs) > 1 and m > 1:
        seqs[1][:, 1] = 0  # an absent second body
    return seqs


def _torch_batch(seqs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([s.shape[0] for s in seqs])
    x = torch.zeros(len(seqs), seqs[0].shape[1], int(lengths.max()), 25, 3)
    for b, s in enumerate(seqs):
        x[b, :, : s.shape[0]] = torch.from_numpy(s).permute(1, 0, 2, 3)
    return x, lengths


@pytest.fixture(scope="module")
def pipelines():
    from hitrs_fast.data.dali import DaliSkeletonPipeline

    return {
        "aug": DaliSkeletonPipeline(batch_size=8, num_bodies=2, augment=True),
        "aug_resize": DaliSkeletonPipeline(batch_size=8, num_bodies=2, augment=True, crop_length=24),
        "plain": DaliSkeletonPipeline(batch_size=8, num_bodies=2, augment=False),
    }


def test_plain_batch_is_the_padded_input(pipelines):
    seqs = _sequences([9, 4, 13])
    x, lengths = _torch_batch(seqs)
    out, out_len = pipelines["plain"].run(seqs)
    assert out.dtype == torch.float32 and out.device.type == "cpu"
    assert torch.equal(out, x) and torch.equal(out_len, lengths)


@pytest.mark.parametrize("seed", range(4))
def test_same_params_same_output_as_torch(pipelines, seed):
    seqs = _sequences([30, 17, 5, 1, 22, 12, 40], seed=seed)
    x, lengths = _torch_batch(seqs)
    params = A.HiTRSAugment(p=1.0).sample_params(lengths, torch.Generator().manual_seed(seed))
    expect, expect_len = A.apply(x, lengths, params)
    got, got_len = pipelines["aug"].run(seqs, params)
    assert torch.equal(got_len, expect_len)
    assert got.shape == (7, 2, int(expect_len.max()), 25, 3)
    torch.testing.assert_close(got, expect[:, :, : int(expect_len.max())])  # float32 defaults: coord_transform
    assert (got[1, 1] == 0).all()


def test_each_op_alone_matches_torch(pipelines):
    """Scale, noise, shear, rotation, interpolation and crop one at a time, with hand-set parameters."""
    seqs = _sequences([12, 10, 8])
    x, lengths = _torch_batch(seqs)
    g = torch.Generator().manual_seed(0)
    cases = {
        "scale": dict(matrix=A.sample_scale(3, g)),
        "shear": dict(matrix=A.sample_shear(3, g)),
        "rotate": dict(matrix=A.sample_rotation(3, g)),
        "noise": dict(offsets=A.sample_joint_noise(3, 25, g)),
        "interpolate": dict(interp_r=torch.tensor([0.0, 0.5, 1.0])),
        "crop": dict(crop_start=torch.tensor([0, 1, 2]), crop_drop=torch.tensor([2, 1, 3])),
    }
    for name, fields in cases.items():
        params = A.AugmentParams.identity(3)
        for k, v in fields.items():
            setattr(params, k, v)
        expect, expect_len = A.apply(x, lengths, params)
        got, got_len = pipelines["aug"].run(seqs, params)
        assert torch.equal(got_len, expect_len), name
        torch.testing.assert_close(got, expect[:, :, : int(expect_len.max())], msg=name)


def test_crop_resize_matches_torch(pipelines):
    seqs = _sequences([50, 31, 24, 70])
    x, lengths = _torch_batch(seqs)
    g = torch.Generator().manual_seed(3)
    params = A.HiTRSAugment(p=1.0).sample_params(lengths, g)
    y, ly = A.apply(x, lengths, params)
    start, crop = A.sample_crop_resize(ly, g, (0.5, 1.0), min_frames=20)
    expect, _ = A.crop_resize(y, ly, start, crop, 24)
    got, got_len = pipelines["aug_resize"].run(seqs, params, (start, crop))
    assert got.shape == (4, 2, 24, 25, 3) and (got_len == 24).all()
    torch.testing.assert_close(got, expect)


def test_missing_or_mismatched_inputs_raise(pipelines):
    seqs = _sequences([5, 6])
    with pytest.raises(ValueError, match="augment=True"):
        pipelines["aug"].run(seqs)
    with pytest.raises(ValueError, match="params are for"):
        pipelines["aug"].run(seqs, A.AugmentParams.identity(3))
    with pytest.raises(ValueError, match="resize"):
        pipelines["aug_resize"].run(seqs, A.AugmentParams.identity(2))
    with pytest.raises(ValueError, match=r"expected \[T, 2, 25, 3\]"):
        pipelines["plain"].run([np.zeros((4, 1, 25, 3), np.float32)])
    with pytest.raises(ValueError, match="1..8"):
        pipelines["plain"].run(_sequences([3] * 9))
