"""Loader throughput: the torch backend vs the DALI backend of ``build_loader`` on the same synthetic store.

One test per loader configuration times a full epoch of each backend (same seed, so the same batches; a
correctness gate compares the first batches before any timing) and records samples/s for each plus the
DALI / torch ratio:

- ``plain``: all body slots, no augmentation (batch assembly only);
- ``pretrain``: Hi-TRS pre-training, ``bodies="single", min_length=19, augment="hitrs"``;
- ``fixed64``: Hi-TRS augmentation then a MAMP-style random crop-resize to 64 frames.

Batches are produced on CUDA when a GPU is present (DALI runs its operators on the GPU), else on the CPU.
On the CPU (smoke mode: 2-core shared machines, a smaller store) only the *ratio* between the two
backends means anything; the absolute samples/s are not a speed result and every row says so.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.common import is_smoke, record, time_fn
from hitrs_fast.data.dali import dali_available
from hitrs_fast.data.loader import build_loader
from hitrs_fast.data.store import SkeletonStore
from hitrs_fast.data.synthetic import write_synthetic

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BATCH = 64
CONFIGS = {
    "plain": dict(),
    "pretrain": dict(bodies="single", min_length=19, augment="hitrs"),
    "fixed64": dict(augment="hitrs", crop_length=64, crop_ratio=(0.5, 1.0), crop_min_frames=32),
}
_DALI_OK, _DALI_WHY = dali_available()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> SkeletonStore:
    # Smoke: 12 classes x 20 = 240 samples; full: the default synthetic set (12 x 60 = 720 samples).
    spc = 20 if is_smoke() else 60
    return SkeletonStore(write_synthetic(tmp_path_factory.mktemp("bench") / "syn", samples_per_class=spc))


def _epoch(loader) -> int:
    n = 0
    for batch in loader:
        n += len(batch)
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    return n


def _gate(store: SkeletonStore, kwargs: dict) -> bool:
    """Both backends give the same first batches (same seed)."""
    a = build_loader(store, batch_size=BATCH, backend="torch", device=DEVICE, seed=0, **kwargs)
    b = build_loader(store, batch_size=BATCH, backend="dali", device=DEVICE, seed=0, **kwargs)
    for _, (x, y) in zip(range(2), zip(a, b, strict=False), strict=False):
        if x.x.shape != y.x.shape or not torch.equal(x.lengths.cpu(), y.lengths.cpu()):
            return False
        if not torch.allclose(x.x, y.x, atol=1e-5, rtol=1.3e-6):
            return False
    return True


@pytest.mark.benchmark(group="loaders")
@pytest.mark.skipif(not _DALI_OK, reason=f"DALI unavailable: {_DALI_WHY}")
@pytest.mark.parametrize("config", list(CONFIGS))
def test_loader_throughput(benchmark, store, config):
    kwargs = CONFIGS[config]
    passed = _gate(store, kwargs)
    warmup, rep = (1, 3) if is_smoke() else (1000, 5000)
    rates: dict[str, float] = {}
    loaders = {}
    for backend in ("torch", "dali"):
        loader = build_loader(store, batch_size=BATCH, backend=backend, device=DEVICE, seed=0, **kwargs)
        loaders[backend] = loader
        items = _epoch(loader)  # also builds the DALI pipeline outside the timed region
        timing = time_fn(lambda ld=loader: _epoch(ld), warmup=warmup, rep=rep)
        rates[backend] = items / (timing["median_ms"] * 1e-3)
        row = {
            "op": "loader", "backend": backend, "config": config, "device": DEVICE, "batch_size": BATCH,
            "items_per_epoch": items, **timing, "samples_per_s": rates[backend], "tests_passed": passed,
            "note": "CPU smoke: only the dali/torch ratio means anything" if timing["smoke"] else None,
        }
        if backend == "dali":
            row["torch_samples_per_s"] = rates["torch"]
            row["dali_over_torch"] = rates["dali"] / rates["torch"] if passed else None
            record(benchmark, **row)
        else:
            record(None, **row)
    benchmark.pedantic(_epoch, args=(loaders["dali"],), rounds=1, warmup_rounds=0)
    assert passed, "torch and DALI loaders disagree; throughput numbers are invalid"


# ------------------------------------------------------------------------------------------------------------
# Linear probes on the synthetic trimmed set: how hard is it, and is a random-init encoder clearly weak on it?
# ------------------------------------------------------------------------------------------------------------

def _linear_probe(features: torch.Tensor, labels: torch.Tensor, train: torch.Tensor, test: torch.Tensor,
                  num_classes: int) -> tuple[float, torch.Tensor]:
    """Multinomial logistic regression (standardised features, L2 1e-3, full-batch L-BFGS, seed 0):
    train on ``train`` rows, return (train accuracy, predicted classes of the ``test`` rows)."""
    f = features.double()
    mu, sd = f[train].mean(0), f[train].std(0).clamp_min(1e-8)
    f = ((f - mu) / sd).float()
    gen = torch.Generator().manual_seed(0)
    weight = (torch.randn(num_classes, f.shape[1], generator=gen) * 0.01).requires_grad_()
    bias = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1, max_iter=500, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logits = f[train] @ weight.T + bias
        loss = torch.nn.functional.cross_entropy(logits, labels[train]) + 1e-3 * weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        train_acc = ((f[train] @ weight.T + bias).argmax(1) == labels[train]).double().mean().item()
        return train_acc, (f[test] @ weight.T + bias).argmax(1)


def _bag_of_frames(rel: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Statistics that ignore the order of frames, hence the direction of time: mean pose [75], mean |velocity|,
    velocity s.d. and position s.d. per joint and axis [225]."""
    return np.concatenate([rel.mean(0).ravel(), np.abs(v).mean(0).ravel(), v.std(0).ravel(), rel.std(0).ravel()])


def _handcrafted(store: SkeletonStore) -> dict[str, torch.Tensor]:
    """Per-sample features of the actor (slot 0), root(SpineBase)-relative: the static mean pose [75], the
    bag-of-frames statistics [300], and the same plus the mean pose of each third of the sequence [525] (a
    temporal pyramid: it keeps the order of the phases and the direction of time)."""
    static, bag, pyramid = [], [], []
    for i in range(len(store)):
        s = np.asarray(store.sequence(i))[:, 0].astype(np.float64)
        rel = s - s[:, :1]
        v = np.diff(s, axis=0)
        static.append(rel.mean(0).ravel())
        bag.append(_bag_of_frames(rel, v))
        thirds = [rel[part].mean(0).ravel() for part in np.array_split(np.arange(len(s)), 3)]
        pyramid.append(np.concatenate([*thirds, bag[-1]]))
    return {"static_mean_pose": torch.from_numpy(np.stack(static)),
            "bag_of_frames": torch.from_numpy(np.stack(bag)),
            "temporal_pyramid": torch.from_numpy(np.stack(pyramid))}


def _within_pair_accuracy(pred: torch.Tensor, truth: torch.Tensor, pairs: list[tuple[int, int]]) -> float:
    """Over test samples of the time-reversed pairs that are predicted as one of their pair's two classes,
    the share predicted as the right one (0.5: the direction of time is not seen)."""
    hits, total = 0, 0
    for a, b in pairs:
        rows = ((truth == a) | (truth == b)) & ((pred == a) | (pred == b))
        hits += int((pred[rows] == truth[rows]).sum())
        total += int(rows.sum())
    return hits / max(total, 1)


@pytest.mark.benchmark(group="synthetic_probe")
def test_synthetic_linear_probe(benchmark, tmp_path_factory):
    from hitrs_fast.config import HiTRSConfig
    from hitrs_fast.data.synthetic import ACTIONS, REVERSED_PAIRS
    from hitrs_fast.models import HiTRS

    # The default set (16 classes x 60, seed 0), cross-subject train/test.
    store = SkeletonStore(write_synthetic(tmp_path_factory.mktemp("probe") / "syn"))
    labels = torch.from_numpy(store.labels)
    train = torch.from_numpy(store.split_indices("train"))
    test = torch.from_numpy(store.split_indices("test"))
    k = int(store.info["num_classes"])
    pairs = [(ACTIONS.index(a), ACTIONS.index(b)) for a, b in REVERSED_PAIRS.items()]
    feats = _handcrafted(store)
    torch.manual_seed(0)
    model = HiTRS(HiTRSConfig.preset("tiny"), backend="torch").eval()
    enc = torch.zeros(len(store), model.config.feature_dim)
    with torch.no_grad():
        for batch in build_loader(store, batch_size=32, shuffle=False):
            enc[batch.indices] = model(batch.x, batch.lengths).pooled
    feats["random_init_tiny_hitrs"] = enc
    rows, pair_rows = {}, {}
    for name, f in feats.items():
        acc_train, pred = _linear_probe(f, labels, train, test, k)
        rows[name] = (pred == labels[test]).double().mean().item()
        pair_rows[name] = _within_pair_accuracy(pred, labels[test], pairs)
        record(None, op="synthetic_probe", features=name, dim=int(f.shape[1]), train_acc=acc_train,
               test_acc=rows[name], reversed_pairs_acc=pair_rows[name], chance=1.0 / k,
               num_train=int(train.numel()), num_test=int(test.numel()))
    record(benchmark, op="synthetic_probe", **{f"test_acc_{n}": a for n, a in rows.items()},
           **{f"reversed_pairs_acc_{n}": a for n, a in pair_rows.items()})
    benchmark.pedantic(lambda: None, rounds=1, warmup_rounds=0)
    # Order-free statistics cannot tell a reversed pair apart; keeping the order of the phases can; and a random
    # encoder must be clearly below what the data allows.
    assert pair_rows["bag_of_frames"] < 0.7 and pair_rows["static_mean_pose"] < 0.7
    assert pair_rows["temporal_pyramid"] > 0.9 and rows["temporal_pyramid"] > 0.9
    assert rows["random_init_tiny_hitrs"] < rows["temporal_pyramid"] - 0.2
