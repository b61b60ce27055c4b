import pytest
import torch

from hitrs_fast import HiTRS, HiTRSConfig
from hitrs_fast.masks import FrameMask
from hitrs_fast.models import count_parameters, expected_encoder_parameters

TINY = HiTRSConfig.preset("tiny", dropout=0.0)


@pytest.mark.parametrize("preset,expected", [("official", 6_917_888), ("paper", 4_717_440)])
def test_parameter_counts(preset, expected):
    cfg = HiTRSConfig.preset(preset)
    model = HiTRS(cfg)
    assert count_parameters(model) == expected == expected_encoder_parameters(cfg)


def test_official_level_breakdown():
    model = HiTRS(HiTRSConfig.preset("official"))
    assert count_parameters(model.frame_encoder.transformer.layers[0]) == 295_680
    assert count_parameters(model.clip_encoder.transformer.layers[0]) == 591_232
    assert count_parameters(model.video_encoder.transformer.layers[0]) == 1_313_536


def test_presets():
    paper = HiTRSConfig.preset("paper")
    assert (paper.frame_layers, paper.pose_loss, paper.mask_replacement, paper.allow_self) == (2, "l1",
                                                                                               "uniform_random", False)
    assert HiTRSConfig.preset("official", clip_layers=1).clip_layers == 1
    with pytest.raises(ValueError, match="unknown preset"):
        HiTRSConfig.preset("huge")


def test_shapes_every_level():
    model = HiTRS(TINY).eval()
    x = torch.randn(3, 2, 40, 25, 3)
    lengths = torch.tensor([40, 8, 1])
    out = model(x, lengths)
    assert out.frame_features.shape == (3, 2, 40, 25, TINY.frame_dim)
    assert out.clip_embeddings.shape == (3, 2, 6, TINY.clip_dim)
    assert out.video_embeddings.shape == (3, 2, TINY.video_dim)
    assert TINY.feature_dim == TINY.video_dim + TINY.clip_dim
    assert out.sequence_features.shape == (3, 2, TINY.feature_dim)
    assert out.pooled.shape == (3, TINY.feature_dim)
    assert out.num_clips.tolist() == [6, 2, 1]
    # Nothing past a sample's own clips or frames.
    assert out.clip_embeddings[1, :, 2:].abs().sum() == 0
    assert out.frame_features[2, :, 1:].abs().sum() == 0
    # The tiny readout: the V-TRS CLS, then the mean over each body's own clips.
    clip_mean = out.clip_embeddings.sum(2) / out.num_clips[:, None, None]
    assert torch.allclose(out.sequence_features, torch.cat([out.video_embeddings, clip_mean], -1), atol=1e-6)
    assert torch.allclose(out.pooled, out.sequence_features.sum(1) / 2)


def test_released_readout_is_the_video_cls():
    cfg = HiTRSConfig.preset("tiny", feature_readout="video_cls")
    out = HiTRS(cfg).eval()(torch.randn(2, 2, 30, 25, 3), torch.tensor([30, 9]))
    assert cfg.feature_dim == cfg.video_dim and HiTRSConfig().feature_readout == "video_cls"
    assert torch.equal(out.sequence_features, out.video_embeddings)
    with pytest.raises(ValueError, match="feature_readout"):
        HiTRSConfig.preset("tiny", feature_readout="mean")


def test_batch_padding_does_not_change_outputs():
    model = HiTRS(TINY).eval()
    x = torch.randn(1, 1, 30, 25, 3)
    alone = model(x, torch.tensor([30]))
    padded = torch.cat([x, torch.zeros(1, 1, 20, 25, 3)], dim=2)
    batch = torch.cat([padded, torch.randn(1, 1, 50, 25, 3)])
    together = model(batch, torch.tensor([30, 50]))
    torch.testing.assert_close(together.video_embeddings[:1], alone.video_embeddings, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together.clip_embeddings[:1, :, :5], alone.clip_embeddings, atol=1e-5, rtol=1e-5)


def test_garbage_past_length_is_ignored():
    model = HiTRS(TINY).eval()
    x = torch.randn(1, 1, 30, 25, 3)
    y = x.clone()
    y[:, :, 20:] = 5.0
    lengths = torch.tensor([20])
    torch.testing.assert_close(model(x, lengths).pooled, model(y, lengths).pooled)


def test_persons_are_independent_and_mean_present():
    cfg = TINY.replace(body_reduce="mean_present")
    model = HiTRS(cfg).eval()
    x = torch.randn(2, 2, 21, 25, 3)
    x[1, 1] = 0
    out = model(x)
    torch.testing.assert_close(out.pooled[1], out.sequence_features[1, 0])
    single = model(x[:1, :1])
    torch.testing.assert_close(single.video_embeddings[0, 0], out.video_embeddings[0, 0], atol=1e-5, rtol=1e-5)


def test_cls_sees_all_and_frame_mask_rule():
    mask = FrameMask(frame_size=3, num_frames=2, cls="last")
    allowed = mask.materialize()
    expected = torch.tensor([
        [1, 0, 0, 1, 1, 1, 1],
        [0, 1, 0, 1, 1, 1, 1],
        [0, 0, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 0, 0, 1],
        [1, 1, 1, 0, 1, 0, 1],
        [1, 1, 1, 0, 0, 1, 1],
        [1, 1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(allowed, expected)
    official = FrameMask(cls="last").materialize()
    assert official.shape == (176, 176)
    assert official[:175].sum(1).eq(152).all() and official[175].all()
    assert not FrameMask(cls="last", allow_self=False).materialize()[:175].diagonal().any()


def test_clip_mask_matters():
    """Tokens of one frame must not see each other: changing a same-frame neighbour's
    contribution must only flow through other frames."""
    model = HiTRS(TINY).eval()
    enc = model.clip_encoder
    clips = torch.randn(1, TINY.clip_len, 25, TINY.frame_dim)
    base = enc.transformer.layers[0].attn
    q = torch.randn(1, 176, TINY.clip_dim)
    out = base(q, enc.mask)
    q2 = q.clone()
    q2[0, 1] += 1.0  # joint 1 of frame 0
    out2 = base(q2, enc.mask)
    # Joint 0 of frame 0 attends to neither joint 1 of frame 0, so its output is unchanged.
    torch.testing.assert_close(out[0, 0], out2[0, 0])
    assert not torch.allclose(out[0, 30], out2[0, 30])  # a joint of frame 1 does see it
    assert enc(clips).shape == (1, TINY.clip_dim)


@pytest.mark.parametrize("bad,match", [
    (torch.randn(2, 40, 25, 3), r"\[B, M, T, V, C\]"),
    (torch.randn(2, 1, 40, 24, 3), "V=25"),
    (torch.randn(2, 1, 40, 25, 2), "C=3"),
])
def test_bad_shapes(bad, match):
    with pytest.raises(ValueError, match=match):
        HiTRS(TINY)(bad)


def test_bad_values():
    model = HiTRS(TINY)
    x = torch.randn(2, 1, 40, 25, 3)
    with pytest.raises(ValueError, match="exceeds"):
        model(x, torch.tensor([41, 10]))
    with pytest.raises(ValueError, match="at least 1"):
        model(x, torch.tensor([0, 10]))
    x[0, 0, 3, 4, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        model(x)
    x[0, 0, 3, 4, 1] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        model(x)


def test_too_many_clips():
    cfg = TINY.replace(max_clips=3)
    with pytest.raises(ValueError, match="at most 3 clips"):
        HiTRS(cfg)(torch.randn(1, 1, 29, 25, 3))


def test_positional_init_and_cls():
    model = HiTRS(HiTRSConfig())
    pe = model.frame_encoder.embedding.pos
    assert pe.shape == (25, 128)
    torch.testing.assert_close(pe[3, 0], torch.sin(torch.tensor(3.0)))
    torch.testing.assert_close(pe[3, 1], torch.cos(torch.tensor(3.0)))
    c = model.clip_encoder.pos
    assert c.shape == (7, 25, 256)
    torch.testing.assert_close(c[2, 5, 0], torch.sin(torch.tensor(5.0)))  # joint part
    torch.testing.assert_close(c[2, 5, 128], torch.sin(torch.tensor(2.0)))  # frame part
    cls = model.clip_encoder.cls_token
    assert cls.min() >= 0 and cls.max() < 1
