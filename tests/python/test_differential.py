"""Seeded random differential testing: Sextant vs QdrantClient(":memory:").

Every case builds a random collection, applies the same random sequence of
writes to both systems, and then compares the answers of random reads
(query_points, scroll, count, retrieve).

On top of the random reads, every case runs "feature reads" (``Case.feature_reads``) that
cover request kinds the random reads do not produce: vectorless universal queries (plain,
``order_by``, ``sample``), ``lookup_from`` a second collection, grouped queries with a
``prefetch``, sparse vectors with the IDF modifier, float values that must come back exactly,
and full-text payload indexes with options.  ``TALLY`` counts what was generated and
``test_differential_coverage`` (runs after the cases) proves every kind occurred.  A failing
read does not stop the case: all failures of a case are reported together.

Reproduce a failure with ``SEXTANT_DIFF_SEED=<seed> pytest test_differential.py -k "case_17"``;
the seed is part of every assertion message.  ``SEXTANT_DIFF_CASES`` changes the
number of cases (default 200).
"""

from __future__ import annotations

import collections
import copy
import math
import os
import random
import uuid

import numpy as np

import pytest
from qdrant_client import QdrantClient
from qdrant_client.http import models
from qdrant_client.http.models import Distance

from qdrant_client.http.exceptions import UnexpectedResponse

import helpers
from helpers import SCORE_TOL, describe, haversine_m, norm_id, vectors_equal

BASE_SEED = int(os.environ.get("SEXTANT_DIFF_SEED") or random.SystemRandom().randrange(1, 2**31))
N_CASES = int(os.environ.get("SEXTANT_DIFF_CASES") or 200)
QUERIES_PER_CASE = 8

DISTANCES = [Distance.COSINE, Distance.EUCLID, Distance.DOT, Distance.MANHATTAN]
WORDS = ["alpha", "beta", "gamma", "delta", "eps", "zeta"]
# Mixed case, stopwords ("the", "a", "and", "of") and words sharing prefixes, so that the
# options of a text index (tokenizer prefix, lowercase false, stopwords) would matter.
TEXT_WORDS = ["red", "fox", "Fox", "lazy", "dog", "DOG", "blue", "sky", "big", "cat", "the", "The", "a",
              "and", "of", "foxes", "dogma"]
# what `match: text` queries on an indexed text field ask for: whole words, other casings,
# stopwords and bare prefixes of words
TEXT_QUERY_WORDS = TEXT_WORDS + ["FOX", "Dog", "THE", "fo", "do", "la", "bl", "ca", "an", "fox dog", "the fox"]
CUSTOM_STOPWORDS = ["fox", "red", "sky", "a", "dogma", "Big"]
# Floats that do not survive a round trip through a wider / narrower type or a sloppy printer.
# Vector components stay within [-1, 1] so they do not disturb the search comparisons.
TRICKY_VECTOR_FLOATS = [0.1, -0.2, 0.3, 0.7, 1 / 3, -2 / 3, 1e-6, 0.999999999, -0.123456789, 5e-8,
                        0.30000000000000004, 0.05, -0.9]
TRICKY_PAYLOAD_FLOATS = [0.1, 0.2, 0.30000000000000004, 1 / 3, 1e-7, 123456789.123456789, 1.5e300,
                         2.2250738585072014e-308, 5e-324, 1.7976931348623157e308, -0.0, 1.0, -2.5, 100.0,
                         0.1 + 0.7, 3.141592653589793]
TRICKY_PAYLOAD_INTS = [2**53 + 1, -(2**63), 2**63 - 1, 0, -1]
ORDER_BY_KEYS = [("n", "integer"), ("f", "float"), ("dt", "datetime"), ("obj.a", "integer")]
GROUP_BY_KEYS = ["s", "s", "n", "n", "obj.a", "mix", "lst", "obj.b", "b"]

# Kinds of generated requests (and a few facts about their answers), over the whole run.
TALLY: collections.Counter = collections.Counter()
# Failures per kind, over the whole run.
FAILS: collections.Counter = collections.Counter()
# Every kind must occur at least this many times per 100 cases in a run of >= 100 cases.
MIN_PER_100_CASES = {
    "vectorless_plain": 20, "vectorless_plain_offset": 8, "vectorless_order_by": 20,
    "vectorless_order_by_offset": 5, "vectorless_sample": 20, "vectorless_sample_offset": 8,
    "lookup_from": 20, "lookup_from_nearest_id": 8, "lookup_from_recommend": 8,
    "lookup_from_example_in_result": 5,
    "groups_prefetch": 20, "groups_prefetch_filled": 10,
    "sparse_idf_query": 15,
    "exact_floats": 20, "exact_floats_tricky_vector": 10, "exact_floats_tricky_payload": 10,
    "text_index": 15, "text_index_prefix": 5, "text_index_lowercase_false": 5, "text_index_stopwords": 5,
}
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
        self.sparse = ["sp"] if rng.random() < 0.45 else []
        self.idf = {n: rng.random() < 0.6 for n in self.sparse}  # sparse names with modifier: idf

    def vectors_config(self):
        if not self.named:
            size, dist = self.dense[""]
            return models.VectorParams(size=size, distance=dist)
        return {n: models.VectorParams(size=s, distance=d) for n, (s, d) in self.dense.items()}

    def sparse_config(self):
        return {n: models.SparseVectorParams(modifier=models.Modifier.IDF if self.idf[n] else None)
                for n in self.sparse} or None

    def describe(self):
        return {"dense": {k: (s, d.value) for k, (s, d) in self.dense.items()},
                "sparse": {n: ("idf" if self.idf[n] else None) for n in self.sparse}}


def rand_dense(rng: random.Random, dim: int) -> list[float]:
    while True:
        v = [round(rng.uniform(-1, 1), 5) for _ in range(dim)]
        if rng.random() < 0.2:  # exactness of stored floats: decimals that are not f32 values
            for i in rng.sample(range(dim), rng.randint(1, dim)):
                v[i] = rng.choice(TRICKY_VECTOR_FLOATS) if rng.random() < 0.7 else rng.uniform(-1, 1)
        if sum(abs(x) for x in v) > 0.1:  # keep away from the zero vector (cosine)
            return v


def rand_sparse(rng: random.Random) -> models.SparseVector:
    idx = sorted(rng.sample(range(SPARSE_DIM), rng.randint(1, 6)))
    vals = [round(rng.uniform(0.01, 1), 5) for _ in idx]
    if rng.random() < 0.2:
        vals = [abs(rng.choice(TRICKY_VECTOR_FLOATS)) if rng.random() < 0.6 else v for v in vals]
    return models.SparseVector(indices=idx, values=vals)


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


def rand_exact_value(rng: random.Random):
    r = rng.random()
    if r < 0.4:
        return rng.choice(TRICKY_PAYLOAD_FLOATS)
    if r < 0.5:
        return rng.choice(TRICKY_PAYLOAD_INTS)
    if r < 0.75:  # a full-precision double (17 significant digits)
        return rng.uniform(-1e9, 1e9)
    return rng.random() * 10.0 ** rng.randint(-30, 30)


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
    # floats / big integers that must come back exactly (bit for bit, and of the same type)
    maybe("fx", lambda: rand_exact_value(rng) if rng.random() < 0.5 else
          [rand_exact_value(rng) for _ in range(rng.randint(1, 4))], 0.3)
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


def hide_exact_keys(points):
    """Copies of the points without the payload key "fx" (its tricky floats are compared bit for
    bit by the exact-floats read only, so that one storage defect is reported once, not by
    every read that returns payloads)."""
    out = []
    for p in points:
        if isinstance(p.payload, dict) and "fx" in p.payload:
            p = p.model_copy(update={"payload": {k: v for k, v in p.payload.items() if k != "fx"}})
        out.append(p)
    return out


def assert_points_match(actual, expected, **kw):
    helpers.assert_points_match(hide_exact_keys(actual), hide_exact_keys(expected), **kw)


def assert_tied_match(actual, expected, oracle_scores, oracle_records=None, **kw):
    if oracle_records is not None:
        oracle_records = dict(zip(oracle_records, hide_exact_keys(oracle_records.values())))
    helpers.assert_tied_match(hide_exact_keys(actual), hide_exact_keys(expected), oracle_scores,
                              oracle_records=oracle_records, **kw)


def sut_client(server) -> QdrantClient:
    return server.client()


def oracle_scores_separated(points, tol=1e-4) -> bool:
    s = [p.score for p in points]
    return all(abs(a - b) > tol for a, b in zip(s, s[1:]))


def f32_shortest(x: float) -> float:
    """The float a JSON printer of f32 values (Qdrant's) yields: the shortest decimal of f32(x)."""
    return float(str(np.float32(x)))


def strict_equal(a, b) -> bool:
    """Payload equality that also tells 1 from 1.0 from True, and 0.0 from -0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return repr(a) == repr(b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(strict_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b))
    return a == b


def exact_vector_problems(a, e, cosine_names: set, name: str = "") -> list[str]:
    """Stored vector values must come back exactly, where "exactly" is what Qdrant answers.

    Qdrant stores f32 and prints each value as the shortest decimal of that f32, so a value
    sent as 0.1 comes back as 0.1.  Required of Sextant's value x, against the oracle's y:
      * dense: f32(x) == f32(y) (cosine collections normalize: within 4e-6 relative) and x is the
        shortest decimal of f32(x) - the oracle itself widens the f32 (0.10000000149011612),
        so exact equality with the oracle is not what is checked;
      * sparse: same indices; f32(x) == f32(y) and x is either the shortest decimal of its f32
        or exactly the oracle's value (the oracle keeps sparse values as sent, in f64).
    """
    out = []
    where = f"vector {name!r}: "
    if isinstance(a, dict) and isinstance(e, dict):
        if set(a) != set(e):
            return [f"vector names {sorted(a)} != {sorted(e)}"]
        for k in a:
            out += exact_vector_problems(a[k], e[k], cosine_names, k)
        return out
    if isinstance(a, models.SparseVector) and isinstance(e, models.SparseVector):
        pa, pe = sorted(zip(a.indices, a.values)), sorted(zip(e.indices, e.values))
        if [i for i, _ in pa] != [i for i, _ in pe]:
            return [f"{where}sparse indices {a.indices} != {e.indices}"]
        for (i, x), (_, y) in zip(pa, pe):
            if np.float32(x) != np.float32(y) or (x != y and x != f32_shortest(x)):
                out.append(f"{where}sparse value at index {i}: sextant {x!r}, oracle {y!r} "
                           f"(f32 printed shortest: {f32_shortest(y)!r})")
        return out
    if isinstance(a, list) and isinstance(e, list):
        if len(a) != len(e):
            return [f"{where}dense length {len(a)} != {len(e)}"]
        for i, (x, y) in enumerate(zip(a, e)):
            fx, fy = np.float32(x), np.float32(y)
            if name in cosine_names:
                # The oracle normalises some inputs in f64 (single points) and others in f32
                # (batches: norm and quotients each rounded to f32, ~dim * 2^-24 relative
                # error); Sextant rounds the f64 quotient once. Relative, not in ulps.
                ok = abs(float(fx) - float(fy)) <= 4e-6 * abs(float(fy)) + 1e-12
            else:
                ok = fx == fy
            if not ok or x != f32_shortest(x):
                out.append(f"{where}dense[{i}]: sextant {x!r}, oracle {y!r} "
                           f"(expected the f32 printed shortest: {f32_shortest(y)!r})")
        return out
    if a != e:
        out.append(f"{where}{a!r} != {e!r}")
    return out


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
        # the feature reads and their setup draw from their own stream
        self.frng = random.Random(self.seed + "-features")
        self.text_index: dict | None = None  # options of the text index on "txt", if any
        self.order_indexes: set[str] = set()
        self.lk_name: str | None = None  # second collection, for lookup_from
        self.lk_names: dict[str, str] = {}  # vector name here -> vector name in the second collection
        self.lk_ids: list = []
        self.failures: list[str] = []

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
        text_index_when = None
        if self.frng.random() < 0.45:
            text_index_when = self.frng.choice(["before", "after"])
        if text_index_when == "before":
            self._create_text_index()
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
        if text_index_when == "after":
            self._create_text_index()

    def _create_text_index(self):
        """A full-text index with options on "txt", on both sides (local mode keeps no index)."""
        fr = self.frng
        params: dict = {"type": "text", "tokenizer": fr.choice(["prefix", "prefix", "word", "whitespace",
                                                                 "multilingual"])}
        r = fr.random()
        if r < 0.5:
            params["lowercase"] = False
        elif r < 0.65:
            params["lowercase"] = True
        r = fr.random()
        if r < 0.25:
            params["stopwords"] = "english"
        elif r < 0.5:
            params["stopwords"] = {"custom": fr.sample(CUSTOM_STOPWORDS, fr.randint(1, 4))}
        elif r < 0.65:
            params["stopwords"] = {"languages": ["english"], "custom": fr.sample(CUSTOM_STOPWORDS, 2)}
        self.text_index = params
        schema = models.TextIndexParams(**params)
        self.log.append(f"create_payload_index txt {params} (both)")
        for c in (self.s, self.m):
            c.create_payload_index(self.name, "txt", field_schema=schema, wait=True)

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
        flt = self._read_filter(rng, 0.7)
        with_payload, with_vectors = self._rand_with(rng)
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

    def _read_filter(self, rng: random.Random, prob: float):
        """A random filter (with probability `prob`) that mostly selects something."""
        flt = rand_filter(rng, self.ids) if rng.random() < prob else None
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
        return flt

    def _rand_with(self, rng: random.Random):
        with_payload = rng.choice([True, True, False, ["n", "s", "obj"], models.PayloadSelectorExclude(exclude=["txt", "obj.arr"])])
        names = list(self.schema.dense) + self.schema.sparse
        with_vectors = rng.choice([False, False, True] + ([[rng.choice(names)]] if self.schema.named or self.schema.sparse else []))
        return with_payload, with_vectors

    def _search(self, flt, with_payload, with_vectors, what, rng=None, using=None):
        rng = rng or self.rng
        names = list(self.schema.dense) + self.schema.sparse
        using = rng.choice(names) if using is None else using
        if using in self.schema.sparse and self.schema.idf[using]:
            TALLY["sparse_idf_query"] += 1
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

    # -- feature reads ----------------------------------------------------
    def _soft(self, kind: str, fn, *args):
        """Run one read; record its failure and go on with the case."""
        try:
            fn(*args)
        except AssertionError as ex:
            FAILS[kind] += 1
            self.failures.append(f"[{kind}] {ex}")
        except Exception as ex:  # e.g. an unexpected HTTP error from Sextant
            FAILS[kind] += 1
            self.failures.append(f"[{kind}] " + self.ctx(f"unexpected exception: {ex!r}"))

    def _call_both(self, what: str, fs, fm):
        """Run one read on both sides; errors must agree (the oracle's ValueError = 4xx)."""
        a = e = err_s = err_m = None
        try:
            a = fs()
        except UnexpectedResponse as ex:
            err_s = ex
        try:
            e = fm()
        except Exception as ex:
            err_m = ex
        if err_m is None:
            assert err_s is None, self.ctx(
                f"{what}: Sextant failed ({err_s.status_code} {err_s.content[:300]!r}) but the oracle accepted")
            return a, e
        assert err_s is not None, self.ctx(f"{what}: oracle rejected ({err_m!r}) but Sextant accepted: {str(a)[:400]}")
        assert err_s.status_code in (400, 404, 422), self.ctx(
            f"{what}: Sextant answered {err_s.status_code} ({err_s.content[:300]!r}), oracle: {err_m!r}")
        TALLY["feature_both_rejected"] += 1
        return None, None

    def _rand_query_vector(self, rng: random.Random, using: str):
        if using in self.schema.sparse:
            idx = list(range(SPARSE_DIM)) if rng.random() < 0.5 else sorted(rng.sample(range(SPARSE_DIM), rng.randint(2, 12)))
            return models.SparseVector(indices=idx, values=[round(rng.uniform(0.05, 1), 5) for _ in idx])
        return rand_dense(rng, self.schema.dense[using][0])

    def _check_against_records(self, points, with_payload, with_vectors, ctx):
        """Payload / vectors of returned points equal the oracle's records of the same ids."""
        ids = [p.id for p in points]
        recs = {norm_id(r.id): r for r in self.m.retrieve(self.name, ids, with_payload=with_payload,
                                                           with_vectors=with_vectors)}
        for p in hide_exact_keys(points):
            r = recs.get(norm_id(p.id))
            r = hide_exact_keys([r])[0] if r is not None else None
            assert r is not None, f"id {p.id} is not in the collection {ctx}"
            assert p.payload == r.payload, f"payload differs for id {p.id}: {p.payload} vs {r.payload} {ctx}"
            assert vectors_equal(p.vector, r.vector), f"vector differs for id {p.id}: {p.vector} vs {r.vector} {ctx}"

    # 1. universal query without a query vector
    def _vectorless(self, sub: str):
        fr = self.frng
        flt = self._read_filter(fr, 0.5)
        with_payload, with_vectors = self._rand_with(fr)
        limit = fr.randint(1, 25)
        offset = fr.choice([None, 0, fr.randint(1, 10), fr.randint(1, 40)])
        kw = dict(query_filter=flt, limit=limit, offset=offset, with_payload=with_payload, with_vectors=with_vectors)
        query = None
        if sub == "order_by":
            key, kind = fr.choice(ORDER_BY_KEYS)
            if key not in self.order_indexes:  # Qdrant needs a range index on an order_by key
                self.order_indexes.add(key)
                self.log.append(f"create_payload_index {key} {kind} (both, for order_by)")
                for c in (self.s, self.m):
                    c.create_payload_index(self.name, key, field_schema=kind, wait=True)
            start_from = None
            if fr.random() < 0.35:
                start_from = {"n": fr.randint(0, 8), "f": round(fr.uniform(-50, 50), 4),
                              "dt": rand_datetime(fr), "obj.a": fr.randint(0, 5)}[key]
            direction = fr.choice([None, models.Direction.ASC, models.Direction.DESC])
            query = models.OrderByQuery(order_by=models.OrderBy(key=key, direction=direction, start_from=start_from))
        elif sub == "sample":
            query = models.SampleQuery(sample=models.Sample.RANDOM)
        TALLY[f"vectorless_{sub}"] += 1
        if offset:
            TALLY[f"vectorless_{sub}_offset"] += 1
        what = f"vectorless {sub}: query_points query={query} filter={flt} limit={limit} offset={offset} " \
               f"with_payload={with_payload} with_vectors={with_vectors}"
        a, e = self._call_both(what, lambda: self.s.query_points(self.name, query=query, **kw).points,
                               lambda: self.m.query_points(self.name, query=query, **kw).points)
        if e is None:
            return
        ctx = self.ctx(what)
        if sub == "plain":
            assert_points_match(a, e, ctx=ctx)
        elif sub == "order_by":
            full = self.m.query_points(self.name, query=query, query_filter=flt, limit=100_000, with_payload=False).points
            self._assert_order_by(a, e, full, bool(offset), limit, ctx)
            self._check_against_records(a, with_payload, with_vectors, ctx)
        else:
            msg = f"{ctx}\n  sextant: {describe(a)}\n  oracle:  {describe(e)}"
            allowed = {norm_id(r.id) for r in self.m.scroll(self.name, scroll_filter=flt, limit=100_000,
                                                              with_payload=False)[0]}
            a_ids = [norm_id(p.id) for p in a]
            assert len(a) == len(e), f"sample: {len(a)} points, oracle {len(e)} {msg}"
            assert len(set(a_ids)) == len(a_ids), f"sample: duplicate ids {msg}"
            assert set(a_ids) <= allowed, f"sample: ids {set(a_ids) - allowed} do not match the filter {msg}"
            assert sorted(p.score for p in a) == sorted(p.score for p in e), f"sample: scores differ {msg}"
            self._check_against_records(a, with_payload, with_vectors, ctx)

    @staticmethod
    def _assert_order_by(a, e, full, has_offset: bool, limit: int, ctx: str):
        """order_by pages: equal values position by position; among equal values the order is
        unspecified, and a run of equal values cut by the page edge may hold any of them."""
        msg = f"{ctx}\n  sextant: {describe(a)} {[p.order_value for p in a]}\n  oracle:  {describe(e)} {[p.order_value for p in e]}"
        assert len(a) == len(e), f"order_by: {len(a)} points, oracle {len(e)} {msg}"
        for pa, pe in zip(a, e):
            assert pa.order_value is not None and math.isclose(pa.order_value, pe.order_value, rel_tol=1e-12), (
                f"order_by: order_value {pa.order_value} != {pe.order_value} {msg}")
            assert math.isclose(pa.score, pe.score, rel_tol=SCORE_TOL, abs_tol=SCORE_TOL), f"order_by: scores differ {msg}"
        pairs_full = collections.defaultdict(set)
        for p in full:
            pairs_full[p.order_value].add(norm_id(p.id))
        pairs_a = [(p.order_value, norm_id(p.id)) for p in a]
        assert len(set(pairs_a)) == len(pairs_a), f"order_by: duplicate (value, id) {msg}"
        i = 0
        while i < len(e):
            j = i
            while j < len(e) and e[j].order_value == e[i].order_value:
                j += 1
            v = e[i].order_value
            ids_a = {pid for val, pid in pairs_a[i:j]}
            ids_e = {norm_id(p.id) for p in e[i:j]}
            cut = (i == 0 and has_offset) or (j == len(e) and len(e) == limit)
            if cut:
                assert ids_a <= pairs_full[v], f"order_by: ids {ids_a - pairs_full[v]} do not have value {v} {msg}"
            else:
                assert ids_a == ids_e, f"order_by: ids with value {v}: {ids_a} != {ids_e} {msg}"
            i = j

    # 2. lookup_from a second collection
    def _setup_lookup_collection(self):
        fr = self.frng
        self.lk_name = self.name + "_lk"
        rename = fr.random() < 0.3
        dense_cfg = {}
        for n, (size, dist) in self.schema.dense.items():
            ln = ("alt_" + (n or "v")) if rename else n
            self.lk_names[n] = ln
            dense_cfg[ln] = models.VectorParams(size=size, distance=dist if fr.random() < 0.7 else fr.choice(DISTANCES))
        for n in self.schema.sparse:
            self.lk_names[n] = n
        vectors_config = dense_cfg[""] if list(dense_cfg) == [""] else dense_cfg
        sparse_cfg = {n: models.SparseVectorParams(modifier=models.Modifier.IDF if self.schema.idf[n] else None)
                      for n in self.schema.sparse} or None
        self.log.append(f"create_collection {self.lk_name} (both) vectors={vectors_config} sparse={sparse_cfg}")
        for c in (self.s, self.m):
            c.create_collection(self.lk_name, vectors_config=vectors_config, sparse_vectors_config=sparse_cfg)
        main = {norm_id(r.id): r for r in self.m.scroll(self.name, limit=10_000, with_payload=False, with_vectors=True)[0]}
        pts = {}
        for _ in range(fr.randint(4, 14)):
            pid = fr.choice(self.ids) if (self.ids and fr.random() < 0.65) else rand_id(fr)
            own = main.get(norm_id(pid))
            vec = {}
            for n, (size, _) in self.schema.dense.items():
                mv = None
                if own is not None:
                    mv = own.vector.get(n) if isinstance(own.vector, dict) else own.vector
                if mv is not None and fr.random() < 0.6:  # near its twin in the searched collection
                    vec[self.lk_names[n]] = [round(x + fr.uniform(-0.01, 0.01), 5) for x in mv]
                else:
                    vec[self.lk_names[n]] = rand_dense(fr, size)
            for n in self.schema.sparse:
                vec[n] = rand_sparse(fr)
            if list(vec) == [""]:
                vec = vec[""]
            pts[norm_id(pid)] = models.PointStruct(id=pid, vector=vec, payload={"lk": 1})
        self.lk_ids = [p.id for p in pts.values()]
        self.log.append(f"upsert {self.lk_name} ids={self.lk_ids}")
        for c in (self.s, self.m):
            c.upsert(self.lk_name, list(pts.values()), wait=True)

    def _lookup_read(self):
        fr = self.frng
        using = fr.choice(list(self.schema.dense) + self.schema.sparse)
        lk_vec = self.lk_names[using]
        vector = lk_vec if lk_vec != using else (using if (using and fr.random() < 0.3) else None)
        lookup = models.LookupLocation(collection=self.lk_name, vector=vector)
        flt = self._read_filter(fr, 0.3)
        with_payload, with_vectors = self._rand_with(fr)
        limit = fr.randint(1, 20)
        offset = fr.choice([None, None, fr.randint(1, 5)])
        nearest = fr.random() < 0.45
        TALLY["lookup_from"] += 1
        TALLY["lookup_from_nearest_id" if nearest else "lookup_from_recommend"] += 1
        missing = [i for i in self.ids if norm_id(i) not in {norm_id(x) for x in self.lk_ids}]

        def make_query():
            if nearest:
                return fr.choice(self.lk_ids)
            pos = fr.sample(self.lk_ids, min(len(self.lk_ids), fr.randint(1, 3)))
            rest = [i for i in self.lk_ids if i not in pos]
            neg = fr.sample(rest, min(len(rest), fr.randint(0, 2)))
            strategy = fr.choice([None, models.RecommendStrategy.AVERAGE_VECTOR,
                                  models.RecommendStrategy.BEST_SCORE, models.RecommendStrategy.SUM_SCORES])
            if strategy in (models.RecommendStrategy.BEST_SCORE, models.RecommendStrategy.SUM_SCORES) \
                    and neg and fr.random() < 0.2:
                pos = []
            if fr.random() < 0.2:  # a raw vector among the examples
                pos = pos + [self._rand_query_vector(fr, using)]
            return models.RecommendQuery(recommend=models.RecommendInput(positive=pos, negative=neg, strategy=strategy))

        tied = False
        for _ in range(8):
            q = make_query()
            full = self.m.query_points(self.name, query=q, using=using or None, query_filter=flt, lookup_from=lookup,
                                       limit=(offset or 0) + limit + 1, with_payload=False).points
            if oracle_scores_separated(full):
                break
        else:
            tied = True
        if missing and fr.random() < 0.1:  # an example that lives only in the searched collection
            bad = fr.choice(missing)
            q = bad if nearest else models.RecommendQuery(recommend=models.RecommendInput(positive=[bad]))
            TALLY["lookup_from_missing_example"] += 1
        examples = [q] if nearest else [x for x in (q.recommend.positive or []) + (q.recommend.negative or [])]
        kw = dict(query=q, using=using or None, query_filter=flt, lookup_from=lookup, limit=limit, offset=offset,
                  with_payload=with_payload, with_vectors=with_vectors)
        what = f"lookup_from: query_points {kw}"
        a, e = self._call_both(what, lambda: self.s.query_points(self.name, search_params=models.SearchParams(exact=True), **kw).points,
                               lambda: self.m.query_points(self.name, **kw).points)
        if e is None:
            return
        ex_ids = {norm_id(x) for x in examples if isinstance(x, (int, str))}
        if ex_ids & {norm_id(p.id) for p in e}:
            TALLY["lookup_from_example_in_result"] += 1
        ctx = self.ctx(what + f" tied={tied}")
        if not tied:
            assert_points_match(a, e, ctx=ctx)
            return
        wide = self.m.query_points(self.name, query=q, using=using or None, query_filter=flt, lookup_from=lookup,
                                   limit=(offset or 0) + limit + 50, with_payload=False).points
        recs = self.m.retrieve(self.name, [p.id for p in a], with_payload=with_payload, with_vectors=with_vectors)
        assert_tied_match(a, e, {norm_id(p.id): p.score for p in wide}, ctx=ctx,
                          oracle_records={norm_id(r.id): r for r in recs})

    # 3. grouped query with a prefetch
    def _groups_read(self):
        fr = self.frng
        names = list(self.schema.dense) + self.schema.sparse
        using = fr.choice(names)
        flt = self._read_filter(fr, 0.3)
        with_payload, with_vectors = self._rand_with(fr)
        group_by = fr.choice(GROUP_BY_KEYS)
        group_size = fr.randint(2, 5)
        limit = fr.randint(1, 8)

        def make_prefetch():
            pf_using = fr.choice(names)
            return models.Prefetch(query=self._rand_query_vector(fr, pf_using), using=pf_using or None,
                                   filter=self._read_filter(fr, 0.25),
                                   limit=fr.choice([None, fr.randint(1, 5), fr.randint(5, 30), 1000]),
                                   params=models.SearchParams(exact=True))

        prefetch = make_prefetch() if fr.random() < 0.7 else [make_prefetch(), make_prefetch()]

        def unlimited(pf):  # the prefetch as local mode runs it for groups (limits lifted)
            pf = copy.deepcopy(pf)
            for p in (pf if isinstance(pf, list) else [pf]):
                p.limit = 100_000
            return pf

        TALLY["groups_prefetch"] += 1
        tied = False
        for _ in range(8):
            qv = self._rand_query_vector(fr, using)
            full = self.m.query_points(self.name, prefetch=unlimited(prefetch), query=qv, using=using or None,
                                       query_filter=flt, limit=100_000, with_payload=False).points
            if oracle_scores_separated(full):
                break
        else:
            tied = True
        kw = dict(group_by=group_by, query=qv, using=using or None, prefetch=prefetch, query_filter=flt, limit=limit,
                  group_size=group_size, with_payload=with_payload, with_vectors=with_vectors)
        what = f"groups+prefetch: query_points_groups {kw}"
        a, e = self._call_both(what, lambda: self.s.query_points_groups(self.name, search_params=models.SearchParams(exact=True), **kw).groups,
                               lambda: self.m.query_points_groups(self.name, **kw).groups)
        if e is None:
            return
        if any(len(g.hits) > 1 for g in e):
            TALLY["groups_prefetch_filled"] += 1
        ctx = self.ctx(what + f" tied={tied}")
        msg = (f"{ctx}\n  sextant: {[(g.id, [(h.id, round(h.score, 5)) for h in g.hits]) for g in a]}"
               f"\n  oracle:  {[(g.id, [(h.id, round(h.score, 5)) for h in g.hits]) for g in e]}")
        assert len(a) == len(e), f"groups: {len(a)} groups, oracle {len(e)} {msg}"
        if not tied:
            assert [g.id for g in a] == [g.id for g in e], f"group ids differ {msg}"
            for ga, ge in zip(a, e):
                assert_points_match(ga.hits, ge.hits, ctx=f"group {ge.id}: {msg}")
            return
        scores = {norm_id(p.id): p.score for p in full}
        assert sorted(len(g.hits) for g in a) == sorted(len(g.hits) for g in e), f"group sizes differ {msg}"
        for g in a:
            for h in g.hits:
                assert norm_id(h.id) in scores and math.isclose(h.score, scores[norm_id(h.id)], rel_tol=SCORE_TOL,
                                                                abs_tol=SCORE_TOL), f"hit {h.id} of group {g.id} {msg}"

    # 4. sparse vectors with modifier: idf
    def _sparse_idf_read(self, name: str):
        fr = self.frng
        flt = self._read_filter(fr, 0.4)
        with_payload, with_vectors = self._rand_with(fr)
        self._search(flt, with_payload, with_vectors, f"sparse idf read on {name!r} filter={flt}", rng=fr, using=name)

    # 5. stored floats come back exactly
    def _exact_floats_read(self):
        fr = self.frng
        via = fr.choice(["retrieve", "scroll", "query"])
        TALLY["exact_floats"] += 1
        if via == "retrieve":
            ids = fr.sample(self.ids, min(len(self.ids), 12))
            a = self.s.retrieve(self.name, ids, with_payload=True, with_vectors=True)
            e = self.m.retrieve(self.name, ids, with_payload=True, with_vectors=True)
        elif via == "scroll":
            a = self.s.scroll(self.name, limit=100, with_payload=True, with_vectors=True)[0]
            e = self.m.scroll(self.name, limit=100, with_payload=True, with_vectors=True)[0]
        else:
            a = self.s.query_points(self.name, limit=100, with_payload=True, with_vectors=True).points
            e = self.m.query_points(self.name, limit=100, with_payload=True, with_vectors=True).points
        ctx = self.ctx(f"exact floats via {via}")
        by_a = {norm_id(p.id): p for p in a}
        assert set(by_a) == {norm_id(p.id) for p in e}, f"ids differ {ctx}"
        cosine = {n for n, (_, d) in self.schema.dense.items() if d == Distance.COSINE}
        tricky = set(TRICKY_VECTOR_FLOATS) | {abs(x) for x in TRICKY_VECTOR_FLOATS}
        problems = []
        for pe in e:
            pa = by_a[norm_id(pe.id)]
            if not strict_equal(pa.payload, pe.payload):
                problems.append(f"id {pe.id}: payload {pa.payload} != {pe.payload}")
            if "fx" in (pe.payload or {}):
                TALLY["exact_floats_tricky_payload"] += 1
            for msg in exact_vector_problems(pa.vector, pe.vector, cosine):
                problems.append(f"id {pe.id}: {msg}")
            vs = pe.vector if isinstance(pe.vector, dict) else {"": pe.vector}
            for v in vs.values():
                vals = v.values if isinstance(v, models.SparseVector) else v
                if any(f32_shortest(x) in tricky for x in vals):
                    TALLY["exact_floats_tricky_vector"] += 1
                    break
        assert not problems, f"values not returned exactly ({len(problems)}):\n    " + "\n    ".join(problems[:12]) + "\n" + ctx

    # 6. full-text index with options
    def _text_index_read(self):
        fr = self.frng
        opts = self.text_index
        TALLY["text_index"] += 1
        if opts.get("tokenizer") == "prefix":
            TALLY["text_index_prefix"] += 1
        if opts.get("lowercase") is False:
            TALLY["text_index_lowercase_false"] += 1
        if "stopwords" in opts:
            TALLY["text_index_stopwords"] += 1
        text = " ".join(fr.sample(TEXT_QUERY_WORDS, fr.randint(1, 2)))
        cond = FC(key="txt", match=models.MatchText(text=text))
        r = fr.random()
        if r < 0.6:
            flt = models.Filter(must=[cond])
        elif r < 0.8:
            flt = models.Filter(must_not=[cond])
        else:
            flt = models.Filter(should=[cond, FC(key="s", match=models.MatchValue(value=fr.choice(WORDS)))])
        what = f"text index {opts}: filter={flt}"
        a = self.s.count(self.name, count_filter=flt, exact=True).count
        e = self.m.count(self.name, count_filter=flt, exact=True).count
        sa = self.s.scroll(self.name, scroll_filter=flt, limit=1000, with_payload=["txt"])[0]
        se = self.m.scroll(self.name, scroll_filter=flt, limit=1000, with_payload=["txt"])[0]
        assert_points_match(sa, se, ctx=self.ctx(what) + f"\n  count: sextant {a}, oracle {e}", scores=False)
        assert a == e, f"count {a} != {e} " + self.ctx(what)

    def feature_reads(self):
        fr = self.frng
        jobs = []
        for sub in ("plain", "order_by", "sample"):
            if fr.random() < 0.75:
                jobs.append((f"vectorless_{sub}", self._vectorless, sub))
        if self.ids and fr.random() < 0.55:
            self._setup_lookup_collection()
            jobs += [("lookup_from", self._lookup_read)] * 2
        if fr.random() < 0.75:
            jobs.append(("groups_prefetch", self._groups_read))
        for n in self.schema.sparse:
            if self.schema.idf[n]:
                jobs += [("sparse_idf_query", self._sparse_idf_read, n)] * 2
        jobs.append(("exact_floats", self._exact_floats_read))
        if self.text_index is not None:
            jobs += [("text_index", self._text_index_read)] * 3
        fr.shuffle(jobs)
        for kind, fn, *args in jobs:
            self._soft(kind, fn, *args)

    def run(self):
        TALLY["cases"] += 1
        self.setup()
        for _ in range(self.rng.randint(0, 6)):
            self.random_write()
        # global state check once per case
        a = self.s.count(self.name, exact=True).count
        e = self.m.count(self.name, exact=True).count
        assert a == e, f"total count {a} != {e} " + self.ctx("after writes")
        for q in range(QUERIES_PER_CASE):
            self._soft("random_read", self.random_read, q)
        self.feature_reads()
        if self.failures:
            n = len(self.failures)
            raise AssertionError(f"{n} failed read(s) in case {self.idx}:\n\n" + "\n\n".join(self.failures))

    def close(self):
        for name in (self.name, self.lk_name):
            if name is None:
                continue
            try:
                self.s.delete_collection(name)
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


@pytest.mark.slow
def test_differential_coverage(capsys):
    """Runs after the cases: every kind of request the generator is meant to produce occurred."""
    cases = TALLY["cases"]
    lines = [f"[test_differential] generated over {cases} cases (kind: count):"]
    lines += [f"    {k}: {TALLY[k]}" for k in sorted(TALLY) if k != "cases"]
    lines.append("  failed reads per kind: " + (", ".join(f"{k}: {v}" for k, v in sorted(FAILS.items())) or "none"))
    with capsys.disabled():  # shown even under -q
        print("\n" + "\n".join(lines))
    if cases < 100:
        pytest.skip(f"only {cases} cases ran; the coverage floor applies from 100")
    short = {k: (TALLY[k], per * cases // 100) for k, per in MIN_PER_100_CASES.items() if TALLY[k] < per * cases // 100}
    assert not short, f"kinds generated too rarely (count, floor): {short}\n" + "\n".join(lines)
