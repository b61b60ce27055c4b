"""Temporal action detection with a Hi-TRS encoder (paper §4.5, PKU-MMD protocol).

Every frame is classified from the stride-1 clip centred on it (F-TRS + C-TRS, then a linear layer over
``K + 1`` classes, 0 = background); per-frame probabilities become action segments with confidences by
a documented post-processing (``hitrs_fast.eval.detection``), which are scored with

- protocol A, the official PKU-MMD evaluation: mAP_a (per action class) and mAP_v (per video) at
  overlap ``--theta`` (0.5);
- protocol B, the VOC-style AP of recent self-supervised papers: mAP at IoU ``--theta``.

Examples::

    python training/detect.py --init runs/pre/encoder.pt                  # synthetic untrimmed sequences
    python training/detect.py --data stores/pku1 --init runs/pre/encoder.pt --protocol A

Training samples windows of ``window`` frames (plus the clip context on each side, zeros past the
sequence ends exactly like the pre-training padding) and classifies ``frames_per_window`` random frames
of each; evaluation classifies every frame of every test video in windows. Ground-truth segments are the
maximal runs of one non-zero label in the store's per-frame labels (0-based inclusive frames; proposals
use the same coordinates, so the frame base cancels out). No augmentation: the temporal ops would move
frames away from their labels.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from hitrs_fast.eval.detection import evaluate_detection
from hitrs_fast.eval.segments import proposals_from_frame_probs
from hitrs_fast.tasks import FrameDetector, clip_context
from hitrs_fast.training.run import UsageError, atomic_torch_save
from hitrs_fast.training.task_run import TaskRun, run_cli, task_parser

TASK = "detection"


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = task_parser("detect", __doc__, "the synthetic untrimmed set", prog)
    p.add_argument("--synthetic-sequences", type=int, default=48, help="sequences of the synthetic untrimmed set")
    p.add_argument("--protocol", default="both", choices=["A", "B", "both"],
                   help="A: official PKU-MMD mAP_a / mAP_v; B: VOC-style mAP; both (default)")
    p.add_argument("--theta", type=float, default=0.5, help="overlap / IoU threshold (default 0.5)")
    p.add_argument("--postprocess", default=None, choices=["majority", "jhang2020"],
                   help="frames -> segments method (default: the recipe's)")
    return p


def num_action_classes(store) -> int:
    """K, the action classes without background: PKU stores count the background in ``num_classes``."""
    info = store.info
    if "num_classes" in info:
        return int(info["num_classes"]) - (1 if "background_class" in info else 0)
    return int(max(int(np.max(store.frame_labels(i))) for i in range(len(store))))


def gather_windows(store, videos: np.ndarray, starts: np.ndarray, window: int, context: int) -> tuple[
        torch.Tensor, torch.Tensor]:
    """Cuts windows with clip context from the store.

    Returns ``x_ctx [B, M, window + 2 context, V, C]`` float32 (zeros outside each sequence) and
    ``labels [B, window]`` int64 per-frame labels (-1 past the sequence end).
    """
    m, v, c = store.shape_tail
    x = np.zeros((len(videos), window + 2 * context, m, v, c), dtype=np.float32)
    y = np.full((len(videos), window), -1, dtype=np.int64)
    for b, (vid, s) in enumerate(zip(videos.tolist(), starts.tolist(), strict=True)):
        seq, lab = store.sequence(vid), store.frame_labels(vid)
        t = seq.shape[0]
        lo, hi = max(0, s - context), min(t, s + window + context)
        x[b, lo - (s - context):hi - (s - context)] = seq[lo:hi]
        e = min(t, s + window)
        y[b, :e - s] = lab[s:e]
    return torch.from_numpy(x).permute(0, 2, 1, 3, 4).contiguous(), torch.from_numpy(y)


def ground_truth_segments(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Maximal runs of one non-zero label -> float64 ``[n, 3]`` rows ``(label, start, end)`` (inclusive,
    0-based) and the number of 1-frame runs dropped (protocol A needs ``end > start``)."""
    labels = np.asarray(labels)
    change = np.nonzero(np.diff(labels))[0] + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change - 1, [labels.size - 1]))
    lab = labels[starts]
    keep = lab != 0
    short = keep & (ends == starts)
    keep &= ends > starts
    return np.stack([lab[keep], starts[keep], ends[keep]], axis=1).astype(np.float64), int(short.sum())


@torch.no_grad()
def video_features(model: FrameDetector, store, vid: int, window: int, max_frames: int, device) -> torch.Tensor:
    """Per-frame clip features ``[T, clip_dim]`` of one video (windows of ``window`` frames, batched so a
    forward encodes at most ``max_frames`` frames)."""
    t = int(store.lengths[vid])
    ctx = clip_context(model.encoder.config)
    starts = np.arange(0, t, window)
    per_batch = max(1, max_frames // window)
    feats = []
    for i in range(0, len(starts), per_batch):
        st = starts[i:i + per_batch]
        x, _ = gather_windows(store, np.full(len(st), vid), st, window, ctx)
        valid = torch.as_tensor(np.minimum(t - st, window))
        owner = torch.repeat_interleave(torch.arange(len(st)), valid)
        frames = torch.cat([torch.arange(int(n)) for n in valid])
        feats.append(model.clip_features(x.to(device), frames.to(device), owner.to(device)).float())
    return torch.cat(feats)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if not 0.0 < args.theta <= 1.0:
        raise UsageError(f"--theta must be in (0, 1], got {args.theta}")
    job = TaskRun(args, TASK, synthetic=("untrimmed", args.synthetic_sequences))
    store, device = job.store, job.device
    if store.frame_labels(0) is None:
        raise UsageError(f"--data {store.root}: no per-frame labels (frame_labels.npy); detection needs an untrimmed "
                         "store: own sequences via `hitrs data import frame-labels ...`, PKU-MMD via `hitrs data "
                         "convert pku ...`, or the synthetic untrimmed set (no --data)")
    k = num_action_classes(store)
    train_vids, test_vids = store.split_indices(args.split), store.split_indices(args.test_split)
    recipe = job.load_recipe(required=("window", "frames_per_window", "eval_window", "postprocess"))
    # A pass = as many classified frames as the training split holds; an epoch is one unless the recipe says.
    per_step = int(recipe["batch_size"]) * int(recipe["frames_per_window"])
    pass_steps = math.ceil(int(store.lengths[train_vids].sum()) / per_step)
    recipe = job.plan(int(recipe.get("steps_per_epoch", pass_steps)), pass_steps)
    post = dict(recipe["postprocess"])
    method = args.postprocess or post.pop("method", "majority")
    post.pop("method", None)
    model = job.build_model(lambda encoder: FrameDetector(encoder, k), num_action_classes=k,
                            postprocess={"method": method, **post})

    window, per_window = int(recipe["window"]), int(recipe["frames_per_window"])
    batch_size, steps = int(recipe["batch_size"]), int(recipe.get("steps_per_epoch", pass_steps))
    ctx = clip_context(model.encoder.config)
    lengths = store.lengths[train_vids]
    # Videos are drawn in proportion to their frames, so every training frame is equally likely.
    weights = lengths / lengths.sum()
    ce = nn.CrossEntropyLoss(ignore_index=-1)

    cache: dict[int, torch.Tensor] = {}
    if args.mode == "linear":
        # Frozen encoder in eval mode and no augmentation: every frame's clip feature is fixed, so the
        # features of all train and test frames are computed once and only the head trains.
        model.encoder.eval()
        for vid in np.concatenate([train_vids, test_vids]).tolist():
            cache[vid] = video_features(model, store, vid, int(recipe["eval_window"]),
                                        int(recipe.get("eval_max_frames", 2048)), device)
        train_feats = torch.cat([cache[v] for v in train_vids.tolist()])
        train_labels = torch.cat([torch.as_tensor(np.asarray(store.frame_labels(v), dtype=np.int64))
                                  for v in train_vids.tolist()]).to(device)
        if recipe.get("standardize", False):
            model.set_feature_norm(train_feats)

    def batches(epoch: int):
        rng = np.random.default_rng([args.seed, epoch, 17])
        for _ in range(steps):
            if cache:
                sel = torch.from_numpy(rng.integers(0, train_feats.shape[0], batch_size * per_window)).to(device)
                yield train_feats[sel], train_labels[sel]
                continue
            vids = rng.choice(train_vids, size=batch_size, p=weights)
            starts = (rng.random(batch_size) * np.maximum(store.lengths[vids] - window + 1, 1)).astype(np.int64)
            x, y = gather_windows(store, vids, starts, window, ctx)
            valid = torch.as_tensor(np.minimum(store.lengths[vids] - starts, window))
            take = min(per_window, window)
            # Random frames of each window, drawn inside the sequence (positions < valid).
            pos = (torch.from_numpy(rng.random((batch_size, take))) * valid[:, None]).long()
            owner = torch.arange(batch_size)[:, None].expand(-1, take).reshape(-1)
            frames = pos.reshape(-1)
            yield x.to(device), frames.to(device), owner.to(device), y[owner, frames].to(device)

    def loss_fn(batch) -> torch.Tensor:
        if cache:
            feats, y = batch
            return ce(model.classify(feats), y)
        x, frames, owner, y = batch
        return ce(model(x, frames, owner), y)

    protocols = ("A", "B") if args.protocol == "both" else (args.protocol,)
    gt: dict[str, np.ndarray] = {}
    dropped = 0
    for vid in test_vids.tolist():
        gt[store.names[vid]], n_short = ground_truth_segments(store.frame_labels(vid))
        dropped += n_short
    eval_window, max_frames = int(recipe["eval_window"]), int(recipe.get("eval_max_frames", 2048))
    present = {int(c) for g in gt.values() for c in g[:, 0]}
    absent = [c for c in range(1, k + 1) if c not in present]
    if absent:
        print(f"note: {len(absent)} of the {k} action classes have no segment in split {args.test_split!r} "
              f"({absent[:20]}{'...' if len(absent) > 20 else ''}): protocol A's mAP_a counts each as AP 0 (the "
              "official definition), protocol B averages over the classes present", flush=True)

    def evaluate(epoch: int):
        probs: dict[str, torch.Tensor] = {}
        correct = total = 0
        for vid in test_vids.tolist():
            feats = cache[vid] if cache else video_features(model, store, vid, eval_window, max_frames, device)
            p = model.classify(feats).softmax(-1).cpu()
            probs[store.names[vid]] = p
            lab = torch.as_tensor(np.asarray(store.frame_labels(vid), dtype=np.int64))
            correct += int((p.argmax(1) == lab).sum())
            total += lab.numel()
        props = proposals_from_frame_probs({v: p.numpy() for v, p in probs.items()}, method=method, **post)
        metrics = {"frame_acc": correct / total, "num_proposals": float(sum(len(v) for v in props.values()))}
        if "A" in protocols:
            a = evaluate_detection(props, gt, "A", args.theta, num_classes=k, videos=list(gt))
            metrics.update(mAP_a=a["mAP_a"], mAP_v=a["mAP_v"])
        if "B" in protocols:
            metrics["mAP_b"] = evaluate_detection(props, gt, "B", args.theta, num_classes=k)["mAP"]
        return metrics, {v: p.half() for v, p in probs.items()}

    test_labels = np.concatenate([np.asarray(store.frame_labels(v)) for v in test_vids.tolist()])
    majority = int(np.argmax(np.bincount(test_labels)))
    primary = "mAP_a" if "A" in protocols else "mAP_b"
    res = job.fit(batches=batches, loss_fn=loss_fn, evaluate=evaluate, primary=primary, higher_is_better=True,
                  desc=f"detect {args.mode}")
    atomic_torch_save(res.last_payload, job.run_dir / "test_frame_probs.pt")
    shown = [m for m in ("mAP_a", "mAP_v", "mAP_b", "frame_acc") if m in res.last]
    print(f"{args.test_split}, last epoch ({res.last['epoch']}): "
          + ", ".join(f"{m} {res.last[m]:.4f}" for m in shown)
          + f" | best epoch ({res.best['epoch']}, chosen on {args.test_split} by {primary}): "
          + ", ".join(f"{m} {res.best[m]:.4f}" for m in shown))
    verdict = job.versus_baseline(
        "frame_acc", res.last["frame_acc"], "always background" if majority == 0 else f"always class {majority}",
        float(np.mean(test_labels == majority)), "train longer (--epochs), fine-tune (--mode finetune) or start "
        "from a pre-trained encoder (--init)")
    result = job.finish({"task": TASK, "mode": args.mode, "init": job.encoder_info["init"], "theta": args.theta,
                         "protocols": list(protocols), "postprocess": {"method": method, **post},
                         "num_action_classes": k, "classes_without_test_segments": absent,
                         "test_videos": int(test_vids.size),
                         "gt_segments": int(sum(len(g) for g in gt.values())), "gt_one_frame_runs_dropped": dropped,
                         "last_epoch": res.last, "best_epoch_on_test": res.best, "seconds": res.seconds,
                         "versus_baseline": verdict})
    return result


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """``python training/detect.py ARGS``; returns the exit status (2 on a bad argument)."""
    return run_cli(build_parser(prog), run, argv)
