"""The seams: a second vector engine and a new file reader are each one module plus a registration.

The exact engine (tests/exact_backend.py) passes the same store tests as hnswlib; a made-up
".recipe" format is indexed through one ``register_reader`` call; searches on one shared Index
from several threads give the serial results. All with the fake model (no real model, fast).
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import FakeModel, write
from exact_backend import BACKEND as EXACT
from exact_backend import ExactBackend
from typer.testing import CliRunner

from semsearch import readers, vectors
from semsearch.api import Index
from semsearch.errors import ExtractError, IndexCorruptError
from semsearch.readers import Document, Reader, register_reader, unregister_reader
from semsearch.search import Hit
from semsearch.store import IndexReader
from semsearch.vectors import Subset, register_backend, unregister_backend

ENGINES = ("hnsw", "exact")
CHUNKING: dict[str, Any] = {"chunk_tokens": 32, "overlap_tokens": 4}

# One topic per file: a query made of a topic's words finds that file first (bag-of-words embedder).
_TOPIC_WORDS = {
    "rivers": "river delta estuary sediment floodplain meander tributary current",
    "violin": "violin bow rosin fingerboard vibrato string bridge scroll",
    "engines": "piston crankshaft cylinder camshaft ignition torque gasket valve",
    "bread": "dough yeast flour knead crust proofing oven loaf",
    "astronomy": "telescope nebula galaxy orbit comet parallax quasar eclipse",
    "gardening": "compost seedling mulch pruning trellis soil harvest perennial",
    "chess": "gambit castling checkmate bishop rook pawn endgame opening",
    "sailing": "mainsail jib tack halyard keel rudder windward mooring",
    "coffee": "espresso crema grinder roast arabica barista portafilter brew",
    "glaciers": "glacier moraine crevasse icefield calving firn cirque thaw",
    "beekeeping": "hive honeycomb queen drone nectar pollen apiary swarm",
    "typography": "serif kerning ligature typeface baseline leading glyph font",
}
TOPICS: dict[str, list[str]] = {topic: words.split() for topic, words in _TOPIC_WORDS.items()}
QUERIES = {topic: " ".join(words[:4]) for topic, words in TOPICS.items()}
TIDES = ["tide", "lunar", "spring", "neap", "ebb", "flood", "surge", "shoreline"]  # the topic an update adds


def topic_text(topic: str, salt: int = 0, words: list[str] | None = None) -> str:
    """Several sentences of a topic's words (some shared filler), long enough for a few chunks."""
    rng = random.Random(f"{topic}-{salt}")
    words = words or TOPICS[topic]
    sentences = []
    for n in range(6):
        picked = rng.sample(words, 5)
        sentences.append(f"Note {n} on {topic}: the {picked[0]} and the {picked[1]} meet the {picked[2]}, "
                         f"then {picked[3]} with {picked[4]}.")
    return "\n".join(sentences) + "\n"


def make_corpus(root: Path, topics: list[str] | None = None) -> Path:
    for topic in topics or list(TOPICS):
        write(root / f"{topic}.txt", topic_text(topic))
    return root


@pytest.fixture
def exact_engine() -> Iterator[ExactBackend]:
    """The exact engine registered (as a plugin would), unregistered afterwards."""
    register_backend(EXACT)
    yield EXACT
    unregister_backend(EXACT.name)


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, exact_engine: ExactBackend) -> str:
    return str(request.param)


class SpyBackend:
    """Wraps an engine to record which protocol calls the store made (create: a full build of
    the vector index; open with extra_capacity: an incremental update)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.created = 0
        self.opened_for_update = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def create(self, *args: Any, **kwargs: Any) -> Any:
        self.created += 1
        return self._inner.create(*args, **kwargs)

    def open(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("extra_capacity") is not None:
            self.opened_for_update += 1
        return self._inner.open(*args, **kwargs)


@pytest.fixture
def spy(exact_engine: ExactBackend) -> Iterator[Callable[[str], SpyBackend]]:
    """Installs a SpyBackend under an engine's name; torn down before the exact engine's fixture
    restores the registry (monkeypatch would undo after it, and leave "exact" registered)."""
    saved: dict[str, Any] = {}

    def install(name: str) -> SpyBackend:
        saved.setdefault(name, vectors.backend(name))
        wrapped = SpyBackend(saved[name])
        register_backend(wrapped)
        return wrapped

    yield install
    for engine in saved.values():
        register_backend(engine)


def build(index_dir: Path, roots: list[Path], engine: str, model: FakeModel, **settings: Any) -> Index:
    index = Index.create(index_dir, exist_ok=True, provider=model, vector_index=engine, **{**CHUNKING, **settings})
    index.update(roots)
    return index


def key(hit: Hit) -> tuple[str, int, str, float]:
    """What a hit is, independent of chunk ids (which differ between a fresh build and an update)."""
    return (hit.chunk.display, hit.chunk.ordinal, hit.chunk.text, round(hit.score, 5))


def live_ids(reader: IndexReader) -> list[int]:
    return sorted(chunk.id for chunk in reader.chunks())


def brute_force(index_dir: Path, model: FakeModel, query: str, k: int) -> list[tuple[int, float]]:
    """The true cosine ranking over the stored vectors (equal scores by id)."""
    with IndexReader(index_dir) as reader:
        ids = live_ids(reader)
        stored = reader.vectors(ids)
    matrix = np.stack([stored[i] for i in ids])
    scores = matrix @ model.query_embedder().embed_queries([query])[0]
    order = np.lexsort((np.array(ids), -scores))[:k]
    return [(ids[i], float(scores[i])) for i in order]


def assert_exact_ranking(index: Index, model: FakeModel, query: str, k: int = 8) -> None:
    hits = index.search(query, k=k, mode="semantic", distinct_places=False)  # every chunk, as ranked
    expected = brute_force(index.path, model, query, k)
    assert [h.chunk.id for h in hits] == [i for i, _ in expected], query
    assert np.allclose([h.score for h in hits], [s for _, s in expected], atol=1e-5)


def vector_file(index_dir: Path) -> Path:
    (found,) = [p for p in index_dir.iterdir() if p.name.startswith("vectors-") and not p.name.endswith(".sketch")]
    return found


# -- the engine on its own (the protocol, no store) -------------------------------------------


def test_exact_index_protocol_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    vecs = rng.standard_normal((40, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = np.arange(100, 140, dtype=np.int64)
    index = EXACT.create(16, 40, EXACT.default_params())
    index.add(ids[:30], vecs[:30])
    index.add(ids[30:], vecs[30:])
    index.remove([100, 101, 999])  # an id not present is ignored
    assert index.count == 38
    query = vecs[5]
    assert index.search(query, 1)[0] == (105, pytest.approx(1.0, abs=1e-6))
    evens = index.search(query, 50, within=Subset(np.arange(100, 140, 2, dtype=np.int64), 38))
    assert len(evens) == 19 and all(i % 2 == 0 for i, _ in evens)
    assert [s for _, s in evens] == sorted((s for _, s in evens), reverse=True)
    assert index.search(query, 5, within=Subset(np.array([], dtype=np.int64), 38)) == []

    state = index.save(tmp_path, "v.exact")
    assert set(state) >= {"vector_file", "vector_count", "vector_size", "vector_sha256"}
    assert state["vector_count"] == "38" and not list(tmp_path.glob(".*tmp"))
    opened = EXACT.open(tmp_path / "v.exact", state, 16, {}, extra_capacity=4)
    assert opened.search(query, 10) == index.search(query, 10)
    opened.add(np.array([7], dtype=np.int64), vecs[:1])
    assert opened.count == 39

    with pytest.raises(IndexCorruptError, match="wrong size"):
        EXACT.open(tmp_path / "v.exact", {**state, "vector_count": "37"}, 16, {})
    foreign = tmp_path / "foreign.exact"  # the right size and a matching checksum, not this format
    foreign.write_bytes(b"NOTEXACT" + (tmp_path / "v.exact").read_bytes()[8:])
    with pytest.raises(IndexCorruptError, match="not the vector file"):
        EXACT.open(foreign, {**state, "vector_sha256": hashlib.sha256(foreign.read_bytes()).hexdigest()}, 16, {})
    with pytest.raises(IndexCorruptError, match="fails its checksum"):
        EXACT.open(foreign, state, 16, {})


# -- the store through the API, for each engine ------------------------------------------------


def test_build_and_search(tmp_path: Path, engine: str, fake_model: FakeModel) -> None:
    docs = make_corpus(tmp_path / "docs")
    with build(tmp_path / "idx", [docs], engine, fake_model) as index:
        assert vector_file(index.path).name.endswith(vectors.backend(engine).file_suffix)
        for topic, query in QUERIES.items():
            hits = index.search(query, k=3, mode="semantic")
            assert hits[0].chunk.path.name == f"{topic}.txt", (query, [h.chunk.display for h in hits])
            hybrid = index.search(query, k=3)
            assert hybrid[0].chunk.path.name == f"{topic}.txt"
            assert_exact_ranking(index, fake_model, query)  # hnswlib is exact on a graph this small


def test_status_names_the_engine(tmp_path: Path, engine: str, fake_model: FakeModel) -> None:
    docs = make_corpus(tmp_path / "docs")
    with build(tmp_path / "idx", [docs], engine, fake_model) as index:
        status = index.status()
        assert status.vector_index == engine
        assert status.to_dict()["vector_index"] == engine
        assert status.files == len(TOPICS)
        with IndexReader(index.path) as reader:
            assert status.chunks == len(live_ids(reader)) == reader.vector_count
        assert index.manifest().vector_params == vectors.backend(engine).default_params()


def test_update_matches_a_fresh_build(
    tmp_path: Path, engine: str, fake_model: FakeModel, spy: Callable[[str], SpyBackend]
) -> None:
    docs = make_corpus(tmp_path / "docs")
    index = build(tmp_path / "idx", [docs], engine, fake_model)
    index.search("warm up", k=1)  # a snapshot open across the update
    write(docs / "chess.txt", topic_text("chess", salt=1))  # edited
    (docs / "coffee.txt").unlink()  # deleted
    write(docs / "tides.txt", topic_text("tides", words=TIDES))  # added
    watched = spy(engine)
    summary = index.update()
    assert summary.rebuild_reason == ""
    assert (summary.indexed, summary.removed) == (2, 1)
    assert 0 < summary.chunks_removed <= 0.25 * (summary.chunks_total + summary.chunks_removed - summary.chunks_added)
    # The incremental path: the change as a new delta, then (this small corpus passes the share)
    # the merge, which opens the base to add to it (a rebuild would be (1, 0)).
    assert (watched.created, watched.opened_for_update) == (1, 1)
    fresh = build(tmp_path / "fresh", [docs], engine, fake_model)
    tides = " ".join(TIDES[:4])
    queries = [*(q for t, q in QUERIES.items() if t != "coffee"), tides, QUERIES["coffee"]]
    for query in queries:
        for mode in ("semantic", "hybrid"):
            got = [key(h) for h in index.search(query, k=8, mode=mode)]
            assert got == [key(h) for h in fresh.search(query, k=8, mode=mode)], (query, mode)
        assert_exact_ranking(index, fake_model, query)
    assert index.search(tides, k=1, mode="semantic")[0].chunk.path.name == "tides.txt"
    assert all(h.chunk.path.name != "coffee.txt" for h in index.search(QUERIES["coffee"], k=50))
    index.close()
    fresh.close()


def test_removing_over_a_quarter_rebuilds_the_vector_index(
    tmp_path: Path, engine: str, fake_model: FakeModel, spy: Callable[[str], SpyBackend]
) -> None:
    docs = make_corpus(tmp_path / "docs")
    with build(tmp_path / "idx", [docs], engine, fake_model) as index:
        before = index.status().chunks
        gone = ["rivers", "violin", "engines", "bread", "astronomy"]
        for topic in gone:
            (docs / f"{topic}.txt").unlink()
        watched = spy(engine)
        summary = index.update()
        assert summary.rebuild_reason == ""  # same settings: not a new build, only a new vector index
        assert summary.chunks_removed > 0.25 * before
        assert (watched.created, watched.opened_for_update) == (1, 0)
        assert index.status().chunks == before - summary.chunks_removed
        fresh = build(tmp_path / "fresh", [docs], engine, fake_model)
        for topic, query in QUERIES.items():
            hits = index.search(query, k=5, mode="semantic")
            assert [key(h) for h in hits] == [key(h) for h in fresh.search(query, k=5, mode="semantic")]
            if topic in gone:
                assert all(h.chunk.path.name not in {f"{t}.txt" for t in gone} for h in hits)
            else:
                assert hits[0].chunk.path.name == f"{topic}.txt"
            assert_exact_ranking(index, fake_model, query)
        fresh.close()


def test_reopens_in_a_new_index_object(tmp_path: Path, engine: str, fake_model: FakeModel) -> None:
    docs = make_corpus(tmp_path / "docs")
    with build(tmp_path / "idx", [docs], engine, fake_model) as index:
        first = {q: [key(h) for h in index.search(q, k=5)] for q in QUERIES.values()}
    with Index.open(tmp_path / "idx", provider=FakeModel()) as reopened:
        assert reopened.status().vector_index == engine
        assert {q: [key(h) for h in reopened.search(q, k=5)] for q in QUERIES.values()} == first
        # An update through the reopened object keeps the engine (no vector_index given).
        write(docs / "extra.txt", topic_text("sailing", salt=3))
        summary = reopened.update()
        assert summary.rebuild_reason == "" and summary.indexed == 1
        assert reopened.status().vector_index == engine


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garble(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xA5 for b in data[middle:middle + 64])
    path.write_bytes(bytes(data))


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _missing(path: Path) -> None:
    path.unlink()


@pytest.mark.parametrize("damage", [_truncate, _garble, _empty, _missing], ids=["truncated", "garbled", "empty", "missing"])
def test_a_damaged_vector_file_is_a_one_line_error(
    tmp_path: Path, engine: str, fake_model: FakeModel, fake_cli: FakeModel, damage: Callable[[Path], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    docs = make_corpus(tmp_path / "docs")
    build(tmp_path / "idx", [docs], engine, fake_model).close()
    target = vector_file(tmp_path / "idx")
    damage(target)

    with Index.open(tmp_path / "idx", provider=fake_model) as index, pytest.raises(IndexCorruptError) as caught:
        index.search(QUERIES["chess"], mode="semantic")
    message = str(caught.value)
    assert "\n" not in message and target.name in message and "Index.update() repairs it" in message, message

    # The command line answers with exit 2 and that one line (the fake model is registered by name).
    from semsearch.cli import app

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["query", QUERIES["chess"], "--index", str(tmp_path / "idx"), "--mode", "semantic"])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert target.name in result.stderr and "run `semsearch index` to repair it" in result.stderr, result.stderr

    # `status --verify` finds every kind of damage, one line each.
    with Index.open(tmp_path / "idx", provider=fake_model) as index:
        problems = index.status(verify=True).problems
    assert problems and all("\n" not in p and target.name in p for p in problems), problems

    # The next update checks the vector files it keeps (a small one whole) and writes them again
    # from the vectors the database keeps: every kind of damage is repaired, nothing is embedded
    # again but the new file.
    write(docs / "chess.txt", topic_text("chess", salt=2))
    with Index.open(tmp_path / "idx", provider=fake_model) as index:
        embedded = fake_model.embedder_instance.documents_embedded
        summary = index.update()
        assert summary.indexed == 1 and len(summary.repaired) == 1 and target.name in summary.repaired[0]
        assert all("\n" not in line for line in summary.repaired)
        assert fake_model.embedder_instance.documents_embedded - embedded == summary.chunks_added
        assert index.status(verify=True).problems == []
        assert index.search(QUERIES["chess"], k=1, mode="semantic")[0].chunk.path.name == "chess.txt"
        assert index.status().vector_index == engine


@pytest.mark.parametrize("first,second", [("hnsw", "exact"), ("exact", "hnsw")])
def test_changing_the_engine_rebuilds(
    tmp_path: Path, first: str, second: str, fake_model: FakeModel, exact_engine: ExactBackend
) -> None:
    docs = make_corpus(tmp_path / "docs")
    build(tmp_path / "idx", [docs], first, fake_model).close()
    old_file = vector_file(tmp_path / "idx")
    with Index.create(tmp_path / "idx", exist_ok=True, provider=fake_model, vector_index=second) as index:
        summary = index.update()  # the remembered roots, the index's chunk settings
        assert "vector index changed" in summary.rebuild_reason
        assert first in summary.rebuild_reason and second in summary.rebuild_reason
        assert index.status().vector_index == second
        assert index.manifest().chunking.chunk_tokens == CHUNKING["chunk_tokens"]
        assert not old_file.exists()
        assert vector_file(index.path).name.endswith(vectors.backend(second).file_suffix)
        for topic, query in QUERIES.items():
            assert index.search(query, k=1, mode="semantic")[0].chunk.path.name == f"{topic}.txt"
            assert_exact_ranking(index, fake_model, query)
    with Index.open(tmp_path / "idx", provider=fake_model) as index:  # a plain update keeps the new engine
        assert index.update().rebuild_reason == ""
        assert index.status().vector_index == second



def test_an_engine_this_semsearch_lacks(tmp_path: Path, fake_model: FakeModel) -> None:
    """An index made with a plugin engine, opened without the plugin: a one-line error, and an
    update that names an engine it has rebuilds it (nothing asks the missing engine anything)."""
    docs = make_corpus(tmp_path / "docs")
    register_backend(EXACT)
    try:
        build(tmp_path / "idx", [docs], "exact", fake_model).close()
    finally:
        unregister_backend(EXACT.name)
    with Index.open(tmp_path / "idx", provider=fake_model) as index:
        with pytest.raises(IndexCorruptError, match="'exact'") as caught:
            index.search(QUERIES["bread"])
        assert "\n" not in str(caught.value)
        assert index.status().vector_index == "exact"  # status needs no engine
    with Index.create(tmp_path / "idx", exist_ok=True, provider=fake_model, vector_index="hnsw") as index:
        assert "exact -> hnsw" in index.update().rebuild_reason
        assert index.search(QUERIES["bread"], k=1)[0].chunk.path.name == "bread.txt"
        assert vector_file(index.path).suffix == ".hnsw"

# -- recall parity -------------------------------------------------------------------------------


def test_hnsw_recall_matches_exact(tmp_path: Path, fake_model: FakeModel, exact_engine: ExactBackend) -> None:
    rng = random.Random(11)
    vocabulary = [f"w{n:03d}" for n in range(400)]
    docs = tmp_path / "docs"
    for n in range(300):
        write(docs / f"f{n:03d}.txt", " ".join(rng.sample(vocabulary, 12)) + "\n")
    queries = [" ".join(rng.sample(vocabulary, 4)) for _ in range(8)]
    tops: dict[str, list[list[int]]] = {}
    for engine in ENGINES:
        with build(tmp_path / engine, [docs], engine, fake_model) as index:
            assert index.status().chunks == 300
            tops[engine] = [[int(h.chunk.path.stem[1:]) for h in index.search(q, k=10, mode="semantic")]
                            for q in queries]
    overlap = [len(set(h) & set(e)) / 10 for h, e in zip(tops["hnsw"], tops["exact"], strict=True)]
    assert sum(overlap) / len(overlap) >= 0.9, overlap
    assert all(len(e) == 10 for e in tops["exact"])


# -- a new reader as one registration --------------------------------------------------------------

RECIPE_MAGIC = b"#recipe v1"


def recipe_matches(path: Path, head: bytes) -> bool:
    return path.suffix.lower() == ".recipe" and head.startswith(RECIPE_MAGIC)


def read_recipe(path: Path, data: bytes) -> Document:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ExtractError("not UTF-8") from None
    lines = text.splitlines()
    title, out, step = path.stem, [], 0
    for line in lines:  # one output line per input line: line numbers stay the file's
        if line.startswith("title:"):
            title = line.removeprefix("title:").strip()
            out.append(title)
        elif line.startswith("step:"):
            step += 1
            out.append(f"Step {step}. {line.removeprefix('step:').strip()}")
        else:
            out.append("")
    if not step:
        raise ExtractError("a recipe with no steps")
    return Document(text="\n".join(out) + "\n", kind="recipe", title=title)


RECIPE = Reader("recipe", recipe_matches, read_recipe, no_text="a recipe with no text")


@pytest.fixture
def recipe_reader() -> Iterator[Reader]:
    register_reader(RECIPE)
    yield RECIPE
    unregister_reader(RECIPE.kind)


def test_a_new_reader_is_one_registration(tmp_path: Path, fake_model: FakeModel, recipe_reader: Reader) -> None:
    assert [r.kind for r in readers._readers][-2:] == ["recipe", "text"]  # ahead of the fallback
    docs = tmp_path / "docs"
    write(docs / "pancakes.recipe", "#recipe v1\ntitle: Buttermilk pancakes\nstep: whisk flour and buttermilk\n"
                                    "step: rest the batter\nstep: fry on a griddle until golden\n")
    write(docs / "impostor.recipe", "no magic line here\nstep: whisk nothing\n")  # plain text
    write(docs / "broken.recipe", "#recipe v1\ntitle: Nothing to cook\n")  # the reader refuses it
    write(docs / "notes.txt", "Griddle maintenance: season the cast iron and keep it dry.\n")
    make_corpus(docs, ["bread", "coffee"])
    with build(tmp_path / "idx", [docs], "hnsw", fake_model) as index:
        hits = index.search("whisk flour buttermilk griddle golden", k=3, mode="semantic")
        top = hits[0].chunk
        assert top.path.name == "pancakes.recipe"
        assert top.kind == "recipe" and top.title == "Buttermilk pancakes"
        assert "Step 1. whisk flour and buttermilk" in top.text and "#recipe" not in top.text
        assert top.line_start <= 3 <= top.line_end  # the reader's lines are the file's
        kinds = {h.chunk.path.name: h.chunk.kind for h in index.search("whisk", k=20, mode="lexical")}
        assert kinds["pancakes.recipe"] == "recipe" and kinds["impostor.recipe"] == "text"
        assert index.status().files_without_text == 1  # broken.recipe: kept, with the reader's error


# -- concurrent searches ---------------------------------------------------------------------------


def _result(hits: list[Hit]) -> list[tuple[Any, ...]]:
    return [(h.rank, h.chunk.id, h.score, tuple(sorted(h.scores.items())), h.highlight) for h in hits]


def test_concurrent_searches_match_serial(tmp_path: Path, engine: str, fake_model: FakeModel) -> None:
    docs = make_corpus(tmp_path / "docs")
    for n in range(20):
        topic = list(TOPICS)[n % len(TOPICS)]
        write(docs / "more" / f"{topic}-{n}.txt", topic_text(topic, salt=n))
    build(tmp_path / "idx", [docs], engine, fake_model).close()
    words = [w for ws in TOPICS.values() for w in ws]
    rng = random.Random(5)
    queries = [" ".join(rng.sample(words, 3)) for _ in range(50)]
    ks = [1 + (i * 7) % 40 for i in range(len(queries))]  # searches of different k share the graph
    with Index.open(tmp_path / "idx", provider=fake_model) as serial_index:
        serial = [_result(serial_index.search(q, k=k, mode="hybrid")) for q, k in zip(queries, ks, strict=True)]

    shared = Index.open(tmp_path / "idx", provider=FakeModel())  # opened lazily by the racing threads
    barrier = threading.Barrier(4)
    results: dict[int, list[list[tuple[Any, ...]]]] = {}
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            order = list(range(len(queries)))
            random.Random(n).shuffle(order)
            barrier.wait()
            got: dict[int, list[tuple[Any, ...]]] = {}
            for i in order:
                got[i] = _result(shared.search(queries[i], k=ks[i], mode="hybrid"))
            results[n] = [got[i] for i in range(len(queries))]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    shared.close()
    assert not errors, errors
    assert sorted(results) == [0, 1, 2, 3]
    for n in range(4):
        assert results[n] == serial, n
    assert all(serial), "every query found something"
