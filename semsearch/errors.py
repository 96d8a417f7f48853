"""Exceptions the library raises; the CLI maps each to a one-line message and exit code 2."""


class SemsearchError(Exception):
    """Base class: the message is one line meant for the user."""


class IndexNotFoundError(SemsearchError):
    """No index folder where one was expected."""


class IndexCorruptError(SemsearchError):
    """A file in the index folder is damaged, truncated or foreign."""


class IndexVersionError(SemsearchError):
    """The index was written by a newer (or unknown) format version."""


class IndexOutdatedError(IndexVersionError):
    """The index was written by an older format version: `semsearch index` rebuilds it."""


class IndexLockedError(SemsearchError):
    """Another process holds the index's write lock."""


class ModelError(SemsearchError):
    """The embedding model cannot be found, loaded or verified."""


class ExtractError(SemsearchError):
    """A file's text cannot be extracted (per-file: the run goes on)."""


class InvalidOptionError(SemsearchError):
    """An option value is out of range or inconsistent."""
