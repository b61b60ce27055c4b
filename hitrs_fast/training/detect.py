"""Temporal action detection with a Hi-TRS encoder (paper §4.5, PKU-MMD protocol).

Every frame is classified over ``K + 1`` classes (0 = background) from stride-1 clip embeddings (F-TRS +
C-TRS) by one of three heads (:class:`~hitrs_fast.tasks.FrameDetector`): ``--head tcn`` (default) reads the
clips centred on the 127 frames around it (``--tcn-layers`` 6: +-63) through a dilated temporal convolution
(one MS-TCN stage); ``--head context`` reads the clips centred on ``f + k * S`` for ``|k| <= R``
(``--context-clips`` R, ``--context-stride`` S: 8 and 4 read +-32 frames) through one hidden layer; ``--head
clip`` is the paper's rule, a linear layer on the clip centred on the frame alone. Per-frame probabilities become action
segments with confidences by a documented post-processing (``hitrs_fast.eval.detection``), which are
scored with

- protocol A, the official PKU-MMD evaluation: mAP_a (per action class) and mAP_v (per video) at
  overlap ``--theta`` (0.5);
- protocol B, the VOC-style AP of recent self-supervised papers: mAP at IoU ``--theta``.

Examples::

    python training/detect.py --init runs/pre/encoder.pt                  # synthetic untrimmed sequences
    python training/detect.py --data stores/pku1 --init runs/pre/encoder.pt --protocol A

Training samples windows of ``window`` frames (plus the head's context on each side, zeros past the
sequence ends exactly like the pre-training padding) and classifies every frame of each; every window is cut
from its video centred as a whole by the encoder's rule (``FrameDetector.centre_video``), so the clips of a
frame are the same in training windows, cached clips and test videos; while the encoder
is frozen (``--mode linear``, the head warm-up) the windows are cut from every frame's cached clip
embedding. Evaluation classifies every frame of every test video. Ground-truth segments are the maximal
runs of one non-zero label in the store's per-frame labels (0-based inclusive frames; proposals use the
same coordinates, so the frame base cancels out). No augmentation: the temporal ops would move frames away
from their labels.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from hitrs_fast.eval.detection import evaluate_detection
from hitrs_fast.eval.segments import proposals_from_frame_probs
from hitrs_fast.tasks.detection import DETECTION_HEADS, FRAME_FEATURES, FrameDetector
from hitrs_fast.training.head_warmup import head_warmup_recipe, wants_head_warmup, warm_up_head
from hitrs_fast.training.run import UsageError, atomic_torch_save
from hitrs_fast.training.task_run import TaskRun, run_cli, task_parser

TASK = "detection"


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = task_parser("detect", __doc__, "the synthetic untrimmed set", prog)
    p.add_argument("--synthetic-sequences", type=int, default=144, help="sequences of the synthetic untrimmed set")
    p.add_argument("--protocol", default="both", choices=["A", "B", "both"],
                   help="A: official PKU-MMD mAP_a / mAP_v; B: VOC-style mAP; both (default)")
    p.add_argument("--theta", type=float, default=0.5, help="overlap / IoU threshold (default 0.5)")
    p.add_argument("--postprocess", default=None, choices=["majority", "jhang2020"],
                   help="frames -> segments method (default: the recipe's)")
    p.add_argument("--head", default="tcn", choices=DETECTION_HEADS,
                   help="tcn (default): a dilated temporal convolution over the stride-1 clip embeddings around "
                   "each frame; context: one hidden layer over every --context-stride-th of them; clip: the "
                   "paper's per-frame rule (a linear layer on the clip centred on the frame)")
    p.add_argument("--tcn-layers", type=int, default=6,
                   help="tcn head: dilated layers; a frame reads the clips 2^layers - 1 frames each side (default 6)")
    p.add_argument("--features", default="clips", choices=FRAME_FEATURES,
                   help="what the head reads per frame: clips (default): the encoder's stride-1 clip embeddings; "
                   "skeleton: the raw skeleton (root-relative joints and velocities), no encoder, --mode linear "
                   "--init random only: a supervised reference of what the data allow")
    p.add_argument("--context-clips", type=int, default=8,
                   help="context head: clips read each side of the frame (default 8)")
    p.add_argument("--context-stride", type=int, default=4,
                   help="context head: frames between the centres of the clips it reads (default 4)")
    return p


def num_action_classes(store) -> int:
    """K, the action classes without background: PKU stores count the background in ``num_classes``."""
    info = store.info
    if "num_classes" in info:
        return int(info["num_classes"]) - (1 if "background_class" in info else 0)
    return int(max(int(np.max(store.frame_labels(i))) for i in range(len(store))))


def gather_windows(store, videos: np.ndarray, starts: np.ndarray, window: int, context: int,
                   centre: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Cuts windows with clip context from the store's videos, each centred as a whole by ``centre``
    (:meth:`FrameDetector.centre_video`, ``[M, T, V, C] -> [M, T, V, C]``).

    Returns ``x_ctx [B, M, window + 2 context, V, C]`` float32 (zeros outside each sequence) and
    ``labels [B, window]`` (:func:`window_labels`).
    """
    m, v, c = store.shape_tail
    x = torch.zeros(len(videos), m, window + 2 * context, v, c)
    centred: dict[int, torch.Tensor] = {}  # each video once, however many windows are cut from it
    for b, (vid, s) in enumerate(zip(videos.tolist(), starts.tolist(), strict=True)):
        if vid not in centred:
            video = np.array(store.sequence(vid), dtype=np.float32)  # a copy: a store's arrays are read-only maps
            centred[vid] = centre(torch.from_numpy(video).permute(1, 0, 2, 3))
        seq = centred[vid]
        lo, hi = max(0, s - context), min(seq.shape[1], s + window + context)
        x[b, :, lo - (s - context):hi - (s - context)] = seq[:, lo:hi]
    return x, window_labels(store, videos, starts, window)


def window_labels(store, videos: np.ndarray, starts: np.ndarray, window: int) -> torch.Tensor:
    """``[B, window]`` int64 per-frame labels of frames ``starts .. starts + window - 1`` (-1 past the sequence
    end); reads no skeleton data."""
    y = np.full((len(videos), window), -1, dtype=np.int64)
    for b, (vid, s) in enumerate(zip(videos.tolist(), starts.tolist(), strict=True)):
        e = min(int(store.lengths[vid]), s + window)
        y[b, :e - s] = store.frame_labels(vid)[s:e]
    return torch.from_numpy(y)


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
def video_clips(model: FrameDetector, store, vid: int, window: int, max_frames: int, device) -> tuple[
        torch.Tensor, torch.Tensor]:
    """The stride-1 clip embedding of every frame of one video, bodies reduced, and whether the frame holds a
    body: ``([T, clip_dim], [T])`` (windows of ``window`` frames with the clips' context, batched so a forward
    encodes at most ``max_frames`` window frames)."""
    t = int(store.lengths[vid])
    ctx = model.encoder.config.clip_pad
    starts = np.arange(0, t, window)
    per_batch = max(1, max_frames // window)
    embs, occupied = [], []
    for i in range(0, len(starts), per_batch):
        st = starts[i:i + per_batch]
        x, _ = gather_windows(store, np.full(len(st), vid), st, window, ctx, model.centre_video)
        valid = torch.as_tensor(np.minimum(t - st, window))
        owner = torch.repeat_interleave(torch.arange(len(st)), valid).to(device)
        frames = torch.cat([torch.arange(int(n)) for n in valid]).to(device)
        e, o = model.clip_embeddings(x.to(device), frames + ctx, owner)
        embs.append(e.float())
        occupied.append(o)
    return torch.cat(embs), torch.cat(occupied)


class ClipCache:
    """Per-frame clip embeddings of several videos (:func:`video_clips`), each padded with ``radius`` empty
    frames at both ends, so that the clips a window's frames read are one gather: :meth:`windows`."""

    def __init__(self, model: FrameDetector, videos: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.radius = r = model.radius
        self.lengths = torch.tensor([e.shape[0] for e, _ in videos])
        self.starts = torch.cumsum(self.lengths + 2 * r, 0) - self.lengths - r  # padded index of each frame 0
        self.emb = torch.cat([torch.nn.functional.pad(e, (0, 0, r, r)) for e, _ in videos])
        self.occupied = torch.cat([torch.nn.functional.pad(o, (r, r)) for _, o in videos])

    def windows(self, video: torch.Tensor, starts: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`FrameDetector.classify_windows` inputs of frames ``starts .. starts + length - 1`` of the
        ``video [B]``-th videos: ``([B, length + 2 radius, clip_dim], occupied [B, length + 2 radius])``,
        not occupied past each video's ends (the heads read an unoccupied clip as zeros; the clip head's own
        frame lies in its video, and frames past a video's end carry no label)."""
        rel = starts[:, None] - self.radius + torch.arange(length + 2 * self.radius)  # [B, span] video frames
        inside = (rel >= -self.radius) & (rel < self.lengths[video][:, None] + self.radius)
        at = torch.where(inside, self.starts[video][:, None] + rel, 0).to(self.emb.device)
        return self.emb[at], self.occupied[at] & inside.to(self.emb.device)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if not 0.0 < args.theta <= 1.0:
        raise UsageError(f"--theta must be in (0, 1], got {args.theta}")
    if args.context_clips < 1 or args.context_stride < 1:
        raise UsageError(f"--context-clips and --context-stride must be >= 1, got {args.context_clips}, "
                         f"{args.context_stride}")
    if not 1 <= args.tcn_layers <= 12:
        raise UsageError(f"--tcn-layers must be in [1, 12] (a frame reads 2^layers - 1 frames each side), got "
                         f"{args.tcn_layers}")
    if args.features == "skeleton" and (args.mode != "linear" or args.init != "random"):
        raise UsageError(f"--features skeleton reads no encoder: it needs --mode linear and --init random (got --mode "
                         f"{args.mode} --init {args.init})")
    job = TaskRun(args, TASK, synthetic=("untrimmed", args.synthetic_sequences))
    store, device = job.store, job.device
    if store.frame_labels(0) is None:
        raise UsageError(f"--data {store.root}: no per-frame labels (frame_labels.npy); detection needs an untrimmed "
                         "store: own sequences via `hitrs data import frame-labels ...`, PKU-MMD via `hitrs data "
                         "convert pku ...`, or the synthetic untrimmed set (no --data)")
    k = num_action_classes(store)
    train_vids, test_vids = store.split_indices(args.split), store.split_indices(args.test_split)
    recipe = job.load_recipe(required=("window", "eval_window", "postprocess"))
    stale = [f"{where}frames_per_window" for where, r in (("", recipe), ("head_warmup.", recipe.get("head_warmup")))
             if r and "frames_per_window" in r]
    if stale:
        raise UsageError(f"recipe {job.recipe_path}: {', '.join(stale)} is no longer read: every frame of a training "
                         "window is classified (remove it; `window` and `batch_size` set a step's frames)")
    # A pass = as many classified frames as the training split holds; an epoch is one unless the recipe says.
    per_step = int(recipe["batch_size"]) * int(recipe["window"])
    pass_steps = math.ceil(int(store.lengths[train_vids].sum()) / per_step)
    recipe = job.plan(int(recipe.get("steps_per_epoch", pass_steps)), pass_steps)
    post = dict(recipe["postprocess"])
    method = args.postprocess or post.pop("method", "majority")
    post.pop("method", None)
    model = job.build_model(lambda encoder: FrameDetector(encoder, k, args.head, args.context_clips,
                                                          args.context_stride, tcn_layers=args.tcn_layers,
                                                          features=args.features, skeleton_bodies=store.shape_tail[0]),
                            num_action_classes=k, postprocess={"method": method, **post})

    draw: dict[str, int] = {}  # what an epoch draws: the run's recipe, or the head warm-up's while it runs

    def draw_by(r: dict[str, Any]) -> None:
        draw.update(batch_size=int(r["batch_size"]), window=int(r["window"]),
                    steps=int(r.get("steps_per_epoch", pass_steps)))

    draw_by(recipe)
    ctx = model.context
    lengths = store.lengths[train_vids]
    # Videos are drawn in proportion to their frames, so every training frame is equally likely.
    weights = lengths / lengths.sum()
    ce = nn.CrossEntropyLoss(ignore_index=-1)

    eval_window, max_frames = int(recipe["eval_window"]), int(recipe.get("eval_max_frames", 2048))

    def clip_cache(vids: np.ndarray) -> ClipCache:
        model.encoder.eval()
        return ClipCache(model, [video_clips(model, store, v, eval_window, max_frames, device) for v in vids.tolist()])

    frozen = {"now": False}  # True while the head trains on the cached clips of a frozen encoder
    caches: dict[str, ClipCache] = {}

    def freeze(standardize: bool) -> None:
        # Frozen encoder in eval mode and no augmentation: every frame's clip embedding is fixed, so those of
        # all train and test frames are computed once and only the head trains.
        caches["train"], caches["test"] = clip_cache(train_vids), clip_cache(test_vids)
        if standardize:
            model.set_feature_norm(caches["train"].emb[caches["train"].occupied])
        frozen["now"] = True

    if args.mode == "linear":
        freeze(bool(recipe.get("standardize", False)))

    def batches(epoch: int):
        # Windows of `window` frames drawn uniformly over the training frames' positions, every frame classified
        # (labels -1 past a sequence's end): cut from the cached clips while the encoder is frozen, else from
        # the store with the head's context.
        rng = np.random.default_rng([args.seed, epoch, 17])
        batch_size, window = draw["batch_size"], draw["window"]
        for _ in range(draw["steps"]):
            picks = rng.choice(len(train_vids), size=batch_size, p=weights)
            vids = train_vids[picks]
            starts = (rng.random(batch_size) * np.maximum(store.lengths[vids] - window + 1, 1)).astype(np.int64)
            if frozen["now"]:
                y = window_labels(store, vids, starts, window)
                clips, occupied = caches["train"].windows(torch.from_numpy(picks), torch.from_numpy(starts), window)
                yield clips, occupied, y.to(device)
                continue
            x, y = gather_windows(store, vids, starts, window, ctx, model.centre_video)
            yield x.to(device), y.to(device)

    def loss_fn(batch) -> torch.Tensor:
        if frozen["now"]:
            clips, occupied, y = batch
            return ce(model.classify_windows(clips, occupied).flatten(0, 1), y.flatten())
        x, y = batch
        return ce(model.window_logits(x).flatten(0, 1), y.flatten())

    protocols = ("A", "B") if args.protocol == "both" else (args.protocol,)
    gt: dict[str, np.ndarray] = {}
    dropped = 0
    for vid in test_vids.tolist():
        gt[store.names[vid]], n_short = ground_truth_segments(store.frame_labels(vid))
        dropped += n_short
    present = {int(c) for g in gt.values() for c in g[:, 0]}
    absent = [c for c in range(1, k + 1) if c not in present]
    if absent:
        print(f"note: {len(absent)} of the {k} action classes have no segment in split {args.test_split!r} "
              f"({absent[:20]}{'...' if len(absent) > 20 else ''}): protocol A's mAP_a counts each as AP 0 (the "
              "official definition), protocol B averages over the classes present", flush=True)

    def evaluate(epoch: int):
        probs: dict[str, torch.Tensor] = {}
        correct = total = 0
        cache = caches["test"] if frozen["now"] else clip_cache(test_vids)
        for i, vid in enumerate(test_vids.tolist()):
            t = int(store.lengths[vid])
            p = model.classify_windows(*cache.windows(torch.tensor([i]), torch.tensor([0]), t))[0].softmax(-1).cpu()
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
    fit_args = dict(batches=batches, loss_fn=loss_fn, evaluate=evaluate, primary=primary, higher_is_better=True)
    warmup = None
    if wants_head_warmup(job):  # the head first trains alone on the frozen encoder's clips
        warm = head_warmup_recipe(job)
        freeze(bool(warm.get("standardize", False)))
        draw_by(warm)
        warmup = warm_up_head(job, desc=f"detect {args.mode}", **fit_args)
        frozen["now"] = False  # then everything trains (the clips' normalisation stays fixed)
        caches.clear()
        draw_by(recipe)
    res = job.fit(desc=f"detect {args.mode}", **fit_args)
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
    result = job.finish({"task": TASK, "mode": args.mode, "init": job.encoder_info["init"], "head": args.head,
                         "features": args.features,
                         "context_clips": model.context_clips, "context_stride": model.context_stride,
                         "context_frames": model.context,
                         "tcn_layers": args.tcn_layers if args.head == "tcn" else None, "theta": args.theta,
                         "protocols": list(protocols), "postprocess": {"method": method, **post},
                         "num_action_classes": k, "classes_without_test_segments": absent,
                         "test_videos": int(test_vids.size),
                         "gt_segments": int(sum(len(g) for g in gt.values())), "gt_one_frame_runs_dropped": dropped,
                         "last_epoch": res.last, "best_epoch_on_test": res.best,
                         "head_warmup": None if warmup is None else {"last_epoch": warmup.last,
                                                                     "seconds": warmup.seconds},
                         "seconds": res.seconds, "versus_baseline": verdict})
    return result


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """``python training/detect.py ARGS``; returns the exit status (2 on a bad argument)."""
    return run_cli(build_parser(prog), run, argv)
