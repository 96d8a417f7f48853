"""Gitignore-style patterns matched without backtracking (pathspec's translation, made linear).

pathspec turns ``*a*a*b`` into ``[^/]*a[^/]*a[^/]*b``, which Python's backtracking regex engine
takes exponential time to refuse: a path part of 200 letters took seconds for 4 stars and minutes
for 5, and ``**********x`` (an 11-character glob) about 7 s per path: one glob hung
`semsearch mcp`, and a `.gitignore` can do the same to a walk. Here runs of ``*`` are collapsed
as git reads them, and the pieces between stars, being of fixed width (letters, ``?``,
``[...]``), take their leftmost place in an atomic group (``(?>...)``; on Python 3.10 a
lookahead and its backreference), which is as good as any place and never tried again. The same
holds for the path parts between two ``**``. A match then costs at most the path's length times
the pattern's.
"""

from __future__ import annotations

import functools
import itertools
import re
import sys
from collections.abc import Iterable
from typing import Any

_STAR = "[^/]*"  # what pathspec makes of a `*` inside a path part
_LEAD, _INNER = "^(?:.+/)?", "(?:/.+)?"  # and of a leading `**/`, an inner `/**/`


def tidy_glob(pattern: str) -> str:
    """*pattern* with each run of ``*`` collapsed as git reads it: a whole path part of stars is
    ``**``, a run inside a part is one ``*`` (``**********x`` is ``*x``); escapes are kept."""
    parts = []
    for part in pattern.split("/"):
        if len(part) > 1 and part.strip("*") == "":
            parts.append("**")
            continue
        out: list[str] = []
        escaped = star = False
        for char in part:
            if char == "*" and not escaped and star:
                continue
            out.append(char)
            star = char == "*" and not escaped
            escaped = not escaped and char == "\\"
        parts.append("".join(out))
    return "/".join(parts)


def gitignore_spec(lines: Iterable[str], *, skip_bad: bool = False) -> Any:
    """A ``pathspec.GitIgnoreSpec`` of *lines* (gitignore lines: ``!`` negates, ``#`` comments)
    that matches without backtracking. A bad pattern (``ok\\`` ending in a backslash, a range
    ``[z-a]``) raises ValueError, or with *skip_bad* is left out, as git leaves it out of an
    ignore file."""
    tidy = [("!" + tidy_glob(line[1:])) if line.startswith("!") else tidy_glob(line) for line in lines]
    try:
        return _spec_of(tidy)
    except (ValueError, re.error) as exc:
        if not skip_bad:
            raise ValueError(str(exc)) from None
    good = []
    for line in tidy:
        try:
            _spec_of([line])
        except (ValueError, re.error):
            continue
        good.append(line)
    return _spec_of(good)


def _spec_of(lines: list[str]) -> Any:
    import pathspec

    try:
        return pathspec.GitIgnoreSpec.from_lines(lines, _linear_pattern(), backend="simple")
    except TypeError:  # pathspec < 1.0: no backends
        return pathspec.GitIgnoreSpec.from_lines(lines, _linear_pattern())


_STAR = "[^/]*"  # what pathspec makes of a `*` inside a path part
_LEAD, _INNER = "^(?:.+/)?", "(?:/.+)?"  # and of a leading `**/`, an inner `/**/`


@functools.cache
def _linear_pattern() -> type:
    """pathspec's gitignore pattern class, its stars matched without backtracking (see above)."""
    try:
        from pathspec.patterns.gitignore.spec import GitIgnoreSpecPattern as base
    except ImportError:  # pathspec < 1.0
        from pathspec.patterns.gitwildmatch import GitWildMatchPattern as base
    counter = itertools.count()

    def atomic(body: str) -> str:
        if sys.version_info >= (3, 11):
            return f"(?>{body})"  # no group: the patterns of a spec can be joined into one regex
        name = f"ss{next(counter)}"
        return f"(?=(?P<{name}>{body}))(?P={name})"

    class LinearPattern(base):
        @classmethod
        def pattern_to_regex(cls, pattern: Any) -> tuple[Any, Any]:
            # Each `**` but the last becomes atomic too: the parts between two `**` are of fixed
            # width in path parts, so their leftmost place is as good as any.
            regex, include = super().pattern_to_regex(pattern)
            if not isinstance(regex, str) or _INNER not in regex:
                return regex, include
            chunks = regex.split(_INNER)
            out = chunks[0]
            # `??`: the empty choice first, so that the leftmost place is the one kept (a greedy
            # `?` tried a later one first, and the atomic group then kept it: `**/*/**/??`
            # missed `a/aa/a`).
            if out.startswith(_LEAD):
                out = "^" + atomic("(?:.+?/)??" + out[len(_LEAD) :] + "(?=/)")
            for chunk in chunks[1:-1]:
                out += atomic("(?:/.+?)??" + chunk + "(?=/)")
            return out + _INNER + chunks[-1], include

        @staticmethod
        def _translate_segment_glob(pattern: str, *args: Any) -> str:
            regex: str = base._translate_segment_glob(pattern, *args)
            pieces = regex.split(_STAR)
            if len(pieces) < 3:
                return regex  # at most one star: nothing to backtrack over
            middle = ""
            for piece in pieces[1:-1]:
                if piece:
                    middle += atomic(f"{_STAR}?{piece}")
            return pieces[0] + middle + _STAR + pieces[-1]

    return LinearPattern
