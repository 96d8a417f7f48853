"""Decide which files to index: ignore rules, hidden entries, binary content, size limits, symlinks."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semsearch.files import folder_prefix
from semsearch.readers import SNIFF_BYTES, ReadOptions, detect_kind, kind_wanted, unwanted_kind

IGNORE_FILES = (".gitignore", ".semsearchignore")

# Noise that is text by content but rarely what a user means to search. Lowest priority:
# a `.semsearchignore` or `.gitignore` line such as `!*.svg` brings them back.
DEFAULT_IGNORES = (
    "*.svg",
    "*.min.js",
    "*.min.css",
    "*.map",
    "*.lock",
    "package-lock.json",
    "*.pyc",
    "__pycache__/",
    "node_modules/",
)

DEFAULT_MAX_FILE_SIZE = 20 * 1024 * 1024
UNCHANGED = ""  # what a walk's *known* callback returns for a file its caller holds as it is
_PLAIN_KINDS = frozenset({"text", "markdown"})  # kinds whose blank content is an empty file


class FileEntry:
    """A file chosen for indexing. *full*: its absolute, normal path, symlinks not resolved (a
    string: an update walks every file, so its :class:`Path` is made only when asked for)."""

    __slots__ = ("_path", "full", "kind", "mtime_ns", "size")

    def __init__(self, full: str, size: int, mtime_ns: int, kind: str) -> None:
        self.full = full
        self.size = size
        self.mtime_ns = mtime_ns
        self.kind = kind  # the kind of reader that takes it: "pdf", "markdown", "text", ...
        self._path: Path | None = None

    @property
    def path(self) -> Path:
        if self._path is None:
            self._path = Path(self.full)
        return self._path

    def __repr__(self) -> str:
        return f"FileEntry({self.full!r}, size={self.size}, mtime_ns={self.mtime_ns}, kind={self.kind!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FileEntry):
            return NotImplemented
        return (self.full, self.size, self.mtime_ns, self.kind) == (other.full, other.size, other.mtime_ns, other.kind)

    def __hash__(self) -> int:
        return hash((self.full, self.size, self.mtime_ns, self.kind))


@dataclass(frozen=True)
class Skip:
    """A file or folder that was passed over, and why."""

    path: Path
    reason: str  # hidden | ignored | binary | empty | images (OCR off for them) | too large | unreadable | not a regular file | symlink ...
    detail: str = ""
    warn: bool = False  # worth a warning line (unexpected), not just a count


@dataclass
class WalkOptions:
    """What the walker honours."""

    hidden: bool = False
    max_file_size: int = DEFAULT_MAX_FILE_SIZE
    follow_symlinks: bool = False  # follow links that lead outside the roots
    exclude_dirs: Sequence[Path] = field(default_factory=tuple)  # e.g. the index folder itself
    # How files are read, which decides which files are taken (images only with ocr="images").
    ocr: str = "auto"
    notebook_outputs: bool = False

    def remembered(self) -> dict[str, Any]:
        """The settings an index keeps for its next run (all but the per-run exclusions)."""
        return {
            "hidden": self.hidden,
            "max_file_size": self.max_file_size,
            "follow_symlinks": self.follow_symlinks,
            "ocr": self.ocr,
            "notebook_outputs": self.notebook_outputs,
        }

    def read_options(self) -> ReadOptions:
        """The reading settings (no cache, no progress hook: the run adds them)."""
        return ReadOptions(ocr=self.ocr, notebook_outputs=self.notebook_outputs)


def _within(path: str, folders: Iterable[str]) -> bool:
    """Whether *path* is one of *folders* or below one (plain string paths, already normalised)."""
    return any(path == f or path.startswith(f.rstrip(os.sep) + os.sep) for f in folders)


class _IgnoreLayer:
    """The ignore patterns read from one directory, applied to paths below it."""

    def __init__(self, base: Path, lines: Sequence[str]) -> None:
        from semsearch.globs import gitignore_spec

        self.base = base
        self.prefix = folder_prefix(base)
        # Linear: a hostile .gitignore cannot hang a walk; a bad line is left out, as git does.
        self.spec = gitignore_spec(lines, skip_bad=True)
        self.any_match = _any_pattern(self.spec)

    def check(self, full: str, is_dir: bool) -> bool | None:
        if not full.startswith(self.prefix):
            return None
        rel = full[len(self.prefix) :]
        if os.sep != "/":
            rel = rel.replace(os.sep, "/")
        if is_dir:
            rel += "/"
        return self.verdict(rel)

    def verdict(self, rel: str) -> bool | None:
        """For a path relative to the layer's folder ("/"-separated, folders ending in "/")."""
        if self.any_match is not None and self.any_match.search(rel) is None:
            return None  # no pattern matches at all (most files): no verdict, decided quickly
        include: bool | None = self.spec.check_file(rel).include
        return include

    def folder(self, prefix: str) -> str | None:
        """A folder below this layer (as a prefix) relative to it, as the start of its files'
        relative paths (None: not below it)."""
        if not prefix.startswith(self.prefix):
            return None
        rel = prefix[len(self.prefix) :]
        return rel if os.sep == "/" else rel.replace(os.sep, "/")


def _any_pattern(spec: Any) -> re.Pattern[str] | None:
    """One regular expression that matches where any of the spec's patterns does (None: cannot
    make one; every path is then checked pattern by pattern)."""
    parts = []
    for pattern in getattr(spec, "patterns", ()):
        regex = getattr(pattern, "regex", None)
        if getattr(pattern, "include", None) is None:
            continue  # a blank or comment line
        if regex is None:
            return None
        parts.append("(?:" + re.sub(r"\(\?P<[^>]+>", "(?:", regex.pattern) + ")")
    try:
        return re.compile("|".join(parts)) if parts else re.compile(r"(?!)")
    except re.error:
        return None


def _read_ignore_lines(
    directory: Path, on_skip: Callable[[Skip], None], names: Sequence[str] = IGNORE_FILES
) -> list[str]:
    """The lines of the ignore files among *names* in *directory* (all of them by default)."""
    lines: list[str] = []
    for name in IGNORE_FILES:
        if name not in names:
            continue
        candidate = directory / name
        try:
            with open(candidate, "rb") as handle:
                data = handle.read(1024 * 1024)
        except FileNotFoundError:
            continue
        except OSError as exc:
            on_skip(Skip(candidate, "unreadable", exc.strerror or str(exc), warn=True))
            continue
        lines.extend(data.decode("utf-8", errors="replace").splitlines())
    return lines


def _ignored(rules: Sequence[tuple[_IgnoreLayer, str]], name: str) -> bool:
    """Whether a file *name* of a folder is ignored, given the folder's (layer, relative path)
    pairs, deepest first (what :func:`_is_ignored` decides, in fewer steps)."""
    for layer, rel in rules:
        verdict = layer.verdict(rel + name)
        if verdict is not None:
            return verdict
    return False


def _is_ignored(layers: Sequence[_IgnoreLayer], full: str, is_dir: bool) -> bool:
    # The deepest layer with a matching pattern decides, as in git.
    for layer in reversed(layers):
        verdict = layer.check(full, is_dir)
        if verdict is not None:
            return verdict
    return False


def walk(
    roots: Sequence[Path],
    options: WalkOptions,
    on_skip: Callable[[Skip], None],
    known: Callable[[str, int, int], str | None] | None = None,
) -> Iterator[FileEntry]:
    """Yield the files to index under the given roots, in a stable order.

    A root that is a file is taken even when an ignore rule or its hidden name would skip it:
    the user named it. Every skip is reported through ``on_skip``. *known* (the full path as
    :attr:`FileEntry.full`, size, mtime_ns) gives the kind already recorded for a file of that
    size and time (the index's own): such a file is not opened to see what it is, so an update
    of an unchanged tree costs a stat per file; or :data:`UNCHANGED`: the caller has the file as
    it is, and it is not yielded.
    """
    yield from _Walker(roots, options, on_skip, known).files()


class _Walker:
    """One walk: the roots, what was seen (links and hard links are followed once), the skips."""

    def __init__(
        self,
        roots: Sequence[Path],
        options: WalkOptions,
        on_skip: Callable[[Skip], None],
        known: Callable[[str, int, int], str | None] | None = None,
    ) -> None:
        self.roots = roots
        self.known = known
        self.options = options
        self.read_options = options.read_options()
        self.on_skip = on_skip
        self.real_roots = [os.path.realpath(r) for r in roots]
        self.excluded = {os.path.realpath(p) for p in options.exclude_dirs}
        self.excluded_paths = {os.path.abspath(p) for p in options.exclude_dirs}
        self.seen_dirs: set[tuple[int, int]] = set()
        self.seen_files: set[tuple[int, int]] = set()
        self.wanted: dict[str, bool] = {}  # kind -> read under these options
        # Each root (file, folder or FIFO) by (device, inode) -> its path: a walk that meets
        # another root leaves it to that root's own turn (counted once, named roots taken).
        self.root_paths: dict[tuple[int, int], str] = {}
        self.root_names: set[str] = set()

    def _distinct_roots(self) -> list[tuple[Path, os.stat_result]]:
        """The roots that exist, each once (the same folder given twice, or through a link)."""
        out = []
        for given in self.roots:
            root = Path(os.path.abspath(given))
            if _within(os.path.realpath(root), self.excluded):
                self.on_skip(Skip(root, "inside the index folder", warn=True))
                continue
            try:
                st = os.stat(root)  # never opened here: a FIFO would block
            except OSError as exc:
                self.on_skip(Skip(root, "unreadable", exc.strerror or str(exc), warn=True))
                continue
            if (st.st_dev, st.st_ino) not in self.root_paths:
                self.root_paths[(st.st_dev, st.st_ino)] = str(root)
                out.append((root, st))
        return out

    def files(self) -> Iterator[FileEntry]:
        roots = self._distinct_roots()
        self.root_names = set(self.root_paths.values())
        folders = [str(root) for root, st in roots if stat.S_ISDIR(st.st_mode)]
        for root, st in roots:
            if stat.S_ISDIR(st.st_mode):
                self.seen_dirs.add((st.st_dev, st.st_ino))
                base_layers = [_IgnoreLayer(root, DEFAULT_IGNORES)]
                # Ignore files of the folders above a root apply too, up to the repository top
                # (and up to the root that holds it, when it lies in another root: `docs docs/sub`).
                outer = [f for f in folders if f != str(root) and _within(str(root), [f])]
                base_layers.extend(_ancestor_layers(root, self.on_skip, min(outer, key=len, default=None)))
                yield from self.walk_dir(str(root), base_layers)
            elif stat.S_ISREG(st.st_mode):
                entry = self.consider_file(str(root), st, explicit=True)
                if entry is not None:
                    yield entry
            else:
                self.on_skip(Skip(root, "not a regular file", warn=True))

    def consider_file(self, full: str, st: os.stat_result, explicit: bool) -> FileEntry | None:
        if (st.st_dev, st.st_ino) in self.seen_files:
            return None
        self.seen_files.add((st.st_dev, st.st_ino))
        if st.st_size > self.options.max_file_size:
            self.on_skip(Skip(Path(full), "too large", f"{st.st_size} bytes", warn=explicit))
            return None
        if st.st_size == 0:
            self.on_skip(Skip(Path(full), "empty"))  # a marker such as py.typed: nothing to search
            return None
        kind = self.known(full, st.st_size, st.st_mtime_ns) if self.known is not None else None
        if kind == UNCHANGED:
            return None  # the caller holds it as it is
        if kind is not None:
            wanted = self.wanted.get(kind)
            if wanted is None:
                wanted = self.wanted[kind] = kind_wanted(kind, self.read_options)
            if wanted:  # else looked at anew
                return FileEntry(full, st.st_size, st.st_mtime_ns, kind)
        try:
            fd = os.open(full, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
            try:
                head = os.read(fd, SNIFF_BYTES)
            finally:
                os.close(fd)
        except OSError as exc:
            self.on_skip(Skip(Path(full), "unreadable", exc.strerror or str(exc), warn=True))
            return None
        path = Path(full)
        kind = detect_kind(path, head, self.read_options)
        if kind is None:
            left_out = unwanted_kind(path, head, self.read_options)
            if left_out == "image":
                self.on_skip(Skip(path, "images (OCR off for them)", warn=explicit))
            else:
                self.on_skip(Skip(path, "binary", warn=explicit))
            return None
        if kind in _PLAIN_KINDS and st.st_size <= len(head) and not head.removeprefix(b"\xef\xbb\xbf").strip():
            self.on_skip(Skip(path, "empty"))  # blank lines only
            return None
        entry = FileEntry(full, st.st_size, st.st_mtime_ns, kind)
        entry._path = path
        return entry

    def stat_entry(self, full: str) -> os.stat_result | None:
        """Stat following links, reporting dangling links, loops and links leaving the roots."""
        try:
            lst = os.lstat(full)
        except OSError as exc:
            self.on_skip(Skip(Path(full), "unreadable", exc.strerror or str(exc), warn=True))
            return None
        return self.followed(full, lst)

    def followed(self, full: str, lst: os.stat_result) -> os.stat_result | None:
        """*lst* (an lstat of *full*), or for a link what it leads to (None: reported, not taken)."""
        if not stat.S_ISLNK(lst.st_mode):
            return lst
        target = os.path.realpath(full)
        if not self.options.follow_symlinks and not _within(target, self.real_roots):
            self.on_skip(Skip(Path(full), "symlink outside the indexed folders"))
            return None
        try:
            return os.stat(full)
        except OSError as exc:
            reason = "symlink loop" if exc.errno == 40 else "dangling symlink"
            self.on_skip(Skip(Path(full), reason, warn=True))
            return None

    def walk_dir(self, top: str, layers: list[_IgnoreLayer]) -> Iterator[FileEntry]:
        """Depth first in name order, with an explicit stack: any depth, no RecursionError."""
        stack = [self.dir_items(top, layers)]
        while stack:
            item = next(stack[-1], None)
            if item is None:
                stack.pop()
            elif isinstance(item, FileEntry):
                yield item
            else:
                stack.append(self.dir_items(*item))

    def dir_items(
        self, directory: str, layers: list[_IgnoreLayer]
    ) -> Iterator[FileEntry | tuple[str, list[_IgnoreLayer]]]:
        """The files of one folder, and (folder, its ignore layers) for each folder to enter.

        Paths are strings here (the walk's per-file cost is most of an unchanged update's)."""
        try:
            with os.scandir(directory) as it:
                names = sorted(entry.name for entry in it)
        except OSError as exc:
            self.on_skip(Skip(Path(directory), "unreadable", exc.strerror or str(exc), warn=True))
            return
        # Ignore files are read only where the listing shows them (no failed opens per folder).
        lines = _read_ignore_lines(Path(directory), self.on_skip, names)
        if lines:
            layers = [*layers, _IgnoreLayer(Path(directory), lines)]
        prefix = folder_prefix(directory)
        excluded, hidden, root_names = self.excluded_paths, self.options.hidden, self.root_names
        # The layers that apply here, deepest first, each with this folder's path relative to
        # it: a file's ignore check is then one regex search per layer (most find nothing).
        rules = [(layer, rel) for layer in reversed(layers) if (rel := layer.folder(prefix)) is not None]
        lstat, is_link, is_file, is_dir = os.lstat, stat.S_ISLNK, stat.S_ISREG, stat.S_ISDIR
        for name in names:
            full = prefix + name
            if name == ".git" or full in excluded:
                continue  # not counted: never the user's files
            if full in root_names:
                continue  # a root itself (`docs docs/.notes`): taken on its own turn
            if name.startswith(".") and not hidden:
                self.on_skip(Skip(Path(full), "hidden"))
                continue
            st: os.stat_result | None
            try:
                lst = lstat(full)
            except OSError:
                st = self.stat_entry(full)  # says what went wrong
            else:
                st = self.followed(full, lst) if is_link(lst.st_mode) else lst
            if st is None:
                continue
            if self.another_root(full, st):
                continue  # walked (or to be walked) as the root it is
            if is_file(st.st_mode):
                if name in IGNORE_FILES or _ignored(rules, name):
                    self.on_skip(Skip(Path(full), "ignored"))
                    continue
                entry = self.consider_file(full, st, explicit=False)
                if entry is not None:
                    yield entry
            elif is_dir(st.st_mode):
                if self.enter(full, st, layers):
                    yield (full, layers)
            else:
                self.on_skip(Skip(Path(full), "not a regular file"))

    def another_root(self, full: str, st: os.stat_result) -> bool:
        """Whether an entry of a walk is one of the roots, not the one it lies in (a folder that
        leads back to a root that holds it is a loop, reported as such)."""
        root = self.root_paths.get((st.st_dev, st.st_ino))
        return root is not None and (full == root or not _within(full, [root]))

    def enter(self, full: str, st: os.stat_result, layers: Sequence[_IgnoreLayer]) -> bool:
        """Whether to walk into a folder (not the index's, not ignored, not seen through a link)."""
        if os.path.realpath(full) in self.excluded:
            return False
        if _is_ignored(layers, full, is_dir=True):
            self.on_skip(Skip(Path(full), "ignored"))
            return False
        key = (st.st_dev, st.st_ino)
        if key in self.seen_dirs:
            self.on_skip(Skip(Path(full), "symlink loop"))
            return False
        self.seen_dirs.add(key)
        return True


def _ancestor_layers(root: Path, on_skip: Callable[[Skip], None], outer: str | None = None) -> list[_IgnoreLayer]:
    """Ignore layers of the folders above ``root``, up to the enclosing git repository's top, and
    up to *outer* (a root that holds this one, whose walk would have applied them)."""
    chain: list[Path] = []
    for parent in root.parents:
        chain.append(parent)
        if (parent / ".git").exists():
            break
    else:
        chain = []  # not in a git repository: the folders above say nothing
    if outer is not None and not any(str(parent) == outer for parent in chain):
        chain = []
        for parent in root.parents:
            chain.append(parent)
            if str(parent) == outer:
                break
    layers = []
    for directory in reversed(chain):
        lines = _read_ignore_lines(directory, on_skip)
        if lines:
            layers.append(_IgnoreLayer(directory, lines))
    return layers
