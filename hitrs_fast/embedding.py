"""Joint embedding of F-TRS: Linear(C -> d) -> exact GELU -> LayerNorm(d) -> + joint PE.

:func:`joint_embedding` is the functional form and :class:`JointEmbedding` the module;
the module's ``state_dict`` (``linear.weight, linear.bias, norm.weight, norm.bias,
pos``) is the same under every backend. Backends:

- ``"torch"``: the eager reference (:func:`hitrs_fast.reference.naive_joint_embedding`);
- ``"triton"``: the fused kernel of ``hitrs_fast.kernels.joint_embedding`` (CUDA, or the
  CPU interpreter under ``TRITON_INTERPRET=1``);
- ``"auto"``: the kernel on CUDA where it supports the inputs, else the reference. On
  CPU ``"auto"`` always takes the reference, even under ``TRITON_INTERPRET=1``, because
  the interpreter is orders of magnitude slower than eager PyTorch.
"""

from __future__ import annotations

import torch
from torch import nn

from hitrs_fast.dispatch import choose_backend, device_reasons, interpreter_mode
from hitrs_fast.posenc import sinusoid_1d
from hitrs_fast.reference.embedding import naive_joint_embedding

_OP = "joint_embedding"
_KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Mirrors MAX_CHANNELS of kernels/joint_embedding.py (not imported: that module imports triton).
_MAX_CHANNELS = 16
# Backward register tile V_pad * d_pad: three fp32 accumulators of this size per program;
# beyond it they spill to local memory, so larger shapes take the reference.
_MAX_BWD_TILE = 16384


def _next_pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


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


def not_supported_reasons(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, ln_weight: torch.Tensor,
                          ln_bias: torch.Tensor, pos: torch.Tensor, out_dtype: torch.dtype,
                          requested: str = "triton") -> list[str]:
    """Why the Triton kernel cannot take these inputs ([] when it can)."""
    reasons = device_reasons(x)
    if not reasons and requested == "auto" and x.device.type != "cuda" and interpreter_mode():
        reasons.append(f"device {x.device} is not CUDA (auto never picks the slow interpreter; "
                       "request backend='triton' to run it)")
    if reasons and requested == "auto":
        # Off CUDA the reference runs whatever else is true; listing more would only make the
        # quiet CPU fallback warn (choose_backend stays quiet for device-only reasons).
        return reasons
    for name, t in (("x", x), ("weight", weight), ("bias", bias), ("ln_weight", ln_weight), ("ln_bias", ln_bias),
                    ("pos", pos)):
        if t.dtype not in _KERNEL_DTYPES:
            reasons.append(f"{name} dtype {t.dtype} not in (float32, bfloat16, float16)")
    if out_dtype not in _KERNEL_DTYPES:
        reasons.append(f"output dtype {out_dtype} not in (float32, bfloat16, float16)")
    v, c = x.shape[-2:]
    if c > _MAX_CHANNELS:
        reasons.append(f"C = {c} > {_MAX_CHANNELS} input channels")
    tile = _next_pow2(v) * _next_pow2(weight.shape[0])
    if tile > _MAX_BWD_TILE:
        reasons.append(f"V_pad * d_pad = {tile} > {_MAX_BWD_TILE} (backward tile would spill registers)")
    return reasons


def joint_embedding(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, ln_weight: torch.Tensor,
                    ln_bias: torch.Tensor, pos: torch.Tensor, eps: float = 1e-5, backend: str = "auto", *,
                    out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``LayerNorm(GELU(x W^T + b)) * ln_weight + ln_bias + pos``, per joint token.

    Args:
        x: coordinates ``[..., V, C]`` (e.g. ``[B, F, V, C]`` with V = 25, C = 3); any strides.
        weight ``[d, C]``, bias ``[d]``: the Linear.
        ln_weight, ln_bias ``[d]``: the LayerNorm affine; eps its epsilon.
        pos: joint positional embedding ``[V, d]``, broadcast over the leading dims.
        backend: ``"auto"`` (default), ``"torch"`` or ``"triton"``; see the module docstring.
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
        out_dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else weight.dtype
    if backend == "torch":
        chosen = "torch"
    else:
        reasons = (not_supported_reasons(x, weight, bias, ln_weight, ln_bias, pos, out_dtype, backend)
                   if backend in ("auto", "triton") else [])
        chosen = choose_backend(_OP, backend, reasons)
    if chosen == "torch":
        return naive_joint_embedding(x, weight, bias, ln_weight, ln_bias, pos, eps, out_dtype)

    from hitrs_fast.kernels.joint_embedding import JointEmbeddingFunction

    save_stats = torch.is_grad_enabled() and any(
        t.requires_grad for t in (x, weight, bias, ln_weight, ln_bias, pos))
    return JointEmbeddingFunction.apply(x, weight, bias, ln_weight, ln_bias, pos, float(eps), out_dtype, save_stats)


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
