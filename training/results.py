"""Produces ``docs/results.md``: pre-trained vs random-init Hi-TRS on the synthetic sets, CPU only.

    python training/results.py            # < 1 h on 2 CPU cores; writes docs/results.md

For each seed (0, 1, 2 by default):

1. pre-train the ``tiny`` preset on the synthetic trimmed set of that seed
   (``deepspeed training/pretrain.py --probe off --steps N ...`` in a subprocess; reused when
   ``RUN_DIR/pretrain-seed<s>/encoder.pt`` already holds N steps);
2. with the pre-trained encoder and with a random-init encoder of the same seed, run
   - recognition, linear evaluation (frozen encoder) on the same trimmed set,
   - recognition, semi-supervised fine-tuning on a 10 % class-balanced subset,
   - detection on the synthetic untrimmed set (frozen encoder + per-frame linear head; protocol A
     mAP_a / mAP_v and protocol B mAP at 0.5),
   - motion prediction on the synthetic long set (frozen encoder + GRU decoder; MPJPE vs zero-velocity),
   all with the small recipes in ``training/configs/downstream/*_synthetic.json``;
3. write mean ± sample std over the seeds, the command, the device, versions, the date and timings.

Every number in the table is read from the runs' ``summary.json`` files under ``--run-dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hitrs_fast.data.synthetic import synthetic_cache_path
from hitrs_fast.training import detect, predict_motion, recognize
from hitrs_fast.training.run import atomic_write_json

REPO = Path(__file__).resolve().parents[1]
TASKS = {"recognize": recognize.main, "detect": detect.main, "predict_motion": predict_motion.main}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python training/results.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--pretrain-steps", type=int, default=60)
    p.add_argument("--per-class", type=int, default=60, help="samples per class of the synthetic trimmed set")
    p.add_argument("--untrimmed-sequences", type=int, default=24)
    p.add_argument("--long-sequences", type=int, default=18)
    p.add_argument("--run-dir", default="runs/results")
    p.add_argument("--output", default=str(REPO / "docs" / "results.md"))
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads of the downstream runs")
    p.add_argument("--device", default="cpu")
    return p


def _run_script(name: str, argv: list[str], run_dir: Path) -> dict[str, Any]:
    """``training/<name>.py ARGV --run-dir RUN_DIR``, run in this process."""
    summary = run_dir / "summary.json"
    argv_file = run_dir / "argv.json"
    if summary.exists() and argv_file.exists() and json.loads(argv_file.read_text()) == argv:
        return json.loads(summary.read_text())  # an identical finished run (re-invocation after an interruption)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    t0 = time.perf_counter()
    rc = TASKS[name](argv + ["--run-dir", str(run_dir), "--no-progress"])
    if rc != 0:
        raise SystemExit(f"results.py: {name}.py {' '.join(argv)} failed with exit code {rc}")
    atomic_write_json(argv_file, argv)
    out = json.loads(summary.read_text())
    out["wall_seconds"] = time.perf_counter() - t0
    atomic_write_json(summary, out)
    return out


def pretrain(seed: int, args: argparse.Namespace, root: Path) -> tuple[Path, float]:
    run = root / f"pretrain-seed{seed}"
    enc = run / "encoder.pt"
    if enc.exists() and torch.load(enc, map_location="cpu", weights_only=True).get("step") == args.pretrain_steps:
        return enc, 0.0
    launcher = shutil.which("deepspeed") or str(Path(sys.executable).with_name("deepspeed"))
    with socket.socket() as sock:  # a free rendezvous port: other DeepSpeed jobs may hold the default 29500
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [launcher, "--master_port", str(port), str(REPO / "training" / "pretrain.py"), "--probe", "off",
           "--steps", str(args.pretrain_steps),
           "--seed", str(seed), "--synthetic-per-class", str(args.per_class), "--cache-dir", str(root / "data"),
           "--run-dir", str(run), "--log-every", "10", "--ckpt-every", "0"]
    print("+", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    return enc, time.perf_counter() - t0


def mean_std(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    a = np.asarray(values, dtype=np.float64) * scale
    std = a.std(ddof=1) if a.size > 1 else 0.0
    return f"{a.mean():.{digits}f} ± {std:.{digits}f}"


def _preset_summary(name: str) -> str:
    """The preset fields that change what pre-training learns, so the page says which recipe it measured."""
    from hitrs_fast.config import HiTRSConfig

    cfg = HiTRSConfig.preset(name)
    tasks = [(cfg.use_frame_tasks, f"masked pose x{cfg.weight_pose:g}"),
             (cfg.use_clip_tasks, f"frame order x{cfg.weight_clip_order:g}"),
             (cfg.use_video_tasks, f"clip order x{cfg.weight_video_order:g}, InfoNCE x{cfg.weight_nce:g}")]
    return (f"dropout {cfg.dropout}, centering {cfg.centering}, pretext tasks: "
            + ", ".join(label for on, label in tasks if on))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    root = Path(args.run_dir)
    root.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    rows: dict[str, dict[str, list[float]]] = {}
    timings: dict[str, float] = {}
    raw: dict[str, Any] = {}

    def add(init: str, key: str, value: float) -> None:
        rows.setdefault(init, {}).setdefault(key, []).append(float(value))

    def timed(key: str, seconds: float) -> None:
        timings[key] = timings.get(key, 0.0) + seconds

    for seed in args.seeds:
        enc, secs = pretrain(seed, args, root)
        timed("pre-training", secs)
        trimmed = synthetic_cache_path(root / "data", "trimmed", seed, args.per_class)  # pre-training's set
        common = ["--cache-dir", str(root / "data"), "--seed", str(seed), "--threads", str(args.threads),
                  "--device", args.device]
        for init, init_arg in (("pre-trained", str(enc)), ("random init", "random")):
            tag = "pre" if init == "pre-trained" else "rand"
            base = ["--init", init_arg, *common]
            r = _run_script("recognize", ["--data", str(trimmed), "--mode", "linear", *base],
                            root / f"s{seed}-{tag}-rec-linear")
            add(init, "rec_linear_top1", r["last_epoch"]["top1"])
            add(init, "rec_linear_top5", r["last_epoch"]["top5"])
            timed("recognition, linear", r["wall_seconds"])
            r = _run_script("recognize", ["--data", str(trimmed), "--mode", "finetune", "--label-fraction", "0.1",
                                          *base], root / f"s{seed}-{tag}-rec-semi10")
            add(init, "rec_semi_top1", r["last_epoch"]["top1"])
            add(init, "rec_semi_best_top1", r["best_epoch_on_test"]["top1"])
            timed("recognition, 10 % fine-tune", r["wall_seconds"])
            r = _run_script("detect", ["--mode", "linear", "--synthetic-sequences", str(args.untrimmed_sequences),
                                       "--data-seed", str(seed), *base], root / f"s{seed}-{tag}-detect")
            for key in ("mAP_a", "mAP_v", "mAP_b", "frame_acc"):
                add(init, f"det_{key}", r["last_epoch"][key])
            timed("detection", r["wall_seconds"])
            r = _run_script("predict_motion", ["--mode", "linear", "--synthetic-sequences",
                                               str(args.long_sequences), "--data-seed", str(seed), *base],
                            root / f"s{seed}-{tag}-motion")
            add(init, "motion_mpjpe", r["last_epoch"]["mpjpe_mm"])
            add(init, "motion_zero_velocity", r["zero_velocity"]["mean_mm"])
            raw.setdefault(init, {}).setdefault("motion_per_frame", []).append(r["last_epoch"]["per_frame_mm"])
            raw.setdefault("zero_velocity_per_frame", []).append(r["zero_velocity"]["per_frame_mm"])
            timed("motion prediction", r["wall_seconds"])
    total = time.perf_counter() - t_start
    (root / "results.json").write_text(json.dumps({"rows": rows, "timings": timings, "raw": raw,
                                                   "total_seconds": total}, indent=2))
    Path(args.output).write_text(render(args, rows, timings, raw, total, argv))
    print(f"wrote {args.output} ({total / 60:.1f} min)")
    return 0


def render(args, rows, timings, raw, total, argv) -> str:
    pre, rnd = rows["pre-trained"], rows["random init"]
    n = len(args.seeds)
    cmd = "python training/results.py" + ("" if not argv else " " + " ".join(argv))

    def line(label: str, key: str, scale: float = 100.0, digits: int = 1, better: str = "higher") -> str:
        diff = np.mean(pre[key]) - np.mean(rnd[key])
        spread = max(np.std(pre[key], ddof=1), np.std(rnd[key], ddof=1)) if n > 1 else 0.0
        wins = diff > 0 if better == "higher" else diff < 0
        verdict = "no clear difference" if abs(diff) <= spread else ("pre-trained" if wins else "random init")
        return (f"| {label} | {mean_std(pre[key], scale, digits)} | {mean_std(rnd[key], scale, digits)} | "
                f"{verdict} |")

    zero = [v for v in pre["motion_zero_velocity"]]
    per_frame_pre = np.mean(raw["pre-trained"]["motion_per_frame"], axis=0)
    per_frame_rnd = np.mean(raw["random init"]["motion_per_frame"], axis=0)
    per_frame_zero = np.mean(raw["zero_velocity_per_frame"], axis=0)
    out = [
        "# Downstream results on the synthetic sets (pre-trained vs random init)",
        "",
        "Produced by one command on CPU; every number is read from the runs' `summary.json` "
        "files (nothing is typed in by hand):",
        "",
        "```",
        cmd,
        "```",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; total wall time "
        f"{total / 60:.1f} min on {torch.get_num_threads()} torch threads "
        f"(`{platform.processor() or platform.machine()}`, {os.cpu_count()} logical CPUs visible; the machine was "
        "shared with other jobs, so times are upper bounds).",
        f"- Device: CPU (`--device {args.device}`). Versions: Python {platform.python_version()}, "
        f"torch {torch.__version__}, numpy {np.__version__}.",
        f"- Seeds {args.seeds}: mean ± sample std over {n} seeds. Each seed regenerates the synthetic sets, "
        "pre-trains, and seeds the random-init encoder, the heads and the data order.",
        f"- Pre-training: `tiny` preset ({_preset_summary('tiny')}), {args.pretrain_steps} steps of 32 samples "
        f"(`deepspeed training/pretrain.py --probe off`), synthetic trimmed set with {args.per_class} samples "
        "per class (12 classes, train/test split by subject).",
        "- Recipes: `training/configs/downstream/*_synthetic.json`. All results are **last-epoch** numbers "
        "unless labelled *best epoch* (chosen on the test split, for reference only).",
        "",
        "| task | metric | pre-trained | random init | better |",
        "|---|---|---|---|---|",
    ]
    table = [
        ("recognition, linear (frozen encoder)", "top-1 %", "rec_linear_top1", 100.0, 1, "higher"),
        ("recognition, linear (frozen encoder)", "top-5 %", "rec_linear_top5", 100.0, 1, "higher"),
        ("recognition, 10 % semi-supervised fine-tune", "top-1 %", "rec_semi_top1", 100.0, 1, "higher"),
        ("recognition, 10 % semi-supervised fine-tune", "top-1 % (best epoch)", "rec_semi_best_top1", 100.0, 1,
         "higher"),
        ("detection, frozen encoder (protocol A)", "mAP_a % @0.5", "det_mAP_a", 100.0, 1, "higher"),
        ("detection, frozen encoder (protocol A)", "mAP_v % @0.5", "det_mAP_v", 100.0, 1, "higher"),
        ("detection, frozen encoder (protocol B)", "mAP % @0.5 (VOC)", "det_mAP_b", 100.0, 1, "higher"),
        ("detection, frozen encoder", "frame accuracy %", "det_frame_acc", 100.0, 1, "higher"),
        ("motion prediction, frozen encoder + GRU", "MPJPE mm (12 frames)", "motion_mpjpe", 1.0, 1, "lower"),
    ]
    for task, metric, key, scale, digits, better in table:
        row = line(task, key, scale, digits, better)
        out.append(row.replace(f"| {task} |", f"| {task} | {metric} |", 1))
    out += [
        f"| motion prediction, zero-velocity baseline | MPJPE mm (12 frames) | {mean_std(zero)} | "
        f"{mean_std(rnd['motion_zero_velocity'])} | – |",
        "",
        "Chance level of recognition is 8.3 % top-1 (12 balanced classes).",
        "",
        "Motion prediction, MPJPE (mm) per predicted frame (1..12 = 33..400 ms), mean over seeds:",
        "",
        "| frame | " + " | ".join(str(i + 1) for i in range(len(per_frame_pre))) + " |",
        "|---|" + "---|" * len(per_frame_pre),
        "| pre-trained | " + " | ".join(f"{v:.1f}" for v in per_frame_pre) + " |",
        "| random init | " + " | ".join(f"{v:.1f}" for v in per_frame_rnd) + " |",
        "| zero-velocity | " + " | ".join(f"{v:.1f}" for v in per_frame_zero) + " |",
        "",
        "Wall time per stage (all seeds, both inits):",
        "",
        "| stage | minutes |",
        "|---|---|",
    ]
    out += [f"| {k} | {v / 60:.1f} |" for k, v in timings.items()]
    out += [
        "",
        "Notes:",
        "",
        "- These are tiny models trained for minutes on synthetic data: they test that every pipeline runs end "
        "to end and show the direction of the pre-training effect at this scale, not the paper's numbers.",
        "- *better*: the init with the better mean, or *no clear difference* when the means differ by no more "
        "than the larger of the two stds.",
        "- Detection and motion prediction use a frozen encoder (features computed once), which isolates the "
        "representation and keeps the run within the CPU budget; fine-tuning them works with `--mode finetune`.",
        "- Detection segments come from the majority-filter post-processing (`smooth_window` 9, `min_length` 15); "
        "ground truth is the runs of the per-frame labels.",
        "",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
