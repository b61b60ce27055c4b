"""``hitrs convert-checkpoint``: a checkpoint in the released code's naming becomes an encoder.pt that
``--init`` loads with the same weights; the pretext heads load into HiTRSForPretraining; bad files are one
line with exit code 2."""

from __future__ import annotations

import torch

from hitrs_fast import HiTRSConfig, HiTRSForPretraining
from hitrs_fast.cli import main as hitrs
from hitrs_fast.training.encoder import load_encoder_checkpoint
from tests.support.checkpoints import released_names_of


def released_checkpoint(path, preset: str = "official", with_v_cls: bool = True) -> HiTRSForPretraining:
    """Writes a checkpoint the way the released pre-training saves one (DataParallel names under
    ``model``, the downstream classifier ``v_cls`` included) and returns the model it holds."""
    torch.manual_seed(3)
    model = HiTRSForPretraining(HiTRSConfig.preset(preset), backend="torch")
    weights = released_names_of(model.state_dict())
    if with_v_cls:
        weights["module.v_cls.weight"] = torch.randn(60, 512)
        weights["module.v_cls.bias"] = torch.randn(60)
    torch.save({"model": weights, "epoch": 30000}, path)
    return model


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_converted_released_checkpoint_loads_with_init(tmp_path, capsys):
    source = released_checkpoint(tmp_path / "pretrain_30000.pth")
    out = tmp_path / "released_encoder.pt"
    assert hitrs(["convert-checkpoint", str(tmp_path / "pretrain_30000.pth"), "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert "encoder of preset 'official'" in text and "6.92 M parameters" in text
    assert "pretext heads: clip_order_head, next_clip_head, pose_head, video_order_head" in text
    assert "left out module.v_cls.weight [60, 512]" in text
    encoder, info = load_encoder_checkpoint(out, backend="torch")
    assert info["file"] == str(out) and encoder.config == HiTRSConfig.preset("official")
    for name, value in source.encoder.state_dict().items():
        assert torch.equal(encoder.state_dict()[name], value), name
    ckpt = torch.load(out, weights_only=True)
    twin = HiTRSForPretraining(HiTRSConfig.from_dict(ckpt["config"]), backend="torch")
    twin.load_state_dict({**{"encoder." + k: v for k, v in ckpt["state_dict"].items()}, **ckpt["pretext_heads"]},
                         strict=True)
    for name, value in source.state_dict().items():
        assert torch.equal(twin.state_dict()[name], value), name


def test_convert_checkpoint_errors(tmp_path, capsys):
    released_checkpoint(tmp_path / "r.pth", preset="tiny", with_v_cls=False)
    out = tmp_path / "enc.pt"
    # The tiny weights are not the official architecture: the mismatching tensors are named.
    assert hitrs(["convert-checkpoint", str(tmp_path / "r.pth"), "--output", str(out)]) == 2
    assert "cannot become" in one_error_line(capsys) and not out.exists()
    assert hitrs(["convert-checkpoint", str(tmp_path / "r.pth"), "--output", str(out), "--preset", "tiny"]) == 0
    capsys.readouterr()
    assert hitrs(["convert-checkpoint", str(tmp_path / "r.pth"), "--output", str(out), "--preset", "tiny"]) == 2
    assert "exists; pass --overwrite" in one_error_line(capsys)
    assert hitrs(["convert-checkpoint", str(out), "--output", str(tmp_path / "again.pt"), "--preset", "tiny"]) == 2
    assert "already an encoder.pt of this library" in one_error_line(capsys)
    torch.save({"module.s_enc.mystery.weight": torch.zeros(1)}, tmp_path / "odd.pth")
    assert hitrs(["convert-checkpoint", str(tmp_path / "odd.pth"), "--output", str(tmp_path / "o.pt")]) == 2
    assert "has no counterpart in hitrs_fast" in one_error_line(capsys)
    assert hitrs(["convert-checkpoint", str(tmp_path / "absent.pth"), "--output", str(tmp_path / "o.pt")]) == 2
    assert "no such file" in one_error_line(capsys)
    assert hitrs(["convert-checkpoint", str(tmp_path / "r.pth"), "--output", str(tmp_path / "o.pt"), "--preset",
                  "huge"]) == 2
    assert "available: ['official', 'paper', 'tiny']" in one_error_line(capsys)
