"""The settings an index is built with, and which of them an update keeps from the index.

:class:`IndexSettings` is what a caller asks for (``None``: the index's own setting, else the
default); the functions here resolve it against the index's manifest into what a run uses: the
chunking, the vector engine and its parameters, the walk, and the model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semsearch.engines import is_postgres
from semsearch.errors import InvalidOptionError, SemsearchError

if TYPE_CHECKING:
    from semsearch.chunk import ChunkSettings
    from semsearch.indexing import IndexOptions, Tuning
    from semsearch.models import ModelProvider, RemoteSettings
    from semsearch.store import IndexManifest

__all__ = [
    "REMOTE_FIELDS", "IndexSettings", "checked_settings", "chunk_settings", "index_options", "remote_settings",
    "update_provider",
]  # fmt: skip


@dataclass(frozen=True)
class IndexSettings:
    """How an index is built. ``None``: the index's own setting, else the default."""

    model: str | None = None  # a model name or folder (None: the bundled model, as `semsearch index` without --model)
    chunk_tokens: int | None = None  # chunk size in cl100k tokens (default 128)
    overlap_tokens: int | None = None  # tokens shared by neighbouring chunks (default 32)
    context: bool | None = None  # embed each chunk with its title or heading path in front (default on)
    max_file_size: int | None = None  # bytes: larger files are skipped (default 20M)
    hidden: bool | None = None  # include hidden files and folders (default off)
    follow_symlinks: bool | None = None  # follow links that lead outside the given folders (default off)
    ocr: str | None = None  # "off" | "auto" (PDF pages without text) | "images" (and image files)
    notebook_outputs: bool | None = None  # index the text outputs of notebook cells
    precision: str = "auto"  # "fp32", "int8", "bf16", "fp16"; auto: the index's own, else the best for this machine
    device: str = "auto"  # "cpu", "cuda", "cuda:N", "mps"; auto picks a GPU when there is one
    vector_index: str | None = None  # the vector engine (None: the index's own, else hnsw)
    vector_params: Mapping[str, Any] | None = None  # the engine's parameters (None: its defaults)
    # A served model (model="openai:NAME"): its endpoint (None: the index's recorded one, else
    # OPENAI_BASE_URL, else OpenAI's), the variable holding its key (never stored), requests at
    # once, texts per request, and prompts (None: those its family is known to need).
    api_base: str | None = None
    api_key_env: str | None = None  # the variable that holds the key (default OPENAI_API_KEY)
    api_concurrency: int | None = None  # requests at once (default 4)
    api_batch: int | None = None  # texts per request (default 64)
    api_timeout: float | None = None  # seconds a request may take
    api_retries: int | None = None  # attempts after the first (429, 5xx, timeouts, lost connections)
    query_prompt: str | None = None  # put before each query
    document_prompt: str | None = None  # put before each chunk


REMOTE_FIELDS = (
    "api_base", "api_key_env", "api_concurrency", "api_batch", "api_timeout", "api_retries", "query_prompt", "document_prompt",
)  # fmt: skip


def remote_settings(s: IndexSettings) -> RemoteSettings:
    """What a served model's requests use, from *s* (the defaults where it names nothing)."""
    from semsearch.models import RemoteSettings

    base = RemoteSettings()
    return RemoteSettings(
        api_base=s.api_base,
        api_key_env=s.api_key_env or base.api_key_env,
        batch=s.api_batch or base.batch,
        concurrency=s.api_concurrency or base.concurrency,
        timeout=float(s.api_timeout) if s.api_timeout else base.timeout,
        retries=base.retries if s.api_retries is None else s.api_retries,
        query_prompt=s.query_prompt,
        document_prompt=s.document_prompt,
    )


def checked_settings(given: Mapping[str, Any]) -> IndexSettings:
    """The settings asked for, checked before any run uses them."""
    try:
        settings = IndexSettings(**given)
    except TypeError as exc:
        raise InvalidOptionError(str(exc).replace("IndexSettings.__init__()", "Index")) from None
    for name, least in (("api_concurrency", 1), ("api_batch", 1), ("api_retries", 0)):
        value = getattr(settings, name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
            raise InvalidOptionError(
                f"{{{name}}} must be a whole number, at least {least} (got {value!r})", options=(name,)
            )
    timeout = settings.api_timeout
    if timeout is not None and (not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0):
        raise InvalidOptionError(f"{{api_timeout}} must be a number of seconds above 0 (got {timeout!r})",
                                 options=("api_timeout",))  # fmt: skip
    size = settings.max_file_size
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
        raise InvalidOptionError(
            f"{{max_file_size}} must be a whole number of bytes, at least 1 (got {size!r})", options=("max_file_size",)
        )
    if settings.vector_index is not None:
        from semsearch import vectors

        try:
            vectors.backend(settings.vector_index)
        except SemsearchError:
            raise InvalidOptionError(
                f"{{vector_index}}: no vector engine called {settings.vector_index!r}", options=("vector_index",)
            ) from None
    return settings


def chunk_settings(existing: IndexManifest | None, settings: IndexSettings) -> ChunkSettings:
    """The settings given, else the index's own, else the defaults. A new chunk size alone keeps
    the index's overlap when it still fits (at most half a chunk), else takes a quarter chunk."""
    from semsearch.chunk import ChunkSettings

    base = ChunkSettings()
    if existing is not None:
        base = ChunkSettings(
            chunk_tokens=existing.chunking.chunk_tokens,
            overlap_tokens=existing.chunking.overlap_tokens,
            context=existing.chunking.context,
        )
    size = settings.chunk_tokens if settings.chunk_tokens is not None else base.chunk_tokens
    overlap = settings.overlap_tokens
    if overlap is None:
        overlap = base.overlap_tokens if base.overlap_tokens <= size // 2 else size // 4
    return ChunkSettings(
        chunk_tokens=size,
        overlap_tokens=overlap,
        context=base.context if settings.context is None else settings.context,
    )


def index_options(
    index_dir: Path, url: str | None, roots: list[Path], existing: IndexManifest | None, s: IndexSettings, *,
    rebuild: bool, wait: float, tuning: Tuning | None, merge: bool = True, executor: Any = None,
) -> IndexOptions:  # fmt: skip
    """What an update of the index at *index_dir* (or *url*) runs with: *s*, else the index's own
    settings (*existing*), else the defaults."""
    from semsearch import vectors
    from semsearch.indexing import DEFAULT_TUNING, IndexOptions, WalkChoices

    engine = s.vector_index or (existing.vector_index if existing else vectors.DEFAULT_BACKEND)
    params = s.vector_params
    if params is None and existing is not None and existing.vector_index == engine:
        params = existing.vector_params
    if is_postgres(index_dir, url) and s.vector_index is None:
        engine = "pgvector"
        params = s.vector_params if s.vector_params is not None else (
            existing.vector_params if existing is not None and existing.vector_index == engine else None
        )  # fmt: skip
    return IndexOptions(
        roots=roots,
        index_dir=index_dir,
        postgres=url,
        chunking=chunk_settings(existing, s),
        vector_index=engine,
        vector_params=dict(params) if params is not None else None,
        walk=WalkChoices(
            hidden=s.hidden,
            follow_symlinks=s.follow_symlinks,
            max_file_size=s.max_file_size,
            ocr=s.ocr,
            notebook_outputs=s.notebook_outputs,
        ),
        rebuild=rebuild,
        lock_wait_seconds=wait,
        tuning=tuning or DEFAULT_TUNING,
        merge=merge,
        executor=executor,
    )


def update_provider(
    existing: IndexManifest | None,
    settings: IndexSettings,
    cached: ModelProvider | None,
    on_note: Callable[[str], None],
) -> ModelProvider:
    """The model an update embeds with: *cached* (the one an earlier update of the same object
    loaded) when it is still the one the index wants, else the one *settings* name."""
    from semsearch.models import ModelOptions, model_provider

    known = existing.model if existing else None
    # Later updates of one Index (index --watch) keep the model loaded by the first, while it
    # embeds as the index wants: the same model, in the index's precision unless another is
    # asked for (another run may have rebuilt the index in another precision meanwhile).
    if cached is not None and known is not None:
        info = cached.info()
        wanted = known.precision if settings.precision == "auto" else settings.precision
        if info.fingerprint == known.fingerprint and info.precision == wanted:
            return cached
    # No model asked for: the index's own (a plain `semsearch index` never rebuilds an index
    # with another model); the bundled one for a new index.
    name = settings.model if settings.model is not None else (known.name if known is not None else None)
    options = ModelOptions(
        device=settings.device, precision=settings.precision, known=known, on_note=on_note,
        remote=remote_settings(settings),
    )  # fmt: skip
    return model_provider(name, options)
