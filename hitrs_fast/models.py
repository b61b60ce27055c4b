"""The Hi-TRS encoder: F-TRS (frame), C-TRS (clip) and V-TRS (video) Transformers.

Layouts (see README): data ``[B, M, T, V, C]`` with per-sample ``lengths [B]``; inside
the model clips are ``[B, W, F, V, D]``. C-TRS tokens are frame-major with CLS last
(``[N, F*V + 1, D]``), V-TRS tokens are the W clip embeddings with CLS last.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hitrs_fast.attention import MultiHeadAttention
from hitrs_fast.config import HiTRSConfig
from hitrs_fast.embedding import JointEmbedding
from hitrs_fast.masks import AttentionMask, FrameMask, KeyPaddingMask, NoMask
from hitrs_fast.normalize import apply_centering
from hitrs_fast.posenc import sinusoid_1d, sinusoid_2d
from hitrs_fast.windowing import clip_frame_indices, num_clips, pad_frames


class FeedForward(nn.Module):
    """Linear -> exact GELU -> Linear, ``[..., d] -> [..., d]``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(nn.functional.gelu(self.fc1(x)))


class TransformerLayer(nn.Module):
    """Pre-LN layer of the released code; dropout only after the attention output
    projection and after the FFN (none on the attention probabilities)."""

    def __init__(self, dim: int, ffn: int, num_heads: int, head_dim: int, dropout: float, backend: str) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, num_heads, head_dim, backend=backend)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: AttentionMask) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.attn_norm(x), mask))
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


class TransformerStack(nn.Module):
    """``num_layers`` pre-LN layers and no final LayerNorm (as released)."""

    def __init__(self, num_layers: int, dim: int, ffn: int, config: HiTRSConfig, backend: str) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerLayer(dim, ffn, config.num_heads, config.head_dim, config.dropout, backend)
            for _ in range(num_layers))

    def forward(self, x: torch.Tensor, mask: AttentionMask) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return x


class FrameEncoder(nn.Module):
    """F-TRS: joint embedding + Transformer over the V joints of each frame.

    ``forward(x [N, V, C]) -> [N, V, frame_dim]``.
    """

    def __init__(self, config: HiTRSConfig, backend: str = "auto") -> None:
        super().__init__()
        self.embedding = JointEmbedding(config.num_joints, config.in_channels, config.frame_dim, backend=backend)
        self.transformer = TransformerStack(config.frame_layers, config.frame_dim, config.frame_ffn, config, backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.transformer(self.embedding(x), NoMask())


class ClipEncoder(nn.Module):
    """C-TRS: Transformer over the F*V joint tokens of a clip plus a CLS token (last).

    Tokens get a learnable 2-D (frame, joint) positional embedding; CLS gets none. The
    frame mask stops joints of one frame from attending to each other.

    ``forward(clips [N, F, V, frame_dim]) -> CLS [N, clip_dim]``.
    """

    def __init__(self, config: HiTRSConfig, backend: str = "auto") -> None:
        super().__init__()
        self.mask = FrameMask(config.num_joints, config.clip_len, cls="last", allow_self=config.allow_self)
        self.input_map = nn.Linear(config.frame_dim, config.clip_dim)
        self.pos = nn.Parameter(sinusoid_2d(config.clip_len, config.num_joints, config.clip_dim))
        self.cls_token = nn.Parameter(torch.rand(1, 1, config.clip_dim))
        self.transformer = TransformerStack(config.clip_layers, config.clip_dim, config.clip_ffn, config, backend)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        n = clips.shape[0]
        tokens = (self.input_map(clips) + self.pos).flatten(1, 2)
        tokens = torch.cat([tokens, self.cls_token.expand(n, -1, -1)], dim=1)
        return self.transformer(tokens, self.mask)[:, -1]


class VideoEncoder(nn.Module):
    """V-TRS: Transformer over a sample's clip embeddings plus a CLS token (last).

    ``forward(clips [B, W, clip_dim], lengths [B]) -> CLS [B, video_dim]``; clip slots
    at or beyond ``lengths[b]`` are key-masked.
    """

    def __init__(self, config: HiTRSConfig, backend: str = "auto") -> None:
        super().__init__()
        self.max_clips = config.max_clips
        self.input_map = nn.Linear(config.clip_dim, config.video_dim)
        self.pos = nn.Parameter(sinusoid_1d(config.max_clips, config.video_dim))
        self.cls_token = nn.Parameter(torch.rand(1, 1, config.video_dim))
        self.transformer = TransformerStack(config.video_layers, config.video_dim, config.video_ffn, config, backend)

    def forward(self, clips: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        b, w, _ = clips.shape
        if w > self.max_clips:
            raise ValueError(f"V-TRS supports at most {self.max_clips} clips (positional embedding size), got {w}; "
                             "raise HiTRSConfig.max_clips or shorten the sequences")
        tokens = self.input_map(clips) + self.pos[:w]
        tokens = torch.cat([tokens, self.cls_token.expand(b, -1, -1)], dim=1)
        return self.transformer(tokens, KeyPaddingMask(lengths, cls_last=True))[:, -1]


@dataclass
class HiTRSOutput:
    """Encoder outputs at every level (downstream tasks use different ones).

    frame_features: ``[B, M, T, V, frame_dim]`` F-TRS tokens of raw frames (zeros past each length).
    clip_embeddings: ``[B, M, W, clip_dim]`` C-TRS CLS per clip (zeros past each sample's clip count).
    video_embeddings: ``[B, M, video_dim]`` V-TRS CLS per body.
    pooled: ``[B, video_dim]`` bodies combined by ``config.body_reduce``.
    num_clips: ``[B]`` clips per sample, ``ceil(T / stride)``.
    """

    frame_features: torch.Tensor
    clip_embeddings: torch.Tensor
    video_embeddings: torch.Tensor
    pooled: torch.Tensor
    num_clips: torch.Tensor


def validate_skeletons(x: torch.Tensor, lengths: torch.Tensor | None, config: HiTRSConfig,
                       min_length: int = 1, name: str = "x") -> torch.Tensor:
    """Checks a ``[B, M, T, V, C]`` batch and returns int64 lengths ``[B]``.

    Raises ValueError naming the tensor and what was expected.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 5:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a [B, M, T, V, C] tensor, got shape {shape}")
    b, _, t, v, c = x.shape
    if v != config.num_joints or c != config.in_channels:
        raise ValueError(f"{name}: expected V={config.num_joints} joints and C={config.in_channels} channels "
                         f"in [B, M, T, V, C], got V={v}, C={c} (shape {tuple(x.shape)})")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got {x.dtype}")
    if lengths is None:
        lengths = torch.full((b,), t, dtype=torch.long, device=x.device)
    if lengths.dim() != 1 or lengths.shape[0] != b or lengths.is_floating_point():
        raise ValueError(f"lengths: expected an integer tensor of shape [{b}], "
                         f"got {lengths.dtype} {tuple(lengths.shape)}")
    lengths = lengths.to(device=x.device, dtype=torch.long)
    lo, hi = int(lengths.min()), int(lengths.max())
    if hi > t:
        raise ValueError(f"lengths: a length of {hi} frames exceeds the tensor's T={t} ({name} shape {tuple(x.shape)})")
    if lo < min_length:
        raise ValueError(f"lengths: every sample needs at least {min_length} frames, got a sample of {lo}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: contains NaN or inf coordinates")
    return lengths


def zero_beyond_lengths(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zeroes frames ``t >= lengths[b]`` of ``[B, T, ...]`` (they are zero padding by definition)."""
    keep = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
    return x * keep.view(*keep.shape, *([1] * (x.dim() - 2))).to(x.dtype)


class HiTRS(nn.Module):
    """Hi-TRS encoder.

    Args:
        config: a :class:`HiTRSConfig` (default: the ``official`` preset).
        backend: attention / embedding backend, ``"auto"``, ``"torch"`` (the reference) or
            ``"triton"``. Weights are identical under every backend.

    ``forward(x [B, M, T, V, C], lengths [B] | None) -> HiTRSOutput``. Bodies are folded
    into the batch (no cross-body attention) and combined after V-TRS.

    Examples::

        model = HiTRS(HiTRSConfig.preset("tiny"))
        out = model(torch.randn(2, 2, 40, 25, 3), torch.tensor([40, 33]))
        out.pooled.shape  # [2, 64]
    """

    def __init__(self, config: HiTRSConfig | None = None, backend: str = "auto") -> None:
        super().__init__()
        self.config = config = config or HiTRSConfig()
        self.backend = backend
        self.frame_encoder = FrameEncoder(config, backend)
        self.clip_encoder = ClipEncoder(config, backend)
        self.video_encoder = VideoEncoder(config, backend)

    # The three stages, usable on their own.

    def encode_padded_frames(self, x_padded: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """F-TRS over the padded frames each sample owns (its ``T + 2 pad``; batch padding
        beyond that is skipped). ``[B, T_pad, V, C] -> [B, T_pad, V, frame_dim]``."""
        keep = torch.arange(x_padded.shape[1], device=x_padded.device)[None, :] < (
            lengths + 2 * self.config.clip_pad)[:, None]
        feats = self.frame_encoder(x_padded[keep])  # [n_frames, V, d]
        return feats.new_zeros(*x_padded.shape[:3], feats.shape[-1]).index_put((keep,), feats)

    def encode_clips(self, clip_frames: torch.Tensor) -> torch.Tensor:
        """C-TRS. ``[N, F, V, frame_dim] -> [N, clip_dim]``."""
        return self.clip_encoder(clip_frames)

    def encode_video(self, clip_embeddings: torch.Tensor, num_clips: torch.Tensor) -> torch.Tensor:
        """V-TRS. ``[B, W, clip_dim], [B] -> [B, video_dim]``."""
        return self.video_encoder(clip_embeddings, num_clips)

    def encode_clip_sequence(self, frame_features: torch.Tensor, clip_counts: torch.Tensor,
                             clip_indices: torch.Tensor) -> torch.Tensor:
        """Gathers clips from padded frame features and runs C-TRS on the real ones.

        frame_features ``[B, T_pad, V, d]``, clip_counts ``[B]``, clip_indices ``[W, F]``
        -> ``[B, W, clip_dim]`` with zeros in slots ``>= clip_counts[b]``.
        """
        b, w = frame_features.shape[0], clip_indices.shape[0]
        real = torch.arange(w, device=frame_features.device)[None, :] < clip_counts[:, None]
        clips = frame_features[:, clip_indices]  # [B, W, F, V, d]
        emb = self.encode_clips(clips[real])  # [n_real, clip_dim]
        return emb.new_zeros(b, w, emb.shape[-1]).index_put((real,), emb)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> HiTRSOutput:
        cfg = self.config
        lengths = validate_skeletons(x, lengths, cfg)
        x = apply_centering(x, lengths, cfg.centering, cfg.center_joint)
        b, m = x.shape[:2]
        t_max = int(lengths.max())
        folded = x[:, :, :t_max].flatten(0, 1)  # [B*M, T, V, C]
        folded_len = lengths.repeat_interleave(m)
        folded = zero_beyond_lengths(folded, folded_len)
        w_per = num_clips(folded_len, cfg)
        w_max = int(w_per.max())
        frames = self.encode_padded_frames(pad_frames(folded, cfg), folded_len)
        clips = self.encode_clip_sequence(frames, w_per, clip_frame_indices(w_max, cfg, x.device))
        video = self.encode_video(clips, w_per)

        video = video.view(b, m, -1)
        if cfg.body_reduce == "sum_div_2":
            # Divide by the slot count even for an empty body: the released fine-tuning does sum / 2.
            pooled = video.sum(1) / m
        else:
            present = (x[:, :, :t_max].abs().sum(dim=(2, 3, 4)) > 0).to(video.dtype)  # [B, M]
            pooled = (video * present[..., None]).sum(1) / present.sum(1, keepdim=True).clamp_min(1)
        frame_features = frames[:, cfg.clip_pad:cfg.clip_pad + t_max]
        frame_features = zero_beyond_lengths(frame_features, folded_len)
        return HiTRSOutput(
            frame_features=frame_features.view(b, m, t_max, cfg.num_joints, -1),
            clip_embeddings=clips.view(b, m, w_max, -1),
            video_embeddings=video,
            pooled=pooled,
            num_clips=w_per.view(b, m)[:, 0],
        )


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def expected_encoder_parameters(config: HiTRSConfig) -> int:
    """Closed-form parameter count of :class:`HiTRS` (the spec's check values)."""
    inner = config.num_heads * config.head_dim

    def layer(d: int, ffn: int) -> int:
        return 4 * d + 3 * d * inner + inner * d + 2 * d * ffn + ffn + d

    c = config
    frame = (c.in_channels + 1) * c.frame_dim + 2 * c.frame_dim + c.num_joints * c.frame_dim
    clip = (c.frame_dim + 1) * c.clip_dim + c.clip_len * c.num_joints * c.clip_dim + c.clip_dim
    video = (c.clip_dim + 1) * c.video_dim + c.max_clips * c.video_dim + c.video_dim
    return (frame + clip + video + c.frame_layers * layer(c.frame_dim, c.frame_ffn)
            + c.clip_layers * layer(c.clip_dim, c.clip_ffn) + c.video_layers * layer(c.video_dim, c.video_ffn))


__all__ = ["HiTRS", "HiTRSOutput", "FrameEncoder", "ClipEncoder", "VideoEncoder", "TransformerLayer",
           "count_parameters", "expected_encoder_parameters", "validate_skeletons"]
