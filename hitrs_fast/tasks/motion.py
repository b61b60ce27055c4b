"""Motion prediction (the paper's §4.6): observe ``T_obs`` frames, predict the next ``horizon``."""

from __future__ import annotations

import torch
from torch import nn

from hitrs_fast.models import HiTRS, validate_skeletons
from hitrs_fast.tasks.features import set_feature_norm


class MotionPredictor(nn.Module):
    """Observe ``T_obs`` frames, predict the next ``horizon`` (paper §4.6: 60 -> 12 at 30 fps).

    ``forward(observed [B, T_obs, V, C]) -> future [B, horizon, V, C]`` (one body, metres).

    The encoder reads the observed frames as a one-body sample and its sequence features (``[B, feature_dim]``: the
    V-TRS CLS in the paper, see ``feature_readout``) feed a GRU decoder (after Martinez et al., CVPR 2017, as the
    paper says): the context initialises the GRU's state and is its input at every step, beside the decoder's own
    previous output. Each step predicts a velocity; the future pose is the last observed pose plus the summed
    velocities (a residual decoder). The decoder never sees the observed poses or velocities themselves, so
    everything it knows about the observed motion comes through the encoder: with ``ablate_encoder=True`` the
    context is zeroed, the prediction cannot depend on the observed motion beyond the last pose it is anchored on,
    and the difference measures what the encoder contributes.

    The output layer starts at zero, so an untrained decoder is the zero-velocity baseline (the last
    observed pose repeated). The decoder reads ``(context - feature_mean) / feature_std`` (identity buffers
    unless :meth:`set_feature_norm` fixes them from a frozen encoder's training contexts).
    """

    def __init__(self, encoder: HiTRS, horizon: int = 12, hidden: int = 256, *, ablate_encoder: bool = False) -> None:
        super().__init__()
        if horizon < 1 or hidden < 1:
            raise ValueError(f"MotionPredictor: horizon and hidden must be >= 1, got {horizon}, {hidden}")
        cfg = encoder.config
        self.encoder = encoder
        self.horizon = horizon
        self.ablate_encoder = ablate_encoder
        pose = cfg.num_joints * cfg.in_channels
        self.init_hidden = nn.Sequential(nn.Linear(cfg.feature_dim, hidden), nn.Tanh())
        self.gru = nn.GRUCell(cfg.feature_dim + pose, hidden)
        self.out = nn.Linear(hidden, pose)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.register_buffer("feature_mean", torch.zeros(cfg.feature_dim))
        self.register_buffer("feature_std", torch.ones(cfg.feature_dim))

    def set_feature_norm(self, features: torch.Tensor) -> None:
        """Fix the decoder's input normalisation to the mean / std of contexts ``[N, feature_dim]``."""
        set_feature_norm(self.feature_mean, self.feature_std, features, "MotionPredictor")

    def context(self, observed: torch.Tensor) -> torch.Tensor:
        """The encoder's sequence features of the observed frames (``feature_readout``; the V-TRS CLS in the
        paper): ``[B, T_obs, V, C] -> [B, feature_dim]``."""
        return self.encoder(observed[:, None]).sequence_features[:, 0]

    def forward(self, observed: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """``observed [B, T_obs, V, C]`` -> ``[B, horizon, V, C]``. ``context`` (``[B, feature_dim]``, from
        :meth:`context`) may be passed precomputed, e.g. cached once for a frozen encoder."""
        cfg = self.encoder.config
        if observed.dim() != 4 or observed.shape[1] < 2:
            raise ValueError(f"observed: expected [B, T_obs >= 2, V, C], got shape {tuple(observed.shape)}")
        validate_skeletons(observed[:, None], None, cfg, name="observed")
        b, _, v, c = observed.shape
        if context is None:
            context = observed.new_zeros(b, cfg.feature_dim) if self.ablate_encoder else self.context(observed)
        elif context.shape != (b, cfg.feature_dim):
            raise ValueError(f"context: expected [{b}, {cfg.feature_dim}], got {tuple(context.shape)}")
        context = (context - self.feature_mean) / self.feature_std
        if self.ablate_encoder:
            context = torch.zeros_like(context)
        h = self.init_hidden(context)
        last = observed[:, -1].reshape(b, v * c)
        velocity = torch.zeros_like(last)
        offset = torch.zeros_like(last)  # predicted pose minus the last observed pose
        preds = []
        for _ in range(self.horizon):  # horizon is ~12 steps; the loop is over time, not over samples
            h = self.gru(torch.cat([context, velocity], dim=-1), h)
            velocity = self.out(h)
            offset = offset + velocity
            preds.append(last + offset)
        return torch.stack(preds, dim=1).view(b, self.horizon, v, c)


def euclidean_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean distance between predicted and true joints, ``[..., C]`` -> scalar (the training loss)."""
    return torch.linalg.vector_norm(pred - target, dim=-1).mean()
