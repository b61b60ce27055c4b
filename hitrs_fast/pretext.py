"""The four Hi-TRS pretext tasks and :class:`HiTRSForPretraining`.

- frame level: masked joint prediction (SmoothL1 on x10 coordinates, or L1);
- clip level: frame-order verification (a moving clip vs the same clip with two frames
  >= 2 apart swapped);
- video level: clip-order verification (context clips vs two clips >= 2 apart swapped);
- video level: next-clip InfoNCE (V-TRS CLS of the context predicts the stop-gradient
  C-TRS CLS of the held-out last clip; negatives are the other samples of the global
  batch, gathered from every rank, and with ``nce_temporal_negatives`` also the sample's
  own earlier clips).

All four consume the same F-TRS output of the masked input. Losses are normalised by
global counts, so with data-parallel gradient averaging the result does not depend on
the number of ranks.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from hitrs_fast.config import HiTRSConfig
from hitrs_fast.models import HiTRS
from hitrs_fast.sampling import Rng, mask_joints, sample_clip_swap, sample_frame_swap, sample_motion_clip
from hitrs_fast.windowing import clip_frame_indices, num_clips


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def global_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum over data-parallel ranks (identity in a single process). No gradient flows."""
    value = value.detach().clone()
    if _distributed():
        dist.all_reduce(value)
    return value


def global_mean_loss(local_sum: torch.Tensor, local_count: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss whose rank-averaged gradient is the gradient of the global mean.

    Data-parallel training averages gradients over ``world`` ranks, so each rank
    returns ``world * local_sum / global_count``. Returns ``(loss, global_count)``; the
    loss is 0 (with a graph) when nothing is counted anywhere.
    """
    world = dist.get_world_size() if _distributed() else 1
    count = global_sum(local_count.to(local_sum.dtype))
    return local_sum * world / count.clamp_min(1), count


def gather_targets(targets: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All-gathers stop-gradient targets ``[B, d]`` from every rank.

    Returns ``([world * B, d], offset)`` where ``offset = rank * B`` is where this rank's
    positives sit. Requires equal per-rank batch sizes.
    """
    if not _distributed():
        return targets, 0
    parts = [torch.empty_like(targets) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, targets.contiguous())
    return torch.cat(parts), dist.get_rank() * targets.shape[0]


def _batch_inputs(batch: Any, lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, dict):
        return batch["x"], batch.get("lengths", lengths)
    if hasattr(batch, "x") and not isinstance(batch, torch.Tensor):
        return batch.x, getattr(batch, "lengths", lengths)
    return batch, lengths


class HiTRSForPretraining(nn.Module):
    """Hi-TRS encoder plus the pretext heads.

    Args:
        config: :class:`HiTRSConfig`; its ``use_*_tasks`` switches and ``weight_*``
            fields select and weight the tasks.
        backend: see :class:`HiTRS`.

    ``forward(batch, lengths=None, *, generator=None) -> dict``: ``generator`` is a
    ``torch.Generator`` on the data's device, a :class:`~hitrs_fast.sampling.SampleRandom`
    (per-sample streams: results independent of batch split and rank) or None (global
    RNG). ``batch`` is single-body
    skeletons ``[B, T, V, C]`` or ``[B, 1, T, V, C]`` (or a dict / object with ``x`` and
    ``lengths``). Returns ``loss`` (weighted sum, differentiable) and, detached,
    ``pose_loss``, ``clip_order_loss``, ``video_order_loss``, ``nce_loss``,
    ``clip_order_acc``, ``video_order_acc``, ``nce_acc`` for the enabled tasks.
    """

    def __init__(self, config: HiTRSConfig | None = None, backend: str = "auto") -> None:
        super().__init__()
        self.config = config = config or HiTRSConfig()
        if not (config.use_frame_tasks or config.use_clip_tasks or config.use_video_tasks):
            raise ValueError("HiTRSConfig: at least one of use_frame_tasks / use_clip_tasks / use_video_tasks")
        self.encoder = HiTRS(config, backend)
        self.pose_head = pretext_head(config.frame_dim, config.in_channels, config.pretext_head_hidden)
        self.clip_order_head = pretext_head(config.clip_dim, 2, config.pretext_head_hidden)
        self.video_order_head = pretext_head(config.video_dim, 2, config.pretext_head_hidden)
        self.next_clip_head = pretext_head(config.video_dim, config.clip_dim, config.pretext_head_hidden)

    def forward(self, batch: Any, lengths: torch.Tensor | None = None, *, generator: Rng = None,
                static_shapes: bool | None = None) -> dict[str, torch.Tensor]:
        cfg, enc = self.config, self.encoder
        x, lengths = _batch_inputs(batch, lengths)
        if isinstance(x, torch.Tensor) and x.dim() == 4:
            x = x[:, None]
        if isinstance(x, torch.Tensor) and x.dim() == 5 and x.shape[1] != 1:
            raise ValueError(f"x: pre-training takes single bodies [B, 1, T, V, C], got M={x.shape[1]} "
                             "(use bodies='single' in the loader)")
        # Centred before masking, so the pose targets are centred too.
        prepared = enc.prepare(x, lengths, min_length=cfg.min_pretrain_frames, static_shapes=static_shapes)
        x, lengths = prepared.x, prepared.lengths  # [B, T, V, C], [B]
        b, device = x.shape[0], x.device

        masked = mask_joints(x, lengths, cfg, generator) if cfg.use_frame_tasks else None
        frames = enc.encode_frames(prepared, masked.masked_x if masked else None)  # [B, T + 2 pad, V, d]

        out: dict[str, torch.Tensor] = {}
        total = frames.new_zeros((), dtype=torch.float32)
        if cfg.use_frame_tasks:
            loss, out["pose_loss"] = self._pose_loss(frames, x, masked.selected)
            total = total + cfg.weight_pose * loss

        # One merged C-TRS call: per sample the clip-order pairs (original, frames swapped), then the context
        # clips 0 .. W - 2 of the video-level tasks; slots past a sample's own context are not computed. With
        # video_grad_to_clips 0 no gradient reaches the context clips, so they run in a second call without an
        # autograd graph: no C-TRS backward (nor saved activations) for most of the clips of a step.
        positions, counts, total_slots = [], torch.zeros(b, dtype=torch.long, device=device), 0
        pairs = cfg.clip_order_pairs
        if cfg.use_clip_tasks:
            pair_positions, pair_valid = [], []
            offsets = torch.arange(cfg.clip_len, device=device) * cfg.clip_dilation  # [F]
            for _ in range(pairs):
                start, valid = sample_motion_clip(x, lengths, cfg, generator)
                original = start[:, None] + offsets  # [B, F]
                swapped = original.gather(1, sample_frame_swap(b, cfg, device, generator))
                pair_positions += [original, swapped]
                pair_valid.append(valid)
            positions.append(torch.stack(pair_positions, dim=1))  # [B, 2K, F]: original, swapped per pair
            clip_valid = torch.cat(pair_valid)  # [K * B], pair-major
            counts, total_slots = counts + 2 * pairs, 2 * pairs * b
        context_without_grad = cfg.use_video_tasks and cfg.video_grad_to_clips == 0.0
        if cfg.use_video_tasks:
            w, w_max = enc.clip_count(prepared)
            context, width = w - 1, w_max - 1
            windows = clip_frame_indices(w_max, cfg, device)  # [W, F]; clip W - 1 of a sample is its target
            context_positions = windows[:width].expand(b, width, cfg.clip_len)
            context_slots = 0 if prepared.static else int((num_clips(prepared.host_lengths, cfg) - 1).sum())
            if not context_without_grad:
                positions.append(context_positions)
                counts, total_slots = counts + context, total_slots + context_slots

        if positions:
            clips = enc.encode_clips(prepared, frames, torch.cat(positions, dim=1), counts, total_slots)
        if cfg.use_clip_tasks:
            originals = clips[:, 0:2 * pairs:2].transpose(0, 1).reshape(pairs * b, -1)  # [K * B, clip_dim]
            swapped = clips[:, 1:2 * pairs:2].transpose(0, 1).reshape(pairs * b, -1)
            loss, out["clip_order_loss"], out["clip_order_acc"] = self._clip_order_loss(
                torch.cat([originals, swapped]), clip_valid)
            total = total + cfg.weight_clip_order * loss
        if cfg.use_video_tasks:
            if context_without_grad:
                with torch.no_grad():
                    context_emb = enc.encode_clips(prepared, frames, context_positions, context, context_slots)
            else:
                context_emb = scale_gradient(clips[:, -width:], cfg.video_grad_to_clips)
            # context_emb: [B, width, clip_dim], zeros past each sample's context
            perm = sample_clip_swap(context, width, generator)
            permuted = context_emb.gather(1, perm[..., None].expand_as(context_emb))
            video = enc.encode_video(torch.cat([context_emb, permuted]), context.repeat(2))
            loss, out["video_order_loss"], out["video_order_acc"] = self._video_order_loss(video)
            total = total + cfg.weight_video_order * loss

            # Stop-gradient target: the held-out last clip, no graph built.
            target_positions = windows[context]  # [B, F]
            if cfg.nce_temporal_negatives:  # edge padding: the last real frame stands in for frames past the end
                target_positions = torch.minimum(target_positions, (prepared.lengths + cfg.clip_pad - 1)[:, None])
            with torch.no_grad():
                target = enc.encode_clip_positions(frames, torch.arange(b, device=device), target_positions)
            if cfg.nce_gap:  # the V-TRS context of the prediction stops nce_gap clips before the target
                seen = (context - cfg.nce_gap).clamp_min(1)
                summary = enc.encode_video(context_emb, seen)
            else:
                seen, summary = context, video[:b]
            # The sample's own clips 1 .. seen - 1 (clip 0 reads leading zero padding, which would give it away).
            own = context_emb[:, 1:].detach() if cfg.nce_temporal_negatives else None
            loss, out["nce_loss"], out["nce_acc"] = self._nce_loss(self.next_clip_head(summary), target, own, seen)
            total = total + cfg.weight_nce * loss

        out["loss"] = total
        return out

    def _pose_loss(self, frames: torch.Tensor, x: torch.Tensor, selected: torch.Tensor):
        """Masked joint regression over the selected entries (global mean).

        The head runs on every raw-frame token and the loss is weighted by ``selected``: no boolean indexing,
        so no device sync and a static shape.
        """
        pad = self.config.clip_pad
        pred = self.pose_head(frames[:, pad:pad + x.shape[1]]).float()  # [B, T, V, C]
        weight = selected[..., None].to(pred.dtype)  # [B, T, V, 1]
        if self.config.pose_loss == "smooth_l1_x10":
            per = F.smooth_l1_loss(10 * pred, 10 * x.float(), beta=1.0, reduction="none")
            count = selected.sum() * x.shape[-1]  # mean over joints x coordinates
        else:
            per = (pred - x.float()).abs()
            count = selected.sum()  # L1 summed over xyz, mean over joints
        # Per-sample sums first: a single sum over every element is split over CPU threads, the last bits of the
        # logged loss would then depend on the thread count (the gradient does not).
        local = (per * weight).flatten(1).sum(1).sum()
        loss, global_count = global_mean_loss(local, count)
        return loss, (global_sum(local) / global_count.clamp_min(1)).detach()

    def _clip_order_loss(self, cls: torch.Tensor, valid: torch.Tensor):
        """Original (label 1) vs frame-swapped (label 0) clips; samples without a moving clip are left out."""
        b = valid.shape[0]
        logits = self.clip_order_head(cls).float()  # [2B, 2]
        labels = torch.cat([torch.ones(b, dtype=torch.long, device=cls.device),
                            torch.zeros(b, dtype=torch.long, device=cls.device)])
        weight = valid.repeat(2).to(logits.dtype)
        per = F.cross_entropy(logits, labels, reduction="none")
        loss, count = global_mean_loss((per * weight).sum(), weight.sum())
        correct = global_sum(((logits.argmax(1) == labels).to(logits.dtype) * weight).sum())
        return loss, (global_sum((per * weight).sum()) / count.clamp_min(1)).detach(), correct / count.clamp_min(1)

    def _video_order_loss(self, video: torch.Tensor):
        """Context in order (label 1) vs two clips swapped (label 0); plain mean cross-entropy."""
        b = video.shape[0] // 2
        logits = self.video_order_head(video).float()
        labels = torch.cat([torch.ones(b, dtype=torch.long, device=video.device),
                            torch.zeros(b, dtype=torch.long, device=video.device)])
        loss = F.cross_entropy(logits, labels)
        acc = (logits.argmax(1) == labels).float().mean()
        return loss, rank_mean(loss), rank_mean(acc)

    def _nce_loss(self, prediction: torch.Tensor, target: torch.Tensor, own_clips: torch.Tensor | None = None,
                  num_context: torch.Tensor | None = None):
        """InfoNCE of predictions ``[B, d]`` against the (global) batch of stop-gradient targets ``[B, d]``
        and, when given, each sample's own clips ``own_clips [B, K, d]`` (context slots 1 .. K; the slots at
        or past ``num_context [B]`` are padding and left out)."""
        pred = F.normalize(prediction.float(), dim=-1)
        tgt = F.normalize(target.float(), dim=-1)
        if self.config.nce_negatives == "global":
            tgt, offset = gather_targets(tgt)
        else:
            offset = 0
        logits = pred @ tgt.t() / self.config.nce_temperature  # [B, B_global]
        if own_clips is not None:
            own = torch.einsum("bd,bkd->bk", pred, F.normalize(own_clips.float(), dim=-1))
            slot = torch.arange(1, own_clips.shape[1] + 1, device=pred.device)
            real = slot[None, :] < num_context[:, None]
            logits = torch.cat([logits, torch.where(real, own / self.config.nce_temperature, -torch.inf)], dim=1)
        labels = torch.arange(pred.shape[0], device=pred.device) + offset
        loss = F.cross_entropy(logits, labels)
        acc = (logits.argmax(1) == labels).float().mean()
        return loss, rank_mean(loss), rank_mean(acc)


def scale_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` in the forward pass; its gradient multiplied by ``scale`` in the backward pass (0: detached)."""
    if scale == 1.0:
        return x
    if scale == 0.0:
        return x.detach()
    return x.detach() + scale * (x - x.detach())


def pretext_head(dim_in: int, dim_out: int, hidden: int) -> nn.Module:
    """The released single Linear layer (``hidden = 0``) or Linear -> GELU -> Linear with ``hidden`` units."""
    if hidden == 0:
        return nn.Linear(dim_in, dim_out)
    return nn.Sequential(nn.Linear(dim_in, hidden), nn.GELU(), nn.Linear(hidden, dim_out))


def rank_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean over data-parallel ranks of a per-rank value (equal batch sizes), detached."""
    world = dist.get_world_size() if _distributed() else 1
    return global_sum(value) / world
