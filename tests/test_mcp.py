"""`semsearch mcp`: the official SDK's client drives a real server subprocess over stdio, against
an index built with the real bundled model."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import write
from test_e2e import run, semsearch_cmd

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("mcp")
    write(root / "docs" / "tls.md", "# Serving over HTTPS\n\nTo enable HTTPS, obtain a TLS certificate from a "
          "certificate authority, then point the server's ssl_certificate setting at the chain.\n")
    write(root / "docs" / "baking.md", "# Sourdough\n\nMix flour, water and starter. Let the dough ferment "
          "overnight and bake it in a preheated Dutch oven.\n")
    write(root / "src" / "retry.py", "def call_with_backoff(func, attempts=5):\n"
          "    \"\"\"Retry func with exponentially growing waits between attempts.\"\"\"\n")
    env = {**os.environ, "SEMSEARCH_CACHE": str(root / "cache"), "NO_COLOR": "1"}
    env.pop("SEMSEARCH_INDEX", None)
    result = run(["index", "docs", "src"], cwd=root, env=env)
    assert result.returncode == 0, result.stderr.decode()
    return root, env


def with_client(cwd: Path, env: dict[str, str], body: Callable[[Any], Any], *args: str) -> Any:
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    command = semsearch_cmd()
    params = StdioServerParameters(command=command[0], args=[*command[1:], "mcp", *args], cwd=str(cwd), env=env)

    async def main() -> Any:
        with open(os.devnull, "w") as errlog:
            async with stdio_client(params, errlog=errlog) as streams, ClientSession(*streams) as session:
                await session.initialize()
                return await body(session)

    return anyio.run(main)


def hits(result: Any) -> list[dict]:
    assert not result.is_error, result.content
    return result.structured_content["hits"]


def test_tools_search_filters_similar_status_and_bad_calls(project: tuple[Path, dict[str, str]]) -> None:
    root, env = project

    async def body(session: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        tools = await session.list_tools()
        out["tools"] = {t.name: t for t in tools.tools}
        out["search"] = await session.call_tool("search", {"query": "how do I set up a TLS certificate", "k": 3})
        out["typed"] = await session.call_tool("search", {"query": "retry with backoff", "types": ["md"]})
        out["scoped"] = await session.call_tool("search", {"query": "bread dough", "paths": ["src"]})
        out["similar"] = await session.call_tool("similar", {"path": "docs/tls.md", "k": 2})
        out["status"] = await session.call_tool("status", {})
        out["bad_k"] = await session.call_tool("search", {"query": "x", "k": 0})
        out["bad_type"] = await session.call_tool("search", {"query": "x", "types": ["nope"]})
        out["wrong_kind"] = await session.call_tool("search", {"query": 5})
        out["huge"] = await session.call_tool("search", {"query": "word " * 5000})
        out["missing_file"] = await session.call_tool("similar", {"path": "docs/none.md"})
        out["bad_mode"] = await session.call_tool("search", {"query": "x", "mode": "fuzzy"})
        out["no_query"] = await session.call_tool("search", {})
        out["no_index_tool"] = await session.call_tool("index", {})
        out["dups"] = await session.call_tool("duplicates", {"min_score": 0.1, "limit": 1})
        out["bad_limit"] = await session.call_tool("duplicates", {"limit": 0})
        out["topics"] = await session.call_tool("topics", {"min_size": 2, "passages": 1})
        out["bad_topics"] = await session.call_tool("topics", {"min_size": 1})
        out["outside"] = await session.call_tool("similar", {"path": "../elsewhere.md"})
        out["after"] = await session.call_tool("search", {"query": "sourdough starter", "k": 1})
        return out

    out = with_client(root, env, body)
    assert set(out["tools"]) == {"search", "similar", "status", "duplicates", "topics"}  # no index without --allow-index
    schema = out["tools"]["search"].input_schema["properties"]
    assert {"query", "k", "mode", "paths", "globs", "types", "changed_within"} <= set(schema)
    # The text content is the structured content as JSON (for clients that read text only).
    assert json.loads(out["search"].content[0].text) == out["search"].structured_content
    first = hits(out["search"])[0]
    assert first["path"] == os.path.join("docs", "tls.md") and first["location"]["kind"] == "line"
    assert {"score", "scores", "text", "context", "title"} <= set(first)
    assert all(h["path"].endswith(".md") for h in hits(out["typed"]))
    assert all(h["path"].startswith("src") for h in hits(out["scoped"]))
    assert all(h["path"] != os.path.join("docs", "tls.md") for h in hits(out["similar"]))
    assert out["status"].structured_content["files"] == 3
    found = out["topics"].structured_content
    assert not out["topics"].is_error and found["total"] >= 3
    assert found["outliers"] + sum(t["size"] for t in found["topics"]) == found["total"]
    assert all(len(t["passages"]) <= 1 and t["name"] for t in found["topics"])
    assert out["bad_topics"].is_error and "min_size must be at least 2" in out["bad_topics"].content[0].text
    assert out["bad_k"].is_error and "k must be between 1 and" in out["bad_k"].content[0].text
    assert out["bad_type"].is_error and "unknown file type 'nope' for types" in out["bad_type"].content[0].text
    assert out["wrong_kind"].is_error and out["huge"].is_error and out["missing_file"].is_error
    assert out["missing_file"].content[0].text.startswith(os.path.join("docs", "none.md") + " is not in the index")
    # The SDK's own argument checks answer in one line too, naming the argument.
    for key, start in (("bad_mode", "mode: Input should be"), ("no_query", "query: a value is required")):
        text = out[key].content[0].text
        assert out[key].is_error and text.startswith(start) and "\n" not in text, text
    assert "--allow-index" in out["no_index_tool"].content[0].text
    dups = out["dups"].structured_content
    assert set(dups) == {"groups", "files", "chunks_checked"} and len(dups["groups"]) == 1  # at most limit
    group = dups["groups"][0]
    assert group["size"] == len(group["passages"]) >= 2 and group["files"] >= 2 and group["min_score"] >= 0.1
    assert all(not os.path.isabs(p["path"]) for p in group["passages"])
    assert out["bad_limit"].is_error and "limit must be between 1 and" in out["bad_limit"].content[0].text
    assert out["outside"].is_error and out["outside"].content[0].text == "../elsewhere.md is outside the project"
    assert hits(out["after"])[0]["path"] == os.path.join("docs", "baking.md")  # the server lived on


def test_a_missing_index_is_reported_per_call_and_a_new_one_is_picked_up(
    project: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    _, env = project
    write(tmp_path / "notes" / "kiln.md", "# Kilns\n\nFire the kiln slowly to avoid cracking the glaze.\n")

    async def body(session: Any) -> tuple[Any, Any]:
        before = await session.call_tool("search", {"query": "kiln firing"})
        done = await anyio.to_thread.run_sync(lambda: run(["index", "notes"], cwd=tmp_path, env=env))
        assert done.returncode == 0, done.stderr.decode()
        return before, await session.call_tool("search", {"query": "kiln firing", "k": 1})

    before, after = with_client(tmp_path, env, body)
    assert before.is_error and "no index" in before.content[0].text.lower()
    assert hits(after)[0]["path"] == os.path.join("notes", "kiln.md")


@pytest.mark.parametrize("engine", ["local", "postgres"])
def test_an_index_updated_and_rebuilt_under_the_running_server(
    tmp_path: Path, project: tuple[Path, dict[str, str]], engine: str, request: pytest.FixtureRequest
) -> None:
    """The next call after another process's update (and rebuild) answers from the new state; on
    PostgreSQL, `semsearch mcp --index postgresql://...` from a folder that is not the project."""
    _, env = project
    work = tmp_path / "work"
    write(work / "a.md", "# Tides\n\nSpring tides come with the new and full moon.\n")
    where: list[str] = []
    if engine == "postgres":
        where = ["--index", request.getfixturevalue("pg_url")]  # sets PGPASSWORD
        env = {**env, "PGPASSWORD": os.environ["PGPASSWORD"]}
    assert run(["index", ".", *where], cwd=work, env=env).returncode == 0
    served_from = tmp_path / "elsewhere" if where else work
    served_from.mkdir(exist_ok=True)

    async def body(session: Any) -> list[Any]:
        out = [await session.call_tool("search", {"query": "volcanic eruption lava", "k": 1, "mode": "lexical"})]
        write(work / "b.md", "# Volcanoes\n\nLava flows from the eruption buried the village.\n")
        done = await anyio.to_thread.run_sync(lambda: run(["index"], cwd=work, env=env))
        assert done.returncode == 0, done.stderr.decode()
        out.append(await session.call_tool("search", {"query": "volcanic eruption lava", "k": 1, "mode": "lexical"}))
        rebuilt = await anyio.to_thread.run_sync(lambda: run(["index", "--rebuild"], cwd=work, env=env))
        assert rebuilt.returncode == 0, rebuilt.stderr.decode()
        out.append(await session.call_tool("search", {"query": "spring tides moon", "k": 1}))
        out.append(await session.call_tool("status", {}))
        return out

    before, updated, after_rebuild, status = with_client(served_from, env, body, *where)
    assert hits(before) == []
    assert hits(updated)[0]["path"] == "b.md"
    assert hits(after_rebuild)[0]["path"] == "a.md"
    assert not status.is_error and status.structured_content["files"] == 2


def test_index_tool_only_with_allow_index(tmp_path: Path, project: tuple[Path, dict[str, str]]) -> None:
    _, env = project
    write(tmp_path / "a.md", "# Tides\n\nSpring tides come with the new and full moon.\n")
    assert run(["index", "."], cwd=tmp_path, env=env).returncode == 0
    write(tmp_path / "c.md", "# Comets\n\nA comet's tail points away from the sun.\n")

    async def body(session: Any) -> tuple[Any, Any]:
        names = {t.name for t in (await session.list_tools()).tools}
        assert "index" in names
        summary = await session.call_tool("index", {})
        return summary, await session.call_tool("search", {"query": "comet tail sun", "k": 1})

    summary, found = with_client(tmp_path, env, body, "--allow-index")
    assert not summary.is_error and summary.structured_content["indexed"] == 1
    assert hits(found)[0]["path"] == "c.md"


def test_malformed_messages_get_errors_not_a_crash(project: tuple[Path, dict[str, str]]) -> None:
    root, env = project
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    lines = [b"this is not json\n", b'{"jsonrpc": "2.0", "id": 7, "method": 12}\n', json.dumps(init).encode() + b"\n"]
    proc = subprocess.run(
        [*semsearch_cmd(), "mcp"], cwd=root, env=env, input=b"".join(lines), capture_output=True, timeout=120
    )
    replies = [json.loads(line) for line in proc.stdout.decode().splitlines() if line.strip()]
    answered = {r.get("id") for r in replies}
    assert 1 in answered, proc.stdout.decode() + proc.stderr.decode()  # still serving after the junk
    assert "Traceback" not in proc.stderr.decode()


def test_mcp_watch_finds_a_file_edited_on_disk(tmp_path: Path, project: tuple[Path, dict[str, str]]) -> None:
    _, env = project
    write(tmp_path / "a.md", "# Tides\n\nSpring tides come with the new and full moon.\n")
    assert run(["index", "."], cwd=tmp_path, env=env).returncode == 0

    async def body(session: Any) -> tuple[Any, Any]:
        ask = {"query": "quokka survey lava", "k": 1, "mode": "lexical"}
        before = await session.call_tool("search", ask)
        write(tmp_path / "a.md", "# Tides\n\nThe quokka survey counted lava flows near the village.\n")
        with anyio.fail_after(120):
            while True:  # the watcher updates the index; the next search sees it
                after = await session.call_tool("search", ask)
                if hits(after):
                    return before, after
                await anyio.sleep(0.2)

    before, after = with_client(tmp_path, env, body, "--watch")
    assert hits(before) == []
    assert hits(after)[0]["path"] == "a.md" and "quokka" in hits(after)[0]["text"]


def test_a_file_name_that_is_not_utf8_is_answered_escaped(tmp_path: Path, project: tuple[Path, dict[str, str]]) -> None:
    _, env = project
    name = os.fsdecode(b"caf\xe9-notes.md")
    write(tmp_path / name, "# Espresso\n\nThe espresso machine needs descaling every month.\n")
    assert run(["index", "."], cwd=tmp_path, env=env).returncode == 0

    async def body(session: Any) -> Any:
        return await session.call_tool("search", {"query": "descaling the espresso machine", "k": 1})

    found = hits(with_client(tmp_path, env, body))
    assert found[0]["path"] == "caf\\xe9-notes.md" and "descaling" in found[0]["text"]


def test_messages_the_sdk_cannot_parse_are_answered_and_the_server_goes_on(
    project: tuple[Path, dict[str, str]],
) -> None:
    # A lone surrogate escape and 100,000-deep params: pydantic's parser refuses them and the SDK
    # answered nothing (issue 23); the guard in front of it answers with the request's id.
    root, env = project
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }

    def call(request_id: int, tool: str, arguments: str) -> bytes:
        return (
            b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"%s","arguments":%s}}\n'
            % (request_id, tool.encode(), arguments.encode())
        )

    deep = "[" * 100_000 + "]" * 100_000
    lines = [
        json.dumps(init).encode() + b"\n",
        b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n',
        call(2, "search", '{"query":"\\ud800 bread"}'),
        call(3, "search", '{"query":"bread","globs":["\\udc00*"]}'),
        call(4, "similar", '{"path":"docs/\\ud800.md"}'),
        call(5, "search", '{"query":"bread","paths":' + deep + "}"),
        b'{"jsonrpc":"2.0","id":6,"method":"tools/call","x":' + deep.encode() + b"}\n",
        call(7, "search", '{"query":"sourdough starter","k":1,"globs":["**********x","*.md"]}'),
        # Not JSON at all, not UTF-8, a raw NUL in a string: a parse error each (id null when
        # none can be read), never silence.
        b"not json at all\n",
        b'\xff\xfe{"x": 1}\n',
        b'{"jsonrpc":"2.0","id":8,"method":"ping","params":{"x":"a\x00b"}}\n',
    ]
    proc = subprocess.Popen(
        [*semsearch_cmd(), "mcp"], cwd=root, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(b"".join(lines))
    proc.stdin.flush()
    replies: dict[int, Any] = {}
    unnamed: list[Any] = []  # answers with id null
    timer = threading.Timer(300, proc.kill)  # a hang ends the test, not the run
    timer.start()
    try:
        while len(replies) + len(unnamed) < 10:  # stdin stays open until every reply is in (EOF ends the server)
            line = proc.stdout.readline()
            assert line, f"no answer to {sorted(set(range(1, 9)) - set(replies))} ({len(unnamed)} of 2 unnamed)"
            reply = json.loads(line)
            if reply["id"] is None:
                unnamed.append(reply)
            else:
                replies[reply["id"]] = reply
        proc.stdin.close()
        stderr = proc.stderr.read().decode()
        proc.wait()
    finally:
        timer.cancel()
    assert set(replies) == {1, 2, 3, 4, 5, 6, 7, 8}
    assert replies[8]["error"]["code"] == -32700 and "not JSON" in replies[8]["error"]["message"]
    assert len(unnamed) == 2 and all(r["error"]["code"] == -32700 for r in unnamed)
    for request_id in (2, 3, 4):
        assert "lone surrogate" in replies[request_id]["error"]["message"]
    for request_id in (5, 6):
        assert "nested too deeply" in replies[request_id]["error"]["message"]
    # The 11-star glob that hung the server (pathspec's backtracking) is answered, with the rest.
    assert "result" in replies[7], replies[7]
    found = replies[7]["result"]["structuredContent"]["hits"]
    assert [h["path"] for h in found] == [os.path.join("docs", "baking.md")]
    assert "Traceback" not in stderr


SLOW_SERVER = """
import sys, time, anyio
from pathlib import Path
from semsearch.cli.mcp_server import build_server, threaded
from semsearch.cli.mcp_stdio import run_guarded

server = build_server(None, timeout=float(sys.argv[1]))
gate = Path(sys.argv[2])

@server.tool()
@threaded
def slow() -> str:
    (gate / "started").touch()
    while not (gate / "release").exists():  # a call stuck in C code would look the same
        time.sleep(0.01)
    return "done"

anyio.run(run_guarded, server)
"""


def test_a_call_over_its_time_limit_is_answered_and_others_are_served_meanwhile(
    project: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    import sys

    root, env = project
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    params = StdioServerParameters(
        command=sys.executable, args=["-c", SLOW_SERVER, "0.5", str(tmp_path)], cwd=str(root), env=env
    )

    async def main() -> tuple[Any, Any, Any]:
        with open(os.devnull, "w") as errlog:
            async with stdio_client(params, errlog=errlog) as streams, ClientSession(*streams) as session:
                await session.initialize()

                async def answered(tool: str, arguments: dict[str, Any]) -> Any:
                    # A loaded machine may take over 0.5 s (the first search loads the model,
                    # which goes on after the call is answered): asked again until it answers.
                    for _ in range(200):
                        result = await session.call_tool(tool, arguments)
                        if not result.is_error or "time limit" not in result.content[0].text:
                            return result
                    return result

                slow = await session.call_tool("slow", {})
                assert (tmp_path / "started").exists() and not (tmp_path / "release").exists()
                # The slow call's thread still runs (it cannot be stopped): other calls are served.
                during = await answered("search", {"query": "sourdough starter", "k": 1})
                status = await answered("status", {})
                (tmp_path / "release").touch()
                return slow, during, status

    slow, during, status = anyio.run(main)
    assert slow.is_error and "ran over its time limit of 0.5 s" in slow.content[0].text
    assert hits(during)[0]["path"] == os.path.join("docs", "baking.md")
    assert not status.is_error and status.structured_content["files"] == 3


def test_absurd_numbers_and_dates_get_a_clear_answer(project: Path) -> None:
    root, env = project

    async def body(session: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        out["ancient"] = await session.call_tool("search", {"query": "bread", "changed_before": "0001-01-01"})
        out["future"] = await session.call_tool("search", {"query": "bread", "changed_before": "9999-12-31", "k": 1})
        out["bad_date"] = await session.call_tool("search", {"query": "bread", "changed_before": "someday"})
        for name, line in (("negative", -(10**30)), ("zero", 0), ("huge", 10**30)):
            out[name] = await session.call_tool("similar", {"path": "docs/tls.md", "line": line})
        out["huge_k"] = await session.call_tool("search", {"query": "bread", "k": 10**30})
        out["line_ok"] = await session.call_tool("similar", {"path": "docs/tls.md", "line": 1, "k": 1})
        return out

    out = with_client(root, env, body)
    assert hits(out["ancient"]) == []
    assert hits(out["future"])[0]["path"] == os.path.join("docs", "baking.md")
    for key, start in (
        ("bad_date", "changed_before: cannot read 'someday' as a date"),
        ("negative", "line must be between 1 and"),
        ("zero", "line must be between 1 and"),
        ("huge", "line must be between 1 and"),
        ("huge_k", "k must be between 1 and 200"),
    ):
        text = out[key].content[0].text
        assert out[key].is_error and text.startswith(start) and "\n" not in text, (key, text)
        assert "Error executing tool" not in text
    assert len(hits(out["line_ok"])) == 1


def test_an_index_kept_elsewhere_answers_paths_as_the_user_sees_them(
    tmp_path: Path, project: tuple[Path, dict[str, str]]
) -> None:
    _, env = project
    write(tmp_path / "data" / "notes" / "page-0572.rst", "Tides\n=====\n\nSpring tides come with the new moon.\n")
    write(tmp_path / "data" / "notes" / "page-0628.rst", "Bread\n=====\n\nKnead the dough and bake the bread.\n")
    (tmp_path / "proj").mkdir()
    elsewhere = str(tmp_path / "elsewhere" / "index")
    done = run(["index", "notes", "--index", elsewhere], cwd=tmp_path / "data", env=env)
    assert done.returncode == 0, done.stderr.decode()

    async def body(session: Any) -> dict[str, Any]:
        return {
            "search": await session.call_tool("search", {"query": "knead and bake bread", "k": 1}),
            "similar": await session.call_tool("similar", {"path": "page-0572.rst", "line": 3, "k": 1}),
            "paths": await session.call_tool("search", {"query": "moon", "paths": ["page-0572.rst"], "k": 5}),
            "glob": await session.call_tool("search", {"query": "moon", "globs": ["/page-06*"], "k": 5}),
            "missing": await session.call_tool("similar", {"path": "page-9999.rst"}),
        }

    out = with_client(tmp_path / "proj", env, body, "--index", elsewhere)
    assert [h["path"] for h in hits(out["search"])] == ["page-0628.rst"]
    assert [h["path"] for h in hits(out["similar"])] == ["page-0628.rst"]
    assert [h["path"] for h in hits(out["paths"])] == ["page-0572.rst"]
    assert [h["path"] for h in hits(out["glob"])] == ["page-0628.rst"]
    assert out["missing"].content[0].text.startswith("page-9999.rst is not in the index")


def test_the_watcher_survives_an_update_that_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], fake_model
) -> None:
    """A failed update (any exception: a bug deleting the last file once crashed the sketch) is
    one line on stderr, and the watcher starts again; it never dies and leaves the server to
    answer from an index no one keeps fresh."""
    import threading

    from semsearch.api import Index
    from semsearch.cli import mcp_server

    write(tmp_path / "notes" / "a.txt", "Kingfishers dive.\n")
    with Index.create(tmp_path / ".semsearch", provider=fake_model) as index:
        index.update([tmp_path / "notes"])
    calls: list[int] = []
    stop = threading.Event()

    def watch(self: Index, **kwargs: object) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("strides is incompatible with shape of requested array")
        stop.set()

    monkeypatch.setattr(Index, "watch", watch)
    monkeypatch.setattr(mcp_server, "WATCH_RETRY", 0.01)
    mcp_server.watch_index(tmp_path / ".semsearch", stop)
    assert len(calls) == 2
    err = capsys.readouterr().err
    assert "the update failed (ValueError: strides is incompatible" in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if "failed" in line]) == 1
