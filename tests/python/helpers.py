"""Comparison helpers shared by the Sextant test files."""

from __future__ import annotations

import math
from typing import Any, Iterable

import requests
from qdrant_client.http import models

SCORE_TOL = 1e-4
VECTOR_TOL = 1e-4


def id_key(pid: Any) -> tuple:
    """Qdrant's point-id order: integer ids first (numerically), then UUIDs."""
    if isinstance(pid, int):
        return (0, pid, "")
    return (1, 0, str(pid))


def _approx_list(a, b, tol) -> bool:
    if a is None or b is None:
        return a is b
    if len(a) != len(b):
        return False
    return all(math.isclose(x, y, rel_tol=tol, abs_tol=tol) for x, y in zip(a, b))


def vectors_equal(a: Any, b: Any, tol: float = VECTOR_TOL) -> bool:
    """Compare vector outputs: None / list / SparseVector / dict of those."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return False
        return all(vectors_equal(a[k], b[k], tol) for k in a)
    if isinstance(a, models.SparseVector) and isinstance(b, models.SparseVector):
        pa = sorted(zip(a.indices, a.values))
        pb = sorted(zip(b.indices, b.values))
        return [i for i, _ in pa] == [i for i, _ in pb] and _approx_list(
            [v for _, v in pa], [v for _, v in pb], tol
        )
    if isinstance(a, list) and isinstance(b, list):
        if a and isinstance(a[0], list):  # multivector
            return len(a) == len(b) and all(_approx_list(x, y, tol) for x, y in zip(a, b))
        return _approx_list(a, b, tol)
    return a == b


def norm_id(pid: Any) -> Any:
    return str(pid) if not isinstance(pid, int) else pid


def describe(points: Iterable[Any]) -> list:
    out = []
    for p in points:
        d = {"id": p.id}
        if getattr(p, "score", None) is not None:
            d["score"] = round(p.score, 6)
        d["payload"] = p.payload
        if getattr(p, "vector", None) is not None:
            d["vector"] = p.vector
        out.append(d)
    return out


def assert_points_match(actual, expected, ctx: str = "", scores: bool = True, ordered: bool = True,
                        check_vectors: bool = True, check_payload: bool = True):
    """Compare ScoredPoint / Record lists from Sextant (actual) and the oracle (expected)."""
    actual = list(actual)
    expected = list(expected)
    msg = f"{ctx}\n  sextant: {describe(actual)}\n  oracle:  {describe(expected)}"
    a_ids = [norm_id(p.id) for p in actual]
    e_ids = [norm_id(p.id) for p in expected]
    if ordered:
        assert a_ids == e_ids, f"ids differ {msg}"
    else:
        assert sorted(a_ids, key=id_key) == sorted(e_ids, key=id_key), f"id sets differ {msg}"
        actual = sorted(actual, key=lambda p: id_key(norm_id(p.id)))
        expected = sorted(expected, key=lambda p: id_key(norm_id(p.id)))
    for a, e in zip(actual, expected):
        if scores:
            assert a.score is not None and math.isclose(a.score, e.score, rel_tol=SCORE_TOL, abs_tol=SCORE_TOL), (
                f"score differs for id {a.id}: {a.score} vs {e.score} {msg}"
            )
        if check_payload:
            assert a.payload == e.payload, f"payload differs for id {a.id}: {a.payload} vs {e.payload} {msg}"
        if check_vectors:
            assert vectors_equal(a.vector, e.vector), f"vector differs for id {a.id}: {a.vector} vs {e.vector} {msg}"


def assert_tied_match(actual, expected, oracle_scores: dict, ctx: str = "", check_vectors: bool = True,
                      check_payload: bool = True, oracle_records: dict | None = None):
    """Search results whose window contains near-ties: the order among (near-)equal scores is
    unspecified, so compare position-by-position scores, and check every returned id has the
    score the oracle gives it (`oracle_scores`: id -> score over a window wider than the page).
    Payloads / vectors are compared against the oracle's records for the same ids."""
    actual = list(actual)
    expected = list(expected)
    msg = f"{ctx}\n  sextant: {describe(actual)}\n  oracle:  {describe(expected)}"
    assert len(actual) == len(expected), f"length differs {msg}"
    seen = set()
    for a, e in zip(actual, expected):
        assert math.isclose(a.score, e.score, rel_tol=SCORE_TOL, abs_tol=SCORE_TOL), f"scores differ {msg}"
        pid = norm_id(a.id)
        assert pid not in seen, f"duplicate id {a.id} {msg}"
        seen.add(pid)
        assert pid in oracle_scores, f"id {a.id} not among the oracle's candidates {msg}"
        assert math.isclose(a.score, oracle_scores[pid], rel_tol=SCORE_TOL, abs_tol=SCORE_TOL), (
            f"score of id {a.id} is {a.score}, oracle says {oracle_scores[pid]} {msg}")
        if oracle_records is not None:
            rec = oracle_records[pid]
            if check_payload:
                assert a.payload == rec.payload, f"payload differs for id {a.id} {msg}"
            if check_vectors:
                assert vectors_equal(a.vector, rec.vector), f"vector differs for id {a.id} {msg}"


def assert_fused_match(actual, expected, ctx: str = ""):
    """Fusion results (RRF/DBSF) may legitimately tie; within a tie the order is unspecified.

    Scores must match position by position, and each group of equal scores must
    contain the same ids.  Callers use a limit larger than the number of fused
    candidates, so no tie group is cut by the limit.  Everything else (payloads) as usual.
    """
    actual = list(actual)
    expected = list(expected)
    msg = f"{ctx}\n  sextant: {describe(actual)}\n  oracle:  {describe(expected)}"
    assert len(actual) == len(expected), f"length differs {msg}"
    for a, e in zip(actual, expected):
        assert math.isclose(a.score, e.score, rel_tol=SCORE_TOL, abs_tol=SCORE_TOL), f"scores differ {msg}"

    def groups(points):
        out, cur, last = [], [], None
        for p in points:
            if last is not None and not math.isclose(p.score, last, rel_tol=1e-6, abs_tol=1e-6):
                out.append(cur)
                cur = []
            cur.append(p)
            last = p.score
        if cur:
            out.append(cur)
        return out

    # Groups are computed from the oracle's scores; apply the same boundaries to Sextant's list.
    i = 0
    for g in groups(expected):
        n = len(g)
        a_ids = sorted((norm_id(p.id) for p in actual[i:i + n]), key=id_key)
        e_ids = sorted((norm_id(p.id) for p in g), key=id_key)
        assert a_ids == e_ids, f"tie group ids differ {msg}"
        i += n
    by_id_e = {norm_id(p.id): p for p in expected}
    for a in actual:
        e = by_id_e.get(norm_id(a.id))
        if e is not None:
            assert a.payload == e.payload, f"payload differs for {a.id} {msg}"


def assert_error_response(resp: requests.Response, statuses, ctx: str = "") -> dict:
    """Check a Qdrant-style error: expected HTTP status and body {"status":{"error":str}, "time":num}."""
    if isinstance(statuses, int):
        statuses = (statuses,)
    body_text = resp.text[:1000]
    assert resp.status_code in statuses, (
        f"{ctx}: expected HTTP {statuses}, got {resp.status_code}: {body_text}"
    )
    try:
        body = resp.json()
    except ValueError:
        raise AssertionError(f"{ctx}: error body is not JSON: {body_text!r}")
    assert isinstance(body, dict), f"{ctx}: error body not an object: {body_text}"
    status = body.get("status")
    assert isinstance(status, dict), f"{ctx}: 'status' must be an object: {body_text}"
    err = status.get("error")
    assert isinstance(err, str) and err.strip(), f"{ctx}: status.error must be a non-empty string: {body_text}"
    t = body.get("time")
    assert isinstance(t, (int, float)) and not isinstance(t, bool), f"{ctx}: 'time' must be a number: {body_text}"
    return body


def assert_ok_response(resp: requests.Response, ctx: str = "") -> dict:
    assert resp.status_code == 200, f"{ctx}: expected 200, got {resp.status_code}: {resp.text[:1000]}"
    body = resp.json()
    assert body.get("status") == "ok", f"{ctx}: status != ok: {resp.text[:1000]}"
    assert isinstance(body.get("time"), (int, float)), f"{ctx}: no numeric time: {resp.text[:1000]}"
    return body


def haversine_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance in meters (mean earth radius 6371008.8 m)."""
    lon1, lat1, lon2, lat2 = map(math.radians, (lon1, lat1, lon2, lat2))
    a = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371008.8 * math.asin(math.sqrt(min(1.0, a)))
