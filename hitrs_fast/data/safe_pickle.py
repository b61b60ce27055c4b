"""A restricted unpickler for the label / annotation pickles of peer codebases (st-gcn, 2s-AGCN, PYSKL).

``pickle.load`` runs arbitrary code: a pickle may name any importable callable (``os.system``) and have
it called on load. These files only need plain containers and numpy arrays, so :func:`safe_load`
resolves only numpy's array/scalar/dtype reconstruction functions; every other global is refused with
:class:`UnsafePickleError` before anything is called. Plain containers (dict, list, tuple, str, bytes,
int, float, bool, None) are built by pickle opcodes and never go through global lookup.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

__all__ = ["UnsafePickleError", "safe_load", "safe_loads"]

# (module, name) pairs a numpy array, numpy scalar or dtype pickles as, across numpy 1.x ("numpy.core")
# and 2.x ("numpy._core"). ``_codecs.encode`` appears in pickles written by Python 2 / protocol <= 2 for
# byte strings; it only turns a str into bytes.
_ALLOWED: frozenset[tuple[str, str]] = frozenset(
    [(mod, name) for mod in ("numpy.core.multiarray", "numpy._core.multiarray") for name in ("_reconstruct", "scalar")]
    + [(mod, "_frombuffer") for mod in ("numpy.core.numeric", "numpy._core.numeric")]
    + [("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")]
)


class UnsafePickleError(ValueError):
    """The pickle references a global outside the allowed set (plain containers and numpy arrays)."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, source: str) -> None:
        # latin1 decodes Python 2 str payloads (st-gcn era pickles) byte for byte.
        super().__init__(file, encoding="latin1")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module == "numpy" and name.startswith("dtype["):
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"{self._source}: refusing to load global {module}.{name}: only plain containers (dict, list, tuple, "
            "str, int, float, bool, None) and numpy arrays/dtypes are allowed in data pickles"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._source}: persistent ids are not allowed in data pickles")


def safe_load(path: str | os.PathLike) -> Any:
    """Unpickle ``path`` allowing only plain containers and numpy arrays.

    Raises:
        UnsafePickleError: the pickle names any other global (e.g. ``os.system``).
        ValueError: the file is not a readable pickle; the message names the file.
    """
    path = Path(path)
    with open(path, "rb") as f:
        return _load(f, str(path))


def safe_loads(data: bytes, source: str = "<bytes>") -> Any:
    """:func:`safe_load` for an in-memory pickle."""
    return _load(io.BytesIO(data), source)


def _load(f: Any, source: str) -> Any:
    try:
        return _RestrictedUnpickler(f, source).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError) as e:
        raise ValueError(f"{source}: not a readable pickle ({type(e).__name__}: {e})") from e
