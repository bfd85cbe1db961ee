//! A cluster node: Raft instance, internal gRPC server, joining, promotion of learners,
//! and metadata proposals that return once applied locally.

use crate::network::{self, decode, encode, Network};
use crate::proto;
use crate::proto::p2p_server::{P2p, P2pServer};
use crate::proto::{AddPeerReply, AddPeerRequest, Peer, RaftMessage};
use crate::state::ClusterOp;
use crate::store::{open_db, EffectSink, LogStore, SmData, StateMachineStore};
use crate::types::*;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Mutex};

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub dir: PathBuf,
    pub p2p_port: u16,
    /// This peer's URI (`--uri`), e.g. `http://127.0.0.1:6335`.
    pub uri: Option<String>,
    /// `--bootstrap` URI of any existing peer.
    pub bootstrap: Option<String>,
    /// `cluster.consensus.tick_period_ms`.
    pub tick_ms: u64,
    /// `service.api_key`: carried by every internal request this peer sends.
    pub api_key: Option<String>,
    /// `service.enforce_internal_auth`: refuse internal requests without `api_key`.
    pub enforce_internal_auth: bool,
    /// `cluster.p2p.enable_tls`: mutual TLS between peers (URIs are `https://`).
    pub tls: Option<network::P2pTls>,
    /// `service.max_request_size_mb` in bytes: sizes the p2p message limit.
    pub max_request_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster: {0}")]
    Config(String),
    #[error("Service internal error: {0}")]
    Internal(String),
    /// No leader (election in progress or no quorum): refused, not hung.
    #[error("Service unavailable: no Raft leader is available ({0}); try again later")]
    NoLeader(String),
    /// The operation was applied and rejected by the state machine (user error).
    #[error("{0}")]
    Rejected(String),
    #[error("Timeout: {0}")]
    Timeout(String),
}

pub type CResult<T> = Result<T, ClusterError>;

/// Reply of a forwarded proposal: log index and outcome, or why it could not be proposed.
#[derive(Serialize, Deserialize)]
enum ForwardReply {
    Applied { index: u64, error: Option<String> },
    NotLeader,
    Failed(String),
}

/// A boxed future of a data-plane call.
pub type DataFuture<T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, tonic::Status>> + Send>>;

/// The data plane a peer serves to other peers on the p2p port: typed requests executed on
/// its own data (implemented by the `distributed` crate; this crate only carries them).
pub trait DataService: Send + Sync + 'static {
    fn apply(&self, r: proto::ApplyRequest) -> DataFuture<proto::ApplyReply>;
    fn apply_batch(&self, r: proto::ApplyBatchRequest) -> DataFuture<proto::ApplyReply>;
    fn ordered(&self, r: proto::ApplyRequest) -> DataFuture<proto::ApplyReply>;
    fn op_ids(&self, r: proto::ShardRequest) -> DataFuture<proto::OpIdsReply>;
    fn digest(&self, r: proto::ShardRequest) -> DataFuture<proto::DigestReply>;
    fn digest_tree(&self, r: proto::DigestTreeRequest) -> DataFuture<proto::DigestTreeReply>;
    fn touched(&self, r: proto::TouchedRequest) -> DataFuture<proto::TouchedReply>;
    fn repair(&self, r: proto::RepairRequest) -> DataFuture<proto::RepairReply>;
    fn read(&self, r: proto::ReadRequest) -> DataFuture<proto::ReadReply>;
    fn status(&self) -> DataFuture<proto::StatusReply>;
}

pub struct ClusterNode {
    /// Failed Raft message sends per peer URI.
    pub send_failures: network::SendFailures,
    pub id: NodeId,
    pub raft: Raft,
    pub uri: String,
    data: std::sync::OnceLock<Arc<dyn DataService>>,
    state: watch::Receiver<Arc<SmData>>,
    membership_lock: Mutex<()>,
    tick: Duration,
}

fn random_peer_id() -> u64 {
    rand::random::<u64>() % (1u64 << 53) + 1
}

/// This peer's id, from `dir/peer_id` (checksummed JSON, `collection::write_json`; a file
/// of an earlier version holds the bare number and is read as it is), or a new random one
/// written there. A file that fails its checksum stops the start: a peer that came back
/// under another id would be a stranger to the cluster holding its replicas.
fn load_or_create_id(dir: &std::path::Path) -> CResult<u64> {
    let p = dir.join("peer_id");
    if p.exists() {
        return collection::read_json::<u64>(&p)
            .map_err(|e| ClusterError::Config(format!("bad peer id file: {e}")));
    }
    let id = random_peer_id();
    collection::write_json(&p, &id).map_err(|e| ClusterError::Internal(e.to_string()))?;
    Ok(id)
}

impl ClusterNode {
    /// Start consensus: open storage, serve p2p, initialise (first peer) or join.
    pub async fn start(cfg: NodeConfig, sink: Arc<dyn EffectSink>) -> CResult<Arc<ClusterNode>> {
        std::fs::create_dir_all(&cfg.dir).map_err(|e| ClusterError::Internal(e.to_string()))?;
        network::set_internal_key(cfg.api_key.clone());
        network::set_max_request_bytes(cfg.max_request_bytes);
        network::set_tls(cfg.tls.as_ref());
        let id = load_or_create_id(&cfg.dir)?;
        let db = open_db(&cfg.dir.join("raft.redb"))
            .map_err(|e| ClusterError::Internal(e.to_string()))?;
        sink.started(id);
        let (sm, state) = StateMachineStore::open(db.clone(), sink)
            .map_err(|e| ClusterError::Internal(e.to_string()))?;
        let tick = Duration::from_millis(cfg.tick_ms.max(10));
        let raft_cfg = openraft::Config {
            cluster_name: "sextant".into(),
            // openraft followers wait out the leader lease before voting, so a failover takes
            // about twice the election timeout: 10-18 ticks keeps it under 5 s (measured
            // 3.9-5.0 s with 15-25 ticks).
            heartbeat_interval: (cfg.tick_ms * 2).max(150),
            election_timeout_min: (cfg.tick_ms * 10).max(1000),
            election_timeout_max: (cfg.tick_ms * 18).max(1800),
            max_payload_entries: 256,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ClusterError::Config(e.to_string()))?;
        let rpc_timeout = Duration::from_millis((cfg.tick_ms * 20).max(2000));
        let failures = network::SendFailures::default();
        let raft = Raft::new(
            id,
            Arc::new(raft_cfg),
            Network {
                rpc_timeout,
                failures: failures.clone(),
            },
            LogStore::new(db),
            sm,
        )
        .await
        .map_err(|e| ClusterError::Internal(e.to_string()))?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| ClusterError::Internal(e.to_string()))?;
        let stored_addr = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone());
        let uri = match (&cfg.uri, &stored_addr) {
            (Some(u), _) => u.trim_end_matches('/').to_string(),
            (None, Some(a)) => a.clone(),
            (None, None) => format!("http://127.0.0.1:{}", cfg.p2p_port),
        };
        let node = Arc::new(ClusterNode {
            id,
            raft,
            uri: uri.clone(),
            data: std::sync::OnceLock::new(),
            send_failures: failures,
            state,
            membership_lock: Mutex::new(()),
            tick,
        });
        // p2p server
        let addr: SocketAddr = format!("0.0.0.0:{}", cfg.p2p_port)
            .parse()
            .map_err(|e| ClusterError::Config(format!("p2p port: {e}")))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| ClusterError::Config(format!("cannot listen on p2p port {addr}: {e}")))?;
        let svc = P2pServer::new(Service { node: node.clone() })
            .max_decoding_message_size(network::max_message_bytes())
            .max_encoding_message_size(network::max_message_bytes());
        let (key, enforce) = (cfg.api_key.clone(), cfg.enforce_internal_auth);
        let server_tls = cfg.tls.clone();
        let svc = tonic::service::interceptor::InterceptedService::new(
            svc,
            move |req: tonic::Request<()>| {
                network::check_internal_key(key.as_deref(), enforce, &req).map(|()| req)
            },
        );
        tokio::spawn(async move {
            // Nagle off on accepted sockets too: small answers must not wait for the
            // peer's delayed ACK (~40 ms per fan-out round trip otherwise).
            let incoming = tokio_stream::StreamExt::map(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                |s| {
                    s.inspect(|s| {
                        if let Err(e) = s.set_nodelay(true) {
                            tracing::warn!(error = %e, "p2p: cannot set TCP_NODELAY");
                        }
                    })
                },
            );
            let mut builder = tonic::transport::Server::builder();
            if let Some(tls) = &server_tls {
                builder = match builder.tls_config(tls.server()) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::error!(error = %e, "p2p TLS configuration refused: p2p server not started");
                        return;
                    }
                };
            }
            if let Err(e) = builder.add_service(svc).serve_with_incoming(incoming).await {
                tracing::error!(error = %e, "p2p server stopped");
            }
        });
        if !initialized {
            let bootstrap = cfg
                .bootstrap
                .as_deref()
                .map(|b| b.trim_end_matches('/').to_string())
                .filter(|b| {
                    Some(b)
                        != cfg
                            .uri
                            .as_ref()
                            .map(|u| u.trim_end_matches('/').to_string())
                            .as_ref()
                });
            match bootstrap {
                None => {
                    if cfg.uri.is_none() {
                        return Err(ClusterError::Config("the first peer of a cluster needs --uri (its own p2p address, e.g. http://10.0.0.1:6335)".into()));
                    }
                    let members: BTreeMap<NodeId, BasicNode> =
                        [(id, BasicNode { addr: uri.clone() })].into();
                    node.raft
                        .initialize(members)
                        .await
                        .map_err(|e| ClusterError::Internal(format!("initialize: {e}")))?;
                    tracing::info!(peer_id = id, %uri, "initialised a new cluster");
                }
                Some(b) => node.join(&b, cfg.uri.clone(), cfg.p2p_port).await?,
            }
        } else if let (Some(u), Some(stored)) = (&cfg.uri, &stored_addr) {
            if u.trim_end_matches('/') != stored {
                // announce the new address to the other members until one accepts it
                let (n, others, port) = (node.clone(), node.peers(), cfg.p2p_port);
                let new_uri = u.trim_end_matches('/').to_string();
                tracing::info!(old = %stored, new = %new_uri, "--uri changed: announcing the new address");
                tokio::spawn(async move {
                    for _ in 0..120 {
                        for (id, addr) in &others {
                            if *id == n.id {
                                continue;
                            }
                            let Ok(mut c) = network::client(addr, Duration::from_secs(30)) else {
                                continue;
                            };
                            if c.add_peer(AddPeerRequest {
                                uri: new_uri.clone(),
                                port: port as u32,
                                id: n.id,
                            })
                            .await
                            .is_ok()
                            {
                                return;
                            }
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    tracing::error!("could not announce the new address to any peer");
                });
            }
        }
        tokio::spawn(promote_learners(node.clone()));
        Ok(node)
    }

    async fn join(&self, bootstrap: &str, uri: Option<String>, port: u16) -> CResult<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        let mut last = String::new();
        while tokio::time::Instant::now() < deadline {
            let attempt = async {
                let mut c = network::client(bootstrap, Duration::from_secs(60))
                    .map_err(|e| e.to_string())?;
                c.add_peer(AddPeerRequest {
                    uri: uri.clone().unwrap_or_default(),
                    port: port as u32,
                    id: self.id,
                })
                .await
                .map_err(|s| s.message().to_string())
            };
            match attempt.await {
                Ok(r) => {
                    tracing::info!(
                        peer_id = self.id,
                        peers = r.get_ref().peers.len(),
                        "joined the cluster as a learner"
                    );
                    return Ok(());
                }
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(ClusterError::Config(format!(
            "could not join via {bootstrap}: {last}"
        )))
    }

    /// Install the data plane served to other peers (once, at start-up).
    pub fn set_data_service(&self, d: Arc<dyn DataService>) {
        let _ = self.data.set(d);
    }

    fn data(&self) -> Result<Arc<dyn DataService>, tonic::Status> {
        self.data
            .get()
            .cloned()
            .ok_or_else(|| tonic::Status::unavailable("peer is starting"))
    }

    /// Remove `peer` from the cluster: on the leader directly, otherwise by asking the
    /// leader (`remove_peer` there).
    pub async fn remove_peer_via_leader(&self, peer: NodeId, force: bool) -> CResult<()> {
        const TIMEOUT: Duration = Duration::from_secs(60);
        if self.is_leader() {
            return self.remove_peer(peer, force, TIMEOUT / 2).await;
        }
        let leader = self
            .leader_uri()
            .ok_or_else(|| ClusterError::NoLeader("none elected".into()))?;
        let mut c =
            network::client(&leader, TIMEOUT).map_err(|e| ClusterError::Internal(e.to_string()))?;
        match c
            .remove_peer(proto::RemovePeerRequest { peer, force })
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                Err(ClusterError::Rejected(s.message().to_string()))
            }
            Err(s) => Err(ClusterError::NoLeader(format!(
                "the leader could not remove the peer: {}",
                s.message()
            ))),
        }
    }

    /// Latest applied cluster state.
    pub fn state(&self) -> Arc<SmData> {
        self.state.borrow().clone()
    }

    /// All peers in the membership (voters and learners): id -> uri.
    pub fn peers(&self) -> BTreeMap<NodeId, String> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        m.membership()
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect()
    }

    pub fn voters(&self) -> BTreeSet<NodeId> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        m.membership().voter_ids().collect()
    }

    /// Propose a metadata operation from any peer; returns once it is applied locally.
    pub async fn propose(&self, op: ClusterOp, timeout: Duration) -> CResult<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // On a leader without quorum `client_write` waits for a commit that cannot happen:
            // bound it by the request deadline.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let written = match tokio::time::timeout(left, self.raft.client_write(op.clone())).await
            {
                Ok(w) => w,
                Err(_) => {
                    return Err(ClusterError::NoLeader(
                        "no quorum: the operation could not be committed before the timeout".into(),
                    ))
                }
            };
            let index = match written {
                Ok(r) => {
                    if let Some(e) = r.data.error {
                        self.wait_applied(r.log_id.index, deadline).await?;
                        return Err(ClusterError::Rejected(e));
                    }
                    r.log_id.index
                }
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    match f.leader_node {
                        Some(leader) => match self.forward(&leader.addr, &op, deadline).await {
                            // the known leader is unreachable (it may have just died):
                            // wait for the next election instead of failing at once
                            Err(ClusterError::NoLeader(why)) => {
                                self.retry_or_fail(deadline, &why).await?;
                                continue;
                            }
                            Err(e) => return Err(e),
                            Ok(ForwardReply::Applied { index, error }) => {
                                self.wait_applied(index, deadline).await?;
                                if let Some(e) = error {
                                    return Err(ClusterError::Rejected(e));
                                }
                                index
                            }
                            Ok(ForwardReply::NotLeader) => {
                                self.retry_or_fail(deadline, "leader changed").await?;
                                continue;
                            }
                            Ok(ForwardReply::Failed(e)) => return Err(ClusterError::Internal(e)),
                        },
                        None => {
                            self.retry_or_fail(deadline, "no leader elected").await?;
                            continue;
                        }
                    }
                }
                Err(e) => return Err(ClusterError::Internal(e.to_string())),
            };
            self.wait_applied(index, deadline).await?;
            return Ok(());
        }
    }

    async fn retry_or_fail(&self, deadline: tokio::time::Instant, why: &str) -> CResult<()> {
        if tokio::time::Instant::now() + self.tick * 2 >= deadline {
            return Err(ClusterError::NoLeader(why.into()));
        }
        tokio::time::sleep(self.tick * 2).await;
        Ok(())
    }

    async fn forward(
        &self,
        leader: &str,
        op: &ClusterOp,
        deadline: tokio::time::Instant,
    ) -> CResult<ForwardReply> {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let mut c =
            network::client(leader, left).map_err(|e| ClusterError::Internal(e.to_string()))?;
        match c.client_write(RaftMessage { data: encode(op) }).await {
            Ok(r) => {
                decode(&r.into_inner().data).map_err(|e| ClusterError::Internal(e.to_string()))
            }
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                ) =>
            {
                Err(ClusterError::NoLeader(format!(
                    "leader {leader} unreachable: {}",
                    s.message()
                )))
            }
            Err(s) => Err(ClusterError::Internal(s.message().to_string())),
        }
    }

    /// Index of the last Raft entry applied on this peer, effects included (0 before any).
    pub fn applied_index(&self) -> u64 {
        self.state.borrow().last_applied.map_or(0, |l| l.index)
    }

    /// Wait until this peer has applied the Raft log up to `index` (a coordinator's view of
    /// the metadata a request depends on, e.g. a collection it just created).
    pub async fn wait_applied_index(&self, index: u64, timeout: Duration) -> CResult<()> {
        if self.applied_index() >= index {
            return Ok(());
        }
        self.wait_applied(index, tokio::time::Instant::now() + timeout)
            .await
    }

    /// Wait until the published state (effects carried out) reaches `index`.
    async fn wait_applied(&self, index: u64, deadline: tokio::time::Instant) -> CResult<()> {
        let mut rx = self.state.clone();
        let reached = async {
            rx.wait_for(|d| d.last_applied.is_some_and(|l| l.index >= index))
                .await
                .map(|_| ())
        };
        let outcome = tokio::time::timeout_at(deadline, reached).await;
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_closed)) => Err(ClusterError::Internal("the state machine stopped".into())),
            Err(_) => Err(ClusterError::Timeout(format!(
                "operation committed but not yet applied on this peer (applied {} < {index})",
                self.applied_index()
            ))),
        }
    }

    /// Shards (collection, shard id) with a replica on `peer`.
    pub fn shards_on(&self, peer: NodeId) -> Vec<(String, usize)> {
        let st = self.state();
        st.state
            .collections
            .iter()
            .flat_map(|(n, c)| {
                c.shards
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.contains(&peer))
                    .map(move |(s, _)| (n.clone(), s))
            })
            .collect()
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// The current leader's id, if one is known.
    pub fn leader_id(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// URI of the current leader, if one is known.
    pub fn leader_uri(&self) -> Option<String> {
        let m = self.raft.metrics().borrow().clone();
        m.current_leader.and_then(|l| {
            m.membership_config
                .membership()
                .get_node(&l)
                .map(|n| n.addr.clone())
        })
    }

    /// Remove `peer` from consensus (leader only): its replicas first if `force`, then the
    /// voter/learner membership.
    pub async fn remove_peer(&self, peer: NodeId, force: bool, timeout: Duration) -> CResult<()> {
        if !self.peers().contains_key(&peer) {
            return Err(ClusterError::Rejected(format!(
                "Not found: peer {peer} is not a member of the cluster"
            )));
        }
        let held = self.shards_on(peer);
        if !held.is_empty() && !force {
            return Err(ClusterError::Rejected(format!(
                "Wrong input: Cannot remove peer {peer} as there are shards on it ({} replicas, e.g. collection `{}` shard {}); move them first or use force=true",
                held.len(),
                held[0].0,
                held[0].1
            )));
        }
        if !held.is_empty() {
            self.propose(ClusterOp::RemovePeerReplicas { peer }, timeout)
                .await?;
        }
        let _g = self.membership_lock.lock().await;
        let voters = self.voters();
        if voters.contains(&peer) {
            if voters.len() <= 1 {
                return Err(ClusterError::Rejected(
                    "Wrong input: cannot remove the last voter".into(),
                ));
            }
            self.raft
                .change_membership(ChangeMembers::RemoveVoters([peer].into()), false)
                .await
                .map_err(|e| ClusterError::Internal(e.to_string()))?;
        }
        self.raft
            .change_membership(ChangeMembers::RemoveNodes([peer].into()), false)
            .await
            .map_err(|e| ClusterError::Internal(e.to_string()))?;
        tracing::info!(peer_id = peer, force, "peer removed from the cluster");
        Ok(())
    }

    /// `raft_info` of `GET /cluster`.
    pub fn raft_info(&self) -> serde_json::Value {
        let m = self.raft.metrics().borrow().clone();
        let role = match m.state {
            ServerState::Leader => "Leader",
            ServerState::Candidate => "Candidate",
            _ => "Follower",
        };
        let commit = m.last_applied.map_or(0, |l| l.index);
        serde_json::json!({
            "term": m.current_term,
            "commit": commit,
            "pending_operations": m.last_log_index.unwrap_or(0).saturating_sub(commit),
            "leader": m.current_leader,
            "role": role,
            "is_voter": m.membership_config.membership().voter_ids().any(|v| v == self.id),
        })
    }
}

/// Leader-side task: promote learners to voters once they caught up, one at a time.
async fn promote_learners(node: Arc<ClusterNode>) {
    loop {
        tokio::time::sleep(node.tick * 5).await;
        let m = node.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            continue;
        }
        let membership = m.membership_config.membership().clone();
        let learners: Vec<NodeId> = membership.learner_ids().collect();
        let Some(repl) = &m.replication else { continue };
        let last = m.last_log_index.unwrap_or(0);
        // Promote every caught-up learner in one membership change: fewer joint-consensus
        // windows (a leader lost during one needs the old voters back to finish it).
        let ready: BTreeSet<NodeId> = learners
            .into_iter()
            .filter(|l| {
                last.saturating_sub(repl.get(l).and_then(|x| x.map(|id| id.index)).unwrap_or(0))
                    <= 8
            })
            .collect();
        if ready.is_empty() {
            continue;
        }
        let _g = node.membership_lock.lock().await;
        match node
            .raft
            .change_membership(ChangeMembers::AddVoterIds(ready.clone()), false)
            .await
        {
            Ok(_) => tracing::info!(peers = ?ready, "learners promoted to voters"),
            Err(e) => tracing::debug!(error = %e, "promotion deferred"),
        }
    }
}

struct Service {
    node: Arc<ClusterNode>,
}

fn bad(e: impl std::fmt::Display) -> tonic::Status {
    tonic::Status::invalid_argument(e.to_string())
}

#[tonic::async_trait]
impl P2p for Service {
    async fn apply(
        &self,
        req: tonic::Request<proto::ApplyRequest>,
    ) -> Result<tonic::Response<proto::ApplyReply>, tonic::Status> {
        let d = self.node.data()?;
        d.apply(req.into_inner()).await.map(tonic::Response::new)
    }

    async fn apply_batch(
        &self,
        req: tonic::Request<proto::ApplyBatchRequest>,
    ) -> Result<tonic::Response<proto::ApplyReply>, tonic::Status> {
        let d = self.node.data()?;
        d.apply_batch(req.into_inner())
            .await
            .map(tonic::Response::new)
    }

    async fn ordered(
        &self,
        req: tonic::Request<proto::ApplyRequest>,
    ) -> Result<tonic::Response<proto::ApplyReply>, tonic::Status> {
        let d = self.node.data()?;
        d.ordered(req.into_inner()).await.map(tonic::Response::new)
    }

    async fn op_ids(
        &self,
        req: tonic::Request<proto::ShardRequest>,
    ) -> Result<tonic::Response<proto::OpIdsReply>, tonic::Status> {
        let d = self.node.data()?;
        d.op_ids(req.into_inner()).await.map(tonic::Response::new)
    }

    async fn digest(
        &self,
        req: tonic::Request<proto::ShardRequest>,
    ) -> Result<tonic::Response<proto::DigestReply>, tonic::Status> {
        let d = self.node.data()?;
        d.digest(req.into_inner()).await.map(tonic::Response::new)
    }

    async fn digest_tree(
        &self,
        req: tonic::Request<proto::DigestTreeRequest>,
    ) -> Result<tonic::Response<proto::DigestTreeReply>, tonic::Status> {
        let d = self.node.data()?;
        d.digest_tree(req.into_inner())
            .await
            .map(tonic::Response::new)
    }

    async fn touched(
        &self,
        req: tonic::Request<proto::TouchedRequest>,
    ) -> Result<tonic::Response<proto::TouchedReply>, tonic::Status> {
        let d = self.node.data()?;
        d.touched(req.into_inner()).await.map(tonic::Response::new)
    }

    async fn repair(
        &self,
        req: tonic::Request<proto::RepairRequest>,
    ) -> Result<tonic::Response<proto::RepairReply>, tonic::Status> {
        let d = self.node.data()?;
        d.repair(req.into_inner()).await.map(tonic::Response::new)
    }

    async fn read(
        &self,
        req: tonic::Request<proto::ReadRequest>,
    ) -> Result<tonic::Response<proto::ReadReply>, tonic::Status> {
        let d = self.node.data()?;
        d.read(req.into_inner()).await.map(tonic::Response::new)
    }

    async fn status(
        &self,
        _req: tonic::Request<proto::StatusRequest>,
    ) -> Result<tonic::Response<proto::StatusReply>, tonic::Status> {
        let d = self.node.data()?;
        d.status().await.map(tonic::Response::new)
    }

    async fn remove_peer(
        &self,
        req: tonic::Request<proto::RemovePeerRequest>,
    ) -> Result<tonic::Response<proto::RemovePeerReply>, tonic::Status> {
        let r = req.into_inner();
        if !self.node.is_leader() {
            return Err(tonic::Status::unavailable("not the Raft leader"));
        }
        match self
            .node
            .remove_peer(r.peer, r.force, Duration::from_secs(30))
            .await
        {
            Ok(()) => Ok(tonic::Response::new(proto::RemovePeerReply {})),
            Err(ClusterError::Rejected(m)) => Err(tonic::Status::failed_precondition(m)),
            Err(e) => Err(tonic::Status::unavailable(e.to_string())),
        }
    }

    async fn append_entries(
        &self,
        req: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let rpc = decode(&req.into_inner().data).map_err(bad)?;
        let r = self.node.raft.append_entries(rpc).await;
        Ok(tonic::Response::new(RaftMessage { data: encode(&r) }))
    }

    async fn vote(
        &self,
        req: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let rpc = decode(&req.into_inner().data).map_err(bad)?;
        let r = self.node.raft.vote(rpc).await;
        Ok(tonic::Response::new(RaftMessage { data: encode(&r) }))
    }

    async fn install_snapshot(
        &self,
        req: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let rpc = decode(&req.into_inner().data).map_err(bad)?;
        let r = self.node.raft.install_snapshot(rpc).await;
        Ok(tonic::Response::new(RaftMessage { data: encode(&r) }))
    }

    async fn client_write(
        &self,
        req: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let op: ClusterOp = decode(&req.into_inner().data).map_err(bad)?;
        let reply = match self.node.raft.client_write(op).await {
            Ok(r) => ForwardReply::Applied {
                index: r.log_id.index,
                error: r.data.error,
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                ForwardReply::NotLeader
            }
            Err(e) => ForwardReply::Failed(e.to_string()),
        };
        Ok(tonic::Response::new(RaftMessage {
            data: encode(&reply),
        }))
    }

    async fn add_peer(
        &self,
        req: tonic::Request<AddPeerRequest>,
    ) -> Result<tonic::Response<AddPeerReply>, tonic::Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        let uri = if r.uri.is_empty() {
            let ip = remote
                .ok_or_else(|| bad("cannot derive the joiner's address: pass --uri"))?
                .ip();
            let host = if ip.is_ipv6() {
                format!("[{ip}]")
            } else {
                ip.to_string()
            };
            format!("{}://{host}:{}", network::scheme(), r.port)
        } else {
            r.uri.trim_end_matches('/').to_string()
        };
        if r.id == 0 {
            return Err(bad("peer id 0 is reserved"));
        }
        let node = &self.node;
        let m = node.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            // forward to the leader with the address made explicit
            let leader = m.current_leader.and_then(|l| {
                m.membership_config
                    .membership()
                    .get_node(&l)
                    .map(|n| n.addr.clone())
            });
            let Some(leader) = leader else {
                return Err(tonic::Status::unavailable("no leader elected yet"));
            };
            let mut c = network::client(&leader, Duration::from_secs(60)).map_err(bad)?;
            return c
                .add_peer(AddPeerRequest {
                    uri,
                    port: r.port,
                    id: r.id,
                })
                .await;
        }
        if let Some((other, _)) = node
            .peers()
            .into_iter()
            .find(|(id, a)| *a == uri && *id != r.id)
        {
            return Err(tonic::Status::already_exists(format!(
                "address {uri} already belongs to peer {other}"
            )));
        }
        // A known peer announcing a new address (restarted with another --uri): update it.
        if let Some(old) = node.peers().get(&r.id).cloned() {
            if old != uri {
                let _g = node.membership_lock.lock().await;
                node.raft
                    .change_membership(
                        ChangeMembers::SetNodes([(r.id, BasicNode { addr: uri.clone() })].into()),
                        true,
                    )
                    .await
                    .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
                tracing::info!(peer_id = r.id, %old, new = %uri, "peer address updated");
            }
            let peers = node
                .peers()
                .into_iter()
                .map(|(id, uri)| Peer { id, uri })
                .collect();
            return Ok(tonic::Response::new(AddPeerReply {
                peers,
                first_peer_id: node.id,
            }));
        }
        {
            let _g = node.membership_lock.lock().await;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                match node
                    .raft
                    .add_learner(r.id, BasicNode { addr: uri.clone() }, true)
                    .await
                {
                    Ok(_) => break,
                    Err(e) if tokio::time::Instant::now() < deadline => {
                        tracing::debug!(error = %e, "add_learner retry");
                        tokio::time::sleep(node.tick * 2).await;
                    }
                    Err(e) => return Err(tonic::Status::unavailable(e.to_string())),
                }
            }
        }
        let peers = node
            .peers()
            .into_iter()
            .map(|(id, uri)| Peer { id, uri })
            .collect();
        Ok(tonic::Response::new(AddPeerReply {
            peers,
            first_peer_id: node.id,
        }))
    }
}

#[cfg(test)]
mod peer_id_tests {
    use super::load_or_create_id;

    #[test]
    fn the_peer_id_survives_restarts_and_a_damaged_file_stops_the_start() {
        let d = tempfile::tempdir().unwrap();
        let id = load_or_create_id(d.path()).unwrap();
        assert_eq!(load_or_create_id(d.path()).unwrap(), id);
        let file = d.path().join("peer_id");
        // one digit changed: still a number, no longer this peer's
        let text = std::fs::read_to_string(&file).unwrap();
        let digit = id.to_string().chars().last().unwrap();
        let other = if digit == '1' { '2' } else { '1' };
        let at = text.rfind(&id.to_string()).unwrap() + id.to_string().len() - 1;
        let mut damaged = text.clone();
        damaged.replace_range(at..at + 1, &other.to_string());
        std::fs::write(&file, damaged).unwrap();
        let e = load_or_create_id(d.path()).unwrap_err().to_string();
        assert!(e.contains("checksum"), "{e}");
        // a file of an earlier version: the bare number
        std::fs::write(&file, "12345").unwrap();
        assert_eq!(load_or_create_id(d.path()).unwrap(), 12345);
    }
}
