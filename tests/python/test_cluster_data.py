"""Distributed point data: a 3-peer Sextant cluster against a single Sextant node.

* ``test_shard_placement``: shards are placed round-robin over the peers and point ids
  spread over them.
* ``test_differential_cluster_vs_single``: the same random collections and the same random
  writes go to the cluster (a random peer each time) and to a single node; then random reads
  (each sent to a random peer) must answer exactly as the single node does: same ids in the
  same order, scores within 1e-4, same payloads (and vectors, when asked for).

Reproduce a run with ``SEXTANT_CLUSTER_DIFF_SEED=<seed>`` (printed in every assertion
message); ``SEXTANT_CLUSTER_DIFF_COLLECTIONS`` / ``SEXTANT_CLUSTER_DIFF_READS`` change the
number of collections (default 5) and reads per collection (default 36).
All traffic goes to 127.0.0.1; every process is killed on teardown.
"""

from __future__ import annotations

import json
import math
import os
import random
import uuid

import pytest

from cluster_data_harness import Procs

SEED = int(os.environ.get("SEXTANT_CLUSTER_DIFF_SEED") or random.SystemRandom().randrange(1, 2**31))
N_COLLECTIONS = int(os.environ.get("SEXTANT_CLUSTER_DIFF_COLLECTIONS") or 5)
READS_PER_COLLECTION = int(os.environ.get("SEXTANT_CLUSTER_DIFF_READS") or 36)
SCORE_TOL = 1e-4
VECTOR_TOL = 1e-4
MAX_RECORDED = 25

DISTANCES = ["Cosine", "Euclid", "Dot", "Manhattan"]
WORDS = ["alpha", "beta", "gamma", "delta", "eps", "zeta"]
TEXT_WORDS = ["red", "fox", "lazy", "dog", "blue", "sky", "big", "cat"]

print(f"\n[test_cluster_data] SEXTANT_CLUSTER_DIFF_SEED={SEED}")


@pytest.fixture(scope="module")
def procs(tmp_path_factory):
    p = Procs(tmp_path_factory.mktemp("cluster-data"))
    try:
        p.start_cluster(3)
        p.start_single()
        yield p
    finally:
        p.cleanup()


def cluster_peers(procs: Procs):
    return [n for n in procs.nodes if n.cluster]


def single_node(procs: Procs):
    return next(n for n in procs.nodes if not n.cluster)


def wait_on_all(peers, pred, what: str, timeout: float = 20.0):
    """Poll ``pred(peer)`` on every peer until all are truthy (metadata is applied asynchronously)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        bad = []
        for p in peers:
            try:
                if not pred(p):
                    bad.append(p.name)
            except Exception as e:  # noqa: BLE001 - keep polling
                bad.append(f"{p.name}: {e!r}")
        if not bad:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not reached on {bad} within {timeout}s")
        time.sleep(0.05)


def collection_visible(name):
    return lambda p: p.call("GET", f"/collections/{name}", timeout=5).status_code == 200


# ---------------------------------------------------------------------------
# 1. shard placement
# ---------------------------------------------------------------------------


def test_shard_placement(procs):
    peers = cluster_peers(procs)
    name = f"placement_{uuid.uuid4().hex[:6]}"
    peers[0].ok("PUT", f"/collections/{name}", {"vectors": {"size": 4, "distance": "Dot"}, "shard_number": 6})
    wait_on_all(peers, collection_visible(name), f"collection {name} visible")
    ids = {p.peer_id for p in peers}

    views = {p.name: p.ok("GET", f"/collections/{name}/cluster") for p in peers}
    owner = {}
    for p in peers:
        v = views[p.name]
        assert v["peer_id"] == p.peer_id, views
        assert v["shard_count"] == 6, views
        assert len(v["local_shards"]) == 2, f"{p.name} local shards: {views}"
        assert len(v["remote_shards"]) == 4, f"{p.name} remote shards: {views}"
        assert v["shard_transfers"] == [], views
        for s in v["local_shards"]:
            assert s["state"] == "Active", views
            assert s["shard_id"] not in owner, f"shard {s['shard_id']} local on two peers: {views}"
            owner[s["shard_id"]] = p.peer_id
        seen = {s["shard_id"] for s in v["local_shards"]} | {s["shard_id"] for s in v["remote_shards"]}
        assert seen == set(range(6)), f"{p.name} does not list every shard exactly once: {views}"
        assert len(v["local_shards"]) + len(v["remote_shards"]) == 6, views
    assert set(owner) == set(range(6)), views
    # every peer's view of the remote shards agrees with the owners' own reports
    for p in peers:
        for s in views[p.name]["remote_shards"]:
            assert s["peer_id"] in ids and s["peer_id"] != p.peer_id, views
            assert owner[s["shard_id"]] == s["peer_id"], f"{p.name} disagrees on shard {s['shard_id']}: {views}"

    rng = random.Random(f"{SEED}-placement")
    n = 600
    pts = []
    for i in range(n):
        pid = i * 7 + 3 if i % 3 else str(uuid.UUID(int=rng.getrandbits(128)))
        pts.append({"id": pid, "vector": [rng.uniform(-1, 1) for _ in range(4)], "payload": {"i": i}})
    for k in range(0, n, 150):
        peers[1].ok("PUT", f"/collections/{name}/points?wait=true", {"points": pts[k:k + 150]})

    views = {p.name: p.ok("GET", f"/collections/{name}/cluster") for p in peers}
    per_peer = {name_: sum(s["points_count"] for s in v["local_shards"]) for name_, v in views.items()}
    assert sum(per_peer.values()) == n, f"seed={SEED} local points_count per peer {per_peer} != {n}: {views}"
    for name_, c in per_peer.items():
        assert c >= 0.15 * n, f"seed={SEED} {name_} holds only {c} of {n} points: {per_peer}"
    for v in views.values():
        for s in v["local_shards"]:
            assert s["points_count"] > 0, f"an empty shard out of {n} points: {views}"
    for p in peers:
        assert p.ok("POST", f"/collections/{name}/points/count", {"exact": True})["count"] == n
    peers[2].ok("DELETE", f"/collections/{name}")


# ---------------------------------------------------------------------------
# 2. differential: cluster vs single node
# ---------------------------------------------------------------------------


class Mismatch(AssertionError):
    pass


def rdense(rng, dim):
    while True:
        v = [round(rng.uniform(-1, 1), 5) for _ in range(dim)]
        if sum(abs(x) for x in v) > 0.2:
            return v


def rscalar(rng):
    t = rng.randint(0, 3)
    if t == 0:
        return rng.randint(-5, 5)
    if t == 1:
        return round(rng.uniform(-10, 10), 3)
    if t == 2:
        return rng.choice(WORDS)
    return rng.random() < 0.5


def rpayload(rng):
    p = {}

    def maybe(key, fn, prob=0.8):
        if rng.random() < prob:
            p[key] = fn()

    maybe("n", lambda: rng.randint(0, 8) if rng.random() < 0.8 else [rng.randint(0, 8) for _ in range(rng.randint(0, 3))])
    maybe("f", lambda: round(rng.uniform(-50, 50), 4))
    maybe("s", lambda: rng.choice(WORDS) if rng.random() < 0.7 else rng.sample(WORDS, rng.randint(0, 3)))
    maybe("b", lambda: rng.random() < 0.5)
    maybe("u", lambda: rng.random(), 0.9)  # order_by key: distinct values by construction
    maybe("txt", lambda: " ".join(rng.choice(TEXT_WORDS) for _ in range(rng.randint(1, 5))), 0.5)
    maybe("geo", lambda: {"lon": round(rng.uniform(-20, 40), 5), "lat": round(rng.uniform(30, 65), 5)}, 0.5)
    maybe("nul", lambda: rng.choice([None, 1, "x", [], [None]]), 0.4)
    maybe("lst", lambda: [rscalar(rng) for _ in range(rng.randint(0, 4))], 0.6)
    maybe("obj", lambda: {
        "a": rng.randint(0, 5),
        "b": rng.choice(WORDS),
        "arr": [{"x": rng.randint(0, 5), "y": rng.choice(WORDS)} for _ in range(rng.randint(0, 3))],
        **({"deep": {"z": rng.randint(0, 3), "t": [rng.choice(WORDS)]}} if rng.random() < 0.5 else {}),
    }, 0.7)
    return p


def rrange(rng, lo, hi):
    b = {}
    if rng.random() < 0.8:
        b[rng.choice(["gt", "gte"])] = lo
    if rng.random() < 0.8:
        b[rng.choice(["lt", "lte"])] = hi
    return b or {"gte": lo}


def rcondition(rng, ids, depth):
    kinds = ["match_n", "match_s", "match_b", "any_s", "any_n", "except_s", "range_n", "range_f", "range_u",
             "has_id", "is_empty", "is_null", "values_count", "nested", "deep", "text", "geo"]
    if depth < 2:
        kinds += ["sub", "sub"]
    k = rng.choice(kinds)
    if k == "match_n":
        return {"key": rng.choice(["n", "lst", "obj.a"]), "match": {"value": rng.randint(0, 8)}}
    if k == "match_s":
        return {"key": rng.choice(["s", "lst", "obj.b"]), "match": {"value": rng.choice(WORDS)}}
    if k == "match_b":
        return {"key": rng.choice(["b", "lst"]), "match": {"value": rng.random() < 0.5}}
    if k == "any_s":
        return {"key": rng.choice(["s", "lst", "obj.b"]), "match": {"any": rng.sample(WORDS, rng.randint(1, 3))}}
    if k == "any_n":
        return {"key": rng.choice(["n", "obj.a"]), "match": {"any": rng.sample(range(9), rng.randint(1, 4))}}
    if k == "except_s":
        return {"key": rng.choice(["s", "obj.b"]), "match": {"except": rng.sample(WORDS, rng.randint(1, 3))}}
    if k == "range_n":
        lo = rng.randint(-2, 8)
        return {"key": rng.choice(["n", "obj.a", "lst"]), "range": rrange(rng, lo, lo + rng.randint(0, 6))}
    if k == "range_f":
        lo = round(rng.uniform(-50, 50), 3)
        return {"key": "f", "range": rrange(rng, lo, lo + round(rng.uniform(0, 60), 3))}
    if k == "range_u":
        lo = round(rng.uniform(0, 0.8), 3)
        return {"key": "u", "range": rrange(rng, lo, lo + round(rng.uniform(0.1, 0.8), 3))}
    if k == "has_id":
        pool = ids + [rid(rng, "mixed") for _ in range(3)]
        return {"has_id": rng.sample(pool, min(len(pool), rng.randint(1, 12)))}
    if k == "is_empty":
        return {"is_empty": {"key": rng.choice(["s", "n", "nul", "lst", "obj.arr", "missing"])}}
    if k == "is_null":
        return {"is_null": {"key": rng.choice(["nul", "s", "lst", "missing"])}}
    if k == "values_count":
        lo = rng.randint(0, 3)
        return {"key": rng.choice(["lst", "s", "n", "obj.arr"]),
                "values_count": {rng.choice(["gt", "gte"]): lo, rng.choice(["lt", "lte"]): lo + rng.randint(0, 3)}}
    if k == "nested":
        inner = [{"key": "x", "range": {"gte": rng.randint(0, 5)}}]
        if rng.random() < 0.6:
            inner.append({"key": "y", "match": {"value": rng.choice(WORDS)}})
        return {"nested": {"key": "obj.arr", "filter": {"must": inner}}}
    if k == "deep":
        if rng.random() < 0.5:
            return {"key": "obj.deep.z", "match": {"value": rng.randint(0, 3)}}
        return {"key": "obj.arr[].x", "match": {"value": rng.randint(0, 5)}}
    if k == "text":
        return {"key": "txt", "match": {"text": rng.choice(TEXT_WORDS)}}
    if k == "geo":
        lon, lat = rng.uniform(-20, 30), rng.uniform(35, 65)
        return {"key": "geo", "geo_bounding_box": {
            "top_left": {"lon": round(lon, 3), "lat": round(lat, 3)},
            "bottom_right": {"lon": round(lon + rng.uniform(10, 40), 3), "lat": round(lat - rng.uniform(5, 25), 3)}}}
    return rfilter(rng, ids, depth + 1)


def rfilter(rng, ids, depth=0):
    f = {}
    for clause, prob, most in (("must", 0.45, 2), ("should", 0.45, 3), ("must_not", 0.3, 2)):
        if rng.random() < prob:
            f[clause] = [rcondition(rng, ids, depth) for _ in range(rng.randint(1, most))]
    if rng.random() < 0.1:
        conds = [rcondition(rng, ids, depth) for _ in range(rng.randint(2, 3))]
        f["min_should"] = {"conditions": conds, "min_count": rng.randint(1, len(conds))}
    if not f:
        f["must"] = [rcondition(rng, ids, depth)]
    return f


def rid(rng, kind):
    if kind == "int" or (kind == "mixed" and rng.random() < 0.6):
        return rng.randint(0, 2000)
    return str(uuid.UUID(int=rng.getrandbits(128)))


# -- comparison -------------------------------------------------------------


def close(a, b, tol):
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


def vec_close(a, b):
    if isinstance(a, dict) and isinstance(b, dict):
        return set(a) == set(b) and all(vec_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(vec_close(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return close(float(a), float(b), VECTOR_TOL)
    return a == b


def diff_points(c_pts, s_pts) -> str | None:
    """None if the two point lists agree (ids in order, scores, payloads, vectors, order values)."""
    if not isinstance(c_pts, list) or not isinstance(s_pts, list):
        return f"not lists: {type(c_pts).__name__} / {type(s_pts).__name__}"
    c_ids = [p.get("id") for p in c_pts]
    s_ids = [p.get("id") for p in s_pts]
    if c_ids != s_ids:
        return f"ids differ:\n    cluster: {c_ids}\n    single:  {s_ids}"
    for c, s in zip(c_pts, s_pts):
        keys = (set(c) | set(s)) - {"version", "shard_key"}
        for k in sorted(keys):
            a, b = c.get(k), s.get(k)
            if k in ("score", "order_value") and isinstance(a, (int, float)) and isinstance(b, (int, float)):
                if not close(float(a), float(b), SCORE_TOL):
                    return f"id {c['id']}: {k} {a} != {b}"
            elif k == "vector":
                if not vec_close(a, b):
                    return f"id {c['id']}: vector {a} != {b}"
            elif a != b:
                return f"id {c['id']}: {k} differs:\n    cluster: {a!r}\n    single:  {b!r}"
    return None


def diff_result(kind: str, c, s) -> str | None:
    if kind == "points":  # list of points
        return diff_points(c, s)
    if kind == "query":  # {"points": [...]}
        return diff_points(c.get("points"), s.get("points"))
    if kind == "batch_points":
        if len(c) != len(s):
            return f"batch sizes {len(c)} != {len(s)}"
        for i, (a, b) in enumerate(zip(c, s)):
            d = diff_points(a, b)
            if d:
                return f"batch[{i}]: {d}"
        return None
    if kind == "batch_query":
        if len(c) != len(s):
            return f"batch sizes {len(c)} != {len(s)}"
        for i, (a, b) in enumerate(zip(c, s)):
            d = diff_points(a.get("points"), b.get("points"))
            if d:
                return f"batch[{i}]: {d}"
        return None
    if kind == "scroll":
        d = diff_points(c.get("points"), s.get("points"))
        if d:
            return d
        if c.get("next_page_offset") != s.get("next_page_offset"):
            return f"next_page_offset {c.get('next_page_offset')!r} != {s.get('next_page_offset')!r}"
        return None
    if kind == "record":  # GET /points/{id}
        return diff_points([c], [s])
    if c != s:
        return f"{c!r} != {s!r}"
    return None


def scores_distinct(points, tol=1e-6) -> bool:
    sc = [p["score"] for p in points]
    return all(abs(a - b) > tol for a, b in zip(sc, sc[1:]))


def short(x, n=1500) -> str:
    t = json.dumps(x, sort_keys=True)
    return t if len(t) <= n else t[:n] + f"... ({len(t)} chars)"


# -- the run ------------------------------------------------------------------


class Collection:
    def __init__(self, run: "Run", idx: int):
        self.run = run
        self.rng = random.Random(f"{SEED}-{idx}")
        rng = self.rng
        self.name = f"cd_{SEED}_{idx}_{uuid.uuid4().hex[:6]}"
        self.id_kind = rng.choice(["int", "int", "uuid", "mixed"])
        if rng.random() < 0.5:
            self.named = False
            self.dense = {"": (rng.randint(2, 8), rng.choice(DISTANCES))}
        else:
            self.named = True
            names = rng.sample(["v1", "v2", "v3", "img"], rng.randint(1, 3))
            self.dense = {n: (rng.randint(2, 8), rng.choice(DISTANCES)) for n in names}
        self.shard_number = rng.choice([None, None, None, 1, 2, 5, 6])
        self.ids: list = []

    def describe(self) -> str:
        return (f"collection={self.name} ids={self.id_kind} shard_number={self.shard_number} "
                f"vectors={ {k: v for k, v in self.dense.items()} }")

    # -- helpers -------------------------------------------------------------
    def vectors_config(self):
        if not self.named:
            size, dist = self.dense[""]
            return {"size": size, "distance": dist}
        return {n: {"size": s, "distance": d} for n, (s, d) in self.dense.items()}

    def point_vector(self, partial=False):
        rng = self.rng
        if not self.named:
            return rdense(rng, self.dense[""][0])
        out = {}
        for n, (size, _) in self.dense.items():
            if rng.random() < (0.5 if partial else 0.12):
                continue
            out[n] = rdense(rng, size)
        if not out:
            n = rng.choice(list(self.dense))
            out[n] = rdense(rng, self.dense[n][0])
        return out

    def path(self, suffix=""):
        return f"/collections/{self.name}{suffix}"

    def some_ids(self, lo=1, hi=6, missing=0.2):
        rng = self.rng
        out = rng.sample(self.ids, min(len(self.ids), rng.randint(lo, hi))) if self.ids else []
        if rng.random() < missing or not out:
            out.append(rid(rng, self.id_kind))
        return list(dict.fromkeys(out))

    def selector(self, filter_prob=0.35):
        if self.rng.random() < filter_prob:
            return {"filter": rfilter(self.rng, self.ids)}
        return {"points": self.some_ids()}

    # -- setup and writes ----------------------------------------------------------
    def create(self):
        body = {"vectors": self.vectors_config()}
        if self.shard_number is not None:
            body["shard_number"] = self.shard_number
        self.run.write("PUT", self.path(), body, wait=False)
        wait_on_all(self.run.peers, collection_visible(self.name), f"{self.describe()} visible on every peer")
        # order_by needs a range index on "u"; "s" gets a keyword index (filters use it)
        for field, schema in (("u", "float"), ("s", "keyword")):
            self.run.write("PUT", self.path("/index"), {"field_name": field, "field_schema": schema})

            def indexed(p, field=field):
                r = p.call("GET", self.path(), timeout=5)
                return r.status_code == 200 and field in r.json()["result"].get("payload_schema", {})

            wait_on_all(self.run.peers, indexed, f"{self.describe()} index on {field!r} visible on every peer")

    def new_point(self, pid):
        return {"id": pid, "vector": self.point_vector(), "payload": rpayload(self.rng)}

    def initial_upserts(self):
        rng = self.rng
        n = rng.randint(60, 220)
        pts = {}
        for _ in range(n * 3):
            if len(pts) >= n:
                break
            pid = rid(rng, self.id_kind)
            pts[pid] = self.new_point(pid)
        pts = list(pts.values())
        i = 0
        while i < len(pts):
            chunk = pts[i:i + rng.randint(10, 60)]
            i += len(chunk)
            if rng.random() < 0.6 or self.named:
                self.run.write("PUT", self.path("/points"), {"points": chunk})
            else:
                self.run.write("PUT", self.path("/points"), {"batch": {
                    "ids": [p["id"] for p in chunk],
                    "vectors": [p["vector"] for p in chunk],
                    "payloads": [p["payload"] for p in chunk]}})
        self.ids = [p["id"] for p in pts]

    def random_write(self):
        rng = self.rng
        op = rng.choice(["upsert", "upsert", "delete", "delete", "set_payload", "set_payload_key", "overwrite",
                         "delete_payload", "clear_payload", "update_vectors", "update_vectors", "delete_vectors",
                         "batch"])
        w = self.run.write
        if op == "upsert":
            pts = {}
            for _ in range(rng.randint(1, 15)):
                pid = rng.choice(self.ids) if rng.random() < 0.4 and self.ids else rid(rng, self.id_kind)
                pts[pid] = self.new_point(pid)
            w("PUT", self.path("/points"), {"points": list(pts.values())})
            self.ids = list(dict.fromkeys(self.ids + list(pts)))
        elif op == "delete":
            w("POST", self.path("/points/delete"), self.selector(0.4))
        elif op == "set_payload":
            w("POST", self.path("/points/payload"), {"payload": rpayload(rng), **self.selector()})
        elif op == "set_payload_key":
            w("POST", self.path("/points/payload"), {"payload": {"x": rng.randint(0, 5), "b": rng.choice(WORDS)},
                                                      "key": rng.choice(["obj", "obj.deep", "newobj"]),
                                                      **self.selector()})
        elif op == "overwrite":
            w("PUT", self.path("/points/payload"), {"payload": rpayload(rng), **self.selector()})
        elif op == "delete_payload":
            keys = rng.sample(["n", "f", "s", "b", "u", "txt", "geo", "nul", "lst", "obj", "obj.a", "obj.arr"],
                              rng.randint(1, 3))
            w("POST", self.path("/points/payload/delete"), {"keys": keys, **self.selector()})
        elif op == "clear_payload":
            w("POST", self.path("/points/payload/clear"), self.selector(0.25))
        elif op == "update_vectors":
            pv = [{"id": i, "vector": self.point_vector(partial=True)} for i in self.some_ids(1, 8, missing=0.15)]
            w("PUT", self.path("/points/vectors"), {"points": pv})
        elif op == "delete_vectors":
            if not self.named:
                return
            w("POST", self.path("/points/vectors/delete"),
              {"vector": rng.sample(list(self.dense), 1), **self.selector(0.3)})
        elif op == "batch":
            ops = []
            for _ in range(rng.randint(2, 4)):
                k = rng.choice(["upsert", "delete", "set_payload", "overwrite_payload", "clear_payload"])
                if k == "upsert":
                    pts = {}
                    for _ in range(rng.randint(1, 8)):
                        pid = rid(rng, self.id_kind)
                        pts[pid] = self.new_point(pid)
                    ops.append({"upsert": {"points": list(pts.values())}})
                    self.ids = list(dict.fromkeys(self.ids + list(pts)))
                elif k == "delete":
                    ops.append({"delete": self.selector(0.3)})
                elif k in ("set_payload", "overwrite_payload"):
                    ops.append({k: {"payload": rpayload(rng), **self.selector(0.3)}})
                else:
                    ops.append({"clear_payload": self.selector(0.0)})
            w("POST", self.path("/points/batch"), {"operations": ops})

    def compare_full_state(self):
        """Every point (payload + vectors), via a random peer, must equal the single node's."""
        body = {"limit": 100000, "with_payload": True, "with_vector": True}
        self.run.read("scroll", "POST", self.path("/points/scroll"), body, self, fatal=True)

    # -- reads ------------------------------------------------------------------------
    def live_ids(self):
        res = self.run.single.ok("POST", self.path("/points/scroll"), {"limit": 100000, "with_payload": False})
        return [p["id"] for p in res["points"]]

    def pick_filter(self, prob=0.6):
        """A random filter (mostly one that selects something), or None."""
        rng = self.rng
        if rng.random() >= prob:
            return None
        allow_empty = rng.random() < 0.15
        for _ in range(15):
            f = rfilter(rng, self.ids)
            if allow_empty:
                return f
            r = self.run.single.ok("POST", self.path("/points/count"), {"filter": f, "exact": True})
            if r["count"] > 0:
                return f
        return None

    def with_payload(self):
        return self.rng.choice([True, True, False, ["n", "s", "obj"], ["u", "obj.deep"],
                                {"exclude": ["txt", "obj.arr"]}, {"include": ["lst", "geo"]}])

    def with_vector(self):
        opts = [False, False, False, True]
        if self.named:
            opts.append([self.rng.choice(list(self.dense))])
        return self.rng.choice(opts)

    def nearest_vector(self, using, flt, window):
        """A query vector whose single-node ranking has no (near-)exact score ties in ``window``."""
        for _ in range(12):
            v = rdense(self.rng, self.dense[using][0])
            body = {"query": v, "limit": window + 1, "with_payload": False}
            if using:
                body["using"] = using
            if flt:
                body["filter"] = flt
            pts = self.run.single.ok("POST", self.path("/points/query"), body)["points"]
            if scores_distinct(pts):
                return v, pts
        raise AssertionError(f"[seed={SEED}] {self.describe()}: could not find a tie-free query vector")

    def search_body(self, flat_api: bool):
        rng = self.rng
        using = rng.choice(list(self.dense))
        flt = self.pick_filter()
        limit = rng.randint(1, 25)
        offset = rng.choice([None, None, 0, rng.randint(1, 15)])
        v, full = self.nearest_vector(using, flt, limit + (offset or 0))
        body = {"limit": limit, "with_payload": self.with_payload(), "with_vector": self.with_vector()}
        if flat_api:
            body["vector"] = {"name": using, "vector": v} if using else v
        else:
            body["query"] = v if rng.random() < 0.7 else {"nearest": v}
            if using:
                body["using"] = using
        if offset is not None:
            body["offset"] = offset
        if flt:
            body["filter"] = flt
        if full and rng.random() < 0.3:
            k = rng.randrange(len(full))
            nxt = full[k + 1]["score"] if k + 1 < len(full) else full[k]["score"] - 1.0
            body["score_threshold"] = (full[k]["score"] + nxt) / 2
        if rng.random() < 0.3:
            body["params"] = {"exact": True}
        return body

    def prefetch_body(self):
        rng = self.rng
        names = list(self.dense)
        live = self.live_ids()

        def leaf(limit):
            using = rng.choice(names)
            if live and rng.random() < 0.15:
                b = {"query": rng.choice(live), "limit": limit}  # by point id (excluded from results)
            else:
                v, full = self.nearest_vector(using, None, limit)
                b = {"query": v, "limit": limit}
                if full and rng.random() < 0.15:
                    k = rng.randrange(len(full))
                    nxt = full[k + 1]["score"] if k + 1 < len(full) else full[k]["score"] - 1.0
                    b["score_threshold"] = (full[k]["score"] + nxt) / 2
            if using:
                b["using"] = using
            if rng.random() < 0.3:
                f = self.pick_filter(1.0)
                if f:
                    b["filter"] = f
            return b

        def fusion():
            x = rng.random()
            if x < 0.4:
                return {"fusion": "rrf"}
            if x < 0.8:
                return {"fusion": "dbsf"}
            return {"rrf": {"k": rng.randint(1, 60)}}

        kind = rng.choice(["fusion", "fusion", "fusion", "rescore", "rescore_order", "nested", "no_query"])
        body = {"limit": rng.randint(1, 20), "with_payload": self.with_payload(), "with_vector": self.with_vector()}
        if rng.random() < 0.3:
            body["offset"] = rng.randint(1, 8)
        if kind == "fusion":
            body["prefetch"] = [leaf(rng.randint(5, 40)) for _ in range(rng.randint(2, 3))]
            body["query"] = fusion()
        elif kind == "rescore":
            body["prefetch"] = leaf(rng.randint(10, 60)) if rng.random() < 0.7 else [
                leaf(rng.randint(5, 30)) for _ in range(2)]
            using = rng.choice(names)
            body["query"] = rdense(rng, self.dense[using][0])
            if using:
                body["using"] = using
        elif kind == "rescore_order":
            body["prefetch"] = leaf(rng.randint(10, 60))
            body["query"] = {"order_by": {"key": "u", "direction": rng.choice(["asc", "desc"])}}
        elif kind == "nested":
            inner = {"prefetch": [leaf(rng.randint(10, 40)) for _ in range(2)], "query": fusion(),
                     "limit": rng.randint(5, 30)}
            body["prefetch"] = [inner, leaf(rng.randint(5, 20))]
            body["query"] = fusion()
        else:
            body["prefetch"] = leaf(rng.randint(5, 40))
        if kind == "fusion" and rng.random() < 0.2:
            # a threshold on the fused scores, between two consecutive single-node scores
            probe = dict(body, limit=100, offset=0, with_payload=False, with_vector=False)
            r = self.run.single.call("POST", self.path("/points/query"), probe)
            pts = r.json()["result"]["points"] if r.status_code == 200 else []  # 400: an id input lacks `using`
            if len(pts) >= 2:
                k = rng.randrange(len(pts) - 1)
                if pts[k]["score"] != pts[k + 1]["score"]:
                    body["score_threshold"] = (pts[k]["score"] + pts[k + 1]["score"]) / 2
        if rng.random() < 0.3:
            f = self.pick_filter(1.0)
            if f:
                body["filter"] = f
        return body

    def recommend_query(self, live):
        rng = self.rng
        using = rng.choice(list(self.dense))
        pos = rng.sample(live, min(len(live), rng.randint(1, 3)))
        neg = rng.sample(live, min(len(live), rng.randint(0, 2)))
        if rng.random() < 0.3:
            pos.append(rdense(rng, self.dense[using][0]))
        strategy = rng.choice(["average_vector", "best_score", "sum_scores"])
        if strategy != "average_vector" and neg and rng.random() < 0.2:
            pos = []  # negative examples only
        return using, pos, neg, strategy

    def random_read(self, i):
        rng = self.rng
        r = self.run.read
        kind = rng.choice(["search", "search", "query", "query", "query_batch", "search_batch", "by_id",
                           "prefetch", "prefetch", "prefetch", "recommend_q", "no_query", "recommend", "recommend_batch", "order_by_q",
                           "scroll_pages", "scroll_pages", "scroll_order", "count", "count", "retrieve",
                           "get_point"])
        live = self.live_ids()
        if kind == "search":
            r("points", "POST", self.path("/points/search"), self.search_body(True), self)
        elif kind == "query":
            r("query", "POST", self.path("/points/query"), self.search_body(False), self)
        elif kind == "search_batch":
            r("batch_points", "POST", self.path("/points/search/batch"),
              {"searches": [self.search_body(True) for _ in range(rng.randint(1, 3))]}, self)
        elif kind == "query_batch":
            qs = [self.search_body(False) if rng.random() < 0.6 else self.prefetch_body()
                  for _ in range(rng.randint(1, 3))]
            r("batch_query", "POST", self.path("/points/query/batch"), {"searches": qs}, self)
        elif kind == "by_id":
            if not live:
                return
            using = rng.choice(list(self.dense))
            pid = rng.choice(live)
            body = {"query": pid if rng.random() < 0.7 else {"nearest": pid}, "limit": rng.randint(1, 20),
                    "with_payload": self.with_payload(), "with_vector": self.with_vector()}
            if rng.random() < 0.3:
                body["offset"] = rng.randint(1, 6)
            if using:
                body["using"] = using
            flt = self.pick_filter(0.4)
            if flt:
                body["filter"] = flt
            r("query", "POST", self.path("/points/query"), body, self)
        elif kind == "prefetch":
            r("query", "POST", self.path("/points/query"), self.prefetch_body(), self)
        elif kind == "recommend_q":
            if not live:
                return
            using, pos, neg, strategy = self.recommend_query(live)
            body = {"query": {"recommend": {"positive": pos, "negative": neg, "strategy": strategy}},
                    "limit": rng.randint(1, 20), "with_payload": self.with_payload()}
            if using:
                body["using"] = using
            flt = self.pick_filter(0.4)
            if flt:
                body["filter"] = flt
            r("query", "POST", self.path("/points/query"), body, self)
        elif kind in ("recommend", "recommend_batch"):
            if not live:
                return
            bodies = []
            for _ in range(1 if kind == "recommend" else rng.randint(1, 3)):
                using, pos, neg, strategy = self.recommend_query(live)
                body = {"positive": pos, "negative": neg, "strategy": strategy, "limit": rng.randint(1, 20),
                        "with_payload": self.with_payload(), "with_vector": self.with_vector()}
                if using:
                    body["using"] = using
                if rng.random() < 0.3:
                    body["offset"] = rng.randint(1, 6)
                flt = self.pick_filter(0.4)
                if flt:
                    body["filter"] = flt
                bodies.append(body)
            if kind == "recommend":
                r("points", "POST", self.path("/points/recommend"), bodies[0], self)
            else:
                r("batch_points", "POST", self.path("/points/recommend/batch"), {"searches": bodies}, self)
        elif kind == "no_query":
            body = {"limit": rng.randint(1, 30), "with_payload": self.with_payload()}
            if rng.random() < 0.3:
                body["offset"] = rng.randint(1, 10)
            flt = self.pick_filter(0.6)
            if flt:
                body["filter"] = flt
            r("query", "POST", self.path("/points/query"), body, self)
        elif kind == "order_by_q":
            body = {"query": {"order_by": {"key": "u", "direction": rng.choice(["asc", "desc"])}},
                    "limit": rng.randint(1, 30), "with_payload": self.with_payload()}
            flt = self.pick_filter(0.5)
            if flt:
                body["filter"] = flt
            r("query", "POST", self.path("/points/query"), body, self)
        elif kind == "scroll_pages":
            self.scroll_pages()
        elif kind == "scroll_order":
            body = {"limit": rng.randint(1, 40), "with_payload": self.with_payload(),
                    "order_by": rng.choice(["u", {"key": "u", "direction": rng.choice(["asc", "desc"])},
                                            {"key": "u", "start_from": round(rng.uniform(0, 1), 3),
                                             "direction": rng.choice(["asc", "desc"])}])}
            flt = self.pick_filter(0.5)
            if flt:
                body["filter"] = flt
            r("scroll", "POST", self.path("/points/scroll"), body, self)
        elif kind == "count":
            body = {"exact": True}
            flt = self.pick_filter(0.85)
            if flt:
                body["filter"] = flt
            r("count", "POST", self.path("/points/count"), body, self)
        elif kind == "retrieve":
            ids = (rng.sample(live, min(len(live), rng.randint(1, 10))) if live else []) + \
                [rid(rng, self.id_kind) for _ in range(rng.randint(0, 2))]
            r("points", "POST", self.path("/points"),
              {"ids": list(dict.fromkeys(ids)), "with_payload": self.with_payload(),
               "with_vector": self.with_vector()}, self)
        elif kind == "get_point":
            pid = rng.choice(live) if live and rng.random() < 0.85 else rid(rng, self.id_kind)
            r("record", "GET", self.path(f"/points/{pid}"), None, self)

    def scroll_pages(self):
        """Walk every page (each page from a random peer) and compare page by page."""
        rng = self.rng
        limit = rng.randint(1, 40)
        base = {"limit": limit, "with_payload": self.with_payload(), "with_vector": self.with_vector()}
        flt = self.pick_filter(0.5)
        if flt:
            base["filter"] = flt
        live = self.live_ids()
        total = len(live)
        c_all, s_all = [], []
        offset = None
        if live and rng.random() < 0.3:
            offset = rng.choice(live) if rng.random() < 0.5 else rid(rng, self.id_kind)
            base["offset"] = offset
        for page in range(total // limit + 3):
            body = dict(base)
            if offset is not None:
                body["offset"] = offset
            c, s = self.run.read("scroll", "POST", self.path("/points/scroll"), body, self,
                                 what=f"scroll page {page}")
            if c is None:
                return
            c_all += [p["id"] for p in c["points"]]
            s_all += [p["id"] for p in s["points"]]
            offset = s["next_page_offset"]
            if offset is None:
                break
        else:
            raise AssertionError(f"[seed={SEED}] scroll did not end within {total // limit + 3} pages")
        if c_all != s_all:
            self.run.mismatch({"what": "scroll sequence", "collection": self.describe(), "request": base,
                               "diff": f"cluster ids {c_all}\n single ids {s_all}"})

    def run_all(self):
        self.create()
        self.initial_upserts()
        for _ in range(self.rng.randint(6, 14)):
            self.random_write()
        self.run.read("count", "POST", self.path("/points/count"), {"exact": True}, self, fatal=True)
        self.compare_full_state()
        for i in range(READS_PER_COLLECTION):
            self.random_read(i)


class Run:
    def __init__(self, procs):
        self.peers = cluster_peers(procs)
        self.single = single_node(procs)
        self.rng = random.Random(f"{SEED}-peers")
        self.log: list[str] = []
        self.failures: list[dict] = []
        self.reads = 0
        self.stats: dict[str, int] = {}

    def ctx(self) -> str:
        tail = "\n    ".join(self.log[-12:])
        return f"[SEXTANT_CLUSTER_DIFF_SEED={SEED}] last ops:\n    {tail}"

    def write(self, method, path, body, wait=True):
        peer = self.rng.choice(self.peers)
        full = f"{path}?wait=true" if wait else path
        c = peer.call(method, full, body)
        s = self.single.call(method, full, body)
        self.log.append(f"{peer.name} {method} {full} {short(body, 300)} -> cluster {c.status_code} / single "
                        f"{s.status_code}")
        op = path.split("/", 3)[3] if path.count("/") >= 3 else "(collection)"
        wkey = f"write {method} {op} -> {s.status_code}"
        self.stats[wkey] = self.stats.get(wkey, 0) + 1
        if c.status_code != s.status_code:
            raise AssertionError(
                f"write answered differently: cluster({peer.name}) {c.status_code} {c.text[:400]} vs single "
                f"{s.status_code} {s.text[:400]}\n  request: {method} {full} {short(body)}\n{self.ctx()}")
        assert s.status_code in (200, 404), f"single node rejected a write: {s.status_code} {s.text[:400]}\n" \
                                           f"  request: {method} {full} {short(body)}\n{self.ctx()}"

    def mismatch(self, rec: dict):
        self.failures.append(rec)

    def read(self, kind, method, path, body, coll: Collection, fatal=False, what=""):
        """The same read to a random peer and to the single node; returns both results (or None)."""
        peer = self.rng.choice(self.peers)
        self.reads += 1
        tail = path.split("/points")[-1] or "/"
        key = f"read {what.split(' ')[0] if what else kind} {'/{id}' if kind == 'record' else tail}"
        c = peer.call(method, path, body)
        s = self.single.call(method, path, body)
        rec = {"what": what or kind, "collection": coll.describe(), "peer": peer.name,
               "request": f"{method} {path} {short(body, 4000)}"}
        if c.status_code != s.status_code:
            rec["diff"] = (f"status cluster {c.status_code} {c.text[:600]}\n single {s.status_code} "
                           f"{s.text[:600]}")
        elif s.status_code != 200:
            self.stats[f"{key} -> both {s.status_code}"] = self.stats.get(f"{key} -> both {s.status_code}", 0) + 1
            return None, None  # both rejected the same way
        else:
            self.stats[key] = self.stats.get(key, 0) + 1
            cr, sr = c.json()["result"], s.json()["result"]
            d = diff_result(kind, cr, sr)
            if d is None:
                if sr in ([], {"points": []}) or (isinstance(sr, dict) and sr.get("points") == []):
                    self.stats[f"{key} (empty)"] = self.stats.get(f"{key} (empty)", 0) + 1
                return cr, sr
            rec["diff"] = d
            rec["cluster"] = short(cr, 3000)
            rec["single"] = short(sr, 3000)
        self.failures.append(rec)
        if fatal:
            raise AssertionError(self.report())
        return None, None

    def report(self) -> str:
        out = [f"[SEXTANT_CLUSTER_DIFF_SEED={SEED}] {len(self.failures)} mismatch(es) between the cluster and "
               f"the single node ({self.reads} reads):"]
        for f in self.failures[:MAX_RECORDED]:
            out.append(f"--- {f['what']} via {f.get('peer')} | {f['collection']}\n  request: {f['request']}\n"
                       f"  {f['diff']}")
            if "cluster" in f:
                out.append(f"  cluster: {f['cluster'][:1200]}\n  single:  {f['single'][:1200]}")
        out.append(self.ctx())
        return "\n".join(out)


@pytest.mark.slow
def test_differential_cluster_vs_single(procs, tmp_path):
    run = Run(procs)
    colls = [Collection(run, i) for i in range(N_COLLECTIONS)]
    try:
        for coll in colls:
            try:
                coll.run_all()
            except AssertionError as e:
                raise AssertionError(f"[SEXTANT_CLUSTER_DIFF_SEED={SEED}] {coll.describe()}: {e}") from None
        (tmp_path / "mismatches.json").write_text(json.dumps(run.failures, indent=1))
        assert not run.failures, run.report()
        assert run.reads >= 150, f"[seed={SEED}] only {run.reads} reads"
        print(f"[test_cluster_data] seed={SEED}: {run.reads} reads compared, no mismatch; "
              f"{json.dumps(dict(sorted(run.stats.items())), indent=1)}")
    finally:
        for coll in colls:
            for n in [run.single, *run.peers]:
                try:
                    n.call("DELETE", coll.path(), timeout=10)
                except Exception:  # noqa: BLE001 - best-effort cleanup
                    pass
