"""Two peer-style skeleton Transformers, written here the plain way, and the same models with their attention
swapped for ``hitrs_fast.attention`` and their checkpoints loaded: outputs and every gradient match the plain
implementation on each backend (``torch``, ``sdpa``, ``triton`` through the interpreter).

- A masked-autoencoder encoder (timm-style blocks, ``qkv`` with bias, 8 heads of 3): each sample keeps its own
  random 10 % of the frame-major joint tokens, and attention runs within +-1 frame of each kept token's frame, so
  the frames are data (``TokenIdMask``). Its checkpoint loads unchanged: ``MultiHeadAttention(fused_qkv=True)``
  has timm's keys.
- A partitioned Transformer (Swin-style temporal windows of 4 frames x 16 joints = 64 tokens, 2 heads of 24) on
  ``nn.MultiheadAttention`` with a learned relative-position table added as ``attn_mask`` and attention dropout.
  Its checkpoint converts from ``in_proj_weight`` (``convert_attention_state_dict``); in training mode the
  reference backend draws the very dropout mask ``nn.MultiheadAttention`` draws, and the kernel's masks are
  replayed into the plain model.
"""

from __future__ import annotations

import contextlib
import io

import pytest
import torch
from torch import nn

from hitrs_fast.attention import MultiHeadAttention, convert_attention_state_dict
from hitrs_fast.masks import TokenIdMask
from tests.support.devices import kernel_device
from tests.support.tolerances import assert_close_verbose, tolerance

BACKENDS = ["torch", "sdpa", pytest.param("triton", marks=pytest.mark.interpreter)]


def _checkpoint(model: nn.Module) -> dict:
    """The model's state_dict through a file (what a released checkpoint is)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


# ---- peer 1: a masked-autoencoder encoder over kept joint tokens ----------------------------------------------


class PeerAttention(nn.Module):
    """timm's ``Attention`` (``qkv`` with bias, ``proj``) with the peer's mask: frames within +-1."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv, self.proj = nn.Linear(dim, 3 * dim, bias=True), nn.Linear(dim, dim)

    def forward(self, x, frames):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        near = (frames[:, :, None] - frames[:, None, :]).abs() <= 1
        attn = ((q @ k.transpose(-2, -1)) * self.scale).masked_fill(~near[:, None], float("-inf")).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class SwappedAttention(MultiHeadAttention):
    """The swap: same keys as timm's attention, the peer's rule said as a mask."""

    def __init__(self, dim: int, heads: int, backend: str) -> None:
        super().__init__(dim, heads, backend=backend, fused_qkv=True, qkv_bias=True, out_bias=True)

    def forward(self, x, frames):
        return super().forward(x, TokenIdMask(frames, rule="window", radius=1))


class MaeBlock(nn.Module):
    def __init__(self, attention: nn.Module, dim: int) -> None:
        super().__init__()
        self.norm1, self.attn, self.norm2, self.mlp = nn.LayerNorm(dim), attention, nn.LayerNorm(dim), Mlp(dim, 2 * dim)

    def forward(self, x, frames):
        x = x + self.attn(self.norm1(x), frames)
        return x + self.mlp(self.norm2(x))


class MaeEncoder(nn.Module):
    """Joint tokens ``[B, T, V, C] -> [B, T * V, dim]`` (frame-major), the kept subset per sample, the blocks."""

    def __init__(self, frames=10, joints=25, channels=3, dim=24, heads=8, depth=2, backend=None) -> None:
        super().__init__()
        self.joints = joints
        self.embed = nn.Linear(channels, dim)
        self.pos = nn.Parameter(0.02 * torch.randn(1, frames * joints, dim))

        def attention():
            return PeerAttention(dim, heads) if backend is None else SwappedAttention(dim, heads, backend)

        self.blocks = nn.ModuleList(MaeBlock(attention(), dim) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x, kept):
        tokens = self.embed(x).flatten(1, 2) + self.pos
        tokens = tokens.gather(1, kept[..., None].expand(-1, -1, tokens.shape[-1]))
        frames = kept // self.joints
        for block in self.blocks:
            tokens = block(tokens, frames)
        return self.norm(tokens)


# ---- peer 2: a partitioned Transformer with relative position bias ------------------------------------------


class PartitionBlock(nn.Module):
    """Attention within temporal windows of ``window`` frames (all joints), with a learned relative-position table
    ``[(2P - 1)(2V - 1), H]`` gathered to ``[H, N, N]`` and added to the scores; ``nn.MultiheadAttention`` with
    attention dropout."""

    def __init__(self, dim, heads, window, joints, attn_drop, backend=None) -> None:
        super().__init__()
        self.window, self.heads = window, heads
        self.norm1, self.norm2, self.mlp = nn.LayerNorm(dim), nn.LayerNorm(dim), Mlp(dim, 2 * dim)
        if backend is None:
            self.attn = nn.MultiheadAttention(dim, heads, dropout=attn_drop, batch_first=True)
        else:
            self.attn = MultiHeadAttention(dim, heads, backend=backend, fused_qkv=True, qkv_bias=True, out_bias=True,
                                           attn_dropout=attn_drop)
        self.table = nn.Parameter(0.5 * torch.randn((2 * window - 1) * (2 * joints - 1), heads))
        t, j = torch.arange(window).repeat_interleave(joints), torch.arange(joints).repeat(window)
        index = (t[:, None] - t[None, :] + window - 1) * (2 * joints - 1) + (j[:, None] - j[None, :] + joints - 1)
        self.register_buffer("index", index, persistent=False)

    def relative_bias(self):
        n = self.index.shape[0]
        return self.table[self.index.flatten()].view(n, n, self.heads).permute(2, 0, 1)  # [H, N, N]

    def forward(self, x):
        b, t, v, c = x.shape
        w = x.reshape(b * t // self.window, self.window * v, c)  # the windows: [B * T / P, P * V, C]
        h = self.norm1(w)
        if isinstance(self.attn, nn.MultiheadAttention):
            bias = self.relative_bias().repeat(w.shape[0], 1, 1)  # [B' * H, N, N], MHA's 3-D float mask
            attended, _ = self.attn(h, h, h, attn_mask=bias)
        else:
            attended = self.attn(h, bias=self.relative_bias())
        w = w + attended
        w = w + self.mlp(self.norm2(w))
        return w.reshape(b, t, v, c)


class PartitionedTransformer(nn.Module):
    def __init__(self, dim=48, heads=2, window=4, joints=16, depth=2, attn_drop=0.3, backend=None) -> None:
        super().__init__()
        self.embed = nn.Linear(3, dim)
        self.blocks = nn.ModuleList(PartitionBlock(dim, heads, window, joints, attn_drop, backend)
                                    for _ in range(depth))

    def forward(self, x):
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return x


def converted_checkpoint(model: PartitionedTransformer, checkpoint: dict) -> dict:
    """The peer's checkpoint in the swapped model's keys: each block's ``nn.MultiheadAttention`` entries converted."""
    state = {key: value for key, value in checkpoint.items() if ".attn." not in key}
    for i, block in enumerate(model.blocks):
        prefix = f"blocks.{i}.attn."
        peer = {key[len(prefix):]: value for key, value in checkpoint.items() if key.startswith(prefix)}
        converted = convert_attention_state_dict(peer, "nn.MultiheadAttention", fused_qkv=block.attn.fused_qkv)
        state.update({prefix + key: value for key, value in converted.items()})
    return state


def load_partitioned_checkpoint(model: PartitionedTransformer, checkpoint: dict) -> None:
    model.load_state_dict(converted_checkpoint(model, checkpoint), strict=True)


# ---- the comparisons ---------------------------------------------------------------------------------------


def _run(model, *inputs):
    """Output and the gradient of every parameter for a fixed upstream gradient."""
    model.zero_grad()
    out = model(*inputs)
    out.backward(torch.cos(torch.arange(out.numel(), dtype=out.dtype, device=out.device)).view_as(out))
    return out.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


def _compare(got, expected, where):
    atol, rtol = tolerance("model", torch.float32)
    assert_close_verbose(got[0], expected[0], atol, rtol, f"output ({where})")
    assert set(got[1]) == set(expected[1])
    for name, grad in expected[1].items():
        assert_close_verbose(got[1][name], grad, atol, rtol, f"d{name} ({where})")


@pytest.mark.parametrize("backend", BACKENDS)
def test_masked_autoencoder_encoder(backend):
    device = kernel_device()
    torch.manual_seed(0)
    peer = MaeEncoder().to(device)
    swapped = MaeEncoder(backend=backend).to(device)
    swapped.load_state_dict(_checkpoint(peer), strict=True)  # timm's keys: nothing to convert
    x = torch.randn(2, 10, 25, 3, device=device)
    kept = torch.stack([torch.randperm(250)[:25] for _ in range(2)]).to(device)  # 10 % of the tokens, per sample
    _compare(_run(swapped, x, kept), _run(peer, x, kept), f"MAE encoder, {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_partitioned_transformer_eval(backend):
    device = kernel_device()
    torch.manual_seed(0)
    peer = PartitionedTransformer().to(device).eval()
    swapped = PartitionedTransformer(backend=backend).to(device).eval()
    load_partitioned_checkpoint(swapped, _checkpoint(peer))
    x = torch.randn(1, 8, 16, 3, device=device)
    _compare(_run(swapped, x), _as_swapped(swapped, _run(peer, x)), f"partitioned, eval, {backend}")


def _as_swapped(swapped: PartitionedTransformer, result: tuple) -> tuple:
    """The peer's output and gradients, the gradients in the swapped model's keys (converted like weights)."""
    out, grads = result
    return out, converted_checkpoint(swapped, grads)


def test_partitioned_transformer_training_draws_the_peers_dropout_on_the_reference():
    """In training mode the reference backend draws its attention-dropout mask exactly as ``nn.MultiheadAttention``
    does (``F.dropout`` on the probabilities): same seed, same output and gradients, relative table included."""
    torch.manual_seed(0)
    peer = PartitionedTransformer().train()
    swapped = PartitionedTransformer(backend="torch").train()
    load_partitioned_checkpoint(swapped, _checkpoint(peer))
    x = torch.randn(1, 8, 16, 3)
    torch.manual_seed(5)
    expected = _run(peer, x)
    torch.manual_seed(5)
    got = _run(swapped, x)
    _compare(got, _as_swapped(swapped, expected), "partitioned, training, torch")
    torch.manual_seed(5)
    assert not torch.allclose(peer.eval()(x), expected[0]), "dropout was active in training"


@pytest.mark.interpreter
def test_partitioned_transformer_training_on_the_kernel(monkeypatch):
    """The kernel draws its own dropout masks (one seed per layer from PyTorch's generator); replayed into the plain
    model in place of ``F.dropout``, the peer gives the kernel's output and gradients."""
    from hitrs_fast.kernels.frame_attention import attention_dropout_mask

    device = kernel_device()
    torch.manual_seed(0)
    peer = PartitionedTransformer().to(device).train()
    swapped = PartitionedTransformer(backend="triton").to(device).train()
    load_partitioned_checkpoint(swapped, _checkpoint(peer))
    x = torch.randn(1, 8, 16, 3, device=device)
    torch.manual_seed(9)
    seeds = [torch.randint(0, 2**31 - 1, (1,), device=device, dtype=torch.int64) for _ in swapped.blocks]
    torch.manual_seed(9)
    got = _run(swapped, x)
    windows, heads, n = 2, 2, 64
    keeps = [attention_dropout_mask(seed, windows, heads, n, 0.3).reshape(windows * heads, n, n) for seed in seeds]
    real_dropout = torch.nn.functional.dropout

    def replayed(t, p=0.5, training=True, inplace=False):
        if t.shape == keeps[0].shape:
            return t * keeps.pop(0) / (1.0 - p)
        return real_dropout(t, p, training, inplace)

    monkeypatch.setattr(torch.nn.functional, "dropout", replayed)
    expected = _run(peer, x)
    assert not keeps, "one mask per layer replayed"
    _compare(got, _as_swapped(swapped, expected), "partitioned, training, triton")


def test_partitioned_transformer_trains():
    """A few SGD steps on the swapped model (dropout on) lower a regression loss; the relative table learns."""
    torch.manual_seed(0)
    model = PartitionedTransformer(backend="auto", depth=1).train()
    x, target = torch.randn(1, 8, 16, 3), torch.randn(1, 8, 16, 48)
    table = model.blocks[0].table.detach().clone()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = nn.functional.mse_loss(model(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses
    assert not torch.equal(model.blocks[0].table, table)


# ---- the loaders --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fused", [False, True], ids=["split", "fused"])
def test_loaders_from_every_layout_give_the_same_attention(fused):
    """timm (``qkv`` + ``proj``, or BEiT's ``q_bias`` / ``v_bias``), ``nn.MultiheadAttention`` and the split layout
    all load into either layout of :class:`MultiHeadAttention` and compute the same attention."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    x = torch.randn(2, 7, 32)
    expected, _ = mha(x, x, x, need_weights=False)
    ours = MultiHeadAttention(32, 4, backend="torch", fused_qkv=fused, qkv_bias=True, out_bias=True)
    ours.load_peer_state_dict(mha.state_dict(), "nn.MultiheadAttention")
    torch.testing.assert_close(ours(x), expected)
    assert [type(m) for m in MultiHeadAttention.from_torch(mha).modules()][0] is MultiHeadAttention
    torch.testing.assert_close(MultiHeadAttention.from_torch(mha, backend="torch", fused_qkv=fused)(x), expected)
    timm = {"qkv.weight": mha.in_proj_weight, "qkv.bias": mha.in_proj_bias, "proj.weight": mha.out_proj.weight,
            "proj.bias": mha.out_proj.bias}
    other = MultiHeadAttention(32, 4, backend="torch", fused_qkv=not fused, qkv_bias=True, out_bias=True)
    other.load_peer_state_dict(timm, "timm")
    torch.testing.assert_close(other(x), expected)
    back = MultiHeadAttention(32, 4, backend="torch", fused_qkv=fused, qkv_bias=True, out_bias=True)
    back.load_peer_state_dict(other.state_dict(), "fused" if not fused else "split")
    torch.testing.assert_close(back(x), expected)
    beit = {"qkv.weight": mha.in_proj_weight, "q_bias": mha.in_proj_bias[:32], "v_bias": mha.in_proj_bias[64:],
            "proj.weight": mha.out_proj.weight, "proj.bias": mha.out_proj.bias}
    with torch.no_grad():
        mha.in_proj_bias[32:64] = 0.0  # BEiT has no k bias
    expected, _ = mha(x, x, x, need_weights=False)
    beit_module = MultiHeadAttention(32, 4, backend="torch", fused_qkv=fused, qkv_bias=True, out_bias=True)
    beit_module.load_peer_state_dict(beit, "timm")
    torch.testing.assert_close(beit_module(x), expected)


def test_loader_refuses_to_drop_biases_and_names_missing_keys():
    state = {"qkv.weight": torch.zeros(96, 32), "qkv.bias": torch.zeros(96), "proj.weight": torch.zeros(32, 32)}
    with pytest.raises(ValueError, match="has q/k/v projection biases; build the module with qkv_bias=True"):
        MultiHeadAttention(32, 4, fused_qkv=True).load_peer_state_dict(state, "timm")
    with pytest.raises(ValueError, match=r"a 'nn.MultiheadAttention' checkpoint needs \['q_proj_weight', .*; it has"):
        convert_attention_state_dict({"in_proj_bias": torch.zeros(96)}, "nn.MultiheadAttention")
    with pytest.raises(ValueError, match="layout must be one of"):
        convert_attention_state_dict(state, "hf")
    with pytest.raises(ValueError, match="add_bias_kv"):
        MultiHeadAttention.from_torch(nn.MultiheadAttention(32, 4, add_bias_kv=True))
    # A target bias the checkpoint lacks loads as zero (the checkpoint's function is unchanged).
    converted = convert_attention_state_dict({key: v for key, v in state.items() if key != "qkv.bias"}, "timm",
                                             fused_qkv=False, qkv_bias=True, out_bias=True)
    assert torch.equal(converted["q_proj.bias"], torch.zeros(32)) and torch.equal(converted["out_proj.bias"],
                                                                                  torch.zeros(32))


def test_swapped_models_keep_working_under_no_grad():
    with torch.no_grad(), contextlib.nullcontext():
        out = PartitionedTransformer(backend="auto").eval()(torch.randn(1, 8, 16, 3))
    assert out.shape == (1, 8, 16, 48)
