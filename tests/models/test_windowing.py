import math

import pytest
import torch

from hitrs_fast.config import HiTRSConfig
from hitrs_fast.windowing import clip_frame_indices, num_clips, stride1_clip_indices

CFG = HiTRSConfig()


@pytest.mark.parametrize("t", [19, 20, 50, 100, 300])
def test_golden_clip_counts_and_indices(t):
    w = int(num_clips(torch.tensor([t]), CFG))
    assert w == math.ceil(t / 7)
    idx = clip_frame_indices(w, CFG) - CFG.clip_pad  # raw frame indices
    assert idx[0].tolist() == [-6, -4, -2, 0, 2, 4, 6]
    assert idx[-1].tolist() == [7 * (w - 1) + d for d in range(-6, 7, 2)]


@pytest.mark.parametrize("t", list(range(1, 301)))
def test_each_frame_in_at_most_one_clip(t):
    w = int(num_clips(torch.tensor([t]), CFG))
    raw = (clip_frame_indices(w, CFG) - CFG.clip_pad).flatten()
    real = raw[(raw >= 0) & (raw < t)]
    assert real.unique().numel() == real.numel(), "a frame fell in two clips"
    uncovered = sorted(set(range(t)) - set(real.tolist()))
    assert len(uncovered) <= 3 and all(f >= t - 6 for f in uncovered)
    # Every clip reads only the sample's own T + 12 padded frames.
    assert int(clip_frame_indices(w, CFG).max()) <= t + 2 * CFG.clip_pad - 1


@pytest.mark.parametrize("t,expected", [(19, [15, 17]), (300, [295, 297, 299]), (100, [99])])
def test_uncovered_tail_frames(t, expected):
    w = int(num_clips(torch.tensor([t]), CFG))
    raw = set((clip_frame_indices(w, CFG) - CFG.clip_pad).flatten().tolist())
    assert sorted(set(range(t)) - raw) == expected


def test_stride1_clips_centred():
    idx = stride1_clip_indices(5, CFG) - CFG.clip_pad
    assert idx[:, 3].tolist() == [0, 1, 2, 3, 4]
