"""Replicas that heal themselves (issue #15): a peer whose data was wiped never answers
wrongly, is not ready until it is whole again, and resyncs by itself; `POST /cluster/recover`
resyncs a peer's replicas on request."""

from __future__ import annotations

import random
import shutil
import time

import requests

from cluster_harness import Cluster, wait_until

DIM = 256
POINTS = 600


def three_peers(tmp_path):
    c = Cluster(tmp_path)
    try:
        a = c.start_first()
        peers = [a]
        for _ in range(2):
            p = c.spawn_joiner(a)
            p.wait_ready()
            peers.append(p)
        c.wait_converged(60)
    except BaseException:
        c.cleanup()
        raise
    return c, peers


def fill(a, name: str) -> None:
    r = a.request("PUT", f"/collections/{name}", json={
        "vectors": {"size": DIM, "distance": "Cosine"}, "shard_number": 3, "replication_factor": 2})
    assert r.status_code == 200, r.text
    rng = random.Random(5)
    pts = [{"id": i, "vector": [rng.random() + 0.01 for _ in range(DIM)],
            "payload": {"n": i, "blob": "p" * 2048}} for i in range(1, POINTS + 1)]
    for k in range(0, POINTS, 100):
        r = a.request("PUT", f"/collections/{name}/points?wait=true", json={"points": pts[k:k + 100]})
        assert r.status_code == 200, r.text


def replicas(p, name: str) -> dict:
    """(shard, peer) -> (state, points) as `p` sees them (its own counts only)."""
    res = p.get(f"/collections/{name}/cluster").json()["result"]
    out = {(s["shard_id"], res["peer_id"]): (s["state"], s["points_count"]) for s in res["local_shards"]}
    for s in res["remote_shards"]:
        out[(s["shard_id"], s["peer_id"])] = (s["state"], None)
    return out


def local_counts(peers, name: str) -> dict:
    out = {}
    for p in peers:
        res = p.get(f"/collections/{name}/cluster").json()["result"]
        for s in res["local_shards"]:
            out[(s["shard_id"], p.peer_id)] = (s["state"], s["points_count"])
    return out


def all_whole(peers, name: str) -> bool:
    counts = local_counts(peers, name)
    by_shard: dict[int, set] = {}
    for (shard, _), (state, n) in counts.items():
        if state != "Active":
            return False
        by_shard.setdefault(shard, set()).add(n)
    return len(by_shard) == 3 and all(len(v) == 1 for v in by_shard.values()) \
        and sum(next(iter(v)) for v in by_shard.values()) == POINTS


def test_wiped_peer_is_never_wrong_and_resyncs_itself(tmp_path):
    c, peers = three_peers(tmp_path)
    a, x = peers[0], peers[1]
    try:
        fill(a, "w")
        assert all_whole(peers, "w")
        x.sigkill()
        shutil.rmtree(x.storage / "collections" / "w")
        x.spawn()
        # from the moment it listens: every count through it is right or refused, and it
        # is not ready until its replicas are whole again
        wrong, answers, ready_at, unready_after_ready = [], 0, None, 0
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                r = requests.post(f"{x.url}/collections/w/points/count", json={"exact": True}, timeout=5)
                ready = requests.get(f"{x.url}/readyz", timeout=5).status_code == 200
            except requests.RequestException:
                time.sleep(0.05)
                continue
            if r.status_code == 200:
                answers += 1
                n = r.json()["result"]["count"]
                if n != POINTS:
                    wrong.append(n)
            if ready and ready_at is None:
                ready_at = time.monotonic()
            elif not ready and ready_at is not None:
                unready_after_ready += 1
            if ready_at is not None and time.monotonic() - ready_at > 3:
                break
            time.sleep(0.05)
        assert not wrong, f"{len(wrong)} wrong counts through the wiped peer: {wrong[:10]}\n{c.logs()}"
        assert ready_at is not None, f"the wiped peer never became ready\n{c.logs()}"
        assert answers > 0
        x.wait_ready()
        # its replicas were resynced from the others: every replica Active and whole
        wait_until(lambda: all_whole(peers, "w"), 30, what="all replicas Active and equal")
        got = x.request("POST", "/collections/w/points/scroll",
                        json={"limit": POINTS + 10, "with_payload": ["n"]}).json()["result"]["points"]
        assert sorted(p["id"] for p in got) == list(range(1, POINTS + 1))
        assert unready_after_ready == 0
    finally:
        c.cleanup()


def test_cluster_recover_resyncs_this_peers_replicas(tmp_path):
    c, peers = three_peers(tmp_path)
    a, x = peers[0], peers[2]
    try:
        fill(a, "r")
        mine = [k for k in local_counts([x], "r")]
        assert mine, "peer holds replicas"
        hist_before = len(a.get("/cluster/transfers").json()["result"]) + \
            sum(len(p.get("/cluster/transfers").json()["result"]) for p in peers[1:])
        r = x.request("POST", "/cluster/recover")
        assert r.status_code == 200, r.text
        wait_until(lambda: all_whole(peers, "r"), 60, what="replicas resynced and whole")

        def transfers_done():
            return sum(len(p.get("/cluster/transfers").json()["result"]) for p in peers) - hist_before

        # one verified transfer per replica of this peer (the sources record them)
        wait_until(lambda: transfers_done() >= len(mine), 30, what="a transfer per replica")
        hist = [t for p in peers for t in p.get("/cluster/transfers").json()["result"] if t["to"] == x.peer_id]
        assert len(hist) >= len(mine), hist
        assert x.get("/readyz").status_code == 200
    finally:
        c.cleanup()
