"""PKU-MMD detection protocols A and B on hand-computed cases (post-processing: test_eval_segments.py).

Every expected value below is worked out by hand in the comments. Notation for
protocol A: N = #proposals left, G = #GT, pos = #GTs with at least one matched proposal left,
P = pos / N, R = pos / G (both 0 when N or G is 0), P_int = running max of P over matched removals.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from hitrs_fast.eval.detection import THETAS_2D_AP, _best_gt_a, evaluate_detection

# ----------------------------------------------------------------------------- protocol A

# Video v1. Class 1 GT g0 = [0, 100], g1 = [200, 300]; class 2 GT g2 = [400, 500]; class 3 has no GT.
GT_A1 = [("v1", 1, 0, 100, 2), ("v1", 1, 200, 300, 1), ("v1", 2, 400, 500, 2)]
PROPS_A1 = [
    ("v1", 1, 0, 100, 0.9),  # p0: overlap(g0) = 100 / 100 = 1.0 -> g0
    ("v1", 1, 10, 100, 0.8),  # p1: overlap(g0) = 90 / 100 = 0.9 -> g0 again (duplicate on one GT)
    ("v1", 1, 150, 250, 0.7),  # p2: overlap(g1) = 50 / 150 = 0.33 < 0.5, overlap(g0) = -50 / 250 < 0: unmatched
    ("v1", 1, 200, 290, 0.6),  # p3: overlap(g1) = 90 / 100 = 0.9 -> g1
    ("v1", 3, 0, 50, 0.95),  # p4: class 3 has no GT: unmatched
]


def test_protocol_a_hand_case_duplicates_class_without_gt():
    r = evaluate_detection(PROPS_A1, GT_A1, protocol="A", theta=0.5, num_classes=3)
    # Class 1, ascending confidence p3 .6, p2 .7, p1 .8, p0 .9; count(g0) = 2, count(g1) = 1.
    #   start: N 4, pos 2, G 2: P = .5, R = 1, P_int = .5
    #   -p3 (g1 -> 0): N 3, pos 1: P = 1/3, R = .5; P_int .5; score += .5 * (1 - .5) = .25
    #   -p2 unmatched: N 2, no update
    #   -p1 (g0 -> 1): N 1, pos 1: P = 1, R = .5; P_int 1; score += 1 * 0 = 0
    #   -p0 (g0 -> 0): N 0 -> P = R = 0; P_int 1; score += 1 * (.5 - 0) = .5          AP = .75
    # Class 2: a GT and no proposal: AP 0. Class 3: no GT: AP 0, still in the denominator.
    np.testing.assert_allclose(r["ap_per_class"], [0.75, 0.0, 0.0], rtol=0, atol=1e-12)
    assert r["mAP_a"] == pytest.approx(0.75 / 3, abs=1e-12)
    # The video's list: p3 .6, p2 .7, p1 .8, p0 .9, p4 .95; G = 3 (g0, g1, g2), pos 2.
    #   start: N 5: P = .4, R = 2/3, P_int = .4
    #   -p3 (g1 -> 0): N 4, pos 1: P = .25, R = 1/3; score += .4 * 1/3
    #   -p2: N 3, skip
    #   -p1 (g0 -> 1): N 2: P = .5, R = 1/3; P_int .5; score += 0
    #   -p0 (g0 -> 0): N 1, pos 0: P = 0, R = 0; score += .5 * 1/3
    #   -p4: N 0, skip                                   AP = (.4 + .5) / 3 = .3
    assert r["ap_per_video"] == {"v1": pytest.approx(0.3, abs=1e-12)}
    assert r["mAP_v"] == pytest.approx(0.3, abs=1e-12)
    assert r["ap_global"] == pytest.approx(0.3, abs=1e-12)  # one video: the same list
    # F1 at theta: P = 2/5, R = 2/3 -> 2 * (.4 * 2/3) / (.4 + 2/3) = (8/15) / (16/15) = .5
    assert r["f1"] == pytest.approx(0.5, abs=1e-12)
    assert (r["num_videos"], r["num_proposals"], r["num_ground_truth"]) == (1, 5, 3)
    # With the PKU label space the same class APs are averaged over 51 classes.
    r51 = evaluate_detection(PROPS_A1, GT_A1, protocol="A", theta=0.5)
    assert r51["mAP_a"] == pytest.approx(0.75 / 51, abs=1e-12)


def test_protocol_a_confidence_ties_keep_input_order():
    # Class 1: g0 = [0, 100], g1 = [200, 300]. m1 -> g0 (conf .5), u unmatched (conf .5), m2 -> g1 (conf .9).
    gt = [("v", 1, 0, 100), ("v", 1, 200, 300)]
    m1, u, m2 = ("v", 1, 0, 100, 0.5), ("v", 1, 500, 600, 0.5), ("v", 1, 200, 300, 0.9)
    # start: N 3, pos 2, G 2: P = 2/3, R = 1, P_int = 2/3.
    # [m1, u, m2]: -m1: N 2, pos 1: P = .5, R = .5; score += 2/3 * .5
    #              -u: skip;  -m2: N 0: R = 0; score += 2/3 * .5                 AP = 2/3
    r = evaluate_detection([m1, u, m2], gt, num_classes=1)
    assert r["mAP_a"] == pytest.approx(2 / 3, abs=1e-12)
    # [u, m1, m2]: -u: N 2, skip (no P_int update although P rises)
    #              -m1: N 1, pos 1: P = 1, R = .5; P_int 1; score += 1 * .5
    #              -m2: N 0: score += 1 * .5                                     AP = 1
    r = evaluate_detection([u, m1, m2], gt, num_classes=1)
    assert r["mAP_a"] == pytest.approx(1.0, abs=1e-12)


def test_protocol_a_overlap_ties_go_to_the_later_gt_and_2d_ap():
    # g0 = [0, 100], g1 = [50, 150].
    # p = [25, 125]: overlap(g0) = (100 - 25) / (125 - 0) = .6, overlap(g1) = (125 - 50) / (150 - 25) = .6: tie -> g1
    # q = [50, 150]: overlap(g1) = 1, overlap(g0) = 50 / 150 -> g1
    gt = [("v", 1, 0, 100), ("v", 1, 50, 150)]
    props = [("v", 1, 25, 125, 0.9), ("v", 1, 50, 150, 0.8)]
    # count(g1) = 2, pos 1, N 2, G 2: P = .5, R = .5, P_int = .5
    #   -q: N 1, count 1, pos 1: P = 1, R = .5; P_int 1; += 0
    #   -p: N 0: R = 0; += 1 * .5                                     AP = .5
    # (had the tie gone to g0, pos would be 2 and AP 1.)
    r = evaluate_detection(props, gt, theta=0.5, num_classes=1)
    assert r["ap_global"] == pytest.approx(0.5, abs=1e-12)
    # theta = .6 still matches p (>=); at theta .65 only q matches:
    #   pos 1, N 2: P = .5, R = .5; -q: N 1, pos 0: P = 0, R = 0; += .5 * .5        AP = .25
    assert evaluate_detection(props, gt, theta=0.6, num_classes=1)["ap_global"] == pytest.approx(0.5, abs=1e-12)
    assert evaluate_detection(props, gt, theta=0.65, num_classes=1)["ap_global"] == pytest.approx(0.25, abs=1e-12)
    # 2D-AP: theta .05 .. .60 (12 values) give .5, .65 .. 1.00 (8 values, q has overlap exactly 1) give .25
    #   (12 * .5 + 8 * .25) / 20 = .4
    assert len(THETAS_2D_AP) == 20 and THETAS_2D_AP[0] == 0.05 and THETAS_2D_AP[-1] == 1.0
    assert r["ap_2d"] == pytest.approx(0.4, abs=1e-12)


def test_protocol_a_overlap_has_no_plus_one_and_can_be_negative():
    # [0, 10] vs GT [20, 30]: (10 - 20) / (30 - 0) = -1/3 (protocol B would say IoU 0).
    # [0, 10] vs GT [5, 15]: (10 - 5) / (15 - 0) = 1/3 (with +1 it would be 6/16).
    def one(gs: float, ge: float) -> tuple[int, float]:
        best, ov = _best_gt_a(
            np.array([0]),
            np.array([1]),
            np.array([0.0]),
            np.array([10.0]),
            np.array([0]),
            np.array([1]),
            np.array([gs]),
            np.array([ge]),
        )
        return int(best[0]), float(ov[0])

    assert one(20, 30) == (0, pytest.approx(-1 / 3, abs=1e-15))
    assert one(5, 15) == (0, pytest.approx(1 / 3, abs=1e-15))
    # A proposal of another label or video never matches, whatever its frames.
    r = evaluate_detection([("v", 2, 20, 30, 1.0), ("w", 1, 20, 30, 1.0)], [("v", 1, 20, 30)], num_classes=2)
    assert r["ap_global"] == 0.0 and r["f1"] == 0.0


def test_protocol_a_empty_proposals():
    r = evaluate_detection([], GT_A1, protocol="A", num_classes=3)
    # Every list has N = 0 -> P = R = 0 and no removal: all APs 0; the one GT video has an (empty) file.
    assert r["mAP_a"] == 0.0 and r["mAP_v"] == 0.0 and r["ap_global"] == 0.0 and r["f1"] == 0.0
    assert r["ap_2d"] == 0.0 and r["num_videos"] == 1


def test_protocol_a_videos_restrict_gt_like_the_official_script():
    gt = [*GT_A1, ("v2", 1, 0, 100)]
    # Default: v2 has an empty proposal file -> its AP is 0 and its GT counts.
    r = evaluate_detection(PROPS_A1, gt, num_classes=3)
    assert r["ap_per_video"] == {"v1": pytest.approx(0.3, abs=1e-12), "v2": 0.0}
    assert r["mAP_v"] == pytest.approx(0.15, abs=1e-12)
    # Class 1 now has G = 3 with the same matches: start P = .5, R = 2/3
    #   -p3: N 3, pos 1: P 1/3, R 1/3; += .5 * 1/3;  -p1: P 1, R 1/3; += 0;  -p0: R 0; += 1 * 1/3    AP = .5
    assert r["ap_per_class"][0] == pytest.approx(0.5, abs=1e-12)
    # Only v1 has a proposal file: v2's GT is never read (as in the official script).
    r = evaluate_detection(PROPS_A1, gt, num_classes=3, videos=["v1"])
    assert r["ap_per_class"][0] == pytest.approx(0.75, abs=1e-12) and r["num_ground_truth_dropped"] == 1
    with pytest.raises(ValueError, match="not in `videos`"):
        evaluate_detection(PROPS_A1, gt, num_classes=3, videos=["v2"])


def test_mapping_input_equals_rows():
    props = {"v1": [[lab, s, e, c] for _, lab, s, e, c in PROPS_A1], "v9": np.zeros((0, 4))}
    gt = {"v1": np.array([[1, 0, 100], [1, 200, 300], [2, 400, 500]])}
    a = evaluate_detection(props, gt, num_classes=3)
    b = evaluate_detection(PROPS_A1, GT_A1, num_classes=3, videos=["v1", "v9"])
    assert a["mAP_a"] == b["mAP_a"] and a["ap_per_video"] == b["ap_per_video"] and a["num_videos"] == 2


def _reference_a(props: list, gt: list, theta: float) -> float:
    """Literal transcription of the protocol A steps (ECHO960/PKU-MMD evaluate.py; docs/evaluation.md), for the
    global list."""
    props = sorted(props, key=lambda p: p[1])  # global list = per-class lists in class order
    props = sorted(props, key=lambda p: p[4])  # ascending confidence, stable
    match = []
    for v, lab, s, e, _ in props:
        best, best_ov = -1, None
        for j, (gv, glab, gs, ge) in enumerate(gt):
            if gv != v or glab != lab:
                continue
            ov = (min(e, ge) - max(s, gs)) / (max(e, ge) - min(s, gs))
            if ov >= theta and (best_ov is None or ov >= best_ov):
                best, best_ov = j, ov
        match.append(best)
    count = [match.count(j) for j in range(len(gt))]
    pos = sum(c > 0 for c in count)
    n = len(props)

    def pr(pos: int, n: int) -> tuple[float, float]:
        return (0.0, 0.0) if n == 0 or not gt else (pos / n, pos / len(gt))

    p_int, r_prev = pr(pos, n)
    score = 0.0
    for m in match:
        n -= 1
        if m < 0:
            continue
        count[m] -= 1
        pos -= count[m] == 0
        p, r = pr(pos, n)
        p_int = max(p_int, p)
        score += p_int * (r_prev - r)
        r_prev = r
    return score


def test_protocol_a_matches_literal_steps_on_random_lists():
    rng = random.Random(0)
    for _ in range(30):
        starts = rng.choices(range(0, 200, 5), k=8)
        gt = [(rng.choice("ab"), rng.randint(1, 3), s, s + rng.randint(1, 40)) for s in starts]
        props = []
        for _ in range(rng.randint(0, 25)):
            s = rng.choice(range(0, 200, 5))
            conf = rng.choice([0.1, 0.5, 0.7, 0.9])  # few values: many confidence ties
            props.append((rng.choice("ab"), rng.randint(1, 3), s, s + rng.randint(0, 40), conf))
        for theta in (0.1, 0.5, 0.75):
            got = evaluate_detection(props, gt, theta=theta, num_classes=3)["ap_global"]
            assert got == pytest.approx(_reference_a(props, gt, theta), abs=1e-12)


# ----------------------------------------------------------------------------- protocol B

# v1: class 1 GT g0 = [0, 9], g1 = [20, 29] (length 10 each, inclusive); class 2 GT g2 = [100, 139] (40).
GT_B1 = {"v1": [[1, 0, 9], [1, 20, 29], [2, 100, 139]]}
PROPS_B1 = [
    ("v1", 1, 0, 9, 0.9),  # d0: IoU(g0) = 10 / 10 = 1 -> TP
    ("v1", 1, 1, 9, 0.8),  # d1: IoU(g0) = 9 / (10 + 9 - 9) = .9, g0 taken -> FP (duplicate)
    ("v1", 1, 20, 24, 0.7),  # d2: IoU(g1) = 5 / (10 + 5 - 5) = .5 >= .5 -> TP
    ("v1", 1, 40, 49, 0.6),  # d3: no overlap -> FP
    ("v1", 2, 100, 119, 0.99),  # d4: IoU(g2) = 20 / 40 = .5 -> TP
    ("v1", 5, 0, 10, 0.95),  # class 5 has no GT: dropped
]


def test_protocol_b_hand_case():
    r = evaluate_detection(PROPS_B1, GT_B1, protocol="B")
    # Class 1: tp 1 0 1 0 -> cum tp 1 1 2 2, cum fp 0 1 1 2; npos 2
    #   recall .5 .5 1 1, precision 1 .5 2/3 .5
    #   with sentinels: rec 0 .5 .5 1 1 1, prec 0 1 .5 2/3 .5 0 -> monotone 1 1 2/3 2/3 .5 0
    #   recall steps at .5 (prec 1) and 1 (prec 2/3): AP = .5 * 1 + .5 * 2/3 = 5/6
    # Class 2: one TP: AP = 1. Class 5 is absent from the GT: not averaged, its detection dropped.
    assert r["ap_per_class"] == {1: pytest.approx(5 / 6, abs=1e-12), 2: pytest.approx(1.0, abs=1e-12)}
    assert r["mAP"] == pytest.approx((5 / 6 + 1) / 2, abs=1e-12)
    assert r["num_classes_evaluated"] == 2 and r["num_proposals_dropped"] == 1
    # The same detections under protocol A, class 1: d0 -> g0 (1), d1 -> g0 (8/9), d2: (24 - 20) / (29 - 20) = 4/9
    # < .5 unmatched, d3 unmatched. N 4, pos 1, G 2: P .25, R .5; -d3, -d2 skip; -d1: N 1, P 1, R .5, += 0;
    # -d0: N 0, R 0, += 1 * .5: AP = .5 (not 5/6: the protocols are not comparable).
    assert evaluate_detection(PROPS_B1, GT_B1, protocol="A")["ap_per_class"][0] == pytest.approx(0.5, abs=1e-12)


def test_protocol_b_score_ties_keep_input_order():
    gt = [("v", 1, 0, 9)]
    a, b = ("v", 1, 0, 9, 0.5), ("v", 1, 50, 59, 0.5)
    # [a, b]: tp 1 0 -> rec 1 1, prec 1 .5 -> AP = 1 * 1 = 1
    assert evaluate_detection([a, b], gt, protocol="B")["mAP"] == pytest.approx(1.0, abs=1e-12)
    # [b, a]: tp 0 1 -> rec 0 1, prec 0 .5 -> monotone .5 .5 .5 0 -> AP = 1 * .5
    assert evaluate_detection([b, a], gt, protocol="B")["mAP"] == pytest.approx(0.5, abs=1e-12)


def test_protocol_b_max_iou_gt_already_taken_is_a_false_positive():
    # Two identical GTs; both detections pick the first GT (strictly larger IoU needed to move on), so the
    # second detection is an FP although g1 is free: tp 1 0, npos 2 -> rec .5 .5, prec 1 .5 -> AP .5
    gt = [("v", 1, 0, 9), ("v", 1, 0, 9)]
    props = [("v", 1, 0, 9, 0.9), ("v", 1, 0, 9, 0.8)]
    assert evaluate_detection(props, gt, protocol="B")["mAP"] == pytest.approx(0.5, abs=1e-12)


def test_protocol_b_inclusive_iou_and_unknown_video():
    # [0, 9] vs [5, 14]: inter 9 - 5 + 1 = 5, union 10 + 10 - 5 = 15: IoU 1/3 < .5 -> FP at .5, TP at .3
    gt = [("v", 1, 5, 14)]
    assert evaluate_detection([("v", 1, 0, 9, 1.0)], gt, protocol="B")["mAP"] == 0.0
    assert evaluate_detection([("v", 1, 0, 9, 1.0)], gt, protocol="B", theta=0.3)["mAP"] == pytest.approx(1.0)
    # A detection in a video without GT is a false positive: tp 0 1 -> AP .5 (as in the tie case).
    props = [("w", 1, 5, 14, 0.9), ("v", 1, 5, 14, 0.8)]
    assert evaluate_detection(props, gt, protocol="B")["mAP"] == pytest.approx(0.5, abs=1e-12)


def test_protocol_b_empty_proposals_and_bad_input():
    assert evaluate_detection([], GT_B1, protocol="B")["mAP"] == 0.0
    with pytest.raises(ValueError, match="there are none"):
        evaluate_detection(PROPS_B1, [], protocol="B")
    with pytest.raises(ValueError, match="integer frames"):
        evaluate_detection([("v1", 1, 0.5, 9, 1.0)], GT_B1, protocol="B")


@pytest.mark.parametrize(
    "props, gt, kwargs, match",
    [
        pytest.param([("v", 0, 0, 9, 1.0)], [("v", 1, 0, 9)], {}, "label must be an integer in 1..51", id="label0"),
        pytest.param([("v", 52, 0, 9, 1.0)], [("v", 1, 0, 9)], {}, r"proposals\[0\]: label", id="label52"),
        pytest.param([("v", 1, 9, 0, 1.0)], [("v", 1, 0, 9)], {}, "start 9.0 > end 0.0", id="start>end"),
        pytest.param([("v", 1, 0, 9)], [("v", 1, 0, 9)], {}, "expected \\(video, label, start, end, conf", id="short"),
        pytest.param([("v", 1, 0, 9, float("nan"))], [("v", 1, 0, 9)], {}, "non-finite", id="nan"),
        pytest.param([], [("v", 1, 5, 5)], {}, "end > start", id="gt-degenerate"),
        pytest.param([], [("v", 1, 0, 9)], {"theta": 0.0}, "theta", id="theta0"),
        pytest.param([], [("v", 1, 0, 9)], {"protocol": "C"}, "protocol", id="protocol"),
        pytest.param([], {"v": [[1, 2]]}, {}, r"ground_truth\['v'\]\[0\]", id="gt-mapping-row"),
        pytest.param("v,1,0,9,1", [("v", 1, 0, 9)], {}, "proposals", id="string"),
    ],
)
def test_bad_input_raises(props, gt, kwargs, match):
    with pytest.raises(ValueError, match=match):
        evaluate_detection(props, gt, **kwargs)
