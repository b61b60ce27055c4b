"""Batch loaders over a :class:`~hitrs_fast.data.store.SkeletonStore`: a torch backend and a DALI backend.

:func:`build_loader` returns a :class:`SkeletonLoader`, an iterable of :class:`Batch` (``x [B, M, T_max, V, C]``
float32 zero-padded to the longest sample of the batch, ``lengths``, ``labels``, ``indices``). Both backends
walk the same items in the same order and draw the same augmentation parameters (sampled on the CPU from a
``torch.Generator`` seeded by ``(seed, epoch, rank, batch)``), so for a seed they yield the same batches:

- ``backend="torch"``: the batch is copied out of the memmap into a padded array, moved to ``device`` and
  augmented there with :mod:`hitrs_fast.data.augment`;
- ``backend="dali"``: the memmap slices go through a DALI ``external_source`` and the augmentation runs as
  DALI operators (:mod:`hitrs_fast.data.dali`), on the CPU or on the GPU.

Length buckets (``length_buckets``): every batch is zero-padded up to the smallest bucket that holds its longest
sample instead of to that sample, so a compiled step (``torch.compile`` with static shapes) sees a few frame
counts, one graph each, instead of one per batch; :func:`length_buckets` picks the buckets that pad a store's
lengths least, and :attr:`SkeletonLoader.padding` counts the frames padding added.

Pre-training (Hi-TRS; ``docs/model.md``) uses ``bodies="single", min_length=19, augment="hitrs"``:
every occupied body slot becomes its own ``M = 1`` sample with the video's length, and only videos with
``T >= 19`` are used.

Ordering and sharding: epoch ``e`` visits the selected items in ``default_rng([seed, e]).permutation`` order
(or in order with ``shuffle=False``); rank ``r`` of ``w`` takes every ``w``-th item starting at ``r``, so the
ranks together cover each item exactly once. With ``drop_last=True`` the permutation is first cut to a
multiple of ``w`` and each rank drops its last incomplete batch, so all ranks yield the same number of
batches (what DDP needs); with ``drop_last=False`` rank batch counts may differ by one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from typing import Literal

import numpy as np
import torch

from hitrs_fast.data.augment import (
    AugmentParams,
    HiTRSAugment,
    apply,
    centre_crop_resize_params,
    crop_resize,
    sample_crop_resize,
)
from hitrs_fast.data.store import SkeletonStore

__all__ = ["Batch", "PaddingStats", "SkeletonLoader", "build_loader", "bucket_for", "length_buckets",
           "occupied_slots"]

# Pre-training threshold of the released code (docs/model.md): T > 2 * 7 / 0.8 + 1.
PRETRAIN_MIN_LENGTH = 19


@dataclass
class Batch:
    """One batch.

    Attributes:
        x: ``[B, M, T_max, V, C]`` float32, zero beyond each sample's length (``M = 1`` with ``bodies="single"``).
        lengths: ``[B]`` int64 frames per sample after augmentation / crop-resize, on the CPU (sizes live on
            the host, as ``torch.nn.utils.rnn.pack_padded_sequence`` wants them; the encoder takes them there
            without a device sync). Every other tensor is on the loader's device.
        labels: ``[B]`` int64 class ids (-1 = unlabelled).
        indices: ``[B]`` int64 store indices of the samples.
        slots: ``[B]`` int64 body slot taken (``bodies="single"``), -1 when all slots are kept.
    """

    x: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    slots: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return replace(self, **{f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                                for f in fields(self)})

    def __len__(self) -> int:
        return int(self.x.shape[0])


def length_buckets(lengths: np.ndarray, count: int) -> tuple[int, ...]:
    """The ``count`` frame counts (at most) that pad ``lengths`` least when every sample is padded up to the
    smallest bucket holding it: the largest bucket is ``max(lengths)``, and the others minimise the summed
    padding over the samples (exact, by dynamic programming over the distinct lengths).

    A batch is padded to the bucket of its longest sample, so the real padding of a batch also depends on how
    the loader groups lengths (``group_by_length``); :attr:`SkeletonLoader.padding` measures it.

    Args:
        lengths: ``[N]`` frames per sample (N >= 1).
        count: buckets wanted (>= 1).

    Returns:
        Increasing frame counts, the last one ``max(lengths)``.
    """
    values, freq = np.unique(np.asarray(lengths, dtype=np.int64), return_counts=True)
    if values.size == 0 or count < 1:
        raise ValueError(f"length_buckets: need >= 1 length and count >= 1, got {values.size} lengths, count {count}")
    k = min(count, values.size)
    n = values.size
    # cost[i][j]: padding of the lengths values[i..j] all padded to values[j].
    cum_f = np.concatenate([[0], np.cumsum(freq)])
    cum_fl = np.concatenate([[0], np.cumsum(freq * values)])

    def cost(i: int, j: int) -> int:
        return int(values[j] * (cum_f[j + 1] - cum_f[i]) - (cum_fl[j + 1] - cum_fl[i]))

    inf = np.iinfo(np.int64).max
    best = np.full((k + 1, n), inf, dtype=np.int64)  # best[b][j]: values[0..j] in b buckets, the last at values[j]
    cut = np.zeros((k + 1, n), dtype=np.int64)
    for j in range(n):
        best[1][j] = cost(0, j)
    for b in range(2, k + 1):
        for j in range(b - 1, n):
            for i in range(b - 2, j):
                if best[b - 1][i] == inf:
                    continue
                c = best[b - 1][i] + cost(i + 1, j)
                if c < best[b][j]:
                    best[b][j], cut[b][j] = c, i
    chosen, j = [], n - 1
    for b in range(k, 0, -1):
        chosen.append(int(values[j]))
        j = int(cut[b][j])
    return tuple(sorted(set(chosen)))


def bucket_for(frames: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket holding ``frames`` (ValueError when none does)."""
    for bucket in buckets:
        if frames <= bucket:
            return bucket
    raise ValueError(f"a batch of {frames} frames is longer than the largest length bucket ({buckets[-1]})")


@dataclass
class PaddingStats:
    """Frames the batches held: ``real`` (sum of the lengths), ``longest`` (padded to each batch's longest
    sample, what an eager step computes) and ``padded`` (what the batches hold, buckets included)."""

    real: int = 0
    longest: int = 0
    padded: int = 0

    def add(self, lengths: torch.Tensor, frames: int) -> None:
        self.real += int(lengths.sum())
        self.longest += int(lengths.max()) * len(lengths)
        self.padded += frames * len(lengths)

    @property
    def waste(self) -> float:
        """Padded frames per real frame minus 1 (0.1 = 10 % more frames computed than the samples hold)."""
        return self.padded / max(1, self.real) - 1.0

    @property
    def bucket_waste(self) -> float:
        """Frames the buckets added beyond padding each batch to its longest sample, per real frame."""
        return (self.padded - self.longest) / max(1, self.real)


_OCCUPIED_CACHE: dict[tuple[str, int, int], np.ndarray] = {}


def occupied_slots(store: SkeletonStore, chunk_frames: int = 1 << 16) -> np.ndarray:
    """``[N, M]`` bool: body slot ``m`` of sample ``i`` holds a non-zero value in some frame.

    A chunked scan of the memmap (a few seconds for NTU-60 scale stores), cached per store directory and
    data size. ``store.num_bodies`` only counts occupied slots; this says which ones they are.
    """
    key = (str(store.root.resolve()), int(store.data.shape[0]), os.stat(store.root / "data.npy").st_mtime_ns)
    hit = _OCCUPIED_CACHE.get(key)
    if hit is not None:
        return hit
    total, m = store.data.shape[0], store.data.shape[1]
    per_frame = np.zeros((total, m), dtype=bool)
    for s in range(0, total, chunk_frames):
        block = np.asarray(store.data[s : s + chunk_frames])
        per_frame[s : s + block.shape[0]] = (block != 0).reshape(block.shape[0], m, -1).any(axis=2)
    if len(store) == 0:
        out = np.zeros((0, m), dtype=bool)
    else:
        out = np.logical_or.reduceat(per_frame, store.offsets, axis=0)
    _OCCUPIED_CACHE[key] = out
    return out


class SkeletonLoader:
    """Iterable of :class:`Batch` over selected store items; see :func:`build_loader` for the arguments."""

    def __init__(self, store: SkeletonStore, items: np.ndarray, slots: np.ndarray, *, batch_size: int,
                 backend: Literal["torch", "dali"], shuffle: bool, seed: int, augment: HiTRSAugment | None,
                 single_body: bool, crop_length: int | None, crop_ratio: float | tuple[float, float],
                 crop_min_frames: int, drop_last: bool, device: torch.device, rank: int, world_size: int,
                 num_threads: int, group_by_length: int = 0, length_buckets: tuple[int, ...] | None = None) -> None:
        self.store = store
        self.items = items          # [K] store indices
        self.slots = slots          # [K] body slot (-1 = all)
        self.batch_size = batch_size
        self.backend = backend
        self.shuffle = shuffle
        self.seed = seed
        self.augment = augment
        self.single_body = single_body
        self.crop_length = crop_length
        self.crop_ratio = crop_ratio
        self.crop_min_frames = crop_min_frames
        self.drop_last = drop_last
        self.device = device
        self.rank = rank
        self.world_size = world_size
        self.num_threads = num_threads
        self.group_by_length = group_by_length
        self.length_buckets = length_buckets
        self.padding = PaddingStats()
        self.epoch = 0
        self._dali = None
        _, m, v, c = store.data.shape
        self._m = 1 if single_body else m
        self._v, self._c = v, c

    def set_epoch(self, epoch: int) -> None:
        """Reseed the order and the augmentation draws for ``epoch`` (call before iterating each epoch)."""
        self.epoch = int(epoch)

    @property
    def num_items(self) -> int:
        """Items (samples, or body sequences with ``bodies="single"``) selected across all ranks."""
        return int(self.items.shape[0])

    def _shard(self) -> np.ndarray:
        k = self.num_items
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(k) if self.shuffle else np.arange(k)
        if self.drop_last:
            order = order[: k - k % self.world_size]
        if self.group_by_length > 1:
            order = self._grouped(order, rng)
        return order[self.rank :: self.world_size]

    def _grouped(self, order: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``order`` with similar lengths batched together: each window of ``group_by_length`` global
        batches is sorted by stored length and cut into global batches, whose order is then shuffled.
        A batch is padded to its longest sample, so this cuts the padded frames the model computes on.
        Global batch ``i`` is batch ``i`` of every rank, so the split over ranks does not change it."""
        per_batch = self.batch_size * self.world_size
        full = len(order) // per_batch * per_batch
        lengths = self.store.lengths[self.items[order[:full]]]
        window = per_batch * self.group_by_length
        chunks = []
        for s in range(0, full, window):
            part = order[s : s + window][np.argsort(-lengths[s : s + window], kind="stable")]
            chunks.extend(np.split(part, len(part) // per_batch))
        if self.shuffle:
            chunks = [chunks[i] for i in rng.permutation(len(chunks))]
        return np.concatenate(chunks + [order[full:]]) if chunks else order

    def __len__(self) -> int:
        k = self.num_items
        if self.drop_last:
            return (k - k % self.world_size) // self.world_size // self.batch_size
        return -(-len(range(self.rank, k, self.world_size)) // self.batch_size)

    def _generator(self, batch_idx: int) -> torch.Generator:
        state = np.random.SeedSequence([self.seed, self.epoch, self.rank, batch_idx]).generate_state(1, np.uint64)
        return torch.Generator().manual_seed(int(state[0]) & ((1 << 63) - 1))

    def _sequences(self, pos: np.ndarray) -> list[np.ndarray]:
        out = []
        for p in pos:
            seq = self.store.sequence(int(self.items[p]))
            if self.single_body:
                s = int(self.slots[p])
                seq = seq[:, s : s + 1]
            out.append(seq)
        return out

    def _draw(self, lengths: torch.Tensor, gen: torch.Generator) -> tuple[AugmentParams | None, torch.Tensor]:
        """Augmentation params and the lengths they leave (crops shorten samples)."""
        if self.augment is None:
            return None, lengths
        params = self.augment.sample_params(lengths, gen)
        return params, lengths - params.crop_drop

    def _resize_params(self, lengths: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(self.crop_ratio, tuple):
            return sample_crop_resize(lengths, gen, self.crop_ratio, self.crop_min_frames)
        return centre_crop_resize_params(lengths, self.crop_ratio)

    def __iter__(self) -> Iterator[Batch]:
        return self.iter_from(0)

    def iter_from(self, start: int) -> Iterator[Batch]:
        """Batches ``start, start + 1, ...`` of the current epoch, identical to those of a full
        iteration (each batch's draws depend only on its index): resuming mid-epoch reads
        nothing it skips."""
        shard = self._shard()
        n_batches = len(self)
        for bi in range(start, n_batches):
            pos = shard[bi * self.batch_size : (bi + 1) * self.batch_size]
            seqs = self._sequences(pos)
            lengths = torch.tensor([s.shape[0] for s in seqs], dtype=torch.int64)
            gen = self._generator(bi)
            params, aug_lengths = self._draw(lengths, gen)
            resize = self._resize_params(aug_lengths, gen) if self.crop_length is not None else None
            if self.backend == "torch":
                x, out_lengths = self._torch_batch(seqs, lengths, params, resize)
            else:
                x, out_lengths = self._dali_batch(seqs, params, resize)
            if self.length_buckets is not None:
                frames = bucket_for(x.shape[2], self.length_buckets)
                if frames > x.shape[2]:
                    x = torch.nn.functional.pad(x, (0, 0, 0, 0, 0, frames - x.shape[2]))
            self.padding.add(out_lengths, x.shape[2])
            yield Batch(
                x=x,
                lengths=out_lengths,
                labels=self._to_device(self.store.labels[self.items[pos]]),
                indices=self._to_device(self.items[pos]),
                slots=self._to_device(self.slots[pos]),
            )

    def _to_device(self, values: np.ndarray) -> torch.Tensor:
        # non_blocking: a blocking host-to-GPU copy waits for the GPU to drain, so the loader could not
        # prepare the next batch while the current step runs.
        return torch.from_numpy(values.astype(np.int64)).to(self.device, non_blocking=True)

    def _torch_batch(self, seqs: list[np.ndarray], lengths: torch.Tensor, params: AugmentParams | None,
                     resize: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
        t_max = int(lengths.max())
        buf = np.zeros((len(seqs), t_max, self._m, self._v, self._c), dtype=np.float32)
        for b, s in enumerate(seqs):
            buf[b, : s.shape[0]] = s
        host = torch.from_numpy(buf)
        if self.device.type == "cuda":
            host = host.pin_memory()  # so the copy below is asynchronous
        x = host.to(self.device, non_blocking=True).permute(0, 2, 1, 3, 4).contiguous()  # [B, M, T, V, C]
        # Lengths stay on the CPU (the augmentations read them there): no device sync anywhere below.
        if params is not None:
            x, lengths = apply(x, lengths, params)
        if resize is not None:
            assert self.crop_length is not None
            x, lengths = crop_resize(x, lengths, resize[0], resize[1], self.crop_length)
        else:
            x = x[:, :, : int(lengths.max())].contiguous()
        return x, lengths

    def _dali_batch(self, seqs: list[np.ndarray], params: AugmentParams | None,
                    resize: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self._dali is None:
            from hitrs_fast.data.dali import DaliSkeletonPipeline

            self._dali = DaliSkeletonPipeline(
                batch_size=self.batch_size, num_bodies=self._m, num_joints=self._v, augment=self.augment is not None,
                crop_length=self.crop_length, device=self.device, num_threads=self.num_threads, seed=self.seed,
            )
        return self._dali.run(seqs, params, resize)


def build_loader(
    store: SkeletonStore | str | os.PathLike,
    *,
    batch_size: int,
    backend: Literal["torch", "dali"] = "torch",
    split: str | None = None,
    indices: np.ndarray | list[int] | None = None,
    shuffle: bool = True,
    seed: int = 0,
    augment: None | Literal["hitrs"] | HiTRSAugment = None,
    bodies: Literal["all", "single"] = "all",
    min_length: int = 0,
    crop_length: int | None = None,
    crop_ratio: float | tuple[float, float] = 1.0,
    crop_min_frames: int = 64,
    drop_last: bool = False,
    device: str | torch.device = "cpu",
    rank: int = 0,
    world_size: int = 1,
    num_threads: int = 2,
    group_by_length: int = 0,
    length_buckets: tuple[int, ...] | list[int] | None = None,
) -> SkeletonLoader:
    """A loader of zero-padded ``[B, M, T_max, V, C]`` batches over a store.

    Args:
        store: a :class:`SkeletonStore` or its directory.
        batch_size: samples per batch (per rank).
        backend: ``"torch"`` (numpy gather + torch augmentation on ``device``) or ``"dali"`` (DALI pipeline on
            ``device``); same batches for the same seed.
        split / indices: restrict to a named split of the store or to explicit store indices (not both).
        shuffle: permute the items each epoch (seeded by ``(seed, epoch)``; see :meth:`SkeletonLoader.set_epoch`).
        seed: base seed for the order and the augmentation draws.
        augment: None, ``"hitrs"`` (:class:`HiTRSAugment` with p = 0.5) or a configured :class:`HiTRSAugment`.
        bodies: ``"all"`` (the store's M slots) or ``"single"`` (every occupied slot its own M = 1 sample).
        min_length: keep only samples with stored length ``T >= min_length`` (19 for Hi-TRS pre-training).
        crop_length: resample every sample (after augmentation) to this many frames (MAMP-style crop-resize).
        crop_ratio: with ``crop_length``: a float keeps the centre fraction (1.0 = whole sequence, 0.95 = MAMP
            test); a ``(low, high)`` tuple draws ``p ~ U(low, high)`` and a random window (MAMP training).
        crop_min_frames: lower clamp of the random window length (MAMP: 64; never above the sample length).
        drop_last: drop incomplete final batches (and equalise rank shards, see the module docstring).
        device: where batches live (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        rank, world_size: distributed sharding.
        num_threads: DALI CPU threads.
        group_by_length: ``N > 1`` batches samples of similar stored length together: every window of ``N``
            global batches (of the shuffled order) is sorted by length, cut into batches, and the batches are
            shuffled. Less zero padding, so less compute per step; 0 or 1 keeps plain shuffled batches.
        length_buckets: frame counts a batch is padded up to (the smallest that holds its longest sample; see
            :func:`length_buckets`), for a compiled step with static shapes; None pads to the longest sample.
            The largest must hold every selected sample (after ``crop_length``).
    """
    if not isinstance(store, SkeletonStore):
        store = SkeletonStore(store)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if backend not in ("torch", "dali"):
        raise ValueError(f"backend must be 'torch' or 'dali', got {backend!r}")
    if bodies not in ("all", "single"):
        raise ValueError(f"bodies must be 'all' or 'single', got {bodies!r}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need world_size >= 1 and 0 <= rank < world_size, got rank={rank} world_size={world_size}")
    if group_by_length < 0:
        raise ValueError(f"group_by_length must be >= 0, got {group_by_length}")
    if crop_length is not None and crop_length < 1:
        raise ValueError(f"crop_length must be >= 1 or None, got {crop_length}")
    if isinstance(crop_ratio, (tuple, list)):
        if len(crop_ratio) != 2 or not 0.0 < crop_ratio[0] <= crop_ratio[1] <= 1.0:
            raise ValueError(f"crop_ratio tuple must be (low, high) with 0 < low <= high <= 1, got {crop_ratio}")
        crop_ratio = (float(crop_ratio[0]), float(crop_ratio[1]))
    elif not 0.0 < float(crop_ratio) <= 1.0:
        raise ValueError(f"crop_ratio must lie in (0, 1], got {crop_ratio}")
    if augment == "hitrs":
        aug: HiTRSAugment | None = HiTRSAugment(p=0.5, num_joints=store.data.shape[2])
    elif augment is None or isinstance(augment, HiTRSAugment):
        aug = augment
    else:
        raise ValueError(f"augment must be None, 'hitrs' or a HiTRSAugment, got {augment!r}")
    dev = torch.device(device)
    if backend == "dali":
        from hitrs_fast.data.dali import dali_available

        ok, why = dali_available()
        if not ok:
            raise ImportError(f"backend='dali' needs NVIDIA DALI: {why}")

    n = len(store)
    if split is not None and indices is not None:
        raise ValueError("pass split or indices, not both")
    if split is not None:
        base = store.split_indices(split)
    elif indices is not None:
        base = np.asarray(indices, dtype=np.int64).reshape(-1)
        if base.size and (base.min() < 0 or base.max() >= n):
            raise ValueError(f"indices must lie in [0, {n}) for store {store.root}")
    else:
        base = np.arange(n, dtype=np.int64)
    base = base[store.lengths[base] >= min_length]

    if bodies == "single":
        occ = occupied_slots(store)[base]                      # [K, M]
        rows, slot = np.nonzero(occ)                            # row-major: sample order, then slot order
        items, slots = base[rows], slot.astype(np.int64)
    else:
        items, slots = base, np.full(base.shape, -1, dtype=np.int64)
    if items.size == 0:
        raise ValueError(f"no items selected from {store.root} (split={split!r}, min_length={min_length}, "
                         f"bodies={bodies!r})")
    if length_buckets is not None:
        buckets = tuple(int(t) for t in length_buckets)
        if not buckets or any(t < 1 for t in buckets) or list(buckets) != sorted(set(buckets)):
            raise ValueError(f"length_buckets must be increasing frame counts >= 1, got {length_buckets}")
        longest = crop_length if crop_length is not None else int(store.lengths[items].max())
        if buckets[-1] < longest:
            raise ValueError(f"length_buckets: the largest bucket ({buckets[-1]}) is shorter than the longest "
                             f"selected sample ({longest} frames) of {store.root}")
        length_buckets = buckets
    return SkeletonLoader(
        store, items, slots, batch_size=batch_size, backend=backend, shuffle=shuffle, seed=seed, augment=aug,
        single_body=bodies == "single", crop_length=crop_length, crop_ratio=crop_ratio,
        crop_min_frames=crop_min_frames, drop_last=drop_last, device=dev, rank=rank, world_size=world_size,
        num_threads=num_threads, group_by_length=group_by_length, length_buckets=length_buckets,
    )
