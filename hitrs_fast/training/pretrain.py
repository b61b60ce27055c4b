"""Hi-TRS pre-training with DeepSpeed.

``hitrs pretrain`` (or ``deepspeed training/pretrain.py`` in the repository) with no arguments pre-trains
the ``tiny`` preset on the built-in synthetic motion set on whatever hardware is present, then prints a
linear probe (10 % of the labels) of the pre-trained encoder next to a random-init encoder. Full-scale
runs pick a dataset, a preset, a DeepSpeed config from ``training/configs/`` (installed as the package
``hitrs_fast.configs``) and the step count; see ``docs/training.md``.

Launching: without a launcher (``hitrs pretrain``, ``python -m hitrs_fast.training.pretrain``) the job is
one process on this machine; for several GPUs or nodes start the module with DeepSpeed's launcher,
``deepspeed --num_gpus 8 --module hitrs_fast.training.pretrain ARGS`` (or ``deepspeed training/pretrain.py
ARGS`` in the repository). Every argument is checked before DeepSpeed is imported.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hitrs_fast.config import PRESETS, HiTRSConfig
from hitrs_fast.models import HiTRS
from hitrs_fast.pretext import HiTRSForPretraining, rank_mean
from hitrs_fast.training.checkpoint import CheckpointManager, barrier, save_module_atomic
from hitrs_fast.training.compiled import (
    COMPILE_CHOICES,
    COMPILE_MODES,
    CompileSettings,
    compile_backend,
    compile_module,
    step_inputs,
    use_compile,
)
from hitrs_fast.training.config_files import DEEPSPEED, load_config
from hitrs_fast.training.optim import parameter_groups, warmup_linear_decay
from hitrs_fast.training.run import (
    CommandParser,
    HeapTrimmer,
    RunLogger,
    RunSession,
    UsageError,
    add_run_arguments,
    atomic_write_json,
    mix_seed,
    open_checked_store,
    parse_overrides,
    run_cli,
    set_threads,
)

DEFAULT_DS_CONFIG = "cpu_fp32.json"
DEFAULT_CUDA_DS_CONFIG = "zero1_bf16.json"
LOSS_KEYS = ("loss", "pose_loss", "clip_order_loss", "video_order_loss", "nce_loss")
ACC_KEYS = ("clip_order_acc", "video_order_acc", "nce_acc")
# Batches per length-sorting window (SkeletonLoader group_by_length): the tiny run's default and the probe's.
LENGTH_GROUPING = 8
# Length buckets of a compiled run: one graph each (a 40-300-frame NTU split pads about 10 % more frames than
# padding each batch to its longest sample; more buckets, more compilation).
DEFAULT_LENGTH_BUCKETS = 4



def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = CommandParser(prog=prog or "deepspeed training/pretrain.py", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p, data_default="the built-in synthetic motion set", preset_default="tiny",
                      preset_help="default: tiny", run_dir_default="runs/pretrain-<preset>-<time>",
                      resume_help="continue from the run directory's latest complete checkpoint")
    p.add_argument("--synthetic-per-class", type=int, default=150, help="samples per class of the synthetic set")
    p.add_argument("--compile", default="auto", choices=list(COMPILE_CHOICES),
                   help="torch.compile the step (fullgraph, static shapes, one graph per length bucket); auto: on "
                   "CUDA only")
    p.add_argument("--compile-mode", default="default", choices=list(COMPILE_MODES),
                   help="torch.compile mode (reduce-overhead: CUDA graphs per length bucket)")
    p.add_argument("--length-buckets", type=int, default=None, metavar="K",
                   help="pad batches to K frame counts chosen from the split's lengths (one compiled graph each); "
                   f"default {DEFAULT_LENGTH_BUCKETS} when compiled, 0 (pad to each batch's longest sample) otherwise")
    p.add_argument("--loader", default="torch", choices=["torch", "dali"], help="data loader backend")
    p.add_argument("--ds-config", default=None,
                   help=f"DeepSpeed JSON config (name in training/configs/ or a path); default "
                   f"{DEFAULT_CUDA_DS_CONFIG} on CUDA, {DEFAULT_DS_CONFIG} on CPU")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: 400 for tiny, 50000 otherwise)")
    p.add_argument("--global-batch", type=int, default=None, help="samples per optimizer step, all ranks")
    p.add_argument("--micro-batch", type=int, default=None, help="samples per rank per forward")
    p.add_argument("--grad-accum", type=int, default=None, help="micro-batches per optimizer step")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: from the config, 4e-4)")
    p.add_argument("--final-lr", type=float, default=2e-6, help="learning rate at the end of the decay")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default: 1000, or 10%% of short runs)")
    p.add_argument("--schedule-steps", type=int, default=None, help="step where the decay ends (default: --steps)")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                   help="auto: what the DeepSpeed config says on CUDA, fp32 on CPU")
    p.add_argument("--augment", default="hitrs", choices=["hitrs", "none"])
    p.add_argument("--group-by-length", type=int, default=None, metavar="N",
                   help="batch samples of similar length together within windows of N batches (less padding, "
                   "faster steps); default: 8 for tiny and compiled runs, 0 (off, the released batching) otherwise")
    p.add_argument("--ckpt-every", type=int, default=100,
                   help="checkpoint (and export RUN_DIR/encoder.pt) every N steps (0: only at the end)")
    p.add_argument("--keep-checkpoints", type=int, default=2, metavar="N",
                   help="keep the newest N complete checkpoints, delete older ones (default 2; 0 keeps all)")
    p.add_argument("--log-every", type=int, default=10, help="log the losses every N steps (default 10)")
    p.add_argument("--max-seconds-this-run", type=float, default=None, metavar="S",
                   help="stop (with a checkpoint) at the first logged step after S seconds of training in this "
                   "invocation; --resume continues")
    p.add_argument("--max-steps-this-run", type=int, default=None,
                   help="stop (with a checkpoint) after this many steps of this invocation; for tests")
    p.add_argument("--probe", default="on", choices=["on", "off"], help="linear-probe evaluation at the end")
    p.add_argument("--probe-fraction", type=float, default=0.10, help="share of labelled train samples for the probe")
    p.add_argument("--probe-repeats", type=int, default=3,
                   help="label subsets (and random-init encoders) the probe is averaged over")
    p.add_argument("--dump-grads", default=None, help="write the first step's losses and gradients here (tests)")
    p.add_argument("--local_rank", "--local-rank", type=int, default=int(os.environ.get("LOCAL_RANK", 0)),
                   help=argparse.SUPPRESS)
    return p



def resolve_ds_config(name: str | None, cuda: bool) -> tuple[str, dict[str, Any]]:
    """``--ds-config``: a path, or a packaged DeepSpeed config (``training/configs/*.json``)."""
    return load_config(name or (DEFAULT_CUDA_DS_CONFIG if cuda else DEFAULT_DS_CONFIG), DEEPSPEED, "--ds-config")


def resolve(args: argparse.Namespace, world_size: int, cuda: bool) -> dict[str, Any]:
    """Validates every argument before anything expensive and returns the resolved run config."""
    if args.preset not in PRESETS:
        raise UsageError(f"--preset {args.preset!r}: unknown; available: {sorted(PRESETS)}")
    overrides = parse_overrides(args.set)
    try:
        model_cfg = HiTRSConfig.preset(args.preset, **overrides)
    except (TypeError, ValueError) as e:
        raise UsageError(f"--set: {e}") from None
    if args.data is not None:
        check_store(args, model_cfg)
    ds_path, ds = resolve_ds_config(args.ds_config, cuda)
    tiny = args.preset == "tiny"
    micro = args.micro_batch or ds.get("train_micro_batch_size_per_gpu") or 32
    accum = args.grad_accum or (None if args.global_batch else ds.get("gradient_accumulation_steps"))
    global_batch = args.global_batch or ds.get("train_batch_size")
    if args.global_batch and not args.micro_batch and args.grad_accum is None:
        accum = ds.get("gradient_accumulation_steps") or 1  # keep the config's accumulation, derive the micro-batch
        if global_batch % (accum * world_size):
            raise UsageError(f"--global-batch {global_batch} is not divisible by ranks x accumulation "
                             f"= {world_size} x {accum}")
        micro = global_batch // (accum * world_size)
    if accum is None and global_batch is None:
        accum = 1
    if accum is None:
        if global_batch % (micro * world_size):
            raise UsageError(f"global batch {global_batch} is not divisible by micro-batch x ranks "
                             f"= {micro} x {world_size}")
        accum = global_batch // (micro * world_size)
    global_batch = global_batch or micro * accum * world_size
    if global_batch != micro * accum * world_size:
        raise UsageError(f"global batch {global_batch} != micro-batch {micro} x accumulation {accum} x ranks "
                         f"{world_size}: the batch must be divisible by ranks x accumulation")
    steps = args.steps if args.steps is not None else (400 if tiny else 50_000)
    if steps < 1:
        raise UsageError(f"--steps must be >= 1, got {steps}")
    warmup = args.warmup if args.warmup is not None else min(1000, max(1, steps // 10))
    compiled = use_compile(args.compile, torch.device("cuda" if cuda else "cpu"))
    # Compiled runs batch similar lengths together by default: with the released random batching nearly every batch
    # holds a long sample and lands in the largest length bucket.
    group_by_length = args.group_by_length if args.group_by_length is not None else (
        LENGTH_GROUPING if tiny or compiled else 0)
    if group_by_length < 0:
        raise UsageError(f"--group-by-length must be >= 0, got {group_by_length}")
    schedule_steps = args.schedule_steps or (steps if tiny or args.steps is not None else 50_000)
    ds_opt = ds.get("optimizer", {})
    lr = args.lr or ds_opt.get("params", {}).get("lr") or (2e-3 if tiny else 4e-4)
    optimizer = ds_opt.get("type", "AdamW").lower()
    if optimizer not in ("adamw", "lamb"):
        raise UsageError(f"{ds_path}: optimizer type {ds_opt.get('type')!r} not supported (AdamW, Lamb)")
    if optimizer == "lamb" and not cuda:
        raise UsageError(f"{ds_path}: Lamb is DeepSpeed's FusedLamb, which needs CUDA; use an AdamW config on CPU")
    bf16 = {"auto": bool(ds.get("bf16", {}).get("enabled")) and cuda, "bf16": True, "fp32": False}[args.precision]
    ds = {k: v for k, v in ds.items() if k not in ("optimizer", "scheduler")}
    ds.update(train_batch_size=global_batch, train_micro_batch_size_per_gpu=micro, gradient_accumulation_steps=accum)
    ds.setdefault("gradient_clipping", 1.0)
    ds["bf16"] = {"enabled": bf16}
    ds.setdefault("steps_per_print", 10**9)
    if optimizer == "lamb":
        ds["zero_allow_untested_optimizer"] = True
    run_dir = Path(args.run_dir or f"runs/pretrain-{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}")
    if args.resume and not (run_dir / "checkpoints" / "latest_tag").exists():
        raise UsageError(f"--resume: no checkpoint in {run_dir / 'checkpoints'}")
    buckets = args.length_buckets if args.length_buckets is not None else (DEFAULT_LENGTH_BUCKETS if compiled else 0)
    if buckets < 0:
        raise UsageError(f"--length-buckets must be >= 0, got {buckets}")
    if args.keep_checkpoints < 0 or args.ckpt_every < 0 or args.log_every < 1:
        raise UsageError(f"--keep-checkpoints and --ckpt-every must be >= 0 and --log-every >= 1, got "
                         f"{args.keep_checkpoints}, {args.ckpt_every}, {args.log_every}")
    if not 0 < args.probe_fraction <= 1:
        raise UsageError(f"--probe-fraction must be in (0, 1], got {args.probe_fraction}")
    if args.probe_repeats < 1:
        raise UsageError(f"--probe-repeats must be >= 1, got {args.probe_repeats}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    return {
        "model": model_cfg.to_dict(), "preset": args.preset, "ds_config_file": str(ds_path), "deepspeed": ds,
        "steps": steps, "warmup": warmup, "schedule_steps": schedule_steps, "lr": lr, "final_lr": args.final_lr,
        "weight_decay": args.weight_decay, "optimizer": optimizer, "world_size": world_size,
        "micro_batch": micro, "grad_accum": accum, "global_batch": global_batch, "seed": args.seed,
        "backend": args.backend, "loader": args.loader, "augment": args.augment, "split": args.split,
        "group_by_length": group_by_length, "compile": compiled, "compile_mode": args.compile_mode,
        "compile_backend": compile_backend() if compiled else None, "length_buckets": buckets,
        "test_split": args.test_split, "run_dir": str(run_dir), "data": args.data,
    }


def check_store(args: argparse.Namespace, model_cfg: HiTRSConfig) -> None:
    """``--data``: a readable store whose ``--split`` holds a sample long enough to pre-train on, and whose
    ``--test-split`` exists when the probe runs."""
    from hitrs_fast.data.loader import PRETRAIN_MIN_LENGTH

    splits = [("--split", args.split)] + ([("--test-split", args.test_split)] if args.probe == "on" else [])
    store = open_checked_store(args.data, splits)
    idx = store.split_indices(args.split)
    need = max(PRETRAIN_MIN_LENGTH, model_cfg.min_pretrain_frames)
    if int(store.lengths[idx].max()) < need:
        raise UsageError(f"--split {args.split!r} of {args.data}: no sample of at least {need} frames to pre-train "
                         f"on ({idx.size} samples, the longest {int(store.lengths[idx].max())} frames)")


def ensure_dataset(args: argparse.Namespace, rank: int) -> Path:
    """The store to train on: ``--data``, or the synthetic set (generated once by rank 0)."""
    if args.data is not None:
        return Path(args.data)
    from hitrs_fast.data.synthetic import cached_synthetic, synthetic_cache_path

    if rank == 0:
        cached_synthetic(args.cache_dir, "trimmed", args.seed, args.synthetic_per_class)
    barrier()
    return synthetic_cache_path(args.cache_dir, "trimmed", args.seed, args.synthetic_per_class)


def make_optimizer(model: torch.nn.Module, run: dict[str, Any], cuda: bool) -> torch.optim.Optimizer:
    groups = parameter_groups(model, run["weight_decay"])
    if run["optimizer"] == "lamb":
        from deepspeed.ops.lamb import FusedLamb

        return FusedLamb(groups, lr=run["lr"])
    return torch.optim.AdamW(groups, lr=run["lr"], betas=(0.9, 0.999), eps=1e-8, fused=cuda or None)


def batches_from(loader, start_micro: int):
    """Micro-batches from global position ``start_micro`` on, across epochs (deterministic)."""
    per_epoch = len(loader)
    if per_epoch == 0:
        raise UsageError("the training split yields no full batch: lower the batch size")
    epoch, skip = divmod(start_micro, per_epoch)
    while True:
        loader.set_epoch(epoch)
        yield from loader.iter_from(skip)
        epoch, skip = epoch + 1, 0


def single_process_env() -> None:
    """Without a launcher (no ``RANK`` / ``WORLD_SIZE`` in the environment), the environment of a job of one
    process on this machine, which ``deepspeed.init_distributed`` needs (a free local rendezvous port)."""
    if "RANK" in os.environ or "WORLD_SIZE" in os.environ:
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def cpu_allreduce_buffer(rank: int) -> Path:
    """The /dev/shm segment DeepSpeed's CPU all-reduce (its shm comm op) maps for ``rank`` of this job."""
    return Path("/dev/shm") / (f"deepspeed_allreduce_buffer_{os.getuid()}_{os.environ.get('MASTER_ADDR')}_"
                               f"{os.environ.get('MASTER_PORT')}_{rank}")


def release_cpu_allreduce_buffer(rank: int) -> None:
    """DeepSpeed creates that segment in ``init_distributed`` and never unlinks it: about 66 MiB of RAM per run,
    held until reboot (a machine that runs many jobs runs out of memory). Once every rank has mapped every
    rank's segment (``init_distributed`` on all of them: a barrier), the name can go; the mappings stay valid."""
    import torch.distributed as dist

    dist.barrier()
    cpu_allreduce_buffer(rank).unlink(missing_ok=True)


def train(args: argparse.Namespace) -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    run = resolve(args, world_size, cuda)  # every argument checked before anything expensive
    set_threads(args.threads)
    session = RunSession.current()
    session.started(run["run_dir"])
    single_process_env()
    import deepspeed

    from hitrs_fast.data.loader import PRETRAIN_MIN_LENGTH, build_loader, length_buckets
    from hitrs_fast.data.store import SkeletonStore

    deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo", verbose=False)
    import torch.distributed as dist

    rank = dist.get_rank()
    if not cuda:
        release_cpu_allreduce_buffer(rank)
    device = torch.device("cuda", args.local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    data_path = ensure_dataset(args, rank)
    store = SkeletonStore(data_path)
    if args.split not in store.split_names:
        raise UsageError(f"--split {args.split!r}: not in {data_path} (splits: {store.split_names})")

    run_dir = Path(run["run_dir"])
    ckpt = CheckpointManager(run_dir / "checkpoints", keep=args.keep_checkpoints)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "config.json", {**run, "data": str(data_path)})

    torch.manual_seed(args.seed)
    model_cfg = HiTRSConfig.from_dict(run["model"])
    model = HiTRSForPretraining(model_cfg, backend=args.backend).to(device)
    optimizer = make_optimizer(model, run, cuda)
    factor = warmup_linear_decay(run["warmup"], run["schedule_steps"], run["final_lr"] / run["lr"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=run["deepspeed"], dist_init_required=False)
    start_step = 0
    if args.resume:
        state = ckpt.load(engine)
        start_step = int(state["step"])
        session.resuming(f"step {start_step}", ckpt.root / ckpt.latest_tag(), f"{run['steps']}")
    min_length = max(PRETRAIN_MIN_LENGTH, model_cfg.min_pretrain_frames)
    buckets = None
    if run["length_buckets"]:
        split_lengths = store.lengths[store.split_indices(args.split)]
        buckets = length_buckets(split_lengths[split_lengths >= min_length], run["length_buckets"])
    try:
        loader = build_loader(store, batch_size=run["micro_batch"], backend=args.loader, split=args.split,
                              shuffle=True, seed=args.seed, augment=None if args.augment == "none" else "hitrs",
                              bodies="single", min_length=min_length, drop_last=True, device=device, rank=rank,
                              world_size=world_size, group_by_length=run["group_by_length"], length_buckets=buckets)
    except ValueError as e:  # e.g. no sample of the split is long enough
        raise UsageError(f"--split {args.split!r}: {e}") from None
    if run["compile"]:
        settings = CompileSettings(run["compile_mode"], graphs=len(buckets) if buckets else 1)
        # The model's forward only: DeepSpeed's module hooks (timers, ZeRO bookkeeping) stay eager around it.
        model.forward = compile_module(model.forward, settings)
        if rank == 0:
            print(f"compiled step: torch.compile {compile_backend()}, mode {run['compile_mode']}, "
                  f"length buckets {list(buckets) if buckets else 'off'} (frames)", flush=True)
    logger = RunLogger(run_dir, enabled=rank == 0, resume_step=start_step if args.resume else None)
    stream = batches_from(loader, start_step * run["grad_accum"])
    end_step = run["steps"] if args.max_steps_this_run is None else min(run["steps"],
                                                                        start_step + args.max_steps_this_run)
    progress = _progress(start_step, run["steps"], rank == 0 and not args.no_progress)
    # Running sums of the logged values stay on the device and are read once per log step: reading a
    # loss after every micro-step would stall the GPU (a host sync) that often.
    window: dict[str, torch.Tensor] = {}
    window_steps = 0
    heap = HeapTrimmer()  # keeps the resident size of a long CPU run flat (docs/training.md)
    samples, t0 = 0, time.perf_counter()
    for step in range(start_step, end_step):
        for micro in range(run["grad_accum"]):
            batch = next(stream)
            # Dropout and every pretext draw are functions of (seed, step, micro[, rank]) and the
            # samples' ids: an interrupted run resumes exactly, and the draws do not depend on
            # how the global batch is split over ranks.
            torch.manual_seed(mix_seed(args.seed, step, micro, rank))
            ids = batch.indices * 16 + batch.slots.clamp_min(0)
            x, lengths, rng = step_inputs(batch.x, batch.lengths, ids, mix_seed(args.seed, step, micro, 7919),
                                          run["compile"])
            if run["compile"] and run["compile_mode"] == "reduce-overhead":
                torch.compiler.cudagraph_mark_step_begin()  # a new step: the last one's graph outputs may be reused
            out = engine(x, lengths, generator=rng)
            engine.backward(out["loss"])
            if args.dump_grads and step == start_step and micro == run["grad_accum"] - 1:
                _dump_grads(args.dump_grads, engine, out, rank)
            engine.step()
            samples += len(batch) * world_size
            for key in LOSS_KEYS + ACC_KEYS:
                if key in out:
                    window[key] = window.get(key, 0) + out[key].detach().float()
            window_steps += 1
        heap.step()
        done = step + 1
        if done % args.log_every == 0 or done == end_step:
            means = torch.stack(list(window.values())).div(window_steps).tolist()  # the one host sync
            values = dict(zip(window, means, strict=True))
            if "loss" in values:
                values["loss"] = _all_mean(values["loss"])  # each rank's total is its share of the global mean
            values["lr"] = scheduler.get_last_lr()[0]
            values["samples_per_s"] = samples / max(1e-9, time.perf_counter() - t0)
            values["padding"] = loader.padding.waste
            if heap.resident_bytes() is not None:
                values["rss_mb"] = heap.resident_bytes() / 2**20  # this rank's resident memory
            logger.log(done, values)
            shown = {k: f"{v:.3g}" for k, v in values.items() if k in LOSS_KEYS or k == "samples_per_s"}
            progress.set_postfix(shown)
            if progress.disable and rank == 0:  # no bar (not a terminal, or --no-progress): one line per log step
                print(f"step {done}/{run['steps']} " + " ".join(f"{k} {v}" for k, v in shown.items()), flush=True)
            window, window_steps = {}, 0
        progress.update(1)
        if args.max_seconds_this_run is not None and done % args.log_every == 0 \
                and _any_rank(time.perf_counter() - t0 > args.max_seconds_this_run, device):
            end_step = done  # the time is up (on some rank: all stop together): checkpoint here and stop
        if (args.ckpt_every and done % args.ckpt_every == 0) or done == end_step:
            with session.saving(f"step {done}", ckpt.root / ckpt.tag_for(done)):
                ckpt.save(engine, done, {"step": done, "run": run})
                if rank == 0:  # the encoder of the newest checkpoint, ready for --init while the run goes on
                    save_module_atomic(model.encoder, run_dir / "encoder.pt", {"config": run["model"], "step": done})
        if done == end_step:
            break
    progress.close()
    elapsed = time.perf_counter() - t0
    result = {"run_dir": str(run_dir), "steps": end_step, "seconds": elapsed,
              "samples_per_s": samples / max(elapsed, 1e-9), "last": logger.rows()[-1] if logger.rows() else {},
              "padding": {"frames_per_real_frame": 1 + loader.padding.waste,
                          "bucket_share": loader.padding.bucket_waste, "length_buckets": list(buckets or [])}}
    if rank == 0:
        logger.plot(list(LOSS_KEYS[1:]) + list(ACC_KEYS), title=f"Hi-TRS pre-training ({args.preset})")
        if end_step == run["steps"] and args.probe == "on":
            t_probe = time.perf_counter()
            result["probe"] = run_probe(model.encoder, store, args, model_cfg, device)
            result["probe"]["seconds"] = time.perf_counter() - t_probe
            atomic_write_json(run_dir / "probe.json", result["probe"])
        atomic_write_json(run_dir / "summary.json", result)
    logger.close()
    barrier()
    return result


def _any_rank(flag: bool, device: torch.device) -> bool:
    """``flag`` or'ed over the data-parallel ranks (every rank must take the same decision to stop)."""
    import torch.distributed as dist

    value = torch.tensor([float(flag)], device=device)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def _all_mean(value: float) -> float:
    return float(rank_mean(torch.tensor(value, dtype=torch.float64)))


def _dump_grads(path: str, engine, out: dict[str, torch.Tensor], rank: int) -> None:
    """Losses and (rank-averaged) parameter gradients after the first backward, for the multi-rank test."""
    grads = {name: rank_mean(p.grad.double() if p.grad is not None else torch.zeros_like(p, dtype=torch.float64))
             for name, p in engine.module.named_parameters()}
    # "loss" is each rank's share of the global mean; the other values are global already.
    losses = {k: _all_mean(float(v.detach())) if k == "loss" else float(v) for k, v in out.items()}
    if rank == 0:
        torch.save({"losses": losses, "grads": grads}, path)


def _progress(start: int, total: int, enabled: bool):
    """A progress bar on a terminal; disabled (``.disable`` True) when not ``enabled`` or not a terminal."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, disable=None if enabled else True, desc="pre-train", unit="step",
                dynamic_ncols=True, file=sys.stdout)


def run_probe(encoder: HiTRS, store, args: argparse.Namespace, cfg: HiTRSConfig, device) -> dict[str, Any]:
    """Linear probe with ``probe_fraction`` of the train labels: pre-trained vs random init.

    One probe on 132 labels is noisy (a few points either way), so it is repeated ``probe_repeats``
    times: label subset ``k`` is drawn with seed ``seed + k`` and probes the pre-trained encoder and a
    random-init encoder drawn with seed ``seed + 1 + k``. Reported: every value, mean and s.d."""
    from hitrs_fast.data.loader import build_loader
    from hitrs_fast.eval.subsets import class_balanced_subset
    from hitrs_fast.training.probe import chance_level, extract_features, linear_probe

    train_idx = store.split_indices(args.split)
    test_idx = store.split_indices(args.test_split)
    subsets = [train_idx[class_balanced_subset(store.labels[train_idx], args.probe_fraction, seed=args.seed + k)]
               for k in range(args.probe_repeats)]
    num_classes = int(store.labels.max()) + 1

    def features(enc: HiTRS, indices: np.ndarray) -> dict[int, torch.Tensor]:
        """Pooled features by store index (grouped by length: less padding, same features)."""
        ld = build_loader(store, batch_size=64, indices=indices, shuffle=False, device=device,
                          group_by_length=LENGTH_GROUPING)
        feats, _, order = extract_features(enc, ld, device)
        return dict(zip(order.tolist(), feats, strict=True))

    def probe(feats: dict[int, torch.Tensor], labelled: np.ndarray) -> float:
        def xy(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.stack([feats[int(i)] for i in idx]), torch.from_numpy(store.labels[idx].astype(np.int64))

        result = linear_probe(*xy(labelled), *xy(test_idx), num_classes, seed=args.seed)
        return result["test_top1"]

    pre = features(encoder, np.unique(np.concatenate(subsets + [test_idx])))
    scores: dict[str, list[float]] = {"pretrained": [], "random_init": []}
    for k, labelled in enumerate(subsets):
        scores["pretrained"].append(probe(pre, labelled))
        torch.manual_seed(args.seed + 1 + k)
        random_encoder = HiTRS(cfg, backend=args.backend).to(device)
        scores["random_init"].append(probe(features(random_encoder, np.concatenate([labelled, test_idx])), labelled))
    results: dict[str, Any] = {"train_samples": len(subsets[0]), "test_samples": len(test_idx),
                               "repeats": args.probe_repeats, "chance": chance_level(store.labels[test_idx])}
    for name, values in scores.items():
        results[name] = {"test_top1": float(np.mean(values)), "std": float(np.std(values)), "runs": values}
    print(f"\nlinear probe, {args.probe_fraction:.0%} of the train labels ({len(subsets[0])} samples) x "
          f"{args.probe_repeats} draws, test split ({len(test_idx)} samples), chance {results['chance']:.3f}")
    print(f"  {'encoder':<14}{'test top-1':>12}{'s.d.':>8}   runs")
    for name in scores:
        r = results[name]
        print(f"  {name:<14}{r['test_top1']:>12.3f}{r['std']:>8.3f}   {' '.join(f'{v:.3f}' for v in r['runs'])}")
    return results


def report(result: dict[str, Any]) -> None:
    """The last lines of a finished run: speed and the probe, pre-trained vs random init."""
    if "probe" not in result:
        return
    p = result["probe"]
    pre, rnd = p["pretrained"], p["random_init"]
    print(f"done: {result['seconds']:.0f} s of training at {result['samples_per_s']:.1f} samples/s, probe "
          f"{p['seconds']:.0f} s; probe test top-1 "
          f"(mean of {p['repeats']}): pre-trained {pre['test_top1']:.3f} ± {pre['std']:.3f} vs random init "
          f"{rnd['test_top1']:.3f} ± {rnd['std']:.3f}")
    gain, margin = pre["test_top1"] - rnd["test_top1"], 2 * max(pre["std"], rnd["std"])
    print(f"pre-trained minus random init: {gain:+.3f}, {'more' if gain > margin else 'not more'} than twice the "
          f"larger s.d. ({margin:.3f})")


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Command line; returns the exit status: 2 with one line on a bad argument (before DeepSpeed starts),
    130 / 143 with one line naming the last checkpoint and the resume command on SIGINT / SIGTERM."""
    return run_cli(build_parser(prog), lambda args: report(train(args)), argv)


__all__ = ["main", "build_parser", "resolve", "UsageError"]

if __name__ == "__main__":  # python -m hitrs_fast.training.pretrain, deepspeed --module hitrs_fast.training.pretrain
    sys.exit(main())
