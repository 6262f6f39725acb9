"""The HTTP front of the simulator: routing, auth, fault injection, and the start/serve entry points.

Why the stdlib server: the simulator must start inside a test process in milliseconds, with no dependency the
product does not already have. ``ThreadingHTTPServer`` with HTTP/1.1 keep-alive, daemon threads, a deep listen
backlog and Nagle disabled is plenty for hundreds of requests a second, because handlers only do dictionary
work under one short-held lock (see ``state``).

Request pipeline, in order:

1. match the path against ``ROUTES`` (unknown path: 404 ``{"statusCode":404,"message":"Cannot GET /x",...}``);
2. count the request in ``/_sim/stats`` under ``"METHOD template"``;
3. apply an armed fault (``POST /_sim/faults``) matching method + path template, *before* auth and before the
   handler runs, so a faulted POST never creates anything. Control endpoints (``/_sim/*`` except downloads)
   cannot be faulted. Fault fields:

   * ``method`` (default ``*``), ``path``: the template (``/v1/aperture/jobs/{job_id}/status``) or an exact path;
   * ``status``: answered with the flat gateway body ``{"statusCode", "message", "error"}`` unless ``body``
     says otherwise; defaults to 500, or to 200 when only ``body`` is given;
   * ``times``: how many matching requests get it (default 1, ``-1`` = until ``DELETE /_sim/faults``);
   * ``retry_after``: adds ``Retry-After`` (integer seconds as given; a fractional value is sent as is, to
     keep tests fast);
   * ``body``: ``"garbage"`` sends a non-JSON body labelled ``application/json``; another string is sent as
     text; an object/list is sent as JSON;
   * ``delay_s``: sleep before answering; with neither ``status`` nor ``body`` the request then proceeds
     normally (a slow but correct answer, to exercise client timeouts).
4. with ``rate_limit_per_s`` set, answer 429 with ``Retry-After`` past that many requests per endpoint in any
   1-second window (``simulator/traffic.py``; ``/_sim/stats`` has ``requests_per_second``: the most requests
   seen in any 1-second window, per endpoint and in all, and per-second counts of the last ``stats_keep_s``);
5. check ``Authorization: Bearer <api_key>`` on ``/v1/*`` routes (flat 401 otherwise);
6. run the handler; ``ApiError`` becomes Vidmob's error envelope.

Control endpoints (no auth): ``GET /_sim/stats``, ``GET /_sim/jobs/{job_id}``, ``GET /_sim/media/{uniqueId}``,
``POST /_sim/reset``, ``GET|POST /_sim/config``, ``GET|POST|DELETE /_sim/faults``, and the signed downloads
``GET /_sim/downloads/{job_id}.{json|csv}``. They answer plain JSON (no ``status``/``result`` wrapper).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from simulator.config import SimulatorConfig
from simulator.errors import UNAUTHORIZED_BODY, ApiError, gateway_body
from simulator.state import Fault, SimState

logger = logging.getLogger("simulator")

_JSON = "application/json"
GARBAGE_BODY = b"<html><body>502 Bad Gateway</body></html> garbage, not JSON {"


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = _JSON
    headers: dict[str, str] = field(default_factory=dict)


def _json(status: int, payload: Any) -> Reply:
    return Reply(status, json.dumps(payload, separators=(",", ":")).encode())


def _ok(result: Any, status: int = 200, **extra: Any) -> Reply:
    return _json(status, {"status": "OK", "result": result, **extra})


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str]
    query: dict[str, str]
    raw_body: bytes
    base_url: str

    def json(self) -> Any:
        """The body as JSON; an empty body is ``{}`` so validation can name the missing fields."""
        if not self.raw_body.strip():
            return {}
        try:
            return json.loads(self.raw_body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, [f"Request body is not valid JSON: {exc}"]) from exc


Action = Callable[[SimState, Request], Reply]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    template: str
    action: Action
    auth: bool = True
    faultable: bool = True


# --------------------------------------------------------------------------- actions
def _create_guide_job(state: SimState, req: Request) -> Reply:
    return _ok(state.create_guide_job(req.json()))


def _guide_status(state: SimState, req: Request) -> Reply:
    return _ok(state.guide_status(req.params["id"]))


def _create_media_job(state: SimState, req: Request) -> Reply:
    return _ok(state.create_media_job(req.json()))


def _media_job_status(state: SimState, req: Request) -> Reply:
    return _ok(state.media_job_status(req.params["id"], req.base_url))


def _submit_media(state: SimState, req: Request) -> Reply:
    return _ok(state.submit_media(req.json()), status=201)


def _updated_scores(state: SimState, req: Request) -> Reply:
    items, pagination = state.updated_scores(req.query)
    return _ok(items, pagination=pagination)


def _media_status(state: SimState, req: Request) -> Reply:
    return _ok(state.media_status(req.params["id"], req.query))


def _media_scores(state: SimState, req: Request) -> Reply:
    return _ok(state.media_scores(req.params["id"], req.query))


def _download(state: SimState, req: Request) -> Reply:
    status, content_type, body = state.download(
        req.params["id"], req.params["fmt"], req.query.get("expires"), req.query.get("sig")
    )
    return Reply(status, body, content_type)


def _stats(state: SimState, req: Request) -> Reply:
    return _json(200, state.stats())


def _job_record(state: SimState, req: Request) -> Reply:
    return _json(200, state.job_record(req.params["id"]))


def _media_record(state: SimState, req: Request) -> Reply:
    return _json(200, state.media_record(req.params["id"]))


def _reset(state: SimState, req: Request) -> Reply:
    state.reset()
    return _json(200, {"reset": True})


def _get_config(state: SimState, req: Request) -> Reply:
    return _json(200, state.config_dict())


def _set_config(state: SimState, req: Request) -> Reply:
    return _json(200, state.update_config(req.json()))


def _list_faults(state: SimState, req: Request) -> Reply:
    return _json(200, {"faults": state.list_faults()})


def _add_fault(state: SimState, req: Request) -> Reply:
    fault = state.add_fault(req.json())
    return _json(201, {"fault": fault, "armed": len(state.list_faults())})


def _clear_faults(state: SimState, req: Request) -> Reply:
    return _json(200, {"cleared": state.clear_faults()})


def _route(
    method: str, pattern: str, template: str, action: Action, *, auth: bool = True, faultable: bool = True
) -> Route:
    return Route(method, re.compile(pattern), template, action, auth, faultable)


_ID = r"(?P<id>[^/]+)"

ROUTES: tuple[Route, ...] = (
    _route("POST", r"/v1/aperture/jobs", "/v1/aperture/jobs", _create_guide_job),
    _route("GET", rf"/v1/aperture/jobs/{_ID}/status", "/v1/aperture/jobs/{job_id}/status", _guide_status),
    _route("POST", r"/v1/media/aperture", "/v1/media/aperture", _create_media_job),
    _route("GET", rf"/v1/media/aperture/{_ID}", "/v1/media/aperture/{jobId}", _media_job_status),
    _route("POST", r"/v1/media", "/v1/media", _submit_media),
    _route("GET", r"/v1/media/updated-scores", "/v1/media/updated-scores", _updated_scores),
    _route("GET", rf"/v1/media/{_ID}/status", "/v1/media/{mediaId}/status", _media_status),
    _route("GET", rf"/v1/scoring/media/{_ID}/scores", "/v1/scoring/media/{mediaId}/scores", _media_scores),
    _route(
        "GET",
        r"/_sim/downloads/(?P<id>[^/]+)\.(?P<fmt>json|csv)",
        "/_sim/downloads/{job_id}.{format}",
        _download,
        auth=False,
    ),
    _route("GET", r"/_sim/stats", "/_sim/stats", _stats, auth=False, faultable=False),
    _route("GET", rf"/_sim/jobs/{_ID}", "/_sim/jobs/{job_id}", _job_record, auth=False, faultable=False),
    _route("GET", rf"/_sim/media/{_ID}", "/_sim/media/{uniqueId}", _media_record, auth=False, faultable=False),
    _route("POST", r"/_sim/reset", "/_sim/reset", _reset, auth=False, faultable=False),
    _route("GET", r"/_sim/config", "/_sim/config", _get_config, auth=False, faultable=False),
    _route("POST", r"/_sim/config", "/_sim/config", _set_config, auth=False, faultable=False),
    _route("GET", r"/_sim/faults", "/_sim/faults", _list_faults, auth=False, faultable=False),
    _route("POST", r"/_sim/faults", "/_sim/faults", _add_fault, auth=False, faultable=False),
    _route("DELETE", r"/_sim/faults", "/_sim/faults", _clear_faults, auth=False, faultable=False),
)

UNMATCHED = "<unmatched>"


def match_route(method: str, path: str) -> tuple[Route | None, dict[str, str], str]:
    """(route for method+path or None, path params, template to count the request under)."""
    template = UNMATCHED
    for route in ROUTES:
        found = route.pattern.fullmatch(path)
        if found is None:
            continue
        if route.method == method:
            return route, found.groupdict(), route.template
        template = route.template
    return None, {}, template


def fault_reply(fault: Fault) -> Reply | None:
    """The reply an armed fault produces, after its delay; None lets the request proceed normally."""
    if fault.delay_s:
        time.sleep(fault.delay_s)
    if fault.status is None and fault.body is None:
        return None
    status = fault.status or 200
    if fault.body == "garbage":
        reply = Reply(status, GARBAGE_BODY, _JSON)
    elif isinstance(fault.body, str):
        reply = Reply(status, fault.body.encode(), "text/plain; charset=utf-8")
    elif fault.body is not None:
        reply = _json(status, fault.body)
    else:
        reply = _json(status, gateway_body(status))
    if fault.retry_after is not None:
        value = fault.retry_after
        reply.headers["Retry-After"] = str(int(value)) if float(value).is_integer() else str(value)
    return reply


# --------------------------------------------------------------------------- HTTP plumbing
class _BodyTooLarge(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "VidmobSimulator/1.0"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = 120  # idle keep-alive connections are closed after this many seconds
    server: SimulatorServer

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        """Route the stdlib access log through ``logging`` (quiet by default; headers are never logged)."""
        level = logging.INFO if self.server.state.config.log_requests else logging.DEBUG
        logger.log(level, "%s - " + format, self.address_string(), *args)

    # -- request reading
    def _read_body(self) -> bytes:
        limit = self.server.state.config.max_body_bytes
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(limit)
        length_header = self.headers.get("Content-Length")
        if not length_header:
            return b""
        try:
            length = int(length_header)
        except ValueError as exc:
            raise _BodyTooLarge from exc
        if length < 0 or length > limit:
            raise _BodyTooLarge
        return self.rfile.read(length)

    def _read_chunked(self, limit: int) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(65537)
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            total += size
            if total > limit:
                raise _BodyTooLarge
            chunks.append(self.rfile.read(size))
            self.rfile.readline(65537)

    def _base_url(self) -> str:
        config = self.server.state.config
        if config.public_url:
            return config.public_url
        host = self.headers.get("Host")
        return f"http://{host}" if host else self.server.url

    def _authorized(self) -> bool:
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        expected = self.server.state.config.api_key.encode()
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected)

    # -- dispatch
    def _handle(self, method: str) -> None:
        state = self.server.state
        split = urlsplit(self.path)
        path = split.path
        route, params, template = match_route(method, path)
        fault = state.begin_request(method, template, path, faultable=route is None or route.faultable)
        try:
            raw_body = self._read_body()
        except (_BodyTooLarge, ValueError):
            self.close_connection = True
            self._send(_json(413, gateway_body(413)), close=True)
            return
        reply = fault_reply(fault) if fault is not None else None
        if reply is None and route is not None and route.auth:
            retry_after = state.admit(method, template)
            if retry_after is not None:
                reply = _json(429, gateway_body(429))
                reply.headers["Retry-After"] = f"{retry_after:.3f}"
        if reply is None:
            reply = self._dispatch(route, method, path, params, split.query, raw_body)
        self._send(reply)

    def _dispatch(
        self, route: Route | None, method: str, path: str, params: dict[str, str], query: str, raw_body: bytes
    ) -> Reply:
        if route is None:
            return _json(404, gateway_body(404, f"Cannot {method} {path}"))
        if route.auth and not self._authorized():
            return _json(401, UNAUTHORIZED_BODY)
        request = Request(
            method=method,
            path=path,
            params=params,
            query={k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()},
            raw_body=raw_body,
            base_url=self._base_url(),
        )
        try:
            return route.action(self.server.state, request)
        except ApiError as exc:
            return _json(exc.status, exc.body())
        except Exception:
            logger.exception("simulator handler failed for %s %s", method, route.template)
            return _json(500, gateway_body(500))

    def _send(self, reply: Reply, close: bool = False) -> None:
        # Counted before the first byte goes out: a client that has read its answer must find it in /_sim/stats.
        self.server.state.end_request(reply.status)
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(reply.body)


class SimulatorServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its state and can drop open keep-alive connections on stop."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024
    allow_reuse_address = True

    def handle_error(self, request, client_address) -> None:
        # A client that dropped its connection (a worker killed mid-request, a read timeout) is
        # ordinary here: say so in one line at debug, not with a traceback on stderr.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            logger.debug("client %s went away", client_address)
            return
        super().handle_error(request, client_address)

    def __init__(self, address: tuple[str, int], state: SimState) -> None:
        self.state = state
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        assert isinstance(host, str)  # an AF_INET or AF_INET6 address: (host, port, ...)
        if host in ("0.0.0.0", "", "::"):  # noqa: S104 - only used to build a reachable URL
            host = "127.0.0.1"
        return f"http://{host}:{port}"

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class SimulatorHandle:
    """A simulator running in a background thread. ``state`` is the live ``SimState`` for inspection."""

    def __init__(self, server: SimulatorServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self._stopped = False
        self.state: SimState = server.state
        self.port: int = server.server_address[1]
        self.url: str = server.url

    @property
    def config(self) -> SimulatorConfig:
        return self.state.config

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, close open connections and release the port. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._thread.join(timeout)

    def __enter__(self) -> SimulatorHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"SimulatorHandle(url={self.url!r})"


def start_simulator(host: str = "127.0.0.1", port: int = 0, config: SimulatorConfig | None = None) -> SimulatorHandle:
    """Start the simulator in a daemon thread and return at once (port 0 picks a free port)."""
    server = SimulatorServer((host, port), SimState(config or SimulatorConfig()))
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, name=f"simulator-{server.url}", daemon=True
    )
    thread.start()
    return SimulatorHandle(server, thread)


def serve(
    host: str = "127.0.0.1",
    port: int = 8080,
    config: SimulatorConfig | None = None,
    on_ready: Callable[[SimulatorHandle], None] | None = None,
) -> None:
    """Run the simulator until SIGINT/SIGTERM (or KeyboardInterrupt), then stop it cleanly.

    ``on_ready`` lets the CLI print the URL once the port is bound.
    """
    handle = start_simulator(host, port, config)
    stop = threading.Event()
    previous: dict[signal.Signals, Any] = {}

    def _request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, _request_stop)
    logger.info("Vidmob API simulator listening on %s", handle.url)
    try:
        if on_ready is not None:
            on_ready(handle)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        handle.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        logger.info("Vidmob API simulator stopped")
