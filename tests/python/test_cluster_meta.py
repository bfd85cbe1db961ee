"""Metadata operations return only once every reachable peer applied them (issue #13):
a collection created through any peer exists on every peer when the call returns, and is
gone from every peer when its deletion returns."""

from __future__ import annotations

import requests

from cluster_harness import Cluster, start_cluster


def three_peers(tmp_path):
    """A converged 3-peer cluster: (cluster, [first peer, joiner, joiner])."""
    return start_cluster(tmp_path, 3)


def test_metadata_ops_are_applied_everywhere_on_return(tmp_path):
    c, peers = three_peers(tmp_path)
    a = peers[0]
    try:
        misses = []
        for i in range(12):
            via = peers[i % 3]
            name = f"meta_{i}"
            r = via.request("PUT", f"/collections/{name}", json={"vectors": {"size": 4, "distance": "Dot"}})
            assert r.status_code == 200, r.text
            for p in peers:  # no waiting: the answer itself must mean "applied everywhere"
                if not requests.get(f"{p.url}/collections/{name}/exists", timeout=5).json()["result"]["exists"]:
                    misses.append((name, "missing after create", p.name))
            r = peers[(i + 1) % 3].request("PUT", f"/collections/{name}/index",
                                           json={"field_name": "k", "field_schema": "keyword"})
            assert r.status_code == 200, r.text
            for p in peers:
                schema = p.get(f"/collections/{name}").json()["result"]["payload_schema"]
                if "k" not in schema:
                    misses.append((name, "index missing", p.name))
            r = peers[(i + 2) % 3].request("DELETE", f"/collections/{name}")
            assert r.status_code == 200, r.text
            for p in peers:
                if requests.get(f"{p.url}/collections/{name}/exists", timeout=5).json()["result"]["exists"]:
                    misses.append((name, "present after delete", p.name))
        assert not misses, misses
    finally:
        c.cleanup()


def test_lookup_from_in_cluster_mode(tmp_path):
    """`lookup_from` another collection works through every peer and answers as the local
    mode: examples come from the other collection (its vector name), and ids equal to those
    examples are not excluded from the searched collection."""
    import random

    from qdrant_client import QdrantClient, models

    rng = random.Random(5)
    main = [{"id": i, "vector": [rng.uniform(-1, 1) for _ in range(6)]} for i in range(1, 61)]
    other = [{"id": i, "vector": {"w": [rng.uniform(-1, 1) for _ in range(6)]}} for i in range(1, 21)]
    oracle = QdrantClient(":memory:")
    oracle.create_collection("main", vectors_config=models.VectorParams(size=6, distance=models.Distance.COSINE))
    oracle.create_collection("other", vectors_config={"w": models.VectorParams(size=6, distance=models.Distance.COSINE)})
    oracle.upsert("main", [models.PointStruct(**p) for p in main])
    oracle.upsert("other", [models.PointStruct(**p) for p in other])

    c, peers = three_peers(tmp_path)
    a = peers[0]
    try:
        assert a.request("PUT", "/collections/main", json={"vectors": {"size": 6, "distance": "Cosine"},
                                                           "shard_number": 3}).ok
        assert a.request("PUT", "/collections/other", json={"vectors": {"w": {"size": 6, "distance": "Cosine"}},
                                                            "shard_number": 2}).ok
        assert a.request("PUT", "/collections/main/points?wait=true", json={"points": main}).ok
        assert a.request("PUT", "/collections/other/points?wait=true", json={"points": other}).ok
        lookup = {"collection": "other", "vector": "w"}
        for p in peers:
            body = {"query": {"recommend": {"positive": [3, 4], "negative": [5]}}, "lookup_from": lookup,
                    "limit": 8, "with_payload": False}
            r = p.request("POST", "/collections/main/points/query", json=body)
            assert r.status_code == 200, r.text
            got = [(x["id"], round(x["score"], 4)) for x in r.json()["result"]["points"]]
            want = [(x.id, round(x.score, 4)) for x in oracle.query_points(
                "main", query=models.RecommendQuery(recommend=models.RecommendInput(positive=[3, 4], negative=[5])),
                lookup_from=models.LookupLocation(collection="other", vector="w"), limit=8).points]
            assert got == want, (p.name, got, want)
            r = p.request("POST", "/collections/main/points/recommend",
                          json={"positive": [7], "lookup_from": lookup, "limit": 5})
            assert r.status_code == 200, r.text
            got = [x["id"] for x in r.json()["result"]]
            want = [x.id for x in oracle.query_points(
                "main", query=models.RecommendQuery(recommend=models.RecommendInput(positive=[7])),
                lookup_from=models.LookupLocation(collection="other", vector="w"), limit=5).points]
            assert got == want, (p.name, got, want)
    finally:
        c.cleanup()


def test_transfer_that_lost_a_batch_never_activates(tmp_path, monkeypatch):
    """Verified switch: a transfer switches its target to Active only when the target's
    content digest equals the source's. With the failpoint ``transfer_drop_batch`` every
    record stream silently loses its first batch (the transport bug class that once left a
    replica with 88 of 600 points); the target must never become Active and the transfer
    is aborted. Without the failpoint the same transfer completes."""
    import time

    from cluster_harness import wait_until

    monkeypatch.setenv("SEXTANT_FAILPOINT", "transfer_drop_batch")
    c, peers = three_peers(tmp_path)
    a = peers[0]
    try:
        assert a.request("PUT", "/collections/v", json={"vectors": {"size": 4, "distance": "Dot"},
                                                        "shard_number": 1}).ok
        pts = [{"id": i, "vector": [i % 7, 1, 0, 1], "payload": {"n": i}} for i in range(1, 301)]
        assert a.request("PUT", "/collections/v/points?wait=true", json={"points": pts}).ok

        def replicas():
            r = a.get("/collections/v/cluster").json()["result"]
            out = {}
            for s in r["local_shards"]:
                out[a.peer_id] = s["state"]
            for s in r["remote_shards"]:
                out[s["peer_id"]] = s["state"]
            return out, r.get("shard_transfers", [])

        holder = next(iter(replicas()[0]))
        target = next(p.peer_id for p in peers if p.peer_id != holder)
        assert a.request("POST", "/collections/v/cluster", json={"replicate_shard": {
            "shard_id": 0, "from_peer_id": holder, "to_peer_id": target}}).ok
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            states, _ = replicas()
            assert states.get(target) != "Active", "a transfer that lost a batch switched its target to Active"
            time.sleep(0.2)
        states, transfers = replicas()
        assert target not in states and not transfers, (states, transfers)  # aborted, new replica dropped
        logs = c.logs(20000)
        assert "digest mismatch" in logs, logs[-3000:]
        r = a.request("POST", "/collections/v/points/count", json={"exact": True})
        assert r.json()["result"]["count"] == 300
    finally:
        c.cleanup()


def test_collection_config_is_resolved_once_by_the_proposer(tmp_path, monkeypatch):
    """Typed, resolved Raft entries (issue #13): the proposer fills in the defaults, so
    every peer creates the collection with the same config even when the peers' own
    defaults differ (here `storage.hnsw_index` and `storage.optimizers` of one peer)."""
    c = Cluster(tmp_path)
    try:
        a = c.start_first()
        peers = [a]
        for i in range(2):
            if i == 1:
                monkeypatch.setenv("QDRANT__STORAGE__HNSW_INDEX__M", "48")
                monkeypatch.setenv("QDRANT__STORAGE__HNSW_INDEX__EF_CONSTRUCT", "300")
                monkeypatch.setenv("QDRANT__STORAGE__OPTIMIZERS__DEFAULT_SEGMENT_NUMBER", "7")
            p = c.spawn_joiner(a)
            p.wait_ready()
            peers.append(p)
        for k in ("M", "EF_CONSTRUCT"):
            monkeypatch.delenv(f"QDRANT__STORAGE__HNSW_INDEX__{k}")
        monkeypatch.delenv("QDRANT__STORAGE__OPTIMIZERS__DEFAULT_SEGMENT_NUMBER")
        c.wait_converged(60)
        for i, via in enumerate(peers):
            name = f"resolved_{i}"
            r = via.request("PUT", f"/collections/{name}",
                            json={"vectors": {"size": 1536, "distance": "Cosine"}, "replication_factor": 2})
            assert r.status_code == 200, r.text
            configs = {p.name: p.get(f"/collections/{name}").json()["result"]["config"] for p in peers}
            first = configs[peers[0].name]
            assert all(cfg == first for cfg in configs.values()), (via.name, configs)
            # the proposer's defaults, not the odd peer's, and the agreed placement
            expected_m = 48 if via is peers[2] else 16
            assert first["hnsw_config"]["m"] == expected_m, first
            assert first["params"]["shard_number"] == 3, first
            assert first["params"]["replication_factor"] == 2, first
    finally:
        c.cleanup()


def test_replicate_onto_an_existing_replica_resyncs_it(tmp_path):
    """Manual recovery (issues #13/#15): `replicate_shard` onto a peer that already holds a
    replica resyncs that replica from the source, as in Qdrant (it used to answer 400).
    The replica here lost its data (storage wiped while the peer was down), so it holds
    nothing until the resync; afterwards it holds exactly the source's points."""
    import shutil
    import time

    from cluster_harness import wait_until

    c, peers = three_peers(tmp_path)
    a = peers[0]
    try:
        r = a.request("PUT", "/collections/rs", json={"vectors": {"size": 1536, "distance": "Cosine"},
                                                     "shard_number": 1, "replication_factor": 2})
        assert r.status_code == 200, r.text
        pts = [{"id": i, "vector": [((i * 7 + j) % 13) / 13.0 + 0.01 for j in range(1536)],
                "payload": {"n": i, "text": "x" * 2048}} for i in range(1, 201)]
        for k in range(0, len(pts), 50):
            assert a.request("PUT", "/collections/rs/points?wait=true", json={"points": pts[k:k + 50]}).ok

        info = a.get("/collections/rs/cluster").json()["result"]
        holders = [s["peer_id"] for s in info["remote_shards"]] + ([a.peer_id] if info["local_shards"] else [])
        assert len(holders) == 2, info
        by_id = {p.peer_id: p for p in peers}
        target = by_id[holders[0]]
        source = by_id[holders[1]]

        def local_count(p):
            loc = p.get("/collections/rs/cluster").json()["result"]["local_shards"]
            return loc[0]["points_count"] if loc else None

        assert local_count(target) == 200
        target.sigkill()
        shutil.rmtree(target.storage / "collections" / "rs")
        target.spawn()
        target.wait_ready()
        wait_until(lambda: local_count(target) is not None, 60, what="the wiped peer re-creates its replica")
        assert local_count(target) == 0  # nothing resyncs it by itself yet (issue #15)

        r = a.request("POST", "/collections/rs/cluster", json={
            "replicate_shard": {"shard_id": 0, "from_peer_id": source.peer_id, "to_peer_id": target.peer_id}})
        assert r.status_code == 200, r.text

        def resynced():
            res = a.get("/collections/rs/cluster").json()["result"]
            states = {s["peer_id"]: s["state"] for s in res["remote_shards"]}
            if res["local_shards"]:
                states[a.peer_id] = res["local_shards"][0]["state"]
            return not res["shard_transfers"] and states.get(target.peer_id) == "Active" and local_count(target) == 200

        wait_until(resynced, 90, what="the replica is resynced and Active again")
        got = target.request("POST", "/collections/rs/points/scroll",
                             json={"limit": 500, "with_payload": True, "with_vector": False}).json()["result"]["points"]
        assert sorted(p["id"] for p in got) == list(range(1, 201))
        # a resync request for a replica the peer does not hold is still a new replica, and
        # one from a peer without an Active replica is refused
        r = a.request("POST", "/collections/rs/cluster", json={
            "replicate_shard": {"shard_id": 0, "from_peer_id": 999, "to_peer_id": target.peer_id}})
        assert r.status_code in (400, 404), r.text
    finally:
        c.cleanup()
