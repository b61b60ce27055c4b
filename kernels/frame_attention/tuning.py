"""Autotuning of the frame-attention kernels: the config lists a GPU tunes over, the prune functions, the
autotune key and the cached autotuners (the why of each choice is in :mod:`hitrs_fast.kernels.frame_attention`)."""

from __future__ import annotations

import contextlib
import functools

import torch
import triton

from hitrs_fast.kernels.common.tuning import (
    autotune,
    benchmarker_override,
    is_hopper_or_newer,
    launch_args,
    single_config,
)
from hitrs_fast.kernels.frame_attention.kernels import (
    frame_attention_bwd_dbias_kernel,
    frame_attention_bwd_dkdv_kernel,
    frame_attention_bwd_dq_kernel,
    frame_attention_fwd_kernel,
    frame_attention_resident_bwd_kernel,
    frame_attention_resident_fwd_kernel,
)

WHOLE_ROW_MAX = 256
"""The whole-row variant is offered only while next_power_of_2(N) <= this."""
WHOLE_ROW_BYTES = 128 * 1024
"""... and while its padded K and V rows (``2 * N_POW2 * D`` elements) fit in this many bytes of shared memory."""

AUTOTUNE_KEY = ["N_POW2", "BH_BUCKET", "HEAD_DIM", "MASK_KIND", "FRAME_SIZE", "CLS_POS", "ALLOW_SELF", "HAS_LENGTHS",
                "INPUT_PRECISION"]
"""What a tuned config is cached on (Triton appends the dtype of every tensor argument).
Exact N and B are absent on purpose: see the module docstring."""
FEATURE_KEY = ["HAS_BIAS", "FRAME_SOURCE", "NUM_FRAMES", "WINDOW", "DROPOUT"]
"""The split kernels' key adds the optional features (flags and mask constants, no shape): a bias or dropout
changes the work per tile, so it is tuned on its own."""
SPLIT_KEY = AUTOTUNE_KEY + FEATURE_KEY

# Always valid (any N >= 1, any supported D and dtype): the prune functions' fallback.
SAFE_FWD = triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "WHOLE_ROW": False}, num_warps=4, num_stages=1)
SAFE_BWD = triton.Config({"BLOCK_M": 16, "BLOCK_N": 16}, num_warps=4, num_stages=1)
# HITRS_FAST_SINGLE_CONFIG / interpreter default. 32 x 32 online: 1.19x padding at N = 176, few interpreter steps.
SINGLE_FWD = triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "WHOLE_ROW": False}, num_warps=4, num_stages=1)
SINGLE_BWD = triton.Config({"BLOCK_M": 32, "BLOCK_N": 32}, num_warps=4, num_stages=1)
# The resident kernels' single config: 32-row q-tiles are valid for every N (rows past N are masked).
SINGLE_RESIDENT = triton.Config({"BLOCK_M": 32}, num_warps=4, num_stages=1)
SAFE_RESIDENT = triton.Config({"BLOCK_M": 16}, num_warps=4, num_stages=1)


def gpu_fwd_configs(hopper: bool) -> list[triton.Config]:
    """The forward configs a GPU tunes over (before pruning); ``hopper``: compute capability >= 9."""
    stages = (2, 3) if hopper else (2,)
    configs = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "WHOLE_ROW": False}, num_warps=4 if bm <= 64 else 8,
                             num_stages=s)
               for bm, bn in ((16, 16), (32, 16), (32, 32), (64, 16), (64, 32), (64, 64), (128, 64)) for s in stages]
    configs += [triton.Config({"BLOCK_M": bm, "BLOCK_N": 16, "WHOLE_ROW": True}, num_warps=w, num_stages=1)
                for bm in (16, 32, 64) for w in (4, 8)]
    return configs


def gpu_bwd_configs(hopper: bool) -> list[triton.Config]:
    """The backward (dK/dV and dQ) configs a GPU tunes over (before pruning)."""
    stages = (2, 3) if hopper else (2,)
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
            for bm, bn in ((16, 16), (32, 32), (16, 32), (32, 16), (64, 32), (32, 64), (64, 64))
            for w in (4, 8) for s in stages]


def gpu_resident_configs(hopper: bool) -> list[triton.Config]:
    """The resident forward and backward configs a GPU tunes over (before pruning): q-tiles of 16, 32 or 64
    rows (64 lets Hopper use wgmma for S and P V), 4 or 8 warps, the q-tile loop pipelined or not."""
    stages = (1, 2) if hopper else (1,)
    return [triton.Config({"BLOCK_M": bm}, num_warps=w, num_stages=st)
            for bm in (16, 32, 64) for w in (4, 8) for st in stages]


# Set only inside ``autotune_configs``: (fwd configs, bwd configs, resident configs or None).
_override: tuple[list[triton.Config], list[triton.Config], list[triton.Config] | None] | None = None


def fwd_configs() -> list[triton.Config]:
    """Forward configs, built at first launch (never at import) and gated on the GPU generation."""
    if _override is not None:
        return list(_override[0])
    return [SINGLE_FWD] if single_config() else gpu_fwd_configs(is_hopper_or_newer())


def bwd_configs() -> list[triton.Config]:
    """Backward configs; same choice as :func:`fwd_configs`."""
    if _override is not None:
        return list(_override[1])
    return [SINGLE_BWD] if single_config() else gpu_bwd_configs(is_hopper_or_newer())


def resident_configs() -> list[triton.Config]:
    """Resident-kernel configs (forward and backward); same choice as :func:`fwd_configs`."""
    if _override is not None and _override[2] is not None:
        return list(_override[2])
    return [SINGLE_RESIDENT] if single_config() else gpu_resident_configs(is_hopper_or_newer())


def whole_row_fits(n_pow2: int, head_dim: int, dtype: torch.dtype) -> bool:
    """Whether the whole-row forward variant is offered: its padded K and V rows stay resident in
    shared memory (compiled for sm_90 they take at most ``2 * N_POW2 * D`` elements)."""
    return n_pow2 <= WHOLE_ROW_MAX and 2 * n_pow2 * head_dim * dtype.itemsize <= WHOLE_ROW_BYTES


def prune_fwd(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Drop whole-row configs whose K/V rows would not fit, and tiles wider than ``N_POW2``; never empty."""
    args = launch_args(named_args, kwargs)
    n_pow2 = args["N_POW2"]
    whole_row_ok = whole_row_fits(n_pow2, args["HEAD_DIM"], args["Q"].dtype)
    kept = [c for c in configs
            if (whole_row_ok if c.kwargs["WHOLE_ROW"] else c.kwargs["BLOCK_N"] <= n_pow2)
            and c.kwargs["BLOCK_M"] <= n_pow2]
    return kept or [SAFE_FWD]


def prune_bwd(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Drop tiles wider than ``N_POW2``; never empty."""
    n_pow2 = launch_args(named_args, kwargs)["N_POW2"]
    kept = [c for c in configs if c.kwargs["BLOCK_M"] <= n_pow2 and c.kwargs["BLOCK_N"] <= n_pow2]
    return kept or [SAFE_BWD]


def prune_resident(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Drop q-tiles taller than ``N_POW2``; never empty."""
    n_pow2 = launch_args(named_args, kwargs)["N_POW2"]
    return [c for c in configs if c.kwargs["BLOCK_M"] <= n_pow2] or [SAFE_RESIDENT]


@contextlib.contextmanager
def autotune_configs(fwd: list[triton.Config], bwd: list[triton.Config], do_bench=None,
                     resident: list[triton.Config] | None = None):
    """Tune over these config lists instead of the built-in ones while the block runs.

    The hook through which the tests run the production autotuned launch (same kernels,
    key, prune functions and benchmarker wiring) with a short list, also under the
    interpreter, where the default is one config and the autotuner never runs. Fresh
    autotuners (empty caches) are built on entry and again on exit.

    Args:
        fwd: forward configs (``BLOCK_M``, ``BLOCK_N``, ``WHOLE_ROW``); bwd: backward configs
            (``BLOCK_M``, ``BLOCK_N``) for the dK/dV, the dQ and the dBias kernel.
        do_bench: ``(kernel_call, quantiles) -> list[float]`` replacing the benchmarker
            (default: ``triton.testing.do_bench`` on a GPU, a CPU wall clock in the interpreter).
        resident: configs (``BLOCK_M``) of the resident forward and backward kernels; None keeps the
            built-in list.
    """
    global _override
    if not fwd or not bwd or (resident is not None and not resident):
        raise ValueError("autotune_configs: fwd, bwd (and resident, if given) must each hold at least one "
                         "triton.Config")
    previous = _override
    _override = (list(fwd), list(bwd), None if resident is None else list(resident))
    clear_autotuners()
    try:
        with benchmarker_override(do_bench):
            yield
    finally:
        _override = previous
        clear_autotuners()


def _autotune(kernel, configs: list[triton.Config], prune, key: list[str] = AUTOTUNE_KEY):
    return autotune(kernel, configs, key, prune)


@functools.cache
def autotuned_fwd():
    return _autotune(frame_attention_fwd_kernel, fwd_configs(), prune_fwd, SPLIT_KEY)


@functools.cache
def autotuned_dkdv():
    return _autotune(frame_attention_bwd_dkdv_kernel, bwd_configs(), prune_bwd, SPLIT_KEY)


@functools.cache
def autotuned_dq():
    return _autotune(frame_attention_bwd_dq_kernel, bwd_configs(), prune_bwd, SPLIT_KEY)


@functools.cache
def autotuned_dbias():
    """The dBias kernel: the backward configs (its tile is a (q-tile, kv-tile) pair, like theirs); keyed also on
    whether the bias has its own heads (a loop over the heads otherwise)."""
    return _autotune(frame_attention_bwd_dbias_kernel, bwd_configs(), prune_bwd, [*SPLIT_KEY, "BIAS_PER_HEAD"])


@functools.cache
def autotuned_resident_fwd():
    return _autotune(frame_attention_resident_fwd_kernel, resident_configs(), prune_resident)


@functools.cache
def autotuned_resident_bwd():
    return _autotune(frame_attention_resident_bwd_kernel, resident_configs(), prune_resident)


def clear_autotuners() -> None:
    for factory in (autotuned_fwd, autotuned_dkdv, autotuned_dq, autotuned_dbias, autotuned_resident_fwd,
                    autotuned_resident_bwd):
        factory.cache_clear()

