"""The encoder of a downstream run: a fresh seeded one or a pre-training ``encoder.pt``, loaded
strictly, and how the run's mode treats it (frozen for linear evaluation, trained otherwise)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hitrs_fast.config import PRESETS, HiTRSConfig
from hitrs_fast.models import HiTRS
from hitrs_fast.training.run import UsageError

# HiTRSConfig fields a downstream run may change on a loaded checkpoint: none of them changes a parameter shape.
RUNTIME_FIELDS = frozenset({
    "dropout", "body_reduce", "mask_ratio", "mask_replacement", "pose_loss", "nce_temperature", "nce_negatives",
    "nce_temporal_negatives", "pretext_head_hidden", "clip_order_selection", "video_grad_to_clips",
    "nce_gap",
    "weight_pose", "weight_clip_order", "weight_video_order", "weight_nce", "use_frame_tasks", "use_clip_tasks",
    "use_video_tasks",
})


def load_encoder_checkpoint(path: str | os.PathLike, overrides: dict[str, Any] | None = None,
                            preset: str | None = None, backend: str = "auto") -> tuple[HiTRS, dict[str, Any]]:
    """Builds a :class:`HiTRS` from a pre-training ``encoder.pt`` and loads its weights strictly.

    The model config comes from the checkpoint (as in the released fine-tuning). ``overrides`` may only
    touch shape-free fields (:data:`RUNTIME_FIELDS`); ``preset``, when given, must describe the same
    architecture as the checkpoint. Every failure is a ValueError naming the file and the problem.

    Returns ``(encoder, info)`` with ``info = {"init": path, "step": ..., "config": ...}``.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--init {path}: no such file (expected a pre-training encoder.pt or 'random')")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a corrupt or foreign file
        raise UsageError(f"--init {path}: not a readable torch checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "config" not in ckpt:
        keys = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise UsageError(f"--init {path}: expected a dict with 'state_dict' and 'config' (training/pretrain.py's "
                         f"encoder.pt), got {keys}")
    try:
        config = HiTRSConfig.from_dict(ckpt["config"])
    except (TypeError, ValueError) as e:
        raise UsageError(f"--init {path}: invalid model config in the checkpoint: {e}") from None
    overrides = dict(overrides or {})
    shape_fields = sorted(set(overrides) - RUNTIME_FIELDS)
    if shape_fields:
        raise UsageError(f"--set {shape_fields}: cannot change these fields of the checkpoint {path} (they define "
                         f"the architecture); allowed with a checkpoint: {sorted(RUNTIME_FIELDS)}")
    if preset is not None:
        if preset not in PRESETS:
            raise UsageError(f"--preset {preset!r}: unknown; available: {sorted(PRESETS)}")
        wanted = HiTRSConfig.preset(preset).to_dict()
        have = config.to_dict()
        diff = [f"{k}: preset {wanted[k]!r} vs checkpoint {have[k]!r}" for k in sorted(wanted)
                if k not in RUNTIME_FIELDS and wanted[k] != have[k]]
        if diff:
            raise UsageError(f"--preset {preset} does not match the checkpoint {path}: " + "; ".join(diff))
    try:
        config = config.replace(**overrides)
    except (TypeError, ValueError) as e:
        raise UsageError(f"--set: {e}") from None
    encoder = HiTRS(config, backend=backend)
    state = ckpt["state_dict"]
    own = encoder.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        raise UsageError(f"--init {path}: weights do not match the config stored in the checkpoint "
                         f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected "
                         f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, shape mismatches {shapes[:5]})")
    encoder.load_state_dict(state, strict=True)
    return encoder, {"init": str(path), "step": ckpt.get("step"), "config": config.to_dict()}


def build_encoder(init: str, preset: str | None, overrides: dict[str, Any], backend: str,
                  seed: int) -> tuple[HiTRS, dict[str, Any]]:
    """``--init random`` (a seeded fresh encoder of ``preset``, default tiny) or a checkpoint path."""
    if init == "random":
        name = preset or "tiny"
        if name not in PRESETS:
            raise UsageError(f"--preset {name!r}: unknown; available: {sorted(PRESETS)}")
        try:
            config = HiTRSConfig.preset(name, **overrides)
        except (TypeError, ValueError) as e:
            raise UsageError(f"model config: {e}") from None
        torch.manual_seed(seed)
        return HiTRS(config, backend=backend), {"init": "random", "step": None, "config": config.to_dict()}
    return load_encoder_checkpoint(init, overrides, preset, backend)


def check_mode(mode: str, init: str) -> None:
    if mode == "scratch" and init != "random":
        raise UsageError(f"--mode scratch trains from random init; got --init {init} (use --mode finetune)")


def freeze_encoder(model: nn.Module, mode: str) -> None:
    """Linear mode: encoder parameters frozen (the head is the only trainable part)."""
    if mode == "linear":
        for p in model.encoder.parameters():
            p.requires_grad_(False)


def set_train_mode(model: nn.Module, mode: str) -> None:
    """``model.train()``, except that a frozen encoder stays in ``eval()`` (no dropout), as released."""
    model.train()
    if mode == "linear":
        model.encoder.eval()
