"""The grading server against malformed and hostile requests, over real sockets on
127.0.0.1: bad and oversized ``Content-Length``, oversized and chunked bodies, clients that
stall or trickle, many graders at once, bad JSON, bad tokens, unknown candidates; and
``lensdask inspect serve`` stopped with Ctrl-C. Nothing refused is stored."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from lensdask.review.server import MAX_BODY, MAX_HEADER, GradingServer, make_server

pytestmark = pytest.mark.timeout(60)

READ_TIMEOUT = 2
"""Seconds of silence after which the test server closes a connection."""


@pytest.fixture
def server(review_data, tmp_path) -> Iterator[GradingServer]:
    """A grading server on a free port of 127.0.0.1 with a 1 s read timeout, serving."""
    grading = make_server(
        tmp_path / "grades.sqlite",
        review_data.stamps,
        review_data.candidates["ID"].tolist(),
        port=0,
        read_timeout=READ_TIMEOUT,
    )
    grading.start()
    try:
        yield grading
    finally:
        grading.stop()


@pytest.fixture
def token(server) -> str:
    return server.app.store.add_grader("ann")


def connect(server: GradingServer, *, timeout: float = 10.0) -> socket.socket:
    host, port = server.server_address
    assert host == "127.0.0.1"
    return socket.create_connection((host, port), timeout=timeout)


def read_reply(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or the socket times out)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


def exchange(server: GradingServer, raw: bytes) -> tuple[int, bytes]:
    """Send ``raw`` bytes as they are, half-close, and return the reply's status and body."""
    with connect(server) as sock:
        # the server may refuse and close before it has it all
        with contextlib.suppress(OSError):
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
        reply = read_reply(sock)
    return status_of(reply), reply.partition(b"\r\n\r\n")[2]


def status_of(reply: bytes) -> int:
    assert reply.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), reply[:80]
    return int(reply.split(b" ", 2)[1])


def grade_request(token: str, body: bytes, *, length: str | None = None, extra: str = "") -> bytes:
    """A raw ``POST /api/grade`` with ``body`` and the ``Content-Length`` given (default: the
    body's length)."""
    length = str(len(body)) if length is None else length
    head = (
        f"POST /api/grade?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n{extra}\r\n"
    )
    return head.encode() + body


def a_grade(server: GradingServer, grade: str = "A") -> bytes:
    return json.dumps({"key": next(iter(server.app.by_key)), "grade": grade}).encode()


def request(
    server: GradingServer, method: str, path: str, body: object = None
) -> tuple[int, object]:
    """A well-formed request with http.client; the reply's status and its JSON (or bytes)."""
    host, port = server.server_address
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        raw = response.read()
        is_json = response.getheader("Content-Type") == "application/json"
        return response.status, json.loads(raw) if is_json else raw
    finally:
        conn.close()


def assert_still_serving(server: GradingServer, token: str) -> None:
    status, state = request(server, "GET", f"/api/state?token={token}")
    assert status == 200 and state["total"] == len(server.app.ids)


@pytest.mark.parametrize(
    "length", ["-1", "abc", "0x10", "1.5", "+5", "1e3", "", "99999999999999999999999, 5"]
)
def test_a_malformed_content_length_is_refused(server, token, length):
    status, _ = exchange(server, grade_request(token, a_grade(server), length=length))
    assert status == 400
    assert server.app.store.grades().empty
    assert_still_serving(server, token)


def test_two_content_lengths_are_refused(server, token):
    body = a_grade(server)
    raw = grade_request(token, body, extra=f"Content-Length: {len(body) + 1}\r\n")
    assert exchange(server, raw)[0] == 400
    assert server.app.store.grades().empty


def test_a_negative_content_length_does_not_read_a_huge_body(server, token):
    """The reproduced bug: ``Content-Length: -1`` and a 5 MB body were read and stored."""
    body = json.dumps({"key": next(iter(server.app.by_key)), "grade": "A", "pad": "x" * 5_000_000})
    with connect(server) as sock:
        sock.sendall(grade_request(token, b"", length="-1"))
        # refused and closed before the body was all sent, maybe
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(body.encode())
        reply = read_reply(sock)
    if reply:  # else reset by the server's close with unread data in its buffer
        assert status_of(reply) == 400
    assert server.app.store.grades().empty
    assert_still_serving(server, token)


def test_an_oversized_content_length_is_refused_before_the_body(server, token):
    with connect(server, timeout=5) as sock:
        # the headers only: the refusal must not wait for the 5 MB it announces
        sock.sendall(grade_request(token, b"", length="5000000"))
        reply = read_reply(sock)
    assert status_of(reply) == 413
    assert server.app.store.grades().empty
    assert_still_serving(server, token)


def test_a_body_over_the_limit_is_refused_one_at_the_limit_taken(server, token):
    grade = a_grade(server)
    over = grade + b" " * (MAX_BODY + 1 - len(grade))
    assert exchange(server, grade_request(token, over))[0] == 413
    assert server.app.store.grades().empty
    at_limit = grade + b" " * (MAX_BODY - len(grade))
    status, body = exchange(server, grade_request(token, at_limit))
    assert status == 200 and json.loads(body)["graded"] == 1
    assert len(server.app.store.grades()) == 1


def test_an_oversized_chunked_body_is_refused(server, token):
    chunk = b"x" * 1024
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(8)) + b"0\r\n\r\n"
    head = (
        f"POST /api/grade?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    assert exchange(server, head.encode() + body)[0] == 413
    assert server.app.store.grades().empty
    assert_still_serving(server, token)


def test_a_small_chunked_grade_is_taken(server, token):
    grade = a_grade(server, "B")
    head = (
        f"POST /api/grade?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(grade), grade)
    assert exchange(server, head.encode() + body)[0] == 200
    assert server.app.store.grades()["grade"].tolist() == ["B"]


def test_oversized_headers_and_garbage_are_refused(server, token):
    huge = f"GET /api/state?token={token} HTTP/1.1\r\nX-Pad: {'x' * MAX_HEADER}\r\n\r\n"
    assert exchange(server, huge.encode())[0] == 431
    assert exchange(server, b"HELLO\r\n\r\n")[0] == 400
    assert exchange(server, b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n")[0] == 400
    assert_still_serving(server, token)


@pytest.mark.parametrize("partial", ["headers", "body"])
def test_a_stalled_client_is_cut_off_while_others_are_served(server, token, partial):
    grade = a_grade(server)
    raw = grade_request(token, grade)
    cut = raw.index(b"Content-Length") if partial == "headers" else len(raw) - 5
    with connect(server, timeout=READ_TIMEOUT + 5) as stalled:
        stalled.sendall(raw[:cut])
        start = time.monotonic()
        # meanwhile another grader is served at once
        other = server.app.store.add_grader("bob")
        status, reply = request(
            server,
            "POST",
            f"/api/grade?token={other}",
            {"key": json.loads(grade)["key"], "grade": "C"},
        )
        assert status == 200 and reply["graded"] == 1
        assert time.monotonic() - start < READ_TIMEOUT
        assert stalled.recv(1) == b""  # closed without a reply (TimeoutError if not)
        waited = time.monotonic() - start
    assert READ_TIMEOUT * 0.9 <= waited <= READ_TIMEOUT + 3
    assert server.app.store.grades()["grader"].tolist() == ["bob"]


def test_many_stalled_clients_hold_no_worker(server, token):
    """More stalled connections than request threads: other graders are still served."""
    sockets = [connect(server) for _ in range(20)]
    try:
        for sock in sockets:
            sock.sendall(grade_request(token, a_grade(server))[:-3])
        start = time.monotonic()
        assert_still_serving(server, token)
        status, _ = request(
            server, "POST", f"/api/grade?token={token}", json.loads(a_grade(server))
        )
        assert status == 200
        assert time.monotonic() - start < READ_TIMEOUT
    finally:
        for sock in sockets:
            sock.close()
    assert len(server.app.store.grades()) == 1


def test_a_slow_but_live_client_is_served(server, token):
    """The timeout is for silence: a request trickled in over longer than it is served."""
    raw = grade_request(token, a_grade(server, "D"), extra="Connection: close\r\n")
    step = len(raw) // 5 + 1
    pieces = [raw[i : i + step] for i in range(0, len(raw), step)]
    assert len(pieces) * READ_TIMEOUT * 0.3 > READ_TIMEOUT
    with connect(server) as sock:
        for number, piece in enumerate(pieces):
            if number:
                time.sleep(READ_TIMEOUT * 0.3)
            sock.sendall(piece)
        reply = read_reply(sock)
    assert status_of(reply) == 200
    assert server.app.store.grades()["grade"].tolist() == ["D"]


def test_concurrent_graders_each_grade_stored_once(server):
    store = server.app.store
    tokens = {f"grader{i}": store.add_grader(f"grader{i}") for i in range(8)}
    keys = list(server.app.by_key)

    def grade_all(token: str) -> list[int]:
        # every candidate twice (a change of mind): still one grade each, the last one
        statuses = []
        for grade in ("A", "C"):
            for key in keys:
                status, _ = request(
                    server, "POST", f"/api/grade?token={token}", {"key": key, "grade": grade}
                )
                statuses.append(status)
        return statuses

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(grade_all, tokens.values(), timeout=50))
    assert all(status == 200 for statuses in results for status in statuses)
    grades = store.grades()
    assert len(grades) == 8 * len(keys)
    assert not grades.duplicated(["candidate_id", "grader"]).any()
    assert set(grades["grade"]) == {"C"}
    assert store.progress() == dict.fromkeys(tokens, len(keys))
    for token in tokens.values():
        status, state = request(server, "GET", f"/api/state?token={token}")
        assert status == 200 and state["graded"] == len(keys)


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"\xff\xfe\x00", b"[" * 2000 + b"]" * 2000, b"42", b'"A"', b"null"],
    ids=["broken", "not-utf8", "nested", "number", "string", "null"],
)
def test_invalid_json_is_refused_with_a_reason(server, token, body):
    status, reply = exchange(server, grade_request(token, body, extra="Connection: close\r\n"))
    assert status == 400 and json.loads(reply)["error"]
    assert server.app.store.grades().empty


def test_missing_or_bad_tokens_are_refused(server, token):
    grade = json.loads(a_grade(server))
    for query in ("", "?token=", "?token=wrong", f"?token={token}x", f"?tok={token}"):
        status, reply = request(server, "POST", f"/api/grade{query}", grade)
        assert status == 403 and reply == {"error": "invalid or missing access token"}
        assert request(server, "GET", f"/api/state{query}")[0] == 403
    raw = grade_request("", a_grade(server), extra="Connection: close\r\n")
    assert exchange(server, raw)[0] == 403
    assert server.app.store.grades().empty


def test_a_grade_of_an_unknown_candidate_is_refused(server, token):
    url = f"/api/grade?token={token}"
    for key in ("f" * 16, "../../etc/passwd", 42, None, ["a"]):
        status, reply = request(server, "POST", url, {"key": key, "grade": "A"})
        assert status == 400 and "no candidate with key" in reply["error"]
    assert request(server, "POST", url, {"key": "f" * 16})[0] == 400
    assert request(server, "PUT", url, {"key": "f" * 16, "grade": "A"})[0] == 405
    assert request(server, "POST", f"/api/other?token={token}", {})[0] == 404
    assert server.app.store.grades().empty


def test_security_headers_and_server_name(server, token):
    host, port = server.server_address
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", f"/?token={token}")
        response = conn.getresponse()
        response.read()
    finally:
        conn.close()
    assert response.status == 200
    assert response.getheader("X-Frame-Options") == "DENY"
    assert "frame-ancestors 'none'" in response.getheader("Content-Security-Policy")
    assert response.getheader("Server") == "lensdask-grading"


@pytest.mark.slow
def test_inspect_serve_serves_and_stops_on_ctrl_c(review_data, tmp_path):
    db = tmp_path / "grades.sqlite"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-c", "from lensdask.cli import main; main()", "inspect"]
    add = subprocess.run(
        [*command, "add-grader", "ann", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert add.returncode == 0, add.stderr
    token = add.stdout.split("token=")[1].split()[0]
    serve = subprocess.Popen(
        [
            *command,
            "serve",
            str(review_data.candidates_path),
            "--stamps",
            str(review_data.stamps),
            "--db",
            str(db),
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(serve.stdout.readline()))
        reader.start()
        reader.join(timeout=60)
        assert lines and " at http://127.0.0.1:" in lines[0], lines
        url = lines[0].split(" at ")[1].split()[0]
        host, port = url.removeprefix("http://").rstrip("/").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", f"/api/state?token={token}")
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.read())["grader"] == "ann"
        conn.close()
        serve.send_signal(signal.SIGINT)
        _, err = serve.communicate(timeout=30)
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.communicate()
    assert serve.returncode == 0, err
    assert "stopped; every grade is saved" in err


def test_an_error_in_the_app_is_a_500_logged_without_touching_logging(server, token, monkeypatch):
    root_handlers = list(logging.getLogger().handlers)

    def fail(grader: str) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(server.app, "state", fail)
    status, reply = request(server, "GET", f"/api/state?token={token}")
    assert status == 500 and reply == {"error": "internal server error"}
    assert logging.getLogger("lensdask.review.server").handlers == []
    assert logging.getLogger("waitress").handlers == []
    assert logging.getLogger().handlers == root_handlers
