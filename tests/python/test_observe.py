"""`GET /metrics` (Prometheus text) and `GET /telemetry` (Qdrant's TelemetryData shape),
issue #14."""

from __future__ import annotations

import re

import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import SextantServer


class PrefixedServer(SextantServer):
    def env(self) -> dict:
        env = super().env()
        env["QDRANT__SERVICE__METRICS_PREFIX"] = "sx_"
        return env


def metric(text: str, name: str, labels: dict | None = None) -> float | None:
    """The value of sample `name` whose labels include `labels`, parsed with the Prometheus
    project's own text parser (a malformed exposition fails the test)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                return sample.value
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
        assert metric(t, "sx_wal_bytes") > 0
        ep = "/collections/{name}/points/search"
        assert metric(t, "sx_rest_responses_total", {"endpoint": ep, "method": "POST", "status": "200"}) == 3
        assert metric(t, "sx_rest_responses_total", {"endpoint": ep, "method": "POST", "status": "404"}) == 1
        assert metric(t, "sx_rest_responses_duration_seconds_count", {"endpoint": ep, "method": "POST"}) == 4
        # the raw collection name never becomes a label (bounded label sets)
        assert "nope" not in t
        # no unprefixed names
        assert not re.search(r"^(app_info|rest_responses_total)", t, re.M)
        # counts follow every write (a scrape may reuse a count only while nothing changed)
        assert requests.post(f"{u}/collections/m/points/delete?wait=true", json={"points": [1, 2]}, timeout=10).ok
        t = requests.get(f"{u}/metrics", timeout=10).text
        assert (metric(t, "sx_points_total"), metric(t, "sx_vectors_total")) == (3, 3)
        assert requests.get(f"{u}/metrics", timeout=10).ok  # unchanged: the same counts again
        t = requests.get(f"{u}/metrics", timeout=10).text
        assert (metric(t, "sx_points_total"), metric(t, "sx_vectors_total")) == (3, 3)
        assert requests.delete(f"{u}/collections/m", timeout=10).ok
        assert requests.put(f"{u}/collections/m", json={"vectors": {"size": 3, "distance": "Dot"}}, timeout=10).ok
        assert requests.put(f"{u}/collections/m/points?wait=true", json={"points": pts[:1]}, timeout=10).ok
        t = requests.get(f"{u}/metrics", timeout=10).text
        assert (metric(t, "sx_points_total"), metric(t, "sx_vectors_total")) == (1, 1)
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
            assert metric(text, "cluster_leader") in (a.peer_id, b.peer_id)
        # replica states and transfers: a 2-shard rf=2 collection has 4 Active replicas
        r = a.request("PUT", "/collections/rs", json={"vectors": {"size": 2, "distance": "Dot"},
                                                      "shard_number": 2, "replication_factor": 2})
        assert r.status_code == 200, r.text
        text = b.get("/metrics").text
        assert metric(text, "cluster_replicas", {"state": "Active"}) == 4
        assert metric(text, "cluster_replicas", {"state": "Dead"}) == 0
        assert metric(text, "cluster_transfers_in_flight") == 0
    finally:
        c.cleanup()


def test_service_host_is_respected(tmp_path):
    """`service.host: 127.0.0.1` listens there only: 127.0.0.2 (also loopback) is refused."""
    class HostServer(SextantServer):
        def env(self) -> dict:
            env = super().env()
            env["QDRANT__SERVICE__HOST"] = "127.0.0.1"
            return env

    srv = HostServer(tmp_path).start()
    try:
        assert requests.get(f"http://127.0.0.1:{srv.port}/readyz", timeout=5).ok
        try:
            requests.get(f"http://127.0.0.2:{srv.port}/readyz", timeout=5)
            raise AssertionError("answered on 127.0.0.2 although service.host is 127.0.0.1")
        except requests.ConnectionError:
            pass
    finally:
        srv.stop()


def test_access_log_and_json_lines(tmp_path):
    """`logger.format: json` writes JSON lines; at debug each request logs one access line;
    openraft/tonic internals stay at warn with a plain level."""
    import json as _json

    class JsonServer(SextantServer):
        def env(self) -> dict:
            env = super().env()
            env["QDRANT__LOGGER__FORMAT"] = "json"
            env["QDRANT__LOG_LEVEL"] = "DEBUG"
            return env

    srv = JsonServer(tmp_path).start()
    try:
        requests.get(f"{srv.url}/collections", timeout=5)
    finally:
        srv.stop()
    out = (srv.workdir / f"stdout.{srv._start_count}.log").read_text()
    lines = [l for l in out.splitlines() if l.strip()]
    assert lines, "no log output"
    parsed = [_json.loads(l) for l in lines]  # every line is JSON
    access = [p for p in parsed if p.get("fields", {}).get("path") == "/collections"]
    assert access and access[0]["fields"]["status"] == 200, lines[-5:]
    assert "\x1b[" not in out  # no ANSI colours in a file
