"""The update pipeline: walk -> read -> chunk -> embed -> store, one generation at a time."""

from __future__ import annotations

from semsearch.indexing.build import build_index, merge_index
from semsearch.indexing.disk import DiskChanges, disk_changes
from semsearch.indexing.options import DEFAULT_TUNING, IndexEvent, IndexOptions, IndexSummary, Tuning, WalkChoices

__all__ = [
    "DEFAULT_TUNING",
    "DiskChanges",
    "IndexEvent",
    "IndexOptions",
    "IndexSummary",
    "Tuning",
    "WalkChoices",
    "build_index",
    "disk_changes",
    "merge_index",
]
