"""The files of a run that changed: read and chunk them in a thread, embed and store them here."""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from semsearch.chunk import Chunk, ChunkSettings, chunk_document
from semsearch.errors import ExtractError, NoTextError
from semsearch.indexing.options import IndexEvent, IndexSummary, Tuning
from semsearch.readers import OcrCache, ReadOptions, read_document, reader_for
from semsearch.readers.document import LineIndex
from semsearch.store import FileRow, IndexWriter, display_name
from semsearch.walk import FileEntry

if TYPE_CHECKING:
    import numpy as np

    from semsearch.models import ModelInfo, ModelProvider

# How the summary counts files that could not be read as their kind (broken, encrypted, hostile).
BROKEN = "broken or refused"
Todo = tuple[FileEntry, bytes, FileRow | None]  # a file to read, its path key, its indexed version


@dataclass
class Prepared:
    entry: FileEntry
    key: bytes
    sha256: str
    kind: str
    encoding: str | None
    title: str
    error: str | None
    chunks: list[Chunk]
    replaces: int | None  # file id of the version it replaces
    damaged: bool = False  # could not be read as its kind (broken or encrypted PDF, ...): *error* says why
    reused: list[bytes | None] | None = None  # per chunk: a stored vector of the same input, None: embed it
    part_lines: list[int] | None = None  # where each part begins, when chunks may span parts
    notes: list[str] | None = None  # what the reader passed over (one warning line)
    vectors: np.ndarray | None = None  # every chunk's vector, when a cluster embedded them
    # What a cluster's workers spent on it (a local run counts these as it goes).
    pages_ocr: int = 0
    ocr_seconds: float = 0.0
    embed_seconds: float = 0.0
    ocr_texts: dict[str, str] | None = None  # page image key -> the text a worker recognized


class Executor(Protocol):
    """Reads, cuts and embeds an update's changed files elsewhere (a Ray cluster:
    :mod:`semsearch.indexing.cluster`); the run still decides, reuses and stores here."""

    def takes(self, todo: list[Todo]) -> bool:
        """Whether this run's files go to it (a small run may stay here)."""
        ...

    def prepare(
        self, todo: list[Todo], plan: ReadPlan, model: ModelInfo, on_event: Callable[[IndexEvent], None]
    ) -> Iterator[tuple[Todo, Prepared | Exception]]:
        """Each file read and cut, its chunks' vectors in ``Prepared.vectors``, in any order."""
        ...


class _TooLarge(Exception):
    """A file that grew over the size limit between the walk and its reading (*size*: its size then)."""

    def __init__(self, size: int) -> None:
        super().__init__(f"{size} bytes")
        self.size = size


def _read_file(entry: FileEntry, max_size: int) -> bytes:
    """Read a file that the walker chose, refusing anything that turned into a non-file, and one
    that grew over *max_size* since (at most max_size + 1 bytes are read: it may still be growing)."""
    fd = os.open(entry.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ExtractError("no longer a regular file")
        if st.st_size > max_size:
            raise _TooLarge(st.st_size)
        chunks = []
        remaining = max_size + 1
        while remaining > 0:
            block = os.read(fd, min(remaining, 1 << 22))
            if not block:
                break
            chunks.append(block)
            remaining -= len(block)
        if remaining <= 0:
            raise _TooLarge(max(os.fstat(fd).st_size, max_size + 1))
        return b"".join(chunks)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class ReadPlan:
    """How the reading thread reads and cuts every file of a run."""

    settings: ChunkSettings
    measure: Callable[[str], int] | None
    limit: int
    max_size: int
    read_options: ReadOptions
    stale_kinds: frozenset[str]


def read_todo(item: Todo, max_size: int) -> bytes | Exception:
    """A file's bytes as the walk chose it, or what went wrong."""
    try:
        return _read_file(item[0], max_size)
    except FileNotFoundError:
        return ExtractError("vanished before it could be read")
    except OSError as exc:
        return ExtractError(f"unreadable ({exc.strerror or exc})")
    except (ExtractError, _TooLarge) as exc:
        return exc


def _prepare(item: Todo, plan: ReadPlan) -> Prepared | Exception:
    data = read_todo(item, plan.max_size)
    return data if isinstance(data, Exception) else prepare_data(item, data, plan)


def prepare_data(item: Todo, data: bytes, plan: ReadPlan) -> Prepared | Exception:
    """Read a file's bytes as its kind and cut them into chunks (here, or on a cluster's worker)."""
    entry, key, row = item
    settings, measure, limit = plan.settings, plan.measure, plan.limit
    digest = hashlib.sha256(data).hexdigest()
    replaces = row.id if row is not None else None
    if row is not None and row.sha256 == digest and row.kind == entry.kind and entry.kind not in plan.stale_kinds:
        # Same content, same reader: only size/mtime moved. Nothing to embed.
        return Prepared(entry, key, digest, entry.kind, None, "", None, [], replaces)
    try:
        doc = read_document(entry.path, data, entry.kind, plan.read_options)
        chunks = chunk_document(doc, settings, measure, limit)
        error = None if chunks else reader_for(entry.kind).no_text
        prepared = Prepared(entry, key, digest, doc.kind, doc.encoding, doc.title, error, chunks, replaces)
        prepared.notes = doc.notes or None
        if doc.part_starts and not doc.split_parts:
            lines = LineIndex(doc.text)
            prepared.part_lines = [lines.line_at(start) for start in doc.part_starts]
        return prepared
    except NoTextError as exc:
        return Prepared(entry, key, digest, entry.kind, None, "", str(exc), [], replaces)
    except ExtractError as exc:
        return Prepared(entry, key, digest, entry.kind, None, "", str(exc), [], replaces, damaged=True)
    except RecursionError:
        return Prepared(
            entry, key, digest, entry.kind, None, "", "too deeply nested to read", [], replaces, damaged=True
        )


class Pipeline:
    """Reads, chunks, embeds and stores the files of one run, with durable progress."""

    def __init__(
        self,
        model: ModelProvider,
        writer: IndexWriter,
        summary: IndexSummary,
        on_event: Callable[[IndexEvent], None],
        *,
        chunking: ChunkSettings,
        tuning: Tuning,
        max_size: int,
        read_options: ReadOptions | None = None,
        ocr_cache: OcrCache | None = None,
        stale_kinds: frozenset[str] = frozenset(),
        executor: Executor | None = None,
    ) -> None:
        self.model = model
        self.executor = executor
        self.writer = writer
        self.summary = summary
        self.on_event = on_event
        self.chunking = chunking
        self.tuning = tuning
        self.max_size = max_size
        self.read_options = replace(read_options or ReadOptions(), ocr_cache=ocr_cache, on_ocr=self._on_ocr)
        self.stale_kinds = stale_kinds
        self._ocr_started: float | None = None
        self.total_bytes = 0
        self.stored_bytes = 0  # bytes of the files already stored (or passed over)
        self.group: list[Prepared] = []
        self.group_chunks = self.group_bytes = 0

    def run(self, todo: list[Todo]) -> None:
        self.total_bytes = sum(e.size for e, _, _ in todo)
        self.on_event(IndexEvent("plan", f"{len(todo)} files to read", 0, self.total_bytes))
        if not todo:
            return
        plan = ReadPlan(
            self.chunking,
            self.model.measure(),
            self.model.info().max_tokens,
            self.max_size,
            self.read_options,
            self.stale_kinds,
        )
        if self.executor is not None and self.executor.takes(todo):
            # Read, cut and embedded elsewhere (a cluster); decided, reused and stored here.
            self._consume(self.executor.prepare(todo, plan, self.model.info(), self.on_event))
        else:
            self._consume(self._read_in_thread(todo, plan))

    def _read_in_thread(self, todo: list[Todo], plan: ReadPlan) -> Iterator[tuple[Todo, Prepared | Exception]]:
        """The files read and cut in a thread, ahead of the embedding here."""
        results: queue.Queue[Any] = queue.Queue(maxsize=64)
        stop = threading.Event()
        done_marker = object()

        def producer() -> None:
            try:
                for item in todo:
                    if stop.is_set():
                        return
                    results.put((item, _prepare(item, plan)))
            except BaseException as exc:  # noqa: BLE001 - any failure, Ctrl-C included, goes to the consumer
                results.put((None, exc))
            finally:
                results.put(done_marker)

        thread = threading.Thread(target=producer, name="semsearch-reader", daemon=True)
        thread.start()
        try:
            while (got := results.get()) is not done_marker:
                item, prepared = got
                if item is None:
                    raise prepared
                yield item, prepared
        finally:
            stop.set()
            while thread.is_alive():
                with contextlib.suppress(queue.Empty):
                    results.get(timeout=0.1)

    def _consume(self, stream: Iterable[tuple[Todo, Prepared | Exception]]) -> None:
        last_commit = time.monotonic()
        for item, prepared in stream:
            if self._take(item, prepared) and self.group_chunks >= self.tuning.group_chunks:
                self._flush()
            if time.monotonic() - last_commit > self.tuning.commit_seconds:
                self.writer.commit()
                last_commit = time.monotonic()
        self._flush()
        self.writer.commit()

    def _take(self, item: Todo, prepared: Prepared | Exception) -> bool:
        """Add a prepared file to the group to store, or account for it; whether it joined the group."""
        entry, _, old = item
        if isinstance(prepared, _TooLarge):
            # Grown since the walk: passed over like a file that was too large then (and its
            # version indexed before removed, as the walk's check would have).
            self.summary.skipped["too large"] += 1
            self.stored_bytes += entry.size
            text = f"skipped, too large ({prepared.size} bytes)"
            if old is not None:
                self.writer.remove_file(old.id)
                self.summary.removed += 1
                text = f"now over the size limit ({prepared.size} bytes); removing it from the index"
            self.on_event(IndexEvent("warning", path=entry.path, text=text))
            return False
        if isinstance(prepared, Exception):
            self.summary.skipped["unreadable"] += 1
            self.on_event(IndexEvent("warning", path=entry.path, text=f"skipped, {prepared}"))
            self.stored_bytes += entry.size
            return False
        if prepared.replaces is not None and not prepared.chunks and prepared.error is None:
            self.writer.touch_file(prepared.replaces, entry.size, entry.mtime_ns)
            self.summary.unchanged += 1
            self.stored_bytes += entry.size
            return False
        if prepared.damaged and old is not None and old.error is None:
            # A good version is indexed (a PDF caught mid-write, say): keep it until this one reads.
            self.summary.skipped[BROKEN] += 1
            self.on_event(
                IndexEvent("warning", path=entry.path, text=f"{prepared.error}; keeping the version indexed before")
            )
            self.stored_bytes += entry.size
            return False
        if prepared.notes:
            self.on_event(IndexEvent("warning", path=entry.path, text="; ".join(prepared.notes)))
        if prepared.error is not None:
            if prepared.damaged:
                self.summary.skipped[BROKEN] += 1  # recorded, so that it is not read again until it changes
            else:
                self.summary.no_text += 1
            self.on_event(IndexEvent("warning", path=entry.path, text=prepared.error))
        # Read (and embedded) on a cluster: its workers' figures join the run's (0 for a local read),
        # and the pages they recognized this index's OCR cache (a later local read takes them).
        cache = self.read_options.ocr_cache
        if cache is not None:
            for key, text in (prepared.ocr_texts or {}).items():
                cache.put(key, text)
        self.summary.pages_ocr += prepared.pages_ocr
        self.summary.ocr_seconds += prepared.ocr_seconds
        if prepared.vectors is not None:
            self.summary.embed_seconds += prepared.embed_seconds
            self.summary.tokens_embedded += sum(c.model_tokens or c.tokens for c in prepared.chunks)
        if prepared.error is None and prepared.chunks:
            reused = self.writer.vectors_to_reuse(prepared.sha256, prepared.chunks, prepared.replaces)
            count = sum(vector is not None for vector in reused)
            if count:
                prepared.reused = reused
                self.summary.chunks_reused += count
        self.group.append(prepared)
        self.group_chunks += len(prepared.chunks)
        self.group_bytes += entry.size
        return True

    def _on_ocr(self, path: Path, done: int, total: int) -> None:
        """OCR progress from the reading thread: pages of one file (done == total at its end)."""
        now = time.perf_counter()
        if done > 0:
            self.summary.pages_ocr += 1
            if self._ocr_started is not None:
                self.summary.ocr_seconds += now - self._ocr_started
        self._ocr_started = now if done < total else None
        self.on_event(IndexEvent("ocr", "reading scanned pages", done, total, path=path))

    def _report(self, extra: float = 0.0) -> None:
        self.on_event(IndexEvent("file", "", int(self.stored_bytes + extra), self.total_bytes))

    def _flush(self) -> None:
        size = self.group_bytes
        self._store_group(lambda fraction: self._report(fraction * size))
        self.stored_bytes += self.group_bytes
        self.group, self.group_chunks, self.group_bytes = [], 0, 0
        self._report()

    def _store_group(self, tick: Callable[[float], None]) -> None:
        """Embed the chunks of the group (shortest first; not those with a vector to reuse) and
        store each file whole."""
        if not self.group:
            return
        import numpy as np

        def reused(prepared: Prepared) -> list[bytes | None]:
            return prepared.reused or [None] * len(prepared.chunks)

        pending = [
            c
            for p in self.group
            if p.vectors is None
            for c, vector in zip(p.chunks, reused(p), strict=True)
            if vector is None
        ]
        vectors = self._embed_sorted(
            [c.embedding_text() for c in pending], [c.model_tokens or c.tokens for c in pending], tick
        )
        offset = 0
        dim = self.model.info().dim
        for prepared in self.group:
            n = len(prepared.chunks)
            own = np.empty((n, dim), dtype=np.float32)
            for i, vector in enumerate(reused(prepared)):
                if vector is not None:  # a stored vector of the same input: as a local run keeps it
                    own[i] = np.frombuffer(vector, dtype=np.float32)
                elif prepared.vectors is not None:
                    own[i] = prepared.vectors[i]
                else:
                    own[i] = vectors[offset]
                    offset += 1
            self._store_file(prepared, own if n else None)

    def _store_file(self, prepared: Prepared, vectors: np.ndarray | None) -> None:
        if prepared.replaces is not None:
            self.writer.remove_file(prepared.replaces)
        self.writer.add_file(
            prepared.key,
            display_name(os.fsdecode(prepared.key)),
            size=prepared.entry.size,
            mtime_ns=prepared.entry.mtime_ns,
            sha256=prepared.sha256,
            kind=prepared.kind,
            encoding=prepared.encoding,
            title=prepared.title,
            error=prepared.error,
            chunks=prepared.chunks,
            vectors=vectors,
            part_lines=prepared.part_lines,
        )
        if prepared.error is None:
            self.summary.indexed += 1

    def _embed_sorted(self, texts: list[str], lengths: list[int], tick: Callable[[float], None]) -> np.ndarray:
        """Embed texts in slices of similar length (less padding), in the original order.

        ``lengths`` are the chunks' token counts, summed into the run's figures. The embedder
        sorts each slice again by its exact token count (context line included) before batching.
        """
        import numpy as np

        dim = self.model.info().dim
        if not texts:
            return np.zeros((0, dim), dtype=np.float32)
        embedder = self.model.embedder()
        started = time.perf_counter()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), dim), dtype=np.float32)
        step = self.tuning.embed_slice
        traffic = getattr(embedder, "traffic", None)  # a served model's requests and tokens
        for start in range(0, len(order), step):
            idx = order[start : start + step]
            out[idx] = embedder.embed_documents([texts[i] for i in idx])
            tick((start + len(idx)) / len(order))
            if traffic is not None:
                tokens = f", {traffic.tokens:,} tokens" if traffic.tokens else ""
                self.on_event(IndexEvent("requests", f"{traffic.requests:,} requests{tokens}", traffic.requests))
        self.summary.embed_seconds += time.perf_counter() - started
        self.summary.tokens_embedded += int(sum(lengths))
        return out
