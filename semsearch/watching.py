"""Keeping an index fresh: watch its folders and update it after each burst of changes.

:meth:`semsearch.api.Index.watch` runs :func:`watch_folders` with its own update, merge and
roots; this module knows the watching (watchfiles), the settling, the folders that go and come
back, and the waiting out of another run's lock.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from semsearch.errors import IndexLockedError, InvalidOptionError

if TYPE_CHECKING:
    from semsearch.indexing import IndexEvent, IndexSummary

__all__ = ["WATCH_LOCK_RETRY", "WATCH_LOCK_WAIT", "WATCH_SETTLE_MS", "watch_folders"]

# How long the watched folders must stay quiet before an update runs (a burst of saves, a
# checkout, is one update).
WATCH_SETTLE_MS = 300

# How long a watcher waits quietly for another run's lock before it says it waits (it then keeps
# trying, every WATCH_LOCK_RETRY seconds, for as long as that run takes).
WATCH_LOCK_WAIT = 30.0
WATCH_LOCK_RETRY = 1.0


class _Updates:
    """The watcher's updates: each waits out another run's lock, reports, and brings back a
    watched folder that was gone when an update ran and was made again since."""

    def __init__(
        self,
        roots: list[Path],
        remembered: Callable[[], list[Path]],
        update: Callable[[list[Path] | None, float], IndexSummary],
        *,
        on_update: Callable[[IndexSummary], None],
        say: Callable[[str], None],
        stop: threading.Event,
        lock_wait: float,
    ) -> None:
        self.roots = roots
        self.remembered = remembered
        self.update = update
        self.on_update = on_update
        self.say = say
        self.stop = stop
        self.lock_wait = lock_wait
        self.merge_due = False

    def run(self, report_empty: bool, paths: list[Path] | None = None) -> None:
        wait, told = self.lock_wait, False
        while True:
            try:
                summary = self.update(paths, wait)
                break
            except IndexLockedError as exc:
                if self.stop.is_set():
                    return
                if not told:
                    self.say(f"another update (pid {exc.holder}) is writing the index; waiting for it to finish")
                    told = True
                wait = WATCH_LOCK_RETRY  # then look at *stop* between attempts
        if told:
            self.say("the other update finished; the watcher goes on")
        self.merge_due = self.merge_due or summary.merge_due
        if report_empty or summary.indexed or summary.removed:
            self.on_update(summary)
        if paths is None:
            # A watched folder that was gone when an update ran was forgotten by it (its files
            # left the index); made again since, it is a root again.
            known = set(self.remembered())
            back = [r for r in self.roots if os.path.exists(r) and r not in known]
            if back:
                self.run(report_empty=False, paths=back)

    def there(self) -> list[tuple[Path, int, int]]:
        """The roots there now, each with its identity (one removed and made again is another)."""
        found = []
        for root in self.roots:
            with contextlib.suppress(OSError):
                st = os.stat(root)
                found.append((root, st.st_dev, st.st_ino))
        return found


def watch_folders(
    index_dir: Path,
    remembered: Callable[[], list[Path]],
    update: Callable[[list[Path] | None, float], IndexSummary],
    merge: Callable[[], bool],
    *,
    on_update: Callable[[IndexSummary], None],
    on_event: Callable[[IndexEvent], None] | None,
    on_note: Callable[[str], None],
    stop: threading.Event,
    settle_ms: int = WATCH_SETTLE_MS,
    on_ready: Callable[[], None] = lambda: None,
    lock_wait: float = WATCH_LOCK_WAIT,
) -> None:
    """Watch the index's folders (*remembered*: those the index holds now) and call *update*
    (paths, or None for all; seconds to wait for the lock) after each burst of changes, *merge*
    once the folders are quiet after an update left a merge due. As :meth:`semsearch.api.Index.watch`."""
    import watchfiles

    roots = remembered()
    if not any(os.path.exists(r) for r in roots):
        raise InvalidOptionError("nothing to watch: the index's folders are gone", options=("paths",))

    def say(text: str) -> None:
        if on_event is not None:
            from semsearch.indexing import IndexEvent

            on_event(IndexEvent("message", text))
        else:
            on_note(text)

    updates = _Updates(roots, remembered, update, on_update=on_update, say=say, stop=stop, lock_wait=lock_wait)
    ignore = watchfiles.DefaultFilter(ignore_paths=[str(index_dir)])
    ready = look_again = False
    while not stop.is_set():
        watched = updates.there()
        present = [r for r, _dev, _ino in watched]
        if not present:  # every folder gone (a checkout of another branch?): wait for one
            stop.wait(1.0)
            continue
        # Watching again (a folder went or came back): what changed before this watch began
        # sends no event, so the first quiet second walks the folders once more.
        look_again = ready
        for changes in watchfiles.watch(
            *map(str, present),
            watch_filter=ignore,
            debounce=max(settle_ms * 10, 2000),
            step=settle_ms,
            stop_event=stop,
            raise_interrupt=False,
            recursive=True,
            yield_on_timeout=True,
            rust_timeout=1000,
        ):
            if stop.is_set():
                break
            if updates.there() != watched:
                # A watched folder went away or came back (or both): its old watch is gone, so
                # the watcher starts again on the folders there now, after an update. An update
                # forgets a folder that is gone; one that comes back is indexed again.
                updates.run(report_empty=False)
                break
            if not changes:
                if ready:
                    if look_again:
                        look_again = False
                        updates.run(report_empty=False)
                    if updates.merge_due:
                        # Another run holding the index leaves the merge to the next quiet second.
                        with contextlib.suppress(IndexLockedError):
                            merge()
                            updates.merge_due = False
                    continue
                # The first quiet second: the watcher runs. Catch what changed while it
                # started (after the caller's last update); a walk over unchanged files
                # costs little.
                ready = True
                updates.run(report_empty=False)
                on_ready()
                continue
            # A file written into a new folder before the watch on that folder began sends no
            # event either: the next quiet second walks the folders once more.
            look_again = look_again or any(k == watchfiles.Change.added and os.path.isdir(p) for k, p in changes)
            updates.run(report_empty=True)
        else:
            break  # the watcher ended by itself (stop was set)
