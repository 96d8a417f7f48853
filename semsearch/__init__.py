"""semsearch: semantic search over local files, offline, fast and scriptable."""

__version__ = "0.1.0"
