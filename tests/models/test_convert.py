import pytest
import torch

from hitrs_fast import HiTRS, HiTRSConfig, HiTRSForPretraining
from hitrs_fast.convert import convert_released_state_dict, released_to_library_name
from tests.support.checkpoints import released_names_of


def test_released_checkpoint_loads_strict():
    cfg = HiTRSConfig.preset("official")
    source = HiTRSForPretraining(cfg)
    released = released_names_of(source.state_dict())
    assert "module.s_enc.layer_stack.2.slf_attn.w_qs.weight" in released
    assert "module.video_fuse_token" in released and released["module.c_pe.pe"].shape == (1, 7, 25, 256)
    target = HiTRSForPretraining(cfg)
    target.load_state_dict(convert_released_state_dict(released, target.state_dict()), strict=True)
    for (n, a), (_, b) in zip(source.state_dict().items(), target.state_dict().items(), strict=True):
        assert torch.equal(a, b), n


def test_encoder_only_prefix():
    cfg = HiTRSConfig.preset("tiny")
    released = released_names_of(HiTRSForPretraining(cfg).state_dict())
    enc = HiTRS(cfg)
    enc.load_state_dict(convert_released_state_dict(released, enc.state_dict(), prefix="encoder."), strict=True)


def test_unknown_names_refused():
    with pytest.raises(KeyError, match="no counterpart"):
        released_to_library_name("module.something_else.weight")
    with pytest.raises(KeyError, match="unknown layer part"):
        released_to_library_name("s_enc.layer_stack.0.mystery.weight")
    assert released_to_library_name("v_enc.layer_stack.1.pos_ffn.w_2.bias") == \
        "encoder.video_encoder.transformer.layers.1.ffn.fc2.bias"
