"""The typed masks of ``hitrs_fast.masks``: what each materialises (against pairs built token by token), their
FlexAttention ``mask_mod``, composition with ``&``, and the errors that keep a mask from meaning something else
silently (no default CLS position, lengths' unit, exact types)."""

from __future__ import annotations

import pytest
import torch

from hitrs_fast.masks import (
    AndMask,
    DenseMask,
    FrameMask,
    KeyPaddingMask,
    NoMask,
    SlidingWindowMask,
    TokenIdMask,
)
from tests.support.attention_oracle import padding_allowed, rule_allowed, token_frames


@pytest.mark.parametrize(("mask", "expected"), [
    pytest.param(FrameMask(5, 3, cls="last", order="joint_major"),
                 lambda: rule_allowed(*[token_frames(16, 5, 3, "last", "joint_major")] * 2, "other"),
                 id="frame-joint-major-cls-last"),
    pytest.param(FrameMask(5, 3, cls="first", allow_self=False),
                 lambda: rule_allowed(*[token_frames(16, 5, 3, "first")] * 2, "other", allow_self=False),
                 id="frame-cls-first-noself"),
    pytest.param(SlidingWindowMask(4, 5, 1, cls="none"),
                 lambda: rule_allowed(*[token_frames(20, 4, 5, "none")] * 2, "window", 1), id="window-r1"),
    pytest.param(SlidingWindowMask(3, 6, 2, cls="last", order="joint_major"),
                 lambda: rule_allowed(*[token_frames(19, 3, 6, "last", "joint_major")] * 2, "window", 2),
                 id="window-r2-joint-major"),
    pytest.param(SlidingWindowMask(3, 4, 0, cls="first"),
                 lambda: rule_allowed(*[token_frames(13, 3, 4, "first")] * 2, "window", 0), id="window-r0"),
])
def test_structured_masks_match_pairs_built_token_by_token(mask, expected):
    allowed = mask.materialize()
    assert torch.equal(allowed, expected())
    n = mask.num_tokens
    q, k = torch.arange(n)[:, None], torch.arange(n)[None, :]
    assert torch.equal(mask.mask_mod()(torch.tensor(0), torch.tensor(0), q, k).expand(n, n), allowed), "mask_mod"


def test_window_mask_counts():
    """Frames within +-1 of 5 frames of 4 joints: end frames see 2 frames (8 keys), inner ones 3 (12)."""
    counts = SlidingWindowMask(4, 5, 1, cls="none").materialize().sum(-1)
    assert counts.tolist() == [8] * 4 + [12] * 12 + [8] * 4


@pytest.mark.parametrize("rule", ["other", "same", "window"])
def test_token_id_mask_per_sample(rule):
    """Per-sample ids in any order (a masked autoencoder's kept tokens): [B, 1, N, N]; -1 is a global token."""
    ids = torch.tensor([[3, 0, 0, 2, -1, 1], [1, 1, 1, 4, 5, 4]])
    mask = TokenIdMask(ids, rule=rule, radius=1 if rule == "window" else 0)
    allowed = mask.materialize()
    assert allowed.shape == (2, 1, 6, 6)
    expected = rule_allowed(ids, ids, "other" if rule == "other" else "window", 1 if rule == "window" else 0)
    assert torch.equal(allowed[:, 0], expected)
    b, q, k = torch.arange(2)[:, None, None], torch.arange(6)[None, :, None], torch.arange(6)[None, None, :]
    assert torch.equal(mask.mask_mod()(b, 0, q, k), allowed[:, 0]), "mask_mod"


def test_token_id_mask_separate_key_ids():
    q_ids, k_ids = torch.tensor([0, 1, 2]), torch.tensor([2, 2, 0])
    allowed = TokenIdMask(q_ids, k_ids, rule="same").materialize()
    assert allowed.int().tolist() == [[0, 0, 1], [0, 0, 0], [1, 1, 0]]


@pytest.mark.parametrize(("mask", "prefix", "trailing"), [
    pytest.param(KeyPaddingMask(torch.tensor([2, 0]), unit="frames", frame_size=3, cls="last"), [6, 0], True,
                 id="frames-cls-last"),
    pytest.param(KeyPaddingMask(torch.tensor([2, 0]), unit="frames", frame_size=3, cls="first"), [7, 1], False,
                 id="frames-cls-first"),
    pytest.param(KeyPaddingMask(torch.tensor([5, 9]), unit="tokens", cls="none"), [5, 9], False, id="tokens-no-cls"),
])
def test_key_padding_units_and_cls(mask, prefix, trailing):
    n = 10
    assert torch.equal(mask.materialize(n, n), padding_allowed(prefix, n, trailing).expand(2, 1, n, n))
    q, k = torch.arange(n)[None, :, None], torch.arange(n)[None, None, :]
    b = torch.arange(2)[:, None, None]
    assert torch.equal(mask.mask_mod(n)(b, 0, q, k).expand(2, n, n), mask.materialize(n, n)[:, 0]), "mask_mod"


def test_and_composes_and_flattens():
    frame = FrameMask(2, 3, cls="last")
    padding = KeyPaddingMask(torch.tensor([4, 6]), unit="tokens", cls="last")
    dense = torch.rand(7, 7) > 0.3
    combined = frame & padding & dense
    assert type(combined) is AndMask and len(combined.parts) == 3 and type(combined.parts[2]) is DenseMask
    expected = frame.materialize() & padding.materialize(7, 7) & dense
    assert torch.equal(combined.materialize(7, 7), expected)
    assert "FrameMask" in combined.describe() and "KeyPaddingMask" in combined.describe()
    with pytest.raises(ValueError, match="float DenseMask cannot be combined"):
        frame & torch.zeros(7, 7)


@pytest.mark.parametrize(("build", "error", "match"), [
    pytest.param(lambda: FrameMask(25, 7), TypeError, "missing 1 required keyword-only argument: 'cls'",
                 id="frame-needs-cls"),
    pytest.param(lambda: SlidingWindowMask(25, 7, 1), TypeError, "'cls'", id="window-needs-cls"),
    pytest.param(lambda: KeyPaddingMask(torch.tensor([3])), TypeError, "'unit' and 'cls'", id="padding-needs-both"),
    pytest.param(lambda: KeyPaddingMask(torch.tensor([3]), unit="frames", cls="last"), ValueError,
                 "frame_size .* goes with unit='frames'", id="frames-need-frame-size"),
    pytest.param(lambda: KeyPaddingMask(torch.tensor([3]), unit="clips", cls="last"), ValueError,
                 "unit must be 'tokens' or 'frames'", id="bad-unit"),
    pytest.param(lambda: FrameMask(25, 7, cls="middle"), ValueError, "cls must be", id="bad-cls"),
    pytest.param(lambda: FrameMask(25, 7, cls="last", order="time_major"), ValueError, "order must be",
                 id="bad-order"),
    pytest.param(lambda: TokenIdMask(torch.rand(5), rule="other"), ValueError, "integer tensor", id="float-ids"),
    pytest.param(lambda: TokenIdMask(torch.arange(5), rule="nearby"), ValueError, "rule must be", id="bad-rule"),
    pytest.param(lambda: TokenIdMask(torch.arange(5), rule="same", radius=2), ValueError, "needs rule='window'",
                 id="radius-without-window"),
    pytest.param(lambda: DenseMask(torch.ones(5, dtype=torch.int64)), ValueError, "bool or float", id="dense-int"),
])
def test_masks_refuse_what_would_be_a_silent_guess(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_check_names_the_mismatch():
    assert "covers 176 tokens, q has N = 175" in FrameMask(25, 7, cls="last").check(2, 175)
    assert "[B] = [3]" in KeyPaddingMask(torch.tensor([1, 2]), unit="tokens", cls="none").check(3, 10)
    assert "TokenIdMask.q_ids must be [N] or [B, N] = [2, 6]" in TokenIdMask(torch.zeros(3, 6, dtype=torch.int64),
                                                                             rule="same").check(2, 6)
    assert DenseMask(torch.ones(2, 1, 6, 6, dtype=torch.bool)).check(2, 6) is None
    assert "does not broadcast" in DenseMask(torch.ones(5, 5, dtype=torch.bool)).check(2, 6)
    assert NoMask().check(4, 9) is None
