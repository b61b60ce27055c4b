"""Length buckets (hitrs_fast.data.loader): the buckets that pad a store's lengths least, batches padded to them,
and the padding they cost, counted."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from hitrs_fast.data.loader import bucket_for, build_loader, length_buckets
from hitrs_fast.data.store import SkeletonStore, StoreSample, write_store


def _padding(lengths: np.ndarray, buckets: tuple[int, ...]) -> int:
    return int(sum(bucket_for(int(t), buckets) - t for t in lengths))


@pytest.mark.parametrize("seed", range(4))
def test_buckets_pad_least_of_every_choice(seed):
    """Exhaustive check on small sets: no other choice of as many buckets (the largest = the longest sample)
    pads less."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 40, size=30)
    values = sorted(set(lengths.tolist()))
    for count in (1, 2, 3, 4):
        chosen = length_buckets(lengths, count)
        assert chosen[-1] == lengths.max() and len(chosen) == min(count, len(values))
        best = min(_padding(lengths, (*others, values[-1]))
                   for others in itertools.combinations(values[:-1], min(count, len(values)) - 1))
        assert _padding(lengths, chosen) == best


def test_bad_bucket_requests():
    with pytest.raises(ValueError, match="count >= 1"):
        length_buckets(np.array([3, 4]), 0)
    with pytest.raises(ValueError, match="longer than the largest"):
        bucket_for(50, (20, 40))


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> SkeletonStore:
    rng = np.random.default_rng(0)
    samples = [StoreSample(name=f"s{k}", data=rng.standard_normal((t, 1, 25, 3)).astype(np.float32), label=k % 3)
               for k, t in enumerate([20, 23, 25, 31, 38, 40, 44, 52, 57, 60, 61, 64])]
    return SkeletonStore(write_store(tmp_path_factory.mktemp("buckets") / "store", samples, info={"source": "test"}))


def test_loader_pads_each_batch_to_its_bucket_and_counts_the_padding(store):
    buckets = length_buckets(store.lengths, 3)
    loader = build_loader(store, batch_size=4, shuffle=True, seed=1, length_buckets=buckets, group_by_length=3)
    plain = build_loader(store, batch_size=4, shuffle=True, seed=1, group_by_length=3)
    real = longest = padded = 0
    for bucketed, batch in zip(loader, plain, strict=True):
        t = int(batch.lengths.max())
        assert bucketed.x.shape[2] == bucket_for(t, buckets) >= t
        assert torch.equal(bucketed.x[:, :, :t], batch.x) and not bucketed.x[:, :, t:].any()
        assert torch.equal(bucketed.lengths, batch.lengths)
        real += int(batch.lengths.sum())
        longest += t * len(batch)
        padded += bucketed.x.shape[2] * len(batch)
    stats = loader.padding
    assert (stats.real, stats.longest, stats.padded) == (real, longest, padded)
    assert stats.waste == pytest.approx(stats.padded / stats.real - 1)
    assert 0 <= stats.bucket_waste <= stats.waste


def test_loader_refuses_buckets_shorter_than_the_samples(store):
    with pytest.raises(ValueError, match="shorter than the longest selected sample"):
        build_loader(store, batch_size=4, length_buckets=(30, 60))
    with pytest.raises(ValueError, match="increasing"):
        build_loader(store, batch_size=4, length_buckets=(64, 30))
