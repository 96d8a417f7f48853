"""The index folder's format: the contract every reader and writer keeps, versioned and checked on load.

Layout of an index folder (default ``.semsearch/``), format version 6::

    manifest.json              what the current index is: format version, model, chunking, the
                               vector engine ("vector_index", default "hnsw") with its parameters
                               under its own name ("hnsw": M, ef_construction, ef_search, space),
                               and which database file holds it (replaced atomically)
    meta-<E>.sqlite            SQLite (WAL): files, chunks (text, location, context line embedded
                               in front of the text, float16 vector),
                               chunks_fts (FTS5 over the text and context line of generation G's
                               chunks, changed only with the flip), state (generation, the vector
                               engine's ``vector_*`` keys: its file, count, size and sha256;
                               indexed roots, the walk settings of the last run: hidden,
                               max_file_size, follow_symlinks, ocr, notebook_outputs; the
                               reader signatures ``readers``: kind -> version and settings, a
                               change re-reads that kind's files). A chunk's page_start/page_end
                               hold its part (page, cell, slide or section) in a document of parts;
                               what a part is follows from the file's reader kind.
    vectors-<E>-<G>.hnsw       the vector engine's file for generation G, labels = chunks.id
                               (hnsw: an hnswlib index, space "cosine"; see semsearch.vectors.hnsw)
    vectors-<E>-<G>.hnsw.sketch  beside each vector file, optional (``vector_sketch`` in its state):
                               its labels in slot order and one sign bit per dimension of each
                               vector (semsearch.vectors.sketch); an older version ignores it
    building.json              present only while a new index (epoch E+1) is built; lets an
                               interrupted first build or rebuild resume
    lock                       advisory lock held by the one process that writes (its pid inside)
    semsearch-index.tag        the folder's mark: semsearch made it (written first; an index from
                               before it is recognised by its manifest and tagged by its next update).
                               semsearch deletes only files of the names listed here in the folder
    roots.json                 a copy of the roots and walk settings of the last run, for a rebuild
                               after the database was lost
    ocr-cache.sqlite           OCR text by hash of the page image (table pages: key, text); kept
                               across rebuilds, safe to delete (pages are then read again)

Consistency. Every row carries ``gen_added`` and ``gen_removed``. Readers see generation ``G``
(``state.generation``): rows with ``gen_added <= G`` and ``gen_removed`` NULL or ``> G``, and the
vector file named in ``state``. A writer works on generation ``G + 1``: it commits new rows and
removal marks as it goes (durable progress: a killed run resumes without re-embedding), writes the
next vector file beside the current one, and then flips ``state.generation`` in one transaction.
A first build or a rebuild fills a new database and becomes current when ``manifest.json`` is
replaced. Nothing is pickled; every file is checked before use.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from semsearch import vectors
from semsearch.errors import IndexCorruptError, IndexNotFoundError, IndexOutdatedError, IndexVersionError
from semsearch.models.base import ModelInfo
from semsearch.version import __version__

FORMAT_NAME = "semsearch-index"
# 2: chunks.context, model.precision, chunking.context; 3: chunks_fts.context; 4: vector
# segments (delta files and the vector_tombstones table: semsearch.vectors.segments); 5: chunks_fts
# reads runs of CJK characters as pairs (lexicon.words; an older writer would delete such rows with
# other words than it inserted them with); 6: chunks.vector is float16 (store.database.VECTOR_DTYPE).
FORMAT_VERSION = 6
# Older formats a reader still reads and a writer upgrades in place (no re-embedding): 2 -> 3
# differs only in chunks_fts, which is rebuilt from the chunks table; a format 3 index is a
# format 4 one with a base segment only; 4 -> 5 reads chunks_fts's CJK text again, if it has any;
# 5 -> 6 converts the chunks' vectors to float16 (readers read either, by length).
# Upgraded, an index is refused by older versions (which would miss its deltas, or its pairs, or
# read its float16 vectors as float32).
UPGRADABLE_FORMATS = (2, 3, 4, 5)
MANIFEST = "manifest.json"
BUILDING = "building.json"


@dataclass(frozen=True)
class ChunkingInfo:
    encoding: str
    chunk_tokens: int
    overlap_tokens: int
    context: bool = False  # title / heading path embedded in front of each chunk


def _default_vector_params() -> dict[str, Any]:
    return vectors.backend(vectors.DEFAULT_BACKEND).default_params()


@dataclass(frozen=True)
class IndexManifest:
    """Contents of ``manifest.json`` (and ``building.json``)."""

    epoch: int
    database: str
    model: ModelInfo
    chunking: ChunkingInfo
    vector_index: str = vectors.DEFAULT_BACKEND  # the vector engine (semsearch.vectors)
    vector_params: dict[str, Any] = field(default_factory=_default_vector_params)  # stored under its name
    created_at: float = field(default_factory=time.time)
    tool_version: str = __version__
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        data = asdict(self)
        data[self.vector_index] = data.pop("vector_params")
        for key in ("endpoint", "key_env", "probe"):  # a served model's only (older versions read the rest)
            if not data["model"][key]:
                del data["model"][key]
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    def same_build(self, other: IndexManifest) -> bool:
        """True when both describe vectors and chunks made the same way."""
        if self.vector_index != other.vector_index:
            return False
        engine = vectors.backend(self.vector_index)
        return (
            self.model.fingerprint,
            self.model.precision,
            self.chunking,
            engine.build_identity(self.vector_params),
        ) == (
            other.model.fingerprint,
            other.model.precision,
            other.chunking,
            engine.build_identity(other.vector_params),
        )

    def with_access(self, wanted: IndexManifest) -> IndexManifest:
        """This manifest with *wanted*'s way to reach a served model (its endpoint and key's
        variable, given on this run): the build is the same, and later runs and queries use them."""
        mine, theirs = self.model, wanted.model
        if (
            mine.name != theirs.name
            or not theirs.endpoint
            or (mine.endpoint, mine.key_env)
            == (
                theirs.endpoint,
                theirs.key_env,
            )
        ):
            return self
        return replace(self, model=replace(mine, endpoint=theirs.endpoint, key_env=theirs.key_env))

    @classmethod
    def from_json(cls, text: str, source: Path) -> IndexManifest:
        try:
            data = json.loads(text)
        except ValueError:
            raise IndexCorruptError(f"{source} is not valid JSON", path=source, remedy="rebuild") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise IndexCorruptError(f"{source} is not a semsearch manifest", path=source, remedy="rebuild")
        version = data.get("format_version")
        if not isinstance(version, int):
            raise IndexCorruptError(f"{source} has no format version", path=source, remedy="rebuild")
        if version > FORMAT_VERSION:
            raise IndexVersionError(
                f"{source} is format version {version}, newer than this semsearch ({FORMAT_VERSION})",
                path=source,
                remedy="upgrade_or_rebuild",
            )
        if version < FORMAT_VERSION and version not in UPGRADABLE_FORMATS:
            raise IndexOutdatedError(f"{source} is an old format version ({version})", path=source, remedy="rebuild")
        try:
            engine = str(data.get("vector_index", vectors.DEFAULT_BACKEND))
            params = data[engine]
            if not isinstance(params, dict):
                raise TypeError(engine)
            manifest = cls(
                epoch=int(data["epoch"]),
                database=str(data["database"]),
                model=ModelInfo(**data["model"]),
                chunking=ChunkingInfo(**data["chunking"]),
                vector_index=engine,
                vector_params=params,
                created_at=float(data["created_at"]),
                tool_version=str(data["tool_version"]),
                format_version=version,
            )
        except (KeyError, TypeError, ValueError):
            raise IndexCorruptError(f"{source} is missing fields", path=source, remedy="rebuild") from None
        if "/" in manifest.database or manifest.database.startswith("."):
            raise IndexCorruptError(f"{source} names an unexpected database file", path=source, remedy="rebuild")
        return manifest


def read_manifest(index_dir: Path, name: str = MANIFEST) -> IndexManifest:
    path = index_dir / name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if name == MANIFEST and (index_dir / BUILDING).is_file():
            from semsearch.store.layout import build_under_way  # layout reads this module's names

            under_way = build_under_way(index_dir)
            if under_way:
                raise IndexNotFoundError(
                    f"the index at {index_dir} is being built by {under_way}; try again when it finishes",
                    path=index_dir,
                ) from None
            raise IndexNotFoundError(
                f"the first build of the index at {index_dir} did not finish", path=index_dir, remedy="finish_build"
            ) from None
        raise IndexNotFoundError(f"no index at {index_dir}", path=index_dir, remedy="index_first") from None
    except OSError as exc:
        raise IndexCorruptError(f"cannot read {path}: {exc.strerror}", path=path) from None
    return IndexManifest.from_json(data.decode("utf-8", errors="replace"), path)
