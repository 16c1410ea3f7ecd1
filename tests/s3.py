"""A real S3 server for the tests: moto's standalone server on loopback, reached through
real HTTP by s3fs (as s3fs and Dask test their own S3 code), never by patching botocore.

Loaded by ``tests/conftest.py`` (``pytest_plugins``). Fixtures:

- ``s3_server`` (session): the running server, its ``endpoint`` URL and its ``traffic``
  (bytes and requests served, counted on the server's side of the socket);
- ``s3_storage_options``: the fsspec ``storage_options`` that reach it (key, secret,
  endpoint, region);
- ``s3_bucket``: a fresh, empty bucket for one test, removed after it;
- ``s3_env``: the same credentials and endpoint as ``AWS_*`` environment variables of this
  process, for the test's duration.

Dask workers are other processes, started before any test sets the environment, so they
never see ``s3_env``: code that runs on workers takes ``storage_options`` explicitly
(pickled with the task), which is also what a production job on a cluster does.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

KEY = "lensdask-test-key"
SECRET = "lensdask-test-secret"
REGION = "eu-west-1"


@dataclass
class Traffic:
    """What the server sent, counted by a WSGI middleware around moto's application: the
    body bytes of each response and the number of requests, by HTTP method."""

    body_bytes: dict[str, int] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def reset(self) -> None:
        with self._lock:
            self.body_bytes.clear()
            self.requests.clear()

    def add(self, method: str, nbytes: int, *, request: bool) -> None:
        with self._lock:
            self.body_bytes[method] = self.body_bytes.get(method, 0) + nbytes
            if request:
                self.requests[method] = self.requests.get(method, 0) + 1

    @property
    def bytes_read(self) -> int:
        """Body bytes of all GET responses (object reads), since the last reset."""
        return self.body_bytes.get("GET", 0)

    @property
    def reads(self) -> int:
        """GET requests since the last reset."""
        return self.requests.get("GET", 0)


class CountingApp:
    """WSGI middleware counting the body bytes of every response into a :class:`Traffic`."""

    def __init__(self, app: Any, traffic: Traffic) -> None:
        self.app = app
        self.traffic = traffic

    def __call__(self, environ: dict, start_response: Any) -> Any:
        method = environ.get("REQUEST_METHOD", "")
        self.traffic.add(method, 0, request=True)
        for chunk in self.app(environ, start_response):
            self.traffic.add(method, len(chunk), request=False)
            yield chunk


@dataclass(frozen=True)
class S3Server:
    """A running moto S3 server."""

    endpoint: str
    """``http://127.0.0.1:<port>``."""
    traffic: Traffic

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs options reaching this server."""
        return {
            "key": KEY,
            "secret": SECRET,
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": REGION},
        }

    @property
    def environment(self) -> dict[str, str]:
        """The same as ``AWS_*`` environment variables (botocore reads the endpoint from
        ``AWS_ENDPOINT_URL_S3``)."""
        return {
            "AWS_ACCESS_KEY_ID": KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
        }


@contextlib.contextmanager
def running_s3_server() -> Iterator[S3Server]:
    """moto's threaded S3 server on a free loopback port, with its traffic counted, until
    the context ends (also used by ``tests/benchmarks/bench_s3_cutouts.py``)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    traffic = Traffic()
    # the threaded server takes no middleware: wrap the application it serves (werkzeug's
    # request handler looks it up on the server object for each request)
    wsgi = server._server
    assert wsgi is not None and callable(wsgi.app), "moto's ThreadedMotoServer changed"
    wsgi.app = CountingApp(wsgi.app, traffic)
    host, port = server.get_host_and_port()
    try:
        yield S3Server(endpoint=f"http://{host}:{port}", traffic=traffic)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """The test S3 server, for the whole session."""
    with running_s3_server() as server:
        yield server


@pytest.fixture
def s3_storage_options(s3_server: S3Server) -> dict[str, Any]:
    """fsspec ``storage_options`` for the test server (a fresh dict per test)."""
    return s3_server.storage_options


_buckets = itertools.count()


@pytest.fixture
def s3_bucket(s3_server: S3Server, s3_storage_options: dict[str, Any]):
    """The name of a fresh, empty bucket on the test server; removed after the test, and
    the server's traffic counters reset before it."""
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True, **s3_storage_options)
    name = f"lensdask-test-{next(_buckets)}"
    fs.mkdir(name)
    s3_server.traffic.reset()
    try:
        yield name
    finally:
        fs.rm(name, recursive=True)
        # filesystems are cached per options, listings per filesystem: none may outlive
        # its bucket
        s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch, s3_server: S3Server) -> dict[str, str]:
    """The test server's credentials and endpoint as ``AWS_*`` environment variables of this
    process (:attr:`S3Server.environment`), none from the user's own profile."""
    env = s3_server.environment
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env
