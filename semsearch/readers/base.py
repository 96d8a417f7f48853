"""The reader protocol: what one kind of document module gives the registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from semsearch.readers.document import Document


@dataclass(frozen=True)
class Reader:
    """One kind of document: how to recognise it and how to read it.

    ``matches(path, head)`` sees the file's name and its first bytes (the walker's sniff): content
    first where the format has a signature, the name where it has none. ``read(path, data)``
    returns the text with its locations, or raises :class:`semsearch.errors.ExtractError` for a
    file that is broken, encrypted or hostile (the run goes on).
    """

    kind: str
    matches: Callable[[Path, bytes], bool]
    read: Callable[[Path, bytes], Document]
    no_text: str = "no text"  # the warning for a file that yields no text
