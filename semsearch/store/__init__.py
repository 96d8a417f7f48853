"""The index folder: format and manifest, folder layout and lock, metadata database, reader, writer,
and the build lifecycle (one module each). The format is a contract: see :mod:`semsearch.store.format`.
"""

from __future__ import annotations

from semsearch.store.database import decode_walk_settings
from semsearch.store.format import (
    BUILDING,
    FORMAT_VERSION,
    MANIFEST,
    UPGRADABLE_FORMATS,
    ChunkingInfo,
    IndexManifest,
    read_manifest,
)
from semsearch.store.layout import (
    INDEX_DIR_NAME,
    LOCK,
    TAG,
    IndexLock,
    check_index_folder,
    discard_empty_index,
    display_name,
    ensure_index_dir,
    find_index_dir,
    is_index_dir,
    is_own_file,
    key_to_path,
    looks_like_index,
    ocr_cache_path,
    path_key,
    path_keys,
    within_project,
)
from semsearch.store.lifecycle import (
    OUTDATED_REASON,
    discard_pending_build,
    holds_files,
    open_writer,
    previous_state,
    publish_build,
    remember_roots,
)
from semsearch.store.reader import ChunkRecord, IndexReader, IndexStats
from semsearch.store.writer import FileRow, FinalizeReport, IndexWriter

__all__ = [
    "BUILDING",
    "FORMAT_VERSION",
    "INDEX_DIR_NAME",
    "LOCK",
    "MANIFEST",
    "OUTDATED_REASON",
    "TAG",
    "UPGRADABLE_FORMATS",
    "ChunkRecord",
    "ChunkingInfo",
    "FileRow",
    "FinalizeReport",
    "IndexLock",
    "IndexManifest",
    "IndexReader",
    "IndexStats",
    "IndexWriter",
    "check_index_folder",
    "decode_walk_settings",
    "discard_empty_index",
    "discard_pending_build",
    "display_name",
    "ensure_index_dir",
    "find_index_dir",
    "holds_files",
    "is_index_dir",
    "is_own_file",
    "key_to_path",
    "looks_like_index",
    "ocr_cache_path",
    "open_writer",
    "path_key",
    "path_keys",
    "previous_state",
    "publish_build",
    "read_manifest",
    "remember_roots",
    "within_project",
]
