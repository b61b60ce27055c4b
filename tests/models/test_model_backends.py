"""The whole model under the Triton backend (every kernel; the CPU interpreter here)
matches the torch backend: same weights, same losses, same gradients. In fp32 every attention
sublayer takes the composed path (fp32 never runs the fused kernel); in bf16 the F-TRS sublayers
take the fused kernel."""

import pytest
import torch

from hitrs_fast import HiTRS, HiTRSConfig, HiTRSForPretraining
from hitrs_fast.sampling import SampleRandom
from tests.support.devices import kernel_device
from tests.support.tolerances import assert_close_verbose, assert_low_precision_close, tolerance

pytestmark = pytest.mark.interpreter

TINY = HiTRSConfig.preset("tiny", dropout=0.0)
DEVICE = kernel_device()  # the Triton kernels' device: CPU under the interpreter, else the GPU


def batch(b=3, t=22, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, 25, 3, generator=g) * 0.3 + torch.linspace(0, 1, t)[None, :, None, None]
    lengths = torch.tensor([t, t - 3, 19][:b])
    return x.to(DEVICE), lengths


def run(model, x, lengths):
    out = model(x, lengths, generator=SampleRandom(3, torch.arange(x.shape[0], device=x.device)))
    model.zero_grad(set_to_none=True)
    out["loss"].backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


def test_pretraining_losses_and_gradients_match():
    torch.manual_seed(0)
    ref = HiTRSForPretraining(TINY, backend="torch").to(DEVICE)
    fast = HiTRSForPretraining(TINY, backend="triton").to(DEVICE)
    fast.load_state_dict(ref.state_dict(), strict=True)
    x, lengths = batch()
    out_ref, g_ref = run(ref, x, lengths)
    out_fast, g_fast = run(fast, x, lengths)
    atol, rtol = tolerance("model", torch.float32)
    for key, value in out_ref.items():
        assert_close_verbose(out_fast[key], value, atol, rtol, key)
    assert g_ref.keys() == g_fast.keys()
    for name, g in g_ref.items():
        assert_close_verbose(g_fast[name], g, atol, rtol, f"grad {name}")


def test_encoder_outputs_match_and_weights_move_both_ways():
    torch.manual_seed(1)
    ref = HiTRS(TINY, backend="torch").to(DEVICE).eval()
    fast = HiTRS(TINY, backend="triton").to(DEVICE).eval()
    fast.load_state_dict(ref.state_dict(), strict=True)
    ref.load_state_dict(fast.state_dict(), strict=True)
    x = torch.randn(2, 2, 15, 25, 3, device=DEVICE)
    lengths = torch.tensor([15, 8])
    a, b = ref(x, lengths), fast(x, lengths)
    atol, rtol = tolerance("model", torch.float32)
    for field in ("frame_features", "clip_embeddings", "video_embeddings", "pooled"):
        assert_close_verbose(getattr(b, field), getattr(a, field), atol, rtol, field)


def test_bf16_pretraining_losses_and_gradients_follow_the_2x_rule():
    """bf16 parameters (DeepSpeed's bf16 mode), where F-TRS takes the fused attention-sublayer kernel: every loss
    and every parameter gradient of the Triton backend is within twice the torch backend's bf16 error against
    the float64 model (plus the table's bf16 atol), on the same weights and pretext draws."""
    torch.manual_seed(0)
    ref = HiTRSForPretraining(TINY, backend="torch").to(DEVICE)
    fast = HiTRSForPretraining(TINY, backend="triton").to(DEVICE)
    fast.load_state_dict(ref.state_dict(), strict=True)
    oracle = HiTRSForPretraining(TINY, backend="torch").to(DEVICE)
    oracle.load_state_dict(ref.state_dict(), strict=True)
    x, lengths = batch()
    out_oracle, g_oracle = run(oracle.double(), x.double(), lengths)
    out_ref, g_ref = run(ref.to(torch.bfloat16), x, lengths)
    out_fast, g_fast = run(fast.to(torch.bfloat16), x, lengths)
    for key, value in out_oracle.items():
        assert_low_precision_close(out_fast[key].float(), out_ref[key].float(), value, "model", key, torch.bfloat16)
    assert g_oracle.keys() == g_fast.keys() == g_ref.keys()
    for name, g in g_oracle.items():
        assert_low_precision_close(g_fast[name], g_ref[name], g, "model", f"grad {name}")
