"""What an index run is asked to do, what it reports while it runs, and what it did."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from semsearch import vectors
from semsearch.chunk import ChunkSettings
from semsearch.errors import InvalidOptionError
from semsearch.readers import OCR_MODES
from semsearch.store.layout import display_name
from semsearch.walk import WalkOptions


@dataclass
class Tuning:
    """How the pipeline batches its work (no effect on the result)."""

    group_chunks: int = 1024  # chunks embedded together: enough to sort by length, small in memory
    embed_slice: int = 256  # chunks per embedder call (the embedder sorts and batches inside it)
    commit_seconds: float = 5.0  # durable progress at least this often


# The tuning a run takes when its options name none (a test harness may set it, say, to commit
# after every group).
DEFAULT_TUNING = Tuning()


@dataclass(frozen=True)
class WalkChoices:
    """The walk settings asked for on this run; ``None``: as the index has them, else the default.

    An index remembers the settings it was last updated with, so a plain `semsearch index` keeps
    hidden files, followed links and the size limit the user chose before.
    """

    hidden: bool | None = None
    max_file_size: int | None = None
    follow_symlinks: bool | None = None
    ocr: str | None = None  # "off" | "auto" | "images"
    notebook_outputs: bool | None = None

    def resolve(self, stored: dict[str, Any]) -> WalkOptions:
        default = WalkOptions()

        def pick(name: str, kind: type) -> Any:
            asked = getattr(self, name)
            if asked is not None:
                return asked
            value = stored.get(name)
            # bool is an int: a stored size must be a real int, a stored flag a real bool
            ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
            return value if ok else getattr(default, name)

        ocr = self.ocr if self.ocr is not None else stored.get("ocr")
        return WalkOptions(
            hidden=pick("hidden", bool),
            max_file_size=pick("max_file_size", int),
            follow_symlinks=pick("follow_symlinks", bool),
            ocr=ocr if ocr in OCR_MODES else default.ocr,
            notebook_outputs=pick("notebook_outputs", bool),
        )

    def validate(self) -> None:
        if self.ocr is not None and self.ocr not in OCR_MODES:
            raise InvalidOptionError(
                f"{{ocr}} must be one of {', '.join(OCR_MODES)} (got {self.ocr})", options=("ocr",)
            )


@dataclass
class IndexOptions:
    """Everything `semsearch index` decides."""

    roots: Sequence[Path]
    index_dir: Path
    chunking: ChunkSettings = field(default_factory=ChunkSettings)
    vector_index: str = vectors.DEFAULT_BACKEND
    vector_params: dict[str, Any] | None = None  # None: the engine's defaults
    walk: WalkChoices = field(default_factory=WalkChoices)
    rebuild: bool = False
    lock_wait_seconds: float = 0.0
    tuning: Tuning = field(default_factory=lambda: replace(DEFAULT_TUNING))
    merge: bool = True  # False: a merge of the vector segments this run would begin is left due
    # A PostgreSQL index (postgresql://...; None: the one index_dir's pointer names, else the local
    # folder). index_dir is then the project's pointer folder (its OCR cache, the URL without a password).
    postgres: str | None = None
    # Reads, cuts and embeds the changed files elsewhere (indexing.pipeline.Executor: a Ray
    # cluster); None: here.
    executor: Any = None


@dataclass
class IndexEvent:
    """Progress reported to the caller (the library never prints)."""

    # "message" | "warning" | "skip" | "scan" | "plan" | "file" | "embed" | "graph" | "ocr" | "requests" | "cluster"
    kind: str
    text: str = ""
    done: int = 0
    total: int = 0
    path: Path | None = None  # the file or folder *text* is about (the caller chooses how to show it)

    @property
    def message(self) -> str:
        """*text*, after the path it is about when there is one (absolute, non-UTF-8 bytes escaped)."""
        return f"{display_name(self.path)}: {self.text}" if self.path is not None else self.text


@dataclass
class IndexSummary:
    """What an update did: files indexed, unchanged, removed and skipped (by reason), chunks
    added (of them reused), removed and in all, pages read by OCR, and where the time went."""

    indexed: int = 0  # files read and stored (new or changed)
    unchanged: int = 0  # files whose content had not changed
    removed: int = 0  # files gone from disk (or from the indexed folders), dropped
    skipped: Counter[str] = field(default_factory=Counter)  # files left out, by reason ("ignored", "too large", ...)
    no_text: int = 0  # files read that hold no text (a scanned PDF with OCR off)
    chunks_added: int = 0
    chunks_reused: int = 0  # of the chunks added: vectors taken from another copy of the same content
    chunks_removed: int = 0
    pages_ocr: int = 0  # pages and images read by OCR on this run
    pages_ocr_cached: int = 0  # of those: text taken from the OCR cache
    ocr_seconds: float = 0.0
    chunks_total: int = 0  # chunks in the index after the run
    tokens_embedded: int = 0  # the model's word-pieces embedded on this run
    seconds: float = 0.0  # the whole run
    embed_seconds: float = 0.0  # of which embedding
    graph_seconds: float = 0.0  # of which writing the vector index
    rebuild_reason: str = ""  # why the index was rebuilt ("" when it was not)
    index_dir: Path = Path()  # the index written
    merged: bool = False  # the vector segments were merged into a new base after the change
    merge_due: bool = False  # a merge is due and was left for later (IndexOptions.merge False)
    repaired: list[str] = field(default_factory=list)  # damaged vector files found, rebuilt from the database
