"""Default chunks never exceed the model's own limit (256 word-pieces for all-MiniLM-L6-v2)."""

from __future__ import annotations

import inspect
import json
import logging
import pathlib
from pathlib import Path

import pytest
from conftest import make_pdf

from semsearch.chunk import ChunkSettings, chunk_document
from semsearch.models.resolve import resolve_model
from semsearch.models.tokenizer import ModelTokenizer
from semsearch.readers import read_document
from semsearch.readers.pdf import read_pdf


def _mixed_corpus(tmp_path: Path) -> list:  # -> list[Document]
    from pydoc_data.topics import topics

    prose = "\n\n".join(topics[k] for k in sorted(topics))[:400_000]
    code = "\n\n".join(inspect.getsource(m) for m in (json.decoder, logging, pathlib))
    pdf_text = "".join(ch if ord(ch) < 256 else "?" for ch in prose[:30_000])
    pdf = make_pdf(tmp_path / "topics.pdf", [pdf_text[i:i + 3000] for i in range(0, len(pdf_text), 3000)])
    return [
        read_document(Path("topics.md"), prose.encode()),
        read_document(Path("modules.py"), code.encode()),
        read_pdf(pdf, pdf.read_bytes()),
    ]


def test_default_chunks_fit_the_bundled_model(tmp_path: Path) -> None:
    spec = resolve_model(None)
    counter = ModelTokenizer(spec.path)
    from tokenizers import Tokenizer

    independent = Tokenizer.from_file(str(spec.path / "tokenizer.json"))
    independent.no_truncation()
    independent.no_padding()
    total = over = with_context = 0
    for doc in _mixed_corpus(tmp_path):
        chunks = chunk_document(doc, ChunkSettings(), counter.count, 256)
        total += len(chunks)
        # What the model reads: the context line (title / heading path) and the chunk.
        over += sum(len(independent.encode(c.embedding_text()).ids) > 256 for c in chunks)
        with_context += sum(bool(c.context) for c in chunks)
    assert total > 500 and with_context > 100
    assert over == 0


@pytest.mark.model
def test_sentence_transformers_truncates_none_of_the_chunks(tmp_path: Path) -> None:
    """Same check with sentence-transformers' own tokenizer and max_seq_length."""
    import os

    os.environ["HF_HUB_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(resolve_model(None).path), device="cpu")
    counter = ModelTokenizer(resolve_model(None).path)
    for doc in _mixed_corpus(tmp_path):
        chunks = chunk_document(doc, ChunkSettings(), counter.count, model.max_seq_length)
        lengths = [len(model.tokenizer(c.embedding_text(), truncation=False)["input_ids"]) for c in chunks]
        assert max(lengths) <= model.max_seq_length
