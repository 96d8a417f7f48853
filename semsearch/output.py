"""Formatters over hits: terminal view, PATH:LINE:SCORE:SNIPPET lines, JSON Lines, file lists."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

from semsearch.scope import type_of

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from semsearch.duplicates import DuplicateGroup, FilePair
    from semsearch.search import Hit
    from semsearch.store import ChunkRecord

SNIPPET_CHARS = 240
VIEW_LINES = 14
# C0 controls except tab/newline, DEL, C1 controls, and the Unicode bidi overrides that can
# disguise text on a terminal.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_SPACES = re.compile(r"\s+")
_SURROGATE = re.compile("[\ud800-\udfff]")  # lone: os.fsdecode's stand-ins for bytes that are not UTF-8


def escape_controls(text: str, keep_newlines: bool = True) -> str:
    """Show control characters as escapes so a file name or document cannot drive the terminal."""
    if not keep_newlines:
        text = text.replace("\n", "\\n").replace("\t", " ")
    return _CONTROL.sub(
        lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else f"\\u{ord(m.group()):04x}", text
    )


def escape_name(name: str) -> str:
    """A file name on one line: control characters escaped, a tab as ``\\t`` (not the space a
    snippet gets, which would name another file)."""
    return escape_controls(name.replace("\t", "\\t"), keep_newlines=False)


def shown_path(path: Path) -> str:
    """The path relative to the current directory when below it (as grep shows it), else absolute.

    A ``str`` as ``os.fsdecode`` makes it: bytes of the name that are not UTF-8 are lone
    surrogates (U+DC80..U+DCFF), so ``os.fsencode`` of the result gives the real bytes back.
    """
    try:
        rel = os.path.relpath(path)
    except (ValueError, OSError):  # another drive (Windows); the current directory is gone
        return str(path)
    above = rel == os.pardir or rel.startswith(os.pardir + os.sep)
    return str(path) if above else rel


def display_path(path: Path) -> str:
    """A path in a message: as ``shown_path`` gives it, but relative also when it lies below a
    folder one or two levels above the current one (``../notes/a.md``, in a sibling folder the
    user gave as ``../notes``), with bytes that are not UTF-8 shown as ``\\xff`` escapes:
    readable text for a terminal, not the file's real name."""
    shown = shown_path(path)
    if os.path.isabs(shown):
        with contextlib.suppress(ValueError, OSError):
            rel = os.path.relpath(path)
            up = rel.split(os.sep).count(os.pardir)
            if up <= 2 and rel.startswith(os.pardir) and os.path.commonpath([os.getcwd(), shown]) != os.sep:
                shown = rel
    return os.fsencode(shown).decode("utf-8", errors="backslashreplace")


def snippet_line(hit: Hit) -> int:
    """The 1-based line where the snippet starts (``semsearch.search.snippet_line``)."""
    from semsearch.search import snippet_line as line_of

    return line_of(hit.chunk, hit.highlight)


def location(hit: Hit) -> int:
    """The number shown after the path: the line where the snippet starts, or in a document of
    parts the part it is in: the page (PDF, scanned image), cell (notebook), slide (PowerPoint) or
    section (Word, OpenDocument, HTML; an EPUB's chapter). ``location_of`` says which."""
    c = hit.chunk
    if c.page_start is None:
        return snippet_line(hit)
    return c.part_of_line(snippet_line(hit)) or c.page_start


def location_kind(chunk: ChunkRecord) -> str:
    """What the number after a hit's path counts: "line", "page", "cell", "slide" or "section"."""
    if chunk.page_start is None:
        return "line"
    from semsearch.readers import part_kind

    return part_kind(chunk.kind)


def location_of(hit: Hit) -> dict[str, object]:
    """A hit's place as JSON: ``{"kind": "page", "page": 3}``, ``{"kind": "line", "line": 12,
    "line_end": 20}``, ``{"kind": "cell", "cell": 4, "cell_end": 5}``, slide or section alike.
    The number is the part of the snippet's line; ``<kind>_end`` the last part the chunk reaches,
    when later."""
    c = hit.chunk
    kind = location_kind(c)
    if kind == "line":
        return {"kind": "line", "line": snippet_line(hit), "line_end": c.line_end}
    out: dict[str, object] = {"kind": kind, kind: location(hit)}
    if c.page_end is not None and c.page_end != out[kind]:
        out[f"{kind}_end"] = c.page_end
    return out


def where_text(chunk: ChunkRecord) -> str:
    """A hit's place in words: "line 4", "lines 4-9", "page 3", "slides 2-3", "section 5"."""
    kind = location_kind(chunk)
    first, last = (chunk.line_start, chunk.line_end) if kind == "line" else (chunk.page_start, chunk.page_end)
    if chunk.kind == "epub":
        kind = "chapter"  # an EPUB's sections are its chapters, in reading order
    return f"{kind}s {first}-{last}" if last not in (None, first) else f"{kind} {first}"


def snippet(hit: Hit, width: int = SNIPPET_CHARS) -> str:
    """One line of the chunk, starting at the sentence closest to the query."""
    text = hit.chunk.text
    start = hit.highlight[0] if hit.highlight else 0
    piece = _SPACES.sub(" ", text[start : start + width * 2]).strip()
    if len(piece) > width:
        piece = piece[:width].rstrip() + "…"
    return escape_controls(piece, keep_newlines=False)


def format_line(hit: Hit) -> str:
    """``PATH:LINE:SCORE:SNIPPET``: what editors' quickfix lists and grep users read.

    Control characters in the path are escaped (one hit stays one line); bytes of the name that
    are not UTF-8 stay lone surrogates, as in ``shown_path``, for ``write_lines`` to write raw.
    """
    return f"{place(hit)}:{hit.score:.4f}:{_no_surrogates(snippet(hit))}"


def place(hit: Hit) -> str:
    """``PATH:LINE`` (or ``PATH:PAGE``...): where a hit is, as ``format_line`` begins (the path as
    ``shown_path`` gives it, control characters escaped)."""
    return f"{escape_name(shown_path(hit.chunk.path))}:{location(hit)}"


def hit_to_json(hit: Hit, query: str) -> dict:
    """One hit as a JSON-ready dict. ``path`` is ``shown_path``'s string, lone surrogates and all
    (``write_json_lines`` writes them as ``\\udcXX`` escapes); ``line`` is where the snippet
    starts (``snippet_line``), ``line_start``/``line_end`` the whole chunk's lines (of the
    extracted text); ``location`` is where the hit is (``location_of``)."""
    c = hit.chunk
    kind = location_kind(c)
    return {
        "query": query,
        "rank": hit.rank,
        "score": round(hit.score, 6),
        "path": shown_path(c.path),
        "location": location_of(hit),
        "line": snippet_line(hit) if kind == "line" else None,  # a hit in a document of parts is at its part
        "line_start": c.line_start,
        "line_end": c.line_end,
        "page": c.page_start if kind == "page" else None,
        "page_end": c.page_end if kind == "page" else None,
        "text": c.text,
        "title": c.title,
        "context": c.context,
        "char_start": c.char_start,
        "char_end": c.char_end,
        "chunk_id": c.id,
        "scores": {k: round(v, 6) for k, v in hit.scores.items()},
        "mtime": c.mtime_ns / 1e9,  # the file's modification time when indexed (Unix seconds)
        "type": type_of(c.display, c.kind),  # its file type (semsearch query --type-list)
    }


# Line breaks other than \n that JSON leaves raw in strings but line splitters (Python's
# splitlines, older JavaScript) break on: escaped, so each object stays on one line for all.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _no_surrogates(text: str) -> str:
    """Text with any lone surrogate as U+FFFD (document text has none: extract replaces them)."""
    return _SURROGATE.sub("\ufffd", text)


def json_line(hit: Hit, query: str) -> str:
    """One hit as a line of JSON, without its newline.

    Written with ``ensure_ascii=False`` (readable and short), except that lone surrogates, which
    a UTF-8 stream cannot encode, become ``\\udcXX`` escapes: JSON allows them, and a path's
    bytes that are not UTF-8 then survive (Python: ``os.fsencode(json.loads(line)["path"])``).
    """
    return json_text(hit_to_json(hit, query))


def json_text(record: dict) -> str:
    """A JSON object on one line (see ``json_line``)."""
    text = json.dumps(record, ensure_ascii=False).translate(_LINE_BREAKS)
    # A raw character in json.dumps output is never part of an escape, so escaping it in place
    # is exact.
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def write_json_lines(out: IO[str], hits: Sequence[Hit], query: str) -> None:
    for hit in hits:
        out.write(json_line(hit, query) + "\n")


def write_lines(out: IO[str], hits: Sequence[Hit]) -> None:
    """``format_line`` per hit, paths in their real bytes (see ``write_raw``)."""
    write_raw(out, "".join(format_line(hit) + "\n" for hit in hits))


def write_files(out: IO[str], hits: Sequence[Hit], null: bool = False) -> None:
    """One path per hit, in its real bytes (see ``write_raw``): NUL-terminated and exact with
    ``null``, else newline-terminated with control characters escaped (one path, one line)."""
    end = "\0" if null else "\n"
    paths = (shown_path(hit.chunk.path) for hit in hits)
    write_raw(out, "".join((path if null else escape_name(path)) + end for path in paths))


def write_raw(out: IO[str], text: str) -> None:
    """Write ``text`` with its lone surrogates (U+DC80..U+DCFF) as the raw bytes they stand for.

    File names may be any bytes; written raw, as grep and find write them, they can be handed to
    ``xargs`` or an editor. When ``out`` has a binary ``buffer`` (sys.stdout), ``out`` is flushed
    first, so text written to it before comes out before these bytes. Otherwise (io.StringIO) the
    string is written unchanged: ``os.fsencode`` of what was written gives the bytes.
    """
    if not text:
        return
    buffer = getattr(out, "buffer", None)
    if buffer is None:
        out.write(text)
        return
    out.flush()
    buffer.write(text.encode("utf-8", errors="surrogateescape"))


def render_terminal(console: Console, hits: Sequence[Hit], query: str, files_only: bool = False) -> None:
    """The readable view: path, lines or page, score, and the chunk with its best sentence emphasized."""
    from rich.padding import Padding
    from rich.text import Text

    if not hits:
        return
    for hit in hits:
        c = hit.chunk
        path = escape_name(display_path(c.path))
        where = where_text(c)
        header = Text()
        header.append(f"{hit.rank:>2}. ", style="dim")
        header.append(path, style="bold magenta")
        header.append(f"  {where}", style="green")
        header.append(f"  {hit.score:.3f}", style="cyan")
        console.print(header)
        if files_only:
            continue
        console.print(Padding(_body(hit), (0, 0, 1, 4)))


def _body(hit: Hit) -> Text:
    from rich.text import Text

    text = hit.chunk.text
    lo, hi = hit.highlight if hit.highlight else (0, 0)
    body = Text()
    body.append(escape_controls(text[:lo]), style="dim")
    body.append(escape_controls(text[lo:hi]), style="bold yellow")
    body.append(escape_controls(text[hi:]), style="dim")
    return Text("\n").join(_trim_lines(body))


def _trim_lines(body: Text) -> list[Text]:
    lines = [line for line in body.split("\n")]
    # Drop blank runs and keep the view short, centred on the emphasized sentence.
    kept: list[Text] = []
    for line in lines:
        if not line.plain.strip() and (not kept or not kept[-1].plain.strip()):
            continue
        kept.append(line)
    while kept and not kept[-1].plain.strip():
        kept.pop()
    if len(kept) > VIEW_LINES:
        focus = next((i for i, line in enumerate(kept) if any(s.style == "bold yellow" for s in line.spans)), 0)
        start = max(0, min(focus - 3, len(kept) - VIEW_LINES))
        kept = kept[start : start + VIEW_LINES]
    return kept


class HitWriter:
    """Writes each query's hits to stdout in the form asked for: the terminal view, PATH:LINE
    lines, file lists (NUL-separated on request) or JSON Lines; in batch mode, a ``# QUERY``
    line before each query's hits (not in JSON, which names the query in every object)."""

    def __init__(
        self, out: IO[str], *, terminal: bool, as_json: bool, null: bool, files_only: bool, batch: bool
    ) -> None:
        self.out = out
        self.as_json = as_json
        self.null = null
        self.files_only = files_only
        self.batch = batch
        self.queries = 0
        self.console: Console | None = None
        if terminal:
            from rich.console import Console

            self.console = Console(highlight=False, markup=False, soft_wrap=False)

    def write(self, query: str, hits: Sequence[Hit]) -> None:
        out, console = self.out, self.console
        heading = f"# {escape_controls(query, keep_newlines=False)}"
        if self.as_json:
            write_json_lines(out, hits, query)
        elif self.files_only:
            if console is not None:
                render_terminal(console, hits, query, files_only=True)
            else:
                write_files(out, hits, null=self.null)
        elif console is not None:
            if self.batch:
                console.print(heading, style="bold")
            render_terminal(console, hits, query)
        else:
            if self.batch:
                out.write(("\n" if self.queries else "") + heading + "\n")
            write_lines(out, hits)
        self.queries += 1
        out.flush()


def _group_hits(group: DuplicateGroup) -> list[Hit]:
    from semsearch.search import Hit

    return [
        Hit(rank, score, chunk, {"cosine": score})
        for rank, (chunk, score) in enumerate(zip(group.chunks, group.scores, strict=True), 1)
    ]


def write_groups(out: IO[str], groups: Sequence[DuplicateGroup], *, as_json: bool, terminal: bool) -> None:
    """Near-duplicate groups: a ``# group N`` line, then its passages as ``PATH:LINE:SCORE:SNIPPET``
    lines (the score: the passage's best cosine to another of the group); JSON Lines: one
    object per group; on a terminal, each passage in full."""
    console = None
    if terminal:
        from rich.console import Console

        console = Console(file=out, highlight=False, markup=False, soft_wrap=False)
    for number, group in enumerate(groups, 1):
        hits = _group_hits(group)
        heading = (
            f"# group {number}: {len(hits)} passages in {group.files} files, "
            f"cosine {group.min_score:.3f}-{group.score:.3f}"
        )
        if as_json:
            record = {
                "group": number,
                "size": len(hits),
                "files": group.files,
                "score": round(group.score, 6),
                "min_score": round(group.min_score, 6),
                "passages": [{k: v for k, v in hit_to_json(h, "").items() if k not in ("query", "rank")} for h in hits],
            }
            out.write(json_text(record) + "\n")
        elif console is not None:
            console.print(heading, style="bold")
            render_terminal(console, hits, "")
        else:
            out.write(("\n" if number > 1 else "") + heading + "\n")
            write_lines(out, hits)
    out.flush()


def write_file_pairs(out: IO[str], pairs: Sequence[FilePair], *, as_json: bool, terminal: bool) -> None:
    """Pairs of files sharing near-duplicate passages, most shared first: ``PATH<TAB>PATH`` lines
    (on a terminal, with how many passages they share); JSON Lines with the figures."""
    for pair in pairs:
        a, b = shown_path(pair.a), shown_path(pair.b)
        if as_json:
            record = {
                "files": [a, b],
                "shared": pair.shared,  # passages of the smaller file with a copy in the other
                "chunks": pair.chunks,  # passages of the smaller file
                "share": round(pair.share, 6),
                "score": round(pair.score, 6),
            }
            out.write(json_text(record) + "\n")
        elif terminal:
            out.write(
                f"{escape_name(display_path(pair.a))}  {escape_name(display_path(pair.b))}  "
                f"{pair.shared}/{pair.chunks} passages, cosine up to {pair.score:.3f}\n"
            )
        else:
            write_raw(out, f"{escape_name(a)}\t{escape_name(b)}\n")
    out.flush()
