//! The in-process cluster harness: N Sextant peers in one test process.
//!
//! - Each peer is the real thing, assembled by `server::start` as the binary does: its own
//!   storage directory, openraft on redb, and the p2p gRPC server on a loopback port. Peers
//!   reach each other over real tonic.
//! - Each peer runs on its own tokio runtime. Killing a peer stops its maintenance without
//!   flushing and shuts its runtime down, which drops every task it had, mid-flight: what a
//!   SIGKILL leaves (the page cache survives, as it does a process kill). Restarting opens
//!   the same directory on a new runtime.
//! - Faults are injected at the `PeerClient` (`distributed::faults`): per peer, rules that
//!   drop, delay or fail the requests it sends, changeable while it runs (a partition and
//!   its healing).
//! - A client request is the REST router called directly; aborting one drops the handler's
//!   future, as axum does when a client disconnects.
//! - Anti-entropy is off: what a test sees converge, the write path and recovery did.
//! - Peer ids, data and fault draws follow one seed (`HARNESS_SEED`, printed by every
//!   test).
//!
//! Cluster tests take a process-wide lock: on a 2-core machine, two 3-peer clusters at once
//! would measure the machine, not the code.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use distributed::faults::{self, Control};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tower::ServiceExt;

static SERIAL: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

/// The seed of this run: `HARNESS_SEED`, or a fixed default.
pub fn seed() -> u64 {
    std::env::var("HARNESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261206)
}

fn init_logging() {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,openraft=error".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One peer slot: its directory and port survive a kill; its runtime and state do not.
pub struct Slot {
    pub dir: PathBuf,
    pub p2p_port: u16,
    pub faults: Control,
    pub id: u64,
    rt: Option<tokio::runtime::Runtime>,
    peer: Option<server::Peer>,
}

impl Slot {
    pub fn uri(&self) -> String {
        format!("http://127.0.0.1:{}", self.p2p_port)
    }

    pub fn is_up(&self) -> bool {
        self.peer.is_some()
    }

    pub fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("peer is running")
    }

    pub fn peer(&self) -> &server::Peer {
        self.peer.as_ref().expect("peer is running")
    }

    /// Stop the peer as a crash would (see [`Cluster::kill`]); nothing if it is down.
    fn halt(&mut self) {
        if let Some(peer) = self.peer.take() {
            peer.halt();
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(10));
        }
    }
}

pub struct Cluster {
    pub slots: Vec<Slot>,
    pub rng: rand::rngs::StdRng,
    _dir: tempfile::TempDir,
    _serial: parking_lot::MutexGuard<'static, ()>,
}

impl Cluster {
    /// Start `n` peers: the first initialises the cluster, the others join it; returns once
    /// every peer is a voter.
    pub fn start(n: usize) -> Cluster {
        let serial = SERIAL.lock();
        init_logging();
        let seed = seed();
        eprintln!("harness: HARNESS_SEED={seed}");
        let dir = tempfile::tempdir().expect("temp dir");
        let slots = (0..n)
            .map(|i| Slot {
                dir: dir.path().join(format!("peer{i}")),
                p2p_port: free_port(),
                faults: Control::seeded(seed.wrapping_add(i as u64)),
                id: 0,
                rt: None,
                peer: None,
            })
            .collect();
        let mut c = Cluster {
            slots,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            _dir: dir,
            _serial: serial,
        };
        for i in 0..n {
            c.boot(i);
        }
        c.wait_voters(n, Duration::from_secs(60));
        c
    }

    fn boot(&mut self, i: usize) {
        let slot = &self.slots[i];
        std::fs::create_dir_all(&slot.dir).unwrap();
        // peer ids follow the seed (placement depends on them): written where the peer
        // would persist a random one
        let raft = slot.dir.join("storage").join("raft");
        if !raft.join("peer_id").exists() {
            std::fs::create_dir_all(&raft).unwrap();
            let id = self.rng.random_range(1..1u64 << 53);
            std::fs::write(raft.join("peer_id"), id.to_string()).unwrap();
        }
        let config = slot.dir.join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "log_level: WARN\n\
                 storage:\n  storage_path: {dir}/storage\n  snapshots_path: {dir}/snapshots\n\
                 service:\n  host: 127.0.0.1\n  http_port: 0\n\
                 cluster:\n  enabled: true\n  p2p:\n    port: {port}\n  consensus:\n    tick_period_ms: 100\n\
                 \x20 anti_entropy:\n    interval_sec: 0\n",
                dir = slot.dir.display(),
                port = slot.p2p_port
            ),
        )
        .unwrap();
        // a prefix no environment sets: the configuration is exactly the file's
        let settings = server::settings::Settings::load(
            Some(config.to_str().unwrap()),
            "SEXTANT_HARNESS_NO_ENV",
        )
        .expect("harness settings");
        let opts = server::StartOptions {
            uri: Some(slot.uri()),
            bootstrap: (i > 0).then(|| self.slots[0].uri()),
            faults: Some(slot.faults.clone()),
            ..Default::default()
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(format!("peer{i}"))
            .enable_all()
            .build()
            .unwrap();
        let peer = rt
            .block_on(server::start(&settings, opts))
            .unwrap_or_else(|e| panic!("peer {i} did not start: {e}"));
        let slot = &mut self.slots[i];
        slot.id = peer.state.cluster.as_ref().unwrap().id;
        eprintln!("harness: peer {i} is {} at {}", slot.id, slot.uri());
        slot.rt = Some(rt);
        slot.peer = Some(peer);
    }

    /// SIGKILL, in process: nothing is flushed, every task of the peer is dropped where it
    /// stands.
    pub fn kill(&mut self, i: usize) {
        eprintln!("harness: killing peer {i}");
        assert!(self.slots[i].is_up(), "peer {i} is not running");
        self.slots[i].halt();
    }

    /// Start a killed peer again on its directory.
    pub fn restart(&mut self, i: usize) {
        assert!(!self.slots[i].is_up(), "peer {i} is running");
        self.boot(i);
    }

    pub fn id(&self, i: usize) -> u64 {
        self.slots[i].id
    }

    /// Replace peer `i`'s fault rules (`distributed::faults` syntax, `@peer` by slot index
    /// written as `@#j`).
    pub fn faults(&self, i: usize, spec: &str) {
        let mut spec = spec.to_string();
        for (j, s) in self.slots.iter().enumerate() {
            spec = spec.replace(&format!("@#{j}"), &format!("@{}", s.id));
        }
        self.slots[i]
            .faults
            .set(faults::parse(&spec).expect("fault rules"));
    }

    fn wait_voters(&self, n: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let voters = self
                .slots
                .iter()
                .filter(|s| s.is_up())
                .map(|s| s.peer().state.cluster.as_ref().unwrap().voters().len())
                .min()
                .unwrap_or(0);
            if voters >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{n} voters not reached in {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One REST request to peer `i`, run to completion.
    pub fn call(
        &self,
        i: usize,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let slot = &self.slots[i];
        call_app(slot.rt(), slot.peer(), method, path, body)
    }

    /// A request that must succeed: its `result`.
    pub fn ok(&self, i: usize, method: Method, path: &str, body: Option<&Value>) -> Value {
        let (status, v) = self.call(i, method.clone(), path, body);
        assert!(
            status.is_success(),
            "{method} {path} on peer {i}: {status} {v}"
        );
        v["result"].clone()
    }

    /// Start a request on peer `i` in a task of that peer's runtime: aborting the handle
    /// drops the handler's future, as axum does when the client disconnects.
    pub fn spawn_call(
        &self,
        i: usize,
        method: Method,
        path: &str,
        body: Value,
    ) -> tokio::task::JoinHandle<StatusCode> {
        let slot = &self.slots[i];
        let req = request(method, path, Some(&body));
        let app = slot.peer().app.clone();
        slot.rt().spawn(async move {
            match app.oneshot(req).await {
                Ok(resp) => resp.status(),
                Err(never) => match never {},
            }
        })
    }

    /// Create collection `name` through peer 0: `dim`-dimensional vectors with `distance`,
    /// `shards` shards of `rf` replicas.
    pub fn create(&self, name: &str, dim: usize, distance: &str, shards: u32, rf: u32) {
        let body = json!({
            "vectors": {"size": dim, "distance": distance},
            "shard_number": shards,
            "replication_factor": rf
        });
        self.ok(0, Method::PUT, &format!("/collections/{name}"), Some(&body));
    }

    /// The exact count of `collection` through peer `i`.
    pub fn count(&self, i: usize, collection: &str) -> u64 {
        let body = json!({"exact": true});
        let path = format!("/collections/{collection}/points/count");
        let r = self.ok(i, Method::POST, &path, Some(&body));
        r["count"].as_u64().expect("a count")
    }

    /// Assert that peer `i` returns every one of the `n` points from id `first` on.
    pub fn assert_points(&self, i: usize, collection: &str, first: u64, n: u64) {
        let ids: Vec<u64> = (first..first + n).collect();
        let r = self.ok(
            i,
            Method::POST,
            &format!("/collections/{collection}/points"),
            Some(&json!({ "ids": ids })),
        );
        let got = r.as_array().map_or(0, Vec::len) as u64;
        assert_eq!(
            got,
            n,
            "points {first}..{} read through peer {i}",
            first + n
        );
    }

    /// The agreed collection metadata, as peer `i` sees it.
    pub fn meta(&self, i: usize, collection: &str) -> cluster::state::CollectionMeta {
        let node = self.slots[i].peer().state.cluster.clone().unwrap();
        node.state().state.collections[collection].clone()
    }

    /// The digest of shard `s` on peer `i`'s local data.
    pub fn digest(&self, i: usize, collection: &str, s: u32) -> segment::digest::Digest {
        let slot = &self.slots[i];
        let ctx = slot.peer().state.dist.clone();
        let shard_number = self.meta(i, collection).shards.len() as u32;
        let name = collection.to_string();
        slot.rt()
            .block_on(async move {
                distributed::anti_entropy::local_digest(&ctx, &name, s, shard_number).await
            })
            .expect("local digest")
    }

    /// Wait until every replica of every shard is Active, no transfer runs, and every
    /// replica holds the same points (digests equal). Returns the digests per shard.
    pub fn converged(&self, collection: &str, limit: Duration) -> Vec<segment::digest::Digest> {
        let deadline = Instant::now() + limit;
        loop {
            let last = match self.check_converged(collection) {
                Ok(d) => return d,
                Err(why) => why,
            };
            assert!(
                Instant::now() < deadline,
                "replicas of {collection} did not converge within {limit:?}: {last}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn check_converged(&self, collection: &str) -> Result<Vec<segment::digest::Digest>, String> {
        let up = self.slots.iter().position(|s| s.is_up()).unwrap();
        let meta = self.meta(up, collection);
        if !meta.replica_states.is_empty() {
            return Err(format!("replica states {:?}", meta.replica_states));
        }
        if !meta.transfers.is_empty() {
            return Err(format!("{} transfers running", meta.transfers.len()));
        }
        let mut out = Vec::new();
        for (s, holders) in meta.shards.iter().enumerate() {
            let mut seen: Vec<(u64, segment::digest::Digest)> = Vec::new();
            for p in holders {
                let i = self
                    .slots
                    .iter()
                    .position(|x| x.id == *p)
                    .ok_or("unknown peer")?;
                if !self.slots[i].is_up() {
                    return Err(format!("peer {p} holding shard {s} is down"));
                }
                seen.push((*p, self.digest(i, collection, s as u32)));
            }
            if seen.windows(2).any(|w| w[0].1 != w[1].1) {
                return Err(format!("shard {s}: digests differ {seen:?}"));
            }
            out.push(seen[0].1);
        }
        Ok(out)
    }

    /// Upsert [`Self::points`] (ids `0..n`) into `name` through peer 0 with `wait=true`;
    /// returns the request body.
    pub fn fill(&mut self, name: &str, n: usize, dim: usize, payload_bytes: usize) -> Value {
        let body = self.points(0, n, dim, payload_bytes);
        self.ok(
            0,
            Method::PUT,
            &format!("/collections/{name}/points?wait=true"),
            Some(&body),
        );
        body
    }

    /// `n` points with `dim`-dimensional vectors and payloads of about `payload_bytes`,
    /// ids from `first`.
    pub fn points(&mut self, first: u64, n: usize, dim: usize, payload_bytes: usize) -> Value {
        let text: String = (0..payload_bytes)
            .map(|_| char::from(b'a' + self.rng.random_range(0..26u8)))
            .collect();
        let points: Vec<Value> = (0..n as u64)
            .map(|k| {
                let v: Vec<f32> = (0..dim).map(|_| self.rng.random_range(-1.0..1.0)).collect();
                json!({"id": first + k, "vector": v, "payload": {"n": first + k, "text": text}})
            })
            .collect();
        json!({ "points": points })
    }
}

/// A single node (cluster mode off) in this process: the reference a cluster's answers are
/// compared with.
pub struct Single {
    rt: Option<tokio::runtime::Runtime>,
    peer: Option<server::Peer>,
    _dir: tempfile::TempDir,
}

impl Single {
    pub fn start() -> Single {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "log_level: WARN\n\
                 storage:\n  storage_path: {d}/storage\n  snapshots_path: {d}/snapshots\n\
                 service:\n  host: 127.0.0.1\n  http_port: 0\n\
                 cluster:\n  enabled: false\n",
                d = dir.path().display()
            ),
        )
        .unwrap();
        let settings = server::settings::Settings::load(
            Some(config.to_str().unwrap()),
            "SEXTANT_HARNESS_NO_ENV",
        )
        .expect("single-node settings");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("single")
            .enable_all()
            .build()
            .unwrap();
        let peer = rt
            .block_on(server::start(&settings, Default::default()))
            .unwrap_or_else(|e| panic!("the single node did not start: {e}"));
        Single {
            rt: Some(rt),
            peer: Some(peer),
            _dir: dir,
        }
    }

    /// A request that must succeed: its `result`.
    pub fn ok(&self, method: Method, path: &str, body: Option<&Value>) -> Value {
        let (rt, peer) = (self.rt.as_ref().unwrap(), self.peer.as_ref().unwrap());
        let (status, v) = call_app(rt, peer, method.clone(), path, body);
        assert!(
            status.is_success(),
            "{method} {path} on the single node: {status} {v}"
        );
        v["result"].clone()
    }
}

impl Drop for Single {
    fn drop(&mut self) {
        if let Some(peer) = self.peer.take() {
            peer.halt();
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(10));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.slots.iter_mut().for_each(Slot::halt);
    }
}

/// One REST request to `peer`'s router on its runtime, run to completion.
fn call_app(
    rt: &tokio::runtime::Runtime,
    peer: &server::Peer,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let req = request(method, path, body);
    let app = peer.app.clone();
    rt.block_on(async move {
        let resp = app.oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    })
}

fn request(method: Method, path: &str, body: Option<&Value>) -> Request<Body> {
    let b = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    match body {
        Some(v) => b.body(Body::from(serde_json::to_vec(v).unwrap())).unwrap(),
        None => b.body(Body::empty()).unwrap(),
    }
}
