"""Per-frame action detection (the paper's §4.5) with three heads on the Hi-TRS encoder.

- ``head="clip"`` (the paper's rule): the stride-1 clip centred on every frame goes through F-TRS and C-TRS;
  a linear layer reads the C-TRS CLS.
- ``head="tcn"`` (the default of the commands): the frame sees its action's context through a dilated
  temporal convolution over the stride-1 clip embeddings around it, one stage of MS-TCN (Farha and Gall,
  CVPR 2019, arXiv:1903.01945): ``tcn_layers`` residual layers of kernel 3 and dilation 1, 2, 4, ..., so
  frame ``f`` reads the clips centred on ``f - (2^layers - 1) .. f + (2^layers - 1)``.
- ``head="context"`` (the runner-up): the clip embeddings centred on ``f + k * context_stride`` for ``|k| <=
  context_clips`` through one hidden layer whose kernel spans them, then a linear layer.

``features="skeleton"`` puts each frame's raw skeleton (root-relative joints and their velocity, bodies side
by side) where the clip embedding was, without the encoder: a supervised reference of what a head can learn
from the data themselves.
"""

from __future__ import annotations

import torch
from torch import nn

from hitrs_fast.models import HiTRS, reduce_bodies
from hitrs_fast.normalize import apply_centering
from hitrs_fast.tasks.features import set_feature_norm

DETECTION_HEADS = ("clip", "tcn", "context")
FRAME_FEATURES = ("clips", "skeleton")


class DilatedTemporalConv(nn.Module):
    """One MS-TCN stage without padding: ``[B, T + 2 r, dim] -> [B, T, out]``, ``r = 2^layers - 1``.

    A 1x1 convolution to ``hidden`` channels, ``layers`` residual layers (ReLU of a kernel-3 convolution of
    dilation ``2^i``, a 1x1 convolution, dropout) and a 1x1 convolution to ``out``. Every convolution is
    "valid", so output ``t`` reads inputs ``t .. t + 2 r`` and nothing else (a window's edges never see
    padding; zeros past a sequence come from the caller). The convolutions are matrix products over the
    channels of the (shifted) frames: the CPU's ``Conv1d`` sums in an order that depends on the thread count,
    a GEMM under MKL's strict mode does not (``tests/models/test_thread_invariance.py``).
    """

    def __init__(self, dim: int, out: int, layers: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.dilations = [2 ** i for i in range(layers)]
        self.reach = sum(self.dilations)
        self.proj = nn.Linear(dim, hidden)
        self.temporal = nn.ModuleList(nn.Linear(3 * hidden, hidden) for _ in self.dilations)  # taps t-d, t, t+d
        self.mix = nn.ModuleList(nn.Linear(hidden, hidden) for _ in self.dilations)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.proj(x)  # [B, T + 2 r, hidden]
        for d, conv, mix in zip(self.dilations, self.temporal, self.mix, strict=True):
            centre = z[:, d:-d]
            taps = torch.cat([z[:, :-2 * d], centre, z[:, 2 * d:]], dim=-1)
            z = centre + self.drop(mix(torch.relu(conv(taps))))
        return self.out(z)


class FrameDetector(nn.Module):
    """Per-frame action classifier over ``K + 1`` classes (column 0 = background).

    ``forward(x_ctx [B, M, L + 2 P, V, C], frames [N], owner [N]) -> logits [N, num_classes + 1]``;
    :meth:`window_logits` classifies every frame of the windows at once (``[B, L, num_classes + 1]``).

    ``x_ctx`` holds ``B`` windows with ``P = self.context`` frames of context on each side (zeros where the
    window runs past its sequence, which is what the pre-training padding looks like), cut from videos that
    :meth:`centre_video` centred as a whole: the encoder's centring applied to each window would move its
    origin with the window's start, so a frame's clip embedding would depend on how a video is windowed.
    ``frames[n]`` is a 0-based frame inside window ``owner[n]`` (``0 <= frames < L``); its output depends on
    window frames ``frames[n] .. frames[n] + 2 P`` only (raw frames ``f - P .. f + P``).

    Every head reads stride-1 clip embeddings: the clip centred on raw frame ``c`` (frames ``c - 6, c - 4,
    .., c + 6`` for 7 / 2) through F-TRS + C-TRS, bodies reduced by ``body_reduce`` (:meth:`clip_embeddings`),
    those centred on ``f + offsets`` for frame ``f`` (``P = clip_pad + radius``):

    - ``"clip"`` (paper §4.5; the clip rule is our reading, the supplementary is not public): the clip
      centred on the frame, then a linear layer (offsets ``[0]``).
    - ``"tcn"``: :class:`DilatedTemporalConv` over the ``2 r + 1`` clips centred on ``f - r .. f + r``
      (``r = 2^tcn_layers - 1``, ``hidden`` channels).
    - ``"context"``: the ``W = 2 R + 1`` clips centred on ``f + k * S``, ``k = -R..R`` (``R = context_clips``,
      ``S = context_stride``), then ``Linear(W * clip_dim, hidden)``, GELU, dropout and a linear layer.

    With ``features="skeleton"`` the "clip" of frame ``c`` is its raw skeleton instead (:meth:`skeleton_features`;
    the encoder is not used). A clip whose centre frame holds no body (past the sequence ends) enters as zeros.
    Clip embeddings enter
    as ``(embedding - feature_mean) / feature_std`` (identity buffers unless :meth:`set_feature_norm` fixes
    them from a frozen encoder's training clips). F-TRS runs once per window frame and C-TRS once per needed
    clip and body, shared by the frames that read it; nothing loops over frames in Python.
    """

    def __init__(self, encoder: HiTRS, num_classes: int, head: str = "clip", context_clips: int = 8,
                 context_stride: int = 4, hidden: int = 256, dropout: float = 0.2, tcn_layers: int = 6,
                 features: str = "clips", skeleton_bodies: int = 2) -> None:
        super().__init__()
        if features not in FRAME_FEATURES:
            raise ValueError(f"FrameDetector: features must be one of {FRAME_FEATURES}, got {features!r}")
        if num_classes < 1:
            raise ValueError(f"FrameDetector: num_classes (without background) must be >= 1, got {num_classes}")
        if head not in DETECTION_HEADS:
            raise ValueError(f"FrameDetector: head must be one of {DETECTION_HEADS}, got {head!r}")
        if head == "context" and (context_clips < 1 or context_stride < 1 or hidden < 1):
            raise ValueError(f"FrameDetector: context_clips, context_stride and hidden must be >= 1, got "
                             f"{context_clips}, {context_stride}, {hidden}")
        if head == "tcn" and (tcn_layers < 1 or hidden < 1):
            raise ValueError(f"FrameDetector: tcn_layers and hidden must be >= 1, got {tcn_layers}, {hidden}")
        cfg = encoder.config
        dim = cfg.clip_dim if features == "clips" else 2 * skeleton_bodies * cfg.num_joints * cfg.in_channels
        self.features = features
        self.encoder = encoder
        self.num_classes = num_classes
        self.head_kind = head
        if head == "clip":
            self.context_clips, self.context_stride = 0, 1
            self.head = nn.Linear(dim, num_classes + 1)
        elif head == "tcn":
            self.head = DilatedTemporalConv(dim, num_classes + 1, tcn_layers, hidden, dropout)
            self.context_clips, self.context_stride = self.head.reach, 1
        else:
            self.context_clips, self.context_stride = context_clips, context_stride
            self.head = nn.Sequential(nn.Flatten(1), nn.Linear((2 * context_clips + 1) * dim, hidden), nn.GELU(),
                                      nn.Dropout(dropout), nn.Linear(hidden, num_classes + 1))
        self.radius = self.context_clips * self.context_stride  # clip centres each side of the frame
        self.register_buffer("feature_mean", torch.zeros(dim))
        self.register_buffer("feature_std", torch.ones(dim))

    @property
    def context(self) -> int:
        """Raw frames each side of a frame that its output reads (``P`` of ``x_ctx``)."""
        return self.encoder.config.clip_pad + self.radius

    @property
    def offsets(self) -> torch.Tensor:
        """Clip centres relative to the frame: ``[W]`` int64, ``-radius .. radius`` step ``context_stride``."""
        return torch.arange(-self.context_clips, self.context_clips + 1) * self.context_stride

    def centre_video(self, video: torch.Tensor) -> torch.Tensor:
        """A whole video ``[M, T, V, C]`` in the coordinates its windows are cut from: the encoder's
        ``config.centering`` applied to the video as one sample (the clip embeddings of a frame are then those
        of the whole video encoded at once, whatever window it is read through)."""
        cfg = self.encoder.config
        lengths = torch.tensor([video.shape[1]], device=video.device)
        return apply_centering(video[None], lengths, cfg.centering, cfg.center_joint)[0]

    def set_feature_norm(self, features: torch.Tensor) -> None:
        """Fix the clip embeddings' normalisation to the mean / std of ``features [N, clip_dim]``."""
        set_feature_norm(self.feature_mean, self.feature_std, features, "FrameDetector")

    def classify(self, clips: torch.Tensor, occupied: torch.Tensor) -> torch.Tensor:
        """The head on each frame's clip embeddings ``[N, W, clip_dim]`` (those at :attr:`offsets`) with
        ``occupied [N, W]`` (False: a clip past the sequence, read as zeros) -> ``[N, num_classes + 1]``."""
        if self.head_kind == "clip":  # the frame's own clip, as released (the frame lies in its sequence)
            return self.head(self._normalised(clips[:, :1], None)[:, 0])
        x = self._normalised(clips, occupied)
        return self.head(x)[:, 0] if self.head_kind == "tcn" else self.head(x)

    def _normalised(self, clips: torch.Tensor, occupied: torch.Tensor | None) -> torch.Tensor:
        """``(clips - feature_mean) / feature_std``, zero where ``occupied`` is False (not masked when None)."""
        x = (clips - self.feature_mean) / self.feature_std
        return x if occupied is None else x * occupied[..., None].to(x.dtype)

    def classify_windows(self, clips: torch.Tensor, occupied: torch.Tensor) -> torch.Tensor:
        """Every frame of windows of stride-1 clip embeddings: ``clips [B, T + 2 radius, clip_dim]`` (the clip
        centred on every frame from ``radius`` before the first to ``radius`` after the last) and ``occupied
        [B, T + 2 radius]`` -> ``[B, T, num_classes + 1]``; frame ``t`` = :meth:`classify` of its clips."""
        b, span = clips.shape[:2]
        t = span - 2 * self.radius
        if t < 1 or occupied.shape != clips.shape[:2]:
            raise ValueError(f"classify_windows: expected clips [B, T + {2 * self.radius}, D] with T >= 1 and "
                             f"occupied [B, T + {2 * self.radius}], got {tuple(clips.shape)} and "
                             f"{tuple(occupied.shape)}")
        if self.head_kind == "tcn":  # the convolution slides over the window: each clip is read once
            return self.head(self._normalised(clips, occupied))
        at = torch.arange(t, device=clips.device)[:, None] + self.radius + self.offsets.to(clips.device)  # [T, W]
        logits = self.classify(clips[:, at].flatten(0, 1), occupied[:, at].flatten(0, 1))
        return logits.view(b, t, -1)

    def clip_embeddings(self, x_ctx: torch.Tensor, centres: torch.Tensor, owner: torch.Tensor) -> tuple[
            torch.Tensor, torch.Tensor]:
        """Stride-1 clip embeddings, bodies reduced: ``(embeddings [N, clip_dim], occupied [N])`` (with
        ``features="skeleton"``: :meth:`skeleton_features`).

        ``centres [N]``: clip centres as indices into ``x_ctx``'s frames (``clip_pad <= centres < L + 2 P -
        clip_pad``) of windows ``owner [N]``. ``occupied``: some body is present in the centre frame. A body
        counts in the reduction when any frame of its clip is non-zero.
        """
        if self.features == "skeleton":
            return self.skeleton_features(x_ctx, centres, owner)
        cfg = self.encoder.config
        enc = self.encoder
        batch = enc.prepare(x_ctx, name="x_ctx", centering="none")  # the video was centred (centre_video)
        frames = enc.encode_frames(batch, pad=False)  # [B * M, L + 2P, V, d]: the windows carry their context
        m = x_ctx.shape[1]
        idx = centres[:, None] - cfg.clip_pad + torch.arange(cfg.clip_len, device=x_ctx.device) * cfg.clip_dilation
        body = torch.arange(m, device=x_ctx.device)
        rows = (owner[:, None] * m + body[None, :]).flatten()  # [N * M]
        emb = enc.encode_clip_positions(frames, rows, idx.repeat_interleave(m, 0)).view(centres.shape[0], m, -1)
        raw = x_ctx[owner[:, None, None], body[None, :, None], idx[:, None, :]]  # [N, M, F, V, C]
        present = raw.abs().sum(dim=(2, 3, 4)) > 0  # [N, M]
        occupied = x_ctx[owner, :, centres].flatten(1).abs().sum(-1) > 0
        return reduce_bodies(emb, present, cfg.body_reduce), occupied

    @staticmethod
    def skeleton_features(x_ctx: torch.Tensor, centres: torch.Tensor, owner: torch.Tensor) -> tuple[
            torch.Tensor, torch.Tensor]:
        """Raw frames ``centres [N]`` of windows ``owner [N]``: ``([N, 2 * M * V * C], occupied [N])``, each
        body's joints relative to its first joint (the root) and their change since the previous frame (zero
        where the body is absent in either frame), bodies side by side."""
        cur = x_ctx[owner, :, centres]  # [N, M, V, C]
        prev = x_ctx[owner, :, (centres - 1).clamp_min(0)]
        present = cur.flatten(2).abs().sum(-1) > 0  # [N, M]
        moved = present & (prev.flatten(2).abs().sum(-1) > 0) & (centres > 0)[:, None]
        velocity = (cur - prev) * moved[..., None, None].to(cur.dtype)
        return torch.cat([(cur - cur[:, :, :1]).flatten(1), velocity.flatten(1)], 1), present.any(1)

    def _window_length(self, x_ctx: torch.Tensor) -> int:
        """``L`` of ``x_ctx [B, M, L + 2 P, V, C]``, checked."""
        cfg = self.encoder.config
        if x_ctx.dim() != 5 or x_ctx.shape[-2:] != (cfg.num_joints, cfg.in_channels) \
                or x_ctx.shape[2] - 2 * self.context < 1:
            raise ValueError(f"x_ctx: expected [B, M, L + 2P, V={cfg.num_joints}, C={cfg.in_channels}] with L >= 1 "
                             f"(context P = {self.context}), got shape {tuple(x_ctx.shape)}")
        return x_ctx.shape[2] - 2 * self.context

    def frame_inputs(self, x_ctx: torch.Tensor, frames: torch.Tensor, owner: torch.Tensor) -> tuple[
            torch.Tensor, torch.Tensor]:
        """What :meth:`classify` reads for each requested frame: ``([N, W, clip_dim], occupied [N, W])``."""
        window = self._window_length(x_ctx)
        b, t_ctx = x_ctx.shape[0], x_ctx.shape[2]
        if frames.shape != owner.shape or frames.dim() != 1:
            raise ValueError(f"frames / owner: expected two [N] tensors, got {tuple(frames.shape)} and "
                             f"{tuple(owner.shape)}")
        if frames.numel() and (int(frames.min()) < 0 or int(frames.max()) >= window
                               or int(owner.min()) < 0 or int(owner.max()) >= b):
            raise ValueError(f"frames must lie in [0, {window}) and owner in [0, {b}) for x_ctx of shape "
                             f"{tuple(x_ctx.shape)} (context {self.context} each side)")
        # Every clip the requested frames read is encoded once, shared by the frames that read it (neighbours,
        # and frames context_stride apart).
        centres = frames[:, None] + self.context + self.offsets.to(x_ctx.device)[None, :]  # [N, W] x_ctx frames
        unique, inverse = torch.unique(owner[:, None] * t_ctx + centres, return_inverse=True)
        emb, occupied = self.clip_embeddings(x_ctx, unique % t_ctx, unique // t_ctx)
        return emb[inverse], occupied[inverse]

    def window_logits(self, x_ctx: torch.Tensor) -> torch.Tensor:
        """Every frame of every window: ``x_ctx [B, M, L + 2 P, V, C] -> [B, L, num_classes + 1]`` (frame ``f``
        of window ``b`` = ``forward(x_ctx, [f], [b])``; the clips the window's frames read are encoded once)."""
        window = self._window_length(x_ctx)
        b, span = x_ctx.shape[0], window + 2 * self.radius
        centres = torch.arange(span, device=x_ctx.device) + self.encoder.config.clip_pad
        owner = torch.arange(b, device=x_ctx.device).repeat_interleave(span)
        emb, occupied = self.clip_embeddings(x_ctx, centres.repeat(b), owner)
        return self.classify_windows(emb.view(b, span, -1), occupied.view(b, span))

    def forward(self, x_ctx: torch.Tensor, frames: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        return self.classify(*self.frame_inputs(x_ctx, frames, owner))
