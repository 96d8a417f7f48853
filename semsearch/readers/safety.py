"""Guards for documents that are archives of XML (docx, pptx, odt, epub): zip bombs, hostile names, XML entities.

No parsing library checks how much a zip member inflates to, and XML parsers resolve entities
unless told not to. Every archive reader opens its bytes through :func:`open_archive` (which
refuses the archive before a byte is inflated) and parses XML through :func:`parse_xml`.
"""

from __future__ import annotations

import io
import posixpath
import zipfile
import zlib
from typing import TYPE_CHECKING, Any

from semsearch.errors import ExtractError
from semsearch.readers.document import one_line

if TYPE_CHECKING:
    from lxml import etree

# Real documents: the 3 real .docx in the shared data unpack to under 2 MB; a 500-page book
# with pictures to a few hundred MB. Past these limits an archive is refused as a bomb.
MAX_UNPACKED_BYTES = 512 * 1024 * 1024
MAX_MEMBER_RATIO = 200  # XML compresses 5-20x; a bomb's members inflate thousands of times
RATIO_CHECKED_ABOVE = 1024 * 1024  # small members may compress far better than that
# Pictures and other media are never parsed, and a blank bitmap compresses a thousand times (a
# real 18 MB BMP in a Word file did): their ratio counts only when they are this large.
MEDIA_RATIO_CHECKED_ABOVE = 64 * 1024 * 1024
_PARSED_SUFFIXES = (".xml", ".rels", ".xhtml", ".html", ".htm", ".opf", ".ncx", ".txt", ".css", ".vml")
MAX_MEMBERS = 20_000
MAX_XML_BYTES = 64 * 1024 * 1024  # one XML part read for its text
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # encrypted OOXML and the old binary Office formats


def open_archive(data: bytes, what: str) -> zipfile.ZipFile:
    """Open a document's zip after checking every member's declared size, ratio, name and flags.

    zipfile stops inflating a member at its declared size, so the declared sizes bound what any
    later read can produce. Raises :class:`ExtractError` naming the problem.
    """
    if data.startswith(OLE_MAGIC):
        raise ExtractError(f"encrypted {what} (password protected), or the old binary Office format")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, NotImplementedError) as exc:
        raise ExtractError(f"broken {what} (not a readable zip archive: {exc})") from None
    if len(members) > MAX_MEMBERS:
        raise ExtractError(f"{what} holds {len(members)} archive members (over {MAX_MEMBERS}): refused")
    total = 0
    for info in members:
        name = info.filename
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":"):
            raise ExtractError(f"{what} has an archive member named {name[:80]!r} (outside the archive): refused")
        if info.flag_bits & 0x1:
            raise ExtractError(f"encrypted {what} (its archive members are encrypted)")
        total += info.file_size
        if total > MAX_UNPACKED_BYTES:
            raise ExtractError(f"{what} unpacks to over {MAX_UNPACKED_BYTES >> 20} MB (zip bomb?): refused")
        checked_above = RATIO_CHECKED_ABOVE if name.lower().endswith(_PARSED_SUFFIXES) else MEDIA_RATIO_CHECKED_ABOVE
        if info.file_size > checked_above and info.file_size > MAX_MEMBER_RATIO * max(info.compress_size, 1):
            raise ExtractError(
                f"{what} has a member that inflates {info.file_size // max(info.compress_size, 1)} times "
                f"({name[:80]}: zip bomb?): refused"
            )
    return archive


def read_member(archive: zipfile.ZipFile, name: str, what: str, limit: int = MAX_XML_BYTES) -> bytes:
    """One member's bytes (at most *limit*); a missing or damaged member raises ExtractError."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise ExtractError(f"broken {what} (no {name} in the archive)") from None
    if info.file_size > limit:
        raise ExtractError(f"{what}: {name} is {info.file_size >> 20} MB of XML (over {limit >> 20} MB): refused")
    try:
        return archive.read(info)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError) as exc:
        raise ExtractError(f"broken {what} ({name}: {exc})") from None
    except Exception as exc:  # noqa: BLE001 - zlib.error and friends from a damaged stream
        raise ExtractError(f"broken {what} ({name}: {type(exc).__name__}: {exc})") from None


def member_path(base: str, href: str) -> str:
    """A member name referred to from member *base* (relative, URL-quoted, maybe with a #fragment)."""
    from urllib.parse import unquote

    href = unquote(href.split("#", 1)[0])
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(base), href))
    return joined.lstrip("/")


def xml_parser() -> etree.XMLParser:
    """An lxml parser that never resolves entities, loads a DTD or touches the network."""
    from lxml import etree

    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False, huge_tree=False, recover=False
    )


def parse_xml(data: bytes, what: str) -> Any:
    """Parse XML safely (see :func:`xml_parser`); damaged XML raises ExtractError."""
    from lxml import etree

    if b"<!ENTITY" in data[:65536]:
        # Entity declarations have no business in a document's XML: a billion-laughs or an
        # external-entity attack. Refused outright rather than parsed with entities left unexpanded.
        raise ExtractError(f"{what} declares XML entities (entity expansion attack?): refused")
    try:
        return etree.fromstring(data, xml_parser())
    except etree.XMLSyntaxError as exc:
        raise ExtractError(f"broken {what} (XML: {exc})") from None
    except ValueError as exc:
        raise ExtractError(f"broken {what} (XML: {exc})") from None


def zip_has(head: bytes, *names: bytes) -> bool:
    """Whether a zip's first bytes (the sniff) name any of *names* (a local header's file name)."""
    return head.startswith(b"PK\x03\x04") and any(n in head for n in names)


_XML_SUFFIXES = (".xml", ".rels", ".vml")
_ENTITY_MARKS = (b"<!ENTITY", "<!ENTITY".encode("utf-16-le"), "<!ENTITY".encode("utf-16-be"))


def zip_member_under(head: bytes, folder: bytes) -> bool:
    """Whether a zip's first bytes hold a local header of a member in *folder* ("word/"): the
    name itself, not a substring of another name (a .jar's "org/example/keyword/")."""
    if not zip_has(head, folder):
        return False
    at = head.find(b"PK\x03\x04")
    while at >= 0 and at + 30 <= len(head):
        length = int.from_bytes(head[at + 26 : at + 28], "little")
        if head[at + 30 : at + 30 + length].startswith(folder):
            return True
        at = head.find(b"PK\x03\x04", at + 4)
    return False


def refuse_xml_entities(archive: zipfile.ZipFile, what: str) -> None:
    """Refuse an archive any of whose XML members declares entities (in its first 64 KB).

    For the parsing libraries that parse the members themselves (python-docx, python-pptx):
    their lxml parser leaves entities unexpanded, and this names the attack instead.
    """
    for info in archive.infolist():
        if info.is_dir() or not info.filename.lower().endswith(_XML_SUFFIXES):
            continue
        try:
            with archive.open(info) as member:
                head = member.read(65536)
        except (
            zipfile.BadZipFile,
            OSError,
            EOFError,
            ValueError,
            NotImplementedError,
            RuntimeError,
            zlib.error,
        ) as exc:
            raise ExtractError(f"broken {what} ({info.filename[:80]}: {one_line(exc)})") from None
        if any(mark in head for mark in _ENTITY_MARKS):
            raise ExtractError(
                f"{what} declares XML entities ({info.filename[:80]}: entity expansion attack?): refused"
            )
