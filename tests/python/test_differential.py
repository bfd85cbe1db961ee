"""Seeded random differential testing: Sextant vs QdrantClient(":memory:").

Every case builds a random collection, applies the same random sequence of
writes to both systems, and then compares the answers of random reads
(query_points, scroll, count, retrieve).

Reproduce a failure with ``SEXTANT_DIFF_SEED=<seed> pytest test_differential.py -k "case_17"``;
the seed is part of every assertion message.  ``SEXTANT_DIFF_CASES`` changes the
number of cases (default 200).
"""

from __future__ import annotations

import math
import os
import random
import uuid

import pytest
from qdrant_client import QdrantClient
from qdrant_client.http import models
from qdrant_client.http.models import Distance

from qdrant_client.http.exceptions import UnexpectedResponse

from helpers import assert_points_match, assert_tied_match, haversine_m, norm_id

BASE_SEED = int(os.environ.get("SEXTANT_DIFF_SEED") or random.SystemRandom().randrange(1, 2**31))
N_CASES = int(os.environ.get("SEXTANT_DIFF_CASES") or 200)
QUERIES_PER_CASE = 8

DISTANCES = [Distance.COSINE, Distance.EUCLID, Distance.DOT, Distance.MANHATTAN]
WORDS = ["alpha", "beta", "gamma", "delta", "eps", "zeta"]
TEXT_WORDS = ["red", "fox", "lazy", "dog", "blue", "sky", "big", "cat"]
SPARSE_DIM = 24
FC = models.FieldCondition


print(f"\n[test_differential] SEXTANT_DIFF_SEED={BASE_SEED} cases={N_CASES}")


# ---------------------------------------------------------------------------
# random data
# ---------------------------------------------------------------------------


class Schema:
    """Random collection layout."""

    def __init__(self, rng: random.Random):
        self.named = rng.random() < 0.5
        if self.named:
            k = rng.randint(1, 3)
            names = rng.sample(["v1", "v2", "v3", "img"], k)
            self.dense = {n: (rng.randint(2, 8), rng.choice(DISTANCES)) for n in names}
        else:
            self.dense = {"": (rng.randint(2, 8), rng.choice(DISTANCES))}
        self.sparse = ["sp"] if rng.random() < 0.3 else []

    def vectors_config(self):
        if not self.named:
            size, dist = self.dense[""]
            return models.VectorParams(size=size, distance=dist)
        return {n: models.VectorParams(size=s, distance=d) for n, (s, d) in self.dense.items()}

    def sparse_config(self):
        return {n: models.SparseVectorParams() for n in self.sparse} or None

    def describe(self):
        return {"dense": {k: (s, d.value) for k, (s, d) in self.dense.items()}, "sparse": self.sparse}


def rand_dense(rng: random.Random, dim: int) -> list[float]:
    while True:
        v = [round(rng.uniform(-1, 1), 5) for _ in range(dim)]
        if sum(abs(x) for x in v) > 0.1:  # keep away from the zero vector (cosine)
            return v


def rand_sparse(rng: random.Random) -> models.SparseVector:
    idx = sorted(rng.sample(range(SPARSE_DIM), rng.randint(1, 6)))
    return models.SparseVector(indices=idx, values=[round(rng.uniform(0.01, 1), 5) for _ in idx])


def rand_point_vector(rng: random.Random, schema: Schema, partial: bool = False):
    if not schema.named and not schema.sparse:
        size, _ = schema.dense[""]
        return rand_dense(rng, size)
    out = {}
    for n, (size, _) in schema.dense.items():
        # named dense vectors may be absent from a point; the unnamed one is required
        if schema.named and rng.random() < (0.5 if partial else 0.1):
            continue
        out[n] = rand_dense(rng, size)
    for n in schema.sparse:
        if rng.random() < (0.5 if partial else 0.8):
            out[n] = rand_sparse(rng)
    if partial and not out:
        n = rng.choice(list(schema.dense))
        out[n] = rand_dense(rng, schema.dense[n][0])
    return out


def rand_datetime(rng: random.Random) -> str:
    y, mo, d = rng.randint(2020, 2025), rng.randint(1, 12), rng.randint(1, 28)
    h, mi, s = rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59)
    base = f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}"
    form = rng.randint(0, 3)
    if form == 0:
        return base + "Z"
    if form == 1:
        return base + f".{rng.randint(0, 999999):06d}Z"
    if form == 2:
        return base + rng.choice(["+02:00", "-05:30", "+00:00"])
    return base  # no offset: UTC


def rand_geo(rng: random.Random) -> dict:
    return {"lon": round(rng.uniform(-20, 40), 5), "lat": round(rng.uniform(30, 65), 5)}


def rand_scalar(rng: random.Random):
    t = rng.randint(0, 3)
    if t == 0:
        return rng.randint(-5, 5)
    if t == 1:
        return round(rng.uniform(-10, 10), 3)
    if t == 2:
        return rng.choice(WORDS)
    return rng.random() < 0.5


def rand_payload(rng: random.Random) -> dict:
    p = {}

    def maybe(key, fn, prob=0.8):
        if rng.random() < prob:
            p[key] = fn()

    maybe("n", lambda: rng.randint(0, 8) if rng.random() < 0.8 else [rng.randint(0, 8) for _ in range(rng.randint(0, 3))])
    maybe("f", lambda: round(rng.uniform(-50, 50), 4))
    maybe("s", lambda: rng.choice(WORDS) if rng.random() < 0.7 else rng.sample(WORDS, rng.randint(0, 3)))
    maybe("b", lambda: rng.random() < 0.5)
    maybe("mix", lambda: rand_scalar(rng), 0.7)
    maybe("txt", lambda: " ".join(rng.choice(TEXT_WORDS) for _ in range(rng.randint(1, 5))), 0.6)
    maybe("geo", lambda: rand_geo(rng) if rng.random() < 0.85 else [rand_geo(rng), rand_geo(rng)], 0.7)
    maybe("dt", lambda: rand_datetime(rng), 0.7)
    maybe("nul", lambda: rng.choice([None, None, 1, "x", [], [None], [1, None]]), 0.7)
    maybe("lst", lambda: [rand_scalar(rng) for _ in range(rng.randint(0, 4))], 0.6)
    maybe(
        "obj",
        lambda: {
            "a": rng.randint(0, 5),
            "b": rng.choice(WORDS),
            "arr": [{"x": rng.randint(0, 5), "y": rng.choice(WORDS)} for _ in range(rng.randint(0, 3))],
            **({"deep": {"z": rng.randint(0, 3)}} if rng.random() < 0.5 else {}),
        },
        0.7,
    )
    return p


def rand_id(rng: random.Random):
    if rng.random() < 0.75:
        return rng.randint(0, 300)
    return str(uuid.UUID(int=rng.getrandbits(128)))


# ---------------------------------------------------------------------------
# random filters
# ---------------------------------------------------------------------------


def rand_condition(rng: random.Random, ids: list, depth: int):
    kinds = [
        "match_n", "match_s", "match_b", "match_mix", "any_s", "any_n", "except_s", "except_n", "text",
        "range_n", "range_f", "range_dt", "has_id", "is_empty", "is_null", "values_count",
        "geo_bbox", "geo_radius", "nested", "path_dot", "path_arr", "path_deep",
    ]
    if depth < 2:
        kinds += ["sub_filter", "sub_filter"]
    k = rng.choice(kinds)
    if k == "match_n":
        return FC(key=rng.choice(["n", "lst", "obj.a"]), match=models.MatchValue(value=rng.randint(0, 8)))
    if k == "match_s":
        return FC(key=rng.choice(["s", "mix", "lst", "obj.b"]), match=models.MatchValue(value=rng.choice(WORDS)))
    if k == "match_b":
        return FC(key=rng.choice(["b", "mix", "lst"]), match=models.MatchValue(value=rng.random() < 0.5))
    if k == "match_mix":
        v = rand_scalar(rng)
        if isinstance(v, float):
            v = int(v)
        return FC(key=rng.choice(["mix", "lst"]), match=models.MatchValue(value=v))
    if k == "any_s":
        return FC(key=rng.choice(["s", "mix", "lst"]), match=models.MatchAny(any=rng.sample(WORDS, rng.randint(1, 3))))
    if k == "any_n":
        return FC(key=rng.choice(["n", "obj.a", "mix"]), match=models.MatchAny(any=rng.sample(range(0, 9), rng.randint(1, 4))))
    if k == "except_s":
        return FC(key=rng.choice(["s", "obj.b"]), match=models.MatchExcept(**{"except": rng.sample(WORDS, rng.randint(1, 3))}))
    if k == "except_n":
        return FC(key="n", match=models.MatchExcept(**{"except": rng.sample(range(0, 9), rng.randint(1, 5))}))
    if k == "text":
        return FC(key="txt", match=models.MatchText(text=" ".join(rng.sample(TEXT_WORDS, rng.randint(1, 2)))))
    if k == "range_n":
        lo = rng.randint(-2, 8)
        return FC(key=rng.choice(["n", "obj.a", "lst", "mix"]), range=rand_range(rng, lo, lo + rng.randint(0, 6)))
    if k == "range_f":
        lo = round(rng.uniform(-50, 50), 4)
        return FC(key=rng.choice(["f", "mix"]), range=rand_range(rng, lo, lo + round(rng.uniform(0, 60), 4)))
    if k == "range_dt":
        a, b = sorted([rand_datetime(rng), rand_datetime(rng)])
        bounds = {}
        for name, val in ((rng.choice(["gt", "gte"]), a), (rng.choice(["lt", "lte"]), b)):
            if rng.random() < 0.8:
                bounds[name] = val
        if not bounds:
            bounds["gte"] = a
        return FC(key="dt", range=models.DatetimeRange(**bounds))
    if k == "has_id":
        pool = ids + [rand_id(rng) for _ in range(3)]
        return models.HasIdCondition(has_id=rng.sample(pool, min(len(pool), rng.randint(1, 8))))
    if k == "is_empty":
        return models.IsEmptyCondition(is_empty=models.PayloadField(key=rng.choice(["s", "n", "nul", "lst", "obj.arr", "missing"])))
    if k == "is_null":
        return models.IsNullCondition(is_null=models.PayloadField(key=rng.choice(["nul", "s", "lst", "missing"])))
    if k == "values_count":
        lo = rng.randint(0, 3)
        vc = {}
        for name in rng.sample(["gt", "gte", "lt", "lte"], rng.randint(1, 2)):
            vc[name] = lo + (rng.randint(0, 2) if name in ("lt", "lte") else 0)
        return FC(key=rng.choice(["lst", "s", "n", "obj.arr", "geo"]), values_count=models.ValuesCount(**vc))
    if k == "geo_bbox":
        lon1, lat1 = rng.uniform(-20, 30), rng.uniform(35, 65)
        w, h = rng.uniform(5, 40), rng.uniform(5, 25)
        return FC(key="geo", geo_bounding_box=models.GeoBoundingBox(
            top_left=models.GeoPoint(lon=round(lon1, 3), lat=round(lat1, 3)),
            bottom_right=models.GeoPoint(lon=round(lon1 + w, 3), lat=round(lat1 - h, 3))))
    if k == "geo_radius":
        c = rand_geo(rng)
        return FC(key="geo", geo_radius=models.GeoRadius(center=models.GeoPoint(**c), radius=float(rng.randint(100, 2500)) * 1000))
    if k == "nested":
        inner = [FC(key="x", range=models.Range(gte=rng.randint(0, 5)))]
        if rng.random() < 0.6:
            inner.append(FC(key="y", match=models.MatchValue(value=rng.choice(WORDS))))
        return models.NestedCondition(nested=models.Nested(key="obj.arr", filter=models.Filter(must=inner)))
    if k == "path_dot":
        return FC(key="obj.deep.z", match=models.MatchValue(value=rng.randint(0, 3)))
    if k == "path_arr":
        if rng.random() < 0.5:
            return FC(key="obj.arr[].x", match=models.MatchValue(value=rng.randint(0, 5)))
        return FC(key="obj.arr[].y", match=models.MatchAny(any=rng.sample(WORDS, 2)))
    if k == "path_deep":
        return FC(key="obj.arr[].x", range=models.Range(lt=rng.randint(0, 6)))
    if k == "sub_filter":
        return rand_filter(rng, ids, depth + 1)
    raise AssertionError(k)


def rand_range(rng: random.Random, lo, hi):
    bounds = {}
    if rng.random() < 0.8:
        bounds[rng.choice(["gt", "gte"])] = lo
    if rng.random() < 0.8:
        bounds[rng.choice(["lt", "lte"])] = hi
    if not bounds:
        bounds["gte"] = lo
    return models.Range(**bounds)


def rand_filter(rng: random.Random, ids: list, depth: int = 0) -> models.Filter:
    f = {}
    for clause, prob, most in (("must", 0.4, 2), ("should", 0.5, 3), ("must_not", 0.35, 2)):
        if rng.random() < prob:
            f[clause] = [rand_condition(rng, ids, depth) for _ in range(rng.randint(1, most))]
    if rng.random() < 0.15:
        conds = [rand_condition(rng, ids, depth) for _ in range(rng.randint(2, 4))]
        f["min_should"] = models.MinShould(conditions=conds, min_count=rng.randint(1, len(conds)))
    if not f:
        f["must"] = [rand_condition(rng, ids, depth)]
    return models.Filter(**f)


def geo_conditions(flt):
    """Yield every geo_radius condition in a filter (to keep points away from the radius edge)."""
    if flt is None:
        return
    if isinstance(flt, models.Filter):
        for clause in (flt.must, flt.should, flt.must_not):
            for c in clause or []:
                yield from geo_conditions(c)
        if flt.min_should:
            for c in flt.min_should.conditions:
                yield from geo_conditions(c)
    elif isinstance(flt, models.FieldCondition) and flt.geo_radius is not None:
        yield flt


def geo_edge_free(flt, payloads) -> bool:
    """True if no stored geo point lies within 0.5% of any geo_radius boundary in the filter."""
    for cond in geo_conditions(flt):
        c, r = cond.geo_radius.center, cond.geo_radius.radius
        for p in payloads:
            g = p.get("geo") if p else None
            pts = g if isinstance(g, list) else [g] if isinstance(g, dict) else []
            for pt in pts:
                d = haversine_m(c.lon, c.lat, pt["lon"], pt["lat"])
                if abs(d - r) < r * 0.005:
                    return False
    return True


# ---------------------------------------------------------------------------
# the case
# ---------------------------------------------------------------------------


def sut_client(server) -> QdrantClient:
    return server.client()


def oracle_scores_separated(points, tol=1e-4) -> bool:
    s = [p.score for p in points]
    return all(abs(a - b) > tol for a, b in zip(s, s[1:]))


class Case:
    def __init__(self, idx: int, sut: QdrantClient):
        self.idx = idx
        self.seed = f"{BASE_SEED}-{idx}"
        self.rng = random.Random(self.seed)
        self.s = sut
        self.m = QdrantClient(":memory:")
        self.name = f"diff_{BASE_SEED}_{idx}_{uuid.uuid4().hex[:6]}"
        self.schema = Schema(self.rng)
        self.ids: list = []
        self.log: list[str] = []

    def ctx(self, what: str) -> str:
        tail = "\n    ".join(self.log[-12:])
        return (f"[SEXTANT_DIFF_SEED={BASE_SEED} case={self.idx}] {what}\n  schema={self.schema.describe()}\n"
                f"  last ops:\n    {tail}")

    def both(self, method, *args, **kw):
        """Apply one write to both systems.

        The oracle raises KeyError where the server answers 404 (a payload or vector
        update naming a point that does not exist; the other points are still updated).
        Sextant must then fail the same way, and the state is compared afterwards.
        """
        self.log.append(f"{method} args={str(args)[:300]} kw={str(kw)[:300]}")
        a = err_s = err_m = None
        try:
            a = getattr(self.s, method)(self.name, *args, **kw)
        except UnexpectedResponse as ex:
            err_s = ex
        try:
            getattr(self.m, method)(self.name, *args, **kw)
        except Exception as ex:  # the oracle signals errors with plain Python exceptions
            err_m = ex
        if err_m is None:
            assert err_s is None, self.ctx(f"{method}: Sextant failed ({err_s}) but the oracle accepted")
        else:
            assert err_s is not None, self.ctx(f"{method}: oracle rejected ({err_m!r}) but Sextant accepted: {a}")
            want = (404,) if isinstance(err_m, KeyError) else (400, 404, 422)
            assert err_s.status_code in want, self.ctx(
                f"{method}: Sextant answered {err_s.status_code} ({err_s.content[:300]!r}), expected {want} "
                f"(oracle: {err_m!r})")
            self.log.append(f"  -> both failed: {err_s.status_code} / {err_m!r}")
        return a

    # -- writes -----------------------------------------------------------
    def setup(self):
        for c in (self.s, self.m):
            c.create_collection(self.name, vectors_config=self.schema.vectors_config(),
                                sparse_vectors_config=self.schema.sparse_config())
        # Half the cases index some fields on Sextant (the oracle has no indexes): filters
        # they answer then go through the index planner (exact bitmaps, no payload check),
        # which must agree with the oracle's payload evaluation. Text is left out: an indexed
        # `match: text` is a token match in Qdrant, the unindexed one a substring match.
        # A separate RNG keeps the case's own random stream (and its seed's meaning) as it was.
        irng = random.Random(self.seed + "-indexes")
        if irng.random() < 0.5:
            fields = [("n", "integer"), ("f", "float"), ("s", "keyword"), ("b", "bool"), ("geo", "geo"),
                      ("dt", "datetime"), ("obj.a", "integer"), ("mix", "keyword")]
            for field, kind in irng.sample(fields, irng.randint(1, len(fields))):
                self.s.create_payload_index(self.name, field, field_schema=kind, wait=True)
                self.log.append(f"create_payload_index {field} {kind} (Sextant only)")
        n = self.rng.randint(15, 70)
        pts = {}
        while len(pts) < n:
            pid = rand_id(self.rng)
            pts[pid] = models.PointStruct(id=pid, vector=rand_point_vector(self.rng, self.schema),
                                          payload=rand_payload(self.rng))
        pts = list(pts.values())
        i = 0
        while i < len(pts):
            chunk = pts[i:i + self.rng.randint(5, 40)]
            i += len(chunk)
            if self.rng.random() < 0.5:
                self.both("upsert", chunk, wait=True)
            else:
                batch = models.Batch(
                    ids=[p.id for p in chunk],
                    vectors=self._batch_vectors(chunk),
                    payloads=[p.payload for p in chunk],
                )
                self.both("upsert", batch, wait=True)
        self.ids = [p.id for p in pts]

    def _batch_vectors(self, chunk):
        if not self.schema.named and not self.schema.sparse:
            return [p.vector for p in chunk]
        # column form requires every point to carry every vector name; fill gaps
        names = list(self.schema.dense) + self.schema.sparse
        out = {}
        for n in names:
            col = []
            for p in chunk:
                v = p.vector.get(n)
                if v is None:
                    v = rand_sparse(self.rng) if n in self.schema.sparse else rand_dense(self.rng, self.schema.dense[n][0])
                    p.vector[n] = v
                col.append(v)
            out[n] = col
        return out

    def random_write(self):
        rng = self.rng
        op = rng.choice(["upsert", "upsert", "delete_ids", "delete_filter", "set_payload", "set_payload_key",
                         "overwrite", "delete_payload", "clear_payload", "update_vectors", "delete_vectors"])
        some_ids = rng.sample(self.ids, min(len(self.ids), rng.randint(1, 6))) + ([rand_id(rng)] if rng.random() < 0.3 else [])
        if op == "upsert":
            pts = []
            seen = set()
            for _ in range(rng.randint(1, 10)):
                pid = rng.choice(self.ids) if rng.random() < 0.4 else rand_id(rng)
                if pid in seen:
                    continue
                seen.add(pid)
                pts.append(models.PointStruct(id=pid, vector=rand_point_vector(rng, self.schema), payload=rand_payload(rng)))
            self.both("upsert", pts, wait=True)
            self.ids = list(dict.fromkeys(self.ids + [p.id for p in pts]))
        elif op == "delete_ids":
            self.both("delete", models.PointIdsList(points=some_ids), wait=True)
        elif op == "delete_filter":
            flt = rand_filter(rng, self.ids)
            self.both("delete", models.FilterSelector(filter=flt), wait=True)
        elif op == "set_payload":
            self.both("set_payload", rand_payload(rng), points=some_ids, wait=True)
        elif op == "set_payload_key":
            self.both("set_payload", {"x": rng.randint(0, 5), "b": rng.choice(WORDS)}, points=some_ids,
                      key=rng.choice(["obj", "obj.deep", "newobj"]), wait=True)
        elif op == "overwrite":
            if rng.random() < 0.5:
                sel = models.FilterSelector(filter=rand_filter(rng, self.ids))
            else:
                sel = some_ids
            self.both("overwrite_payload", rand_payload(rng), points=sel, wait=True)
        elif op == "delete_payload":
            keys = rng.sample(["n", "f", "s", "b", "mix", "txt", "geo", "dt", "nul", "lst", "obj", "obj.a", "obj.arr"], rng.randint(1, 3))
            self.both("delete_payload", keys, points=some_ids, wait=True)
        elif op == "clear_payload":
            self.both("clear_payload", models.PointIdsList(points=some_ids), wait=True)
        elif op == "update_vectors":
            # ids may include deleted / never-inserted points: the server answers 404 then
            pv = [models.PointVectors(id=i, vector=rand_point_vector(rng, self.schema, partial=True))
                  for i in dict.fromkeys(some_ids)]
            self.both("update_vectors", pv, wait=True)
        elif op == "delete_vectors":
            names = [n for n in list(self.schema.dense) + self.schema.sparse if n]
            if not names:
                return
            self.both("delete_vectors", rng.sample(names, 1), points=some_ids, wait=True)

    # -- reads ------------------------------------------------------------
    def random_read(self, q: int):
        rng = self.rng
        kind = rng.choice(["search", "search", "search", "scroll", "count", "retrieve"])
        flt = rand_filter(rng, self.ids) if rng.random() < 0.7 else None
        if flt is not None:
            payloads = [r.payload for r in self.m.scroll(self.name, limit=10_000)[0]]
            allow_empty = rng.random() < 0.2  # mostly compare filters that select something
            for _ in range(20):
                if geo_edge_free(flt, payloads) and (
                        allow_empty or self.m.count(self.name, count_filter=flt).count > 0):
                    break
                flt = rand_filter(rng, self.ids)
            else:
                flt = None
        with_payload = rng.choice([True, True, False, ["n", "s", "obj"], models.PayloadSelectorExclude(exclude=["txt", "obj.arr"])])
        names = list(self.schema.dense) + self.schema.sparse
        with_vectors = rng.choice([False, False, True] + ([[rng.choice(names)]] if self.schema.named or self.schema.sparse else []))
        what = f"read#{q} {kind} filter={flt} with_payload={with_payload} with_vectors={with_vectors}"
        if kind == "search":
            self._search(flt, with_payload, with_vectors, what)
        elif kind == "scroll":
            limit = rng.randint(1, 30)
            offset = rng.choice(self.ids + [rand_id(rng), None, None])
            a, na = self.s.scroll(self.name, scroll_filter=flt, limit=limit, offset=offset,
                                  with_payload=with_payload, with_vectors=with_vectors)
            e, ne = self.m.scroll(self.name, scroll_filter=flt, limit=limit, offset=offset,
                                  with_payload=with_payload, with_vectors=with_vectors)
            ctx = self.ctx(f"{what} limit={limit} offset={offset}")
            assert_points_match(a, e, ctx=ctx, scores=False)
            assert norm_id(na) == norm_id(ne), f"next_page_offset {na} != {ne} " + ctx
        elif kind == "count":
            a = self.s.count(self.name, count_filter=flt, exact=True).count
            e = self.m.count(self.name, count_filter=flt, exact=True).count
            assert a == e, f"count {a} != {e} " + self.ctx(what)
        else:
            ids = rng.sample(self.ids, min(len(self.ids), rng.randint(1, 8))) + [rand_id(rng)]
            ids = list(dict.fromkeys(ids))
            a = self.s.retrieve(self.name, ids, with_payload=with_payload, with_vectors=with_vectors)
            e = self.m.retrieve(self.name, ids, with_payload=with_payload, with_vectors=with_vectors)
            assert_points_match(a, e, ctx=self.ctx(f"{what} ids={ids}"), scores=False, ordered=False)

    def _search(self, flt, with_payload, with_vectors, what):
        rng = self.rng
        names = list(self.schema.dense) + self.schema.sparse
        using = rng.choice(names)
        limit = rng.randint(1, 25)
        offset = rng.choice([None, None, 0, rng.randint(1, 10)])
        # Pick a query vector whose oracle ranking has no near-ties in the compared window
        # (ties make order ambiguous).  This is done by construction, before comparing; when
        # the data make that impossible (e.g. 2-d cosine, where many angles are close), fall
        # back to a tie-tolerant comparison.
        tied = False
        for _ in range(25):
            if using in self.schema.sparse:
                idx = list(range(SPARSE_DIM))
                qv = models.SparseVector(indices=idx, values=[round(rng.uniform(0.05, 1), 5) for _ in idx])
            else:
                qv = rand_dense(rng, self.schema.dense[using][0])
            full = self.m.query_points(self.name, query=qv, using=using or None, query_filter=flt,
                                       limit=(offset or 0) + limit + 1, with_payload=False).points
            if oracle_scores_separated(full):
                break
        else:
            tied = True
        score_threshold = None
        if full and not tied and rng.random() < 0.25:
            # threshold between two consecutive oracle scores
            k = rng.randrange(len(full))
            nxt = full[k + 1].score if k + 1 < len(full) else full[k].score - 1.0
            score_threshold = (full[k].score + nxt) / 2
        kw = dict(query=qv, using=using or None, query_filter=flt, limit=limit, offset=offset,
                  with_payload=with_payload, with_vectors=with_vectors, score_threshold=score_threshold)
        a = self.s.query_points(self.name, search_params=models.SearchParams(exact=True), **kw).points
        e = self.m.query_points(self.name, **kw).points
        ctx = self.ctx(f"{what} using={using!r} limit={limit} offset={offset} "
                       f"score_threshold={score_threshold} query={qv} tied={tied}")
        if not tied:
            assert_points_match(a, e, ctx=ctx)
            return
        wide = self.m.query_points(self.name, query=qv, using=using or None, query_filter=flt,
                                   limit=(offset or 0) + limit + 50, with_payload=False).points
        oracle_scores = {norm_id(p.id): p.score for p in wide}
        recs = self.m.retrieve(self.name, [p.id for p in a], with_payload=with_payload,
                               with_vectors=with_vectors)
        assert_tied_match(a, e, oracle_scores, ctx=ctx, oracle_records={norm_id(r.id): r for r in recs})

    def run(self):
        self.setup()
        for _ in range(self.rng.randint(0, 6)):
            self.random_write()
        # global state check once per case
        a = self.s.count(self.name, exact=True).count
        e = self.m.count(self.name, exact=True).count
        assert a == e, f"total count {a} != {e} " + self.ctx("after writes")
        for q in range(QUERIES_PER_CASE):
            self.random_read(q)

    def close(self):
        try:
            self.s.delete_collection(self.name)
        except Exception:
            pass
        self.m.close()


@pytest.fixture(scope="module")
def sut(server):
    c = sut_client(server)
    yield c
    c.close()


@pytest.mark.slow
@pytest.mark.parametrize("idx", range(N_CASES), ids=[f"case_{i}" for i in range(N_CASES)])
def test_differential(sut, idx):
    case = Case(idx, sut)
    try:
        case.run()
    except AssertionError:
        raise
    except Exception as ex:  # e.g. an unexpected HTTP error from Sextant: keep the seed in the message
        pytest.fail(case.ctx(f"unexpected exception: {ex!r}"), pytrace=True)
    finally:
        case.close()
