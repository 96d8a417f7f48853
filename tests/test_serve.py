"""`semsearch serve`: a real server subprocess on loopback, against an index built with the real
bundled model, driven by real clients: httpx for the JSON API, the MCP SDK's streamable-HTTP
client for /mcp, and Debian's Chromium (through Playwright) for the page."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from conftest import write
from serve_process import Served
from test_e2e import run, semsearch_cmd
from typer.testing import CliRunner

from semsearch.cli import app

pytestmark = pytest.mark.model

TOKEN = "tok-3b9f1c7e2a8d4f60b5c1"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("serve")
    write(
        root / "docs" / "tls.md",
        "# Serving over HTTPS\n\nTo enable HTTPS, obtain a TLS certificate from a "
        "certificate authority, then point the server's ssl_certificate setting at the chain.\n",
    )
    write(
        root / "docs" / "baking.md",
        "# Sourdough\n\nMix flour, water and starter. Let the dough ferment "
        "overnight and bake it in a preheated Dutch oven.\n",
    )
    write(
        root / "docs" / "rye.md",
        "# Rye bread\n\nRye flour holds less gluten, so the dough stays sticky. "
        "Bake it in a tin. Sourdough starter gives rye its sour taste.\n",
    )
    write(
        root / "src" / "retry.py",
        "def call_with_backoff(func, attempts=5):\n"
        '    """Retry func with exponentially growing waits between attempts."""\n',
    )
    write(root / "secret.txt", "not indexed\n")
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("SEMSEARCH_INDEX", None)
    env.pop("SEMSEARCH_SERVE_TOKEN", None)
    result = run(["index", "docs", "src"], cwd=root, env=env)
    assert result.returncode == 0, result.stderr.decode()
    return root, env


@pytest.fixture(scope="module")
def open_server(project: tuple[Path, dict[str, str]]) -> Iterator[Served]:
    root, env = project
    server = Served(root, env)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def token_server(project: tuple[Path, dict[str, str]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root, env = project
    token_file = tmp_path_factory.mktemp("token") / "token"
    token_file.write_text(TOKEN + "\n")
    server = Served(root, env, "--token-file", str(token_file))
    yield server
    server.stop()


def test_the_json_api_answers_as_the_mcp_tools_do(open_server: Served) -> None:
    with httpx.Client(base_url=open_server.url, timeout=60) as http:
        got = http.get("/search", params={"query": "how do I set up a TLS certificate", "k": 2})
        assert got.status_code == 200 and got.headers["content-type"] == "application/json"
        body = got.json()
        assert body["query"] == "how do I set up a TLS certificate" and len(body["hits"]) == 2
        first = body["hits"][0]
        assert first["path"] == os.path.join("docs", "tls.md") and first["location"]["kind"] == "line"
        start, end = first["highlight"]
        assert "TLS certificate" in first["text"][start:end]
        posted = http.post("/search", json={"query": "bread dough", "types": ["md"], "k": 3}).json()
        assert posted["hits"] and all(h["path"].endswith(".md") for h in posted["hits"])
        repeated = http.get("/search", params=[("query", "retry"), ("types", "py"), ("types", "md")]).json()
        assert {h["path"] for h in repeated["hits"]} >= {os.path.join("src", "retry.py")}
        scoped = http.get("/search", params={"query": "bread", "paths": "src"}).json()
        assert all(h["path"].startswith("src") for h in scoped["hits"])
        similar = http.get("/similar", params={"path": "docs/baking.md", "k": 2}).json()
        assert similar["target"] == "docs/baking.md" and similar["hits"][0]["path"] == os.path.join("docs", "rye.md")
        status = http.get("/status").json()
        assert status["files"] == 4 and status["model"] == "all-MiniLM-L6-v2"
        dups = http.get("/duplicates", params={"min_score": 0.5}).json()
        assert set(dups) == {"groups", "files", "chunks_checked"}
        topics = http.get("/topics", params={"min_size": 2, "files": "true"}).json()
        assert topics["total"] == 4 and topics["outliers"] + sum(t["size"] for t in topics["topics"]) == 4
        spec = http.get("/openapi.json").json()
        assert spec["openapi"].startswith("3.1") and set(spec["paths"]) == {
            "/search",
            "/similar",
            "/status",
            "/duplicates",
            "/topics",
        }
        names = {p["name"] for p in spec["paths"]["/search"]["get"]["parameters"]}
        assert {"query", "k", "mode", "paths", "types", "rerank"} <= names
        assert "security" not in spec  # no token: none to give


def test_bad_calls_get_one_line_and_the_right_status(open_server: Served) -> None:
    with httpx.Client(base_url=open_server.url, timeout=60) as http:
        cases = [
            (http.get("/search", params={"query": "x", "k": 999}), 422, "k must be between 1 and 200"),
            (http.get("/search", params={"query": "x", "colour": "red"}), 422, "colour: not an argument"),
            (http.get("/search"), 422, "query: a value is required"),
            (http.get("/search", params={"query": "x", "mode": "fuzzy"}), 422, "mode: Input should be"),
            (http.post("/search", content=b"[1, 2]", headers={"content-type": "application/json"}), 422, "JSON object"),
            (http.get("/similar", params={"path": "../../etc/passwd"}), 403, "outside the project"),
            (http.get("/search", params={"query": "x", "paths": "../.."}), 403, "outside the project"),
            (http.get("/similar", params={"path": "secret.txt"}), 404, "is not in the index"),
            (http.post("/search", json={"query": "x" * 70_000}), 413, "over 65536 bytes"),
            (http.get("/status", headers={"host": "rebound.example.com"}), 403, "loopback address"),
        ]
        for reply, status, words in cases:
            assert reply.status_code == status, (reply.status_code, reply.text)
            error = reply.json()["error"]
            assert words in error and "\n" not in error, error
        assert http.post("/index").status_code in (404, 405)  # only with --allow-index
        assert http.get("/search", params={"query": "sourdough"}).status_code == 200  # it lived on


def test_a_slow_client_stalls_no_one_and_many_readers_are_answered(open_server: Served) -> None:
    host, port = open_server.url.split("//")[1].rstrip("/").split(":")
    slow = socket.create_connection((host, int(port)))
    # Headers promising a body that never comes.
    slow.sendall(f"POST /search HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                 "Content-Length: 1000\r\n\r\n{\"query\":".encode())  # fmt: skip
    answers: list[int] = []

    def reader(n: int) -> None:
        with httpx.Client(base_url=open_server.url, timeout=30) as http:
            for _ in range(3):
                answers.append(http.get("/search", params={"query": f"bread question {n}", "k": 3}).status_code)

    started = time.monotonic()
    threads = [threading.Thread(target=reader, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert answers == [200] * 36 and time.monotonic() - started < 60
    slow.settimeout(30)
    data = b""
    while chunk := slow.recv(4096):  # refused once the body is overdue, and closed
        data += chunk
    reply = data.decode()
    assert reply.startswith("HTTP/1.1 408") and "too slowly" in reply
    slow.close()


def test_mcp_over_streamable_http(open_server: Served, token_server: Served) -> None:
    import httpx2
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def search(url: str, headers: dict[str, str]) -> tuple[list[str], Any]:
        async with (
            httpx2.AsyncClient(headers=headers, timeout=60) as client,
            streamable_http_client(url + "mcp", http_client=client) as streams,
            ClientSession(streams[0], streams[1]) as session,
        ):
            await session.initialize()
            tools = await session.list_tools()
            result = await session.call_tool("search", {"query": "sourdough starter", "k": 1})
            return sorted(t.name for t in tools.tools), result

    names, result = anyio.run(search, open_server.url, {})
    assert names == ["duplicates", "search", "similar", "status", "topics"]
    assert result.structured_content["hits"][0]["path"] in (
        os.path.join("docs", "baking.md"),
        os.path.join("docs", "rye.md"),
    )
    _, keyed = anyio.run(search, token_server.url, {"Authorization": f"Bearer {TOKEN}"})
    assert keyed.structured_content["hits"]
    with httpx.Client(timeout=30) as http:
        refused = http.post(token_server.url + "mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")


def test_the_token_is_required_everywhere_and_never_shown(token_server: Served) -> None:
    with httpx.Client(base_url=token_server.url, timeout=60, follow_redirects=False) as http:
        assert http.get("/search", params={"query": "bread"}).json() == {"error": "a token is required"}
        wrong = http.get("/status", headers={"Authorization": "Bearer " + "x" * 24})
        assert wrong.status_code == 401 and wrong.json() == {"error": "the token is not valid"}
        right = http.get("/status", headers={"Authorization": f"Bearer {TOKEN}"})
        assert right.status_code == 200 and right.json()["files"] == 4
        assert http.get("/").headers["location"] == "/login"
        assert http.get("/login").status_code == 200
        failed = http.post("/login", data={"token": "wrong-token-1234567890"})
        assert failed.status_code == 401 and "not the token" in failed.text and "set-cookie" not in failed.headers
        ok = http.post("/login", data={"token": TOKEN})
        cookie = ok.headers["set-cookie"]
        assert ok.status_code == 303 and "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert TOKEN not in cookie  # the cookie is derived from the token, not the token
        value = cookie.split(";")[0].split("=", 1)[1]
        for given, status in ((TOKEN, 303), (value, 200)):  # the token itself is no cookie
            assert http.get("/", headers={"cookie": f"semsearch_token={given}"}).status_code == status
        assert (
            http.get("/search", params={"query": "rye"}, headers={"cookie": f"semsearch_token={value}"}).status_code
            == 200
        )
        spec = http.get("/openapi.json").json()
        assert spec["security"] == [{"bearer": []}]
    assert TOKEN not in token_server.first_line


def test_refusals_before_serving(project: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    root, env = project
    short = tmp_path / "short"
    short.write_text("abc\n")
    for args, words in (
        (["--host", "0.0.0.0"], "serving on 0.0.0.0 needs a token"),
        (["--token-file", str(short)], "at least 16 printable characters"),
        (["--token-file", str(tmp_path / "none")], "No such file"),
        (["--port", "70000"], "--port must be between 0 and 65535"),
    ):
        result = CliRunner().invoke(app, ["serve", *args])
        assert result.exit_code == 2 and words in result.stderr and len(result.stderr.strip().splitlines()) == 1, (
            args, result.stderr)  # fmt: skip
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = subprocess.run([*semsearch_cmd(), "serve", "--port", str(port)], cwd=root, env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in done.stderr


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("SEMSEARCH_REQUIRE_BROWSER"), reason="no chromium here")
def test_the_page_in_a_real_browser(
    project: tuple[Path, dict[str, str]], open_server: Served, token_server: Served, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    root = project[0]

    assert CHROMIUM is not None, "SEMSEARCH_REQUIRE_BROWSER is set but chromium is not installed"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(open_server.url)
            page.locator("main").click()  # away from the box: "/" comes back to it
            page.keyboard.press("/")
            page.keyboard.type("how do I get a TLS certificate")
            page.keyboard.press("Enter")
            expect(page.locator("#status")).to_have_text(re.compile(r"^\d+ hits? for"))
            first = page.locator(".hit").first
            link = first.locator(".where a")
            expect(link).to_have_text(re.compile(r"^docs/tls\.md:\d+$"))  # on loopback: a link that opens the file
            assert link.get_attribute("href") == f"vscode://file{root}/{link.inner_text()}"
            expect(first.locator("mark")).to_contain_text("TLS certificate")
            assert "q=" not in page.url and "query=how+do+I+get" in page.url  # the search is in the address
            page.screenshot(path=str(tmp_path / "page.png"))
            # A filter: only Python files.
            page.locator("#filters summary").click()
            page.fill("#types", "py")
            page.locator("#search button[type=submit]").click()
            expect(page.locator(".hit .where").first).to_contain_text("src/retry.py")
            assert all(
                t.startswith("src/retry.py") for t in page.locator(".hit .where a, .hit .where code").all_inner_texts()
            )
            # "similar" from the keyboard: j to the first hit, s.
            page.fill("#types", "")
            page.fill("#q", "sourdough starter")
            page.keyboard.press("Enter")
            expect(page.locator(".hit").first).to_be_visible()
            page.locator("body").click(position={"x": 5, "y": 400})
            page.keyboard.press("j")
            page.keyboard.press("s")
            expect(page.locator("#status")).to_have_text(re.compile(r"^Passages like docs/"))
            page.go_back()
            expect(page.locator("#status")).to_have_text(re.compile(r"hits? for “sourdough starter”"))
            assert problems == []

            # With a token: the login form first.
            login = browser.new_page()
            login.goto(token_server.url)
            expect(login.locator("#token")).to_be_visible()
            login.fill("#token", TOKEN)
            login.keyboard.press("Enter")
            login.fill("#q", "rye bread in a tin")
            login.keyboard.press("Enter")
            expect(login.locator(".hit .where").first).to_contain_text("docs/rye.md")
        finally:
            browser.close()
    assert (tmp_path / "page.png").stat().st_size > 10_000


def test_two_servers_over_one_postgres_index_answer_alike_while_a_writer_updates_it(
    project: tuple[Path, dict[str, str]], pg_url: str, tmp_path: Path
) -> None:
    _, env = project
    env = {**env, "PGPASSWORD": os.environ["PGPASSWORD"]}
    work = tmp_path / "work"
    write(work / "tides.md", "# Tides\n\nSpring tides come with the new and full moon.\n")
    assert run(["index", ".", "--index", pg_url], cwd=work, env=env).returncode == 0
    away = tmp_path / "elsewhere"  # the servers run from a folder of no index of their own
    away.mkdir()
    servers = [Served(away, env, "--index", pg_url), Served(away, env, "--index", pg_url)]
    try:
        failures: list[str] = []
        stop = threading.Event()

        def reader(url: str) -> None:
            with httpx.Client(base_url=url, timeout=60) as http:
                while not stop.is_set():
                    reply = http.get("/search", params={"query": "moon tides", "k": 3})
                    if reply.status_code != 200:
                        failures.append(reply.text)

        threads = [threading.Thread(target=reader, args=(s.url,)) for s in servers for _ in range(2)]
        for t in threads:
            t.start()
        write(work / "volcano.md", "# Volcanoes\n\nLava flows from the eruption buried the village.\n")
        done = run(["index", "volcano.md", "--index", pg_url], cwd=work, env=env)
        stop.set()
        for t in threads:
            t.join(timeout=60)
        assert done.returncode == 0, done.stderr.decode()
        assert failures == []
        answers = []
        for server in servers:
            with httpx.Client(base_url=server.url, timeout=60) as http:
                body = http.get("/search", params={"query": "volcanic eruption lava", "k": 1, "mode": "lexical"}).json()
                answers.append([h["path"] for h in body["hits"]])
                assert http.get("/status").json()["files"] == 2
        assert answers[0] == answers[1] == ["volcano.md"]
    finally:
        for server in servers:
            server.stop()


def test_index_over_http_only_with_allow_index(project: tuple[Path, dict[str, str]], open_server: Served) -> None:
    root, env = project
    server = Served(root, env, "--allow-index")
    try:
        with httpx.Client(base_url=server.url, timeout=120) as http:
            assert http.get("/index").status_code == 405  # a write is a POST
            done = http.post("/index")
            assert done.status_code == 200 and done.json()["unchanged"] == 4 and done.json()["indexed"] == 0
            assert "/index" in http.get("/openapi.json").json()["paths"]
    finally:
        server.stop()
    with httpx.Client(base_url=open_server.url, timeout=60) as http:
        assert http.post("/index").status_code in (404, 405)
        assert "/index" not in http.get("/openapi.json").json()["paths"]
