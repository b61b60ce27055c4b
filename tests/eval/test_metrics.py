"""Top-k accuracy, MPJPE, zero-velocity baseline, kNN and score fusion on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from hitrs_fast.eval.metrics import (
    fuse_scores,
    knn_accuracy,
    knn_predict,
    mpjpe,
    topk_accuracy,
    zero_velocity_baseline,
)


def test_topk_hand_case():
    logits = torch.tensor(
        [
            [0.0, 5.0, 4.0, 3.0, 2.0, 1.0],  # label 1: rank 1
            [5.0, 4.0, 3.0, 2.0, 1.0, 0.0],  # label 4: rank 5
            [5.0, 4.0, 3.0, 2.0, 1.0, 0.0],  # label 5: rank 6
            [1.0, 2.0, 9.0, 0.0, 0.0, 0.0],  # label 0: rank 3
        ]
    )
    labels = torch.tensor([1, 4, 5, 0])
    # top-1: sample 0 only -> 1/4; top-5: samples 0, 1, 3 -> 3/4; top-3: samples 0 and 3 -> 1/2
    assert topk_accuracy(logits, labels) == {1: 0.25, 5: 0.75}
    assert topk_accuracy(logits, labels, ks=(3,)) == {3: 0.5}
    with pytest.raises(ValueError, match="1..6"):
        topk_accuracy(logits, labels, ks=(7,))
    with pytest.raises(ValueError, match="out of range"):
        topk_accuracy(logits, torch.tensor([1, 4, 6, 0]))
    with pytest.raises(ValueError, match="integer tensor"):
        topk_accuracy(logits, labels.float())


def test_mpjpe_hand_case():
    pred = torch.zeros(1, 2, 2, 3)
    target = torch.zeros(1, 2, 2, 3)
    target[0, 0, 0] = torch.tensor([0.003, 0.004, 0.0])  # frame 0, joint 0: 5 mm; joint 1: 0 -> frame mean 2.5
    target[0, 1, 1] = torch.tensor([0.0, 0.0, 0.010])  # frame 1, joint 1: 10 mm; joint 0: 0 -> frame mean 5
    r = mpjpe(pred, target)
    torch.testing.assert_close(r.per_frame, torch.tensor([2.5, 5.0]), rtol=0, atol=1e-5)
    assert float(r.mean) == pytest.approx(3.75, abs=1e-5)
    # A global translation of 1 m is a 1000 mm error, and nothing root-relative.
    shifted = target + torch.tensor([1.0, 0.0, 0.0])
    assert float(mpjpe(target, shifted).mean) == pytest.approx(1000.0, abs=1e-3)
    assert float(mpjpe(target, shifted, root_relative=True).mean) == pytest.approx(0.0, abs=1e-4)
    # Root-relative with root joint 1 on the hand case: frame 0 joint 0 relative to joint 1 is still 5 mm away
    # (root error 0) -> 2.5; frame 1: target joint 0 relative to joint 1 is (0, 0, -10) mm -> 10 / 2 = 5.
    rr = mpjpe(pred, target, root_relative=True, root_joint=1)
    torch.testing.assert_close(rr.per_frame, torch.tensor([2.5, 5.0]), rtol=0, atol=1e-5)
    # Batch averaging: a second sample with zero error halves everything.
    r2 = mpjpe(torch.cat([pred, pred]), torch.cat([target, pred]))
    torch.testing.assert_close(r2.per_frame, torch.tensor([1.25, 2.5]), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="differs"):
        mpjpe(pred, target[:, :1])
    with pytest.raises(ValueError, match=r"\[B, T, V, 3\]"):
        mpjpe(pred[..., :2], target[..., :2])


def test_zero_velocity_baseline():
    obs = torch.arange(2 * 3 * 4 * 3, dtype=torch.float32).reshape(2, 3, 4, 3)
    out = zero_velocity_baseline(obs, horizon=5)
    assert out.shape == (2, 5, 4, 3)
    assert torch.equal(out, obs[:, 2:3].expand(2, 5, 4, 3))
    out[0, 0, 0, 0] = -1.0  # a fresh tensor: writing to it leaves the observation alone
    assert obs[0, 2, 0, 0] == 24.0
    # Its MPJPE against a target moving 1 mm per frame along x from the last observation is 1, 2, ..., 5 mm.
    steps = torch.arange(1, 6, dtype=torch.float32).view(1, 5, 1, 1) * torch.tensor([0.001, 0.0, 0.0])
    target = obs[:, 2:3] + steps
    torch.testing.assert_close(
        mpjpe(zero_velocity_baseline(obs, 5), target).per_frame,
        torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]),
        rtol=1e-4,
        atol=1e-3,
    )
    with pytest.raises(ValueError, match="horizon"):
        zero_velocity_baseline(obs, 0)


def test_knn_hand_case():
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.1, 1.0]])
    y = torch.tensor([0, 1, 1])
    test = torch.tensor([[1.0, 0.3], [0.0, 7.0], [-1.0, 0.05]])
    # cosine similarities of test 0 = (1, .3) / 1.044: train 0 .958, train 1 .287, train 2 .4 / (1.044 * 1.005) = .381
    # 1-NN: test 0 -> train 0 (label 0); test 1 (its scale does not matter) -> train 1 (label 1);
    # test 2 = (-1, .05): cosines -.999 (train 0), .05 / 1.001 = .050 (train 1), -.05 / 1.006 = -.050 (train 2)
    # -> train 1 (label 1).
    assert knn_predict(train, y, test).tolist() == [0, 1, 1]
    # k = 3 unweighted on test 0: labels 0, 1, 1 -> 1.  Weighted with T = .1: exp(9.58) vs exp(2.87) + exp(3.81)
    # (~14 500 vs ~63) -> 0.
    assert knn_predict(train, y, test[:1], k=3).tolist() == [1]
    assert knn_predict(train, y, test[:1], k=3, temperature=0.1).tolist() == [0]
    # Chunking does not change the answer.
    assert knn_predict(train, y, test, chunk_size=1).tolist() == [0, 1, 1]
    assert knn_accuracy(train, y, test, torch.tensor([0, 1, 0])) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="k must be"):
        knn_predict(train, y, test, k=4)
    with pytest.raises(ValueError, match="equal D"):
        knn_predict(train, y, torch.zeros(2, 3))


def test_weighted_knn_small_temperature_stays_finite():
    # sim / T = 1 / .001 = 1000 overflows exp in float32 without the per-row max subtraction.
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    y = torch.tensor([2, 0, 1])
    assert knn_predict(train, y, torch.tensor([[1.0, 0.01]]), k=3, temperature=0.001).tolist() == [2]


def test_fuse_scores():
    s1 = torch.tensor([[10.0, 0.0]])
    s2 = torch.tensor([[0.0, 2.0]])
    # logits: [10, 0] + 2 * [0, 2] = [10, 4] -> class 0
    assert fuse_scores([s1, s2, s2], mode="logits").argmax(1).tolist() == [0]
    # softmax: [~1, 4.5e-5] + 2 * [.119, .881] = [1.238, 1.762] -> class 1
    fused = fuse_scores([s1, s2, s2])
    e = math.exp(2.0)
    expected = [1 / (1 + math.exp(-10)) + 2 / (1 + e), math.exp(-10) / (1 + math.exp(-10)) + 2 * e / (1 + e)]
    torch.testing.assert_close(fused, torch.tensor([expected]), rtol=1e-6, atol=1e-6)
    assert fused.argmax(1).tolist() == [1]
    # Weights: [10, 0] * 1 + [0, 2] * 6 (logits) = [10, 12] -> class 1
    assert fuse_scores([s1, s2], weights=[1.0, 6.0], mode="logits").argmax(1).tolist() == [1]
    with pytest.raises(ValueError, match="shape"):
        fuse_scores([s1, torch.zeros(1, 3)])
    with pytest.raises(ValueError, match="weights"):
        fuse_scores([s1, s2], weights=[1.0])
