"""Replica integrity under realistic data: regression tests for bugs reported in the
distributed layer. Every test runs a real 3-peer cluster (``cluster_data_harness``).

* ``test_replicate_then_move_large_vectors``: one shard of 600 points with 3072-d Cosine
  vectors (text-embedding-3-large sized) and ~2 KB payloads is replicated to a second peer,
  then moved from its original holder to the third peer; after each step the new replica
  must hold exactly the source's points (ids + sha256 over payloads and f32 vectors), and
  after the move the old holder must have dropped them.
* ``test_large_upsert_through_every_peer``: a single ~25 MB upsert (1536-d vectors,
  under the 32 MB ``service.max_request_size_mb`` default) sent through each peer in turn
  answers 200, and every replica of every shard then holds exactly its shard's points.
* ``test_killed_clients_do_not_diverge_replicas``: six writer processes upsert 200-point
  batches through random peers (rf 3); writers are SIGKILLed mid-request 8 times; within
  60 s every replica of every shard must hold identical content (ids + payloads of every
  point, vectors of a 600-point sample) and every acknowledged batch.
* ``test_killed_followers_converge``: writes through the Raft leader continue while both
  followers are SIGKILLed (30 s) and restarted; once they are Active again all three
  replicas must be identical and hold every acknowledged write with its newest
  acknowledged content. (Whether writes are acknowledged while the leader has no quorum is
  printed, not asserted.)

How a replica's own content is read (this matters: a coordinator that merges replicas
cannot see divergence): there is no client-visible "local only" read, but a coordinator
reads each shard from its *own* replica first when that replica is Active
(``Placement::read_order`` in crates/api/src/dist.rs; failover to another replica happens
only when a sub-request fails). So ``local_view(peer)`` scrolls through ``peer`` and keeps
only the points of the shards ``peer`` lists as Active ``local_shards`` before *and* after
the scroll (the shard of an id is computed here with the pinned routing function, a port
of crates/segment/src/routing.rs checked against its pinned values). Those points come from
``peer``'s own copy. Every view is cross-checked against ``local_shards[].points_count``,
which the peer computes from its local store directly, and ``local_sample`` retrieves
sampled ids with vectors through each peer under the same rule. In addition, the first test opens
SIGKILLed peers' storage copies with a single-node (cluster disabled) sextant
(``offline_points``): that reads a peer's on-disk data with no coordinator at all.

All traffic is on 127.0.0.1; every process started here is SIGKILLed on teardown; every
wait is bounded.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import requests

from cluster_data_harness import Node, Procs
from routing import shard_of

SEED = int(os.environ.get("SEXTANT_INTEGRITY_SEED") or random.SystemRandom().randrange(1, 2**31))
print(f"\n[test_cluster_integrity] SEXTANT_INTEGRITY_SEED={SEED}")

WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but have an "
    "they you were their one all we can her has there been if more when will would who so no vector index "
    "shard replica segment payload embedding cluster query search document retrieval model token latency "
    "throughput storage memory network consensus leader follower snapshot transfer recovery cosine distance "
    "semantic neighbour quantization compression benchmark dataset customer invoice contract policy summary "
    "chapter section paragraph article research engineering product release feature bug regression"
).split()


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------
def embedding(rng: np.random.Generator, dim: int) -> list[float]:
    """An embedding-like vector: unit norm, 8 decimals (the shape OpenAI's API returns)."""
    v = rng.standard_normal(dim)
    v /= np.linalg.norm(v)
    return np.round(v, 8).tolist()


def text(rng: random.Random, n_chars: int) -> str:
    out, size = [], 0
    while size < n_chars:
        w = rng.choice(WORDS)
        out.append(w)
        size += len(w) + 1
    return " ".join(out)


def doc_payload(rng: random.Random, pid: int, text_chars: int) -> dict:
    return {
        "text": text(rng, text_chars),
        "title": text(rng, 60).title(),
        "source": f"s3://corpus/{rng.choice(['legal', 'wiki', 'support', 'code'])}/{rng.getrandbits(40):010x}.md",
        "chunk_index": pid % 37,
        "tokens": rng.randrange(200, 700),
        "score": round(rng.random(), 6),
        "published": 1_600_000_000 + rng.randrange(100_000_000),
        "tags": rng.sample(WORDS, 4),
        "lang": rng.choice(["en", "de", "fr"]),
    }


def canonical(payload) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def point_digest(p: dict) -> str:
    h = hashlib.sha256(canonical(p.get("payload")))
    v = p.get("vector")
    if v is not None:
        h.update(b"|")
        h.update(np.asarray(v, dtype=np.float32).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------
# cluster helpers
# ---------------------------------------------------------------------------
@pytest.fixture()
def procs(tmp_path):
    p = Procs(tmp_path)
    try:
        p.start_cluster(3)
        yield p
    finally:
        p.cleanup()


def peers_of(procs: Procs) -> list[Node]:
    return [n for n in procs.nodes if n.cluster]


def cluster_info(node: Node, name: str) -> dict:
    return node.ok("GET", f"/collections/{name}/cluster", timeout=10)


def placement(node: Node, name: str):
    """(shard -> {peer_id: state}, transfers) as `node` sees it."""
    info = cluster_info(node, name)
    out: dict[int, dict[int, str]] = {}
    for s in info["local_shards"]:
        out.setdefault(s["shard_id"], {})[info["peer_id"]] = s["state"]
    for s in info["remote_shards"]:
        out.setdefault(s["shard_id"], {})[s["peer_id"]] = s["state"]
    return out, info["shard_transfers"]


def log_tails(nodes, limit: int = 1500) -> str:
    return "\n".join(f"----- {n!r} log tail -----\n{n.log_text(limit)}" for n in nodes)


def wait_placement(nodes, name: str, timeout: float, expect: dict[int, set[int]] | None = None) -> dict:
    """Wait until every node reports no running transfer and every replica Active (and, if
    given, shard -> holder sets equal to `expect`); return the agreed placement."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            views = {n.name: placement(n, name) for n in nodes}
            last = views
            pl = [v[0] for v in views.values()]
            ok = all(not tr for _, tr in views.values())
            ok = ok and all(p == pl[0] for p in pl)
            ok = ok and all(s == "Active" for reps in pl[0].values() for s in reps.values())
            if ok and expect is not None:
                ok = {sh: set(reps) for sh, reps in pl[0].items()} == expect
            if ok:
                return pl[0]
        except (AssertionError, requests.RequestException) as e:
            last = repr(e)
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"placement of {name} not settled within {timeout}s (expected holders {expect}); "
                f"last views: {last}\n{log_tails(nodes)}")
        time.sleep(0.25)


def create_collection(nodes, name: str, body: dict, timeout: float = 30.0) -> dict:
    nodes[0].ok("PUT", f"/collections/{name}", body)
    return wait_placement(nodes, name, timeout)


def scroll_all(node: Node, name: str, with_vector: bool, with_payload=True, page: int = 250,
               timeout: float = 60.0) -> list[dict]:
    out, offset = [], None
    while True:
        body = {"limit": page, "with_payload": with_payload, "with_vector": with_vector}
        if offset is not None:
            body["offset"] = offset
        r = node.ok("POST", f"/collections/{name}/points/scroll", body, timeout=timeout)
        out.extend(r["points"])
        offset = r["next_page_offset"]
        if offset is None:
            return out


class NotSettled(Exception):
    pass


def local_view(node: Node, name: str, with_vector: bool = True, page: int = 250):
    """`node`'s own replicas, shard by shard: ({shard: {id: digest}}, {shard: points_count}).

    Reads go through `node`, which reads every shard it holds as an Active replica from its
    own copy first (see the module docstring); only those shards' points are kept. Raises
    NotSettled when a local replica is not Active or the local shard set changes meanwhile.
    """
    before = cluster_info(node, name)
    shard_number = before["shard_count"]
    local = {s["shard_id"]: s for s in before["local_shards"]}
    if any(s["state"] != "Active" for s in local.values()) or before["shard_transfers"]:
        raise NotSettled(f"{node.name}: local replicas {before['local_shards']} transfers {before['shard_transfers']}")
    pts = scroll_all(node, name, with_vector, page=page)
    after = cluster_info(node, name)
    if ({s["shard_id"]: s["state"] for s in after["local_shards"]}
            != {k: "Active" for k in local}) or after["shard_transfers"]:
        raise NotSettled(f"{node.name}: local replicas changed during the read: {after['local_shards']}")
    view: dict[int, dict] = {s: {} for s in local}
    for p in pts:
        s = shard_of(p["id"], shard_number)
        if s in view:
            view[s][p["id"]] = point_digest(p)
    counts = {s["shard_id"]: s["points_count"] for s in after["local_shards"]}
    return view, counts


def local_sample(node: Node, name: str, ids: list[int]) -> dict[int, str]:
    """{id: digest incl. vector} for those of `ids` in shards `node` holds as Active replicas,
    retrieved through `node` (own replicas first, as for `local_view`)."""
    before = cluster_info(node, name)
    shard_number = before["shard_count"]
    local = {s["shard_id"] for s in before["local_shards"] if s["state"] == "Active"}
    if len(local) != len(before["local_shards"]) or before["shard_transfers"]:
        raise NotSettled(f"{node.name}: local replicas {before['local_shards']}")
    mine = [i for i in ids if shard_of(i, shard_number) in local]
    out = {}
    for k in range(0, len(mine), 200):
        got = node.ok("POST", f"/collections/{name}/points",
                      {"ids": mine[k:k + 200], "with_payload": True, "with_vector": True}, timeout=60)
        out.update({p["id"]: point_digest(p) for p in got})
    after = cluster_info(node, name)
    if {s["shard_id"] for s in after["local_shards"] if s["state"] == "Active"} != local or after["shard_transfers"]:
        raise NotSettled(f"{node.name}: local replicas changed during the read: {after['local_shards']}")
    return out


def offline_points(procs: Procs, node: Node, name: str, with_vector: bool = True):
    """The points in a SIGKILLed peer's storage, read by a single-node sextant started on a
    copy of it (no coordinator, no other replica). None when that sextant does not know the
    collection (a storage layout the single-node mode cannot open)."""
    assert not node.alive(), f"{node} must be stopped before its storage is read"
    off = procs._new(f"{node.name}-offline-{len(procs.nodes)}", cluster=False)
    shutil.copytree(node.workdir / "storage", off.workdir / "storage")
    off.spawn([])
    try:
        off.wait_ready(60)
        if off.call("GET", f"/collections/{name}").status_code != 200:
            warnings.warn(f"single-node sextant cannot open {node.name}'s copy of {name}; offline check skipped")
            return None
        return {p["id"]: point_digest(p) for p in scroll_all(off, name, with_vector)}
    finally:
        off.kill()


def diff_summary(a: dict, b: dict, la: str, lb: str, n: int = 8) -> str:
    only_a = sorted(set(a) - set(b))
    only_b = sorted(set(b) - set(a))
    changed = sorted(k for k in set(a) & set(b) if a[k] != b[k])
    return (f"{la}: {len(a)} points, {lb}: {len(b)} points; only in {la}: {len(only_a)} {only_a[:n]}; "
            f"only in {lb}: {len(only_b)} {only_b[:n]}; different content: {len(changed)} {changed[:n]}")


def transfer_records(nodes, name: str) -> list:
    """The finished transfers of `name` recorded by the (live) source peers (GET /cluster/transfers)."""
    out = []
    for n in nodes:
        if n.alive():
            try:
                out += [r for r in n.ok("GET", "/cluster/transfers") if r.get("collection") == name]
            except (AssertionError, requests.RequestException) as e:
                out.append(f"{n.name}: {e!r:.200}")
    return out


def node_by_id(nodes, peer_id: int) -> Node:
    return next(n for n in nodes if n.peer_id == peer_id)


def put_points(node: Node, name: str, body_bytes: bytes, timeout: float, wait: bool = True,
               session: requests.Session | None = None) -> requests.Response:
    s = session or node.session
    return s.put(f"{node.url}/collections/{name}/points?wait={'true' if wait else 'false'}", data=body_bytes,
                 headers={"Content-Type": "application/json"}, timeout=timeout)


# ---------------------------------------------------------------------------
# 1. replicate, then move, a shard of large vectors
# ---------------------------------------------------------------------------
@pytest.mark.slow
def test_replicate_then_move_large_vectors(procs):
    nodes = peers_of(procs)
    name, dim, n_points, batch = "openai_large", 3072, 600, 50
    rng, nrng = random.Random(SEED), np.random.default_rng(SEED)
    pl = create_collection(nodes, name, {"vectors": {"size": dim, "distance": "Cosine"},
                                         "shard_number": 1, "replication_factor": 1})
    assert set(pl) == {0} and len(pl[0]) == 1, pl
    src_id = next(iter(pl[0]))
    src = node_by_id(nodes, src_id)
    dst, third = [n for n in nodes if n.peer_id != src_id]

    sent = {}
    ids = rng.sample(range(1, 10**12), n_points)
    t0 = time.monotonic()
    for k in range(0, n_points, batch):
        pts = [{"id": pid, "vector": embedding(nrng, dim), "payload": doc_payload(rng, pid, 1800)}
               for pid in ids[k:k + batch]]
        body = json.dumps({"points": pts}).encode()
        node = nodes[(k // batch) % 3]
        r = put_points(node, name, body, timeout=120)
        assert r.status_code == 200, f"upsert batch {k // batch} via {node} -> {r.status_code} {r.text[:300]}"
        sent.update({p["id"]: p["payload"] for p in pts})
    print(f"upserted {n_points} x {dim}-d in {time.monotonic() - t0:.1f}s")
    payload_bytes = sum(len(canonical(p)) for p in sent.values()) / n_points
    assert payload_bytes >= 1800, payload_bytes

    src_view, src_counts = local_view(src, name)
    assert set(src_view[0]) == set(sent) and src_counts == {0: n_points}, \
        f"source {src}: {len(src_view[0])} points, counts {src_counts}"
    # the digest covers the payload exactly as sent
    got = {p["id"]: p["payload"] for p in scroll_all(src, name, with_vector=False)}
    assert all(canonical(got[k]) == canonical(v) for k, v in sent.items()), "payloads differ from the ones sent"
    reference = src_view[0]

    # --- replicate_shard src -> dst -------------------------------------------------
    t0 = time.monotonic()
    third.ok("POST", f"/collections/{name}/cluster",
             {"replicate_shard": {"shard_id": 0, "from_peer_id": src.peer_id, "to_peer_id": dst.peer_id}})
    wait_placement(nodes, name, 60, expect={0: {src.peer_id, dst.peer_id}})
    print(f"replicate_shard finished in {time.monotonic() - t0:.1f}s")
    problems = []
    for node in (src, dst):
        view, counts = local_view(node, name)
        if counts != {0: n_points}:
            problems.append(f"after replicate: {node} local_shards points_count {counts}, expected {n_points}")
        if view[0] != reference:
            problems.append(f"after replicate: {node}'s replica differs from the source's: "
                            f"{diff_summary(reference, view[0], 'source', node.name)}")
    # (carry on: the move below is checked even when this replica is already wrong)

    # --- move_shard src -> third ----------------------------------------------------
    t0 = time.monotonic()
    dst.ok("POST", f"/collections/{name}/cluster",
           {"move_shard": {"shard_id": 0, "from_peer_id": src.peer_id, "to_peer_id": third.peer_id}})
    try:
        wait_placement(nodes, name, 60, expect={0: {dst.peer_id, third.peer_id}})
    except AssertionError as e:
        problems.append(f"move_shard: {str(e)[:3000]}")
        raise AssertionError("\n".join(problems)) from None
    print(f"move_shard finished in {time.monotonic() - t0:.1f}s")
    for node in (dst, third):
        view, counts = local_view(node, name)
        if counts != {0: n_points}:
            problems.append(f"after move: {node} local_shards points_count {counts}, expected {n_points}")
        if view[0] != reference:
            problems.append(f"after move: {node}'s replica differs from the original: "
                            f"{diff_summary(reference, view[0], 'original', node.name)}")
    info = cluster_info(src, name)
    if info["local_shards"]:
        problems.append(f"after move: the old holder {src} still lists local shards {info['local_shards']}")
    for node in nodes:
        n = node.ok("POST", f"/collections/{name}/points/count", {"exact": True})["count"]
        if n != n_points:
            problems.append(f"after move: exact count via {node.name} is {n}, expected {n_points}")

    records = transfer_records(nodes, name)
    # --- on-disk check without any coordinator: the old holder dropped the points, the
    # new holders hold exactly the original points
    for node in (src, dst, third):
        node.kill()
    for node, want in ((src, {}), (dst, reference), (third, reference)):
        disk = offline_points(procs, node, name)
        if disk is not None and disk != want:
            problems.append(f"on disk after move: {node.name} " + diff_summary(want, disk, "expected", "disk"))
    if problems:
        problems.append(f"transfer records of the sources (GET /cluster/transfers): {records}")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------
# 2. ~25 MB upserts through every peer
# ---------------------------------------------------------------------------
MIB = 1 << 20


def big_upsert_body(rng: random.Random, nrng: np.random.Generator, first_id: int, dim: int,
                    target: int) -> tuple[bytes, list[int]]:
    """An upsert body of about `target` bytes: as many 1536-d points with payloads as fit."""
    parts, ids, size, pid = [], [], 0, first_id
    while size < target:
        p = {"id": pid, "vector": embedding(nrng, dim), "payload": doc_payload(rng, pid, 400)}
        s = json.dumps(p, separators=(",", ":"))
        parts.append(s)
        ids.append(pid)
        size += len(s) + 1
        pid += 1
    return ("{\"points\":[" + ",".join(parts) + "]}").encode(), ids


@pytest.mark.slow
def test_large_upsert_through_every_peer(procs):
    nodes = peers_of(procs)
    name, dim = "bulk_1536", 1536
    rng, nrng = random.Random(SEED + 1), np.random.default_rng(SEED + 1)
    create_collection(nodes, name, {"vectors": {"size": dim, "distance": "Cosine"},
                                    "shard_number": 3, "replication_factor": 2})
    problems, sent_ids = [], []
    for i, node in enumerate(nodes):
        body, ids = big_upsert_body(rng, nrng, 1_000_000 * (i + 1), dim, target=int(25.3 * MIB))
        assert 24 * MIB <= len(body) < 32 * MIB, f"body is {len(body) / MIB:.2f} MiB"
        t0 = time.monotonic()
        try:
            r = put_points(node, name, body, timeout=240)
            status, txt = r.status_code, r.text[:400]
        except requests.RequestException as e:
            status, txt = None, repr(e)
        took = time.monotonic() - t0
        print(f"upsert of {len(ids)} points ({len(body) / MIB:.2f} MiB) via {node.name}: {status} in {took:.1f}s")
        if status != 200:
            problems.append(f"upsert of {len(ids)} points, {len(body) / MIB:.2f} MiB via {node} -> {status} "
                            f"after {took:.1f}s: {txt}")
        else:
            sent_ids.extend(ids)
        del body
    # even a failed request must leave no replica ahead of another: compare replicas anyway
    try:
        pl = wait_placement(nodes, name, 60)
    except AssertionError as e:
        problems.append(str(e)[:3000])
        pl = placement(nodes[0], name)[0]
    expected = {s: set() for s in range(3)}
    for pid in sent_ids:
        expected[shard_of(pid, 3)].add(pid)
    replicas: dict[int, dict[str, set]] = {s: {} for s in range(3)}
    for node in nodes:
        try:
            view, counts = local_view(node, name, with_vector=False, page=2000)
        except NotSettled as e:
            problems.append(str(e))
            continue
        for s, pts in view.items():
            replicas[s][node.name] = set(pts)
            if counts[s] != len(pts):
                problems.append(f"{node.name} shard {s}: local_shards points_count {counts[s]} != {len(pts)} read")
    for s in range(3):
        holders = sorted(node_by_id(nodes, p).name for p in pl.get(s, {}))
        if sorted(replicas[s]) != holders:
            problems.append(f"shard {s}: read replicas on {sorted(replicas[s])}, placement says {holders}")
        for peer_name, got in replicas[s].items():
            if got != expected[s]:
                problems.append(f"shard {s} replica on {peer_name}: "
                                f"{diff_summary(dict.fromkeys(expected[s]), dict.fromkeys(got), 'acked', peer_name)}")
    for node in nodes:
        n = node.ok("POST", f"/collections/{name}/points/count", {"exact": True})["count"]
        if n != len(sent_ids):
            problems.append(f"exact count via {node.name}: {n}, acknowledged {len(sent_ids)}")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------
# 3. SIGKILLed clients must not leave replicas diverged
# ---------------------------------------------------------------------------
WRITER = textwrap.dedent("""
    import json, random, sys, time
    import requests
    cfg = json.loads(sys.argv[1])
    rng = random.Random(cfg["seed"])
    words = cfg["words"]
    s = requests.Session()
    log = open(cfg["log"], "a", buffering=1)
    n_batches = cfg["span"] // cfg["batch"]
    n = 0
    while True:
        b = n % n_batches
        ids = list(range(cfg["base"] + b * cfg["batch"], cfg["base"] + (b + 1) * cfg["batch"]))
        pts = []
        for pid in ids:
            v = [rng.gauss(0.0, 1.0) for _ in range(cfg["dim"])]
            pts.append({"id": pid, "vector": [round(x, 7) for x in v],
                        "payload": {"writer": cfg["wid"], "rev": n, "chunk": pid % 50,
                                    "text": " ".join(rng.choice(words) for _ in range(40)),
                                    "lang": rng.choice(["en", "de"]), "ts": time.time()}})
        body = json.dumps({"points": pts}).encode()
        url = rng.choice(cfg["urls"])
        log.write(f"S {n} {b} {url}\\n")
        try:
            r = s.put(url + "/collections/" + cfg["name"] + "/points?wait=true", data=body,
                      headers={"Content-Type": "application/json"}, timeout=60)
            log.write(f"{'A' if r.status_code == 200 else 'F'} {n} {b} {r.status_code} {r.text[:120]!r}\\n")
        except Exception as e:
            log.write(f"E {n} {b} {e!r:.120}\\n")
        n += 1
""")


class Writer:
    def __init__(self, script: Path, workdir: Path, wid: int, urls: list[str], name: str, base: int,
                 span: int, batch: int, dim: int, seed: int):
        self.wid = wid
        self.log = workdir / f"writer{wid}.log"
        self.base, self.span = base, span
        cfg = {"seed": seed, "words": WORDS, "log": str(self.log), "span": span, "batch": batch, "base": base,
               "dim": dim, "wid": wid, "urls": urls, "name": name}
        self.err = open(workdir / f"writer{wid}.err", "wb")
        self.proc = subprocess.Popen([sys.executable, str(script), json.dumps(cfg)], stdout=subprocess.DEVNULL,
                                     stderr=self.err, stdin=subprocess.DEVNULL)

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def in_flight(self) -> bool:
        ls = self.lines()
        return bool(ls) and ls[-1].startswith("S ")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.err.close()

    def stats(self) -> dict:
        c = {"S": 0, "A": 0, "F": 0, "E": 0}
        for ln in self.lines():
            c[ln[:1]] = c.get(ln[:1], 0) + 1
        return c

    def acked_batches(self) -> set[int]:
        return {int(ln.split()[2]) for ln in self.lines() if ln.startswith("A ")}


def compare_views(views: dict) -> list[str]:
    """Differences between the replicas of each shard ({peer name: (view, counts)})."""
    diffs = []
    for s in sorted({s for v, _ in views.values() for s in v}):
        holders = [(nm, v[s], c[s]) for nm, (v, c) in views.items() if s in v]
        ref_name, ref, _ = holders[0]
        for nm, v, c in holders:
            if c != len(v):
                diffs.append(f"shard {s} on {nm}: points_count {c} but {len(v)} points read")
            if v != ref:
                diffs.append(f"shard {s}: {diff_summary(ref, v, ref_name, nm)}")
    return diffs


def wait_identical_replicas(nodes, name: str, timeout: float, with_vector: bool = True,
                            vector_sample: int = 600):
    """Poll until every peer's own replicas of every shard hold identical content; return
    (views, seconds waited) or raise AssertionError describing the last difference seen.

    Polls compare ids + payloads of every point (every write in these tests carries a unique
    `rev`, so a payload identifies the write that produced the point); once those agree, the
    vectors of `vector_sample` random points (all points if fewer) are compared too (when
    `with_vector`; whole-collection vector scrolls take minutes on a busy debug build)."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    last = "nothing read yet"
    timings: list[float] = []
    while True:
        try:
            wait_placement(nodes, name, max(1.0, deadline - time.monotonic()))
            t_read = time.monotonic()
            views = {n.name: local_view(n, name, with_vector=False, page=2000) for n in nodes}
            diffs = compare_views(views)
            if not diffs and with_vector:
                all_ids = sorted({i for v, _ in views.values() for pts in v.values() for i in pts})
                sample = random.Random(len(all_ids)).sample(all_ids, min(vector_sample, len(all_ids)))
                got = {n.name: local_sample(n, name, sample) for n in nodes}
                shard_number = cluster_info(nodes[0], name)["shard_count"]
                bad = []
                for i in sample:
                    seen = {nm: g.get(i) for nm, g in got.items() if shard_of(i, shard_number) in views[nm][0]}
                    if len(set(seen.values())) > 1 or None in seen.values():
                        bad.append((i, seen))
                if bad:
                    diffs.append(f"{len(bad)} of {len(sample)} sampled points differ (vector or payload digest) "
                                 f"between replicas: {bad[:3]}")
            timings.append(round(time.monotonic() - t_read, 1))
            if not diffs:
                if t_read > deadline:
                    raise AssertionError(f"replicas of {name} identical only {t_read - t0:.1f}s after the writes "
                                         f"stopped (> {timeout}s); read rounds took {timings}s")
                print(f"replica read rounds took {timings}s")
                return views, time.monotonic() - t0
            counts = {nm: c for nm, (_, c) in views.items()}
            last = f"per-peer local points_count {counts}\n" + "\n".join(diffs)
        except (NotSettled, AssertionError, requests.RequestException) as e:
            last = f"{type(e).__name__}: {str(e)[:1500]}"
        if time.monotonic() >= deadline:
            raise AssertionError(f"replicas of {name} not identical within {timeout}s (read rounds took "
                                 f"{timings}s):\n{last}")
        time.sleep(2.0)


@pytest.mark.slow
def test_killed_clients_do_not_diverge_replicas(procs, tmp_path):
    nodes = peers_of(procs)
    name, dim, batch, span = "kill_clients", 256, 200, 1000
    rng = random.Random(SEED + 2)
    create_collection(nodes, name, {"vectors": {"size": dim, "distance": "Cosine"},
                                    "shard_number": 3, "replication_factor": 3})
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    urls = [n.url for n in nodes]
    writers: list[Writer] = []
    dead: list[Writer] = []

    def start(k: int) -> Writer:
        w = Writer(script, tmp_path, k, urls, name, base=k * 100_000, span=span, batch=batch, dim=dim,
                   seed=SEED * 100 + k)
        writers.append(w)
        return w

    kills = []
    try:
        live = [start(k) for k in range(6)]
        t_start = time.monotonic()
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not all(w.stats()["A"] for w in live):
            time.sleep(0.2)  # every writer got at least one batch in
        for i in range(8):
            time.sleep(rng.uniform(1.5, 3.0))
            victim = rng.choice(live)
            t_wait = time.monotonic() + 5
            while not victim.in_flight() and time.monotonic() < t_wait:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.05))
            mid = victim.in_flight()
            victim.kill()
            kills.append((victim.wid, mid, victim.lines()[-1] if victim.lines() else ""))
            live.remove(victim)
            dead.append(victim)
            live.append(start(6 + i))
        time.sleep(1.0)
        for w in live:  # stop the rest (also mid-request, most likely)
            w.kill()
        write_secs = time.monotonic() - t_start
    finally:
        for w in writers:
            w.kill()
    stats = {w.wid: w.stats() for w in writers}
    print(f"writers ran {write_secs:.1f}s; kills (writer, mid-request, last log line): {kills}; stats {stats}")
    assert sum(s["A"] for s in stats.values()) > 0, f"no write acknowledged: {stats}"
    assert sum(1 for _, mid, _ in kills if mid) >= 4, f"too few kills hit a request in flight: {kills}"

    problems = []
    try:
        views, waited = wait_identical_replicas(nodes, name, 60)
        print(f"replicas identical {waited:.1f}s after the writers stopped")
    except AssertionError as e:
        problems.append(str(e))
        views = None
    # every acknowledged batch is on every replica
    if views is not None:
        for w in writers:
            for b in w.acked_batches():
                ids = range(w.base + b * batch, w.base + (b + 1) * batch)
                for nm, (v, _) in views.items():
                    missing = [pid for pid in ids if pid not in v.get(shard_of(pid, 3), {})]
                    if missing:
                        problems.append(f"writer {w.wid} acked batch {b}: {len(missing)} points missing on {nm}")
    if problems:
        problems.append(f"transfers recorded: {transfer_records(nodes, name)}")
    assert not problems, f"kills: {kills}\n" + "\n".join(problems)


# ---------------------------------------------------------------------------
# 4. both followers SIGKILLed during writes through the leader
# ---------------------------------------------------------------------------
FOLLOWERS_DOWN_S = float(os.environ.get("SEXTANT_FOLLOWERS_DOWN_S") or 30)


@pytest.mark.slow
def test_killed_followers_converge(procs):
    """rf 3, write_consistency_factor 1, one shard (every write touches the one shard all
    three peers hold). Three client threads write (upserts of new points and overwrites of
    their own earlier points, each thread sequentially, so there is one correct final
    content per point) through the Raft leader. Both followers are SIGKILLed for
    FOLLOWERS_DOWN_S (30 s: longer than the leader spends trying to mark them Dead without
    a Raft quorum), then restarted. Once every replica is Active again, the three replicas
    must be identical and hold every acknowledged write. Whether writes are acknowledged
    while the leader has no quorum is printed, not asserted (acknowledging them is only
    safe if the followers are recovered afterwards, which is what is asserted)."""
    nodes = peers_of(procs)
    name, dim, batch, n_threads = "kill_followers", 384, 40, 3
    create_collection(nodes, name, {"vectors": {"size": dim, "distance": "Cosine"},
                                    "shard_number": 1, "replication_factor": 3})
    leader_id = int(nodes[0].ok("GET", "/cluster")["raft_info"]["leader"])
    leader = node_by_id(nodes, leader_id)
    followers = [n for n in nodes if n is not leader]

    attempts: dict[int, list[tuple[int, str]]] = {}  # id -> [(rev, "A"|"F"|"E")] in order
    phase = {"name": "before"}
    # (thread, phase the write started in, phase it ended in, outcome, latency, detail)
    log: list[tuple[int, str, str, str, float, str]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(k: int):
        wrng, nrng = random.Random(SEED * 10 + k), np.random.default_rng(SEED * 10 + k)
        s = requests.Session()
        first = 1 + k * 10_000_000
        next_id, n = first, 0
        while not stop.is_set():
            if next_id > first and n % 3 == 2:  # overwrite one of this thread's earlier batches
                start_id = first + batch * wrng.randrange((next_id - first) // batch)
            else:
                start_id, next_id = next_id, next_id + batch
            rev = k * 1_000_000 + n
            ids = list(range(start_id, start_id + batch))
            pts = [{"id": pid, "vector": embedding(nrng, dim),
                    "payload": {**doc_payload(wrng, pid, 300), "rev": rev}} for pid in ids]
            t0, started_in = time.monotonic(), phase["name"]
            detail = ""
            try:
                r = put_points(leader, name, json.dumps({"points": pts}).encode(), timeout=90, session=s)
                out = "A" if r.status_code == 200 else "F"
                if out == "F":
                    detail = f"{r.status_code} {r.text[:160]}"
            except requests.RequestException as e:
                out, detail = "E", repr(e)[:160]
            with lock:
                log.append((k, started_in, phase["name"], out, time.monotonic() - t0, detail))
                for pid in ids:
                    attempts.setdefault(pid, []).append((rev, out))
            n += 1
            time.sleep(0.02)

    threads = [threading.Thread(target=writer, args=(k,), daemon=True) for k in range(n_threads)]
    for t in threads:
        t.start()
    try:
        time.sleep(4)
        phase["name"] = "followers down"
        for f in followers:
            f.kill()
        time.sleep(FOLLOWERS_DOWN_S)
        phase["name"] = "restarting"
        for f in followers:
            f.spawn(["--bootstrap", leader.p2p_uri, "--uri", f.p2p_uri])
        for f in followers:
            f.wait_ready(60)
        phase["name"] = "after restart"
        time.sleep(3)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=100)
    assert not any(t.is_alive() for t in threads), "a writer thread did not stop"
    summary: dict[str, dict] = {}
    for _, started, ended, out, lat, _ in log:
        d = summary.setdefault(f"{started} -> {ended}", {"A": 0, "F": 0, "E": 0, "max_latency": 0.0})
        d[out] += 1
        d["max_latency"] = round(max(d["max_latency"], lat), 2)
    errors = sorted({d for *_, d in log if d})[:5]
    print(f"writes through the leader {leader} (phase started -> phase ended): {summary}; errors: {errors}")
    assert summary.get("before -> before", {}).get("A"), f"no write acknowledged before the kill: {summary}"

    problems = []
    t0 = time.monotonic()
    try:
        wait_placement(nodes, name, 90)
        print(f"all replicas Active {time.monotonic() - t0:.1f}s after the writers stopped")
    except AssertionError as e:
        problems.append(str(e)[:4000])
    views = None
    try:
        views, waited = wait_identical_replicas(nodes, name, 30)
        print(f"replicas identical {waited:.1f}s later")
    except AssertionError as e:
        problems.append(str(e))
    # acknowledged writes: on every replica, with the newest acknowledged content (or that of
    # a later attempt whose outcome the client does not know)
    acked_ids = {pid for pid, att in attempts.items() if any(o == "A" for _, o in att)}
    for node in nodes:
        try:
            local_view(node, name, with_vector=False, page=2000)  # NotSettled unless all its replicas are Active
            revs = {}
            for p in scroll_all(node, name, with_vector=False, page=2000):
                revs[p["id"]] = p["payload"]["rev"]
        except (NotSettled, AssertionError, requests.RequestException) as e:
            problems.append(f"cannot read {node.name}'s replica: {e}")
            continue
        missing, stale = [], []
        for pid in acked_ids:
            att = attempts[pid]
            last_ack = max(i for i, (_, o) in enumerate(att) if o == "A")
            allowed = {rev for rev, _ in att[last_ack:]}
            if pid not in revs:
                missing.append(pid)
            elif revs[pid] not in allowed:
                stale.append((pid, revs[pid], sorted(allowed)))
        if missing or stale:
            problems.append(f"{node.name}'s replica: {len(missing)} of {len(acked_ids)} acknowledged points missing "
                            f"{sorted(missing)[:8]}, {len(stale)} with older content than acknowledged {stale[:4]}")
    if problems:
        problems.append(f"transfers recorded: {transfer_records(nodes, name)}")
    assert not problems, f"writes: {summary}\n" + "\n".join(problems)
