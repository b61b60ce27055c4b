"""Motion prediction (the paper's §4.6): observe ``T_obs`` frames, predict the next ``horizon``."""

from __future__ import annotations

import torch
from torch import nn

from hitrs_fast.models import HiTRS, validate_skeletons


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
