"""LayerNorm whose CPU gradients do not depend on the torch thread count.

PyTorch's CPU ``native_layer_norm_backward`` sums the weight and bias gradients over rows in one partial sum per
thread and then adds the partials, so ``dweight`` / ``dbias`` change in the last bits with
``torch.set_num_threads``; a training run amplifies that into a different model (the main job's probe moved from
0.799 with two threads to 0.719 with one). :func:`layer_norm` keeps PyTorch's forward and input gradient bit for
bit and computes ``dweight`` and ``dbias`` as column sums, which PyTorch splits over columns only (each column is
summed in one fixed order). The other two thread-dependent pieces of a CPU step are MKL's GEMMs
(``hitrs_fast.training.run.reproducible_cpu_gemms``) and the clip gather's backward
(``hitrs_fast.models.gather_frames``); ``tests/models/test_thread_invariance.py`` checks the whole step op by op.
"""

from __future__ import annotations

import torch
from torch import nn


class _ThreadInvariantLayerNorm(torch.autograd.Function):
    """``native_layer_norm`` forward; backward: ATen's ``dx``, column-sum ``dweight`` and ``dbias``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
        out, mean, rstd = torch.native_layer_norm(x, (x.shape[-1],), weight, bias, eps)
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy: torch.Tensor):
        x, weight, bias, mean, rstd = ctx.saved_tensors
        c = x.shape[-1]
        dx = dweight = dbias = None
        if ctx.needs_input_grad[0]:
            dx = torch.ops.aten.native_layer_norm_backward(dy, x, (c,), mean, rstd, weight, bias,
                                                           [True, False, False])[0]
        acc = torch.promote_types(dy.dtype, torch.float32)  # fp32 sums for bf16 / fp16, float64 stays float64
        rows = dy.reshape(-1, c).to(acc)  # [N, C]
        if ctx.needs_input_grad[1]:
            xhat = (x.reshape(-1, c).to(acc) - mean.reshape(-1, 1).to(acc)) * rstd.reshape(-1, 1).to(acc)
            dweight = (rows * xhat).sum(0).to(weight.dtype)
        if ctx.needs_input_grad[2]:
            dbias = rows.sum(0).to(bias.dtype)
        return dx, dweight, dbias, None


def layer_norm(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float) -> torch.Tensor:
    """``nn.functional.layer_norm`` over the last dim of ``x [..., C]`` (``weight``, ``bias`` ``[C]``).

    Same forward and input gradient as PyTorch; on the CPU, with gradients flowing to ``weight`` and ``bias``,
    their gradients are the same at every thread count (module docstring). Elsewhere (CUDA, no affine, no
    gradient, a tracing ``torch.compile``) it is ``nn.functional.layer_norm`` itself.
    """
    if (x.device.type != "cpu" or weight is None or bias is None or not torch.is_grad_enabled()
            or not (weight.requires_grad or bias.requires_grad) or torch.compiler.is_compiling()):
        return nn.functional.layer_norm(x, (x.shape[-1],), weight, bias, eps)
    return _ThreadInvariantLayerNorm.apply(x, weight, bias, eps)
