"""Per-frame action detection (the paper's §4.5): a stride-1 clip centred on every frame goes through F-TRS
and C-TRS; a linear layer reads the C-TRS CLS."""

from __future__ import annotations

import torch
from torch import nn

from hitrs_fast.config import HiTRSConfig
from hitrs_fast.models import HiTRS, reduce_bodies
from hitrs_fast.tasks.features import set_feature_norm


def clip_context(config: HiTRSConfig) -> int:
    """Frames of context each side of a frame that its stride-1 clip reads: ``(clip_len // 2) * dilation``."""
    return config.clip_pad


class FrameDetector(nn.Module):
    """Per-frame action classifier (paper §4.5; the clip rule is our reading, the supplementary is not public).

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
        set_feature_norm(self.feature_mean, self.feature_std, features, "FrameDetector")

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
