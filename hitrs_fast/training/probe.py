"""Linear probe on frozen encoder features (the evaluation of the main job)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hitrs_fast.models import HiTRS


@torch.no_grad()
def extract_features(encoder: HiTRS, loader, device: torch.device | str = "cpu"
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pooled sequence features (``HiTRSConfig.feature_readout``) of every batch of ``loader``, encoder in eval
    mode.

    Returns ``(features [N, feature_dim] float32, labels [N] int64, store indices [N] int64)`` in loader order.
    """
    was_training = encoder.training
    encoder.eval()
    feats, labels, indices = [], [], []
    for batch in loader:
        out = encoder(batch.x.to(device), batch.lengths.to(device))
        feats.append(out.pooled.float().cpu())
        labels.append(batch.labels.cpu())
        indices.append(batch.indices.cpu())
    encoder.train(was_training)
    return torch.cat(feats), torch.cat(labels), torch.cat(indices)


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 num_classes: int, epochs: int = 300, lr: float = 0.01, seed: int = 0) -> dict[str, float]:
    """Logistic regression on standardised features, full batch, AdamW (lr 0.01, no weight
    decay: the released probe's optimiser). Returns train and test top-1 accuracy."""
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    tr, te = (train_x - mean) / std, (test_x - mean) / std
    gen = torch.Generator().manual_seed(seed)
    head = nn.Linear(tr.shape[1], num_classes)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 0.01)
        head.bias.zero_()
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.0)
    for _ in range(epochs):
        opt.zero_grad()
        nn.functional.cross_entropy(head(tr), train_y).backward()
        opt.step()
    with torch.no_grad():
        return {"train_top1": float((head(tr).argmax(1) == train_y).float().mean()),
                "test_top1": float((head(te).argmax(1) == test_y).float().mean())}


def chance_level(labels: np.ndarray | torch.Tensor) -> float:
    """Accuracy of always predicting the most frequent class."""
    counts = np.bincount(np.asarray(labels))
    return float(counts.max() / counts.sum())
