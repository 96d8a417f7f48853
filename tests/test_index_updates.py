"""Updating an index the way people do: plain re-runs keep the index's settings, deleted roots
are forgotten, damaged new versions do not erase good old ones, failed first runs leave nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import FakeModel, make_pdf, write
from typer.testing import CliRunner

from semsearch import cli
from semsearch.chunk import ChunkSettings
from semsearch.cli import app
from semsearch.errors import SemsearchError
from semsearch.indexing import DEFAULT_TUNING, IndexEvent, IndexOptions, build_index
from semsearch.store import IndexReader, read_manifest


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def indexed_names(index_dir: Path) -> list[str]:
    with IndexReader(index_dir) as reader:
        return sorted(path.name for path, _size, _mtime, _error in reader.files())


@pytest.fixture
def docs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_cli: FakeModel) -> Path:
    write(tmp_path / "docs" / "bread.md", "# Bread\n\nKnead the dough and bake the bread in a hot oven.\n")
    write(tmp_path / "docs" / ".notes" / "fossa.md", "The fossa hunts lemurs at night.\n")
    write(tmp_path / "docs" / "big.txt", "many words here\n" * 400)  # 6.4 kB
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_plain_index_keeps_the_settings_the_index_was_built_with(docs: Path) -> None:
    first = run("index", "docs", "--chunk-tokens", "64", "--no-context", "--hidden", "--max-file-size", "4k")
    assert first.exit_code == 0, first.output
    assert indexed_names(docs / ".semsearch") == ["bread.md", "fossa.md"]  # big.txt over 4k

    again = run("index")
    assert again.exit_code == 0, again.output
    assert "rebuilding" not in again.stderr
    assert "indexed 0 files, 2 unchanged, 0 removed" in again.stderr
    chunking = read_manifest(docs / ".semsearch").chunking
    assert (chunking.chunk_tokens, chunking.overlap_tokens, chunking.context) == (64, 32, False)

    # A rebuild re-walks with the same walk settings too.
    rebuilt = run("index", "--rebuild")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert indexed_names(docs / ".semsearch") == ["bread.md", "fossa.md"]

    # Settings given again replace the remembered ones, and are remembered in turn.
    assert run("index", "--no-hidden", "--max-file-size", "1M").exit_code == 0
    assert indexed_names(docs / ".semsearch") == ["big.txt", "bread.md"]
    assert run("index").exit_code == 0
    assert indexed_names(docs / ".semsearch") == ["big.txt", "bread.md"]


def test_a_new_chunk_size_alone_keeps_the_overlap_only_where_it_fits(docs: Path) -> None:
    assert run("index", "docs", "--chunk-tokens", "200", "--overlap-tokens", "40").exit_code == 0
    assert run("index", "--chunk-tokens", "100").exit_code == 0
    assert read_manifest(docs / ".semsearch").chunking.overlap_tokens == 40  # 40 <= 100 / 2
    assert run("index", "--chunk-tokens", "60").exit_code == 0
    assert read_manifest(docs / ".semsearch").chunking.overlap_tokens == 15  # a quarter of 60


def test_a_deleted_root_is_forgotten_and_its_files_dropped(docs: Path) -> None:
    write(docs / "other" / "ibex.md", "The ibex climbs the dam wall.\n")
    assert run("index", "docs", "other").exit_code == 0
    assert "ibex.md" in indexed_names(docs / ".semsearch")
    for path in (docs / "other").iterdir():
        path.unlink()
    (docs / "other").rmdir()

    result = run("index")
    assert result.exit_code == 0, result.output
    assert "other: no longer exists; removing it and its files from the index" in result.stderr
    assert "unreadable" not in result.stderr
    assert "ibex.md" not in indexed_names(docs / ".semsearch")
    with IndexReader(docs / ".semsearch") as reader:
        assert reader.roots == ["docs"]
    quiet = run("index")  # forgotten: no warning on later runs
    assert quiet.exit_code == 0 and "other" not in quiet.stderr


def test_a_damaged_new_version_keeps_the_version_indexed_before(tmp_path: Path, fake_model: FakeModel) -> None:
    pdf = make_pdf(tmp_path / "docs" / "paper.pdf", ["Lemurs live on Madagascar and eat fruit."])
    options = IndexOptions(roots=[tmp_path / "docs"], index_dir=tmp_path / ".semsearch")
    build_index(options, fake_model)
    data = pdf.read_bytes()
    pdf.write_bytes(data[: len(data) // 2])  # caught mid-write

    events: list[IndexEvent] = []
    summary = build_index(options, fake_model, events.append)
    warnings = [e.message for e in events if e.kind == "warning"]
    assert any("paper.pdf" in w and "keeping the version indexed before" in w for w in warnings), warnings
    assert summary.removed == 0 and summary.chunks_total == 1
    with IndexReader(tmp_path / ".semsearch") as reader:
        assert [error for _p, _s, _m, error in reader.files()] == [None]

    pdf.write_bytes(data)  # whole again: indexed (same content as before, nothing re-embedded)
    embedded = fake_model.embedder_instance.documents_embedded
    again = build_index(options, fake_model, events.append)
    assert again.chunks_total == 1 and fake_model.embedder_instance.documents_embedded == embedded


def test_a_file_grown_over_the_size_limit_is_announced_when_dropped(docs: Path) -> None:
    assert run("index", "docs").exit_code == 0
    assert "big.txt" in indexed_names(docs / ".semsearch")
    result = run("index", "--max-file-size", "4k")
    assert result.exit_code == 0, result.output
    assert "big.txt: now over the size limit" in result.stderr
    assert "big.txt" not in indexed_names(docs / ".semsearch")


def test_verbose_names_every_skipped_file(docs: Path) -> None:
    write(docs / "docs" / "blob.bin", bytes(range(256)) * 4)
    result = run("index", "docs", "-v")
    assert result.exit_code == 0, result.output
    assert "blob.bin: skipped, binary" in result.stderr
    assert ".notes: skipped, hidden" in result.stderr
    plain = run("index", "docs", "--rebuild")
    assert "blob.bin" not in plain.stderr


def test_the_index_folder_is_never_counted_or_indexed(docs: Path) -> None:
    write(docs / "a.md", "The serval has long legs.\n")
    result = run("index", ".", "--no-hidden")
    assert result.exit_code == 0, result.output
    assert "(1 hidden)" in result.stderr  # docs/.notes only, not .semsearch
    # An index folder given as a root is refused, not read.
    inside = run("index", ".semsearch")
    assert inside.exit_code == 0
    assert "skipped, inside the index folder" in inside.stderr


def test_index_refuses_a_folder_of_other_files(docs: Path) -> None:
    write(docs / "notes" / "todo.txt", "buy milk\n")
    result = run("index", "docs", "--index", "notes")
    assert result.exit_code == 2
    assert "is not an index and not empty" in result.stderr
    assert sorted(p.name for p in (docs / "notes").iterdir()) == ["todo.txt"]


def test_index_without_path_updates_the_index_above(docs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run("index", "docs").exit_code == 0
    write(docs / "docs" / "sub" / "new.md", "The okapi is a forest giraffe.\n")
    monkeypatch.chdir(docs / "docs" / "sub")
    result = run("index")
    assert result.exit_code == 0, result.output
    assert "indexed 1 file" in result.stderr
    assert not (docs / "docs" / "sub" / ".semsearch").exists()
    assert "new.md" in indexed_names(docs / ".semsearch")


def test_nothing_to_index_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_cli: FakeModel) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("index")
    assert result.exit_code == 2 and "nothing to index: give a PATH" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_failed_first_run_leaves_no_folder(docs: Path, monkeypatch: pytest.MonkeyPatch, fake_cli: FakeModel) -> None:
    assert run("index", "docs").exit_code == 0
    sub = docs / "docs"
    monkeypatch.chdir(sub)

    def no_model() -> None:
        raise SemsearchError("cannot load model: broken")

    monkeypatch.setattr(fake_cli, "embedder", no_model)
    result = run("index", ".")
    assert result.exit_code == 2 and "cannot load model" in result.stderr
    assert not (sub / ".semsearch").exists()
    monkeypatch.undo()  # the fake model works again; the index above still answers here
    monkeypatch.chdir(sub)
    status = run("status")
    assert status.exit_code == 0 and str(docs / ".semsearch") in status.stdout


def test_walk_settings_are_stored_in_the_state_table(docs: Path) -> None:
    assert run("index", "docs", "--hidden", "--follow-symlinks", "--max-file-size", "2M").exit_code == 0
    with IndexReader(docs / ".semsearch") as reader:
        stored = reader.walk_settings
    assert stored == {
        "hidden": True,
        "max_file_size": 2 * 1024 * 1024,
        "follow_symlinks": True,
        "ocr": "auto",
        "notebook_outputs": False,
    }
    status = run("status")
    assert "walk     hidden files in, files up to 2.0 MB, links out of the folders followed" in status.stdout
    assert "(128 tokens, 32 overlap, context on)" in status.stdout
    shown = json.loads(run("status", "--json").stdout)
    assert shown["walk"] == stored and shown["chunking"]["context"] is True


@pytest.mark.parametrize(("args", "message"), [
    (["index", "docs", "--max-file-size", "0"], "--max-file-size must be at least 1 byte"),
    (["index", "docs", "--wait", "-1"], "--wait must be 0 or more seconds"),
])
def test_bad_index_options_fail_before_writing(docs: Path, args: list[str], message: str) -> None:
    result = run(*args)
    assert result.exit_code == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (docs / ".semsearch").exists()


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "CPU", ""])
def test_a_bad_device_is_refused_by_name(device: str) -> None:
    from semsearch.cli.messages import describe
    from semsearch.errors import ModelError
    from semsearch.models.local import LocalModel

    with pytest.raises(ModelError, match=r"^device must be auto, cpu, cuda, cuda:N or mps \(got ") as caught:
        LocalModel(None, device=device)
    assert caught.value.option == "device"  # the library names its argument; the CLI, its flag
    assert describe(caught.value).startswith("--device must be auto, cpu, cuda, cuda:N or mps (got ")


def test_a_missing_gpu_is_a_clear_error() -> None:
    pytest.importorskip("torch")
    import torch

    from semsearch.cli.messages import describe
    from semsearch.errors import ModelError
    from semsearch.models.hardware import pick_device

    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match=r"^device cuda: PyTorch here sees no CUDA device") as caught:
            pick_device("cuda")
        assert describe(caught.value).startswith("--device cuda: PyTorch here sees no CUDA device")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ModelError, match=rf"^device cuda:{count}: PyTorch here sees") as caught:
        pick_device(f"cuda:{count}")
    assert describe(caught.value).startswith(f"--device cuda:{count}: PyTorch here sees")
    assert pick_device("cpu") == "cpu"


def test_usage_errors_are_one_line(docs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for argv, expected in (
        (["query", "x", "-k", "abc"], "Invalid value for '-k'"),
        (["bogus"], "No such command 'bogus'"),
        (["query"], "Missing argument 'QUERY'"),
    ):
        monkeypatch.setattr("sys.argv", ["semsearch", *argv])
        with pytest.raises(SystemExit) as exited:
            cli.main(fast_exit=False)
        err = capsys.readouterr().err
        assert exited.value.code == 2, err
        assert err.startswith("semsearch: error: ") and expected in err and len(err.strip().splitlines()) == 1, err


def test_min_score_is_refused_in_lexical_mode(docs: Path) -> None:
    assert run("index", "docs").exit_code == 0
    result = run("query", "bread", "--mode", "lexical", "--min-score", "0.5")
    assert result.exit_code == 2 and "--min-score filters on cosine similarity" in result.stderr


def test_a_bad_mode_from_the_environment_is_named(docs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run("index", "docs").exit_code == 0
    monkeypatch.setenv("SEMSEARCH_MODE", "magic")
    monkeypatch.setattr("sys.argv", ["semsearch", "query", "bread"])
    result = run("query", "bread")
    assert result.exit_code == 2 and "SEMSEARCH_MODE must be one of" in result.stderr


def test_an_unreadable_folder_is_one_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from semsearch import walk as walk_module

    write(tmp_path / "open" / "a.md", "fine\n")
    write(tmp_path / "locked" / ".gitignore", "*.log\n")
    write(tmp_path / "locked" / "b.md", "secret\n")
    real_scandir = os.scandir

    def scandir(path):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(walk_module.os, "scandir", scandir)
    skips: list[walk_module.Skip] = []
    found = [e.path.name for e in walk_module.walk([tmp_path], walk_module.WalkOptions(), skips.append)]
    assert found == ["a.md"]
    assert [(s.path.name, s.reason) for s in skips if s.warn] == [("locked", "unreadable")]


def test_a_renamed_moved_or_copied_file_is_not_embedded_again(tmp_path: Path, fake_model: FakeModel) -> None:
    docs = tmp_path / "docs"
    write(docs / "lemur.md", "# Lemurs\n\nLemurs live on Madagascar.\n\n" + "They eat fruit and leaves. " * 60)
    write(docs / "code" / "sort.py", "def quicksort(items):\n    return sorted(items)\n")
    options = IndexOptions(roots=[docs], index_dir=tmp_path / ".semsearch")
    first = build_index(options, fake_model)
    chunks = first.chunks_total
    embedded = fake_model.embedder_instance.documents_embedded

    (docs / "lemur.md").rename(docs / "primates.md")  # renamed: same title, same chunks
    (docs / "moved").mkdir()
    (docs / "code" / "sort.py").rename(docs / "moved" / "sort.py")  # moved: same name, same context
    write(docs / "copy" / "lemur.md", (docs / "primates.md").read_text())  # copied
    summary = build_index(options, fake_model)
    assert fake_model.embedder_instance.documents_embedded == embedded
    assert (summary.indexed, summary.removed) == (3, 2)
    assert summary.chunks_reused == summary.chunks_added == chunks + (chunks - 1)
    with IndexReader(tmp_path / ".semsearch") as reader:
        assert sorted(p.relative_to(docs).as_posix() for p, _s, _m, _e in reader.files()) == [
            "copy/lemur.md", "moved/sort.py", "primates.md"]
        ids = [cid for cid, _ in reader.vector_search(fake_model.embedder_instance.embed_queries(["lemurs fruit"])[0], 3)]
        assert {Path(c.path).name for c in reader.fetch_chunks(ids).values()} <= {"primates.md", "lemur.md"}

    # A file renamed whose context line comes from its name is embedded again (other input).
    (docs / "moved" / "sort.py").rename(docs / "moved" / "ordering.py")
    build_index(options, fake_model)
    assert fake_model.embedder_instance.documents_embedded == embedded + 1


def test_an_unfinished_first_build_is_named_as_such(docs: Path) -> None:
    (docs / ".semsearch").mkdir()
    (docs / ".semsearch" / "building.json").write_text("{}")
    result = run("query", "bread")
    assert result.exit_code == 2
    assert "the first build of the index at" in result.stderr and "did not finish" in result.stderr


def test_index_option_accepts_the_folder_that_holds_the_index(docs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run("index", "docs").exit_code == 0
    monkeypatch.chdir(docs.parent)
    result = run("query", "bread", "--index", docs.name, "-k", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{docs.name}/docs/bread.md:")
    assert run("status", "--index", str(docs)).exit_code == 0
    refused = run("index", "--index", str(docs))
    assert refused.exit_code == 2 and f"(its index is {docs / '.semsearch'})" in refused.stderr


def test_an_edited_file_embeds_only_the_chunks_that_changed(tmp_path: Path, fake_model: FakeModel) -> None:
    docs = tmp_path / "docs"
    sections = [f"## Part {i}\n\n" + f"Paragraph {i} tells of lemur number {i}. " * 12 for i in range(12)]
    write(docs / "long.md", "# Lemurs\n\n" + "\n\n".join(sections))
    options = IndexOptions(roots=[docs], index_dir=tmp_path / ".semsearch", chunking=ChunkSettings(chunk_tokens=64, overlap_tokens=8))
    first = build_index(options, fake_model)
    assert first.chunks_total >= 12
    embedded = fake_model.embedder_instance.documents_embedded

    sections[6] = sections[6] + " The fossa hunts them at night."
    write(docs / "long.md", "# Lemurs\n\n" + "\n\n".join(sections))
    summary = build_index(options, fake_model)
    fresh = fake_model.embedder_instance.documents_embedded - embedded
    assert 1 <= fresh <= 5 and fresh * 6 < first.chunks_total, (fresh, first.chunks_total)  # the edited part only
    assert summary.chunks_reused == summary.chunks_added - fresh
    with IndexReader(tmp_path / ".semsearch") as reader:
        query = fake_model.embedder_instance.embed_queries(["fossa hunts night"])[0]
        best = reader.fetch_chunks([reader.vector_search(query, 1)[0][0]])
        assert "fossa" in next(iter(best.values())).text
        # Every stored vector is the one the model gives for that chunk now.
        for chunk_id, vector in reader.vectors([c for c, _ in reader.vector_search(query, 50)]).items():
            record = reader.fetch_chunks([chunk_id])[chunk_id]
            text = f"{record.context}\n{record.text}" if record.context else record.text
            assert float(vector @ fake_model.embedder_instance.embed_documents([text])[0]) > 0.9999


@pytest.mark.parametrize(("signal_name", "code", "word"), [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
def test_a_stopped_index_run_says_what_is_kept(docs: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str], signal_name: str, code: int,
                                               word: str, request: pytest.FixtureRequest) -> None:
    import signal

    from semsearch.api import Index

    assert run("index", "docs").exit_code == 0
    before = signal.getsignal(signal.SIGTERM)
    # Ctrl-C as a terminal delivers it, whatever this process inherited (a job started in the
    # background by a shell without job control starts with SIGINT ignored).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))

    def stopped(*args: object, **kwargs: object) -> None:
        # Delivered to this (main) thread at once: Ctrl-C as KeyboardInterrupt, SIGTERM through
        # the handler `index` installs. raise_signal, not os.kill: a signal sent to the process
        # may be taken by another thread (a worker left by an earlier test), and then reach
        # Python's handler only after the next lines have run.
        signal.raise_signal(getattr(signal, signal_name))
        raise AssertionError(f"{signal_name} did not stop the run")

    monkeypatch.setattr(Index, "update", stopped)
    monkeypatch.setattr("sys.argv", ["semsearch", "index"])
    with pytest.raises(SystemExit) as exited:
        cli.main(fast_exit=False)
    assert exited.value.code == code
    assert capsys.readouterr().err == (
        f"semsearch: {word}; what was stored is kept: run `semsearch index` again to finish\n")
    assert signal.getsignal(signal.SIGTERM) == before  # restored


def test_an_interrupted_rebuild_for_new_settings_is_resumed_by_a_plain_run(docs: Path, monkeypatch: pytest.MonkeyPatch,
                                                                           fake_cli: FakeModel) -> None:
    assert run("index", "docs").exit_code == 0
    embedder = fake_cli.embedder_instance
    real = embedder.embed_documents
    calls = {"n": 0}

    def stop_after_first_group(texts: list[str]) -> object:
        calls["n"] += 1
        if calls["n"] > 1:
            raise KeyboardInterrupt
        return real(texts)

    monkeypatch.setattr(DEFAULT_TUNING, "group_chunks", 1)
    monkeypatch.setattr(embedder, "embed_documents", stop_after_first_group)
    stopped = run("index", "--chunk-tokens", "64")
    assert stopped.exit_code == 130
    assert "the index in use is unchanged: run the same command again to finish the rebuild" in stopped.stderr
    assert (docs / ".semsearch" / "building.json").exists()
    assert read_manifest(docs / ".semsearch").chunking.chunk_tokens == 128  # still answering queries
    monkeypatch.setattr(embedder, "embed_documents", real)

    resumed = run("index")  # the settings last asked for: the rebuild goes on
    assert resumed.exit_code == 0, resumed.output
    assert "rebuilding the index" in resumed.stderr
    assert read_manifest(docs / ".semsearch").chunking.chunk_tokens == 64
    assert not (docs / ".semsearch" / "building.json").exists()


def test_an_update_with_the_current_settings_drops_an_unfinished_rebuild(docs: Path, monkeypatch: pytest.MonkeyPatch,
                                                                          fake_cli: FakeModel) -> None:
    assert run("index", "docs").exit_code == 0
    embedder = fake_cli.embedder_instance
    real = embedder.embed_documents

    def interrupted(texts: list[str]) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(embedder, "embed_documents", interrupted)
    assert run("index", "--chunk-tokens", "64").exit_code == 130
    monkeypatch.setattr(embedder, "embed_documents", real)
    before = sorted(p.name for p in (docs / ".semsearch").iterdir())
    assert "building.json" in before and "meta-2.sqlite" in before

    kept = run("index", "--chunk-tokens", "128")  # the user goes back: the rebuild is given up
    assert kept.exit_code == 0, kept.output
    after = sorted(p.name for p in (docs / ".semsearch").iterdir())
    assert "building.json" not in after and not any(name.startswith("meta-2") for name in after)
    assert read_manifest(docs / ".semsearch").chunking.chunk_tokens == 128
    assert run("index").exit_code == 0 and read_manifest(docs / ".semsearch").chunking.chunk_tokens == 128
