"""Produces ``docs/results.md``: what pre-training at each level of Hi-TRS brings to every downstream task
on the synthetic sets, in the layout of the paper's Table 4 (random init, F, F+C, F+C+V), CPU only.

    python training/results.py            # about 35 min per seed on 1 busy CPU core; writes docs/results.md

For each seed (0, 1, 2 by default):

1. pre-train the ``tiny`` preset three times on the synthetic trimmed set of that seed, with the pretext
   tasks of the frame level only (F: masked joint prediction), of the frame and clip levels (F+C: + frame
   order) and of all three levels (F+C+V: + clip order and next-clip InfoNCE; the preset's default, so
   this run is ``make pretrain --seed S``): ``deepspeed training/pretrain.py --seed S [--set ...]`` in a
   subprocess, each with its 10 %-label linear probe; reused when ``RUN_DIR/pretrain-<level>-seed<s>``
   already holds a finished run of the same command (so seeds may run as parallel invocations with one
   ``--seeds S`` each and one last invocation gathers them);
2. with each of the three encoders and a random-init encoder, run
   - recognition, linear evaluation (frozen encoder) on the same trimmed set,
   - recognition, semi-supervised fine-tuning on a 10 % class-balanced subset,
   - detection on the synthetic untrimmed set (frozen encoder + per-frame linear head; protocol A),
   - motion prediction on the synthetic long set, encoder fine-tuned with the GRU decoder, and with the
     encoder frozen (a probe of what the features hold);
   plus, once per seed, motion prediction with the encoder's input to the decoder zeroed (the ablation:
   what the decoder does without the encoder) and the zero-velocity baseline;
   all with the small recipes in ``training/configs/downstream/*_synthetic.json``;
3. write mean ± sample s.d. over the seeds, the command, the device, versions, the date and timings.

Every number in the page is read from the runs' ``summary.json`` / ``probe.json`` files under ``--run-dir``.
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

from hitrs_fast.config import HiTRSConfig
from hitrs_fast.data.synthetic import synthetic_cache_path
from hitrs_fast.training import detect, predict_motion, recognize
from hitrs_fast.training.run import atomic_write_json

REPO = Path(__file__).resolve().parents[1]
TASKS = {"recognize": recognize.main, "detect": detect.main, "predict_motion": predict_motion.main}
RANDOM = "random init"
# Pre-trained columns: the pretext levels switched on (the tiny preset trains all three by default).
LEVELS: dict[str, dict[str, bool]] = {
    "F": {"use_clip_tasks": False, "use_video_tasks": False},
    "F+C": {"use_video_tasks": False},
    "F+C+V": {},
}
COLUMNS = (RANDOM, *LEVELS)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python training/results.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--pretrain-steps", type=int, default=None, help="default: the main job's (pretrain.py's)")
    p.add_argument("--per-class", type=int, default=150,
                   help="samples per class of the synthetic trimmed set (default: the main job's 150)")
    p.add_argument("--untrimmed-sequences", type=int, default=24)
    p.add_argument("--long-sequences", type=int, default=18)
    p.add_argument("--run-dir", default="runs/results")
    p.add_argument("--output", default=str(REPO / "docs" / "results.md"))
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads of every run")
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


def pretrain(level: str, seed: int, args: argparse.Namespace, root: Path) -> tuple[Path, dict[str, Any], float]:
    """One pre-training run (DeepSpeed, in a subprocess) with its probe; returns (encoder.pt, probe, seconds)."""
    run = root / f"pretrain-{level}-seed{seed}"
    options = ["--seed", str(seed), "--synthetic-per-class", str(args.per_class), "--cache-dir", str(root / "data")]
    options += ["--steps", str(args.pretrain_steps)] if args.pretrain_steps else []
    for field, value in LEVELS[level].items():
        options += ["--set", f"{field}={str(value).lower()}"]
    done = run / "results-run.json"  # the options of the finished run and its wall time
    if (run / "probe.json").exists() and done.exists() and json.loads(done.read_text())["options"] == options:
        return run / "encoder.pt", json.loads((run / "probe.json").read_text()), json.loads(done.read_text())["seconds"]
    if run.exists():
        shutil.rmtree(run)
    launcher = shutil.which("deepspeed") or str(Path(sys.executable).with_name("deepspeed"))
    with socket.socket() as sock:  # a free rendezvous port: other DeepSpeed jobs may hold the default 29500
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [launcher, "--master_port", str(port), str(REPO / "training" / "pretrain.py"), *options,
           "--run-dir", str(run), "--ckpt-every", "0"]
    print("+", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    seconds = time.perf_counter() - t0
    atomic_write_json(done, {"options": options, "seconds": seconds})
    return run / "encoder.pt", json.loads((run / "probe.json").read_text()), seconds


def mean_std(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    a = np.asarray(values, dtype=np.float64) * scale
    if a.size == 1:  # one seed: a single value, no s.d. to show
        return f"{a[0]:.{digits}f}"
    return f"{a.mean():.{digits}f} ± {a.std(ddof=1):.{digits}f}"


def _tasks_of(level: str) -> str:
    """The pretext tasks (and weights) a column's pre-training trains."""
    cfg = HiTRSConfig.preset("tiny", **LEVELS[level])
    tasks = [(cfg.use_frame_tasks, f"masked joints x{cfg.weight_pose:g}"),
             (cfg.use_clip_tasks, f"frame order x{cfg.weight_clip_order:g}"),
             (cfg.use_video_tasks, f"clip order x{cfg.weight_video_order:g}"),
             (cfg.use_video_tasks, f"next-clip InfoNCE x{cfg.weight_nce:g}")]
    return ", ".join(label for on, label in tasks if on)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    root = Path(args.run_dir)
    root.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    rows: dict[str, dict[str, list[float]]] = {}  # metric -> column -> one value per seed
    timings: dict[str, float] = {}
    per_frame: dict[str, list[list[float]]] = {}

    def add(key: str, column: str, value: float) -> None:
        rows.setdefault(key, {}).setdefault(column, []).append(float(value))

    def timed(key: str, seconds: float) -> None:
        timings[key] = timings.get(key, 0.0) + seconds

    for seed in args.seeds:
        encoders = {RANDOM: "random"}
        for level in LEVELS:
            enc, probe, secs = pretrain(level, seed, args, root)
            timed("pre-training (with its probe)", secs)
            encoders[level] = str(enc)
            add("probe", level, probe["pretrained"]["test_top1"])
            if level == "F+C+V":  # every level's run probes the same random-init encoders (seeds seed + 1 + k)
                add("probe", RANDOM, probe["random_init"]["test_top1"])
        trimmed = synthetic_cache_path(root / "data", "trimmed", seed, args.per_class)  # pre-training's set
        common = ["--cache-dir", str(root / "data"), "--seed", str(seed), "--threads", str(args.threads),
                  "--device", args.device]
        motion = ["--synthetic-sequences", str(args.long_sequences), "--data-seed", str(seed), *common]
        for column, init in encoders.items():
            tag = column.replace(" ", "-").replace("+", "")
            base = ["--init", init, *common]
            r = _run_script("recognize", ["--data", str(trimmed), "--mode", "linear", *base],
                            root / f"s{seed}-{tag}-rec-linear")
            add("rec_linear_top1", column, r["last_epoch"]["top1"])
            timed("recognition, linear", r["wall_seconds"])
            r = _run_script("recognize", ["--data", str(trimmed), "--mode", "finetune", "--label-fraction", "0.1",
                                          *base], root / f"s{seed}-{tag}-rec-semi10")
            add("rec_semi_top1", column, r["last_epoch"]["top1"])
            timed("recognition, 10 % fine-tune", r["wall_seconds"])
            r = _run_script("detect", ["--mode", "linear", "--protocol", "A", "--synthetic-sequences",
                                       str(args.untrimmed_sequences), "--data-seed", str(seed), *base],
                            root / f"s{seed}-{tag}-detect")
            add("det_mAP_a", column, r["last_epoch"]["mAP_a"])
            add("det_mAP_v", column, r["last_epoch"]["mAP_v"])
            timed("detection", r["wall_seconds"])
            for mode in ("finetune", "linear"):
                r = _run_script("predict_motion", ["--mode", mode, "--init", init, *motion],
                                root / f"s{seed}-{tag}-motion-{mode}")
                add(f"motion_{mode}", column, r["last_epoch"]["mpjpe_mm"])
                timed(f"motion prediction ({mode})", r["wall_seconds"])
                if mode == "finetune":
                    per_frame.setdefault(column, []).append(r["last_epoch"]["per_frame_mm"])
        r = _run_script("predict_motion", ["--mode", "finetune", "--init", "random", "--ablate-encoder", *motion],
                        root / f"s{seed}-motion-ablation")
        add("motion_ablation", RANDOM, r["last_epoch"]["mpjpe_mm"])
        add("motion_zero_velocity", RANDOM, r["zero_velocity"]["mean_mm"])
        per_frame.setdefault("decoder without the encoder", []).append(r["last_epoch"]["per_frame_mm"])
        per_frame.setdefault("zero-velocity", []).append(r["zero_velocity"]["per_frame_mm"])
        timed("motion prediction (ablation)", r["wall_seconds"])
    total = time.perf_counter() - t_start
    (root / "results.json").write_text(json.dumps({"rows": rows, "timings": timings, "per_frame": per_frame,
                                                   "total_seconds": total}, indent=2))
    Path(args.output).write_text(render(args, rows, timings, per_frame, total, sys.argv[1:] if argv is None else argv))
    print(f"wrote {args.output} ({total / 60:.1f} min)")
    return 0


# (label, metric, key, scale, higher is better)
TABLE = (
    ("pre-training probe: linear, frozen encoder, 10 % labels", "top-1 %", "probe", 100.0, True),
    ("recognition, linear (frozen encoder)", "top-1 %", "rec_linear_top1", 100.0, True),
    ("recognition, 10 % semi-supervised fine-tune", "top-1 %", "rec_semi_top1", 100.0, True),
    ("detection, frozen encoder (protocol A)", "mAP_a % @0.5", "det_mAP_a", 100.0, True),
    ("detection, frozen encoder (protocol A)", "mAP_v % @0.5", "det_mAP_v", 100.0, True),
    ("motion prediction, encoder fine-tuned + GRU", "MPJPE mm", "motion_finetune", 1.0, False),
    ("motion prediction, frozen encoder + GRU", "MPJPE mm", "motion_linear", 1.0, False),
)


def verdict(pre: list[float], rnd: list[float], higher: bool) -> str:
    """``+`` when the pre-trained mean beats random init by more than the larger of the two s.d.s, ``−``
    when it loses by that much, ``=`` otherwise."""
    diff = (np.mean(pre) - np.mean(rnd)) * (1 if higher else -1)
    spread = max(np.std(pre, ddof=1), np.std(rnd, ddof=1)) if len(pre) > 1 else 0.0
    return "+" if diff > spread else ("−" if diff < -spread else "=")


def render(args, rows, timings, per_frame, total, argv) -> str:
    n = len(args.seeds)
    cmd = "python training/results.py" + ("" if not argv else " " + " ".join(argv))
    steps = args.pretrain_steps or "the main job's default number of"
    out = [
        "# Downstream results on the synthetic sets: pre-training per level (the paper's Table 4 layout)",
        "",
        "Produced by one command on CPU; every number is read from the runs' `summary.json` / `probe.json` "
        "files (nothing is typed in by hand):",
        "",
        "```",
        cmd,
        "```",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; the runs' wall times add up to "
        f"{sum(timings.values()) / 60:.1f} min (this invocation: {total / 60:.1f} min; finished runs are reused) on "
        f"{args.threads} torch threads per run "
        f"(`{platform.processor() or platform.machine()}`, {os.cpu_count()} logical CPUs visible; the machine was "
        "shared with other jobs, so times are upper bounds).",
        f"- Device: CPU (`--device {args.device}`). Versions: Python {platform.python_version()}, "
        f"torch {torch.__version__}, numpy {np.__version__}.",
        (f"- Seeds {args.seeds}: mean ± sample s.d. over {n} seeds." if n > 1 else
         f"- **One seed only** ({args.seeds[0]}): every cell is a single run, without an s.d.; the `+`/`−` "
         "verdicts below compare single values.")
        + " Each seed regenerates the synthetic sets, pre-trains, and seeds the random-init encoder, the heads "
        "and the data order.",
        f"- Pre-training: `tiny` preset, {steps} steps of 32 samples (`deepspeed training/pretrain.py`), synthetic "
        f"trimmed set with {args.per_class} samples per class (train/test split by subject). Columns: "
        + "; ".join(f"**{level}**: {_tasks_of(level)}" for level in LEVELS) + ".",
        "- Recipes: `training/configs/downstream/*_synthetic.json`. All results are **last-epoch** numbers.",
        "",
        "| task | metric | " + " | ".join(COLUMNS) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    for label, metric, key, scale, higher in TABLE:
        means = {c: np.mean(rows[key][c]) for c in COLUMNS if c in rows.get(key, {})}
        best = max(means, key=means.get) if higher else min(means, key=means.get)
        cells = [(f"**{mean_std(rows[key][c], scale)}**" if c == best else mean_std(rows[key][c], scale))
                 if c in means else "–" for c in COLUMNS]
        out.append(f"| {label} | {metric} | " + " | ".join(cells) + " |")
    for label, key in (("motion prediction, decoder without the encoder (ablation)", "motion_ablation"),
                       ("motion prediction, zero-velocity baseline", "motion_zero_velocity")):
        out.append(f"| {label} | MPJPE mm | {mean_std(rows[key][RANDOM])} |" + " – |" * len(LEVELS))
    out += [
        "",
        "Best mean per row in bold. Chance level of recognition: 1 / number of classes (6.25 % for 16).",
        "",
        "Pre-trained vs random init, per row (`+`: better by more than the larger of the two s.d.s, `−`: worse "
        "by that much, `=`: within it):",
        "",
        "| task | metric | " + " | ".join(LEVELS) + " |",
        "|---|---|" + "---|" * len(LEVELS),
    ]
    for label, metric, key, _, higher in TABLE:
        out.append(f"| {label} | {metric} | "
                   + " | ".join(verdict(rows[key][c], rows[key][RANDOM], higher) for c in LEVELS) + " |")
    frames = len(next(iter(per_frame.values()))[0])
    out += [
        "",
        f"Motion prediction, MPJPE (mm) per predicted frame (1..{frames} at 30 fps), encoder fine-tuned, mean over "
        "seeds:",
        "",
        "| frame | " + " | ".join(str(i + 1) for i in range(frames)) + " |",
        "|---|" + "---|" * frames,
    ]
    for name, values in per_frame.items():
        out.append(f"| {name} | " + " | ".join(f"{v:.1f}" for v in np.mean(values, axis=0)) + " |")
    out += ["", "Wall time per stage (all seeds and columns):", "", "| stage | minutes |", "|---|---|"]
    out += [f"| {k} | {v / 60:.1f} |" for k, v in timings.items()]
    out += [
        "",
        "Notes:",
        "",
        "- These are tiny models trained for minutes on synthetic data: they test that every pipeline runs end "
        "to end and show the direction of each level's effect at this scale, not the paper's numbers.",
        "- The probe row is the main job's own evaluation (`make pretrain` prints it): a linear probe on 10 % of "
        "the train labels, averaged over 3 label draws (and 3 random-init encoders for the random column).",
        "- Detection and the motion *frozen* row use a frozen encoder (features computed once); motion "
        "prediction proper fine-tunes the encoder with the decoder. Of the observed frames the decoder reads only "
        "the encoder's sequence features (the preset's `feature_readout`) and the last pose, which it adds its "
        "predicted motion to, so the ablation row (the features zeroed) is what the decoder learns without the "
        "encoder.",
        "- A run's outcome depends on the order of its float sums, so on the torch thread count (`--threads`): "
        "the probe row's F+C+V cell is `make pretrain --seed S` run with that many threads, and a run with "
        "another count draws the same data and masks but ends elsewhere (docs/training.md).",
        "- Detection segments come from the majority-filter post-processing of the recipe; ground truth is the "
        "runs of the per-frame labels.",
    ]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
