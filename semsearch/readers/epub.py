"""EPUB books: the spine's documents in reading order, a part (section) per document, headings kept.

A reader of its own (ebooklib is AGPL): the zip is opened through :func:`safety.open_archive`,
``META-INF/container.xml`` names the package document (OPF), whose manifest and spine give the
content documents in order. Each is read as HTML (:func:`semsearch.readers.html.extract_html`,
selectolax: entities are never expanded, and a document declaring any is refused). A document
that does not begin with a heading gets one, so every chunk has its context: the table of
contents' title for the document, else the heading it continues (an e-book converter's split of a
long chapter). Names are only ever looked up in the zip, so an href cannot reach outside it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from semsearch.errors import ExtractError
from semsearch.readers.base import DEFAULT_READ_OPTIONS, Reader, ReadOptions
from semsearch.readers.document import Document, DocumentBuilder, file_stem, one_line
from semsearch.readers.html import add_blocks, decode_html, extract_html, parse_html
from semsearch.readers.safety import member_path, open_archive, parse_xml, read_member, zip_has

KIND = "epub"
WHAT = "EPUB"
SUFFIXES = frozenset({".epub"})
MAX_SPINE_ITEMS = 5000
MAX_CONTENT_BYTES = 256 * 1024 * 1024  # all content documents together, as read
MAX_TITLE_CHARS = 300
_CONTENT_TYPES = frozenset({"application/xhtml+xml", "text/html", "application/html", "text/x-oeb1-document"})
_DC = "{http://purl.org/dc/elements/1.1/}"
# Font obfuscation, which leaves the text readable; any other encryption is DRM.
_FONT_OBFUSCATION = frozenset({"http://www.idpf.org/2008/embedding", "http://ns.adobe.com/pdf/enc#RC"})


def matches(path: Path, head: bytes) -> bool:
    return zip_has(head, b"mimetypeapplication/epub+zip") or path.suffix.lower() in SUFFIXES


class _Archive:
    """Members by name, with a case-insensitive fallback (books made on Windows get case wrong)."""

    def __init__(self, archive: zipfile.ZipFile) -> None:
        self.zip = archive
        self.names = set(archive.namelist())
        self.folded = {name.lower(): name for name in self.names}

    def find(self, name: str) -> str | None:
        if name in self.names:
            return name
        return self.folded.get(name.lower())

    def read(self, name: str) -> bytes:
        return read_member(self.zip, name, WHAT)


def _text(node: Any) -> str:
    return " ".join("".join(node.itertext()).split()) if node is not None else ""


def _package_path(archive: _Archive) -> str:
    """The package document's name, from the container (else the only .opf in the zip)."""
    container_name = archive.find("META-INF/container.xml")
    if container_name:
        container = parse_xml(archive.read(container_name), "EPUB container")
        paths = [
            (node.get("media-type") == "application/oebps-package+xml", node.get("full-path") or "")
            for node in container.iter("{*}rootfile")
        ]
        for _, full_path in sorted(paths, key=lambda p: not p[0]):
            found = archive.find(member_path("", full_path)) if full_path else None
            if found:
                return found
    opfs = sorted(name for name in archive.names if name.lower().endswith(".opf"))
    if not opfs:
        raise ExtractError("broken EPUB (no package document)")
    return opfs[0]


def _toc_titles(archive: _Archive, manifest: dict[str, tuple[str, str, str]], toc_id: str) -> dict[str, str]:
    """Titles the table of contents gives whole content documents (entries without a #fragment:
    one with a fragment may point into the middle of a document)."""
    titles: dict[str, str] = {}

    def add(base: str, href: str | None, title: str) -> None:
        if href and "#" not in href and title:
            titles.setdefault(member_path(base, href), title[:MAX_TITLE_CHARS])

    for item_id, (href, media_type, properties) in manifest.items():
        name = archive.find(href)
        if name is None:
            continue
        if "nav" in properties.split():
            tree = parse_html(decode_html(archive.read(name))[0])
            navs = tree.css("nav")
            tocs = [n for n in navs if "toc" in (n.attributes.get("epub:type") or "").split()] or navs[:1]
            for nav in tocs:
                for a in nav.css("a"):
                    add(name, a.attributes.get("href"), " ".join(a.text(deep=True).split()))
        elif item_id == toc_id or media_type == "application/x-dtbncx+xml":
            ncx = parse_xml(archive.read(name), "EPUB table of contents (NCX)")
            for point in ncx.iter("{*}navPoint"):
                label = point.find("{*}navLabel")
                content = point.find("{*}content")
                if content is not None:
                    add(name, content.get("src"), _text(label))
    return titles


def _encrypted(archive: _Archive) -> set[str]:
    """Members encrypted for DRM (listed in META-INF/encryption.xml, font obfuscation aside)."""
    name = archive.find("META-INF/encryption.xml")
    if not name:
        return set()
    out = set()
    for data in parse_xml(archive.read(name), "EPUB encryption list").iter("{*}EncryptedData"):
        method = data.find("{*}EncryptionMethod")
        if method is not None and method.get("Algorithm") in _FONT_OBFUSCATION:
            continue
        for ref in data.iter("{*}CipherReference"):
            if ref.get("URI"):
                out.add(member_path("", ref.get("URI")))
    return out


def read_epub(path: Path, data: bytes, options: ReadOptions = DEFAULT_READ_OPTIONS) -> Document:
    """A book's text, a part per content document of the spine (see the module docstring)."""
    archive = _Archive(open_archive(data, WHAT))
    try:
        return _read(path, archive)
    except ExtractError:
        raise
    except (KeyError, ValueError, TypeError, AttributeError, IndexError, OSError, EOFError, RecursionError) as exc:
        raise ExtractError(f"broken EPUB ({type(exc).__name__}: {one_line(exc)})") from None
    finally:
        archive.zip.close()


def _read(path: Path, archive: _Archive) -> Document:
    opf_name = _package_path(archive)
    opf = parse_xml(archive.read(opf_name), "EPUB package (OPF)")
    title = next((t for t in (_text(node) for node in opf.iter(f"{_DC}title")) if t), "")[:MAX_TITLE_CHARS]
    manifest: dict[str, tuple[str, str, str]] = {}
    for item in opf.iter("{*}item"):
        item_id, href = item.get("id"), item.get("href")
        if item_id and href:
            manifest.setdefault(
                item_id, (member_path(opf_name, href), item.get("media-type") or "", item.get("properties") or "")
            )
    spine = opf.find("{*}spine")
    itemrefs = [ref.get("idref") or "" for ref in opf.iter("{*}itemref")]
    if len(itemrefs) > MAX_SPINE_ITEMS:
        raise ExtractError(f"EPUB spine lists {len(itemrefs)} documents (over {MAX_SPINE_ITEMS}): refused")
    notes: list[str] = []
    try:
        titles = _toc_titles(archive, manifest, (spine.get("toc") or "") if spine is not None else "")
    except ExtractError as exc:
        titles = {}
        notes.append(f"table of contents passed over ({exc})")
    encrypted = _encrypted(archive)
    builder = DocumentBuilder()
    seen: set[str] = set()
    missing = 0
    read_bytes = 0
    last_heading: tuple[int, str] | None = None
    for idref in itemrefs:
        entry = manifest.get(idref)
        if entry is None:
            missing += 1
            continue
        href, media_type, properties = entry
        name = archive.find(href)
        if name is None:
            missing += 1
            continue
        if media_type.lower() not in _CONTENT_TYPES or "nav" in properties.split() or name in seen:
            continue  # pictures, the table of contents, a document listed twice
        seen.add(name)
        if name in encrypted:
            raise ExtractError("encrypted EPUB (DRM-protected content)")
        raw = archive.read(name)
        read_bytes += len(raw)
        if read_bytes > MAX_CONTENT_BYTES:
            raise ExtractError(f"EPUB content is over {MAX_CONTENT_BYTES >> 20} MB (zip bomb?): refused")
        if b"<!ENTITY" in raw:
            raise ExtractError(f"EPUB document {name[:80]} declares XML entities (entity expansion attack?): refused")
        xhtml = media_type.lower() != "text/html"  # XML's <title/> and <a id="p3"/> are empty elements
        blocks = extract_html(decode_html(raw)[0], xhtml=xhtml).blocks
        if not blocks:
            continue
        builder.start_part()
        if blocks[0][0] == 0:
            toc_title = titles.get(name) or titles.get(href)
            opening = (1, toc_title) if toc_title else last_heading
            if opening is not None:
                builder.heading(opening[1], opening[0])
                last_heading = opening
        add_blocks(builder, blocks, part_per_heading=False)
        last_heading = next(((level, line) for level, line in reversed(blocks) if level), last_heading)
    if missing:
        notes.append(f"{missing} spine entries name no document in the archive")
    doc = builder.document(KIND, title or file_stem(path), part_kind="section", split_parts=True)
    doc.notes = notes
    # Parts that stay empty at the end start past the text; they start at its end instead.
    doc.part_starts = [min(start, len(doc.text)) for start in doc.part_starts]
    return doc


READER = Reader(KIND, matches, read_epub, no_text="EPUB has no text", part_kind="section")
