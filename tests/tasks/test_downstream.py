"""Downstream heads, input streams, encoder loading, schedules and tiny end-to-end runs of
training/recognize.py, training/detect.py and training/predict_motion.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hitrs_fast.config import HiTRSConfig
from hitrs_fast.data.skeleton import BONE_PAIRS_1BASED
from hitrs_fast.data.streams import apply_stream, bone_stream, motion_stream
from hitrs_fast.eval.metrics import fuse_scores, mpjpe, topk_accuracy, zero_velocity_baseline
from hitrs_fast.models import HiTRS
from hitrs_fast.tasks import (
    ActionRecognizer,
    FrameDetector,
    MotionPredictor,
    constant_velocity_baseline,
    euclidean_loss,
    smoothed_velocity,
)
from hitrs_fast.training.detect import gather_windows, ground_truth_segments
from hitrs_fast.training.encoder import load_encoder_checkpoint
from hitrs_fast.training.optim import lr_factor
from hitrs_fast.training.run import UsageError
from hitrs_fast.windowing import stride1_clip_indices

REPO = Path(__file__).resolve().parents[2]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"test_script_{name}", REPO / "training" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tiny(**kw) -> HiTRSConfig:
    base = dict(frame_dim=16, clip_dim=16, video_dim=16, frame_ffn=16, clip_ffn=16, video_ffn=16, num_heads=2,
                head_dim=8, dropout=0.0, max_clips=40, centering="none")  # raw coordinates: exact windowing checks
    return HiTRSConfig.preset("tiny", **{**base, **kw})


# ----------------------------------------------------------------------------- heads


def test_head_shapes():
    torch.manual_seed(0)
    enc = HiTRS(_tiny(), backend="torch").eval()
    x = torch.randn(3, 2, 20, 25, 3)
    lengths = torch.tensor([20, 15, 9])
    assert ActionRecognizer(enc, 5)(x, lengths).shape == (3, 5)
    det = FrameDetector(enc, 4)
    p = enc.config.clip_pad
    x_ctx = torch.randn(2, 2, 10 + 2 * p, 25, 3)
    frames, owner = torch.tensor([0, 9, 3]), torch.tensor([0, 1, 1])
    assert det(x_ctx, frames, owner).shape == (3, 5)
    mp = MotionPredictor(enc, horizon=4, hidden=8, observe=14)
    assert mp(torch.randn(2, 14, 25, 3)).shape == (2, 4, 25, 3)


def test_motion_predictor_starts_at_zero_velocity():
    # The output layer is zero-initialised: before training the forecast is the last pose repeated.
    torch.manual_seed(0)
    mp = MotionPredictor(HiTRS(_tiny(), backend="torch"), horizon=5, hidden=8, observe=14).eval()
    obs = torch.randn(2, 14, 25, 3)
    torch.testing.assert_close(mp(obs), zero_velocity_baseline(obs, 5))
    ctx = mp.context(obs)
    torch.testing.assert_close(mp(obs, ctx), mp(obs))
    with pytest.raises(ValueError, match="context"):
        mp(obs, ctx[:, :3])
    with pytest.raises(ValueError, match="observe = 14"):
        mp(obs[:, 1:])


def test_constant_velocity_baseline_and_smoothed_velocity():
    obs = torch.zeros(2, 10, 25, 3)
    obs[:, :, :, 0] = torch.arange(10.0)[None, :, None] * 0.01  # 1 cm per frame along x
    obs[1, -1, 3, 1] += 0.04  # a jittered last frame: one joint 4 cm off
    v = smoothed_velocity(obs, 4)
    torch.testing.assert_close(v[0, :, 0], torch.full((25,), 0.01))
    assert float(v[1, 3, 1]) == pytest.approx(0.01)  # the 4 cm jump is averaged over 4 frames
    cv = constant_velocity_baseline(obs, 3, frames=4)
    torch.testing.assert_close(cv[0, :, 0, 0], torch.tensor([0.10, 0.11, 0.12]))
    with pytest.raises(ValueError, match="T_obs > 10"):
        smoothed_velocity(obs, 10)


def _train_decoder(model: MotionPredictor, train: torch.Tensor, obs: int, contexts=None, steps: int = 150,
                   lr: float = 1e-2) -> None:
    opt = torch.optim.Adam([p for n, p in model.named_parameters() if not n.startswith("encoder.")], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        euclidean_loss(model(train[:, :obs], contexts), train[:, obs:]).backward()
        opt.step()


def test_motion_decoder_extrapolates_observed_constant_velocity():
    """The decoder reads the observed motion (the last pose and a smoothed velocity), not only the encoder:
    trained on constant-velocity windows with the encoder's input zeroed, it continues a new window's
    velocity to within a few mm, where the zero-velocity baseline is off by centimetres."""
    g = torch.Generator().manual_seed(0)

    def windows(n: int) -> torch.Tensor:
        base = torch.randn(n, 1, 25, 3, generator=g) * 0.3 + torch.tensor([0.0, 0.0, 3.0])
        v = (torch.rand(n, 1, 1, 3, generator=g) - 0.5) * 0.06  # up to 3 cm per frame
        return base + v * torch.arange(16.0)[None, :, None, None]  # [n, 12 observed + 4 future, V, C]

    train, test = windows(64), windows(32)
    torch.manual_seed(1)
    model = MotionPredictor(HiTRS(_tiny(), backend="torch"), horizon=4, hidden=32, observe=12, ablate_encoder=True)
    _train_decoder(model, train, 12, steps=120, lr=3e-3)
    with torch.no_grad():
        err = mpjpe(model(test[:, :12]), test[:, 12:]).mean
    zero = mpjpe(zero_velocity_baseline(test[:, :12], 4), test[:, 12:]).mean
    assert err < 3.0 and zero > 20.0, (float(err), float(zero))  # mm


def test_motion_ablation_sees_no_history_beyond_the_last_velocity():
    torch.manual_seed(0)
    enc = HiTRS(_tiny(), backend="torch").eval()
    full = MotionPredictor(enc, horizon=4, hidden=8, observe=14, velocity_frames=2).eval()
    torch.nn.init.normal_(full.out.weight, std=1.0)  # a decoder that moves (cm per frame)
    ablated = MotionPredictor(enc, horizon=4, hidden=8, observe=14, velocity_frames=2, ablate_encoder=True).eval()
    ablated.load_state_dict(full.state_dict())
    a = torch.randn(2, 14, 25, 3)
    b = torch.randn(2, 14, 25, 3)
    b[:, -3:] = a[:, -3:]  # same last pose and smoothed velocity (over 2 frames), another history
    with torch.no_grad():
        assert (full(a) - full(b)).abs().max() > 1e-3  # the encoder reads the whole history
        assert (full(a) - ablated(a)).abs().max() > 1e-3  # same weights, encoder input zeroed: another forecast
        torch.testing.assert_close(ablated(a), ablated(b), rtol=0, atol=0)
        c = a.clone()
        c[:, -1] += 0.01  # another last velocity: another forecast relative to the last pose
        assert ((ablated(a) - a[:, -1:]) - (ablated(c) - c[:, -1:])).abs().max() > 1e-3


def test_motion_context_holds_every_clip_in_time_order():
    """The default context is the sequence features followed by all W = ceil(observe / stride) clip
    embeddings; the decoder's clip reader is order-sensitive (a GRU), so swapping two clips changes the
    condition, and ``last_clip`` holds the sequence features and the last of those clips."""
    torch.manual_seed(0)
    enc = HiTRS(_tiny(), backend="torch").eval()
    cfg = enc.config
    obs = torch.randn(3, 20, 25, 3)
    clips = MotionPredictor(enc, horizon=4, hidden=8, observe=20).eval()
    last = MotionPredictor(enc, horizon=4, hidden=8, observe=20, context_reader="last_clip").eval()
    w = -(-20 // cfg.clip_stride)
    assert clips.num_clips == w and clips.context_dim == cfg.feature_dim + w * cfg.clip_dim
    assert last.context_dim == cfg.feature_dim + cfg.clip_dim
    with torch.no_grad():
        out = enc(obs[:, None])
        ctx = clips.context(obs)
        torch.testing.assert_close(ctx[:, :cfg.feature_dim], out.sequence_features[:, 0])
        torch.testing.assert_close(ctx[:, cfg.feature_dim:].view(3, w, -1), out.clip_embeddings[:, 0, :w])
        torch.testing.assert_close(last.context(obs), torch.cat([ctx[:, :cfg.feature_dim], ctx[:, -cfg.clip_dim:]], 1))
        swapped = ctx.clone().view(3, -1)
        first, second = (slice(cfg.feature_dim + k * cfg.clip_dim, cfg.feature_dim + (k + 1) * cfg.clip_dim)
                         for k in (0, 1))
        swapped[:, first], swapped[:, second] = ctx[:, second], ctx[:, first]
        assert (clips._condition(ctx) - clips._condition(swapped)).abs().max() > 1e-4
    with pytest.raises(ValueError, match="context_reader"):
        MotionPredictor(enc, observe=20, context_reader="mean")


@pytest.mark.parametrize("reader", MotionPredictor.CONTEXT_READERS)
def test_motion_encoder_helps_where_the_history_decides_the_future(reader):
    """Windows whose last frames are identical in pose and velocity but whose future direction was set by a
    gesture early in the observation: only the encoder (a frozen random one here, its contexts computed
    once) can tell them apart; the ablated decoder stays at the mean motion, the zero-velocity forecast."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(1, 1, 25, 3, generator=g) * 0.3

    def windows(n: int) -> torch.Tensor:
        sign = torch.randint(0, 2, (n,), generator=g).float() * 2 - 1
        x = base.repeat(n, 18, 1, 1)
        x[:, :6, 11, 1] += sign[:, None] * 0.3  # a raised or lowered hand at the start
        speed = torch.rand(n, generator=g) * 0.03 + 0.01
        x[:, 14:, :, 0] += (sign * speed)[:, None, None] * torch.arange(1.0, 5.0)[:, None]
        return x

    train, test = windows(128), windows(64)
    torch.manual_seed(1)
    encoder = HiTRS(_tiny(), backend="torch").eval()
    probe = MotionPredictor(encoder, horizon=4, hidden=32, observe=14, context_reader=reader)
    with torch.no_grad():
        contexts = {"train": probe.context(train[:, :14]), "test": probe.context(test[:, :14])}
    losses = {}
    for ablate in (False, True):
        torch.manual_seed(2)
        model = MotionPredictor(encoder, horizon=4, hidden=32, observe=14, ablate_encoder=ablate,
                                context_reader=reader)
        model.set_feature_norm(contexts["train"])  # a random encoder's contexts vary little: standardise them
        _train_decoder(model, train, 14, contexts["train"])
        with torch.no_grad():
            losses[ablate] = float(euclidean_loss(model(test[:, :14], contexts["test"]), test[:, 14:]))
    zero = float(euclidean_loss(zero_velocity_baseline(test[:, :14], 4), test[:, 14:]))
    assert losses[False] < 0.5 * losses[True], losses
    assert losses[True] > 0.8 * zero, (losses, zero)


@pytest.mark.parametrize("centering", ["none", "first_frame"])
def test_detector_clip_matches_whole_sequence_stride1_clip(centering):
    """The windowed per-frame clip equals the stride-1 clip of the whole zero-padded sequence, also when the
    encoder centres its input (the windows are cut from the video centred as a whole)."""
    torch.manual_seed(0)
    enc = HiTRS(_tiny(centering=centering), backend="torch").eval()
    det = FrameDetector(enc, 3).eval()
    cfg, t = enc.config, 17
    seq = torch.randn(1, 1, t, 25, 3) + 2.0  # away from the origin: centring changes every frame
    feats = enc.encode_frames(enc.prepare(seq))  # [1, T + 2P, V, d]
    want = enc.encode_clip_positions(feats, torch.zeros(t, dtype=torch.long), stride1_clip_indices(t, cfg))  # [T, d]
    # Two windows of 9 and 8 frames, each with its context (zeros beyond the sequence).
    p = cfg.clip_pad
    x_ctx = torch.zeros(2, 1, 9 + 2 * p, 25, 3)
    video = det.centre_video(seq[0])[None]
    full = torch.cat([torch.zeros(1, 1, p, 25, 3), video, torch.zeros(1, 1, p + 9, 25, 3)], dim=2)
    x_ctx[0], x_ctx[1] = full[0, :, 0:9 + 2 * p], full[0, :, 9:18 + 2 * p]
    frames = torch.cat([torch.arange(9), torch.arange(8)])
    owner = torch.cat([torch.zeros(9, dtype=torch.long), torch.ones(8, dtype=torch.long)])
    with torch.no_grad():
        got, occupied = det.frame_inputs(x_ctx, frames, owner)
    assert got.shape == (17, 1, enc.config.clip_dim) and bool(occupied.all())
    torch.testing.assert_close(got[:, 0], want.detach(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="frames must lie"):
        det.frame_inputs(x_ctx, torch.tensor([9]), torch.tensor([0]))


def test_detection_windows_share_their_videos_origin():
    """Windows cut at different starts of one video hold a frame at the same coordinates (the video's origin,
    not the window's) and give it the same clip embedding under first-frame centring: training windows,
    cached clips and test videos agree."""
    torch.manual_seed(0)
    t, window = 30, 10
    video = torch.randn(t, 1, 25, 3) + torch.linspace(0, 3, t)[:, None, None, None]  # walks away from frame 0

    class Store:
        shape_tail, lengths = (1, 25, 3), np.array([t])

        def sequence(self, i):
            return video.numpy()

        def frame_labels(self, i):
            return np.zeros(t, dtype=np.int64)

    det = FrameDetector(HiTRS(_tiny(centering="first_frame"), backend="torch"), 3).eval()
    context = det.context  # 6: the clip head reads the clip around the frame
    x, _ = gather_windows(Store(), np.array([0, 0]), np.array([0, 7]), window, context, det.centre_video)
    # window 0 holds frames -6..15 at 0..21, window 1 frames 1..22 at 0..21: frames 1..15 are shared
    centred = det.centre_video(video.permute(1, 0, 2, 3))
    assert float(centred[0, 0, det.encoder.config.center_joint].abs().max()) == 0.0
    torch.testing.assert_close(x[0, :, 7:22], centred[:, 1:16])
    torch.testing.assert_close(x[1, :, 0:15], centred[:, 1:16])
    with torch.no_grad():  # the clip centred on frame 9 from each window
        emb, _ = det.clip_embeddings(x, torch.tensor([15, 8]), torch.tensor([0, 1]))
    torch.testing.assert_close(emb[0], emb[1], rtol=1e-5, atol=1e-6)


def test_context_detector_reads_only_its_window():
    """Frame f of a window reads window frames f .. f + 2P (raw frames f - P .. f + P) and nothing else; its
    centre clip is the clip head's, and clips past the sequence enter as zeros."""
    torch.manual_seed(0)
    enc = HiTRS(_tiny(), backend="torch").eval()  # centering "none": no frame moves the others
    det = FrameDetector(enc, 3, head="context", context_clips=2, context_stride=3).eval()
    clip = FrameDetector(enc, 3, head="clip").eval()
    p, window = det.context, 4
    assert p == enc.config.clip_pad + 2 * 3 and det.offsets.tolist() == [-6, -3, 0, 3, 6]
    x = torch.randn(2, 2, window + 2 * p, 25, 3)
    x[1, 1] = 0  # a one-body window
    x[1, :, :p - 4] = 0  # window 1 starts 2 frames before its sequence: its frame 0's first clip is outside
    frames, owner = torch.tensor([1, 0]), torch.tensor([0, 1])
    with torch.no_grad():
        ref = det(x, frames, owner)
        clips, occupied = det.frame_inputs(x, frames, owner)
        assert clips.shape == (2, 5, enc.config.clip_dim)
        assert occupied.tolist() == [[True] * 5, [False, True, True, True, True]]
        d = p - clip.context
        torch.testing.assert_close(clips[:, 2], clip.frame_inputs(x[:, :, d:-d], frames, owner)[0][:, 0])
        for n, (f, b) in enumerate(zip(frames.tolist(), owner.tolist(), strict=True)):
            outside = x.clone()
            outside[b, :, :f] += 1.0
            outside[b, :, f + 2 * p + 1:] += 1.0
            outside[1 - b] += 1.0  # and the other window
            torch.testing.assert_close(det(outside, frames, owner)[n], ref[n])
            for t in (f, f + 2 * p):  # the first and last frame it reads (inside the sequence)
                if not x[b, :, t].any():
                    continue
                inside = x.clone()
                inside[b, 0, t] += 1.0
                assert (det(inside, frames, owner)[n] - ref[n]).abs().max() > 1e-5, (f, b, t)
    with pytest.raises(ValueError, match="frames must lie"):
        det.frame_inputs(x, torch.tensor([window]), torch.tensor([0]))
    with pytest.raises(ValueError, match="head must be one of"):
        FrameDetector(enc, 3, head="gru")


@pytest.mark.parametrize(("head", "features"), [("tcn", "clips"), ("context", "clips"), ("clip", "clips"),
                                               ("tcn", "skeleton")])
def test_detector_window_logits_are_its_per_frame_outputs(head, features):
    """Every head: the dense path (a window's frames at once, the training and evaluation path) equals the
    per-frame forward, and a frame's output moves with the first and last raw frame it reads and with nothing
    outside them (the tcn head's valid convolutions never see the window's edge)."""
    torch.manual_seed(0)
    enc = HiTRS(_tiny(), backend="torch").eval()
    det = FrameDetector(enc, 3, head=head, context_clips=2, context_stride=3, tcn_layers=2, hidden=16,
                        features=features).eval()
    torch.nn.init.normal_(det.feature_mean)  # a head that ignored the normalisation or the zeros would show
    p, window = det.context, 5
    assert p == enc.config.clip_pad + {"tcn": 3, "context": 6, "clip": 0}[head]
    if features == "skeleton":  # the raw frames read: the clips' centres and the frame before the first
        p_read = 3 + 1
    else:
        p_read = p
    x = torch.randn(2, 2, window + 2 * p, 25, 3)
    x[1, :, :p - 1] = 0  # window 1 starts one frame after its sequence's first frame would have context
    frames, owner = torch.arange(window).repeat(2), torch.arange(2).repeat_interleave(window)
    with torch.no_grad():
        dense = det.window_logits(x)
        assert dense.shape == (2, window, 4)
        torch.testing.assert_close(dense.flatten(0, 1), det(x, frames, owner), rtol=1e-5, atol=1e-5)
        f = 2
        first, last = f + p - p_read, f + p + (p_read if features == "clips" else p_read - 1)
        outside = x.clone()
        outside[0, :, :first] += 1.0
        outside[0, :, last + 1:] += 1.0
        torch.testing.assert_close(det.window_logits(outside)[0, f], dense[0, f], rtol=1e-5, atol=1e-5)
        for t in (first, last):
            inside = x.clone()
            inside[0, 0, t] += 1.0
            assert (det.window_logits(inside)[0, f] - dense[0, f]).abs().max() > 1e-5, (head, t)
    with pytest.raises(ValueError, match="x_ctx: expected"):
        det.window_logits(x[:, :, :2 * p])


# ----------------------------------------------------------------------------- streams


def test_bone_stream_uses_spec_pairs():
    x = torch.randn(2, 1, 4, 25, 3)
    b = bone_stream(x)
    for v1, v2 in BONE_PAIRS_1BASED:  # docs/data.md, 1-based
        torch.testing.assert_close(b[..., v1 - 1, :], x[..., v1 - 1, :] - x[..., v2 - 1, :])
    assert torch.count_nonzero(b[..., 20, :]) == 0  # SpineShoulder pairs with itself
    assert torch.count_nonzero(bone_stream(torch.zeros(1, 1, 2, 25, 3))) == 0
    with pytest.raises(ValueError, match="V=25"):
        bone_stream(torch.zeros(1, 1, 2, 17, 3))


def test_motion_stream_backward_difference_and_padding():
    x = torch.randn(2, 2, 6, 25, 3)
    lengths = torch.tensor([6, 4])
    x[1, :, 4:] = 0
    m = motion_stream(x, lengths)
    assert torch.count_nonzero(m[:, :, 0]) == 0
    torch.testing.assert_close(m[0, :, 1:], x[0, :, 1:] - x[0, :, :-1])
    torch.testing.assert_close(m[1, :, 1:4], x[1, :, 1:4] - x[1, :, :3])
    assert torch.count_nonzero(m[1, :, 4:]) == 0  # no jump from the last real frame into the padding
    assert apply_stream(x, lengths, "joint") is x
    with pytest.raises(ValueError, match="stream"):
        apply_stream(x, lengths, "velocity")


# ----------------------------------------------------------------------------- checkpoints and schedules


def _save_encoder(path: Path, config: HiTRSConfig, state=None) -> HiTRS:
    torch.manual_seed(1)
    enc = HiTRS(config, backend="torch")
    torch.save({"state_dict": state if state is not None else enc.state_dict(), "config": config.to_dict(),
                "step": 7}, path)
    return enc


def test_load_encoder_checkpoint_strict(tmp_path):
    cfg = _tiny()
    path = tmp_path / "encoder.pt"
    enc = _save_encoder(path, cfg)
    loaded, info = load_encoder_checkpoint(path, {"dropout": 0.3}, backend="torch")
    assert info["step"] == 7 and loaded.config.dropout == 0.3 and loaded.config.frame_dim == cfg.frame_dim
    for k, v in enc.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    with pytest.raises(UsageError, match="architecture"):
        load_encoder_checkpoint(path, {"frame_dim": 32})
    with pytest.raises(UsageError, match="does not match the checkpoint"):
        load_encoder_checkpoint(path, preset="official")
    # Weights of another config under this config: a clear error naming the mismatching tensors.
    bad = tmp_path / "bad.pt"
    _save_encoder(bad, cfg, HiTRS(_tiny(frame_dim=32), backend="torch").state_dict())
    with pytest.raises(UsageError, match="shape mismatches"):
        load_encoder_checkpoint(bad)
    partial = tmp_path / "partial.pt"
    state = enc.state_dict()
    state.pop(next(iter(state)))
    _save_encoder(partial, cfg, state)
    with pytest.raises(UsageError, match="missing"):
        load_encoder_checkpoint(partial)
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(UsageError, match="not a torch checkpoint"):
        load_encoder_checkpoint(junk)
    with pytest.raises(UsageError, match="no such file"):
        load_encoder_checkpoint(tmp_path / "absent.pt")


def test_lr_schedules_match_released():
    assert [lr_factor("released_finetune", e, 70) for e in (1, 20, 21, 30, 31, 70)] == [1, 1, 0.5, 0.5, 0.25,
                                                                                         0.5 ** 5]
    assert lr_factor("released_finetune", 200, 200) == 0.0025
    assert [lr_factor("released_scratch", e, 70) for e in (30, 31, 41, 51, 55, 56)] == [1, 0.5, 0.25, 0.125,
                                                                                        0.125, 0.0125]
    assert lr_factor("cosine", 1, 10) == 1.0 and lr_factor("constant", 9, 10) == 1.0


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    from hitrs_fast.data.synthetic import write_synthetic

    root = tmp_path_factory.mktemp("downstream")
    common = dict(num_subjects=3, num_classes=3, two_person_prob=0.5)
    trimmed = write_synthetic(root / "trimmed", "trimmed", samples_per_class=4, **common)
    untrimmed = write_synthetic(root / "untrimmed", "untrimmed", num_sequences=3, **common)
    long = write_synthetic(root / "long", "long", num_sequences=3, **common)
    recipes = {}
    for task, extra in (("recognition", {}),
                        ("detection", {"steps_per_epoch": 2, "window": 16, "eval_window": 128,
                                       "eval_max_frames": 512, "standardize": True,
                                       "postprocess": {"method": "majority", "smooth_window": 3, "min_length": 5}}),
                        ("motion", {"hidden": 8, "train_stride": 150, "test_stride": 300})):
        modes = {m: {"lr": 1e-3, "schedule": "cosine"} for m in ("linear", "finetune", "scratch")}
        modes["linear"]["standardize"] = True
        if task != "recognition":  # fine-tuning starts with a warmed-up head
            modes["finetune"]["head_warmup"] = {"epochs": 1, "lr": 1e-2, "standardize": True}
        recipe = {"task": task, "common": {"epochs": 1, "batch_size": 4, "augment": "none", **extra}, **modes}
        recipes[task] = root / f"{task}.json"
        recipes[task].write_text(json.dumps(recipe))
    # A small encoder checkpoint, as training/pretrain.py writes it.
    cfg = _tiny(max_clips=200)
    ckpt = root / "encoder.pt"
    _save_encoder(ckpt, cfg)
    return {"trimmed": str(trimmed), "untrimmed": str(untrimmed), "long": str(long), "recipes": recipes,
            "ckpt": str(ckpt), "root": root}


def _run(name: str, argv: list[str], backend: str = "torch") -> int:
    return _script(name).main(argv + ["--no-progress", "--backend", backend, "--device", "cpu"])


def test_recognize_end_to_end_fusion_and_resume(stores, capsys):
    root, rec = stores["root"], str(stores["recipes"]["recognition"])
    base = ["--data", stores["trimmed"], "--recipe", rec, "--init", stores["ckpt"]]
    for stream in ("joint", "bone"):
        assert _run("recognize", base + ["--mode", "finetune", "--stream", stream,
                                         "--run-dir", str(root / f"rec-{stream}")]) == 0
    run = root / "rec-joint"
    for f in ("config.json", "metrics.jsonl", "summary.json", "checkpoint.pt", "test_scores.pt"):
        assert (run / f).is_file(), f
    summary = json.loads((run / "summary.json").read_text())
    assert summary["last_epoch"]["epoch"] == 1 and 0 <= summary["last_epoch"]["top1"] <= 1
    assert "best_epoch_on_test" in summary
    # Fusion equals fusing the saved scores by hand.
    assert _run("recognize", ["--fuse", str(root / "rec-joint"), str(root / "rec-bone"),
                              "--run-dir", str(root / "fusion")]) == 0
    fused = json.loads((root / "fusion" / "fusion.json").read_text())["fused"]
    s = [torch.load(root / f"rec-{k}" / "test_scores.pt", weights_only=True) for k in ("joint", "bone")]
    want = topk_accuracy(fuse_scores([s[0]["last"]["scores"], s[1]["last"]["scores"]]), s[0]["labels"], ks=(1,))
    assert fused["top1"] == pytest.approx(want[1])
    # Linear evaluation (cached features): 2 epochs in one go == 1 epoch + --resume to 2.
    lin = base + ["--mode", "linear", "--label-fraction", "0.5"]
    assert _run("recognize", lin + ["--epochs", "2", "--run-dir", str(root / "lin-a")]) == 0
    assert _run("recognize", lin + ["--epochs", "1", "--run-dir", str(root / "lin-b")]) == 0
    assert _run("recognize", lin + ["--epochs", "2", "--resume", "--run-dir", str(root / "lin-b")]) == 0
    a = torch.load(root / "lin-a" / "checkpoint.pt", weights_only=False)
    b = torch.load(root / "lin-b" / "checkpoint.pt", weights_only=False)
    assert a["epoch"] == b["epoch"] == 2
    torch.testing.assert_close(a["model"]["v_cls.weight"], b["model"]["v_cls.weight"])
    # The frozen encoder did not move.
    ref = torch.load(stores["ckpt"], weights_only=True)["state_dict"]
    for key, value in ref.items():
        torch.testing.assert_close(a["model"][f"encoder.{key}"], value)
    assert _run("recognize", base + ["--knn", "--run-dir", str(root / "knn")]) == 0
    assert 0 <= json.loads((root / "knn" / "summary.json").read_text())["knn_top1"] <= 1


def test_detect_end_to_end(stores):
    root = stores["root"]
    base = ["--data", stores["untrimmed"], "--recipe", str(stores["recipes"]["detection"])]
    # SDPA (what "auto" picks on CPU): the reference attention's masked_fill over every frame's clip took 3/4
    # of this test's time.
    assert _run("detect", base + ["--init", stores["ckpt"], "--mode", "finetune", "--tcn-layers", "3",
                                  "--run-dir", str(root / "det")],
                backend="sdpa") == 0
    s = json.loads((root / "det" / "summary.json").read_text())
    for key in ("mAP_a", "mAP_v", "mAP_b", "frame_acc"):
        assert 0 <= s["last_epoch"][key] <= 1
    assert s["gt_segments"] > 0 and (root / "det" / "test_frame_probs.pt").is_file()
    assert s["head_warmup"]["last_epoch"]["epoch"] == 1 and (root / "det" / "head-warmup" / "metrics.jsonl").is_file()
    probs = torch.load(root / "det" / "test_frame_probs.pt", weights_only=True)
    assert all(p.shape[1] == 4 for p in probs.values())  # 3 classes + background
    assert s["head"] == "tcn" and s["context_frames"] == 6 + 7  # the default head, 3 layers: +-13 raw frames
    assert _run("detect", base + ["--mode", "linear", "--protocol", "B", "--head", "clip",
                                  "--run-dir", str(root / "det-lin")], backend="sdpa") == 0
    s = json.loads((root / "det-lin" / "summary.json").read_text())
    assert "mAP_b" in s["last_epoch"] and "mAP_a" not in s["last_epoch"]
    assert s["head"] == "clip" and s["context_frames"] == 6
    assert _run("detect", base + ["--mode", "linear", "--features", "skeleton", "--tcn-layers", "2", "--protocol", "A",
                                  "--run-dir", str(root / "det-skeleton")]) == 0
    s = json.loads((root / "det-skeleton" / "summary.json").read_text())
    assert s["features"] == "skeleton" and s["head"] == "tcn" and 0 <= s["last_epoch"]["mAP_a"] <= 1


def test_predict_motion_end_to_end(stores, capsys):
    root = stores["root"]
    base = ["--data", stores["long"], "--recipe", str(stores["recipes"]["motion"]), "--observe", "20",
            "--horizon", "4"]
    assert _run("predict_motion", base + ["--init", stores["ckpt"], "--run-dir", str(root / "mot")]) == 0
    s = json.loads((root / "mot" / "summary.json").read_text())
    assert len(s["last_epoch"]["per_frame_mm"]) == 4 and len(s["zero_velocity"]["per_frame_mm"]) == 4
    assert s["last_epoch"]["mpjpe_mm"] > 0 and s["zero_velocity"]["mean_mm"] > 0
    assert s["constant_velocity"]["mean_mm"] > 0 and s["coordinates"] == "absolute (camera space)"
    assert s["head_warmup"]["last_epoch"]["epoch"] == 1
    # The fine-tune (after its head warm-up) resumes for a second epoch: the resume checks accept their own run.
    assert _run("predict_motion", base + ["--init", stores["ckpt"], "--epochs", "2", "--resume",
                                          "--run-dir", str(root / "mot")]) == 0
    assert json.loads((root / "mot" / "summary.json").read_text())["last_epoch"]["epoch"] == 2
    assert _run("predict_motion", base + ["--mode", "linear", "--run-dir", str(root / "mot-lin")]) == 0
    assert json.loads((root / "mot-lin" / "summary.json").read_text())["context_reader"] == "clips"
    # A checkpoint resumed by a differently built model: one line naming the checkpoint and a tensor, exit 2,
    # and the run's files as they were.
    before = {f: (root / "mot-lin" / f).read_bytes() for f in ("config.json", "checkpoint.pt", "summary.json")}
    capsys.readouterr()
    assert _run("predict_motion", base + ["--mode", "linear", "--context-reader", "last_clip", "--resume",
                                          "--run-dir", str(root / "mot-lin")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "checkpoint.pt was written for another model" in err and "clip_reader" in err, err
    assert "changed since the run started: --context-reader (run: 'clips', now 'last_clip')" in err, err
    assert before == {f: (root / "mot-lin" / f).read_bytes() for f in before}


def test_detection_ground_truth_runs():
    gt, dropped = ground_truth_segments(np.array([0, 2, 2, 2, 0, 0, 1, 3, 3, 0]))
    assert gt.tolist() == [[2, 1, 3], [3, 7, 8]] and dropped == 1  # the 1-frame run of class 1 is dropped


def test_bad_arguments_are_clear(stores, capsys):
    root, rec = stores["root"], str(stores["recipes"]["recognition"])
    stale = root / "detection-frames-per-window.json"  # a recipe written for the old per-frame sampling
    old = json.loads(stores["recipes"]["detection"].read_text())
    stale.write_text(json.dumps({**old, "common": {**old["common"], "frames_per_window": 4}}))
    base = ["--data", stores["trimmed"], "--recipe", rec]
    cases = [
        ("recognize", base + ["--mode", "scratch", "--init", stores["ckpt"]], "--mode scratch"),
        ("recognize", base + ["--label-fraction", "0"], "--label-fraction"),
        ("recognize", base + ["--init", str(root / "nope.pt")], "no such file"),
        ("recognize", base + ["--init", stores["ckpt"], "--preset", "official"], "does not match the checkpoint"),
        ("recognize", ["--fuse", str(root)], "at least 2"),
        ("recognize", ["--data", stores["trimmed"], "--recipe", str(stores["recipes"]["detection"])], "task"),
        ("recognize", ["--data", str(root)], "not a hitrs_fast store"),
        ("recognize", ["--data", stores["untrimmed"], "--recipe", rec], "labelled samples"),
        ("detect", ["--data", stores["trimmed"], "--recipe", str(stores["recipes"]["detection"])], "per-frame labels"),
        ("detect", ["--data", stores["untrimmed"], "--recipe", str(stores["recipes"]["detection"]),
                    "--context-clips", "0"], "--context-clips and --context-stride must be >= 1"),
        ("detect", ["--data", stores["untrimmed"], "--recipe", str(stores["recipes"]["detection"]),
                    "--tcn-layers", "0"], "--tcn-layers must be in [1, 12]"),
        ("detect", ["--data", stores["untrimmed"], "--recipe", str(stale)], "frames_per_window is no longer read"),
        ("detect", ["--data", stores["untrimmed"], "--recipe", str(stores["recipes"]["detection"]),
                    "--features", "skeleton"], "--features skeleton reads no encoder: it needs --mode linear"),
        ("predict_motion", ["--data", stores["long"], "--recipe", str(stores["recipes"]["motion"]),
                            "--velocity-frames", "0"], "and --velocity-frames must be >= 1"),
        ("predict_motion", ["--data", stores["long"], "--recipe", str(stores["recipes"]["motion"]), "--observe", "900"],
         "no window"),
    ]
    for name, argv, message in cases:
        capsys.readouterr()
        assert _run(name, argv + ["--run-dir", str(root / "bad")]) == 2, (name, argv)
        assert message in capsys.readouterr().err, (name, argv, message)
