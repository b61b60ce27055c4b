"""The autotuned launch of frame_attention, exactly as a GPU takes it, run by the CPU interpreter.

By default the interpreter uses one config per kernel, so Triton's autotuner never prunes,
keys, benchmarks or caches anything there. These tests enter
``frame_attention.autotune_configs`` (the production factories, key, prune functions and
benchmarker wiring, with a short config list) so all of that runs: at least three configs per
kernel are benchmarked, forward and backward. ``pytest tests -k autotune`` selects them.
The split kernels' tests pin ``HITRS_FAST_ATTENTION_KERNEL=split`` (the default is the
resident kernel); the resident kernels' tests come last.
"""

from __future__ import annotations

import math

import pytest
import torch
import triton
from torch._subclasses.fake_tensor import FakeTensorMode
from triton.runtime.errors import OutOfResources

from hitrs_fast.kernels import capabilities
from hitrs_fast.kernels import frame_attention as fa
from hitrs_fast.kernels.common.launch import autotune_key, pinned_config
from hitrs_fast.kernels.common.tuning import cpu_timer, is_hopper_or_newer
from hitrs_fast.kernels.frame_attention import tuning as fat
from tests.kernels.test_frame_attention import NAMES, Case, check_against_oracle, kernel_run, make_inputs
from tests.support.devices import REQUIRES_CUDA, kernel_device, record_launches

pytestmark = pytest.mark.interpreter

FWD = [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "WHOLE_ROW": False}, num_warps=4, num_stages=1),
       triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "WHOLE_ROW": False}, num_warps=4, num_stages=1),
       triton.Config({"BLOCK_M": 32, "BLOCK_N": 16, "WHOLE_ROW": True}, num_warps=4, num_stages=1)]
BWD = [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16}, num_warps=4, num_stages=1),
       triton.Config({"BLOCK_M": 32, "BLOCK_N": 32}, num_warps=4, num_stages=1),
       triton.Config({"BLOCK_M": 16, "BLOCK_N": 32}, num_warps=4, num_stages=1)]
# Only FWD[0] / BWD[0] (16-wide tiles) skip a same-frame tile pair under allow_self=False.
SKIPPING = 0
RESIDENT = [triton.Config({"BLOCK_M": bm}, num_warps=4, num_stages=1) for bm in (16, 32, 64)]


@pytest.fixture(autouse=True)
def _split_kernels(monkeypatch):
    monkeypatch.setenv(capabilities.FRAME_ATTENTION_KERNEL_ENV, "split")


class RankedBenchmarker:
    """Deterministic benchmarker: the autotuner times its (pruned) configs in list order, so call
    ``i`` of a round of ``n`` is config ``i % n``; config ``fastest`` gets 1 ms, the others more.
    Every config still runs once, as under a real benchmarker."""

    def __init__(self, n: int, fastest: int) -> None:
        self.n, self.fastest, self.calls = n, fastest, 0

    def __call__(self, kernel_call, quantiles):
        kernel_call()
        position = self.calls % self.n
        self.calls += 1
        return [1.0 if position == self.fastest else 2.0 + position] * len(quantiles)


class CountingBenchmarker:
    """The production CPU timer, counting how often the autotuner asks for a timing."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, kernel_call, quantiles):
        self.calls += 1
        return cpu_timer(kernel_call, quantiles)


def _inputs(b: int, h: int, n: int, d: int, dtype=torch.float32):
    return [torch.randn(b, h, n, d, dtype=dtype, device=kernel_device()) for _ in range(4)]


def _mask_args(allow_self: bool = True, lengths=None, kind=fa.MASK_FRAME, cls_pos=fa.CLS_LAST):
    return (lengths, 0.25, kind, 25, cls_pos, allow_self, True)


def _fwd_bwd(q, k, v, do, mask_args):
    o, lse = fa.frame_attention_fwd(q, k, v, *mask_args)
    return (o, lse, *fa.frame_attention_bwd(do, q, k, v, o, lse, *mask_args))


def _recorded_prune_args(n: int, d: int, dtype=torch.float32) -> tuple[dict, dict]:
    """(named_args, kwargs) as Triton's autotuner hands them to early_config_prune for this launch."""
    q = torch.randn(2, 2, n, d, dtype=dtype)
    launch, = record_launches(fa.ops, fa.frame_attention_fwd, q, q, q, *_mask_args())
    return launch.named_args(), {**launch.kwargs, "grid": launch.grid, "warmup": False}


# ---- prune -------------------------------------------------------------------------------------------


def test_autotune_prune_gets_constexprs_as_keywords(monkeypatch):
    """The installed Triton passes positional launch args in named_args and N_POW2 / HEAD_DIM in kwargs
    (reading named_args["N_POW2"] was a KeyError on the first autotuned launch)."""
    seen = []
    real = fat.prune_fwd

    def spy(configs, named_args, **kwargs):
        seen.append((set(named_args), set(kwargs)))
        return real(configs, named_args, **kwargs)

    monkeypatch.setattr(fat, "prune_fwd", spy)
    q, k, v, _ = _inputs(1, 1, 26, 16)
    with fa.autotune_configs(FWD, BWD, do_bench=RankedBenchmarker(len(FWD), 0)):
        fa.frame_attention_fwd(q, k, v, *_mask_args())
    (named, kwargs), = seen
    assert {"Q", "N", "BH_BUCKET"} <= named and "N_POW2" not in named
    assert {"N_POW2", "HEAD_DIM", "MASK_KIND"} <= kwargs


def _blocks(configs) -> list[tuple]:
    return [(c.kwargs["BLOCK_M"], c.kwargs.get("BLOCK_N"), c.kwargs.get("WHOLE_ROW")) for c in configs]


def padded_length(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


ALL_THREE = [(16, 16, False), (32, 32, False), (32, 16, True)]
ONLINE_ONLY = [(16, 16, False), (32, 32, False)]


@pytest.mark.parametrize(("n", "d", "dtype", "expected"), [
    pytest.param(5, 16, torch.float32, [(16, 16, False)], id="N5-pow2-16-drops-wider"),
    pytest.param(26, 16, torch.float32, ALL_THREE, id="N26-keeps-all"),
    pytest.param(1026, 16, torch.float32, ONLINE_ONLY, id="N1026-row-too-long"),
    pytest.param(176, 64, torch.float32, ALL_THREE, id="N176-D64-fp32-rows-128KiB"),
    pytest.param(251, 128, torch.bfloat16, ALL_THREE, id="N251-D128-bf16-rows-128KiB"),
    pytest.param(251, 128, torch.float32, ONLINE_ONLY, id="N251-D128-fp32-rows-256KiB"),
])
def test_autotune_prune_drops_what_it_should(n, d, dtype, expected):
    named, kwargs = _recorded_prune_args(n, d, dtype)
    assert _blocks(fat.prune_fwd(FWD, named, **kwargs)) == expected
    expected_bwd = [(bm, bn, None) for bm, bn, _ in _blocks(BWD) if max(bm, bn) <= padded_length(n)]
    assert _blocks(fat.prune_bwd(BWD, named, **kwargs)) == expected_bwd


def test_autotune_prune_never_returns_empty():
    named, kwargs = _recorded_prune_args(5, 16)
    too_wide_fwd = [triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "WHOLE_ROW": False})]
    too_wide_bwd = [triton.Config({"BLOCK_M": 64, "BLOCK_N": 32})]
    assert _blocks(fat.prune_fwd(too_wide_fwd, named, **kwargs)) == [(16, 16, False)]
    assert _blocks(fat.prune_bwd(too_wide_bwd, named, **kwargs)) == [(16, 16, None)]
    named, kwargs = _recorded_prune_args(5000 - 904, 16)  # N_POW2 = 4096: every whole-row config goes
    whole_only = [triton.Config({"BLOCK_M": 32, "BLOCK_N": 16, "WHOLE_ROW": True})]
    assert _blocks(fat.prune_fwd(whole_only, named, **kwargs)) == [(16, 16, False)]


@pytest.mark.parametrize("hopper", [True, False], ids=["hopper", "pre-hopper"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_autotune_prune_gpu_config_lists(hopper, dtype):
    """The GPU lists through the prune functions for the model's token counts and every head dim."""
    fwd, bwd = fa.gpu_fwd_configs(hopper), fa.gpu_bwd_configs(hopper)
    assert len({str(c) for c in fwd}) == len(fwd) and len({str(c) for c in bwd}) == len(bwd)
    for n in (25, 26, 44, 101, 151, 176, 251, 1026):
        padded = padded_length(n)
        for d in (16, 32, 64, 128):
            named, kwargs = _recorded_prune_args(n, d, dtype)
            kept_fwd = fat.prune_fwd(fwd, named, **kwargs)
            kept_bwd = fat.prune_bwd(bwd, named, **kwargs)
            where = f"N={n} D={d} hopper={hopper}"
            assert kept_fwd and kept_bwd, where
            assert all(set(c.kwargs) == {"BLOCK_M", "BLOCK_N", "WHOLE_ROW"} for c in kept_fwd)
            # No tile wider than the padded row; 16 x 16 (the 1.00x-padding tile at N = 176) always offered.
            assert all(c.kwargs["BLOCK_M"] <= padded for c in kept_fwd + kept_bwd), where
            assert all(c.kwargs["BLOCK_N"] <= padded for c in kept_fwd + kept_bwd if not c.kwargs.get("WHOLE_ROW"))
            assert (16, 16, False) in _blocks(kept_fwd) and (16, 16, None) in _blocks(kept_bwd), where
            whole = [c for c in kept_fwd if c.kwargs["WHOLE_ROW"]]
            assert bool(whole) == fa.whole_row_fits(padded, d, dtype), where
            # Only what breaks a rule is dropped.
            online = [c for c in fwd if not c.kwargs["WHOLE_ROW"]
                      and max(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) <= padded]
            assert len(kept_fwd) - len(whole) == len(online), where
    assert any(c.num_stages == 3 for c in fwd) == hopper


# ---- key ---------------------------------------------------------------------------------------------


def test_autotune_key_reuses_config_within_batch_bucket():
    """B = 5 and B = 7 (B * H in [4, 8)) share one tuning; B = 9 is another bucket and re-tunes.
    Forward, dK/dV and dQ each benchmark all three configs once per bucket."""
    bench = CountingBenchmarker()
    with fa.autotune_configs(FWD, BWD, do_bench=bench):
        _fwd_bwd(*_inputs(5, 1, 26, 16), _mask_args())
        assert bench.calls == len(FWD) + 2 * len(BWD)
        _fwd_bwd(*_inputs(7, 1, 26, 16), _mask_args())
        assert bench.calls == len(FWD) + 2 * len(BWD), "same bucket re-benchmarked"
        _fwd_bwd(*_inputs(9, 1, 26, 16), _mask_args())
        assert bench.calls == 2 * (len(FWD) + 2 * len(BWD))
        assert [len(f().cache) for f in (fat.autotuned_fwd, fat.autotuned_dkdv, fat.autotuned_dq)] == [2, 2, 2]


def test_autotune_key_vtrs_token_counts_share_one_tuning():
    """V-TRS: N = clips + 1 changes nearly every batch; N = 13, 14, 15 (one power-of-two bucket, key
    padding) tune once, N = 17 tunes again. The configs fit N_POW2 = 16, so none is pruned."""
    configs = [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "WHOLE_ROW": False}, num_warps=4, num_stages=1),
               triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "WHOLE_ROW": True}, num_warps=4, num_stages=1),
               triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "WHOLE_ROW": False}, num_warps=2, num_stages=1)]
    bench = CountingBenchmarker()
    with fa.autotune_configs(configs, BWD, do_bench=bench):
        for n in (13, 14, 15, 17):
            q, k, v, _ = _inputs(4, 2, n, 16)
            lengths = torch.tensor([n, n - 3, 1, n - 1])
            fa.frame_attention_fwd(q, k, v, *_mask_args(lengths=lengths, kind=fa.MASK_NONE, cls_pos=fa.CLS_NONE))
            assert bench.calls == len(configs) * (1 + (n > 16)), f"N = {n}"
        assert len(fat.autotuned_fwd().cache) == 2


# ---- the config a compiled graph runs ----------------------------------------------------------------


def _fake_launch(launch, mode: FakeTensorMode) -> tuple:
    """The recorded launch's positional arguments as fake tensors: what the launcher sees while torch traces."""
    return tuple(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in launch.args)


def test_traced_launch_pins_the_config_the_autotuner_picks():
    """While torch traces (fake tensors), the launch gets one config (``kernels/common/launch.py``). Cold cache:
    the autotuner tunes the traced shapes on real tensors, with its benchmarker, and caches the winner under the
    key an eager launch of those shapes computes. Warm cache: the winner of an eager launch is reused and
    nothing is benchmarked."""
    q, k, v, _ = _inputs(3, 2, 51, 16)
    bench = RankedBenchmarker(len(FWD), 2)
    with fa.autotune_configs(FWD, BWD, do_bench=bench):
        launch, = record_launches(fa.ops, fa.frame_attention_fwd, q, k, v, *_mask_args())
        tuner = fat.autotuned_fwd()
        with FakeTensorMode() as mode:
            config = pinned_config(tuner, launch.grid, _fake_launch(launch, mode), launch.kwargs)
        assert config == FWD[2] and bench.calls == len(FWD)
        assert tuner.cache == {autotune_key(tuner, launch.args, launch.kwargs): FWD[2]}

    warm = RankedBenchmarker(len(FWD), 1)
    with fa.autotune_configs(FWD, BWD, do_bench=warm):
        fa.frame_attention_fwd(q, k, v, *_mask_args())  # eager: tunes and caches FWD[1]
        tuner, calls = fat.autotuned_fwd(), warm.calls
        cached = dict(tuner.cache)
        other = torch.randn(3, 2, 51, 16)  # same shapes, other values: same key
        launch, = record_launches(fa.ops, fa.frame_attention_fwd, other, other, other, *_mask_args())
        with FakeTensorMode() as mode:
            config = pinned_config(tuner, launch.grid, _fake_launch(launch, mode), launch.kwargs)
        assert config == FWD[1] and tuner.cache == cached and warm.calls == calls, "a warm cache is reused"


def test_traced_launch_with_one_config_left_after_pruning_needs_no_tuning():
    """A prune that leaves one config decides alone: at N = 8 (N_POW2 = 16) only the 16-wide tile fits."""
    q, k, v, _ = _inputs(2, 1, 8, 16)
    bench = CountingBenchmarker()
    with fa.autotune_configs(FWD, BWD, do_bench=bench):
        launch, = record_launches(fa.ops, fa.frame_attention_fwd, q, k, v,
                                  *_mask_args(kind=fa.MASK_NONE, cls_pos=fa.CLS_NONE))
        with FakeTensorMode() as mode:
            config = pinned_config(fat.autotuned_fwd(), launch.grid, _fake_launch(launch, mode), launch.kwargs)
    assert config.kwargs["BLOCK_M"] == config.kwargs["BLOCK_N"] == 16 and bench.calls == 0


# ---- selection ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fastest", range(len(FWD)))
def test_autotune_selects_and_runs_the_fastest_config(fastest):
    """The config the benchmarker makes fastest is cached and is the one that runs: NaN rows 0-15
    of V (forward), of dO (dK/dV) and of K (dQ) stay out of rows 0-15 of the output only when
    the 16 x 16 config, which skips that same-frame tile pair, ran."""
    q, k, v, do = _inputs(1, 1, 51, 16)
    nan_rows = torch.zeros(1, 1, 51, 1, dtype=torch.bool, device=q.device)
    nan_rows[:, :, :16] = True
    args = _mask_args(allow_self=False)
    bench = RankedBenchmarker(len(FWD), fastest)
    skipped = fastest == SKIPPING
    with fa.autotune_configs(FWD, BWD, do_bench=bench):
        o, lse = fa.frame_attention_fwd(q, k, v.masked_fill(nan_rows, float("nan")), *args)
        assert fat.autotuned_fwd().best_config == FWD[fastest]
        assert bool(torch.isfinite(o[:, :, :16]).all()) == skipped
        assert torch.isnan(o[:, :, 16:25]).all(), "rows that see keys 0-15 must see the NaN"
        o, lse = fa.frame_attention_fwd(q, k, v, *args)
        _, dk, dv = fa.frame_attention_bwd(do.masked_fill(nan_rows, float("nan")), q, k, v, o, lse, *args)
        assert fat.autotuned_dkdv().best_config == BWD[fastest]
        assert bool(torch.isfinite(dk[:, :, :16]).all()) == bool(torch.isfinite(dv[:, :, :16]).all()) == skipped
        dq, _, _ = fa.frame_attention_bwd(do, q, k.masked_fill(nan_rows, float("nan")), v, o, lse, *args)
        assert fat.autotuned_dq().best_config == BWD[fastest]
        assert bool(torch.isfinite(dq[:, :, :16]).all()) == skipped
    assert bench.calls == len(FWD) + 2 * len(BWD), "every config of every kernel benchmarked once"


@pytest.mark.parametrize("fastest", range(len(FWD)))
@pytest.mark.parametrize("case", [
    pytest.param(Case(2, 2, 2, 32, allow_self=False), id="B2-F2-N51-H2-D32-fp32-noself"),
    pytest.param(Case(3, 1, 1, 16, dtype=torch.bfloat16), id="B3-F1-N26-H1-D16-bf16"),
])
def test_autotune_every_config_matches_float64_oracle(case, fastest):
    """Through the autograd Function and the registered ops, whichever config the tuner picks:
    output, LSE and gradients against the float64 oracle, all allocations NaN-poisoned."""
    q, k, v = make_inputs(case, kernel_device())
    do = torch.randn(q.shape, dtype=case.dtype, device=q.device)
    mask, scale = case.typed_mask(), 1.0 / math.sqrt(case.head_dim)
    with fa.autotune_configs(FWD, BWD, do_bench=RankedBenchmarker(len(FWD), fastest)):
        got = kernel_run(case, q, k, v, do, mask, scale)
        chosen = [f().best_config for f in (fat.autotuned_fwd, fat.autotuned_dkdv, fat.autotuned_dq)]
    assert chosen == [FWD[fastest], BWD[fastest], BWD[fastest]]
    check_against_oracle(case, got, q, k, v, do, mask, scale)
    assert len(got) == len(NAMES)


def test_autotune_hook_restores_the_default():
    """Leaving autotune_configs rebuilds the default (one config in the interpreter) autotuners."""
    with fa.autotune_configs(FWD, BWD):
        assert len(fat.autotuned_fwd().configs) == len(FWD)
    assert len(fat.autotuned_fwd().configs) == len(fat.autotuned_dq().configs) == 1
    with pytest.raises(ValueError, match="at least one"), fa.autotune_configs([], BWD):
        pass


# ---- the resident kernels ----------------------------------------------------------------------------


def test_autotune_resident_prune_gets_constexprs_and_drops_tall_tiles(monkeypatch):
    """The resident prune reads N_POW2 from the keyword constexprs and drops q-tiles taller than it: at N = 26
    (N_POW2 = 32) the 64-row config goes, forward and backward."""
    monkeypatch.setenv(capabilities.FRAME_ATTENTION_KERNEL_ENV, "resident")
    seen = []
    real = fat.prune_resident

    def spy(configs, named_args, **kwargs):
        kept = real(configs, named_args, **kwargs)
        seen.append(([c.kwargs["BLOCK_M"] for c in kept], "N_POW2" in kwargs, "N_POW2" in named_args))
        return kept

    monkeypatch.setattr(fat, "prune_resident", spy)
    with fa.autotune_configs(FWD, BWD, do_bench=CountingBenchmarker(), resident=RESIDENT):
        _fwd_bwd(*_inputs(2, 1, 26, 16), _mask_args())
    assert seen == [([16, 32], True, False)] * 2


@pytest.mark.parametrize("hopper", [True, False], ids=["hopper", "pre-hopper"])
def test_autotune_resident_gpu_config_list(hopper):
    configs = fa.gpu_resident_configs(hopper)
    assert len({str(c) for c in configs}) == len(configs)
    for n in (13, 25, 26, 101, 151, 176, 251):
        named, kwargs = _recorded_prune_args(n, 64, torch.bfloat16)
        kept = fat.prune_resident(configs, named, **kwargs)
        assert kept and all(c.kwargs["BLOCK_M"] <= padded_length(n) for c in kept), n
        assert {c.kwargs["BLOCK_M"] for c in kept} == {bm for bm in (16, 32, 64) if bm <= padded_length(n)}, n
    assert any(c.num_stages == 2 for c in configs) == hopper


@pytest.mark.parametrize("fastest", range(len(RESIDENT)))
def test_autotune_resident_selects_and_runs_the_fastest_config(monkeypatch, fastest):
    """The fastest resident config is cached for both kernels, and the autograd path through it matches
    the float64 oracle (N = 51: N_POW2 = 64 keeps all three q-tile heights)."""
    monkeypatch.setenv(capabilities.FRAME_ATTENTION_KERNEL_ENV, "resident")
    case = Case(2, 2, 2, 32, allow_self=False)
    q, k, v = make_inputs(case, kernel_device())
    do = torch.randn(q.shape, dtype=case.dtype, device=q.device)
    mask, scale = case.typed_mask(), 1.0 / math.sqrt(case.head_dim)
    with fa.autotune_configs(FWD, BWD, do_bench=RankedBenchmarker(len(RESIDENT), fastest), resident=RESIDENT):
        got = kernel_run(case, q, k, v, do, mask, scale)
        chosen = [f().best_config for f in (fat.autotuned_resident_fwd, fat.autotuned_resident_bwd)]
        untouched = [len(f().cache) for f in (fat.autotuned_fwd, fat.autotuned_dkdv, fat.autotuned_dq)]
    assert chosen == [RESIDENT[fastest]] * 2
    assert untouched == [0, 0, 0], "the split kernels must not run"
    check_against_oracle(case, got, q, k, v, do, mask, scale)


# ---- every config a GPU tunes over -------------------------------------------------------------------


@pytest.mark.parametrize("case", [
    pytest.param(Case(2, 8, 7, 64, torch.bfloat16), id="C-TRS-N176-D64-bf16", marks=REQUIRES_CUDA),
    pytest.param(Case(3, 4, 1, 64, torch.bfloat16, mask="padding", lengths=(26, 19, 1)), id="padded-N26-D64-bf16",
                 marks=REQUIRES_CUDA),
    pytest.param(Case(2, 4, 7, 32, torch.float32, allow_self=False), id="N176-D32-fp32-noself",
                 marks=REQUIRES_CUDA),
])
@pytest.mark.parametrize("variant", ["split", "resident"])
def test_every_gpu_config_matches_the_reference(monkeypatch, case, variant):
    """The autotuner may pick any config the prune functions keep, so each must be right: every kept config
    of this GPU's lists (forward, dK/dV and dQ paired in turn; the resident q-tiles) against the float64
    oracle, at the model's shapes. A config this GPU cannot hold (shared memory) is one the autotuner skips
    (it times it as infinite); at least one must run. GPU only: under the interpreter these shapes take
    hours. The campaign's other kernel tests run one config (``HITRS_FAST_SINGLE_CONFIG=1``)."""
    monkeypatch.setenv(capabilities.FRAME_ATTENTION_KERNEL_ENV, variant)
    hopper = is_hopper_or_newer()
    named, kwargs = _recorded_prune_args(case.num_tokens, case.head_dim, case.dtype)
    if variant == "split":
        fwd = fat.prune_fwd(fa.gpu_fwd_configs(hopper), named, **kwargs)
        bwd = fat.prune_bwd(fa.gpu_bwd_configs(hopper), named, **kwargs)
        runs = [([fwd[i % len(fwd)]], [bwd[i % len(bwd)]], None) for i in range(max(len(fwd), len(bwd)))]
    else:
        resident = fat.prune_resident(fa.gpu_resident_configs(hopper), named, **kwargs)
        runs = [(FWD, BWD, [config]) for config in resident]
    q, k, v = make_inputs(case, kernel_device())
    do = torch.randn(q.shape, dtype=case.dtype, device=q.device)
    mask, scale = case.typed_mask(), 1.0 / math.sqrt(case.head_dim)
    ran = 0
    for fwd_configs, bwd_configs, resident_configs in runs:
        tried = [str(c) for c in (fwd_configs + bwd_configs if resident_configs is None else resident_configs)]
        try:
            with fa.autotune_configs(fwd_configs, bwd_configs, resident=resident_configs):
                got = kernel_run(case, q, k, v, do, mask, scale)
        except OutOfResources:
            continue
        try:
            check_against_oracle(case, got, q, k, v, do, mask, scale)
        except AssertionError as error:
            raise AssertionError(f"{variant} configs {tried}: {error}") from error
        ran += 1
    assert ran, f"no {variant} config fits this GPU at {case}"


# ---- the optional features (bias, ids, joint-major frames, window, dropout) --------------------------------


def _feature_case(name: str, device):
    """(frame_attention kwargs, allowed pairs, bias or None, keep mask or None) of one feature path at N = 21."""
    from tests.support.attention_oracle import rule_allowed, token_frames

    n = 21
    if name == "bias-frame":
        f = token_frames(n, 5, 4, "last")
        bias = torch.randn(2, n, n, device=device)
        return {"frame_size": 5, "cls": "last", "bias": bias}, rule_allowed(f, f, "other"), bias, None
    if name == "ids-window-dropout":
        ids = torch.randint(-1, 5, (2, n), generator=torch.Generator().manual_seed(3))
        seed = torch.tensor([77], device=device)
        keep = fa.attention_dropout_mask(seed, 2, 2, n, 0.2)
        kwargs = {"mask_kind": fa.MASK_WINDOW, "cls": "none", "window": 1, "q_ids": ids.to(device),
                  "dropout_p": 0.2, "seed": seed}
        return kwargs, rule_allowed(ids, ids, "window", 1)[:, None], None, keep
    f = token_frames(n, 4, 5, "first", "joint_major")  # "joint-major-window-bias"
    bias = torch.randn(2, 1, 1, n, device=device)
    kwargs = {"mask_kind": fa.MASK_WINDOW, "frame_size": 4, "cls": "first", "order": "joint_major",
              "num_frames": 5, "window": 1, "bias": bias}
    return kwargs, rule_allowed(f, f, "window", 1), bias, None


@pytest.mark.parametrize(("name", "fastest"), [("bias-frame", 0), ("ids-window-dropout", 1),
                                              ("joint-major-window-bias", 2)])
def test_autotune_feature_paths_every_config_matches_float64_oracle(name, fastest):
    """Each feature path through the autograd Function and the registered ops with the autotuner over three configs
    (online 16 x 16, online 32 x 32, whole row; each runs once while tuning, and each wins one path): the winner is
    cached and run, and output and every gradient (bias included, from the autotuned dBias kernel) match the
    float64 oracle, allocations NaN-poisoned."""
    from tests.support.attention_oracle import oracle
    from tests.support.nan_poison import poison_torch_empty
    from tests.support.tolerances import assert_close_verbose, tolerance

    device = kernel_device()
    q, k, v, do = _inputs(2, 2, 21, 16)
    kwargs, allowed, bias, keep = _feature_case(name, device)
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    bias_leaf = bias.detach().requires_grad_() if bias is not None else None
    if bias_leaf is not None:
        kwargs = {**kwargs, "bias": bias_leaf}
    with fa.autotune_configs(FWD, BWD, do_bench=RankedBenchmarker(len(FWD), fastest)), poison_torch_empty():
        out = fa.frame_attention(*leaves, scale=0.25, **kwargs)
        out.backward(do)
        tuners = [fat.autotuned_fwd, fat.autotuned_dkdv, fat.autotuned_dq] + ([fat.autotuned_dbias] if bias is not None
                                                                                else [])
        chosen = [f().best_config for f in tuners]
    assert chosen == [FWD[fastest]] + [BWD[fastest]] * (len(tuners) - 1)
    expected = oracle(q, k, v, do, allowed=allowed.to(device), bias=bias, scale=0.25, keep=keep,
                      dropout_p=kwargs.get("dropout_p", 0.0))
    got = {"out": out.detach(), "dq": leaves[0].grad, "dk": leaves[1].grad, "dv": leaves[2].grad}
    if bias is not None:
        got["dbias"] = bias_leaf.grad
    atol, rtol = tolerance("frame_attention", torch.float32)
    for key, value in expected.items():
        assert_close_verbose(got[key], value.reshape(got[key].shape), atol, rtol, f"{key} ({name}, config {fastest})")


def test_autotune_key_tunes_features_apart():
    """A bias changes the work per tile: the plain launch and the biased one of the same shapes tune separately
    (the feature constexprs are in the key), each once."""
    bench = CountingBenchmarker()
    q, k, v, _ = _inputs(2, 1, 26, 16)
    with fa.autotune_configs(FWD, BWD, do_bench=bench):
        fa.frame_attention_fwd(q, k, v, *_mask_args())
        fa.frame_attention_fwd(q, k, v, *_mask_args(), features=fa.Features(bias=torch.zeros(1, 1, 26, 26)))
        fa.frame_attention_fwd(q, k, v, *_mask_args(), features=fa.Features(bias=torch.ones(1, 1, 26, 26)))
        assert len(fat.autotuned_fwd().cache) == 2 and bench.calls == 2 * len(FWD)
    assert set(fa.SPLIT_KEY) - set(fa.AUTOTUNE_KEY) == {"HAS_BIAS", "FRAME_SOURCE", "NUM_FRAMES", "WINDOW", "DROPOUT"}
