"""ANN correctness: HNSW answers (default search) against exact search on the same server.

The collection uses a tiny `indexing_threshold` so the background optimizer builds the
HNSW graph; the test waits for status `green` and then requires recall@10 >= 0.98 for
every distance, with filters of 1%..50% selectivity, after deletions, and after a restart
(the graph is rebuilt from the checkpoint + WAL). Seeded: SEXTANT_ANN_SEED.
"""

from __future__ import annotations

import os
import zlib
import time

import numpy as np
import pytest
from qdrant_client import models

SEED = int(os.environ.get("SEXTANT_ANN_SEED", "20261122"))
N, DIM, QUERIES, K = 4000, 32, 40, 10


def clustered(rng: np.random.Generator, n: int) -> np.ndarray:
    centres = rng.uniform(-1, 1, size=(25, DIM))
    return (centres[rng.integers(0, 25, size=n)] + rng.normal(0, 0.25, size=(n, DIM))).astype(np.float32)


def wait_green(client, name: str, timeout: float = 120.0) -> models.CollectionInfo:
    deadline = time.time() + timeout
    while time.time() < deadline:
        info = client.get_collection(name)
        if info.status == models.CollectionStatus.GREEN and (info.indexed_vectors_count or 0) > 0:
            return info
        time.sleep(0.2)
    raise AssertionError(f"{name} not indexed (green) within {timeout}s: {client.get_collection(name)}")


def recall(client, name: str, queries: np.ndarray, flt=None, params=None) -> float:
    hit = total = 0
    for q in queries:
        exact = client.query_points(name, query=q.tolist(), limit=K, query_filter=flt,
                                    search_params=models.SearchParams(exact=True)).points
        approx = client.query_points(name, query=q.tolist(), limit=K, query_filter=flt, search_params=params).points
        truth = {p.id for p in exact}
        hit += sum(1 for p in approx if p.id in truth)
        total += len(truth)
        assert len(approx) == len(exact), f"seed {SEED}: approx returned {len(approx)}, exact {len(exact)}"
    return hit / max(total, 1)


@pytest.mark.slow
@pytest.mark.parametrize("indexed", [False, True], ids=["no-index", "int-index"])
@pytest.mark.parametrize("distance", ["Cosine", "Euclid", "Dot", "Manhattan"])
def test_hnsw_recall(server, distance, indexed):
    # indexed: the range filters are answered by an integer index (the 10% and 50% ranges
    # are then tested per slot from the index's values during the graph walk); otherwise
    # their cardinality is sampled and each candidate's payload is checked
    rng = np.random.default_rng(SEED + zlib.crc32(distance.encode()) % 1000)  # str hash() is salted per process
    client = server.client()
    name = f"ann_{distance.lower()}_{SEED}_{int(indexed)}"
    client.create_collection(
        name,
        vectors_config=models.VectorParams(size=DIM, distance=models.Distance(distance)),
        optimizers_config=models.OptimizersConfigDiff(indexing_threshold=10),  # KB: ~80 points
        # full_scan_threshold 10 KB = 80 points: 10% and 50% filters take the filtered-graph
        # path, 1% (40 points) the exact path
        hnsw_config=models.HnswConfigDiff(m=16, ef_construct=100, full_scan_threshold=10),
    )
    if indexed:
        client.create_payload_index(name, "b", models.PayloadSchemaType.INTEGER, wait=True)
    data = clustered(rng, N + QUERIES)
    vecs, queries = data[:N], data[N:]
    buckets = rng.integers(0, 100, size=N)  # selectivity by bucket ranges
    for start in range(0, N, 500):
        ids = list(range(start, min(N, start + 500)))
        client.upsert(name, points=models.Batch(ids=ids, vectors=vecs[ids].tolist(),
                                                payloads=[{"b": int(buckets[i])} for i in ids]), wait=True)
    info = wait_green(client, name)
    assert info.indexed_vectors_count >= N * 0.9, f"seed {SEED}: indexed {info.indexed_vectors_count}"

    r = recall(client, name, queries)
    assert r >= 0.98, f"seed {SEED} {distance}: unfiltered recall {r}"
    for pct in (1, 10, 50):
        flt = models.Filter(must=[models.FieldCondition(key="b", range=models.Range(lt=pct))])
        r = recall(client, name, queries, flt)  # all queries: 400 results per estimate
        assert r >= 0.98, f"seed {SEED} {distance}: recall {r} at {pct}% selectivity"

    # deletions: a fifth of the points; deleted ids must never come back
    deleted = list(range(0, N, 5))
    client.delete(name, points_selector=models.PointIdsList(points=deleted), wait=True)
    r = recall(client, name, queries)
    assert r >= 0.98, f"seed {SEED} {distance}: recall after deletions {r}"
    dset = set(deleted)
    for q in queries[:10]:
        got = client.query_points(name, query=q.tolist(), limit=50).points
        assert not dset & {p.id for p in got}, f"seed {SEED}: deleted point returned"


@pytest.mark.slow
def test_hnsw_rebuilt_after_restart(make_server):
    srv = make_server()
    srv.start()
    client = srv.client()
    rng = np.random.default_rng(SEED)
    name = "ann_restart"
    client.create_collection(name, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
                             optimizers_config=models.OptimizersConfigDiff(indexing_threshold=10))
    data = clustered(rng, 3000 + QUERIES)
    client.upsert(name, points=models.Batch(ids=list(range(3000)), vectors=data[:3000].tolist()), wait=True)
    wait_green(client, name)
    srv.kill()
    srv.restart()
    client = srv.client()
    assert client.count(name).count == 3000
    wait_green(client, name)
    r = recall(client, name, data[3000:])
    assert r >= 0.98, f"seed {SEED}: recall after restart {r}"


@pytest.mark.slow
def test_int8_quantization_with_vectors_on_disk(make_server):
    """int8 codes preselect, f32 vectors (in a mapped file) rescore: recall holds with and
    without filters, after deletions and a restart; `rescore=false` returns code scores."""
    srv = make_server()
    srv.start()
    client = srv.client()
    rng = np.random.default_rng(SEED + 7)
    name = "ann_int8"
    client.create_collection(
        name,
        vectors_config=models.VectorParams(size=DIM, distance=models.Distance.EUCLID, on_disk=True),
        quantization_config=models.ScalarQuantization(
            scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, quantile=0.99, always_ram=True)),
        optimizers_config=models.OptimizersConfigDiff(indexing_threshold=10),
        hnsw_config=models.HnswConfigDiff(full_scan_threshold=10),
    )
    info = client.get_collection(name)
    assert info.config.quantization_config.scalar.quantile == pytest.approx(0.99)
    assert info.config.params.vectors.on_disk is True
    data = clustered(rng, N + QUERIES)
    vecs, queries = data[:N], data[N:]
    buckets = rng.integers(0, 100, size=N)
    for start in range(0, N, 1000):
        ids = list(range(start, start + 1000))
        client.upsert(name, points=models.Batch(ids=ids, vectors=vecs[ids].tolist(),
                                                payloads=[{"b": int(buckets[i])} for i in ids]), wait=True)
    wait_green(client, name)

    def check(stage: str):
        r = recall(client, name, queries)
        assert r >= 0.95, f"seed {SEED}: int8 recall {r} ({stage})"
        for pct in (1, 10, 50):
            flt = models.Filter(must=[models.FieldCondition(key="b", range=models.Range(lt=pct))])
            r = recall(client, name, queries[:15], flt)
            assert r >= 0.95, f"seed {SEED}: int8 recall {r} at {pct}% ({stage})"

    check("fresh")
    q = queries[0].tolist()
    exact = {p.id: p.score for p in client.query_points(
        name, query=q, limit=10, search_params=models.SearchParams(exact=True)).points}
    rescored = client.query_points(name, query=q, limit=10).points
    raw = client.query_points(name, query=q, limit=10, search_params=models.SearchParams(
        quantization=models.QuantizationSearchParams(rescore=False, oversampling=2.0))).points
    ignored = client.query_points(name, query=q, limit=10, search_params=models.SearchParams(
        quantization=models.QuantizationSearchParams(ignore=True))).points
    for p in rescored + ignored:
        if p.id in exact:
            assert p.score == pytest.approx(exact[p.id], rel=1e-5), "rescored scores are exact"
    assert any(p.id in exact and p.score != pytest.approx(exact[p.id], rel=1e-5) for p in raw), \
        "rescore=false must report the int8 approximation (codes are in use)"

    client.delete(name, points_selector=models.PointIdsList(points=list(range(0, N, 5))), wait=True)
    check("after deletions")
    srv.kill()
    srv.restart()
    client = srv.client()
    assert client.count(name).count == N - N // 5
    wait_green(client, name)
    check("after restart")


def test_quantization_bad_input(server):
    import requests
    from helpers import assert_error_response, assert_ok_response

    base = f"{server.url}/collections"
    ok = {"vectors": {"size": 4, "distance": "Dot"},
          "quantization_config": {"scalar": {"type": "int8", "quantile": 0.99, "always_ram": True}}}
    assert_ok_response(requests.put(f"{base}/q_ok", json=ok, timeout=30), "create quantized")
    for bad, word in [({"scalar": {"type": "int8", "quantile": 0.2}}, "quantile"),
                      ({"scalar": {"type": "int4"}}, "int8"),
                      ({"scalar": {"type": "int8", "always_ram": "yes"}}, "always_ram")]:
        r = requests.put(f"{base}/q_bad", json={**ok, "quantization_config": bad}, timeout=30)
        assert_error_response(r, 422)
        assert word in r.json()["status"]["error"], r.text
    for params, word in [({"quantization": {"oversampling": 0.5}}, "oversampling"),
                         ({"quantization": {"rescore": "no"}}, "rescore"),
                         ({"quantization": {"bogus": 1}}, "bogus")]:
        r = requests.post(f"{base}/q_ok/points/query", json={"query": [0.1, 0.2, 0.3, 0.4], "params": params},
                          timeout=30)
        assert 400 <= r.status_code < 500, r.text
        assert word in r.json()["status"]["error"], r.text
    r = requests.post(f"{base}/q_ok/points/query", json={
        "query": [0.1, 0.2, 0.3, 0.4], "params": {"quantization": {"ignore": False, "rescore": True, "oversampling": 3}}},
        timeout=30)
    assert_ok_response(r, "query with quantization params")


def _block_graphs_built(srv, what="payload-block graphs built", key="installed", start=None) -> int:
    """Sum of `key=N` over the server's log lines containing `what` (of one start, or all)."""
    import re
    total = 0
    for f in srv.workdir.glob("std*.log" if start is None else f"std*.{start}.log"):
        for line in f.read_text(errors="replace").splitlines():
            if what in line:
                m = re.search(key + r"\W*=\W*(\d+)", re.sub(r"\x1b\[[0-9;]*m", "", line))
                total += int(m.group(1)) if m else 0
    return total


@pytest.mark.slow
def test_payload_block_graphs(make_server):
    """A keyword index gets one graph per value with 1000 .. n/4 points (`payload_m`); a filter
    naming one value walks it. Results stay exact-correct in membership (right tenant,
    never deleted) and close to exact in ranking, also after payloads move between values
    and points are deleted (stale blocks: the moved points are scanned exactly)."""
    srv = make_server()
    plain_env = srv.env
    srv.env = lambda: {**plain_env(), "QDRANT__LOG_LEVEL": "INFO"}
    srv.start()
    client = srv.client()
    rng = np.random.default_rng(SEED + 11)
    name = "blocks"
    client.create_collection(name, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.EUCLID),
                             optimizers_config=models.OptimizersConfigDiff(indexing_threshold=10))
    client.create_payload_index(name, "tenant", models.PayloadSchemaType.KEYWORD, wait=True)
    # a, b, c get blocks; "d" is too small, "e" too large (over a quarter of the points)
    sizes = {"a": 1200, "b": 1100, "c": 1000, "d": 200, "e": 2000}
    tenants = np.array([t for t, n in sizes.items() for _ in range(n)])
    rng.shuffle(tenants)
    n = len(tenants)
    data = clustered(rng, n + QUERIES)
    vecs, queries = data[:n], data[n:]
    for start in range(0, n, 1000):
        ids = list(range(start, min(n, start + 1000)))
        client.upsert(name, points=models.Batch(ids=ids, vectors=vecs[ids].tolist(),
                                                payloads=[{"tenant": str(tenants[i])} for i in ids]), wait=True)
    wait_green(client, name)
    assert _block_graphs_built(srv) >= 3, f"no block graphs in the log:\n{srv.stderr_text(3000)}"

    def check(stage: str, deleted=frozenset()):
        for t in sizes:
            flt = models.Filter(must=[models.FieldCondition(key="tenant", match=models.MatchValue(value=t))])
            r = recall(client, name, queries[:20], flt)
            assert r >= 0.95, f"seed {SEED}: tenant {t} recall {r} ({stage})"
            for q in queries[:5]:
                got = client.query_points(name, query=q.tolist(), limit=30, query_filter=flt, with_payload=True).points
                assert all(p.payload["tenant"] == t for p in got), f"wrong tenant returned ({stage})"
                assert not deleted & {p.id for p in got}, f"deleted point returned ({stage})"
        # two values: no single block answers it; at hnsw_ef 32 the walk (~2k scored) beats
        # the exact scan of ~2.3k candidates, so the main graph is walked, following the
        # accepted nodes' links in their tenant's block
        two = models.Filter(must=[models.FieldCondition(key="tenant", match=models.MatchAny(any=["a", "b"]))])
        r = recall(client, name, queries[:20], two, models.SearchParams(hnsw_ef=32))
        assert r >= 0.95, f"seed {SEED}: tenants a+b recall {r} ({stage})"
        for q in queries[:5]:
            got = client.query_points(name, query=q.tolist(), limit=30, query_filter=two, with_payload=True,
                                      search_params=models.SearchParams(hnsw_ef=32)).points
            assert all(p.payload["tenant"] in ("a", "b") for p in got), f"wrong tenant returned ({stage})"
            assert not deleted & {p.id for p in got}, f"deleted point returned ({stage})"

    check("fresh")
    # saved with the checkpoint a graceful stop writes, installed again at start: no rebuild
    srv.stop()
    srv.start()
    client = srv.client()
    wait_green(client, name)
    loaded = _block_graphs_built(srv, "payload-block graphs loaded from checkpoint", "imported", start=2)
    assert loaded == 3, f"blocks loaded after restart: {loaded}\n{srv.stderr_text(3000)}"
    assert _block_graphs_built(srv, start=2) == 0, "blocks were rebuilt after restart"
    check("after restart")
    # move 600 points of "a" to "b", delete 300 of "b": the blocks are stale until rebuilt
    moved = [int(i) for i in np.nonzero(tenants == "a")[0][:600]]
    client.set_payload(name, payload={"tenant": "b"}, points=moved, wait=True)
    tenants[moved] = "b"
    gone = [int(i) for i in np.nonzero(tenants == "b")[0][:300]]
    client.delete(name, points_selector=models.PointIdsList(points=gone), wait=True)
    check("stale blocks", frozenset(gone))
