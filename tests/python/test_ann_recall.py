"""ANN correctness: HNSW answers (default search) against exact search on the same server.

The collection uses a tiny `indexing_threshold` so the background optimizer builds the
HNSW graph; the test waits for status `green` and then requires recall@10 >= 0.98 for
every distance, with filters of 1%..50% selectivity, after deletions, and after a restart
(the graph is rebuilt from the checkpoint + WAL). Seeded: SEXTANT_ANN_SEED.
"""

from __future__ import annotations

import os
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


def recall(client, name: str, queries: np.ndarray, flt=None) -> float:
    hit = total = 0
    for q in queries:
        exact = client.query_points(name, query=q.tolist(), limit=K, query_filter=flt,
                                    search_params=models.SearchParams(exact=True)).points
        approx = client.query_points(name, query=q.tolist(), limit=K, query_filter=flt).points
        truth = {p.id for p in exact}
        hit += sum(1 for p in approx if p.id in truth)
        total += len(truth)
        assert len(approx) == len(exact), f"seed {SEED}: approx returned {len(approx)}, exact {len(exact)}"
    return hit / max(total, 1)


@pytest.mark.slow
@pytest.mark.parametrize("distance", ["Cosine", "Euclid", "Dot", "Manhattan"])
def test_hnsw_recall(server, distance):
    rng = np.random.default_rng(SEED + hash(distance) % 1000)
    client = server.client()
    name = f"ann_{distance.lower()}_{SEED}"
    client.create_collection(
        name,
        vectors_config=models.VectorParams(size=DIM, distance=models.Distance(distance)),
        optimizers_config=models.OptimizersConfigDiff(indexing_threshold=10),  # KB: ~80 points
        # full_scan_threshold 10 KB = 80 points: 10% and 50% filters take the filtered-graph
        # path, 1% (40 points) the exact path
        hnsw_config=models.HnswConfigDiff(m=16, ef_construct=100, full_scan_threshold=10),
    )
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
