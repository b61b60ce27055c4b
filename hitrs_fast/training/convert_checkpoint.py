"""``hitrs convert-checkpoint RELEASED.pth --output encoder.pt``: a checkpoint of the released Hi-TRS code
(yuxiaochen1103/Hi-TRS, e.g. its pre-training checkpoint at 30 000 steps) as an ``encoder.pt`` that
``--init`` of every downstream task loads.

The released parameter names are mapped onto this library's (:mod:`hitrs_fast.convert`), positional
embeddings reshaped, and the result checked strictly against the model of ``--preset`` (``official``, the
released architecture, by default). The output holds::

    {"state_dict": encoder weights, "config": the preset's HiTRSConfig as a dict, "step": None,
     "pretext_heads": {"pose_head.weight": ..., ...},   # when the checkpoint has the pretext heads
     "source": "released Hi-TRS checkpoint <path>"}

``pretext_heads`` load into :class:`~hitrs_fast.pretext.HiTRSForPretraining` next to the encoder::

    model = HiTRSForPretraining(HiTRSConfig.from_dict(ckpt["config"]))
    model.encoder.load_state_dict(ckpt["state_dict"])
    model.load_state_dict({**{"encoder." + k: v for k, v in ckpt["state_dict"].items()}, **ckpt["pretext_heads"]})

The released downstream classifier ``v_cls`` is left out (a downstream run trains a new head for its own
classes) and reported.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from hitrs_fast.config import PRESETS, HiTRSConfig
from hitrs_fast.convert import convert_released_state_dict, released_to_library_name
from hitrs_fast.pretext import HiTRSForPretraining
from hitrs_fast.training.encoder import check_state_dict, load_torch_file
from hitrs_fast.training.run import CommandParser, UsageError, atomic_torch_save, run_cli

DOWNSTREAM_HEAD = "v_cls"


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = CommandParser(prog=prog or "python -m hitrs_fast.training.convert_checkpoint", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="the released .pth file")
    p.add_argument("--output", required=True, type=Path, help="the encoder.pt to write")
    p.add_argument("--preset", default="official", help=f"architecture of the checkpoint: {sorted(PRESETS)} "
                   "(default: official, the released code)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    return p


def released_weights(ckpt: Any, path: Path) -> dict[str, torch.Tensor]:
    """The parameter dict of a loaded released checkpoint (the dict itself, or under ``model`` /
    ``state_dict``)."""
    if isinstance(ckpt, Mapping) and "config" in ckpt and "state_dict" in ckpt:
        raise UsageError(f"{path}: already an encoder.pt of this library (keys 'state_dict', 'config'); --init "
                         "loads it as it is")
    weights = ckpt
    for key in ("model", "state_dict"):
        if isinstance(weights, Mapping) and isinstance(weights.get(key), Mapping):
            weights = weights[key]
    if not isinstance(weights, Mapping) or not weights:
        raise UsageError(f"{path}: expected a state dict (or a dict holding one under 'model' / 'state_dict'), "
                         f"got {type(weights).__name__}")
    return {str(k): v for k, v in weights.items()}


def convert_checkpoint(source: Path, output: Path, preset: str = "official", overwrite: bool = False) -> dict[str, Any]:
    """Converts the released checkpoint ``source`` into ``output`` (format in the module docstring) and
    returns a summary (``encoder_parameters``, ``pretext_heads``, ``left_out``)."""
    if preset not in PRESETS:
        raise UsageError(f"--preset {preset!r}: unknown; available: {sorted(PRESETS)}")
    if output.exists() and not overwrite:
        raise UsageError(f"--output {output}: exists; pass --overwrite to replace it")
    if not source.is_file():
        raise UsageError(f"{source}: no such file (expected a released Hi-TRS .pth checkpoint)")
    ckpt = load_torch_file(source, "convert-checkpoint", "a released Hi-TRS checkpoint (.pth)")
    weights = released_weights(ckpt, source)
    kept, left_out = {}, {}
    for name, value in weights.items():
        try:
            new = released_to_library_name(name)
        except KeyError as e:
            raise UsageError(f"{source}: {e.args[0]}") from None
        if new.split(".")[0] == DOWNSTREAM_HEAD:
            left_out[name] = tuple(value.shape)
        else:
            kept[name] = value
    config = HiTRSConfig.preset(preset)
    model = HiTRSForPretraining(config, backend="torch")
    try:
        converted = convert_released_state_dict(kept, model.state_dict())
    except (KeyError, ValueError) as e:
        raise UsageError(f"{source}: {e.args[0]} (preset {preset!r})") from None
    encoder = {k.removeprefix("encoder."): v for k, v in converted.items() if k.startswith("encoder.")}
    heads = {k: v for k, v in converted.items() if not k.startswith("encoder.")}
    check_state_dict(encoder, model.encoder.state_dict(), f"{source}: the encoder does not match preset {preset!r}")
    if heads:
        own_heads = {k: v for k, v in model.state_dict().items() if not k.startswith("encoder.")}
        check_state_dict(heads, own_heads, f"{source}: incomplete pretext heads")
    out: dict[str, Any] = {"state_dict": encoder, "config": config.to_dict(), "step": None,
                           "source": f"released Hi-TRS checkpoint {source}"}
    if heads:
        out["pretext_heads"] = heads
    atomic_torch_save(out, output)
    return {"output": str(output), "preset": preset, "encoder_tensors": len(encoder),
            "encoder_parameters": int(sum(v.numel() for v in encoder.values())),
            "pretext_heads": sorted({k.split(".")[0] for k in heads}), "left_out": left_out}


def convert_and_report(args: argparse.Namespace) -> None:
    s = convert_checkpoint(args.checkpoint, args.output, args.preset, args.overwrite)
    heads = ", ".join(s["pretext_heads"]) or "none in the checkpoint"
    print(f"wrote {s['output']}: encoder of preset {s['preset']!r} ({s['encoder_tensors']} tensors, "
          f"{s['encoder_parameters'] / 1e6:.2f} M parameters); pretext heads: {heads}")
    for name, shape in s["left_out"].items():
        print(f"left out {name} {list(shape)}: the released downstream classifier (downstream runs train their own)")
    print(f"use it with --init {s['output']}")


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Command line; 0 on success, 2 with one line on a bad argument or file."""
    return run_cli(build_parser(prog), convert_and_report, argv)


if __name__ == "__main__":
    sys.exit(main())
