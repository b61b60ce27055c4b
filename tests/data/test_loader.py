"""build_loader (hitrs_fast.data.loader): contents, ordering, sharding, and torch vs DALI equality."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hitrs_fast.data.dali import dali_available
from hitrs_fast.data.loader import build_loader, occupied_slots
from hitrs_fast.data.store import SkeletonStore, StoreSample, write_store
from hitrs_fast.data.synthetic import write_synthetic

_DALI_OK, _DALI_WHY = dali_available()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> SkeletonStore:
    root = tmp_path_factory.mktemp("loader") / "syn"
    return SkeletonStore(write_synthetic(root, samples_per_class=5, num_classes=4, num_subjects=3,
                                         two_person_prob=0.5))


@pytest.fixture(scope="module")
def short_store(tmp_path_factory) -> SkeletonStore:
    """Hand-made: lengths around the pre-training threshold, a body only in slot 1, an empty sample slot."""
    rng = np.random.default_rng(0)
    samples = []
    for k, (t, slots) in enumerate([(10, [0]), (18, [0, 1]), (19, [1]), (25, [0, 1]), (40, [0])]):
        d = np.zeros((t, 2, 25, 3), np.float32)
        for s in slots:
            d[:, s] = rng.standard_normal((t, 25, 3))
        samples.append(StoreSample(name=f"s{k}", data=d, label=k))
    root = tmp_path_factory.mktemp("loader") / "short"
    return SkeletonStore(write_store(root, samples, info={"source": "test"}))


def _collect(loader) -> list:
    return list(loader)


def test_unaugmented_batches_are_the_store_data(store):
    loader = build_loader(store, batch_size=4, shuffle=False)
    seen = []
    for batch in loader:
        assert batch.x.dtype == torch.float32 and batch.x.shape[1:] == (2, int(batch.lengths.max()), 25, 3)
        for b, i in enumerate(batch.indices.tolist()):
            t = int(store.lengths[i])
            assert int(batch.lengths[b]) == t and int(batch.labels[b]) == int(store.labels[i])
            expect = np.asarray(store.sequence(i)).transpose(1, 0, 2, 3)
            np.testing.assert_array_equal(batch.x[b, :, :t].numpy(), expect)
            assert (batch.x[b, :, t:] == 0).all()
        seen += batch.indices.tolist()
    assert seen == list(range(len(store)))
    assert len(loader) == -(-len(store) // 4)


def test_shuffle_seed_and_epoch(store):
    a = build_loader(store, batch_size=6, seed=1)
    b = build_loader(store, batch_size=6, seed=1)
    order = lambda ld: torch.cat([x.indices for x in ld]).tolist()  # noqa: E731
    first = order(a)
    assert first == order(b) and sorted(first) == list(range(len(store))) and first != sorted(first)
    a.set_epoch(1)
    assert order(a) != first and sorted(order(a)) == sorted(first)
    assert order(build_loader(store, batch_size=6, seed=2)) != first


@pytest.mark.parametrize("drop_last", [False, True])
def test_sharding_covers_each_item_once(store, drop_last):
    world = 3
    loaders = [build_loader(store, batch_size=4, rank=r, world_size=world, drop_last=drop_last, seed=5)
               for r in range(world)]
    per_rank = [torch.cat([b.indices for b in ld]).tolist() for ld in loaders]
    for ld in loaders:
        assert sum(1 for _ in ld) == len(ld)
    flat = [i for idx in per_rank for i in idx]
    assert len(flat) == len(set(flat))
    if drop_last:
        assert len({len(ld) for ld in loaders}) == 1  # equal batch counts for DDP
        assert all(len(idx) % 4 == 0 for idx in per_rank)
    else:
        assert sorted(flat) == list(range(len(store)))


@pytest.mark.parametrize("drop_last", [False, True])
def test_group_by_length(store, drop_last):
    """Grouping reorders batches of an epoch without losing items, cuts padding, and assigns the same
    global batches whatever the split over ranks."""
    plain = build_loader(store, batch_size=4, seed=3, drop_last=drop_last)
    grouped = build_loader(store, batch_size=4, seed=3, drop_last=drop_last, group_by_length=3)
    items = lambda ld: torch.cat([b.indices for b in ld]).tolist()  # noqa: E731
    assert sorted(items(grouped)) == sorted(items(plain)) and items(grouped) != items(plain)
    padded = lambda ld: sum(int(b.lengths.max()) * len(b) for b in ld)  # noqa: E731
    assert padded(grouped) < padded(plain)
    world = 2
    ranks = [build_loader(store, batch_size=2, seed=3, rank=r, world_size=world, drop_last=drop_last,
                          group_by_length=3) for r in range(world)]
    for single, *parts in zip(grouped, *ranks, strict=False):
        together = torch.cat([p.indices for p in parts]).tolist()
        assert sorted(together) == sorted(single.indices.tolist())
    grouped.set_epoch(1)
    assert items(grouped) != items(build_loader(store, batch_size=4, seed=3, drop_last=drop_last,
                                                group_by_length=3))
    with pytest.raises(ValueError, match="group_by_length"):
        build_loader(store, batch_size=4, group_by_length=-1)


def test_single_bodies_and_min_length(short_store):
    occ = occupied_slots(short_store)
    assert occ.tolist() == [[True, False], [True, True], [False, True], [True, True], [True, False]]
    loader = build_loader(short_store, batch_size=8, bodies="single", min_length=19, shuffle=False)
    (batch,) = _collect(loader)
    assert batch.x.shape[1] == 1
    assert list(zip(batch.indices.tolist(), batch.slots.tolist(), strict=True)) == [(2, 1), (3, 0), (3, 1), (4, 0)]
    for b, (i, s) in enumerate(zip(batch.indices.tolist(), batch.slots.tolist(), strict=True)):
        t = int(short_store.lengths[i])
        np.testing.assert_array_equal(batch.x[b, 0, :t].numpy(), np.asarray(short_store.sequence(i)[:, s]))
        assert (batch.x[b, 0, :t] != 0).any()
    everything = build_loader(short_store, batch_size=8, bodies="all", shuffle=False)
    assert (next(iter(everything)).slots == -1).all()


def test_augmented_and_fixed_length(store):
    loader = build_loader(store, batch_size=5, augment="hitrs", crop_length=32, crop_ratio=(0.5, 1.0),
                          crop_min_frames=16, seed=3)
    for batch in loader:
        assert batch.x.shape == (len(batch), 2, 32, 25, 3) and (batch.lengths == 32).all()
    aug = build_loader(store, batch_size=len(store), augment="hitrs", shuffle=False, seed=4)
    plain = build_loader(store, batch_size=len(store), shuffle=False)
    xa, xp = next(iter(aug)), next(iter(plain))
    assert (xa.lengths <= xp.lengths).all() and (xa.lengths >= (0.8 * xp.lengths).floor()).all()
    changed = ~(xa.x[:, :, :20] == xp.x[:, :, :20]).flatten(1).all(dim=1)
    assert 0.25 < changed.double().mean() < 0.75  # p = 0.5 per sample


def test_bad_arguments(store):
    with pytest.raises(ValueError, match="split or indices"):
        build_loader(store, batch_size=2, split="train", indices=[0])
    with pytest.raises(KeyError, match="available"):
        build_loader(store, batch_size=2, split="nope")
    with pytest.raises(ValueError, match="rank"):
        build_loader(store, batch_size=2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="backend"):
        build_loader(store, batch_size=2, backend="jax")
    with pytest.raises(ValueError, match="no items"):
        build_loader(store, batch_size=2, min_length=10_000)
    with pytest.raises(ValueError, match="indices"):
        build_loader(store, batch_size=2, indices=[len(store)])


def test_split_selection(store):
    test_idx = set(store.split_indices("test").tolist())
    got = torch.cat([b.indices for b in build_loader(store, batch_size=7, split="test")]).tolist()
    assert sorted(got) == sorted(test_idx)


@pytest.mark.skipif(not _DALI_OK, reason=f"DALI unavailable: {_DALI_WHY}")
@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(bodies="single", min_length=19, augment="hitrs"),
    dict(augment="hitrs", crop_length=40, crop_ratio=(0.5, 1.0), crop_min_frames=20, split="train"),
    dict(crop_length=30, crop_ratio=0.95, rank=1, world_size=2, drop_last=True),
])
def test_torch_and_dali_give_the_same_batches(store, kwargs):
    lt = build_loader(store, batch_size=6, backend="torch", seed=9, **kwargs)
    ld = build_loader(store, batch_size=6, backend="dali", seed=9, **kwargs)
    for epoch in (0, 1):
        lt.set_epoch(epoch)
        ld.set_epoch(epoch)
        n = 0
        for a, b in zip(lt, ld, strict=True):
            for field in ("lengths", "labels", "indices", "slots"):
                assert torch.equal(getattr(a, field), getattr(b, field)), field
            assert a.x.shape == b.x.shape
            torch.testing.assert_close(b.x, a.x)
            n += 1
        assert n == len(lt) == len(ld)


def test_iter_from_matches_full_iteration(tmp_path):
    from hitrs_fast.data.loader import build_loader
    from hitrs_fast.data.synthetic import write_synthetic

    store = write_synthetic(tmp_path / "s", "trimmed", samples_per_class=4, num_classes=3)
    loader = build_loader(store, batch_size=3, augment="hitrs", seed=5)
    loader.set_epoch(2)
    full = list(loader)
    tail = list(loader.iter_from(2))
    assert len(tail) == len(full) - 2
    for a, b in zip(full[2:], tail, strict=True):
        assert torch.equal(a.x, b.x) and torch.equal(a.indices, b.indices)
