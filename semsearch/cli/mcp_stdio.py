"""The stdio transport of `semsearch mcp`: the SDK's, with a guard in front of its parser.

The SDK (mcp 2.3) parses each line with pydantic's JSON parser, which refuses two kinds of
valid-looking input that Python's own ``json`` reads: a lone surrogate escape (``"\\ud800"``)
and nesting deeper than its recursion limit (100,000 ``[`` in the params). The SDK then has no
request id to answer, and answers nothing: the client waits forever. The guard parses each line
first with the same parser; a line it refuses is answered here with a JSON-RPC error naming what
is wrong (with the request's id when one can be found) and not passed on. Replies are written
one whole line at a time, under one lock, whether the SDK or the guard writes them.

As the SDK's own transport does, fd 0 and fd 1 are taken for the protocol while serving: fd 0
then reads the null device and fd 1 writes to stderr, so a library that prints cannot break the
protocol.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import AsyncIterator
from typing import Any, BinaryIO

import anyio

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')
_VALUE = re.compile(rb'\s*:\s*(-?\d+|"(?:[^"\\]|\\.)*")')


class Replies:
    """stdout for the SDK (``write`` and ``flush``), one line per write under one lock."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._lock = anyio.Lock()

    async def write(self, text: str) -> None:
        data = text.encode("utf-8", "backslashreplace")
        async with self._lock:
            await anyio.to_thread.run_sync(self._put, data)

    def _put(self, data: bytes) -> None:
        self._out.write(data)
        self._out.flush()

    async def flush(self) -> None:
        """Each write is flushed already."""

    async def error(self, request_id: Any, code: int, message: str) -> None:
        reply = {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}
        await self.write(json.dumps(reply, separators=(",", ":")) + "\n")


class GuardedLines:
    """stdin for the SDK: the lines its parser reads; the others answered with an error here."""

    def __init__(self, source: BinaryIO, replies: Replies) -> None:
        self._source = anyio.wrap_file(source)
        self._replies = replies

    def __aiter__(self) -> AsyncIterator[str]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[str]:
        import pydantic_core

        async for raw in self._source:
            try:
                pydantic_core.from_json(raw)
            except ValueError as exc:
                problem = refusal(raw, exc)
                if problem is not None:
                    request_id, message = problem
                    _log(f"refused a message: {message}")
                    await self._replies.error(request_id, PARSE_ERROR, message)
                    continue
            yield raw.decode("utf-8", "replace")  # as the SDK's own reader decodes


def refusal(raw: bytes, exc: ValueError) -> tuple[Any, str] | None:
    """The id and the error message for a line pydantic cannot parse (the id None when none can
    be read: JSON-RPC's null); None for a blank line (left to the SDK)."""
    try:
        message = json.loads(raw)
    except RecursionError:
        return top_level_id(raw), "the message is nested too deeply"
    except ValueError as not_json:  # not JSON (or not UTF-8): JSON-RPC answers a parse error, id null
        if not raw.strip():
            return None  # a blank line: nothing was asked
        reason = str(not_json).splitlines()[0] if str(not_json) else type(not_json).__name__
        return top_level_id(raw), f"the message is not JSON: {reason}"
    request_id = message.get("id") if isinstance(message, dict) else None
    if isinstance(request_id, bool) or not isinstance(request_id, (int, str)):
        request_id = None
    text = str(exc).splitlines()[0]
    if "surrogate" in text or "hex escape" in text:
        return request_id, "a string holds a lone surrogate escape (such as \\ud800), which is not Unicode text"
    if "recursion" in text:
        return request_id, "the message is nested too deeply"
    return request_id, f"the message cannot be read: {text}"


def top_level_id(raw: bytes) -> Any:
    """The ``"id"`` of a JSON object too deep for a recursive parser (None when not found)."""
    depth = 0
    for token in _TOKEN.finditer(raw):
        lexeme = token.group()
        if lexeme in (b"[", b"{"):
            depth += 1
        elif lexeme in (b"]", b"}"):
            depth -= 1
        elif depth == 1 and lexeme == b'"id"':
            value = _VALUE.match(raw, token.end())
            if value is not None:
                try:
                    found = json.loads(value.group(1))
                except ValueError:
                    return None
                return found if isinstance(found, (int, str)) else None
    return None


def _log(line: str) -> None:
    sys.stderr.write(f"semsearch mcp: {line}\n")
    sys.stderr.flush()


async def run_guarded(server: Any) -> None:
    """Serve *server* (an MCPServer) over this process's stdin and stdout, guarded."""
    from mcp.server.stdio import stdio_server

    stdin_fd, stdout_fd = os.dup(0), os.dup(1)
    saved_in, saved_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    try:
        # stdin is never closed: a worker thread may still wait on it after the transport ends.
        source = os.fdopen(stdin_fd, "rb", closefd=False)
        with os.fdopen(stdout_fd, "wb") as out:
            replies = Replies(out)
            lines = GuardedLines(source, replies)
            async with stdio_server(stdin=lines, stdout=replies) as (read_stream, write_stream):  # type: ignore[arg-type]
                low = server._lowlevel_server
                await low.run(read_stream, write_stream, low.create_initialization_options())
    finally:
        os.dup2(saved_in, 0)
        os.dup2(saved_out, 1)
        os.close(saved_in)
        os.close(saved_out)
