"""Drive Sextant through the official qdrant-client (REST) and compare with QdrantClient(":memory:").

Every test creates its own uniquely named collection(s) on the shared server.
Where the client no longer exposes an endpoint (search, recommend, search groups, ...)
the raw REST endpoint is called with ``requests`` and compared with the equivalent
oracle call.
"""

from __future__ import annotations

import random
import time
import uuid

import numpy as np
import pytest
import requests
from qdrant_client import QdrantClient
from qdrant_client.http import models
from qdrant_client.http.models import Distance, VectorParams

from helpers import (
    assert_error_response,
    assert_fused_match,
    assert_ok_response,
    assert_points_match,
    id_key,
    norm_id,
)

CITIES = ["Berlin", "London", "Moscow", "Paris", "Tokyo"]
EXACT = models.SearchParams(exact=True)


def rand_vec(rng: random.Random, dim: int) -> list[float]:
    return [round(rng.uniform(-1, 1), 6) for _ in range(dim)]


class Pair:
    """The same collection on Sextant (``s``) and in the in-memory oracle (``m``)."""

    def __init__(self, s: QdrantClient, m: QdrantClient, name: str):
        self.s, self.m, self.name = s, m, name

    def both(self, method: str, *args, **kw):
        a = getattr(self.s, method)(self.name, *args, **kw)
        e = getattr(self.m, method)(self.name, *args, **kw)
        return a, e

    def create(self, **kw):
        a, e = self.both("create_collection", **kw)
        assert a is True and e is True

    def query(self, ctx="", ordered=True, **kw):
        kw_s = dict(kw)
        kw_s.setdefault("search_params", EXACT)
        a = self.s.query_points(self.name, **kw_s).points
        e = self.m.query_points(self.name, **kw).points
        assert_points_match(a, e, ctx=f"query_points {kw} {ctx}", ordered=ordered)
        return a

    def retrieve(self, ids, **kw):
        a = self.s.retrieve(self.name, ids, **kw)
        e = self.m.retrieve(self.name, ids, **kw)
        # Retrieve order is not specified by Qdrant; compare by id.
        assert_points_match(a, e, ctx=f"retrieve {ids} {kw}", scores=False, ordered=False)
        return a

    def scroll_all(self, **kw):
        a, _ = self.s.scroll(self.name, limit=10_000, **kw)
        e, _ = self.m.scroll(self.name, limit=10_000, **kw)
        assert_points_match(a, e, ctx=f"scroll {kw}", scores=False)
        return a

    def count(self, **kw):
        a = self.s.count(self.name, exact=True, **kw).count
        e = self.m.count(self.name, exact=True, **kw).count
        assert a == e, f"count {kw}: sextant {a} != oracle {e}"
        return a


@pytest.fixture
def pair(client, memory_client, collection_name):
    p = Pair(client, memory_client, collection_name)
    yield p
    try:
        client.delete_collection(collection_name)
    except Exception:
        pass


def seed_points(rng: random.Random, n: int, dim: int, start: int = 1, uuids: bool = False):
    pts = []
    for i in range(n):
        pid = str(uuid.UUID(int=rng.getrandbits(128))) if (uuids and i % 3 == 0) else start + i
        pts.append(
            models.PointStruct(
                id=pid,
                vector=rand_vec(rng, dim),
                payload={
                    "i": i,
                    "city": CITIES[i % len(CITIES)],
                    "price": round(rng.uniform(0, 100), 3),
                    "group": f"g{i % 4}",
                    "tags": [CITIES[(i + k) % len(CITIES)] for k in range(i % 3)],
                    "nested": {"level": i % 5, "name": f"n{i % 7}"},
                },
            )
        )
    return pts


# ---------------------------------------------------------------------------
# service endpoints
# ---------------------------------------------------------------------------


def test_root_has_title_and_version(server):
    r = requests.get(f"{server.url}/", timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body.get("title"), str) and body["title"], body
    assert isinstance(body.get("version"), str) and body["version"], body


def test_client_info(client):
    info = client.info()
    assert info.title and info.version


@pytest.mark.parametrize("path", ["/healthz", "/livez", "/readyz"])
def test_health_endpoints(server, path):
    r = requests.get(f"{server.url}{path}", timeout=10)
    assert r.status_code == 200, f"{path}: {r.status_code} {r.text}"


# ---------------------------------------------------------------------------
# collections
# ---------------------------------------------------------------------------


def test_create_unnamed_and_get_info(client, collection_name):
    assert client.create_collection(collection_name, vectors_config=VectorParams(size=4, distance=Distance.COSINE))
    info = client.get_collection(collection_name)
    assert info.status == models.CollectionStatus.GREEN
    assert info.points_count == 0
    assert info.indexed_vectors_count == 0
    assert isinstance(info.segments_count, int) and info.segments_count >= 0
    assert info.payload_schema == {}
    vp = info.config.params.vectors
    assert isinstance(vp, VectorParams), vp
    assert vp.size == 4 and vp.distance == Distance.COSINE
    client.upsert(collection_name, [models.PointStruct(id=i, vector=[1.0, 0.5, i, 0.1]) for i in range(1, 8)])
    info = client.get_collection(collection_name)
    assert info.points_count == 7
    client.delete_collection(collection_name)


def test_create_named_vectors_all_distances(pair):
    cfg = {
        "cos": VectorParams(size=4, distance=Distance.COSINE),
        "euc": VectorParams(size=3, distance=Distance.EUCLID, on_disk=True),
        "dot": VectorParams(size=5, distance=Distance.DOT),
        "man": VectorParams(size=2, distance=Distance.MANHATTAN),
    }
    pair.create(vectors_config=cfg, sparse_vectors_config={"sp": models.SparseVectorParams()})
    info = pair.s.get_collection(pair.name)
    got = info.config.params.vectors
    assert isinstance(got, dict) and set(got) == set(cfg), got
    for k, v in cfg.items():
        assert got[k].size == v.size and got[k].distance == v.distance, (k, got[k])
    assert got["euc"].on_disk is True
    assert set(info.config.params.sparse_vectors or {}) == {"sp"}

    rng = random.Random(7)
    pts = []
    for i in range(1, 31):
        vec = {k: rand_vec(rng, v.size) for k, v in cfg.items()}
        if i % 5 != 0:
            idx = sorted(rng.sample(range(50), 6))
            vec["sp"] = models.SparseVector(indices=idx, values=[round(rng.uniform(0.1, 1), 4) for _ in idx])
        pts.append(models.PointStruct(id=i, vector=vec, payload={"i": i}))
    pair.both("upsert", pts)
    for k, v in cfg.items():
        q = rand_vec(rng, v.size)
        pair.query(query=q, using=k, limit=7, with_vectors=True, ctx=k)
    sq = models.SparseVector(indices=list(range(0, 50, 2)), values=[round(rng.uniform(0.1, 1), 4) for _ in range(25)])
    pair.query(query=sq, using="sp", limit=10, with_vectors=["sp"], ctx="sparse")
    pair.retrieve([1, 5, 10], with_vectors=True)


def test_create_with_all_configs(client, collection_name):
    ok = client.create_collection(
        collection_name,
        vectors_config=VectorParams(size=8, distance=Distance.DOT, on_disk=True),
        hnsw_config=models.HnswConfigDiff(m=24, ef_construct=150, full_scan_threshold=5000),
        optimizers_config=models.OptimizersConfigDiff(
            deleted_threshold=0.3, vacuum_min_vector_number=500, default_segment_number=2, indexing_threshold=15000
        ),
        wal_config=models.WalConfigDiff(wal_capacity_mb=16, wal_segments_ahead=1),
        shard_number=2,
        replication_factor=1,
        write_consistency_factor=1,
        on_disk_payload=False,
    )
    assert ok is True
    cfg = client.get_collection(collection_name).config
    assert cfg.params.shard_number == 2
    assert cfg.params.replication_factor == 1
    assert cfg.params.write_consistency_factor == 1
    assert cfg.params.on_disk_payload is False
    assert cfg.params.vectors.size == 8 and cfg.params.vectors.distance == Distance.DOT
    assert cfg.params.vectors.on_disk is True
    assert cfg.hnsw_config.m == 24 and cfg.hnsw_config.ef_construct == 150
    assert cfg.hnsw_config.full_scan_threshold == 5000
    assert cfg.optimizer_config.deleted_threshold == pytest.approx(0.3)
    assert cfg.optimizer_config.vacuum_min_vector_number == 500
    assert cfg.optimizer_config.default_segment_number == 2
    assert cfg.optimizer_config.indexing_threshold == 15000
    assert cfg.wal_config.wal_capacity_mb == 16 and cfg.wal_config.wal_segments_ahead == 1
    # points spread over two shards are all reachable
    rng = random.Random(3)
    client.upsert(collection_name, [models.PointStruct(id=i, vector=rand_vec(rng, 8)) for i in range(100)])
    assert client.count(collection_name, exact=True).count == 100
    got, _ = client.scroll(collection_name, limit=1000)
    assert sorted(p.id for p in got) == list(range(100))
    client.delete_collection(collection_name)


def test_default_on_disk_payload_true(client, collection_name):
    client.create_collection(collection_name, vectors_config=VectorParams(size=2, distance=Distance.EUCLID))
    cfg = client.get_collection(collection_name).config
    # documented default: on_disk_payload true, shard_number 1, replication 1, write consistency 1
    assert cfg.params.on_disk_payload is True
    assert cfg.params.shard_number == 1
    assert cfg.params.replication_factor == 1
    assert cfg.params.write_consistency_factor == 1
    client.delete_collection(collection_name)


def test_write_concern_factor_alias_raw(server, collection_name):
    url = f"{server.url}/collections/{collection_name}"
    r = requests.put(url, json={"vectors": {"size": 3, "distance": "Cosine"}, "write_concern_factor": 1}, timeout=30)
    body = assert_ok_response(r, "create with write_concern_factor")
    assert body["result"] is True
    r = requests.get(url, timeout=30)
    params = assert_ok_response(r, "get")["result"]["config"]["params"]
    assert params.get("write_consistency_factor") == 1, params
    assert "write_concern_factor" not in params, params
    requests.delete(url, timeout=30)


def test_list_exists_delete(client, server, collection_name):
    n1, n2 = collection_name + "_a", collection_name + "_b"
    for n in (n1, n2):
        assert client.create_collection(n, vectors_config=VectorParams(size=2, distance=Distance.DOT))
    names = {c.name for c in client.get_collections().collections}
    assert {n1, n2} <= names
    assert client.collection_exists(n1) is True
    assert client.collection_exists(collection_name + "_nope") is False
    r = requests.get(f"{server.url}/collections/{n1}/exists", timeout=10)
    assert assert_ok_response(r)["result"] == {"exists": True}
    assert client.delete_collection(n1) is True
    assert client.collection_exists(n1) is False
    names = {c.name for c in client.get_collections().collections}
    assert n1 not in names and n2 in names
    assert client.delete_collection(n2) is True


def test_get_missing_collection_404(server, collection_name):
    r = requests.get(f"{server.url}/collections/{collection_name}_missing", timeout=10)
    assert_error_response(r, 404, "get missing collection")


def test_create_twice_conflict(server, collection_name):
    url = f"{server.url}/collections/{collection_name}"
    body = {"vectors": {"size": 4, "distance": "Dot"}}
    r1 = requests.put(url, json=body, timeout=30)
    assert_ok_response(r1, "first create")
    r2 = requests.put(url, json=body, timeout=30)
    assert_error_response(r2, 409, "second create")
    requests.delete(url, timeout=30)


def test_update_collection(client, server, collection_name):
    client.create_collection(
        collection_name,
        vectors_config=VectorParams(size=4, distance=Distance.COSINE),
        optimizers_config=models.OptimizersConfigDiff(indexing_threshold=20000),
    )
    assert client.update_collection(
        collection_name,
        optimizers_config=models.OptimizersConfigDiff(indexing_threshold=5000, deleted_threshold=0.25),
        hnsw_config=models.HnswConfigDiff(m=32, ef_construct=64),
        collection_params=models.CollectionParamsDiff(on_disk_payload=False),
    ) is True
    cfg = client.get_collection(collection_name).config
    assert cfg.optimizer_config.indexing_threshold == 5000
    assert cfg.optimizer_config.deleted_threshold == pytest.approx(0.25)
    assert cfg.hnsw_config.m == 32 and cfg.hnsw_config.ef_construct == 64
    assert cfg.params.on_disk_payload is False
    # unrelated settings untouched
    assert cfg.params.vectors.size == 4 and cfg.params.vectors.distance == Distance.COSINE
    # raw PATCH also works
    r = requests.patch(
        f"{server.url}/collections/{collection_name}",
        json={"optimizers_config": {"indexing_threshold": 7000}},
        timeout=30,
    )
    assert assert_ok_response(r, "PATCH")["result"] is True
    assert client.get_collection(collection_name).config.optimizer_config.indexing_threshold == 7000
    client.delete_collection(collection_name)


def test_update_missing_collection_404(server, collection_name):
    r = requests.patch(
        f"{server.url}/collections/{collection_name}_missing",
        json={"optimizers_config": {"indexing_threshold": 7000}},
        timeout=30,
    )
    assert_error_response(r, 404, "PATCH missing")


def test_aliases(pair, server):
    pair.create(vectors_config=VectorParams(size=4, distance=Distance.EUCLID))
    rng = random.Random(11)
    pair.both("upsert", seed_points(rng, 20, 4))
    a1, a2 = pair.name + "_al1", pair.name + "_al2"
    ops = [models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=pair.name, alias_name=a1))]
    assert pair.s.update_collection_aliases(ops) is True
    pair.m.update_collection_aliases(ops)

    def aliases(c: QdrantClient):
        return sorted((a.alias_name, a.collection_name) for a in c.get_aliases().aliases if a.alias_name in (a1, a2))

    assert aliases(pair.s) == [(a1, pair.name)] == aliases(pair.m)
    col_aliases = pair.s.get_collection_aliases(pair.name).aliases
    assert [(a.alias_name, a.collection_name) for a in col_aliases] == [(a1, pair.name)]

    q = rand_vec(rng, 4)
    via_alias = pair.s.query_points(a1, query=q, limit=5, search_params=EXACT).points
    direct = pair.m.query_points(pair.name, query=q, limit=5).points
    assert_points_match(via_alias, direct, "search through alias")
    assert pair.s.get_collection(a1).points_count == 20

    ops = [models.RenameAliasOperation(rename_alias=models.RenameAlias(old_alias_name=a1, new_alias_name=a2))]
    assert pair.s.update_collection_aliases(ops) is True
    pair.m.update_collection_aliases(ops)
    assert aliases(pair.s) == [(a2, pair.name)] == aliases(pair.m)
    ops = [models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=a2))]
    assert pair.s.update_collection_aliases(ops) is True
    assert aliases(pair.s) == []
    assert pair.s.get_collection_aliases(pair.name).aliases == []
    r = requests.post(
        f"{server.url}/collections/{a2}/points/scroll", json={"limit": 1}, timeout=10
    )
    assert_error_response(r, 404, "scroll via deleted alias")


def test_payload_index(pair):
    pair.create(vectors_config=VectorParams(size=3, distance=Distance.DOT))
    rng = random.Random(5)
    pair.both("upsert", seed_points(rng, 40, 3))
    r = pair.s.create_payload_index(pair.name, "city", field_schema=models.PayloadSchemaType.KEYWORD)
    assert r.status == models.UpdateStatus.COMPLETED
    pair.s.create_payload_index(pair.name, "price", field_schema=models.PayloadSchemaType.FLOAT)
    pair.s.create_payload_index(pair.name, "nested.level", field_schema=models.PayloadSchemaType.INTEGER)
    schema = pair.s.get_collection(pair.name).payload_schema
    assert set(schema) == {"city", "price", "nested.level"}, schema
    assert schema["city"].data_type == models.PayloadSchemaType.KEYWORD
    assert schema["price"].data_type == models.PayloadSchemaType.FLOAT
    assert schema["nested.level"].data_type == models.PayloadSchemaType.INTEGER
    assert schema["city"].points == 40
    flt = models.Filter(must=[models.FieldCondition(key="city", match=models.MatchValue(value="Paris"))])
    pair.count(count_filter=flt)
    pair.scroll_all(scroll_filter=flt)
    r = pair.s.delete_payload_index(pair.name, "city")
    assert r.status == models.UpdateStatus.COMPLETED
    schema = pair.s.get_collection(pair.name).payload_schema
    assert set(schema) == {"price", "nested.level"}
    pair.count(count_filter=flt)  # filtering still works without the index


# ---------------------------------------------------------------------------
# points
# ---------------------------------------------------------------------------


def test_upsert_batch_and_list_forms(pair):
    pair.create(vectors_config=VectorParams(size=4, distance=Distance.COSINE))
    rng = random.Random(1)
    ids = [1, 2, 3, str(uuid.UUID(int=rng.getrandbits(128)))]
    batch = models.Batch(ids=ids, vectors=[rand_vec(rng, 4) for _ in ids], payloads=[{"k": i} for i in range(4)])
    a, e = pair.both("upsert", batch)
    assert a.status == models.UpdateStatus.COMPLETED
    pts = seed_points(rng, 10, 4, start=100, uuids=True)
    a, _ = pair.both("upsert", pts)
    assert a.status == models.UpdateStatus.COMPLETED
    assert pair.count() == 14
    all_ids = ids + [p.id for p in pts]
    pair.retrieve(all_ids, with_vectors=True)
    pair.scroll_all(with_vectors=True)
    # overwrite an existing point: payload and vector replaced
    pair.both("upsert", [models.PointStruct(id=2, vector=[0.0, 1.0, 0.0, 0.0], payload={"new": True})])
    pair.retrieve([2], with_vectors=True)
    assert pair.count() == 14


def test_retrieve_raw_and_missing_point(pair, server):
    pair.create(vectors_config=VectorParams(size=2, distance=Distance.EUCLID))
    uid = str(uuid.uuid4())
    pair.both("upsert", [
        models.PointStruct(id=42, vector=[1.0, 2.0], payload={"a": 1}),
        models.PointStruct(id=uid, vector=[3.0, 4.0], payload={"b": "x"}),
    ])
    r = requests.get(f"{server.url}/collections/{pair.name}/points/42", timeout=10)
    res = assert_ok_response(r, "GET point")["result"]
    assert res["id"] == 42 and res["payload"] == {"a": 1} and res["vector"] == [1.0, 2.0], res
    r = requests.get(f"{server.url}/collections/{pair.name}/points/{uid}", timeout=10)
    res = assert_ok_response(r, "GET uuid point")["result"]
    assert res["id"] == uid and res["payload"] == {"b": "x"}, res
    r = requests.get(f"{server.url}/collections/{pair.name}/points/43", timeout=10)
    assert_error_response(r, 404, "GET missing point")
    # retrieve skips missing ids
    pair.retrieve([42, 43, uid], with_vectors=True)


def test_delete_points_by_ids_and_filter(pair):
    pair.create(vectors_config=VectorParams(size=3, distance=Distance.MANHATTAN))
    rng = random.Random(2)
    pts = seed_points(rng, 30, 3, uuids=True)
    pair.both("upsert", pts)
    a, _ = pair.both("delete", models.PointIdsList(points=[pts[1].id, pts[3].id, pts[0].id, 999]))
    assert a.status == models.UpdateStatus.COMPLETED
    assert pair.count() == 27
    flt = models.Filter(must=[models.FieldCondition(key="city", match=models.MatchValue(value="London"))])
    pair.both("delete", models.FilterSelector(filter=flt))
    assert pair.count(count_filter=flt) == 0
    pair.count()
    pair.scroll_all(with_vectors=True)


def test_payload_operations(pair):
    pair.create(vectors_config=VectorParams(size=2, distance=Distance.DOT))
    rng = random.Random(3)
    pair.both("upsert", seed_points(rng, 12, 2))
    ids = [1, 2, 3]
    a, _ = pair.both("set_payload", {"color": "red", "n": 5}, points=ids)
    assert a.status == models.UpdateStatus.COMPLETED
    pair.retrieve(list(range(1, 13)))
    # nested path via key
    pair.both("set_payload", {"extra": 1, "name": "renamed"}, points=[4, 5], key="nested")
    pair.retrieve([4, 5, 6])
    pair.both("set_payload", {"deep": True}, points=[6], key="nested.sub")
    pair.retrieve([6])
    # by filter
    flt = models.Filter(must=[models.FieldCondition(key="group", match=models.MatchValue(value="g1"))])
    pair.both("set_payload", {"flag": "g1"}, points=models.FilterSelector(filter=flt))
    pair.scroll_all()
    pair.both("overwrite_payload", {"only": "this"}, points=[7, 8])
    pair.retrieve([7, 8])
    pair.both("delete_payload", ["city", "price", "nested.name"], points=[9, 10])
    pair.retrieve([9, 10])
    pair.both("clear_payload", models.PointIdsList(points=[11]))
    pair.retrieve([11, 12])
    pair.scroll_all()


def test_update_and_delete_vectors(pair):
    pair.create(
        vectors_config={"a": VectorParams(size=3, distance=Distance.COSINE), "b": VectorParams(size=2, distance=Distance.EUCLID)},
        sparse_vectors_config={"s": models.SparseVectorParams()},
    )
    rng = random.Random(4)
    pts = [
        models.PointStruct(
            id=i,
            vector={"a": rand_vec(rng, 3), "b": rand_vec(rng, 2),
                    "s": models.SparseVector(indices=[i, i + 1], values=[0.5, 0.25])},
            payload={"i": i},
        )
        for i in range(1, 9)
    ]
    pair.both("upsert", pts)
    a, _ = pair.both("update_vectors", [
        models.PointVectors(id=1, vector={"a": [0.1, 0.2, 0.3]}),
        models.PointVectors(id=2, vector={"b": [5.0, 6.0], "s": models.SparseVector(indices=[7], values=[1.5])}),
    ])
    assert a.status == models.UpdateStatus.COMPLETED
    pair.retrieve([1, 2, 3], with_vectors=True)
    pair.both("delete_vectors", ["b"], points=[3, 4])
    pair.both("delete_vectors", ["s"], points=models.FilterSelector(filter=models.Filter(must=[models.HasIdCondition(has_id=[5])])))
    pair.retrieve(list(range(1, 9)), with_vectors=True)
    # point without "b" is not returned by a search on "b"
    pair.query(query=[0.0, 0.0], using="b", limit=10, with_vectors=True)
    pair.query(query=models.SparseVector(indices=list(range(12)), values=[1.0 + k / 10 for k in range(12)]), using="s", limit=10)
    pair.retrieve(list(range(1, 9)), with_vectors=["a"])


def test_batch_update_points(pair):
    pair.create(vectors_config=VectorParams(size=3, distance=Distance.EUCLID))
    rng = random.Random(6)
    ops = [
        models.UpsertOperation(upsert=models.PointsList(points=seed_points(rng, 10, 3))),
        models.UpsertOperation(upsert=models.PointsBatch(batch=models.Batch(ids=[50, 51], vectors=[rand_vec(rng, 3), rand_vec(rng, 3)]))),
        models.DeleteOperation(delete=models.PointIdsList(points=[2])),
        models.SetPayloadOperation(set_payload=models.SetPayload(payload={"x": 1}, points=[3, 4])),
        models.OverwritePayloadOperation(overwrite_payload=models.SetPayload(payload={"y": 2}, points=[5])),
        models.DeletePayloadOperation(delete_payload=models.DeletePayload(keys=["city"], points=[6])),
        models.ClearPayloadOperation(clear_payload=models.PointIdsList(points=[7])),
        models.UpdateVectorsOperation(update_vectors=models.UpdateVectors(points=[models.PointVectors(id=8, vector=[9.0, 9.0, 9.0])])),
        models.DeleteOperation(delete=models.FilterSelector(filter=models.Filter(must=[models.FieldCondition(key="i", match=models.MatchValue(value=9))]))),
    ]
    a, e = pair.both("batch_update_points", ops)
    assert len(a) == len(ops) and all(r.status == models.UpdateStatus.COMPLETED for r in a), a
    pair.scroll_all(with_vectors=True)
    pair.count()


def test_scroll_pagination(pair):
    pair.create(vectors_config=VectorParams(size=2, distance=Distance.DOT))
    rng = random.Random(8)
    pts = seed_points(rng, 57, 2, uuids=True)
    pair.both("upsert", pts)
    expected = sorted((norm_id(p.id) for p in pts), key=id_key)
    seen = []
    offset_s = offset_m = None
    for _ in range(20):
        a, offset_s = pair.s.scroll(pair.name, limit=10, offset=offset_s)
        e, offset_m = pair.m.scroll(pair.name, limit=10, offset=offset_m)
        assert_points_match(a, e, ctx="scroll page", scores=False)
        assert norm_id(offset_s) == norm_id(offset_m) if offset_s is not None or offset_m is not None else True, (offset_s, offset_m)
        seen.extend(norm_id(p.id) for p in a)
        if offset_s is None:
            break
    assert seen == expected
    # filtered pagination
    flt = models.Filter(must_not=[models.FieldCondition(key="city", match=models.MatchValue(value="Berlin"))])
    a, off = pair.s.scroll(pair.name, scroll_filter=flt, limit=7)
    e, off_m = pair.m.scroll(pair.name, scroll_filter=flt, limit=7)
    assert_points_match(a, e, scores=False)
    assert norm_id(off) == norm_id(off_m)


def test_scroll_order_by(pair):
    pair.create(vectors_config=VectorParams(size=2, distance=Distance.DOT))
    rng = random.Random(9)
    pts = seed_points(rng, 25, 2)  # "price" values are distinct random floats
    pair.both("upsert", pts)
    pair.s.create_payload_index(pair.name, "price", field_schema=models.PayloadSchemaType.FLOAT)
    for direction in (models.Direction.ASC, models.Direction.DESC):
        ob = models.OrderBy(key="price", direction=direction)
        a, _ = pair.s.scroll(pair.name, limit=10, order_by=ob)
        e, _ = pair.m.scroll(pair.name, limit=10, order_by=ob)
        assert_points_match(a, e, ctx=f"order_by {direction}", scores=False)
    a, _ = pair.s.scroll(pair.name, limit=100, order_by="price")
    prices = [p.payload["price"] for p in a]
    assert prices == sorted(prices) and len(prices) == 25
    ob = models.OrderBy(key="price", direction=models.Direction.ASC, start_from=50.0)
    a, _ = pair.s.scroll(pair.name, limit=100, order_by=ob)
    e, _ = pair.m.scroll(pair.name, limit=100, order_by=ob)
    assert_points_match(a, e, ctx="order_by start_from", scores=False)


def test_count_exact_with_filter(pair):
    pair.create(vectors_config=VectorParams(size=2, distance=Distance.DOT))
    rng = random.Random(10)
    pair.both("upsert", seed_points(rng, 40, 2))
    assert pair.count() == 40
    pair.count(count_filter=models.Filter(must=[models.FieldCondition(key="price", range=models.Range(gte=20, lt=70))]))
    pair.count(count_filter=models.Filter(should=[
        models.FieldCondition(key="city", match=models.MatchValue(value="Tokyo")),
        models.FieldCondition(key="group", match=models.MatchValue(value="g0")),
    ]))


def test_wait_false_and_ordering(pair, server):
    pair.create(vectors_config=VectorParams(size=2, distance=Distance.DOT))
    rng = random.Random(12)
    pts = seed_points(rng, 30, 2)
    r = pair.s.upsert(pair.name, pts, wait=False)
    assert r.status in (models.UpdateStatus.ACKNOWLEDGED, models.UpdateStatus.COMPLETED)
    assert isinstance(r.operation_id, int)
    pair.m.upsert(pair.name, pts)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and pair.s.count(pair.name).count < 30:
        time.sleep(0.05)
    assert pair.s.count(pair.name).count == 30
    for ordering in (models.WriteOrdering.WEAK, models.WriteOrdering.MEDIUM, models.WriteOrdering.STRONG):
        more = seed_points(rng, 3, 2, start=1000 + 10 * len(ordering.value))
        r = pair.s.upsert(pair.name, more, wait=True, ordering=ordering)
        assert r.status == models.UpdateStatus.COMPLETED
        pair.m.upsert(pair.name, more)
    pair.scroll_all(with_vectors=True)
    # raw wait=true gives "completed", and operation ids increase
    r1 = requests.put(
        f"{server.url}/collections/{pair.name}/points?wait=true&ordering=strong",
        json={"points": [{"id": 5000, "vector": [1.0, 2.0]}]}, timeout=30,
    )
    res1 = assert_ok_response(r1, "raw upsert")["result"]
    assert res1["status"] == "completed"
    r2 = requests.put(
        f"{server.url}/collections/{pair.name}/points?wait=true",
        json={"points": [{"id": 5001, "vector": [1.0, 2.0]}]}, timeout=30,
    )
    res2 = assert_ok_response(r2, "raw upsert 2")["result"]
    assert res2["operation_id"] > res1["operation_id"]


# ---------------------------------------------------------------------------
# search / query
# ---------------------------------------------------------------------------


@pytest.fixture
def search_pair(pair):
    """A collection with named dense vectors, a sparse vector and varied payload."""
    pair.create(
        vectors_config={"img": VectorParams(size=6, distance=Distance.COSINE), "txt": VectorParams(size=4, distance=Distance.EUCLID)},
        sparse_vectors_config={"kw": models.SparseVectorParams()},
    )
    rng = random.Random(21)
    pts = []
    for i, p in enumerate(seed_points(rng, 60, 6, uuids=True)):
        idx = sorted(rng.sample(range(30), 5))
        p.vector = {
            "img": p.vector,
            "txt": rand_vec(rng, 4),
            "kw": models.SparseVector(indices=idx, values=[round(rng.uniform(0.05, 1), 5) for _ in idx]),
        }
        pts.append(p)
    pair.both("upsert", pts)
    pair.s.create_payload_index(pair.name, "price", field_schema=models.PayloadSchemaType.FLOAT)
    pair.points = pts
    pair.rng = rng
    return pair


def test_query_nearest_variants(search_pair):
    p, rng = search_pair, search_pair.rng
    q = rand_vec(rng, 6)
    p.query(query=q, using="img", limit=5)
    p.query(query=q, using="img", limit=5, with_payload=False, with_vectors=True)
    p.query(query=q, using="img", limit=5, with_payload=["city", "nested"], with_vectors=["txt"])
    p.query(query=q, using="img", limit=5, with_payload=models.PayloadSelectorExclude(exclude=["tags", "nested"]))
    p.query(query=q, using="img", limit=5, with_payload=models.PayloadSelectorInclude(include=["nested.level"]))
    p.query(query=q, using="img", limit=5, offset=3)
    p.query(query=q, using="img", limit=50, score_threshold=0.2)
    p.query(query=models.NearestQuery(nearest=q), using="img", limit=4)
    # Euclid: threshold means "distance below"
    qt = rand_vec(rng, 4)
    p.query(query=qt, using="txt", limit=50, score_threshold=1.5)
    # hnsw_ef on a tiny collection must still return the exact answer
    a = p.s.query_points(p.name, query=q, using="img", limit=5,
                         search_params=models.SearchParams(hnsw_ef=128)).points
    e = p.m.query_points(p.name, query=q, using="img", limit=5).points
    assert_points_match(a, e, "hnsw_ef=128")
    flt = models.Filter(must=[models.FieldCondition(key="city", match=models.MatchAny(any=["Paris", "Tokyo"]))])
    p.query(query=q, using="img", limit=10, query_filter=flt)


def test_query_sparse(search_pair):
    p, rng = search_pair, search_pair.rng
    sq = models.SparseVector(indices=list(range(30)), values=[round(rng.uniform(0.05, 1), 5) for _ in range(30)])
    p.query(query=sq, using="kw", limit=10, with_vectors=["kw"])
    p.query(query=models.SparseVector(indices=[3, 9], values=[1.0, 0.3]), using="kw", limit=100)


def test_query_by_point_id(search_pair):
    p = search_pair
    p.query(query=p.points[4].id, using="img", limit=6)
    p.query(query=p.points[3].id, using="txt", limit=6)  # UUID id


def test_query_prefetch_and_fusion(search_pair):
    p, rng = search_pair, search_pair.rng
    q_img, q_txt = rand_vec(rng, 6), rand_vec(rng, 4)
    sq = models.SparseVector(indices=list(range(0, 30, 3)), values=[round(rng.uniform(0.05, 1), 5) for _ in range(10)])
    prefetch = [
        models.Prefetch(query=q_img, using="img", limit=8),
        models.Prefetch(query=q_txt, using="txt", limit=8),
        models.Prefetch(query=sq, using="kw", limit=8),
    ]
    for fusion in (models.Fusion.RRF, models.Fusion.DBSF):
        kw = dict(prefetch=prefetch, query=models.FusionQuery(fusion=fusion), limit=30)
        a = p.s.query_points(p.name, **kw).points
        e = p.m.query_points(p.name, **kw).points
        assert_fused_match(a, e, ctx=f"fusion {fusion}")
    # prefetch then rescore with another vector
    kw = dict(prefetch=models.Prefetch(query=q_txt, using="txt", limit=20), query=q_img, using="img", limit=5)
    p.query(**kw)
    # prefetch with filter, nested prefetch
    flt = models.Filter(must=[models.FieldCondition(key="price", range=models.Range(gt=30))])
    kw = dict(
        prefetch=models.Prefetch(
            prefetch=models.Prefetch(query=q_img, using="img", limit=30, filter=flt), query=q_txt, using="txt", limit=10
        ),
        query=q_img, using="img", limit=4,
    )
    p.query(**kw)


def test_query_order_by(search_pair):
    p = search_pair
    for d in (models.Direction.ASC, models.Direction.DESC):
        a = p.s.query_points(p.name, query=models.OrderByQuery(order_by=models.OrderBy(key="price", direction=d)), limit=7).points
        e = p.m.query_points(p.name, query=models.OrderByQuery(order_by=models.OrderBy(key="price", direction=d)), limit=7).points
        assert_points_match(a, e, ctx=f"order_by query {d}", scores=False)


def test_query_batch(search_pair):
    p, rng = search_pair, search_pair.rng
    reqs = [
        models.QueryRequest(query=rand_vec(rng, 6), using="img", limit=3, with_payload=True, params=EXACT),
        models.QueryRequest(query=rand_vec(rng, 4), using="txt", limit=4, filter=models.Filter(
            must=[models.FieldCondition(key="group", match=models.MatchValue(value="g2"))]), params=EXACT),
        models.QueryRequest(query=p.points[0].id, using="img", limit=2, params=EXACT),
    ]
    a = p.s.query_batch_points(p.name, reqs)
    e = p.m.query_batch_points(p.name, reqs)
    assert len(a) == len(e) == 3
    for i, (x, y) in enumerate(zip(a, e)):
        assert_points_match(x.points, y.points, ctx=f"batch[{i}]")


def test_query_groups(search_pair):
    p, rng = search_pair, search_pair.rng
    q = rand_vec(rng, 6)
    for group_by in ("group", "city"):
        a = p.s.query_points_groups(p.name, group_by=group_by, query=q, using="img", limit=3, group_size=2,
                                    search_params=EXACT)
        e = p.m.query_points_groups(p.name, group_by=group_by, query=q, using="img", limit=3, group_size=2)
        assert [g.id for g in a.groups] == [g.id for g in e.groups], (a, e)
        for ga, ge in zip(a.groups, e.groups):
            assert_points_match(ga.hits, ge.hits, ctx=f"group {ga.id}")


def _raw(server_url: str, path: str, body: dict) -> dict:
    r = requests.post(f"{server_url}{path}", json=body, timeout=30)
    return assert_ok_response(r, f"POST {path} {body}")["result"]


def _scored(objs) -> list:
    return [models.ScoredPoint(**o) for o in objs]


def test_raw_search_and_batch(search_pair, server):
    p, rng = search_pair, search_pair.rng
    q = rand_vec(rng, 6)
    res = _raw(server.url, f"/collections/{p.name}/points/search",
               {"vector": {"name": "img", "vector": q}, "limit": 5, "with_payload": True, "params": {"exact": True}})
    e = p.m.query_points(p.name, query=q, using="img", limit=5).points
    assert_points_match(_scored(res), e, "raw /points/search")
    flt = {"must": [{"key": "price", "range": {"lt": 50}}]}
    reqs = [
        {"vector": {"name": "img", "vector": q}, "limit": 3, "with_payload": True, "params": {"exact": True}},
        {"vector": {"name": "txt", "vector": rand_vec(rng, 4)}, "limit": 4, "filter": flt, "with_payload": True,
         "params": {"exact": True}, "offset": 1},
    ]
    res = _raw(server.url, f"/collections/{p.name}/points/search/batch", {"searches": reqs})
    assert len(res) == 2
    e0 = p.m.query_points(p.name, query=q, using="img", limit=3).points
    e1 = p.m.query_points(p.name, query=reqs[1]["vector"]["vector"], using="txt", limit=4, offset=1,
                          query_filter=models.Filter(**flt)).points
    assert_points_match(_scored(res[0]), e0, "search batch 0")
    assert_points_match(_scored(res[1]), e1, "search batch 1")


def test_raw_search_unnamed(pair, server):
    pair.create(vectors_config=VectorParams(size=3, distance=Distance.DOT))
    rng = random.Random(31)
    pair.both("upsert", seed_points(rng, 20, 3))
    q = rand_vec(rng, 3)
    res = _raw(server.url, f"/collections/{pair.name}/points/search",
               {"vector": q, "limit": 4, "with_payload": ["city"], "with_vector": True, "score_threshold": -0.5})
    e = pair.m.query_points(pair.name, query=q, limit=4, with_payload=["city"], with_vectors=True,
                            score_threshold=-0.5).points
    assert_points_match(_scored(res), e, "raw unnamed search")


def test_raw_recommend(search_pair, server):
    p = search_pair
    pos = [p.points[1].id, p.points[2].id]
    neg = [p.points[7].id]
    res = _raw(server.url, f"/collections/{p.name}/points/recommend",
               {"positive": pos, "negative": neg, "using": "img", "limit": 6, "with_payload": True,
                "params": {"exact": True}})
    e = p.m.query_points(p.name, query=models.RecommendQuery(recommend=models.RecommendInput(
        positive=pos, negative=neg, strategy=models.RecommendStrategy.AVERAGE_VECTOR)), using="img", limit=6).points
    assert_points_match(_scored(res), e, "raw recommend")
    # batch
    body = {"searches": [
        {"positive": pos, "using": "img", "limit": 3, "with_payload": True, "params": {"exact": True}},
        {"positive": [p.points[5].id], "negative": neg, "using": "txt", "limit": 3, "with_payload": True,
         "strategy": "best_score", "params": {"exact": True}},
    ]}
    res = _raw(server.url, f"/collections/{p.name}/points/recommend/batch", body)
    e0 = p.m.query_points(p.name, query=models.RecommendQuery(recommend=models.RecommendInput(positive=pos)),
                          using="img", limit=3).points
    e1 = p.m.query_points(p.name, query=models.RecommendQuery(recommend=models.RecommendInput(
        positive=[p.points[5].id], negative=neg, strategy=models.RecommendStrategy.BEST_SCORE)),
        using="txt", limit=3).points
    assert_points_match(_scored(res[0]), e0, "recommend batch 0")
    assert_points_match(_scored(res[1]), e1, "recommend batch 1")
    # recommend through query_points API
    kw = dict(query=models.RecommendQuery(recommend=models.RecommendInput(positive=pos, negative=neg)), using="img", limit=5)
    p.query(**kw)


def test_raw_search_groups(search_pair, server):
    p, rng = search_pair, search_pair.rng
    q = rand_vec(rng, 6)
    res = _raw(server.url, f"/collections/{p.name}/points/search/groups",
               {"vector": {"name": "img", "vector": q}, "group_by": "group", "limit": 3, "group_size": 2,
                "with_payload": True, "params": {"exact": True}})
    e = p.m.query_points_groups(p.name, group_by="group", query=q, using="img", limit=3, group_size=2)
    assert [g["id"] for g in res["groups"]] == [g.id for g in e.groups], res
    for ga, ge in zip(res["groups"], e.groups):
        assert_points_match(_scored(ga["hits"]), ge.hits, ctx=f"group {ge.id}")


# ---------------------------------------------------------------------------
# filters
# ---------------------------------------------------------------------------

FC = models.FieldCondition
MV = models.MatchValue


def _filters():
    f = {}
    f["match_keyword"] = models.Filter(must=[FC(key="city", match=MV(value="Berlin"))])
    f["match_int"] = models.Filter(must=[FC(key="count", match=MV(value=3))])
    f["match_bool"] = models.Filter(must=[FC(key="flag", match=MV(value=True))])
    f["match_any"] = models.Filter(must=[FC(key="tags", match=models.MatchAny(any=["red", "blue"]))])
    f["match_any_int"] = models.Filter(must=[FC(key="count", match=models.MatchAny(any=[1, 2, 7]))])
    f["match_except"] = models.Filter(must=[FC(key="city", match=models.MatchExcept(**{"except": ["Berlin", "Paris"]}))])
    f["match_text"] = models.Filter(must=[FC(key="desc", match=models.MatchText(text="quick fox"))])
    f["range_int"] = models.Filter(must=[FC(key="count", range=models.Range(gte=2, lt=6))])
    f["range_float"] = models.Filter(must=[FC(key="price", range=models.Range(gt=10.5, lte=60.25))])
    f["range_datetime"] = models.Filter(must=[FC(key="created", range=models.DatetimeRange(
        gte="2024-03-01T00:00:00Z", lt="2024-09-01T00:00:00Z"))])
    f["range_datetime_offset"] = models.Filter(must=[FC(key="created", range=models.DatetimeRange(
        gt="2024-05-01T10:00:00+02:00"))])
    f["has_id"] = models.Filter(must=[models.HasIdCondition(has_id=[1, 5, 9, 44, 1000])])
    f["is_empty"] = models.Filter(must=[models.IsEmptyCondition(is_empty=models.PayloadField(key="tags"))])
    f["is_null"] = models.Filter(must=[models.IsNullCondition(is_null=models.PayloadField(key="maybe"))])
    f["values_count"] = models.Filter(must=[FC(key="tags", values_count=models.ValuesCount(gte=2))])
    f["values_count_lt"] = models.Filter(must=[FC(key="tags", values_count=models.ValuesCount(lt=2))])
    f["geo_bbox"] = models.Filter(must=[FC(key="loc", geo_bounding_box=models.GeoBoundingBox(
        top_left=models.GeoPoint(lon=10.0, lat=55.0), bottom_right=models.GeoPoint(lon=20.0, lat=45.0)))])
    f["geo_radius"] = models.Filter(must=[FC(key="loc", geo_radius=models.GeoRadius(
        center=models.GeoPoint(lon=13.4, lat=52.5), radius=400_000.0))])
    f["nested"] = models.Filter(must=[models.NestedCondition(nested=models.Nested(key="items", filter=models.Filter(
        must=[FC(key="kind", match=MV(value="a")), FC(key="qty", range=models.Range(gte=3))])))])
    f["nested_path_dot"] = models.Filter(must=[FC(key="meta.score", range=models.Range(gte=0.5))])
    f["nested_path_array"] = models.Filter(must=[FC(key="items[].kind", match=MV(value="b"))])
    f["nested_path_deep"] = models.Filter(must=[FC(key="meta.owner.name", match=MV(value="ann"))])
    f["should"] = models.Filter(should=[FC(key="city", match=MV(value="Tokyo")), FC(key="flag", match=MV(value=False))])
    f["must_not"] = models.Filter(must_not=[FC(key="city", match=MV(value="London"))])
    f["min_should"] = models.Filter(min_should=models.MinShould(conditions=[
        FC(key="city", match=MV(value="Paris")), FC(key="flag", match=MV(value=True)),
        FC(key="count", range=models.Range(gte=5))], min_count=2))
    f["combined"] = models.Filter(
        must=[FC(key="price", range=models.Range(gte=5))],
        should=[FC(key="tags", match=models.MatchAny(any=["green"])), models.HasIdCondition(has_id=[2, 3, 4])],
        must_not=[models.IsNullCondition(is_null=models.PayloadField(key="maybe"))],
    )
    f["nested_filter_in_filter"] = models.Filter(must=[models.Filter(should=[
        FC(key="count", match=MV(value=0)), models.Filter(must=[FC(key="flag", match=MV(value=True))])])])
    f["missing_key"] = models.Filter(must=[FC(key="does_not_exist", match=MV(value="x"))])
    f["must_not_missing"] = models.Filter(must_not=[FC(key="does_not_exist", match=MV(value="x"))])
    return f


FILTERS = _filters()
COLORS = ["red", "blue", "green", "black"]
WORDS = ["the", "quick", "brown", "fox", "jumps", "lazy", "dog"]


@pytest.fixture(scope="module")
def filter_pair(server):
    s = server.client()
    m = QdrantClient(":memory:")
    name = f"filters_{uuid.uuid4().hex[:8]}"
    p = Pair(s, m, name)
    p.create(vectors_config=VectorParams(size=4, distance=Distance.DOT))
    rng = random.Random(99)
    pts = []
    for i in range(1, 81):
        payload = {
            "city": CITIES[i % 5],
            "count": i % 9,
            "price": round(rng.uniform(0, 100), 3),
            "flag": bool(i % 3 == 0),
            "created": f"2024-{(i % 12) + 1:02d}-{(i % 27) + 1:02d}T{i % 24:02d}:{i % 60:02d}:00Z",
            "desc": " ".join(rng.choice(WORDS) for _ in range(4)),
            "loc": {"lon": round(rng.uniform(0, 30), 4), "lat": round(rng.uniform(40, 60), 4)},
            "meta": {"score": round(rng.random(), 3), "owner": {"name": rng.choice(["ann", "bob"])}},
            "items": [{"kind": rng.choice("abc"), "qty": rng.randint(0, 5)} for _ in range(rng.randint(0, 3))],
        }
        k = i % 4
        if k == 0:
            payload["tags"] = []
        elif k == 1:
            payload["tags"] = rng.sample(COLORS, rng.randint(1, 3))
        elif k == 2:
            payload["tags"] = rng.choice(COLORS)
        # k == 3: key missing
        if i % 5 == 0:
            payload["maybe"] = None
        elif i % 5 == 1:
            payload["maybe"] = [None]
        elif i % 5 == 2:
            payload["maybe"] = "v"
        if i % 11 == 0:
            payload["count"] = [i % 9, (i + 1) % 9]
        if i % 13 == 0:
            del payload["city"]
        pts.append(models.PointStruct(id=i, vector=rand_vec(rng, 4), payload=payload))
    p.both("upsert", pts)
    yield p
    s.delete_collection(name)
    s.close()
    m.close()


@pytest.mark.parametrize("fname", sorted(FILTERS))
def test_filter(filter_pair, fname):
    flt = FILTERS[fname]
    p = filter_pair
    n = p.count(count_filter=flt)
    p.scroll_all(scroll_filter=flt)
    p.query(query=[0.3, -0.2, 0.9, 0.1], query_filter=flt, limit=100, ctx=fname)
    if fname not in ("missing_key",):
        assert n > 0 or fname == "has_id", f"filter {fname} selects nothing: data set does not exercise it"


def test_filter_with_payload_indexes(filter_pair):
    """Same filters once indexes exist on the server must give the same answers."""
    p = filter_pair
    for field, schema in [("city", models.PayloadSchemaType.KEYWORD), ("count", models.PayloadSchemaType.INTEGER),
                          ("price", models.PayloadSchemaType.FLOAT), ("flag", models.PayloadSchemaType.BOOL),
                          ("created", models.PayloadSchemaType.DATETIME), ("loc", models.PayloadSchemaType.GEO),
                          ("tags", models.PayloadSchemaType.KEYWORD)]:
        p.s.create_payload_index(p.name, field, field_schema=schema)
    try:
        for fname, flt in sorted(FILTERS.items()):
            if fname == "match_text":
                continue  # a text index would change tokenization semantics; no index on desc here
            a = p.s.count(p.name, count_filter=flt, exact=True).count
            e = p.m.count(p.name, count_filter=flt, exact=True).count
            assert a == e, f"{fname} with indexes: {a} != {e}"
    finally:
        for field in ("city", "count", "price", "flag", "created", "loc", "tags"):
            p.s.delete_payload_index(p.name, field)
