"""Input centring (``HiTRSConfig.centering``): the rule itself and the translation invariance it gives the
encoder, the pre-training losses and the frame detector."""

from __future__ import annotations

import pytest
import torch

from hitrs_fast import HiTRS, HiTRSConfig, HiTRSForPretraining
from hitrs_fast.normalize import apply_centering, center_on_first_frame
from hitrs_fast.sampling import SampleRandom
from hitrs_fast.tasks import FrameDetector

SPINE_MID = 1
CENTRED = HiTRSConfig.preset("tiny", dropout=0.0, centering="first_frame", use_video_tasks=True)


def _bodies(b: int = 3, m: int = 2, t: int = 30, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Bodies a few metres from the camera, zero beyond each length; sample 1's body 0 appears at frame 4
    and its body 1 is absent in frames 10..14."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, m, t, 25, 3, generator=g) * 0.3 + torch.tensor([0.4, -0.2, 3.0])
    lengths = torch.tensor([t, t - 7, 21][:b])
    x = x * (torch.arange(t)[None, None, :, None, None] < lengths[:, None, None, None, None])
    x[1, 0, :4] = 0
    if m > 1:
        x[1, 1, 10:15] = 0
    return x, lengths


def _translated(x: torch.Tensor, offset: tuple[float, float, float]) -> torch.Tensor:
    """``x`` moved by ``offset`` on present (non-zero) frames only, as if the person stood elsewhere."""
    present = (x != 0).flatten(3).any(dim=3)[..., None, None]
    return torch.where(present, x + torch.tensor(offset), x)


def test_first_frame_rule():
    x, lengths = _bodies()
    y = center_on_first_frame(x, lengths, SPINE_MID)
    assert y.shape == x.shape and y.dtype == x.dtype
    # The origin is body 0's SpineMid at its first present frame: frame 0, except sample 1 (frame 4).
    for b, first in ((0, 0), (1, 4), (2, 0)):
        assert torch.equal(y[b, 0, first, SPINE_MID], torch.zeros(3))
        both = (x[b] != 0).flatten(2).any(dim=2).all(dim=0)  # [T] frames where both bodies are present
        torch.testing.assert_close(y[b, 1, both] - y[b, 0, both], x[b, 1, both] - x[b, 0, both])
    # Absent frames and padding stay exactly zero.
    assert torch.equal(y[1, 0, :4], torch.zeros(4, 25, 3))
    assert torch.equal(y[1, 1, 10:15], torch.zeros(5, 25, 3))
    assert torch.equal(y[1, :, lengths[1]:], torch.zeros(2, 30 - int(lengths[1]), 25, 3))


def test_body0_never_present_is_left_alone():
    x, lengths = _bodies()
    x[2, 0] = 0
    y = center_on_first_frame(x, lengths, SPINE_MID)
    assert torch.equal(y[2], x[2])


def test_none_is_identity_and_unknown_is_an_error():
    x, lengths = _bodies()
    assert apply_centering(x, lengths, "none", SPINE_MID) is x
    with pytest.raises(ValueError, match="centering must be one of"):
        apply_centering(x, lengths, "mean", SPINE_MID)
    with pytest.raises(ValueError, match="centering"):
        HiTRSConfig(centering="mean")
    with pytest.raises(ValueError, match="center_joint"):
        HiTRSConfig(center_joint=25)


def test_encoder_is_translation_invariant_with_centring():
    x, lengths = _bodies()
    moved = _translated(x, (1.5, -0.4, 0.8))
    torch.manual_seed(0)
    centred = HiTRS(CENTRED, backend="torch").eval()
    torch.testing.assert_close(centred(moved, lengths).pooled, centred(x, lengths).pooled, atol=1e-5, rtol=1e-5)
    raw = HiTRS(CENTRED.replace(centering="none"), backend="torch").eval()
    raw.load_state_dict(centred.state_dict())
    assert not torch.allclose(raw(moved, lengths).pooled, raw(x, lengths).pooled, atol=1e-3)


def test_pretraining_losses_are_translation_invariant_with_centring():
    x, lengths = _bodies(m=1, t=40)
    lengths = torch.tensor([40, 33, 21])
    x = x * (torch.arange(40)[None, None, :, None, None] < lengths[:, None, None, None, None])
    torch.manual_seed(0)
    model = HiTRSForPretraining(CENTRED, backend="torch").eval()
    idx = torch.arange(3)
    a = model(x, lengths, generator=SampleRandom(0, idx))
    b = model(_translated(x, (-0.7, 0.2, 1.1)), lengths, generator=SampleRandom(0, idx))
    for key in ("pose_loss", "clip_order_loss", "video_order_loss", "nce_loss"):
        torch.testing.assert_close(b[key], a[key], atol=1e-4, rtol=1e-4)


def test_detector_uses_the_encoder_centring():
    """The detector reads windows of videos that ``centre_video`` centred as a whole by the encoder's rule
    (not each window on its own): a translated video gives the same outputs; uncentred, it would not."""
    torch.manual_seed(0)
    det = FrameDetector(HiTRS(CENTRED, backend="torch").eval(), num_classes=3)
    p = CENTRED.clip_pad
    x_ctx, _ = _bodies(b=2, m=2, t=10 + 2 * p)
    x_ctx[:, :, :p] = 0  # context padding before the sequence start
    frames, owner = torch.tensor([0, 5, 9]), torch.tensor([0, 1, 1])
    moved = _translated(x_ctx, (0.9, 0.1, -0.5))

    def centred(x):
        return torch.stack([det.centre_video(video) for video in x])

    with torch.no_grad():
        torch.testing.assert_close(det(centred(moved), frames, owner), det(centred(x_ctx), frames, owner),
                                   atol=1e-5, rtol=1e-5)
        assert (det(moved, frames, owner) - det(x_ctx, frames, owner)).abs().max() > 1e-3
