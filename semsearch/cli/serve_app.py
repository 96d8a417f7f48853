"""`semsearch serve`: the index over HTTP, for people with a browser and programs and agents that do
not run semsearch themselves.

One process keeps the index open and its query model loaded (the MCP server's
:class:`~semsearch.cli.mcp_server.IndexService`: updates and rebuilds are picked up) and answers,
on the MCP SDK's own stack (Starlette, run by uvicorn):

- ``GET|POST /search``, ``/similar``, ``/status``, ``/duplicates``, ``/topics`` (``POST /index`` with
  ``--allow-index``): the MCP tools, called the same way. Their arguments come as query
  parameters (a list as the parameter repeated) or as a JSON body, and their answers are the
  tools' structured results. A failed call answers ``{"error": "one line"}`` with 422 (the
  arguments), 403 (a path outside the project), 404 (not in the index), 409, 502 (the model),
  503 (no index) or 504 (over the time limit). ``GET /openapi.json`` describes them.
- ``/mcp``: MCP over streamable HTTP, stateless (any of several processes behind a load balancer
  can answer any call), the same tools.
- ``GET /``: the search page (``page.html``, ``page.js``, ``page.css`` in this package: no CDN).

Who may use it: with a token (``--token``, ``--token-file`` or ``SEMSEARCH_SERVE_TOKEN``), every
route but the login page wants ``Authorization: Bearer TOKEN``, or the cookie the login form
sets (HttpOnly, SameSite=Strict). Without one, the server binds only to a loopback address and
answers only requests whose ``Host`` names it (a web page cannot rebind a name of its own to it).
Bodies are bounded (:data:`MAX_BODY`) and must arrive within :data:`BODY_SECONDS`.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

MAX_BODY = 64 * 1024  # bytes of a request body (a query is at most 4,000 characters)
BODY_SECONDS = 10.0  # a body that takes longer to arrive is refused (408): a slow client holds nothing
COOKIE = "semsearch_token"
TOOLS = ("search", "similar", "status", "duplicates", "topics", "index")
# What the page and its login need before a token is given.
PUBLIC = frozenset({"/login", "/page.css"})
ASSETS = {"/": ("page.html", "text/html"), "/page.js": ("page.js", "text/javascript"),
          "/page.css": ("page.css", "text/css"), "/login": ("login.html", "text/html")}  # fmt: skip
# The page runs only its own files (no inline script, no other origin).
CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class ServeSettings:
    index: str | None
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    allow_index: bool = False
    timeout: float = 30.0
    rerank_model: str | None = None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def build_app(settings: ServeSettings) -> Any:
    """The ASGI application: the API, the page and ``/mcp`` behind the guard."""
    from mcp.server.transport_security import TransportSecuritySettings

    from semsearch.cli.mcp_server import build_server

    server = build_server(
        settings.index, allow_index=settings.allow_index, timeout=settings.timeout, rerank_model=settings.rerank_model
    )
    api = _Api(server, settings)
    for name in TOOLS:
        if name != "index" or settings.allow_index:
            methods = ["POST"] if name == "index" else ["GET", "POST"]
            server.custom_route(f"/{name}", methods=methods)(api.call)
    server.custom_route("/openapi.json", methods=["GET"])(api.openapi)
    server.custom_route("/page.json", methods=["GET"])(api.page_facts)
    for path in ASSETS:
        server.custom_route(path, methods=["GET"])(api.asset)
    server.custom_route("/login", methods=["POST"])(api.login)
    server.custom_route("/logout", methods=["POST"])(api.logout)
    security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    app = server.streamable_http_app(
        streamable_http_path="/mcp", stateless_http=True, json_response=True, transport_security=security,
        max_request_body_size=MAX_BODY, host=settings.host,
    )  # fmt: skip
    hosts = None if settings.token else _loopback_names(settings.port)
    return Guard(app, token=settings.token, hosts=hosts), server


def _loopback_names(port: int) -> frozenset[str]:
    names = ("127.0.0.1", "localhost", "[::1]")
    return frozenset([*(f"{n}:{port}" for n in names), *names])


class Guard:
    """ASGI middleware: the token, the Host check of a tokenless server, the body's size and pace."""

    def __init__(self, app: Any, *, token: str | None, hosts: frozenset[str] | None) -> None:
        self.app, self.token, self.hosts = app, token, hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path = scope["path"]
        if self.hosts is not None and headers.get("host", "").lower() not in self.hosts:
            await _answer(send, 403, {"error": "this server answers only to its loopback address"})
            return
        if self.token and path not in PUBLIC and not self._allowed(headers):
            if path == "/" and scope["method"] == "GET":
                await _answer(send, 303, None, [("location", "/login")])
            else:
                error = "a token is required" if _given(headers) == (None, None) else "the token is not valid"
                await _answer(send, 401, {"error": error}, [("www-authenticate", 'Bearer realm="semsearch"')])
            return
        length = headers.get("content-length", "0")
        if not length.isdigit():
            await _answer(send, 400, {"error": "the Content-Length is not a number"})
            return
        if int(length) > MAX_BODY:
            await _answer(send, 413, {"error": f"the request body is over {MAX_BODY} bytes"})
            return
        await self._forward(scope, receive, send)

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read a body whole first, within its bounds (size, time), then hand it on: no call
        starts on half a body, and a client that sends slowly is answered 408, not waited for."""
        import anyio

        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        try:
            with anyio.fail_after(BODY_SECONDS):
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    body += message.get("body", b"")
                    more = bool(message.get("more_body", False))
                    if len(body) > MAX_BODY:
                        await _answer(send, 413, {"error": f"the request body is over {MAX_BODY} bytes"})
                        return
        except TimeoutError:
            await _answer(send, 408, {"error": "the body came too slowly"}, [("connection", "close")])
            return
        given = False

        async def replay() -> MutableMapping[str, Any]:
            nonlocal given
            if given:
                return await receive()
            given = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def _allowed(self, headers: dict[str, str]) -> bool:
        """The bearer token is the token; the cookie is a value derived from it (a cookie that
        leaks does not give the token away)."""
        if self.token is None:
            return False
        bearer, cookie = _given(headers)
        if bearer is not None:
            return hmac.compare_digest(bearer.encode(), self.token.encode())
        return cookie is not None and hmac.compare_digest(cookie.encode(), cookie_value(self.token).encode())


def _given(headers: dict[str, str]) -> tuple[str | None, str | None]:
    """What a request carries: its bearer token, and the login cookie."""
    auth = headers.get("authorization", "")
    bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            return bearer, value
    return bearer, None


def cookie_value(token: str) -> str:
    """The login cookie's value: an HMAC of a fixed text under the token."""
    return hmac.new(token.encode(), b"semsearch page login", "sha256").hexdigest()


async def _answer(send: Send, status: int, body: Any, extra: list[tuple[str, str]] | None = None) -> None:
    data = b"" if body is None else json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in extra or []]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


class _Api:
    """The routes besides ``/mcp``."""

    def __init__(self, server: Any, settings: ServeSettings) -> None:
        self.server, self.settings = server, settings
        self._tools_found: dict[str, Any] = {}

    async def _tools(self) -> dict[str, Any]:
        """The SDK's tools by name (their input and output schemas, their descriptions)."""
        if not self._tools_found:
            self._tools_found = {tool.name: tool for tool in await self.server.list_tools()}
        return self._tools_found

    async def call(self, request: Any) -> Any:
        from mcp.server.mcpserver.exceptions import ToolError

        name = request.url.path.strip("/")
        tool = (await self._tools()).get(name)
        schema = tool.input_schema if tool is not None else {}
        try:
            args = await _arguments(request, schema)
        except ValueError as exc:
            return _json({"error": str(exc)}, 422)
        try:
            result = await self.server.call_tool(name, args)
        except ToolError as exc:
            return _json({"error": str(exc)}, getattr(exc, "status", 422))
        return _json(result.structured_content, 200)

    async def openapi(self, request: Any) -> Any:
        from semsearch.cli.serve_openapi import openapi_document
        from semsearch.version import __version__

        document = openapi_document(await self._tools(), __version__, token=bool(self.settings.token))
        return _json(document, 200)

    async def page_facts(self, request: Any) -> Any:
        """What the page shows besides hits: the project's folder for links that open a file
        (only to a browser on the same machine: the server is on loopback)."""
        import anyio

        project = None
        if is_loopback(self.settings.host):
            service = self.server._semsearch_service
            with contextlib.suppress(Exception):  # no index yet: no links, the page still works
                project = str(await anyio.to_thread.run_sync(lambda: service.index().base_folder()))
        return _json({"project": project, "allow_index": self.settings.allow_index,
                      "token": bool(self.settings.token)}, 200)  # fmt: skip

    async def asset(self, request: Any) -> Any:
        name, kind = ASSETS[request.url.path]
        return _page(resources.files("semsearch.cli").joinpath("page").joinpath(name).read_bytes(), kind, 200)

    async def login(self, request: Any) -> Any:
        import anyio
        from starlette.responses import RedirectResponse

        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        given = (form.get("token") or [""])[0]
        token = self.settings.token or ""
        if not token or not hmac.compare_digest(given.encode(), token.encode()):
            await anyio.sleep(0.5)  # guesses stay slow
            page = resources.files("semsearch.cli").joinpath("page").joinpath("login.html").read_text("utf-8")
            page = page.replace("<form", '<p class="failed" role="alert">That is not the token.</p>\n  <form', 1)
            return _page(page.encode(), "text/html", 401)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, cookie_value(token), httponly=True, samesite="strict", path="/")
        return response

    async def logout(self, request: Any) -> Any:
        from starlette.responses import RedirectResponse

        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response


async def _arguments(request: Any, schema: dict[str, Any]) -> dict[str, Any]:
    """A call's arguments: the JSON body of a POST, or a GET's query parameters read by the
    tool's input schema (a list as the parameter repeated)."""
    properties: dict[str, Any] = schema.get("properties", {})
    if request.method == "POST":
        body = await request.body()
        try:
            args = json.loads(body or b"{}")
        except ValueError:
            raise ValueError("the body is not JSON") from None
        if not isinstance(args, dict):
            raise ValueError("the body must be a JSON object of the tool's arguments")
    else:
        args = {}
        for key in request.query_params:
            values = request.query_params.getlist(key)
            args[key] = _convert(key, values, _kinds(properties.get(key, {})))
    unknown = sorted(set(args) - set(properties))
    if unknown:
        raise ValueError(f"{unknown[0]}: not an argument of this call (it takes {', '.join(sorted(properties))})")
    return args


def _kinds(prop: dict[str, Any]) -> set[str]:
    options = prop.get("anyOf") or [prop]
    return {str(o.get("type")) for o in options if isinstance(o, dict)}


def _convert(key: str, values: list[str], kinds: set[str]) -> Any:
    if "array" in kinds:
        return values
    if len(values) > 1:
        raise ValueError(f"{key}: given {len(values)} times, takes one value")
    value = values[0]
    if "boolean" in kinds and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
        return value.lower() in ("true", "1", "yes", "on")
    for kind, cast in (("integer", int), ("number", float)):
        if kind in kinds:
            with contextlib.suppress(ValueError):
                return cast(value)
    if "null" in kinds and value == "":
        return None
    return value  # the tool's own check says what is wrong with it


def _page(data: bytes, kind: str, status: int) -> Any:
    from starlette.responses import Response

    headers = {"content-security-policy": CSP, "x-content-type-options": "nosniff", "cache-control": "no-cache",
               "referrer-policy": "no-referrer"}  # fmt: skip
    return Response(data, status_code=status, media_type=f"{kind}; charset=utf-8", headers=headers)


def _json(data: Any, status: int) -> Any:
    from starlette.responses import Response

    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(body, status_code=status, media_type="application/json")


def run(settings: ServeSettings, *, on_ready: Callable[[str], None], watch: bool = False) -> None:
    """Serve until interrupted. The socket is bound first (port 0: any free one), then
    *on_ready* gets the address; the index is opened on the first call."""
    import socket
    import threading

    import uvicorn

    from semsearch.cli.mcp_server import watch_index
    from semsearch.errors import InvalidOptionError

    app, server = build_app(settings)
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    # IPPROTO_TCP named: asyncio turns Nagle's algorithm off only on sockets that say so, and with
    # it on, a kept-alive client's delayed ACK added 40 ms to every answer (headers and body are
    # written apart).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((settings.host.strip("[]"), settings.port))
    except OSError as exc:
        sock.close()
        raise InvalidOptionError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}") from None
    sock.listen(1024)
    port = sock.getsockname()[1]
    if app.hosts is not None:
        app.hosts = _loopback_names(port)  # the port bound (port 0: chosen now)
    host = f"[{settings.host.strip('[]')}]" if family == socket.AF_INET6 else settings.host
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="on", server_header=False,
        # An idle kept-alive connection is closed after this. Not 5 s, uvicorn's default: httpx and
        # others drop their idle connections after 5 s too, and a server closing one at that moment
        # races a new request on it (the client's ReadError, 2 in 1,406 requests at 64 clients).
        timeout_keep_alive=20,
        limit_concurrency=1000,  # more connections at once are answered 503
        h11_max_incomplete_event_size=16 * 1024,  # headers larger than this are refused
    )  # fmt: skip
    stop = threading.Event()
    watcher = threading.Thread(target=watch_index, args=(settings.index, stop), name="semsearch-watch", daemon=True)
    if watch:
        watcher.start()
    on_ready(f"http://{host}:{port}/")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        stop.set()
        if watcher.is_alive():
            watcher.join(timeout=60)
        server._semsearch_service.close()
        sock.close()
