"""Turn benchmark results into markdown tables (and, for pytest-benchmark files, plots).

    python -m benchmarks.report OUT/results.json [MORE/results.json ...] --out tables.md
    python -m benchmarks.report bench.json --out docs/benchmarks-measured.md --assets docs/assets

Two inputs:

- campaign results (``benchmarks/campaign.py``'s ``results.json``; several files from one
  commit are merged, e.g. a campaign split over two commands): one table per attention
  shape and dtype, then the joint embedding, the model step and pre-training throughput,
  the skipped peers and the failures. Every table names the device, versions, commit,
  date and command. Speedup columns appear only when the kernel correctness tests of the
  campaign passed, and only for rows whose peers passed their oracle gate. A dry run's
  rows are rendered with every timing column blank: CPU timings are not speed results.
- a pytest-benchmark ``--benchmark-json`` file: rows from each benchmark's ``extra_info``
  (``benchmarks/common.record``); smoke rows are refused unless ``--allow-smoke``.

For every (op, shape, dtype, mode, batch) group the speedup compares our rows (peer
``ours`` / ``triton``) with the fastest other correct peer; the unmasked flash row is an
upper bound, never a peer.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

CAMPAIGN_SCHEMA = "hitrs_fast.campaign/1"
OURS = {"ours", "ours-resident", "ours-split", "kernel+cublas", "triton", "hitrs_fast", "hitrs_fast.triton"}
COLUMNS = ("peer", "shape", "dtype", "mode", "batch", "median_ms", "p20_ms", "p80_ms", "seq_per_s", "tflops", "gbps",
           "pct_floor", "peak_mem_mb", "speedup_vs_best_peer")
# Columns derived from a timing: blank in smoke rows.
SPEED_COLUMNS = {"median_ms", "p20_ms", "p80_ms", "seq_per_s", "tflops", "useful_tflops", "gbps", "pct_floor",
                 "speedup_vs_best_peer", "tokens_per_s", "model_gb_per_s", "pct_of_floor", "speedup_vs_eager",
                 "speedup_vs_compiled", "samples_per_s", "mfu", "model_tflops", "time_ms"}


def is_ours(peer: Any) -> bool:
    """Our rows: the kernel rows and the model-step rows of the Triton backend (``triton``, ``triton+compile``...)."""
    return peer in OURS or str(peer).startswith("triton")


def is_upper_bound(peer: Any) -> bool:
    return "unmasked" in str(peer)


def add_speedups(rows: list[dict]) -> None:
    """``speedup_vs_best_peer`` on our rows: our seq/s over the best correct masked peer's, per group."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r.get("op"), r.get("shape"), r.get("dtype"), r.get("mode"), r.get("batch"))].append(r)
    for group in groups.values():
        peers = [r for r in group if not is_ours(r.get("peer")) and r.get("tests_passed", True)
                 and r.get("seq_per_s") and not r.get("smoke") and not is_upper_bound(r.get("peer"))]
        best = max((r["seq_per_s"] for r in peers), default=None)
        for r in group:
            if is_ours(r.get("peer")) and best and r.get("seq_per_s") and r.get("tests_passed", True):
                r["speedup_vs_best_peer"] = r["seq_per_s"] / best


def fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 1e4 else f"{v:,.0f}"
    if isinstance(v, list):
        return "; ".join(str(x) for x in v)
    return str(v).replace("|", "\\|")


def cell(row: dict, col: str) -> str:
    if row.get("smoke") and col in SPEED_COLUMNS:
        return "smoke"
    return fmt(row.get(col))


HEADERS = {"median_ms": "median ms", "p20_ms": "p20 ms", "p80_ms": "p80 ms", "seq_per_s": "seq/s",
           "tflops": "TFLOP/s", "pct_floor": "% HBM floor", "peak_mem_mb": "peak MiB", "budget_s": "budget s"}


def table(rows: list[dict], columns: tuple[str, ...] = COLUMNS, headers: dict[str, str] | None = None) -> str:
    cols = [c for c in columns if any(r.get(c) is not None for r in rows)]
    headers = {**HEADERS, **(headers or {})}
    lines = ["| " + " | ".join(headers.get(c, c) for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r, c) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Campaign results
# ---------------------------------------------------------------------------------------------

def merge_campaigns(results: list[dict]) -> dict:
    """One results dict from several campaign files of the same commit (rows, skips, parts concatenated)."""
    commits = {(r.get("provenance") or {}).get("git_commit") for r in results}
    if len(commits) > 1:
        raise SystemExit(f"refusing to merge results of different commits: {sorted(map(str, commits))}")
    merged = dict(results[0])
    for key in ("rows", "skipped", "parts", "failures"):
        merged[key] = [x for r in results for x in r.get(key, [])]
    for key in ("tests", "bandwidth", "install"):
        merged[key] = next((r[key] for r in results if r.get(key)), None)
    merged["command"] = " && ".join(dict.fromkeys(r.get("command", "?") for r in results))
    merged["mode"] = "dry-run" if any(r.get("mode") == "dry-run" for r in results) else "gpu"
    merged["exit_status"] = max(int(r.get("exit_status", 0)) for r in results)
    return merged


def caption(results: dict) -> str:
    prov = results.get("provenance") or {}
    return (f"*{prov.get('device', 'unknown device')} · driver {prov.get('driver')} · CUDA {prov.get('cuda')} · "
            f"torch {prov.get('torch')} · triton {prov.get('triton')} · cuDNN {prov.get('cudnn')} · "
            f"commit `{prov.get('git_commit')}` · {results.get('started')} · `{results.get('command')}`*")


def tests_ok(results: dict) -> bool:
    return bool((results.get("tests") or {}).get("passed"))


def _attention_sections(rows: list[dict], results: dict, speedups: bool) -> list[str]:
    peer_order = ["ours", "ours-resident", "ours-split", "A0-eager", "A0c-compiled", "A1-sdpa-efficient",
                  "A2-sdpa-cudnn", "A3-sdpa-default",
                  "A4-flex-128", "A4-flex-64", "A5-flash-unmasked", "A6-xformers"]
    mode_order = {"fwd": 0, "bwd": 1, "full": 2}
    cols = ("peer", "mode", "batch", "median_ms", "p20_ms", "p80_ms", "seq_per_s", "tflops", "pct_floor",
            "peak_mem_mb", "backend_ran", *(("speedup_vs_best_peer",) if speedups else ()))
    headers = {"backend_ran": "ran", "speedup_vs_best_peer": "× best correct masked peer"}
    out = []
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r.get("shape"), r.get("dtype"))].append(r)
    for (shape, dtype), group in groups.items():
        group.sort(key=lambda r: (mode_order.get(r.get("mode"), 9), r.get("batch") or 0,
                                  peer_order.index(r["peer"]) if r.get("peer") in peer_order else 99))
        out += [f"### C-TRS attention, {shape}, {dtype}", "", caption(results), "", table(group, cols, headers), ""]
    return out


def render_campaign(results: dict) -> str:
    rows = [dict(r) for r in results.get("rows", [])]
    dry = results.get("mode") == "dry-run"
    speedups = tests_ok(results) and not dry
    if speedups:
        add_speedups(rows)
    tests = results.get("tests") or {}
    bandwidth = results.get("bandwidth") or {}
    parts = ["# hitrs_fast benchmark campaign", "", caption(results), ""]
    if dry:
        parts += ["> **Dry run (CPU smoke mode).** Every timing column reads `smoke`: the rows only prove each "
                  "part runs. Nothing here is a speed result.", ""]
    if tests:
        verdict = "passed" if tests.get("passed") else "FAILED"
        parts += [f"Kernel correctness tests ({', '.join(tests.get('paths', []))}), run natively: **{verdict}** — "
                  f"{tests.get('passed_tests')} passed, "
                  f"{tests.get('failures', 0)} failed, {tests.get('errors', 0)} errors, {tests.get('skipped', 0)} "
                  "skipped.", ""]
    if not speedups:
        why = ("a dry run" if dry else "the kernel correctness tests failed" if tests
               else "the kernel correctness tests did not run in this campaign")
        parts += [f"Speedup columns are withheld: {why}.", ""]
    if bandwidth.get("hbm_bytes_per_s"):
        parts += [f"Measured device-to-device copy bandwidth: **{bandwidth['hbm_bytes_per_s'] / 1e9:,.0f} GB/s** "
                  f"({bandwidth['buffer_bytes'] / 2**30:.0f} GiB buffer, bytes moved = 2 × size, do_bench median); "
                  "every \"% HBM floor\" below divides by it.", ""]
    parts += ["## Parts", "", table(results.get("parts", []), ("name", "status", "seconds", "budget_s", "note")), ""]
    by_op: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_op[r.get("op", "?")].append(r)
    if by_op.get("frame_attention"):
        parts += ["## C-TRS frame-masked attention", "",
                  "Per sequence: dense FLOPs 4·N²·d·H (fwd), ×2.5 (bwd), ×3.5 (fwd+bwd); HBM floor bytes 4·N·H·d·elem "
                  "(fwd), ×2, ×3. `ran` names the implementation the profiler saw.", ""]
        parts += _attention_sections(by_op["frame_attention"], results, speedups)
    if by_op.get("attention_block"):
        cols = ("peer", "shape", "dtype", "mode", "batch", "median_ms", "predicted_ms", "seq_per_s", "peak_mem_mb",
                *(("speedup_vs_best_peer",) if speedups else ()))
        parts += ["## Attention sublayer (LayerNorm, QKV, attention, W_o, dropout, residual)", "", caption(results), "",
                  "`predicted ms`: the performance model's H100 time for the row's implementation "
                  "(docs/kernels/attention_blocks.md). `ours*` and `kernel+cublas` are this library's; the speedup "
                  "compares each with the fastest correct peer composition.", "",
                  table(by_op["attention_block"], cols, {"predicted_ms": "predicted ms",
                                                         "speedup_vs_best_peer": "× best peer"}), ""]
    if by_op.get("joint_embedding"):
        cols = ("impl", "mode", "out_dtype", "frames", "median_ms", "tokens_per_s", "model_gb_per_s", "pct_of_floor",
                "tests_passed", *(("speedup_vs_eager", "speedup_vs_compiled") if speedups else ()))
        parts += ["## Fused joint embedding", "", caption(results), "",
                  table(by_op["joint_embedding"], cols, {"tokens_per_s": "tokens/s",
                                                         "model_gb_per_s": "GB/s (bytes model)",
                                                         "pct_of_floor": "% HBM floor"}), ""]
    if by_op.get("model_step"):
        steps = by_op["model_step"]
        cols = ("peer", "dtype", "compile_mode", "lengths_on", "shape", "median_ms", "p20_ms", "p80_ms", "seq_per_s",
                "tflops", "kernel_launches", "saved_activation_mb_per_seq", "peak_mem_mb",
                *(("speedup_vs_best_peer",) if speedups else ()), "ran")
        parts += ["## Pre-training step (forward + backward + AdamW)", "", caption(results), "",
                  table(steps, cols, {"seq_per_s": "samples/s", "tflops": "model TFLOP/s",
                                      "compile_mode": "compile", "lengths_on": "lengths on",
                                      "kernel_launches": "GPU kernels / step",
                                      "saved_activation_mb_per_seq": "saved MiB/sample", "peak_mem_mb": "peak MiB",
                                      "speedup_vs_best_peer": "× best peer row",
                                      "ran": "longest kernels (profiler)"}), ""]
        parts += step_profile_section(steps)
    if by_op.get("pretrain_throughput"):
        pt = by_op["pretrain_throughput"]
        cols = ("peer", "path", "precision", "preset", "micro_batch", "samples_per_s", "model_tflops", "mfu",
                "peak_bf16_tflops", "timed_steps", "mfu_basis")
        parts += ["## Pre-training throughput (official preset, bf16)", "", caption(results), "",
                  table(pt, cols, {"peer": "backend", "samples_per_s": "samples/s", "model_tflops": "model TFLOP/s",
                                   "peak_bf16_tflops": "peak TFLOP/s"}), ""]
        rate = {r["peer"]: r.get("samples_per_s") for r in pt if not r.get("smoke")}
        if speedups and rate.get("triton") and rate.get("torch"):
            parts += [f"Triton backend / torch backend: **{rate['triton'] / rate['torch']:.2f}×** samples/s.", ""]
    skipped = sorted({(s.get("name", "?"), s.get("reason", "")) for s in results.get("skipped", [])})
    if skipped:
        parts += ["## Skipped peers and cases", ""] + [f"- `{n}`: {r}" for n, r in skipped] + [""]
    failures = results.get("failures", [])
    parts += ["## Failures", ""] + ([f"- {f}" for f in failures] if failures else ["none"]) + [""]
    return "\n".join(parts)


def step_profile_section(steps: list[dict]) -> list[str]:
    """The profile of one step of our fastest bf16 row (kernel time by category, idle gaps) and the configs its
    autotuned kernels ran."""
    ours = [r for r in steps if is_ours(r.get("peer")) and r.get("profile") and r.get("median_ms")
            and not r.get("smoke") and r.get("dtype") == "bf16"]
    if not ours:
        return []
    best = min(ours, key=lambda r: r["median_ms"])
    rows = [{"category": name, "ms": v.get("ms"), "share": None if v.get("ms") is None else v["ms"] / best["median_ms"],
             "launches": v.get("launches")} for name, v in best["profile"]["categories"].items()]
    out = [f"### Where one step of `{best['peer']}` goes ({best['median_ms']:.1f} ms median; one profiled step)", "",
           table(rows, ("category", "ms", "share", "launches"), {"share": "share of the step"}), ""]
    tuned = best.get("autotuned") or {}
    if tuned:
        out += ["Autotuned configs that ran (kernel: key → config):", ""]
        out += [f"- `{kernel}`: " + "; ".join(f"`{key}` → `{cfg}`" for key, cfg in configs.items())
                for kernel, configs in sorted(tuned.items())] + [""]
    return out


# ---------------------------------------------------------------------------------------------
# pytest-benchmark JSON
# ---------------------------------------------------------------------------------------------

def load_rows(path: Path, allow_smoke: bool) -> tuple[list[dict], dict]:
    data = json.loads(path.read_text())
    rows = [dict(b.get("extra_info", {})) for b in data.get("benchmarks", []) if b.get("extra_info")]
    smoke = [r for r in rows if r.get("smoke")]
    if smoke and not allow_smoke:
        raise SystemExit(f"{path}: {len(smoke)} smoke rows (CPU / interpreter timings are not speed results); "
                         "run on a GPU or pass --allow-smoke for a layout preview")
    return rows, data.get("machine_info", {})


def plot(rows: list[dict], op: str, assets: Path, device: str) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [r for r in rows if r.get("seq_per_s")]
    if not pts:
        return None
    labels = [f"{r.get('peer')}\n{r.get('dtype')} {r.get('mode')}" for r in pts]
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(pts)), 3.5))
    ax.bar(range(len(pts)), [r["seq_per_s"] for r in pts])
    ax.set_xticks(range(len(pts)), labels, rotation=70, fontsize=6)
    ax.set_ylabel("sequences / s")
    ax.set_title(f"{op} on {device}", fontsize=9)
    fig.tight_layout()
    assets.mkdir(parents=True, exist_ok=True)
    path = assets / f"{op}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def render(rows: list[dict], out: Path, assets: Path | None, command: str) -> str:
    add_speedups(rows)
    first = rows[0] if rows else {}
    device = first.get("device", "unknown device")
    parts = [f"## Measured on {device}", "",
             f"torch {first.get('torch')} · triton {first.get('triton')} · CUDA {first.get('cuda')} · "
             f"cuDNN {first.get('cudnn')} · driver {first.get('driver')} · commit `{first.get('git_commit')}` · "
             f"{first.get('timestamp')}", "", f"Command: `{command}`", ""]
    by_op: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_op[r.get("op", "?")].append(r)
    for op, op_rows in by_op.items():
        parts += [f"### {op}", "", table(op_rows), ""]
        png = plot(op_rows, op, assets, device) if assets is not None else None
        if png is not None:
            parts += [f"![{op}]({png.relative_to(out.parent).as_posix()})", ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", type=Path, nargs="+", help="campaign results.json files, or one --benchmark-json file")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks-measured.md"))
    p.add_argument("--assets", type=Path, default=None, help="plots (pytest-benchmark input only)")
    p.add_argument("--command", default="python -m pytest benchmarks -q --benchmark-json=results.json")
    p.add_argument("--allow-smoke", action="store_true")
    args = p.parse_args(argv)
    loaded = []
    for path in args.results:
        try:
            loaded.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            print(f"{path}: cannot read results ({exc})", file=sys.stderr)
            return 2
    if all(d.get("schema") == CAMPAIGN_SCHEMA for d in loaded):
        args.out.write_text(render_campaign(merge_campaigns(loaded)))
    elif len(loaded) == 1 and "benchmarks" in loaded[0]:
        rows, _ = load_rows(args.results[0], args.allow_smoke)
        if not rows:
            raise SystemExit(f"{args.results[0]}: no benchmark rows")
        args.out.write_text(render(rows, args.out, args.assets, args.command) + "\n")
    else:
        print("expected campaign results.json files or one pytest-benchmark --benchmark-json file", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
