"""An independent float64 oracle for masked attention with bias and dropout.

The allowed-pair matrices are built here token by token from the masks' parameters (plain Python over the token
indices, not :mod:`hitrs_fast.masks`), and the attention is applied the plain way: scores plus bias, ``masked_fill``
of the blocked pairs with -inf, softmax, the keep mask of dropout, times V. A row with no visible key is defined as
O = 0 with zero gradients (its scores are zeroed before the softmax and its probabilities after, so no NaN).
"""

from __future__ import annotations

import torch

GLOBAL = -1


def token_frames(n: int, frame_size: int, num_frames: int, cls: str, order: str = "frame_major") -> torch.Tensor:
    """int64 ``[n]``: each token's frame, -1 for the CLS token, one token at a time."""
    frames = []
    for t in range(n):
        if (cls == "first" and t == 0) or (cls == "last" and t == n - 1):
            frames.append(GLOBAL)
            continue
        u = t - 1 if cls == "first" else t
        frames.append(u // frame_size if order == "frame_major" else u % num_frames)
    return torch.tensor(frames, dtype=torch.int64)


def rule_allowed(f_q: torch.Tensor, f_k: torch.Tensor, rule: str, radius: int = 0,
                 allow_self: bool = True) -> torch.Tensor:
    """bool ``[..., N, N]`` from frame ids ``[..., N]``: ``rule`` "other" (other frames, diagonal with allow_self),
    "window" (frames within ``radius``); a -1 token attends to and is seen by all."""
    fq, fk = f_q[..., :, None], f_k[..., None, :]
    is_global = (fq == GLOBAL) | (fk == GLOBAL)
    if rule == "other":
        ok = fq != fk
        if allow_self:
            n = f_q.shape[-1]
            ok = ok | torch.eye(n, dtype=torch.bool)
    elif rule == "window":
        ok = (fq - fk).abs() <= radius
    else:
        raise ValueError(rule)
    return ok | is_global


def padding_allowed(visible_prefix: list[int], n: int, trailing_cls: bool) -> torch.Tensor:
    """bool ``[B, 1, 1, N]``: keys ``k < visible_prefix[b]`` (and the last key with a trailing CLS)."""
    rows = []
    for length in visible_prefix:
        rows.append([k < length or (trailing_cls and k == n - 1) for k in range(n)])
    return torch.tensor(rows, dtype=torch.bool)[:, None, None, :]


def oracle(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, do: torch.Tensor, *, allowed: torch.Tensor | None = None,
           bias: torch.Tensor | None = None, scale: float, keep: torch.Tensor | None = None,
           dropout_p: float = 0.0) -> dict[str, torch.Tensor]:
    """Output and the gradients of q, k, v (and bias) in float64, for upstream gradient ``do``.

    ``allowed``: bool broadcastable to ``[B, H, N, N]`` (None: all); ``bias``: float broadcastable to it;
    ``keep``: bool ``[B, H, N, N]`` dropout keep mask (scaled by ``1 / (1 - dropout_p)``).
    """
    leaves = {name: t.detach().double().requires_grad_() for name, t in (("q", q), ("k", k), ("v", v))}
    if bias is not None:
        leaves["bias"] = bias.detach().double().requires_grad_()
    scores = (leaves["q"] @ leaves["k"].transpose(-2, -1)) * scale
    if bias is not None:
        scores = scores + leaves["bias"]
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    empty = torch.isneginf(scores).all(dim=-1, keepdim=True)
    probs = torch.softmax(scores.masked_fill(empty, 0.0), dim=-1).masked_fill(empty, 0.0)
    if keep is not None:
        probs = probs * keep.double() / (1.0 - dropout_p)
    out = probs @ leaves["v"]
    out.backward(do.double())
    return {"out": out.detach(), **{f"d{name}": t.grad for name, t in leaves.items()}}
