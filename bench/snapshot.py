#!/usr/bin/env python3
"""Cost of collection snapshots (issue #16): time and size of a snapshot, how long writes
wait while it is taken, and the server's memory while a snapshot is downloaded and
uploaded back.

Usage (from the repository root, after `cargo build --release`):

    SEXTANT_BIN=target/release/sextant .venv/bin/python bench/snapshot.py --points 1000000
    .venv/bin/python bench/snapshot.py --smoke          # tiny, debug build

Starts one single node, creates a collection (--dim, Cosine, indexing off unless --index),
uploads --points seeded points, then:

1. with one writer thread upserting single points (`wait=true`) back to back, takes a
   snapshot (`wait=true`) and records every write's latency during it: the longest is how
   long the snapshot blocked writes (the issue's budget: 100 ms);
2. downloads the snapshot (streamed) and uploads it back into a new collection, sampling
   the server's RSS (/proc/<pid>/status) every 20 ms: the growth over the RSS before each
   step is what streaming costs (budget: < 64 MB for a 1 GB snapshot);
3. checks the restored collection's count.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "python"))

from conftest import SextantServer  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class RssPeak:
    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, rss_mb(pid), threading.Event()
        self.base = self.peak
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.02)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def upload(url: str, name: str, points: int, dim: int, seed: int, index: bool) -> None:
    r = requests.put(f"{url}/collections/{name}", json={
        "vectors": {"size": dim, "distance": "Cosine"},
        "optimizers_config": {"indexing_threshold": 20000 if index else 0}})
    assert r.status_code == 200, r.text
    rng = random.Random(seed)
    s = requests.Session()
    batch = 1000
    for start in range(0, points, batch):
        pts = [{"id": i + 1, "vector": [round(rng.random(), 6) for _ in range(dim)], "payload": {"n": i}}
               for i in range(start, min(points, start + batch))]
        r = s.put(f"{url}/collections/{name}/points?wait=true", data=json.dumps({"points": pts}),
                  headers={"Content-Type": "application/json"}, timeout=300)
        assert r.status_code == 200, r.text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--index", action="store_true", help="build the HNSW graph before the snapshot")
    ap.add_argument("--smoke", action="store_true", help="2,000 points, assert that it all works")
    ap.add_argument("--seed", type=int, default=3)
    a = ap.parse_args()
    if a.smoke:
        a.points = 2000
    work = Path(tempfile.mkdtemp(prefix="sextant-snapshot-bench-"))
    srv = SextantServer(work)
    out: dict = {"points": a.points, "dim": a.dim, "binary": os.environ.get("SEXTANT_BIN", "target/debug/sextant")}
    try:
        srv.start()
        url, pid = srv.url, srv.proc.pid
        t0 = time.monotonic()
        upload(url, "src", a.points, a.dim, a.seed, a.index)
        out["upload_s"] = round(time.monotonic() - t0, 1)
        if a.index:
            while requests.get(f"{url}/collections/src").json()["result"]["status"] != "green":
                time.sleep(0.5)

        # 1. snapshot under a steady writer
        stop, lat = threading.Event(), []

        def writer():
            s = requests.Session()
            i = a.points + 1
            rng = random.Random(9)
            while not stop.is_set():
                body = {"points": [{"id": i, "vector": [rng.random() for _ in range(a.dim)], "payload": {"n": i}}]}
                w0 = time.monotonic()
                r = s.put(f"{url}/collections/src/points?wait=true", json=body, timeout=120)
                lat.append((w0, time.monotonic() - w0, r.status_code))
                i += 1

        th = threading.Thread(target=writer)
        th.start()
        time.sleep(1.0)
        s0 = time.monotonic()
        r = requests.post(f"{url}/collections/src/snapshots?wait=true", timeout=3600)
        s1 = time.monotonic()
        time.sleep(0.5)
        stop.set()
        th.join()
        assert r.status_code == 200, r.text
        snap = r.json()["result"]
        during = [x for x in lat if x[0] + x[1] >= s0 and x[0] <= s1]
        before = [x[1] for x in lat if x[0] + x[1] < s0]
        out["snapshot_s"] = round(s1 - s0, 2)
        out["snapshot_bytes"] = snap["size"]
        out["writes_during"] = len(during)
        out["write_max_ms_during"] = round(max((x[1] for x in during), default=0) * 1000, 1)
        out["write_p50_ms_before"] = round(sorted(before)[len(before) // 2] * 1000, 2) if before else None
        out["write_errors"] = sum(1 for x in lat if x[2] != 200)

        # 2. streamed download and upload
        path = work / "dl.snapshot"
        with RssPeak(pid) as m:
            d0 = time.monotonic()
            with requests.get(f"{url}/collections/src/snapshots/{snap['name']}", stream=True, timeout=3600) as resp:
                assert resp.status_code == 200
                with open(path, "wb") as f:
                    for chunk in resp.iter_content(1 << 20):
                        f.write(chunk)
            out["download_s"] = round(time.monotonic() - d0, 2)
        out["download_rss_growth_mb"] = round(m.peak - m.base, 1)
        assert path.stat().st_size == snap["size"]
        with RssPeak(pid) as m:
            u0 = time.monotonic()
            with open(path, "rb") as f:
                r = requests.post(f"{url}/collections/copy/snapshots/upload?checksum={snap['checksum']}",
                                  files={"snapshot": ("s.snapshot", f)}, timeout=3600)
            out["upload_recover_s"] = round(time.monotonic() - u0, 2)
        assert r.status_code == 200, r.text
        out["upload_recover_rss_growth_mb"] = round(m.peak - m.base, 1)
        out["rss_after_mb"] = round(rss_mb(pid), 1)
        count = requests.post(f"{url}/collections/copy/points/count", json={"exact": True}).json()["result"]["count"]
        assert count >= a.points, count
        out["restored_points"] = count
        print(json.dumps(out, indent=2))
        if a.smoke:
            assert out["write_errors"] == 0
        return 0
    finally:
        srv.kill()


if __name__ == "__main__":
    sys.exit(main())
