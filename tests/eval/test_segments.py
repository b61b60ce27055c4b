"""Frame -> segment post-processing of temporal detection (``hitrs_fast.eval.segments``) on hand-computed
cases, and its proposals fed to the protocol A evaluator."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from hitrs_fast.eval.detection import evaluate_detection
from hitrs_fast.eval.segments import (
    frame_probs_to_segments,
    frame_probs_to_segments_jhang2020,
    proposals_from_frame_probs,
)


def _probs(labels: list[int], n_cls: int, p: float = 0.7) -> np.ndarray:
    """[T, n_cls] with probability p on the given label of each frame and the rest spread evenly."""
    out = np.full((len(labels), n_cls), (1 - p) / (n_cls - 1))
    out[np.arange(len(labels)), labels] = p
    return out


def test_majority_segments_smoothing_min_length_merge_offset():
    # frames: 0-4 bg, 5-24 class 2 with a 1-frame flicker to 1 at 14, 25-29 bg, 30-32 class 1, 33-39 bg,
    # 40-49 class 2
    lab = [0] * 5 + [2] * 9 + [1] + [2] * 10 + [0] * 5 + [1] * 3 + [0] * 7 + [2] * 10
    p = _probs(lab, 3)
    # No smoothing, min 1: the flicker splits class 2; every run is a segment.
    raw = frame_probs_to_segments(p, smooth_window=1, min_length=1)
    assert raw[:, :3].tolist() == [[2, 5, 13], [1, 14, 14], [2, 15, 24], [1, 30, 32], [2, 40, 49]]
    # Window 3: frame 14 sees (2, 1, 2) -> 2; the run 30-32 keeps its inside but its edges see (0, 1, 1) -> 1.
    sm = frame_probs_to_segments(p, smooth_window=3, min_length=5)
    assert sm[:, :3].tolist() == [[2, 5, 24], [2, 40, 49]]  # 30-32 (3 frames) dropped by min_length 5
    # Confidence = mean probability of class 2 over frames 5..24: 19 frames at .7 and frame 14 at .15.
    assert sm[0, 3] == pytest.approx((19 * 0.7 + 0.15) / 20, abs=1e-12)
    # merge_gap 15 bridges the 15 frames 25..39 between the two class-2 segments (the class-1 run is gone).
    merged = frame_probs_to_segments(p, smooth_window=3, min_length=5, merge_gap=15, offset=1)
    assert merged[:, :3].tolist() == [[2, 6, 50]]
    assert frame_probs_to_segments(p, smooth_window=3, min_length=5, merge_gap=14)[:, 0].tolist() == [2, 2]


def test_majority_tie_keeps_own_label():
    # Window 5 over (1, 1, 2, 2, 0), truncated at the ends:
    #   frame 0 sees (1, 1, 2) -> 1; frame 1 sees (1, 1, 2, 2): tie, keeps 1; frame 2 sees all five: 1 and 2 tie
    #   at 2, keeps 2; frame 3 sees (1, 2, 2, 0) -> 2; frame 4 sees (2, 2, 0) -> 2.
    p = _probs([1, 1, 2, 2, 0], 3)
    assert frame_probs_to_segments(p, smooth_window=5, min_length=1)[:, :3].tolist() == [[1, 0, 1], [2, 2, 4]]
    # Without the own-label rule frame 1 and 2 would both go to the lowest class (1): [[1, 0, 2], [2, 3, 4]].


def test_jhang2020_hand_trace():
    # T = 51, classes 0..4; probability 1 on class 1 at frames 0-7, class 4 at 12-29, class 3 at 33-42, else all 0
    # (arg-max 0). C[t, c] = frames 0..t predicted c.
    p = np.zeros((51, 5))
    p[0:8, 1] = 1.0
    p[12:30, 4] = 1.0
    p[33:43, 3] = 1.0
    # i = 0, c = 1: (C[15] - C[0]) / 15 = (8 - 1) / 15 > .1 and 30 < 51: pos 15; grow: (C[30] - C[15]) / 15 = 0 stop;
    #   shrink by 2 while (C[pos] - C[pos - 2]) / 2 < .1: 15, 13, 11, 9 -> 7 where (8 - 6) / 2 = 1: segment [0, 7].
    # i = 7: (C[22] - C[7]) / 15 = 0 -> i 8..11 background -> i = 12, c = 4: (C[27] - C[12]) / 15 = 15/15,
    #   42 < 51: pos 27; grow: (C[42] - C[27]) / 15 = 2/15 > .1 but 27 + 30 = 57 >= 51: stop; shrink:
    #   (C[27] - C[25]) / 2 = 1: segment [12, 27] (the action really ends at 29).
    # i = 27: 2/15 > .1 but 57 >= 51; i = 28, 29: rates 1/15, 0; 30-32 background; 33-35 (class 3): 33 + 30 >= 51.
    segs = frame_probs_to_segments_jhang2020(p)
    assert segs.tolist() == [[1, 0, 7, 1.0], [4, 12, 27, 1.0]]
    assert frame_probs_to_segments_jhang2020(p, offset=1)[:, 1:3].tolist() == [[1, 8], [13, 28]]
    # Fewer than 2 * 15 + 1 frames: nothing.
    assert frame_probs_to_segments_jhang2020(p[:30]).shape == (0, 4)


def test_jhang2020_negative_index_wraps_like_the_reference():
    # rate_min .05, T 40: class 1 at frames 0, 1 and 35-39. i = 0: (C[15] - C[0]) / 15 = 1/15 > .05: pos 15, no
    # growth; shrink 15, 13, ..., 3 (all 0) -> pos 1: (C[1] - C[-1]) / 2 reads the LAST row, (2 - 7) / 2 < .05,
    # -> pos -1 <= i: no segment (with C[-1] read as 0 it would be (2 - 0) / 2 = 1 and give [0, 1]).
    lab = [1, 1] + [0] * 33 + [1] * 5
    p = _probs(lab, 2, p=0.9)
    assert frame_probs_to_segments_jhang2020(p, rate_min=0.05).shape == (0, 4)


def test_segments_accept_torch_and_feed_the_evaluator():
    lab = [0] * 5 + [2] * 20 + [0] * 5
    probs = {"v": torch.tensor(_probs(lab, 3)), "w": torch.tensor(_probs([0] * 30, 3))}
    props = proposals_from_frame_probs(probs, smooth_window=3, min_length=5, offset=1)
    assert props["v"][:, :3].tolist() == [[2, 6, 25]] and props["w"].shape == (0, 4)
    r = evaluate_detection(props, {"v": [[2, 6, 25]], "w": [[1, 3, 20]]}, num_classes=2)
    # v: exact match, AP 1; w: no proposal, AP 0. Class 2 AP 1, class 1 AP 0.
    assert r["mAP_v"] == 0.5 and r["mAP_a"] == 0.5
    with pytest.raises(ValueError, match=r"per_video\['x'\]"):
        proposals_from_frame_probs({"x": np.zeros((4,))})


def test_every_segment_combination_of_parameters_is_valid():
    # Segments are in order, non-overlapping, within range and of the declared minimum length.
    rng = np.random.default_rng(0)
    for win, min_len, gap in itertools.product((1, 3, 7), (1, 4), (0, 3)):
        p = rng.dirichlet(np.ones(4) * 0.3, size=120)
        segs = frame_probs_to_segments(p, smooth_window=win, min_length=min_len, merge_gap=gap)
        assert np.all(segs[:, 0] >= 1) and np.all(segs[:, 2] - segs[:, 1] + 1 >= min_len)
        assert np.all(segs[1:, 1] > segs[:-1, 2]) and (segs.size == 0 or segs[-1, 2] <= 119)
        for lab, s, e, c in segs:
            assert c == pytest.approx(p[int(s) : int(e) + 1, int(lab)].mean())
