"""The seed's disaster-recovery flow (issue #16), on a real 3-peer cluster:

all copies of some shards are lost (rf=1, the peer holding them is SIGKILLed and its disk
wiped) -> remove the peer with `force` -> bootstrap a new, empty peer -> recover the lost
shards on it from the collection snapshot taken earlier on the lost peer -> the collection
answers with every point again, and searches equal those of the local-mode oracle.
"""

from __future__ import annotations

import random
import shutil

from qdrant_client import QdrantClient, models

from cluster_harness import start_cluster, wait_until

DIM = 1536
N = 300
SHARDS = 3


def _vec(rng: random.Random) -> list[float]:
    return [round(rng.uniform(-1, 1), 6) for _ in range(DIM)]


def _ids(p, name: str) -> set[int]:
    out, offset = set(), None
    while True:
        body = {"limit": 500, "with_payload": False}
        if offset is not None:
            body["offset"] = offset
        r = p.request("POST", f"/collections/{name}/points/scroll", json=body)
        assert r.status_code == 200, r.text
        res = r.json()["result"]
        out.update(x["id"] for x in res["points"])
        offset = res.get("next_page_offset")
        if offset is None:
            return out


def test_lost_shards_come_back_from_a_snapshot(tmp_path):
    c, peers = start_cluster(tmp_path / "c", 3)
    try:
        leader = peers[0]
        r = leader.request("PUT", "/collections/dr", json={
            "vectors": {"size": DIM, "distance": "Cosine"}, "shard_number": SHARDS, "replication_factor": 1})
        assert r.status_code == 200, r.text
        rng = random.Random(12)
        pts = [{"id": i, "vector": _vec(rng), "payload": {"n": i, "text": "x" * 2048}} for i in range(1, N + 1)]
        for i in range(0, N, 50):
            r = leader.request("PUT", "/collections/dr/points?wait=true", json={"points": pts[i:i + 50]})
            assert r.status_code == 200, r.text
        # the victim: a follower that holds shards (rf=1: their only copy)
        victim = next(p for p in peers[1:]
                      if p.get("/collections/dr/cluster").json()["result"]["local_shards"])
        lost = sorted(s["shard_id"] for s in victim.get("/collections/dr/cluster").json()["result"]["local_shards"])
        lost_points = sum(s["points_count"] for s in victim.get("/collections/dr/cluster").json()["result"]["local_shards"])
        r = victim.request("POST", "/collections/dr/snapshots?wait=true")
        assert r.status_code == 200, r.text
        snap = r.json()["result"]
        backup = tmp_path / "backup.snapshot"
        shutil.copy(victim.snapshots / "dr" / snap["name"], backup)

        # disaster: the peer and its disk are gone
        victim.sigkill()
        shutil.rmtree(victim.workdir)
        r = leader.request("DELETE", f"/cluster/peer/{victim.peer_id}?force=true")
        assert r.status_code == 200, r.text
        survivors = [p for p in peers if p is not victim]
        wait_until(lambda: all(len(p.cluster()["peers"]) == 2 for p in survivors), 30, what="peer removed")
        r = leader.request("POST", "/collections/dr/points/count", json={"exact": True})
        assert r.status_code != 200 or r.json()["result"]["count"] == N - lost_points, r.text

        # a new empty peer, and the lost shards recovered on it from the snapshot
        new = c.spawn_joiner(leader)
        new.wait_ready()
        c.wait_converged(60, survivors + [new])
        (new.snapshots / "dr").mkdir(parents=True, exist_ok=True)
        shutil.copy(backup, new.snapshots / "dr" / "backup.snapshot")
        r = new.request("PUT", "/collections/dr/snapshots/recover", json={
            "location": f"file://{new.snapshots / 'dr' / 'backup.snapshot'}", "checksum": snap["checksum"]},
            timeout=120)
        assert r.status_code == 200, r.text
        held = sorted(s["shard_id"] for s in new.get("/collections/dr/cluster").json()["result"]["local_shards"])
        assert held == lost, (held, lost)

        # every point is back, through every peer, and searches equal the oracle's
        for p in survivors + [new]:
            wait_until(lambda: _ids(p, "dr") == set(range(1, N + 1)), 30, what=f"all points through {p.name}")
            r = p.request("POST", "/collections/dr/points/count", json={"exact": True})
            assert r.json()["result"]["count"] == N
        oracle = QdrantClient(":memory:")
        oracle.create_collection("dr", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE))
        oracle.upsert("dr", [models.PointStruct(**p) for p in pts])
        qrng = random.Random(77)
        for _ in range(5):
            q = _vec(qrng)
            want = [x.id for x in oracle.query_points("dr", query=q, limit=10).points]
            for p in survivors + [new]:
                r = p.request("POST", "/collections/dr/points/search",
                              json={"vector": q, "limit": 10, "params": {"exact": True}})
                assert [x["id"] for x in r.json()["result"]] == want, p.name
            got = new.request("POST", "/collections/dr/points", json={"ids": [want[0]], "with_payload": True})
            assert got.json()["result"][0]["payload"]["text"] == "x" * 2048
    finally:
        c.cleanup()
