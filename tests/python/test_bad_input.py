"""Bad input over raw HTTP: every request must get a 4xx with a Qdrant-style JSON error body,
the server must keep serving, and the data stored before must be unchanged.

Status codes follow Qdrant: 400 for bodies that do not parse / wrong vector dimension,
404 for a missing collection or point, 409 for an existing collection, 422 for
validation errors (values that parse but are out of range, invalid path parameters).
"""

from __future__ import annotations

import json
import os
import socket
import urllib.parse
import uuid

import pytest
import requests

from helpers import assert_error_response, assert_ok_response

DIM = 4
N_POINTS = 12


def _points():
    return [
        {"id": i, "vector": [round(0.1 * i + 0.01 * k, 4) for k in range(DIM)],
         "payload": {"i": i, "name": f"p{i}", "tags": ["a", "b"][: i % 3], "nested": {"x": i * 1.5}}}
        for i in range(1, N_POINTS + 1)
    ]


@pytest.fixture(scope="module")
def coll(server):
    name = f"bad_{uuid.uuid4().hex[:8]}"
    base = f"{server.url}/collections/{name}"
    assert_ok_response(requests.put(base, json={"vectors": {"size": DIM, "distance": "Euclid"}}, timeout=30), "create")
    assert_ok_response(requests.put(f"{base}/points?wait=true", json={"points": _points()}, timeout=30), "upsert")
    yield name
    requests.delete(base, timeout=30)


def check_intact(server, name, ctx=""):
    r = requests.get(f"{server.url}/healthz", timeout=10)
    assert r.status_code == 200, f"{ctx}: /healthz after bad input: {r.status_code} {r.text[:200]}"
    base = f"{server.url}/collections/{name}"
    r = requests.post(f"{base}/points/count", json={"exact": True}, timeout=30)
    assert assert_ok_response(r, f"{ctx}: count")["result"]["count"] == N_POINTS, f"{ctx}: count changed"
    r = requests.post(f"{base}/points", json={"ids": list(range(1, N_POINTS + 1)), "with_payload": True,
                                              "with_vector": True}, timeout=30)
    got = sorted(assert_ok_response(r, f"{ctx}: retrieve")["result"], key=lambda p: p["id"])
    exp = _points()
    assert [p["id"] for p in got] == [p["id"] for p in exp], f"{ctx}: ids changed: {got}"
    for g, e in zip(got, exp):
        assert g["payload"] == e["payload"], f"{ctx}: payload of {e['id']} changed: {g['payload']}"
        assert g["vector"] == pytest.approx(e["vector"], abs=1e-6), f"{ctx}: vector of {e['id']} changed"


def send(server, method, path, body=None, raw: bytes | None = None, headers=None):
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    return requests.request(method, f"{server.url}{path}", data=data, headers=h, timeout=60)


# (id, method, path template, json body or raw bytes, expected statuses)
C = "{c}"
MISSING = "{m}"
CASES = [
    # malformed JSON
    ("malformed_upsert", "PUT", f"/collections/{C}/points", b'{"points": [', 400),
    ("malformed_search", "POST", f"/collections/{C}/points/search", b'{"vector": [1,2,3,4], "limit": }', 400),
    ("malformed_query", "POST", f"/collections/{C}/points/query", b'{"query": [1,2,3,4]', 400),
    ("not_json", "POST", f"/collections/{C}/points/scroll", b"hello world", 400),
    ("trailing_garbage", "POST", f"/collections/{C}/points/count", b'{"exact": true} xyz', 400),
    ("malformed_create", "PUT", "/collections/{n}", b'{"vectors": {"size": 4, "distance": "Dot"', 400),
    # wrong dimension
    ("dim_upsert", "PUT", f"/collections/{C}/points?wait=true", {"points": [{"id": 100, "vector": [1, 2, 3]}]}, 400),
    ("dim_upsert_batch", "PUT", f"/collections/{C}/points?wait=true",
     {"batch": {"ids": [100, 101], "vectors": [[1, 2, 3, 4], [1, 2, 3, 4, 5]]}}, 400),
    ("dim_search", "POST", f"/collections/{C}/points/search", {"vector": [1, 2, 3, 4, 5], "limit": 3}, 400),
    ("dim_query", "POST", f"/collections/{C}/points/query", {"query": [1, 2], "limit": 3}, 400),
    ("dim_update_vectors", "PUT", f"/collections/{C}/points/vectors?wait=true",
     {"points": [{"id": 1, "vector": [1, 2]}]}, 400),
    # non-finite numbers (not valid JSON, or out of range)
    ("nan_upsert", "PUT", f"/collections/{C}/points?wait=true", b'{"points":[{"id":100,"vector":[NaN,1,2,3]}]}', 400),
    ("inf_upsert", "PUT", f"/collections/{C}/points?wait=true", b'{"points":[{"id":100,"vector":[Infinity,1,2,3]}]}', 400),
    ("neg_inf_search", "POST", f"/collections/{C}/points/search", b'{"vector":[-Infinity,1,2,3],"limit":3}', 400),
    ("1e999_upsert", "PUT", f"/collections/{C}/points?wait=true", b'{"points":[{"id":100,"vector":[1e999,1,2,3]}]}', 400),
    ("1e999_query", "POST", f"/collections/{C}/points/query", b'{"query":[1,1e999,2,3],"limit":3}', 400),
    ("nan_payload", "POST", f"/collections/{C}/points/payload?wait=true", b'{"payload":{"x":NaN},"points":[1]}', 400),
    # unknown collection / point
    ("missing_get", "GET", f"/collections/{MISSING}", None, 404),
    ("missing_upsert", "PUT", f"/collections/{MISSING}/points?wait=true", {"points": [{"id": 1, "vector": [1, 2, 3, 4]}]}, 404),
    ("missing_search", "POST", f"/collections/{MISSING}/points/search", {"vector": [1, 2, 3, 4], "limit": 3}, 404),
    ("missing_query", "POST", f"/collections/{MISSING}/points/query", {"query": [1, 2, 3, 4], "limit": 3}, 404),
    ("missing_scroll", "POST", f"/collections/{MISSING}/points/scroll", {"limit": 3}, 404),
    ("missing_count", "POST", f"/collections/{MISSING}/points/count", {}, 404),
    ("missing_delete_points", "POST", f"/collections/{MISSING}/points/delete?wait=true", {"points": [1]}, 404),
    ("missing_patch", "PATCH", f"/collections/{MISSING}", {"optimizers_config": {"indexing_threshold": 100}}, 404),
    ("missing_index", "PUT", f"/collections/{MISSING}/index?wait=true", {"field_name": "x", "field_schema": "keyword"}, 404),
    ("missing_point", "GET", f"/collections/{C}/points/987654", None, 404),
    ("missing_point_uuid", "GET", f"/collections/{C}/points/{uuid.UUID(int=5)}", None, 404),
    ("set_payload_missing_point", "POST", f"/collections/{C}/points/payload?wait=true",
     {"payload": {"x": 1}, "points": [987654]}, 404),
    ("update_vectors_missing_point", "PUT", f"/collections/{C}/points/vectors?wait=true",
     {"points": [{"id": 987654, "vector": [1, 2, 3, 4]}]}, 404),
    # invalid field types / values that do not parse
    ("limit_string", "POST", f"/collections/{C}/points/search", {"vector": [1, 2, 3, 4], "limit": "ten"}, 400),
    ("vector_string", "POST", f"/collections/{C}/points/search", {"vector": "abc", "limit": 3}, 400),
    ("vector_of_strings", "PUT", f"/collections/{C}/points?wait=true", {"points": [{"id": 100, "vector": ["a", "b", "c", "d"]}]}, 400),
    ("id_float", "PUT", f"/collections/{C}/points?wait=true", {"points": [{"id": 1.5, "vector": [1, 2, 3, 4]}]}, 400),
    ("id_negative", "PUT", f"/collections/{C}/points?wait=true", {"points": [{"id": -1, "vector": [1, 2, 3, 4]}]}, 400),
    ("id_not_uuid", "PUT", f"/collections/{C}/points?wait=true", {"points": [{"id": "not-a-uuid", "vector": [1, 2, 3, 4]}]}, 400),
    ("id_bool", "PUT", f"/collections/{C}/points?wait=true", {"points": [{"id": True, "vector": [1, 2, 3, 4]}]}, 400),
    ("payload_not_object", "PUT", f"/collections/{C}/points?wait=true", {"points": [{"id": 100, "vector": [1, 2, 3, 4], "payload": [1, 2]}]}, 400),
    ("points_not_list", "PUT", f"/collections/{C}/points?wait=true", {"points": {"id": 100}}, 400),
    ("unknown_distance", "PUT", "/collections/{n}", {"vectors": {"size": 4, "distance": "Hamming"}}, 400),
    ("size_string", "PUT", "/collections/{n}", {"vectors": {"size": "four", "distance": "Dot"}}, 400),
    ("filter_bad_condition", "POST", f"/collections/{C}/points/scroll", {"filter": {"must": [{"key": "i", "match": {"nope": 1}}]}}, 400),
    ("filter_not_object", "POST", f"/collections/{C}/points/scroll", {"filter": "i > 3"}, 400),
    ("range_string", "POST", f"/collections/{C}/points/count", {"filter": {"must": [{"key": "i", "range": {"gt": "abc"}}]}}, 400),
    ("with_payload_number", "POST", f"/collections/{C}/points/scroll", {"with_payload": 5}, 400),
    # negative / out-of-range values
    ("negative_limit_search", "POST", f"/collections/{C}/points/search", {"vector": [1, 2, 3, 4], "limit": -1}, 400),
    ("negative_limit_scroll", "POST", f"/collections/{C}/points/scroll", {"limit": -5}, 400),
    ("negative_limit_query", "POST", f"/collections/{C}/points/query", {"query": [1, 2, 3, 4], "limit": -3}, 400),
    ("negative_offset", "POST", f"/collections/{C}/points/search", {"vector": [1, 2, 3, 4], "limit": 3, "offset": -1}, 400),
    # limits have "minimum": 1 in the OpenAPI contract: a parsed-but-invalid value is a 422
    ("zero_limit_query", "POST", f"/collections/{C}/points/query", {"query": [1, 2, 3, 4], "limit": 0}, 422),
    ("zero_limit_search", "POST", f"/collections/{C}/points/search", {"vector": [1, 2, 3, 4], "limit": 0}, 422),
    ("zero_limit_scroll", "POST", f"/collections/{C}/points/scroll", {"limit": 0}, 422),
    ("zero_limit_groups", "POST", f"/collections/{C}/points/query/groups",
     {"query": [1, 2, 3, 4], "group_by": "name", "limit": 0}, 422),
    ("size_too_large", "PUT", "/collections/{n}", {"vectors": {"size": 65537, "distance": "Dot"}}, 422),
    ("size_zero", "PUT", "/collections/{n}", {"vectors": {"size": 0, "distance": "Dot"}}, (400, 422)),
    ("shard_number_zero", "PUT", "/collections/{n}", {"vectors": {"size": 4, "distance": "Dot"}, "shard_number": 0}, (400, 422)),
    ("hnsw_m_negative", "PUT", "/collections/{n}", {"vectors": {"size": 4, "distance": "Dot"}, "hnsw_config": {"m": -4}}, 400),
    ("sparse_unsorted_dup", "PUT", f"/collections/{C}/points?wait=true", b'{"points":[{"id":100,"vector":{"s":{"indices":[1,1],"values":[0.5,0.5]}}}]}', (400, 422)),
    ("sparse_len_mismatch", "POST", f"/collections/{C}/points/query", {"query": {"indices": [1, 2], "values": [0.5]}, "using": "s"}, (400, 422)),
    ("unknown_vector_name", "POST", f"/collections/{C}/points/query", {"query": [1, 2, 3, 4], "using": "nope", "limit": 3}, (400, 404)),
    ("bool_field_string", "PUT", "/collections/{n}", {"vectors": {"size": 4, "distance": "Cosine"}, "on_disk_payload": "yes"}, 400),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(server, coll, case):
    cid, method, path, body, statuses = case
    new_name = f"badnew_{uuid.uuid4().hex[:8]}"
    missing = f"missing_{uuid.uuid4().hex[:8]}"
    path = path.replace("{c}", coll).replace("{m}", missing).replace("{n}", new_name)
    if isinstance(body, bytes):
        r = send(server, method, path, raw=body)
    else:
        r = send(server, method, path, body=body)
    assert_error_response(r, statuses, f"{cid}: {method} {path} {body!r}"[:400])
    check_intact(server, coll, cid)
    if path.startswith(f"/collections/{new_name}"):
        # a rejected create must not leave a collection behind
        ex = requests.get(f"{server.url}/collections/{new_name}/exists", timeout=10)
        assert assert_ok_response(ex, f"{cid}: exists")["result"] == {"exists": False}, f"{cid}: collection created"
    ex = requests.get(f"{server.url}/collections/{missing}/exists", timeout=10)
    assert assert_ok_response(ex, f"{cid}: exists")["result"] == {"exists": False}, f"{cid}: missing collection created"


def test_create_twice_conflict(server, coll):
    r = send(server, "PUT", f"/collections/{coll}", body={"vectors": {"size": 8, "distance": "Dot"}})
    assert_error_response(r, 409, "create existing collection")
    check_intact(server, coll, "create twice")
    info = requests.get(f"{server.url}/collections/{coll}", timeout=10).json()["result"]
    assert info["config"]["params"]["vectors"] == {"size": DIM, "distance": "Euclid"} or (
        info["config"]["params"]["vectors"]["size"] == DIM
        and info["config"]["params"]["vectors"]["distance"] == "Euclid"), info["config"]["params"]


def test_bad_write_in_batch_is_not_half_applied(server, coll):
    """A request whose second point has a wrong dimension must not store the first one."""
    body = {"points": [{"id": 500, "vector": [1, 2, 3, 4]}, {"id": 501, "vector": [1, 2, 3]}]}
    r = send(server, "PUT", f"/collections/{coll}/points?wait=true", body=body)
    assert_error_response(r, 400, "mixed batch")
    r = requests.get(f"{server.url}/collections/{coll}/points/500", timeout=10)
    assert_error_response(r, 404, "first point of rejected batch")
    check_intact(server, coll, "mixed batch")


def _raw_http(server, request: bytes, timeout=30.0) -> tuple[int, bytes]:
    """Send bytes on a fresh socket; tolerate the server closing early; return (status, body)."""
    s = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    try:
        try:
            view = memoryview(request)
            while view:
                n = s.send(view[:1 << 20])
                view = view[n:]
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before reading everything
        # no shutdown(SHUT_WR): some HTTP servers drop half-closed connections unanswered;
        # "Connection: close" makes the server close after its response instead
        chunks = []
        while True:
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                break
            if not b:
                break
            chunks.append(b)
    finally:
        s.close()
    data = b"".join(chunks)
    assert data.startswith(b"HTTP/1."), f"no HTTP response (got {data[:200]!r})"
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    headers = head.decode("latin-1").lower()
    if "transfer-encoding: chunked" in headers:
        out, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2:]
        body = out
    return status, body


class _Resp:
    """Minimal stand-in for requests.Response used by assert_error_response."""

    def __init__(self, status, body):
        self.status_code, self._body = status, body
        self.text = body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self._body)


def test_oversized_body(server, coll):
    size = 33 * 1024 * 1024
    pad = b"x" * size
    body = b'{"points":[{"id":100,"vector":[1,2,3,4],"payload":{"pad":"' + pad + b'"}}]}'
    req = (f"PUT /collections/{coll}/points?wait=true HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
           f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    status, resp_body = _raw_http(server, req, timeout=120)
    assert_error_response(_Resp(status, resp_body), (400, 413), "oversized body")
    check_intact(server, coll, "oversized body")
    r = requests.get(f"{server.url}/collections/{coll}/points/100", timeout=10)
    assert_error_response(r, 404, "oversized point must not be stored")


def _deep_filter(depth: int) -> dict:
    f = {"must": [{"key": "i", "match": {"value": 1}}]}
    for _ in range(depth):
        f = {"must": [f]}
    return f


def _deep_filter_json(depth: int) -> str:
    """Same shape as _deep_filter, built as text (json.dumps would hit Python's recursion limit)."""
    return '{"must":[' * depth + '{"must":[{"key":"i","match":{"value":1}}]}' + ']}' * depth


@pytest.mark.parametrize("endpoint", ["scroll", "count", "query"])
def test_deeply_nested_filter(server, coll, endpoint):
    extra = ',"query":[1,2,3,4],"limit":3' if endpoint == "query" else ""
    raw = ('{"filter":' + _deep_filter_json(1000) + extra + "}").encode()
    r = send(server, "POST", f"/collections/{coll}/points/{endpoint}", raw=raw)
    assert_error_response(r, (400, 422), f"depth-1000 filter on {endpoint}")
    check_intact(server, coll, "deep filter")


def test_empty_range_on_indexed_integer_matches_nothing(server, coll):
    """`gt` above `lt` on an indexed integer field: no point matches (it used to panic in
    the index lookup and answer 500)."""
    base = f"/collections/{coll}"
    assert_ok_response(send(server, "PUT", f"{base}/index?wait=true",
                            body={"field_name": "i", "field_schema": "integer"}), "index")
    flt = {"must": [{"key": "i", "range": {"gt": 10, "lt": 5}}]}
    r = send(server, "POST", f"{base}/points/count", body={"filter": flt, "exact": True})
    assert assert_ok_response(r, "empty range count")["result"]["count"] == 0
    r = send(server, "POST", f"{base}/points/search", body={"vector": [0.1] * DIM, "limit": 3, "filter": flt})
    assert assert_ok_response(r, "empty range search")["result"] == []
    check_intact(server, coll, "empty range")


def test_moderately_nested_filter_still_works(server, coll):
    """Depth 20 is well inside any sane limit and must be evaluated normally."""
    r = send(server, "POST", f"/collections/{coll}/points/count", body={"filter": _deep_filter(20), "exact": True})
    assert assert_ok_response(r, "depth-20 filter")["result"]["count"] == 1


def _marker_paths(server, marker: str) -> list:
    """Every file or directory whose name contains `marker`, anywhere a traversal could reach."""
    found = []
    roots = [server.workdir.parent]
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for n in dirnames + filenames:
                if marker in n:
                    found.append(os.path.join(dirpath, n))
    for d in ("/", "/etc", "/tmp"):
        try:
            found += [os.path.join(d, n) for n in os.listdir(d) if marker in n]
        except OSError:
            pass
    return found


ENCODED_NAMES = ["..%2Fescape_{u}", "..%2F..%2Fescape_{u}", "a%2Fescape_{u}", "%2E%2E", "%2E%2E%2Fescape_{u}",
                 "..%5Cescape_{u}", "escape_{u}%00", "%2Fetc%2Fescape_{u}", "%2Ftmp%2Fescape_{u}"]


@pytest.mark.parametrize("name", ENCODED_NAMES)
def test_path_traversal_encoded_names(server, coll, name):
    u = uuid.uuid4().hex[:10]
    name = name.replace("{u}", u)
    body = json.dumps({"vectors": {"size": 2, "distance": "Dot"}})
    # send the path verbatim on a socket so that no client library re-encodes or normalizes it
    req = (f"PUT /collections/{name} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
           f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
           f"{body}").encode()
    status, resp = _raw_http(server, req)
    assert_error_response(_Resp(status, resp), (400, 404, 422), f"create collection {name!r}")
    # names that decode to something containing '/' are invalid collection names (422)
    if "%2F" in name and status != 404:
        assert status == 422, f"{name!r}: expected 422, got {status} {resp[:300]!r}"
    # Qdrant also validates names of existing collections on every API: '/' and NUL can never
    # be part of one, so GET / DELETE with such a name are validation errors (422).  Other
    # invalid-for-creation names are merely missing: GET 404, DELETE 200 {"result": false}.
    decoded = urllib.parse.unquote(name)
    never_valid = "/" in decoded or "\0" in decoded
    for method in ("GET", "DELETE"):
        req = (f"{method} /collections/{name} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
               f"Connection: close\r\n\r\n").encode()
        st, rb = _raw_http(server, req)
        if never_valid:
            assert_error_response(_Resp(st, rb), (404, 422) if method == "GET" else 422, f"{method} {name!r}")
        elif method == "GET":
            assert_error_response(_Resp(st, rb), (404, 422), f"{method} {name!r}")
        else:
            assert (st == 200 and json.loads(rb).get("result") is False) or 400 <= st < 500, (
                f"{method} {name!r}: {st} {rb[:300]!r}")
    assert not _marker_paths(server, u), f"{name!r} created {_marker_paths(server, u)}"
    check_intact(server, coll, f"path {name}")


RAW_PATHS = ["/collections/../escape_{u}", "/collections/..", "/collections/a/escape_{u}", "/collections//escape_{u}",
             "/collections/./../../escape_{u}"]


@pytest.mark.parametrize("path", RAW_PATHS)
def test_path_traversal_raw_paths(server, coll, path):
    """Unencoded dot-segments and slashes: must never create anything outside storage.

    These may not route to the collection handler at all, so only a 4xx is required."""
    u = uuid.uuid4().hex[:10]
    path = path.replace("{u}", u)
    body = json.dumps({"vectors": {"size": 2, "distance": "Dot"}})
    req = (f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}").encode()
    status, resp = _raw_http(server, req)
    assert 400 <= status < 500, f"PUT {path}: {status} {resp[:300]!r}"
    assert not _marker_paths(server, u), f"{path} created {_marker_paths(server, u)}"
    check_intact(server, coll, f"raw path {path}")


def test_valid_names_with_dots_and_dashes_work(server):
    name = f"ok.name-{uuid.uuid4().hex[:6]}_x"
    r = send(server, "PUT", f"/collections/{name}", body={"vectors": {"size": 2, "distance": "Dot"}})
    assert assert_ok_response(r, "create dotted name")["result"] is True
    r = requests.get(f"{server.url}/collections/{name}", timeout=10)
    assert_ok_response(r, "get dotted name")
    assert assert_ok_response(requests.delete(f"{server.url}/collections/{name}", timeout=10))["result"] is True


def test_index_schema_is_checked_and_kept_in_canonical_form(server):
    """A payload index schema is parsed into its typed form where the request is accepted:
    a value of the wrong kind gets 400 and creates nothing, and parameters that belong to
    another index type are dropped (Qdrant ignores them), so `payload_schema` shows what the
    index really is."""
    name = f"ix_{uuid.uuid4().hex[:8]}"
    base = f"{server.url}/collections/{name}"
    assert_ok_response(requests.put(base, json={"vectors": {"size": DIM, "distance": "Dot"}}, timeout=30), "create")
    for schema in [{"type": "text", "tokenizer": "letters"},
                   {"type": "integer", "range": "yes"},
                   {"type": "text", "min_token_len": -1},
                   {"type": "text", "stemmer": {"type": "porter", "language": "english"}}]:
        r = requests.put(f"{base}/index?wait=true", json={"field_name": "k", "field_schema": schema}, timeout=30)
        assert_error_response(r, 400, f"schema {schema}")
    info = assert_ok_response(requests.get(base, timeout=30), "info")["result"]
    assert info["payload_schema"] == {}, info["payload_schema"]
    r = requests.put(f"{base}/index?wait=true", json={"field_name": "k", "field_schema": {
        "type": "keyword", "is_tenant": True, "on_disk": None, "tokenizer": "word", "lowercase": True}}, timeout=30)
    assert_ok_response(r, "keyword index")
    info = assert_ok_response(requests.get(base, timeout=30), "info")["result"]
    assert info["payload_schema"]["k"] == {
        "data_type": "keyword", "params": {"type": "keyword", "is_tenant": True}, "points": 0}, info["payload_schema"]
    requests.delete(base, timeout=30)
