"""The public attention-sublayer API: ``FrameAttentionBlock`` / ``frame_attention_block``, its state_dict
keys, its backends and their reasons, argument errors, and its use by the model's Transformer layer."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from hitrs_fast import FrameAttentionBlock, HiTRSConfig, frame_attention_block
from hitrs_fast.attention import BLOCK_PRIORITY, BlockInputs, TritonAttentionBlock
from hitrs_fast.masks import FrameMask, KeyPaddingMask, NoMask, SlidingWindowMask
from hitrs_fast.models import TransformerLayer
from tests.support.devices import kernel_device
from tests.support.tolerances import assert_close_verbose, tolerance

SUBLAYER_KEYS = {"attn_norm.weight", "attn_norm.bias", "attn.q_proj.weight", "attn.k_proj.weight",
                 "attn.v_proj.weight", "attn.out_proj.weight"}


def block_inputs(b=2, n=25, c=32, heads=2, head_dim=16, dtype=torch.float32, mask=NoMask()):
    x = torch.randn(b, n, c, dtype=dtype)
    weights = [torch.randn(heads * head_dim, c, dtype=dtype) for _ in range(3)] + [
        torch.randn(c, heads * head_dim, dtype=dtype)]
    return BlockInputs(x, torch.ones(c, dtype=dtype), torch.zeros(c, dtype=dtype), *weights, mask, heads)


def test_state_dict_keys_are_the_reference_sublayer():
    """The block's keys are the released layer's attention half; the Transformer layer, which is a block plus
    the feed-forward half, keeps every key it had."""
    assert set(FrameAttentionBlock(32, 2, 16).state_dict()) == SUBLAYER_KEYS
    layer = TransformerLayer(32, 64, 2, 16, 0.1, "torch")
    assert set(layer.state_dict()) == SUBLAYER_KEYS | {"ffn_norm.weight", "ffn_norm.bias", "ffn.fc1.weight",
                                                       "ffn.fc1.bias", "ffn.fc2.weight", "ffn.fc2.bias"}


@pytest.mark.interpreter
@pytest.mark.parametrize("mask", [NoMask(), FrameMask(frame_size=25, num_frames=2, cls="last")],
                         ids=["nomask", "frame"])
def test_module_weights_move_between_backends(mask):
    """One set of weights, loaded strictly into the block on every backend, gives the same output."""
    torch.manual_seed(0)
    device = kernel_device()
    ref = FrameAttentionBlock(32, 2, 16, backend="torch").to(device).eval()
    x = torch.randn(3, 25 + isinstance(mask, FrameMask) * 26, 32, device=device)
    expected = ref(x, mask)
    atol, rtol = tolerance("attention_block", torch.float32)
    for backend in ("triton", "sdpa", "auto"):
        other = FrameAttentionBlock(32, 2, 16, backend=backend).to(device).eval()
        other.load_state_dict(ref.state_dict(), strict=True)
        assert_close_verbose(other(x, mask), expected, atol, rtol, backend)


def test_the_layer_is_the_block_then_the_ffn():
    """``TransformerLayer`` computes ``block(x)`` then ``+ dropout(FFN(LN(x)))``, and the block is the functional
    sublayer with the layer's own weights."""
    torch.manual_seed(0)
    layer = TransformerLayer(32, 64, 2, 16, 0.0, "torch").eval()
    x = torch.randn(2, 51, 32)
    mask = FrameMask(frame_size=25, num_frames=2, cls="last")
    attn = layer.attn
    after_attention = frame_attention_block(x, layer.attn_norm.weight, layer.attn_norm.bias, attn.q_proj.weight,
                                            attn.k_proj.weight, attn.v_proj.weight, attn.out_proj.weight, mask,
                                            heads=2, backend="torch")
    expected = after_attention + layer.ffn(layer.ffn_norm(after_attention))
    torch.testing.assert_close(layer(x, mask), expected)


@pytest.mark.parametrize(("inputs", "expected"), [
    pytest.param(block_inputs(dtype=torch.float64), "compute dtype torch.float64 not in (float16, bfloat16)",
                 id="fp64-compute"),
    pytest.param(block_inputs(), "compute dtype torch.float32 not in (float16, bfloat16)", id="fp32-compute"),
    pytest.param(block_inputs(n=176, mask=FrameMask(num_frames=7, cls="last"), dtype=torch.bfloat16),
                 "N = 176 tokens do not fit a 128-row tile at width 32", id="ctrs-too-long"),
    pytest.param(block_inputs(c=512, dtype=torch.bfloat16), "width C = 512 not in [1, 256]", id="wide"),
    pytest.param(block_inputs(n=14, mask=KeyPaddingMask(torch.tensor([3, 14]), unit="tokens", cls="last"),
                              dtype=torch.bfloat16),
                 "key padding is not fused", id="key-padding"),
    pytest.param(block_inputs(head_dim=80, dtype=torch.bfloat16), "head_dim 80 not in", id="head-dim-80"),
])
def test_fused_path_reasons(inputs, expected):
    """Why the fused kernel passes a shape to the composed path (the performance model's choice, or a limit)."""
    reasons = TritonAttentionBlock.fused_reasons(inputs)
    assert any(expected in r for r in reasons), reasons


def test_fused_path_taken_for_ftrs_in_16_bit():
    assert TritonAttentionBlock.fused_reasons(block_inputs(c=128, heads=8, head_dim=64, dtype=torch.bfloat16)) == []
    assert TritonAttentionBlock.fused_reasons(block_inputs(n=26, c=256, dtype=torch.float16,
                                                           mask=FrameMask(num_frames=1, cls="last"))) == []


def test_triton_backend_reasons_are_the_composed_paths_when_not_fused():
    """A shape neither path takes lists the attention kernel's reasons; fp32 at N = 176 is composed, so fine."""
    assert TritonAttentionBlock.not_supported_reasons(block_inputs(n=176, mask=FrameMask(num_frames=7,
                                                                                         cls="last"))) == []
    reasons = TritonAttentionBlock.not_supported_reasons(block_inputs(head_dim=160))
    assert any("head_dim 160 > 128" in r for r in reasons), reasons


@pytest.mark.interpreter
def test_explicit_triton_with_unsupported_inputs_raises(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    i = block_inputs(head_dim=160)
    with pytest.raises(NotImplementedError,
                       match="frame_attention_block: triton backend not used: .*head_dim 160 > 128"):
        frame_attention_block(i.x, i.ln_weight, i.ln_bias, i.w_q, i.w_k, i.w_v, i.w_o, heads=2, backend="triton")


def test_auto_on_cpu_runs_sdpa_and_matches_the_reference():
    assert [b.NAME for b in BLOCK_PRIORITY] == ["triton", "sdpa", "torch"]
    i = block_inputs(n=51, mask=FrameMask(num_frames=2, cls="last"))
    args = (i.x, i.ln_weight, i.ln_bias, i.w_q, i.w_k, i.w_v, i.w_o, i.mask)
    atol, rtol = tolerance("attention_block", torch.float32)
    assert_close_verbose(frame_attention_block(*args, heads=2), frame_attention_block(*args, heads=2, backend="torch"),
                         atol, rtol, "auto vs torch")


@pytest.mark.parametrize(("change", "match"), [
    pytest.param({"x": torch.randn(2, 25)}, r"x must be \[B, N, C\]", id="x-2d"),
    pytest.param({"w_q": torch.randn(30, 32)}, r"expected w_q, w_k, w_v \[H\*D, C=32\]", id="w_q-shape"),
    pytest.param({"w_o": torch.randn(32, 16)}, r"w_o \[C, H\*D\]", id="w_o-shape"),
    pytest.param({"ln_weight": torch.ones(31)}, r"ln_weight and ln_bias must be \[C=32\]", id="ln-shape"),
    pytest.param({"mask": FrameMask(num_frames=3, cls="last")}, "covers 76 tokens, q has N = 25", id="mask-tokens"),
    pytest.param({"backend": "cuda"}, "backend must be one of", id="backend"),
])
def test_bad_arguments_name_what_was_expected(change, match):
    i = block_inputs()
    kwargs = {"x": i.x, "ln_weight": i.ln_weight, "ln_bias": i.ln_bias, "w_q": i.w_q, "w_k": i.w_k, "w_v": i.w_v,
              "w_o": i.w_o, "mask": NoMask(), "heads": 2, **change}
    with pytest.raises(ValueError, match=match):
        frame_attention_block(**kwargs)


@pytest.mark.interpreter
def test_model_levels_use_the_block_under_triton(monkeypatch):
    """Under backend="triton" every encoder level goes through the block's Triton backend: the F-TRS frames in
    bf16 on the fused kernel, C-TRS and V-TRS (and fp32) on the composed path (recorded, not run here)."""
    from hitrs_fast import HiTRS

    seen = []
    real = TritonAttentionBlock.run.__func__

    def record(cls, inputs, *args):
        seen.append((tuple(inputs.x.shape), not TritonAttentionBlock.fused_reasons(inputs)))
        return real(cls, inputs, *args)

    monkeypatch.setattr(TritonAttentionBlock, "run", classmethod(record))
    device = kernel_device()
    cfg = HiTRSConfig.preset("tiny")
    model = HiTRS(cfg, backend="triton").to(device, torch.bfloat16).eval()
    with torch.no_grad():
        model(torch.randn(1, 1, 8, 25, 3, dtype=torch.bfloat16, device=device))
    assert seen == ([((20, 25, 32), True)] * cfg.frame_layers  # 8 frames + 2 x 6 padding frames, fused
                    + [((2, 176, 64), False)] * cfg.clip_layers  # 2 clips of 7 x 25 + CLS, composed
                    + [((1, 3, 64), False)] * cfg.video_layers)  # key padding, composed


def test_peer_options_take_the_composed_path_and_keep_the_default_fused():
    """Projection biases, an attention bias, attention dropout and the masks the fused kernel does not compute
    each send the block to the composed path, saying why; the model's plain F-TRS block stays fused."""
    plain = block_inputs(c=128, heads=8, head_dim=64, dtype=torch.bfloat16)
    assert TritonAttentionBlock.fused_reasons(plain) == []
    inner = 8 * 64
    with_biases = dataclasses.replace(plain, b_q=torch.zeros(inner), b_o=torch.zeros(128),
                                      attn_bias=torch.zeros(8, 25, 25), attn_dropout=0.1)
    assert TritonAttentionBlock.fused_reasons(with_biases) == ["b_q, b_o, attn_bias, attn_dropout not fused"]
    window = dataclasses.replace(plain, mask=SlidingWindowMask(5, 5, 1, cls="none"))
    assert "mask SlidingWindowMask is not fused" in TritonAttentionBlock.fused_reasons(window)[0]
    assert TritonAttentionBlock.not_supported_reasons(with_biases) == []


@pytest.mark.parametrize("backend", ["torch", "sdpa", pytest.param("triton", marks=pytest.mark.interpreter)])
def test_peer_block_matches_float64(backend):
    """A peer layer's attention half (fused qkv with bias, output bias, head_dim 12, a per-head bias, a sliding
    window): output and the gradients of x, every weight and the bias against the float64 reference block."""
    torch.manual_seed(0)
    device = kernel_device()
    mask = SlidingWindowMask(5, 5, 1, cls="last")
    block = FrameAttentionBlock(24, 2, 12, backend=backend, fused_qkv=True, qkv_bias=True, out_bias=True).to(device)
    oracle = FrameAttentionBlock(24, 2, 12, backend="torch", fused_qkv=True, qkv_bias=True,
                                 out_bias=True).to(device, torch.float64)
    oracle.load_state_dict(block.state_dict())
    assert set(block.state_dict()) == {"attn_norm.weight", "attn_norm.bias", "attn.qkv.weight", "attn.qkv.bias",
                                       "attn.proj.weight", "attn.proj.bias"}
    x = torch.randn(2, 26, 24, device=device)
    bias = torch.randn(2, 26, 26, device=device)

    def run(module, dtype):
        leaf, bias_leaf = (t.detach().to(dtype).requires_grad_() for t in (x, bias))
        out = module(leaf, mask, bias_leaf)
        out.backward(torch.ones_like(out))
        return [out.detach(), leaf.grad, bias_leaf.grad] + [p.grad for p in module.parameters()]

    atol, rtol = tolerance("attention_block", torch.float32)
    for got, expected in zip(run(block, torch.float32), run(oracle, torch.float64), strict=True):
        assert_close_verbose(got, expected, atol, rtol, f"peer block ({backend})")


def test_block_attention_dropout_follows_training():
    torch.manual_seed(0)
    block = FrameAttentionBlock(32, 2, 16, attn_dropout=0.5, backend="sdpa")
    x = torch.randn(2, 25, 32)
    assert not torch.allclose(block(x), block(x)), "training: attention dropout on"
    block.eval()
    assert torch.equal(block(x), block(x))
