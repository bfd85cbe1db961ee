#!/usr/bin/env python3
"""Memory of a loaded collection: plain f32 vs int8 codes + vectors on disk.

    .venv-bench/bin/python bench/memory.py                      # 1M x 128 (about 15 minutes)
    .venv-bench/bin/python bench/memory.py --n 50000 --dim 32 --indexing-threshold-kb 100  # quick check

For each configuration it starts the release server on an empty storage, uploads the
seeded clustered data set of `run.py` over REST, waits for `green`, restarts the server
(SIGTERM: the shutdown checkpoint saves vectors and graphs) and waits for `green` again,
then reads the server's VmRSS / RssAnon / RssFile. Also measured: recall@10 and QPS of 200
queries (1 client, default search params) against exact ground truth, so memory savings
are never reported without their cost.

Reference sizes come from the files the server wrote, not from formulas: raw vectors =
n·dim·4 bytes, graph links = the size of the checkpoint's `graph-0.hnsw` (the newest
checkpoint directory). The report goes to `docs/memory.md` (1M points or more; smaller
runs to `bench/data/memory.md`), raw numbers to `bench/results/memory-<timestamp>.json`.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as B  # noqa: E402  (data generator, Server, exact k-NN)


def proc_mem(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[k] = int(v.split()[0]) / 1024.0  # MiB
    return out


def wait_green(srv, n: int, timeout: float) -> float:
    t0 = time.time()
    streak = 0
    while time.time() - t0 < timeout:
        info = srv.ok("GET", "/collections/mem")["result"]
        if info.get("status") == "green" and info.get("points_count") == n and (info.get("indexed_vectors_count") or 0) > 0:
            streak += 1
            if streak >= 2:
                return time.time() - t0
        else:
            streak = 0
        time.sleep(1.0)
    raise RuntimeError(f"not green after {timeout}s: {info}")


def restart(srv) -> float:
    os.killpg(srv.proc.pid, signal.SIGTERM)
    srv.proc.wait(600)
    srv.logf.close()
    t = time.time()
    srv.start(timeout=900)
    return time.time() - t


def search(srv, queries: np.ndarray, gt: np.ndarray, k: int) -> dict:
    hits, t = 0, time.time()
    for q, truth in zip(queries, gt):
        res = srv.ok("POST", "/collections/mem/points/search", {"vector": q.tolist(), "limit": k})["result"]
        hits += len({r["id"] for r in res} & set(truth[:k].tolist()))
    secs = time.time() - t
    return {"recall": hits / (k * len(queries)), "qps_1_client": len(queries) / secs}


def measure(label: str, vectors_cfg: dict, extra: dict, base, queries, gt, a, work: Path) -> dict:
    n, dim = base.shape
    srv = B.Server(label, str(Path(a.bin_dir) / "sextant"), work)
    out = {"config": label}
    try:
        srv.start()
        srv.ok("PUT", "/collections/mem", {"vectors": {"size": dim, "distance": "Euclid", **vectors_cfg},
                                            "hnsw_config": {"m": a.m, "ef_construct": a.ef_construct},
                                            **({"optimizers_config": {"indexing_threshold": a.indexing_threshold_kb}}
                                               if a.indexing_threshold_kb else {}), **extra})
        t = time.time()
        for b0 in range(0, n, a.batch):
            b1 = min(n, b0 + a.batch)
            srv.ok("PUT", "/collections/mem/points?wait=true",
                   {"batch": {"ids": list(range(b0, b1)), "vectors": base[b0:b1].tolist()}})
        out["upload_secs"] = time.time() - t
        out["green_after_upload_secs"] = wait_green(srv, n, a.timeout)
        out["rss_after_index"] = proc_mem(srv.proc.pid)
        B.log(f"{label}: indexed; {out['rss_after_index']}")
        out["restart_secs"] = restart(srv)
        out["green_after_restart_secs"] = wait_green(srv, n, a.timeout)
        time.sleep(2)
        out["rss_loaded"] = proc_mem(srv.proc.pid)
        out["search"] = search(srv, queries, gt, a.k)
        out["rss_after_search"] = proc_mem(srv.proc.pid)
        B.log(f"{label}: after searches {out['rss_after_search']}")
        cdir = srv.dir / "storage" / "collections" / "mem"
        cps = sorted(p for p in cdir.glob("checkpoint-*") if not p.name.endswith(".tmp"))
        graph = cps[-1] / "graph-0.hnsw" if cps else None
        out["graph_file_bytes"] = graph.stat().st_size if graph and graph.exists() else None
        B.log(f"{label}: loaded {out['rss_loaded']}, search {out['search']}, graph file {out['graph_file_bytes']}")
    finally:
        srv.stop()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--m", type=int, default=16)
    p.add_argument("--ef-construct", type=int, default=100)
    p.add_argument("--batch", type=int, default=2000)
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--indexing-threshold-kb", type=int, default=None, help="default: the server's (10,000 KB)")
    p.add_argument("--bin-dir", default=str(B.ROOT / "target" / "release"))
    a = p.parse_args()
    base, queries = B.make_synthetic(a.n, a.queries, a.dim, 100, 24, 42)
    B.log(f"data {base.shape}; exact ground truth for {len(queries)} queries")
    gt = B.exact_knn(base, queries, a.k, "Euclid")
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "sextant-memory"
    work.mkdir(parents=True, exist_ok=True)
    runs = [
        measure("f32 in RAM", {}, {}, base, queries, gt, a, work),
        measure("int8 + vectors on disk", {"on_disk": True},
                {"quantization_config": {"scalar": {"type": "int8", "quantile": 0.99, "always_ram": True}}},
                base, queries, gt, a, work),
    ]
    raw_mb = a.n * a.dim * 4 / 2**20
    graph_mb = (runs[0]["graph_file_bytes"] or 0) / 2**20
    plain = runs[0]["rss_loaded"]["VmRSS"]
    res = {"when": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "n": a.n, "dim": a.dim,
           "raw_vectors_mib": raw_mb, "graph_links_mib": graph_mb, "runs": runs,
           "plain_over_reference": plain / (raw_mb + graph_mb),
           "quantized_over_plain": runs[1]["rss_loaded"]["VmRSS"] / plain}
    B.RESULTS.mkdir(exist_ok=True)
    path = B.RESULTS / f"memory-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(res, indent=1))
    lines = [
        "# Memory of a loaded collection",
        "",
        f"Generated by `.venv-bench/bin/python bench/memory.py --n {a.n} --dim {a.dim}` ({res['when']}, "
        f"{B.machine_facts().get('cpu', '')}). Seeded clustered data of `bench/run.py`, Euclid, "
        f"m={a.m}, ef_construct={a.ef_construct}, default server settings otherwise. Each configuration runs "
        "on a fresh server: upload over REST, wait for `green`, restart (SIGTERM: the shutdown "
        "checkpoint saves vectors and graphs), wait for `green`, then read `/proc/<pid>/status`.",
        "",
        f"Reference sizes, from the files the server wrote: raw vectors {raw_mb:,.0f} MiB "
        f"(n·dim·4), graph links {graph_mb:,.0f} MiB (the checkpoint's `graph-0.hnsw`).",
        "",
        "| configuration | RSS loaded (MiB) | anon / file | RSS after 200 searches | recall@10 (200 queries, default params) | QPS (1 client, REST) |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        m, s = r["rss_loaded"], r["search"]
        lines.append(f"| {r['config']} | {m['VmRSS']:,.0f} | {m.get('RssAnon', 0):,.0f} / {m.get('RssFile', 0):,.0f} | "
                     f"{r['rss_after_search']['VmRSS']:,.0f} | {s['recall']:.3f} | {s['qps_1_client']:,.0f} |")
    lines += [
        "",
        f"- f32 in RAM: RSS / (raw vectors + graph links) = **{res['plain_over_reference']:.2f}** (target ≤ 1.3).",
        f"- int8 codes + f32 vectors on disk: RSS / f32-in-RAM RSS = **{res['quantized_over_plain']:.3f}** "
        "(target ≤ 0.5). The f32 file is read only to re-score candidates, so its pages are "
        "resident only while read (`RssFile`); the codes (n·dim bytes) and the graph stay in RAM.",
        "- QPS here is one Python client over REST on a shared 2-core machine: a sanity check "
        "that the savings do not cost recall, not a speed benchmark (see docs/benchmarks.md).",
        "",
        f"Raw numbers: `bench/results/{path.name}`.",
        "",
    ]
    doc = B.ROOT / "docs" / "memory.md" if a.n >= 1_000_000 else B.DATA / "memory.md"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"written: {doc}")


if __name__ == "__main__":
    main()
