"""Turn ``pytest benchmarks/ --benchmark-json=FILE`` results into markdown tables and plots.

    python -m benchmarks.report results.json --out docs/benchmarks.md --assets docs/assets

Rows come from each benchmark's ``extra_info`` (see ``benchmarks/common.record``). For every
(op, shape, dtype, mode, batch) group the speedup column compares ``hitrs_fast`` rows
(peer ``triton`` / ``hitrs_fast``) with the fastest other correct peer. Smoke rows
(CPU, interpreter) are refused unless ``--allow-smoke``: they are not speed results.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

OURS = {"triton", "hitrs_fast", "hitrs_fast.triton"}
COLUMNS = ("peer", "shape", "dtype", "mode", "batch", "median_ms", "p20_ms", "p80_ms", "seq_per_s", "tflops", "gbps",
           "pct_floor", "peak_mem_mb", "speedup_vs_best_peer")


def load_rows(path: Path, allow_smoke: bool) -> tuple[list[dict], dict]:
    data = json.loads(path.read_text())
    rows = [dict(b.get("extra_info", {})) for b in data.get("benchmarks", []) if b.get("extra_info")]
    smoke = [r for r in rows if r.get("smoke")]
    if smoke and not allow_smoke:
        raise SystemExit(f"{path}: {len(smoke)} smoke rows (CPU / interpreter timings are not speed results); "
                         "run on a GPU or pass --allow-smoke for a layout preview")
    return rows, data.get("machine_info", {})


def add_speedups(rows: list[dict]) -> None:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r.get("op"), r.get("shape"), r.get("dtype"), r.get("mode"), r.get("batch"))].append(r)
    for group in groups.values():
        peers = [r for r in group if r.get("peer") not in OURS and r.get("tests_passed", True)
                 and r.get("seq_per_s") and not str(r.get("peer", "")).startswith("unmasked")]
        best = max((r["seq_per_s"] for r in peers), default=None)
        for r in group:
            if r.get("peer") in OURS and best and r.get("seq_per_s"):
                r["speedup_vs_best_peer"] = r["seq_per_s"] / best


def fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)


def table(rows: list[dict]) -> str:
    cols = [c for c in COLUMNS if any(r.get(c) is not None for r in rows)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


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


def render(rows: list[dict], out: Path, assets: Path, command: str) -> str:
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
        png = plot(op_rows, op, assets, device)
        if png is not None:
            parts += [f"![{op}]({png.relative_to(out.parent).as_posix()})", ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", type=Path, help="a --benchmark-json file")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks-measured.md"))
    p.add_argument("--assets", type=Path, default=Path("docs/assets"))
    p.add_argument("--command", default="python -m pytest benchmarks -q --benchmark-json=results.json")
    p.add_argument("--allow-smoke", action="store_true")
    args = p.parse_args(argv)
    rows, _ = load_rows(args.results, args.allow_smoke)
    if not rows:
        raise SystemExit(f"{args.results}: no benchmark rows")
    args.out.write_text(render(rows, args.out, args.assets, args.command) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
