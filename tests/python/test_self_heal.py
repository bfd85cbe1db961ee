"""Replicas that heal themselves (issue #15): a peer whose data was wiped never answers
wrongly, is not ready until it is whole again, and resyncs by itself; `POST /cluster/recover`
resyncs a peer's replicas on request."""

from __future__ import annotations

import random
import shutil
import time

import pytest
import requests

from cluster_harness import Cluster, start_cluster, wait_until

DIM = 256
POINTS = 600


def three_peers(tmp_path):
    return start_cluster(tmp_path, 3)


def fill(a, name: str) -> None:
    r = a.request("PUT", f"/collections/{name}", json={
        "vectors": {"size": DIM, "distance": "Cosine"}, "shard_number": 3, "replication_factor": 2})
    assert r.status_code == 200, r.text
    rng = random.Random(5)
    pts = [{"id": i, "vector": [rng.random() + 0.01 for _ in range(DIM)],
            "payload": {"n": i, "blob": "p" * 2048}} for i in range(1, POINTS + 1)]
    for k in range(0, POINTS, 100):
        r = a.request("PUT", f"/collections/{name}/points?wait=true", json={"points": pts[k:k + 100]})
        assert r.status_code == 200, r.text


def replicas(p, name: str) -> dict:
    """(shard, peer) -> (state, points) as `p` sees them (its own counts only)."""
    res = p.get(f"/collections/{name}/cluster").json()["result"]
    out = {(s["shard_id"], res["peer_id"]): (s["state"], s["points_count"]) for s in res["local_shards"]}
    for s in res["remote_shards"]:
        out[(s["shard_id"], s["peer_id"])] = (s["state"], None)
    return out


def local_counts(peers, name: str) -> dict:
    out = {}
    for p in peers:
        res = p.get(f"/collections/{name}/cluster").json()["result"]
        for s in res["local_shards"]:
            out[(s["shard_id"], p.peer_id)] = (s["state"], s["points_count"])
    return out


def all_whole(peers, name: str) -> bool:
    counts = local_counts(peers, name)
    by_shard: dict[int, set] = {}
    for (shard, _), (state, n) in counts.items():
        if state != "Active":
            return False
        by_shard.setdefault(shard, set()).add(n)
    return len(by_shard) == 3 and all(len(v) == 1 for v in by_shard.values()) \
        and sum(next(iter(v)) for v in by_shard.values()) == POINTS


def test_wiped_peer_is_never_wrong_and_resyncs_itself(tmp_path):
    c, peers = three_peers(tmp_path)
    a, x = peers[0], peers[1]
    try:
        fill(a, "w")
        assert all_whole(peers, "w")
        x.sigkill()
        shutil.rmtree(x.storage / "collections" / "w")
        x.spawn()
        started = time.monotonic()
        # from the moment it listens: every count through it is right or refused, and it
        # is not ready until its replicas are whole again
        wrong, answers, ready_at, unready_after_ready = [], 0, None, 0
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                r = requests.post(f"{x.url}/collections/w/points/count", json={"exact": True}, timeout=5)
                ready = requests.get(f"{x.url}/readyz", timeout=5).status_code == 200
            except requests.RequestException:
                time.sleep(0.05)
                continue
            if r.status_code == 200:
                answers += 1
                n = r.json()["result"]["count"]
                if n != POINTS:
                    wrong.append(n)
            if ready and ready_at is None:
                ready_at = time.monotonic()
            elif not ready and ready_at is not None:
                unready_after_ready += 1
            if ready_at is not None and time.monotonic() - ready_at > 3:
                break
            time.sleep(0.05)
        print(f"wiped peer: {answers} counts answered, {len(wrong)} wrong; ready "
              f"{ready_at - started:.1f} s after restart" if ready_at else "never ready")
        assert not wrong, f"{len(wrong)} wrong counts through the wiped peer: {wrong[:10]}\n{c.logs()}"
        assert ready_at is not None, f"the wiped peer never became ready\n{c.logs()}"
        assert answers > 0
        x.wait_ready()
        # its replicas were resynced from the others: every replica Active and whole
        wait_until(lambda: all_whole(peers, "w"), 30, what="all replicas Active and equal")
        got = x.request("POST", "/collections/w/points/scroll",
                        json={"limit": POINTS + 10, "with_payload": ["n"]}).json()["result"]["points"]
        assert sorted(p["id"] for p in got) == list(range(1, POINTS + 1))
        assert unready_after_ready == 0
    finally:
        c.cleanup()


def test_cluster_recover_resyncs_this_peers_replicas(tmp_path):
    c, peers = three_peers(tmp_path)
    a, x = peers[0], peers[2]
    try:
        fill(a, "r")
        mine = [k for k in local_counts([x], "r")]
        assert mine, "peer holds replicas"
        hist_before = len(a.get("/cluster/transfers").json()["result"]) + \
            sum(len(p.get("/cluster/transfers").json()["result"]) for p in peers[1:])
        r = x.request("POST", "/cluster/recover")
        assert r.status_code == 200, r.text
        wait_until(lambda: all_whole(peers, "r"), 60, what="replicas resynced and whole")

        def transfers_done():
            return sum(len(p.get("/cluster/transfers").json()["result"]) for p in peers) - hist_before

        # one verified transfer per replica of this peer (the sources record them)
        wait_until(lambda: transfers_done() >= len(mine), 30, what="a transfer per replica")
        hist = [t for p in peers for t in p.get("/cluster/transfers").json()["result"] if t["to"] == x.peer_id]
        assert len(hist) >= len(mine), hist
        assert x.get("/readyz").status_code == 200
    finally:
        c.cleanup()


def test_peer_lost_for_good_is_replaced_and_the_extra_replica_goes_when_it_returns(tmp_path, monkeypatch):
    """Automatic re-replication (`cluster.self_heal`, beyond Qdrant OSS): with
    `dead_peer_timeout_sec=10`, a peer SIGKILLed for good has each of its replicas
    re-created on a live peer, so every shard is back to `replication_factor` Active
    replicas on live peers and every count is right. When the peer comes back, its
    replicas recover and the replicas self-heal added are dropped again."""
    monkeypatch.setenv("QDRANT__CLUSTER__SELF_HEAL__DEAD_PEER_TIMEOUT_SEC", "10")
    c, peers = start_cluster(tmp_path, 4)
    a = peers[0]
    try:
        fill(a, "h")
        placement = {}
        for p in peers:
            for (shard, peer), _ in local_counts([p], "h").items():
                placement.setdefault(shard, set()).add(peer)
        assert all(len(v) == 2 for v in placement.values()), placement
        # the victim: a follower holding replicas
        victim = next(p for p in peers[1:] if any(p.peer_id in v for v in placement.values()))
        live = [p for p in peers if p is not victim]
        victim.sigkill()
        killed = time.monotonic()

        def healed():
            counts = local_counts(live, "h")
            per_shard: dict[int, list] = {}
            for (shard, _), (state, n) in counts.items():
                if state == "Active":
                    per_shard.setdefault(shard, []).append(n)
            return len(per_shard) == 3 and all(len(v) == 2 and len(set(v)) == 1 for v in per_shard.values()) \
                and sum(v[0] for v in per_shard.values()) == POINTS

        wait_until(healed, 120, what="every shard back to 2 Active replicas on live peers")
        took = time.monotonic() - killed
        print(f"self-heal: every shard back to replication_factor {took:.1f} s after the SIGKILL")
        assert took >= 10, "nothing may be re-replicated before dead_peer_timeout_sec"
        for p in live:
            r = p.request("POST", "/collections/h/points/count", json={"exact": True})
            assert r.status_code == 200 and r.json()["result"]["count"] == POINTS, (p.name, r.text)

        # the peer returns: its replicas recover, then the added ones are dropped
        victim.spawn()
        victim.wait_ready()

        def back_to_placement():
            counts = local_counts(peers, "h")
            holders: dict[int, set] = {}
            for (shard, peer), (state, n) in counts.items():
                if state != "Active":
                    return False
                holders.setdefault(shard, set()).add((peer, n))
            return len(holders) == 3 and all(len(v) == 2 for v in holders.values()) \
                and {s: {p for p, _ in v} for s, v in holders.items()} == placement

        wait_until(back_to_placement, 120, what="the added replicas dropped once the victim is back")
        for p in peers:
            r = p.request("POST", "/collections/h/points/count", json={"exact": True})
            assert r.status_code == 200 and r.json()["result"]["count"] == POINTS, (p.name, r.text)
    finally:
        c.cleanup()


def test_injected_apply_errors_never_count_as_applied(tmp_path, monkeypatch):
    """Fault injection at the peer layer (issue #13): the coordinator's applies to other
    peers fail at random with 413 or 500 (`SEXTANT_PEER_FAULTS`, seeded). No such error
    counts as applied: every replica that failed a write is marked Dead and recovers, so
    afterwards every replica of every shard holds exactly the acknowledged points."""
    monkeypatch.setenv("SEXTANT_PEER_FAULTS", "apply:error=413:0.1,apply:error=500:0.05")
    monkeypatch.setenv("SEXTANT_PEER_FAULTS_SEED", "11")
    c = Cluster(tmp_path)
    try:
        a = c.start_first()  # only the first peer injects faults
        monkeypatch.delenv("SEXTANT_PEER_FAULTS")
        peers = [a]
        for _ in range(2):
            p = c.spawn_joiner(a)
            p.wait_ready()
            peers.append(p)
        c.wait_converged(60)
        r = a.request("PUT", "/collections/f", json={
            "vectors": {"size": 1536, "distance": "Dot"}, "shard_number": 3, "replication_factor": 2})
        assert r.status_code == 200, r.text
        rng = random.Random(3)
        acked, failed = set(), 0
        for b in range(30):
            ids = list(range(b * 20 + 1, b * 20 + 21))
            pts = [{"id": i, "vector": [rng.random() for _ in range(1536)], "payload": {"b": b}} for i in ids]
            r = a.request("PUT", "/collections/f/points?wait=true", json={"points": pts})
            if r.status_code == 200:
                acked.update(ids)
            else:
                failed += 1
        assert len(acked) >= 300, f"only {len(acked)} points acknowledged, {failed} writes failed"
        print(f"injected faults: {len(acked)} points acknowledged, {failed} writes failed")

        def equal_replicas():
            counts = local_counts(peers, "f")
            per_shard: dict[int, set] = {}
            for (shard, _), (state, n) in counts.items():
                if state != "Active":
                    return False
                per_shard.setdefault(shard, set()).add(n)
            return len(per_shard) == 3 and all(len(v) == 1 for v in per_shard.values())

        wait_until(equal_replicas, 120, what="every replica Active with equal counts")
        for p in peers:
            got = p.request("POST", "/collections/f/points/scroll",
                            json={"limit": 1000, "with_payload": False}).json()["result"]["points"]
            ids = {x["id"] for x in got}
            assert acked <= ids, (p.name, sorted(acked - ids)[:10])
            r = p.request("POST", "/collections/f/points/count", json={"exact": True})
            assert r.json()["result"]["count"] == len(ids)
    finally:
        c.cleanup()


def test_rolling_restart_with_a_writer_that_waits_on_readyz(tmp_path):
    """A rolling restart (issue #15): each of 3 peers in turn is SIGKILLed and restarted
    while a writer keeps upserting through peers whose `/readyz` is 200. No write fails,
    and after each restart an exact count through every ready peer equals the number of
    acknowledged points."""
    import threading

    c, peers = three_peers(tmp_path)
    a = peers[0]
    try:
        r = a.request("PUT", "/collections/rr", json={
            "vectors": {"size": 128, "distance": "Dot"}, "shard_number": 3, "replication_factor": 2})
        assert r.status_code == 200, r.text
        lock = threading.Lock()
        restarting: set[str] = set()
        acked: set[int] = set()
        failures: list = []
        stop = threading.Event()
        rng = random.Random(9)

        def ready(p) -> bool:
            try:
                return requests.get(f"{p.url}/readyz", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        def writer():
            next_id = 1
            while not stop.is_set():
                with lock:
                    targets = [p for p in peers if p.name not in restarting and ready(p)]
                    if not targets:
                        time.sleep(0.05)
                        continue
                    p = targets[next_id % len(targets)]
                    ids = list(range(next_id, next_id + 20))
                    pts = [{"id": i, "vector": [rng.random() for _ in range(128)]} for i in ids]
                    try:
                        r = p.request("PUT", "/collections/rr/points?wait=true", json={"points": pts}, timeout=60)
                        if r.status_code == 200:
                            acked.update(ids)
                        else:
                            failures.append((p.name, r.status_code, r.text[:200]))
                    except requests.RequestException as e:
                        failures.append((p.name, "exception", repr(e)[:200]))
                    next_id += 20
                time.sleep(0.02)

        w = threading.Thread(target=writer, daemon=True)
        w.start()
        wrong = []
        try:
            time.sleep(2)
            for victim in peers:
                with lock:
                    restarting.add(victim.name)
                victim.sigkill()
                time.sleep(3)
                victim.spawn()
                wait_until(lambda: ready(victim), 90, what=f"{victim.name} ready again")
                with lock:
                    restarting.discard(victim.name)
                    for p in peers:
                        if not ready(p):
                            continue
                        r = p.request("POST", "/collections/rr/points/count", json={"exact": True})
                        if r.status_code != 200 or r.json()["result"]["count"] != len(acked):
                            wrong.append((victim.name, p.name, r.status_code, r.text[:200], len(acked)))
                time.sleep(2)
        finally:
            stop.set()
            w.join(60)
        print(f"rolling restart: {len(acked)} points acknowledged, {len(failures)} failed writes, "
              f"{len(wrong)} wrong counts")
        assert not failures, failures[:5]
        assert not wrong, wrong[:5]
        assert len(acked) >= 200
    finally:
        c.cleanup()


def _stop_gracefully(p) -> None:
    """SIGTERM and wait: the shutdown writes a checkpoint of every collection."""
    import os
    import signal

    os.kill(p.proc.pid, signal.SIGTERM)
    p.proc.wait(timeout=60)


def _flip_a_byte_in_the_vectors(p, name: str) -> str:
    ckpts = sorted((p.storage / "collections" / name).glob("checkpoint-*"))
    ckpts = [c for c in ckpts if not c.name.endswith(".tmp")]
    assert ckpts, "the graceful stop wrote a checkpoint"
    f = ckpts[-1] / "dense-0.f32"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x40  # same length, still a valid float: only a checksum tells
    f.write_bytes(bytes(data))
    return str(f)


def _flip_a_digit_in_the_config(p, name: str) -> str:
    f = p.storage / "collections" / name / "collection.json"
    text = f.read_text()
    assert '"m": 16' in text, text
    # still valid JSON and a valid config (the graph would be rebuilt with m=17): only a
    # checksum tells
    f.write_text(text.replace('"m": 16', '"m": 17', 1))
    return str(f)


@pytest.mark.parametrize("corrupt", [_flip_a_byte_in_the_vectors, _flip_a_digit_in_the_config],
                         ids=["vectors", "collection.json"])
def test_corrupted_checkpoint_single_node_refuses_to_start(tmp_path, corrupt):
    """Checksums on every file Sextant writes (issue #15): a single node whose vector file or
    collection config was corrupted on disk refuses to start, naming the file, instead of
    serving wrong vectors or running with a config nobody set."""
    c = Cluster(tmp_path)
    try:
        p = c.new_peer()
        p.spawn([], cluster_enabled=False)
        wait_until(lambda: requests.get(f"{p.url}/readyz", timeout=2).ok, 30, what="single node up")
        assert p.request("PUT", "/collections/k", json={"vectors": {"size": 64, "distance": "Dot"}}).ok
        pts = [{"id": i, "vector": [float((i + j) % 5) for j in range(64)]} for i in range(1, 101)]
        assert p.request("PUT", "/collections/k/points?wait=true", json={"points": pts}).ok
        _stop_gracefully(p)
        path = corrupt(p, "k")
        p.spawn([], cluster_enabled=False)
        code = p.proc.wait(timeout=60)
        assert code != 0
        log = p.log_text()
        assert "fails its checksum" in log and path.rsplit("/", 1)[-1] in log, log
    finally:
        c.cleanup()


def test_corrupted_replica_is_quarantined_and_rebuilt(tmp_path):
    """In a cluster, a peer whose local copy fails its checksum starts without it (the
    directory is moved under `quarantine/`), never answers from it, and rebuilds its
    replicas from the other peers."""
    c, peers = three_peers(tmp_path)
    a, x = peers[0], peers[1]
    try:
        fill(a, "q")
        _stop_gracefully(x)
        _flip_a_byte_in_the_vectors(x, "q")
        x.spawn()
        wrong = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                r = requests.post(f"{x.url}/collections/q/points/count", json={"exact": True}, timeout=5)
                if r.status_code == 200 and r.json()["result"]["count"] != POINTS:
                    wrong.append(r.json()["result"]["count"])
                if requests.get(f"{x.url}/readyz", timeout=5).status_code == 200 and all_whole(peers, "q"):
                    break
            except requests.RequestException:
                pass
            time.sleep(0.05)
        assert not wrong, wrong[:10]
        wait_until(lambda: all_whole(peers, "q"), 60, what="replicas rebuilt")
        assert list((x.storage / "quarantine").iterdir()), "the corrupted copy is kept aside"
        # the rebuilt replica has the right vectors: search through x equals search through a
        q = [0.5] * DIM
        body = {"vector": q, "limit": 10, "with_vector": True}
        ra = a.request("POST", "/collections/q/points/search", json=body).json()["result"]
        rx = x.request("POST", "/collections/q/points/search", json=body).json()["result"]
        assert [h["id"] for h in ra] == [h["id"] for h in rx]
    finally:
        c.cleanup()


def ae_stats(peers, name: str) -> dict:
    """The anti-entropy counters of every peer, summed."""
    out: dict = {}
    for p in peers:
        for k, v in p.get(f"/collections/{name}/cluster").json()["result"]["anti_entropy"].items():
            out[k] = out.get(k, 0) + v
    return out


def start_faulty(c: Cluster, monkeypatch, faults: dict) -> list:
    """Peers 1001, 1002 and 1003 (in that order, the first founding the cluster); peer i
    starts with the fault rules `faults[i]` (`SEXTANT_PEER_FAULTS`), if any."""
    ids = [1001, 1002, 1003]
    peers: list = []
    for i, pid in enumerate(ids):
        p = c.new_peer()
        (p.storage / "raft").mkdir(parents=True, exist_ok=True)
        (p.storage / "raft" / "peer_id").write_text(str(pid))
        if i in faults:
            monkeypatch.setenv("SEXTANT_PEER_FAULTS", faults[i])
            monkeypatch.setenv("SEXTANT_PEER_FAULTS_SEED", str(5 + i))
        args = ["--uri", p.p2p_uri] if i == 0 else ["--bootstrap", peers[0].p2p_uri, "--uri", p.p2p_uri]
        p.spawn(args)
        p.wait_ready()
        monkeypatch.delenv("SEXTANT_PEER_FAULTS", raising=False)
        peers.append(p)
    c.wait_converged(60)
    assert [p.peer_id for p in peers] == ids
    return peers


def equal_replicas(peers, name: str, n: int):
    """Per shard, the one count all its replicas (every one Active) hold, when they agree
    and the counts add up to `n`; otherwise False."""
    ps: dict[int, set] = {}
    for (shard, _), (state, cnt) in local_counts(peers, name).items():
        if state != "Active":
            return False
        ps.setdefault(shard, set()).add(cnt)
    if len(ps) == 3 and all(len(v) == 1 for v in ps.values()) and sum(next(iter(v)) for v in ps.values()) == n:
        return {shard: next(iter(v)) for shard, v in ps.items()}
    return False


def lossy_fill(a, name: str, seed: int) -> int:
    """Create `name` (3 shards, rf 2) and write 400 points (2 KB payloads) through `a`, in
    batches of 20; returns the number of points."""
    r = a.request("PUT", f"/collections/{name}", json={
        "vectors": {"size": DIM, "distance": "Cosine"}, "shard_number": 3, "replication_factor": 2})
    assert r.status_code == 200, r.text
    rng = random.Random(seed)
    n = 0
    for batch in range(20):
        pts = [{"id": n + k + 1, "vector": [rng.random() + 0.01 for _ in range(DIM)],
                "payload": {"b": batch, "blob": "e" * 2048}} for k in range(20)]
        r = a.request("PUT", f"/collections/{name}/points?wait=true", json={"points": pts})
        assert r.status_code == 200, r.text
        n += 20
    return n


def test_anti_entropy_merges_replicas_that_each_lack_writes(tmp_path, monkeypatch):
    """Anti-entropy (issue #15): when each replica of a shard lacks client writes the other
    acknowledged, neither copy is complete and a resync either way would drop writes. The
    difference is narrowed to the differing points, and each point is taken from the replica
    holding the write the other lacks: both replicas end up with every write.

    Peer 1001's link to 1003 and peer 1002's link to 1001 each lose 30% of the writes they
    coordinate while reporting them applied, so the replicas on 1001 and 1003 each miss
    writes the other has. New points and new versions of existing points, 1536-d vectors
    and 2 KB payloads."""
    dim = 1536
    monkeypatch.setenv("QDRANT__CLUSTER__ANTI_ENTROPY__INTERVAL_SEC", "3")
    c = Cluster(tmp_path)
    try:
        peers = start_faulty(c, monkeypatch, {0: "apply:lose:0.3@1003", 1: "apply:lose:0.3@1001"})
        a, b = peers[0], peers[1]
        r = a.request("PUT", "/collections/m", json={
            "vectors": {"size": dim, "distance": "Cosine"}, "shard_number": 3, "replication_factor": 2})
        assert r.status_code == 200, r.text
        rng = random.Random(21)
        n = 0
        written = {0: [], 1: []}
        for rnd in range(10):
            for k, via in enumerate((a, b)):
                pts = [{"id": n + j + 1, "vector": [rng.random() - 0.5 for _ in range(dim)],
                        "payload": {"via": k, "round": rnd, "blob": "m" * 2048}} for j in range(15)]
                r = via.request("PUT", "/collections/m/points?wait=true", json={"points": pts})
                assert r.status_code == 200, r.text
                written[k] += [p["id"] for p in pts]
                n += 15
                # new versions of points this peer wrote before (never of the other's:
                # those would be writes of one point that each replica may lack)
                again = [{"id": i, "vector": [rng.random() - 0.5 for _ in range(dim)],
                          "payload": {"via": k, "updated": rnd, "blob": "u" * 2048}}
                         for i in rng.sample(written[k], 5)]
                r = via.request("PUT", "/collections/m/points?wait=true", json={"points": again})
                assert r.status_code == 200, r.text
        counts = local_counts(peers, "m")
        before = ae_stats(peers, "m")
        started = time.monotonic()
        final = wait_until(lambda: equal_replicas(peers, "m", n), 90, what="anti-entropy merged every replica")
        print(f"anti-entropy: replicas merged {time.monotonic() - started:.1f} s after the writes")
        # some shard had two replicas that each lacked points the other held
        each_lacked = [s for s, total in final.items()
                       if all(cnt < total for (sh, _), (_, cnt) in counts.items() if sh == s)]
        assert each_lacked, f"no shard had each replica lacking writes: before {counts}, after {final}"
        stats = ae_stats(peers, "m")
        assert stats["unrepairable"] == 0, stats
        assert stats["resyncs"] == 0 and stats["points_repaired"] >= 2, (before, stats)
        # two more rounds find every pair of replicas equal (the digests cover payloads)
        wait_until(lambda: ae_stats(peers, "m")["comparisons"] >= stats["comparisons"] + 6, 60,
                   what="two more comparison rounds")
        after = ae_stats(peers, "m")
        assert after["mismatches"] == stats["mismatches"], (stats, after)
        for p in peers:
            r = p.request("POST", "/collections/m/points/count", json={"exact": True})
            assert r.json()["result"]["count"] == n
    finally:
        c.cleanup()


@pytest.mark.parametrize("by", ["points", "resync"])
def test_anti_entropy_repairs_lost_writes(tmp_path, monkeypatch, by):
    """Anti-entropy (issue #15): a transport that loses some writes yet reports them
    applied (`SEXTANT_PEER_FAULTS=apply:lose`, on the coordinator's link to one peer) leaves
    replicas silently different; the periodic digest comparison finds them, narrows the
    difference to the lost points (digest trees) and copies exactly those within 60 s, with
    the counts in `GET /collections/{c}/cluster`. With `resync`, a difference counts as
    too large to copy point by point (`SEXTANT_ANTI_ENTROPY_REPAIR_POINTS=2`): the replica
    lacking writes is resynced from the one lacking none."""
    monkeypatch.setenv("QDRANT__CLUSTER__ANTI_ENTROPY__INTERVAL_SEC", "3")
    if by == "resync":
        monkeypatch.setenv("SEXTANT_ANTI_ENTROPY_REPAIR_POINTS", "2")
    c = Cluster(tmp_path)
    try:
        peers = start_faulty(c, monkeypatch, {0: "apply:lose:0.3@1003"})
        a = peers[0]
        n = lossy_fill(a, "ae", 8)
        counts = local_counts(peers, "ae")
        per_shard: dict[int, set] = {}
        for (shard, _), (_, cnt) in counts.items():
            per_shard.setdefault(shard, set()).add(cnt)
        assert any(len(v) > 1 for v in per_shard.values()), f"the lost writes left no difference: {counts}"
        # every lost write was a new point on one replica: the points the digest trees
        # must narrow the difference down to
        differing = sum(max(v) - min(v) for v in per_shard.values())
        started = time.monotonic()
        wait_until(lambda: equal_replicas(peers, "ae", n), 60, what="anti-entropy repaired every replica")
        print(f"anti-entropy: replicas equal again {time.monotonic() - started:.1f} s after the writes")
        stats = [p.get("/collections/ae/cluster").json()["result"]["anti_entropy"] for p in peers]
        assert sum(s["mismatches"] for s in stats) >= 1 and sum(s["repairs"] for s in stats) >= 1, stats
        assert sum(s["unrepairable"] for s in stats) == 0, stats
        if by == "points":
            # narrowed to the lost points and repaired point by point, not by a shard resync
            assert sum(s["points_repaired"] for s in stats) == differing, (differing, stats)
            assert sum(s["resyncs"] for s in stats) == 0, stats
        else:
            assert sum(s["resyncs"] for s in stats) >= 1, stats
        metrics = a.get("/metrics").text
        assert "anti_entropy_comparisons_total" in metrics and "anti_entropy_points_repaired_total" in metrics
        for p in peers:
            r = p.request("POST", "/collections/ae/points/count", json={"exact": True})
            assert r.json()["result"]["count"] == n
    finally:
        c.cleanup()


def test_anti_entropy_repairs_while_writes_continue(tmp_path, monkeypatch):
    """Anti-entropy (issue #15) on a collection that never pauses: while a writer keeps
    adding points, only the digest buckets that no write touched on either replica are
    compared, and the points lost earlier on one replica are still found and repaired.
    Lost writes come from peer 1001's lossy link to 1003; the writer goes through 1002."""
    import threading

    monkeypatch.setenv("QDRANT__CLUSTER__ANTI_ENTROPY__INTERVAL_SEC", "3")
    c = Cluster(tmp_path)
    stop = threading.Event()
    try:
        peers = start_faulty(c, monkeypatch, {0: "apply:lose:0.3@1003"})
        a, b = peers[0], peers[1]
        n = lossy_fill(a, "busy", 17)
        per_shard: dict[int, list] = {}
        for (shard, _), (_, cnt) in local_counts(peers, "busy").items():
            per_shard.setdefault(shard, []).append(cnt)
        differing = sum(max(v) - min(v) for v in per_shard.values())
        assert differing > 0, per_shard
        written = {"n": 0, "errors": []}

        def writer():
            wr = random.Random(3)
            i = 0
            while not stop.is_set():
                pts = [{"id": 100_000 + i + k, "vector": [wr.random() + 0.01 for _ in range(DIM)],
                        "payload": {"w": i}} for k in range(5)]
                rr = b.request("PUT", "/collections/busy/points?wait=true", json={"points": pts})
                if rr.status_code != 200:
                    written["errors"].append(rr.text)
                i += 5
                written["n"] = i
                time.sleep(0.2)

        t = threading.Thread(target=writer, daemon=True)
        t.start()
        started = time.monotonic()
        wait_until(lambda: ae_stats(peers, "busy")["points_repaired"] >= differing, 45,
                   what="lost points repaired while the writer runs")
        assert t.is_alive() and not stop.is_set()
        print(f"anti-entropy under writes: {differing} lost points repaired in "
              f"{time.monotonic() - started:.1f} s, {written['n']} points written meanwhile")
        stop.set()
        t.join(10)
        assert not written["errors"], written["errors"][:3]
        total = n + written["n"]
        wait_until(lambda: equal_replicas(peers, "busy", total), 60, what="replicas equal after the writer stops")
        stats = ae_stats(peers, "busy")
        assert stats["unrepairable"] == 0 and stats["resyncs"] == 0, stats
    finally:
        stop.set()
        c.cleanup()
