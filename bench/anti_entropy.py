#!/usr/bin/env python3
"""Cost of anti-entropy on idle shards (issue #15's budget: at most 5% of one core on an
idle shard of 1M points).

Usage (from the repository root, after `cargo build --release`):

    SEXTANT_BIN=target/release/sextant .venv/bin/python bench/anti_entropy.py --points 1000000
    .venv/bin/python bench/anti_entropy.py --smoke          # tiny, debug build

Starts two 3-peer clusters side by side on 127.0.0.1 — one with
`cluster.anti_entropy.interval_sec` = --interval, one with anti-entropy off — creates the
same collection on both (--dim, 3 shards, replication_factor 2, indexing off: only the
stored points matter), uploads --points seeded points to each, then leaves both idle and
samples the CPU time (/proc/<pid>/stat) of every peer over --seconds. Reported: the CPU of
each cluster per second of wall time (in % of one core), the difference between them (the
cost of anti-entropy), the comparisons counted, the one-off cost of the first round
(digests computed after the upload) measured separately over its own window, and the cost
of the round after a 10-point write (only the digest buckets of those points are hashed
again).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "python"))

from cluster_harness import start_cluster  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def cluster_cpu(peers) -> float:
    return sum(cpu_seconds(p.proc.pid) for p in peers)


def upload(a, name: str, points: int, dim: int, seed: int) -> None:
    r = a.request("PUT", f"/collections/{name}", json={
        "vectors": {"size": dim, "distance": "Cosine"}, "shard_number": 3, "replication_factor": 2,
        "optimizers_config": {"indexing_threshold": 0}})
    assert r.status_code == 200, r.text
    rng = random.Random(seed)
    batch = 1000
    for start in range(0, points, batch):
        pts = [{"id": i + 1, "vector": [rng.random() for _ in range(dim)], "payload": {"n": i}}
               for i in range(start, min(points, start + batch))]
        r = a.request("PUT", f"/collections/{name}/points?wait=true", json={"points": pts}, timeout=120)
        assert r.status_code == 200, r.text


def comparisons(peers, name: str) -> int:
    return sum(p.get(f"/collections/{name}/cluster").json()["result"]["anti_entropy"]["comparisons"]
               for p in peers)


def poll(on_peers, off_peers, name: str) -> int:
    """The measured cluster's comparisons. The other cluster is asked the same, so the
    cost of answering (`GET .../cluster` counts each local shard's points) is on both
    sides and cancels out of the difference."""
    comparisons(off_peers, name)
    return comparisons(on_peers, name)


WRITE_POINTS = 10


def small_write_round(on_peers, off_peers, dim: int, interval: int) -> dict:
    """Upsert WRITE_POINTS existing ids with new vectors into both clusters, then measure
    the CPU (with minus without anti-entropy) until every shard was compared again."""
    rng = random.Random(99)
    pts = [{"id": 1 + rng.randrange(1000), "vector": [rng.random() for _ in range(dim)],
            "payload": {"n": -1}} for _ in range(WRITE_POINTS)]
    for peers in (off_peers, on_peers):
        r = peers[0].request("PUT", "/collections/ae/points?wait=true", json={"points": pts}, timeout=60)
        assert r.status_code == 200, r.text
    n0 = poll(on_peers, off_peers, "ae")
    c0, o0, w0 = cluster_cpu(on_peers), cluster_cpu(off_peers), time.monotonic()
    # the shards pause for 2 s after a write, then the next round compares all 3
    deadline = time.monotonic() + max(60.0, 4 * interval)
    while poll(on_peers, off_peers, "ae") < n0 + 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    return {"seconds": round(time.monotonic() - w0, 2),
            "cpu_s": round((cluster_cpu(on_peers) - c0) - (cluster_cpu(off_peers) - o0), 2),
            "comparisons": comparisons(on_peers, "ae") - n0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--interval", type=int, default=5, help="anti-entropy interval_sec of the measured cluster")
    ap.add_argument("--seconds", type=float, default=60.0, help="idle window measured")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()
    if a.smoke:
        a.points, a.seconds, a.interval = 3000, 6.0, 2
    base = Path(tempfile.mkdtemp(prefix="sextant-ae-"))
    os.environ["QDRANT__CLUSTER__ANTI_ENTROPY__INTERVAL_SEC"] = str(a.interval)
    on, on_peers = start_cluster(base / "on", 3)
    os.environ["QDRANT__CLUSTER__ANTI_ENTROPY__INTERVAL_SEC"] = "0"
    off, off_peers = start_cluster(base / "off", 3)
    try:
        # the uploads, one after the other: while a collection takes writes, anti-entropy
        # compares the digest buckets no write touched (its cost during an ingest)
        ingest = {}
        for label, peers in (("off", off_peers), ("on", on_peers)):
            c0, t0 = cluster_cpu(peers), time.monotonic()
            upload(peers[0], "ae", a.points, a.dim, 1)
            ingest[label] = {"seconds": round(time.monotonic() - t0, 1), "cpu_s": round(cluster_cpu(peers) - c0, 1)}
        ingest["comparisons_during_upload"] = comparisons(on_peers, "ae")
        print(f"uploads of {a.points} points x {a.dim}: {ingest}", flush=True)
        # first round after the writes: digests of every shard are computed once (the
        # window starts right after the upload, so it holds that round whole)
        c0, w0 = cluster_cpu(on_peers), time.monotonic()
        o0 = cluster_cpu(off_peers)
        deadline = time.monotonic() + max(60.0, 4 * a.interval)
        while poll(on_peers, off_peers, "ae") < 3 and time.monotonic() < deadline:
            time.sleep(0.5)
        first_round = {"seconds": time.monotonic() - w0,
                       "cpu_s": (cluster_cpu(on_peers) - c0) - (cluster_cpu(off_peers) - o0),
                       "comparisons": comparisons(on_peers, "ae")}
        print(f"first round: {first_round}", flush=True)
        # steady idle state
        time.sleep(a.interval)
        n0 = comparisons(on_peers, "ae")
        c0, o0, w0 = cluster_cpu(on_peers), cluster_cpu(off_peers), time.monotonic()
        time.sleep(a.seconds)
        wall = time.monotonic() - w0
        c1, o1 = cluster_cpu(on_peers), cluster_cpu(off_peers)
        n1 = comparisons(on_peers, "ae")
        # one small write to each cluster, then the next round: only the digest buckets
        # of the written points are hashed again (a full digest is the first round's cost)
        after_write = small_write_round(on_peers, off_peers, a.dim, a.interval)
        print(f"round after a {WRITE_POINTS}-point write: {after_write}", flush=True)
        res = {
            "points": a.points, "dim": a.dim, "interval_sec": a.interval, "window_s": round(wall, 1),
            "cpu_pct_of_a_core_on": round(100 * (c1 - c0) / wall, 2),
            "cpu_pct_of_a_core_off": round(100 * (o1 - o0) / wall, 2),
            "anti_entropy_pct_of_a_core": round(100 * ((c1 - c0) - (o1 - o0)) / wall, 2),
            "comparisons_in_window": n1 - n0,
            "first_round": {k: round(v, 2) if isinstance(v, float) else v for k, v in first_round.items()},
            "round_after_a_small_write": after_write,
            "upload": ingest,
            "mismatches": sum(p.get("/collections/ae/cluster").json()["result"]["anti_entropy"]["mismatches"]
                              for p in on_peers),
        }
        print(json.dumps(res, indent=2))
        if a.json:
            Path(a.json).write_text(json.dumps(res, indent=2))
        assert res["mismatches"] == 0, "identical replicas were reported different"
        if a.smoke:
            assert res["comparisons_in_window"] > 0, "no comparison ran"
    finally:
        on.cleanup()
        off.cleanup()


if __name__ == "__main__":
    main()
