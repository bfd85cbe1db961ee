"""Metadata operations return only once every reachable peer applied them (issue #13):
a collection created through any peer exists on every peer when the call returns, and is
gone from every peer when its deletion returns."""

from __future__ import annotations

import requests

from cluster_harness import Cluster


def test_metadata_ops_are_applied_everywhere_on_return(tmp_path):
    c = Cluster(tmp_path)
    try:
        a = c.start_first()
        peers = [a]
        for _ in range(2):
            p = c.spawn_joiner(a)
            p.wait_ready()
            peers.append(p)
        c.wait_converged(60)
        misses = []
        for i in range(12):
            via = peers[i % 3]
            name = f"meta_{i}"
            r = via.request("PUT", f"/collections/{name}", json={"vectors": {"size": 4, "distance": "Dot"}})
            assert r.status_code == 200, r.text
            for p in peers:  # no waiting: the answer itself must mean "applied everywhere"
                if not requests.get(f"{p.url}/collections/{name}/exists", timeout=5).json()["result"]["exists"]:
                    misses.append((name, "missing after create", p.name))
            r = peers[(i + 1) % 3].request("PUT", f"/collections/{name}/index",
                                           json={"field_name": "k", "field_schema": "keyword"})
            assert r.status_code == 200, r.text
            for p in peers:
                schema = p.get(f"/collections/{name}").json()["result"]["payload_schema"]
                if "k" not in schema:
                    misses.append((name, "index missing", p.name))
            r = peers[(i + 2) % 3].request("DELETE", f"/collections/{name}")
            assert r.status_code == 200, r.text
            for p in peers:
                if requests.get(f"{p.url}/collections/{name}/exists", timeout=5).json()["result"]["exists"]:
                    misses.append((name, "present after delete", p.name))
        assert not misses, misses
    finally:
        c.cleanup()
