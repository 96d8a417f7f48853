"""The Python API's contract for callers: arguments checked in Python's words, one path or query
taken as one, structured error fields, and an Index that reopens after close()."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FakeModel, write

from semsearch import Index, IndexExistsError, IndexNotFoundError, InvalidOptionError, ModelError
from semsearch.cli.messages import describe


@pytest.fixture
def index(tmp_path: Path, fake_model: FakeModel) -> Index:
    write(tmp_path / "notes" / "heron.md", "# Herons\n\nA heron waits in shallow water for fish.\n")
    write(tmp_path / "notes" / "bread.md", "# Bread\n\nKnead the dough, then bake it in a hot oven.\n")
    created = Index.create(tmp_path / ".semsearch", provider=fake_model)
    created.update([tmp_path / "notes"])
    return created


def test_one_path_and_one_query_are_taken_whole(tmp_path: Path, fake_model: FakeModel,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "notes" / "heron.md", "# Herons\n\nA heron waits in shallow water.\n")
    monkeypatch.chdir(tmp_path)
    with Index.create(".semsearch", provider=fake_model) as index:
        assert index.update("notes").indexed == 1  # a string is one path, not its characters
        assert [query for query, _ in index.search_many("heron water")] == ["heron water"]


def test_arguments_are_named_in_python_words(index: Index, tmp_path: Path) -> None:
    with pytest.raises(InvalidOptionError, match=r"^k must be at least 1 \(got 0\)$") as caught:
        index.search("heron", k=0)
    assert caught.value.options == ("k",) and describe(caught.value) == "--top must be at least 1 (got 0)"
    with pytest.raises(InvalidOptionError, match=r"^max_file_size must be a whole number") as caught:
        Index.create(tmp_path / "other", max_file_size="20M")
    assert caught.value.options == ("max_file_size",)
    with pytest.raises(InvalidOptionError, match="no vector engine called 'faiss'"):
        Index.create(tmp_path / "other", vector_index="faiss")
    with pytest.raises(InvalidOptionError, match="unexpected keyword argument 'colour'"):
        Index.create(tmp_path / "other", colour="blue")
    with pytest.raises(ModelError, match=r"^precision must be one of") as model_error:
        Index.create(tmp_path / "other", precision="fp8").update([tmp_path / "notes"])
    assert isinstance(model_error.value, InvalidOptionError)  # a model's argument is an argument
    assert not (tmp_path / "other").exists()  # a refused first run leaves no folder


def test_where_an_index_may_go(index: Index, tmp_path: Path) -> None:
    with pytest.raises(IndexExistsError, match="exist_ok=True"):
        Index.create(tmp_path / ".semsearch")
    assert Index.create(tmp_path / ".semsearch", exist_ok=True).path == tmp_path / ".semsearch"
    with pytest.raises(InvalidOptionError, match="is not an index and not empty") as caught:
        Index.create(tmp_path / "notes")  # refused at once, not at the first update
    assert caught.value.path == tmp_path / "notes" and caught.value.options == ("path",)
    assert describe(caught.value).endswith("give --index a new or empty folder")
    with pytest.raises(IndexNotFoundError, match=r"Index\.create"):
        Index.open(tmp_path / "nowhere")


def test_evaluate_takes_plain_mappings(index: Index) -> None:
    result = index.evaluate({"q1": "heron in shallow water"}, {"q1": {"heron": 1}})
    assert result.summary()["ndcg@10"] == 1.0
    with pytest.raises(InvalidOptionError, match=r"^depth must be at least 10 \(got 5\)$") as caught:
        index.evaluate({"q1": "heron"}, {"q1": {"heron": 1}}, depth=5)
    assert describe(caught.value) == "--depth must be at least 10 (got 5)"


def test_an_index_reopens_after_close_and_sees_updates(index: Index, tmp_path: Path) -> None:
    assert index.search("heron water", k=1)[0].chunk.path.name == "heron.md"
    index.close()
    write(tmp_path / "notes" / "tea.md", "# Tea\n\nSteep green tea leaves for two minutes.\n")
    assert index.update().indexed == 1
    assert index.search("green tea leaves", k=1)[0].chunk.path.name == "tea.md"  # the new generation
    assert index.status().files == 3


def test_a_replaced_snapshot_stays_readable_by_calls_under_way(tmp_path: Path, fake_model: FakeModel) -> None:
    """A server answers several calls at once: a newer state seen by one call must not close the
    snapshot another call is reading (it lost its PostgreSQL connection mid-query)."""
    write(tmp_path / "docs" / "a.md", "# Tides\n\nSpring tides come with the new and full moon.\n")
    with Index.create(tmp_path / ".semsearch", provider=fake_model) as index:
        index.update([tmp_path / "docs"])
        reading = index._open_searcher()  # a call under way holds this snapshot
        write(tmp_path / "docs" / "b.md", "# Kilns\n\nFire the kiln slowly.\n")
        index.update([tmp_path / "docs"])  # another call's update: the next call opens the new state
        assert index._open_searcher() is not reading
        assert reading.reader.fetch_chunks([1])  # still readable
        assert [h.chunk.path.name for h in index.search("kiln", k=1, mode="lexical")] == ["b.md"]
    assert index._retired == []  # closed with the index
