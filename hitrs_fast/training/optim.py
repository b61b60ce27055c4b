"""Parameter groups and learning-rate schedules of the released recipes: the per-step warm-up and
decay of pre-training, and the per-epoch schedules of the downstream recipes."""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn

SCHEDULES = ("constant", "released_finetune", "released_scratch", "cosine")
# Names the released code exempts from weight decay: biases, norms, positional embeddings, CLS tokens.
NO_DECAY_MARKERS = ("bias", "norm", ".pos", "cls_token")


def is_no_decay(name: str, param: nn.Parameter) -> bool:
    return param.ndim <= 1 or any(marker in name for marker in NO_DECAY_MARKERS)


def parameter_groups(model: nn.Module, weight_decay: float, encoder_lr_scale: float | None = None) -> list[dict]:
    """Two AdamW groups: decayed weights, and biases / norms / PEs / CLS tokens without decay.

    With ``encoder_lr_scale`` (a downstream recipe's, for fine-tuning) each is split in two, the
    parameters of ``model.encoder`` with ``"lr_scale": encoder_lr_scale`` and the rest with ``"lr_scale": 1``
    (the epoch loop sets a group's lr to the recipe's lr x schedule x ``lr_scale``)."""
    scales = (None,) if encoder_lr_scale is None else (1.0, float(encoder_lr_scale))
    groups: dict[tuple[bool, float | None], list[nn.Parameter]] = {(d, s): [] for d in (True, False) for s in scales}
    for name, param in model.named_parameters():
        if param.requires_grad:
            scale = scales[-1] if name.startswith("encoder.") else scales[0]
            groups[(not is_no_decay(name, param), scale)].append(param)
    return [{"params": params, "weight_decay": weight_decay if decays else 0.0}
            | ({} if scale is None else {"lr_scale": scale}) for (decays, scale), params in groups.items()]


def warmup_linear_decay(warmup_steps: int, total_steps: int, final_ratio: float) -> Callable[[int], float]:
    """LR multiplier: 0 -> 1 linearly over ``warmup_steps`` (step 0 has lr 0, as released),
    then linearly to ``final_ratio`` at ``total_steps``, then constant."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        if step >= total_steps:
            return final_ratio
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 1.0 + (final_ratio - 1.0) * progress

    return factor


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """Learning-rate multiplier of 1-based ``epoch`` under a downstream recipe's ``schedule``.

    - ``released_finetune`` (the released fine-tuning steps): 1 for e <= 20, else
      max(0.5 ** ceil((e - 20) / 10), 0.0025);
    - ``released_scratch`` (the released from-scratch steps): 1 (<= 30), 0.5 (31-40), 0.25 (41-50),
      0.125 (51-55), 0.0125 (> 55);
    - ``cosine``: 0.5 (1 + cos(pi (e - 1) / epochs)), for short recipes;
    - ``constant``: 1.
    """
    if schedule == "constant":
        return 1.0
    if schedule == "released_finetune":
        return 1.0 if epoch <= 20 else max(0.5 ** math.ceil((epoch - 20) / 10), 0.0025)
    if schedule == "released_scratch":
        for last, value in ((30, 1.0), (40, 0.5), (50, 0.25), (55, 0.125)):
            if epoch <= last:
                return value
        return 0.0125
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / max(1, epochs)))
    raise ValueError(f"unknown schedule {schedule!r}; available: {SCHEDULES}")
