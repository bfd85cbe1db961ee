"""Qdrant v1.18.3 compatibility facts over raw HTTP (regression tests).

A. Field aliases Qdrant's REST layer accepts in request bodies.  Every test checks that the
   alias takes effect (the value is used / shows up under the canonical name), not merely
   that the request is not refused.  Aliases are serde aliases in Qdrant and therefore do
   not appear in the OpenAPI document; the canonical field names are checked against it.
B. Status codes and validation results as Qdrant gives them, plus the merge semantics of
   PATCH /collections/{name} for ``metadata`` and ``strict_mode_config``.

Errors are checked against the Qdrant error envelope {"status": {"error": str}, "time": num}.
"""

from __future__ import annotations

import math
import uuid

import pytest
import requests

from cluster_harness import Cluster
from helpers import assert_error_response, assert_ok_response

DIM = 4
N_POINTS = 10
HTTP_TIMEOUT = 30

# Qdrant answers an update-vectors point with an empty named-vector map with a *validation*
# error (422, "must specify vectors to update for point"), see section B3 below.
EMPTY_VECTOR_UPDATE_STATUS = 422


def vec(i: int) -> list[float]:
    return [round(0.1 * i, 4), round(1 - 0.05 * i, 4), 0.5, round(0.2 * (i % 3), 4)]


def group_of(i: int) -> int:
    return i % 3 + 1  # groups 1, 2, 3


QUERY = [1.0, 0.0, 0.0, 0.0]


def uname(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def call(server, method: str, path: str, body=None) -> requests.Response:
    return requests.request(method, f"{server.url}{path}", json=body, timeout=HTTP_TIMEOUT)


def ok(server, method: str, path: str, body=None, ctx: str = "") -> dict:
    return assert_ok_response(call(server, method, path, body), ctx or f"{method} {path} {body}")


def get_config(server, name: str) -> dict:
    return ok(server, "GET", f"/collections/{name}")["result"]["config"]


def vectors_close(a, b, tol: float = 1e-4) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return set(a) == set(b) and all(vectors_close(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(math.isclose(x, y, abs_tol=tol) for x, y in zip(a, b))
    return False


@pytest.fixture
def fresh(server):
    """Factory for throw-away collections, dropped after the test."""
    made: list[str] = []

    def _make(body: dict | None = None, prefix: str = "compat") -> str:
        name = uname(prefix)
        body = body if body is not None else {"vectors": {"size": DIM, "distance": "Dot"}}
        ok(server, "PUT", f"/collections/{name}", body, f"create {name} {body}")
        made.append(name)
        return name

    yield _make
    for name in made:
        call(server, "DELETE", f"/collections/{name}")


@pytest.fixture(scope="module")
def coll(server):
    """Unnamed 4-d Dot collection, N_POINTS points with payload g in {1,2,3}; read-only."""
    name = uname("compat_ro")
    ok(server, "PUT", f"/collections/{name}", {"vectors": {"size": DIM, "distance": "Dot"}})
    points = [{"id": i, "vector": vec(i), "payload": {"g": group_of(i), "i": i}} for i in range(1, N_POINTS + 1)]
    ok(server, "PUT", f"/collections/{name}/points?wait=true", {"points": points})
    yield name
    call(server, "DELETE", f"/collections/{name}")


@pytest.fixture(scope="module")
def lookup_coll(server):
    """Collection whose point ids are the group ids of ``coll`` (for with_lookup)."""
    name = uname("compat_lk")
    ok(server, "PUT", f"/collections/{name}", {"vectors": {"size": DIM, "distance": "Dot"}})
    points = [{"id": g, "vector": [float(g), 0.25, 0.5, 0.75], "payload": {"group": g}} for g in (1, 2, 3)]
    ok(server, "PUT", f"/collections/{name}/points?wait=true", {"points": points})
    yield name
    call(server, "DELETE", f"/collections/{name}")


@pytest.fixture(scope="module")
def named_coll(server):
    """Collection with named vectors ``image`` (4-d) and ``text`` (3-d); read-only."""
    name = uname("compat_named")
    ok(server, "PUT", f"/collections/{name}", {"vectors": {"image": {"size": 4, "distance": "Dot"},
                                                           "text": {"size": 3, "distance": "Dot"}}})
    points = [{"id": i, "vector": {"image": vec(i), "text": vec(i)[:3]}, "payload": {"i": i}} for i in range(1, 6)]
    ok(server, "PUT", f"/collections/{name}/points?wait=true", {"points": points})
    yield name
    call(server, "DELETE", f"/collections/{name}")


# ---------------------------------------------------------------------------------------------
# A1. `top` for `limit` (SearchRequest, RecommendRequest and their batches).
#     Groups requests (SearchGroupsRequest / RecommendGroupsRequest) have no such alias: there
#     `limit` is the number of groups and Qdrant does not accept `top` for it.
#     (DiscoverRequest has the alias too, but the discover endpoints are not covered here.)
# ---------------------------------------------------------------------------------------------

def _single(kind: str, n_key: str, n: int) -> dict:
    if kind == "search":
        return {"vector": QUERY, n_key: n, "with_payload": False}
    if kind == "recommend":
        return {"positive": [1], "negative": [2], n_key: n}
    raise AssertionError(kind)


TOP_CASES = [
    ("search", "/points/search", False),
    ("recommend", "/points/recommend", False),
    ("search", "/points/search/batch", True),
    ("recommend", "/points/recommend/batch", True),
]


@pytest.mark.parametrize("kind,path,batch", TOP_CASES, ids=[c[1].strip("/").replace("/", "_") for c in TOP_CASES])
def test_top_alias_for_limit(server, coll, kind, path, batch):
    url = f"/collections/{coll}{path}"
    if batch:
        body_top = {"searches": [_single(kind, "top", 3), _single(kind, "top", 2)]}
        body_limit = {"searches": [_single(kind, "limit", 3), _single(kind, "limit", 2)]}
    else:
        body_top = _single(kind, "top", 3)
        body_limit = _single(kind, "limit", 3)
    got = ok(server, "POST", url, body_top, f"{path} with top")["result"]
    want = ok(server, "POST", url, body_limit, f"{path} with limit")["result"]
    if batch:
        assert [len(r) for r in got] == [3, 2], f"{path}: top must limit each batch entry: {got}"
        assert [[p["id"] for p in r] for r in got] == [[p["id"] for p in r] for r in want], (got, want)
    else:
        assert len(got) == 3, f"{path}: top=3 must return exactly 3 hits of {N_POINTS}: {got}"
        assert [p["id"] for p in got] == [p["id"] for p in want], (got, want)


# ---------------------------------------------------------------------------------------------
# A2. `with_vectors` where the field is `with_vector` (search, recommend, query, scroll,
#     retrieve, search/recommend groups, batches) and `with_vector` where the field is
#     `with_vectors` (WithLookup in groups).  The vectors must actually come back.
# ---------------------------------------------------------------------------------------------

def _points_of(kind: str, result) -> list[dict]:
    if kind in ("query", "scroll"):
        return result["points"]
    if kind in ("search_groups", "recommend_groups"):
        return [h for g in result["groups"] for h in g["hits"]]
    if kind in ("search_batch", "recommend_batch"):
        return [p for r in result for p in r]
    return result


WITH_VECTORS_CASES = {
    "search": ("/points/search", {"vector": QUERY, "limit": 3}),
    "recommend": ("/points/recommend", {"positive": [1], "limit": 3}),
    "query": ("/points/query", {"query": QUERY, "limit": 3}),
    "scroll": ("/points/scroll", {"limit": 3}),
    "retrieve": ("/points", {"ids": [1, 2, 3]}),
    "search_groups": ("/points/search/groups", {"vector": QUERY, "group_by": "g", "group_size": 2, "limit": 3}),
    "recommend_groups": ("/points/recommend/groups", {"positive": [1], "group_by": "g", "group_size": 2, "limit": 3}),
    "search_batch": ("/points/search/batch", None),
    "recommend_batch": ("/points/recommend/batch", None),
}


@pytest.mark.parametrize("kind", list(WITH_VECTORS_CASES))
def test_with_vectors_alias_returns_vectors(server, coll, kind):
    path, body = WITH_VECTORS_CASES[kind]
    if kind == "search_batch":
        body = {"searches": [{"vector": QUERY, "limit": 2, "with_vectors": True}]}
    elif kind == "recommend_batch":
        body = {"searches": [{"positive": [1], "limit": 2, "with_vectors": True}]}
    else:
        body = dict(body, with_vectors=True)
    result = ok(server, "POST", f"/collections/{coll}{path}", body, f"{kind} with_vectors")["result"]
    points = _points_of(kind, result)
    assert points, f"{kind}: no points returned: {result}"
    for p in points:
        assert vectors_close(p.get("vector"), vec(p["id"])), (
            f"{kind}: with_vectors=true must return the stored vector of {p['id']}: {p}")


@pytest.mark.parametrize("kind", ["search_groups", "recommend_groups"])
def test_with_vector_alias_in_with_lookup(server, coll, lookup_coll, kind):
    path, body = WITH_VECTORS_CASES[kind]
    body = dict(body, with_lookup={"collection": lookup_coll, "with_vector": True})
    result = ok(server, "POST", f"/collections/{coll}{path}", body, f"{kind} with_lookup.with_vector")["result"]
    groups = result["groups"]
    assert groups, result
    for g in groups:
        lk = g.get("lookup")
        assert lk is not None and lk["id"] == g["id"], f"{kind}: lookup missing for group {g}"
        assert vectors_close(lk.get("vector"), [float(g["id"]), 0.25, 0.5, 0.75]), (
            f"{kind}: with_lookup.with_vector=true must return the looked-up vector: {g}")


# ---------------------------------------------------------------------------------------------
# A3. `vectors` for `vector` in a point (PointStruct; also PointVectors of update-vectors).
# ---------------------------------------------------------------------------------------------

def test_vectors_alias_in_upsert_unnamed(server, fresh):
    name = fresh()
    ok(server, "PUT", f"/collections/{name}/points?wait=true",
       {"points": [{"id": 7, "vectors": [0.1, 0.2, 0.3, 0.4], "payload": {"a": 1}}]}, "upsert with vectors")
    got = ok(server, "POST", f"/collections/{name}/points", {"ids": [7], "with_vector": True})["result"]
    assert len(got) == 1 and vectors_close(got[0]["vector"], [0.1, 0.2, 0.3, 0.4]), got
    assert got[0]["payload"] == {"a": 1}, got


def test_vectors_alias_in_upsert_named(server, fresh):
    name = fresh({"vectors": {"image": {"size": 4, "distance": "Dot"}, "text": {"size": 3, "distance": "Dot"}}})
    ok(server, "PUT", f"/collections/{name}/points?wait=true",
       {"points": [{"id": 8, "vectors": {"image": [1, 2, 3, 4], "text": [5, 6, 7]}}]}, "upsert named with vectors")
    got = ok(server, "GET", f"/collections/{name}/points/8")["result"]
    assert vectors_close(got["vector"], {"image": [1, 2, 3, 4], "text": [5, 6, 7]}), got


def test_vectors_alias_in_update_vectors(server, fresh):
    name = fresh({"vectors": {"image": {"size": 4, "distance": "Dot"}, "text": {"size": 3, "distance": "Dot"}}})
    ok(server, "PUT", f"/collections/{name}/points?wait=true",
       {"points": [{"id": 9, "vector": {"image": [1, 1, 1, 1], "text": [1, 1, 1]}}]})
    ok(server, "PUT", f"/collections/{name}/points/vectors?wait=true",
       {"points": [{"id": 9, "vectors": {"text": [2, 3, 4]}}]}, "update vectors with `vectors`")
    got = ok(server, "GET", f"/collections/{name}/points/9")["result"]
    assert vectors_close(got["vector"], {"image": [1, 1, 1, 1], "text": [2, 3, 4]}), got


# ---------------------------------------------------------------------------------------------
# A4. `quantization` for `quantization_config` (CreateCollection, UpdateCollection, VectorParams)
# ---------------------------------------------------------------------------------------------

SCALAR = {"scalar": {"type": "int8", "quantile": 0.99, "always_ram": True}}


def _assert_scalar(qc, ctx):
    assert isinstance(qc, dict) and isinstance(qc.get("scalar"), dict), f"{ctx}: quantization not set: {qc}"
    assert qc["scalar"].get("type") == "int8", f"{ctx}: {qc}"
    assert math.isclose(qc["scalar"].get("quantile", 0), 0.99, abs_tol=1e-6), f"{ctx}: {qc}"


def test_quantization_alias_on_create(server, fresh):
    name = fresh({"vectors": {"size": DIM, "distance": "Dot"}, "quantization": SCALAR})
    _assert_scalar(get_config(server, name).get("quantization_config"), "create with `quantization`")


def test_quantization_alias_on_update(server, fresh):
    name = fresh()
    assert get_config(server, name).get("quantization_config") is None
    ok(server, "PATCH", f"/collections/{name}", {"quantization": SCALAR}, "PATCH with `quantization`")
    _assert_scalar(get_config(server, name).get("quantization_config"), "PATCH with `quantization`")


def test_quantization_alias_in_vector_params(server, fresh):
    name = fresh({"vectors": {"size": DIM, "distance": "Dot", "quantization": SCALAR}})
    _assert_scalar(get_config(server, name)["params"]["vectors"].get("quantization_config"),
                   "VectorParams with `quantization`")


# ---------------------------------------------------------------------------------------------
# A5. `optimizer_config` for `optimizers_config` (create and PATCH).  GET shows the optimizer
#     settings under `optimizer_config` (CollectionConfig in the OpenAPI document).
# ---------------------------------------------------------------------------------------------

def test_optimizer_config_alias_on_create(server, fresh):
    name = fresh({"vectors": {"size": DIM, "distance": "Dot"}, "optimizer_config": {"indexing_threshold": 12345}})
    assert get_config(server, name)["optimizer_config"]["indexing_threshold"] == 12345


def test_optimizer_config_alias_on_update(server, fresh):
    name = fresh()
    ok(server, "PATCH", f"/collections/{name}", {"optimizer_config": {"indexing_threshold": 23456}},
       "PATCH with `optimizer_config`")
    assert get_config(server, name)["optimizer_config"]["indexing_threshold"] == 23456


# ---------------------------------------------------------------------------------------------
# A6. `*_kb` aliases inside optimizers_config / hnsw_config.
# ---------------------------------------------------------------------------------------------

KB_CASES = [
    # (request section, alias, GET section, canonical field, value)
    ("optimizers_config", "indexing_threshold_kb", "optimizer_config", "indexing_threshold", 11111),
    ("optimizers_config", "memmap_threshold_kb", "optimizer_config", "memmap_threshold", 22222),
    ("optimizers_config", "max_segment_size_kb", "optimizer_config", "max_segment_size", 33333),
    ("hnsw_config", "full_scan_threshold_kb", "hnsw_config", "full_scan_threshold", 4444),
]


@pytest.mark.parametrize("mode", ["create", "patch"])
@pytest.mark.parametrize("section,alias,out_section,canonical,value", KB_CASES, ids=[c[1] for c in KB_CASES])
def test_kb_aliases(server, fresh, mode, section, alias, out_section, canonical, value):
    base = {"vectors": {"size": DIM, "distance": "Dot"}}
    if mode == "create":
        name = fresh(dict(base, **{section: {alias: value}}))
    else:
        name = fresh(base)
        ok(server, "PATCH", f"/collections/{name}", {section: {alias: value}}, f"PATCH {section}.{alias}")
    got = get_config(server, name)[out_section]
    assert got.get(canonical) == value, f"{mode} {section}.{alias}={value}: GET {out_section} = {got}"
    assert alias not in got, f"alias {alias} must not be echoed under its own name: {got}"


# ---------------------------------------------------------------------------------------------
# A7. Two-letter (ISO 639-1 style) language codes for text-index stopwords.  Qdrant's Language
#     enum has aliases such as en/de/fr/es/ru/zh, plus "jp" for Japanese and "hi-en" for
#     Hinglish.  The index must be the same as with the full name (payload_schema params).
# ---------------------------------------------------------------------------------------------

LANG_CASES = [("en", "english"), ("de", "german"), ("fr", "french"), ("es", "spanish"),
              ("ru", "russian"), ("zh", "chinese"), ("jp", "japanese"), ("hi-en", "hinglish")]


def _text_index(server, name, field, stopwords):
    ok(server, "PUT", f"/collections/{name}/index?wait=true",
       {"field_name": field, "field_schema": {"type": "text", "stopwords": stopwords}},
       f"text index {field} stopwords={stopwords}")
    return ok(server, "GET", f"/collections/{name}")["result"]["payload_schema"][field]


@pytest.mark.parametrize("code,language", LANG_CASES, ids=[c[0] for c in LANG_CASES])
def test_stopwords_language_code(server, fresh, code, language):
    name = fresh()
    canonical = _text_index(server, name, "full", language)
    aliased = _text_index(server, name, "short", code)
    assert aliased == canonical, (
        f"stopwords {code!r} must give the same index as {language!r}:\n  {code}: {aliased}\n  {language}: {canonical}")
    assert canonical.get("params", {}).get("stopwords") == language, canonical


def test_stopwords_set_with_language_codes(server, fresh):
    name = fresh()
    aliased = _text_index(server, name, "short", {"languages": ["en", "de"], "custom": ["foo"]})
    canonical = _text_index(server, name, "full", {"languages": ["english", "german"], "custom": ["foo"]})
    sw = aliased.get("params", {}).get("stopwords")
    assert isinstance(sw, dict), aliased
    assert sorted(sw.get("languages") or []) == ["english", "german"], f"language codes not resolved: {aliased}"
    assert sw.get("custom") == ["foo"], aliased
    assert aliased == canonical, (aliased, canonical)


@pytest.mark.parametrize("stopwords", ["klingon", {"languages": ["xx"]}], ids=["string", "set"])
def test_stopwords_unknown_language_rejected(server, fresh, stopwords):
    """The language list is a closed enum (Language in the OpenAPI document): anything that is
    neither a language name nor one of its codes does not parse (400), and no index is made."""
    name = fresh()
    r = call(server, "PUT", f"/collections/{name}/index?wait=true",
             {"field_name": "t", "field_schema": {"type": "text", "stopwords": stopwords}})
    assert_error_response(r, 400, f"stopwords={stopwords!r}")
    assert "t" not in ok(server, "GET", f"/collections/{name}")["result"]["payload_schema"]


# ---------------------------------------------------------------------------------------------
# B1. Alias named like an existing collection: 409 Conflict.
# ---------------------------------------------------------------------------------------------

def test_alias_with_existing_collection_name_conflicts(server, fresh):
    a = fresh()
    b = fresh()
    r = call(server, "POST", "/collections/aliases",
             {"actions": [{"create_alias": {"alias_name": b, "collection_name": a}}]})
    assert_error_response(r, 409, "alias named like an existing collection")
    aliases = ok(server, "GET", "/aliases")["result"]["aliases"]
    assert all(x["alias_name"] != b for x in aliases), aliases


# ---------------------------------------------------------------------------------------------
# B2. Shard transfer from a peer to itself: 422 validation error (JSON-body validation runs
#     before the operation, so a standalone node answers the same as a cluster peer).
# ---------------------------------------------------------------------------------------------

TRANSFER_OPS = ["move_shard", "replicate_shard", "abort_transfer"]


@pytest.fixture(scope="module")
def one_peer(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("compat-cluster"))
    try:
        peer = cluster.start_first(timeout=45)
        name = uname("compat_cl")
        r = peer.request("PUT", f"/collections/{name}", json={"vectors": {"size": DIM, "distance": "Dot"}})
        assert_ok_response(r, "create collection on 1-peer cluster")
        yield peer, name
    finally:
        cluster.cleanup()


def _check_self_transfer(resp, op):
    body = assert_error_response(resp, 422, f"{op} to itself")
    err = body["status"]["error"]
    prefix = f"Validation error in JSON body: [{op}.to_peer_id: cannot transfer shard to itself"
    assert err.startswith(prefix), f"{op}: error {err!r} does not start with {prefix!r}"


@pytest.mark.parametrize("op", TRANSFER_OPS)
def test_shard_transfer_to_itself_on_cluster(one_peer, op):
    peer, name = one_peer
    pid = peer.peer_id
    r = peer.request("POST", f"/collections/{name}/cluster",
                     json={op: {"shard_id": 0, "from_peer_id": pid, "to_peer_id": pid}})
    _check_self_transfer(r, op)


@pytest.mark.parametrize("op", TRANSFER_OPS)
def test_shard_transfer_to_itself_standalone(server, coll, op):
    r = call(server, "POST", f"/collections/{coll}/cluster",
             {op: {"shard_id": 0, "from_peer_id": 1, "to_peer_id": 1}})
    _check_self_transfer(r, op)


# ---------------------------------------------------------------------------------------------
# B3. Update vectors with an empty named-vector map.
#     Qdrant's PointVectors validation rejects it: "Validation error in JSON body:
#     [points[0].vector: must specify vectors to update for point]" (HTTP 422).
# ---------------------------------------------------------------------------------------------

def test_update_vectors_empty_named_map_rejected(server, fresh):
    name = fresh({"vectors": {"image": {"size": 4, "distance": "Dot"}}})
    ok(server, "PUT", f"/collections/{name}/points?wait=true", {"points": [{"id": 1, "vector": {"image": [1, 2, 3, 4]}}]})
    r = call(server, "PUT", f"/collections/{name}/points/vectors?wait=true", {"points": [{"id": 1, "vector": {}}]})
    body = assert_error_response(r, EMPTY_VECTOR_UPDATE_STATUS, "update vectors with vector: {}")
    if EMPTY_VECTOR_UPDATE_STATUS == 422:
        assert "must specify vectors to update for point" in body["status"]["error"], body
    got = ok(server, "GET", f"/collections/{name}/points/1")["result"]
    assert vectors_close(got["vector"], {"image": [1, 2, 3, 4]}), got


# ---------------------------------------------------------------------------------------------
# B4. with_vector naming a vector the collection does not have: 400.
# ---------------------------------------------------------------------------------------------

NOPE_CASES = {
    "search": ("/points/search", {"vector": {"name": "image", "vector": QUERY}, "limit": 2, "with_vector": ["nope"]}),
    "query": ("/points/query", {"query": QUERY, "using": "image", "limit": 2, "with_vector": ["nope"]}),
    "scroll": ("/points/scroll", {"limit": 2, "with_vector": ["nope"]}),
    "retrieve": ("/points", {"ids": [1, 2], "with_vector": ["nope"]}),
}


@pytest.mark.parametrize("kind", list(NOPE_CASES))
def test_with_vector_unknown_name_rejected(server, named_coll, kind):
    path, body = NOPE_CASES[kind]
    r = call(server, "POST", f"/collections/{named_coll}{path}", body)
    body = assert_error_response(r, 400, f"{kind} with_vector=['nope']")
    assert "nope" in body["status"]["error"], body


# ---------------------------------------------------------------------------------------------
# B5. A field condition with only a `key`: 422 validation error.
# ---------------------------------------------------------------------------------------------

KEY_ONLY = {"must": [{"key": "a"}]}
KEY_ONLY_CASES = {
    "scroll": ("/points/scroll", {"filter": KEY_ONLY, "limit": 2}),
    "search": ("/points/search", {"vector": QUERY, "limit": 2, "filter": KEY_ONLY}),
    "count": ("/points/count", {"filter": KEY_ONLY, "exact": True}),
    "query": ("/points/query", {"query": QUERY, "limit": 2, "filter": KEY_ONLY}),
}


@pytest.mark.parametrize("kind", list(KEY_ONLY_CASES))
def test_key_only_field_condition_rejected(server, coll, kind):
    path, body = KEY_ONLY_CASES[kind]
    r = call(server, "POST", f"/collections/{coll}{path}", body)
    err = assert_error_response(r, 422, f"{kind} with key-only condition")["status"]["error"]
    assert "Validation error in JSON body" in err, err
    assert "At least one field condition must be specified" in err, err


# ---------------------------------------------------------------------------------------------
# B6. PATCH /collections/{name} merges: metadata keys set to null are removed, other keys
#     kept; a partial strict_mode_config is merged into the existing one.
# ---------------------------------------------------------------------------------------------

def test_patch_metadata_null_removes_key(server, fresh):
    name = fresh({"vectors": {"size": DIM, "distance": "Dot"}, "metadata": {"k": 1, "keep": "yes", "n": {"x": 1}}})
    assert get_config(server, name)["metadata"] == {"k": 1, "keep": "yes", "n": {"x": 1}}
    ok(server, "PATCH", f"/collections/{name}", {"metadata": {"k": None, "added": 2}}, "PATCH metadata k=null")
    assert get_config(server, name)["metadata"] == {"keep": "yes", "n": {"x": 1}, "added": 2}


def test_patch_strict_mode_config_merges(server, fresh):
    name = fresh({"vectors": {"size": DIM, "distance": "Dot"},
                  "strict_mode_config": {"enabled": True, "search_max_hnsw_ef": 100}})
    before = get_config(server, name)["strict_mode_config"]
    assert before.get("enabled") is True and before.get("search_max_hnsw_ef") == 100, before
    ok(server, "PATCH", f"/collections/{name}", {"strict_mode_config": {"max_query_limit": 10}},
       "PATCH partial strict_mode_config")
    after = get_config(server, name)["strict_mode_config"]
    assert after.get("enabled") is True, f"enabled lost by a partial PATCH: {after}"
    assert after.get("search_max_hnsw_ef") == 100, f"search_max_hnsw_ef lost by a partial PATCH: {after}"
    assert after.get("max_query_limit") == 10, after


def test_internal_shard_scope_is_not_a_public_filter_condition(server, coll):
    """The shard-scope condition peers use between themselves is not part of the public
    filter grammar (issue #13): a client filter naming it is refused with 400, in any
    filter position; the same key inside a payload is just data."""
    scope = {"__shards": {"shard_number": 1, "shards": [0]}}
    for path, body in [
        ("points/scroll", {"filter": {"must": [scope]}}),
        ("points/count", {"filter": {"should": [scope]}}),
        ("points/query", {"prefetch": [{"query": vec(1), "filter": {"must": [scope]}}], "query": {"fusion": "rrf"}}),
    ]:
        r = call(server, "POST", f"/collections/{coll}/{path}", body)
        err = assert_error_response(r, 400, path)
        assert "__shards" in err["status"]["error"], err
    r = call(server, "POST", f"/collections/{coll}/points/count", {"filter": {"must": [{"key": "__shards", "match": {"value": 1}}]}})
    assert r.status_code == 200, r.text  # a payload key of that name is fine
