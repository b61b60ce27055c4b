import dataclasses

import pytest
import torch

from hitrs_fast import HiTRSConfig, HiTRSForPretraining
from hitrs_fast.sampling import (
    REPLACED,
    SWAPPED,
    UNCHANGED,
    frame_motion,
    frame_swap_pairs,
    mask_joints,
    sample_clip_swap,
    sample_frame_swap,
    sample_motion_clip,
)

TINY = HiTRSConfig.preset("tiny", dropout=0.0, use_video_tasks=True)  # every pretext task on


def motion_batch(b=6, t=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(b, 1, 25, 3, generator=g)
    phase = torch.linspace(0, 6.28, t)[None, :, None, None]
    freq = torch.rand(b, 1, 25, 1, generator=g) + 0.5
    x = base + 0.3 * torch.sin(freq * phase + base)
    lengths = torch.randint(19, t + 1, (b,), generator=g)
    lengths[0] = t
    return x, lengths


def test_mask_rate_and_shares():
    x = torch.randn(64, 100, 25, 3)
    lengths = torch.full((64,), 100)
    lengths[:8] = 30
    m = mask_joints(x, lengths, HiTRSConfig(), torch.Generator().manual_seed(1))
    real = (torch.arange(100)[None] < lengths[:, None])[..., None].expand(-1, -1, 25)
    assert not m.selected[~real].any(), "padding frames were selected"
    rate = m.selected.sum() / real.sum()
    assert abs(rate - 0.15) < 0.01
    n = m.selected.sum()
    for kind, share in ((REPLACED, 0.8), (SWAPPED, 0.1), (UNCHANGED, 0.1)):
        assert abs((m.kind == kind).sum() / n - share) < 0.02
    rep = m.kind == REPLACED
    assert torch.equal(m.masked_x[rep], torch.ones_like(m.masked_x[rep]))
    keep = ~m.selected | (m.kind == UNCHANGED)
    assert torch.equal(m.masked_x[keep], x[keep])


def test_swap_replacement_comes_from_another_joint_and_frame():
    b, t = 4, 20
    # Each coordinate encodes (frame, joint) so the donor can be decoded.
    frame = torch.arange(t)[None, :, None].expand(b, t, 25).float()
    joint = torch.arange(25)[None, None, :].expand(b, t, 25).float()
    x = torch.stack([frame, joint, torch.zeros_like(frame)], -1)
    lengths = torch.tensor([20, 10, 2, 15])
    m = mask_joints(x, lengths, HiTRSConfig(mask_ratio=0.9), torch.Generator().manual_seed(3))
    sw = m.kind == SWAPPED
    assert sw.any()
    donor = m.masked_x[sw]
    assert (donor[:, 0] != frame[sw]).all() and (donor[:, 1] != joint[sw]).all()
    bidx = torch.arange(b)[:, None, None].expand(b, t, 25)[sw]
    assert (donor[:, 0] < lengths[bidx]).all(), "donor frame outside the sample"


def test_uniform_random_replacement_in_range():
    x = torch.rand(4, 30, 25, 3) * 2 + 1
    m = mask_joints(x, torch.full((4,), 30), HiTRSConfig(mask_replacement="uniform_random"))
    rep = m.masked_x[m.kind == REPLACED]
    assert rep.min() >= 1 and rep.max() <= 3 and not torch.equal(rep, torch.ones_like(rep))


def test_frame_swap_pairs_and_distance():
    pairs = frame_swap_pairs(7)
    assert len(pairs) == 15 and ((pairs[:, 1] - pairs[:, 0]) >= 2).all()
    order = sample_frame_swap(4000, HiTRSConfig(), "cpu", torch.Generator().manual_seed(0))
    moved = order != torch.arange(7)
    assert (moved.sum(1) == 2).all()
    pos = moved.nonzero()[:, 1].view(-1, 2)
    assert ((pos[:, 1] - pos[:, 0]) >= 2).all()
    counts = torch.bincount(pos[:, 0] * 7 + pos[:, 1], minlength=49)
    used = counts[counts > 0]
    assert len(used) == 15 and used.min() > 4000 / 15 * 0.7


def test_clip_swap():
    n = torch.tensor([2, 3, 5, 9, 2])
    perm = sample_clip_swap(n, 9, torch.Generator().manual_seed(0))
    for row, k in zip(perm, n.tolist(), strict=True):
        moved = (row != torch.arange(9)).nonzero().flatten()
        assert len(moved) == 2 and moved.max() < k
        if k > 2:
            assert moved[1] - moved[0] >= 2
        assert sorted(row.tolist()) == list(range(9))
    with pytest.raises(ValueError, match=">= 2 context clips"):
        sample_clip_swap(torch.tensor([1]), 3)


def test_motion_clip_selection():
    x = torch.zeros(3, 40, 25, 3)
    x[0, 20:23] = torch.arange(3.0)[:, None, None]  # moves only around frames 21-22
    x[2] = torch.randn(40, 25, 3)
    lengths = torch.tensor([40, 40, 30])
    start, valid = sample_motion_clip(x, lengths, HiTRSConfig(), torch.Generator().manual_seed(0))
    assert valid.tolist() == [True, False, True]
    # A clip centred on c spans raw frames c-6..c+6: it must contain a moving frame of sample 0.
    assert 21 - 6 <= int(start[0]) <= 22 + 6
    assert int(start[2]) < 30
    m = frame_motion(x, lengths)
    assert m[0, 0] == 0 and m[2, 30:].abs().sum() == 0


def test_motion_weighted_clip_selection_lands_where_the_body_moves():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 60, 25, 3, generator=g) * 0.005  # sensor jitter everywhere: every clip "moves"
    x[:, 30:40] += torch.linspace(0, 1, 10)[None, :, None, None]  # the body moves in frames 30-39 only
    lengths = torch.full((400,), 60)
    near = {}
    for rule in ("any_motion", "motion_weighted"):
        start, valid = sample_motion_clip(x, lengths, HiTRSConfig(clip_order_selection=rule),
                                          torch.Generator().manual_seed(1))
        assert valid.all()
        near[rule] = ((start >= 30 - 6) & (start <= 39 + 6)).float().mean()  # the clip holds a moving frame
    assert near["any_motion"] < 0.5 < 0.9 < near["motion_weighted"]


def test_losses_finite_and_accuracies():
    model = HiTRSForPretraining(TINY)
    x, lengths = motion_batch()
    out = model(x, lengths)
    for key in ("loss", "pose_loss", "clip_order_loss", "video_order_loss", "nce_loss"):
        assert torch.isfinite(out[key]), key
    for key in ("clip_order_acc", "video_order_acc", "nce_acc"):
        assert 0 <= out[key] <= 1
    out["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for n, p in model.named_parameters() if p.requires_grad), "some parameter got no gradient"


def test_same_seed_same_losses():
    x, lengths = motion_batch()
    results = []
    for _ in range(2):
        torch.manual_seed(7)
        model = HiTRSForPretraining(HiTRSConfig.preset("tiny", dropout=0.1, use_video_tasks=True))
        results.append(model(x, lengths, generator=torch.Generator().manual_seed(11)))
    for key in results[0]:
        assert torch.equal(results[0][key], results[1][key]), key


@pytest.mark.parametrize("switches,present", [
    (dict(use_clip_tasks=False, use_video_tasks=False), {"pose_loss"}),
    (dict(use_frame_tasks=False, use_video_tasks=False), {"clip_order_loss"}),
    (dict(use_frame_tasks=False, use_clip_tasks=False), {"video_order_loss", "nce_loss"}),
])
def test_task_switches(switches, present):
    out = HiTRSForPretraining(TINY.replace(**switches))(*motion_batch())
    losses = {k for k in out if k.endswith("_loss")}
    assert losses == present
    assert torch.allclose(out["loss"], sum(out[k] for k in present))


def test_loss_weights():
    x, lengths = motion_batch()
    torch.manual_seed(0)
    model = HiTRSForPretraining(TINY.replace(weight_pose=2.0, weight_nce=0.5))
    out = model(x, lengths, generator=torch.Generator().manual_seed(0))
    expected = 2 * out["pose_loss"] + out["clip_order_loss"] + out["video_order_loss"] + 0.5 * out["nce_loss"]
    torch.testing.assert_close(out["loss"].detach(), expected)


def test_nce_temporal_negatives_add_the_samples_own_clips():
    torch.manual_seed(0)
    model = HiTRSForPretraining(TINY.replace(nce_negatives="local"))
    tau = model.config.nce_temperature
    pred, target, own = torch.randn(3, 8), torch.randn(3, 8), torch.randn(3, 4, 8)
    num_context = torch.tensor([5, 3, 2])  # own slots 1..4 are real below the context count: 4, 2 and 1 of them
    loss, _, _ = model._nce_loss(pred, target, own, num_context)
    p, t, o = (torch.nn.functional.normalize(v, dim=-1) for v in (pred, target, own))
    expected = []
    for i in range(3):
        real = [o[i, k - 1] for k in range(1, 5) if k < int(num_context[i])]
        logits = torch.cat([t @ p[i], torch.stack(real) @ p[i]]) / tau
        expected.append(-torch.log_softmax(logits, 0)[i])
    torch.testing.assert_close(loss, torch.stack(expected).mean())
    assert loss > model._nce_loss(pred, target)[0]  # more negatives, never easier
    padded = own.clone()
    padded[1, 2:], padded[2, 1:] = pred[1], pred[2]  # padding slots are ignored whatever they hold
    torch.testing.assert_close(model._nce_loss(pred, target, padded, num_context)[0], loss)
    own[0, 2] = pred[0] * 3  # the sample's own earlier clip matches the prediction best: retrieval fails
    assert model._nce_loss(pred, target, own, num_context)[2] < 1


def test_nce_temporal_negatives_in_the_model():
    x, lengths = motion_batch()
    losses = {}
    for on in (False, True):
        torch.manual_seed(3)
        model = HiTRSForPretraining(TINY.replace(nce_temporal_negatives=on))
        out = model(x, lengths, generator=torch.Generator().manual_seed(5))
        out["loss"].backward()
        losses[on] = out
    for key in ("pose_loss", "clip_order_loss", "video_order_loss"):  # the other tasks are untouched
        torch.testing.assert_close(losses[True][key], losses[False][key])
    assert losses[True]["nce_loss"] > losses[False]["nce_loss"]


def test_nce_gap_hides_the_clips_before_the_target():
    x, lengths = motion_batch(b=4, t=60)
    lengths = torch.tensor([60, 45, 30, 19])  # 9, 7, 5, 3 clips: 8, 6, 4, 2 context clips
    model = HiTRSForPretraining(TINY.replace(nce_gap=3))
    calls = []
    encode_video = model.encoder.encode_video
    model.encoder.encode_video = lambda clips, n: calls.append(n.clone()) or encode_video(clips, n)
    model(x, lengths)
    assert len(calls) == 2  # clip order (both orders at once), then the InfoNCE context
    assert calls[0].tolist() == [8, 6, 4, 2] * 2
    assert calls[1].tolist() == [5, 3, 1, 1]  # at least one clip stays


def test_video_grad_to_clips_scales_what_the_video_level_sends_down():
    x, lengths = motion_batch()
    grads = {}
    for scale in (1.0, 0.5, 0.0):
        torch.manual_seed(3)
        model = HiTRSForPretraining(TINY.replace(use_frame_tasks=False, use_clip_tasks=False,
                                                 video_grad_to_clips=scale))
        out = model(x, lengths, generator=torch.Generator().manual_seed(5))
        out["loss"].backward()
        grads[scale] = {n: p.grad for n, p in model.encoder.named_parameters()}
    low = [n for n in grads[1.0] if not n.startswith("video_encoder.")]
    high = [n for n in grads[1.0] if n.startswith("video_encoder.")]
    for n in high:  # V-TRS trains as before
        torch.testing.assert_close(grads[0.5][n], grads[1.0][n])
        torch.testing.assert_close(grads[0.0][n], grads[1.0][n])
    assert all(grads[1.0][n] is not None for n in low)
    for n in low:  # the clip and frame levels get the scaled gradient, none at 0
        torch.testing.assert_close(grads[0.5][n], 0.5 * grads[1.0][n])
        assert grads[0.0][n] is None


def test_context_clips_without_grad_match_the_merged_call():
    """video_grad_to_clips 0 runs the video-level context clips in their own C-TRS call without a graph; the
    merged call (any other scale) gives the same losses, and, at a vanishing scale, the same gradients."""
    x, lengths = motion_batch()
    results = {}
    for scale in (0.0, 1e-12):
        torch.manual_seed(3)
        model = HiTRSForPretraining(TINY.replace(video_grad_to_clips=scale))
        out = model(x, lengths, generator=torch.Generator().manual_seed(5))
        out["loss"].backward()
        results[scale] = out, {n: p.grad for n, p in model.named_parameters()}
    (split, split_grads), (merged, merged_grads) = results[0.0], results[1e-12]
    assert split.keys() == merged.keys()
    for name in split:
        torch.testing.assert_close(split[name], merged[name], atol=1e-6, rtol=1e-5, msg=name)
    assert split_grads.keys() == merged_grads.keys()
    for name, grad in split_grads.items():
        assert (grad is None) == (merged_grads[name] is None), name
        if grad is not None:
            torch.testing.assert_close(grad, merged_grads[name], atol=1e-6, rtol=1e-4, msg=name)


def test_clip_order_pairs_encode_each_drawn_clip_and_its_swap(monkeypatch):
    """clip_order_pairs K: K clips per sample, each drawn by its own sample_motion_clip / sample_frame_swap call;
    the head sees every original (label 1) and swapped copy (label 0), and a pair without a moving clip is left
    out of the loss for that sample only."""
    from torch.nn import functional as F

    import hitrs_fast.pretext as pretext

    pairs, x, lengths = 3, *motion_batch()
    b, draws, swaps, frames, head_in = x.shape[0], [], [], [], []

    def motion_clip(*args, **kwargs):
        start, valid = sample_motion_clip(*args, **kwargs)
        if len(draws) == 1:
            valid = valid.clone()
            valid[0] = False  # sample 0 has no moving clip in pair 1
        draws.append((start, valid))
        return start, valid

    def frame_swap(*args, **kwargs):
        swaps.append(sample_frame_swap(*args, **kwargs))
        return swaps[-1]

    monkeypatch.setattr(pretext, "sample_motion_clip", motion_clip)
    monkeypatch.setattr(pretext, "sample_frame_swap", frame_swap)
    torch.manual_seed(0)
    model = HiTRSForPretraining(TINY.replace(clip_order_pairs=pairs, use_video_tasks=False))
    encode_frames = model.encoder.encode_frames
    monkeypatch.setattr(model.encoder, "encode_frames", lambda *a: frames.append(encode_frames(*a)) or frames[-1])
    model.clip_order_head.register_forward_hook(lambda mod, inp, out: head_in.append((inp[0], out)))
    out = model(x, lengths, generator=torch.Generator().manual_seed(5))

    assert len(draws) == len(swaps) == pairs and len(head_in) == 1
    cls, logits = head_in[0]
    assert cls.shape == (2 * pairs * b, TINY.clip_dim)
    rows, offsets = torch.arange(b), torch.arange(TINY.clip_len) * TINY.clip_dilation
    for k, ((start, _), order) in enumerate(zip(draws, swaps, strict=True)):
        original = start[:, None] + offsets
        expected = model.encoder.encode_clip_positions(frames[0], rows, original)
        torch.testing.assert_close(cls[k * b:(k + 1) * b], expected, msg=f"pair {k} original")
        expected = model.encoder.encode_clip_positions(frames[0], rows, original.gather(1, order))
        torch.testing.assert_close(cls[(pairs + k) * b:(pairs + k + 1) * b], expected, msg=f"pair {k} swapped")
    valid = torch.cat([v for _, v in draws]).repeat(2).float()
    assert valid.sum() == 2 * (pairs * b - 1)
    labels = torch.cat([torch.ones(pairs * b), torch.zeros(pairs * b)]).long()
    per = F.cross_entropy(logits.float(), labels, reduction="none")
    torch.testing.assert_close(out["clip_order_loss"], (per * valid).sum() / valid.sum())


def test_paper_preset_runs():
    cfg = HiTRSConfig.preset("paper").replace(frame_dim=32, clip_dim=64, video_dim=64, frame_ffn=32, clip_ffn=32,
                                               video_ffn=32, num_heads=2, head_dim=16)
    out = HiTRSForPretraining(cfg)(*motion_batch())
    assert torch.isfinite(out["loss"])


def test_bad_inputs():
    model = HiTRSForPretraining(TINY)
    x, _ = motion_batch(b=2, t=40)
    with pytest.raises(ValueError, match="at least 15 frames"):
        model(x, torch.tensor([40, 14]))
    with pytest.raises(ValueError, match="single bodies"):
        model(torch.randn(2, 2, 40, 25, 3))
    with pytest.raises(ValueError, match="V=25"):
        model(torch.randn(2, 40, 17, 3))
    bad = x.clone()
    bad[1, 5, 3, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model(bad)


@pytest.mark.parametrize("video_grad_to_clips, steps", [
    pytest.param(1.0, 100, id="released-gradient-flow"),
    # The tiny preset's video-level tasks train V-TRS only, so their loss needs more steps on fixed clip features.
    pytest.param(0.0, 200, id="tiny-preset-video-tasks-train-vtrs-only"),
])
def test_tiny_overfit_all_losses_fall(video_grad_to_clips, steps):
    torch.manual_seed(0)
    model = HiTRSForPretraining(dataclasses.replace(TINY, video_grad_to_clips=video_grad_to_clips))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x, lengths = motion_batch(b=6, t=24, seed=1)
    keys = ("pose_loss", "clip_order_loss", "video_order_loss", "nce_loss")
    history = []
    for _ in range(steps):
        out = model(x, lengths, generator=torch.Generator().manual_seed(0))  # same draws: overfit
        opt.zero_grad()
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # as the released recipe
        opt.step()
        history.append([float(out[k]) for k in keys])
    first = torch.tensor(history[:5]).mean(0)
    last = torch.tensor(history[-10:]).mean(0)
    for k, a, b in zip(keys, first, last, strict=True):
        assert b < a * 0.8, f"{k} did not fall: {a:.4f} -> {b:.4f}"


def test_sample_random_is_per_sample():
    """Per-sample streams: a sample's draws do not depend on its batch, padding or position."""
    from hitrs_fast.sampling import SampleRandom

    x = torch.randn(3, 40, 25, 3)
    lengths = torch.tensor([40, 25, 30])
    ids = torch.tensor([10, 11, 12])
    cfg = HiTRSConfig()
    full = mask_joints(x, lengths, cfg, SampleRandom(5, ids))
    alone = mask_joints(x[1:2, :25], lengths[1:2], cfg, SampleRandom(5, ids[1:2]))
    assert torch.equal(full.selected[1, :25], alone.selected[0])
    assert torch.equal(full.masked_x[1, :25], alone.masked_x[0])
    other_seed = mask_joints(x, lengths, cfg, SampleRandom(6, ids))
    assert not torch.equal(full.selected, other_seed.selected)
    u = SampleRandom(0, torch.arange(1000)).rand((1000, 50), "cpu")
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.01


def test_pretraining_independent_of_batch_split():
    """Two halves with per-sample streams give the losses of the whole batch (dropout off)."""
    from hitrs_fast.sampling import SampleRandom

    torch.manual_seed(0)
    model = HiTRSForPretraining(TINY.replace(nce_negatives="local", use_video_tasks=False))
    x, lengths = motion_batch(b=6)
    ids = torch.arange(6) + 100
    whole = model(x, lengths, generator=SampleRandom(9, ids))
    halves = [model(x[s], lengths[s], generator=SampleRandom(9, ids[s])) for s in (slice(0, 3), slice(3, 6))]
    # With equal halves, means of per-sample terms combine as plain averages when every
    # sample is valid; the pose loss is a mean over entries, so compare it as a weighted mean.
    mean_of_halves = (halves[0]["clip_order_loss"] + halves[1]["clip_order_loss"]) / 2
    torch.testing.assert_close(whole["clip_order_loss"], mean_of_halves)
    sel = [mask_joints(zero_pad(x[s], lengths[s]), lengths[s], model.config, SampleRandom(9, ids[s])).selected.sum()
           for s in (slice(0, 3), slice(3, 6))]
    weighted = (halves[0]["pose_loss"] * sel[0] + halves[1]["pose_loss"] * sel[1]) / (sel[0] + sel[1])
    torch.testing.assert_close(whole["pose_loss"], weighted)


def zero_pad(x, lengths):
    t = int(lengths.max())
    return x[:, :t] * (torch.arange(t)[None, :, None, None] < lengths[:, None, None, None])
