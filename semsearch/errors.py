"""Exceptions the library raises, in Python's words, with structured fields.

``str(exc)`` is one line for a library caller. The fields say what the error is about: ``options``
(the Python names of the arguments at fault, each written ``{name}`` in the message), ``path``
(the file or folder), ``remedy`` (a code from :data:`REMEDIES`). The command line turns the same fields into its own words (flags instead of
argument names, commands instead of method calls): see ``semsearch.cli.messages``.
"""

from __future__ import annotations

from pathlib import Path

# What a remedy code says to a library caller; "{message}" stands for the error's own text.
REMEDIES = {
    "rebuild": "{message}; rebuild the index (Index.update(rebuild=True))",
    "repair": "{message}; Index.update() repairs it from the stored vectors (nothing is embedded again)",
    "upgrade_or_rebuild": "{message}; upgrade semsearch or rebuild the index (Index.update(rebuild=True))",
    "index_first": "{message} (create one with Index.create(...).update(paths) first)",
    "finish_build": "{message} (Index.update() there finishes it)",
    "use_fp32": "{message}; use precision='fp32'",
}


class SemsearchError(Exception):
    """Base class: the message is one line meant for the user.

    ``message`` writes each argument at fault as ``{name}`` (filled with the name itself here,
    with the matching flag by the CLI); every other brace is the message's own.
    """

    def __init__(
        self,
        message: str,
        *,
        options: tuple[str, ...] = (),
        path: Path | None = None,
        remedy: str | None = None,
    ) -> None:
        self.message = message
        self.options = options
        self.path = path
        self.remedy = remedy
        super().__init__(message)

    @property
    def option(self) -> str | None:
        """The (first) argument at fault, if any."""
        return self.options[0] if self.options else None

    def render(self, names: dict[str, str], remedies: dict[str, str]) -> str:
        """The message with each argument called as *names* says (default: its own name) and the
        remedy in *remedies*' words."""
        text = self.message
        for option in self.options:
            text = text.replace("{" + option + "}", names.get(option, option))
        if self.remedy is not None and self.remedy in remedies:
            text = remedies[self.remedy].replace("{message}", text)
        return text

    def __str__(self) -> str:
        return self.render({}, REMEDIES)


class IndexNotFoundError(SemsearchError):
    """No index folder where one was expected."""


class IndexCorruptError(SemsearchError):
    """A file in the index folder is damaged, truncated or foreign."""


class IndexVersionError(SemsearchError):
    """The index was written by a newer (or unknown) format version."""


class IndexOutdatedError(IndexVersionError):
    """The index was written by an older format version: an update rebuilds it."""


class IndexLockedError(SemsearchError):
    """Another process holds the index's write lock (``holder``: its pid; ``waited``: seconds waited)."""

    def __init__(self, message: str, *, path: Path, holder: str, waited: float) -> None:
        super().__init__(message, path=path)
        self.holder = holder
        self.waited = waited


class IndexExistsError(SemsearchError):
    """An index is already where a new one was asked for."""


class ModelError(SemsearchError):
    """The embedding model cannot be found, loaded or verified."""


class ExtractError(SemsearchError):
    """A file's text cannot be extracted (per-file: the run goes on)."""


class NoTextError(ExtractError):
    """A file reads fine but holds no text (a scanned PDF with OCR off): it is indexed as such,
    not kept at an earlier version as a damaged file is."""


class InvalidOptionError(SemsearchError, ValueError):
    """An argument's value is out of range or inconsistent with another's."""


class ModelOptionError(ModelError, InvalidOptionError):
    """A model argument (precision, device) that is out of range or cannot be met here."""
