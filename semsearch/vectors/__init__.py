"""Vector engines behind one protocol (:class:`VectorIndex`), chosen by the name an index records.

A new engine is one module that defines ``BACKEND`` (a :class:`VectorBackend`) and one line in
``BUILTIN_BACKENDS``, or a :func:`register_backend` call from outside.
"""

from __future__ import annotations

import importlib

from semsearch.errors import IndexCorruptError
from semsearch.vectors.base import Subset, VectorBackend, VectorIndex, VectorState

__all__ = [
    "BUILTIN_BACKENDS",
    "DEFAULT_BACKEND",
    "Subset",
    "VectorBackend",
    "VectorIndex",
    "VectorState",
    "backend",
    "register_backend",
    "unregister_backend",
]

DEFAULT_BACKEND = "hnsw"
BUILTIN_BACKENDS = {
    "hnsw": "semsearch.vectors.hnsw",
    "pgvector": "semsearch.vectors.pgvector",  # parameters only: the vectors live in PostgreSQL
}
_registered: dict[str, VectorBackend] = {}


def register_backend(engine: VectorBackend) -> None:
    """Make indexes whose manifest names ``engine.name`` use *engine*."""
    _registered[engine.name] = engine


def unregister_backend(name: str) -> None:
    """Forget an engine registered with :func:`register_backend` (built-in ones load again on use)."""
    _registered.pop(name, None)


def backend(name: str) -> VectorBackend:
    """The engine an index names (its module is imported on first use)."""
    if name not in _registered and name in BUILTIN_BACKENDS:
        _registered[name] = importlib.import_module(BUILTIN_BACKENDS[name]).BACKEND
    try:
        return _registered[name]
    except KeyError:
        raise IndexCorruptError(
            f"the index uses the vector engine {name!r}, which this semsearch does not have"
        ) from None
