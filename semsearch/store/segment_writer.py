"""The commit point of an index update: the next generation's vector segments written (a base,
or a delta and tombstones), the kept ones checked and repaired, the flip that makes it current,
and the merges of deltas into a new base.

:class:`SegmentWriter` is :class:`~semsearch.store.writer.IndexWriter`'s base: the writer adds
the files and chunks of the next generation, this makes it current.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semsearch import files, vectors
from semsearch.errors import IndexCorruptError
from semsearch.store.database import FTS_ROWS, decode_vectors, get_state, vector_state, visible
from semsearch.store.format import IndexManifest
from semsearch.store.layout import is_own_file
from semsearch.store.reader import unlike_database
from semsearch.vectors import segments
from semsearch.vectors.base import FILE_KEYS

if TYPE_CHECKING:
    import numpy as np

    from semsearch.vectors import VectorIndex


@dataclass
class FinalizeReport:
    generation: int
    added: int
    removed: int
    rebuilt_graph: bool
    seconds: float
    merged: bool = False  # the deltas were then merged into a new base (a generation of its own)
    merge_error: str = ""  # why a merge the update began failed (its change is in all the same)
    merge_due: bool = False  # a merge was wanted and left to a later merge_segments (merge=False)
    repaired: tuple[str, ...] = ()  # damaged vector files, rebuilt from the database's vectors


class SegmentWriter:
    """The vector segments and the generation flip of an :class:`~semsearch.store.writer.IndexWriter`
    (which sets these attributes and holds the transaction)."""

    index_dir: Path
    manifest: IndexManifest
    new_build: bool
    conn: sqlite3.Connection
    committed: int  # the generation readers see
    working: int  # the next one
    _sound: set[str]  # vector files checked whole by this writer and found sound

    if TYPE_CHECKING:

        def _begin(self) -> None: ...

        def commit(self) -> None: ...

    def pending_changes(self) -> tuple[int, int]:
        """(chunks to add, chunks to remove) between the committed and the next generation."""
        added = self.conn.execute(
            "SELECT count(*) FROM chunks WHERE gen_added = ? AND gen_removed IS NULL", (self.working,)
        ).fetchone()[0]
        removed = self.conn.execute(
            "SELECT count(*) FROM chunks WHERE gen_removed = ? AND gen_added < ?", (self.working, self.working)
        ).fetchone()[0]
        return int(added), int(removed)

    def _vectors(self, where: str, params: Sequence[Any], batch: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        import numpy as np

        dim = self.manifest.model.dim
        cursor = self.conn.execute(f"SELECT id, vector FROM chunks WHERE {where} ORDER BY id", params)
        while True:
            rows = cursor.fetchmany(batch)
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            yield ids, decode_vectors([r[1] for r in rows], dim)

    # -- the commit point --------------------------------------------------------------------

    def finalize(
        self,
        progress: Callable[[int, int], None] | None = None,
        *,
        force: bool = False,
        before_switch: Callable[[], None] | None = None,
        merge: bool = True,
    ) -> FinalizeReport | None:
        """Write the next generation's vector segments and make it current.

        A new build, or an update that removes much, writes one new base file. Any other update
        writes its added vectors as one small delta file and records its removed ids as
        tombstones (:mod:`semsearch.vectors.segments`). When the deltas or tombstones then pass
        a share of the base, a second generation follows, with no change of its own: they are
        merged into a new base. No file of the current state is changed: readers of it go on
        reading it.

        Returns None when nothing changed (no new generation is made). ``before_switch`` runs
        after the vector files are durable and before readers can see the new generation (a first
        build or rebuild replaces the manifest there). *merge* False: a merge this update would
        begin is left to a later :meth:`merge_segments` (reported as ``merge_due``).
        """
        started = time.perf_counter()
        self.commit()
        added, removed = self.pending_changes()
        damaged, sketch_dropped, restamp = ((), False, set()) if self.new_build else self._check_kept()
        force = force or sketch_dropped  # a dropped sketch is written again below, as a missing one is
        if not (added or removed or force or self.new_build or damaged):
            return None
        state = get_state(self.conn)
        old_count = int(state.get("vector_count", "0"))
        layout = segments.Layout.from_state(vector_state(state))
        for segment in (layout.base, *layout.deltas):  # checked whole and sound: trusted again
            if segment.get("vector_file") in restamp:
                segment[STAT_KEY] = _stat_of(self.index_dir, segment)
        live = old_count + added - removed
        rebuild = (
            self.new_build
            or bool(damaged)  # every vector file written again from the database's vectors
            or not state.get("vector_file")
            or old_count == 0
            or removed > self._engine.rebuild_fraction * max(1, old_count)
        )
        due = not rebuild and layout.wants_merge(added, removed)
        merge = merge and due
        if rebuild:
            layout = self._write_base(layout, live, rebuild, progress)
        else:
            # The change first, as a delta: readers see it at once, and a merge that is then
            # interrupted or fails loses nothing of it.
            layout = self._write_delta(layout, added, removed, progress)
        self._flip(layout.to_state(live), clear_tombstones=rebuild)
        if before_switch is not None:
            before_switch()  # the new database's generation is visible only once the manifest names it
        self._switched(layout)
        merge_error = ""
        if merge:
            try:
                self._merge(layout, live, progress)
            except OSError as exc:  # a full disk: the deltas stay, the next update merges them
                merge_error = f"merging the vector segments failed ({exc.strerror or exc}); the next update tries again"
        return FinalizeReport(
            self.committed, added, removed, rebuild, time.perf_counter() - started, merge and not merge_error,
            merge_error, due and not merge, damaged,
        )  # fmt: skip

    def _check_kept(self) -> tuple[tuple[str, ...], bool, set[str]]:
        """The committed state's segment files, each checked whole when it is small or changed on
        disk since it was written (its inode, size or change time, which no tool sets back), else
        trusted: one line per damaged vector file (a file changed on disk is also compared with
        the database's vectors), and whether a damaged sketch was deleted (semsearch's own file,
        named by the state), so that the update writes it again from its vector file; and the
        changed files found sound, to stamp anew at the flip (a copied or restored index would
        otherwise be checked whole, against the database too, by every update)."""
        layout = segments.Layout.from_state(vector_state(get_state(self.conn)))
        check = getattr(self._engine, "verify", None)
        check_sketch = getattr(self._engine, "verify_sketch", None)
        dim = self.manifest.model.dim
        found: list[str] = []
        dropped = False
        sound_changed: set[str] = set()
        for state in layout.segment_states():
            name = state.get("vector_file", "")
            if "/" in name or not name:
                found.append(f"{name!r}: not a vector file of this index")
                continue
            path = self.index_dir / name
            changed = state.get(STAT_KEY) != _stat_of(self.index_dir, state)
            if not changed and _size(path) > CHECK_BYTES:
                continue
            if check is not None:
                try:
                    check(path, state, dim)
                except IndexCorruptError as exc:
                    found.append(str(exc.message))
                    continue
                wrong = 0
                if changed:  # checksum and all: its vectors against the database's
                    gone = [i for (i,) in self.conn.execute("SELECT id FROM vector_tombstones")]
                    wrong = unlike_database(self.conn, self.committed, self._engine, path, dim, gone)
                if wrong:
                    found.append(f"{name} holds {wrong} vectors that are not the database's for their chunks")
                    continue
                self._sound.add(name)
            sketch = state.get("vector_sketch", "")
            if check_sketch is not None and sketch and "/" not in sketch and (self.index_dir / sketch).is_file():
                try:
                    check_sketch(self.index_dir / sketch, state, dim)
                except IndexCorruptError:
                    with contextlib.suppress(OSError):
                        (self.index_dir / sketch).unlink()
                    dropped = True
                    continue
            if changed and check is not None:
                sound_changed.add(name)
        return tuple(found), dropped, sound_changed

    def merge_segments(self, progress: Callable[[int, int], None] | None = None) -> bool:
        """The merge an update left due (``finalize(merge=False)``), now: whether it ran.

        Nothing is merged while the next generation holds rows of an update that did not finish
        (a flip would publish half of it: that update's next run merges), nor when no merge is
        due."""
        self.commit()
        if self._pending_rows():
            return False
        state = get_state(self.conn)
        layout = segments.Layout.from_state(vector_state(state))
        if not state.get("vector_file") or not layout.wants_merge(0, 0):
            return False
        self._merge(layout, int(state.get("vector_count", "0")), progress)
        return True

    def _merge(self, layout: segments.Layout, live: int, progress: Callable[[int, int], None] | None) -> None:
        """The deltas and tombstones merged into a new base: a generation of its own that changes
        no chunk (the same crash-safe flip)."""
        layout = self._write_base(layout, live, False, progress)
        self._flip(layout.to_state(live), clear_tombstones=True)
        self._switched(layout)

    def _pending_rows(self) -> bool:
        """Whether the next generation holds any row an update added or removed."""
        return any(
            self.conn.execute(
                f"SELECT 1 FROM {table} WHERE gen_added = ? OR gen_removed = ? LIMIT 1", (self.working, self.working)
            ).fetchone()
            for table in ("files", "chunks")
        )

    def _switched(self, layout: segments.Layout) -> None:
        """After a flip: rows and vector files no generation from the new one on needs go."""
        self._purge(self.working)
        self.committed, self.working = self.working, self.working + 1
        keep = set(layout.files())
        for stale in self.index_dir.glob(f"vectors-{self.manifest.epoch}-*"):
            if stale.name not in keep and is_own_file(stale.name):  # never a file semsearch did not write
                with contextlib.suppress(OSError):
                    stale.unlink()

    def _write_base(
        self, layout: segments.Layout, live: int, rebuild: bool, progress: Callable[[int, int], None] | None
    ) -> segments.Layout:
        """A new base: every live vector (a rebuild), or the old base with the deltas merged in
        and the tombstones removed."""
        if not rebuild:
            # A merge reads the whole base: checked whole first, so that no damage is carried
            # into a new file with a fresh checksum (a damaged base: every vector from the database).
            base = layout.base_state()
            check = getattr(self._engine, "verify", None)
            sketch = base.get("vector_sketch", "")
            try:
                if check is not None and base["vector_file"] not in self._sound:  # (not checked already)
                    check(
                        self.index_dir / base["vector_file"], base, self.manifest.model.dim,
                        sketch_file=self.index_dir / sketch if sketch else None,
                    )  # fmt: skip
            except IndexCorruptError:
                rebuild = True
            # Removed vectors stay in a merged base (as waypoints): past a share of its
            # elements, the new base is built afresh instead.
            added = self.conn.execute(
                f"SELECT count(*) FROM chunks WHERE gen_added > ? AND {visible(self.working)}", (layout.base_gen,)
            ).fetchone()[0]
            elements = layout.base_slots() + int(added)
            rebuild = rebuild or elements - live > self._engine.rebuild_fraction * max(1, elements)
        if rebuild:
            index, total = self._new_vector_index(live), live
            where: tuple[str, tuple[Any, ...]] = (visible(self.working), ())
        else:
            base = layout.base_state()
            to_add = self.conn.execute(
                f"SELECT count(*) FROM chunks WHERE gen_added > ? AND {visible(self.working)}", (layout.base_gen,)
            ).fetchone()[0]
            index = self._engine.open(
                self.index_dir / base["vector_file"], base, self.manifest.model.dim, self.manifest.vector_params,
                extra_capacity=int(to_add),
            )  # fmt: skip
            gone = [i for (i,) in self.conn.execute("SELECT id FROM vector_tombstones")]
            gone += [
                i
                for (i,) in self.conn.execute(
                    "SELECT id FROM chunks WHERE gen_removed = ? AND gen_added < ?", (self.working, self.working)
                )
            ]
            index.remove(gone)
            total = int(to_add)
            where = (f"gen_added > ? AND {visible(self.working)}", (layout.base_gen,))
        self._add_vectors(index, where, total, progress)
        name = f"vectors-{self.manifest.epoch}-{self.working}{self._engine.file_suffix}"
        saved = _stamped(self.index_dir, index.save(self.index_dir, name))
        saved["vector_base_count"] = saved["vector_count"]
        return segments.Layout(base=saved, deltas=[], base_gen=self.working, tombstones=0)

    def _write_delta(
        self, layout: segments.Layout, added: int, removed: int, progress: Callable[[int, int], None] | None
    ) -> segments.Layout:
        """The added vectors as one new delta file; the removed ids become tombstones."""
        for state in layout.segment_states():
            # The segments this generation keeps must still be there and whole (their size and
            # header, in constant time: the update reads none of them).
            self._engine.open(
                self.index_dir / state.get("vector_file", ""), state, self.manifest.model.dim,
                self.manifest.vector_params,
            )  # fmt: skip
        layout = self._sketched(layout)
        deltas = list(layout.deltas)
        if added:
            index = self._new_vector_index(added)
            self._add_vectors(index, ("gen_added = ? AND gen_removed IS NULL", (self.working,)), added, progress)
            name = f"vectors-{self.manifest.epoch}-{self.working}-delta{self._engine.file_suffix}"
            deltas.append(_stamped(self.index_dir, index.save(self.index_dir, name)))
        return segments.Layout(
            base=layout.base, deltas=deltas, base_gen=layout.base_gen, tombstones=layout.tombstones + removed
        )

    def _sketched(self, layout: segments.Layout) -> segments.Layout:
        """*layout* with a sketch for each segment that lacks one (an index from before sketches,
        or one an older version updated and deleted them from), if its engine makes them,
        fsynced before the flip that names them."""
        add = getattr(self._engine, "add_sketch", None)
        if add is None:
            return layout
        dim = self.manifest.model.dim  # the engine leaves a segment whose sketch is there as it is
        base = add(self.index_dir / layout.base["vector_file"], layout.base, dim)
        deltas = [add(self.index_dir / state["vector_file"], state, dim) for state in layout.deltas]
        if base == layout.base and deltas == layout.deltas:
            return layout
        # A segment given its sketch now is stamped anew (as it is on disk from now on).
        base = base if base == layout.base else _stamped(self.index_dir, base)
        deltas = [
            new if new == old else _stamped(self.index_dir, new) for new, old in zip(deltas, layout.deltas, strict=True)
        ]
        files.fsync_dir(self.index_dir)
        return segments.Layout(base=base, deltas=deltas, base_gen=layout.base_gen, tombstones=layout.tombstones)

    def _add_vectors(
        self,
        index: VectorIndex,
        where: tuple[str, tuple[Any, ...]],
        total: int,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        """Add the stored vectors of the chunks *where* selects to *index*, reporting progress."""
        done = 0
        for ids, vecs in self._vectors(*where):
            index.add(ids, vecs)
            done += len(ids)
            if progress:
                progress(done, total)

    @property
    def _engine(self) -> vectors.VectorBackend:
        return vectors.backend(self.manifest.vector_index)

    def _new_vector_index(self, capacity: int) -> VectorIndex:
        """An empty index with room for *capacity* vectors."""
        return self._engine.create(self.manifest.model.dim, capacity, self.manifest.vector_params)

    def _flip(self, saved: dict[str, str], *, clear_tombstones: bool) -> None:
        """Make the next generation current for readers of this database, in one transaction."""
        self._begin()
        if clear_tombstones:  # a new base holds no removed vector
            self.conn.execute("DELETE FROM vector_tombstones")
        else:  # vectors a segment file still holds, of chunks this generation removes
            self.conn.execute(
                "INSERT OR IGNORE INTO vector_tombstones SELECT id FROM chunks WHERE gen_removed = ? AND gen_added < ?",
                (self.working, self.working),
            )
        # chunks_fts follows the flip in the same transaction: BM25 statistics never count rows
        # a reader cannot see (pending rows of an interrupted run, removed rows not yet purged).
        self.conn.execute(
            f"INSERT INTO chunks_fts(rowid, text, context) {FTS_ROWS} WHERE gen_added = ? AND gen_removed IS NULL",
            (self.working,),
        )
        self.conn.execute(
            "INSERT INTO chunks_fts(chunks_fts, rowid, text, context) "
            f"SELECT 'delete', * FROM ({FTS_ROWS} WHERE gen_removed = ? AND gen_added < ?)",
            (self.working, self.working),
        )
        self.conn.execute("DELETE FROM state WHERE key LIKE 'vector\\_%' ESCAPE '\\'")
        for key, value in (*saved.items(), ("updated_at", repr(time.time())), ("generation", str(self.working))):
            self.conn.execute("INSERT OR REPLACE INTO state VALUES (?, ?)", (key, value))
        self.commit()

    def _purge(self, generation: int) -> None:
        """Delete rows no generation from ``generation`` on can see."""
        self._begin()  # their chunks_fts rows went at the flip
        self.conn.execute("DELETE FROM chunks WHERE gen_removed IS NOT NULL AND gen_removed <= ?", (generation,))
        self.conn.execute("DELETE FROM files WHERE gen_removed IS NOT NULL AND gen_removed <= ?", (generation,))
        self.commit()


# Vector files up to this size are checked whole (sha256, links) by every update that keeps them
# (40 ms or so); bigger ones only when they changed on disk since they were written.
CHECK_BYTES = 64 << 20
STAT_KEY = "vector_stat"  # each file of a segment: "name:inode:size:ctime_ns", when written


def _stat_of(index_dir: Path, state: dict[str, str]) -> str:
    parts = []
    for key in FILE_KEYS:
        name = state.get(key, "")
        if name:
            try:
                st = os.stat(index_dir / name)
            except OSError:
                return ""
            parts.append(f"{name}:{st.st_ino}:{st.st_size}:{st.st_ctime_ns}")
    return " ".join(parts)


def _stamped(index_dir: Path, state: dict[str, str]) -> dict[str, str]:
    """A segment's state with its files' identity on disk as written (what an update compares)."""
    return {**state, STAT_KEY: _stat_of(index_dir, state)}


def _size(path: Path) -> int:
    """A file's size (0 when it cannot be read: the checks then say why)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
