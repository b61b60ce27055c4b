"""The pre-LN feed-forward sublayer of the released TRS layer: ``x + dropout(W2 GELU(W1 LN(x) + b1) + b2)``.

:func:`ffn_block` is the functional form (the model's layers call it with their ``ffn_norm`` and ``ffn.fc1`` /
``ffn.fc2`` parameters). Backends, in the order ``"auto"`` tries them (:data:`PRIORITY`, see
:mod:`hitrs_fast.dispatch`):

- ``"triton"`` (:class:`TritonFfnBlock`): the fused kernel of ``hitrs_fast.kernels.ffn_block`` (one kernel each
  way) on CUDA, or on CPU through the interpreter when asked for by name under ``TRITON_INTERPRET=1``;
  the model's Triton backend takes it unless ``HITRS_FAST_FFN=composed`` (the runner-up: the reference's ops,
  which ``torch.compile`` fuses around cuBLAS);
- ``"torch"`` (:class:`ReferenceFfnBlock`): the released layer's ops (:func:`hitrs_fast.reference.naive_ffn_block`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hitrs_fast.dispatch import Backend, TritonBackend, choose_backend
from hitrs_fast.kernels.capabilities import FFN_BLOCK_DETERMINISTIC, ffn_block_reasons
from hitrs_fast.reference.ffn import naive_ffn_block

OP_NAME = "ffn_block"


@dataclass(frozen=True)
class FfnInputs:
    """What a backend is asked to take (shapes in :func:`ffn_block`)."""

    x: torch.Tensor
    ln_weight: torch.Tensor
    ln_bias: torch.Tensor
    w1: torch.Tensor
    b1: torch.Tensor
    w2: torch.Tensor
    b2: torch.Tensor

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype the two Linear layers run in: the autocast dtype under autocast, else the weights'."""
        device = self.x.device.type
        if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
            return torch.get_autocast_dtype(device)
        return self.w1.dtype


class TritonFfnBlock(TritonBackend):
    """The fused kernel; its limits are declared in ``hitrs_fast.kernels.capabilities``."""

    NAME = "triton"
    IS_DETERMINISTIC = FFN_BLOCK_DETERMINISTIC

    @classmethod
    def not_supported_reasons(cls, inputs: FfnInputs) -> list[str]:
        x = inputs.x
        rows = x.numel() // x.shape[-1] if x.dim() and x.shape[-1] else 0
        on_gpu = x.device.type == "cuda"
        return ffn_block_reasons(rows, x.shape[-1], inputs.w1.shape[0], x.dtype, inputs.compute_dtype,
                                 fp32_compute=not on_gpu, on_gpu=on_gpu)

    @staticmethod
    def run(inputs: FfnInputs, eps: float, dropout: float, training: bool) -> torch.Tensor:
        from hitrs_fast.kernels.ffn_block import FfnBlockFunction

        x, cdt = inputs.x, inputs.compute_dtype
        active = training and dropout > 0.0
        # The dropout seed comes from PyTorch's generator (repeatable under torch.manual_seed), on the device.
        seed = torch.randint(0, 2**31 - 1, (1,), device=x.device, dtype=torch.int64) if active else None
        out = FfnBlockFunction.apply(x.reshape(-1, x.shape[-1]), inputs.ln_weight, inputs.ln_bias, inputs.w1.to(cdt),
                                     inputs.b1, inputs.w2.to(cdt), inputs.b2, seed, float(eps),
                                     float(dropout) if active else 0.0)
        return out.view(x.shape)


class ReferenceFfnBlock(Backend):
    """The released layer's ops (the oracle), any device and float dtype."""

    NAME = "torch"

    @staticmethod
    def run(inputs: FfnInputs, eps: float, dropout: float, training: bool) -> torch.Tensor:
        return naive_ffn_block(inputs.x, inputs.ln_weight, inputs.ln_bias, inputs.w1, inputs.b1, inputs.w2,
                               inputs.b2, eps=eps, dropout=dropout, training=training)


PRIORITY: tuple[type[Backend], ...] = (TritonFfnBlock, ReferenceFfnBlock)
FFN_BACKENDS = ("auto", *(b.NAME for b in PRIORITY))


def ffn_block(x: torch.Tensor, ln_weight: torch.Tensor, ln_bias: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor,
              w2: torch.Tensor, b2: torch.Tensor, *, eps: float = 1e-5, dropout: float = 0.0, training: bool = False,
              backend: str = "auto") -> torch.Tensor:
    """The pre-LN feed-forward sublayer, ``x + dropout(W2 GELU(W1 LN(x) + b1) + b2)`` (exact GELU).

    Args:
        x: ``[..., C]`` token features (the residual stream).
        ln_weight, ln_bias: LayerNorm affine ``[C]``; eps its epsilon.
        w1 ``[F, C]``, b1 ``[F]``, w2 ``[C, F]``, b2 ``[C]``: the two Linear layers.
        dropout, training: dropout on the FFN output (active when ``training`` and ``dropout > 0``). The torch
            backend draws ``nn.Dropout``'s mask; the fused kernel draws its own (same rate, from a seed taken
            from PyTorch's generator).
        backend: ``"auto"``, ``"triton"`` or ``"torch"`` (module docstring).

    Returns:
        ``[..., C]`` in x's dtype (the Linear layers in the autocast dtype under autocast).

    Examples::

        y = ffn_block(torch.randn(4, 176, 256), torch.ones(256), torch.zeros(256), 0.05 * torch.randn(128, 256),
                      torch.zeros(128), 0.05 * torch.randn(256, 128), torch.zeros(256))   # [4, 176, 256]
    """
    if x.dim() < 1:
        raise ValueError(f"{OP_NAME}: x must be [..., C], got a scalar")
    c = x.shape[-1]
    f = w1.shape[0] if w1.dim() == 2 else -1
    if w1.shape != (f, c) or b1.shape != (f,) or w2.shape != (c, f) or b2.shape != (c,):
        raise ValueError(f"{OP_NAME}: expected w1 [F, C={c}], b1 [F], w2 [C={c}, F], b2 [C={c}], got "
                         f"{tuple(w1.shape)}, {tuple(b1.shape)}, {tuple(w2.shape)}, {tuple(b2.shape)}")
    if ln_weight.shape != (c,) or ln_bias.shape != (c,):
        raise ValueError(f"{OP_NAME}: ln_weight and ln_bias must be [C={c}], got {tuple(ln_weight.shape)}, "
                         f"{tuple(ln_bias.shape)}")
    inputs = FfnInputs(x, ln_weight, ln_bias, w1, b1, w2, b2)
    chosen = choose_backend(OP_NAME, PRIORITY, backend, inputs, x.device)
    return chosen.run(inputs, float(eps), float(dropout), bool(training))


__all__ = ["FFN_BACKENDS", "PRIORITY", "FfnInputs", "ReferenceFfnBlock", "TritonFfnBlock", "ffn_block"]
