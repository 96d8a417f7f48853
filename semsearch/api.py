"""The Python API: :class:`Index` owns an index's whole life (create, update, search, status).

The command line is a thin layer over this module; every rule a library caller needs as much as
the CLI does lives here or in the modules it delegates to: where the index lives
(:mod:`semsearch.location`), which settings an update keeps (:mod:`semsearch.index_settings`),
keeping it fresh (:mod:`semsearch.watching`), its searches (:mod:`semsearch.querying`), the model
export after a build.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semsearch.engines import existing_manifest, is_postgres, open_reader
from semsearch.errors import IndexExistsError, IndexNotFoundError, InvalidOptionError
from semsearch.index_settings import (
    REMOTE_FIELDS,
    IndexSettings,
    checked_settings,
    index_options,
    remote_settings,
    update_provider,
)
from semsearch.location import INDEX_ENV as INDEX_ENV  # re-exported: these names were defined here
from semsearch.location import absolute, find_index, url_of
from semsearch.querying import MAX_HITS as MAX_HITS
from semsearch.querying import IndexQueries
from semsearch.querying import _scope as _scope  # benchmarks/scale/bench_filter_scale.py imports it from here
from semsearch.watching import WATCH_LOCK_RETRY as WATCH_LOCK_RETRY
from semsearch.watching import WATCH_LOCK_WAIT, WATCH_SETTLE_MS, watch_folders

if TYPE_CHECKING:
    from semsearch.indexing import IndexEvent, IndexSummary, Tuning
    from semsearch.models import ModelProvider, QueryEmbedder
    from semsearch.search import Searcher
    from semsearch.status import IndexStatus
    from semsearch.store import IndexManifest

__all__ = ["Index", "IndexSettings", "IndexStatus"]

# A replaced snapshot is closed this long after (longer than a server's call may run: 30-60 s).
RETIRED_SECONDS = 120.0


def __getattr__(name: str) -> Any:
    if name == "IndexStatus":  # defined where it is made, imported on first use
        from semsearch.status import IndexStatus

        return IndexStatus
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _quiet(message: str) -> None:
    """The default note handler: notes are dropped."""


class Index(IndexQueries):
    """One index folder: build and update it, search it, describe it.

    Get one with :meth:`open` (an existing index), :meth:`create` (a new one, or new settings for
    an existing one) or :meth:`for_update` (the index ``semsearch index`` would write). Searches
    may run from several threads at once; one update runs at a time (a lock guards the folder
    across processes too). Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        path: Path,
        settings: IndexSettings | None = None,
        *,
        provider: ModelProvider | None = None,
        on_note: Callable[[str], None] = _quiet,
        query_threads: int = 1,
        model_server: bool = False,
        url: str | None = None,
    ) -> None:
        self.path = path
        self.url = url  # a PostgreSQL index given by URL (else the engine the folder names)
        self.query_threads = query_threads
        self.model_server = model_server
        self.settings = settings or IndexSettings()
        self._provider_override = provider
        self._on_note = on_note
        self._lock = threading.RLock()
        self._searcher: Searcher | None = None
        # Snapshots replaced while other threads' calls may still read them (a server answers
        # several at once): closed RETIRED_SECONDS later, or by close().
        self._retired: list[tuple[float, Searcher]] = []
        self._query_embedders: dict[str, QueryEmbedder] = {}  # by model fingerprint
        self._update_provider: ModelProvider | None = None

    # -- finding and making ------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        provider: ModelProvider | None = None,
        on_note: Callable[[str], None] = _quiet,
        query_threads: int = 1,
        model_server: bool = False,
        **settings: Any,
    ) -> Index:
        """An existing index: *path*, else ``$SEMSEARCH_INDEX``, else the nearest ``.semsearch``
        here or above. Raises :class:`IndexNotFoundError` when there is none. *settings* (the
        fields of :class:`IndexSettings`) apply to its next :meth:`update`; *provider* injects a
        model (a :class:`semsearch.models.ModelProvider`) instead of resolving one by name.
        *query_threads*: CPU threads the query model may use for one query (1 starts soonest and
        suits a busy machine; a long-lived process on an idle one answers sooner on 2).
        *model_server*: embed queries through the user's resident model server, started in the
        background if none runs (:mod:`semsearch.models.resident`: for a process that asks one
        question and ends; ``SEMSEARCH_MODEL_SERVER=0`` turns it off)."""
        from semsearch.store import looks_like_index

        found = find_index(path)
        url = url_of(path)
        if url is None and not looks_like_index(found):
            raise IndexNotFoundError(f"no index at {found}", path=found, remedy="index_first")
        if not isinstance(query_threads, int) or isinstance(query_threads, bool) or query_threads < 1:
            raise InvalidOptionError(
                f"{{query_threads}} must be a whole number, at least 1 (got {query_threads!r})",
                options=("query_threads",),
            )
        return cls(
            found, checked_settings(settings), provider=provider, on_note=on_note, query_threads=query_threads,
            model_server=model_server, url=url,
        )  # fmt: skip

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        exist_ok: bool = False,
        provider: ModelProvider | None = None,
        on_note: Callable[[str], None] = _quiet,
        **settings: Any,
    ) -> Index:
        """A new index at *path* (default ``./.semsearch``), made by its first :meth:`update`.

        With ``exist_ok``, an index already there is taken with *settings* as the new ones (a
        changed model or chunk setting rebuilds it at the next update). The folder must be new,
        empty, or an index: an index is never put among the user's files.
        """
        from semsearch.store import INDEX_DIR_NAME, check_index_folder, is_index_dir

        url = url_of(path) if path is not None else None
        if url is not None:
            # A PostgreSQL index: this folder's .semsearch keeps its URL (never a password).
            return cls(
                Path.cwd() / INDEX_DIR_NAME, checked_settings(settings), provider=provider, on_note=on_note, url=url
            )
        target = absolute(path) if path is not None else Path.cwd() / INDEX_DIR_NAME
        if not exist_ok and target.is_dir() and is_index_dir(target):
            raise IndexExistsError(f"an index already exists at {target} (pass exist_ok=True to use it)", path=target)
        check_index_folder(target)
        return cls(target, checked_settings(settings), provider=provider, on_note=on_note)

    @classmethod
    def for_update(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        new_paths: bool,
        provider: ModelProvider | None = None,
        on_note: Callable[[str], None] = _quiet,
        **settings: Any,
    ) -> Index:
        """The index ``semsearch index`` writes: *path*, else ``./.semsearch`` when paths are given
        or it is an index, else (an update of the folders indexed before) the nearest index above."""
        from semsearch.store import INDEX_DIR_NAME, find_index_dir, is_index_dir

        here = Path.cwd() / INDEX_DIR_NAME
        if path is None and url_of(None) is not None:
            path = url_of(None)
        if path is not None or new_paths or (here.is_dir() and is_index_dir(here)):
            return cls.create(path, exist_ok=True, provider=provider, on_note=on_note, **settings)
        found = find_index_dir()
        if found is None:
            raise InvalidOptionError("nothing to index: give {paths} (later runs remember it)", options=("paths",))
        return cls(found, checked_settings(settings), provider=provider, on_note=on_note)

    def close(self) -> None:
        """Release the open snapshot, the search threads and the query model. The object stays
        usable: a later call opens the index again (and sees its latest state)."""
        with self._lock:
            self._drop_snapshot()
            self._close_retired(0.0)
            self._query_embedders.clear()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _drop_snapshot(self) -> None:
        """Let the next call open the index's latest state. The snapshot it replaces is closed
        later: a call in another thread may be reading it (closing it under that call lost its
        PostgreSQL connection mid-query: tests/test_serve.py)."""
        with self._lock:
            if self._searcher is not None:
                self._retired.append((time.monotonic(), self._searcher))
                self._searcher = None
            self._close_retired(RETIRED_SECONDS)

    def _close_retired(self, older_than: float) -> None:
        now = time.monotonic()
        keep: list[tuple[float, Searcher]] = []
        for when, searcher in self._retired:
            if now - when >= older_than:
                searcher.close()
                searcher.reader.close()
            else:
                keep.append((when, searcher))
        self._retired = keep

    # -- updating ----------------------------------------------------------------------------

    def update(
        self,
        paths: Sequence[str | os.PathLike[str]] | None = None,
        *,
        rebuild: bool = False,
        wait: float = 0.0,
        on_event: Callable[[IndexEvent], None] | None = None,
        tuning: Tuning | None = None,
        merge: bool = True,
        executor: Any = None,
    ) -> IndexSummary:
        """Index *paths* (files and folders; None: those indexed before), embedding only what changed.

        Settings not given keep the index's own; a changed model or chunk setting rebuilds the
        index (queries use the old one until the new one is complete). Resumable: an interrupted
        run keeps what it stored. Raises :class:`IndexLockedError` when another update holds the
        index (after waiting up to *wait* seconds).

        An update adds its vectors as a small segment; one that finds the segments past a share
        of the base merges them into it after its change is committed (a few seconds at a million
        chunks). *merge* False leaves that merge due (``summary.merge_due``) for :meth:`merge`,
        at a time the caller chooses (:meth:`watch` merges once the folders are quiet).

        *executor* reads, cuts and embeds the changed files elsewhere:
        ``semsearch.indexing.cluster.RayExecutor(address)`` on a Ray cluster (``pip install
        'semsearch[ray]'``). What changed, the reuse of stored vectors and the writing stay here.
        """
        return self._update(
            paths, self.settings, rebuild=rebuild, wait=wait, on_event=on_event, tuning=tuning, merge=merge,
            executor=executor,
        )  # fmt: skip

    def _update(
        self,
        paths: Sequence[str | os.PathLike[str]] | None,
        settings: IndexSettings,
        *,
        rebuild: bool = False,
        wait: float = 0.0,
        on_event: Callable[[IndexEvent], None] | None = None,
        tuning: Tuning | None = None,
        merge: bool = True,
        executor: Any = None,
    ) -> IndexSummary:
        """:meth:`update` with *settings* (the watcher's: the index's own)."""
        from semsearch.indexing import build_index

        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]  # one path, not its characters
        roots = [Path(p) for p in paths or []]
        for root in roots:
            if not os.path.lexists(root):
                raise InvalidOptionError(f"{root}: no such file or folder", path=root)
        if not wait >= 0:  # NaN too
            raise InvalidOptionError(f"{{wait}} must be 0 or more seconds (got {wait:g})", options=("wait",))
        with self._lock:
            existing = existing_manifest(self.path, self.url)
            provider = self._provider(existing, settings)
            options = index_options(
                self.path, self.url, roots, existing, settings, rebuild=rebuild, wait=wait, tuning=tuning, merge=merge,
                executor=executor,
            )  # fmt: skip
            try:
                summary = build_index(options, provider, on_event or (lambda event: None))
            finally:
                self._drop_snapshot()  # the next search reads the new generation
            provider.finish_build(self._on_note)  # what the query path loads (the ONNX export)
            return summary

    def copy_from(self, source: str | os.PathLike[str], *, wait: float = 0.0) -> Any:
        """Publish the local index at *source* (an index folder, or the folder that holds one) to
        this PostgreSQL index as its new current state, without embedding again: its stored
        vectors are copied, and the copy checked (counts, model) before readers see it. Returns
        a ``CopySummary`` (files, chunks, model, seconds)."""
        from semsearch.pgstore.copy import copy_local

        target = self._postgres()
        found = find_index(source)
        from semsearch.store import looks_like_index

        if is_postgres(found) or not looks_like_index(found):
            raise IndexNotFoundError(f"no local index at {found}", path=found, remedy="index_first")
        with self._lock:
            try:
                return copy_local(found, target, self.path, wait=wait)
            finally:
                self._drop_snapshot()

    def _postgres(self) -> Any:
        from semsearch.engines import postgres_target

        target = postgres_target(self.path, self.url)
        if target is None:
            raise InvalidOptionError(
                "copying an index needs a PostgreSQL {index} (postgresql://...)", options=("index",)
            )
        return target

    def merge(self, *, wait: float = 0.0) -> bool:
        """Merge the vector segments if an update left a merge due (``update(merge=False)``):
        whether a merge ran. Raises :class:`IndexLockedError` when an update holds the index
        (after waiting up to *wait* seconds)."""
        from semsearch.indexing import merge_index

        if is_postgres(self.path, self.url):
            return False  # PostgreSQL keeps one vector index, updated in place
        with self._lock:
            try:
                return merge_index(self.path, wait)
            finally:
                self._drop_snapshot()

    def _provider(self, existing: IndexManifest | None, settings: IndexSettings) -> ModelProvider:
        if self._provider_override is not None:
            return self._provider_override
        self._update_provider = update_provider(existing, settings, self._update_provider, self._on_note)
        return self._update_provider

    def watch(
        self,
        *,
        on_update: Callable[[IndexSummary], None] = lambda summary: None,
        on_event: Callable[[IndexEvent], None] | None = None,
        stop: threading.Event | None = None,
        settle_ms: int = WATCH_SETTLE_MS,
        on_ready: Callable[[], None] = lambda: None,
        lock_wait: float = WATCH_LOCK_WAIT,
    ) -> None:
        """Keep the index fresh: watch its folders and update it after each burst of changes.

        Every update is a plain :meth:`update` (the same walk, ignore rules and generation flip)
        with the index's own settings (model, precision, chunking, vector engine, walk): a
        watcher follows what another run made of the index, never rebuilds it back. It runs once
        the folders have been quiet for *settle_ms* (a ``git checkout`` is one update). When
        another run holds the index, the watcher waits for it, however long it takes: after
        *lock_wait* seconds it says so once (a "message" event, else a note). Returns when *stop*
        is set, after the update in progress. *on_ready* is called once the
        watcher runs (changes made before then are caught by one update at that point). The folders are watched with
        watchfiles (inotify, FSEvents, ReadDirectoryChangesW); changes inside the index folder
        are not watched.
        """
        from semsearch.store import key_to_path

        def remembered() -> list[Path]:
            with self._reader() as reader:
                return [key_to_path(self.path, os.fsencode(r)) for r in reader.roots]

        def update(paths: list[Path] | None, wait: float) -> IndexSummary:
            # The index's own settings (none given: its model too, see _provider): what another
            # run made of it meanwhile stays.
            following = IndexSettings(
                device=self.settings.device, **{name: getattr(self.settings, name) for name in REMOTE_FIELDS}
            )
            # The change is searchable at once; a merge it makes due waits for a quiet second.
            return self._update(paths, following, wait=wait, on_event=on_event, merge=False)

        watch_folders(
            self.path, remembered, update, lambda: self.merge(wait=0.0),
            on_update=on_update, on_event=on_event, on_note=self._on_note, stop=stop or threading.Event(),
            settle_ms=settle_ms, on_ready=on_ready, lock_wait=lock_wait,
        )  # fmt: skip

    # -- searching ---------------------------------------------------------------------------

    def _open_searcher(self) -> Searcher:
        with self._lock:
            if self._searcher is not None and not _current(self._searcher.reader):
                self._drop_snapshot()  # another writer committed: the next call sees it
            if self._searcher is None:
                from semsearch.search import Searcher

                reader = self._reader()
                self._searcher = Searcher(reader, lambda: self._query_embedder(reader.manifest), on_note=self._on_note)
            return self._searcher

    @property
    def engine(self) -> str:
        """Where the index lives: "local" (a folder) or "postgresql"."""
        return "postgresql" if is_postgres(self.path, self.url) else "local"

    def _reader(self) -> Any:
        """A reader of the index's current state (either engine)."""
        return open_reader(self.path, self.url)

    def _query_embedder(self, manifest: IndexManifest) -> QueryEmbedder:
        fingerprint = manifest.model.fingerprint
        if fingerprint not in self._query_embedders:
            if self._provider_override is not None:
                self._query_embedders[fingerprint] = self._provider_override.query_embedder()
            else:
                from semsearch.models import PACKAGED, query_embedder, registered_models
                from semsearch.models.remote import is_remote

                remote = remote_settings(self.settings)

                def load() -> QueryEmbedder:
                    return query_embedder(manifest.model, self._on_note, threads=self.query_threads, remote=remote)

                # The server loads a local model's export on one thread: not a registered, served or packaged model's.
                name = manifest.model.name
                if (
                    self.model_server
                    and self.query_threads == 1
                    and name not in registered_models()
                    and not is_remote(name)
                    and name not in PACKAGED
                ):
                    from semsearch.models.resident import resident_embedder

                    self._query_embedders[fingerprint] = resident_embedder(manifest.model, load, self._on_note)
                else:
                    self._query_embedders[fingerprint] = load()
        return self._query_embedders[fingerprint]

    # -- describing --------------------------------------------------------------------------

    def base_folder(self) -> Path:
        """The folder that `semsearch mcp` shows and takes paths relative to, and that globs
        match below: the folder that holds the index when every indexed folder lies in it, else
        the indexed folders' common folder (an index kept elsewhere shows ``notes/a.md``)."""
        from semsearch.store.catalog import view_base
        from semsearch.store.layout import key_to_path

        reader = self._open_searcher().reader
        return view_base(self.path, [key_to_path(self.path, os.fsencode(r)) for r in reader.roots])

    def manifest(self) -> IndexManifest:
        """The current manifest (model, chunking, vector engine, format version)."""
        return self._open_searcher().reader.manifest

    def status(self, *, check_disk: bool = True, verify: bool = False) -> IndexStatus:
        """What the index holds; with *check_disk*, how many of its files changed or went
        missing on disk since, and how many new ones its folders hold (no file is hashed).
        With *verify*, the whole index is checked (the database's pages, every vector file's
        checksum and links): ``problems`` lists what is wrong, one line each."""
        from semsearch.indexing import WalkChoices, disk_changes
        from semsearch.status import IndexStatus

        with self._reader() as reader:
            stats = reader.stats()
            disk = disk_changes(reader) if check_disk else None
            walk = WalkChoices().resolve(reader.walk_settings)  # what the next plain update walks with
            m = reader.manifest
            return IndexStatus(
                index=reader.index_dir,
                model=m.model.name,
                model_fingerprint=m.model.fingerprint,
                model_endpoint=m.model.endpoint,
                dim=m.model.dim,
                precision=m.model.precision,
                files=stats.files,
                files_without_text=stats.files_without_text,
                chunks=stats.chunks,
                disk_bytes=stats.disk_bytes,
                created_at=m.created_at,
                updated_at=stats.updated_at,
                roots=stats.roots,
                chunking={
                    "chunk_tokens": m.chunking.chunk_tokens,
                    "overlap_tokens": m.chunking.overlap_tokens,
                    "context": m.chunking.context,
                },
                walk=walk.remembered(),
                format_version=m.format_version,
                vector_index=m.vector_index,
                changed_since=disk.changed if disk else None,
                missing_since=disk.missing if disk else None,
                new_since=disk.new if disk else None,
                vector_segments=len(reader.layout.segment_states()),
                vector_tombstones=reader.layout.tombstones,
                problems=reader.verify() if verify else None,
                database=f"{reader.target.shown}, schema {reader.schema}" if hasattr(reader, "schema") else "",
            )

    def what_an_interruption_leaves(self) -> str:
        """After an update was cut short: what is kept ("" when nothing was stored)."""
        from semsearch.store import BUILDING, MANIFEST

        current, building = (self.path / MANIFEST).exists(), (self.path / BUILDING).exists()
        if current and building:
            return "the index in use is unchanged: run the same command again to finish the rebuild"
        if current or building:
            return "what was stored is kept: run `semsearch index` again to finish"
        return ""


def _current(reader: Any) -> bool:
    """Whether a reader still shows the latest state (a PostgreSQL reader asks its server; a
    local one is refreshed by its callers)."""
    check = getattr(reader, "is_current", None)
    return True if check is None else bool(check())
