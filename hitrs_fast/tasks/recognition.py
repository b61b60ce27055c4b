"""Action recognition: encoder + ``v_cls`` on the pooled sequence features (the V-TRS CLS in the paper's §4.4
and the released fine-tuning model; ``HiTRSConfig.feature_readout``). Layout ``[B, M, T, V, C]`` with
``lengths [B]``."""

from __future__ import annotations

import torch
from torch import nn

from hitrs_fast.models import HiTRS
from hitrs_fast.tasks.features import set_feature_norm


class ActionRecognizer(nn.Module):
    """Encoder + ``v_cls``: ``forward(x [B, M, T, V, C], lengths [B]) -> logits [B, num_classes]``.

    ``features(x, lengths) -> [B, feature_dim]`` is the encoder's ``pooled`` output (kNN, linear evaluation). The head
    reads ``(features - feature_mean) / feature_std``; both buffers are the identity (0 / 1) unless
    :meth:`set_feature_norm` fixes them, which linear evaluation of a frozen encoder may do with the
    training features' statistics (a fixed affine map, so the head is still linear in the features).
    """

    def __init__(self, encoder: HiTRS, num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"ActionRecognizer: num_classes must be >= 2, got {num_classes}")
        self.encoder = encoder
        dim = encoder.config.feature_dim
        self.v_cls = nn.Linear(dim, num_classes)
        self.register_buffer("feature_mean", torch.zeros(dim))
        self.register_buffer("feature_std", torch.ones(dim))

    def set_feature_norm(self, features: torch.Tensor) -> None:
        """Fix the head's input normalisation to the mean / std of ``features [N, feature_dim]``."""
        set_feature_norm(self.feature_mean, self.feature_std, features, "ActionRecognizer")

    def features(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder(x, lengths).pooled

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """``v_cls`` on normalised features: ``[B, feature_dim] -> [B, num_classes]``."""
        return self.v_cls((features - self.feature_mean) / self.feature_std)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.classify(self.features(x, lengths))
