"""bf16 pre-training steps, as a GPU runs them, on CPU.

DeepSpeed's bf16 mode casts the parameters only: the loader's fp32 coordinates meet bf16 weights. The
other common recipe keeps fp32 parameters under ``torch.autocast``. Both must run forward and backward
under every backend (the Triton kernels through the interpreter) and stay near the fp32 losses.
"""

import pytest
import torch

from hitrs_fast import HiTRSConfig, HiTRSForPretraining
from hitrs_fast.sampling import SampleRandom
from tests.support.devices import kernel_device

TINY_ALL = HiTRSConfig.preset("tiny", use_video_tasks=True)  # every pretext task on
BF16_LOSS_RTOL = 0.02  # bf16 keeps 8 significant bits; a pretext loss of a 1-layer model moves well inside this


# Triton with bf16 parameters is tests/models/test_model_backends.py's 2x-rule test (every loss and gradient
# against float64, a stricter check of the same step); here it would cost two more interpreter minutes.
CASES = [(backend, recipe) for backend in ("torch", "auto", "triton") for recipe in ("bf16_parameters", "autocast")
         if (backend, recipe) != ("triton", "bf16_parameters")]


@pytest.mark.parametrize(("backend", "recipe"), CASES)
def test_bf16_pretraining_step(backend, recipe):
    torch.manual_seed(0)
    device = kernel_device() if backend == "triton" else torch.device("cpu")
    model = HiTRSForPretraining(TINY_ALL, backend=backend).to(device)
    g = torch.Generator().manual_seed(1)
    x = (0.3 * torch.randn(2, 16, 25, 3, generator=g)).to(device)  # fp32, as the loader yields
    lengths, ids = torch.tensor([16, 15]), torch.arange(2, device=device)
    oracle = HiTRSForPretraining(TINY_ALL, backend="torch").to(device)  # fp32 losses of the same weights
    oracle.load_state_dict(model.state_dict())
    reference = oracle(x, lengths, generator=SampleRandom(0, ids))
    if recipe == "bf16_parameters":
        model.to(torch.bfloat16)
        out = model(x, lengths, generator=SampleRandom(0, ids))
    else:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = model(x, lengths, generator=SampleRandom(0, ids))
    out["loss"].backward()
    want_dtype = torch.bfloat16 if recipe == "bf16_parameters" else torch.float32
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.dtype == want_dtype, name
        assert torch.isfinite(p.grad).all(), name
    for key in ("pose_loss", "clip_order_loss", "video_order_loss", "nce_loss"):
        torch.testing.assert_close(out[key].float(), reference[key].float(), rtol=BF16_LOSS_RTOL, atol=0.0,
                                   msg=lambda m, key=key: f"{key}: {m}")
