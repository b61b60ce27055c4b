"""The encoder and the pre-training step without host syncs.

Eager calls take their sizes from the lengths on the host and pack away the batch padding; under static
shapes (``torch.compile``) nothing is packed, the padding is computed and zeroed. Both must give the same
real outputs, and the static pre-training forward + backward must compile as one graph (no ``.item()``,
no boolean-mask indexing, no data-dependent shape anywhere in the step).
"""

import pytest
import torch

from hitrs_fast import HiTRS, HiTRSConfig, HiTRSForPretraining
from hitrs_fast.sampling import SampleRandom
from tests.support.devices import kernel_device
from tests.support.tolerances import tolerance

TINY_ALL = HiTRSConfig.preset("tiny", use_video_tasks=True)  # every pretext task on


def _pretrain_batch(b=4, t=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.randn(b, t, 25, 3, generator=g)
    lengths = torch.randint(TINY_ALL.min_pretrain_frames, t + 1, (b,), generator=g)
    lengths[0] = t
    return x, lengths, torch.arange(b)


def _grads(model):
    # A compiled module names its parameters "_orig_mod.<name>".
    return {n.removeprefix("_orig_mod."): p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _step(model, x, lengths, ids, **kwargs):
    model.zero_grad(set_to_none=True)
    out = model(x, lengths, generator=SampleRandom(0, ids), **kwargs)
    out["loss"].backward()
    return {k: v.detach() for k, v in out.items()}, _grads(model)


def _assert_same(a, b, atol=1e-6, rtol=1e-5):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=rtol, msg=lambda m, k=k: f"{k}: {m}")


def test_encoder_static_shapes_equal_packed():
    torch.manual_seed(0)
    model = HiTRS(TINY_ALL).eval()
    x = torch.randn(3, 2, 40, 25, 3)
    x[2, 1] = 0  # an absent body
    lengths = torch.tensor([40, 17, 1])
    packed = model(x, lengths)
    static = model(x, lengths, static_shapes=True)
    for name in ("frame_features", "clip_embeddings", "video_embeddings", "pooled", "num_clips"):
        torch.testing.assert_close(getattr(static, name), getattr(packed, name), atol=1e-6, rtol=1e-5)
    # Padding stays exactly zero in both.
    assert static.frame_features[1, :, 17:].abs().sum() == 0 and static.clip_embeddings[2, :, 1:].abs().sum() == 0


def test_pretraining_static_shapes_equal_packed_losses_and_gradients():
    torch.manual_seed(0)
    model = HiTRSForPretraining(TINY_ALL)
    x, lengths, ids = _pretrain_batch()
    packed = _step(model, x, lengths, ids)
    static = _step(model, x, lengths, ids, static_shapes=True)
    _assert_same(static[0], packed[0])
    _assert_same(static[1], packed[1])


def test_static_shapes_clamp_lengths_they_cannot_check():
    """Eager calls check lengths on the host, even with static shapes. Inside ``torch.compile`` nothing is
    read on the host: an out-of-range length is clamped into [1, T] instead of indexing out of bounds."""
    torch.manual_seed(0)
    model = HiTRS(TINY_ALL).eval()
    x = torch.randn(2, 1, 20, 25, 3)
    with pytest.raises(ValueError, match="exceeds the tensor's T=20"):
        model(x, torch.tensor([20, 50]), static_shapes=True)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    clamped = compiled(x, torch.tensor([20, 50]))
    torch.testing.assert_close(clamped.pooled, model(x, torch.tensor([20, 20])).pooled, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("backend", ["auto", "triton"])
def test_pretraining_step_compiles_as_one_graph(backend):
    """``torch.compile(fullgraph=True)`` fails on any graph break: a host sync (``.item()``, ``nonzero``,
    boolean-mask indexing) or a data-dependent shape in the forward or its backward. AOTAutograd
    (``aot_eager``) traces both; Inductor's code generation is left out only because it takes minutes on
    CPU. ``triton`` runs the kernels' registered custom ops (the Triton interpreter on CPU) and is compared
    with the reference backend, the same weights, in eager mode."""
    torch.manual_seed(0)
    device = kernel_device() if backend == "triton" else torch.device("cpu")
    model = HiTRSForPretraining(TINY_ALL, backend=backend).to(device)
    reference = HiTRSForPretraining(TINY_ALL, backend="torch").to(device)
    reference.load_state_dict(model.state_dict())
    b, t = (3, 24) if backend == "auto" else (2, 16)
    x, lengths, ids = _pretrain_batch(b=b, t=t)
    x, ids = x.to(device), ids.to(device)
    eager = _step(reference, x, lengths, ids, static_shapes=True)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    got = _step(compiled, x, lengths, ids)
    atol, rtol = tolerance("model", torch.float32)
    _assert_same(got[0], eager[0], atol=atol, rtol=rtol)
    _assert_same(got[1], eager[1], atol=atol, rtol=rtol)


@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.requires_cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_pretraining_step_never_syncs(backend):
    """On a GPU, with lengths on the CPU (as the loader yields them), a packed forward + backward makes no
    host sync: ``set_sync_debug_mode("error")`` turns any (``.item()``, ``nonzero``, a blocking copy) into an
    error. The first step runs outside it (autotuning and lazy initialisation synchronise on purpose)."""
    torch.manual_seed(0)
    model = HiTRSForPretraining(TINY_ALL, backend=backend).cuda()
    x, lengths, ids = _pretrain_batch(b=6, t=40)
    x, ids = x.cuda(), ids.cuda()
    _step(model, x, lengths, ids)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = model(x, lengths, generator=SampleRandom(0, ids))
        out["loss"].backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(out["loss"]).item()
