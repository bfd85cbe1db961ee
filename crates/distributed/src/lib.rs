//! `distributed`: Sextant's distributed layer.
//!
//! - Pure policies over the agreed cluster state, table-tested: where a collection's shards
//!   live and which replicas to read ([`placement`]), when a replicated write may be
//!   acknowledged and which replicas failed it ([`write`]), and which replica a Dead one
//!   recovers from ([`recovery`]).
//! - The typed peer protocol ([`peer`]): the `PeerService` a peer executes on its own data
//!   and the `PeerClient` that reaches the others (over tonic, or in-process for itself).
//! - The local side of consensus effects ([`cluster_sink`]).
//! - The drivers: the coordinator of distributed reads and writes ([`coordinator`]), this
//!   peer's side of the protocol ([`service`]), and replica maintenance — transfers,
//!   forwarding, health checks, Dead-marking ([`replication`]).
//!
//! - Typed reads on this peer's own points ([`points`]), shared by a single node's handlers
//!   and by this peer's side of the protocol.
//!
//! `api` parses requests into `collection::read` types, calls the coordinator (or
//! [`points`] on a single node) and maps [`error::DistError`] to HTTP; it provides only that
//! error mapping ([`service::ErrorMap`]).

pub mod anti_entropy;
pub mod cluster_sink;
pub mod collections;
pub mod coordinator;
pub mod error;
pub mod faults;
pub mod heal;
pub mod outbox;
pub mod peer;
pub mod placement;
pub mod points;
pub mod readiness;
pub mod recovery;
pub mod replication;
pub mod service;
pub mod snapshot_install;
pub mod write;

pub use cluster::state::PeerId;
pub use error::{DistError, DistResult};

use cluster::node::ClusterNode;
use collection::Storage;
use std::sync::{Arc, OnceLock};

/// What the distributed layer of this peer works with.
#[derive(Clone)]
pub struct Ctx {
    pub storage: Arc<Storage>,
    /// Present in cluster mode.
    pub cluster: Option<Arc<ClusterNode>>,
    /// Write serialization, forwarding and shard transfers of this peer.
    pub repl: Arc<replication::Replication>,
    /// How this peer reaches the others (and itself); set by [`Ctx::start`].
    pub peers: Arc<OnceLock<Arc<dyn peer::PeerClient>>>,
    /// Collections whose local data was found missing (shared with the effect sink).
    pub lost: cluster_sink::Lost,
    /// `cluster.self_heal`.
    pub heal: heal::HealConfig,
    /// `cluster.anti_entropy.interval_sec` (`None`: off).
    pub anti_entropy_interval: Option<std::time::Duration>,
    /// Tests only: fault rules at this peer's `PeerClient`, steerable while it runs (the
    /// in-process harness). `SEXTANT_PEER_FAULTS` sets them for a whole process instead.
    pub faults: Option<faults::Control>,
}

impl Ctx {
    pub fn new(
        storage: Arc<Storage>,
        cluster: Option<Arc<ClusterNode>>,
        lost: cluster_sink::Lost,
    ) -> Ctx {
        Ctx {
            storage,
            cluster,
            repl: Default::default(),
            peers: Default::default(),
            lost,
            heal: Default::default(),
            anti_entropy_interval: Some(std::time::Duration::from_secs(60)),
            faults: None,
        }
    }

    /// Cluster mode: serve this peer's side of the protocol, reach the others over tonic,
    /// and start replica maintenance. `errors` describes errors as the public API does.
    pub fn start(&self, errors: Arc<dyn service::ErrorMap>) {
        let Some(node) = &self.cluster else { return };
        let local: Arc<dyn peer::PeerService> = Arc::new(service::LocalService {
            ctx: self.clone(),
            errors,
        });
        let mut peers: Arc<dyn peer::PeerClient> =
            Arc::new(peer::TonicPeers::new(node.clone(), local.clone()));
        let mut control = self.faults.clone();
        if let Ok(spec) = std::env::var("SEXTANT_PEER_FAULTS") {
            // tests only: a malformed rule list is a start-up error, never ignored
            let rules = faults::parse(&spec).unwrap_or_else(|e| panic!("SEXTANT_PEER_FAULTS: {e}"));
            let seed = std::env::var("SEXTANT_PEER_FAULTS_SEED")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            tracing::warn!(%spec, seed, "fault injection at the peer layer is active (SEXTANT_PEER_FAULTS)");
            control = Some(faults::Control::new(rules).with_seed(seed));
        }
        if let Some(control) = control {
            peers = Arc::new(faults::Faulty::new(peers, node.id, control));
        }
        let _ = self.peers.set(peers);
        node.set_data_service(Arc::new(peer::Served(local)));
        replication::spawn_supervisor(self.clone());
    }
}

/// Run blocking work (disk, CPU-heavy) on tokio's blocking pool, off the async workers;
/// a panic in it becomes the caller's error.
pub async fn blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, E>
where
    T: Send + 'static,
    E: From<tokio::task::JoinError> + Send + 'static,
{
    tokio::task::spawn_blocking(f).await?
}
