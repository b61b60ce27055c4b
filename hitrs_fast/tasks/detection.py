"""Per-frame action detection (the paper's §4.5) with two heads on the Hi-TRS encoder.

- ``head="clip"`` (the paper's rule): the stride-1 clip centred on every frame goes through F-TRS and C-TRS;
  a linear layer reads the C-TRS CLS.
- ``head="context"``: the frame also sees its action's context: the stride-1 clip embeddings centred on
  ``f + k * context_stride`` for ``|k| <= context_clips`` go through a small temporal convolution (one
  hidden layer whose kernel spans the window, then a linear layer), after MS-TCN-style temporal heads over
  frame features (Farha and Gall, CVPR 2019, arXiv:1903.01945).
"""

from __future__ import annotations

import torch
from torch import nn

from hitrs_fast.models import HiTRS, reduce_bodies
from hitrs_fast.tasks.features import set_feature_norm

DETECTION_HEADS = ("clip", "context")


class FrameDetector(nn.Module):
    """Per-frame action classifier over ``K + 1`` classes (column 0 = background).

    ``forward(x_ctx [B, M, L + 2 P, V, C], frames [N], owner [N]) -> logits [N, num_classes + 1]``

    ``x_ctx`` holds ``B`` windows with ``P = self.context`` frames of context on each side (zeros where the
    window runs past its sequence, which is what the pre-training padding looks like). ``frames[n]`` is a
    0-based frame inside window ``owner[n]`` (``0 <= frames < L``); its output depends on window frames
    ``frames[n] .. frames[n] + 2 P`` only (raw frames ``f - P .. f + P``).

    Both heads read stride-1 clip embeddings: the clip centred on raw frame ``c`` (frames ``c - 6, c - 4,
    .., c + 6`` for 7 / 2) through F-TRS + C-TRS, bodies reduced by ``body_reduce`` (:meth:`clip_embeddings`).

    - ``"clip"`` (paper §4.5; the clip rule is our reading, the supplementary is not public): the clip
      centred on the frame, then a linear layer (``P = clip_pad``).
    - ``"context"``: the ``W = 2 R + 1`` clips centred on ``f + k * S``, ``k = -R..R`` (``R =
      context_clips``, ``S = context_stride``; ``P = clip_pad + R * S``), then a temporal convolution whose
      kernel spans them (``Linear(W * clip_dim, hidden)``, GELU, dropout) and a linear layer. A clip whose
      centre frame holds no body (past the sequence ends) enters as zeros.

    Clip embeddings enter as ``(embedding - feature_mean) / feature_std`` (identity buffers unless
    :meth:`set_feature_norm` fixes them from a frozen encoder's training clips). F-TRS runs once per window
    frame and C-TRS once per needed clip and body, shared by the frames that read it; nothing loops over
    frames in Python.
    """

    def __init__(self, encoder: HiTRS, num_classes: int, head: str = "clip", context_clips: int = 8,
                 context_stride: int = 4, hidden: int = 256, dropout: float = 0.2) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"FrameDetector: num_classes (without background) must be >= 1, got {num_classes}")
        if head not in DETECTION_HEADS:
            raise ValueError(f"FrameDetector: head must be one of {DETECTION_HEADS}, got {head!r}")
        if head == "context" and (context_clips < 1 or context_stride < 1 or hidden < 1):
            raise ValueError(f"FrameDetector: context_clips, context_stride and hidden must be >= 1, got "
                             f"{context_clips}, {context_stride}, {hidden}")
        dim = encoder.config.clip_dim
        self.encoder = encoder
        self.num_classes = num_classes
        self.head_kind = head
        self.context_clips = context_clips if head == "context" else 0
        self.context_stride = context_stride if head == "context" else 1
        self.radius = self.context_clips * self.context_stride  # clip centres each side of the frame
        width = (2 * self.context_clips + 1) * dim
        if head == "clip":
            self.head = nn.Linear(dim, num_classes + 1)
        else:
            self.head = nn.Sequential(nn.Flatten(1), nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout),
                                      nn.Linear(hidden, num_classes + 1))
        self.register_buffer("feature_mean", torch.zeros(dim))
        self.register_buffer("feature_std", torch.ones(dim))

    @property
    def context(self) -> int:
        """Raw frames each side of a frame that its output reads (``P`` of ``x_ctx``)."""
        return self.encoder.config.clip_pad + self.radius

    @property
    def offsets(self) -> torch.Tensor:
        """Clip centres relative to the frame: ``[W]`` int64, ``-R S .. R S`` step ``S``."""
        return torch.arange(-self.context_clips, self.context_clips + 1) * self.context_stride

    def set_feature_norm(self, features: torch.Tensor) -> None:
        """Fix the clip embeddings' normalisation to the mean / std of ``features [N, clip_dim]``."""
        set_feature_norm(self.feature_mean, self.feature_std, features, "FrameDetector")

    def classify(self, clips: torch.Tensor, occupied: torch.Tensor) -> torch.Tensor:
        """The head on each frame's clip embeddings ``[N, W, clip_dim]`` (``W = 1`` for the clip head) with
        ``occupied [N, W]`` (False: a clip past the sequence, read as zeros) -> ``[N, num_classes + 1]``."""
        x = (clips - self.feature_mean) / self.feature_std
        if self.head_kind == "clip":  # the frame's own clip, as released (the frame lies in its sequence)
            return self.head(x[:, 0])
        return self.head(x * occupied[..., None].to(x.dtype))

    def clip_embeddings(self, x_ctx: torch.Tensor, centres: torch.Tensor, owner: torch.Tensor,
                        frames: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Stride-1 clip embeddings, bodies reduced: ``(embeddings [N, clip_dim], occupied [N])``.

        ``centres [N]``: clip centres as indices into ``x_ctx``'s frames (``clip_pad <= centres < L + 2 P -
        clip_pad``) of windows ``owner [N]``; ``frames``: F-TRS of ``x_ctx`` (``[B * M, L + 2 P, V, d]``),
        computed when None. ``occupied``: some body is present in the centre frame. A body counts in the
        reduction when any frame of its clip is non-zero.
        """
        cfg = self.encoder.config
        enc = self.encoder
        if frames is None:
            batch = enc.prepare(x_ctx, name="x_ctx")  # a window is the sequence: centred by the encoder's rule
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

    def frame_inputs(self, x_ctx: torch.Tensor, frames: torch.Tensor, owner: torch.Tensor) -> tuple[
            torch.Tensor, torch.Tensor]:
        """What :meth:`classify` reads for each requested frame: ``([N, W, clip_dim], occupied [N, W])``."""
        cfg = self.encoder.config
        if x_ctx.dim() != 5 or x_ctx.shape[-2:] != (cfg.num_joints, cfg.in_channels):
            raise ValueError(f"x_ctx: expected [B, M, L + 2P, V={cfg.num_joints}, C={cfg.in_channels}], "
                             f"got shape {tuple(x_ctx.shape)}")
        b, _, t_ctx = x_ctx.shape[:3]
        window = t_ctx - 2 * self.context
        if frames.shape != owner.shape or frames.dim() != 1:
            raise ValueError(f"frames / owner: expected two [N] tensors, got {tuple(frames.shape)} and "
                             f"{tuple(owner.shape)}")
        if window < 1 or (frames.numel() and (int(frames.min()) < 0 or int(frames.max()) >= window
                                              or int(owner.min()) < 0 or int(owner.max()) >= b)):
            raise ValueError(f"frames must lie in [0, {window}) and owner in [0, {b}) for x_ctx of shape "
                             f"{tuple(x_ctx.shape)} (context {self.context} each side)")
        # Every clip the requested frames read is encoded once, shared by the frames that read it (neighbours,
        # and frames context_stride apart).
        centres = frames[:, None] + self.context + self.offsets.to(x_ctx.device)[None, :]  # [N, W] x_ctx frames
        unique, inverse = torch.unique(owner[:, None] * t_ctx + centres, return_inverse=True)
        emb, occupied = self.clip_embeddings(x_ctx, unique % t_ctx, unique // t_ctx)
        return emb[inverse], occupied[inverse]

    def forward(self, x_ctx: torch.Tensor, frames: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        return self.classify(*self.frame_inputs(x_ctx, frames, owner))
