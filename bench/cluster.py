#!/usr/bin/env python3
"""Cluster benchmark: a 3-peer Sextant cluster against a single Sextant node, same run.

Usage (from the repository root):

    .venv/bin/python bench/cluster.py --smoke                       # CI: tiny data, < ~1 min on a debug build
    .venv/bin/python bench/cluster.py                               # 100k x 128, writes docs/benchmarks-cluster.md
    .venv/bin/python bench/cluster.py --points 20000 --dim 1536 --bin target/release/sextant

What it does (everything on 127.0.0.1, every process killed with SIGKILL at the end):
  * copies --bin (default target/release/sextant if present, else target/debug/sextant) to a
    temp dir, so a rebuild during the run cannot swap binaries, and starts from it
    - one single node (cluster disabled) and
    - three peers in cluster mode (peer0 with --uri, the others with --bootstrap peer0),
    each with its own storage dir and free ports; waits for one leader and three voters;
  * creates the same collection (Cosine, --dim, HNSW m/ef_construct, shard_number 3) on the
    single node and twice on the cluster: replication_factor 1 and 2. Indexing is off
    (indexing_threshold 0) while uploading, so the upsert numbers measure the write path;
  * upserts --points seeded synthetic vectors in batches of --batch points from --clients
    threads (keep-alive connections, bodies encoded before the clock starts, wait=true).
    The points are split into --repeat rounds; each round uploads the same chunk to the
    single node, the rf=1 and the rf=2 collection in rotated order (the machine is noisy:
    every target sees the same moments). On the cluster, batch i enters through peer i % 3;
  * switches indexing on (indexing_threshold --indexing-threshold-kb) and waits until every
    peer reports status green with every vector indexed;
  * search: --queries queries per pass, 1 client and --search-clients clients, on the single
    node and on each cluster collection entering through the leader and each follower.
    Every round runs every target once in rotated order; the best of --repeat rounds is kept
    (QPS: highest; latency mean/p50/p99: lowest). Ratios are cluster / single node of the
    same run; recall@k against exact numpy neighbours checks the fan-out merge;
  * prints the table; without --smoke writes --doc (docs/benchmarks-cluster.md).

Floors (from the issue): rf=2 upserts >= 0.5x the single node, search QPS >= 0.7x, and the
single-client fan-out search latency (mean) within +1 ms of the single node's.
--smoke asserts only that everything works (no failed request, counts, green, results).
"""

from __future__ import annotations

import argparse
import atexit
import datetime as _dt
import hashlib
import http.client
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
COLL_SINGLE = "bench"
FLOORS = {"upsert_rf2": 0.5, "search_qps": 0.7, "latency_delta_ms": 1.0}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- processes

_PROCS: list["Node"] = []
_PORTS: set[int] = set()


def free_port() -> int:
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in _PORTS:
            _PORTS.add(port)
            return port
    raise RuntimeError("no free port")


def kill_all() -> None:
    """SIGKILL every process this script started (by pid / own process group)."""
    for n in list(_PROCS):
        n.kill()


def proc_cpu_secs(pid: int) -> float | None:
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def system_busy_secs() -> float | None:
    """CPU seconds spent busy by all cores since boot (/proc/stat)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + (v[4] if len(v) > 4 else 0)
        return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None


class Node:
    """One sextant process: a cluster peer (cluster=True) or a single node."""

    def __init__(self, binary: Path, work: Path, name: str, cluster: bool):
        self.binary, self.name, self.cluster = binary, name, cluster
        self.dir = work / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.http_port, self.grpc_port, self.p2p_port = free_port(), free_port(), free_port()
        self.p2p_uri = f"http://{HOST}:{self.p2p_port}"
        self.proc: subprocess.Popen | None = None
        self.peer_id: int | None = None
        self.log_path = self.dir / "output.log"

    def start(self, args: list[str]) -> "Node":
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("QDRANT__") and k not in ("QDRANT_URI", "QDRANT_BOOTSTRAP")}
        env.update({
            "QDRANT__SERVICE__HOST": HOST,
            "QDRANT__SERVICE__HTTP_PORT": str(self.http_port),
            "QDRANT__SERVICE__GRPC_PORT": str(self.grpc_port),
            "QDRANT__STORAGE__STORAGE_PATH": str(self.dir / "storage"),
            "QDRANT__STORAGE__SNAPSHOTS_PATH": str(self.dir / "snapshots"),
            "QDRANT__LOG_LEVEL": "WARN",
            "QDRANT__TELEMETRY_DISABLED": "true",
            "QDRANT__CLUSTER__ENABLED": "true" if self.cluster else "false",
        })
        if self.cluster:
            env["QDRANT__CLUSTER__P2P__PORT"] = str(self.p2p_port)
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen([str(self.binary), *args], cwd=str(self.dir), env=env, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        _PROCS.append(self)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, limit: int = 3000) -> str:
        try:
            return self.log_path.read_bytes()[-limit:].decode("utf-8", "replace")
        except OSError:
            return ""

    def cpu(self) -> float:
        return (proc_cpu_secs(self.proc.pid) or 0.0) if self.proc else 0.0

    def request(self, method: str, path: str, body=None, timeout: float = 60.0):
        c = http.client.HTTPConnection(HOST, self.http_port, timeout=timeout)
        try:
            data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
            c.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
            r = c.getresponse()
            raw = r.read()
            try:
                return r.status, json.loads(raw) if raw else None
            except ValueError:
                return r.status, raw.decode("utf-8", "replace")
        finally:
            c.close()

    def ok(self, method: str, path: str, body=None, timeout: float = 60.0):
        st, res = self.request(method, path, body, timeout)
        if st != 200:
            raise RuntimeError(f"{self.name} {method} {path} -> HTTP {st}: {str(res)[:500]}")
        return res["result"]

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                st, _ = self.request("GET", "/readyz", timeout=2)
                if st == 200:
                    return
                last = f"HTTP {st}"
            except (OSError, http.client.HTTPException) as e:
                last = repr(e)
            if time.monotonic() >= deadline:
                raise RuntimeError(f"{self.name} not ready within {timeout:.0f}s (last: {last}):\n{self.log_tail()}")
            time.sleep(0.1)

    def __repr__(self) -> str:
        return f"<{self.name} http={self.http_port} p2p={self.p2p_port} id={self.peer_id}>"


def start_cluster(binary: Path, work: Path, n_peers: int, timeout: float) -> list[Node]:
    first = Node(binary, work, "peer0", cluster=True)
    first.start(["--uri", first.p2p_uri])
    first.wait_ready(timeout)
    peers = [first]
    for i in range(1, n_peers):
        p = Node(binary, work, f"peer{i}", cluster=True)
        p.start(["--bootstrap", first.p2p_uri, "--uri", p.p2p_uri])
        peers.append(p)
    for p in peers[1:]:
        p.wait_ready(timeout)
    deadline = time.monotonic() + timeout
    last = None
    while True:
        views = []
        for p in peers:
            try:
                st, body = p.request("GET", "/cluster", timeout=2)
                views.append(body["result"] if st == 200 else f"HTTP {st}")
            except (OSError, http.client.HTTPException, ValueError, TypeError, KeyError) as e:
                views.append(repr(e))
        last = views
        if all(isinstance(v, dict) for v in views):
            leaders = {v["raft_info"]["leader"] for v in views}
            if (len(leaders) == 1 and None not in leaders
                    and all(len(v["peers"]) == n_peers and v["raft_info"]["is_voter"]
                            and v["raft_info"]["pending_operations"] == 0 for v in views)):
                for p, v in zip(peers, views):
                    p.peer_id = int(v["peer_id"])
                leader = int(next(iter(leaders)))
                # leader first, then the followers in start order
                return sorted(peers, key=lambda p: p.peer_id != leader)
        if time.monotonic() >= deadline:
            logs = "\n".join(f"--- {p.name}\n{p.log_tail(1500)}" for p in peers)
            raise RuntimeError(f"cluster did not converge within {timeout:.0f}s; last views: {last}\n{logs}")
        time.sleep(0.2)


# --------------------------------------------------------------------------- data


def make_data(n: int, nq: int, dim: int, seed: int):
    """Seeded Gaussian clusters in a 24-d latent space mapped linearly to `dim`, plus a little
    isotropic noise; values rounded to 6 decimals (what the JSON carries)."""
    rng = np.random.default_rng(seed)
    lat_dim = min(24, dim)
    proj = (rng.normal(size=(lat_dim, dim)) / np.sqrt(lat_dim)).astype(np.float32)
    centers = rng.normal(scale=3.0, size=(64, lat_dim)).astype(np.float32)

    def draw(count: int, stream: int) -> np.ndarray:
        out = np.empty((count, dim), dtype=np.float32)
        for c0 in range(0, count, 50_000):
            g = np.random.default_rng([seed, stream, c0])
            m = min(50_000, count - c0)
            a = g.integers(0, len(centers), size=m)
            lat = centers[a] + g.normal(size=(m, lat_dim)).astype(np.float32)
            out[c0:c0 + m] = lat @ proj + g.normal(scale=0.05, size=(m, dim)).astype(np.float32)
        return np.round(out, 6)

    return draw(n, 1), draw(nq, 2)


def exact_topk(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact Cosine top-k ids (numpy, query blocks)."""
    def unit(x):
        nrm = np.linalg.norm(x, axis=1, keepdims=True)
        nrm[nrm == 0] = 1
        return x / nrm

    xb, xq = unit(base), unit(queries)
    out = np.empty((len(xq), k), dtype=np.int64)
    step = max(1, int(5e7 // max(1, len(xb))))
    for q0 in range(0, len(xq), step):
        s = xq[q0:q0 + step] @ xb.T
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        rows = np.arange(len(s))[:, None]
        order = np.argsort(-s[rows, top], axis=1, kind="stable")
        out[q0:q0 + step] = top[rows, order]
    return out


def encode_points(vecs: np.ndarray, id0: int) -> bytes:
    rows = vecs.astype(np.float64).round(6).tolist()
    return json.dumps({"points": [{"id": id0 + j, "vector": v, "payload": {"g": (id0 + j) % 100}}
                                  for j, v in enumerate(rows)]}).encode()


# --------------------------------------------------------------------------- measurement


class Target:
    """Where a pass goes: a collection and the node(s) whose REST port it enters through."""

    def __init__(self, label: str, collection: str, entries: list[Node], cpu_nodes: list[Node], rf: int | None):
        self.label, self.collection, self.entries, self.cpu_nodes, self.rf = label, collection, entries, cpu_nodes, rf

    def cpu(self) -> float:
        return sum(n.cpu() for n in self.cpu_nodes)


def upload(t: Target, bodies: list[tuple[int, bytes]], clients: int, timeout_s: float) -> dict:
    """PUT every pre-encoded batch once (wait=true) from `clients` threads; batch i enters
    through t.entries[i % len]."""
    errors: list[str] = []
    counter = itertools.count()
    deadline = time.monotonic() + timeout_s
    path = f"/collections/{t.collection}/points?wait=true"
    barrier = threading.Barrier(clients + 1)
    points = [0] * clients

    def worker(w: int):
        conns: dict[int, http.client.HTTPConnection] = {}
        try:
            barrier.wait(30)
            while time.monotonic() < deadline:
                i = next(counter)
                if i >= len(bodies):
                    return
                node = t.entries[i % len(t.entries)]
                c = conns.get(node.http_port) or http.client.HTTPConnection(HOST, node.http_port, timeout=max(
                    10.0, min(300.0, deadline - time.monotonic())))
                conns[node.http_port] = c
                npts, body = bodies[i]
                try:
                    c.request("PUT", path, body=body, headers={"Content-Type": "application/json"})
                    r = c.getresponse()
                    raw = r.read()
                except (OSError, http.client.HTTPException) as e:
                    errors.append(f"batch {i} via {node.name}: {e!r}")
                    c.close()
                    conns.pop(node.http_port, None)
                    continue
                if r.status != 200:
                    errors.append(f"batch {i} via {node.name}: HTTP {r.status} {raw[:300]!r}")
                else:
                    points[w] += npts
        finally:
            for c in conns.values():
                c.close()

    ts = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(clients)]
    for th in ts:
        th.start()
    cpu0 = t.cpu()
    barrier.wait(30)
    t0 = time.perf_counter()
    for th in ts:
        th.join(max(1.0, deadline - time.monotonic() + 30))
    wall = time.perf_counter() - t0
    done = sum(points)
    if done < sum(n for n, _ in bodies) and not errors:
        errors.append(f"timed out after {timeout_s:.0f}s: {done} of {sum(n for n, _ in bodies)} points acknowledged")
    return {"points": done, "wall": wall, "errors": errors, "server_cpu_s": t.cpu() - cpu0}


def search_pass(t: Target, bodies: list[bytes], clients: int, timeout_s: float, k: int) -> dict:
    """Send every query once with `clients` keep-alive threads through t.entries[0]."""
    node = t.entries[0]
    n = len(bodies)
    ids: list = [None] * n
    lat = [0.0] * n
    errors: list[str] = []
    counter = itertools.count()
    path = f"/collections/{t.collection}/points/search"
    deadline = time.monotonic() + timeout_s
    barrier = threading.Barrier(clients + 1)

    def worker():
        c = http.client.HTTPConnection(HOST, node.http_port, timeout=60)
        try:
            barrier.wait(30)
            while time.monotonic() < deadline:
                i = next(counter)
                if i >= n:
                    return
                t0 = time.perf_counter()
                try:
                    c.request("POST", path, body=bodies[i], headers={"Content-Type": "application/json"})
                    r = c.getresponse()
                    raw = r.read()
                except (OSError, http.client.HTTPException) as e:
                    errors.append(f"query {i} via {node.name}: {e!r}")
                    c.close()
                    c = http.client.HTTPConnection(HOST, node.http_port, timeout=60)
                    continue
                lat[i] = (time.perf_counter() - t0) * 1e3
                if r.status != 200:
                    errors.append(f"query {i} via {node.name}: HTTP {r.status} {raw[:300]!r}")
                    continue
                ids[i] = [p["id"] for p in json.loads(raw)["result"]]
        finally:
            c.close()

    ts = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for th in ts:
        th.start()
    cpu0 = t.cpu()
    barrier.wait(30)
    t0 = time.perf_counter()
    for th in ts:
        th.join(max(1.0, deadline - time.monotonic() + 30))
    wall = time.perf_counter() - t0
    cpu = t.cpu() - cpu0
    done = [i for i in range(n) if ids[i] is not None]
    ls = np.array([lat[i] for i in done]) if done else np.array([np.nan])
    empty = sum(1 for i in done if len(ids[i]) < k)
    return {"queries": len(done), "errors": errors, "wall": wall, "qps": len(done) / wall if wall > 0 else 0.0,
            "mean_ms": float(ls.mean()), "p50_ms": float(np.percentile(ls, 50)), "p99_ms": float(np.percentile(ls, 99)),
            "server_cpu_ms_per_query": cpu * 1e3 / len(done) if done else None, "short_results": empty,
            "ids": ids}


def recall(ids: list, gt: np.ndarray, k: int) -> float | None:
    got = [(i, r) for i, r in enumerate(ids) if r is not None]
    if not got:
        return None
    return float(np.mean([len(set(r[:k]) & set(gt[i][:k].tolist())) / k for i, r in got]))


class LoadMeter:
    """CPU used by processes other than this benchmark and its servers (cores), per phase."""

    def __init__(self):
        self.t, self.busy, self.ours = None, None, None

    def _ours(self) -> float:
        return (proc_cpu_secs(os.getpid()) or 0.0) + sum(n.cpu() for n in _PROCS)

    def start(self):
        self.t, self.busy, self.ours = time.monotonic(), system_busy_secs(), self._ours()

    def stop(self) -> float | None:
        busy = system_busy_secs()
        if self.busy is None or busy is None:
            return None
        wall = time.monotonic() - self.t
        return max(0.0, ((busy - self.busy) - (self._ours() - self.ours)) / wall) if wall > 0 else None


# --------------------------------------------------------------------------- the run


def collection_body(a, rf: int, indexing_threshold: int) -> dict:
    body = {"vectors": {"size": a.dim, "distance": "Cosine"},
            "shard_number": 3, "replication_factor": rf,
            "hnsw_config": {"m": a.m, "ef_construct": a.ef_construct},
            "optimizers_config": {"indexing_threshold": indexing_threshold}}
    if a.write_consistency_factor:
        body["write_consistency_factor"] = a.write_consistency_factor
    return body


def wait_collection_everywhere(nodes: list[Node], name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for n in nodes:
        while True:
            st, body = n.request("GET", f"/collections/{name}", timeout=10)
            if st == 200:
                break
            if time.monotonic() >= deadline:
                raise RuntimeError(f"{n.name}: collection {name} not visible within {timeout:.0f}s: HTTP {st} {body}")
            time.sleep(0.1)


def wait_green(groups: list[tuple[str, list[Node], int]], n_points: int, timeout: float, min_indexed) -> dict:
    """groups: (collection, nodes, expected indexed vectors summed over nodes). Green = every
    node reports status green and the cluster-wide point count, twice in a row, and the
    indexed vectors reach the expected sum (minus a tail below the indexing threshold)."""
    deadline = time.monotonic() + timeout
    t0 = time.monotonic()
    out = {}
    pending = {g[0]: g for g in groups}
    streak = {g[0]: 0 for g in groups}
    last = {}
    while pending:
        for name, (coll, nodes, want) in list(pending.items()):
            infos = [n.ok("GET", f"/collections/{coll}", timeout=30) for n in nodes]
            indexed = sum(int(i.get("indexed_vectors_count") or 0) for i in infos)
            counts = {int(i.get("points_count") or 0) for i in infos}
            green = all(i.get("status") == "green" for i in infos)
            last[name] = {"status": [i.get("status") for i in infos], "indexed": indexed, "points": sorted(counts)}
            if green and counts == {n_points} and indexed >= min_indexed(want):
                streak[name] += 1
                if streak[name] >= 2:
                    out[name] = {"secs": time.monotonic() - t0, "indexed_vectors": indexed, "expected_indexed": want}
                    del pending[name]
            else:
                streak[name] = 0
        if not pending:
            break
        if time.monotonic() >= deadline:
            raise RuntimeError(f"not green within {timeout:.0f}s: {last}")
        time.sleep(1.0)
    return out


def best(passes: list[dict]) -> dict:
    ok = [p for p in passes if p["queries"]]
    if not ok:
        return {"qps": 0.0, "mean_ms": None, "p50_ms": None, "p99_ms": None, "errors": sum(len(p["errors"]) for p in passes)}
    return {"qps": max(p["qps"] for p in ok),
            "mean_ms": min(p["mean_ms"] for p in ok),
            "p50_ms": min(p["p50_ms"] for p in ok),
            "p99_ms": min(p["p99_ms"] for p in ok),
            "server_cpu_ms_per_query": min(p["server_cpu_ms_per_query"] for p in ok),
            "errors": sum(len(p["errors"]) for p in passes),
            "first_error": next((p["errors"][0] for p in passes if p["errors"]), None),
            "short_results": sum(p["short_results"] for p in passes),
            "passes": [{k: round(v, 3) if isinstance(v, float) else v for k, v in p.items() if k not in ("ids", "errors")}
                       for p in passes]}


def machine_facts(binary: Path, copied: Path) -> dict:
    cpu = ""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    except OSError:
        pass
    mem = None
    try:
        mem = next((round(int(line.split()[1]) / 1024 / 1024, 1) for line in open("/proc/meminfo")
                    if line.startswith("MemTotal:")), None)
    except OSError:
        pass

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=20).stdout.strip()
        except Exception:  # noqa: BLE001
            return None

    h = hashlib.sha256()
    with open(copied, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    st = binary.stat()
    profile = "debug" if "/debug/" in str(binary.resolve()) else ("release" if "/release/" in str(binary.resolve()) else "unknown")
    return {"nproc": os.cpu_count(), "cpu": cpu, "mem_gib": mem, "kernel": platform.release(),
            "python": platform.python_version(), "numpy": np.__version__,
            "git_commit": git("rev-parse", "--short", "HEAD"),
            "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
            "binary": str(binary), "binary_sha256": h.hexdigest()[:16], "binary_profile": profile,
            "binary_mtime": _dt.datetime.fromtimestamp(st.st_mtime).isoformat(timespec="seconds"),
            "loadavg_start": open("/proc/loadavg").read().split()[:3]}


def run(a) -> dict:
    binary = Path(a.bin).resolve()
    if not binary.exists():
        raise SystemExit(f"binary not found: {binary}")
    work = Path(tempfile.mkdtemp(prefix="sextant-cluster-bench-"))
    res: dict = {"started": _dt.datetime.now().isoformat(timespec="seconds"), "args": vars(a).copy(), "work": str(work)}
    meter = LoadMeter()
    try:
        copied = work / "sextant"
        for _ in range(60):  # the binary may be briefly missing while it is rebuilt
            try:
                shutil.copy2(binary, copied)
                break
            except FileNotFoundError:
                time.sleep(5)
        else:
            raise SystemExit(f"binary {binary} stayed missing")
        res["machine"] = machine_facts(binary, copied)
        m = res["machine"]
        log(f"binary {binary} ({m['binary_profile']}, sha256 {m['binary_sha256']}), {m['nproc']} cores, {m['cpu']}")

        # ---- data
        t = time.monotonic()
        base, queries = make_data(a.points, a.queries, a.dim, a.seed)
        gt = exact_topk(base, queries, a.k)
        log(f"data: {a.points} x {a.dim} points, {a.queries} queries, exact top-{a.k} in {time.monotonic() - t:.1f}s")

        # ---- processes
        t = time.monotonic()
        single = Node(copied, work, "single", cluster=False).start([])
        single.wait_ready(a.start_timeout)
        peers = start_cluster(copied, work, 3, a.start_timeout)
        res["startup_secs"] = time.monotonic() - t
        leader, followers = peers[0], peers[1:]
        log(f"single node {single}; cluster leader {leader}, followers {followers} ({res['startup_secs']:.1f}s)")
        st, root = single.request("GET", "/", timeout=10)
        res["version"] = root.get("version") if isinstance(root, dict) else None

        # ---- collections (indexing off while uploading)
        rfs = [int(x) for x in a.rf.split(",")]
        single.ok("PUT", f"/collections/{COLL_SINGLE}", collection_body(a, 1, 0))
        placement = {}
        for rf in rfs:
            name = f"bench_rf{rf}"
            leader.ok("PUT", f"/collections/{name}", collection_body(a, rf, 0))
            wait_collection_everywhere(peers, name, 60)
            info = leader.ok("GET", f"/collections/{name}/cluster", timeout=30)
            placement[name] = {"local_shards": [s.get("shard_id") for s in info.get("local_shards", [])],
                               "remote_shards": [(s.get("shard_id"), s.get("peer_id")) for s in info.get("remote_shards", [])]}
        res["placement_from_leader"] = placement

        single_t = Target("single node", COLL_SINGLE, [single], [single], None)
        up_targets = [single_t] + [Target(f"cluster rf={rf}", f"bench_rf{rf}", peers, peers, rf) for rf in rfs]

        # ---- upserts: --repeat rounds of one chunk each, targets rotated per round
        rounds = max(1, a.repeat)
        bounds = np.linspace(0, a.points, rounds + 1).astype(int)
        up = {t.label: [] for t in up_targets}
        meter.start()
        for r in range(rounds):
            c0, c1 = int(bounds[r]), int(bounds[r + 1])
            te = time.monotonic()
            bodies = [(min(a.batch, c1 - b0), encode_points(base[b0:min(c1, b0 + a.batch)], b0))
                      for b0 in range(c0, c1, a.batch)]
            mb = sum(len(b) for _, b in bodies) / 1e6
            log(f"upsert round {r + 1}/{rounds}: points {c0}..{c1} in {len(bodies)} batches ({mb:.1f} MB JSON, "
                f"encoded in {time.monotonic() - te:.1f}s)")
            order = up_targets[r % len(up_targets):] + up_targets[:r % len(up_targets)]
            for tg in order:
                x = upload(tg, bodies, a.clients, a.upload_timeout)
                x["round"], x["mb"] = r, mb
                up[tg.label].append(x)
                log(f"  {tg.label:15s} {x['points'] / x['wall']:9.0f} points/s  ({x['points']} points, {x['wall']:.2f}s, "
                    f"server CPU {x['server_cpu_s']:.1f}s, errors {len(x['errors'])})")
                for e in x["errors"][:3]:
                    log(f"    error: {e}")
            del bodies
        res["other_load_upsert_cores"] = meter.stop()
        res["upsert"] = {}
        for label, xs in up.items():
            pts, wall = sum(x["points"] for x in xs), sum(x["wall"] for x in xs)
            res["upsert"][label] = {
                "points": pts, "secs": wall, "points_per_sec": pts / wall if wall > 0 else 0.0,
                "best_round_points_per_sec": max((x["points"] / x["wall"] for x in xs if x["wall"] > 0), default=0.0),
                "server_cpu_s": sum(x["server_cpu_s"] for x in xs),
                "errors": sum(len(x["errors"]) for x in xs),
                "first_errors": [e for x in xs for e in x["errors"]][:5],
                "rounds": [{k: v for k, v in x.items() if k != "errors"} for x in xs]}

        # ---- counts
        counts = {}
        for tg in up_targets:
            for n in tg.entries:
                counts[f"{tg.label} via {n.name}"] = n.ok("POST", f"/collections/{tg.collection}/points/count",
                                                           {"exact": True}, timeout=60)["count"]
        res["counts"] = counts

        # ---- indexing on, wait for green
        meter.start()
        t = time.monotonic()
        single.ok("PATCH", f"/collections/{COLL_SINGLE}", {"optimizers_config": {"indexing_threshold": a.indexing_threshold_kb}})
        for rf in rfs:
            leader.ok("PATCH", f"/collections/bench_rf{rf}", {"optimizers_config": {"indexing_threshold": a.indexing_threshold_kb}})
        tail = max(1, a.indexing_threshold_kb * 1024 // (a.dim * 4))
        groups = [(COLL_SINGLE, [single], a.points)] + [(f"bench_rf{rf}", peers, a.points * rf) for rf in rfs]
        log(f"indexing (threshold {a.indexing_threshold_kb} KB); waiting for green on every node")
        res["green"] = wait_green(groups, a.points, a.index_timeout, lambda want: want - 3 * tail)
        res["index_secs"] = time.monotonic() - t
        res["other_load_index_cores"] = meter.stop()
        log(f"green after {res['index_secs']:.1f}s: {res['green']}")

        # ---- search
        sbodies = [json.dumps({"vector": q.astype(np.float64).round(6).tolist(), "limit": a.k,
                               "params": {"hnsw_ef": a.ef}}).encode() for q in queries]
        s_targets = [single_t]
        for rf in rfs:
            for i, p in enumerate(peers):
                role = "leader" if i == 0 else f"follower {i}"
                s_targets.append(Target(f"rf={rf} via {role}", f"bench_rf{rf}", [p], peers, rf))
        warm = sbodies[:min(len(sbodies), a.warmup)]
        for tg in s_targets:
            w = search_pass(tg, warm, 1, a.search_timeout, a.k)
            if w["errors"]:
                log(f"  warm-up {tg.label}: {w['errors'][:2]}")
        client_counts = [1] + [c for c in [a.search_clients] if c != 1]
        passes = {(tg.label, c): [] for tg in s_targets for c in client_counts}
        recalls = {tg.label: [] for tg in s_targets}
        meter.start()
        for r in range(max(1, a.repeat)):
            for c in client_counts:
                order = s_targets[r % len(s_targets):] + s_targets[:r % len(s_targets)]
                for tg in order:
                    x = search_pass(tg, sbodies, c, a.search_timeout, a.k)
                    recalls[tg.label].append(recall(x["ids"], gt, a.k))
                    passes[(tg.label, c)].append(x)
                    log(f"  round {r + 1} {c} client(s) {tg.label:22s} {x['qps']:8.1f} QPS  mean {x['mean_ms']:.2f} ms  "
                        f"p99 {x['p99_ms']:.2f} ms  errors {len(x['errors'])}")
                    for e in x["errors"][:2]:
                        log(f"    error: {e}")
        res["other_load_search_cores"] = meter.stop()
        res["search"] = {}
        for tg in s_targets:
            res["search"][tg.label] = {
                "rf": tg.rf, "entry": tg.entries[0].name, "entry_peer_id": tg.entries[0].peer_id,
                "recall": min((x for x in recalls[tg.label] if x is not None), default=None),
                "clients": {str(c): best(passes[(tg.label, c)]) for c in client_counts}}
        res["search_clients"] = client_counts

        res["alive_at_end"] = {n.name: n.alive() for n in _PROCS}
        for n in _PROCS:
            if not n.alive():
                res.setdefault("died", {})[n.name] = n.log_tail(2000)
        res["log_tails"] = {n.name: n.log_tail(1500) for n in _PROCS}
        res["finished"] = _dt.datetime.now().isoformat(timespec="seconds")
        return res
    finally:
        kill_all()
        if a.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------- report


def ratios(res: dict) -> dict:
    out = {"upsert": {}, "search": {}}
    s_up = res["upsert"]["single node"]["points_per_sec"]
    for label, u in res["upsert"].items():
        out["upsert"][label] = u["points_per_sec"] / s_up if s_up else None
    single = res["search"]["single node"]["clients"]
    for label, s in res["search"].items():
        row = {}
        for c, b in s["clients"].items():
            sb = single[c]
            row[f"qps_{c}"] = b["qps"] / sb["qps"] if sb["qps"] else None
        b1, s1 = s["clients"]["1"], single["1"]
        for key in ("mean_ms", "p50_ms", "p99_ms"):
            row[f"{key}_delta"] = (b1[key] - s1[key]) if b1[key] is not None and s1[key] is not None else None
            row[f"{key}_ratio"] = (b1[key] / s1[key]) if b1[key] and s1[key] else None
        out["search"][label] = row
    return out


def fmt(x, nd=1):
    if x is None:
        return "n/a"
    return f"{x:,.{nd}f}"


def floors_table(res: dict, rt: dict) -> list[str]:
    lines = ["| floor | measured | verdict |", "|---|---|---|"]
    u = rt["upsert"].get("cluster rf=2")
    if u is not None:
        lines.append(f"| rf=2 upserts >= {FLOORS['upsert_rf2']}x single node | {u:.3f}x | "
                     f"{'pass' if u >= FLOORS['upsert_rf2'] else 'FAIL'} |")
    cl = [k for k in rt["search"] if k != "single node"]
    for c in res["search_clients"]:
        vals = [rt["search"][k][f"qps_{c}"] for k in cl if rt["search"][k][f"qps_{c}"] is not None]
        if vals:
            lo = min(vals)
            lines.append(f"| search QPS ({c} client{'s' if c != 1 else ''}) >= {FLOORS['search_qps']}x single node | "
                         f"{lo:.2f}x - {max(vals):.2f}x over {len(vals)} entry points | "
                         f"{'pass' if lo >= FLOORS['search_qps'] else 'FAIL' + (' (some)' if max(vals) >= FLOORS['search_qps'] else '')} |")
    d = [rt["search"][k]["mean_ms_delta"] for k in cl if rt["search"][k]["mean_ms_delta"] is not None]
    if d:
        hi = max(d)
        lines.append(f"| single-client fan-out latency (mean) <= single node + {FLOORS['latency_delta_ms']:.0f} ms | "
                     f"+{min(d):.2f} to +{hi:.2f} ms | {'pass' if hi <= FLOORS['latency_delta_ms'] else 'FAIL'} |")
    return lines


def tables(res: dict) -> list[str]:
    rt = ratios(res)
    a = res["args"]
    L = ["### Upserts", "",
         f"{a['points']:,} points x {a['dim']} dims, batches of {a['batch']}, {a['clients']} client threads, `wait=true`, "
         f"indexing off; {max(1, a['repeat'])} interleaved rounds (all rounds summed; best round shown too).", "",
         "| target | points/s | best round points/s | vs single node | server CPU s | failed batches |",
         "|---|---:|---:|---:|---:|---:|"]
    for label, u in res["upsert"].items():
        L.append(f"| {label} | {fmt(u['points_per_sec'], 0)} | {fmt(u['best_round_points_per_sec'], 0)} | "
                 f"{fmt(rt['upsert'][label], 2)}x | {fmt(u['server_cpu_s'], 1)} | {u['errors']} |")
    cs = res["search_clients"]
    L += ["", "### Search", "",
          f"{a['queries']} queries per pass, limit {a['k']}, `hnsw_ef` {a['ef']}, best of {max(1, a['repeat'])} rotated rounds. "
          "Latency: single client, client-side (HTTP round trip), ms; delta = cluster minus single node. "
          "Server CPU: all processes of the target (3 peers for the cluster) per query, 1 client.", "",
          "| target | " + " | ".join(f"QPS {c}c | vs single" for c in cs)
          + " | mean ms | p50 ms | p99 ms | mean delta | p50 delta | server CPU ms/q | recall@" + str(a["k"]) + " | errors |",
          "|---|" + "---:|---:|" * len(cs) + "---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, s in res["search"].items():
        r = rt["search"][label]
        b1 = s["clients"]["1"]
        cells = " | ".join(f"{fmt(s['clients'][str(c)]['qps'], 1)} | {fmt(r[f'qps_{c}'], 2)}x" for c in cs)
        errs = sum(s["clients"][str(c)]["errors"] for c in cs)
        delta = "" if label == "single node" else f"{r['mean_ms_delta']:+.2f}"
        d50 = "" if label == "single node" else f"{r['p50_ms_delta']:+.2f}"
        L.append(f"| {label} | {cells} | {fmt(b1['mean_ms'], 2)} | {fmt(b1['p50_ms'], 2)} | {fmt(b1['p99_ms'], 2)} | "
                 f"{delta} | {d50} | {fmt(b1.get('server_cpu_ms_per_query'), 2)} | {fmt(s['recall'], 3)} | {errs} |")
    L += ["", "### Floors (from the issue)", ""] + floors_table(res, rt)
    return L


def baseline_table(res: dict, base: dict) -> list[str]:
    """Latency deltas and ratios of this run next to those of a run of another binary."""
    rb, rc = ratios(base), ratios(res)
    bm = base["machine"]
    L = [f"Baseline: `{bm['binary']}` ({bm['binary_profile']} build, sha256 {bm['binary_sha256']}, built "
         f"{bm['binary_mtime']}), same arguments: `{base.get('command', '')}`, run {base['started']}. "
         "Each column compares with the single node of its own run.", "",
         "| target | mean delta baseline | mean delta this run | p50 delta baseline | p50 delta this run | "
         "QPS 1c vs single baseline | this run | QPS 4c vs single baseline | this run |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    cs = [str(c) for c in res["search_clients"] if c != 1][:1] or ["1"]
    for label in res["search"]:
        if label == "single node" or label not in rb["search"]:
            continue
        b, c = rb["search"][label], rc["search"][label]
        L.append(f"| {label} | {b['mean_ms_delta']:+.2f} ms | {c['mean_ms_delta']:+.2f} ms | {b['p50_ms_delta']:+.2f} ms | "
                 f"{c['p50_ms_delta']:+.2f} ms | {fmt(b['qps_1'], 2)}x | {fmt(c['qps_1'], 2)}x | "
                 f"{fmt(b.get(f'qps_{cs[0]}'), 2)}x | {fmt(c.get(f'qps_{cs[0]}'), 2)}x |")
    L += ["", "| upserts | vs single baseline | vs single this run |", "|---|---:|---:|"]
    for label in res["upsert"]:
        if label != "single node" and label in rb["upsert"]:
            L.append(f"| {label} | {fmt(rb['upsert'][label], 2)}x | {fmt(rc['upsert'][label], 2)}x |")
    return L


def render(res: dict, command: str, baseline: dict | None = None) -> str:
    m = res["machine"]
    debug = m["binary_profile"] == "debug"
    a = res["args"]
    L = ["# Cluster benchmark: 3 peers vs a single node", ""]
    if debug:
        L += ["**Debug build.** These numbers come from an unoptimized (`target/debug`) binary: absolute throughput and "
              "latency are far below a release build's, and the fixed per-request costs weigh differently. Only the ratios "
              "and latency deltas of this run mean anything, and even they will move with a release build.", ""]
    L += [f"Generated by `bench/cluster.py` on {res['started']}.", "",
          "```", command, "```", "",
          "## Setup", "",
          f"- machine: {m['nproc']} cores, {m['cpu']}, {m['mem_gib']} GiB RAM, Linux {m['kernel']}, Python {m['python']}",
          f"- binary: `{m['binary']}` ({m['binary_profile']} build, sha256 {m['binary_sha256']}, built {m['binary_mtime']}), "
          f"version {res.get('version')}, git {m['git_commit']}{' (dirty tree)' if m['git_dirty'] else ''}",
          "- one single node (cluster disabled) and one 3-peer cluster (peer0 `--uri`, the others `--bootstrap`), all four "
          "processes running during the whole run, all on 127.0.0.1 with the client on the same cores",
          f"- collections: Cosine, {a['dim']} dims, m {a['m']}, ef_construct {a['ef_construct']}, `shard_number` 3; "
          f"cluster `replication_factor` {a['rf'].replace(',', ' and ')}"
          + (f", `write_consistency_factor` {a['write_consistency_factor']}" if a['write_consistency_factor'] else
             " (default `write_consistency_factor` 1)"),
          f"- data: {a['points']:,} seeded synthetic points (Gaussian clusters), {a['queries']} queries; recall against exact "
          "numpy neighbours",
          f"- indexing off during the upserts; then `indexing_threshold` {a['indexing_threshold_kb']} KB and a wait for "
          f"status green on every node ({fmt(res['index_secs'], 0)} s)",
          f"- load from other processes (cores, average): upserts {fmt(res.get('other_load_upsert_cores'), 2)}, "
          f"indexing {fmt(res.get('other_load_index_cores'), 2)}, search {fmt(res.get('other_load_search_cores'), 2)}; "
          f"loadavg at start {' '.join(m['loadavg_start'])}",
          "", "## Results", ""]
    L += tables(res)
    if baseline:
        L += ["", "### Against a baseline binary", ""] + baseline_table(res, baseline)
    L += ["", "## Notes", "",
          "- Ratios compare the cluster with the single node measured in the same run with passes interleaved "
          "(upserts: rounds of the same chunk in rotated order; search: every target once per round in rotated "
          "order, best of the rounds), so load from other processes hits both sides alike.",
          "- Upserts to the cluster enter round-robin through the three peers; each search target enters through one peer, "
          "which fans the query out to the peers holding the other shards and merges the answers.",
          f"- With {m['nproc']} cores, the 3 peers, the single node and the Python client share the same CPUs: cluster "
          "QPS with concurrent clients is bounded by the total CPU of three searches over a third of the data each, "
          "not by network.",
          ""]
    return "\n".join(L)


# --------------------------------------------------------------------------- main


def smoke_checks(res: dict) -> list[str]:
    bad = []
    n = res["args"]["points"]
    for label, u in res["upsert"].items():
        if u["errors"] or u["points"] != n:
            bad.append(f"upsert {label}: {u['points']} of {n} points, {u['errors']} failed batches, {u['first_errors'][:2]}")
    for where, c in res["counts"].items():
        if c != n:
            bad.append(f"count {where} = {c}, expected {n}")
    for label, s in res["search"].items():
        for c, b in s["clients"].items():
            if b["errors"] or b["qps"] <= 0 or b.get("short_results"):
                bad.append(f"search {label} {c} clients: {b['errors']} errors ({b.get('first_error')}), "
                           f"{b.get('short_results')} short results")
        if s["recall"] is None or s["recall"] < 0.5:
            bad.append(f"search {label}: recall {s['recall']}")
    for name, alive in res["alive_at_end"].items():
        if not alive:
            bad.append(f"{name} died")
    return bad


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    default_bin = ROOT / "target" / "release" / "sextant"
    if not default_bin.exists():
        default_bin = ROOT / "target" / "debug" / "sextant"
    p.add_argument("--smoke", action="store_true", help="tiny sizes, asserts that everything works, no report file")
    p.add_argument("--bin", default=str(default_bin), help=f"sextant binary (default {default_bin.relative_to(ROOT)})")
    p.add_argument("--points", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=1000, help="queries per search pass")
    p.add_argument("--warmup", type=int, default=100, help="warm-up queries per target")
    p.add_argument("--batch", type=int, default=256, help="points per upsert request")
    p.add_argument("--clients", type=int, default=4, help="concurrent upsert client threads")
    p.add_argument("--search-clients", type=int, default=4, help="concurrent search clients (besides 1)")
    p.add_argument("--repeat", type=int, default=3, help="interleaved rounds (upsert chunks; search passes, best kept)")
    p.add_argument("--rf", default="1,2", help="replication factors of the cluster collections")
    p.add_argument("--write-consistency-factor", type=int, default=None)
    p.add_argument("--k", type=int, default=10, help="search limit")
    p.add_argument("--ef", type=int, default=64, help="search hnsw_ef")
    p.add_argument("--m", type=int, default=16)
    p.add_argument("--ef-construct", type=int, default=100)
    p.add_argument("--indexing-threshold-kb", type=int, default=1,
                   help="indexing_threshold set after the upserts (small: every point ends up in the graph)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--start-timeout", type=float, default=120)
    p.add_argument("--upload-timeout", type=float, default=3600, help="max seconds per upsert round and target")
    p.add_argument("--index-timeout", type=float, default=3600)
    p.add_argument("--search-timeout", type=float, default=900, help="max seconds per search pass")
    p.add_argument("--max-seconds", type=float, default=6 * 3600, help="hard limit for the whole run (kills everything)")
    p.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks-cluster.md"), help="report (not written with --smoke)")
    p.add_argument("--json", help="also write the raw results here")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (storage, logs)")
    p.add_argument("--baseline", metavar="RESULTS_JSON", help="--json of a run of another binary: adds a before/after table")
    p.add_argument("--render", metavar="RESULTS_JSON", help="only re-write --doc from a --json results file")
    a = p.parse_args(argv)
    if a.smoke:
        given = {x.split("=")[0].lstrip("-").replace("-", "_") for x in (argv if argv is not None else sys.argv[1:])
                 if x.startswith("--")}
        for k, v in dict(points=2000, queries=40, warmup=10, repeat=2, ef_construct=32, start_timeout=60,
                         upload_timeout=60, index_timeout=60, search_timeout=60, max_seconds=240).items():
            if k not in given:
                setattr(a, k, v)
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    command = "python bench/cluster.py " + " ".join(sys.argv[1:] if argv is None else argv)
    baseline = json.loads(Path(a.baseline).read_text()) if a.baseline else None
    if a.render:
        res = json.loads(Path(a.render).read_text())
        Path(a.doc).write_text(render(res, res.get("command", ""), baseline))
        log(f"wrote {a.doc}")
        return 0

    def on_signal(signum, _frame):
        kill_all()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    atexit.register(kill_all)

    def watchdog():
        log(f"--max-seconds {a.max_seconds:.0f} reached: killing every server")
        kill_all()
        os._exit(3)

    wd = threading.Timer(a.max_seconds, watchdog)
    wd.daemon = True
    wd.start()
    t0 = time.monotonic()
    try:
        res = run(a)
    finally:
        wd.cancel()
    res["total_secs"] = time.monotonic() - t0
    res["command"] = command
    print("\n".join(tables(res)))
    if baseline:
        print("\n".join(["", "### Against a baseline binary", ""] + baseline_table(res, baseline)))
    print(f"\n(total {res['total_secs']:.0f}s, binary {res['machine']['binary']} [{res['machine']['binary_profile']}])")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1, default=str))
        log(f"wrote {a.json}")
    if a.smoke:
        bad = smoke_checks(res)
        for b in bad:
            print(f"SMOKE FAILURE: {b}")
        if bad:
            return 1
        print("smoke: ok")
        return 0
    Path(a.doc).write_text(render(res, command, baseline))
    log(f"wrote {a.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
