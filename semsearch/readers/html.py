"""HTML pages through selectolax (lexbor): the main text without menus, scripts or footers, headings kept.

The page is decoded with its declared charset (BOM, ``<meta charset>``, XML declaration) when that
decodes it, else as text of unknown encoding. Junk is passed over as the page is walked (scripts,
styles, forms' controls, navigation, site headers and footers, hidden elements); the text comes
from ``<main>``, else the one ``<article>``, else ``role="main"``, else ``<body>``. Headings
become Markdown heading lines, and each starts a part (a section), so a hit is located by the
section it is in. :func:`extract_html` is shared with the EPUB reader.

The walk is iterative (no recursion on deep trees), and markup nested deeper than any real page
is refused before parsing: lexbor's tree construction takes time quadratic in the nesting depth.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semsearch.errors import ExtractError
from semsearch.readers import text
from semsearch.readers.base import DEFAULT_READ_OPTIONS, Reader, ReadOptions
from semsearch.readers.document import Document, DocumentBuilder, decode_text, file_stem

KIND = "html"
SUFFIXES = frozenset({".html", ".htm", ".xhtml"})
# Files that often start like HTML but are templates or code: read as text, not as pages.
TEMPLATE_SUFFIXES = frozenset(
    [
        ".php",
        ".phtml",
        ".erb",
        ".rhtml",
        ".jsp",
        ".asp",
        ".aspx",
        ".cshtml",
        ".razor",
        ".vue",
        ".svelte",
        ".astro",
        ".hbs",
        ".handlebars",
        ".mustache",
        ".njk",
        ".j2",
        ".jinja",
        ".jinja2",
        ".twig",
        ".liquid",
        ".ejs",
        ".tpl",
        ".tmpl",
        ".gohtml",
        ".heex",
        ".eex",
    ]
)
MAX_TITLE_CHARS = 300
# Nesting that makes lexbor's tree building slow: each start tag searches the stack of open
# elements, so n nested <div>s cost n^2 steps (20,000 take about a second). Real pages nest a
# few dozen deep and sum to a few million steps; these limits are far above that.
MAX_NESTING = 4096
MAX_PARSE_WORK = 200_000_000

# fmt: off
# Elements whose content is never the page's text.
_SKIP = frozenset({
    "head", "script", "style", "noscript", "template", "svg", "iframe", "object", "embed", "canvas", "audio",
    "video", "map", "dialog", "input", "button", "select", "option", "optgroup", "datalist", "textarea", "label",
    "nav", "footer", "menu",
})
_JUNK_ROLES = frozenset({
    "navigation", "banner", "contentinfo", "complementary", "search", "menu", "menubar", "toolbar", "dialog",
})
# Elements that begin and end a paragraph of their own (inline text between them is one block).
_BLOCKS = frozenset({
    "address", "article", "aside", "blockquote", "body", "center", "dd", "details", "div", "dl", "dt", "fieldset",
    "figcaption", "figure", "form", "header", "hgroup", "hr", "html", "legend", "li", "main", "ol", "p", "section",
    "summary", "table", "caption", "tbody", "thead", "tfoot", "ul", "dir", "listing", "xmp", "plaintext", "search",
})
# fmt: on
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
# Where a <header> belongs to a section rather than to the site (it then keeps the section's title).
_SECTIONING = frozenset({"article", "main", "section", "aside"})
_CELLS = frozenset({"td", "th"})
_HEADING_MARKS = re.compile(r"(?:\s+#|\s*[¶§🔗])+$")  # "Title ¶", "Title #": anchor links
_LINK_DENSE = 0.5  # an <aside> mostly of links is a sidebar; one of prose is a side note

_BOM_ENCODINGS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
_META_CHARSET = re.compile(rb"""<meta[^>]{0,512}?charset\s*=\s*["']?\s*([A-Za-z0-9._:-]{1,40})""", re.IGNORECASE)
_XML_ENCODING = re.compile(rb"""\A\s*<\?xml[^>]{0,200}?encoding\s*=\s*["']([A-Za-z0-9._:-]{1,40})""", re.IGNORECASE)
# As browsers read declarations (WHATWG Encoding): Latin-1 and ASCII mean windows-1252, and a
# page that declares UTF-16 in ASCII-compatible bytes is UTF-8.
_CHARSET_ALIASES = {
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "l1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "utf-16": "utf-8",
    "utf-16le": "utf-8",
    "utf-16be": "utf-8",
    "utf-16-le": "utf-8",
    "utf-16-be": "utf-8",
    "utf-32": "utf-8",
    "utf-32le": "utf-8",
    "utf-32be": "utf-8",
    "x-user-defined": "cp1252",
}
_REFUSED_CHARSETS = frozenset({"utf-7", "utf7", "utf-7-imap"})  # never honoured by browsers (XSS)

# The tag scan that measures nesting before parsing. Unterminated comments, scripts and tags
# run to the end of the text, so the scan stays linear on hostile input.
_TAG_SCAN = re.compile(
    r"<!--(?:.*?-->|.*)|<(script|style)\b(?:.*?</\1\s*>|.*)|<(/?)([A-Za-z][^\s/>]*)([^>]*)>?",
    re.IGNORECASE | re.DOTALL,
)
# XHTML's empty elements (<title/>, <a id="p3"/>), which an HTML parser takes as open ones: an
# empty <title/> or <script/> would swallow the rest of the page.
_EMPTY_ELEMENT = re.compile(r"<([A-Za-z][\w:.-]*)(\s[^<>]*?)?/>")
_XHTML_HINT = re.compile(r"\A\s*<\?xml|xmlns\s*=\s*[\"']http://www\.w3\.org/1999/xhtml", re.IGNORECASE)
# fmt: off
_VOID = frozenset({
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr",
    "keygen", "frame", "basefont", "bgsound",
})
# Not nesting: elements without content, and elements the parser closes by itself.
_NO_NESTING = _VOID | frozenset({
    "p", "li", "dt", "dd", "tr", "td", "th", "option", "optgroup", "tbody", "thead", "tfoot", "colgroup", "caption",
    "rb", "rp", "rt", "rtc", "html", "head", "body",
})
# fmt: on


@dataclass
class HtmlText:
    """The text of a page: its <title>, and its blocks in order as (level, text): level 1-6 a
    heading, 0 a paragraph (a paragraph, list item, table row, preformatted block...)."""

    title: str = ""
    blocks: list[tuple[int, str]] = field(default_factory=list)

    def first_heading(self, level: int | None = None) -> str:
        for lvl, line in self.blocks:
            if lvl and (level is None or lvl == level):
                return line
        return ""


def matches(path: Path, head: bytes) -> bool:
    suffix = path.suffix.lower()
    if suffix in SUFFIXES:
        return text.looks_like_text(head)
    # A template or a component that starts like a page is code to search as it is (read as
    # HTML, its "<?php ...?>" or "{% block %}" logic would be dropped or mixed with the text).
    return suffix not in TEMPLATE_SUFFIXES and looks_like_html(head)


def looks_like_html(head: bytes) -> bool:
    """Whether a file's first bytes start an HTML document (``<!doctype html`` or ``<html``,
    after a BOM, white space, an XML declaration or comments)."""
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        probe = head[:2048].decode("utf-16", errors="ignore")
    else:
        probe = head[:4096].decode("utf-8", errors="ignore").lstrip("\ufeff")
    probe = probe.lstrip()
    for _ in range(8):  # a few leading comments or an XML declaration
        if probe.startswith("<?xml"):
            end = probe.find("?>")
        elif probe.startswith("<!--"):
            end = probe.find("-->")
        else:
            break
        if end < 0:
            return False
        probe = probe[end + 3 if probe.startswith("<!--") else end + 2 :].lstrip()
    lowered = probe[:20].lower()
    return lowered.startswith("<!doctype html") or (
        lowered.startswith("<html") and lowered[5:6] in (">", " ", "\n", "\t", "\r", "/", "")
    )


def decode_html(data: bytes) -> tuple[str, str]:
    """A page's text and the encoding used: a BOM, else the declared charset if it decodes the
    bytes, else :func:`decode_text`'s guess."""
    for bom, encoding in _BOM_ENCODINGS:
        if data.startswith(bom):
            return data[len(bom) :].decode(encoding, errors="replace"), encoding
    head = data[:8192]
    match = _XML_ENCODING.match(head) or _META_CHARSET.search(head)
    if match:
        name = match.group(1).decode("ascii").lower()
        name = _CHARSET_ALIASES.get(name, name)
        if name not in _REFUSED_CHARSETS:
            try:
                return data.decode(name), name
            except (LookupError, UnicodeDecodeError, ValueError):
                pass  # an unknown charset (or not a text encoding), or one the bytes belie
    return decode_text(data)


def check_nesting(markup: str) -> None:
    """Refuse markup nested so deep that building its tree would take minutes.

    Estimated from the tags alone: a start tag opens an element unless it is void or one the
    parser closes by itself (``<p>``, ``<li>``, cells...); ``/>`` closes it only inside SVG or
    MathML, as in the parser (``<div/>`` is an open ``<div>``).
    """
    if markup.count("<") <= MAX_NESTING:
        return  # so few tags cannot nest deeper, nor sum to more work than MAX_NESTING^2 / 2
    depth = 0
    work = 0
    foreign = -1  # the depth at which an <svg> or <math> was opened, -1 outside
    for _, slash, tag, rest in _TAG_SCAN.findall(markup):
        if not tag:
            continue  # a comment, script or style
        name = tag.lower()
        if slash:
            if name not in _NO_NESTING:
                depth = max(depth - 1, 0)
                if foreign >= depth:
                    foreign = -1
            continue
        work += depth
        if name in _NO_NESTING or (foreign >= 0 and rest.endswith("/")):
            if work > MAX_PARSE_WORK:
                break
            continue
        if name in ("svg", "math") and foreign < 0:
            foreign = depth
        depth += 1
        if depth > MAX_NESTING or work > MAX_PARSE_WORK:
            break
    if depth > MAX_NESTING or work > MAX_PARSE_WORK:
        raise ExtractError("HTML nests its elements too deep to parse (hostile markup?): refused")


def parse_html(markup: str) -> Any:
    """The page's tree (a selectolax LexborHTMLParser), after the nesting check."""
    from selectolax.lexbor import LexborHTMLParser

    check_nesting(markup)
    try:
        return LexborHTMLParser(markup)
    except Exception as exc:  # noqa: BLE001 - the parser's errors are not a documented set
        raise ExtractError(f"broken HTML ({type(exc).__name__}: {exc})"[:200]) from None


def is_xhtml(markup: str) -> bool:
    """Whether a page is XHTML by its start: an XML declaration or the XHTML namespace."""
    return bool(_XHTML_HINT.search(markup[:4096].lstrip("\ufeff")))


def _close_empty_elements(markup: str) -> str:
    def close(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.lower() in _VOID:
            return match.group(0)
        return f"<{name}{match.group(2) or ''}></{name}>"

    return _EMPTY_ELEMENT.sub(close, markup)


def extract_html(markup: str, *, xhtml: bool | None = None) -> HtmlText:
    """The title and the main text's blocks of a page (see the module docstring). *xhtml*: read
    ``<x/>`` as an empty element, as XML does (None: when the page looks like XHTML)."""
    if xhtml or (xhtml is None and is_xhtml(markup)):
        markup = _close_empty_elements(markup)
    tree = parse_html(markup)
    page = HtmlText(title=_title(tree))
    body = tree.body
    if body is None:
        return page
    root = _main_element(tree) or body
    page.blocks = _walk(root)
    if not page.blocks and root is not body:
        page.blocks = _walk(body)  # a <main> that is empty while the text is elsewhere
    return page


def _title(tree: Any) -> str:
    head = tree.head
    node = head.css_first("title") if head is not None else None
    if node is None:
        return ""
    return " ".join(node.text(deep=True).split())[:MAX_TITLE_CHARS]


def _main_element(tree: Any) -> Any:
    for node in tree.css("main"):
        if not _hidden(node):
            return node
    articles = [node for node in tree.css("article") if not _hidden(node)]
    if len(articles) == 1:
        return articles[0]
    for node in tree.css('[role="main" i]'):
        if not _hidden(node):
            return node
    return None


def _hidden(node: Any) -> bool:
    attrs = node.attributes
    if not attrs:
        return False
    if "hidden" in attrs or (attrs.get("aria-hidden") or "").strip().lower() == "true":
        return True
    # Inline display:none is left alone: it mostly hides what a click reveals (answers, tabs).
    return (attrs.get("role") or "").strip().lower() in _JUNK_ROLES


_TOC_TAGS = frozenset({"div", "section", "ul", "ol"})
_TOC_NAME = re.compile(r"(?i)(^|[\s_-])(toc|table[-_]of[-_]contents|page[-_]?toc)($|[\s_-])")


def _table_of_contents(node: Any) -> bool:
    """Whether an element is the page's table of contents: named so (id, class, role), or a list
    of links to the page's own anchors."""
    attrs = node.attributes
    if attrs.get("role") == "doc-toc":
        return True
    if any(_TOC_NAME.search(attrs.get(name) or "") for name in ("id", "class")):
        return True
    if node.tag not in ("ul", "ol"):
        return False
    links = node.css("a")
    inside = sum(1 for a in links if (a.attributes.get("href") or "").startswith("#"))
    return len(links) >= 3 and inside >= 0.8 * len(links) and _link_dense(node)


def _link_dense(node: Any) -> bool:
    """Whether an element's text is mostly link text (a menu or a list of related pages)."""
    total = len("".join(node.text(deep=True).split()))
    if total == 0:
        return True
    links = sum(len("".join(a.text(deep=True).split())) for a in node.css("a"))
    return links > total * _LINK_DENSE


def _breadcrumb(node: Any) -> bool:
    """Whether a heading is only links to other pages, two or more (a trail such as "Book > Part")."""
    links = node.css("a")
    if len(links) < 2 or any((a.attributes.get("href") or "").startswith("#") for a in links):
        return False
    total = len("".join(node.text(deep=True).split()))
    return sum(len("".join(a.text(deep=True).split())) for a in links) >= total


def _inline_text(pieces: list[str | None]) -> str:
    """Inline text pieces (None: a line break) as lines with white space collapsed."""
    lines: list[str] = []
    current: list[str] = []
    for piece in [*pieces, None]:
        if piece is None:
            line = " ".join("".join(current).split())
            if line:
                lines.append(line)
            current = []
        else:
            current.append(piece)
    return "\n".join(lines)


def _heading_text(node: Any) -> str:
    # Parts of a heading are words of their own ("<small>2.1</small>Scanning", "Title<br>Subtitle").
    title = " ".join(node.text(deep=True, separator=" ").split())
    return _HEADING_MARKS.sub("", title)


_EXIT = object()


def _walk(root: Any) -> list[tuple[int, str]]:
    """The blocks under *root* in document order, by an explicit stack (no recursion)."""
    blocks: list[tuple[int, str]] = []
    pending: list[str | None] = []
    rows: list[list[Any]] = []  # open table rows: [first block index, still one block per cell]
    cells: list[int] = []  # open cells: the first block index
    sectioning = 1 if root.tag in _SECTIONING else 0
    in_aside = 0

    def flush() -> None:
        if pending:
            line = _inline_text(pending)
            pending.clear()
            if line:
                blocks.append((0, line))

    stack: list[tuple[Any, object | None]] = [(root, None)]
    while stack:
        node, mark = stack.pop()
        if mark is _EXIT:
            tag = node.tag
            flush()
            if tag in _SECTIONING:
                sectioning -= 1
            if tag == "aside":
                in_aside -= 1
            if tag in _CELLS and cells:
                start = cells.pop()
                if rows and (len(blocks) - start > 1 or any(level for level, _ in blocks[start:])):
                    rows[-1][1] = False
            elif tag == "tr" and rows:
                start, simple = rows.pop()
                if simple and len(blocks) - start > 1:
                    merged = " | ".join(line.replace("\n", " ") for _, line in blocks[start:])
                    del blocks[start:]
                    blocks.append((0, merged))
            continue
        if node.is_text_node:
            content = node.text_content
            if content:
                pending.append(content)
            continue
        if not node.is_element_node:
            continue  # comments, doctypes
        tag = node.tag
        if tag in _SKIP or _hidden(node):
            continue
        if tag == "header" and sectioning == 0:
            continue  # the site's banner (a section's header keeps its title)
        if tag == "aside" and in_aside == 0 and _link_dense(node):
            continue  # a sidebar of links (an aside of prose is a side note: kept)
        if tag in _TOC_TAGS and _table_of_contents(node):
            continue  # the page's own table of contents: its headings come again with their text
        if tag == "br":
            pending.append(None)
            continue
        level = _HEADINGS.get(tag)
        if level:
            flush()
            title = _heading_text(node)
            if title and not _breadcrumb(node):
                blocks.append((level, title))
            continue
        if tag == "pre":
            flush()
            body = node.text(deep=True).replace("\r\n", "\n").strip("\n")
            if body.strip():
                blocks.append((0, body))
            continue
        if tag in _BLOCKS or tag in _CELLS or tag == "tr":
            flush()
            stack.append((node, _EXIT))
            if tag in _SECTIONING:
                sectioning += 1
            if tag == "aside":
                in_aside += 1
            if tag == "tr":
                rows.append([len(blocks), True])
            elif tag in _CELLS:
                cells.append(len(blocks))
        children = list(node.iter(include_text=True))
        stack.extend((child, None) for child in reversed(children))
    flush()
    return blocks


def add_blocks(builder: DocumentBuilder, blocks: list[tuple[int, str]], *, part_per_heading: bool) -> None:
    """Write blocks into *builder*: headings as heading lines, the rest as paragraphs. With
    *part_per_heading*, each heading begins a part (and the text before the first heading one)."""
    parts = part_per_heading and any(level for level, _ in blocks)
    for i, (level, line) in enumerate(blocks):
        if parts and (level or i == 0):
            builder.start_part()
        if level:
            builder.heading(line, level)
        else:
            builder.block(line)


def read_html(path: Path, data: bytes, options: ReadOptions = DEFAULT_READ_OPTIONS) -> Document:
    """A page's main text, a part per section (see the module docstring)."""
    markup, encoding = decode_html(data)
    page = extract_html(markup)
    builder = DocumentBuilder()
    add_blocks(builder, page.blocks, part_per_heading=True)
    doc = builder.document(
        KIND, page.title or page.first_heading(1) or file_stem(path), part_kind="section", split_parts=False
    )
    doc.encoding = encoding
    # Parts that stay empty at the end start past the text; they start at its end instead.
    doc.part_starts = [min(start, len(doc.text)) for start in doc.part_starts]
    return doc


# Version 2: templates that start like a page (.php, .vue, .jinja, ...) are left to the text reader.
READER = Reader(KIND, matches, read_html, no_text="HTML page has no text", version=2, part_kind="section")
