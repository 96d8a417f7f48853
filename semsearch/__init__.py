"""semsearch: semantic search over local files, offline, fast and scriptable.

The Python API::

    from semsearch import Index

    with Index.create("notes/.semsearch", exist_ok=True) as index:
        index.update(["notes"])
        for hit in index.search("how do I rotate the logs", k=3):
            print(hit.chunk.path, hit.chunk.line_start, round(hit.score, 3))

Names are imported on first use: ``import semsearch`` stays cheap for the command line.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from semsearch.version import __version__

# onnxruntime (1.32 at least, on Linux too) records events in ~/.cache/Microsoft/DeveloperTools
# and tries to send them to Microsoft: a DNS lookup that, on a machine without a network, held a
# first import for seconds. semsearch never sends anything anywhere; set before any import of
# onnxruntime by semsearch (a user who set the variable keeps their value).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

if TYPE_CHECKING:
    from semsearch.api import Index, IndexSettings
    from semsearch.duplicates import DuplicateGroup, Duplicates, FilePair
    from semsearch.errors import (
        ExtractError,
        IndexCorruptError,
        IndexExistsError,
        IndexLockedError,
        IndexNotFoundError,
        IndexOutdatedError,
        IndexVersionError,
        InvalidOptionError,
        ModelError,
        ModelOptionError,
        SemsearchError,
    )
    from semsearch.indexing import IndexEvent, IndexSummary, Tuning
    from semsearch.indexing import IndexSummary as UpdateSummary
    from semsearch.scope import Scope
    from semsearch.search import Hit, SearchOptions
    from semsearch.status import IndexStatus
    from semsearch.store import ChunkRecord

__all__ = [
    "ChunkRecord",
    "DuplicateGroup",
    "Duplicates",
    "ExtractError",
    "FilePair",
    "Hit",
    "Index",
    "IndexCorruptError",
    "IndexEvent",
    "IndexExistsError",
    "IndexLockedError",
    "IndexNotFoundError",
    "IndexOutdatedError",
    "IndexSettings",
    "IndexStatus",
    "IndexSummary",
    "IndexVersionError",
    "InvalidOptionError",
    "ModelError",
    "ModelOptionError",
    "Scope",
    "SearchOptions",
    "SemsearchError",
    "Tuning",
    "UpdateSummary",
    "__version__",
]

_WHERE = {
    "Index": "semsearch.api",
    "IndexSettings": "semsearch.api",
    "IndexStatus": "semsearch.status",
    "Hit": "semsearch.search",
    "SearchOptions": "semsearch.search",
    "Scope": "semsearch.scope",
    "Duplicates": "semsearch.duplicates",
    "DuplicateGroup": "semsearch.duplicates",
    "FilePair": "semsearch.duplicates",
    "ChunkRecord": "semsearch.store",
    "IndexEvent": "semsearch.indexing",
    "IndexSummary": "semsearch.indexing",
    "Tuning": "semsearch.indexing",
    "UpdateSummary": "semsearch.indexing",
}
_ERRORS = {
    "ExtractError",
    "IndexCorruptError",
    "IndexExistsError",
    "IndexLockedError",
    "IndexNotFoundError",
    "IndexOutdatedError",
    "IndexVersionError",
    "InvalidOptionError",
    "ModelError",
    "ModelOptionError",
    "SemsearchError",
}


def __getattr__(name: str) -> Any:
    import importlib

    if name in _ERRORS:
        module = importlib.import_module("semsearch.errors")
    elif name in _WHERE:
        module = importlib.import_module(_WHERE[name])
    else:
        raise AttributeError(f"module 'semsearch' has no attribute {name!r}")
    value = getattr(module, "IndexSummary" if name == "UpdateSummary" else name)
    globals()[name] = value
    return value
