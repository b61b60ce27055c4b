"""Load checkpoints of the released Hi-TRS code (yuxiaochen1103/Hi-TRS).

The library names its modules in its own terms; :func:`convert_released_state_dict`
maps the released parameter names onto them so that the released checkpoint loads with
``load_state_dict(strict=True)``::

    released = torch.load("pretrain_30000.pth", map_location="cpu")
    model = HiTRSForPretraining(HiTRSConfig.preset("official"))
    model.load_state_dict(convert_released_state_dict(released, model.state_dict()))

The released checkpoint was saved from a DataParallel wrapper, so a ``module.`` prefix is
stripped. Positional embeddings are reshaped to the library's shapes when their sizes
agree (the released ``pe`` parameters may carry a leading batch axis).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

_LEVELS = {"s": "encoder.frame_encoder", "c": "encoder.clip_encoder", "v": "encoder.video_encoder"}
_LAYER = {
    "self_attn_norm": "attn_norm",
    "slf_attn.w_qs": "attn.q_proj",
    "slf_attn.w_ks": "attn.k_proj",
    "slf_attn.w_vs": "attn.v_proj",
    "slf_attn.fc": "attn.out_proj",
    "pff_norm": "ffn_norm",
    "pos_ffn.w_1": "ffn.fc1",
    "pos_ffn.w_2": "ffn.fc2",
}
_FIXED = {
    "s_input_map.0": "encoder.frame_encoder.embedding.linear",
    "s_input_map.2": "encoder.frame_encoder.embedding.norm",
    "s_pe.pe": "encoder.frame_encoder.embedding.pos",
    "c_input_map": "encoder.clip_encoder.input_map",
    "c_pe.pe": "encoder.clip_encoder.pos",
    "clip_fuse_token": "encoder.clip_encoder.cls_token",
    "v_input_map": "encoder.video_encoder.input_map",
    "v_pe.pe": "encoder.video_encoder.pos",
    "video_fuse_token": "encoder.video_encoder.cls_token",
    "s_pose_reg": "pose_head",
    "c_motion_cls": "clip_order_head",
    "v_motion_cls": "video_order_head",
    "v_ft_reg": "next_clip_head",
    "v_cls": "v_cls",
}
_LAYER_RE = re.compile(r"^([scv])_enc\.layer_stack\.(\d+)\.(.+)\.(weight|bias)$")


def released_to_library_name(name: str) -> str:
    """Maps one released parameter name (``module.`` prefix allowed) to the library's name."""
    name = name.removeprefix("module.")
    m = _LAYER_RE.match(name)
    if m:
        level, layer, part, kind = m.groups()
        if part not in _LAYER:
            raise KeyError(f"released parameter {name!r}: unknown layer part {part!r}")
        return f"{_LEVELS[level]}.transformer.layers.{layer}.{_LAYER[part]}.{kind}"
    for old, new in _FIXED.items():
        if name == old or name.startswith(old + "."):
            return new + name[len(old):]
    raise KeyError(f"released parameter {name!r} has no counterpart in hitrs_fast")


def convert_released_state_dict(released: Mapping[str, torch.Tensor],
                                target: Mapping[str, torch.Tensor] | None = None,
                                prefix: str = "") -> dict[str, torch.Tensor]:
    """Released state dict -> library state dict.

    Args:
        released: the released ``state_dict`` (or a checkpoint dict holding one under
            ``"model"`` / ``"state_dict"``).
        target: the library model's ``state_dict``; when given, shapes are matched
            (reshaping positional embeddings of equal size) and keys the target lacks are
            refused with their names.
        prefix: drop this prefix from the converted names, e.g. ``"encoder."`` to load into
            a bare :class:`~hitrs_fast.models.HiTRS` (the heads are then left out).
    """
    for key in ("model", "state_dict"):
        if key in released and isinstance(released[key], Mapping):
            released = released[key]
    out: dict[str, torch.Tensor] = {}
    for name, value in released.items():
        new = released_to_library_name(name)
        if prefix:
            if not new.startswith(prefix):
                continue
            new = new[len(prefix):]
        if target is not None:
            if new not in target:
                raise KeyError(f"released {name!r} -> {new!r}, which the target model does not have")
            want = target[new].shape
            if value.shape != want:
                if value.numel() != want.numel():
                    raise ValueError(f"released {name!r}: shape {tuple(value.shape)} cannot become {tuple(want)}")
                value = value.reshape(want)
        out[new] = value
    return out
