"""What an index holds and how the disk differs from it (the answer of ``Index.status()``).

Its own module so that code that never asks for a status does not pay for defining it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class IndexStatus:
    """What an index holds and how the disk differs from it."""

    index: Path
    model: str
    model_fingerprint: str
    dim: int
    precision: str
    files: int
    files_without_text: int
    chunks: int
    disk_bytes: int
    created_at: float
    updated_at: float
    roots: list[str]
    chunking: dict[str, Any]
    walk: dict[str, Any]  # the walk settings the next plain update uses
    format_version: int
    vector_index: str
    changed_since: int | None = None  # None when the disk was not compared
    missing_since: int | None = None
    new_since: int | None = None
    vector_segments: int = 1  # the base and its deltas (merged into it by a later update)
    vector_tombstones: int = 0  # removed chunks whose vectors a segment still holds
    problems: list[str] | None = None  # with verify: what the whole check found ([]: nothing)
    database: str = ""  # a PostgreSQL index: its URL (no password) and the schema of its build
    model_endpoint: str = ""  # a served model's URL (no credentials)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form `semsearch status --json` prints."""
        return {
            "index": str(self.index),
            "database": self.database or None,
            "model": self.model,
            "model_fingerprint": self.model_fingerprint,
            "model_endpoint": self.model_endpoint or None,
            "dim": self.dim,
            "files": self.files,
            "files_without_text": self.files_without_text,
            "chunks": self.chunks,
            "disk_bytes": self.disk_bytes,
            "updated_at": self.updated_at,
            "created_at": self.created_at,
            "precision": self.precision,
            "changed_since": self.changed_since,
            "missing_since": self.missing_since,
            "new_since": self.new_since,
            "roots": self.roots,
            "chunking": self.chunking,
            "walk": self.walk,
            "format_version": self.format_version,
            "vector_index": self.vector_index,
            "vector_segments": self.vector_segments,
            "vector_tombstones": self.vector_tombstones,
            "problems": self.problems,
        }
