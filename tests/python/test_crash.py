"""Crash consistency: SIGKILL the server while a writer upserts batches with wait=true.

After every restart on the same storage:
  * every acknowledged batch is fully present with the exact payloads and vectors;
  * every batch is either fully present or fully absent (no partial batch);
  * nothing that was never sent is present.

``SEXTANT_CRASH_SEED`` fixes the kill timings (default: random; printed in every message).
``SEXTANT_CRASH_CYCLES`` changes the number of kill/restart cycles (default 20).
"""

from __future__ import annotations

import functools
import os
import random
import threading
import time

import pytest
import requests

CRASH_SEED = int(os.environ.get("SEXTANT_CRASH_SEED") or random.SystemRandom().randrange(1, 2**31))
CYCLES = int(os.environ.get("SEXTANT_CRASH_CYCLES") or 20)
BATCH = 50
DIM = 8
COLL = "crash_test"
MAX_WRITE_S = 0.6  # upper bound of the random kill delay (keeps the stored volume, and so the runtime, bounded)


@functools.lru_cache(maxsize=None)
def point_vector(pid: int) -> tuple:
    r = random.Random(CRASH_SEED * 1_000_003 + pid)
    return tuple(round(r.uniform(-1, 1), 4) for _ in range(DIM))


def batch_points(k: int, cycle: int) -> list[dict]:
    return [{"id": k * BATCH + j, "vector": list(point_vector(k * BATCH + j)),
             "payload": {"batch": k, "i": j, "cycle": cycle, "tag": f"b{k}-{j}"}} for j in range(BATCH)]


class Writer(threading.Thread):
    def __init__(self, url: str, first_batch: int, cycle: int):
        super().__init__(daemon=True)
        self.url, self.next_batch, self.cycle = url, first_batch, cycle
        self.attempted: list[int] = []
        self.acked: list[int] = []
        self.error: str | None = None
        self.stop_flag = threading.Event()
        self.session = requests.Session()

    def run(self):
        while not self.stop_flag.is_set():
            k = self.next_batch
            self.attempted.append(k)
            try:
                r = self.session.put(f"{self.url}/collections/{COLL}/points?wait=true",
                                     json={"points": batch_points(k, self.cycle)}, timeout=30)
            except requests.RequestException:
                return  # the server was killed
            if r.status_code != 200:
                self.error = f"batch {k}: HTTP {r.status_code} {r.text[:300]}"
                return
            body = r.json()
            if body.get("result", {}).get("status") != "completed":
                self.error = f"batch {k}: wait=true answered {body}"
                return
            self.acked.append(k)
            self.next_batch += 1


def scroll_everything(url: str, ctx: str) -> dict:
    out = {}
    offset = None
    for _ in range(10_000):
        body = {"limit": 1000, "with_payload": True, "with_vector": True}
        if offset is not None:
            body["offset"] = offset
        r = requests.post(f"{url}/collections/{COLL}/points/scroll", json=body, timeout=60)
        assert r.status_code == 200, f"{ctx}: scroll failed {r.status_code} {r.text[:300]}"
        res = r.json()["result"]
        for p in res["points"]:
            assert p["id"] not in out, f"{ctx}: point {p['id']} returned twice by scroll"
            out[p["id"]] = p
        offset = res.get("next_page_offset")
        if offset is None:
            return out
    raise AssertionError(f"{ctx}: scroll did not terminate")


@pytest.mark.slow
def test_sigkill_during_writes(make_server):
    rng = random.Random(CRASH_SEED)
    srv = make_server()
    srv.start()
    r = requests.put(f"{srv.url}/collections/{COLL}", json={"vectors": {"size": DIM, "distance": "Dot"}}, timeout=30)
    assert r.status_code == 200, f"create: {r.status_code} {r.text}"

    acked: dict[int, int] = {}  # batch -> cycle it was written in
    attempted: dict[int, int] = {}
    next_batch = 0
    stats = []
    for cycle in range(CYCLES):
        ctx = f"[SEXTANT_CRASH_SEED={CRASH_SEED} cycle={cycle}]"
        w = Writer(srv.url, next_batch, cycle)
        delay = rng.uniform(0.0, MAX_WRITE_S)
        w.start()
        time.sleep(delay)
        srv.kill()
        w.stop_flag.set()
        w.join(timeout=40)
        assert not w.is_alive(), f"{ctx}: writer did not stop after the kill"
        assert w.error is None, f"{ctx}: server rejected a valid batch: {w.error}"
        for k in w.attempted:
            attempted[k] = cycle
        for k in w.acked:
            acked[k] = cycle
        next_batch = (max(attempted) + 1) if attempted else next_batch
        stats.append((round(delay, 2), len(w.acked)))

        srv.start()  # same storage, same port; fails the test (with stderr) if not ready in time
        pts = scroll_everything(srv.url, ctx)

        by_batch: dict[int, list] = {}
        for pid, p in pts.items():
            payload = p.get("payload") or {}
            k = payload.get("batch")
            assert isinstance(k, int), f"{ctx}: point {pid} has bad payload {payload}"
            by_batch.setdefault(k, []).append(p)

        never_sent = set(by_batch) - set(attempted)
        assert not never_sent, f"{ctx}: batches present that were never sent (or were absent after an earlier restart): {sorted(never_sent)[:10]}"
        for k, plist in by_batch.items():
            assert len(plist) == BATCH, (
                f"{ctx}: partial batch {k} (written in cycle {attempted[k]}, acked={k in acked}): "
                f"{len(plist)} of {BATCH} points present; ids={sorted(p['id'] for p in plist)[:60]}")
        lost = [k for k in acked if k not in by_batch]
        assert not lost, f"{ctx}: acknowledged batches lost after SIGKILL: {lost[:20]} (of {len(acked)} acked)"
        for k, plist in by_batch.items():
            expect = {p["id"]: p for p in batch_points(k, attempted[k])}
            for p in plist:
                e = expect.get(p["id"])
                assert e is not None, f"{ctx}: unexpected id {p['id']} in batch {k}"
                assert p["payload"] == e["payload"], f"{ctx}: payload of {p['id']}: {p['payload']} != {e['payload']}"
                pv, ev = p["vector"], e["vector"]
                assert isinstance(pv, list) and len(pv) == len(ev) and all(
                    abs(a - b) <= 1e-6 for a, b in zip(pv, ev)), f"{ctx}: vector of {p['id']}: {pv} != {ev}"
        # a batch that was in flight at the kill and is present now counts as written from here on
        for k in by_batch:
            acked.setdefault(k, attempted[k])
        # drop in-flight batches that did not survive: they were never acknowledged
        for k in [k for k in attempted if k not in by_batch]:
            del attempted[k]

        r = requests.post(f"{srv.url}/collections/{COLL}/points/count", json={"exact": True}, timeout=30)
        assert r.status_code == 200 and r.json()["result"]["count"] == len(pts), (
            f"{ctx}: count {r.text[:200]} != scrolled {len(pts)}")

    total_acked = len(acked)
    print(f"crash test seed={CRASH_SEED}: cycles={CYCLES} (delay, acked) per cycle={stats}; batches stored={total_acked}")
    assert total_acked > 0, f"[SEXTANT_CRASH_SEED={CRASH_SEED}] no batch was ever acknowledged: {stats}"
    srv.stop()


def _state(c, name: str, alias: str) -> dict:
    from helpers import id_key

    info = c.get_collection(name)
    pts, _ = c.scroll(name, limit=10_000, with_payload=True, with_vectors=True)
    return {
        "params": info.config.params.model_dump(),
        "hnsw": info.config.hnsw_config.model_dump(),
        "optimizer": info.config.optimizer_config.model_dump(),
        "payload_schema": {k: v.data_type for k, v in info.payload_schema.items()},
        "points_count": info.points_count,
        "aliases": sorted((a.alias_name, a.collection_name) for a in c.get_aliases().aliases),
        "points": sorted(((p.id, repr(p.payload), repr(p.vector)) for p in pts), key=lambda t: id_key(t[0])),
    }


@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
def test_state_survives_restart(make_server, how):
    """Collections, configs, aliases, payload indexes, deletes and payload updates persist."""
    import uuid as _uuid

    from qdrant_client.http import models

    srv = make_server()
    srv.start()
    c = srv.client()
    name, alias = "persist", "persist_alias"
    c.create_collection(
        name,
        vectors_config={"a": models.VectorParams(size=3, distance=models.Distance.COSINE),
                        "b": models.VectorParams(size=2, distance=models.Distance.MANHATTAN)},
        sparse_vectors_config={"s": models.SparseVectorParams()},
        hnsw_config=models.HnswConfigDiff(m=20),
        optimizers_config=models.OptimizersConfigDiff(indexing_threshold=12345),
    )
    c.update_collection_aliases([models.CreateAliasOperation(
        create_alias=models.CreateAlias(collection_name=name, alias_name=alias))])
    c.create_payload_index(name, "k", field_schema=models.PayloadSchemaType.KEYWORD)
    rng = random.Random(CRASH_SEED)
    pts = [models.PointStruct(
        id=i if i % 4 else str(_uuid.UUID(int=rng.getrandbits(128))),
        vector={"a": [rng.uniform(-1, 1) for _ in range(3)], "b": [rng.uniform(-1, 1) for _ in range(2)],
                "s": models.SparseVector(indices=[i, i + 3], values=[0.5, 0.25])},
        payload={"k": f"v{i % 3}", "n": i, "o": {"x": [i, i + 1]}}) for i in range(1, 41)]
    c.upsert(name, pts)
    c.delete(name, models.PointIdsList(points=[2, 3]))
    c.set_payload(name, {"extra": True}, points=[5, 6])
    c.delete_payload(name, ["n"], points=[7])
    c.delete_vectors(name, ["b"], points=[9])
    c.create_collection("persist_deleted", vectors_config=models.VectorParams(size=2, distance=models.Distance.DOT))
    c.delete_collection("persist_deleted")
    before = _state(c, name, alias)
    c.close()

    if how == "sigkill":
        srv.kill()
    else:
        srv.stop()
    srv.start()
    c = srv.client()
    after = _state(c, name, alias)
    for key in before:
        assert after[key] == before[key], f"{how}: {key} changed across restart:\n before={before[key]}\n after={after[key]}"
    assert c.collection_exists("persist_deleted") is False, f"{how}: deleted collection came back"
    # the restarted server keeps accepting writes
    c.upsert(name, [models.PointStruct(id=1000, vector={"a": [1.0, 0.0, 0.0]}, payload={"k": "new"})])
    assert c.count(name, exact=True).count == before["points_count"] + 1
    c.close()
    srv.stop()
