"""Recognition, retrieval and motion-prediction metrics (``docs/evaluation.md``).

All functions take torch tensors (any device; results come back on the input device or as Python
floats) and return **fractions** in [0, 1] for accuracies (multiply by 100 for the papers' percent).
Tensor layouts follow the README: skeleton sequences are ``[B, T, V, 3]`` here (one body, joints V = 25,
coordinates in metres for NTU / PKU-MMD).

Examples::

    >>> logits = torch.tensor([[0.1, 2.0, 0.3], [1.0, 0.2, 0.5]])
    >>> topk_accuracy(logits, torch.tensor([1, 2]), ks=(1, 2))
    {1: 0.5, 2: 1.0}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch

__all__ = [
    "MPJPEResult",
    "fuse_scores",
    "knn_accuracy",
    "knn_predict",
    "mpjpe",
    "topk_accuracy",
    "zero_velocity_baseline",
]


def _check_labels(labels: torch.Tensor, n: int, name: str, num_classes: int | None = None) -> None:
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"{name}: expected int [{n}], got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(f"{name}: expected an integer tensor, got {labels.dtype}")
    if n and int(labels.min()) < 0:
        raise ValueError(f"{name}: labels must be >= 0, got {int(labels.min())}")
    if num_classes is not None and n and int(labels.max()) >= num_classes:
        raise ValueError(f"{name}: label {int(labels.max())} out of range for {num_classes} classes")


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Top-k accuracy of class scores.

    A sample counts as correct for k when its label is among the k largest scores. Equal scores are
    ranked by ``torch.topk`` (order among exact ties is unspecified, as in every peer implementation).

    Args:
        logits: ``[N, C]`` scores (logits or probabilities; only the ranking matters), N >= 1.
        labels: int ``[N]`` in 0..C-1.
        ks: the k values, each 1..C. Default (1, 5).

    Returns:
        ``{k: accuracy}`` with accuracies as fractions in [0, 1].
    """
    if logits.ndim != 2 or logits.shape[0] < 1:
        raise ValueError(f"topk_accuracy: logits must be [N, C] with N >= 1, got shape {tuple(logits.shape)}")
    n, c = logits.shape
    _check_labels(labels, n, "topk_accuracy: labels", c)
    if not ks or any(int(k) != k or not 1 <= k <= c for k in ks):
        raise ValueError(f"topk_accuracy: every k must be an integer in 1..{c} (number of classes), got {tuple(ks)}")
    kmax = max(ks)
    top = logits.topk(kmax, dim=1).indices  # [N, kmax], best first
    hit = top == labels.to(top.device)[:, None]
    return {int(k): float(hit[:, :k].any(dim=1).float().mean()) for k in ks}


class MPJPEResult(NamedTuple):
    """MPJPE in millimetres.

    Attributes:
        per_frame: float ``[T]``, the error at each predicted frame (mean over batch and joints).
        mean: scalar tensor, the mean over all predicted frames (equal to ``per_frame.mean()``).
    """

    per_frame: torch.Tensor
    mean: torch.Tensor


def mpjpe(
    pred: torch.Tensor,
    target: torch.Tensor,
    root_relative: bool = False,
    root_joint: int = 0,
    scale: float = 1000.0,
) -> MPJPEResult:
    """Mean per-joint position error: Euclidean distance between predicted and true 3-D joints.

    MPJPE = mean over batch, predicted frames and joints of ``||pred - target||_2 * scale``. Inputs are in
    metres (NTU, PKU-MMD), so the default ``scale=1000`` reports millimetres. With ``root_relative`` both
    skeletons are first translated so that ``root_joint`` is at the origin in every frame (the H3.6M
    forecasting convention, no Procrustes alignment); whether Hi-TRS did this is unverified, so record the
    flag with the number. The root joint's own error is then 0 and still counts in the joint average.

    Args:
        pred: float ``[B, T, V, 3]`` predicted frames.
        target: float ``[B, T, V, 3]`` ground-truth frames, same shape.
        root_relative: subtract the root joint first. Default False.
        root_joint: index of the root joint (0 = SpineBase in the Kinect v2 order).
        scale: unit conversion factor applied to distances. Default 1000 (m -> mm).

    Returns:
        :class:`MPJPEResult` ``(per_frame [T], mean [])``, computed in at least float32.

    Examples::

        >>> p = torch.zeros(1, 2, 1, 3); t = p.clone(); t[0, 1, 0] = torch.tensor([0.003, 0.004, 0.0])
        >>> mpjpe(p, t).per_frame.tolist()
        [0.0, 5.0]
    """
    if pred.ndim != 4 or pred.shape[-1] != 3:
        raise ValueError(f"mpjpe: pred must be [B, T, V, 3], got shape {tuple(pred.shape)}")
    if target.shape != pred.shape:
        raise ValueError(f"mpjpe: target shape {tuple(target.shape)} differs from pred shape {tuple(pred.shape)}")
    if 0 in pred.shape:
        raise ValueError(f"mpjpe: empty input, shape {tuple(pred.shape)}")
    if root_relative and not -pred.shape[2] <= root_joint < pred.shape[2]:
        raise ValueError(f"mpjpe: root_joint {root_joint} out of range for V = {pred.shape[2]}")
    dtype = torch.promote_types(torch.promote_types(pred.dtype, target.dtype), torch.float32)
    p, t = pred.to(dtype), target.to(dtype)
    if root_relative:
        p = p - p[:, :, root_joint : root_joint + 1]
        t = t - t[:, :, root_joint : root_joint + 1]
    dist = torch.linalg.vector_norm(p - t, dim=-1) * scale  # [B, T, V]
    per_frame = dist.mean(dim=(0, 2))
    return MPJPEResult(per_frame=per_frame, mean=per_frame.mean())


def zero_velocity_baseline(observed: torch.Tensor, horizon: int) -> torch.Tensor:
    """Zero-velocity forecast: repeat the last observed frame (Martinez et al. 2017's baseline).

    Args:
        observed: ``[B, T_obs, V, 3]`` observed frames, T_obs >= 1.
        horizon: number of frames to predict, >= 1 (12 = 400 ms at 30 fps).

    Returns:
        ``[B, horizon, V, 3]``, a new contiguous tensor (not a view of ``observed``).
    """
    if observed.ndim != 4 or observed.shape[1] < 1:
        raise ValueError(
            f"zero_velocity_baseline: observed must be [B, T_obs, V, 3] with T_obs >= 1, "
            f"got shape {tuple(observed.shape)}"
        )
    if int(horizon) != horizon or horizon < 1:
        raise ValueError(f"zero_velocity_baseline: horizon must be an integer >= 1, got {horizon}")
    return observed[:, -1:].expand(-1, int(horizon), -1, -1).clone()


def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    k: int = 1,
    temperature: float | None = None,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """k-nearest-neighbour classification with cosine similarity.

    Features are L2-normalised, so the dot product is the cosine similarity.

    * ``k=1`` (default; HiCo ``action_retrieval.py``, STARS ``knn_eval.py``): the label of the most similar
      training sample (first index on exact ties).
    * ``k > 1`` with ``temperature`` (weighted kNN, InstDisc / SimSiam monitor; k = 200, T = 0.1 in AimCLR's
      numbers): each of the k nearest votes for its class with weight ``exp(sim / T)``; the class with the
      largest total wins (lowest class on ties).
    * ``k > 1`` without ``temperature``: majority vote (each neighbour weight 1).

    Args:
        train_features: float ``[N, D]``, N >= k.
        train_labels: int ``[N]``, 0..num_classes-1.
        test_features: float ``[M, D]``.
        k: number of neighbours, 1..N.
        temperature: weighting temperature for k > 1; None = unweighted vote.
        num_classes: default ``train_labels.max() + 1``.
        chunk_size: test samples per similarity block (memory is ``chunk_size * N`` floats).

    Returns:
        int64 ``[M]`` predicted labels, on ``test_features.device``.
    """
    if train_features.ndim != 2 or test_features.ndim != 2 or train_features.shape[1] != test_features.shape[1]:
        raise ValueError(
            f"knn_predict: features must be [N, D] and [M, D] with equal D, got "
            f"{tuple(train_features.shape)} and {tuple(test_features.shape)}"
        )
    n = train_features.shape[0]
    if n < 1:
        raise ValueError("knn_predict: train_features is empty")
    _check_labels(train_labels, n, "knn_predict: train_labels", num_classes)
    if int(k) != k or not 1 <= k <= n:
        raise ValueError(f"knn_predict: k must be an integer in 1..{n} (training samples), got {k}")
    if temperature is not None and not temperature > 0:
        raise ValueError(f"knn_predict: temperature must be > 0, got {temperature}")
    if chunk_size < 1:
        raise ValueError(f"knn_predict: chunk_size must be >= 1, got {chunk_size}")
    n_cls = int(train_labels.max()) + 1 if num_classes is None else int(num_classes)
    device = test_features.device
    dtype = torch.promote_types(train_features.dtype, torch.float32)
    train = torch.nn.functional.normalize(train_features.to(device, dtype), dim=1)
    y = train_labels.to(device, torch.int64)
    preds = []
    for test in test_features.to(dtype).split(chunk_size):
        sim = torch.nn.functional.normalize(test, dim=1) @ train.T  # [m, N]
        if k == 1:
            preds.append(y[sim.argmax(dim=1)])
            continue
        top_sim, top_idx = sim.topk(k, dim=1)
        # exp(sim / T) with sim <= 1 cannot overflow for T >= 0.02 in float32; subtracting the row max
        # (a constant factor per row) keeps smaller temperatures finite without changing the arg-max.
        weight = torch.ones_like(top_sim) if temperature is None else ((top_sim - top_sim[:, :1]) / temperature).exp()
        votes = torch.zeros(test.shape[0], n_cls, device=device, dtype=dtype)
        votes.scatter_add_(1, y[top_idx], weight)
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.int64, device=device)


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 1,
    temperature: float | None = None,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> float:
    """Accuracy (fraction) of :func:`knn_predict` on ``test_labels`` (int ``[M]``, M >= 1)."""
    m = test_features.shape[0] if test_features.ndim == 2 else -1
    if m < 1:
        raise ValueError(f"knn_accuracy: test_features must be [M, D] with M >= 1, got {tuple(test_features.shape)}")
    _check_labels(test_labels, m, "knn_accuracy: test_labels")
    pred = knn_predict(train_features, train_labels, test_features, k, temperature, num_classes, chunk_size)
    return float((pred == test_labels.to(pred.device)).float().mean())


def fuse_scores(
    scores: Sequence[torch.Tensor],
    weights: Sequence[float] | None = None,
    mode: Literal["softmax", "logits"] = "softmax",
) -> torch.Tensor:
    """Late fusion of per-stream class scores (2-stream joint + bone, 3-stream + motion).

    ``mode="softmax"`` sums the streams' softmax probabilities (what skeleton SSL papers' "3s" numbers
    usually mean, e.g. AimCLR / CrosSCLR); ``mode="logits"`` sums the raw scores (CTR-GCN / 2s-AGCN style
    ensembles, which weight the streams). Each stream is multiplied by its weight (default 1) before the
    sum; the result is not renormalised, so take the arg-max (or feed :func:`topk_accuracy`).

    Args:
        scores: S >= 1 tensors, each float ``[N, C]`` (same shape), one per stream.
        weights: S non-negative weights; default all 1.
        mode: ``"softmax"`` (default) or ``"logits"``.

    Returns:
        float ``[N, C]`` fused scores, in the promoted dtype of the inputs (at least float32).
    """
    if not scores:
        raise ValueError("fuse_scores: no stream given")
    if mode not in ("softmax", "logits"):
        raise ValueError(f"fuse_scores: mode must be 'softmax' or 'logits', got {mode!r}")
    shape = scores[0].shape
    if len(shape) != 2:
        raise ValueError(f"fuse_scores: scores[0] must be [N, C], got shape {tuple(shape)}")
    for i, s in enumerate(scores):
        if s.shape != shape:
            raise ValueError(f"fuse_scores: scores[{i}] has shape {tuple(s.shape)}, scores[0] has {tuple(shape)}")
    if weights is None:
        weights = [1.0] * len(scores)
    if len(weights) != len(scores):
        raise ValueError(f"fuse_scores: {len(weights)} weights for {len(scores)} streams")
    if any(not w >= 0 for w in weights):
        raise ValueError(f"fuse_scores: weights must be >= 0, got {list(weights)}")
    dtype = torch.float32
    for s in scores:
        dtype = torch.promote_types(dtype, s.dtype)
    fused = torch.zeros(shape, dtype=dtype, device=scores[0].device)
    for w, s in zip(weights, scores, strict=True):
        s = s.to(fused.device, dtype)
        fused += w * (s.softmax(dim=1) if mode == "softmax" else s)
    return fused
