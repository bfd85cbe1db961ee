"""`GET /metrics` (Prometheus text) and `GET /telemetry` (Qdrant's TelemetryData shape),
issue #14."""

from __future__ import annotations

import re

import requests

from conftest import SextantServer


class PrefixedServer(SextantServer):
    def env(self) -> dict:
        env = super().env()
        env["QDRANT__SERVICE__METRICS_PREFIX"] = "sx_"
        return env


def metric(text: str, name: str, labels: dict | None = None) -> float | None:
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in (labels or {}).items()):
            return float(m.group(3))
    return None


def test_metrics_count_requests_and_data(tmp_path):
    srv = PrefixedServer(tmp_path).start()
    try:
        u = srv.url
        assert requests.put(f"{u}/collections/m", json={"vectors": {"size": 3, "distance": "Dot"}}, timeout=10).ok
        pts = [{"id": i, "vector": [i, 1, 0]} for i in range(1, 6)]
        assert requests.put(f"{u}/collections/m/points?wait=true", json={"points": pts}, timeout=10).ok
        for _ in range(3):
            requests.post(f"{u}/collections/m/points/search", json={"vector": [1, 0, 0], "limit": 2}, timeout=10)
        requests.post(f"{u}/collections/nope/points/search", json={"vector": [1, 0, 0], "limit": 2}, timeout=10)
        r = requests.get(f"{u}/metrics", timeout=10)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        t = r.text
        assert metric(t, "sx_app_info", {"name": "sextant"}) == 1
        assert metric(t, "sx_collections_total") == 1
        assert metric(t, "sx_points_total") == 5
        assert metric(t, "sx_vectors_total") == 5
        assert metric(t, "sx_cluster_enabled") == 0
        ep = "/collections/{name}/points/search"
        assert metric(t, "sx_rest_responses_total", {"endpoint": ep, "method": "POST", "status": "200"}) == 3
        assert metric(t, "sx_rest_responses_total", {"endpoint": ep, "method": "POST", "status": "404"}) == 1
        assert metric(t, "sx_rest_responses_duration_seconds_count", {"endpoint": ep, "method": "POST"}) == 4
        # the raw collection name never becomes a label (bounded label sets)
        assert "nope" not in t
        # no unprefixed names
        assert not re.search(r"^(app_info|rest_responses_total)", t, re.M)
    finally:
        srv.stop()


def test_telemetry_shape(server):
    u = server.url
    requests.put(f"{u}/collections/tel", json={"vectors": {"size": 2, "distance": "Dot"}}, timeout=10)
    r = requests.get(f"{u}/telemetry", timeout=10)
    assert r.status_code == 200, r.text
    res = r.json()["result"]
    assert res["id"] and res["app"]["version"] and "features" in res["app"]
    assert res["collections"]["number_of_collections"] >= 1
    assert "collections" not in res["collections"]  # details_level 0: counts only
    assert res["cluster"] == {"enabled": False}
    res = requests.get(f"{u}/telemetry?details_level=2", timeout=10).json()["result"]
    assert any(c["id"] == "tel" for c in res["collections"]["collections"])
    res = requests.get(f"{u}/telemetry?details_level=2&anonymize=true", timeout=10).json()["result"]
    assert all(c["id"] != "tel" for c in res["collections"]["collections"])


def test_cluster_telemetry_lists_every_peers_version(tmp_path):
    from cluster_harness import Cluster, wait_until

    c = Cluster(tmp_path)
    try:
        a = c.start_first()
        b = c.spawn_joiner(a)
        b.wait_ready()
        c.wait_converged(45)
        for p in (a, b):
            res = p.get("/telemetry").json()["result"]["cluster"]
            assert res["enabled"] is True
            assert res["status"]["number_of_peers"] == 2
            assert set(res["peer_metadata"]) == {str(a.peer_id), str(b.peer_id)}
            assert all(m["version"] for m in res["peer_metadata"].values())
            text = p.get("/metrics").text
            assert metric(text, "cluster_enabled") == 1
            assert metric(text, "cluster_peers_total") == 2
            assert metric(text, "cluster_term") >= 1
            assert metric(text, "cluster_role", {"role": "Leader"}) == 1 or \
                metric(text, "cluster_role", {"role": "Follower"}) == 1
    finally:
        c.cleanup()
