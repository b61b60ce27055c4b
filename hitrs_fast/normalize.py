"""Parameter-free input normalisation applied by the encoder itself (``HiTRSConfig.centering``).

The released Hi-TRS feeds raw Kinect camera-space coordinates. Centring is the usual NTU preprocessing of
other skeleton models (subtract the first frame's SpineMid): it removes where the person stood, which a
small model trained briefly otherwise spends its capacity on. Doing it inside the encoder means a saved
checkpoint carries its preprocessing, so downstream runs and probes cannot forget it.
"""

from __future__ import annotations

import torch

CENTERINGS = ("none", "first_frame")


def center_on_first_frame(x: torch.Tensor, lengths: torch.Tensor, joint: int) -> torch.Tensor:
    """Subtracts body 0's ``joint`` at its first present frame from every present frame of every body.

    One origin per sample keeps the bodies' relative placement. Frames where a body is absent (all
    zeros) and frames beyond ``lengths`` stay exactly zero; a sample whose body 0 is never present is
    returned unchanged.

    Args:
        x: ``[B, M, T, V, C]`` coordinates.
        lengths: ``[B]`` int64 real frame counts.
        joint: index of the reference joint (1 = SpineMid in the NTU order).

    Returns:
        ``[B, M, T, V, C]``, same dtype.
    """
    b, _, t = x.shape[:3]
    real = torch.arange(t, device=x.device)[None, :] < lengths[:, None]  # [B, T]
    present = (x != 0).flatten(3).any(dim=3) & real[:, None]  # [B, M, T]
    # argmax of a bool tensor gives the first True; rows without one fall back to frame 0 (origin zeroed below).
    first = present[:, 0].to(torch.uint8).argmax(dim=1)  # [B]
    origin = x[torch.arange(b, device=x.device), 0, first, joint]  # [B, C]
    origin = origin * present[:, 0].any(dim=1, keepdim=True).to(x.dtype)
    return (x - origin[:, None, None, None, :]) * present[..., None, None].to(x.dtype)


def apply_centering(x: torch.Tensor, lengths: torch.Tensor, centering: str, joint: int) -> torch.Tensor:
    """``x`` unchanged for ``"none"``; :func:`center_on_first_frame` for ``"first_frame"``."""
    if centering == "none":
        return x
    if centering == "first_frame":
        return center_on_first_frame(x, lengths, joint)
    raise ValueError(f"centering must be one of {CENTERINGS}, got {centering!r}")


__all__ = ["CENTERINGS", "apply_centering", "center_on_first_frame"]
