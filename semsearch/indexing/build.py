"""An index run: lock, open the next generation, walk, drop what is gone, store what changed, commit."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from semsearch import store, vectors
from semsearch.errors import InvalidOptionError, SemsearchError
from semsearch.indexing.options import IndexEvent, IndexOptions, IndexSummary
from semsearch.indexing.pipeline import Pipeline, Todo
from semsearch.readers import kind_wanted, reader_signatures
from semsearch.readers.ocr import SqliteOcrCache
from semsearch.walk import UNCHANGED, Skip, WalkOptions, walk

if TYPE_CHECKING:
    from semsearch.models import ModelProvider
    from semsearch.pgstore import Target


def _under(path: Path, roots: Sequence[Path]) -> bool:
    text = os.path.abspath(path)
    for root in roots:
        r = os.path.abspath(root)
        if text == r or text.startswith(r.rstrip(os.sep) + os.sep):
            return True
    return False


def _quiet(event: IndexEvent) -> None:
    """The default event handler: events are dropped."""


def build_index(
    options: IndexOptions, model: ModelProvider, on_event: Callable[[IndexEvent], None] = _quiet
) -> IndexSummary:
    """Create or update the index at ``options.index_dir`` from ``options.roots``."""
    started = time.perf_counter()
    options.chunking.validate()
    options.walk.validate()
    summary = IndexSummary(index_dir=options.index_dir)
    from semsearch.pgstore.registry import target_of

    target = target_of(options.index_dir, options.postgres)
    if target is not None:
        _postgres_run(target, options, model, on_event, summary)
        summary.seconds = time.perf_counter() - started
        return summary
    created = store.ensure_index_dir(options.index_dir)
    try:
        _locked_run(options, model, on_event, summary)
    except BaseException:
        # A first run that failed before storing any file (no model, a bad device, Ctrl-C at once)
        # leaves no folder behind: an empty index would hide an index further up from `query`.
        if created and not store.holds_files(options.index_dir):
            store.discard_empty_index(options.index_dir)
        raise
    summary.seconds = time.perf_counter() - started
    return summary


def _wanted_manifest(options: IndexOptions, model: ModelProvider, engine: str | None = None) -> store.IndexManifest:
    chunking = options.chunking
    engine = engine or options.vector_index
    params = options.vector_params
    if params is None or engine != options.vector_index:
        params = vectors.backend(engine).default_params()
    else:
        vectors.backend(engine).build_identity(params)  # checked before anything is written
    return store.IndexManifest(
        epoch=0,
        database="",
        model=model.info(),
        chunking=store.ChunkingInfo(
            chunking.encoding, chunking.chunk_tokens, chunking.overlap_tokens, chunking.context
        ),
        vector_index=engine,
        vector_params=dict(params),
    )


def _postgres_run(
    target: Target,
    options: IndexOptions,
    model: ModelProvider,
    on_event: Callable[[IndexEvent], None],
    summary: IndexSummary,
) -> None:
    """An update of a PostgreSQL index: the same run, its writer the database's (the lock a
    session advisory lock, the commit point one transaction)."""
    from semsearch.pgstore.connection import errors_as_one_line
    from semsearch.pgstore.registry import ENGINE, holds_local_index, open_writer, write_pointer

    if holds_local_index(options.index_dir):
        raise InvalidOptionError(
            f"{options.index_dir} holds a local index: publish it as it is with `--from {options.index_dir}`, "
            "or index from another folder",
            path=options.index_dir,
        )

    if options.vector_index not in (vectors.DEFAULT_BACKEND, ENGINE):
        raise InvalidOptionError(f"a PostgreSQL index keeps its vectors in pgvector, not {options.vector_index!r}")
    wanted = _wanted_manifest(options, model, ENGINE)
    if options.vector_params is not None and options.vector_index == ENGINE:
        wanted = replace(wanted, vector_params={**wanted.vector_params, **options.vector_params})
        vectors.backend(ENGINE).build_identity(wanted.vector_params)
    writer, previous, reason = open_writer(
        target, options.index_dir, wanted, rebuild=options.rebuild, wait=options.lock_wait_seconds
    )
    try:
        with errors_as_one_line(target, "write"):
            summary.rebuild_reason = reason
            if reason and previous is not None:
                on_event(IndexEvent("message", f"rebuilding the index: {reason}"))
            _Run(options, model, writer, summary, on_event).run(previous)  # type: ignore[arg-type]
            # `semsearch query` here finds it again; only once this role has written it (a role
            # that may only read would leave a pointer behind in whatever folder it tried from).
            write_pointer(options.index_dir, target)
    finally:
        writer.close()


def _locked_run(
    options: IndexOptions, model: ModelProvider, on_event: Callable[[IndexEvent], None], summary: IndexSummary
) -> None:
    wanted = _wanted_manifest(options, model)
    with _writing(options.index_dir), store.IndexLock(options.index_dir, options.lock_wait_seconds):
        writer, previous, reason = store.open_writer(options.index_dir, wanted, rebuild=options.rebuild)
        try:
            for note in writer.upgraded:
                on_event(IndexEvent("message", note))
            summary.rebuild_reason = reason
            if reason and (previous is not None or reason == store.OUTDATED_REASON):
                on_event(IndexEvent("message", f"rebuilding the index: {reason}"))
            _Run(options, model, writer, summary, on_event).run(previous)
        finally:
            writer.close()


def merge_index(index_dir: Path, lock_wait_seconds: float = 0.0) -> bool:
    """Merge the vector segments of the index at *index_dir* if an update left a merge due
    (:attr:`IndexOptions.merge` False): whether a merge ran. An index of an older format is left
    to its next update (which upgrades it)."""
    with _writing(index_dir), store.IndexLock(index_dir, lock_wait_seconds):
        current = store.read_manifest(index_dir)
        if current.format_version != store.FORMAT_VERSION:
            return False
        writer = store.IndexWriter(index_dir, current, new_build=False)
        try:
            return writer.merge_segments()
        finally:
            writer.close()


@contextlib.contextmanager
def _writing(index_dir: Path) -> Iterator[None]:
    """A failed write of the index as one SemsearchError (the previous generation is intact)."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        raise SemsearchError(f"cannot write the index at {index_dir}: {exc}; the previous index is intact") from None
    except OSError as exc:
        raise SemsearchError(
            f"cannot write the index at {index_dir}: {exc.strerror or exc}; the previous index is intact"
        ) from None


class _Run:
    """One update of an index towards its next generation (the caller holds the lock)."""

    def __init__(
        self,
        options: IndexOptions,
        model: ModelProvider,
        writer: store.IndexWriter,
        summary: IndexSummary,
        on_event: Callable[[IndexEvent], None],
    ) -> None:
        self.options = options
        self.index_dir = options.index_dir
        self.model = model
        self.writer = writer
        self.summary = summary
        self.on_event = on_event
        self.postgres = not isinstance(writer, store.IndexWriter)
        self.troubled: list[Path] = []  # unreadable files and folders: what they held is kept
        self.stale: frozenset[str] = frozenset()  # kinds of file to read again (their reader changed)

    def run(self, previous: store.IndexManifest | None) -> None:
        roots, gone, walk_options = self._resolve_roots(previous)
        self.stale = self._stale_kinds(walk_options)
        todo, seen = self._scan([r for r in roots if r not in gone], walk_options)
        self._drop_missing(roots, seen)
        cache_path = store.ocr_cache_path(self.index_dir)
        cache = SqliteOcrCache(
            cache_path, lambda text: self.on_event(IndexEvent("warning", path=cache_path, text=text))
        )
        try:
            Pipeline(
                self.model,
                self.writer,
                self.summary,
                self.on_event,
                chunking=self.options.chunking,
                tuning=self.options.tuning,
                max_size=walk_options.max_file_size,
                read_options=walk_options.read_options(),
                ocr_cache=cache,
                stale_kinds=self.stale,
                executor=self.options.executor,
            ).run(todo)
        finally:
            self.summary.pages_ocr_cached = cache.hits
            cache.close()
        self._commit()

    def _stale_kinds(self, walk_options: WalkOptions) -> frozenset[str]:
        """The kinds of file whose reader changed since the last run (a new version, OCR turned on):
        their files are read again, unchanged or not. Recorded for the next run."""
        now = reader_signatures(walk_options.read_options())
        before = self.writer.reader_signatures()
        self.writer.set_reader_signatures(now)
        if before is None:
            # An index from before readers were recorded: its text, Markdown and PDF files were
            # read by version 1 of their readers (PDF without OCR).
            before = {"text": "1", "markdown": "1", "pdf": "1"}
        return frozenset(kind for kind, signature in now.items() if before.get(kind) != signature)

    def _resolve_roots(self, previous: store.IndexManifest | None) -> tuple[list[Path], list[Path], WalkOptions]:
        """The roots to walk (those given, else those remembered), the remembered ones that are
        gone, and the walk settings (those given, else the index's own); both recorded."""
        index_dir, writer = self.index_dir, self.writer
        # A root given through a link to the project is the same folder as by its own name.
        roots = [store.within_project(index_dir, r) for r in self.options.roots]
        known_roots, stored_walk = writer.roots(), writer.walk_settings()
        if not known_roots and writer.new_build:
            if self.postgres:
                known_roots, stored_walk = writer.previous_state()  # type: ignore[attr-defined]
            else:
                known_roots, stored_walk = store.previous_state(index_dir, previous)
        if not roots:
            roots = [store.key_to_path(index_dir, os.fsencode(r)) for r in known_roots]
            if not roots:
                raise InvalidOptionError("nothing to index: give {paths} (later runs remember it)", options=("paths",))
        # A remembered folder or file that no longer exists is forgotten, and its files dropped
        # like any deleted file (a root named on this run's command line was checked by the caller).
        gone = [] if self.options.roots else [r for r in roots if not os.path.lexists(r)]
        for root in gone:
            self.on_event(
                IndexEvent("warning", path=root, text="no longer exists; removing it and its files from the index")
            )
        root_keys = [os.fsdecode(store.path_key(index_dir, r)) for r in roots]
        gone_keys = {os.fsdecode(store.path_key(index_dir, r)) for r in gone}
        kept = [k for k in dict.fromkeys([*known_roots, *root_keys]) if k not in gone_keys]
        writer.set_roots(kept)
        walk_options = self.options.walk.resolve(stored_walk)
        writer.set_walk_settings(walk_options.remembered())
        if not self.postgres:
            store.remember_roots(index_dir, kept, walk_options.remembered())  # a copy beside the database
        walk_options.exclude_dirs = [index_dir]
        return roots, gone, walk_options

    def _on_skip(self, skip: Skip) -> None:
        self.summary.skipped[skip.reason] += 1
        detail = f" ({skip.detail})" if skip.detail else ""
        if skip.warn:
            self.troubled.append(skip.path)
            self.on_event(IndexEvent("warning", path=skip.path, text=f"skipped, {skip.reason}{detail}"))
        elif (
            skip.reason == "too large"
            and self.writer.lookup_file(store.path_key(self.index_dir, skip.path)) is not None
        ):
            self.on_event(
                IndexEvent(
                    "warning", path=skip.path, text=f"now over the size limit{detail}; removing it from the index"
                )
            )
        else:
            self.on_event(IndexEvent("skip", path=skip.path, text=f"skipped, {skip.reason}{detail}"))

    def _scan(self, roots: list[Path], walk_options: WalkOptions) -> tuple[list[Todo], set[bytes]]:
        """Which files there are, and which of them changed (size and mtime first, hash later)."""
        todo: list[Todo] = []
        seen: set[bytes] = set()
        index_dir = self.index_dir
        # One query, not one per file; for the files under this run's roots only (a file named
        # by `semsearch index FILE` or a watch event reads its own row, not every file's).
        stats = self.writer.live_file_stats([store.path_key(index_dir, r) for r in roots])

        key_of = store.path_keys(index_dir)  # the walker's paths are absolute and normal
        last: list[tuple[str, bytes]] = []  # the key known() made, for the entry it yields next
        summary, stale = self.summary, self.stale
        read_options = walk_options.read_options()
        wanted: dict[str, bool] = {}  # kind -> read under these options (else looked at anew)

        def known(full: str, size: int, mtime_ns: int) -> str | None:
            # A file as it was indexed is not yielded at all (most files of an update: this runs
            # for each); one of another size or time keeps its kind. Unless a reader changed:
            # then every file is looked at again (a new reader may take files another one read).
            if stale:
                return None
            key = key_of(full)
            was = stats.get(key)
            if was is not None and was[0] == size and was[1] == mtime_ns:
                if was[2] not in wanted:
                    wanted[was[2]] = kind_wanted(was[2], read_options)
                if not wanted[was[2]]:
                    return None
                if key not in seen:
                    seen.add(key)
                    summary.unchanged += 1
                return UNCHANGED
            last[:] = [(full, key)]
            return None

        for entry in walk(roots, walk_options, self._on_skip, known):
            key = last[0][1] if last and last[0][0] is entry.full else key_of(entry.full)
            if key in seen:
                continue
            seen.add(key)
            was = stats.get(key)
            if (
                was is not None
                and (was[0], was[1], was[2]) == (entry.size, entry.mtime_ns, entry.kind)
                and entry.kind not in stale
            ):
                summary.unchanged += 1
                continue
            todo.append((entry, key, self.writer.lookup_file(key) if was is not None else None))
            self.on_event(IndexEvent("scan", done=len(seen)))
        return todo, seen

    def _drop_missing(self, roots: list[Path], seen: set[bytes]) -> None:
        """Files gone from disk (or now excluded) under the roots of this run."""
        for file_id, key in self.writer.live_files([store.path_key(self.index_dir, r) for r in roots]):
            if key in seen:
                continue
            path = store.key_to_path(self.index_dir, key)
            if _under(path, roots) and not any(_under(path, [t]) for t in self.troubled):
                self.writer.remove_file(file_id)
                self.summary.removed += 1
        self.writer.commit()

    def _commit(self) -> None:
        """The commit point: a new vector file, a new generation (and for a new build, the manifest)."""
        writer, summary, index_dir = self.writer, self.summary, self.index_dir
        summary.chunks_added, summary.chunks_removed = writer.pending_changes()
        started = time.perf_counter()

        def graph_progress(done: int, total: int) -> None:
            self.on_event(IndexEvent("graph", "building the vector graph", done, total))

        before_switch = None
        if writer.new_build and not self.postgres:
            manifest = writer.manifest

            def before_switch() -> None:
                store.publish_build(index_dir, manifest)

        report = writer.finalize(graph_progress, before_switch=before_switch, merge=self.options.merge)
        if report is not None:
            summary.merged, summary.merge_due = report.merged, report.merge_due
            summary.repaired = list(report.repaired)
            for problem in report.repaired:
                self.on_event(
                    IndexEvent(
                        "warning", text=f"{problem}: the vector files were written again from the stored vectors"
                    )
                )
            if report.merge_error:
                self.on_event(IndexEvent("warning", text=report.merge_error))
        if not writer.new_build and not self.postgres:
            # The current index was updated with its own settings, asked for explicitly past a rebuild
            # left unfinished for other ones (a plain run would have resumed that): the rebuild is dropped.
            store.discard_pending_build(index_dir, writer.manifest)
        summary.graph_seconds = time.perf_counter() - started
        summary.chunks_total = writer.live_chunk_count()
