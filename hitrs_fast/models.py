"""The Hi-TRS encoder: F-TRS (frame), C-TRS (clip) and V-TRS (video) Transformers.

Layouts (see README): data ``[B, M, T, V, C]`` with per-sample ``lengths [B]``; inside
the model clips are ``[B, W, F, V, D]``. C-TRS tokens are frame-major with CLS last
(``[N, F*V + 1, D]``), V-TRS tokens are the W clip embeddings with CLS last.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from hitrs_fast.attention import FrameAttentionBlock
from hitrs_fast.config import HiTRSConfig
from hitrs_fast.embedding import JointEmbedding
from hitrs_fast.feedforward import ffn_block
from hitrs_fast.kernels.capabilities import ffn_kernel
from hitrs_fast.masks import AttentionMask, FrameMask, KeyPaddingMask, NoMask
from hitrs_fast.normalize import apply_centering
from hitrs_fast.posenc import sinusoid_1d, sinusoid_2d
from hitrs_fast.windowing import clip_frame_indices, num_clips, pad_frames


class FeedForward(nn.Module):
    """Linear -> exact GELU -> Linear, ``[..., d] -> [..., d]``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(nn.functional.gelu(self.fc1(x)))


class TransformerLayer(FrameAttentionBlock):
    """Pre-LN layer of the released code: the attention sublayer (:class:`FrameAttentionBlock`, whose
    ``state_dict`` keys it keeps: ``attn_norm.*``, ``attn.*``), then ``x + dropout(FFN(LN(x)))``
    (:func:`hitrs_fast.feedforward.ffn_block`; keys ``ffn_norm.*``, ``ffn.fc1.*``, ``ffn.fc2.*``). Dropout only
    after the attention output projection and after the FFN (none on the attention probabilities)."""

    def __init__(self, dim: int, ffn: int, num_heads: int, head_dim: int, dropout: float, backend: str) -> None:
        super().__init__(dim, num_heads, head_dim, dropout, backend)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn)
        # The fused FFN kernel where the Triton kernels run, unless HITRS_FAST_FFN=composed asks for the ops.
        self.ffn_backend = "torch" if backend in ("torch", "sdpa") or ffn_kernel() == "composed" else backend

    def forward(self, x: torch.Tensor, mask: AttentionMask) -> torch.Tensor:
        x = self.attention_block(x, mask)
        return ffn_block(x, self.ffn_norm.weight, self.ffn_norm.bias, self.ffn.fc1.weight, self.ffn.fc1.bias,
                         self.ffn.fc2.weight, self.ffn.fc2.bias, eps=self.ffn_norm.eps, dropout=self.dropout.p,
                         training=self.training, backend=self.ffn_backend)


class TransformerStack(nn.Module):
    """``num_layers`` pre-LN layers and no final LayerNorm (as released)."""

    def __init__(self, num_layers: int, dim: int, ffn: int, config: HiTRSConfig, backend: str) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerLayer(dim, ffn, config.num_heads, config.head_dim, config.dropout, backend)
            for _ in range(num_layers))

    def forward(self, x: torch.Tensor, mask: AttentionMask) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return x


MODEL_BACKENDS = ("auto", "torch", "sdpa", "triton")
"""Backends of the whole encoder: ``sdpa`` runs the attention through PyTorch SDPA and the rest as the reference."""


class FrameEncoder(nn.Module):
    """F-TRS: joint embedding + Transformer over the V joints of each frame.

    ``forward(x [N, V, C]) -> [N, V, frame_dim]``.
    """

    def __init__(self, config: HiTRSConfig, backend: str = "auto") -> None:
        super().__init__()
        embedding_backend = "torch" if backend == "sdpa" else backend  # the embedding has no SDPA form
        self.embedding = JointEmbedding(config.num_joints, config.in_channels, config.frame_dim,
                                        backend=embedding_backend)
        self.transformer = TransformerStack(config.frame_layers, config.frame_dim, config.frame_ffn, config, backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.transformer(self.embedding(x), NoMask())


def stream_parameters(h: torch.Tensor, residual_stream: str, *params: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The parameters that start a residual stream (positions, CLS token) in the stream's dtype: the parameters'
    own (``"parameters"``: fp32 under autocast, ``h + pos`` promotes), or ``h``'s (``"autocast"``: the autocast
    dtype of the input map's output, so every later add, LayerNorm read and gradient moves half the bytes)."""
    if residual_stream == "autocast":
        return tuple(p.to(h.dtype) for p in params)
    return params


class ClipEncoder(nn.Module):
    """C-TRS: Transformer over the F*V joint tokens of a clip plus a CLS token (last).

    Tokens get a learnable 2-D (frame, joint) positional embedding; CLS gets none. The
    frame mask stops joints of one frame from attending to each other.

    ``forward(clips [N, F, V, frame_dim]) -> CLS [N, clip_dim]``.
    """

    def __init__(self, config: HiTRSConfig, backend: str = "auto") -> None:
        super().__init__()
        self.mask = FrameMask(config.num_joints, config.clip_len, cls="last", allow_self=config.allow_self)
        self.input_map = nn.Linear(config.frame_dim, config.clip_dim)
        self.pos = nn.Parameter(sinusoid_2d(config.clip_len, config.num_joints, config.clip_dim))
        self.cls_token = nn.Parameter(torch.rand(1, 1, config.clip_dim))
        self.residual_stream = config.residual_stream
        self.transformer = TransformerStack(config.clip_layers, config.clip_dim, config.clip_ffn, config, backend)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        n = clips.shape[0]
        h = self.input_map(clips)
        pos, cls = stream_parameters(h, self.residual_stream, self.pos, self.cls_token)
        tokens = torch.cat([(h + pos).flatten(1, 2), cls.expand(n, -1, -1)], dim=1)
        return self.transformer(tokens, self.mask)[:, -1]


class VideoEncoder(nn.Module):
    """V-TRS: Transformer over a sample's clip embeddings plus a CLS token (last).

    ``forward(clips [B, W, clip_dim], lengths [B]) -> CLS [B, video_dim]``; clip slots
    at or beyond ``lengths[b]`` are key-masked.
    """

    def __init__(self, config: HiTRSConfig, backend: str = "auto") -> None:
        super().__init__()
        self.max_clips = config.max_clips
        self.input_map = nn.Linear(config.clip_dim, config.video_dim)
        self.pos = nn.Parameter(sinusoid_1d(config.max_clips, config.video_dim))
        self.cls_token = nn.Parameter(torch.rand(1, 1, config.video_dim))
        self.residual_stream = config.residual_stream
        self.transformer = TransformerStack(config.video_layers, config.video_dim, config.video_ffn, config, backend)

    def forward(self, clips: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        b, w, _ = clips.shape
        if w > self.max_clips:
            raise ValueError(f"V-TRS supports at most {self.max_clips} clips (positional embedding size), got {w}; "
                             "raise HiTRSConfig.max_clips or shorten the sequences")
        h = self.input_map(clips)
        pos, cls = stream_parameters(h, self.residual_stream, self.pos[:w], self.cls_token)
        tokens = torch.cat([h + pos, cls.expand(b, -1, -1)], dim=1)
        return self.transformer(tokens, KeyPaddingMask(lengths, unit="tokens", cls="last"))[:, -1]


@dataclass
class HiTRSOutput:
    """Encoder outputs at every level (downstream tasks use different ones).

    frame_features: ``[B, M, T, V, frame_dim]`` F-TRS tokens of raw frames (zeros past each length).
    clip_embeddings: ``[B, M, W, clip_dim]`` C-TRS CLS per clip (zeros past each sample's clip count).
    video_embeddings: ``[B, M, video_dim]`` V-TRS CLS per body.
    sequence_features: ``[B, M, feature_dim]`` what downstream heads read per body (``config.feature_readout``:
    the V-TRS CLS, or the V-TRS CLS followed by the mean of the body's clip embeddings).
    pooled: ``[B, feature_dim]`` ``sequence_features`` with the bodies combined by ``config.body_reduce``.
    num_clips: ``[B]`` clips per sample, ``ceil(T / stride)``.
    """

    frame_features: torch.Tensor
    clip_embeddings: torch.Tensor
    video_embeddings: torch.Tensor
    sequence_features: torch.Tensor
    pooled: torch.Tensor
    num_clips: torch.Tensor


@dataclass(frozen=True)
class PreparedBatch:
    """A batch made ready for the encoder levels by :meth:`HiTRS.prepare`.

    x: ``[N, T, V, C]`` with the M bodies of every sample folded into the batch (row ``b * M + m``), centred
        by the config's rule and zero past each length. T is the longest length, or the input's T under
        static shapes.
    lengths: ``[N]`` int64 on x's device.
    host_lengths: ``[N]`` int64 on the CPU, the source of every size (packing, cropping, clip counts); None
        under static shapes, where sizes come from tensor shapes alone.
    num_bodies: M.
    """

    x: torch.Tensor
    lengths: torch.Tensor
    host_lengths: torch.Tensor | None
    num_bodies: int

    @property
    def static(self) -> bool:
        return self.host_lengths is None


def run_on_prefixes(fn: Callable[[torch.Tensor], torch.Tensor], gather: Callable[[torch.Tensor, torch.Tensor],
                    torch.Tensor], counts: torch.Tensor, width: int, total: int | None) -> torch.Tensor:
    """``fn`` over slots ``0 .. counts[n] - 1`` of every row n, scattered into ``[N, width, ...]`` (zeros elsewhere).

    Args:
        fn: ``[n, ...] -> [n, ...]``, e.g. an encoder level.
        gather: ``(rows [n], slots [n]) -> [n, ...]``, the input of those slots.
        counts: ``[N]`` int64 on the device, each <= ``width``.
        width: slots per row.
        total: ``counts.sum()`` known on the host: only those slots are computed, and ``repeat_interleave`` is
            told the output size, so packing needs no device sync. None (static shapes): every slot is
            computed and the ones past ``counts`` are zeroed; same result for the real slots.
    """
    n, device = counts.shape[0], counts.device
    if total is None:
        rows = torch.arange(n, device=device).repeat_interleave(width)
        slots = torch.arange(width, device=device).repeat(n)
        out = fn(gather(rows, slots))
        out = out.view(n, width, *out.shape[1:])
        keep = torch.arange(width, device=device)[None, :] < counts[:, None]
        return torch.where(keep.view(n, width, *([1] * (out.dim() - 2))), out, 0)
    rows = torch.repeat_interleave(torch.arange(n, device=device), counts, output_size=total)
    slots = torch.arange(total, device=device) - (torch.cumsum(counts, 0) - counts)[rows]
    out = fn(gather(rows, slots))
    return out.new_zeros(n, width, *out.shape[1:]).index_put((rows, slots), out)


def gather_frames(frames: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``frames[rows[:, None], positions]``: ``[N, T, ...]``, rows ``[n]``, positions ``[n, F]`` -> ``[n, F, ...]``.

    Clips overlap, so the backward adds several gradients into one frame. On the CPU this is an ``index_select``,
    whose backward adds them one index after another (the same bits at any thread count; the advanced index's
    backward, ``index_put`` with accumulation, splits the additions over threads). Elsewhere: the advanced index.
    """
    if frames.device.type != "cpu":
        return frames[rows[:, None], positions]
    flat = (rows[:, None] * frames.shape[1] + positions).reshape(-1)
    return frames.flatten(0, 1).index_select(0, flat).view(*positions.shape, *frames.shape[2:])


def validate_skeletons(x: torch.Tensor, lengths: torch.Tensor | None, config: HiTRSConfig, *, min_length: int = 1,
                       name: str = "x") -> None:
    """Checks a ``[B, M, T, V, C]`` batch and its ``lengths [B]`` (any device); raises ValueError naming the
    tensor and what was expected.

    Value checks that would need a device sync (length range of device lengths, finite coordinates on an
    accelerator) run only where they are free: on CPU tensors, outside ``torch.compile``.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 5:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a [B, M, T, V, C] tensor, got shape {shape}")
    b, _, t, v, c = x.shape
    if v != config.num_joints or c != config.in_channels:
        raise ValueError(f"{name}: expected V={config.num_joints} joints and C={config.in_channels} channels "
                         f"in [B, M, T, V, C], got V={v}, C={c} (shape {tuple(x.shape)})")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got {x.dtype}")
    if lengths is not None:
        if not isinstance(lengths, torch.Tensor) or lengths.dim() != 1 or lengths.shape[0] != b \
                or lengths.is_floating_point() or lengths.dtype == torch.bool:
            got = f"{lengths.dtype} {tuple(lengths.shape)}" if isinstance(lengths, torch.Tensor) else repr(lengths)
            raise ValueError(f"lengths: expected an integer tensor of shape [{b}], got {got}")
        if host_checks_enabled(lengths) and lengths.numel():
            lo, hi = int(lengths.min()), int(lengths.max())
            if hi > t:
                raise ValueError(f"lengths: a length of {hi} frames exceeds the tensor's T={t} "
                                 f"({name} shape {tuple(x.shape)})")
            if lo < min_length:
                raise ValueError(f"lengths: every sample needs at least {min_length} frames, got a sample of {lo}")
    if host_checks_enabled(x) and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: contains NaN or inf coordinates")


def host_checks_enabled(t: torch.Tensor) -> bool:
    """True where reading a value of ``t`` costs no device sync: a CPU tensor outside ``torch.compile``."""
    return t.device.type == "cpu" and not torch.compiler.is_compiling()


def zero_beyond_lengths(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zeroes frames ``t >= lengths[b]`` of ``[B, T, ...]`` (they are zero padding by definition)."""
    keep = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
    return x * keep.view(*keep.shape, *([1] * (x.dim() - 2))).to(x.dtype)


BODY_REDUCTIONS = ("mean_slots", "mean_present")


def reduce_bodies(per_body: torch.Tensor, present: torch.Tensor, mode: str) -> torch.Tensor:
    """Combines ``[B, M, ..., D]`` body features into ``[B, ..., D]``.

    ``mean_slots``: the mean over the M body slots, empty ones included (the released fine-tuning's sum / 2
    with its two slots; an empty body encodes to a constant and acts as a bias). ``mean_present``: the mean
    over the bodies flagged in ``present [B, M]`` (at least one counted).
    """
    if mode == "mean_slots":
        return per_body.mean(1)
    if mode == "mean_present":
        w = present.to(per_body.dtype).view(*present.shape, *([1] * (per_body.dim() - 2)))
        return (per_body * w).sum(1) / w.sum(1).clamp_min(1)
    raise ValueError(f"body_reduce must be one of {BODY_REDUCTIONS}, got {mode!r}")


class HiTRS(nn.Module):
    """Hi-TRS encoder.

    Args:
        config: a :class:`HiTRSConfig` (default: the ``official`` preset).
        backend: attention / embedding backend (:data:`MODEL_BACKENDS`): ``"auto"``, ``"torch"`` (the
            reference), ``"sdpa"`` (PyTorch SDPA attention, the reference elsewhere) or ``"triton"``. Weights
            are identical under every backend.

    ``forward(x [B, M, T, V, C], lengths [B] | None) -> HiTRSOutput``. Bodies are folded
    into the batch (no cross-body attention) and combined after V-TRS.

    Every head (pre-training, recognition, detection, motion prediction) goes through the same steps:
    :meth:`prepare` (validation, centring, folding, cropping), :meth:`encode_frames` (F-TRS),
    :meth:`encode_clips` / :meth:`encode_clip_positions` (C-TRS) and :meth:`encode_video` (V-TRS).

    Sizes come from the lengths on the host: pass ``lengths`` on the CPU (as the loaders do) and a CUDA
    forward has no device sync; lengths on the GPU cost one copy to the host per call. Batch padding is
    skipped (packed) in F-TRS and C-TRS. Under ``torch.compile`` (or ``static_shapes=True``) nothing is
    packed or cropped: every level runs on the padded shapes and the padding is zeroed, so the graph has no
    data-dependent shape; real outputs are the same.

    Examples::

        model = HiTRS(HiTRSConfig.preset("tiny"))
        out = model(torch.randn(2, 2, 40, 25, 3), torch.tensor([40, 33]))
        out.pooled.shape  # [2, 128]: the tiny preset reads the V-TRS CLS (64) and the clip mean (64)
    """

    def __init__(self, config: HiTRSConfig | None = None, backend: str = "auto") -> None:
        super().__init__()
        if backend not in MODEL_BACKENDS:
            raise ValueError(f"HiTRS: backend must be one of {MODEL_BACKENDS}, got {backend!r}")
        self.config = config = config or HiTRSConfig()
        self.backend = backend
        self.frame_encoder = FrameEncoder(config, backend)
        self.clip_encoder = ClipEncoder(config, backend)
        self.video_encoder = VideoEncoder(config, backend)

    def prepare(self, x: torch.Tensor, lengths: torch.Tensor | None = None, *, min_length: int = 1,
                static_shapes: bool | None = None, name: str = "x", centering: str | None = None) -> PreparedBatch:
        """Validates, centres (``config.centering``) and folds a batch; crops it to its longest sample.

        Args:
            x: ``[B, M, T, V, C]`` coordinates (any float dtype; the embedding computes in fp32 or better).
            lengths: int ``[B]`` frames per sample (any device; CPU avoids a device sync), None = all T.
            min_length: the fewest frames a sample may have.
            static_shapes: None = True exactly while ``torch.compile`` traces. Under static shapes device
                lengths are not checked; they are clamped into ``[min_length, T]`` so that no bad value
                can index out of bounds.
            centering: the rule instead of ``config.centering`` (``"none"``: ``x`` was centred by the caller,
                e.g. windows cut from a video centred as a whole).

        Returns:
            :class:`PreparedBatch` with ``x [B * M, T', V, C]``.
        """
        cfg = self.config
        static = torch.compiler.is_compiling() if static_shapes is None else static_shapes
        if not static and isinstance(lengths, torch.Tensor):
            lengths = lengths.to(device="cpu")  # sizes live on the host: one copy when lengths live on a GPU
        validate_skeletons(x, lengths, cfg, min_length=min_length, name=name)
        b, m, t = x.shape[:3]
        if lengths is None:
            lengths = torch.full((b,), t, dtype=torch.long)
        lengths = lengths.long()
        if static:
            host = None
            lengths = lengths.to(x.device, non_blocking=True).clamp(min(min_length, t), t)
        else:
            host = lengths
            t = int(host.max()) if b else t
            lengths = lengths.to(x.device, non_blocking=True)
        x = apply_centering(x[:, :, :t], lengths, centering or cfg.centering, cfg.center_joint)
        folded_lengths = lengths.repeat_interleave(m)
        folded = zero_beyond_lengths(x.flatten(0, 1), folded_lengths)
        return PreparedBatch(folded, folded_lengths, None if host is None else host.repeat_interleave(m), m)

    def _total(self, batch: PreparedBatch, counts: Callable[[torch.Tensor], torch.Tensor]) -> int | None:
        """``counts(lengths).sum()`` from the host lengths; None under static shapes."""
        return None if batch.static else int(counts(batch.host_lengths).sum())

    def clip_count(self, batch: PreparedBatch) -> tuple[torch.Tensor, int]:
        """Clips per row ``W = ceil(T / stride)`` (``[N]`` on the device) and the widest W (host int)."""
        cfg = self.config
        longest = int(batch.host_lengths.max()) if not batch.static else batch.x.shape[1]
        return num_clips(batch.lengths, cfg), -(-longest // cfg.clip_stride)

    def encode_frames(self, batch: PreparedBatch, x: torch.Tensor | None = None, *, pad: bool = True) -> torch.Tensor:
        """F-TRS over the frames each row owns (batch padding is skipped).

        Args:
            batch: from :meth:`prepare`.
            x: ``[N, T, V, C]`` to encode instead of ``batch.x`` (e.g. the masked input of pre-training).
            pad: add ``config.clip_pad`` zero frames at both ends first (the clip windows' padding); False when
                the input already carries its context frames (detection windows).

        Returns:
            ``[N, T + 2 pad, V, frame_dim]``, zero on frames a row does not own.
        """
        cfg = self.config
        x = batch.x if x is None else x
        extra = 2 * cfg.clip_pad if pad else 0
        if pad:
            x = pad_frames(x, cfg)
        return run_on_prefixes(self.frame_encoder, lambda rows, slots: x[rows, slots], batch.lengths + extra,
                               x.shape[1], self._total(batch, lambda lengths: lengths + extra))

    def encode_clip_positions(self, frames: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """C-TRS over clips gathered from frame features.

        frames ``[N, T', V, frame_dim]``, rows ``[n]``, positions ``[n, F]`` (frame indices of ``frames``)
        -> ``[n, clip_dim]``.
        """
        return self.clip_encoder(gather_frames(frames, rows, positions))

    def encode_clips(self, batch: PreparedBatch, frames: torch.Tensor, positions: torch.Tensor, counts: torch.Tensor,
                     total: int | None) -> torch.Tensor:
        """C-TRS over the first ``counts[n]`` clip slots of every row.

        Args:
            batch: from :meth:`prepare` (decides packed vs static).
            frames: ``[N, T', V, frame_dim]`` from :meth:`encode_frames`.
            positions: frame indices of each slot's clip, ``[K, F]`` (the same for every row) or ``[N, K, F]``.
            counts: ``[N]`` real slots per row (a prefix of the K slots).
            total: ``counts.sum()`` from the host (ignored under static shapes).

        Returns:
            ``[N, K, clip_dim]``, zeros in the slots past ``counts``.
        """
        per_row = positions.dim() == 3
        width = positions.shape[-2]

        def gather(rows: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
            return gather_frames(frames, rows, positions[rows, slots] if per_row else positions[slots])

        return run_on_prefixes(self.clip_encoder, gather, counts, width, None if batch.static else total)

    def encode_video(self, clip_embeddings: torch.Tensor, num_clips: torch.Tensor) -> torch.Tensor:
        """V-TRS. ``[N, W, clip_dim], [N] -> [N, video_dim]``; slots ``>= num_clips`` are key-masked."""
        return self.video_encoder(clip_embeddings, num_clips)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, *,
                static_shapes: bool | None = None) -> HiTRSOutput:
        cfg = self.config
        batch = self.prepare(x, lengths, static_shapes=static_shapes)
        b, m = x.shape[:2]
        frames = self.encode_frames(batch)
        w, w_max = self.clip_count(batch)
        clips = self.encode_clips(batch, frames, clip_frame_indices(w_max, cfg, x.device), w,
                                  self._total(batch, lambda lengths: num_clips(lengths, cfg)))
        video = self.encode_video(clips, w).view(b, m, -1)
        features = video
        if cfg.feature_readout == "video_cls_clip_mean":  # slots past each count are zeros
            clip_mean = clips.sum(1) / w.clamp_min(1).to(clips.dtype)[:, None]  # [B * M, clip_dim]
            features = torch.cat([video, clip_mean.view(b, m, -1)], dim=-1)
        present = batch.x.reshape(b, m, -1).abs().sum(-1) > 0  # [B, M]
        t = batch.x.shape[1]
        frame_features = zero_beyond_lengths(frames[:, cfg.clip_pad:cfg.clip_pad + t], batch.lengths)
        return HiTRSOutput(
            frame_features=frame_features.view(b, m, t, cfg.num_joints, -1),
            clip_embeddings=clips.view(b, m, w_max, -1),
            video_embeddings=video,
            sequence_features=features,
            pooled=reduce_bodies(features, present, cfg.body_reduce),
            num_clips=w.view(b, m)[:, 0],
        )


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def expected_encoder_parameters(config: HiTRSConfig) -> int:
    """Closed-form parameter count of :class:`HiTRS` (the spec's check values)."""
    inner = config.num_heads * config.head_dim

    def layer(d: int, ffn: int) -> int:
        return 4 * d + 3 * d * inner + inner * d + 2 * d * ffn + ffn + d

    c = config
    frame = (c.in_channels + 1) * c.frame_dim + 2 * c.frame_dim + c.num_joints * c.frame_dim
    clip = (c.frame_dim + 1) * c.clip_dim + c.clip_len * c.num_joints * c.clip_dim + c.clip_dim
    video = (c.clip_dim + 1) * c.video_dim + c.max_clips * c.video_dim + c.video_dim
    return (frame + clip + video + c.frame_layers * layer(c.frame_dim, c.frame_ffn)
            + c.clip_layers * layer(c.clip_dim, c.clip_ffn) + c.video_layers * layer(c.video_dim, c.video_ffn))


__all__ = ["BODY_REDUCTIONS", "MODEL_BACKENDS", "HiTRS", "HiTRSOutput", "FrameEncoder", "ClipEncoder",
           "PreparedBatch", "VideoEncoder", "TransformerLayer", "count_parameters", "expected_encoder_parameters",
           "host_checks_enabled", "reduce_bodies", "run_on_prefixes", "validate_skeletons", "zero_beyond_lengths"]
