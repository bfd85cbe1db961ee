"""Process harness for test_cluster_data.py: a 3-peer Sextant cluster and a single node.

Every process is a real ``sextant`` binary with its own temp dir, storage and ports
(all on 127.0.0.1).  Every wait is bounded; ``Procs.cleanup`` SIGKILLs, by pid, every
process started here.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
HTTP_TIMEOUT_S = 30.0
_used_ports: set[int] = set()


def sextant_bin() -> Path:
    return Path(os.environ.get("SEXTANT_BIN") or REPO_ROOT / "target" / "debug" / "sextant")


def free_port() -> int:
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _used_ports:
            _used_ports.add(port)
            return port
    raise RuntimeError("no free port")


class Node:
    """One sextant process (a cluster peer or a single node)."""

    def __init__(self, workdir: Path, name: str, cluster: bool):
        self.name = name
        self.cluster = cluster
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.p2p_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.p2p_uri = f"http://127.0.0.1:{self.p2p_port}"
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "output.log"
        self.peer_id: int | None = None
        self.session = requests.Session()

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("QDRANT__") and k not in ("QDRANT_URI", "QDRANT_BOOTSTRAP")}
        env.update({
            "QDRANT__SERVICE__HTTP_PORT": str(self.http_port),
            "QDRANT__SERVICE__GRPC_PORT": str(self.grpc_port),
            "QDRANT__STORAGE__STORAGE_PATH": str(self.workdir / "storage"),
            "QDRANT__STORAGE__SNAPSHOTS_PATH": str(self.workdir / "snapshots"),
            "QDRANT__LOG_LEVEL": os.environ.get("SEXTANT_TEST_LOG", "WARN"),
        })
        if self.cluster:
            env["QDRANT__CLUSTER__ENABLED"] = "true"
            env["QDRANT__CLUSTER__P2P__PORT"] = str(self.p2p_port)
        return env

    def spawn(self, args: list[str]) -> "Node":
        binary = sextant_bin()
        assert binary.exists(), f"Sextant binary not found at {binary} (set SEXTANT_BIN)"
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen([str(binary), *args], cwd=str(self.workdir), env=self.env(),
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    def log_text(self, limit: int = 4000) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_bytes()[-limit:].decode("utf-8", "replace")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.session.close()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode} before it was ready.\n"
                                     f"log:\n{self.log_text()}")
            try:
                r = requests.get(self.url + "/readyz", timeout=2)
                if r.status_code == 200:
                    return
                last = f"HTTP {r.status_code}"
            except requests.RequestException as e:
                last = repr(e)
            if time.monotonic() >= deadline:
                raise AssertionError(f"{self.name} not ready within {timeout}s (last: {last})\n"
                                     f"log:\n{self.log_text()}")
            time.sleep(0.1)

    # -- REST --------------------------------------------------------------
    def call(self, method: str, path: str, body=None, timeout: float = HTTP_TIMEOUT_S) -> requests.Response:
        return self.session.request(method, self.url + path, json=body, timeout=timeout)

    def ok(self, method: str, path: str, body=None, timeout: float = HTTP_TIMEOUT_S):
        r = self.call(method, path, body, timeout)
        assert r.status_code == 200, f"{self.name} {method} {path} {body!r:.500} -> {r.status_code} {r.text[:500]}"
        return r.json()["result"]

    def __repr__(self) -> str:
        return f"<{self.name} id={self.peer_id} http={self.http_port}>"


class Procs:
    """Every process started for one test module; ``cleanup`` kills them all."""

    def __init__(self, base: Path):
        self.base = Path(base)
        self.nodes: list[Node] = []

    def _new(self, name: str, cluster: bool) -> Node:
        n = Node(self.base / name, name, cluster)
        self.nodes.append(n)
        return n

    def start_single(self) -> Node:
        n = self._new("single", cluster=False).spawn([])
        n.wait_ready()
        return n

    def start_cluster(self, n_peers: int = 3, timeout: float = 90.0) -> list[Node]:
        return start_cluster(self, n_peers, timeout)

    def cleanup(self) -> None:
        for n in self.nodes:
            try:
                n.kill()
            except Exception:  # noqa: BLE001 - best effort, keep killing the others
                pass

    def logs(self, limit: int = 2000) -> str:
        return "\n".join(f"----- {n!r} -----\n{n.log_text(limit)}" for n in self.nodes)


def start_cluster(procs: Procs, n_peers: int = 3, timeout: float = 90.0) -> list[Node]:
    """Start ``n_peers`` peers (first with --uri, others --bootstrap) and wait until every
    peer serves REST and every peer sees all peers as voters with one agreed leader."""
    first = procs._new("peer0", cluster=True)
    first.spawn(["--uri", first.p2p_uri])
    first.wait_ready(timeout)
    peers = [first]
    for i in range(1, n_peers):
        p = procs._new(f"peer{i}", cluster=True)
        p.spawn(["--bootstrap", first.p2p_uri, "--uri", p.p2p_uri])
        peers.append(p)
    for p in peers[1:]:
        p.wait_ready(timeout)
    deadline = time.monotonic() + timeout
    last = None
    while True:
        views = []
        try:
            for p in peers:
                r = requests.get(p.url + "/cluster", timeout=2)
                views.append(r.json()["result"] if r.status_code == 200 else None)
        except requests.RequestException as e:
            views.append(repr(e))
        last = views
        if len(views) == n_peers and all(isinstance(v, dict) for v in views):
            leaders = {v["raft_info"]["leader"] for v in views}
            if (len(leaders) == 1 and None not in leaders
                    and all(len(v["peers"]) == n_peers and v["raft_info"]["is_voter"] for v in views)):
                for p, v in zip(peers, views):
                    p.peer_id = int(v["peer_id"])
                return peers
        if time.monotonic() >= deadline:
            raise AssertionError(f"cluster did not converge within {timeout}s; last views: {last}\n{procs.logs()}")
        time.sleep(0.2)
