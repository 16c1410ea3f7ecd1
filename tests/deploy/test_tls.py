"""TLS for shared clusters: with certificates, every Dask connection is mutual TLS and a
client without them (plain TCP, no certificate, another CA) is refused."""

from __future__ import annotations

import socket
import ssl
from urllib.parse import urlparse

import pandas as pd
import pytest
from click.testing import CliRunner
from deploy_support import TLSFiles

from lensdask.cluster import ClusterSpec, connect


def tls_spec(files: TLSFiles) -> ClusterSpec:
    return ClusterSpec(
        n_workers=1,
        dashboard_address="127.0.0.1:0",
        tls_ca_file=files.ca_file,
        tls_cert=files.cert,
        tls_key=files.key,
    )


@pytest.fixture(scope="module")
def tls_client(tls_files: TLSFiles):
    """A client of a real TLS LocalCluster (one worker) started by lensdask."""
    with connect(tls_spec(tls_files)) as client:
        yield client


def n_clients(client) -> int:
    return client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.clients))


def test_tls_cluster_binds_to_loopback_and_computes(tls_client):
    address = tls_client.scheduler.address
    assert address.startswith("tls://127.0.0.1:")
    workers = tls_client.scheduler_info()["workers"]
    assert len(workers) == 1 and all(w.startswith("tls://127.0.0.1:") for w in workers)
    assert urlparse(tls_client.dashboard_link).hostname == "127.0.0.1"
    assert tls_client.submit(pow, 2, 10).result() == 1024


def test_plain_tcp_client_is_refused(tls_client):
    from distributed import Client

    before = n_clients(tls_client)
    plain = tls_client.scheduler.address.replace("tls://", "tcp://")
    with pytest.raises(OSError):
        Client(plain, timeout="5s")
    assert n_clients(tls_client) == before
    # Bytes that are not a TLS handshake: the scheduler hangs up without answering.
    host, port = urlparse(plain).hostname, urlparse(plain).port
    with socket.create_connection((host, port), timeout=5) as raw:
        raw.sendall(b"\x00" * 64)
        try:
            answer = raw.recv(1024)
        except ConnectionResetError:
            answer = b""
        assert answer == b""


def test_client_without_certificate_is_refused(tls_client, tls_files: TLSFiles):
    """Trusting the CA is not enough: the scheduler asks for the client's certificate."""
    address = urlparse(tls_client.scheduler.address)
    context = ssl.create_default_context(cafile=str(tls_files.ca_file))
    context.check_hostname = False
    # TLS 1.3 reports the missing certificate at the first read, TLS 1.2 in the handshake.
    with (
        pytest.raises((ssl.SSLError, ConnectionError)),
        socket.create_connection((address.hostname, address.port), timeout=5) as raw,
        context.wrap_socket(raw) as conn,
    ):
        conn.sendall(b"\x00" * 8)
        conn.recv(1024)


def test_client_of_another_ca_is_refused(tls_client, other_tls_files: TLSFiles):
    from distributed import Client, Security

    before = n_clients(tls_client)
    other = Security(
        require_encryption=True,
        tls_ca_file=str(other_tls_files.ca_file),
        tls_client_cert=str(other_tls_files.cert),
        tls_client_key=str(other_tls_files.key),
    )
    with pytest.raises(OSError):
        Client(tls_client.scheduler.address, security=other, timeout="5s")
    assert n_clients(tls_client) == before


def test_tls_client_with_the_certificates_joins(tls_client, tls_files: TLSFiles):
    with connect(ClusterSpec(kind=tls_client.scheduler.address, **tls_options(tls_files))) as c:
        assert c.submit(len, "abc").result() == 3


def tls_options(files: TLSFiles) -> dict:
    return {"tls_ca_file": files.ca_file, "tls_cert": files.cert, "tls_key": files.key}


def test_tls_needs_all_three_files(tls_files: TLSFiles):
    with pytest.raises(ValueError, match=r"missing \['tls_key'\]"):
        ClusterSpec(tls_ca_file=tls_files.ca_file, tls_cert=tls_files.cert)
    spec = ClusterSpec(**tls_options(tls_files))
    assert spec.tls and spec.security().require_encryption


@pytest.mark.slow
def test_run_with_tls_options(tmp_path, tls_files: TLSFiles):
    from lensdask.cli import main

    job = tmp_path / "job.yaml"
    job.write_text(f"workdir: {tmp_path / 'work'}\nmock_survey: {{tiles: 1, tile_size: 0.05}}\n")
    args = ["run", str(job), "--workers", "1", "--dashboard-address", "127.0.0.1:0"]
    result = CliRunner().invoke(main, [*args, *tls_files.options(), "--no-progress"])
    assert result.exit_code == 0, result.output
    targets = pd.read_parquet(tmp_path / "work" / "targets.parquet")
    assert f"targets selected: {len(targets)}" in result.output
    half = CliRunner().invoke(main, [*args, "--tls-ca-file", str(tls_files.ca_file)])
    assert half.exit_code == 1
    assert "TLS needs tls_ca_file, tls_cert and tls_key" in half.output
