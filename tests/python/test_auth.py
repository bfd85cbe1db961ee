"""Access control, CORS and start-up checks of settings (issue #14).

A server started with ``service.api_key`` / ``read_only_api_key`` / ``jwt_rbac`` must refuse
requests without a valid credential (401), refuse writes with a read-only one (403), keep
the health probes open, and accept HS256 JWTs signed with the api key whose claims narrow
the access. Security settings Sextant does not implement stop start-up; other
unimplemented keys are named in a warning.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import time

import pytest
import requests

from conftest import SextantServer, sextant_bin

KEY = "s3cret-key-for-tests"
RO_KEY = "read-only-key-for-tests"


def jwt(claims: dict, key: str = KEY) -> str:
    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(key.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


class AuthServer(SextantServer):
    def __init__(self, workdir, extra: dict):
        super().__init__(workdir)
        self.extra = extra

    def env(self) -> dict:
        env = super().env()
        env.update(self.extra)
        return env


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    srv = AuthServer(
        tmp_path_factory.mktemp("auth"),
        {
            "QDRANT__SERVICE__API_KEY": KEY,
            "QDRANT__SERVICE__READ_ONLY_API_KEY": RO_KEY,
            "QDRANT__SERVICE__JWT_RBAC": "true",
        },
    )
    # wait_ready polls /readyz, which stays open
    srv.start()
    h = {"api-key": KEY}
    for name in ("a", "b"):
        r = requests.put(f"{srv.url}/collections/{name}", headers=h,
                         json={"vectors": {"size": 4, "distance": "Dot"}}, timeout=10)
        assert r.status_code == 200, r.text
        r = requests.put(f"{srv.url}/collections/{name}/points?wait=true", headers=h,
                         json={"points": [{"id": 1, "vector": [1, 0, 0, 0]}]}, timeout=10)
        assert r.status_code == 200, r.text
    yield srv
    srv.stop()


def call(srv, method, path, headers=None, body=None):
    return requests.request(method, f"{srv.url}{path}", headers=headers or {}, json=body, timeout=10)


UPSERT = {"points": [{"id": 2, "vector": [0, 1, 0, 0]}]}
SEARCH = {"vector": [1, 0, 0, 0], "limit": 1}


def test_missing_or_wrong_key_is_401_and_probes_stay_open(secured):
    for path in ("/healthz", "/livez", "/readyz"):
        assert call(secured, "GET", path).status_code == 200, path
    for headers in ({}, {"api-key": "wrong"}, {"Authorization": "Bearer wrong"}):
        for method, path, body in [
            ("GET", "/collections", None),
            ("PUT", "/collections/c_denied", {"vectors": {"size": 4, "distance": "Dot"}}),
            ("POST", "/collections/a/points/search", SEARCH),
        ]:
            r = call(secured, method, path, headers, body)
            assert r.status_code == 401, (headers, path, r.text)
            assert "error" in r.json()["status"]
    assert call(secured, "GET", "/collections/c_denied", {"api-key": KEY}).status_code == 404


def test_full_key_as_header_or_bearer(secured):
    for headers in ({"api-key": KEY}, {"Authorization": f"Bearer {KEY}"}):
        assert call(secured, "GET", "/collections", headers).status_code == 200
        assert call(secured, "PUT", "/collections/a/points?wait=true", headers, UPSERT).status_code == 200


def test_read_only_key_reads_but_never_writes(secured):
    h = {"api-key": RO_KEY}
    assert call(secured, "GET", "/collections", h).status_code == 200
    assert call(secured, "POST", "/collections/a/points/search", h, SEARCH).status_code == 200
    assert call(secured, "POST", "/collections/a/points/scroll", h, {}).status_code == 200
    for method, path, body in [
        ("PUT", "/collections/a/points?wait=true", UPSERT),
        ("POST", "/collections/a/points/delete", {"points": [1]}),
        ("PUT", "/collections/ro_new", {"vectors": {"size": 4, "distance": "Dot"}}),
        ("DELETE", "/collections/a", None),
        ("PUT", "/collections/a/index", {"field_name": "x", "field_schema": "keyword"}),
    ]:
        r = call(secured, method, path, h, body)
        assert r.status_code == 403, (path, r.text)
    assert call(secured, "GET", "/collections/a", {"api-key": KEY}).status_code == 200


def test_jwt_claims(secured):
    def auth(claims, key=KEY):
        return {"Authorization": f"Bearer {jwt(claims, key)}"}

    # global read
    h = auth({"access": "r"})
    assert call(secured, "GET", "/collections", h).status_code == 200
    assert call(secured, "PUT", "/collections/a/points?wait=true", h, UPSERT).status_code == 403
    # manage
    h = auth({"access": "m", "exp": int(time.time()) + 60})
    assert call(secured, "PUT", "/collections/a/points?wait=true", h, UPSERT).status_code == 200
    # per collection
    h = auth({"access": [{"collection": "a", "access": "rw"}, {"collection": "b", "access": "r"}]})
    assert call(secured, "PUT", "/collections/a/points?wait=true", h, UPSERT).status_code == 200
    assert call(secured, "POST", "/collections/b/points/search", h, SEARCH).status_code == 200
    assert call(secured, "PUT", "/collections/b/points?wait=true", h, UPSERT).status_code == 403
    assert call(secured, "DELETE", "/collections/a", h).status_code == 403
    assert call(secured, "GET", "/collections", h).status_code == 403
    # expired, signed with another key, or a malformed value_exists claim
    for bad in (auth({"access": "m", "exp": int(time.time()) - 10}),
                auth({"access": "m"}, key="another-key"),
                auth({"access": "m", "value_exists": {"collection": "a", "matches": []}})):
        assert call(secured, "GET", "/collections", bad).status_code == 401
    # value_exists: valid while a point with those payload values exists
    h = {"api-key": KEY}
    assert call(secured, "PUT", "/collections/b/points?wait=true", h,
                {"points": [{"id": 7, "vector": [0, 0, 1, 0], "payload": {"user": "ann", "active": True}}]}).ok
    cond = {"collection": "b", "matches": [{"key": "user", "value": "ann"}, {"key": "active", "value": True}]}
    h_ann = auth({"access": "r", "value_exists": cond})
    assert call(secured, "POST", "/collections/a/points/search", h_ann, SEARCH).status_code == 200
    # revoke: the user's point loses the value -> the same token stops working
    assert call(secured, "POST", "/collections/b/points/payload?wait=true", h,
                {"payload": {"active": False}, "points": [7]}).ok
    assert call(secured, "POST", "/collections/a/points/search", h_ann, SEARCH).status_code == 403


def test_cors_preflight(secured):
    r = requests.options(
        f"{secured.url}/collections/a/points/search",
        headers={
            "Origin": "http://dashboard.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "api-key, content-type",
        },
        timeout=10,
    )
    assert r.status_code == 200, r.text
    assert r.headers.get("access-control-allow-origin") == "*"
    assert "POST" in r.headers.get("access-control-allow-methods", "").upper() or \
        r.headers.get("access-control-allow-methods") == "*"


def run_briefly(tmp_path, extra_env: dict, seconds: float = 3.0):
    srv = SextantServer(tmp_path)
    env = srv.env()
    env.update(extra_env)
    p = subprocess.Popen([str(sextant_bin())], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    return p.returncode, (out + err).decode("utf-8", "replace")


@pytest.mark.parametrize("key", ["QDRANT__AUDIT__ENABLED"])
def test_unimplemented_security_settings_refuse_to_start(tmp_path, key):
    code, text = run_briefly(tmp_path, {key: "true"})
    assert code == 2, text
    dotted = key.removeprefix("QDRANT__").lower().replace("__", ".")
    assert "refusing to start" in text and dotted in text, text


def test_unimplemented_keys_are_named_in_a_warning(tmp_path):
    code, text = run_briefly(tmp_path, {"QDRANT__STORAGE__PERFORMANCE__MAX_SEARCH_THREADS": "2",
                                        "QDRANT__LOG_LEVEL": "INFO"}, seconds=3.0)
    assert code is not None  # killed after the timeout (or exited)
    assert "storage.performance.max_search_threads" in text and "not implemented" in text, text


# ---------------------------------------------------------------- internal (p2p) auth

def with_env(peer, extra: dict):
    """`peer` (a cluster_harness.Peer) started with `extra` environment variables on top of
    its own (applied again on every later spawn)."""
    base_env = peer.env
    peer.env = lambda cluster_enabled=True: {**base_env(cluster_enabled), **extra}
    return peer


def cluster_view(peer, headers: dict | None = None):
    """The peer's `GET /cluster` result, or None while it does not answer 200."""
    try:
        r = requests.get(f"{peer.url}/cluster", headers=headers or {}, timeout=2)
        return r.json()["result"] if r.status_code == 200 else None
    except requests.RequestException:
        return None


def test_internal_auth_between_peers(tmp_path):
    """With ``enforce_internal_auth``, peers sharing the key form a cluster and replicate
    writes; a peer with another key cannot join (its requests are refused)."""
    from cluster_harness import Cluster, Peer, wait_until

    def keyed(p: Peer, key: str) -> Peer:
        return with_env(p, {"QDRANT__SERVICE__API_KEY": key,
                            "QDRANT__SERVICE__ENFORCE_INTERNAL_AUTH": "true"})

    def view(p: Peer):
        return cluster_view(p, {"api-key": KEY})

    c = Cluster(tmp_path)
    try:
        a = keyed(c.new_peer(), KEY)
        a.spawn(["--uri", a.p2p_uri])
        wait_until(lambda: view(a), 45, what="first peer up")
        b = keyed(c.new_peer(), KEY)
        b.spawn(["--bootstrap", a.p2p_uri, "--uri", b.p2p_uri])
        wait_until(lambda: (v := view(a)) and len(v["peers"]) == 2 and view(b), 45, what="b joined")
        intruder = keyed(c.new_peer(), "not-the-key")
        intruder.spawn(["--bootstrap", a.p2p_uri, "--uri", intruder.p2p_uri])
        time.sleep(5)
        assert len(view(a)["peers"]) == 2, "a peer with the wrong key joined"
        h = {"api-key": KEY}
        r = requests.put(f"{b.url}/collections/ia", headers=h, timeout=30,
                         json={"vectors": {"size": 4, "distance": "Dot"}, "shard_number": 2,
                               "replication_factor": 2})
        assert r.status_code == 200, r.text
        pts = [{"id": i, "vector": [i, 1, 0, 0]} for i in range(1, 41)]
        r = requests.put(f"{b.url}/collections/ia/points?wait=true", headers=h, timeout=30,
                         json={"points": pts})
        assert r.status_code == 200, r.text
        r = requests.post(f"{a.url}/collections/ia/points/count", headers=h, timeout=30,
                          json={"exact": True})
        assert r.status_code == 200 and r.json()["result"]["count"] == 40, r.text
        assert requests.post(f"{a.url}/collections/ia/points/count", timeout=10,
                             json={"exact": True}).status_code == 401
        # a member restarted with another key cannot write into the cluster: its calls to
        # the other peer are refused (it can only touch its own disk); `a` answers reads
        # from its own replicas (rf 2: it holds both shards)
        b.sigkill()
        keyed(b, "not-the-key")
        b.spawn()
        def b_up():
            try:
                return requests.get(f"{b.url}/healthz", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(b_up, 45, what="b back up")
        # cut off from the cluster (its calls are refused), it never reports itself ready
        time.sleep(2)
        r = requests.get(f"{b.url}/readyz", timeout=5)
        assert r.status_code == 503, r.text
        more = [{"id": i, "vector": [i, 1, 0, 0]} for i in range(100, 140)]
        r = requests.put(f"{b.url}/collections/ia/points?wait=true", headers={"api-key": "not-the-key"},
                         json={"points": more}, timeout=60)
        assert r.status_code != 200, r.text
        r = requests.post(f"{a.url}/collections/ia/points/scroll", headers=h, timeout=30,
                          json={"limit": 200, "with_payload": False})
        assert r.status_code == 200, r.text
        ids = {p["id"] for p in r.json()["result"]["points"]}
        assert not ids & {p["id"] for p in more}, "writes of a peer with the wrong key reached the cluster"
    finally:
        c.cleanup()


# ---------------------------------------------------------------- HTTPS

def make_pki(d):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it."""
    d.mkdir(parents=True, exist_ok=True)

    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=test-ca")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
                      ("client", "extendedKeyUsage=clientAuth")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}")
        (d / f"{name}.ext").write_text(ext + "\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return d


class TlsServer(AuthServer):
    def __init__(self, workdir, extra):
        super().__init__(workdir, extra)
        self.url = self.url.replace("http://", "https://")

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited {self.proc.returncode}: {self.stderr_text()}")
            try:
                requests.get(f"{self.url}/readyz", timeout=1, verify=False)
                return
            except requests.exceptions.SSLError:
                return  # listening; the handshake itself is what the tests check
            except requests.RequestException:
                time.sleep(0.1)
        raise AssertionError(f"not listening: {self.stderr_text()}")


def test_https_and_client_certificates(tmp_path):
    pki = make_pki(tmp_path / "pki")
    srv = TlsServer(tmp_path / "srv", {
        "QDRANT__SERVICE__ENABLE_TLS": "true",
        "QDRANT__TLS__CERT": str(pki / "server.pem"),
        "QDRANT__TLS__KEY": str(pki / "server.key"),
        "QDRANT__SERVICE__API_KEY": KEY,
    }).start()
    try:
        r = requests.get(f"{srv.url}/collections", headers={"api-key": KEY}, verify=str(pki / "ca.pem"), timeout=10)
        assert r.status_code == 200, r.text
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(srv.url.replace("https://", "http://") + "/collections", timeout=5)
    finally:
        srv.stop()
    srv = TlsServer(tmp_path / "mtls", {
        "QDRANT__SERVICE__ENABLE_TLS": "true",
        "QDRANT__SERVICE__VERIFY_HTTPS_CLIENT_CERTIFICATE": "true",
        "QDRANT__TLS__CERT": str(pki / "server.pem"),
        "QDRANT__TLS__KEY": str(pki / "server.key"),
        "QDRANT__TLS__CA_CERT": str(pki / "ca.pem"),
    }).start()
    try:
        ca = str(pki / "ca.pem")
        with pytest.raises(requests.exceptions.RequestException):
            requests.get(f"{srv.url}/collections", verify=ca, timeout=5)
        r = requests.get(f"{srv.url}/collections", verify=ca, timeout=10,
                         cert=(str(pki / "client.pem"), str(pki / "client.key")))
        assert r.status_code == 200, r.text
    finally:
        srv.stop()


def test_tls_between_peers(tmp_path):
    """``cluster.p2p.enable_tls``: peers talk mutual TLS (https URIs, certificates of the
    cluster's CA); a peer whose certificate another CA signed cannot join."""
    from cluster_harness import Cluster, Peer, wait_until

    pki = make_pki(tmp_path / "pki")
    other = make_pki(tmp_path / "other-pki")

    def tls_peer(p: Peer, ca_dir) -> Peer:
        p.p2p_uri = p.p2p_uri.replace("http://", "https://")
        return with_env(p, {"QDRANT__CLUSTER__P2P__ENABLE_TLS": "true",
                            "QDRANT__TLS__CERT": str(ca_dir / "server.pem"),
                            "QDRANT__TLS__KEY": str(ca_dir / "server.key"),
                            "QDRANT__TLS__CA_CERT": str(ca_dir / "ca.pem")})

    view = cluster_view

    c = Cluster(tmp_path / "cluster")
    try:
        a = tls_peer(c.new_peer(), pki)
        a.spawn(["--uri", a.p2p_uri])
        wait_until(lambda: view(a), 45, what="first peer up")
        b = tls_peer(c.new_peer(), pki)
        b.spawn(["--bootstrap", a.p2p_uri, "--uri", b.p2p_uri])
        wait_until(lambda: (v := view(a)) and len(v["peers"]) == 2 and view(b), 45, what="b joined over TLS")
        assert all(p["uri"].startswith("https://") for p in view(a)["peers"].values())
        stranger = tls_peer(c.new_peer(), other)
        stranger.spawn(["--bootstrap", a.p2p_uri, "--uri", stranger.p2p_uri])
        r = requests.put(f"{b.url}/collections/t", timeout=30,
                         json={"vectors": {"size": 4, "distance": "Dot"}, "shard_number": 2})
        assert r.status_code == 200, r.text
        pts = [{"id": i, "vector": [i, 1, 0, 0]} for i in range(1, 31)]
        assert requests.put(f"{b.url}/collections/t/points?wait=true", json={"points": pts}, timeout=30).ok
        r = requests.post(f"{a.url}/collections/t/points/count", json={"exact": True}, timeout=30)
        assert r.json()["result"]["count"] == 30, r.text
        time.sleep(3)
        assert len(view(a)["peers"]) == 2, "a peer with another CA's certificate joined"
    finally:
        c.cleanup()
