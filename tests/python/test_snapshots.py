"""Collection snapshots on a single node (issue #16): create, list, download, delete, and
recover from a file, an upload and a URL; malicious or damaged archives change nothing;
a snapshot taken while writes continue restores whole points only.

Data is realistic: 1536-d vectors, ~3 KB payloads, a payload index, an HNSW graph.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
import subprocess
import threading
import time

import pytest
import requests

from conftest import SextantServer, sextant_bin

DIM = 1536
N = 300


def _vec(rng: random.Random) -> list[float]:
    return [round(rng.uniform(-1, 1), 6) for _ in range(DIM)]


def _create(url: str, name: str) -> None:
    r = requests.put(f"{url}/collections/{name}", json={
        "vectors": {"size": DIM, "distance": "Cosine"},
        "hnsw_config": {"m": 8, "ef_construct": 32},
        "optimizers_config": {"indexing_threshold": 1}}, timeout=30)
    assert r.status_code == 200, r.text
    r = requests.put(f"{url}/collections/{name}/index", json={
        "field_name": "topic", "field_schema": "keyword"}, timeout=30)
    assert r.status_code == 200, r.text


def _fill(url: str, name: str, ids, rng: random.Random) -> None:
    for i in range(0, len(ids), 50):
        pts = [{"id": j, "vector": _vec(rng),
                "payload": {"topic": f"t{j % 7}", "text": "lorem ipsum " * 250, "n": j}}
               for j in ids[i:i + 50]]
        r = requests.put(f"{url}/collections/{name}/points?wait=true", json={"points": pts}, timeout=60)
        assert r.status_code == 200, r.text


def _all_points(url: str, name: str) -> dict:
    out, offset = {}, None
    while True:
        body = {"limit": 200, "with_payload": True, "with_vector": True}
        if offset is not None:
            body["offset"] = offset
        r = requests.post(f"{url}/collections/{name}/points/scroll", json=body, timeout=60)
        assert r.status_code == 200, r.text
        res = r.json()["result"]
        for p in res["points"]:
            out[p["id"]] = (p["payload"], p["vector"])
        offset = res.get("next_page_offset")
        if offset is None:
            return out


def _info(url: str, name: str) -> dict:
    r = requests.get(f"{url}/collections/{name}", timeout=30)
    assert r.status_code == 200, r.text
    res = r.json()["result"]
    return {"config": res["config"], "schema": res["payload_schema"]}


def _same_collection(url: str, a: str, b: str) -> None:
    pa, pb = _all_points(url, a), _all_points(url, b)
    assert pa.keys() == pb.keys()
    assert pa == pb
    ia, ib = _info(url, a), _info(url, b)
    assert ia["config"] == ib["config"]
    assert {k: v["data_type"] for k, v in ia["schema"].items()} == \
        {k: v["data_type"] for k, v in ib["schema"].items()} == {"topic": "keyword"}
    q = _vec(random.Random(99))
    for name in (a, b):
        r = requests.post(f"{url}/collections/{name}/points/search", json={
            "vector": q, "limit": 5, "filter": {"must": [{"key": "topic", "match": {"value": "t3"}}]}}, timeout=30)
        assert r.status_code == 200, r.text
    ra = requests.post(f"{url}/collections/{a}/points/search", json={"vector": q, "limit": 10, "params": {"exact": True}}).json()["result"]
    rb = requests.post(f"{url}/collections/{b}/points/search", json={"vector": q, "limit": 10, "params": {"exact": True}}).json()["result"]
    assert [(x["id"], round(x["score"], 5)) for x in ra] == [(x["id"], round(x["score"], 5)) for x in rb]


@pytest.fixture
def srv(make_server):
    return make_server().start()


def _snapshot(url: str, name: str) -> dict:
    r = requests.post(f"{url}/collections/{name}/snapshots?wait=true", timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["result"]


def test_snapshot_roundtrip_file_upload_and_url(srv: SextantServer):
    url = srv.url
    _create(url, "orig")
    _fill(url, "orig", list(range(1, N + 1)), random.Random(1))
    snap = _snapshot(url, "orig")
    assert snap["name"].startswith("orig-") and snap["name"].endswith(".snapshot")
    assert snap["size"] > N * DIM * 4 and len(snap["checksum"]) == 64 and snap["creation_time"]
    listed = requests.get(f"{url}/collections/orig/snapshots").json()["result"]
    assert [s["name"] for s in listed] == [snap["name"]]

    # download: streamed, and its SHA-256 is the listed checksum
    r = requests.get(f"{url}/collections/orig/snapshots/{snap['name']}", stream=True)
    assert r.status_code == 200
    h, size = hashlib.sha256(), 0
    blob = io.BytesIO()
    for chunk in r.iter_content(1 << 20):
        h.update(chunk)
        size += len(chunk)
        blob.write(chunk)
    assert (h.hexdigest(), size) == (snap["checksum"], snap["size"])

    # keep a reference copy of the collection, then delete it and recover from the file
    ref = _all_points(url, "orig")
    path = srv.snapshots / "orig" / snap["name"]
    assert path.is_file()
    r = requests.put(f"{url}/collections/orig/snapshots/recover", json={
        "location": f"file://{path}", "checksum": snap["checksum"]}, timeout=120)
    assert r.status_code == 200 and r.json()["result"] is True, r.text
    assert _all_points(url, "orig") == ref
    requests.delete(f"{url}/collections/orig", timeout=30)
    assert requests.get(f"{url}/collections/orig").status_code == 404
    r = requests.put(f"{url}/collections/orig/snapshots/recover", json={
        "location": f"file://{path}", "priority": "snapshot"}, timeout=120)
    assert r.status_code == 200, r.text
    assert _all_points(url, "orig") == ref

    # recover from an upload into another collection
    r = requests.post(f"{url}/collections/uploaded/snapshots/upload?priority=snapshot&checksum={snap['checksum']}",
                      files={"snapshot": ("s.snapshot", blob.getvalue())}, timeout=120)
    assert r.status_code == 200, r.text
    _same_collection(url, "orig", "uploaded")

    # recover from a URL (this server's own download endpoint)
    loc = f"{url}/collections/orig/snapshots/{snap['name']}"
    r = requests.put(f"{url}/collections/fetched/snapshots/recover", json={"location": loc}, timeout=120)
    assert r.status_code == 200, r.text
    _same_collection(url, "orig", "fetched")

    # the recovered collections keep working: writes, and a restart
    _fill(url, "fetched", [N + 1], random.Random(5))
    srv.restart()
    assert len(_all_points(url, "fetched")) == N + 1
    _same_collection(url, "orig", "uploaded")

    # delete the snapshot
    r = requests.delete(f"{url}/collections/orig/snapshots/{snap['name']}?wait=true")
    assert r.status_code == 200, r.text
    assert requests.get(f"{url}/collections/orig/snapshots").json()["result"] == []
    assert requests.get(f"{url}/collections/orig/snapshots/{snap['name']}").status_code == 404
    assert not path.exists()


def _https_server(directory, cert: str, key: str):
    """An HTTPS file server on 127.0.0.1 serving `directory`; returns (server, port)."""
    import functools
    import http.server
    import ssl

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, httpd.server_address[1]


def _certs(d):
    """A test CA, a server certificate it signs (127.0.0.1 and localhost), and a
    self-signed certificate nobody trusts."""
    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=sextant-test-ca")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost")
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "server.ext")
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "rogue.key", "-out", "rogue.pem",
        "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost")


def test_recovery_from_an_https_url(make_server, monkeypatch, tmp_path):
    """`https://` locations are fetched over TLS, trusting the system roots or, as here,
    SSL_CERT_FILE; a server with a certificate nobody trusts is refused and nothing
    changes."""
    _certs(tmp_path)
    served = tmp_path / "served"
    served.mkdir()
    good, good_port = _https_server(served, str(tmp_path / "server.pem"), str(tmp_path / "server.key"))
    rogue, rogue_port = _https_server(served, str(tmp_path / "rogue.pem"), str(tmp_path / "rogue.key"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    srv = make_server().start()
    url = srv.url
    try:
        _create(url, "orig")
        _fill(url, "orig", list(range(1, 61)), random.Random(3))
        snap = _snapshot(url, "orig")
        (served / "s.snapshot").write_bytes((srv.snapshots / "orig" / snap["name"]).read_bytes())

        for name, host in (("by_name", "localhost"), ("by_ip", "127.0.0.1")):
            r = requests.put(f"{url}/collections/{name}/snapshots/recover", json={
                "location": f"https://{host}:{good_port}/s.snapshot", "checksum": snap["checksum"]},
                timeout=120)
            assert r.status_code == 200, r.text
            _same_collection(url, "orig", name)

        # an untrusted certificate: refused before anything is created
        r = requests.put(f"{url}/collections/untrusted/snapshots/recover", json={
            "location": f"https://localhost:{rogue_port}/s.snapshot"}, timeout=120)
        assert r.status_code == 400, r.text
        assert "TLS handshake failed" in r.json()["status"]["error"], r.text
        assert requests.get(f"{url}/collections/untrusted").status_code == 404
        # plain http to a TLS port fails too, and a missing file is the server's 404
        r = requests.put(f"{url}/collections/plain/snapshots/recover", json={
            "location": f"http://127.0.0.1:{good_port}/s.snapshot"}, timeout=120)
        assert r.status_code == 400, r.text
        r = requests.put(f"{url}/collections/missing/snapshots/recover", json={
            "location": f"https://localhost:{good_port}/nope.snapshot"}, timeout=120)
        assert r.status_code == 400 and "404" in r.json()["status"]["error"], r.text
        for name in ("plain", "missing"):
            assert requests.get(f"{url}/collections/{name}").status_code == 404
    finally:
        good.shutdown()
        rogue.shutdown()


def _tar(entries) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as t:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = data
                t.addfile(info)
            elif kind == "hardlink":
                info.type = tarfile.LNKTYPE
                info.linkname = data
                t.addfile(info)
    return out.getvalue()


def test_bad_archives_are_refused_and_change_nothing(srv: SextantServer, tmp_path):
    url = srv.url
    _create(url, "keep")
    _fill(url, "keep", list(range(1, 41)), random.Random(2))
    before = _all_points(url, "keep")
    good = requests.get(f"{url}/collections/keep/snapshots/{_snapshot(url, 'keep')['name']}").content
    manifest = json.dumps({"format": "sextant-collection-snapshot", "version": 1,
                           "collection": "keep", "seq": 0}).encode()
    meta = tarfile.open(fileobj=io.BytesIO(good)).extractfile("collection.json").read()
    cases = {
        "absolute path": _tar([("snapshot.json", "file", manifest), ("/tmp/evil", "file", b"x")]),
        "dot-dot": _tar([("snapshot.json", "file", manifest), ("checkpoint/../../../evil", "file", b"x")]),
        "symlink": _tar([("snapshot.json", "file", manifest), ("collection.json", "symlink", "/etc/passwd")]),
        "hard link": _tar([("snapshot.json", "file", manifest), ("collection.json", "hardlink", "/etc/passwd")]),
        "truncated": good[: len(good) // 2],
        "not a tar": b"definitely not an archive" * 100,
        "no manifest": _tar([("collection.json", "file", meta)]),
        "damaged checkpoint": _flip_checkpoint_byte(good),
    }
    for what, blob in cases.items():
        r = requests.post(f"{url}/collections/keep/snapshots/upload", files={"snapshot": ("x", blob)}, timeout=60)
        assert 400 <= r.status_code < 500, (what, r.status_code, r.text)
        assert _all_points(url, "keep") == before, what
    assert not (tmp_path / "evil").exists()
    # a wrong checksum is refused before anything is replaced
    r = requests.post(f"{url}/collections/keep/snapshots/upload?checksum={'0' * 64}",
                      files={"snapshot": ("x", good)}, timeout=60)
    assert r.status_code == 400 and "checksum" in r.text, r.text
    assert _all_points(url, "keep") == before
    # file:// outside the snapshots directory, and URL recovery switched off
    outside = tmp_path / "outside.snapshot"
    outside.write_bytes(good)
    r = requests.put(f"{url}/collections/keep/snapshots/recover", json={"location": f"file://{outside}"})
    assert r.status_code == 403, r.text
    # and the answer does not tell whether a file outside exists
    r = requests.put(f"{url}/collections/keep/snapshots/recover", json={"location": f"file://{tmp_path}/nope"})
    assert r.status_code == 403, r.text
    r = requests.put(f"{url}/collections/keep/snapshots/recover",
                     json={"location": f"file://{srv.snapshots}/keep/nope.snapshot"})
    assert r.status_code == 404, r.text
    r = requests.put(f"{url}/collections/keep/snapshots/recover", json={"location": "s3://bucket/x"})
    assert r.status_code == 400, r.text
    r = requests.put(f"{url}/collections/keep/snapshots/recover", json={"location": "file:///x", "priority": "bogus"})
    assert r.status_code in (400, 422), r.text
    assert requests.get(f"{url}/collections/keep/snapshots/..%2Fsecret").status_code in (400, 404)
    # nothing left over under the snapshots directory but the snapshot itself
    left = sorted(p.name for p in (srv.snapshots / ".tmp").iterdir()) if (srv.snapshots / ".tmp").exists() else []
    assert left == []
    assert _all_points(url, "keep") == before


def _flip_checkpoint_byte(good: bytes) -> bytes:
    src = tarfile.open(fileobj=io.BytesIO(good))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as t:
        for m in src.getmembers():
            data = src.extractfile(m).read()
            if m.name.startswith("checkpoint/") and len(data) > 1000:
                data = data[:500] + bytes([data[500] ^ 0xFF]) + data[501:]
            m.size = len(data)
            t.addfile(m, io.BytesIO(data))
    return out.getvalue()


def test_url_recovery_can_be_switched_off(make_server, monkeypatch):
    monkeypatch.setenv("QDRANT__SERVICE__ENABLE_SNAPSHOT_URL_RECOVERY", "false")
    srv = make_server().start()
    r = requests.put(f"{srv.url}/collections/x/snapshots/recover",
                     json={"location": f"{srv.url}/collections/x/snapshots/a.snapshot"})
    assert r.status_code == 403, r.text
    assert r.json()["status"]["error"] == "Snapshot recovery from remote URLs is disabled"


def test_snapshot_during_writes_restores_whole_points(srv: SextantServer):
    """Writers keep upserting while a snapshot is taken; the restored collection holds a
    prefix of them: every point it holds is complete (vector and payload as written), and
    the point count is between what was acknowledged before and after the snapshot."""
    url = srv.url
    _create(url, "busy")
    stop = threading.Event()
    acked: list[int] = []
    lock = threading.Lock()

    def writer(k: int):
        rng = random.Random(k)
        i = k * 1_000_000
        while not stop.is_set():
            i += 1
            v = [float(i % 97 + 1)] + [0.5] * (DIM - 1)
            r = requests.put(f"{url}/collections/busy/points?wait=true", json={"points": [
                {"id": i, "vector": v, "payload": {"i": i, "blob": "w" * 3000, "r": rng.random()}}]}, timeout=30)
            if r.status_code == 200:
                with lock:
                    acked.append(i)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    with lock:
        before = len(acked)
    t0 = time.monotonic()
    snap = _snapshot(url, "busy")
    took = time.monotonic() - t0
    with lock:
        after = len(acked)
    stop.set()
    for t in threads:
        t.join()
    path = srv.snapshots / "busy" / snap["name"]
    r = requests.put(f"{url}/collections/restored/snapshots/recover", json={"location": f"file://{path}"}, timeout=120)
    assert r.status_code == 200, r.text
    pts = _all_points(url, "restored")
    # a write applied before the cut may be acknowledged after the snapshot's answer: at
    # most one per writer
    assert before <= len(pts) <= after + len(threads), (before, len(pts), after)
    for pid, (payload, vector) in pts.items():
        assert payload["i"] == pid and payload["blob"] == "w" * 3000
        assert len(vector) == DIM
    print(f"snapshot during writes: {before} acked before, {len(pts)} restored, {after} acked after; took {took:.2f} s")


def test_full_storage_snapshot_and_startup_flags(make_server):
    a = make_server().start()
    _create(a.url, "one")
    _fill(a.url, "one", list(range(1, 61)), random.Random(6))
    _create(a.url, "two")
    _fill(a.url, "two", list(range(100, 131)), random.Random(7))
    r = requests.post(f"{a.url}/collections/aliases", json={"actions": [
        {"create_alias": {"collection_name": "two", "alias_name": "deux"}}]})
    assert r.status_code == 200, r.text
    r = requests.post(f"{a.url}/snapshots?wait=true", timeout=120)
    assert r.status_code == 200, r.text
    full = r.json()["result"]
    assert full["name"].startswith("full-snapshot-") and len(full["checksum"]) == 64
    assert [s["name"] for s in requests.get(f"{a.url}/snapshots").json()["result"]] == [full["name"]]
    blob = requests.get(f"{a.url}/snapshots/{full['name']}").content
    assert hashlib.sha256(blob).hexdigest() == full["checksum"]
    one = _snapshot(a.url, "one")
    # wait=false: 202 at once, the snapshot appears when written
    r = requests.post(f"{a.url}/collections/two/snapshots?wait=false")
    assert r.status_code == 202 and r.json()["status"] == "accepted", r.text
    deadline = time.monotonic() + 30
    while not requests.get(f"{a.url}/collections/two/snapshots").json()["result"]:
        assert time.monotonic() < deadline, "the snapshot asked for with wait=false never appeared"
        time.sleep(0.1)

    # a new node started from the full-storage snapshot
    b = make_server()
    b.args = ["--storage-snapshot", str(a.snapshots / full["name"])]
    b.start()
    assert _all_points(b.url, "one") == _all_points(a.url, "one")
    assert _all_points(b.url, "deux") == _all_points(a.url, "two")

    # a new node started with --snapshot <path>:<name>; again: refused without --force-snapshot
    c = make_server()
    c.args = ["--snapshot", f"{a.snapshots / 'one' / one['name']}:copy"]
    c.start()
    assert _all_points(c.url, "copy") == _all_points(a.url, "one")
    _fill(c.url, "copy", [999], random.Random(8))
    c.stop()
    proc = subprocess.run([str(sextant_bin()), *c.args], env=c.env(), cwd=str(c.workdir),
                          capture_output=True, timeout=60)
    assert proc.returncode != 0 and b"--force-snapshot" in proc.stderr + proc.stdout, proc.stderr[-2000:]
    c.args.append("--force-snapshot")
    c.start()
    assert _all_points(c.url, "copy") == _all_points(a.url, "one")  # point 999 replaced away

    # as in Qdrant, start-up recovery is for a single node: a cluster peer refuses to start
    # with either flag, says why and names the API to use, and writes nothing
    for flag in (["--snapshot", f"{a.snapshots / 'one' / one['name']}:copy"],
                 ["--storage-snapshot", str(a.snapshots / full["name"])]):
        d = make_server()
        env = {**d.env(), "QDRANT__CLUSTER__ENABLED": "true"}
        proc = subprocess.run([str(sextant_bin()), "--uri", "http://127.0.0.1:1", *flag], env=env,
                              cwd=str(d.workdir), capture_output=True, timeout=60)
        out = proc.stderr + proc.stdout
        assert proc.returncode == 2, out[-2000:]
        assert b"single node only" in out and b"/snapshots/recover" in out, out[-2000:]
        assert not (d.storage / "collections" / "copy").exists()

    r = requests.delete(f"{a.url}/snapshots/{full['name']}")
    assert r.status_code == 200, r.text
    assert requests.get(f"{a.url}/snapshots").json()["result"] == []


def test_shard_snapshots(srv: SextantServer):
    """Shard snapshots (`/collections/{c}/shards/{s}/snapshots...`) on a single node with 3
    shards: create, list, download, stream, delete; recovering one replaces exactly that
    shard's points (from a file, an upload and a URL) and leaves the other shards as they
    are; a shard that does not exist, a snapshot of another shard and a collection with
    another shard count are refused."""
    from routing import shard_of

    url, rng = srv.url, random.Random(11)
    r = requests.put(f"{url}/collections/sh", json={
        "vectors": {"size": DIM, "distance": "Cosine"}, "shard_number": 3}, timeout=30)
    assert r.status_code == 200, r.text
    n = 150
    _fill(url, "sh", list(range(1, n + 1)), rng)
    mine = sorted(i for i in range(1, n + 1) if shard_of(i, 3) == 1)
    assert 30 < len(mine) < 70

    r = requests.post(f"{url}/collections/sh/shards/1/snapshots?wait=true", timeout=120)
    assert r.status_code == 200, r.text
    snap = r.json()["result"]
    assert snap["name"].startswith("sh-shard-1-") and len(snap["checksum"]) == 64
    assert [s["name"] for s in requests.get(f"{url}/collections/sh/shards/1/snapshots").json()["result"]] == [snap["name"]]
    assert requests.get(f"{url}/collections/sh/shards/0/snapshots").json()["result"] == []
    assert requests.get(f"{url}/collections/sh/snapshots").json()["result"] == []
    blob = requests.get(f"{url}/collections/sh/shards/1/snapshots/{snap['name']}", timeout=60).content
    assert hashlib.sha256(blob).hexdigest() == snap["checksum"]
    path = srv.snapshots / "sh" / "shards" / "1" / snap["name"]
    assert path.is_file()
    ref = _all_points(url, "sh")

    def damage(seed):
        """Change shard 1 (deletes, payload and vector changes, new points) and shard 0."""
        rr = random.Random(seed)
        gone = mine[::4]
        requests.post(f"{url}/collections/sh/points/delete?wait=true", json={"points": gone}, timeout=30).raise_for_status()
        requests.post(f"{url}/collections/sh/points/payload?wait=true", json={
            "payload": {"n": -1}, "points": mine[1::4]}, timeout=30).raise_for_status()
        requests.put(f"{url}/collections/sh/points/vectors?wait=true", json={
            "points": [{"id": i, "vector": _vec(rr)} for i in mine[2::8]]}, timeout=60).raise_for_status()
        new = [i for i in range(n + 1, n + 60) if shard_of(i, 3) in (0, 1)]
        _fill(url, "sh", new, rr)
        return _all_points(url, "sh")

    def check(after_damage):
        now = _all_points(url, "sh")
        assert {i: v for i, v in now.items() if shard_of(i, 3) == 1} == \
            {i: v for i, v in ref.items() if shard_of(i, 3) == 1}, "shard 1 is not the snapshot's"
        assert {i: v for i, v in now.items() if shard_of(i, 3) != 1} == \
            {i: v for i, v in after_damage.items() if shard_of(i, 3) != 1}, "other shards changed"

    damaged = damage(1)
    r = requests.put(f"{url}/collections/sh/shards/1/snapshots/recover", json={
        "location": f"file://{path}", "checksum": snap["checksum"]}, timeout=120)
    assert r.status_code == 200 and r.json()["result"] is True, r.text
    check(damaged)

    damaged = damage(2)
    r = requests.post(f"{url}/collections/sh/shards/1/snapshots/upload?priority=snapshot",
                      files={"snapshot": ("s.snapshot", blob)}, timeout=120)
    assert r.status_code == 200, r.text
    check(damaged)

    damaged = damage(3)
    r = requests.put(f"{url}/collections/sh/shards/1/snapshots/recover", json={
        "location": f"{url}/collections/sh/shards/1/snapshots/{snap['name']}"}, timeout=120)
    assert r.status_code == 200, r.text
    check(damaged)
    srv.restart()
    check(damaged)

    # a streamed snapshot (not kept) of shard 1 as it is now recovers too
    streamed = requests.get(f"{url}/collections/sh/shards/1/snapshot", timeout=120)
    assert streamed.status_code == 200 and len(streamed.content) > 1000, streamed.text[:300]
    assert [s["name"] for s in requests.get(f"{url}/collections/sh/shards/1/snapshots").json()["result"]] == [snap["name"]]
    before = _all_points(url, "sh")
    damage(4)
    r = requests.post(f"{url}/collections/sh/shards/1/snapshots/upload",
                      files={"snapshot": ("s.snapshot", streamed.content)}, timeout=120)
    assert r.status_code == 200, r.text
    now = _all_points(url, "sh")
    assert {i: v for i, v in now.items() if shard_of(i, 3) == 1} == \
        {i: v for i, v in before.items() if shard_of(i, 3) == 1}

    # refused, changing nothing
    now = _all_points(url, "sh")
    for method, path_, kw, code in [
        ("POST", "/collections/sh/shards/3/snapshots?wait=true", {}, 404),
        ("GET", "/collections/sh/shards/7/snapshots", {}, 404),
        ("POST", "/collections/sh/shards/x/snapshots", {}, 400),
        ("PUT", "/collections/sh/shards/2/snapshots/recover", {"json": {"location": f"file://{path}"}}, 400),
        ("PUT", "/collections/nope/shards/0/snapshots/recover", {"json": {"location": f"file://{path}"}}, 404),
    ]:
        r = requests.request(method, url + path_, timeout=60, **kw)
        assert r.status_code == code, (path_, r.status_code, r.text)
        assert r.json()["status"]["error"], r.text
    r = requests.put(f"{url}/collections/sh1", json={"vectors": {"size": DIM, "distance": "Cosine"}}, timeout=30)
    assert r.status_code == 200, r.text
    r = requests.put(f"{url}/collections/sh1/shards/0/snapshots/recover", json={"location": f"file://{path}"}, timeout=60)
    assert r.status_code == 400, r.text
    assert _all_points(url, "sh") == now

    r = requests.delete(f"{url}/collections/sh/shards/1/snapshots/{snap['name']}", timeout=30)
    assert r.status_code == 200, r.text
    assert requests.get(f"{url}/collections/sh/shards/1/snapshots").json()["result"] == []
    assert not path.exists()
