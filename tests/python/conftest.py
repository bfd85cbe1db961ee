"""Shared fixtures for the Sextant end-to-end suite.

The server under test is started from ``$SEXTANT_BIN`` (default:
``<repo>/target/debug/sextant``) and configured only through the Qdrant-style
environment variables.  Every wait in here is bounded.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests
from qdrant_client import QdrantClient

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / "target" / "debug" / "sextant"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def sextant_bin() -> Path:
    return Path(os.environ.get("SEXTANT_BIN") or DEFAULT_BIN)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SextantServer:
    """One Sextant process bound to a storage directory and a fixed port."""

    def __init__(self, workdir: Path, http_port: int | None = None, grpc_port: int | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage = self.workdir / "storage"
        self.snapshots = self.workdir / "snapshots"
        self.port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        while self.grpc_port == self.port:
            self.grpc_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self._start_count = 0
        self._stderr_path: Path | None = None
        self.args: list[str] = []  # extra command-line arguments

    # -- lifecycle -----------------------------------------------------
    def env(self) -> dict:
        env = dict(os.environ)
        env.update(
            {
                "QDRANT__SERVICE__HTTP_PORT": str(self.port),
                "QDRANT__SERVICE__GRPC_PORT": str(self.grpc_port),
                "QDRANT__STORAGE__STORAGE_PATH": str(self.storage),
                "QDRANT__STORAGE__SNAPSHOTS_PATH": str(self.snapshots),
                "QDRANT__LOG_LEVEL": os.environ.get("SEXTANT_TEST_LOG", "WARN"),
            }
        )
        return env

    def start(self) -> "SextantServer":
        binary = sextant_bin()
        if not binary.exists():
            pytest.fail(
                f"Sextant binary not found at {binary} (set SEXTANT_BIN or build target/debug/sextant)",
                pytrace=False,
            )
        self._start_count += 1
        self._stderr_path = self.workdir / f"stderr.{self._start_count}.log"
        stdout_path = self.workdir / f"stdout.{self._start_count}.log"
        with open(self._stderr_path, "wb") as err, open(stdout_path, "wb") as out:
            self.proc = subprocess.Popen(
                [str(binary), *self.args],
                cwd=str(self.workdir),
                env=self.env(),
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )
        self.wait_ready()
        return self

    def stderr_text(self, limit: int = 20000) -> str:
        if self._stderr_path is None or not self._stderr_path.exists():
            return ""
        data = self._stderr_path.read_bytes()
        return data[-limit:].decode("utf-8", "replace")

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        last_err = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(
                    f"Sextant exited with code {self.proc.returncode} before becoming ready.\n"
                    f"stderr:\n{self.stderr_text()}",
                    pytrace=False,
                )
            try:
                r = requests.get(f"{self.url}/readyz", timeout=1.0)
                if r.status_code == 200:
                    return
                last_err = f"HTTP {r.status_code}: {r.text[:200]}"
            except requests.RequestException as e:  # not listening yet
                last_err = repr(e)
            time.sleep(0.1)
        self.kill()
        pytest.fail(
            f"Sextant not ready within {timeout}s on {self.url} (last: {last_err}).\n"
            f"stderr:\n{self.stderr_text()}",
            pytrace=False,
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, no chance to flush."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass

    def stop(self) -> None:
        """Graceful SIGTERM, then SIGKILL if it does not exit in time."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> "SextantServer":
        """Restart on the same storage and the same ports (kills if still running)."""
        self.kill()
        return self.start()

    def client(self, **kw) -> QdrantClient:
        kw.setdefault("check_compatibility", False)  # client 1.20 vs server 1.18.3: skip the version probe
        return QdrantClient(url=self.url, prefer_grpc=False, timeout=30, **kw)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    srv = SextantServer(tmp_path_factory.mktemp("sextant"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def make_server(tmp_path_factory):
    """Factory for dedicated servers (used by tests that kill the process)."""
    started: list[SextantServer] = []

    def _make() -> SextantServer:
        srv = SextantServer(tmp_path_factory.mktemp("sextant-own"))
        started.append(srv)
        return srv

    yield _make
    for srv in started:
        srv.stop()


@pytest.fixture
def client(server):
    # If an earlier test left the shared server dead, bring it back on the same storage.
    if not server.alive():
        server.start()
    c = server.client()
    yield c
    c.close()


@pytest.fixture
def memory_client():
    c = QdrantClient(":memory:")
    yield c
    c.close()


@pytest.fixture
def collection_name(request):
    """A unique collection name per test."""
    base = "".join(ch if ch.isalnum() else "_" for ch in request.node.name)[:40]
    return f"{base}_{uuid.uuid4().hex[:8]}"


def unique_name(prefix: str = "c") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


# The differential seed is fixed once per run (random unless given) and shown in the header.
if not os.environ.get("SEXTANT_DIFF_SEED"):
    import random as _random

    os.environ["SEXTANT_DIFF_SEED"] = str(_random.SystemRandom().randrange(1, 2**31))


def pytest_report_header(config):
    return f"SEXTANT_DIFF_SEED={os.environ['SEXTANT_DIFF_SEED']}  sextant binary: {sextant_bin()}"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running (crash / differential); still runs by default")
