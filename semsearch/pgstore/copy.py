"""Publishing a local index to PostgreSQL without embedding again: its files, chunks and stored
vectors copied into a new build of the project, checked (file and chunk counts, the model's
fingerprint), then made current in one transaction."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from semsearch.errors import SemsearchError
from semsearch.pgstore.connection import Target, errors_as_one_line
from semsearch.pgstore.registry import ENGINE, holds_local_index, open_writer, write_pointer
from semsearch.store.database import decode_signatures, decode_vectors
from semsearch.vectors import backend

BATCH = 2000  # chunks a statement


@dataclass
class CopySummary:
    files: int
    chunks: int
    model: str
    seconds: float


def copy_local(
    source: Path, target: Target, index_dir: Path, *, wait: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
) -> CopySummary:  # fmt: skip
    """Copy the local index at *source* into *target* as the project's new current build."""
    from semsearch.store import IndexReader

    started = time.perf_counter()
    with IndexReader(source) as local:
        manifest = replace(local.manifest, vector_index=ENGINE, vector_params=backend(ENGINE).default_params())
        writer, _previous, _reason = open_writer(target, index_dir, manifest, rebuild=True, wait=wait)
        try:
            with errors_as_one_line(target, "write"):
                files, chunks = _copy_rows(local, writer, progress)
                writer.set_roots(local.roots)
                writer.set_walk_settings(local.walk_settings)
                row = local.conn.execute("SELECT value FROM state WHERE key = 'readers'").fetchone()
                signatures = decode_signatures(row[0] if row else None)
                if signatures is not None:
                    writer.set_reader_signatures(signatures)
                writer.commit()
                added, _removed = writer.pending_changes()
                if added != local.count:
                    raise SemsearchError(
                        f"the copy holds {added} chunks and {source} {local.count}: nothing was published"
                    )
                if writer.manifest.model.fingerprint != local.manifest.model.fingerprint:
                    raise SemsearchError("the copy's model is not the local index's: nothing was published")
                writer.finalize()
                if not holds_local_index(index_dir):  # publishing from the project's own index: kept as it is
                    write_pointer(index_dir, target)
        finally:
            writer.close()
    return CopySummary(files, chunks, manifest.model.name, time.perf_counter() - started)


def _copy_rows(local: Any, writer: Any, progress: Callable[[int, int], None] | None) -> tuple[int, int]:
    """Every visible file of *local* with its chunks and their stored vectors."""

    from semsearch.chunk import Chunk
    from semsearch.store.database import visible

    gen = local.generation
    dim = local.manifest.model.dim
    rows = local.conn.execute(
        "SELECT id, path, display, size, mtime_ns, sha256, kind, encoding, title, error, parts FROM files "
        f"WHERE {visible(gen)} ORDER BY id"
    ).fetchall()
    done = 0
    for fid, key, display, size, mtime_ns, sha256, kind, encoding, title, error, parts in rows:
        stored = local.conn.execute(
            "SELECT ordinal, text, char_start, char_end, line_start, line_end, page_start, page_end, tokens, "
            f"context, vector FROM chunks WHERE file_id = ? AND {visible(gen)} ORDER BY ordinal",
            (fid,),
        ).fetchall()
        chunks = [
            Chunk(ordinal=r[0], text=r[1], char_start=r[2], char_end=r[3], line_start=r[4], line_end=r[5],
                  page_start=r[6], page_end=r[7], tokens=r[8], model_tokens=None, context=r[9])
            for r in stored
        ]  # fmt: skip
        vectors = decode_vectors([r[10] for r in stored], dim)  # float16 (format 6) or float32
        writer.add_file(
            bytes(key), display, size=size, mtime_ns=mtime_ns, sha256=sha256, kind=kind, encoding=encoding,
            title=title or "", error=error, chunks=chunks, vectors=vectors if stored else None,
            part_lines=json.loads(parts) if parts else None,
        )  # fmt: skip
        done += len(stored)
        if progress is not None:
            progress(done, local.count)
    return len(rows), done
