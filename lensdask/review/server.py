"""The grading web server (``lensdask inspect``): one page, a small JSON API and the stamps,
as a Flask app served by waitress.

Routes (every one but ``/app.js`` needs ``?token=`` with a grader's access token, else
403 and nothing shown or written):

- ``GET /``: the grading page (:mod:`lensdask.review.page`).
- ``GET /api/state``: the grader's name, their candidates in their own fixed random order
  (opaque key, ID and their own grade) and their progress. Never p_CNN, never anyone
  else's grades.
- ``GET /stamp/<key>?kind=colour|mono``: a candidate's stamp (PNG).
- ``POST /api/grade`` with ``{"key": ..., "grade": "A"}``: store the grade at once.

The server binds to 127.0.0.1 unless told otherwise (docs/architecture.md, Reliability
rules: localhost by default).

Why these libraries: HTTP parsing, body limits, read timeouts and the answers to bad
requests are left to maintained code instead of a hand-written handler over
:mod:`http.server` (which read a body of ``Content-Length: -1`` to the end of the stream,
past any limit, and dropped the connection on a non-numeric one).

- Flask 3 (on Werkzeug) is the app: routing, query strings, responses and HTTP errors,
  and the best-known WSGI framework, so the next maintainer knows it. Its
  ``MAX_CONTENT_LENGTH`` is a second body limit inside the app. Flask's own development
  server is not used.
- waitress is the server: a production WSGI server in pure Python (no compiled parts, runs
  wherever lensdask does), threaded, that parses requests itself and enforces limits
  before the app sees a request. As read in its ``parser.py``, ``server.py`` and
  ``channel.py`` (waitress 3.0):

  - ``Content-Length`` must match ``^[0-9]+$``, else 400 Bad Request and the connection is
    closed (so ``-1`` or ``abc`` never reach the app);
  - ``max_request_body_size``: a declared ``Content-Length`` at or over it is refused with
    413 before the body is read; a chunked body is counted as it arrives and refused with
    413 once over it; a body is never read past its ``Content-Length``;
  - ``max_request_header_size``: request line and headers over it, 431;
  - ``channel_timeout``: a connection with no request being handled and nothing received
    for that many seconds (a client stalled in its headers or mid-body, or an idle
    keep-alive) is closed; the check runs every ``cleanup_interval`` seconds;
  - ``connection_limit``: with that many connections open, new ones are not accepted
    (they wait in the listen backlog) until some close.

  One thread reads every connection without blocking and hands complete requests to
  ``threads`` workers, so a slow client holds no worker and other graders are served
  meanwhile. The server is made with ``waitress.create_server``, not ``waitress.serve``
  (which calls :func:`logging.basicConfig`); waitress logs to the ``waitress`` logger.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, request
from waitress import wasyncore
from waitress.server import create_server
from werkzeug.exceptions import HTTPException

from lensdask.formats.files import TableError
from lensdask.formats.grades import GRADE_VALUES, GradeError
from lensdask.review.grades import GradeStore, candidate_key
from lensdask.review.page import APP_JS, FORBIDDEN_HTML, INDEX_HTML

logger = logging.getLogger(__name__)

MAX_BODY = 4096
"""Largest request body accepted, bytes."""
MAX_HEADER = 65536
"""Largest request line and headers accepted, bytes (localhost cookies of other apps
count too, so not much less)."""
READ_TIMEOUT = 30
"""Seconds a connection may stay silent (stalled in a request, or idle) before it is
closed."""
THREADS = 4
"""Threads that run requests; slow clients do not hold one (see the module docstring)."""
CONNECTION_LIMIT = 100
"""Connections open at once, at most."""
STAMP_KEY = re.compile(r"[0-9a-f]{16}")
PUBLIC_PATHS = frozenset({"/app.js", "/favicon.ico"})
"""Paths served without a token (nothing in them is secret)."""
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; connect-src 'self'; img-src 'self'; "
        "style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'"
    ),
}


@dataclass(frozen=True)
class Candidate:
    """A gradable candidate: its ID and its stamps (paths inside the stamps folder)."""

    candidate_id: str
    colour_png: str
    mono_png: str


class GradingApp:
    """What the grading server serves: the store, the candidates and their stamps.

    Parameters
    ----------
    store : GradeStore
        The grades database.
    stamps : path
        The stamps folder of ``lensdask stamps``.
    candidate_ids : sequence of str
        The candidates to grade; each needs stamps in ``stamps``.
    mono_band : str
        Name of the single band of the mono stamps (shown on the page).
    """

    def __init__(
        self,
        store: GradeStore,
        stamps: str | Path,
        candidate_ids: Sequence[str],
        *,
        mono_band: str = "r",
    ) -> None:
        from lensdask.review.stamps import read_stamp_index

        self.store = store
        self.stamps = Path(stamps).resolve()
        self.mono_band = mono_band
        index = read_stamp_index(self.stamps).set_index("candidate_id")
        missing = [cid for cid in candidate_ids if cid not in index.index]
        if missing:
            raise TableError(
                f"{stamps}: {len(missing)} of {len(candidate_ids)} candidates have no stamps "
                f"(e.g. {missing[:3]}); run `lensdask stamps` for them first"
            )
        self.ids = list(dict.fromkeys(candidate_ids))
        self.by_key = {
            candidate_key(cid): Candidate(
                cid, str(index.at[cid, "colour_png"]), str(index.at[cid, "mono_png"])
            )
            for cid in self.ids
        }
        store.add_candidates(self.ids)

    def state(self, grader: str) -> dict[str, Any]:
        """The grader's view: their order, their own grades and progress."""
        own = self.store.grades(grader)
        mine = dict(zip(own["candidate_id"], own["grade"], strict=True))
        items = [
            {"key": candidate_key(cid), "id": cid, "grade": mine.get(cid)}
            for cid in self.store.order(grader, self.ids)
        ]
        graded = sum(item["grade"] is not None for item in items)
        return {
            "grader": grader,
            "items": items,
            "total": len(items),
            "graded": graded,
            "mono_band": self.mono_band,
        }

    def grade(self, grader: str, key: Any, grade: Any) -> dict[str, int]:
        """Store ``grade`` of the candidate with ``key`` by ``grader``; their progress."""
        if not isinstance(grade, str) or grade not in GRADE_VALUES:
            raise GradeError(f"grade {grade!r} is not one of {', '.join(GRADE_VALUES)}")
        if not isinstance(key, str) or key not in self.by_key:
            raise GradeError(f"no candidate with key {key!r}")
        self.store.set_grade(grader, self.by_key[key].candidate_id, grade)
        own = self.store.grades(grader)
        graded = int(own["candidate_id"].isin(set(self.ids)).sum())
        return {"graded": graded, "total": len(self.ids)}

    def stamp(self, key: str, kind: str) -> Path | None:
        """The PNG of a candidate's stamp (``colour`` or ``mono``), or None."""
        candidate = self.by_key.get(key)
        if candidate is None or kind not in ("colour", "mono"):
            return None
        path = (self.stamps / getattr(candidate, f"{kind}_png")).resolve()
        if not path.is_relative_to(self.stamps) or not path.is_file():
            return None
        return path


class _GradingFlask(Flask):
    """Flask, logging the app's errors to this module's logger: ``Flask.logger`` would add
    a handler of its own to it when the process has none (no side effects on logging)."""

    def log_exception(self, exc_info: Any) -> None:
        logger.error("error in %s %s", request.method, request.path, exc_info=exc_info)


def _respond(status: int, body: str | bytes, content_type: str, **headers: str) -> Response:
    return Response(
        body,
        status=status,
        content_type=content_type,
        headers={name.replace("_", "-"): value for name, value in headers.items()},
    )


def _json(status: int, payload: dict[str, Any]) -> Response:
    return _respond(status, json.dumps(payload), "application/json", Cache_Control="no-store")


def make_wsgi_app(grading: GradingApp) -> Flask:
    """The WSGI app of the grading server (the routes of the module docstring).

    Parameters
    ----------
    grading : GradingApp
        The store, candidates and stamps to serve.
    """
    wsgi = _GradingFlask(__name__, static_folder=None)
    wsgi.config["MAX_CONTENT_LENGTH"] = MAX_BODY

    @wsgi.before_request
    def check_token() -> Response | None:
        # before routing, as before: without a token every path but the public ones is 403
        if request.path in PUBLIC_PATHS:
            return None
        grader = grading.store.grader_of(request.args.get("token", ""))
        if grader is None:
            logger.warning("refused a request with an invalid token from %s", request.remote_addr)
            if request.path.startswith("/api/"):
                return _json(HTTPStatus.FORBIDDEN, {"error": "invalid or missing access token"})
            return _respond(HTTPStatus.FORBIDDEN, FORBIDDEN_HTML, "text/html; charset=utf-8")
        g.grader = grader
        return None

    @wsgi.after_request
    def add_headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        # the path only: the query holds the grader's token
        logger.debug(
            "%s %s %s %s", request.remote_addr, request.method, request.path, response.status_code
        )
        return response

    @wsgi.errorhandler(HTTPException)
    def http_error(err: HTTPException) -> Response:
        message = (err.name or "error").lower()
        if request.path.startswith("/api/") or request.method == "POST":
            return _json(err.code or 500, {"error": message})
        return _respond(err.code or 500, message, "text/plain; charset=utf-8")

    @wsgi.get("/app.js")
    def app_js() -> Response:
        return _respond(HTTPStatus.OK, APP_JS, "text/javascript; charset=utf-8")

    @wsgi.get("/favicon.ico")
    def favicon() -> Response:
        return _respond(HTTPStatus.NOT_FOUND, b"", "text/plain")

    @wsgi.get("/")
    @wsgi.get("/index.html")
    def index() -> Response:
        return _respond(
            HTTPStatus.OK, INDEX_HTML, "text/html; charset=utf-8", Cache_Control="no-store"
        )

    @wsgi.get("/api/state")
    def state() -> Response:
        return _json(HTTPStatus.OK, grading.state(g.grader))

    @wsgi.get("/stamp/<key>")
    def stamp(key: str) -> Response:
        path = None
        if STAMP_KEY.fullmatch(key):
            path = grading.stamp(key, request.args.get("kind", "colour"))
        if path is None:
            return _respond(HTTPStatus.NOT_FOUND, b"no such stamp", "text/plain")
        return _respond(
            HTTPStatus.OK, path.read_bytes(), "image/png", Cache_Control="private, max-age=600"
        )

    @wsgi.post("/api/grade")
    def grade() -> Response:
        try:
            payload = json.loads(request.get_data(cache=False) or b"{}")
            if not isinstance(payload, dict):
                raise GradeError("expected a JSON object")
            progress = grading.grade(g.grader, payload.get("key"), payload.get("grade"))
        except (ValueError, RecursionError, GradeError) as err:
            # ValueError: not JSON or not UTF-8; RecursionError: JSON nested too deep
            return _json(HTTPStatus.BAD_REQUEST, {"error": str(err) or "invalid JSON"})
        return _json(HTTPStatus.OK, progress)

    return wsgi


class GradingServer:
    """The grading server: the :class:`GradingApp` (``app``) served by waitress on a bound
    socket; the interface of :class:`socketserver.BaseServer` (``serve_forever``,
    ``shutdown``, ``server_close``, ``server_address``) plus ``start``/``stop``.

    Parameters
    ----------
    app : GradingApp
        What to serve.
    sock : socket.socket
        The bound, listening TCP socket.
    read_timeout : int, s
        ``channel_timeout`` of waitress: a connection silent this long is closed.
    threads : int
        Threads that run requests.
    """

    def __init__(
        self,
        app: GradingApp,
        sock: socket.socket,
        *,
        read_timeout: int = READ_TIMEOUT,
        threads: int = THREADS,
    ) -> None:
        self.app = app
        self.wsgi = make_wsgi_app(app)
        self.server_address: tuple[str, int] = sock.getsockname()[:2]
        # a map of our own: closing everything in it ends the loop (see shutdown)
        self._map: dict[int, Any] = {}
        self._server = create_server(
            self.wsgi,
            map=self._map,
            sockets=[sock],
            threads=threads,
            ident="lensdask-grading",
            # waitress refuses a body of max_request_body_size bytes or more: MAX_BODY is
            # the largest accepted
            max_request_body_size=MAX_BODY + 1,
            max_request_header_size=MAX_HEADER,
            channel_timeout=read_timeout,
            # check for silent connections every second, so read_timeout is kept to ~1 s
            cleanup_interval=1,
            connection_limit=CONNECTION_LIMIT,
            expose_tracebacks=False,
        )
        self._stop_requested = threading.Event()
        self._serving = threading.Event()
        self._done = threading.Event()

    @property
    def url(self) -> str:
        """The base URL the server listens on."""
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/"

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown` (returns) or Ctrl-C (raises KeyboardInterrupt)."""
        self._serving.set()
        try:
            self._server.run()
        finally:
            self._done.set()
        if not self._stop_requested.is_set():
            # waitress's run() swallows Ctrl-C (and SystemExit) and returns: pass it on,
            # as socketserver does, so the caller can tell a stop from an interrupt
            raise KeyboardInterrupt

    def start(self) -> threading.Thread:
        """Serve in a background thread (stop with :meth:`stop`)."""
        self._serving.set()
        thread = threading.Thread(target=self.serve_forever, name="grading-server", daemon=True)
        thread.start()
        return thread

    def shutdown(self, *, timeout: float = 10.0) -> None:
        """Stop :meth:`serve_forever` and wait for it to return (at most ``timeout``, s)."""
        if self._stop_requested.is_set():
            return
        self._stop_requested.set()
        # the loop's thread closes the sockets (waitress's dispatchers are not thread-safe):
        # with its map empty, the loop ends
        self._server.trigger.pull_trigger(lambda: wasyncore.close_all(self._map))
        if self._serving.is_set() and not self._done.wait(timeout):
            logger.warning("the grading server did not stop within %s s", timeout)

    def server_close(self) -> None:
        """Close the sockets and end the request threads (after :meth:`shutdown` or
        :meth:`serve_forever`)."""
        self._server.task_dispatcher.shutdown(timeout=5)
        wasyncore.close_all(self._map)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.shutdown()
        self.server_close()


def _listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (its first address) and listening."""
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    return socket.create_server(address, family=family)


def make_server(
    store: GradeStore | str | Path,
    stamps: str | Path,
    candidate_ids: Sequence[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    mono_band: str = "r",
    read_timeout: int = READ_TIMEOUT,
    threads: int = THREADS,
) -> GradingServer:
    """The grading server for ``candidate_ids`` with the stamps of ``stamps``, bound but not
    serving yet (``serve_forever()`` or ``start()``).

    Parameters
    ----------
    store : GradeStore or path
        The grades database (a path: the SQLite file, created if needed).
    stamps : path
        The stamps folder.
    candidate_ids : sequence of str
        The candidates to grade.
    host : str
        Address to bind (127.0.0.1: this machine only; 0.0.0.0: every interface).
    port : int
        TCP port (0: any free port; see ``server.url``).
    mono_band : str
        Band of the single-band stamps, for the page.
    read_timeout : int, s
        A connection that sends nothing for this long (stalled mid-request, or idle) is
        closed.
    threads : int
        Threads that run requests.
    """
    if not isinstance(store, GradeStore):
        store = GradeStore(store)
    app = GradingApp(store, stamps, candidate_ids, mono_band=mono_band)
    sock = _listen(host, port)
    try:
        return GradingServer(app, sock, read_timeout=read_timeout, threads=threads)
    except BaseException:
        sock.close()
        raise


def grader_link(base_url: str, token: str) -> str:
    """A grader's personal link."""
    return f"{base_url.rstrip('/')}/?token={token}"
