"""The cluster write path holds no lock across network calls (issue #13).

A transfer source used to hold its per-collection lock while it sent each batch (and the
clearing of the target, and every forwarded write) to the target, so every write to *any*
shard of the collection on that peer waited for the slowest of those network calls. Now
the transfer's messages go through an ordered outbox whose order is fixed under the lock
and whose sends run without it (crates/distributed/src/outbox.rs).

The link to the target is slowed down with the seeded fault injection at the peer layer
(`SEXTANT_PEER_FAULTS=apply:delay=MS@PEER`, only on the source's link to the target).
"""

from __future__ import annotations

import random
import time

from cluster_harness import Cluster, wait_until
from routing import shard_of

DIM = 1536
SHARDS = 6
DELAY_MS = 3000
IDS = [2001, 2002]


def _peer(c: Cluster, peer_id: int):
    p = c.new_peer()
    (p.storage / "raft").mkdir(parents=True, exist_ok=True)
    (p.storage / "raft" / "peer_id").write_text(str(peer_id))
    return p


def _vec(rng: random.Random) -> list[float]:
    return [round(rng.uniform(-1, 1), 6) for _ in range(DIM)]


def _local(p, name: str) -> dict[int, tuple[str, int]]:
    res = p.get(f"/collections/{name}/cluster").json()["result"]
    return {s["shard_id"]: (s["state"], s["points_count"]) for s in res["local_shards"]}


def test_writes_never_wait_for_a_transfer_to_a_slow_peer(tmp_path, monkeypatch):
    c = Cluster(tmp_path)
    try:
        a = _peer(c, IDS[0])
        monkeypatch.setenv("SEXTANT_PEER_FAULTS", f"apply:delay={DELAY_MS}@{IDS[1]}")
        a.spawn(["--uri", a.p2p_uri])
        a.wait_ready()
        monkeypatch.delenv("SEXTANT_PEER_FAULTS")
        b = _peer(c, IDS[1])
        b.spawn(["--bootstrap", a.p2p_uri, "--uri", b.p2p_uri])
        b.wait_ready()
        c.wait_converged(60)
        r = a.request("PUT", "/collections/w", json={
            "vectors": {"size": DIM, "distance": "Cosine"}, "shard_number": SHARDS, "replication_factor": 1})
        assert r.status_code == 200, r.text
        mine = sorted(_local(a, "w"))
        # placement is a function of the (fixed) peer ids: deterministic
        assert len(mine) >= 2, f"peer {IDS[0]} holds shards {mine}: the test needs two"
        moved, other = mine[0], mine[1]
        rng = random.Random(4)
        # ~40 points in the moved shard, written through their holder (no slow link involved)
        ids = [i for i in range(1, 4000) if shard_of(i, SHARDS) == moved][:40]
        pts = [{"id": i, "vector": _vec(rng), "payload": {"blob": "p" * 2048}} for i in ids]
        r = a.request("PUT", "/collections/w/points?wait=true", json={"points": pts})
        assert r.status_code == 200, r.text

        r = a.request("POST", "/collections/w/cluster", json={
            "replicate_shard": {"shard_id": moved, "from_peer_id": IDS[0], "to_peer_id": IDS[1]}})
        assert r.status_code == 200, r.text
        wait_until(lambda: a.get("/collections/w/cluster").json()["result"]["shard_transfers"], 10,
                   what="the transfer started")
        # writes to another shard of the same collection on the same peer, while the
        # transfer's messages to the slow target are in flight (each takes DELAY_MS). The
        # clearing of the target and the first batch each take that, so the transfer runs
        # at least 2 x DELAY_MS: writing for 1.5 x DELAY_MS keeps every write inside it (a
        # window of the full 2 x DELAY_MS raced the transfer's end)
        fresh = iter([i for i in range(5000, 90000) if shard_of(i, SHARDS) == other])
        # and one write to the moved shard: forwarded to the target, in order
        forwarded = next(i for i in range(90000, 99000) if shard_of(i, SHARDS) == moved)
        latencies = []
        until = time.monotonic() + 1.5 * DELAY_MS / 1000
        while time.monotonic() < until:
            i = next(fresh)
            t0 = time.monotonic()
            r = a.request("PUT", "/collections/w/points?wait=true", json={
                "points": [{"id": i, "vector": _vec(rng), "payload": {"k": i}}]})
            latencies.append(time.monotonic() - t0)
            assert r.status_code == 200, r.text
        still = a.get("/collections/w/cluster").json()["result"]["shard_transfers"]
        r = a.request("PUT", "/collections/w/points?wait=true", json={
            "points": [{"id": forwarded, "vector": _vec(rng), "payload": {"k": forwarded}}]})
        assert r.status_code == 200, r.text
        print(f"{len(latencies)} writes during the transfer, slowest {max(latencies):.3f} s "
              f"(target link delayed {DELAY_MS} ms); transfer still running after them: {bool(still)}")
        assert still, "the transfer ended before the writes did: the test measured nothing"
        assert max(latencies) < DELAY_MS / 2000, \
            f"a write to shard {other} waited for the transfer of shard {moved}: {latencies}"

        def switched():
            return _local(b, "w").get(moved, ("", 0))[0] == "Active"

        wait_until(switched, 90, what="the new replica became Active")
        assert _local(b, "w")[moved][1] == len(ids) + 1
        got = b.request("POST", "/collections/w/points", json={"ids": [forwarded], "with_payload": True})
        assert got.status_code == 200 and got.json()["result"], got.text
    finally:
        c.cleanup()
