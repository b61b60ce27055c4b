"""Joint embedding of F-TRS: Linear(C -> d) -> exact GELU -> LayerNorm(d) -> + joint PE.

:func:`joint_embedding` is the functional form and :class:`JointEmbedding` the module;
the module's ``state_dict`` (``linear.weight, linear.bias, norm.weight, norm.bias,
pos``) is the same under every backend. Backends, in the order ``"auto"`` tries them
(:data:`PRIORITY`, see :mod:`hitrs_fast.dispatch`):

- ``"triton"`` (:class:`TritonJointEmbedding`): the fused kernel of ``hitrs_fast.kernels.joint_embedding``
  on CUDA, or on CPU through the interpreter when asked for by name under ``TRITON_INTERPRET=1``;
- ``"torch"`` (:class:`ReferenceJointEmbedding`): the eager reference
  (:func:`hitrs_fast.reference.naive_joint_embedding`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hitrs_fast.dispatch import Backend, TritonBackend, choose_backend
from hitrs_fast.kernels.capabilities import joint_embedding_reasons
from hitrs_fast.posenc import sinusoid_1d
from hitrs_fast.reference.embedding import naive_joint_embedding

OP_NAME = "joint_embedding"


@dataclass(frozen=True)
class EmbeddingInputs:
    """What a backend is asked to take (shapes in :func:`joint_embedding`)."""

    x: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    ln_weight: torch.Tensor
    ln_bias: torch.Tensor
    pos: torch.Tensor
    out_dtype: torch.dtype

    @property
    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.x, self.weight, self.bias, self.ln_weight, self.ln_bias, self.pos


class TritonJointEmbedding(TritonBackend):
    """The fused kernel; its limits are declared in ``hitrs_fast.kernels.capabilities``."""

    NAME = "triton"

    @classmethod
    def not_supported_reasons(cls, inputs: EmbeddingInputs) -> list[str]:
        return joint_embedding_reasons(*inputs.tensors, inputs.out_dtype)

    @staticmethod
    def run(inputs: EmbeddingInputs, eps: float) -> torch.Tensor:
        from hitrs_fast.kernels.joint_embedding import JointEmbeddingFunction

        save_stats = torch.is_grad_enabled() and any(t.requires_grad for t in inputs.tensors)
        return JointEmbeddingFunction.apply(*inputs.tensors, float(eps), inputs.out_dtype, save_stats)


class ReferenceJointEmbedding(Backend):
    """The eager reference (the oracle), any device and float dtype."""

    NAME = "torch"

    @staticmethod
    def run(inputs: EmbeddingInputs, eps: float) -> torch.Tensor:
        return naive_joint_embedding(*inputs.tensors, eps, inputs.out_dtype)


PRIORITY: tuple[type[Backend], ...] = (TritonJointEmbedding, ReferenceJointEmbedding)


def _check_inputs(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, ln_weight: torch.Tensor,
                  ln_bias: torch.Tensor, pos: torch.Tensor) -> None:
    where = "hitrs_fast/embedding.py joint_embedding"
    if x.dim() < 2 or not x.is_floating_point():
        raise ValueError(f"{where}: x must be a floating [..., V, C] tensor, got {x.dtype} {tuple(x.shape)}")
    v, c = x.shape[-2:]
    if weight.dim() != 2 or weight.shape[1] != c:
        raise ValueError(f"{where}: weight must be [d, C={c}], got {tuple(weight.shape)}")
    d = weight.shape[0]
    for name, t in (("bias", bias), ("ln_weight", ln_weight), ("ln_bias", ln_bias)):
        if t.shape != (d,):
            raise ValueError(f"{where}: {name} must be [d={d}], got {tuple(t.shape)}")
    if pos.shape != (v, d):
        raise ValueError(f"{where}: pos must be [V={v}, d={d}] (V from x {tuple(x.shape)}), got {tuple(pos.shape)}")
    devices = {t.device for t in (x, weight, bias, ln_weight, ln_bias, pos)}
    if len(devices) != 1:
        raise ValueError(f"{where}: all tensors must be on one device, got {sorted(map(str, devices))}")


def joint_embedding(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, ln_weight: torch.Tensor,
                    ln_bias: torch.Tensor, pos: torch.Tensor, eps: float = 1e-5, backend: str = "auto", *,
                    out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``LayerNorm(GELU(x W^T + b)) * ln_weight + ln_bias + pos``, per joint token.

    Args:
        x: coordinates ``[..., V, C]`` (e.g. ``[B, F, V, C]`` with V = 25, C = 3); any strides.
        weight ``[d, C]``, bias ``[d]``: the Linear.
        ln_weight, ln_bias ``[d]``: the LayerNorm affine; eps its epsilon.
        pos: joint positional embedding ``[V, d]``, broadcast over the leading dims.
        backend: ``"auto"`` (default), ``"triton"`` or ``"torch"``; see the module docstring.
        out_dtype: output dtype. Default: the autocast dtype when autocast is enabled on
            x's device (so fp32 coordinates give bf16 activations in one write), else the
            parameters' dtype (``weight.dtype``: fp32 coordinates into a bf16 model give bf16).
            Both backends compute in fp32 throughout (float64 inputs: float64 on the
            reference), never rounding the coordinates, and return this dtype; gradients come
            back in each input's own dtype.

    Returns:
        ``[..., V, d]`` in ``out_dtype``.

    Raises:
        ValueError: shapes or devices that do not match.
        NotImplementedError: ``backend="triton"`` (or ``HITRS_FAST_STRICT=1``) with inputs the
            kernel does not support; the message lists the reasons.

    Examples::

        y = joint_embedding(torch.randn(8, 25, 3), w, b, g, beta, pe)   # [8, 25, 128]
    """
    _check_inputs(x, weight, bias, ln_weight, ln_bias, pos)
    if out_dtype is None:
        dev = x.device.type
        autocast = torch.amp.is_autocast_available(dev) and torch.is_autocast_enabled(dev)  # meta: never
        out_dtype = torch.get_autocast_dtype(dev) if autocast else weight.dtype
    inputs = EmbeddingInputs(x, weight, bias, ln_weight, ln_bias, pos, out_dtype)
    return choose_backend(OP_NAME, PRIORITY, backend, inputs, x.device).run(inputs, eps)


class JointEmbedding(nn.Module):
    """F-TRS input stage. ``forward(x [..., V, C]) -> [..., V, d]``.

    Args:
        num_joints: V (25 for NTU skeletons). in_channels: C (3). dim: d (128 in Hi-TRS).
        backend: see :func:`joint_embedding`; the ``state_dict`` does not depend on it.

    Examples::

        emb = JointEmbedding(25, 3, 128, backend="auto")
        tokens = emb(torch.randn(4, 7, 25, 3))   # [4, 7, 25, 128]
    """

    def __init__(self, num_joints: int = 25, in_channels: int = 3, dim: int = 128, backend: str = "auto") -> None:
        super().__init__()
        self.backend = backend
        self.linear = nn.Linear(in_channels, dim)
        self.norm = nn.LayerNorm(dim)
        self.pos = nn.Parameter(sinusoid_1d(num_joints, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return joint_embedding(x, self.linear.weight, self.linear.bias, self.norm.weight, self.norm.bias,
                               self.pos, self.norm.eps, self.backend)

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}"
