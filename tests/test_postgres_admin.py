"""A team's index on a real PostgreSQL server: roles, credentials, locks, failures said in one line,
publishing a local index without embedding, and writers killed mid-update (the crash harness)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeModel, write
from test_crash import _finish, _pause, change_corpus, run_forked, signature, write_corpus
from test_seams import topic_text
from typer.testing import CliRunner

from semsearch.api import Index
from semsearch.cli.app import app
from semsearch.errors import SemsearchError


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def _admin(pg_server: Any, database: str = "postgres") -> Any:
    import psycopg

    return psycopg.connect(pg_server.url(database), autocommit=True, password=pg_server.password)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_cli: FakeModel) -> Path:
    monkeypatch.chdir(tmp_path)
    for topic in ("chess", "coffee", "violin", "bread"):
        write(tmp_path / "docs" / f"{topic}.md", topic_text(topic))
    return tmp_path


def test_index_and_query_by_url_then_by_pointer(project: Path, pg_url: str) -> None:
    result = run("index", "docs", "--index", pg_url, "-q")
    assert result.exit_code == 0, result.output
    pointer = json.loads((project / ".semsearch" / "postgres.json").read_text())
    assert pointer["url"] == pg_url
    result = run("query", "gambit castling", "-l", "-k", "1")  # found through the pointer
    assert result.exit_code == 0 and result.stdout.strip() == "docs/chess.md", result.output
    result = run("status")
    assert result.exit_code == 0 and "files    4" in result.stdout, result.output


def test_a_password_in_the_url_is_used_never_kept(project: Path, pg_url: str, pg_server: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.delenv("PGPASSWORD")
    secret = pg_server.password
    with_password = pg_url.replace("postgres@", f"postgres:{secret}@")
    result = run("index", "docs", "--index", with_password, "-q")
    assert result.exit_code == 0, result.output
    for path in (project / ".semsearch").rglob("*"):
        assert secret.encode() not in path.read_bytes()
    wrong_db = with_password.rsplit("/", 1)[0] + "/no_such_database"
    result = run("query", "x", "--index", wrong_db)
    assert result.exit_code == 2 and secret not in result.output
    assert result.output.count("\n") == 1 and "no_such_database" in result.output
    result = run("query", "gambit")  # the pointer names no password: libpq's ways give it
    assert result.exit_code == 2 and "PGPASSWORD" in result.output


@pytest.mark.parametrize(
    ("mangle", "says"),
    [
        (lambda url: url.rsplit(":", 1)[0] + ":1/db", "cannot connect"),
        (lambda url: url.replace("postgres@", "nobody@"), "nobody"),
        (lambda url: "postgresql://[bad", "not a PostgreSQL URL"),
    ],
)
def test_connection_failures_are_one_line(project: Path, pg_url: str, mangle: Any, says: str) -> None:
    for args in (("index", "docs"), ("query", "x")):
        result = run(*args, "--index", mangle(pg_url))
        assert result.exit_code == 2, result.output
        assert says in result.output and result.output.count("\n") == 1 and "Traceback" not in result.output


def test_wrong_password_is_one_line(project: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "wrong")
    result = run("index", "docs", "--index", pg_url)
    assert result.exit_code == 2 and "password authentication failed" in result.output
    assert result.output.count("\n") == 1


def test_read_only_role_queries_but_cannot_index(project: Path, pg_url: str, pg_server: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    database = pg_url.rsplit("/", 1)[1]
    with _admin(pg_server, database) as conn:  # the README's SQL for a read-only role, before the first index
        conn.execute("DROP ROLE IF EXISTS search_reader")
        conn.execute("CREATE ROLE search_reader LOGIN PASSWORD 'ro-secret'")
        conn.execute(f"GRANT CONNECT ON DATABASE {database} TO search_reader")
        conn.execute("ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT USAGE ON SCHEMAS TO search_reader")
        conn.execute("ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT SELECT ON TABLES TO search_reader")
    assert run("index", "docs", "--index", pg_url, "-q").exit_code == 0
    assert run("index", "--rebuild", "-q").exit_code == 0  # a new schema: still readable
    monkeypatch.setenv("PGPASSWORD", "ro-secret")
    ro = pg_url.replace("postgres@", "search_reader@")
    other = project / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    result = run("query", "gambit castling", "--index", ro, "-l", "-k", "1")
    assert result.exit_code == 0 and result.stdout.strip() == "docs/chess.md", result.output
    result = run("status", "--index", ro)
    assert result.exit_code == 0 and "schema semsearch_default_" in result.stdout, result.output
    monkeypatch.chdir(project)
    write(project / "docs" / "new.md", topic_text("sailing"))
    for args in (("index", "docs", "--index", ro), ("index", "--index", ro, "--rebuild")):
        result = run(*args)
        assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
        assert "permission denied" in result.output or "may not write" in result.output, result.output
    # Tried from a folder of its own, the refused index leaves no pointer there to the database.
    monkeypatch.chdir(other)
    assert run("index", str(project / "docs"), "--index", ro).exit_code == 2
    assert not (other / ".semsearch").exists()


def test_a_second_writer_waits_or_is_told(project: Path, pg_url: str, pg_server: Any) -> None:
    from semsearch.pgstore import parse_target
    from semsearch.pgstore.registry import lock_key

    assert run("index", "docs", "--index", pg_url, "-q").exit_code == 0
    database = pg_url.rsplit("/", 1)[1]
    with _admin(pg_server, database) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (lock_key(parse_target(pg_url)),))
        result = run("index", "-q")
        assert result.exit_code == 2 and "another `semsearch index` is updating postgresql://" in result.output
        result = run("index", "-q", "--wait", "0.5")
        assert result.exit_code == 2 and "within --wait 0.5" in result.output
        result = run("query", "gambit", "-l", "-k", "1")  # readers are never blocked
        assert result.exit_code == 0 and result.stdout.strip() == "docs/chess.md"
    assert run("index", "-q").exit_code == 0


def test_no_pgvector_and_no_right_to_create_it(project: Path, pg_url: str, pg_server: Any,
                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    database = pg_url.rsplit("/", 1)[1]
    with _admin(pg_server, database) as conn:
        conn.execute("DROP ROLE IF EXISTS plain_user")
        conn.execute("CREATE ROLE plain_user LOGIN PASSWORD 'plain'")
        conn.execute(f"GRANT CONNECT, CREATE ON DATABASE {database} TO plain_user")
    monkeypatch.setenv("PGPASSWORD", "plain")
    result = run("index", "docs", "--index", pg_url.replace("postgres@", "plain_user@"))
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "pgvector" in result.output and "CREATE EXTENSION vector" in result.output


def test_a_newer_schema_is_refused(project: Path, pg_url: str, pg_server: Any) -> None:
    assert run("index", "docs", "--index", pg_url, "-q").exit_code == 0
    schema = Index.open(pg_url).manifest().database
    with _admin(pg_server, pg_url.rsplit("/", 1)[1]) as conn:
        conn.execute(f"UPDATE \"{schema}\".meta SET value = '99' WHERE key = 'schema_version'")
    result = run("query", "gambit")
    assert result.exit_code == 2 and "newer semsearch" in result.output


def test_publish_a_local_index_without_embedding(project: Path, pg_url: str, fake_cli: FakeModel) -> None:
    assert run("index", "docs", "-q").exit_code == 0
    local = {q: run("query", q, "--json").stdout for q in ("gambit castling", "espresso crema", "violin bow")}
    os.rename(project / ".semsearch", project / "built")
    embedded_before = fake_cli.embedder().documents_embedded
    assert embedded_before > 0
    result = run("index", "--index", pg_url, "--from", "built")
    assert result.exit_code == 0, result.output
    assert "published 4 files" in result.output and "nothing embedded" in result.output
    assert fake_cli.embedder().documents_embedded == embedded_before  # nothing embedded again
    for q, expected in local.items():
        got = run("query", q, "--json").stdout
        assert [json.loads(line)["path"] for line in got.splitlines()] == [
            json.loads(line)["path"] for line in expected.splitlines()
        ]
    result = run("index", "--index", pg_url, "--from", "nowhere")
    assert result.exit_code == 2 and "no local index" in result.output


def test_library_errors_carry_no_password(pg_url: str, pg_server: Any) -> None:
    url = pg_url.replace("postgres@", f"postgres:{pg_server.password}@").rsplit("/", 1)[0] + "/nope"
    with pytest.raises(SemsearchError) as caught:
        Index.open(url).search("x")
    assert pg_server.password not in str(caught.value)


# -- writers killed mid-update (tests/crash_harness.py) ----------------------------------------


def _copy_database(pg_server: Any, source: str, name: str) -> str:
    with _admin(pg_server) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {source}")
    return pg_server.url(name)


@pytest.mark.parametrize("first_build", [True, False], ids=["first-build", "update"])
def test_kills_mid_update_lose_nothing(tmp_path: Path, pg_url: str, pg_server: Any, first_build: bool) -> None:
    work = tmp_path / "work"
    write_corpus(work / "corpus", 16, seed=1)
    base_db = pg_url.rsplit("/", 1)[1]
    args = ["index", "corpus", "--index", pg_url, "-q"]
    if not first_build:
        assert run_forked(work, args).code == 0  # type: ignore[union-attr]
        change_corpus(work / "corpus")
    before = signature(work, pg_url)
    full_url = _copy_database(pg_server, base_db, f"{base_db}_full")
    done = run_forked(work, ["index", "corpus", "--index", full_url, "-q"])
    assert done.code == 0, done.output  # type: ignore[union-attr]
    after = signature(work, full_url)
    assert after != before
    failures = []
    points = ["pg_add_file:1", "pg_add_file:5", "pg_commit:2", "pg_finalize:1", "pg_finalize+:1",
              "pg__post+:1", "pg__vacuum:1"]  # BM25's postings written (a first build: committed before the flip)
    if not first_build:
        points.append("pg_remove_file:2")
    for n, point in enumerate(points):
        url = _copy_database(pg_server, base_db, f"{base_db}_k{n}")
        killed = run_forked(work, ["index", "corpus", "--index", url, "-q"], kill_at=point)
        if not killed.killed:  # type: ignore[union-attr]
            failures.append(f"{point}: not reached")
            continue
        seen = signature(work, url)
        if seen not in (before, after) and not (first_build and seen == "no index"):
            failures.append(f"{point}: a reader saw a state that is neither the old nor the new one")
        again = run_forked(work, ["index", "corpus", "--index", url, "-q"])
        if again.code != 0 or signature(work, url) != after:  # type: ignore[union-attr]
            failures.append(f"{point}: the next run did not finish the update: {again.output}")  # type: ignore[union-attr]
    assert not failures, "\n".join(failures)


def test_a_connection_lost_mid_update_is_one_line_and_the_next_run_resumes(
    tmp_path: Path, pg_url: str, pg_server: Any
) -> None:
    work = tmp_path / "work"
    write_corpus(work / "corpus", 16, seed=1)
    args = ["index", "corpus", "--index", pg_url, "-q"]
    assert run_forked(work, args).code == 0  # type: ignore[union-attr]
    change_corpus(work / "corpus")
    before = signature(work, pg_url)
    pid, flag = _pause(work, args, "pg_add_file:3")
    with _admin(pg_server) as admin:  # the server ends the writer's session (a restart, a failover)
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'semsearch' "
            "AND datname = %s AND state <> 'idle'", (pg_url.rsplit("/", 1)[1],)
        )  # fmt: skip
    flag.unlink()
    lost = _finish(pid, work)
    assert lost.code == 2, lost.output
    assert lost.output.count("\n") == 1 and "Traceback" not in lost.output
    assert "connection" in lost.output and "nothing committed is lost" in lost.output
    assert signature(work, pg_url) == before  # readers still see the last state
    again = run_forked(work, args)
    assert again.code == 0, again.output  # type: ignore[union-attr]
    assert signature(work, pg_url) != before


def test_a_server_too_old_is_one_line(project: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import psycopg

    real = psycopg.connect

    class Old:
        def __init__(self, conn: Any) -> None:
            self._conn = conn
            self.info = type("Info", (), {"server_version": 120011})()

        def close(self) -> None:
            self._conn.close()

    monkeypatch.setattr(psycopg, "connect", lambda *a, **k: Old(real(*a, **k)))
    result = run("index", "docs", "--index", pg_url)
    assert result.exit_code == 2 and "PostgreSQL 12: semsearch needs 13 or newer" in result.output


def test_a_rebuild_leaves_one_build_and_a_held_old_one_goes_later(project: Path, pg_url: str, pg_server: Any) -> None:
    def builds() -> list[str]:
        with _admin(pg_server, pg_url.rsplit("/", 1)[1]) as conn:
            rows = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname ~ '^semsearch_default_[0-9]+$'")
            return sorted(r[0] for r in rows)

    assert run("index", "docs", "--index", pg_url, "-q").exit_code == 0
    first = builds()
    assert len(first) == 1
    with _admin(pg_server, pg_url.rsplit("/", 1)[1]) as reader:  # a reader in the middle of a query
        reader.autocommit = False
        reader.execute(f'SELECT count(*) FROM "{first[0]}".chunks')
        assert run("index", "--rebuild", "-q").exit_code == 0  # not kept waiting by the reader
        assert len(builds()) == 2 and first[0] in builds()
        reader.rollback()
    assert run("query", "gambit", "-l", "-k", "1").stdout.strip() == "docs/chess.md"
    write(project / "docs" / "more.md", topic_text("sailing"))
    assert run("index", "-q").exit_code == 0  # the next update drops what is no longer used
    assert len(builds()) == 1 and first[0] not in builds()


def test_semsearch_index_takes_the_url(project: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEMSEARCH_INDEX", pg_url)
    result = run("index", "docs", "-q")
    assert result.exit_code == 0, result.output
    elsewhere = project / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = run("query", "espresso crema", "-l", "-k", "1")
    assert result.exit_code == 0 and result.stdout.strip() == "docs/coffee.md", result.output
    with Index.open() as index:  # the API reads it too
        assert index.engine == "postgresql" and index.status(check_disk=False).files == 4


def test_a_numbered_migration_upgrades_a_build_in_place(
    project: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from semsearch.pgstore import registry, schema

    assert run("index", "docs", "--index", pg_url, "-q").exit_code == 0
    before = Index.open(pg_url).manifest().database
    # A later version of semsearch: its next schema adds a column.
    later = schema.SCHEMA_VERSION + 1
    monkeypatch.setattr(schema, "SCHEMA_VERSION", later)
    monkeypatch.setattr(registry, "SCHEMA_VERSION", later)
    monkeypatch.setitem(schema.MIGRATIONS, later, ["ALTER TABLE files ADD COLUMN note text"])
    write(project / "docs" / "more.md", topic_text("sailing"))
    assert run("index", "-q").exit_code == 0
    with Index.open(pg_url) as index:
        assert index.manifest().database == before  # the same build, upgraded in place: no rebuild
        assert index.status(check_disk=False).files == 5
    import psycopg

    with psycopg.connect(pg_url) as conn:
        version = conn.execute(f'SELECT value FROM "{before}".meta WHERE key = %s', ("schema_version",)).fetchone()
        column = conn.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = %s AND table_name = 'files' "
            "AND column_name = 'note'", (before,)
        ).fetchone()  # fmt: skip
    assert version == (str(later),) and column is not None


def test_a_schema_1_build_is_read_as_it_is_and_upgraded_by_its_next_update(project: Path, pg_url: str) -> None:
    """Migration 2 (postings for BM25): a build of schema 1 answers queries from its tsvectors
    until its next update writes the postings, and ranks the same either way."""
    import psycopg

    assert run("index", "docs", "--index", pg_url, "-q").exit_code == 0
    queries = ["espresso crema", "gambit opening", "river"]

    def ranked() -> list[list[tuple[str, float]]]:
        with Index.open(pg_url) as index:
            return [[(h.chunk.path.name, round(h.score, 4)) for h in index.search(q, k=5, mode="lexical")]
                    for q in queries]  # fmt: skip

    before = ranked()
    build = Index.open(pg_url).manifest().database
    with psycopg.connect(pg_url, autocommit=True) as conn:  # as semsearch with schema 1 left it
        conn.execute(f'SET search_path = "{build}", public')
        conn.execute("DROP TABLE postings")
        conn.execute("CREATE INDEX chunks_lex ON chunks USING gin (lex)")
        conn.execute("DELETE FROM meta WHERE key IN ('chunk_ceiling', 'posted')")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    assert ranked() == before and any(before)  # read as it is (no postings)
    result = run("index", "-q")  # nothing changed: the update only migrates
    assert result.exit_code == 0, result.output
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'SET search_path = "{build}", public')
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        postings = conn.execute("SELECT count(*), count(DISTINCT chunk) FROM postings").fetchone()
        chunks = conn.execute("SELECT count(*) FROM chunks WHERE gen_removed IS NULL").fetchone()
        gin = conn.execute("SELECT to_regclass('chunks_lex')").fetchone()
    from semsearch.pgstore.schema import SCHEMA_VERSION

    assert version == (str(SCHEMA_VERSION),) and gin == (None,)
    assert postings is not None and chunks is not None and postings[1] == chunks[0] and postings[0] > chunks[0]
    assert ranked() == before  # the same ranking and scores, from the postings


def test_a_local_index_is_never_hidden_by_a_pointer(project: Path, pg_url: str) -> None:
    assert run("index", "docs", "-q").exit_code == 0  # a local index in ./.semsearch
    result = run("index", "docs", "--index", pg_url)
    assert result.exit_code == 2 and "holds a local index" in result.output and "--from" in result.output
    result = run("index", "--index", pg_url, "--from", ".semsearch", "-q")  # publishing from the project itself
    assert result.exit_code == 0, result.output
    assert not (project / ".semsearch" / "postgres.json").exists()
    assert run("query", "gambit", "-l", "-k", "1").stdout.strip() == "docs/chess.md"  # still the local one
    with Index.open() as index:
        assert index.engine == "local"
    result = run("query", "gambit", "-l", "-k", "1", "--index", pg_url)
    assert result.exit_code == 0 and result.stdout.strip() == "docs/chess.md"
