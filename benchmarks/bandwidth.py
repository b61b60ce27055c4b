"""Device-to-device copy bandwidth, the number every "% of the memory floor" column divides by.

    python -m benchmarks.bandwidth [--smoke]

Copies a 1 GiB buffer (far larger than the 50 MB L2) and counts 2 x size bytes moved (one
read, one write); ``triton.testing.do_bench`` median. ``--smoke`` copies 64 MiB on the CPU
to prove the code runs: not a speed result. The row goes to ``HITRS_BENCH_ROWS`` when set.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from benchmarks.common import BANDWIDTH_BUFFER_BYTES, copy_bandwidth, record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="64 MiB on the CPU: proves the code runs, no speed result")
    args = p.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("bandwidth: no CUDA device; pass --smoke for the CPU path check", file=sys.stderr)
        return 2
    device = "cpu" if args.smoke else "cuda"
    size = (64 << 20) if args.smoke else BANDWIDTH_BUFFER_BYTES
    rate = copy_bandwidth(size, device)
    row = record(None, op="copy_bandwidth", buffer_bytes=size, bytes_moved=2 * size, copy_device=device,
                 hbm_bytes_per_s=None if args.smoke else rate, smoke_bytes_per_s=rate if args.smoke else None,
                 timer="do_bench median" if not args.smoke else "perf_counter (smoke, not a speed result)")
    print(json.dumps({k: row[k] for k in ("device", "buffer_bytes", "hbm_bytes_per_s", "smoke_bytes_per_s")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
