"""The files of one snapshot, in memory, to turn a :class:`Scope` into the chunks a search may return.

Loaded once per reader, on the first scoped search: each visible file's stored path, kind,
modification time and chunk id range. A file's chunks are written together (``IndexWriter.add_file``)
so their ids are one run, ``first .. first + chunk_count - 1``; a file whose run is not whole is
listed chunk by chunk instead. Selecting is then array work over files, and path prefixes a
binary search over the sorted paths: no query of the database per search.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semsearch.errors import InvalidOptionError
from semsearch.files import folder_prefix
from semsearch.scope import Scope, type_of
from semsearch.store.layout import key_to_path
from semsearch.vectors import Subset

if TYPE_CHECKING:
    import numpy as np


GLOB_CACHE = 64  # sets of globs whose file masks a catalog keeps


def view_base(index_dir: Path, roots: Sequence[Path]) -> Path:
    """The folder that paths given to and shown by `semsearch mcp`, and globs, are relative to:
    the folder that holds the index when every indexed root lies in it (the index inside its
    project), else the roots' deepest common folder (one indexed folder: that folder), so that an
    index kept elsewhere (``--index /elsewhere/index``) still shows ``notes/a.md`` as the user sees it."""
    project = os.path.abspath(index_dir.parent)
    absolute = [os.path.abspath(r) for r in roots]
    inside = folder_prefix(project)
    if not absolute or all(r == project or r.startswith(inside) for r in absolute):
        return Path(project)
    folders = [r if os.path.isdir(r) or not os.path.lexists(r) else os.path.dirname(r) for r in absolute]
    return Path(os.path.commonpath(folders))


def _relative_to(base: Path, project: Path, keys: list[bytes]) -> list[str]:
    """Each stored key as a posix path below *base* (a path outside it: absolute, without its
    leading slash, as before there was a base)."""
    if base == project:
        return [os.fsdecode(k).lstrip("/") for k in keys]
    cut = folder_prefix(base)
    out = []
    for key in keys:
        full = os.fsdecode(key)
        if not full.startswith("/"):
            full = os.path.join(project, full)
        out.append(full[len(cut) :] if full.startswith(cut) else full.lstrip("/"))
    return out


class FileCatalog:
    """Visible files with chunks, sorted by stored path."""

    def __init__(
        self,
        rows: Sequence[Sequence[Any]],
        file_chunk_ids: Callable[[int], list[int]],
        index_dir: Path,
        roots: list[str],
    ) -> None:
        """*rows*: (file id, path key, kind, mtime_ns, chunk count, first chunk id, last chunk id)
        of each visible file with chunks, sorted by path key; *file_chunk_ids*: a file's chunk ids,
        read one by one (for a file whose ids are not one run)."""
        import numpy as np

        self.index_dir = index_dir
        self.roots = [Path(os.path.abspath(key_to_path(index_dir, os.fsencode(r)))) for r in roots]
        self.keys: list[bytes] = [bytes(r[1]) for r in rows]
        self.file_ids = np.array([r[0] for r in rows], dtype=np.int64)
        self.base = view_base(index_dir, self.roots)
        self.relpaths = _relative_to(self.base, index_dir.parent, self.keys)  # what globs match
        self.types = np.array([type_of(rel, r[2]) for rel, r in zip(self.relpaths, rows, strict=True)], dtype=object)
        self.mtimes = np.array([r[3] / 1e9 for r in rows], dtype=np.float64)
        self.counts = np.array([r[4] for r in rows], dtype=np.int64)
        self.firsts = np.array([r[5] if r[5] is not None else 0 for r in rows], dtype=np.int64)
        lasts = np.array([r[6] if r[6] is not None else -1 for r in rows], dtype=np.int64)
        self.total = int(self.counts.sum())
        # Files whose chunk ids are not one whole run (never written so; read row by row).
        self._broken = np.nonzero(lasts - self.firsts + 1 != self.counts)[0]
        self._file_chunk_ids = file_chunk_ids
        self._row_of = {key: row for row, key in enumerate(self.keys)}
        self._project = os.fsencode(os.path.abspath(index_dir.parent))
        self._project_slash = self._project.rstrip(b"/") + b"/"
        self._root_bytes = [os.fsencode(str(r)) for r in self.roots]
        self._globs: dict[tuple[str, ...], np.ndarray] = {}
        self._lock = threading.Lock()
        self._relative = np.array([not k.startswith(b"/") for k in self.keys], dtype=bool)

    def __len__(self) -> int:
        return len(self.keys)

    def select(self, scope: Scope) -> Subset | None:
        """The chunks of the files in *scope* (None: every chunk, no filter needed)."""
        import numpy as np

        mask = np.ones(len(self.keys), dtype=bool)
        if scope.paths:
            mask &= self._under(scope.paths)
        if scope.exclude_files:
            mask &= ~self._under(scope.exclude_files, files_only=True)
        if scope.types or scope.types_not:
            kinds = {t for t in set(self.types.tolist()) if scope.type_matches(t)}
            mask &= np.isin(self.types, list(kinds))
        if scope.modified_after is not None:
            mask &= self.mtimes >= scope.modified_after
        if scope.modified_before is not None:
            mask &= self.mtimes < scope.modified_before
        if scope.globs:
            mask &= self._glob_mask(scope)
        if mask.all():
            return None
        rows = np.nonzero(mask)[0]
        return Subset(self._chunk_ids(rows), self.total, file_ids=self.file_ids[rows])

    def _glob_mask(self, scope: Scope) -> np.ndarray:
        """Which files pass the scope's globs: matched once per snapshot and set of globs (a
        long-running caller asks the same ones again; matching is the costly part of a scope)."""
        import numpy as np

        with self._lock:
            mask = self._globs.get(scope.globs)
        if mask is None:
            compiled = scope.compiled()
            mask = np.fromiter((compiled.glob_matches(r) for r in self.relpaths), dtype=bool, count=len(self.relpaths))
            with self._lock:
                if len(self._globs) >= GLOB_CACHE:
                    self._globs.pop(next(iter(self._globs)))
                self._globs[scope.globs] = mask
        return mask

    def _chunk_ids(self, rows: np.ndarray) -> np.ndarray:
        import numpy as np

        counts = self.counts[rows]
        starts = self.firsts[rows]
        offsets = np.cumsum(counts) - counts
        ids = np.repeat(starts - offsets, counts) + np.arange(int(counts.sum()), dtype=np.int64)
        broken = rows[np.isin(rows, self._broken)].tolist() if len(self._broken) else []
        if broken:
            whole = np.ones(len(ids), dtype=bool)
            for r in broken:
                i = int(np.searchsorted(rows, r))
                whole[offsets[i] : offsets[i] + counts[i]] = False
            listed = [cid for r in broken for cid in self._file_chunk_ids(int(self.file_ids[r]))]
            ids = np.concatenate([ids[whole], np.array(listed, dtype=np.int64)])
        return ids

    def _key(self, path: Path) -> bytes:
        """The stored form of an absolute *path* (as ``path_key``, by string operations: a
        scope may name thousands of files)."""
        text = os.fsencode(str(path))
        if text.startswith(self._project_slash):
            return text[len(self._project_slash) :]
        return b"." if text == self._project else text

    def _under(self, paths: tuple[Path, ...], files_only: bool = False) -> np.ndarray:
        """Which files are one of *paths* or below one of them."""
        import numpy as np

        mask = np.zeros(len(self.keys), dtype=bool)
        for path in paths:
            raw = os.fsencode(str(path))
            if not files_only and (raw == self._project or self._project.startswith(raw.rstrip(b"/") + b"/")):
                # The folder that holds the index, or one above it: every file stored relative
                # to it, and any stored by absolute path below *path*.
                mask |= self._relative
                if raw == b"/":
                    mask |= ~self._relative
                    continue
                key = raw
            else:
                key = self._key(path)
            row = self._row_of.get(key)
            if row is not None:
                mask[row] = True  # a file: nothing below it
                continue
            if files_only:
                continue
            prefix = key.rstrip(b"/") + b"/"
            lo = bisect.bisect_left(self.keys, prefix)
            hi = bisect.bisect_left(self.keys, prefix[:-1] + b"0")  # "0" sorts right after "/"
            mask[lo:hi] = True
        return mask

    def check_paths(self, paths: tuple[Path, ...]) -> None:
        """Each path must lie within (or hold) an indexed root, and exist or hold indexed files."""
        for path in paths:
            raw = os.fsencode(str(path))
            if self._key(path) in self._row_of:
                continue  # an indexed file
            folder = raw.rstrip(b"/") + b"/"
            inside = any(
                raw == r or raw.startswith(r.rstrip(b"/") + b"/") or r.startswith(folder) for r in self._root_bytes
            )
            if not inside:
                roots = ", ".join(str(r) for r in self.roots) or "none"
                raise InvalidOptionError(
                    f"{path} is outside the indexed folders ({roots})", options=("paths",), path=path
                )
            if not os.path.lexists(path) and not self._under((path,)).any():
                raise InvalidOptionError(f"no such file or folder: {path}", options=("paths",), path=path)
