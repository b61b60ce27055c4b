"""Motion prediction with a Hi-TRS encoder (paper §4.6): observe 2 s, predict the next 400 ms.

The encoder reads the ``--observe`` frames (60 at 30 fps) of one body; a residual GRU decoder (after
Martinez et al., CVPR 2017) predicts the next ``--horizon`` frames (12), starting from the last observed
pose and a smoothed velocity and reading its own previous prediction at every step, conditioned on the
encoder's sequence features and its clip embeddings read in time order by a small GRU (see
:class:`~hitrs_fast.tasks.MotionPredictor`); it trains with the mean Euclidean joint distance. Reported:
MPJPE in mm per predicted frame and averaged (absolute, or ``--root-relative``; the output says which),
beside two baselines on the same windows: zero velocity (the last observed pose repeated) and constant
velocity (the smoothed last velocity repeated).
``--ablate-encoder`` zeroes the encoder's input to the decoder: the ablation shows what the encoder
contributes. ``--context-reader last_clip`` conditions on the sequence features and the last clip only (the
earlier wiring, kept for comparison).

Examples::

    python training/predict_motion.py --init runs/pre/encoder.pt            # synthetic long sequences
    python training/predict_motion.py --data stores/ntu60_xsub --init runs/pre/encoder.pt --root-relative

Windows of ``observe + horizon`` frames are cut from every sequence of a split with the recipe's stride
(``train_stride`` / ``test_stride``); windows in which the predicted body is absent in some frame are
skipped. Body slot ``--body`` (default 0, the main actor) is predicted.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np
import torch

from hitrs_fast.eval.metrics import mpjpe, zero_velocity_baseline
from hitrs_fast.tasks.motion import MotionPredictor, constant_velocity_baseline, euclidean_loss
from hitrs_fast.training.head_warmup import head_warmup_recipe, wants_head_warmup, warm_up_head
from hitrs_fast.training.run import UsageError
from hitrs_fast.training.task_run import TaskRun, run_cli, task_parser

TASK = "motion"


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = task_parser("predict_motion", __doc__, "the synthetic long set", prog)
    p.add_argument("--synthetic-sequences", type=int, default=96, help="sequences of the synthetic long set")
    p.add_argument("--velocity-frames", type=int, default=4,
                   help="frames the smoothed last velocity averages over (the decoder's first input and the "
                   "constant-velocity baseline; default 4)")
    p.add_argument("--observe", type=int, default=60, help="observed frames (default 60 = 2 s at 30 fps)")
    p.add_argument("--horizon", type=int, default=12, help="predicted frames (default 12 = 400 ms at 30 fps)")
    p.add_argument("--body", type=int, default=0, help="body slot to predict (default 0)")
    p.add_argument("--root-relative", action="store_true",
                   help="MPJPE after subtracting the root joint (H3.6M convention); default: absolute")
    p.add_argument("--ablate-encoder", action="store_true",
                   help="zero the encoder's input to the decoder (ablation: what the encoder contributes)")
    p.add_argument("--context-reader", choices=MotionPredictor.CONTEXT_READERS, default="clips",
                   help="what of the encoder conditions the decoder: 'clips' (default) the sequence features and "
                   "all clip embeddings read in time order by a small GRU; 'last_clip' the sequence features and "
                   "the last clip's embedding")
    return p


def cut_windows(store, videos: np.ndarray, length: int, stride: int, body: int) -> torch.Tensor:
    """All windows ``[N, length, V, C]`` of body slot ``body``, starts ``0, stride, ...`` in each video;
    windows where the body is all-zero in some frame are skipped."""
    out = []
    for vid in videos.tolist():
        seq = np.asarray(store.sequence(vid)[:, body])  # [T, V, C]
        if seq.shape[0] < length:
            continue
        starts = np.arange(0, seq.shape[0] - length + 1, stride)
        win = np.stack([seq[s:s + length] for s in starts])
        present = np.abs(win).sum(axis=(2, 3)) > 0  # [n, length]
        out.append(win[present.all(axis=1)])
    if not out or sum(len(w) for w in out) == 0:
        return torch.zeros(0, length, *store.shape_tail[1:])
    return torch.from_numpy(np.concatenate(out)).float()


@torch.no_grad()
def _contexts(model: MotionPredictor, windows: torch.Tensor, device) -> torch.Tensor:
    """Encoder contexts ``[N, context_dim]`` of the windows' observed frames (encoder in eval mode)."""
    model.encoder.eval()
    obs = model.observe
    return torch.cat([model.context(windows[i:i + 128, :obs].to(device)) for i in range(0, len(windows), 128)])


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.horizon < 1 or args.velocity_frames < 1 or args.observe <= args.velocity_frames:
        raise UsageError(f"--horizon and --velocity-frames must be >= 1 and --observe > --velocity-frames, got "
                         f"--observe {args.observe}, --horizon {args.horizon}, "
                         f"--velocity-frames {args.velocity_frames}")
    job = TaskRun(args, TASK, synthetic=("long", args.synthetic_sequences))
    store, device = job.store, job.device
    if not 0 <= args.body < store.shape_tail[0]:
        raise UsageError(f"--body {args.body}: the store has {store.shape_tail[0]} body slots")
    recipe = job.load_recipe(required=("train_stride", "test_stride", "hidden"))
    length = args.observe + args.horizon
    train = cut_windows(store, store.split_indices(args.split), length, int(recipe["train_stride"]), args.body)
    test = cut_windows(store, store.split_indices(args.test_split), length, int(recipe["test_stride"]), args.body)
    for name, w in ((args.split, train), (args.test_split, test)):
        if w.shape[0] == 0:
            raise UsageError(f"split {name!r} of {store.root}: no window of {length} frames (observe {args.observe} "
                             f"+ horizon {args.horizon}) with body {args.body} present; sequences are too short")
    print(f"windows of {length} frames (observe {args.observe} + horizon {args.horizon}), body {args.body}: "
          f"{train.shape[0]} from {args.split!r} (stride {recipe['train_stride']}), {test.shape[0]} from "
          f"{args.test_split!r} (stride {recipe['test_stride']})", flush=True)
    recipe = job.plan(math.ceil(math.ceil(train.shape[0] / int(recipe["batch_size"])) / int(recipe["grad_accum"])))
    model = job.build_model(lambda encoder: MotionPredictor(encoder, args.horizon, int(recipe["hidden"]),
                                                            observe=args.observe,
                                                            ablate_encoder=args.ablate_encoder,
                                                            velocity_frames=args.velocity_frames,
                                                            context_reader=args.context_reader),
                            train_windows=int(train.shape[0]), test_windows=int(test.shape[0]))
    draw = {"batch_size": int(recipe["batch_size"])}  # the run's, or the head warm-up's while it runs
    obs = args.observe
    gen = torch.Generator()

    test_dev = test.to(device)
    cached: dict[str, torch.Tensor] = {}  # a frozen encoder's contexts: "train" / "test", computed once

    def cache_contexts(standardize: bool) -> None:
        # Frozen encoder in eval mode, no augmentation: its contexts are fixed, so compute them once.
        cached["train"], cached["test"] = _contexts(model, train, device), _contexts(model, test, device)
        if standardize:
            model.set_feature_norm(cached["train"])

    if args.mode == "linear" and not args.ablate_encoder:  # (the ablated decoder reads no context)
        cache_contexts(bool(recipe.get("standardize", False)))

    def batches(epoch: int):
        gen.manual_seed(args.seed * 100_003 + epoch)
        order = torch.randperm(train.shape[0], generator=gen)
        for i in range(0, order.numel(), draw["batch_size"]):
            sel = order[i:i + draw["batch_size"]]
            yield train[sel].to(device), cached["train"][sel.to(device)] if cached else None

    def loss_fn(batch) -> torch.Tensor:
        win, ctx = batch
        return euclidean_loss(model(win[:, :obs], ctx), win[:, obs:])

    observed, future = test_dev[:, :obs], test_dev[:, obs:]
    forecasts = {"zero_velocity": zero_velocity_baseline(observed, args.horizon),
                 "constant_velocity": constant_velocity_baseline(observed, args.horizon, args.velocity_frames)}
    baselines = {name: mpjpe(f, future, root_relative=args.root_relative) for name, f in forecasts.items()}
    zero = baselines["zero_velocity"]

    def evaluate(epoch: int):
        preds = torch.cat([model(test_dev[i:i + 256, :obs], cached["test"][i:i + 256] if cached else None)
                           for i in range(0, test.shape[0], 256)])
        err = mpjpe(preds.float(), future, root_relative=args.root_relative)
        metrics = {"mpjpe_mm": float(err.mean), "mpjpe_last_frame_mm": float(err.per_frame[-1]),
                   **{f"{name}_mm": float(b.mean) for name, b in baselines.items()}}
        return metrics, {"per_frame_mm": err.per_frame.cpu().tolist()}

    fit_args = dict(batches=batches, loss_fn=loss_fn, evaluate=evaluate, primary="mpjpe_mm", higher_is_better=False)
    warmup = None
    if wants_head_warmup(job):  # the decoder first trains alone on the frozen encoder's contexts
        warm = head_warmup_recipe(job)
        if not args.ablate_encoder:
            cache_contexts(bool(warm.get("standardize", False)))
        draw["batch_size"] = int(warm["batch_size"])
        warmup = warm_up_head(job, desc=f"motion {args.mode}", **fit_args)
        cached.clear()  # then everything trains, the encoder recomputing the contexts (fixed normalisation)
        draw["batch_size"] = int(recipe["batch_size"])
    res = job.fit(desc=f"motion {args.mode}", **fit_args)
    # The decoder starts as the zero-velocity baseline (its output layer is zero-initialised): ending above it
    # means training made the predictions worse, which the summary and the output say in words.
    worse = res.last["mpjpe_mm"] > float(zero.mean)
    verdict = (f"worse than the zero-velocity baseline, the untrained decoder's starting point "
               f"({res.last['mpjpe_mm']:.1f} > {float(zero.mean):.1f} mm): training did not help on this data; check "
               "the recipe (lr, epochs) against the size of the data" if worse else
               f"better than the zero-velocity baseline ({res.last['mpjpe_mm']:.1f} <= {float(zero.mean):.1f} mm)")
    coordinates = "root-relative (root joint subtracted)" if args.root_relative else "absolute (camera space)"
    result = job.finish({
        "task": TASK, "mode": args.mode, "init": job.encoder_info["init"], "observe": obs, "horizon": args.horizon,
        "ablate_encoder": args.ablate_encoder, "context_reader": args.context_reader,
        "velocity_frames": args.velocity_frames,
        "root_relative": args.root_relative, "coordinates": coordinates, "body": args.body,
        "train_windows": int(train.shape[0]), "test_windows": int(test.shape[0]),
        "last_epoch": {**res.last, "per_frame_mm": res.last_payload["per_frame_mm"]},
        "best_epoch_on_test": {**res.best, "per_frame_mm": res.best_payload["per_frame_mm"]},
        **{name: {"mean_mm": float(b.mean), "per_frame_mm": b.per_frame.cpu().tolist()}
           for name, b in baselines.items()},
        "head_warmup": None if warmup is None else {"last_epoch": warmup.last, "seconds": warmup.seconds},
        "worse_than_zero_velocity": worse, "verdict": f"last epoch {verdict}", "seconds": res.seconds})
    print(f"{args.test_split}: MPJPE ({coordinates}, mm) last epoch ({res.last['epoch']}) {res.last['mpjpe_mm']:.1f}, "
          f"best epoch ({res.best['epoch']}, chosen on {args.test_split}) {res.best['mpjpe_mm']:.1f}; zero-velocity "
          f"{float(zero.mean):.1f}, constant-velocity {float(baselines['constant_velocity'].mean):.1f} "
          f"({int(test.shape[0])} test windows)")
    print("  per frame (last epoch):       " + " ".join(f"{v:.1f}" for v in res.last_payload["per_frame_mm"]))
    for name, b in baselines.items():
        print(f"  {name.replace('_', '-') + ' per frame:':29s} " + " ".join(f"{v:.1f}" for v in b.per_frame.tolist()))
    print(f"{'WARNING: ' if worse else ''}last epoch {verdict}")
    return result


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """``python training/predict_motion.py ARGS``; returns the exit status (2 on a bad argument)."""
    return run_cli(build_parser(prog), run, argv)
