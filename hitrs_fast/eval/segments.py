"""Temporal action detection post-processing: per-frame class probabilities -> action segments.

A per-frame classifier (``hitrs_fast.tasks.FrameDetector``) gives ``[T, K + 1]`` probabilities per
video, column 0 = background. The functions here turn them into proposals ``(label, start, end,
confidence)`` for :func:`hitrs_fast.eval.detection.evaluate_detection`:

* :func:`frame_probs_to_segments`: the library's majority-filter post-processing;
* :func:`frame_probs_to_segments_jhang2020`: the post-processing of the protocol B reference pipeline
  (JHang2020/Simple-Skeleton-Detection);
* :func:`proposals_from_frame_probs`: either one over every video of a mapping.

Segments hold 0-based inclusive frame indices plus ``offset``: pass ``offset=1`` to compare with label
files in the default ``"one_inclusive"`` frame base of PKU-MMD stores.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any, Literal

import numpy as np

__all__ = [
    "frame_probs_to_segments",
    "frame_probs_to_segments_jhang2020",
    "proposals_from_frame_probs",
]


def _as_prob_array(probs: Any) -> np.ndarray:
    if hasattr(probs, "detach"):  # torch tensor, without importing torch here
        probs = probs.detach().cpu().double().numpy()
    a = np.asarray(probs, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 2:
        raise ValueError(
            f"frame probabilities: expected [T, K + 1] with T >= 1 and K >= 1 (column 0 = background), "
            f"got shape {a.shape}"
        )
    if not np.all(np.isfinite(a)):
        raise ValueError("frame probabilities: non-finite values")
    return a


def frame_probs_to_segments(
    probs: Any,
    smooth_window: int = 9,
    min_length: int = 15,
    merge_gap: int = 0,
    offset: int = 0,
) -> np.ndarray:
    """Per-frame class probabilities -> action segments (the library's post-processing).

    Steps:

    1. per-frame arg-max label (ties: lowest class);
    2. majority (mode) filter over a centred window of ``smooth_window`` frames (odd; truncated at the
       sequence ends). A frame keeps its own label when that label ties for the majority; other ties go to
       the lowest class. ``smooth_window=1`` disables it;
    3. maximal runs of one label; background runs (label 0) are not segments;
    4. runs shorter than ``min_length`` frames are dropped;
    5. consecutive kept segments of the same class whose gap (frames strictly between them) is
       <= ``merge_gap`` are merged into one covering the gap (``merge_gap=0`` merges only touching runs,
       which step 3 never produces, so it is a no-op);
    6. confidence = mean probability of the segment's class over its frames (inclusive).

    The defaults (0.3 s smoothing and 0.5 s minimum at 30 fps) are sensible starting points, not tuned.

    Args:
        probs: ``[T, K + 1]`` probabilities (or scores) per frame, column 0 = background; numpy or torch.
        smooth_window: odd window of the majority filter, >= 1.
        min_length: minimum segment length in frames, >= 1.
        merge_gap: maximum gap in frames bridged between same-class segments, >= 0.
        offset: added to start and end (``1`` converts to 1-based label-file frames).

    Returns:
        float64 ``[n, 4]`` rows ``(label, start, end, confidence)`` with inclusive 0-based frames + offset,
        in temporal order.

    Examples::

        >>> p = np.zeros((40, 3)); p[:, 0] = 1; p[5:30, 0] = 0; p[5:30, 2] = 0.5
        >>> frame_probs_to_segments(p, smooth_window=3, min_length=5).tolist()
        [[2.0, 5.0, 29.0, 0.5]]
    """
    p = _as_prob_array(probs)
    if smooth_window < 1 or smooth_window % 2 == 0:
        raise ValueError(f"frame_probs_to_segments: smooth_window must be an odd integer >= 1, got {smooth_window}")
    if min_length < 1:
        raise ValueError(f"frame_probs_to_segments: min_length must be >= 1, got {min_length}")
    if merge_gap < 0:
        raise ValueError(f"frame_probs_to_segments: merge_gap must be >= 0, got {merge_gap}")
    t_len, n_cls = p.shape
    pred = np.argmax(p, axis=1)
    if smooth_window > 1:
        half = smooth_window // 2
        onehot = np.zeros((t_len + 1, n_cls), dtype=np.float64)
        onehot[np.arange(1, t_len + 1), pred] = 1.0
        csum = np.cumsum(onehot, axis=0)  # csum[t] = label counts of frames 0..t-1
        idx = np.arange(t_len)
        lo, hi = np.maximum(idx - half, 0), np.minimum(idx + half + 1, t_len)
        counts = csum[hi] - csum[lo]
        counts[idx, pred] += 0.5  # own label wins a tie; counts are integers so 0.5 never overturns a strict lead
        pred = np.argmax(counts, axis=1)
    change = np.nonzero(np.diff(pred))[0] + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change - 1, [t_len - 1]))
    labels = pred[starts]
    keep = (labels != 0) & (ends - starts + 1 >= min_length)
    segs: list[list[int]] = []
    for lab, s, e in zip(labels[keep].tolist(), starts[keep].tolist(), ends[keep].tolist(), strict=True):
        if segs and segs[-1][0] == lab and s - segs[-1][2] - 1 <= merge_gap:
            segs[-1][2] = e
        else:
            segs.append([lab, s, e])
    out = np.zeros((len(segs), 4), dtype=np.float64)
    for i, (lab, s, e) in enumerate(segs):
        out[i] = (lab, s + offset, e + offset, p[s : e + 1, lab].mean())
    return out


def frame_probs_to_segments_jhang2020(
    probs: Any,
    win_lg: int = 15,
    win_sm: int = 2,
    rate_min: float = 0.1,
    offset: int = 0,
) -> np.ndarray:
    """Per-frame probabilities -> segments, behaving like JHang2020 ``get_interval_frm_frame_predict``.

    This is the post-processing of protocol B's reference pipeline, re-implemented from this description.
    With ``pred`` the per-frame arg-max and ``C[t, c]`` the number of frames 0..t predicted ``c``:

    * scan an anchor ``i`` from 0 while ``i < T - win_lg``; an anchor with ``pred[i] = c > 0`` starts a
      segment when ``(C[i + win_lg, c] - C[i, c]) / win_lg > rate_min`` and ``i + 2 win_lg < T``;
      otherwise ``i += 1``;
    * grow: ``pos = i + win_lg``; while ``(C[pos + win_lg, c] - C[pos, c]) / win_lg > rate_min`` and
      ``pos + 2 win_lg < T``, ``pos += win_lg``;
    * shrink: while ``(C[pos, c] - C[pos - win_sm, c]) / win_sm < rate_min`` and ``pos > i``,
      ``pos -= win_sm``. As in the reference, ``pos - win_sm < 0`` reads ``C`` from the end of the sequence
      (Python negative indexing); this only matters for anchors in the first ``win_sm`` frames;
    * if ``pos > i``: emit ``(c, i, pos, mean(probs[i..pos, c]) rounded to 5 decimals)`` and continue from
      ``i = pos`` (the next segment may start on this one's last frame); else ``i += 1``.

    Sequences with ``T <= 2 win_lg`` (30 frames by default) yield no segment.

    Args:
        probs: ``[T, K + 1]`` per-frame probabilities, column 0 = background; numpy or torch.
        win_lg: large window (frames), >= 1. win_sm: small window, >= 1. rate_min: density threshold.
        offset: added to start and end.

    Returns:
        float64 ``[n, 4]`` rows ``(label, start, end, confidence)``, inclusive frames + offset.
    """
    p = _as_prob_array(probs)
    if win_lg < 1 or win_sm < 1:
        raise ValueError(f"frame_probs_to_segments_jhang2020: windows must be >= 1, got {win_lg}, {win_sm}")
    t_len = p.shape[0]
    pred = np.argmax(p, axis=1)
    onehot = np.zeros_like(p)
    onehot[np.arange(t_len), pred] = 1.0
    cnt = np.cumsum(onehot, axis=0)  # cnt[t, c] = frames 0..t predicted c

    def rate(a: int, b: int, c: int, w: int) -> float:
        return (cnt[a, c] - cnt[b, c]) / w  # negative b wraps around, deliberately (see docstring)

    out: list[tuple[float, float, float, float]] = []
    i = 0
    while i < t_len - win_lg:
        c = int(pred[i])
        if c > 0 and rate(i + win_lg, i, c, win_lg) > rate_min and i + 2 * win_lg < t_len:
            pos = i + win_lg
            while rate(pos + win_lg, pos, c, win_lg) > rate_min and pos + 2 * win_lg < t_len:
                pos += win_lg
            while rate(pos, pos - win_sm, c, win_sm) < rate_min and pos > i:
                pos -= win_sm
            if pos > i:
                out.append((c, i + offset, pos + offset, round(float(p[i : pos + 1, c].mean()), 5)))
                i = pos
                continue
        i += 1
    return np.asarray(out, dtype=np.float64).reshape(-1, 4)


def proposals_from_frame_probs(
    per_video: Mapping[Hashable, Any],
    method: Literal["majority", "jhang2020"] = "majority",
    **kwargs: Any,
) -> dict[Hashable, np.ndarray]:
    """Applies a frame-to-segment post-processing to every video.

    Args:
        per_video: ``video -> [T_v, K + 1]`` frame probabilities.
        method: ``"majority"`` (:func:`frame_probs_to_segments`) or ``"jhang2020"``
            (:func:`frame_probs_to_segments_jhang2020`).
        **kwargs: forwarded to the chosen function (e.g. ``offset=1``).

    Returns:
        ``video -> float64 [n_v, 4]`` segments, directly usable as ``proposals`` of
        :func:`~hitrs_fast.eval.detection.evaluate_detection` (videos without segments keep an empty entry).
    """
    if method == "majority":
        fn = frame_probs_to_segments
    elif method == "jhang2020":
        fn = frame_probs_to_segments_jhang2020
    else:
        raise ValueError(f"proposals_from_frame_probs: method must be 'majority' or 'jhang2020', got {method!r}")
    out: dict[Hashable, np.ndarray] = {}
    for v, probs in per_video.items():
        try:
            out[v] = fn(probs, **kwargs)
        except ValueError as err:
            raise ValueError(f"per_video[{v!r}]: {err}") from None
    return out
