"""Skeleton data I/O: the canonical store, dataset readers/converters, importers and loaders.

Importing this package is cheap: it pulls in numpy and the store API only. The NTU / PKU-MMD readers,
the importers and the CLI (``python -m hitrs_fast.data``) live in submodules imported on demand, and
only :mod:`hitrs_fast.data.dali` imports NVIDIA DALI.
"""

from hitrs_fast.data.store import SkeletonStore, StoreFormatError, StoreSample, write_store

__all__ = ["SkeletonStore", "StoreFormatError", "StoreSample", "write_store"]
