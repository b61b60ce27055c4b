"""The encoder of a downstream run: a fresh seeded one or a pre-trained one, loaded strictly, and how the
run's mode treats it (frozen for linear evaluation, trained otherwise).

``--init`` takes ``random`` or a pre-trained encoder in any of these forms (:func:`resolve_init_file`):

- an ``encoder.pt``: ``{"state_dict": encoder weights, "config": HiTRSConfig dict, "step": ...}``, written by
  pre-training at every checkpoint, or by ``hitrs convert-checkpoint`` from a released Hi-TRS checkpoint;
- a pre-training run directory (its ``encoder.pt``, else its latest DeepSpeed checkpoint);
- a DeepSpeed checkpoint: ``RUN/checkpoints`` (its latest tag) or one tag ``RUN/checkpoints/stepNNNNNNNN``.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hitrs_fast.config import PRESETS, HiTRSConfig
from hitrs_fast.models import HiTRS
from hitrs_fast.training.checkpoint import COMPLETE, LATEST
from hitrs_fast.training.run import UsageError

# HiTRSConfig fields a downstream run may change on a loaded checkpoint: none of them changes a parameter shape.
RUNTIME_FIELDS = frozenset({
    "dropout", "body_reduce", "mask_ratio", "mask_replacement", "pose_loss", "nce_temperature", "nce_negatives",
    "nce_temporal_negatives", "pretext_head_hidden", "clip_order_selection", "clip_order_pairs", "video_grad_to_clips",
    "nce_gap",
    "weight_pose", "weight_clip_order", "weight_video_order", "weight_nce", "use_frame_tasks", "use_clip_tasks",
    "use_video_tasks",
})


INIT_FORMS = ("'random', an encoder.pt (pre-training or hitrs convert-checkpoint), a pre-training run directory, "
              "or a DeepSpeed checkpoint directory (RUN/checkpoints or RUN/checkpoints/stepNNNNNNNN)")
DEEPSPEED_MODEL_STATES = "mp_rank_00_model_states.pt"  # the module weights of a ZeRO stage 0-2 checkpoint


ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since torch 1.6
PICKLE_MAGIC = b"\x80"  # a pickle of protocol >= 2: torch.save's legacy format


def load_torch_file(path: Path, option: str, expected: str = INIT_FORMS) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; a failure is a one-line :class:`UsageError` starting
    with ``option`` and the path that says what the file is (a text file, a pickle of other objects, a broken
    archive) and ``expected`` (what the option takes), and never advises loading it with ``weights_only=False``,
    which would run code stored in it."""
    with open(path, "rb") as f:
        head = f.read(64)
    if not head.startswith((ZIP_MAGIC, PICKLE_MAGIC)):
        shown = head[:24].decode("utf-8", errors="replace").splitlines()[0] if head.strip() else "an empty file"
        raise UsageError(f"{option} {path}: not a torch checkpoint (a torch.save file is a zip archive or a pickle; "
                         f"this one starts with {shown!r}); expected {expected}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UsageError(f"{option} {path}: holds Python objects other than tensors and plain containers, which "
                         "hitrs does not load (loading them would run code stored in the file); save the weights "
                         "as a state_dict, or pass an encoder.pt of hitrs pretrain / hitrs convert-checkpoint"
                         ) from None
    except Exception as e:  # torch raises several types for a corrupt or truncated file
        first = str(e).splitlines()[0] if str(e) else ""
        raise UsageError(f"{option} {path}: not a readable torch checkpoint, corrupt or truncated "
                         f"({type(e).__name__}: {first[:200]})") from None


def _deepspeed_tag_dir(init: Path, root: Path) -> Path:
    """The tag directory ``root/<latest_tag>`` of a DeepSpeed checkpoint folder."""
    tag = (root / LATEST).read_text().strip()
    if not (root / tag).is_dir():
        raise UsageError(f"--init {init}: {root / LATEST} names checkpoint {tag!r}, which does not exist")
    return root / tag


def resolve_init_file(init: str | os.PathLike) -> Path:
    """The file behind ``--init``: ``encoder.pt`` (or any file) as given; a pre-training run directory ->
    its ``encoder.pt`` (or, without one, its latest DeepSpeed checkpoint); ``RUN/checkpoints`` -> its latest
    tag; a tag directory -> its ``mp_rank_00_model_states.pt``."""
    path = Path(init)
    if path.is_file():
        return path
    if not path.is_dir():
        raise UsageError(f"--init {path}: no such file or directory; expected {INIT_FORMS}")
    if (path / "encoder.pt").is_file():
        return path / "encoder.pt"
    tag_dir = None
    if (path / LATEST).is_file():
        tag_dir = _deepspeed_tag_dir(path, path)
    elif (path / "checkpoints" / LATEST).is_file():
        tag_dir = _deepspeed_tag_dir(path, path / "checkpoints")
    elif (path / DEEPSPEED_MODEL_STATES).is_file():
        tag_dir = path
    if tag_dir is not None:
        if not (tag_dir / COMPLETE).is_file() and (tag_dir.parent / LATEST).is_file():
            raise UsageError(f"--init {path}: checkpoint {tag_dir} is incomplete (its save was interrupted); pass "
                             "an earlier one")
        if not (tag_dir / DEEPSPEED_MODEL_STATES).is_file():
            raise UsageError(f"--init {path}: {tag_dir} holds no {DEEPSPEED_MODEL_STATES} (ZeRO stage 3 and "
                             "model-parallel checkpoints are not supported)")
        return tag_dir / DEEPSPEED_MODEL_STATES
    if (path / "checkpoint.pt").is_file():
        raise UsageError(f"--init {path}: a downstream run directory (checkpoint.pt); expected {INIT_FORMS}")
    raise UsageError(f"--init {path}: a directory without encoder.pt, {LATEST} or {DEEPSPEED_MODEL_STATES}; "
                     f"expected {INIT_FORMS}")


def _looks_released(keys: list[str]) -> bool:
    """Whether some key is a parameter name of the released code (``s_enc.layer_stack...``)."""
    from hitrs_fast.convert import released_to_library_name

    for key in keys:
        try:
            released_to_library_name(key)
            return True
        except KeyError:
            continue
    return False


def read_encoder_checkpoint(init: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Reads the encoder weights and model config behind ``--init`` (:func:`resolve_init_file`).

    Returns ``(state_dict, config dict, info)`` with ``info = {"init": init, "file": ..., "step": ...}``.
    """
    file = resolve_init_file(init)
    ckpt = load_torch_file(file, "--init")
    keys = sorted(ckpt) if isinstance(ckpt, dict) else []
    info = {"init": str(init), "file": str(file)}
    if isinstance(ckpt, dict) and "state_dict" in ckpt and "config" in ckpt:  # encoder.pt, converted or trained
        return ckpt["state_dict"], ckpt["config"], {**info, "step": ckpt.get("step")}
    if isinstance(ckpt, dict) and isinstance(ckpt.get("module"), dict) and isinstance(ckpt.get("run"), dict):
        # A DeepSpeed checkpoint of hitrs_fast.training.pretrain: HiTRSForPretraining weights + the run config.
        state = {k.removeprefix("encoder."): v for k, v in ckpt["module"].items() if k.startswith("encoder.")}
        return state, ckpt["run"]["model"], {**info, "step": ckpt.get("step")}
    weights = ckpt
    for key in ("model", "state_dict"):
        if isinstance(weights, dict) and isinstance(weights.get(key), dict):
            weights = weights[key]
    if isinstance(weights, dict) and _looks_released(list(weights)):
        raise UsageError(f"--init {file}: a released Hi-TRS checkpoint; convert it first: hitrs convert-checkpoint "
                         f"{file} --output encoder.pt")
    raise UsageError(f"--init {file}: not an encoder checkpoint (keys {keys[:8]}); expected {INIT_FORMS}")


def load_encoder_checkpoint(init: str | os.PathLike, overrides: dict[str, Any] | None = None,
                            preset: str | None = None, backend: str = "auto") -> tuple[HiTRS, dict[str, Any]]:
    """Builds a :class:`HiTRS` from a pre-trained encoder (any form of :data:`INIT_FORMS` but ``random``)
    and loads its weights strictly.

    The model config comes from the checkpoint (as in the released fine-tuning). ``overrides`` may only
    touch shape-free fields (:data:`RUNTIME_FIELDS`); ``preset``, when given, must describe the same
    architecture as the checkpoint. Every failure is a :class:`UsageError` naming the file and the problem.

    Returns ``(encoder, info)`` with ``info = {"init": init, "file": ..., "step": ..., "config": ...}``.
    """
    state, config_dict, info = read_encoder_checkpoint(init)
    path = info["file"]
    try:
        config = HiTRSConfig.from_dict(config_dict)
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
    check_state_dict(state, encoder.state_dict(), f"--init {path}: weights do not match the config stored in the "
                     "checkpoint")
    encoder.load_state_dict(state, strict=True)
    return encoder, {**info, "config": config.to_dict()}


def check_state_dict(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor], what: str) -> None:
    """Raises a :class:`UsageError` starting with ``what`` when ``state`` would not load strictly into a
    module whose state dict is ``own`` (names of the missing, unexpected and mis-shaped tensors)."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        raise UsageError(f"{what} (missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected "
                         f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, shape mismatches {shapes[:5]})")


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
            raise UsageError(f"--set: {e}") from None
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
