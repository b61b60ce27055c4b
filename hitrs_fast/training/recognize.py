"""Action recognition with a Hi-TRS encoder: linear evaluation, fine-tuning, training from scratch,
semi-supervised subsets, 1-NN retrieval and multi-stream score fusion.

Examples::

    python training/recognize.py --init runs/pre/encoder.pt --mode linear            # linear evaluation
    python training/recognize.py --init runs/pre/encoder.pt --label-fraction 0.1     # semi-supervised 10 %
    python training/recognize.py --mode scratch --stream bone                          # bone stream, no pre-training
    python training/recognize.py --init runs/pre/encoder.pt --knn                     # 1-NN (cosine) only
    python training/recognize.py --fuse runs/joint runs/bone runs/motion               # 3-stream fusion

Without ``--data`` the built-in synthetic trimmed set is used (generated on first use). Top-1 and top-5
are reported at the last epoch and, separately labelled, at the best epoch (chosen on the evaluation
split: there is no validation split, as in the released code). Each run saves its test scores in
``RUN_DIR/test_scores.pt`` for ``--fuse``. See ``docs/downstream.md``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hitrs_fast.data.streams import STREAMS, apply_stream
from hitrs_fast.eval.metrics import fuse_scores, knn_accuracy, topk_accuracy
from hitrs_fast.eval.subsets import class_balanced_subset, load_index_list
from hitrs_fast.tasks.recognition import ActionRecognizer
from hitrs_fast.training.probe import chance_level
from hitrs_fast.training.run import UsageError, atomic_torch_save, atomic_write_json
from hitrs_fast.training.task_run import TaskRun, run_cli, task_parser

TASK = "recognition"


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = task_parser("recognize", __doc__, "the synthetic trimmed set", prog)
    p.add_argument("--synthetic-per-class", type=int, default=60, help="samples per class of the synthetic set")
    p.add_argument("--stream", default="joint", choices=STREAMS, help="input view (default: joint)")
    p.add_argument("--label-fraction", type=float, default=1.0,
                   help="seeded class-balanced share of the training labels (0.01 / 0.05 / 0.10 semi-supervised)")
    p.add_argument("--index-list", default=None,
                   help="published list of training-split positions (.npy / .txt / .pkl) instead of a fraction")
    p.add_argument("--knn", action="store_true", help="evaluate 1-NN (cosine) on frozen features; no training")
    p.add_argument("--fuse", nargs="+", default=None, metavar="RUN_DIR",
                   help="fuse the saved test scores of these runs (2-stream / 3-stream); no training")
    p.add_argument("--fuse-mode", default="softmax", choices=["softmax", "logits"])
    p.add_argument("--fuse-weights", type=float, nargs="+", default=None)
    p.add_argument("--fuse-epoch", default="last", choices=["last", "best"],
                   help="which saved scores of each run to fuse (default: last epoch)")
    return p


def _topk(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    k5 = min(5, logits.shape[1])
    acc = topk_accuracy(logits, labels, ks=(1, k5))
    return {"top1": acc[1], "top5": acc[k5]}


def fuse_runs(args: argparse.Namespace) -> dict[str, Any]:
    """Late fusion of the test scores saved by earlier runs."""
    if len(args.fuse) < 2:
        raise UsageError(f"--fuse needs at least 2 run directories, got {len(args.fuse)}")
    loaded = []
    for run in args.fuse:
        path = Path(run) / "test_scores.pt"
        if not path.is_file():
            raise UsageError(f"--fuse {run}: no test_scores.pt (is it a finished recognition run?)")
        loaded.append((run, torch.load(path, map_location="cpu", weights_only=True)))
    ref_run, ref = loaded[0]
    for run, s in loaded[1:]:
        if not torch.equal(s["indices"], ref["indices"]) or not torch.equal(s["labels"], ref["labels"]):
            raise UsageError(f"--fuse: {run} was evaluated on different samples than {ref_run} "
                             "(same store and test split needed)")
    if args.fuse_weights is not None and len(args.fuse_weights) != len(loaded):
        raise UsageError(f"--fuse-weights: {len(args.fuse_weights)} weights for {len(loaded)} runs")
    scores = [s[args.fuse_epoch]["scores"] for _, s in loaded]
    try:
        fused = fuse_scores(scores, args.fuse_weights, mode=args.fuse_mode)
    except ValueError as e:
        raise UsageError(f"--fuse: {e}") from None
    result = {"runs": [r for r, _ in loaded], "streams": [s["stream"] for _, s in loaded],
              "epoch": args.fuse_epoch, "mode": args.fuse_mode, "weights": args.fuse_weights,
              "per_run": {r: _topk(s[args.fuse_epoch]["scores"], s["labels"]) for r, s in loaded},
              "fused": _topk(fused, ref["labels"])}
    if args.run_dir:
        atomic_write_json(Path(args.run_dir) / "fusion.json", result)
    print(f"fusion ({args.fuse_mode}, {args.fuse_epoch}-epoch scores) of {len(loaded)} runs:")
    for run, acc in result["per_run"].items():
        print(f"  {run}: top-1 {acc['top1']:.4f}  top-5 {acc['top5']:.4f}")
    print(f"  fused: top-1 {result['fused']['top1']:.4f}  top-5 {result['fused']['top5']:.4f}")
    return result


@torch.no_grad()
def _features(model: ActionRecognizer, loader, stream: str, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled sequence features ``[N, feature_dim]`` and labels ``[N]`` with the encoder in eval mode."""
    model.eval()
    feats, labels = [], []
    for batch in loader:
        x = apply_stream(batch.x.to(device), batch.lengths.to(device), stream)
        feats.append(model.features(x, batch.lengths.to(device)).float())
        labels.append(batch.labels.to(device))
    return torch.cat(feats), torch.cat(labels)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.fuse:
        return fuse_runs(args)
    if not 0.0 < args.label_fraction <= 1.0:
        raise UsageError(f"--label-fraction must be in (0, 1], got {args.label_fraction}")
    if args.index_list is not None and args.label_fraction != 1.0:
        raise UsageError("--index-list and --label-fraction are alternatives; pass one")
    job = TaskRun(args, TASK, synthetic=("trimmed", args.synthetic_per_class))
    store, device = job.store, job.device
    train_idx, test_idx = store.split_indices(args.split), store.split_indices(args.test_split)
    for name, idx in ((args.split, train_idx), (args.test_split, test_idx)):
        if idx.size == 0 or (store.labels[idx] < 0).any():
            raise UsageError(f"split {name!r} of {store.root}: recognition needs labelled samples (found "
                             f"{idx.size} samples, {int((store.labels[idx] < 0).sum())} unlabelled; is it an "
                             "untrimmed store?)")
    num_classes = int(max(store.labels[train_idx].max(), store.labels[test_idx].max())) + 1
    if args.index_list is not None:
        try:
            pos = load_index_list(args.index_list, num_samples=train_idx.size, order_verified=True)
        except (ValueError, OSError) as e:
            raise UsageError(f"--index-list {args.index_list}: {e}") from None
        labelled = train_idx[np.sort(pos)]
    elif args.label_fraction < 1.0:
        labelled = train_idx[class_balanced_subset(store.labels[train_idx], args.label_fraction, seed=args.seed)]
    else:
        labelled = train_idx
    recipe = job.load_recipe()
    if not args.knn:
        recipe = job.plan(math.ceil(math.ceil(labelled.size / int(recipe["batch_size"])) / int(recipe["grad_accum"])))
    model = job.build_model(lambda encoder: ActionRecognizer(encoder, num_classes), num_classes=num_classes,
                            train_samples=int(labelled.size), test_samples=int(test_idx.size))

    from hitrs_fast.data.loader import build_loader

    def test_loader():
        return build_loader(store, batch_size=max(32, int(recipe["batch_size"])), indices=test_idx, shuffle=False,
                            device=device)

    if args.knn:
        tr_x, tr_y = _features(model, build_loader(store, batch_size=64, indices=labelled, shuffle=False,
                                                   device=device), args.stream, device)
        te_x, te_y = _features(model, test_loader(), args.stream, device)
        result = job.finish({"knn_top1": knn_accuracy(tr_x, tr_y, te_x, te_y, k=1), "k": 1, "metric": "cosine",
                             "train_samples": int(labelled.size), "test_samples": int(test_idx.size)})
        print(f"1-NN (cosine) top-1 on {args.test_split}: {result['knn_top1']:.4f}")
        return result

    batch_size = int(recipe["batch_size"])
    augment = recipe.get("augment", "hitrs")
    if augment not in ("hitrs", "none"):
        raise UsageError(f"recipe {job.recipe_path}: augment must be 'hitrs' or 'none', got {augment!r}")
    ce = nn.CrossEntropyLoss()
    cached = args.mode == "linear" and augment == "none"
    if args.mode == "linear" and not args.resume:
        # Frozen encoder: its un-augmented training features are fixed, so extract them once (the
        # head's input statistics, and the whole training set when there is no augmentation).
        tr_x, tr_y = _features(model, build_loader(store, batch_size=64, indices=labelled, shuffle=False,
                                                   device=device), args.stream, device)
        if recipe.get("standardize", False):
            model.set_feature_norm(tr_x)
    if cached:
        if args.resume:
            tr_x, tr_y = _features(model, build_loader(store, batch_size=64, indices=labelled, shuffle=False,
                                                       device=device), args.stream, device)
        te_x, te_y = _features(model, test_loader(), args.stream, device)
        gen = torch.Generator()

        def batches(epoch: int):
            gen.manual_seed(args.seed * 100_003 + epoch)
            order = torch.randperm(tr_x.shape[0], generator=gen).to(device)
            for i in range(0, order.numel(), batch_size):
                yield order[i:i + batch_size]

        def loss_fn(sel: torch.Tensor) -> torch.Tensor:
            return ce(model.classify(tr_x[sel]), tr_y[sel])

        def evaluate(epoch: int):
            logits = model.classify(te_x)
            return _topk(logits, te_y), logits.cpu()
    else:
        loader = build_loader(store, batch_size=batch_size, indices=labelled, shuffle=True, seed=args.seed,
                              augment=None if augment == "none" else "hitrs", device=device)

        def batches(epoch: int):
            loader.set_epoch(epoch)
            return loader

        def loss_fn(batch) -> torch.Tensor:
            x = apply_stream(batch.x, batch.lengths, args.stream)
            return ce(model(x, batch.lengths), batch.labels)

        def evaluate(epoch: int):
            logits, labels = [], []
            for batch in test_loader():
                x = apply_stream(batch.x, batch.lengths, args.stream)
                logits.append(model(x, batch.lengths).float())
                labels.append(batch.labels)
            logits_t = torch.cat(logits)
            return _topk(logits_t, torch.cat(labels)), logits_t.cpu()

    res = job.fit(batches=batches, loss_fn=loss_fn, evaluate=evaluate, primary="top1", higher_is_better=True,
                  desc=f"recognize {args.mode}/{args.stream}")
    labels_sorted = torch.as_tensor(store.labels[test_idx])  # the test loader walks test_idx in order
    atomic_torch_save({"stream": args.stream, "indices": torch.as_tensor(test_idx), "labels": labels_sorted,
                       "last": {"epoch": res.last["epoch"], "scores": res.last_payload},
                       "best": {"epoch": res.best["epoch"], "scores": res.best_payload}},
                      job.run_dir / "test_scores.pt")
    print(f"{args.test_split}: last epoch ({res.last['epoch']}) top-1 {res.last['top1']:.4f} top-5 "
          f"{res.last['top5']:.4f} | best epoch ({res.best['epoch']}, chosen on {args.test_split}) top-1 "
          f"{res.best['top1']:.4f} top-5 {res.best['top5']:.4f}")
    verdict = job.versus_baseline("top-1", res.last["top1"], "chance (always the most frequent class)",
                                  chance_level(labels_sorted), "train longer (--epochs), fine-tune (--mode finetune) "
                                  "or start from a pre-trained encoder (--init)")
    return job.finish({"task": TASK, "mode": args.mode, "stream": args.stream, "init": job.encoder_info["init"],
                       "label_fraction": args.label_fraction, "train_samples": int(labelled.size),
                       "test_samples": int(test_idx.size), "num_classes": num_classes, "last_epoch": res.last,
                       "best_epoch_on_test": res.best, "seconds": res.seconds, "versus_baseline": verdict})


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """``python training/recognize.py ARGS``; returns the exit status (2 on a bad argument)."""
    return run_cli(build_parser(prog), run, argv)
