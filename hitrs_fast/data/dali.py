"""NVIDIA DALI pipeline for skeleton batches: the only module of the library that imports ``nvidia.dali``.

``nvidia.dali`` is imported lazily (inside functions), so importing this module costs nothing and never
fails; :func:`dali_available` reports whether DALI can be used here and why not.

:class:`DaliSkeletonPipeline` takes per-sample sequences in store layout ``[T, M, V, C]`` (memmap slices of
a :class:`~hitrs_fast.data.store.SkeletonStore`, fed through ``external_source``) together with one
:class:`~hitrs_fast.data.augment.AugmentParams` draw, and produces the same zero-padded
``[B, M, T_max, V, C]`` torch batch as the torch path (:func:`hitrs_fast.data.augment.apply` followed by
:func:`~hitrs_fast.data.augment.crop_resize`), using DALI operators:

- spatial: ``fn.coord_transform`` with the per-sample 3x3 matrix, plus the per-joint offsets broadcast over
  time and masked by a per-body presence flag (``fn.reductions.max`` of ``|x|`` > 0);
- time interpolation: ``fn.sequence_rearrange`` to the next frame, then ``x + r (x_next - x)``;
- time crop: ``fn.slice`` along the frame axis;
- crop-resize: two ``fn.sequence_rearrange`` gathers and a linear blend;
- layout and padding: ``fn.transpose`` to ``[M, T, V, C]`` and ``fn.pad`` to the batch's longest sample.

Small per-sample index arrays (next-frame order, resize indices and weights) are computed on the host from
the parameters, exactly as the torch path computes them, so the two backends agree to float rounding
(``fn.coord_transform`` may round its multiply-adds differently from ``torch.einsum``; nothing else does).

Runs on the CPU (``device="cpu"``, DALI ``device_id=None``: no GPU driver needed) or on a GPU
(``device="cuda"``; the data is copied to the GPU right after the external source).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch

from hitrs_fast.data.augment import AugmentParams, _resize_indices

__all__ = ["DaliSkeletonPipeline", "dali_available"]


@functools.cache
def dali_available() -> tuple[bool, str]:
    """``(True, version)`` if ``nvidia.dali`` imports, else ``(False, reason)``."""
    try:
        import nvidia.dali as dali
    except Exception as e:  # ImportError, or OSError from a broken native library
        return False, f"nvidia.dali cannot be imported: {type(e).__name__}: {e}"
    return True, str(getattr(dali, "__version__", "unknown"))


def _require_dali() -> None:
    ok, why = dali_available()
    if not ok:
        raise ImportError(f"the DALI backend needs NVIDIA DALI (pip install nvidia-dali-cuda130): {why}")


class DaliSkeletonPipeline:
    """A DALI pipeline assembling (and optionally augmenting / crop-resizing) skeleton batches.

    Args:
        batch_size: the largest batch :meth:`run` will be given (smaller final batches are fine).
        num_bodies: M of the sequences it will be fed (fixed per pipeline).
        num_joints: V (25 for NTU).
        augment: build the spatial/temporal augmentation stage (then :meth:`run` needs ``params``).
        crop_length: build a crop-resize stage to this many frames (then :meth:`run` needs ``resize``).
        device: ``"cpu"`` or ``"cuda"`` / ``"cuda:N"``; where DALI runs and where the output tensor lives.
        num_threads: DALI CPU worker threads.
    """

    def __init__(self, *, batch_size: int, num_bodies: int, num_joints: int = 25, augment: bool = True,
                 crop_length: int | None = None, device: str | torch.device = "cpu", num_threads: int = 2,
                 seed: int = 0) -> None:
        _require_dali()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if crop_length is not None and crop_length < 1:
            raise ValueError(f"crop_length must be >= 1 or None, got {crop_length}")
        self.device = torch.device(device)
        if self.device.type not in ("cpu", "cuda"):
            raise ValueError(f"device must be cpu or cuda, got {self.device}")
        self.batch_size = int(batch_size)
        self.num_bodies = int(num_bodies)
        self.num_joints = int(num_joints)
        self.augment = bool(augment)
        self.crop_length = crop_length
        device_id = None
        if self.device.type == "cuda":
            device_id = self.device.index if self.device.index is not None else torch.cuda.current_device()
        self._pipe = self._build(device_id, num_threads, seed)

    def _build(self, device_id: int | None, num_threads: int, seed: int):  # -> nvidia.dali.Pipeline
        import nvidia.dali.fn as fn
        import nvidia.dali.math as dmath
        import nvidia.dali.types as types
        from nvidia.dali import pipeline_def

        gpu = device_id is not None

        @pipeline_def(batch_size=self.batch_size, num_threads=num_threads, device_id=device_id, seed=seed,
                      prefetch_queue_depth=1)
        def pipe():
            x = fn.external_source(name="seq", dtype=types.FLOAT, ndim=4, layout="FMVC", no_copy=False)
            if gpu:
                x = x.gpu()
            if self.augment:
                matrix = fn.external_source(name="matrix", dtype=types.FLOAT, ndim=2)
                offsets = fn.external_source(name="offsets", dtype=types.FLOAT, ndim=4)
                r = fn.external_source(name="interp_r", dtype=types.FLOAT, ndim=4)
                next_order = fn.external_source(name="next_order", dtype=types.INT32, ndim=1)
                crop_start = fn.external_source(name="crop_start", dtype=types.INT64, ndim=1)
                crop_len = fn.external_source(name="crop_len", dtype=types.INT64, ndim=1)
                if gpu:
                    offsets, r = offsets.gpu(), r.gpu()
                # Presence over the whole sample [1, M, 1, 1]: all-zero bodies get no offsets (A @ 0 = 0
                # already leaves them untouched under the matrix).
                present = fn.reductions.max(dmath.abs(x), axes=[0, 2, 3], keep_dims=True) > 0
                y = fn.coord_transform(x, M=matrix) + offsets * present
                nxt = fn.sequence_rearrange(y, new_order=next_order)
                y = y + r * (nxt - y)
                x = fn.slice(y, crop_start, crop_len, axes=[0])
            if self.crop_length is not None:
                i0 = fn.external_source(name="resize_i0", dtype=types.INT32, ndim=1)
                i1 = fn.external_source(name="resize_i1", dtype=types.INT32, ndim=1)
                w = fn.external_source(name="resize_w", dtype=types.FLOAT, ndim=4)
                if gpu:
                    w = w.gpu()
                x0 = fn.sequence_rearrange(x, new_order=i0)
                x1 = fn.sequence_rearrange(x, new_order=i1)
                x = x0 + w * (x1 - x0)
            x = fn.transpose(x, perm=[1, 0, 2, 3])  # [T, M, V, C] -> [M, T, V, C]
            return fn.pad(x, axes=[1], fill_value=0.0)  # to the batch's longest sample

        p = pipe()
        p.build()
        return p

    def run(self, sequences: Sequence[np.ndarray], params: AugmentParams | None = None,
            resize: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Assemble one batch.

        Args:
            sequences: B arrays ``[T_b, M, V, C]`` float32 (store layout; memmap views are fine).
            params: the augmentation draw (required iff the pipeline was built with ``augment=True``).
            resize: ``(start [B], crop_len [B])`` of the crop-resize, in frames of the augmented sequence
                (required iff built with ``crop_length``).

        Returns:
            ``(x [B, M, T_max, V, C] float32 on self.device, lengths [B] int64 on the CPU)``.
        """
        b = len(sequences)
        if not 1 <= b <= self.batch_size:
            raise ValueError(f"got {b} sequences, the pipeline takes 1..{self.batch_size}")
        seqs = []
        for k, s in enumerate(sequences):
            if s.ndim != 4 or s.shape[1:] != (self.num_bodies, self.num_joints, 3):
                raise ValueError(f"sequence {k}: expected [T, {self.num_bodies}, {self.num_joints}, 3], "
                                 f"got {tuple(s.shape)}")
            if s.shape[0] < 1:
                raise ValueError(f"sequence {k}: empty (T = 0)")
            seqs.append(np.ascontiguousarray(s, dtype=np.float32))
        lengths = torch.tensor([s.shape[0] for s in seqs], dtype=torch.int64)
        pipe = self._pipe
        pipe.feed_input("seq", seqs)
        if self.augment:
            if params is None:
                raise ValueError("this pipeline was built with augment=True: pass params")
            if params.batch_size != b:
                raise ValueError(f"params are for {params.batch_size} samples, got {b} sequences")
            p = params.to("cpu")
            pipe.feed_input("matrix", list(p.matrix.float().numpy()))
            pipe.feed_input("offsets", [o[None, None] for o in p.offsets.float().numpy()])
            pipe.feed_input("interp_r", [np.full((1, 1, 1, 1), r, np.float32) for r in p.interp_r.numpy()])
            pipe.feed_input("next_order", [np.minimum(np.arange(1, n + 1), n - 1).astype(np.int32)
                                           for n in lengths.tolist()])
            start, drop = p.crop_start.long(), p.crop_drop.long()
            if bool(((start < 0) | (start > drop) | (drop >= lengths)).any()):
                raise ValueError("params crop needs 0 <= crop_start <= crop_drop < length for every sample")
            new_len = lengths - drop
            pipe.feed_input("crop_start", [np.array([a], np.int64) for a in start.tolist()])
            pipe.feed_input("crop_len", [np.array([n], np.int64) for n in new_len.tolist()])
            lengths = new_len
        elif params is not None:
            raise ValueError("this pipeline was built with augment=False: params must be None")
        if self.crop_length is not None:
            if resize is None:
                raise ValueError(f"this pipeline was built with crop_length={self.crop_length}: pass resize")
            i0, i1, w = _resize_indices(resize[0], resize[1], lengths, self.crop_length)
            pipe.feed_input("resize_i0", list(i0.int().numpy()))
            pipe.feed_input("resize_i1", list(i1.int().numpy()))
            pipe.feed_input("resize_w", [wb[:, None, None, None] for wb in w.numpy()])
            lengths = torch.full((b,), self.crop_length, dtype=torch.int64)
        elif resize is not None:
            raise ValueError("this pipeline was built without crop_length: resize must be None")
        (out,) = pipe.run()
        return self._to_torch(out), lengths

    def _to_torch(self, out) -> torch.Tensor:
        tensor = out.as_tensor()
        if self.device.type == "cpu":
            return torch.from_numpy(np.array(tensor))  # a copy: DALI reuses its buffers on the next run
        from nvidia.dali.plugin.pytorch import feed_ndarray

        dst = torch.empty(tuple(tensor.shape()), dtype=torch.float32, device=self.device)
        feed_ndarray(tensor, dst, cuda_stream=torch.cuda.current_stream(self.device))
        return dst
