"""How the files on disk differ from an index, without hashing: what the next update would do."""

from __future__ import annotations

import os
from dataclasses import dataclass

from semsearch import store
from semsearch.indexing.options import WalkChoices
from semsearch.walk import walk


@dataclass(frozen=True)
class DiskChanges:
    """How the files on disk differ from an index: what the next `semsearch index` would do."""

    changed: int  # indexed, size or mtime differ
    missing: int  # indexed, gone from disk
    new: int  # on disk under the index's roots (with its walk settings), not indexed


def disk_changes(reader: store.IndexReader) -> DiskChanges:
    """Compare an index with the disk without hashing anything: indexed files by size and mtime,
    new ones by walking the index's roots with its walk settings (which reads each file's first
    8 KB to tell text from binary)."""
    changed = missing = 0
    known: set[bytes] = set()
    for path, size, mtime_ns, _error in reader.files():
        known.add(store.path_key(reader.index_dir, path))
        try:
            st = os.stat(path)
        except OSError:
            missing += 1
            continue
        if st.st_size != size or st.st_mtime_ns != mtime_ns:
            changed += 1
    options = WalkChoices().resolve(reader.walk_settings)
    options.exclude_dirs = [reader.index_dir]
    roots = [store.key_to_path(reader.index_dir, os.fsencode(r)) for r in reader.roots]
    key_of = store.path_keys(reader.index_dir)
    new = sum(
        1
        for entry in walk([r for r in roots if os.path.lexists(r)], options, lambda skip: None)
        if key_of(entry.full) not in known
    )
    return DiskChanges(changed, missing, new)
