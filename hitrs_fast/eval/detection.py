"""Temporal action detection scoring: the two PKU-MMD evaluation protocols (mAP).

Two protocols are in use for PKU-MMD Part I and their numbers are **not comparable**:

* **Protocol A** (the official ECHO960/PKU-MMD ``evaluate.py``, used by the Hi-TRS paper with
  theta = 0.5), re-implemented here in Python 3 from its description: overlap without +1 (it can be
  negative), a proposal goes to the same-label, same-video ground truth (GT) with the largest overlap
  >= theta (ties: the later GT), and AP is computed by removing proposals in **ascending** confidence
  order with an interpolated precision. It reports mAP_a (over classes 1..num_classes, a class without
  GT scores 0 and still counts), mAP_v (over evaluated videos), F1 at theta, the global AP and 2D-AP
  (mean AP over theta in {0.05, 0.10, ..., 1.00}).
* **Protocol B** (JHang2020/Simple-Skeleton-Detection ``processor/evaluate_metrics.py``, used by
  HiCLR, PCM3, USDRL): IoU on inclusive integer frames, detections in **descending** score order, a TP
  needs IoU >= 0.5 with a still-unmatched GT, VOC all-points AP, mAP over the classes present in the GT.

Proposals and ground truth use one format for both protocols, either

* a sequence of rows ``(video, label, start, end, confidence)`` (``confidence`` is optional for GT;
  PKU label files carry 1 = slight / 2 = strong there, which no protocol uses), or
* a mapping ``video -> array-like [n, 4]`` of ``(label, start, end, confidence)`` rows (``[n, 3]`` is
  accepted for GT). A mapping can hold videos with no rows, which is how an empty proposal file of the
  official script is expressed.

``video`` is any hashable id (file stem or integer). Labels are integers 1..num_classes; background
(class 0 of the per-frame classifiers) never appears in a proposal. Frame coordinates must be the
label files' own (``frame_base`` of the store); per-frame predictions become proposals in
:mod:`hitrs_fast.eval.segments`.

Examples::

    >>> gt = {"0291-L": [[3, 10, 50]], "0291-M": [[7, 0, 30]]}
    >>> props = [("0291-L", 3, 12, 48, 0.9), ("0291-M", 7, 40, 60, 0.8)]
    >>> r = evaluate_detection(props, gt, protocol="A", theta=0.5, num_classes=51)
    >>> round(r["mAP_a"] * 51, 6), r["mAP_v"]
    (1.0, 0.5)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = [
    "PKU_NUM_CLASSES",
    "THETAS_2D_AP",
    "evaluate_detection",
]

PKU_NUM_CLASSES = 51
# 2D-AP thresholds 0.05, 0.10, ..., 1.00, each the double nearest to its decimal value (k / 20). A script that
# computes k * 0.05 gets 0.15000000000000002 etc. for 7 of the 20 and differs on overlaps exactly at those values.
THETAS_2D_AP: tuple[float, ...] = tuple(k / 20 for k in range(1, 21))


@dataclass(frozen=True)
class _Rows:
    """Structure-of-arrays view of detection rows, in input order.

    ``video`` holds indices into ``videos`` (first-appearance order, empty mapping entries included).
    """

    videos: list[Hashable]
    video: np.ndarray  # int64 [n]
    label: np.ndarray  # int64 [n]
    start: np.ndarray  # float64 [n]
    end: np.ndarray  # float64 [n]
    conf: np.ndarray  # float64 [n]

    def __len__(self) -> int:
        return int(self.label.shape[0])


def _parse_rows(data: Any, what: str, *, is_gt: bool, num_classes: int) -> _Rows:
    """Normalises a proposal / GT container (see module docstring) into :class:`_Rows`.

    Raises ValueError naming ``what`` and the offending row for a malformed row, a non-integer or
    out-of-range label, a non-finite value or ``start > end``.
    """
    videos: list[Hashable] = []
    vid_index: dict[Hashable, int] = {}
    cols: list[list[float]] = [[], [], [], [], []]  # video index, label, start, end, conf

    def video_id(v: Any, where: str) -> int:
        try:
            hash(v)
        except TypeError:
            raise ValueError(f"{what}{where}: video id must be hashable, got {type(v).__name__}") from None
        if v not in vid_index:
            vid_index[v] = len(videos)
            videos.append(v)
        return vid_index[v]

    def add(vi: int, row: Sequence[Any], where: str) -> None:
        try:
            vals = [float(x) for x in row]
        except (TypeError, ValueError):
            raise ValueError(f"{what}{where}: expected numbers (label, start, end[, conf]), got {row!r}") from None
        if len(vals) == 3:
            if not is_gt:
                raise ValueError(f"{what}{where}: a proposal needs (label, start, end, confidence), got {row!r}")
            vals.append(0.0)
        if len(vals) != 4:
            raise ValueError(f"{what}{where}: expected (label, start, end, conf), got {len(vals)} values: {row!r}")
        label, start, end, conf = vals
        if not all(np.isfinite(vals)):
            raise ValueError(f"{what}{where}: non-finite value in {row!r}")
        if label != int(label) or not 1 <= int(label) <= num_classes:
            raise ValueError(f"{what}{where}: label must be an integer in 1..{num_classes}, got {row[0]!r}")
        if start > end:
            raise ValueError(f"{what}{where}: start {start} > end {end}")
        for c, x in zip(cols, (vi, label, start, end, conf), strict=True):
            c.append(x)

    if isinstance(data, Mapping):
        for v, arr in data.items():
            vi = video_id(v, f"[{v!r}]")
            try:
                a = np.asarray(arr, dtype=np.float64)
            except (TypeError, ValueError):
                raise ValueError(f"{what}[{v!r}]: expected numeric rows (label, start, end[, confidence])") from None
            if a.size == 0:
                continue
            if a.ndim != 2:
                raise ValueError(f"{what}[{v!r}]: expected an array-like [n, 4] ([n, 3] for GT), got shape {a.shape}")
            for i, row in enumerate(a.tolist()):
                add(vi, row, f"[{v!r}][{i}]")
    elif isinstance(data, Iterable) and not isinstance(data, str | bytes):
        for i, row in enumerate(data):
            if isinstance(row, str | bytes) or not isinstance(row, Sequence | np.ndarray):
                raise ValueError(f"{what}[{i}]: expected a row (video, label, start, end, confidence), got {row!r}")
            row = list(row)
            if len(row) not in ((4, 5) if is_gt else (5,)):
                raise ValueError(
                    f"{what}[{i}]: expected (video, label, start, end{', conf' if not is_gt else '[, conf]'})"
                    f", got {len(row)} fields: {row!r}"
                )
            add(video_id(row[0], f"[{i}]"), row[1:], f"[{i}]")
    else:
        raise ValueError(f"{what}: expected a sequence of rows or a mapping video -> rows, got {type(data).__name__}")

    return _Rows(
        videos=videos,
        video=np.asarray(cols[0], dtype=np.int64),
        label=np.asarray(cols[1], dtype=np.int64),
        start=np.asarray(cols[2], dtype=np.float64),
        end=np.asarray(cols[3], dtype=np.float64),
        conf=np.asarray(cols[4], dtype=np.float64),
    )


def _remap_videos(rows: _Rows, videos: list[Hashable]) -> np.ndarray:
    """Video index of every row in the common ``videos`` list; -1 for a video not in it."""
    pos = {v: i for i, v in enumerate(videos)}
    lut = np.asarray([pos.get(v, -1) for v in rows.videos], dtype=np.int64)
    return lut[rows.video] if len(rows) else np.zeros(0, dtype=np.int64)


# ----------------------------------------------------------------------------- protocol A


def _best_gt_a(
    p_vid: np.ndarray,
    p_lab: np.ndarray,
    p_s: np.ndarray,
    p_e: np.ndarray,
    g_vid: np.ndarray,
    g_lab: np.ndarray,
    g_s: np.ndarray,
    g_e: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Best same-label, same-video GT of every proposal under the protocol A overlap.

    overlap = (min(e_p, e_g) - max(s_p, s_g)) / (max(e_p, e_g) - min(s_p, s_g)), no +1, may be negative.
    The matched GT at threshold theta is the one with the largest overlap among those >= theta; that is the
    overall arg-max whenever the maximum itself is >= theta, so the arg-max (ties: the GT listed later) is
    computed once here and only thresholded per theta.

    Returns:
        best: int64 ``[P]`` GT row index, -1 when the proposal's (video, label) has no GT.
        best_overlap: float64 ``[P]``, -inf when ``best`` is -1.
    """
    best = np.full(p_vid.shape[0], -1, dtype=np.int64)
    best_ov = np.full(p_vid.shape[0], -np.inf, dtype=np.float64)
    groups: dict[tuple[int, int], list[int]] = {}
    for j, key in enumerate(zip(g_vid.tolist(), g_lab.tolist(), strict=True)):
        groups.setdefault(key, []).append(j)
    p_groups: dict[tuple[int, int], list[int]] = {}
    for i, key in enumerate(zip(p_vid.tolist(), p_lab.tolist(), strict=True)):
        p_groups.setdefault(key, []).append(i)
    for key, pi in p_groups.items():
        gj = groups.get(key)
        if gj is None:
            continue
        pi_a, gj_a = np.asarray(pi), np.asarray(gj)
        ps, pe = p_s[pi_a, None], p_e[pi_a, None]
        gs, ge = g_s[None, gj_a], g_e[None, gj_a]
        ov = (np.minimum(pe, ge) - np.maximum(ps, gs)) / (np.maximum(pe, ge) - np.minimum(ps, gs))
        # Arg-max over the reversed GT axis: among equal overlaps the later GT wins, as in the official loop
        # (it replaces the current match unless the new overlap is strictly smaller).
        last = ov.shape[1] - 1 - np.argmax(ov[:, ::-1], axis=1)
        best[pi_a] = gj_a[last]
        best_ov[pi_a] = ov[np.arange(len(pi)), last]
    return best, best_ov


def _pr(positive: int, n_proposal: int, n_ground: int) -> tuple[float, float]:
    if n_proposal == 0 or n_ground == 0:
        return 0.0, 0.0
    return positive / n_proposal, positive / n_ground


def _ap_a(conf: np.ndarray, match: np.ndarray, n_ground: int) -> float:
    """Protocol A interpolated AP of one proposal list.

    Args:
        conf: float64 ``[P]`` confidences, in the list's own order (ties keep it: stable sort).
        match: int64 ``[P]`` matched GT id at the current theta, -1 if unmatched.
        n_ground: number of GTs in the list's GT set.
    """
    order = np.argsort(conf, kind="stable")
    matched = match[order].tolist()
    count = Counter(g for g in matched if g >= 0)
    positive = len(count)
    n_proposal = len(matched)
    p_int, r_prev = _pr(positive, n_proposal, n_ground)
    score = 0.0
    for g in matched:  # least confident first
        n_proposal -= 1
        if g < 0:  # an unmatched proposal leaves P_int untouched, even though precision rises
            continue
        count[g] -= 1
        if count[g] == 0:
            positive -= 1
        p, r = _pr(positive, n_proposal, n_ground)
        p_int = max(p_int, p)
        score += p_int * (r_prev - r)
        r_prev = r
    return score


def _f1_a(match: np.ndarray, n_ground: int) -> float:
    p, r = _pr(len({g for g in match.tolist() if g >= 0}), match.shape[0], n_ground)
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def _evaluate_a(props: _Rows, gt: _Rows, theta: float, num_classes: int, videos: Sequence[Hashable] | None) -> dict:
    if videos is None:
        # One proposal file per video that has GT or proposals (an absent detection list = an empty file).
        video_list = list(dict.fromkeys([*gt.videos, *props.videos]))
    else:
        video_list = list(dict.fromkeys(videos))
    p_vid = _remap_videos(props, video_list)
    if np.any(p_vid < 0):
        bad = props.videos[int(props.video[np.argmax(p_vid < 0)])]
        raise ValueError(f"proposals: video {bad!r} is not in `videos` (the evaluated proposal files)")
    g_vid_all = _remap_videos(gt, video_list)
    # The official script reads GT only for videos that have a proposal file.
    keep = g_vid_all >= 0
    g_vid, g_lab, g_s, g_e = g_vid_all[keep], gt.label[keep], gt.start[keep], gt.end[keep]
    if np.any(g_e <= g_s):
        j = int(np.argmax(g_e <= g_s))
        raise ValueError(f"ground_truth: protocol A needs end > start, got start {g_s[j]} end {g_e[j]}")

    best, best_ov = _best_gt_a(p_vid, props.label, props.start, props.end, g_vid, g_lab, g_s, g_e)

    def match_at(t: float) -> np.ndarray:
        return np.where(best_ov >= t, best, -1)

    m = match_at(theta)
    n_gt = int(g_lab.shape[0])

    ap_class = np.zeros(num_classes, dtype=np.float64)
    g_per_class = np.bincount(g_lab, minlength=num_classes + 1)
    for c in range(1, num_classes + 1):
        sel = props.label == c
        ap_class[c - 1] = _ap_a(props.conf[sel], m[sel], int(g_per_class[c]))

    g_per_video = np.bincount(g_vid, minlength=len(video_list))
    ap_video: dict[Hashable, float] = {}
    for vi, v in enumerate(video_list):
        sel = p_vid == vi
        ap_video[v] = _ap_a(props.conf[sel], m[sel], int(g_per_video[vi]))

    # The official global list is the per-class lists concatenated by class; confidence ties keep that order.
    glob = np.argsort(props.label, kind="stable")
    conf_g = props.conf[glob]
    ap_global = _ap_a(conf_g, m[glob], n_gt)
    ap_2d = float(np.mean([_ap_a(conf_g, match_at(t)[glob], n_gt) for t in THETAS_2D_AP]))

    return {
        "protocol": "A",
        "theta": theta,
        "mAP_a": float(ap_class.sum() / num_classes),
        "mAP_v": float(np.mean(list(ap_video.values()))) if ap_video else float("nan"),
        "ap_global": ap_global,
        "f1": _f1_a(m, n_gt),
        "ap_2d": ap_2d,
        "ap_per_class": ap_class,
        "ap_per_video": ap_video,
        "num_videos": len(video_list),
        "num_proposals": len(props),
        "num_ground_truth": n_gt,
        "num_ground_truth_dropped": int((~keep).sum()),
    }


# ----------------------------------------------------------------------------- protocol B


def _voc_ap(rec: np.ndarray, prec: np.ndarray) -> float:
    """VOC all-points AP: sentinels (0, 0) and (1, 0), precision made monotone from the right."""
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.nonzero(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))


def _evaluate_b(props: _Rows, gt: _Rows, theta: float) -> dict:
    for rows, what in ((props, "proposals"), (gt, "ground_truth")):
        bad = (rows.start != np.round(rows.start)) | (rows.end != np.round(rows.end))
        if np.any(bad):
            j = int(np.argmax(bad))
            raise ValueError(
                f"{what}: protocol B works on inclusive integer frames, got start {rows.start[j]} end {rows.end[j]}"
            )
    if len(gt) == 0:
        raise ValueError("ground_truth: protocol B averages over the classes present in the GT, and there are none")
    video_list = list(dict.fromkeys([*gt.videos, *props.videos]))
    p_vid, g_vid = _remap_videos(props, video_list), _remap_videos(gt, video_list)

    classes = sorted(set(gt.label.tolist()))
    groups: dict[tuple[int, int], np.ndarray] = {}
    for key in set(zip(g_vid.tolist(), gt.label.tolist(), strict=True)):
        groups[key] = np.nonzero((g_vid == key[0]) & (gt.label == key[1]))[0]

    ap_class: dict[int, float] = {}
    for c in classes:
        n_pos = int((gt.label == c).sum())
        di = np.nonzero(props.label == c)[0]
        # Descending score; ties keep the input order (stable), which numpy's default sort does not promise.
        di = di[np.argsort(-props.conf[di], kind="stable")]
        used: dict[int, bool] = {}
        tp = np.zeros(di.shape[0])
        for k, d in enumerate(di.tolist()):
            gj = groups.get((int(p_vid[d]), c))
            if gj is None:  # no GT of this class in this video (or an unknown video): a false positive
                continue
            s, e = props.start[d], props.end[d]
            inter = np.minimum(e, gt.end[gj]) - np.maximum(s, gt.start[gj]) + 1
            union = (e - s + 1) + (gt.end[gj] - gt.start[gj] + 1) - inter
            iou = np.where(inter > 0, inter / np.where(inter > 0, union, 1.0), 0.0)
            # Strict '>' from 0: an IoU of 0 never matches, and among equal IoUs the first GT wins.
            j = int(np.argmax(iou))
            if iou[j] > 0 and iou[j] >= theta and not used.get(int(gj[j]), False):
                tp[k] = 1.0
                used[int(gj[j])] = True
        ctp = np.cumsum(tp)
        cfp = np.cumsum(1.0 - tp)
        ap_class[c] = _voc_ap(ctp / n_pos, ctp / (ctp + cfp))

    dropped = int((~np.isin(props.label, classes)).sum())
    return {
        "protocol": "B",
        "theta": theta,
        "mAP": float(np.mean(list(ap_class.values()))),
        "ap_per_class": ap_class,
        "num_classes_evaluated": len(classes),
        "num_proposals": len(props),
        "num_proposals_dropped": dropped,
        "num_ground_truth": len(gt),
    }


def evaluate_detection(
    proposals: Any,
    ground_truth: Any,
    protocol: Literal["A", "B"] = "A",
    theta: float = 0.5,
    num_classes: int = PKU_NUM_CLASSES,
    videos: Sequence[Hashable] | None = None,
) -> dict:
    """Evaluates temporal detections against ground truth with PKU-MMD protocol A or B.

    Args:
        proposals: rows ``(video, label, start, end, confidence)`` or a mapping ``video -> [n, 4]``
            (see the module docstring). May be empty.
        ground_truth: same format; the confidence column is optional and ignored.
        protocol: ``"A"`` (official PKU-MMD, the Hi-TRS paper's protocol) or ``"B"`` (community VOC-style).
        theta: overlap threshold in (0, 1]; protocol A's overlap, protocol B's IoU. Default 0.5.
        num_classes: labels are integers 1..num_classes (51 for PKU-MMD). Protocol A averages mAP_a over
            all of them; protocol B averages only over the classes present in the GT.
        videos: protocol A only: the videos that have a proposal file in the official script. GT rows of
            other videos are dropped (the official script never reads them) and proposals of other videos
            are an error. Default: every video that has GT or proposals, i.e. one proposal file per test
            video, empty where nothing was detected. Order is irrelevant.

    Returns:
        Protocol A: ``mAP_a``, ``mAP_v`` (mean over the evaluated videos), ``ap_global``, ``f1`` (at theta),
        ``ap_2d`` (mean global AP over :data:`THETAS_2D_AP`), ``ap_per_class`` (float64 ``[num_classes]``,
        index = label - 1), ``ap_per_video`` (dict), counts (``num_videos``, ``num_proposals``,
        ``num_ground_truth``, ``num_ground_truth_dropped``), ``protocol``, ``theta``. Values are fractions in
        [0, 1], not percent.

        Protocol B: ``mAP``, ``ap_per_class`` (dict label -> AP over the classes present in the GT),
        ``num_classes_evaluated``, ``num_proposals``, ``num_proposals_dropped`` (detections of classes absent
        from the GT), ``num_ground_truth``, ``protocol``, ``theta``.

    Ties in confidence are broken as the reference scripts' stable sorts do over their list order: protocol
    A removes the earlier-listed proposal first (per class and per video: input order, which equals the
    official order when rows are listed video by video in its file-listing order; the global list is first
    grouped by class, as the official script builds it); protocol B ranks the earlier-listed detection first.

    Protocol B details: a detection in a video without GT of its class is a false positive; its AP is
    computed in float64 (the reference casts recall and precision to float32, a difference below 1e-6).

    Raises:
        ValueError: an unknown protocol, theta outside (0, 1], malformed rows, labels outside
            1..num_classes, start > end, (A) a GT with end <= start, (B) non-integer frames or empty GT.
    """
    if protocol not in ("A", "B"):
        raise ValueError(f"evaluate_detection: protocol must be 'A' or 'B', got {protocol!r}")
    if not 0.0 < theta <= 1.0:
        # theta <= 0 would let the official matcher accept zero-overlap GTs of other videos.
        raise ValueError(f"evaluate_detection: theta must be in (0, 1], got {theta}")
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"evaluate_detection: num_classes must be a positive integer, got {num_classes}")
    props = _parse_rows(proposals, "proposals", is_gt=False, num_classes=num_classes)
    gt = _parse_rows(ground_truth, "ground_truth", is_gt=True, num_classes=num_classes)
    if protocol == "A":
        return _evaluate_a(props, gt, float(theta), int(num_classes), videos)
    if videos is not None:
        raise ValueError("evaluate_detection: `videos` only applies to protocol A")
    return _evaluate_b(props, gt, float(theta))
