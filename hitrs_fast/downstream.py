"""Downstream models on top of the Hi-TRS encoder: action recognition, per-frame action detection and
motion prediction, plus the joint / bone / motion input streams (``hitrs-model.md`` §6-§9).

Layouts follow :mod:`hitrs_fast.models`: skeletons ``[B, M, T, V, C]`` with per-sample ``lengths [B]``.

- :class:`ActionRecognizer`: the full encoder, bodies reduced by ``config.body_reduce`` (released: sum / 2),
  then ``v_cls`` (a linear layer) on the pooled V-TRS CLS.
- :class:`FrameDetector`: for every requested frame, the stride-1 clip centred on it (``clip_len`` frames,
  ``clip_dilation`` apart) goes through F-TRS + C-TRS; the C-TRS CLS of each body is reduced over bodies and
  a linear layer predicts ``K + 1`` classes (column 0 = background).
- :class:`MotionPredictor`: the encoder reads the observed frames; its V-TRS CLS and last clip embedding
  initialise a GRU decoder that predicts per-step offsets from the previous pose, starting at the last
  observed pose, for ``horizon`` frames.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from hitrs_fast.config import HiTRSConfig
from hitrs_fast.data.skeleton import PARENTS
from hitrs_fast.models import HiTRS, reduce_bodies, validate_skeletons

STREAMS = ("joint", "bone", "motion")
Stream = Literal["joint", "bone", "motion"]


# ----------------------------------------------------------------------------- input streams


def bone_stream(x: torch.Tensor) -> torch.Tensor:
    """Bone view ``b[v1] = x[v1] - x[v2]`` over the 25 NTU pairs (``data-formats.md`` §2; the root
    SpineShoulder pairs with itself, so its bone is 0). ``[..., V=25, C] -> [..., V, C]``.

    Zero frames (padding, absent bodies) stay zero.
    """
    if x.shape[-2] != len(PARENTS):
        raise ValueError(f"bone_stream: the bone pairs are defined for V={len(PARENTS)} joints, "
                         f"got V={x.shape[-2]} (shape {tuple(x.shape)})")
    parents = torch.as_tensor(PARENTS, device=x.device)
    return x - x.index_select(-2, parents)


def motion_stream(x: torch.Tensor, lengths: torch.Tensor | None = None, time_dim: int = 2) -> torch.Tensor:
    """Motion view, the backward difference ``m_t = x_t - x_{t-1}`` with ``m_0 = 0`` (``hitrs-model.md`` §9).

    Args:
        x: skeletons with time along ``time_dim`` (``[B, M, T, V, C]`` by default; batch first).
        lengths: ``[B]`` frames per sample; frames ``t >= lengths[b]`` are zeroed afterwards, so the
            step from the last real frame into the zero padding does not leak in. None: all frames real.
    """
    m = torch.zeros_like(x)
    src = x.narrow(time_dim, 1, x.shape[time_dim] - 1) - x.narrow(time_dim, 0, x.shape[time_dim] - 1)
    m.narrow(time_dim, 1, x.shape[time_dim] - 1).copy_(src)
    if lengths is not None:
        t = torch.arange(x.shape[time_dim], device=x.device)
        keep = t[None, :] < lengths.to(x.device)[:, None]  # [B, T]
        shape = [x.shape[0]] + [1] * (x.dim() - 1)
        shape[time_dim] = x.shape[time_dim]
        m = m * keep.view(shape).to(m.dtype)
    return m


def apply_stream(x: torch.Tensor, lengths: torch.Tensor | None, stream: str) -> torch.Tensor:
    """``joint`` (identity), ``bone`` or ``motion`` view of a ``[B, M, T, V, C]`` batch."""
    if stream == "joint":
        return x
    if stream == "bone":
        return bone_stream(x)
    if stream == "motion":
        return motion_stream(x, lengths, time_dim=2)
    raise ValueError(f"stream must be one of {STREAMS}, got {stream!r}")


# ----------------------------------------------------------------------------- recognition


def _set_norm(mean: torch.Tensor, std: torch.Tensor, features: torch.Tensor, who: str) -> None:
    if features.dim() != 2 or features.shape[1] != mean.shape[0] or features.shape[0] < 2:
        raise ValueError(f"{who}.set_feature_norm: expected [N >= 2, {mean.shape[0]}] features, "
                         f"got {tuple(features.shape)}")
    mean.copy_(features.mean(0))
    std.copy_(features.std(0).clamp_min(1e-6))


class ActionRecognizer(nn.Module):
    """Encoder + ``v_cls``: ``forward(x [B, M, T, V, C], lengths [B]) -> logits [B, num_classes]``.

    ``features(x, lengths) -> [B, video_dim]`` is the pooled V-TRS CLS (kNN, linear evaluation). The head
    reads ``(features - feature_mean) / feature_std``; both buffers are the identity (0 / 1) unless
    :meth:`set_feature_norm` fixes them, which linear evaluation of a frozen encoder may do with the
    training features' statistics (a fixed affine map, so the head is still linear in the features).
    """

    def __init__(self, encoder: HiTRS, num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"ActionRecognizer: num_classes must be >= 2, got {num_classes}")
        self.encoder = encoder
        self.v_cls = nn.Linear(encoder.config.video_dim, num_classes)
        self.register_buffer("feature_mean", torch.zeros(encoder.config.video_dim))
        self.register_buffer("feature_std", torch.ones(encoder.config.video_dim))

    def set_feature_norm(self, features: torch.Tensor) -> None:
        """Fix the head's input normalisation to the mean / std of ``features [N, video_dim]``."""
        _set_norm(self.feature_mean, self.feature_std, features, "ActionRecognizer")

    def features(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder(x, lengths).pooled

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """``v_cls`` on normalised features: ``[B, video_dim] -> [B, num_classes]``."""
        return self.v_cls((features - self.feature_mean) / self.feature_std)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.classify(self.features(x, lengths))


# ----------------------------------------------------------------------------- detection


def clip_context(config: HiTRSConfig) -> int:
    """Frames of context each side of a frame that its stride-1 clip reads: ``(clip_len // 2) * dilation``."""
    return config.clip_pad


class FrameDetector(nn.Module):
    """Per-frame action classifier (``hitrs-model.md`` §7, paper §4.5).

    ``forward(x_ctx [B, M, L + 2 P, V, C], frames [N], owner [N]) -> logits [N, num_classes + 1]``

    ``x_ctx`` holds ``B`` windows with ``P = clip_context(config)`` context frames on each side (zeros where
    the window runs past its sequence, which is what the pre-training padding looks like). ``frames[n]`` is
    a 0-based frame inside window ``owner[n]`` (``0 <= frames < L``); its clip takes window frames
    ``frames[n] + dilation * i`` of ``x_ctx`` (i.e. raw frames ``f - P .. f + P`` step ``dilation``). F-TRS
    runs once per context frame, C-TRS once per requested frame and body; nothing loops over frames in
    Python.

    The head reads ``(features - feature_mean) / feature_std`` (identity buffers unless
    :meth:`set_feature_norm` fixes them from a frozen encoder's training features).
    """

    def __init__(self, encoder: HiTRS, num_classes: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"FrameDetector: num_classes (without background) must be >= 1, got {num_classes}")
        self.encoder = encoder
        self.num_classes = num_classes
        self.head = nn.Linear(encoder.config.clip_dim, num_classes + 1)
        self.register_buffer("feature_mean", torch.zeros(encoder.config.clip_dim))
        self.register_buffer("feature_std", torch.ones(encoder.config.clip_dim))

    def set_feature_norm(self, features: torch.Tensor) -> None:
        """Fix the head's input normalisation to the mean / std of ``features [N, clip_dim]``."""
        _set_norm(self.feature_mean, self.feature_std, features, "FrameDetector")

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Head on normalised clip features: ``[N, clip_dim] -> [N, num_classes + 1]``."""
        return self.head((features - self.feature_mean) / self.feature_std)

    def clip_features(self, x_ctx: torch.Tensor, frames: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        """C-TRS embedding of each requested frame's clip, bodies reduced: ``[N, clip_dim]``."""
        cfg = self.encoder.config
        if x_ctx.dim() != 5 or x_ctx.shape[-2:] != (cfg.num_joints, cfg.in_channels):
            raise ValueError(f"x_ctx: expected [B, M, L + 2P, V={cfg.num_joints}, C={cfg.in_channels}], "
                             f"got shape {tuple(x_ctx.shape)}")
        b, m, t_ctx = x_ctx.shape[:3]
        window = t_ctx - 2 * cfg.clip_pad
        if frames.shape != owner.shape or frames.dim() != 1:
            raise ValueError(f"frames / owner: expected two [N] tensors, got {tuple(frames.shape)} and "
                             f"{tuple(owner.shape)}")
        if frames.numel() and (int(frames.min()) < 0 or int(frames.max()) >= window
                               or int(owner.min()) < 0 or int(owner.max()) >= b):
            raise ValueError(f"frames must lie in [0, {window}) and owner in [0, {b}) for x_ctx of shape "
                             f"{tuple(x_ctx.shape)} (context {cfg.clip_pad} each side)")
        enc = self.encoder
        batch = enc.prepare(x_ctx, name="x_ctx")  # the whole window is the sequence: centred by the encoder's rule
        feats = enc.encode_frames(batch, pad=False)  # [B * M, L + 2P, V, d]: the windows carry their context
        idx = frames[:, None] + torch.arange(cfg.clip_len, device=x_ctx.device) * cfg.clip_dilation  # [N, F]
        body = torch.arange(m, device=x_ctx.device)
        rows = (owner[:, None] * m + body[None, :]).flatten()  # [N * M]
        emb = enc.encode_clip_positions(feats, rows, idx.repeat_interleave(m, 0)).view(frames.shape[0], m, -1)
        # A body is present in a clip when any of its clip frames is non-zero.
        raw = x_ctx[owner[:, None, None], body[None, :, None], idx[:, None, :]]
        present = raw.abs().sum(dim=(2, 3, 4)) > 0  # [N, M]
        return reduce_bodies(emb, present, cfg.body_reduce)

    def forward(self, x_ctx: torch.Tensor, frames: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        return self.classify(self.clip_features(x_ctx, frames, owner))


# ----------------------------------------------------------------------------- motion prediction


class MotionPredictor(nn.Module):
    """Observe ``T_obs`` frames, predict the next ``horizon`` (paper §4.6: 60 -> 12 at 30 fps).

    ``forward(observed [B, T_obs, V, C]) -> future [B, horizon, V, C]`` (one body, metres).

    The encoder reads the observed frames as a one-body sample; ``context = [V-TRS CLS, last clip
    embedding]`` initialises a GRU (``hidden`` units). At step ``k`` the GRU reads the current pose and
    velocity relative to the last observed root position and outputs an offset added to the current pose
    (step 0 starts from the last observed pose, so an untrained decoder with zero output is the
    zero-velocity baseline).
    """

    def __init__(self, encoder: HiTRS, horizon: int = 12, hidden: int = 256) -> None:
        super().__init__()
        if horizon < 1 or hidden < 1:
            raise ValueError(f"MotionPredictor: horizon and hidden must be >= 1, got {horizon}, {hidden}")
        cfg = encoder.config
        self.encoder = encoder
        self.horizon = horizon
        pose = cfg.num_joints * cfg.in_channels
        self.init_hidden = nn.Sequential(nn.Linear(cfg.video_dim + cfg.clip_dim, hidden), nn.Tanh())
        self.gru = nn.GRUCell(2 * pose, hidden)
        self.out = nn.Linear(hidden, pose)
        # Zero-initialised output: training starts exactly at the zero-velocity baseline.
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def context(self, observed: torch.Tensor) -> torch.Tensor:
        """``[B, T_obs, V, C] -> [B, video_dim + clip_dim]``."""
        out = self.encoder(observed[:, None])
        last_clip = out.clip_embeddings[:, 0].gather(
            1, (out.num_clips - 1).view(-1, 1, 1).expand(-1, 1, out.clip_embeddings.shape[-1]))[:, 0]
        return torch.cat([out.video_embeddings[:, 0], last_clip], dim=-1)

    def forward(self, observed: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """``observed [B, T_obs, V, C]`` -> ``[B, horizon, V, C]``. ``context`` (``[B, video_dim + clip_dim]``,
        from :meth:`context`) may be passed precomputed, e.g. cached once for a frozen encoder."""
        cfg = self.encoder.config
        if observed.dim() != 4 or observed.shape[1] < 2:
            raise ValueError(f"observed: expected [B, T_obs >= 2, V, C], got shape {tuple(observed.shape)}")
        validate_skeletons(observed[:, None], None, cfg, name="observed")
        b, _, v, c = observed.shape
        if context is None:
            context = self.context(observed)
        elif context.shape != (b, cfg.video_dim + cfg.clip_dim):
            raise ValueError(f"context: expected [{b}, {cfg.video_dim + cfg.clip_dim}], got {tuple(context.shape)}")
        h = self.init_hidden(context)
        root = observed[:, -1:, :1]  # [B, 1, 1, C]: translation reference, so the decoder is position-free
        pose = observed[:, -1]
        velocity = observed[:, -1] - observed[:, -2]
        preds = []
        for _ in range(self.horizon):  # horizon is ~12 steps; the loop is over time, not over samples
            inp = torch.cat([(pose - root[:, 0]).reshape(b, v * c), velocity.reshape(b, v * c)], dim=-1)
            h = self.gru(inp, h)
            nxt = pose + self.out(h).view(b, v, c)
            velocity, pose = nxt - pose, nxt
            preds.append(nxt)
        return torch.stack(preds, dim=1)


def euclidean_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean distance between predicted and true joints, ``[..., C]`` -> scalar (the training loss)."""
    return torch.linalg.vector_norm(pred - target, dim=-1).mean()


__all__ = ["STREAMS", "ActionRecognizer", "FrameDetector", "MotionPredictor", "apply_stream", "bone_stream",
           "clip_context", "euclidean_loss", "motion_stream", "reduce_bodies"]
