"""Motion prediction (the paper's §4.6): observe ``observe`` frames, predict the next ``horizon``.

:class:`MotionPredictor` is the residual GRU decoder of Martinez et al. (CVPR 2017, "On human motion
prediction using recurrent neural networks", arXiv:1705.02445) conditioned on the Hi-TRS encoder;
:func:`constant_velocity_baseline` and :func:`smoothed_velocity` are the kinematic baseline and the
decoder's first input (the zero-velocity baseline is ``hitrs_fast.eval.metrics.zero_velocity_baseline``).
"""

from __future__ import annotations

import torch
from torch import nn

from hitrs_fast.models import HiTRS, validate_skeletons
from hitrs_fast.tasks.features import set_feature_norm
from hitrs_fast.windowing import num_clips

# The decoder reads and writes velocities in centimetres per frame (inputs are metres): joint speeds of a
# person are then of order 1, like its other inputs.
VELOCITY_SCALE = 100.0


def smoothed_velocity(observed: torch.Tensor, frames: int) -> torch.Tensor:
    """Mean velocity over the last ``frames`` frames: ``(x[-1] - x[-1 - frames]) / frames``.

    ``observed [B, T_obs > frames, V, C]`` -> ``[B, V, C]`` (units per frame). Averaging over a few frames
    divides the sensor jitter of a one-frame difference by ``frames``.
    """
    if frames < 1 or observed.dim() != 4 or observed.shape[1] <= frames:
        raise ValueError(f"smoothed_velocity: expected [B, T_obs > {frames}, V, C] and frames >= 1, "
                         f"got shape {tuple(observed.shape)}, frames {frames}")
    return (observed[:, -1] - observed[:, -1 - frames]) / frames


def constant_velocity_baseline(observed: torch.Tensor, horizon: int, frames: int = 4) -> torch.Tensor:
    """Constant-velocity forecast: the last observed pose moved on by the smoothed last velocity
    (:func:`smoothed_velocity` over ``frames`` frames) at every future step.

    ``observed [B, T_obs, V, C]`` -> ``[B, horizon, V, C]``.
    """
    if horizon < 1:
        raise ValueError(f"constant_velocity_baseline: horizon must be >= 1, got {horizon}")
    steps = torch.arange(1, horizon + 1, device=observed.device, dtype=observed.dtype)
    return observed[:, -1:] + steps[None, :, None, None] * smoothed_velocity(observed, frames)[:, None]


class MotionPredictor(nn.Module):
    """Observe ``observe`` frames, predict the next ``horizon`` (paper §4.6: 60 -> 12 at 30 fps).

    ``forward(observed [B, observe, V, C]) -> future [B, horizon, V, C]`` (one body, metres).

    A residual GRU decoder after Martinez et al. (CVPR 2017), which the paper's decoder follows. Step ``k``
    reads the previous pose and velocity, its own prediction from step ``k - 1``; step 1 reads the last
    observed pose and the :func:`smoothed_velocity` of the last ``velocity_frames`` frames. It outputs a
    velocity and the pose moves on by it (the residual connection: ``pose_k = pose_{k-1} + velocity_k``).
    Poses enter relative to the last observed ``config.center_joint`` (the forecast does not depend on
    where the body stands); velocities in cm per frame (:data:`VELOCITY_SCALE`).

    The encoder conditions every step. Its context (:meth:`context`, ``[B, context_dim]``) holds the sequence
    features of ``feature_readout`` and, with ``context_reader="clips"`` (the default), the C-TRS embeddings
    of all ``W = ceil(observe / clip_stride)`` clips: a small GRU (``clip_reader_dim``) reads the clips in
    time order and its last state, with the sequence features, is squeezed to ``condition_dim`` numbers
    (linear + tanh). ``context_reader="last_clip"`` (the earlier wiring, kept for comparison) squeezes the
    sequence features and the last clip's embedding instead. Reading the clips in order measured better than
    the last clip or attention pooling over the clips: the forecast needs the recent dynamics, which pooled
    features blur (docs/downstream.md). The condition sets the GRU decoder's initial state (linear + tanh) and is part
    of its input at every step. With ``ablate_encoder=True`` the context is zeroed: the decoder then
    forecasts from the last pose and velocity alone, and the difference measures what the encoder
    contributes.

    The output layer starts at zero, so an untrained decoder is the zero-velocity baseline (the last
    observed pose repeated). The context enters as ``(context - feature_mean) / feature_std`` (identity
    buffers unless :meth:`set_feature_norm` fixes them from a frozen encoder's training contexts).
    """

    CONTEXT_READERS = ("clips", "last_clip")

    def __init__(self, encoder: HiTRS, horizon: int = 12, hidden: int = 256, *, observe: int = 60,
                 ablate_encoder: bool = False, velocity_frames: int = 4, condition_dim: int = 16,
                 context_reader: str = "clips", clip_reader_dim: int = 64) -> None:
        super().__init__()
        if min(horizon, hidden, velocity_frames, condition_dim, clip_reader_dim) < 1:
            raise ValueError(f"MotionPredictor: horizon, hidden, velocity_frames, condition_dim and clip_reader_dim "
                             f"must be >= 1, got {horizon}, {hidden}, {velocity_frames}, {condition_dim}, "
                             f"{clip_reader_dim}")
        if observe <= velocity_frames:
            raise ValueError(f"MotionPredictor: observe must be > velocity_frames = {velocity_frames}, got {observe}")
        if context_reader not in self.CONTEXT_READERS:
            raise ValueError(f"MotionPredictor: context_reader must be one of {self.CONTEXT_READERS}, "
                             f"got {context_reader!r}")
        cfg = encoder.config
        self.encoder = encoder
        self.horizon = horizon
        self.observe = observe
        self.ablate_encoder = ablate_encoder
        self.velocity_frames = velocity_frames
        self.context_reader = context_reader
        self.num_clips = int(num_clips(torch.tensor(observe), cfg))  # the encoder reads all observe frames
        read_clips = self.num_clips if context_reader == "clips" else 1
        self.context_dim = cfg.feature_dim + read_clips * cfg.clip_dim
        pose = cfg.num_joints * cfg.in_channels
        if context_reader == "clips":
            self.clip_reader = nn.GRU(cfg.clip_dim, clip_reader_dim, batch_first=True)
            squeezed = cfg.feature_dim + clip_reader_dim
        else:
            squeezed = self.context_dim
        self.condition = nn.Sequential(nn.Linear(squeezed, condition_dim), nn.Tanh())
        self.init_hidden = nn.Sequential(nn.Linear(condition_dim, hidden), nn.Tanh())
        self.gru = nn.GRUCell(condition_dim + 2 * pose, hidden)
        self.out = nn.Linear(hidden + pose, pose)  # reads the state and the step's input velocity
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.register_buffer("feature_mean", torch.zeros(self.context_dim))
        self.register_buffer("feature_std", torch.ones(self.context_dim))

    def set_feature_norm(self, features: torch.Tensor) -> None:
        """Fix the decoder's input normalisation to the mean / std of contexts ``[N, context_dim]``."""
        set_feature_norm(self.feature_mean, self.feature_std, features, "MotionPredictor")

    def context(self, observed: torch.Tensor) -> torch.Tensor:
        """What the encoder tells the decoder: ``[B, observe, V, C] -> [B, context_dim]``, the sequence features
        (``feature_readout``; the V-TRS CLS in the paper) followed by the C-TRS embeddings of all ``num_clips``
        clips in time order, flattened (``context_reader="clips"``), or of the last clip (``"last_clip"``)."""
        self._check_observed(observed)
        return self._context(observed)

    def _context(self, observed: torch.Tensor) -> torch.Tensor:
        """:meth:`context` of an already checked ``observed``."""
        out = self.encoder(observed[:, None])
        clips = out.clip_embeddings[:, 0, :self.num_clips]  # [B, W, clip_dim]
        if self.context_reader == "last_clip":
            clips = clips[:, -1:]
        return torch.cat([out.sequence_features[:, 0], clips.flatten(1)], dim=-1)

    def _check_observed(self, observed: torch.Tensor) -> None:
        if observed.dim() != 4 or observed.shape[1] != self.observe:
            raise ValueError(f"observed: expected [B, observe = {self.observe}, V, C], got shape "
                             f"{tuple(observed.shape)}")
        validate_skeletons(observed[:, None], None, self.encoder.config, name="observed")

    def _condition(self, context: torch.Tensor) -> torch.Tensor:
        """Standardised (ablated: zero) context ``[B, context_dim]`` -> condition ``[B, condition_dim]``."""
        if self.context_reader == "clips":
            features = self.encoder.config.feature_dim
            clips = context[:, features:].unflatten(1, (self.num_clips, -1))  # [B, W, clip_dim]
            _, last_state = self.clip_reader(clips)  # [1, B, clip_reader_dim]
            context = torch.cat([context[:, :features], last_state[0]], dim=-1)
        return self.condition(context)

    def forward(self, observed: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """``observed [B, observe, V, C]`` -> ``[B, horizon, V, C]``. ``context`` (``[B, context_dim]``, from
        :meth:`context`) may be passed precomputed, e.g. cached once for a frozen encoder."""
        cfg = self.encoder.config
        self._check_observed(observed)
        b, _, v, c = observed.shape
        if self.ablate_encoder:
            context = observed.new_zeros(b, self.context_dim)
        else:
            if context is None:
                context = self._context(observed)
            elif context.shape != (b, self.context_dim):
                raise ValueError(f"context: expected [{b}, {self.context_dim}], got {tuple(context.shape)}")
            context = (context - self.feature_mean) / self.feature_std
        condition = self._condition(context)
        h = self.init_hidden(condition)
        last = observed[:, -1]
        anchor = last[:, cfg.center_joint : cfg.center_joint + 1]  # [B, 1, C]
        pose = last.reshape(b, v * c)
        anchor = anchor.expand(-1, v, -1).reshape(b, v * c)
        velocity = smoothed_velocity(observed, self.velocity_frames).reshape(b, v * c) * VELOCITY_SCALE
        preds = []
        for _ in range(self.horizon):  # horizon is ~12 steps; the loop is over time, not over samples
            h = self.gru(torch.cat([condition, pose - anchor, velocity], dim=-1), h)
            velocity = self.out(torch.cat([h, velocity], dim=-1))
            pose = pose + velocity / VELOCITY_SCALE
            preds.append(pose)
        return torch.stack(preds, dim=1).view(b, self.horizon, v, c)


def euclidean_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean distance between predicted and true joints, ``[..., C]`` -> scalar (the training loss)."""
    return torch.linalg.vector_norm(pred - target, dim=-1).mean()
