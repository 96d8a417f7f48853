"""Which files a search may return: paths, globs, file types and modification times.

A :class:`Scope` is what the user asked for, in their words (paths as typed, glob patterns, type
names, times). It is checked when made (unknown types, bad globs, bad durations and dates raise
:class:`InvalidOptionError`) and matched against each indexed file's stored path (relative to the
folder that holds the index), kind and modification time by ``semsearch.store.catalog``.

Filters compose: a file is in scope when it passes every kind of filter given (AND), and one of
the values given for a kind (OR): under one of the paths, matching one of the include globs and
none of the ``!`` globs, of one of the types and none of the ``type_not`` ones, modified within
the time window.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semsearch.errors import InvalidOptionError
from semsearch.globs import gitignore_spec

if TYPE_CHECKING:
    import pathspec

# Named file types (as ripgrep's --type): name -> file name extensions (lower case, no dot).
# A file is of a type when its extension is listed, or, for a file whose extension no type
# lists, when the reader that took it has that type's kind (KIND_TYPES): a Markdown file without
# an extension is "md", a PDF without one "pdf", other text "text".
TYPES: dict[str, tuple[str, ...]] = {
    "md": ("md", "markdown", "mdown", "mkd", "mkdn", "mdx"),
    "pdf": ("pdf",),
    "word": ("docx", "docm", "dotx"),
    "odt": ("odt", "ott"),
    "rtf": ("rtf",),
    "slides": ("pptx", "ppsx", "potx"),
    "epub": ("epub",),
    "notebook": ("ipynb",),
    "image": ("png", "jpg", "jpeg", "tif", "tiff", "webp", "bmp", "gif"),
    "text": ("txt", "text", "log"),
    "rst": ("rst", "rest"),
    "asciidoc": ("adoc", "asciidoc", "asc"),
    "org": ("org", "org_archive"),
    "tex": ("tex", "ltx", "sty", "cls", "bib", "dtx", "ins"),
    "typst": ("typ",),
    "textile": ("textile",),
    "pod": ("pod",),
    "rdoc": ("rdoc",),
    "wiki": ("wiki", "mediawiki", "creole"),
    "man": ("man", "roff", "mdoc"),
    "diff": ("diff", "patch"),
    "py": ("py", "pyi", "pyw"),
    "js": ("js", "mjs", "cjs", "jsx"),
    "ts": ("ts", "tsx", "mts", "cts"),
    "rust": ("rs",),
    "go": ("go",),
    "java": ("java",),
    "kotlin": ("kt", "kts"),
    "scala": ("scala", "sc"),
    "c": ("c", "h"),
    "cpp": ("cc", "cpp", "cxx", "c++", "hh", "hpp", "hxx", "h++", "inl"),
    "cs": ("cs",),
    "swift": ("swift",),
    "ruby": ("rb", "rake", "gemspec"),
    "php": ("php",),
    "lua": ("lua",),
    "r": ("r", "rmd"),
    "julia": ("jl",),
    "sh": ("sh", "bash", "zsh", "fish", "ksh"),
    "sql": ("sql",),
    "html": ("html", "htm", "xhtml"),
    "css": ("css", "scss", "sass", "less"),
    "json": ("json", "jsonl", "ndjson"),
    "yaml": ("yaml", "yml"),
    "toml": ("toml",),
    "xml": ("xml", "xsd", "xsl", "svg"),
    "config": ("ini", "cfg", "conf", "config", "properties", "env"),
    "csv": ("csv", "tsv"),
    "perl": ("pl", "pm", "perl"),
    "haskell": ("hs", "lhs"),
    "elixir": ("ex", "exs", "eex", "heex"),
    "erlang": ("erl", "hrl"),
    "dart": ("dart",),
    "zig": ("zig",),
    "ocaml": ("ml", "mli"),
    "clojure": ("clj", "cljs", "cljc", "edn"),
    "vim": ("vim",),
    "ps": ("ps1", "psm1", "psd1"),
    "vue": ("vue",),
    "svelte": ("svelte",),
    "proto": ("proto",),
    "graphql": ("graphql", "gql"),
    "nix": ("nix",),
    "terraform": ("tf", "tfvars", "hcl"),
    "make": ("mk", "mak", "make", "cmake"),
    "gradle": ("gradle", "groovy"),
    "template": (
        "j2",
        "jinja",
        "jinja2",
        "njk",
        "twig",
        "liquid",
        "hbs",
        "handlebars",
        "mustache",
        "ejs",
        "erb",
        "tpl",
    ),
}
# Other names of types, as users write them (ripgrep's "markdown" and "txt", "adoc", "latex", ...).
ALIASES: dict[str, str] = {
    "markdown": "md",
    "txt": "text",
    "adoc": "asciidoc",
    "restructuredtext": "rst",
    "latex": "tex",
    "bibtex": "tex",
    "python": "py",
    "javascript": "js",
    "typescript": "ts",
    "rs": "rust",
    "golang": "go",
    "yml": "yaml",
    "ini": "config",
    "shell": "sh",
    "bash": "sh",
    "docx": "word",
    "pptx": "slides",
    "ipynb": "notebook",
    "jupyter": "notebook",
    "htm": "html",
    "protobuf": "proto",
    "powershell": "ps",
    "tf": "terraform",
    "jinja": "template",
}
# Types made of other types.
# fmt: off
GROUPS: dict[str, tuple[str, ...]] = {
    "code": ("py", "js", "ts", "rust", "go", "java", "kotlin", "scala", "c", "cpp", "cs", "swift", "ruby",
             "php", "lua", "r", "julia", "sh", "sql", "perl", "haskell", "elixir", "erlang", "dart", "zig",
             "ocaml", "clojure", "vim", "ps", "vue", "svelte", "proto", "graphql", "nix", "terraform", "make",
             "gradle", "template"),
    "docs": ("md", "text", "pdf", "html", "word", "odt", "rtf", "slides", "epub", "notebook", "image", "rst",
             "asciidoc", "org", "tex", "typst", "textile", "pod", "rdoc", "wiki", "man"),
}
# fmt: on
KIND_TYPES = {
    "markdown": "md",
    "pdf": "pdf",
    "text": "text",
    "docx": "word",
    "odt": "odt",
    "rtf": "rtf",
    "pptx": "slides",
    "epub": "epub",
    "notebook": "notebook",
    "image": "image",
    "html": "html",
}
_EXTENSION_TYPE = {ext: name for name, exts in TYPES.items() for ext in exts}

_UNITS = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
    "M": 2_629_746, "month": 2_629_746, "months": 2_629_746,
    "y": 31_556_952, "year": 31_556_952, "years": 31_556_952,
}  # fmt: skip
_UNCLOSED_CLASS = re.compile(r"(?<!\\)\[(?![^\]]*\])")  # a [ that no ] closes
_DURATION_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]+)")
MAX_GLOB_CHARS = 1000  # a glob's length (matching costs at most the path's length times it)


def type_names() -> list[str]:
    """Every type name, in the order ``--type-list`` prints them."""
    return [*TYPES, *GROUPS]


def type_globs(name: str) -> list[str]:
    """The file name patterns of a type (a group's are its members')."""
    members = GROUPS.get(name, (name,))
    return [f"*.{ext}" for member in members for ext in TYPES[member]]


def type_of(name: str, kind: str) -> str:
    """The type of a file, from its name and the kind of reader that took it."""
    _, dot, ext = name.rpartition(".")
    found = _EXTENSION_TYPE.get(ext.lower()) if dot and "/" not in ext else None
    return found or KIND_TYPES.get(kind, kind)


def expand_types(names: Iterable[str], option: str) -> frozenset[str]:
    """Type names (groups expanded); an unknown name raises InvalidOptionError naming *option*."""
    out: set[str] = set()
    for raw in names:
        name = raw.strip().lower().lstrip(".")
        name = ALIASES.get(name, name)
        if name in GROUPS:
            out.update(GROUPS[name])
        elif name in TYPES:
            out.add(name)
        elif name in _EXTENSION_TYPE:
            out.add(_EXTENSION_TYPE[name])  # an extension a type lists: "-t yml", "-t .h"
        else:
            raise InvalidOptionError(_unknown_type(raw, option), options=(option,))
    return frozenset(out)


def _unknown_type(raw: str, option: str) -> str:
    """The one-line error for an unknown type name, naming the close ones and all the others
    (an MCP client cannot run --type-list)."""
    import difflib

    known = type_names()
    close = difflib.get_close_matches(raw.strip().lower(), [*known, *ALIASES], n=3, cutoff=0.6)
    near = [ALIASES.get(name, name) for name in close]
    hint = f"; did you mean {' or '.join(dict.fromkeys(near))}?" if near else ""
    return f"unknown file type {raw!r} for {{{option}}}{hint} (known: {', '.join(known)})"


def parse_duration(text: str, option: str = "changed_within") -> float:
    """'7d', '12h', '1w 2d', '90min', '30s' -> seconds (m is minutes, M months)."""
    spec = text.strip()
    total, pos = 0.0, 0
    for match in _DURATION_PART.finditer(spec):
        if match.start() != pos:
            break
        unit = match.group(2)
        factor = _UNITS.get(unit if unit == "M" else unit.lower())
        if factor is None:
            raise InvalidOptionError(
                f"{{{option}}}: unknown unit {unit!r} in {text!r} (use s, min, h, d, w, M or y, e.g. 7d)",
                options=(option,),
            )
        total += float(match.group(1)) * factor
        pos = match.end()
    if not spec or pos != len(spec):
        raise InvalidOptionError(f"{{{option}}}: cannot read duration {text!r} (try 7d or 12h)", options=(option,))
    if total <= 0:
        raise InvalidOptionError(f"{{{option}}}: a duration must be longer than zero (got {text!r})", options=(option,))
    return total


def parse_when(text: str, option: str = "changed_before", now: float | None = None) -> float:
    """A moment as a Unix time: a date ('2026-11-01'), a date and time ('2026-11-01 14:30',
    ISO 8601, local time unless it names a zone), or a duration back from now ('30d')."""
    spec = text.strip()
    try:
        moment = _dt.datetime.fromisoformat(spec.replace("Z", "+00:00"))
    except ValueError:
        try:
            return (time.time() if now is None else now) - parse_duration(spec, option)
        except InvalidOptionError:
            raise InvalidOptionError(
                f"{{{option}}}: cannot read {text!r} as a date (2026-11-01, '2026-11-01 14:30') or a duration (30d)",
                options=(option,),
            ) from None
    return _timestamp(moment)


def _timestamp(moment: _dt.datetime) -> float:
    """*moment* as a Unix time (naive: local time). A year the platform's local time does not
    reach (0001-01-01) is read as UTC: the hours of difference change nothing there."""
    try:
        return moment.timestamp()
    except (ValueError, OverflowError, OSError):
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=_dt.timezone.utc)
        return (moment - _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)).total_seconds()


def _as_time(value: Any, option: str, now: float, *, back_from_now: bool) -> float | None:
    """A time filter's value: None, a Unix time, a datetime, a timedelta, or text."""
    if value is None:
        return None
    if isinstance(value, _dt.timedelta):
        return now - value.total_seconds()
    if isinstance(value, _dt.datetime):
        return _timestamp(value)
    if isinstance(value, _dt.date):
        return _timestamp(_dt.datetime(value.year, value.month, value.day))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise InvalidOptionError(f"{{{option}}} must be a finite number (got {value!r})", options=(option,))
        return now - float(value) if back_from_now else float(value)
    if isinstance(value, str):
        return now - parse_duration(value, option) if back_from_now else parse_when(value, option, now)
    raise InvalidOptionError(f"{{{option}}} must be a duration, a date or a time (got {value!r})", options=(option,))


@dataclass(frozen=True)
class Scope:
    """The files a search may return. An empty scope is the whole index.

    ``paths``: absolute paths of files or folders (as :meth:`make` resolves what the user typed).
    ``globs``: gitignore-style patterns on the path below the index's folder; ``!PATTERN``
    excludes. ``types`` / ``types_not``: type names, groups expanded. ``modified_after`` /
    ``modified_before``: Unix times (inclusive / exclusive) on the modification time recorded at
    index time. ``exclude_files``: paths never returned (``similar`` leaves out its own file).
    """

    paths: tuple[Path, ...] = ()
    globs: tuple[str, ...] = ()
    types: frozenset[str] = frozenset()
    types_not: frozenset[str] = frozenset()
    modified_after: float | None = None
    modified_before: float | None = None
    exclude_files: tuple[Path, ...] = ()
    _include: Any = field(default=None, repr=False, compare=False)
    _exclude: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def make(
        cls,
        paths: Sequence[str | os.PathLike[str]] | None = None,
        *,
        globs: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
        types_not: Sequence[str] | None = None,
        changed_within: Any = None,
        changed_before: Any = None,
        now: float | None = None,
    ) -> Scope:
        """A checked scope from what a user gives: *paths* relative to the current folder;
        *changed_within* a duration ('7d', seconds, a timedelta); *changed_before* a date or
        time ('2026-11-01', a datetime, a Unix time) or a duration back from now ('30d')."""
        now = time.time() if now is None else now
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        if isinstance(globs, str):
            globs = [globs]
        if isinstance(types, str):
            types = [types]
        if isinstance(types_not, str):
            types_not = [types_not]
        resolved = tuple(Path(os.path.abspath(os.fspath(p))) for p in paths or ())
        if any(not os.fspath(p) for p in paths or ()):
            raise InvalidOptionError("an empty path in {paths}", options=("paths",))
        after = _as_time(changed_within, "changed_within", now, back_from_now=True)
        before = _as_time(changed_before, "changed_before", now, back_from_now=False)
        scope = cls(
            paths=resolved,
            globs=tuple(globs or ()),
            types=expand_types(types or (), "types"),
            types_not=expand_types(types_not or (), "types_not"),
            modified_after=after,
            modified_before=before,
        )
        return scope.compiled()

    def compiled(self) -> Scope:
        """This scope with its globs compiled (a bad pattern raises InvalidOptionError)."""
        if self._include is not None or self._exclude is not None or not self.globs:
            return self
        include = [g for g in self.globs if not g.startswith("!")]
        exclude = [g[1:] for g in self.globs if g.startswith("!")]
        for pattern in self.globs:
            if not pattern.strip("!").strip():
                raise InvalidOptionError(f"empty glob {pattern!r} in {{globs}}", options=("globs",))
            if _UNCLOSED_CLASS.search(pattern):
                raise InvalidOptionError(f"bad glob {pattern!r} in {{globs}}: unclosed [", options=("globs",))
            _check_glob(pattern)
        return replace(self, _include=_spec(include) if include else None, _exclude=_spec(exclude) if exclude else None)

    def __bool__(self) -> bool:
        return bool(
            self.paths
            or self.globs
            or self.types
            or self.types_not
            or self.modified_after is not None
            or self.modified_before is not None
            or self.exclude_files
        )

    def without(self, *files: Path) -> Scope:
        """This scope, leaving out *files* as well."""
        return replace(self, exclude_files=(*self.exclude_files, *files))

    def glob_matches(self, relpath: str) -> bool:
        """Whether a path below the index's folder (posix, no leading ./) passes the globs."""
        if self._include is not None and not self._include.match_file(relpath):
            return False
        return not (self._exclude is not None and self._exclude.match_file(relpath))

    def type_matches(self, file_type: str) -> bool:
        if self.types and file_type not in self.types:
            return False
        return file_type not in self.types_not

    def time_matches(self, mtime: float) -> bool:
        if self.modified_after is not None and mtime < self.modified_after:
            return False
        return not (self.modified_before is not None and mtime >= self.modified_before)

    def describe(self) -> dict[str, Any]:
        """The scope as plain data (for JSON and messages)."""
        out: dict[str, Any] = {}
        if self.paths:
            out["paths"] = [str(p) for p in self.paths]
        if self.globs:
            out["globs"] = list(self.globs)
        if self.types:
            out["types"] = sorted(self.types)
        if self.types_not:
            out["types_not"] = sorted(self.types_not)
        if self.modified_after is not None:
            out["modified_after"] = self.modified_after
        if self.modified_before is not None:
            out["modified_before"] = self.modified_before
        return out


def scope_of(
    paths: Sequence[str | os.PathLike[str]] | None = None,
    globs: Sequence[str] | None = None,
    types: Sequence[str] | None = None,
    types_not: Sequence[str] | None = None,
    changed_within: Any = None,
    changed_before: Any = None,
    *,
    scope: Scope | None = None,
) -> Scope | None:
    """The filters of a search as one Scope, None when none is given (the whole index); a ready
    *scope* and the filters it would hold may not both be given."""
    given = bool(paths or globs or types or types_not) or changed_within is not None or changed_before is not None
    if scope is not None:
        if given:
            raise InvalidOptionError("give either {scope} or the filters it holds, not both", options=("scope",))
        return scope.compiled() if scope else None
    if not given:
        return None
    return Scope.make(
        paths,
        globs=globs,
        types=types,
        types_not=types_not,
        changed_within=changed_within,
        changed_before=changed_before,
    )


def _check_glob(pattern: str) -> None:
    if len(pattern) > MAX_GLOB_CHARS:
        raise InvalidOptionError(
            f"a glob in {{globs}} is over {MAX_GLOB_CHARS} characters ({len(pattern)})", options=("globs",)
        )


def _spec(patterns: list[str]) -> pathspec.PathSpec:
    try:
        return gitignore_spec(patterns)
    except (ValueError, TypeError) as exc:  # pathspec raises GitWildMatchPatternError(ValueError)
        raise InvalidOptionError(f"bad glob in {{globs}}: {exc}", options=("globs",)) from None
