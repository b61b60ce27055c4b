"""``--init`` forms (hitrs_fast.training.encoder): an encoder.pt, a pre-training run directory, a DeepSpeed
checkpoint folder or tag; every other input is one clear UsageError."""

from __future__ import annotations

import pytest
import torch

from hitrs_fast import HiTRSConfig, HiTRSForPretraining
from hitrs_fast.training.encoder import load_encoder_checkpoint, resolve_init_file
from hitrs_fast.training.run import UsageError
from tests.support.checkpoints import released_names_of

TAG = "step00000003"


def pretraining_run(root, seed: int = 0):
    """A run directory as pre-training leaves it: DeepSpeed's model states of one tag (with the run config
    as client state), ``latest_tag``, the ``COMPLETE`` marker and ``encoder.pt``. Returns the model."""
    cfg = HiTRSConfig.preset("tiny")
    torch.manual_seed(seed)
    model = HiTRSForPretraining(cfg, backend="torch")
    tag = root / "checkpoints" / TAG
    tag.mkdir(parents=True)
    torch.save({"module": model.state_dict(), "ds_version": "0.19", "step": 3, "run": {"model": cfg.to_dict()}},
               tag / "mp_rank_00_model_states.pt")
    (tag / "COMPLETE").write_text("3\n")
    (root / "checkpoints" / "latest_tag").write_text(TAG + "\n")
    torch.save({"state_dict": model.encoder.state_dict(), "config": cfg.to_dict(), "step": 3}, root / "encoder.pt")
    return model


def assert_same_encoder(a, b):
    for name, value in a.state_dict().items():
        assert torch.equal(b.state_dict()[name], value), name


@pytest.mark.parametrize("form", ["run_dir", "run_dir_without_encoder_pt", "checkpoints", "tag", "model_states"])
def test_every_init_form_loads_the_same_encoder(tmp_path, form):
    model = pretraining_run(tmp_path / "run")
    if form == "run_dir_without_encoder_pt":
        (tmp_path / "run" / "encoder.pt").unlink()
    init = {"run_dir": "run", "run_dir_without_encoder_pt": "run", "checkpoints": "run/checkpoints",
            "tag": f"run/checkpoints/{TAG}", "model_states": f"run/checkpoints/{TAG}/mp_rank_00_model_states.pt"}[form]
    encoder, info = load_encoder_checkpoint(tmp_path / init, backend="torch")
    assert_same_encoder(model.encoder, encoder)
    assert info["step"] == 3 and info["init"] == str(tmp_path / init)
    expected = "encoder.pt" if form == "run_dir" else "mp_rank_00_model_states.pt"
    assert info["file"].endswith(expected)


def test_bad_init_forms_are_one_clear_line(tmp_path):
    pretraining_run(tmp_path / "run")
    cases = []
    (tmp_path / "empty").mkdir()
    cases.append((tmp_path / "empty", "a directory without encoder.pt"))
    (tmp_path / "downstream").mkdir()
    (tmp_path / "downstream" / "checkpoint.pt").write_bytes(b"")
    cases.append((tmp_path / "downstream", "a downstream run directory"))
    cases.append((tmp_path / "nowhere", "no such file or directory"))
    torch.save({"model": released_names_of(HiTRSForPretraining(HiTRSConfig.preset("tiny")).state_dict())},
               tmp_path / "released.pth")
    cases.append((tmp_path / "released.pth", "a released Hi-TRS checkpoint; convert it first: hitrs "
                  "convert-checkpoint"))
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    cases.append((tmp_path / "other.pt", "not an encoder checkpoint"))
    for init, match in cases:
        with pytest.raises(UsageError, match=match) as ei:
            load_encoder_checkpoint(init)
        assert "\n" not in str(ei.value)
    # A save killed before its COMPLETE marker: the tag is refused.
    (tmp_path / "run" / "checkpoints" / TAG / "COMPLETE").unlink()
    with pytest.raises(UsageError, match="is incomplete"):
        resolve_init_file(tmp_path / "run" / "checkpoints")
