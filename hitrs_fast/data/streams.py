"""Input views of a skeleton batch: ``joint`` (the coordinates), ``bone`` and ``motion``.

Hi-TRS trains one model per view and fuses their scores (the paper's 2S / 3S results). Layout
``[B, M, T, V, C]`` with per-sample ``lengths [B]`` (README).
"""

from __future__ import annotations

from typing import Literal

import torch

from hitrs_fast.data.skeleton import PARENTS

STREAMS = ("joint", "bone", "motion")
Stream = Literal["joint", "bone", "motion"]


def bone_stream(x: torch.Tensor) -> torch.Tensor:
    """Bone view ``b[v1] = x[v1] - x[v2]`` over the 25 NTU pairs (``hitrs_fast.data.skeleton.PARENTS``; the root
    SpineShoulder pairs with itself, so its bone is 0). ``[..., V=25, C] -> [..., V, C]``.

    Zero frames (padding, absent bodies) stay zero.
    """
    if x.shape[-2] != len(PARENTS):
        raise ValueError(f"bone_stream: the bone pairs are defined for V={len(PARENTS)} joints, "
                         f"got V={x.shape[-2]} (shape {tuple(x.shape)})")
    parents = torch.as_tensor(PARENTS, device=x.device)
    return x - x.index_select(-2, parents)


def motion_stream(x: torch.Tensor, lengths: torch.Tensor | None = None, time_dim: int = 2) -> torch.Tensor:
    """Motion view, the backward difference ``m_t = x_t - x_{t-1}`` with ``m_0 = 0`` (as released).

    Args:
        x: skeletons with time along ``time_dim`` (``[B, M, T, V, C]`` by default; batch first).
        lengths: ``[B]`` frames per sample; frames ``t >= lengths[b]`` are zeroed afterwards, so the
            step from the last real frame into the zero padding does not leak in. None: all frames real.
    """
    m = torch.zeros_like(x)
    src = x.narrow(time_dim, 1, x.shape[time_dim] - 1) - x.narrow(time_dim, 0, x.shape[time_dim] - 1)
    m.narrow(time_dim, 1, x.shape[time_dim] - 1).copy_(src)
    if lengths is not None:
        t = torch.arange(x.shape[time_dim], device=x.device)
        keep = t[None, :] < lengths.to(x.device)[:, None]  # [B, T]
        shape = [x.shape[0]] + [1] * (x.dim() - 1)
        shape[time_dim] = x.shape[time_dim]
        m = m * keep.view(shape).to(m.dtype)
    return m


def apply_stream(x: torch.Tensor, lengths: torch.Tensor | None, stream: str) -> torch.Tensor:
    """``joint`` (identity), ``bone`` or ``motion`` view of a ``[B, M, T, V, C]`` batch."""
    if stream == "joint":
        return x
    if stream == "bone":
        return bone_stream(x)
    if stream == "motion":
        return motion_stream(x, lengths, time_dim=2)
    raise ValueError(f"stream must be one of {STREAMS}, got {stream!r}")


__all__ = ["STREAMS", "Stream", "apply_stream", "bone_stream", "motion_stream"]
