""""null means not set": generated from the Qdrant OpenAPI file.

For every operation of the REST contract whose request body is JSON, a hand-written
*base body* (``CASES`` below, keyed by (method, path)) is sent first and must succeed.
Then the schema of the request body is walked (``$ref`` / ``anyOf`` / ``oneOf`` /
``allOf`` resolved, the alternative the base body matches is picked) and one variant is
generated per optional property (a property not in its schema's ``required``):

* level 1: every optional property of the body object, present in the base or not;
* level 2: every optional property of each object found one level down: object-valued
  properties (``hnsw_config``, ``wal_config``, ``optimizers_config``, ``params``,
  ``filter``, ...), values of maps (``vectors.dense``, ``sparse_vectors.sp``) and items of
  arrays of objects (``searches[0]``, ``points[0]``, ``operations[3]``).
  Single-key tagged wrappers such as ``{"scalar": {...}}``, ``{"upsert": {...}}`` or
  ``{"move_shard": {...}}`` are looked through without counting as a level.

A variant sends the base body with that one property set to JSON ``null``, and compares
the answer with the same body where the property is left out:

* the null variant must not be rejected as a format error;
* its HTTP status must equal the status of the "left out" request (2xx in nearly every
  case; when leaving the property out is itself rejected, e.g. a payload update without
  ``points`` or ``filter``, the null variant must be rejected the same way);
* when both succeed, the results (read operations) or the state left behind (write
  operations: points, collection config, payload schema, aliases) must be equal; the one
  property whose spec default is not null (``with_lookup.with_payload``, default true)
  is compared on status only.

A variant is skipped (generically, with the reason) when nulling the property leaves the
object matching no alternative's ``required`` list, and -- unless
``SEXTANT_NULLS_NON_NULLABLE=1`` -- when the property is optional but *not* nullable in
the spec (e.g. ``SearchParams.exact``, ``RecommendRequest.positive``): there ``null`` is
outside the contract and Qdrant itself rejects it.

Endpoints Sextant does not route yet (404 "no such endpoint" on a probe) and features it
answers with "... not supported" are skipped, so they start running as soon as they exist.
Writes use fresh collections (or a fresh 2-peer cluster collection for
``POST /collections/{collection_name}/cluster``); reads share one prepared collection.
"""

from __future__ import annotations

import copy
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import requests

# The contract lives in ../shared beside the repository (as laid out for developers and CI).
REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = Path(
    os.environ.get("SEXTANT_OPENAPI")
    or REPO_ROOT.parent / "shared" / "reference" / "qdrant-openapi-v1.18.3.json"
)
RUN_NON_NULLABLE = os.environ.get("SEXTANT_NULLS_NON_NULLABLE") == "1"
HTTP_TIMEOUT = 30

# A missing contract is an error, never a skip: this test must not pass by not running.
assert SPEC_PATH.exists(), f"OpenAPI file not found at {SPEC_PATH} (set SEXTANT_OPENAPI)"

SPEC = json.loads(SPEC_PATH.read_text())
SCHEMAS = SPEC["components"]["schemas"]

NOT_IMPLEMENTED = "endpoint not implemented in Sextant"
NOT_SUPPORTED = "feature not implemented in Sextant"
NON_NULLABLE = "optional but not nullable in the OpenAPI schema (null is outside the contract)"
MULTIPART = "multipart/form-data body: no JSON property to null"


# ====================================================================== schema walking

def deref(s: Any) -> Any:
    while isinstance(s, dict) and "$ref" in s:
        s = SCHEMAS[s["$ref"].rsplit("/", 1)[-1]]
    return s


def alternatives(s: Any) -> list[dict]:
    """Concrete alternatives of a schema: anyOf/oneOf flattened, allOf merged, the bare
    ``{"nullable": true}`` alternative dropped."""
    s = deref(s)
    if not isinstance(s, dict):
        return []
    if "allOf" in s:
        merged: dict = {"type": "object", "properties": dict(s.get("properties", {})),
                        "required": list(s.get("required", []))}
        for part in s["allOf"]:
            for a in alternatives(part):
                merged["properties"].update(a.get("properties", {}))
                merged["required"] += a.get("required", [])
        return [merged]
    alts = s.get("anyOf") or s.get("oneOf")
    if alts:
        out: list[dict] = []
        for a in alts:
            out += alternatives(a)
        return out
    if s.get("nullable") and not ({"type", "properties", "items", "enum"} & set(s)):
        return []
    return [s]


def is_nullable(s: Any) -> bool:
    if not isinstance(s, dict):
        return False
    if s.get("nullable") is True or s.get("type") == "null":
        return True
    if "$ref" in s:
        return is_nullable(deref(s))
    return any(is_nullable(a) for a in (s.get("anyOf") or s.get("oneOf") or []))


def props_of(a: dict) -> dict:
    return a.get("properties") or {}


def is_map(a: dict) -> bool:
    return (a.get("type") == "object" and not a.get("properties")
            and isinstance(a.get("additionalProperties"), dict) and bool(a["additionalProperties"]))


def _enum_ok(value: Any, prop_schema: Any) -> bool:
    """A string value must be one of the enum values, when the property is an enum."""
    if not isinstance(value, str):
        return True
    enums = [a["enum"] for a in alternatives(prop_schema) if "enum" in a]
    if not enums or any(a.get("type") == "string" and "enum" not in a for a in alternatives(prop_schema)):
        return True
    return any(value in e for e in enums)


def match_objects(value: dict, schema: Any) -> tuple[str | None, list[dict]]:
    """The object alternatives of ``schema`` the dict ``value`` matches (its keys cover the
    alternative's ``required`` and stay within its ``properties``), else its map alternatives."""
    alts = alternatives(schema)
    keys = set(value)
    objs = [a for a in alts if props_of(a)
            and set(a.get("required", [])) <= keys and keys <= set(props_of(a))
            and all(_enum_ok(value[k], props_of(a)[k]) for k in keys)]
    if objs:
        return "object", objs
    maps = [a for a in alts if is_map(a)]
    if maps:
        return "map", maps
    return None, []


def unwrap(value: dict, schema: Any, loc: list) -> tuple[dict, str | None, list[dict], list]:
    """Match ``value``; look through single-key tagged wrappers ({"scalar": {...}})."""
    kind, m = match_objects(value, schema)
    while kind == "object" and len(m) == 1 and len(props_of(m[0])) == 1 \
            and list(props_of(m[0])) == list(m[0].get("required", [])):
        (key, pschema), = props_of(m[0]).items()
        inner = value.get(key)
        if not isinstance(inner, dict):
            break
        value, schema, loc = inner, pschema, loc + [key]
        kind, m = match_objects(value, schema)
    return value, kind, m, loc


def prop_schema(m: list[dict], key: str) -> Any:
    for a in m:
        if key in props_of(a):
            return props_of(a)[key]
    return {}


def child_targets(val: Any, pschema: Any, loc: list) -> list[tuple[list, dict, list[dict]]]:
    out = []
    if isinstance(val, dict):
        v2, kind, m, loc2 = unwrap(val, pschema, loc)
        if kind == "object":
            out.append((loc2, v2, m))
        elif kind == "map":
            for mk, mv in v2.items():
                if isinstance(mv, dict):
                    v3, kind3, m3, loc3 = unwrap(mv, m[0]["additionalProperties"], loc2 + [mk])
                    if kind3 == "object":
                        out.append((loc3, v3, m3))
    elif isinstance(val, list):
        items = [a["items"] for a in alternatives(pschema) if a.get("type") == "array" and "items" in a]
        if items:
            for i, it in enumerate(val):
                if isinstance(it, dict):
                    v2, kind, m, loc2 = unwrap(it, items[0], loc + [i])
                    if kind == "object":
                        out.append((loc2, v2, m))
    return out


def fmt_loc(loc: list) -> str:
    s = ""
    for k in loc:
        s += f"[{k}]" if isinstance(k, int) else (f".{k}" if s else str(k))
    return s


@dataclass
class Variant:
    loc: list               # where the null goes, from the body root
    present: bool           # the base body has a value there
    nullable: bool          # the spec allows null there
    compare_content: bool   # spec default is null/absent: null must behave exactly like "left out"
    skip: str | None = None


def derive_variants(body: dict, schema: Any) -> list[Variant]:
    v, kind, m, loc = unwrap(body, schema, [])
    assert kind == "object", f"base body matches no object alternative of its schema: {body}"
    targets = [(loc, v, m)]
    for key, val in v.items():
        targets += child_targets(val, prop_schema(m, key), loc + [key])
    out: list[Variant] = []
    seen = set()
    for tloc, tval, tm in targets:
        props: dict[str, list] = {}
        for a in tm:
            for p, ps in props_of(a).items():
                props.setdefault(p, []).append(ps)
        for p, schemas in props.items():
            if all(p in a.get("required", []) for a in tm if p in props_of(a)):
                continue  # required wherever it exists: not optional
            key = tuple(tloc + [p])
            if key in seen:
                continue
            seen.add(key)
            var = Variant(
                loc=tloc + [p],
                present=p in tval,
                nullable=any(is_nullable(ps) for ps in schemas),
                compare_content=not any(deref(ps).get("default") is not None or ps.get("default") is not None
                                        for ps in schemas),
            )
            left = {k for k, x in tval.items() if k != p and x is not None}
            if not any(set(a.get("required", [])) <= left for a in tm):
                var.skip = "nulling it leaves the object matching no alternative's required properties"
            elif not var.nullable and not RUN_NON_NULLABLE:
                var.skip = NON_NULLABLE
            out.append(var)
    return out


def set_at(body: dict, loc: list, value: Any = None, remove: bool = False) -> dict:
    body = copy.deepcopy(body)
    cur = body
    for k in loc[:-1]:
        cur = cur[k]
    if remove:
        cur.pop(loc[-1], None)
    else:
        cur[loc[-1]] = value
    return body


# ====================================================================== base bodies

DIM = 4


def vec(i: int) -> list[float]:
    return [round(0.1 + 0.07 * i, 4), round(0.5 - 0.03 * i, 4), round(0.2 + 0.01 * (i % 5), 4), 0.3]


Q = [0.3, 0.1, 0.2, 0.4]
Q2 = [0.1, 0.4, 0.3, 0.2]
F = {"must": [{"key": "g", "match": {"any": [0, 1]}}], "must_not": [{"has_id": [7]}]}
F_G2 = {"must": [{"key": "g", "match": {"value": 2}}]}
COLL_CONFIG = {"vectors": {"dense": {"size": DIM, "distance": "Cosine"}}, "sparse_vectors": {"sp": {}}}
N_POINTS = 12


def data_points() -> list[dict]:
    return [{"id": i,
             "vector": {"dense": vec(i), "sp": {"indices": [1, 2 + i % 3], "values": [0.5, 0.1 * i]}},
             "payload": {"g": i % 3, "k": i, "name": f"p{i}", "tag": ["red", "green", "blue"][i % 3],
                         "nested": {"x": i}}}
            for i in range(1, N_POINTS + 1)]


@dataclass
class Ctx:
    """Names a request is built from (a dummy one is used to derive the variants)."""
    url: str = "http://sextant"
    coll: str = "C"
    lookup: str = "L"
    alias0: str = "A0"
    alias1: str = "A1"
    alias2: str = "A2"
    src: int = 1
    dst: int = 2
    location: str = "http://sextant/collections/C/snapshots/s.snapshot"
    vector_name: str = "extra"
    owned: list = field(default_factory=list)  # (url, collection) to delete afterwards
    owned_aliases: list = field(default_factory=list)
    names: dict = field(default_factory=dict)  # unique name -> role, for normalising observations


@dataclass
class Case:
    method: str
    path: str
    label: str
    body: Callable[[Ctx], dict]
    setup: str = "read"        # read | read_unnamed | fresh_data | fresh_name | fresh_custom | custom_with_key | aliases
    #                            | snapshot | shard_snapshot | cluster_rf1 | cluster_rf2 | cluster_custom
    observe: str | None = None  # None for reads (the result is compared) | points | config | schema | aliases | none

    @property
    def cid(self) -> str:
        return f"{self.method} {self.path}" + (f" [{self.label}]" if self.label else "")


def search_body(c: Ctx) -> dict:
    return {"vector": {"name": "dense", "vector": Q}, "limit": 3, "offset": 1, "filter": F,
            "params": {"hnsw_ef": 32, "exact": False, "quantization": {"rescore": True}},
            "with_payload": True, "score_threshold": -1.0}


def recommend_body(c: Ctx) -> dict:
    return {"positive": [1, 2], "negative": [3], "strategy": "average_vector", "using": "dense", "limit": 3,
            "filter": F, "params": {"hnsw_ef": 32}, "with_payload": True,
            "lookup_from": {"collection": c.lookup, "vector": "dense"}}


def discover_body(c: Ctx) -> dict:
    return {"target": 1, "context": [{"positive": 2, "negative": 3}], "using": "dense", "limit": 3,
            "params": {"hnsw_ef": 16}, "with_payload": True,
            "lookup_from": {"collection": c.lookup, "vector": "dense"}}


def query_nearest(c: Ctx) -> dict:
    return {"query": Q, "using": "dense", "limit": 3, "offset": 1, "filter": F,
            "params": {"hnsw_ef": 32, "exact": False}, "score_threshold": -1.0,
            "with_payload": True, "with_vector": False}


def query_prefetch(c: Ctx) -> dict:
    return {"prefetch": [{"query": Q, "using": "dense", "limit": 5, "filter": F, "params": {"hnsw_ef": 16},
                          "score_threshold": -1.0},
                         {"query": {"indices": [1, 2], "values": [1.0, 0.5]}, "using": "sp", "limit": 5}],
            "query": {"fusion": "rrf"}, "limit": 4, "with_payload": ["name"]}


UPSERT_LIST = lambda c: {"points": [  # noqa: E731
    {"id": 100, "vector": {"dense": vec(100), "sp": {"indices": [1], "values": [0.5]}}, "payload": {"g": 1, "new": True}},
    {"id": 101, "vector": {"dense": vec(101)}}]}

C_ = "/collections/{collection_name}"
P_ = C_ + "/points"

CASE_LIST: list[Case] = [
    # ---- collections
    Case("PUT", C_ + "/shards", "", lambda c: {"shard_key": "k_new", "shards_number": 1, "replication_factor": 1},
         "fresh_custom", "config"),
    Case("POST", C_ + "/shards/delete", "", lambda c: {"shard_key": "k1"}, "custom_with_key", "config"),
    Case("PUT", C_, "", lambda c: {
        "vectors": {"dense": {"size": DIM, "distance": "Cosine", "hnsw_config": {"m": 8},
                              "quantization_config": {"scalar": {"type": "int8"}}, "on_disk": False,
                              "datatype": "float32"}},
        "sparse_vectors": {"sp": {"index": {"on_disk": False}, "modifier": "none"}},
        "shard_number": 1, "replication_factor": 1, "write_consistency_factor": 1, "on_disk_payload": False,
        "hnsw_config": {"m": 16, "ef_construct": 64},
        "wal_config": {"wal_capacity_mb": 16},
        "optimizers_config": {"deleted_threshold": 0.2, "indexing_threshold": 10000},
        "quantization_config": {"scalar": {"type": "int8", "quantile": 0.99, "always_ram": True}},
        "strict_mode_config": {"enabled": False},
        "metadata": {"owner": "nulls"}}, "fresh_name", "config"),
    Case("PUT", C_, "binary", lambda c: {
        "vectors": {"size": DIM, "distance": "Dot"},
        "quantization_config": {"binary": {"always_ram": False}}}, "fresh_name", "config"),
    Case("PATCH", C_, "", lambda c: {
        "vectors": {"dense": {"hnsw_config": {"m": 12}, "on_disk": False}},
        "optimizers_config": {"indexing_threshold": 20000},
        "params": {"replication_factor": 1, "on_disk_payload": False},
        "hnsw_config": {"ef_construct": 100},
        "quantization_config": {"scalar": {"type": "int8"}},
        "sparse_vectors": {"sp": {"index": {"full_scan_threshold": 1000}}},
        "strict_mode_config": {"enabled": False},
        "metadata": {"patched": True}}, "fresh_data", "config"),
    Case("POST", "/collections/aliases", "", lambda c: {"actions": [
        {"create_alias": {"collection_name": c.coll, "alias_name": c.alias1}},
        {"rename_alias": {"old_alias_name": c.alias0, "new_alias_name": c.alias2}},
        {"delete_alias": {"alias_name": c.alias2}}]}, "aliases", "aliases"),
    Case("PUT", C_ + "/index", "keyword", lambda c: {
        "field_name": "tag", "field_schema": {"type": "keyword", "is_tenant": False, "on_disk": False}},
        "fresh_data", "schema"),
    Case("PUT", C_ + "/index", "integer", lambda c: {
        "field_name": "k", "field_schema": {"type": "integer", "lookup": True, "range": True}},
        "fresh_data", "schema"),
    Case("PUT", C_ + "/index", "text", lambda c: {
        "field_name": "name", "field_schema": {"type": "text", "tokenizer": "word", "min_token_len": 1,
                                               "max_token_len": 10, "lowercase": True}},
        "fresh_data", "schema"),
    Case("PUT", C_ + "/vectors/{vector_name}", "", lambda c: {
        "dense": {"size": DIM, "distance": "Dot", "datatype": "float32"}}, "fresh_data", "config"),
    # ---- cluster operations (2-peer cluster, fresh collection each)
    Case("POST", C_ + "/cluster", "move_shard", lambda c: {
        "move_shard": {"shard_id": 0, "from_peer_id": c.src, "to_peer_id": c.dst, "method": "stream_records"}},
        "cluster_rf1", "none"),
    Case("POST", C_ + "/cluster", "replicate_shard", lambda c: {
        "replicate_shard": {"shard_id": 0, "from_peer_id": c.src, "to_peer_id": c.dst}}, "cluster_rf1", "none"),
    Case("POST", C_ + "/cluster", "drop_replica", lambda c: {
        "drop_replica": {"shard_id": 0, "peer_id": c.dst}}, "cluster_rf2", "none"),
    Case("POST", C_ + "/cluster", "create_sharding_key", lambda c: {
        "create_sharding_key": {"shard_key": "k_new", "shards_number": 1, "replication_factor": 1}},
        "cluster_custom", "none"),
    Case("POST", C_ + "/cluster", "start_resharding", lambda c: {
        "start_resharding": {"direction": "up"}}, "cluster_rf1", "none"),
    # ---- snapshots
    Case("PUT", C_ + "/snapshots/recover", "", lambda c: {"location": c.location, "priority": "snapshot"},
         "snapshot", "points"),
    Case("PUT", C_ + "/shards/{shard_id}/snapshots/recover", "", lambda c: {
        "location": c.location, "priority": "snapshot"}, "shard_snapshot", "points"),
    # ---- points: writes
    Case("PUT", P_, "list", UPSERT_LIST, "fresh_data", "points"),
    Case("PUT", P_, "batch", lambda c: {"batch": {"ids": [100, 101], "vectors": {"dense": [vec(100), vec(101)]},
                                                  "payloads": [{"g": 1}, {"g": 2}]}}, "fresh_data", "points"),
    Case("POST", P_ + "/delete", "ids", lambda c: {"points": [1, 2]}, "fresh_data", "points"),
    Case("POST", P_ + "/delete", "filter", lambda c: {"filter": dict(F_G2)}, "fresh_data", "points"),
    Case("PUT", P_ + "/vectors", "", lambda c: {"points": [{"id": 1, "vector": {"dense": vec(50)}}]},
         "fresh_data", "points"),
    Case("POST", P_ + "/vectors/delete", "points", lambda c: {"points": [1, 2], "vector": ["dense"]},
         "fresh_data", "points"),
    Case("POST", P_ + "/vectors/delete", "filter", lambda c: {"filter": dict(F_G2), "vector": ["sp"]},
         "fresh_data", "points"),
    Case("POST", P_ + "/payload", "points", lambda c: {"payload": {"color": "red"}, "points": [1, 2]},
         "fresh_data", "points"),
    Case("POST", P_ + "/payload", "filter_key", lambda c: {"payload": {"x": 1}, "filter": dict(F_G2), "key": "nested"},
         "fresh_data", "points"),
    Case("PUT", P_ + "/payload", "points", lambda c: {"payload": {"color": "red"}, "points": [1, 2]},
         "fresh_data", "points"),
    Case("PUT", P_ + "/payload", "filter_key", lambda c: {"payload": {"x": 1}, "filter": dict(F_G2), "key": "nested"},
         "fresh_data", "points"),
    Case("POST", P_ + "/payload/delete", "points", lambda c: {"keys": ["name"], "points": [1, 2]},
         "fresh_data", "points"),
    Case("POST", P_ + "/payload/delete", "filter", lambda c: {"keys": ["name"], "filter": dict(F_G2)},
         "fresh_data", "points"),
    Case("POST", P_ + "/payload/clear", "ids", lambda c: {"points": [1, 2]}, "fresh_data", "points"),
    Case("POST", P_ + "/payload/clear", "filter", lambda c: {"filter": dict(F_G2)}, "fresh_data", "points"),
    Case("POST", P_ + "/batch", "", lambda c: {"operations": [
        {"upsert": {"points": [{"id": 200, "vector": {"dense": vec(200)}, "payload": {"g": 0}}]}},
        {"delete": {"points": [12]}},
        {"set_payload": {"payload": {"s": 1}, "points": [1]}},
        {"overwrite_payload": {"payload": {"o": 1}, "points": [2]}},
        {"delete_payload": {"keys": ["name"], "points": [3]}},
        {"clear_payload": {"points": [4]}},
        {"update_vectors": {"points": [{"id": 5, "vector": {"dense": vec(55)}}]}},
        {"delete_vectors": {"points": [6], "vector": ["sp"]}}]}, "fresh_data", "points"),
    # ---- points: reads (shared collection)
    Case("POST", P_, "", lambda c: {"ids": [1, 2, 3], "with_payload": ["name", "g"], "with_vector": ["dense"]}),
    Case("POST", P_ + "/scroll", "offset", lambda c: {
        "offset": 2, "limit": 5, "filter": F, "with_payload": True, "with_vector": False}),
    Case("POST", P_ + "/scroll", "order_by", lambda c: {
        "limit": 5, "order_by": {"key": "k", "direction": "desc", "start_from": 10}}),
    Case("POST", P_ + "/search", "", search_body),
    Case("POST", P_ + "/search", "unnamed", lambda c: {"vector": Q, "limit": 3, "with_payload": ["name"]},
         "read_unnamed"),
    Case("POST", P_ + "/search/batch", "", lambda c: {"searches": [
        search_body(c), {"vector": {"name": "dense", "vector": Q2}, "limit": 2}]}),
    Case("POST", P_ + "/search/groups", "", lambda c: {
        "vector": {"name": "dense", "vector": Q}, "group_by": "g", "group_size": 2, "limit": 3, "filter": F,
        "with_payload": True, "with_lookup": {"collection": c.lookup, "with_payload": True, "with_vectors": False}}),
    Case("POST", P_ + "/recommend", "", recommend_body),
    Case("POST", P_ + "/recommend", "unnamed", lambda c: {"positive": [1], "negative": [2], "limit": 3},
         "read_unnamed"),
    Case("POST", P_ + "/recommend/batch", "", lambda c: {"searches": [
        recommend_body(c), {"positive": [4], "limit": 2, "using": "dense"}]}),
    Case("POST", P_ + "/recommend/groups", "", lambda c: {
        "positive": [1], "negative": [2], "strategy": "best_score", "using": "dense",
        "group_by": "g", "group_size": 2, "limit": 3, "with_lookup": {"collection": c.lookup},
        "lookup_from": {"collection": c.lookup, "vector": "dense"}}),
    Case("POST", P_ + "/discover", "", discover_body),
    Case("POST", P_ + "/discover/batch", "", lambda c: {"searches": [discover_body(c)]}),
    Case("POST", P_ + "/count", "", lambda c: {"filter": F, "exact": True}),
    Case("POST", C_ + "/facet", "", lambda c: {"key": "tag", "limit": 5, "exact": False, "filter": F}),
    Case("POST", P_ + "/query", "nearest", query_nearest),
    Case("POST", P_ + "/query", "prefetch_rrf", query_prefetch),
    Case("POST", P_ + "/query", "recommend_lookup", lambda c: {
        "query": {"recommend": {"positive": [1], "negative": [2], "strategy": "average_vector"}},
        "using": "dense", "lookup_from": {"collection": c.lookup, "vector": "dense"}, "limit": 3}),
    Case("POST", P_ + "/query", "order_by", lambda c: {
        "query": {"order_by": {"key": "k", "direction": "desc", "start_from": 10}}, "limit": 3}),
    Case("POST", P_ + "/query", "mmr", lambda c: {
        "query": {"nearest": Q, "mmr": {"diversity": 0.5, "candidates_limit": 10}}, "using": "dense", "limit": 3}),
    Case("POST", P_ + "/query", "unnamed", lambda c: {
        "prefetch": {"query": {"recommend": {"positive": [1, 2]}}, "limit": 6}, "query": Q, "limit": 3},
        "read_unnamed"),
    Case("POST", P_ + "/query/batch", "", lambda c: {"searches": [query_nearest(c), query_prefetch(c)]}),
    Case("POST", P_ + "/query/groups", "", lambda c: {
        "query": Q, "using": "dense", "group_by": "g", "group_size": 2, "limit": 3, "filter": F,
        "with_payload": True, "with_lookup": {"collection": c.lookup, "with_payload": ["lk"]}}),
    Case("POST", P_ + "/query/groups", "unnamed", lambda c: {
        "query": {"recommend": {"positive": [3]}}, "group_by": "tag", "limit": 2}, "read_unnamed"),
    Case("POST", P_ + "/search/matrix/pairs", "", lambda c: {"sample": 6, "limit": 2, "using": "dense", "filter": F}),
    Case("POST", P_ + "/search/matrix/offsets", "", lambda c: {"sample": 6, "limit": 2, "using": "dense", "filter": F}),
]

CASES: dict[tuple[str, str], list[Case]] = {}
for _c in CASE_LIST:
    CASES.setdefault((_c.method, _c.path), []).append(_c)


# ====================================================================== generation

@dataclass
class Operation:
    method: str
    path: str
    content_type: str
    schema: Any
    write: bool  # has a `wait` query parameter

    @property
    def oid(self) -> str:
        return f"{self.method} {self.path}"


def spec_operations() -> list[Operation]:
    ops = []
    for path, item in SPEC["paths"].items():
        for method, op in item.items():
            if not isinstance(op, dict) or "requestBody" not in op:
                continue
            content = op["requestBody"]["content"]
            ctype = "application/json" if "application/json" in content else next(iter(content))
            params = [deref(p).get("name") for p in op.get("parameters", []) + item.get("parameters", [])]
            ops.append(Operation(method.upper(), path, ctype, content[ctype].get("schema"), "wait" in params))
    return ops


OPERATIONS = spec_operations()
OPS_BY_KEY = {(o.method, o.path): o for o in OPERATIONS}
_unknown = set(CASES) - set(OPS_BY_KEY)
assert not _unknown, f"base bodies for operations not in the spec: {_unknown}"


def generate() -> list:
    params = []
    for op in OPERATIONS:
        if op.content_type != "application/json":
            params.append(pytest.param(op, None, None, id=f"{op.oid} <multipart>",
                                       marks=pytest.mark.skip(reason=MULTIPART)))
            continue
        cases = CASES.get((op.method, op.path))
        if not cases:
            params.append(pytest.param(op, None, None, id=f"{op.oid} <no base body>"))
            continue
        for case in cases:
            params.append(pytest.param(op, case, None, id=f"{case.cid} <base>"))
            for var in derive_variants(case.body(Ctx()), op.schema):
                marks = [pytest.mark.skip(reason=var.skip)] if var.skip else []
                params.append(pytest.param(op, case, var, id=f"{case.cid} {fmt_loc(var.loc)}", marks=marks))
    return params


PARAMS = generate()


# ====================================================================== runtime

@dataclass
class Outcome:
    status: int
    error: str
    content: Any  # result (reads) or observed state (writes), normalised; None when not 2xx


def _err(r: requests.Response) -> str:
    try:
        body = r.json()
        if isinstance(body, dict) and isinstance(body.get("status"), dict):
            return str(body["status"].get("error"))
    except ValueError:
        pass
    return r.text[:300]


def _unimplemented(r: requests.Response) -> bool:
    return r.status_code in (404, 405) and ("no such endpoint" in r.text or "Method not allowed" in r.text)


def _unsupported(r: requests.Response) -> bool:
    return 400 <= r.status_code < 500 and ("not supported" in r.text or "not implemented" in r.text)


def need_ok(r: requests.Response, what: str) -> dict:
    """Setup step: skip when it hits something Sextant does not implement, else require 2xx."""
    if _unimplemented(r):
        pytest.skip(f"{NOT_IMPLEMENTED} (setup: {what})")
    if _unsupported(r):
        pytest.skip(f"{NOT_SUPPORTED} (setup: {what}: {_err(r)})")
    assert 200 <= r.status_code < 300, f"setup {what}: HTTP {r.status_code}: {r.text[:500]}"
    return r.json()


class Env:
    def __init__(self, server, tmp_path_factory):
        self.server = server
        self.url = server.url
        self.tmp = tmp_path_factory
        self.data = f"nulls_data_{uuid.uuid4().hex[:8]}"
        self.lookup = f"nulls_lookup_{uuid.uuid4().hex[:8]}"
        self.unnamed = f"nulls_unnamed_{uuid.uuid4().hex[:8]}"
        self._cluster = None
        self.probes: dict[tuple, bool] = {}
        self.bases: dict[str, Outcome] = {}
        self.base_errors: dict[str, str] = {}
        self.stats = {"variants_run": 0, "variants_passed": 0, "variants_failed": 0,
                      "covered_ops": set(), "skipped_ops": {}, "absent_rejected": [], "failures": []}

    # -- helpers
    def call(self, method: str, url: str, body: Any = None) -> requests.Response:
        return requests.request(method, url, json=body, timeout=HTTP_TIMEOUT)

    def new_name(self, ctx: Ctx, role: str, prefix: str = "nulls") -> str:
        name = f"{prefix}_{role}_{uuid.uuid4().hex[:10]}"
        ctx.names[name] = f"<{role}>"
        return name

    def create_data(self, url: str, name: str, config: dict | None = None, points: list | None = None):
        need_ok(self.call("PUT", f"{url}/collections/{name}", config or COLL_CONFIG), f"create {name}")
        need_ok(self.call("PUT", f"{url}/collections/{name}/points?wait=true",
                          {"points": points if points is not None else data_points()}), f"upsert {name}")

    def prepare_shared(self):
        self.create_data(self.url, self.data)
        for field_name, schema in (("k", "integer"), ("tag", "keyword"), ("g", "integer")):
            need_ok(self.call("PUT", f"{self.url}/collections/{self.data}/index?wait=true",
                              {"field_name": field_name, "field_schema": schema}), f"index {field_name}")
        self.create_data(self.url, self.lookup, points=[
            {"id": i, "vector": {"dense": vec(20 + i)}, "payload": {"lk": i, "other": "x"}} for i in range(6)])
        self.create_data(self.url, self.unnamed, {"vectors": {"size": DIM, "distance": "Cosine"}},
                         [dict(p, vector=p["vector"]["dense"]) for p in data_points()])

    def cleanup_shared(self):
        for name in (self.data, self.lookup, self.unnamed):
            try:
                self.call("DELETE", f"{self.url}/collections/{name}")
            except requests.RequestException:
                pass
        if self._cluster is not None:
            self._cluster.cleanup()

    def cluster(self):
        if self._cluster is None:
            from cluster_harness import Cluster

            c = Cluster(self.tmp.mktemp("nulls-cluster"))
            self._cluster = c
            a = c.start_first()
            b = c.spawn_joiner(a)
            b.wait_ready()
            c.wait_converged(30)
        return self._cluster

    # -- contexts
    def make_ctx(self, case: Case) -> Ctx:
        ctx = Ctx(url=self.url, coll=self.data, lookup=self.lookup)
        ctx.names[self.data] = "<data>"
        ctx.names[self.lookup] = "<lookup>"
        kind = case.setup
        if kind == "read":
            return ctx
        if kind == "read_unnamed":
            ctx.coll = self.unnamed
            ctx.names[self.unnamed] = "<unnamed>"
            return ctx
        if kind.startswith("cluster"):
            cl = self.cluster()
            a, b = cl.peers[0], cl.peers[1]
            ctx.url = a.url
            ctx.coll = self.new_name(ctx, "cl")
            cfg = {"vectors": {"size": DIM, "distance": "Dot"}, "shard_number": 1,
                   "replication_factor": 2 if kind == "cluster_rf2" else 1}
            if kind == "cluster_custom":
                cfg = {"vectors": {"size": DIM, "distance": "Dot"}, "sharding_method": "custom"}
            need_ok(self.call("PUT", f"{a.url}/collections/{ctx.coll}", cfg), "create cluster collection")
            ctx.owned.append((a.url, ctx.coll))
            info = need_ok(self.call("GET", f"{a.url}/collections/{ctx.coll}/cluster"), "collection cluster info")
            local = info["result"].get("local_shards") or []
            ctx.src, ctx.dst = (a.peer_id, b.peer_id) if local else (b.peer_id, a.peer_id)
            if kind == "cluster_rf2":
                ctx.src, ctx.dst = a.peer_id, b.peer_id
            return ctx
        ctx.coll = self.new_name(ctx, "target")
        ctx.owned.append((self.url, ctx.coll))
        if kind == "fresh_name":
            return ctx
        if kind in ("fresh_custom", "custom_with_key"):
            need_ok(self.call("PUT", f"{self.url}/collections/{ctx.coll}",
                              dict(COLL_CONFIG, sharding_method="custom")), "create custom-sharded collection")
            if kind == "custom_with_key":
                need_ok(self.call("PUT", f"{self.url}/collections/{ctx.coll}/shards", {"shard_key": "k1"}),
                        "create shard key")
            return ctx
        self.create_data(self.url, ctx.coll)
        if kind == "aliases":
            ctx.alias0, ctx.alias1, ctx.alias2 = (self.new_name(ctx, r, "nulls_alias") for r in ("a0", "a1", "a2"))
            ctx.owned_aliases += [ctx.alias0, ctx.alias1, ctx.alias2]
            need_ok(self.call("POST", f"{self.url}/collections/aliases", {"actions": [
                {"create_alias": {"collection_name": ctx.coll, "alias_name": ctx.alias0}}]}), "create alias")
        elif kind == "snapshot":
            res = need_ok(self.call("POST", f"{self.url}/collections/{ctx.coll}/snapshots?wait=true"), "snapshot")
            ctx.location = f"{self.url}/collections/{ctx.coll}/snapshots/{res['result']['name']}"
        elif kind == "shard_snapshot":
            res = need_ok(self.call("POST", f"{self.url}/collections/{ctx.coll}/shards/0/snapshots?wait=true"),
                          "shard snapshot")
            ctx.location = f"{self.url}/collections/{ctx.coll}/shards/0/snapshots/{res['result']['name']}"
        return ctx

    def release(self, ctx: Ctx):
        for url, name in ctx.owned:
            try:
                self.call("DELETE", f"{url}/collections/{name}")
            except requests.RequestException:
                pass
        for alias in ctx.owned_aliases:
            try:
                self.call("POST", f"{self.url}/collections/aliases",
                          {"actions": [{"delete_alias": {"alias_name": alias}}]})
            except requests.RequestException:
                pass

    # -- requests
    def target_url(self, op: Operation, ctx: Ctx) -> str:
        path = (op.path.replace("{collection_name}", ctx.coll).replace("{shard_id}", "0")
                .replace("{vector_name}", ctx.vector_name))
        return ctx.url + path + ("?wait=true" if op.write else "")

    def probe(self, op: Operation):
        """Skip operations Sextant does not route at all (so they run once implemented)."""
        key = (op.method, op.path)
        if key not in self.probes:
            # A missing collection and a JSON array body (no request body of the spec is one):
            # a routed endpoint answers 4xx without side effects, an unrouted one 404/405.
            missing = Ctx(coll=f"nulls_probe_{uuid.uuid4().hex[:8]}", url=self.url)
            r = self.call(op.method, self.target_url(op, missing), [])
            self.probes[key] = _unimplemented(r)
            self.call("DELETE", f"{self.url}/collections/{missing.coll}")
        if self.probes[key]:
            self.stats["skipped_ops"][op.oid] = NOT_IMPLEMENTED
            pytest.skip(NOT_IMPLEMENTED)

    def observe(self, case: Case, ctx: Ctx, r: requests.Response) -> Any:
        kind = case.observe
        base = f"{ctx.url}/collections/{ctx.coll}"
        if kind is None:
            out = r.json().get("result")
        elif kind == "none":
            out = None
        elif kind == "points":
            rr = self.call("POST", f"{base}/points/scroll", {"limit": 1000, "with_payload": True, "with_vector": True})
            out = rr.json().get("result", {}).get("points") if rr.status_code == 200 else f"HTTP {rr.status_code}"
        elif kind in ("config", "schema"):
            rr = self.call("GET", base)
            res = rr.json().get("result", {}) if rr.status_code == 200 else {}
            out = res.get("config") if kind == "config" else res.get("payload_schema")
            if rr.status_code != 200:
                out = f"HTTP {rr.status_code}: {_err(rr)}"
        elif kind == "aliases":
            rr = self.call("GET", f"{base}/aliases")
            out = sorted(((a["alias_name"], a["collection_name"]) for a in rr.json()["result"]["aliases"]))
        else:  # pragma: no cover
            raise AssertionError(kind)
        text = json.dumps(out, sort_keys=True)
        for name, role in ctx.names.items():
            text = text.replace(name, role)
        return json.loads(text)

    def run(self, op: Operation, case: Case, mutate: Callable[[dict], dict] | None) -> Outcome:
        ctx = self.make_ctx(case)
        try:
            body = case.body(ctx)
            if mutate is not None:
                body = mutate(body)
            r = self.call(op.method, self.target_url(op, ctx), body)
            ok = 200 <= r.status_code < 300
            return Outcome(r.status_code, "" if ok else _err(r), self.observe(case, ctx, r) if ok else None)
        finally:
            self.release(ctx)

    def base(self, op: Operation, case: Case) -> Outcome:
        self.probe(op)
        if case.cid in self.base_errors:
            msg = self.base_errors[case.cid]
            if msg.startswith("SKIP "):
                pytest.skip(msg[5:])
            pytest.fail(msg, pytrace=False)
        if case.cid not in self.bases:
            try:
                ctx = self.make_ctx(case)
            except pytest.skip.Exception as exc:
                self.base_errors[case.cid] = f"SKIP {exc.msg}"
                self.stats["skipped_ops"][case.cid] = exc.msg
                raise
            try:
                r = self.call(op.method, self.target_url(op, ctx), case.body(ctx))
                if _unsupported(r):
                    self.base_errors[case.cid] = f"SKIP {NOT_SUPPORTED}: {_err(r)}"
                    self.stats["skipped_ops"][case.cid] = f"{NOT_SUPPORTED}: {_err(r)}"
                    pytest.skip(f"{NOT_SUPPORTED}: {_err(r)}")
                if not 200 <= r.status_code < 300:
                    self.base_errors[case.cid] = (f"{case.cid}: the base body is rejected with HTTP {r.status_code}: "
                                                  f"{_err(r)}\nbody: {json.dumps(case.body(ctx))}")
                    pytest.fail(self.base_errors[case.cid], pytrace=False)
                self.bases[case.cid] = Outcome(r.status_code, "", self.observe(case, ctx, r))
                self.stats["covered_ops"].add(op.oid)
            finally:
                self.release(ctx)
        return self.bases[case.cid]


class _SummaryPlugin:
    """Prints the module's counts at the end of the run (fixture teardown output is captured)."""

    def __init__(self, e: "Env"):
        self.e = e

    def pytest_terminal_summary(self, terminalreporter):
        _print_summary(self.e, terminalreporter)


@pytest.fixture(scope="module")
def env(server, tmp_path_factory, request):
    if not server.alive():
        server.start()
    e = Env(server, tmp_path_factory)
    request.config.pluginmanager.register(_SummaryPlugin(e), f"openapi-nulls-summary-{id(e)}")
    e.prepare_shared()
    yield e
    e.cleanup_shared()


def _print_summary(e: Env, tr):
    n_json = sum(1 for o in OPERATIONS if o.content_type == "application/json")
    n_multi = len(OPERATIONS) - n_json
    gen = [p for p in PARAMS if p.values[2] is not None]
    schema_skips: dict[str, list[str]] = {}
    for p in gen:
        if p.marks:
            schema_skips.setdefault(p.marks[0].kwargs.get("reason", ""), []).append(p.id)
    skipped = e.stats["skipped_ops"]
    not_routed = sorted(k for k, v in skipped.items() if v == NOT_IMPLEMENTED)
    unsupported = sorted(k for k, v in skipped.items() if v != NOT_IMPLEMENTED)
    tr.write_sep("=", "openapi nulls summary")
    tr.write_line(f"operations with a request body: {len(OPERATIONS)} = {n_json} JSON + {n_multi} multipart "
                  f"(multipart: nothing to null)")
    tr.write_line(f"JSON operations covered (a base body succeeded): {len(e.stats['covered_ops'])}; "
                  f"skipped as not implemented: {len(not_routed)}")
    for name in not_routed:
        tr.write_line(f"  not implemented: {name}")
    for name in unsupported:
        tr.write_line(f"  base case skipped: {name}: {skipped[name]}")
    tr.write_line(f"variants generated: {len(gen)}; run: {e.stats['variants_run']}, "
                  f"passed: {e.stats['variants_passed']}, failed: {e.stats['variants_failed']}")
    for reason, ids in schema_skips.items():
        tr.write_line(f"  skipped by the schema rules ({reason}): {len(ids)}")
        for i in ids:
            tr.write_line(f"    {i}")
    if e.stats["absent_rejected"]:
        tr.write_line("variants where leaving the property out is itself rejected (null gave the same answer):")
        for line in e.stats["absent_rejected"]:
            tr.write_line(f"  {line}")
    if e.stats["failures"]:
        tr.write_line("failed variants:")
        for line in e.stats["failures"]:
            tr.write_line(f"  {line}")


def _is_format_error(out: Outcome) -> bool:
    return out.status == 400 and ("Format error" in out.error or "invalid type: null" in out.error)


@pytest.mark.parametrize("op,case,var", PARAMS)
def test_null_means_not_set(env: Env, op: Operation, case: Case | None, var: Variant | None):
    if case is None:
        pytest.fail(f"{op.oid}: no base body in CASES for this operation of the spec", pytrace=False)
    base = env.base(op, case)
    if var is None:
        return  # the <base> item: the base body succeeded
    vid = f"{case.cid} {fmt_loc(var.loc)}"
    null = env.run(op, case, lambda b: set_at(b, var.loc, None))
    if var.present:
        absent = env.run(op, case, lambda b: set_at(b, var.loc, remove=True))
    else:
        absent = base
    env.stats["variants_run"] += 1
    try:
        assert not _is_format_error(null), (
            f"{vid}: explicit null rejected as a format error: HTTP {null.status}: {null.error}")
        assert null.status == absent.status, (
            f"{vid}: null gives HTTP {null.status} ({null.error or 'ok'}) but leaving it out gives "
            f"HTTP {absent.status} ({absent.error or 'ok'})")
        if not 200 <= absent.status < 300:
            env.stats["absent_rejected"].append(f"{vid}: HTTP {absent.status} {absent.error}")
        elif var.compare_content:
            assert null.content == absent.content, (
                f"{vid}: null and left-out differ\n  null:   {json.dumps(null.content)[:1500]}\n"
                f"  absent: {json.dumps(absent.content)[:1500]}")
    except AssertionError as exc:
        env.stats["variants_failed"] += 1
        env.stats["failures"].append(str(exc).splitlines()[0])
        raise
    env.stats["variants_passed"] += 1
