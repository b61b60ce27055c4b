"""Parameter groups and learning-rate schedules of the released recipes."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

# Names the released code exempts from weight decay: biases, norms, positional embeddings, CLS tokens.
NO_DECAY_MARKERS = ("bias", "norm", ".pos", "cls_token")


def is_no_decay(name: str, param: nn.Parameter) -> bool:
    return param.ndim <= 1 or any(marker in name for marker in NO_DECAY_MARKERS)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed weights, and biases / norms / PEs / CLS tokens without decay."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if is_no_decay(name, param) else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


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
