#!/usr/bin/env python3
"""Where a fan-out search spends its CPU: one target (a 3-peer cluster or a single node)
under a steady search load, for `perf` to sample.

    .venv/bin/python bench/cluster_profile.py --bin target/release/sextant --rf 1
    .venv/bin/python bench/cluster_profile.py --bin target/release/sextant --single

It starts the target (helpers of bench/cluster.py), loads --points random vectors into a
collection of 3 shards (replication factor --rf), waits until it is indexed, then runs
1-client searches for --seconds and 4-client searches for 5 s, printing QPS and server
CPU per query. While the 1-client phase runs, the file `<work>/go` exists and
`<work>/pids` lists the server pids, so another shell can sample exactly that phase:

    perf record -F 2000 -g -p "$(tr ' ' , < /tmp/sextant-profile/pids)" -- sleep 8
    perf stat -e context-switches,task-clock -p "$(tr ' ' , < /tmp/sextant-profile/pids)" -- sleep 5

Every process is killed at the end. Numbers from this machine are in
docs/benchmarks-cluster.md ("Where the CPU goes").
"""
import argparse
import http.client
import json
import shutil
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cluster as B  # noqa: E402
import numpy as np  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/sextant")
    ap.add_argument("--work", default="/tmp/sextant-profile")
    ap.add_argument("--single", action="store_true", help="a single node instead of 3 peers")
    ap.add_argument("--rf", type=int, default=1)
    ap.add_argument("--points", type=int, default=50000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--seconds", type=float, default=15.0)
    a = ap.parse_args()
    work = Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    binary = Path(a.bin).resolve()
    try:
        if a.single:
            node = B.Node(binary, work, "single", cluster=False)
            node.start([])
            node.wait_ready(60)
            nodes = [node]
        else:
            nodes = B.start_cluster(binary, work, 3, 60)
        rng = np.random.default_rng(1)
        x = rng.normal(size=(a.points, a.dim)).astype(np.float32)
        nodes[0].ok("PUT", "/collections/c", {
            "vectors": {"size": a.dim, "distance": "Cosine"}, "shard_number": 3,
            "replication_factor": a.rf, "optimizers_config": {"indexing_threshold": 1}})
        time.sleep(1)
        for s in range(0, a.points, 1000):
            pts = [{"id": i, "vector": x[i].round(5).tolist()} for i in range(s, min(a.points, s + 1000))]
            nodes[s // 1000 % len(nodes)].ok("PUT", "/collections/c/points?wait=true", {"points": pts})
        for n in nodes:
            while n.ok("GET", "/collections/c")["status"] != "green":
                time.sleep(0.5)
        time.sleep(3)
        (work / "pids").write_text(" ".join(str(n.proc.pid) for n in nodes))
        queries = [json.dumps({"vector": q.round(5).tolist(), "limit": 10, "params": {"hnsw_ef": 64}}).encode()
                   for q in rng.normal(size=(1000, a.dim)).astype(np.float32)]

        def run(seconds: float, clients: int):
            done = [0]

            def worker():
                c = http.client.HTTPConnection(B.HOST, nodes[0].http_port)
                i, end = 0, time.time() + seconds
                while time.time() < end:
                    c.request("POST", "/collections/c/points/search", body=queries[i % len(queries)],
                              headers={"Content-Type": "application/json"})
                    c.getresponse().read()
                    i += 1
                done[0] += i

            ts = [threading.Thread(target=worker) for _ in range(clients)]
            cpu0, t0 = sum(n.cpu() for n in nodes), time.time()
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            wall, cpu = time.time() - t0, sum(n.cpu() for n in nodes) - cpu0
            return done[0] / wall, cpu * 1e3 / max(done[0], 1)

        run(3, 1)  # warm-up
        (work / "go").write_text("1")
        qps, cpu = run(a.seconds, 1)
        print(f"1 client:  {qps:8.1f} QPS  server CPU {cpu:.3f} ms/query", flush=True)
        (work / "go").unlink()
        qps, cpu = run(5, 4)
        print(f"4 clients: {qps:8.1f} QPS  server CPU {cpu:.3f} ms/query", flush=True)
    finally:
        for n in B._PROCS:
            n.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
