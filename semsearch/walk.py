"""Decide which files to index: ignore rules, hidden entries, binary content, size limits, symlinks."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

# Extensions whose content is never text worth reading; content sniffing still decides the rest.
BINARY_EXTENSIONS = frozenset(
    ".png .jpg .jpeg .gif .bmp .ico .webp .tif .tiff .mp3 .mp4 .wav .ogg .flac .avi .mov .mkv "
    ".zip .gz .tgz .bz2 .xz .zst .7z .rar .jar .war .whl .egg .so .dll .dylib .exe .o .a .class "
    ".pyc .pyo .woff .woff2 .ttf .otf .eot .sqlite .db .bin .dat .npy .npz .pt .onnx .safetensors "
    ".hnsw .parquet .doc .xls .ppt .docx .xlsx .pptx .odt .iso .dmg".split()
)

DEFAULT_MAX_FILE_SIZE = 20 * 1024 * 1024
SNIFF_BYTES = 8192


@dataclass(frozen=True)
class FileEntry:
    """A file chosen for indexing."""

    path: Path  # absolute, symlinks not resolved
    size: int
    mtime_ns: int
    kind: str  # "pdf" or "text"


@dataclass(frozen=True)
class Skip:
    """A file or folder that was passed over, and why."""

    path: Path
    reason: str  # hidden | ignored | binary | too large | unreadable | not a regular file | symlink ...
    detail: str = ""
    warn: bool = False  # worth a warning line (unexpected), not just a count


@dataclass
class WalkOptions:
    """What the walker honours."""

    hidden: bool = False
    max_file_size: int = DEFAULT_MAX_FILE_SIZE
    follow_symlinks: bool = False  # follow links that lead outside the roots
    exclude_dirs: Sequence[Path] = field(default_factory=tuple)  # e.g. the index folder itself

    def remembered(self) -> dict[str, Any]:
        """The settings an index keeps for its next run (all but the per-run exclusions)."""
        return {"hidden": self.hidden, "max_file_size": self.max_file_size, "follow_symlinks": self.follow_symlinks}


def _within(path: str, folders: Iterable[str]) -> bool:
    """Whether *path* is one of *folders* or below one (plain string paths, already normalised)."""
    return any(path == f or path.startswith(f.rstrip(os.sep) + os.sep) for f in folders)


class _IgnoreLayer:
    """The ignore patterns read from one directory, applied to paths below it."""

    def __init__(self, base: Path, lines: Sequence[str]) -> None:
        import pathspec

        self.base = base
        self.spec = pathspec.GitIgnoreSpec.from_lines(lines)

    def check(self, path: Path, is_dir: bool) -> bool | None:
        try:
            rel = path.relative_to(self.base).as_posix()
        except ValueError:
            return None
        if is_dir:
            rel += "/"
        return self.spec.check_file(rel).include


def _read_ignore_lines(directory: Path, on_skip: Callable[[Skip], None],
                       names: Sequence[str] = IGNORE_FILES) -> list[str]:
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


def _is_ignored(layers: Sequence[_IgnoreLayer], path: Path, is_dir: bool) -> bool:
    # The deepest layer with a matching pattern decides, as in git.
    for layer in reversed(layers):
        verdict = layer.check(path, is_dir)
        if verdict is not None:
            return verdict
    return False


def sniff_kind(path: Path, head: bytes) -> str | None:
    """Return "pdf" or "text" for readable content, None for binary content."""
    if path.suffix.lower() == ".pdf" or head.startswith(b"%PDF-"):
        return "pdf"
    if path.suffix.lower() in BINARY_EXTENSIONS:
        return None
    return "text" if looks_like_text(head) else None


def looks_like_text(head: bytes) -> bool:
    """Guess from the first bytes whether content is text (any common encoding) or binary."""
    if not head:
        return True
    if head.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")):
        return True
    nul = head.count(0)
    # A few stray NULs in otherwise readable text are tolerated (and dropped when read);
    # UTF-16 without a BOM or real binary formats have NULs everywhere.
    if nul > max(1, len(head) // 200):
        return False
    control = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13, 27, 0))
    return control <= len(head) // 20


def walk(
    roots: Sequence[Path],
    options: WalkOptions,
    on_skip: Callable[[Skip], None],
) -> Iterator[FileEntry]:
    """Yield the files to index under the given roots, in a stable order.

    A root that is a file is taken even when an ignore rule or its hidden name would skip it:
    the user named it. Every skip is reported through ``on_skip``.
    """
    real_roots = [Path(os.path.realpath(r)) for r in roots]
    excluded = {os.path.realpath(p) for p in options.exclude_dirs}
    excluded_paths = {os.path.abspath(p) for p in options.exclude_dirs}
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()

    def inside_roots(target: str) -> bool:
        return _within(target, map(str, real_roots))

    def consider_file(path: Path, st: os.stat_result, explicit: bool) -> FileEntry | None:
        if (st.st_dev, st.st_ino) in seen_files:
            return None
        seen_files.add((st.st_dev, st.st_ino))
        if st.st_size > options.max_file_size:
            on_skip(Skip(path, "too large", f"{st.st_size} bytes", warn=explicit))
            return None
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
            try:
                head = os.read(fd, SNIFF_BYTES)
            finally:
                os.close(fd)
        except OSError as exc:
            on_skip(Skip(path, "unreadable", exc.strerror or str(exc), warn=True))
            return None
        kind = sniff_kind(path, head)
        if kind is None:
            on_skip(Skip(path, "binary", warn=explicit))
            return None
        return FileEntry(path=path, size=st.st_size, mtime_ns=st.st_mtime_ns, kind=kind)

    def stat_entry(path: Path) -> os.stat_result | None:
        """Stat following links, reporting dangling links, loops and links leaving the roots."""
        try:
            lst = os.lstat(path)
        except OSError as exc:
            on_skip(Skip(path, "unreadable", exc.strerror or str(exc), warn=True))
            return None
        if not stat.S_ISLNK(lst.st_mode):
            return lst
        target = os.path.realpath(path)
        if not options.follow_symlinks and not inside_roots(target):
            on_skip(Skip(path, "symlink outside the indexed folders"))
            return None
        try:
            return os.stat(path)
        except OSError as exc:
            reason = "symlink loop" if exc.errno == 40 else "dangling symlink"
            on_skip(Skip(path, reason, warn=True))
            return None

    def walk_dir(top: Path, layers: list[_IgnoreLayer]) -> Iterator[FileEntry]:
        """Depth first in name order, with an explicit stack: any depth, no RecursionError."""
        stack = [dir_items(top, layers)]
        while stack:
            item = next(stack[-1], None)
            if item is None:
                stack.pop()
            elif isinstance(item, FileEntry):
                yield item
            else:
                stack.append(dir_items(*item))

    def dir_items(directory: Path, layers: list[_IgnoreLayer]) -> Iterator[FileEntry | tuple[Path, list[_IgnoreLayer]]]:
        """The files of one folder, and (folder, its ignore layers) for each folder to enter."""
        try:
            with os.scandir(directory) as it:
                names = sorted(entry.name for entry in it)
        except OSError as exc:
            on_skip(Skip(directory, "unreadable", exc.strerror or str(exc), warn=True))
            return
        # Ignore files are read only where the listing shows them (no failed opens per folder).
        lines = _read_ignore_lines(directory, on_skip, names)
        if lines:
            layers = [*layers, _IgnoreLayer(directory, lines)]
        for name in names:
            path = directory / name
            if name == ".git" or str(path) in excluded_paths:
                continue  # not counted: never the user's files
            if name.startswith(".") and not options.hidden:
                on_skip(Skip(path, "hidden"))
                continue
            st = stat_entry(path)
            if st is None:
                continue
            if stat.S_ISDIR(st.st_mode):
                if os.path.realpath(path) in excluded:
                    continue
                if _is_ignored(layers, path, is_dir=True):
                    on_skip(Skip(path, "ignored"))
                    continue
                key = (st.st_dev, st.st_ino)
                if key in seen_dirs:
                    on_skip(Skip(path, "symlink loop"))
                    continue
                seen_dirs.add(key)
                yield (path, layers)
            elif stat.S_ISREG(st.st_mode):
                if name in IGNORE_FILES or _is_ignored(layers, path, is_dir=False):
                    on_skip(Skip(path, "ignored"))
                    continue
                entry = consider_file(path, st, explicit=False)
                if entry is not None:
                    yield entry
            else:
                on_skip(Skip(path, "not a regular file"))

    for root in roots:
        root = Path(os.path.abspath(root))
        if _within(os.path.realpath(root), excluded):
            on_skip(Skip(root, "inside the index folder", warn=True))
            continue
        try:
            st = os.stat(root)
        except OSError as exc:
            on_skip(Skip(root, "unreadable", exc.strerror or str(exc), warn=True))
            continue
        if stat.S_ISDIR(st.st_mode):
            seen_dirs.add((st.st_dev, st.st_ino))
            base_layers = [_IgnoreLayer(root, DEFAULT_IGNORES)]
            # Ignore files of the folders above a root apply too, up to the repository top.
            base_layers.extend(_ancestor_layers(root, on_skip))
            yield from walk_dir(root, base_layers)
        elif stat.S_ISREG(st.st_mode):
            entry = consider_file(root, st, explicit=True)
            if entry is not None:
                yield entry
        else:
            on_skip(Skip(root, "not a regular file", warn=True))


def _ancestor_layers(root: Path, on_skip: Callable[[Skip], None]) -> list[_IgnoreLayer]:
    """Ignore layers of the folders above ``root``, up to the enclosing git repository's top."""
    chain: list[Path] = []
    for parent in root.parents:
        chain.append(parent)
        if (parent / ".git").exists():
            break
    else:
        return []  # not in a git repository: the folders above say nothing
    layers = []
    for directory in reversed(chain):
        lines = _read_ignore_lines(directory, on_skip)
        if lines:
            layers.append(_IgnoreLayer(directory, lines))
    return layers
