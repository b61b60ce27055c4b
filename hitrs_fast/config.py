"""Typed configuration of Hi-TRS and its pretext tasks, with named presets.

``official`` is the released code (3 layers per level); ``paper`` switches every
paper-vs-code difference at once (2 layers, L1 pose loss, random-coordinate masking,
same-frame diagonal blocked); ``tiny`` pre-trains on 2 CPU cores in minutes (small widths, one layer
per level, no dropout, centred inputs, all four pretext tasks with the video level training V-TRS only).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from hitrs_fast.normalize import CENTERINGS

# Old names of config values, mapped on load.
LEGACY_BODY_REDUCE = {"sum_div_2": "mean_slots"}


@dataclass(frozen=True)
class HiTRSConfig:
    # Skeleton.
    num_joints: int = 25
    in_channels: int = 3
    # Widths and depths per level (F-TRS frame, C-TRS clip, V-TRS video).
    frame_dim: int = 128
    clip_dim: int = 256
    video_dim: int = 512
    frame_ffn: int = 128
    clip_ffn: int = 128
    video_ffn: int = 256
    frame_layers: int = 3
    clip_layers: int = 3
    video_layers: int = 3
    num_heads: int = 8
    head_dim: int = 64
    dropout: float = 0.2
    # Clip windowing: clip k takes padded frames stride*k + dilation*i, i < clip_len.
    clip_len: int = 7
    clip_dilation: int = 2
    clip_stride: int = 7
    max_clips: int = 200
    # C-TRS mask: True is the released code (self allowed), False the paper's reading.
    allow_self: bool = True
    # Input normalisation inside the encoder (hitrs_fast.normalize): "none" is the released code (raw camera
    # coordinates); "first_frame" subtracts body 0's center_joint (1 = SpineMid) at its first present frame.
    centering: Literal["none", "first_frame"] = "none"
    center_joint: int = 1
    # Downstream body reduction: "mean_slots" averages the body slots, empty ones included (the released
    # fine-tuning's sum / 2 over its two slots); "mean_present" averages the bodies that appear.
    body_reduce: Literal["mean_slots", "mean_present"] = "mean_slots"
    # What the encoder hands downstream heads (HiTRSOutput.sequence_features / pooled): "video_cls" is the
    # released code (V-TRS CLS, video_dim); "video_cls_clip_mean" appends the mean of the sequence's C-TRS clip
    # embeddings (video_dim + clip_dim), a readout of two levels of the hierarchy (linear evaluation on features of
    # several blocks, as DINO's ViT-S evaluation concatenates the CLS of its last four blocks; Caron et al., ICCV
    # 2021). The tiny preset uses it: there the V-TRS CLS alone passes on less than the clips hold.
    feature_readout: Literal["video_cls", "video_cls_clip_mean"] = "video_cls"
    # dtype of the C-TRS and V-TRS residual stream under autocast: "parameters" keeps the parameters' dtype (fp32:
    # the positional embedding and CLS token are fp32 parameters added to the autocast input map's output, as in
    # the released code run under autocast); "autocast" casts them to the autocast dtype (bf16), halving the bytes
    # of every residual add, LayerNorm and their gradients (docs/benchmarks.md, the step model). Without autocast
    # both are the parameters' dtype.
    residual_stream: Literal["parameters", "autocast"] = "parameters"
    # Pretext tasks.
    mask_ratio: float = 0.15
    mask_replacement: Literal["ones", "uniform_random"] = "ones"
    pose_loss: Literal["smooth_l1_x10", "l1"] = "smooth_l1_x10"
    # Scale of the video-level tasks' gradient into the clip embeddings (and through them C-TRS and F-TRS): 1 is
    # the released code; 0 lets the video-level tasks train V-TRS only, so they cannot reshape the clip features
    # the clip- and frame-level tasks learn.
    video_grad_to_clips: float = 1.0
    # Clip-order task's clip: "any_motion" draws uniformly among clips that move at all (released);
    # "motion_weighted" draws with probability proportional to the squared motion score.
    clip_order_selection: Literal["any_motion", "motion_weighted"] = "any_motion"
    # Clip-order examples per sample and step: 1 is the released task (one clip and its frame-swapped copy);
    # K > 1 draws K clips (and K swaps) per sample: K times the clip-level task's examples per step, at the cost
    # of 2K instead of 2 clips of C-TRS forward and backward per sample (K = 4: +50 % per tiny CPU step).
    clip_order_pairs: int = 1
    nce_temperature: float = 0.07
    nce_negatives: Literal["global", "local"] = "global"
    # False is the released task (negatives: the other samples' targets). True adds the sample's own context
    # clips 1 .. W - 2 as negatives, and the target clip reads the sample's last frame where its window runs
    # past the end instead of zero padding: recognising the sample (body, view) or the padding no longer
    # finds the next clip, only knowing how the motion goes on does.
    nce_temporal_negatives: bool = False
    # Clips between the InfoNCE context and its target: 0 is the released task (the context is every clip but
    # the last, and the last context clip nearly overlaps the target, so copying it is a good guess); N > 0
    # leaves the N clips before the target out of the V-TRS context that predicts it (at least one clip stays).
    nce_gap: int = 0
    # Pretext heads: 0 is the released single Linear layer per task; N > 0 puts a hidden layer of N units (Linear,
    # GELU, Linear) between the encoder and each task, so that what a narrow task needs is shaped in its head and
    # the encoder's outputs stay general (the projection head of SimCLR, Chen et al., ICML 2020).
    pretext_head_hidden: int = 0
    weight_pose: float = 1.0
    weight_clip_order: float = 1.0
    weight_video_order: float = 1.0
    weight_nce: float = 1.0
    use_frame_tasks: bool = True
    use_clip_tasks: bool = True
    use_video_tasks: bool = True

    def __post_init__(self) -> None:
        for name in ("frame_dim", "clip_dim", "video_dim", "num_heads", "head_dim", "clip_len",
                     "clip_dilation", "clip_stride", "num_joints", "in_channels", "max_clips", "clip_order_pairs"):
            if getattr(self, name) < 1:
                raise ValueError(f"HiTRSConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.clip_dim % 4 or self.frame_dim % 2 or self.video_dim % 2:
            raise ValueError("HiTRSConfig: clip_dim must be divisible by 4 and frame/video dims by 2 "
                             "(sinusoidal positional initialisation)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"HiTRSConfig.dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"HiTRSConfig.mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if self.body_reduce in LEGACY_BODY_REDUCE:  # configs saved before the rename keep loading
            object.__setattr__(self, "body_reduce", LEGACY_BODY_REDUCE[self.body_reduce])
        choices = {"body_reduce": ("mean_slots", "mean_present"), "mask_replacement": ("ones", "uniform_random"),
                   "pose_loss": ("smooth_l1_x10", "l1"), "nce_negatives": ("global", "local"),
                   "clip_order_selection": ("any_motion", "motion_weighted"),
                   "feature_readout": ("video_cls", "video_cls_clip_mean"), "centering": CENTERINGS,
                   "residual_stream": ("parameters", "autocast")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"HiTRSConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not 0 <= self.center_joint < self.num_joints:
            raise ValueError(f"HiTRSConfig.center_joint must be in [0, {self.num_joints}), got {self.center_joint}")
        if not 0.0 <= self.video_grad_to_clips <= 1.0:
            raise ValueError(f"HiTRSConfig.video_grad_to_clips must be in [0, 1], got {self.video_grad_to_clips}")
        if self.nce_gap < 0:
            raise ValueError(f"HiTRSConfig.nce_gap must be >= 0, got {self.nce_gap}")
        if self.pretext_head_hidden < 0:
            raise ValueError(f"HiTRSConfig.pretext_head_hidden must be >= 0, got {self.pretext_head_hidden}")
        if self.clip_len < 3:
            raise ValueError("HiTRSConfig.clip_len must be >= 3 (the clip-order task swaps frames >= 2 apart)")

    @property
    def feature_dim(self) -> int:
        """Width of the features downstream heads read (``feature_readout``)."""
        return self.video_dim + (self.clip_dim if self.feature_readout == "video_cls_clip_mean" else 0)

    @property
    def clip_pad(self) -> int:
        """Zero frames added at each end: (clip_len // 2) * dilation (6 for 7 / 2)."""
        return (self.clip_len // 2) * self.clip_dilation

    @property
    def clip_tokens(self) -> int:
        return self.clip_len * self.num_joints + 1

    @property
    def min_pretrain_frames(self) -> int:
        """Pre-training needs 3 clips (2 context + 1 target): T > 2 * stride."""
        return 2 * self.clip_stride + 1

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> HiTRSConfig:
        """``"official"``, ``"paper"`` or ``"tiny"``; keyword overrides win."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; available: {sorted(PRESETS)}")
        return dataclasses.replace(cls(**PRESETS[name]), **overrides)

    def replace(self, **changes: Any) -> HiTRSConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> HiTRSConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"HiTRSConfig: unknown fields {unknown}")
        return cls(**values)


PRESETS: dict[str, dict[str, Any]] = {
    "official": {},
    "paper": {"frame_layers": 2, "clip_layers": 2, "video_layers": 2, "pose_loss": "l1",
              "mask_replacement": "uniform_random", "allow_self": False},
    # The CPU main job's model: all four pretext tasks, with the deviations from the release that make minutes
    # of pre-training pay off (measurements in docs/training.md): two C-TRS and two V-TRS layers (with one, a CLS
    # token cannot compare two frames or two clips, so the order tasks stay at chance), no dropout (it regularises
    # 30k-step runs, and on CPU its mask draws took 30 % of a step), centred inputs; the video-level tasks train
    # V-TRS only (video_grad_to_clips 0: with their gradient the clip features collapse); InfoNCE with the
    # sample's own earlier clips as negatives (else it wins by recognising the sample) at temperature 0.5 (at 0.07
    # it degrades V-TRS); downstream heads read the V-TRS CLS and the mean clip embedding.
    "tiny": {"frame_dim": 32, "clip_dim": 64, "video_dim": 64, "frame_ffn": 64, "clip_ffn": 64, "video_ffn": 64,
             "frame_layers": 1, "clip_layers": 2, "video_layers": 2, "num_heads": 2, "head_dim": 16,
             "dropout": 0.0, "centering": "first_frame", "video_grad_to_clips": 0.0,
             "nce_temporal_negatives": True, "nce_temperature": 0.5, "feature_readout": "video_cls_clip_mean"},
}
