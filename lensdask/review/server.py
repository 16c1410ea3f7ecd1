"""The grading web server (``lensdask inspect``): the standard library's threading HTTP
server, one page, a small JSON API and the stamps.

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
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from lensdask.formats.files import TableError
from lensdask.formats.grades import GRADE_VALUES, GradeError
from lensdask.review.grades import GradeStore, candidate_key
from lensdask.review.page import APP_JS, FORBIDDEN_HTML, INDEX_HTML

logger = logging.getLogger(__name__)

MAX_BODY = 4096
"""Largest request body accepted, bytes."""
STAMP_ROUTE = re.compile(r"^/stamp/([0-9a-f]{16})$")
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


class GradingHandler(BaseHTTPRequestHandler):
    """HTTP handler of the grading server; ``server.app`` is the :class:`GradingApp`."""

    server_version = "lensdask-grading"
    sys_version = ""

    @property
    def app(self) -> GradingApp:
        return self.server.app  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        message = format % args
        logger.debug("%s %s", self.address_string(), re.sub(r"token=[^&\s]*", "token=***", message))

    def send(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        """Send a complete response with the security headers."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in {**SECURITY_HEADERS, **headers}.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status: int, payload: dict[str, Any]) -> None:
        self.send(
            status, json.dumps(payload).encode(), "application/json", Cache_Control="no-store"
        )

    def grader(self, query: dict[str, list[str]]) -> str | None:
        """The grader of the request's token, or None (a 403 is sent)."""
        token = (query.get("token") or [""])[0]
        grader = self.app.store.grader_of(token)
        if grader is None:
            logger.warning(
                "refused a request with an invalid token from %s", self.client_address[0]
            )
            if self.path.startswith("/api/"):
                self.send_json(HTTPStatus.FORBIDDEN, {"error": "invalid or missing access token"})
            else:
                self.send(HTTPStatus.FORBIDDEN, FORBIDDEN_HTML.encode(), "text/html; charset=utf-8")
        return grader

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/app.js":
            self.send(HTTPStatus.OK, APP_JS.encode(), "text/javascript; charset=utf-8")
            return
        if url.path == "/favicon.ico":
            self.send(HTTPStatus.NOT_FOUND, b"", "text/plain")
            return
        grader = self.grader(query)
        if grader is None:
            return
        if url.path in ("/", "/index.html"):
            self.send(
                HTTPStatus.OK,
                INDEX_HTML.encode(),
                "text/html; charset=utf-8",
                Cache_Control="no-store",
            )
        elif url.path == "/api/state":
            self.send_json(HTTPStatus.OK, self.app.state(grader))
        elif match := STAMP_ROUTE.match(url.path):
            kind = (query.get("kind") or ["colour"])[0]
            path = self.app.stamp(match.group(1), kind)
            if path is None:
                self.send(HTTPStatus.NOT_FOUND, b"no such stamp", "text/plain")
            else:
                self.send(
                    HTTPStatus.OK,
                    path.read_bytes(),
                    "image/png",
                    Cache_Control="private, max-age=600",
                )
        else:
            self.send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        grader = self.grader(parse_qs(url.query))
        if grader is None:
            return
        if url.path != "/api/grade":
            self.send_json(HTTPStatus.NOT_FOUND, {"error": "not found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.send_json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "request too large"})
            return
        try:
            payload = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(payload, dict):
                raise GradeError("expected a JSON object")
            progress = self.app.grade(grader, payload.get("key"), payload.get("grade"))
        except (json.JSONDecodeError, GradeError) as err:
            self.send_json(HTTPStatus.BAD_REQUEST, {"error": str(err)})
            return
        self.send_json(HTTPStatus.OK, progress)


class GradingServer(ThreadingHTTPServer):
    """A threading HTTP server holding the :class:`GradingApp`."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: GradingApp) -> None:
        self.app = app
        super().__init__(address, GradingHandler)

    @property
    def url(self) -> str:
        """The base URL the server listens on."""
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/"

    def start(self) -> threading.Thread:
        """Serve in a background thread (stop with :meth:`stop`)."""
        thread = threading.Thread(target=self.serve_forever, name="grading-server", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.shutdown()
        self.server_close()


def make_server(
    store: GradeStore | str | Path,
    stamps: str | Path,
    candidate_ids: Sequence[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    mono_band: str = "r",
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
    """
    if not isinstance(store, GradeStore):
        store = GradeStore(store)
    app = GradingApp(store, stamps, candidate_ids, mono_band=mono_band)
    return GradingServer((host, port), app)


def grader_link(base_url: str, token: str) -> str:
    """A grader's personal link."""
    return f"{base_url.rstrip('/')}/?token={token}"
