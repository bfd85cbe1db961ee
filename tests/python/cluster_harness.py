"""Multi-process harness for Sextant's cluster mode (used by test_cluster.py).

Every peer is a real ``sextant`` process with its own temp dir, storage and
ports (REST, gRPC, p2p), all on 127.0.0.1.  Every wait is bounded; every
process started here is killed (SIGKILL, by pid) in ``Cluster.cleanup``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterable

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]


def sextant_bin() -> Path:
    return Path(os.environ.get("SEXTANT_BIN") or REPO_ROOT / "target" / "debug" / "sextant")


HTTP_TIMEOUT_S = 2.0
_reserved_ports: set[int] = set()


def free_port() -> int:
    """An unused TCP port on 127.0.0.1, never handed out twice in this process."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _reserved_ports:
            _reserved_ports.add(port)
            return port
    raise RuntimeError("could not find a free port")


def wait_until(pred: Callable[[], object], timeout: float, interval: float = 0.1, what: str = "condition"):
    """Poll ``pred`` until it returns something truthy; return it, or raise TimeoutError.

    Exceptions raised by ``pred`` count as "not yet" (the last one is reported).
    """
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = pred()
            if value:
                return value
            last = value
        except Exception as e:  # noqa: BLE001 - polled condition, keep trying
            last = e
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not reached within {timeout:.1f}s (last: {last!r})")
        time.sleep(interval)


class Peer:
    """One cluster peer: a sextant process bound to fixed ports and a storage dir."""

    def __init__(self, workdir: Path, name: str):
        self.name = name
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage = self.workdir / "storage"
        self.snapshots = self.workdir / "snapshots"
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.p2p_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.p2p_uri = f"http://127.0.0.1:{self.p2p_port}"
        self.proc: subprocess.Popen | None = None
        self.args: list[str] = []
        self.starts = 0
        self.peer_id: int | None = None
        self._log: Path | None = None

    # -- process lifecycle ---------------------------------------------
    def env(self, cluster_enabled: bool = True) -> dict:
        env = dict(os.environ)
        for k in ("QDRANT_URI", "QDRANT_BOOTSTRAP"):
            env.pop(k, None)
        env.update(
            {
                "QDRANT__CLUSTER__ENABLED": "true" if cluster_enabled else "false",
                "QDRANT__SERVICE__HTTP_PORT": str(self.http_port),
                "QDRANT__SERVICE__GRPC_PORT": str(self.grpc_port),
                "QDRANT__CLUSTER__P2P__PORT": str(self.p2p_port),
                "QDRANT__STORAGE__STORAGE_PATH": str(self.storage),
                "QDRANT__STORAGE__SNAPSHOTS_PATH": str(self.snapshots),
                "QDRANT__LOG_LEVEL": "WARN",
            }
        )
        return env

    def spawn(self, args: Iterable[str] | None = None, cluster_enabled: bool = True) -> "Peer":
        """Start the process (without waiting for it); ``args=None`` reuses the last args."""
        assert not self.alive(), f"{self.name} is already running"
        if args is not None:
            self.args = list(args)
        self.starts += 1
        self._log = self.workdir / f"output.{self.starts}.log"
        with open(self._log, "wb") as out:
            self.proc = subprocess.Popen(
                [str(sextant_bin()), *self.args],
                cwd=str(self.workdir),
                env=self.env(cluster_enabled),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    def log_text(self, limit: int = 6000) -> str:
        if self._log is None or not self._log.exists():
            return ""
        return self._log.read_bytes()[-limit:].decode("utf-8", "replace")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sigkill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def wait_ready(self, timeout: float = 45.0) -> dict:
        """Wait until GET /cluster answers 200 (REST listens only once joined)."""

        def ready():
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with code {self.proc.returncode} before serving REST.\n"
                    f"log:\n{self.log_text()}"
                )
            r = requests.get(f"{self.url}/cluster", timeout=HTTP_TIMEOUT_S)
            return r.json()["result"] if r.status_code == 200 else None

        deadline = time.monotonic() + timeout
        while True:
            try:
                res = ready()
                if res:
                    self.peer_id = int(res["peer_id"])
                    return res
            except AssertionError:
                raise
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{self.name} did not serve GET /cluster within {timeout}s.\nlog:\n{self.log_text()}"
                )
            time.sleep(0.1)

    # -- REST ------------------------------------------------------------
    def get(self, path: str, timeout: float = HTTP_TIMEOUT_S, **kw) -> requests.Response:
        return requests.get(self.url + path, timeout=timeout, **kw)

    def request(self, method: str, path: str, timeout: float = 40.0, **kw) -> requests.Response:
        return requests.request(method, self.url + path, timeout=timeout, **kw)

    def cluster(self) -> dict:
        r = self.get("/cluster")
        assert r.status_code == 200, f"{self.name} GET /cluster -> {r.status_code} {r.text[:300]}"
        return r.json()["result"]

    def __repr__(self) -> str:
        return f"<{self.name} id={self.peer_id} http={self.http_port} p2p={self.p2p_port} alive={self.alive()}>"


class Cluster:
    """A set of peers started from temp dirs; ``cleanup`` SIGKILLs all of them."""

    def __init__(self, base: Path):
        self.base = Path(base)
        self.peers: list[Peer] = []

    def new_peer(self) -> Peer:
        p = Peer(self.base / f"peer{len(self.peers)}", f"peer{len(self.peers)}")
        self.peers.append(p)
        return p

    def start_first(self, timeout: float = 45.0) -> Peer:
        p = self.new_peer()
        p.spawn(["--uri", p.p2p_uri])
        p.wait_ready(timeout)
        return p

    def spawn_joiner(self, via: Peer, own_uri: bool = True) -> Peer:
        p = self.new_peer()
        args = ["--bootstrap", via.p2p_uri]
        if own_uri:
            args += ["--uri", p.p2p_uri]
        return p.spawn(args)

    def alive(self) -> list[Peer]:
        return [p for p in self.peers if p.alive()]

    def cleanup(self) -> None:
        for p in self.peers:
            p.sigkill()

    def logs(self, limit: int = 3000) -> str:
        return "\n".join(f"----- {p.name} ({p!r}) -----\n{p.log_text(limit)}" for p in self.peers)

    # -- consensus views -------------------------------------------------
    def snapshot(self, peers: list[Peer] | None = None) -> dict:
        """name -> GET /cluster result (or the exception text) for each peer."""
        out = {}
        for p in peers if peers is not None else self.alive():
            try:
                out[p.name] = p.cluster()
            except Exception as e:  # noqa: BLE001
                out[p.name] = f"error: {e!r}"
        return out

    def converged(self, peers: list[Peer] | None = None, expected_ids: set[int] | None = None):
        """The agreed view if ``peers`` all agree, else None.

        Agreement: the same peer set, leader and commit everywhere, every peer a voter, exactly the
        leader in role Leader, and nothing pending (no appended-but-uncommitted entry, which is
        what a membership change in flight looks like).
        """
        peers = peers if peers is not None else self.alive()
        snap = self.snapshot(peers)
        views = list(snap.values())
        if any(not isinstance(v, dict) for v in views):
            return None
        ids = expected_ids if expected_ids is not None else {int(v["peer_id"]) for v in views}
        leaders = {v["raft_info"]["leader"] for v in views}
        commits = {v["raft_info"]["commit"] for v in views}
        if len(leaders) != 1 or None in leaders or len(commits) != 1:
            return None
        leader = int(next(iter(leaders)))
        for v in views:
            if {int(k) for k in v["peers"]} != ids:
                return None
            if not v["raft_info"]["is_voter"]:
                return None
            if v["raft_info"]["pending_operations"] != 0:  # e.g. a membership change still in flight
                return None
            want_role = "Leader" if int(v["peer_id"]) == leader else "Follower"
            if v["raft_info"]["role"] != want_role:
                return None
        return {"leader": leader, "commit": next(iter(commits)), "ids": ids, "snapshot": snap}

    def wait_converged(self, timeout: float, peers: list[Peer] | None = None, expected_ids: set[int] | None = None):
        deadline = time.monotonic() + timeout
        last = None
        while True:
            view = self.converged(peers, expected_ids)
            if view:
                return view
            last = self.snapshot(peers)
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"cluster did not converge within {timeout}s.\nlast views: {last}\n{self.logs()}"
                )
            time.sleep(0.2)

    def leader_peer(self, view: dict) -> Peer:
        for p in self.peers:
            if p.peer_id == view["leader"]:
                return p
        raise AssertionError(f"leader {view['leader']} is none of {self.peers}")


def start_cluster(base: Path, n: int = 3) -> tuple[Cluster, list[Peer]]:
    """A converged cluster of ``n`` peers (the first with --uri, the others joining it):
    (cluster, [first peer, joiners...]). On failure every started peer is killed."""
    c = Cluster(base)
    try:
        a = c.start_first()
        peers = [a]
        for _ in range(n - 1):
            p = c.spawn_joiner(a)
            p.wait_ready()
            peers.append(p)
        c.wait_converged(60)
    except BaseException:
        c.cleanup()
        raise
    return c, peers
