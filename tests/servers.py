"""Throw-away servers for the scale-out tests: a PostgreSQL cluster and an MLflow tracking server on it.

It is the topology of `docker/compose.yaml`, started directly (no docker engine runs on CI): `initdb`
into a temporary folder, `pg_ctl` on a loopback port (PostgreSQL refuses to run as root, so under root
the cluster belongs to the `postgres` user), then `mlflow server` with its backend store on that
cluster and its artifacts served from a temporary folder. `.ci/run` installs PostgreSQL (Debian's
`postgresql`); the tests skip, saying so, only where its binaries are not installed.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    path = found[-1] if found else shutil.which("initdb")
    return Path(path).parent if path else None


@dataclass
class Postgres:
    bindir: Path
    port: int
    as_owner: list[str]

    def database(self, name: str) -> str:
        """A new database on the cluster; its SQLAlchemy URL."""
        subprocess.run([*self.as_owner, str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                        "-U", "postgres", name], check=True, capture_output=True)
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"


@pytest.fixture(scope="session")
def postgres():
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed here (apt-get install postgresql; .ci/run does)")
    root = Path(tempfile.mkdtemp(prefix="bnnbench-pg-", dir="/tmp"))
    as_owner = []
    if os.geteuid() == 0:  # the server refuses root: the cluster is the postgres user's
        shutil.chown(root, "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()
    subprocess.run([*as_owner, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                    "--no-sync", "-E", "UTF8"], check=True, capture_output=True)
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    subprocess.run([*as_owner, str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"),
                    "-w", "start"], check=True, capture_output=True)
    try:
        yield Postgres(bindir, port, as_owner)
    finally:
        subprocess.run([*as_owner, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class MlflowServer:
    uri: str
    artifacts: Path


@pytest.fixture(scope="session")
def mlflow_server(postgres):
    """`mlflow server` on a PostgreSQL database, serving artifacts from a folder (proxied artifact access:
    clients upload and download through the server, as workers on other machines would)."""
    artifacts = Path(tempfile.mkdtemp(prefix="bnnbench-artifacts-", dir="/tmp"))
    port = free_port()
    log = open(artifacts.parent / f"{artifacts.name}.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                               postgres.database("mlflow"), "--artifacts-destination", str(artifacts), "--host",
                               "127.0.0.1", "--port", str(port), "--workers", "2"],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    raise RuntimeError(f"mlflow server did not start:\n{Path(log.name).read_text()[-3000:]}") from None
                time.sleep(0.5)
        yield MlflowServer(uri, artifacts)
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)
        log.close()
        shutil.rmtree(artifacts, ignore_errors=True)
