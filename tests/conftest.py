import os

import torch

# Triton kernels run on CPU through the interpreter; it must be set before triton is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from hitrs_fast.training.run import reproducible_cpu_gemms  # noqa: E402

# As every command does: MKL's GEMMs give the same bits at any thread count (before the first matrix product).
reproducible_cpu_gemms()

# Under pytest-xdist (`make test`: one worker per core) each worker gets its share of the cores, so the workers'
# intra-op threads do not oversubscribe the machine (OpenMP threads spinning on a busy core cost far more than
# they win); a command a test starts inherits the same share. An explicit OMP_NUM_THREADS is kept.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1 and "OMP_NUM_THREADS" not in os.environ:
    _CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    _SHARE = max(1, _CORES // _WORKERS)
    os.environ["OMP_NUM_THREADS"] = str(_SHARE)
    torch.set_num_threads(_SHARE)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(42)
