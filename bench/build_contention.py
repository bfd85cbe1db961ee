#!/usr/bin/env python3
"""Requests while a graph builds: how much an HNSW build slows the requests that arrive
during it, for two binaries side by side in one run.

Usage (from the repository root, after `cargo build --release`):

    .venv/bin/python bench/build_contention.py --bin target/release/sextant \\
        --baseline /path/to/older/sextant --points 20000 --dim 768 --rounds 2
    .venv/bin/python bench/build_contention.py --smoke      # tiny, debug build, one binary

For each binary, in rounds that alternate which binary goes first, it starts a single
node, uploads --points seeded vectors into `bg` with indexing off, and a small indexed
collection `fg` (2,000 x 128). Then it measures three foreground clients against `fg`
(single-point upserts with `wait=true`, searches with limit 10, point retrievals), first
for --idle-seconds with nothing else running, then while `bg` builds its graph (its
`indexing_threshold` is set to 1 KB, and the run ends when `bg` reports green). It
reports each client's p50, p99 and max latency idle and during the build, the build's
wall time, and the ratios of the two binaries.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "python"))

from conftest import SextantServer  # noqa: E402

FG_POINTS, FG_DIM = 2000, 128


def put(s: requests.Session, url: str, body) -> None:
    r = s.put(url, data=json.dumps(body), headers={"Content-Type": "application/json"}, timeout=600)
    assert r.status_code == 200, f"{url}: {r.status_code} {r.text[:300]}"


def load(url: str, points: int, dim: int, seed: int) -> None:
    s = requests.Session()
    for name in ("bg", "quiet"):
        put(s, f"{url}/collections/{name}", {"vectors": {"size": dim, "distance": "Cosine"},
                                            "optimizers_config": {"indexing_threshold": 0}})
    put(s, f"{url}/collections/fg", {"vectors": {"size": FG_DIM, "distance": "Cosine"},
                                    "optimizers_config": {"indexing_threshold": 1}})
    rng = random.Random(seed)
    for name, n, d in (("bg", points, dim), ("quiet", points, dim), ("fg", FG_POINTS, FG_DIM)):
        batch = max(1, min(1000, 4_000_000 // (d * 8)))
        for start in range(0, n, batch):
            pts = [{"id": i, "vector": [round(rng.random(), 5) for _ in range(d)], "payload": {"n": i}}
                   for i in range(start, min(n, start + batch))]
            put(s, f"{url}/collections/{name}/points?wait=true", {"points": pts})
    wait_green(url, "fg", 600)


def status(url: str, name: str) -> str:
    return requests.get(f"{url}/collections/{name}", timeout=60).json()["result"]["status"]


def wait_green(url: str, name: str, timeout: float) -> float:
    t0 = time.monotonic()
    while status(url, name) != "green":
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{name} not green within {timeout}s")
        time.sleep(0.1)
    return time.monotonic() - t0


class Clients:
    """Three foreground clients against `fg`, each recording (start, seconds, ok)."""

    def __init__(self, url: str, seed: int):
        self.url, self.stop = url, threading.Event()
        self.lat: dict[str, list[tuple[float, float, bool]]] = {"upsert": [], "search": [], "retrieve": []}
        self.threads = [threading.Thread(target=self.run, args=(k, seed + i), daemon=True)
                        for i, k in enumerate(self.lat)]

    def run(self, kind: str, seed: int) -> None:
        rng, s, out = random.Random(seed), requests.Session(), self.lat[kind]
        while not self.stop.is_set():
            if kind == "upsert":
                i = rng.randrange(FG_POINTS)
                method, path = "PUT", "/collections/fg/points?wait=true"
                body = {"points": [{"id": i, "vector": [rng.random() for _ in range(FG_DIM)], "payload": {"n": i}}]}
            elif kind == "search":
                method, path = "POST", "/collections/fg/points/search"
                body = {"vector": [rng.random() for _ in range(FG_DIM)], "limit": 10}
            else:
                method, path = "POST", "/collections/fg/points"
                body = {"ids": [rng.randrange(FG_POINTS) for _ in range(5)], "with_payload": True}
            t0 = time.monotonic()
            try:
                ok = s.request(method, self.url + path, json=body, timeout=60).status_code == 200
            except requests.RequestException:
                ok = False
            out.append((t0, time.monotonic() - t0, ok))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join()


def summary(samples: list[tuple[float, float, bool]], t0: float, t1: float) -> dict:
    xs = sorted(d for s, d, _ in samples if s >= t0 and s + d <= t1)
    if not xs:
        return {"n": 0}
    q = lambda p: xs[min(len(xs) - 1, int(p * len(xs)))] * 1000  # noqa: E731
    return {"n": len(xs), "p50_ms": round(q(0.5), 2), "p99_ms": round(q(0.99), 2),
            "max_ms": round(xs[-1] * 1000, 1), "mean_ms": round(statistics.fmean(xs) * 1000, 2),
            "errors": sum(1 for s, d, ok in samples if s >= t0 and s + d <= t1 and not ok)}


def one(binary: Path, a, seed: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="sextant-contention-bench-"))
    os.environ["SEXTANT_BIN"] = str(binary)
    srv = SextantServer(work)
    try:
        srv.start()
        url = srv.url
        load(url, a.points, a.dim, seed)
        # the same build with no request running: what yielding costs when there is
        # nothing to yield to
        r = requests.patch(f"{url}/collections/quiet", json={"optimizers_config": {"indexing_threshold": 1}},
                           timeout=60)
        assert r.status_code == 200, r.text
        quiet_s = wait_green(url, "quiet", 3600)
        with Clients(url, seed) as c:
            time.sleep(0.5)
            i0 = time.monotonic()
            time.sleep(a.idle_seconds)
            i1 = time.monotonic()
            r = requests.patch(f"{url}/collections/bg", json={"optimizers_config": {"indexing_threshold": 1}},
                               timeout=60)
            assert r.status_code == 200, r.text
            b0 = time.monotonic()
            build_s = wait_green(url, "bg", 3600)
            b1 = time.monotonic()
        out = {"build_s": round(build_s, 2), "quiet_build_s": round(quiet_s, 2)}
        for k, v in c.lat.items():
            out[k] = {"idle": summary(v, i0, i1), "build": summary(v, b0, b1)}
        return out
    finally:
        srv.kill()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=str(ROOT / "target/release/sextant"))
    ap.add_argument("--baseline", help="a second binary, run in the same rounds")
    ap.add_argument("--points", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--idle-seconds", type=float, default=5.0)
    ap.add_argument("--smoke", action="store_true", help="tiny run of --bin (default: the debug build)")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    if a.smoke:
        a.points, a.dim, a.rounds, a.idle_seconds, a.baseline = 1500, 64, 1, 1.0, None
        if a.bin == str(ROOT / "target/release/sextant"):
            a.bin = str(ROOT / "target/debug/sextant")
    bins = {"this": Path(a.bin).resolve()}
    if a.baseline:
        bins["baseline"] = Path(a.baseline).resolve()
    # copies: a rebuild in place during the run cannot mix versions
    tmp = Path(tempfile.mkdtemp(prefix="sextant-contention-bins-"))
    for k, p in list(bins.items()):
        shutil.copy2(p, tmp / k)
        bins[k] = tmp / k
    results: dict[str, list[dict]] = {k: [] for k in bins}
    order = list(bins)
    for rnd in range(a.rounds):
        for k in order[rnd % len(order):] + order[:rnd % len(order)]:
            r = one(bins[k], a, seed=rnd + 1)
            results[k].append(r)
            print(f"round {rnd} {k}: {json.dumps(r)}", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)

    def med(k: str, kind: str, phase: str, field: str) -> float:
        return statistics.median(r[kind][phase][field] for r in results[k])

    print(f"\n{a.points} x {a.dim} graph build; medians over {a.rounds} round(s)")
    print("| binary | client | idle p50 ms | build p50 ms | idle p99 ms | build p99 ms | build max ms | build s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for k in bins:
        b = statistics.median(r["build_s"] for r in results[k])
        for kind in ("upsert", "search", "retrieve"):
            print(f"| {k} | {kind} | {med(k, kind, 'idle', 'p50_ms'):.2f} | {med(k, kind, 'build', 'p50_ms'):.2f} | "
                  f"{med(k, kind, 'idle', 'p99_ms'):.2f} | {med(k, kind, 'build', 'p99_ms'):.2f} | "
                  f"{med(k, kind, 'build', 'max_ms'):.1f} | {b:.1f} |")
    if "baseline" in bins:
        print("\nratios this / baseline (during the build):")
        for kind in ("upsert", "search", "retrieve"):
            print(f"  {kind}: p50 {med('this', kind, 'build', 'p50_ms') / med('baseline', kind, 'build', 'p50_ms'):.2f}x,"
                  f" p99 {med('this', kind, 'build', 'p99_ms') / med('baseline', kind, 'build', 'p99_ms'):.2f}x")
        bt = statistics.median(r["build_s"] for r in results["this"])
        bb = statistics.median(r["build_s"] for r in results["baseline"])
        print(f"  build wall time under requests: {bt / bb:.2f}x")
        qt = statistics.median(r["quiet_build_s"] for r in results["this"])
        qb = statistics.median(r["quiet_build_s"] for r in results["baseline"])
        print(f"  build wall time with no request running: {qt / qb:.2f}x ({qt:.1f} s vs {qb:.1f} s)")
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "results": results}, indent=2))
    errors = sum(r[kind][ph].get("errors", 0) for rs in results.values() for r in rs
                 for kind in ("upsert", "search", "retrieve") for ph in ("idle", "build"))
    if errors:
        print(f"{errors} foreground requests failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
