"""Checkpoints in the released Hi-TRS code's naming, for the converter tests: the inverse of
:func:`hitrs_fast.convert.released_to_library_name`."""

from __future__ import annotations

import torch

from hitrs_fast.convert import _FIXED, _LAYER


def released_names_of(model_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The released code's names for a :class:`~hitrs_fast.pretext.HiTRSForPretraining` state dict, as the
    released checkpoint holds them: a DataParallel ``module.`` prefix and positional embeddings with a
    leading batch axis."""
    inverse_fixed = {v: k for k, v in _FIXED.items()}
    inverse_layer = {v: k for k, v in _LAYER.items()}
    levels = {"frame_encoder": "s", "clip_encoder": "c", "video_encoder": "v"}
    out = {}
    for name, value in model_sd.items():
        parts = name.split(".")
        if "layers" in parts:
            level = levels[parts[1]]
            layer, rest = parts[4], ".".join(parts[5:-1])
            released = f"{level}_enc.layer_stack.{layer}.{inverse_layer[rest]}.{parts[-1]}"
        else:
            base, _, kind = name.rpartition(".")
            released = inverse_fixed.get(name) or f"{inverse_fixed[base]}.{kind}"
        out["module." + released] = value.unsqueeze(0) if released.endswith("pe.pe") else value
    return out
