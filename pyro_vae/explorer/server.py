"""The explorer's web server: the page's three files and the endpoints of :mod:`.endpoints`, over HTTP/1.1.

Contract: :func:`make_server` binds ``host:port`` (``127.0.0.1`` unless told otherwise; port 0 picks a free one) and
returns an :class:`ExplorerServer` (the standard library's ``ThreadingHTTPServer``) that answers

* ``GET /`` (``/index.html``), ``/explore.js``, ``/explore.css``: the page, read once from the package's ``static/``
  folder; those three names are the whole whitelist, so no part of a request path reaches the file system;
* ``GET /api/NAME?PARAMS`` or ``POST /api/NAME`` with a JSON object of the parameters (at most 1 MiB): the endpoint
  ``NAME`` (:class:`.endpoints.Endpoints`);
* anything else, a bad parameter or a malformed request: a 4xx status with a one-line ``text/plain`` message; an
  error of the explorer itself: 500 with one line, logged, and the server keeps serving.

Bound to a loopback address, it answers only requests whose ``Host`` is a loopback name (a web page elsewhere cannot
reach it through DNS rebinding). Nothing is written anywhere; ``serve_forever`` runs until ``shutdown()`` (another
thread) or KeyboardInterrupt (the caller's), and ``server_close()`` frees the port.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import socket
import socketserver
import sys
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qsl, urlsplit

from ..errors import PyroVAEError, first_line
from .endpoints import Endpoints, Reply, RequestError

STATIC = {  # request path -> (file in static/, content type): the only files the server reads after starting
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/explore.js": ("explore.js", "text/javascript; charset=utf-8"),
    "/explore.css": ("explore.css", "text/css; charset=utf-8"),
}
API = "/api/"
MAX_BODY = 1 << 20
MAX_FIELDS = 64
IDLE_TIMEOUT_S = 30  # a connection that sends nothing for this long (idle, or a request trickling in) is closed
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def static_files() -> dict[str, tuple[bytes, str]]:
    """The page's files by request path: their bytes and content type, read from the package."""
    folder = resources.files(__package__) / "static"
    return {path: ((folder / name).read_bytes(), kind) for path, (name, kind) in STATIC.items()}


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` resolves to is a loopback address (an unknown name is not)."""
    try:
        found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return False
    return bool(found) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in found)


def text_reply(status: int, message: str) -> Reply:
    """A one-line ``text/plain`` answer."""
    return Reply(status, "text/plain; charset=utf-8", (" ".join(message.split()) + "\n").encode())


class ExplorerServer(ThreadingHTTPServer):
    """A threading HTTP server holding the endpoints, the page's files and which ``Host`` names it answers."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], endpoints: Endpoints, log: Callable[[str], None]) -> None:
        self.address_family = socket.getaddrinfo(address[0], address[1], type=socket.SOCK_STREAM)[0][0]
        self.endpoints, self.static, self.log = endpoints, static_files(), log
        self.hosts = LOOPBACK_NAMES | {address[0]} if is_loopback(address[0]) else None  # None: any
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # (not HTTPServer's: it looks the host's name up in the DNS)
        self.server_name, self.server_port = self.server_address[0], self.server_address[1]

    def handle_error(self, request, client_address) -> None:
        """A connection's failure, as one logged line instead of the standard library's traceback on stderr; a client
        that went away mid-answer (the page dropping a superseded picture) is not worth a line."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, TimeoutError)):
            self.log(f"pyro-vae explore: a connection from {client_address[0]} failed: {first_line(exc)}")

    @property
    def url(self) -> str:
        """The page's address, ``http://HOST:PORT/``."""
        host = self.server_name
        return f"http://[{host}]:{self.server_port}/" if ":" in host else f"http://{host}:{self.server_port}/"


def make_server(
    endpoints: Endpoints, host: str = "127.0.0.1", port: int = 0, log: Callable[[str], None] | None = None
) -> ExplorerServer:
    """An :class:`ExplorerServer` for ``endpoints`` bound to ``host:port`` (not yet serving); ``log`` gets one line per
    internal error (default: stderr). :class:`PyroVAEError` with one line when it cannot bind."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    try:
        return ExplorerServer((host, port), endpoints, log)
    except OSError as exc:
        why = exc.strerror or str(exc)
        hint = "; choose another --port (0 picks a free one)" if exc.errno == errno.EADDRINUSE else ""
        raise PyroVAEError(f"cannot listen on {host}:{port}: {why}{hint}") from None


class Handler(BaseHTTPRequestHandler):
    """One connection's requests (see the module's contract)."""

    server: ExplorerServer
    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.0"  # (not 0.9: an unreadable request line still gets a status line)
    server_version = "pyro-vae-explore"
    timeout = IDLE_TIMEOUT_S
    disable_nagle_algorithm = True  # (the headers and the body go out as two writes: no 40 ms wait for an ACK)

    def version_string(self) -> str:
        return self.server_version  # (not the Python version)

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        self._answer(None)

    def do_POST(self) -> None:  # noqa: N802
        try:
            body = self._body()
        except RequestError as exc:
            self.close_connection = True  # (the body was not read)
            self._send(text_reply(exc.status, str(exc)))
            return
        self._answer(body)

    def _not_allowed(self) -> None:
        self.close_connection = True  # (a body, if any, is not read)
        self._send(text_reply(405, f"{self.command} is not served here: only GET or POST"))

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _not_allowed  # noqa: N815

    def _body(self) -> dict:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower() or "Content-Length" not in self.headers:
            raise RequestError("a POST needs a Content-Length", 411)
        text = self.headers["Content-Length"].strip()
        if not text.isascii() or not text.isdigit():  # (int() would take "1_0", "+5" or "-1")
            raise RequestError("Content-Length is not a number")
        length = int(text)
        if length > MAX_BODY:
            raise RequestError(f"the body is {length} bytes; at most {MAX_BODY} are read", 413)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # (nesting deeper than the parser goes)
            raise RequestError(f"the body is not JSON: {first_line(exc, 80)}") from None
        if not isinstance(body, dict):
            raise RequestError("the body must be a JSON object of the parameters")
        return body

    def _answer(self, body: dict | None) -> None:
        try:
            reply = self._reply(body)
        except RequestError as exc:
            reply = text_reply(exc.status, str(exc))
        except Exception as exc:  # the explorer's own fault: one line here and in the log, and serve on
            self.server.log(f"pyro-vae explore: internal error on {self.command} {self.path[:200]}: {first_line(exc)}")
            reply = text_reply(500, f"internal error: {first_line(exc)}")
        self._send(reply)

    def _reply(self, body: dict | None) -> Reply:
        self._check_host()
        url = urlsplit(self.path)
        if url.path.startswith(API):
            if body is not None and url.query:
                raise RequestError("give the parameters in the body or in the query, not both")
            return self.server.endpoints.answer(url.path[len(API) :], body if body is not None else _query(url.query))
        if url.path not in self.server.static:
            raise RequestError(f"no such page: {url.path[:80]}", 404)
        if body is not None:
            raise RequestError(f"{url.path} is a page: GET it", 405)
        content, kind = self.server.static[url.path]
        return Reply(200, kind, content)

    def _check_host(self) -> None:
        """Refuse a foreign ``Host`` (DNS rebinding) when bound to loopback, and any request another site's page
        makes (the browser says so in ``Sec-Fetch-Site`` or ``Origin``): the model and the data are this user's."""
        site = self.headers.get("Sec-Fetch-Site")
        if site is not None and site not in ("same-origin", "none"):
            raise RequestError(f"requests from other sites are refused (Sec-Fetch-Site: {site[:20]})", 403)
        host = self.headers.get("Host")
        origin = self.headers.get("Origin")
        if origin is not None and host is not None and origin not in (f"http://{host}", f"https://{host}"):
            raise RequestError(f"requests from other sites are refused (Origin {origin[:60]!r})", 403)
        if self.server.hosts is None or host is None:
            return
        try:
            name = urlsplit("//" + host).hostname if host else ""
        except ValueError:  # (an unreadable Host: "[")
            raise RequestError(f"unreadable Host header {host[:60]!r}") from None
        if name not in self.server.hosts:
            raise RequestError(f"this server answers only to its loopback address, not Host {host[:60]!r}", 403)

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")  # (no other site may embed the images)
        if reply.content_type.startswith("text/html"):
            self.send_header("Content-Security-Policy", PAGE_POLICY)
            self.send_header("Referrer-Policy", "no-referrer")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's errors (a malformed request line, an unsupported method) as one line too."""
        self.close_connection = True
        self._send(text_reply(code, message or HTTPStatus(code).phrase))

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the standard library's signature)
        """No access log (a slider sends a request per move); internal errors are logged by :meth:`_answer`."""


def _query(query: str) -> dict[str, str]:
    """A query string's parameters, each name once."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query), max_num_fields=MAX_FIELDS)
    except ValueError as exc:
        raise RequestError(f"malformed query: {first_line(exc, 80)}") from None
    names = [name for name, _ in pairs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise RequestError(f"parameter {repeated[0]!r} given more than once")
    return dict(pairs)
