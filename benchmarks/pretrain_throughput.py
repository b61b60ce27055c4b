"""Pre-training throughput of the official preset in bf16: samples/s and MFU, per model backend.

    python -m benchmarks.pretrain_throughput [--backends triton,torch] [--path auto|deepspeed|plain] [--smoke]

Two paths, and every row says which one ran:

- ``deepspeed``: when DeepSpeed imports and its launcher is on PATH, ``deepspeed
  training/pretrain.py`` on the synthetic motion set (``zero1_bf16.json``, micro-batch 64,
  no accumulation, augmentation off, no probe, no intermediate checkpoints). The rate is
  taken between the first and the last logged step, so start-up, compilation and the
  final checkpoint are excluded. Samples have their natural lengths (40-120 frames), so
  the MFU uses the mean model FLOPs over the training split's sequences (an estimate: the
  run does not log which samples each step drew).
- ``plain``: the same step (``HiTRSForPretraining`` forward + backward + AdamW) in a plain
  torch loop on one fixed micro-batch of 64 x 100-frame samples, bf16 autocast with fp32
  parameters (``benchmarks/pretrain_step.py``); a few warm-up steps (autotuning,
  allocator) are not timed, then as many steps as the time budget allows, synchronised
  at both ends. MFU uses the model FLOPs at T = 100 (57.3 GFLOP per sample).

MFU = model FLOPs/s / dense bf16 peak of the GPU (989 TFLOP/s for H100 SXM and H200;
``HITRS_BENCH_PEAK_TFLOPS`` overrides). In ``--smoke`` mode (CPU, tiny preset, a few
steps, Triton through the interpreter) rows only prove the path works: no speed result.

Exit status: 0 when every requested backend produced a row, 1 otherwise (the reason is
printed and recorded), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from benchmarks.common import provenance, record, skip  # noqa: E402
from benchmarks.pretrain_step import (  # noqa: E402
    IMPLS_BY_NAME,
    build,
    make_batch,
    make_step,
    peak_bf16_flops,
    training_flops,
)
from hitrs_fast import HiTRSConfig  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("triton", "torch")


def deepspeed_launcher() -> tuple[str | None, str]:
    """The ``deepspeed`` launcher when DeepSpeed imports, else (None, why not)."""
    try:
        import deepspeed  # noqa: F401
    except Exception as exc:  # missing, or a wheel built for another torch / CUDA
        return None, f"deepspeed does not import ({type(exc).__name__}: {exc})"
    launcher = shutil.which("deepspeed", path=os.path.dirname(sys.executable)) or shutil.which("deepspeed")
    if launcher is None:
        return None, "deepspeed imports but its launcher is not on PATH"
    return launcher, "deepspeed imports"


def _result_row(path: str, backend: str, preset: str, samples_per_s: float, flops_per_sample: float,
                smoke: bool, **extra) -> dict:
    peak = None if smoke else peak_bf16_flops(provenance()["device"])
    return {"op": "pretrain_throughput", "peer": backend, "path": path, "preset": preset,
            "samples_per_s": None if smoke else samples_per_s,
            "model_tflops": None if smoke else flops_per_sample * samples_per_s / 1e12,
            "flops_per_sample": flops_per_sample,
            "peak_bf16_tflops": None if peak is None else peak / 1e12,
            "mfu": None if smoke or peak is None else flops_per_sample * samples_per_s / peak,
            "smoke": smoke, "smoke_samples_per_s": samples_per_s if smoke else None, **extra}


def plain_loop(backend: str, *, preset: str, batch: int, frames: int, warmup_steps: int, max_steps: int,
               budget_s: float, bf16: bool, device: str, smoke: bool, compiled: bool = False) -> dict:
    impl = IMPLS_BY_NAME[f"{backend}+compile" if compiled else backend]
    model, opt, forward = build(preset, impl, device)
    x, lengths = make_batch(batch, frames, device)
    step = make_step(forward, opt, x, lengths, bf16, impl)
    t_start = time.perf_counter()
    for i in range(warmup_steps):
        out = step(i)
    if not torch.isfinite(out["loss"]):
        raise RuntimeError(f"{backend}: non-finite loss {float(out['loss'])} after warm-up")
    warmup_s = time.perf_counter() - t_start
    if device == "cuda":
        torch.cuda.synchronize()
    steps, t0 = 0, time.perf_counter()
    while steps < max_steps and (steps < 3 or time.perf_counter() - t0 < budget_s):  # >= 3 unless capped
        out = step(warmup_steps + steps)
        steps += 1
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    if not torch.isfinite(out["loss"]):
        raise RuntimeError(f"{backend}: non-finite loss {float(out['loss'])} after {steps} timed steps")
    cfg = HiTRSConfig.preset(preset)
    return _result_row("plain torch loop", backend, preset, batch * steps / elapsed, training_flops(frames, cfg),
                       smoke, precision="bf16 autocast, fp32 parameters" if bf16 else "fp32",
                       micro_batch=batch, frames=frames, timed_steps=steps, warmup_steps=warmup_steps,
                       compile_mode=impl.compile_mode or "eager",
                       warmup_s=warmup_s, seconds=elapsed,
                       mfu_basis=f"model FLOPs at T = {frames} for every sample")


def _steady_rate(metrics: Path, samples_per_step: int) -> tuple[float, int]:
    """Samples/s between the first and the last logged step (each row logs the cumulative rate)."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "samples_per_s" in r]
    if len(rows) < 2:
        raise RuntimeError(f"{metrics}: need >= 2 logged steps to exclude start-up, got {len(rows)}")
    first, last = rows[0], rows[-1]
    t = [r["step"] * samples_per_step / r["samples_per_s"] for r in (first, last)]
    return (last["step"] - first["step"]) * samples_per_step / (t[1] - t[0]), last["step"] - first["step"]


def _mean_split_flops(data: Path, cfg: HiTRSConfig, min_length: int) -> float:
    """Mean model FLOPs per training sequence of the store's train split (two-body samples count twice)."""
    from hitrs_fast.data.store import SkeletonStore

    store = SkeletonStore(data)
    idx = store.split_indices("train")
    lengths, bodies = store.lengths[idx], store.num_bodies[idx].astype(int).clip(min=1)
    keep = lengths >= min_length
    flops = sum(int(b) * training_flops(int(t), cfg) for t, b in zip(lengths[keep], bodies[keep], strict=True))
    return flops / int(bodies[keep].sum())


def deepspeed_run(backend: str, launcher: str, *, preset: str, micro_batch: int, steps: int, log_every: int,
                  per_class: int, work: Path, smoke: bool, compile_choice: str = "auto",
                  seconds: float | None = None) -> dict:
    from hitrs_fast.data.loader import PRETRAIN_MIN_LENGTH

    run_dir = work / f"deepspeed-{backend}"
    ds_config = "cpu_fp32.json" if smoke else "zero1_bf16.json"
    cmd = [launcher, "--num_gpus", "1", "--master_port", str(29500 + os.getpid() % 1000),
           str(ROOT / "training" / "pretrain.py"), "--preset", preset, "--backend", backend, "--ds-config", ds_config,
           "--micro-batch", str(micro_batch), "--grad-accum", "1", "--steps", str(steps),
           "--log-every", str(log_every), "--ckpt-every", "0", "--probe", "off", "--augment", "none",
           "--run-dir", str(run_dir), "--cache-dir", str(work / "data"), "--synthetic-per-class", str(per_class),
           "--compile", compile_choice, *(["--max-seconds-this-run", str(seconds)] if seconds else [])]
    print("+", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"deepspeed training/pretrain.py --backend {backend} exited with {proc.returncode}")
    rate, timed_steps = _steady_rate(run_dir / "metrics.jsonl", micro_batch)
    config = json.loads((run_dir / "config.json").read_text())
    cfg = HiTRSConfig.from_dict(config["model"])
    flops = _mean_split_flops(Path(config["data"]), cfg, max(PRETRAIN_MIN_LENGTH, cfg.min_pretrain_frames))
    return _result_row("deepspeed training/pretrain.py", backend, preset, rate, flops, smoke,
                       precision="DeepSpeed bf16 (ZeRO 1)" if not smoke else "fp32 (cpu_fp32.json)",
                       micro_batch=micro_batch, timed_steps=timed_steps, ds_config=ds_config,
                       compile_mode=config.get("compile_mode") if config.get("compile") else "eager",
                       length_buckets=config.get("length_buckets"),
                       mfu_basis="mean model FLOPs over the train split's sequences (estimate)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default="triton,torch", help="comma-separated model backends (default: triton,torch)")
    p.add_argument("--path", default="auto", choices=["auto", "deepspeed", "deepspeed-or-skip", "plain"],
                   help="auto: deepspeed when it imports, else the plain loop; deepspeed-or-skip: the DeepSpeed run "
                   "only, recorded as skipped (with the reason) where DeepSpeed does not import")
    p.add_argument("--seconds", type=float, default=None,
                   help="timed seconds of training per backend (DeepSpeed: --max-seconds-this-run; plain loop: the "
                   "budget)")
    p.add_argument("--smoke", action="store_true", help="CPU smoke: tiny preset, a few steps, no speed result")
    p.add_argument("--budget", type=float, default=None, help="seconds of timed steps per backend (plain loop)")
    p.add_argument("--work-dir", type=Path, default=None, help="where the DeepSpeed runs write (default: a temp dir)")
    p.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                   help="torch.compile the step (auto: on CUDA, as pre-training does)")
    args = p.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    bad = [b for b in backends if b not in BACKENDS]
    if bad or not backends:
        print(f"--backends: expected a comma-separated subset of {BACKENDS}, got {args.backends!r}", file=sys.stderr)
        return 2
    smoke = args.smoke
    if not smoke and not torch.cuda.is_available():
        print("pretrain_throughput: no CUDA device; pass --smoke for the CPU path check", file=sys.stderr)
        return 2
    device = "cuda" if torch.cuda.is_available() and not smoke else "cpu"
    preset = "tiny" if smoke else "official"
    launcher, why = deepspeed_launcher() if args.path != "plain" else (None, "--path plain")
    if args.path == "deepspeed" and launcher is None:
        print(f"--path deepspeed: {why}", file=sys.stderr)
        return 2
    if args.path == "deepspeed-or-skip" and launcher is None:
        for backend in backends:
            skip(f"pretrain_throughput/{backend} deepspeed", f"not run: {why}", op="pretrain_throughput", peer=backend)
        print(f"pre-training throughput under DeepSpeed not measured: {why}", flush=True)
        return 0
    print(f"pre-training throughput: preset {preset}, device {device}, path "
          f"{'deepspeed training/pretrain.py' if launcher else 'plain torch loop'} ({why})", flush=True)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="hitrs-pretrain-"))
    work.mkdir(parents=True, exist_ok=True)
    failed = []
    for backend in backends:
        row = None
        # Smoke: the Triton backend through the interpreter on 40-120-frame samples takes minutes a step, so
        # the DeepSpeed path is checked with the torch backend and the Triton one runs the plain loop.
        if launcher is not None and not (smoke and backend == "triton"):
            try:
                row = deepspeed_run(backend, launcher, preset=preset, micro_batch=4 if smoke else 64,
                                    steps=4 if smoke else (100_000 if args.seconds else 60),
                                    log_every=2 if smoke else 10, per_class=12 if smoke else 100, work=work,
                                    smoke=smoke, compile_choice="off" if smoke else args.compile,
                                    seconds=None if smoke else args.seconds)
            except Exception as exc:  # the failure is recorded; the plain loop still measures the step
                reason = f"deepspeed path failed ({type(exc).__name__}: {exc}); the plain loop runs instead"
                print(reason, flush=True)
                skip(f"pretrain_throughput/{backend} deepspeed", reason, op="pretrain_throughput", peer=backend)
                failed.append(f"{backend}: {reason}")
        if row is None and args.path == "deepspeed-or-skip":
            continue
        if row is None:
            try:
                row = plain_loop(backend, preset=preset, batch=1 if smoke else 64, frames=15 if smoke else 100,
                                 warmup_steps=1 if smoke else 5, max_steps=1 if smoke else 200,
                                 budget_s=next(b for b in (args.budget, args.seconds, 0.0 if smoke else 30.0)
                                               if b is not None),
                                 bf16=True, device=device, smoke=smoke,
                                 compiled=not smoke and args.compile != "off")
            except Exception as exc:
                reason = f"plain loop failed ({type(exc).__name__}: {exc})"
                print(reason, flush=True)
                skip(f"pretrain_throughput/{backend}", reason, op="pretrain_throughput", peer=backend)
                failed.append(f"{backend}: {reason}")
                continue
        row = record(None, **row)
        shown = {k: row[k] for k in ("peer", "path", "precision", "samples_per_s", "mfu", "smoke_samples_per_s")}
        print(json.dumps(shown), flush=True)
        if device == "cuda":
            torch.cuda.empty_cache()
    if failed:
        print("FAILED:\n  " + "\n  ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
