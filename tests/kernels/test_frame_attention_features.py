"""The frame-attention kernels' optional features at the launcher level, under the interpreter with NaN-poisoned
allocations: additive bias and the dBias kernel (every broadcast, the batch split into groups), frames from ids and
joint-major arithmetic, the window rule, attention dropout, on the split kernels' forward variants (online, whole
row) with explicit configs; tile skipping of the new rules proven with NaN in the skipped tiles; the resident
kernels refusing features. The public op over these: ``tests/ops/test_attention_features.py``; the autotuned
launch of each path: ``tests/kernels/test_frame_attention_autotune.py``."""

from __future__ import annotations

import pytest
import torch

from hitrs_fast.kernels import capabilities
from hitrs_fast.kernels import frame_attention as fa
from tests.support.attention_oracle import oracle, padding_allowed, rule_allowed, token_frames
from tests.support.devices import kernel_device, record_launches
from tests.support.nan_poison import poison_torch_empty
from tests.support.tolerances import assert_close_verbose, tolerance

pytestmark = pytest.mark.interpreter

ONLINE16 = {"BLOCK_M": 16, "BLOCK_N": 16, "WHOLE_ROW": False}
ONLINE32 = {"BLOCK_M": 32, "BLOCK_N": 32, "WHOLE_ROW": False}
WHOLE32 = {"BLOCK_M": 32, "BLOCK_N": 16, "WHOLE_ROW": True}
SCALE = 0.25


def _tensors(b, h, n, d, count=4):
    g = torch.Generator().manual_seed(b * 1000 + n)
    return [torch.randn(b, h, n, d, generator=g).to(kernel_device()) for _ in range(count)]


def _launch(q, k, v, do, mask_args, features, config, with_dbias=False):
    """Forward, backward and (optionally) dBias through the launchers with one explicit config, NaN-poisoned."""
    bwd_config = {key: value for key, value in config.items() if key != "WHOLE_ROW"}
    with poison_torch_empty():
        o, lse = fa.frame_attention_fwd(q, k, v, *mask_args, config=config, variant="split", features=features)
        dq, dk, dv = fa.frame_attention_bwd(do, q, k, v, o, lse, *mask_args, config=bwd_config, variant="split",
                                            features=features)
        got = {"out": o, "dq": dq, "dk": dk, "dv": dv}
        if with_dbias:
            got["dbias"] = fa.frame_attention_dbias(do, q, k, v, o, lse, *mask_args, features, config=bwd_config)
    return got


def _compare(got, expected, where):
    atol, rtol = tolerance("frame_attention", torch.float32)
    for name, value in expected.items():
        assert_close_verbose(got[name], value.reshape(got[name].shape), atol, rtol, f"{name} ({where})")


def _mask_args(kind=fa.MASK_FRAME, frame_size=5, cls=fa.CLS_LAST, allow_self=True, lengths=None,
               cls_last_key=True):
    return (lengths, SCALE, kind, frame_size, cls, allow_self, cls_last_key)


@pytest.mark.parametrize(("config", "bias_shape"), [
    pytest.param(ONLINE32, (2, 2, 21, 21), id="per-sample"),
    pytest.param(ONLINE32, (1, 1, 21, 21), id="shared"),
    pytest.param(ONLINE32, (2, 1, 1, 21), id="key-bias"),
    pytest.param(ONLINE32, (1, 1, 21, 1), id="query-bias"),
    pytest.param(ONLINE16, (1, 2, 21, 21), id="per-head-online16"),
    pytest.param(WHOLE32, (1, 2, 21, 21), id="per-head-whole-row32"),
])
def test_bias_and_its_gradient_every_broadcast(config, bias_shape):
    """The bias is added to the scores on every forward variant; dBias is dS summed over the broadcast dims."""
    q, k, v, do = _tensors(2, 2, 21, 16)
    bias = torch.randn(bias_shape, device=q.device)
    f = token_frames(21, 5, 4, "last")
    got = _launch(q, k, v, do, _mask_args(), fa.Features(bias=bias), config, with_dbias=True)
    expected = oracle(q, k, v, do, allowed=rule_allowed(f, f, "other").to(q.device), bias=bias, scale=SCALE)
    _compare(got, expected, f"bias {bias_shape}")
    assert got["dbias"].shape == bias.shape


@pytest.mark.parametrize("target", [1, 2], ids=["one-group", "groups-of-2"])
def test_dbias_groups_of_sequences(monkeypatch, target):
    """A bias shared by the batch and the heads is reduced in groups of sequences (one partial each, summed after),
    each program looping over its sequences and every head: one group of all 3 sequences, or groups of 2 and 1;
    both match the oracle and repeat bit for bit."""
    monkeypatch.setattr(fa.ops, "DBIAS_TARGET_PROGRAMS", target)
    groups, per_group = fa.dbias_groups(3, 1, 1, 21)
    assert (groups, per_group) == ((1, 3) if target == 1 else (2, 2))
    q, k, v, do = _tensors(3, 2, 21, 16)
    bias = torch.randn(1, 1, 21, 21, device=q.device)
    features = fa.Features(bias=bias)
    f = token_frames(21, 5, 4, "last")
    got = _launch(q, k, v, do, _mask_args(), features, ONLINE32, with_dbias=True)
    expected = oracle(q, k, v, do, allowed=rule_allowed(f, f, "other").to(q.device), bias=bias, scale=SCALE)
    _compare(got, expected, f"{groups} groups")
    again = _launch(q, k, v, do, _mask_args(), features, ONLINE32, with_dbias=True)
    assert torch.equal(got["dbias"], again["dbias"])


@pytest.mark.parametrize("config", [ONLINE16, WHOLE32], ids=["online16", "whole-row32"])
@pytest.mark.parametrize(("kind", "rule", "radius", "cls"), [
    (fa.MASK_FRAME, "other", 0, "first"), (fa.MASK_WINDOW, "window", 1, "last"), (fa.MASK_WINDOW, "window", 0, "none"),
])
def test_joint_major_frames(config, kind, rule, radius, cls):
    """Joint-major tokens (``j * num_frames + f``) under the frame and window rules, CLS first / last / none."""
    n = 4 * 6 + (cls != "none")
    q, k, v, do = _tensors(2, 1, n, 16)
    f = token_frames(n, 4, 6, cls, "joint_major")
    args = _mask_args(kind, 4, fa.CLS_CODES[cls])
    got = _launch(q, k, v, do, args, fa.Features(frame_source=fa.FRAMES_JOINT_MAJOR, num_frames=6, window=radius),
                  config)
    _compare(got, oracle(q, k, v, do, allowed=rule_allowed(f, f, rule, radius).to(q.device), scale=SCALE),
             "joint-major")


@pytest.mark.parametrize(("config", "kind", "rule", "radius", "allow_self"), [
    pytest.param(ONLINE16, fa.MASK_FRAME, "other", 0, True, id="other-online16"),
    pytest.param(WHOLE32, fa.MASK_FRAME, "other", 0, False, id="other-noself-whole-row32"),
    pytest.param(ONLINE16, fa.MASK_WINDOW, "window", 2, True, id="window2-online16"),
])
def test_ids_with_key_padding(config, kind, rule, radius, allow_self):
    """Per-sample ids in any order (-1 global), combined with key padding, separate key ids."""
    b, n = 2, 37
    q, k, v, do = _tensors(b, 1, n, 16)
    g = torch.Generator().manual_seed(5)
    q_ids = torch.randint(-1, 7, (b, n), generator=g, dtype=torch.int32)
    k_ids = torch.randint(-1, 7, (b, n), generator=g, dtype=torch.int32)
    lengths = torch.tensor([30, 11], device=q.device)
    features = fa.Features(q_ids=q_ids.to(q.device), k_ids=k_ids.to(q.device), frame_source=fa.FRAMES_FROM_IDS,
                           window=radius)
    got = _launch(q, k, v, do, _mask_args(kind, 1, fa.CLS_NONE, allow_self, lengths, cls_last_key=False), features,
                  config)
    allowed = rule_allowed(q_ids.long(), k_ids.long(), rule, radius, allow_self)[:, None] & padding_allowed(
        [30, 11], n, False)
    _compare(got, oracle(q, k, v, do, allowed=allowed.to(q.device), scale=SCALE), "ids")


@pytest.mark.parametrize("config", [ONLINE16, WHOLE32], ids=["online16", "whole-row32"])
def test_dropout_keep_mask_forward_and_backward(config):
    """The kernels drop exactly ``attention_dropout_mask(seed)``, forward, backward and in dBias."""
    q, k, v, do = _tensors(2, 1, 21, 16)
    seed = torch.tensor([987654], device=q.device)
    bias = torch.randn(1, 1, 21, 21, device=q.device)
    features = fa.Features(bias=bias, seed=seed, dropout_p=0.4)
    got = _launch(q, k, v, do, _mask_args(), features, config, with_dbias=True)
    keep = fa.attention_dropout_mask(seed, 2, 1, 21, 0.4)
    f = token_frames(21, 5, 4, "last")
    expected = oracle(q, k, v, do, allowed=rule_allowed(f, f, "other").to(q.device), bias=bias, scale=SCALE,
                      keep=keep, dropout_p=0.4)
    _compare(got, expected, "dropout")


def test_dropout_mask_depends_on_seed_and_head_only():
    seed = torch.tensor([42], device=kernel_device())
    first = fa.attention_dropout_mask(seed, 2, 2, 32, 0.25)
    assert torch.equal(first, fa.attention_dropout_mask(seed, 2, 2, 32, 0.25))
    assert not torch.equal(first, fa.attention_dropout_mask(seed + 1, 2, 2, 32, 0.25))
    assert not torch.equal(first[0, 0], first[0, 1]) and not torch.equal(first[0, 0], first[1, 0])
    assert abs(first.float().mean().item() - 0.75) < 0.03


def test_window_tiles_outside_the_band_are_skipped():
    """Frames of 16 tokens, radius 0, 16-wide tiles: q-tile 0 (frame 0) never loads kv-tiles 1.. (other frames).
    NaN in K and V rows 16.. would reach O rows 0-15 through ``p (= 0) @ V`` if those tiles ran."""
    q, k, v, _ = _tensors(1, 1, 48, 16)
    k, v = k.clone(), v.clone()
    k[:, :, 16:], v[:, :, 16:] = float("nan"), float("nan")
    features = fa.Features(window=0)
    with poison_torch_empty():
        o, _ = fa.frame_attention_fwd(q, k, v, *_mask_args(fa.MASK_WINDOW, 16, fa.CLS_NONE), config=ONLINE16,
                                      variant="split", features=features)
    assert torch.isfinite(o[:, :, :16]).all() and torch.isnan(o[:, :, 16:]).all()


def test_id_tiles_of_one_segment_skip_the_others():
    """Ids sorted in segments of 16: under ``rule="same"`` (window 0) tiles of different segments are skipped;
    NaN in the other segments' K and V never reaches segment 0's rows."""
    q, k, v, _ = _tensors(1, 1, 48, 16)
    k, v = k.clone(), v.clone()
    k[:, :, 16:], v[:, :, 16:] = float("nan"), float("nan")
    ids = (torch.arange(48, dtype=torch.int32) // 16)[None].to(q.device)
    features = fa.Features(q_ids=ids, k_ids=ids, frame_source=fa.FRAMES_FROM_IDS, window=0)
    o, _ = fa.frame_attention_fwd(q, k, v, *_mask_args(fa.MASK_WINDOW, 1, fa.CLS_NONE), config=ONLINE16,
                                  variant="split", features=features)
    assert torch.isfinite(o[:, :, :16]).all() and torch.isnan(o[:, :, 16:]).all()


def test_resident_kernels_take_no_features(monkeypatch):
    """Features run on the split kernels: the environment's resident choice gives way, an explicit one is refused."""
    monkeypatch.setenv(capabilities.FRAME_ATTENTION_KERNEL_ENV, "resident")
    q = torch.zeros(2, 2, 26, 16)
    features = fa.Features(bias=torch.zeros(1, 2, 26, 26))
    launches = record_launches(fa.ops, fa.frame_attention_fwd, q, q, q, *_mask_args(frame_size=25),
                               features=features)
    assert [launch.kernel.fn.__name__ for launch in launches] == ["frame_attention_fwd_kernel"]
    with pytest.raises(ValueError, match="the resident kernel takes no bias"):
        fa.frame_attention_fwd(q, q, q, *_mask_args(frame_size=25), variant="resident", features=features)


@pytest.mark.parametrize(("features", "match"), [
    pytest.param(fa.Features(bias=torch.zeros(2, 2, 26)), r"bias must be \[B\|1, H\|1, N\|1, N\|1\]", id="bias-3d"),
    pytest.param(fa.Features(bias=torch.zeros(1, 1, 26, 26, dtype=torch.float64)), "bias dtype torch.float64",
                 id="bias-fp64"),
    pytest.param(fa.Features(q_ids=torch.zeros(2, 26, dtype=torch.int64), k_ids=torch.zeros(2, 26, dtype=torch.int64),
                             frame_source=fa.FRAMES_FROM_IDS), "q_ids must be int32", id="ids-int64"),
    pytest.param(fa.Features(frame_source=fa.FRAMES_JOINT_MAJOR), "num_frames", id="joint-major-no-frames"),
    pytest.param(fa.Features(dropout_p=0.5), "comes with a seed", id="dropout-no-seed"),
])
def test_launcher_rejects_bad_features(features, match):
    q = torch.zeros(2, 2, 26, 16, device=kernel_device())
    with pytest.raises(ValueError, match=match):
        fa.frame_attention_fwd(q, q, q, *_mask_args(frame_size=25), features=features)
