//! The typed peer protocol. A coordinator, a transfer source or the leader's health check
//! reaches another peer only through [`PeerClient`], which hands out a [`PeerService`] per
//! peer: this peer's own service in-process, any other over tonic on the p2p port
//! ([`TonicPeers`]). The receiving side serves its `PeerService` to the network through
//! [`Served`] (`cluster::node::DataService`).
//!
//! Every answer is typed; an error is a [`PeerError`] with the HTTP status the public API
//! would answer, so nothing but an `Ok` counts as applied.

use cluster::network;
use cluster::node::{ClusterNode, DataFuture, DataService};
use cluster::proto;
use collection::operations::{LoggedOp, OpMeta, Touched, UpdateOp};
use collection::query::ScoredPoint;
use collection::read::{CountRequest, QueryRequest, RetrieveRequest, ScrollRequest, SearchRequest};
use segment::digest::Digest;
use segment::types::PointId;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Timeout of one data-plane request to another peer.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of a status request (health checks, applied-index waits).
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// A refused or failed peer request: the HTTP status the public API answers for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerError {
    pub status: u16,
    pub message: String,
}

impl PeerError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        PeerError {
            status,
            message: message.into(),
        }
    }

    pub fn unavailable(message: impl std::fmt::Display) -> Self {
        PeerError::new(503, format!("Service unavailable: {message}"))
    }

    /// A peer answered a read with another kind of answer than it asked for (a bug).
    fn wrong_answer() -> Self {
        PeerError::new(
            500,
            "Service internal error: a peer answered a read with the wrong kind",
        )
    }

    fn bad_message(what: &str, e: impl std::fmt::Display) -> Self {
        PeerError::new(400, format!("Bad request: undecodable {what}: {e}"))
    }
}

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

pub type PeerResult<T> = Result<T, PeerError>;
pub type PeerFuture<'a, T> = Pin<Box<dyn Future<Output = PeerResult<T>> + Send + 'a>>;

/// Apply an already validated operation to a peer's local replicas.
#[derive(Clone, Debug)]
pub struct ApplyRequest {
    pub collection: String,
    /// The sender's applied Raft index: the receiver waits until it has applied as much.
    pub applied: u64,
    pub op: UpdateOp,
    pub wait: bool,
    pub meta: OpMeta,
}

/// A peer's answer to an apply: the write is in its log and applied.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Applied {
    pub operation_id: u64,
    pub completed: bool,
    /// A per-point error (a missing point: the rest was applied), for the client.
    pub point_error: Option<PeerError>,
}

pub use collection::read::Scope;

/// What a read asks, parsed and validated by the coordinator.
#[derive(Clone, Debug, PartialEq)]
pub enum ReadBody {
    Search(Box<SearchRequest>),
    Retrieve(RetrieveRequest),
    Query(Box<QueryRequest>),
    /// Answered with the page's points (the coordinator finds the next page's offset).
    Scroll(Box<ScrollRequest>),
    Count(CountRequest),
}

/// A peer's answer to a read, of the kind its [`ReadBody`] asked for.
#[derive(Clone, Debug, PartialEq)]
pub enum ReadAnswer {
    Points(Vec<ScoredPoint>),
    Count(u64),
}

impl ReadAnswer {
    pub fn points(self) -> PeerResult<Vec<ScoredPoint>> {
        match self {
            ReadAnswer::Points(p) => Ok(p),
            _ => Err(PeerError::wrong_answer()),
        }
    }

    pub fn count(self) -> PeerResult<u64> {
        match self {
            ReadAnswer::Count(n) => Ok(n),
            _ => Err(PeerError::wrong_answer()),
        }
    }
}

/// A read executed on a peer's local points.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadRequest {
    pub collection: String,
    pub applied: u64,
    pub body: ReadBody,
    /// `None`: every local point (the peer's replicas are exactly what was asked for).
    pub scope: Option<Scope>,
}

/// A lower level of a shard's digest tree (`segment::digest`), asked of one replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeRequest {
    pub collection: String,
    pub shard: u32,
    pub applied: u64,
    pub level: TreeLevel,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TreeLevel {
    /// The `segment::digest::BUCKETS` bucket digests.
    Buckets,
    /// The point hashes of these buckets.
    Leaves(Vec<u32>),
}

/// One point of a point-level repair: made equal to the winning copy (`copy`, or deleted
/// when `None`) unless the receiver's copy no longer has the hash `expect` it was compared
/// with (`None`: it was absent).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RepairPoint {
    pub id: PointId,
    pub expect: Option<u64>,
    pub copy: Option<collection::operations::PointInsert>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RepairRequest {
    pub collection: String,
    pub shard: u32,
    pub applied: u64,
    pub points: Vec<RepairPoint>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TouchedRequest {
    pub collection: String,
    pub shard: u32,
    pub applied: u64,
    pub known: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TreeAnswer {
    /// The bucket digests, and per bucket whether no write touched it between this peer's
    /// two latest digests of the shard.
    Buckets {
        digests: Vec<Digest>,
        quiet: Vec<bool>,
    },
    /// `(id, hash)` in id order.
    Leaves(Vec<(PointId, u64)>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    pub ready: bool,
    /// Last applied Raft index.
    pub applied: u64,
    pub version: String,
}

/// What a peer executes on its own data, for a coordinator or a transfer source.
pub trait PeerService: Send + Sync + 'static {
    fn apply(&self, req: ApplyRequest) -> PeerFuture<'_, Applied>;
    /// Logged operations of a WAL-delta transfer, applied in order, durable at the end.
    fn apply_batch(
        &self,
        collection: String,
        applied: u64,
        ops: Vec<LoggedOp>,
    ) -> PeerFuture<'_, Applied>;
    /// Coordinate a write as the shard leader of `ordering` medium/strong.
    fn ordered(&self, req: ApplyRequest) -> PeerFuture<'_, Applied>;
    /// Ids of the newest logged client writes of `shard`, oldest first.
    fn op_ids(&self, collection: String, shard: u32) -> PeerFuture<'_, Vec<u64>>;
    fn digest(&self, collection: String, shard: u32, applied: u64) -> PeerFuture<'_, Digest>;
    fn digest_tree(&self, req: TreeRequest) -> PeerFuture<'_, TreeAnswer>;
    /// What this peer's client writes of `shard` that a log holding `known` lacks may have
    /// changed; `None` when this peer's log cannot tell.
    fn touched(&self, req: TouchedRequest) -> PeerFuture<'_, Option<Touched>>;
    /// Apply a point-level repair to this peer's replica; the number of points repaired.
    fn repair(&self, req: RepairRequest) -> PeerFuture<'_, u64>;
    fn read(&self, req: ReadRequest) -> PeerFuture<'_, ReadAnswer>;
    fn status(&self) -> PeerFuture<'_, PeerStatus>;
}

/// How a peer reaches the others: a `PeerService` per peer id.
pub trait PeerClient: Send + Sync + 'static {
    fn peer(&self, id: u64) -> PeerResult<Arc<dyn PeerService>>;
}

// ------------------------------------------------------------------ over tonic

/// The `PeerClient` of a cluster peer: itself in-process, the others over tonic (one
/// HTTP/2 channel per peer address, reused by every request).
pub struct TonicPeers {
    node: Arc<ClusterNode>,
    local: Arc<dyn PeerService>,
    channels: parking_lot::Mutex<HashMap<String, network::Client>>,
}

impl TonicPeers {
    pub fn new(node: Arc<ClusterNode>, local: Arc<dyn PeerService>) -> Self {
        TonicPeers {
            node,
            local,
            channels: Default::default(),
        }
    }

    fn channel(&self, uri: &str) -> PeerResult<network::Client> {
        let mut ch = self.channels.lock();
        if let Some(c) = ch.get(uri) {
            return Ok(c.clone());
        }
        // the per-request deadline is ours (`TonicPeer::call`); the channel's is a backstop
        let c = network::client(uri, PEER_TIMEOUT * 2)
            .map_err(|e| PeerError::unavailable(format!("peer address {uri}: {e}")))?;
        ch.insert(uri.to_string(), c.clone());
        Ok(c)
    }
}

impl PeerClient for TonicPeers {
    fn peer(&self, id: u64) -> PeerResult<Arc<dyn PeerService>> {
        if id == self.node.id {
            return Ok(self.local.clone());
        }
        let uri =
            self.node.peers().get(&id).cloned().ok_or_else(|| {
                PeerError::unavailable(format!("peer {id} is not in the cluster"))
            })?;
        Ok(Arc::new(TonicPeer {
            id,
            client: self.channel(&uri)?,
        }))
    }
}

/// One remote peer over tonic.
struct TonicPeer {
    id: u64,
    client: network::Client,
}

impl TonicPeer {
    async fn call<T, F>(&self, timeout: Duration, f: F) -> PeerResult<T>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        match tokio::time::timeout(timeout, f).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(from_status(self.id, &s)),
            Err(_) => Err(PeerError::new(
                504,
                format!(
                    "Timeout: peer {} did not answer within {} s",
                    self.id,
                    timeout.as_secs()
                ),
            )),
        }
    }
}

impl PeerService for TonicPeer {
    fn apply(&self, req: ApplyRequest) -> PeerFuture<'_, Applied> {
        Box::pin(async move {
            let mut c = self.client.clone();
            let r = self
                .call(PEER_TIMEOUT, c.apply(apply_to_proto(&req)))
                .await?;
            Ok(applied_from_proto(r))
        })
    }

    fn apply_batch(
        &self,
        collection: String,
        applied: u64,
        ops: Vec<LoggedOp>,
    ) -> PeerFuture<'_, Applied> {
        Box::pin(async move {
            let mut c = self.client.clone();
            let req = proto::ApplyBatchRequest {
                collection,
                applied,
                ops: encode_logged(&ops),
            };
            let r = self.call(PEER_TIMEOUT, c.apply_batch(req)).await?;
            Ok(applied_from_proto(r))
        })
    }

    fn ordered(&self, req: ApplyRequest) -> PeerFuture<'_, Applied> {
        Box::pin(async move {
            let mut c = self.client.clone();
            let r = self
                .call(PEER_TIMEOUT, c.ordered(apply_to_proto(&req)))
                .await?;
            Ok(applied_from_proto(r))
        })
    }

    fn op_ids(&self, collection: String, shard: u32) -> PeerFuture<'_, Vec<u64>> {
        Box::pin(async move {
            let mut c = self.client.clone();
            let req = proto::ShardRequest {
                collection,
                shard,
                applied: 0,
            };
            Ok(self.call(PEER_TIMEOUT, c.op_ids(req)).await?.ids)
        })
    }

    fn digest(&self, collection: String, shard: u32, applied: u64) -> PeerFuture<'_, Digest> {
        Box::pin(async move {
            let mut c = self.client.clone();
            let req = proto::ShardRequest {
                collection,
                shard,
                applied,
            };
            let r = self.call(PEER_TIMEOUT, c.digest(req)).await?;
            Ok(Digest {
                count: r.count,
                sum: r.sum,
            })
        })
    }

    fn digest_tree(&self, req: TreeRequest) -> PeerFuture<'_, TreeAnswer> {
        Box::pin(async move {
            let mut c = self.client.clone();
            let leaves = matches!(req.level, TreeLevel::Leaves(_));
            let r = self
                .call(PEER_TIMEOUT, c.digest_tree(tree_to_proto(req)))
                .await?;
            tree_answer_from_proto(leaves, r)
        })
    }

    fn touched(&self, req: TouchedRequest) -> PeerFuture<'_, Option<Touched>> {
        Box::pin(async move {
            let mut c = self.client.clone();
            let r = self
                .call(
                    PEER_TIMEOUT,
                    c.touched(proto::TouchedRequest {
                        collection: req.collection,
                        shard: req.shard,
                        applied: req.applied,
                        known: req.known,
                    }),
                )
                .await?;
            touched_from_proto(r)
        })
    }

    fn repair(&self, req: RepairRequest) -> PeerFuture<'_, u64> {
        Box::pin(async move {
            let mut c = self.client.clone();
            let r = self
                .call(PEER_TIMEOUT, c.repair(repair_to_proto(&req)))
                .await?;
            Ok(r.repaired)
        })
    }

    fn read(&self, req: ReadRequest) -> PeerFuture<'_, ReadAnswer> {
        Box::pin(async move {
            let mut c = self.client.clone();
            let r = self.call(PEER_TIMEOUT, c.read(read_to_proto(&req))).await?;
            let bad = |e: String| {
                PeerError::new(500, format!("Service internal error: bad peer answer: {e}"))
            };
            match req.body {
                ReadBody::Count(_) => rmp_serde::from_slice(&r.result)
                    .map(ReadAnswer::Count)
                    .map_err(|e| bad(e.to_string())),
                _ => rmp_serde::from_slice(&r.result)
                    .map(ReadAnswer::Points)
                    .map_err(|e| bad(e.to_string())),
            }
        })
    }

    fn status(&self) -> PeerFuture<'_, PeerStatus> {
        Box::pin(async move {
            let mut c = self.client.clone();
            let r = self
                .call(STATUS_TIMEOUT, c.status(proto::StatusRequest {}))
                .await?;
            Ok(PeerStatus {
                ready: r.ready,
                applied: r.applied,
                version: r.version,
            })
        })
    }
}

// ------------------------------------------------------------------ the receiving side

/// Serves a `PeerService` to other peers (installed with `ClusterNode::set_data_service`).
pub struct Served(pub Arc<dyn PeerService>);

impl DataService for Served {
    fn apply(&self, r: proto::ApplyRequest) -> DataFuture<proto::ApplyReply> {
        let s = self.0.clone();
        Box::pin(async move {
            let req = apply_from_proto(r).map_err(to_status)?;
            s.apply(req).await.map(applied_to_proto).map_err(to_status)
        })
    }

    fn apply_batch(&self, r: proto::ApplyBatchRequest) -> DataFuture<proto::ApplyReply> {
        let s = self.0.clone();
        Box::pin(async move {
            let ops: Vec<LoggedOp> = rmp_serde::from_slice(&r.ops)
                .map_err(|e| to_status(PeerError::bad_message("batch", e)))?;
            s.apply_batch(r.collection, r.applied, ops)
                .await
                .map(applied_to_proto)
                .map_err(to_status)
        })
    }

    fn ordered(&self, r: proto::ApplyRequest) -> DataFuture<proto::ApplyReply> {
        let s = self.0.clone();
        Box::pin(async move {
            let req = apply_from_proto(r).map_err(to_status)?;
            s.ordered(req)
                .await
                .map(applied_to_proto)
                .map_err(to_status)
        })
    }

    fn op_ids(&self, r: proto::ShardRequest) -> DataFuture<proto::OpIdsReply> {
        let s = self.0.clone();
        Box::pin(async move {
            let ids = s.op_ids(r.collection, r.shard).await.map_err(to_status)?;
            Ok(proto::OpIdsReply { ids })
        })
    }

    fn digest(&self, r: proto::ShardRequest) -> DataFuture<proto::DigestReply> {
        let s = self.0.clone();
        Box::pin(async move {
            let d = s
                .digest(r.collection, r.shard, r.applied)
                .await
                .map_err(to_status)?;
            Ok(proto::DigestReply {
                count: d.count,
                sum: d.sum,
            })
        })
    }

    fn digest_tree(&self, r: proto::DigestTreeRequest) -> DataFuture<proto::DigestTreeReply> {
        let s = self.0.clone();
        Box::pin(async move {
            let a = s.digest_tree(tree_from_proto(r)).await.map_err(to_status)?;
            Ok(tree_answer_to_proto(a))
        })
    }

    fn touched(&self, r: proto::TouchedRequest) -> DataFuture<proto::TouchedReply> {
        let s = self.0.clone();
        Box::pin(async move {
            let t = s
                .touched(TouchedRequest {
                    collection: r.collection,
                    shard: r.shard,
                    applied: r.applied,
                    known: r.known,
                })
                .await
                .map_err(to_status)?;
            Ok(touched_to_proto(t))
        })
    }

    fn repair(&self, r: proto::RepairRequest) -> DataFuture<proto::RepairReply> {
        let s = self.0.clone();
        Box::pin(async move {
            let req = repair_from_proto(r).map_err(to_status)?;
            let repaired = s.repair(req).await.map_err(to_status)?;
            Ok(proto::RepairReply { repaired })
        })
    }

    fn read(&self, r: proto::ReadRequest) -> DataFuture<proto::ReadReply> {
        let s = self.0.clone();
        Box::pin(async move {
            let req = read_from_proto(r).map_err(to_status)?;
            let answer = s.read(req).await.map_err(to_status)?;
            let result = match &answer {
                ReadAnswer::Points(p) => rmp_serde::to_vec_named(p).map_err(|e| e.to_string()),
                ReadAnswer::Count(n) => rmp_serde::to_vec(n).map_err(|e| e.to_string()),
            }
            .map_err(|e| to_status(PeerError::new(500, format!("Service internal error: {e}"))))?;
            Ok(proto::ReadReply { result })
        })
    }

    fn status(&self) -> DataFuture<proto::StatusReply> {
        let s = self.0.clone();
        Box::pin(async move {
            let st = s.status().await.map_err(to_status)?;
            Ok(proto::StatusReply {
                ready: st.ready,
                applied: st.applied,
                version: st.version,
            })
        })
    }
}

// ------------------------------------------------------------------ wire conversions

/// A `PeerError` as a gRPC status: the HTTP status travels in the details.
fn to_status(e: PeerError) -> tonic::Status {
    let code = match e.status {
        400 | 413 | 422 => tonic::Code::InvalidArgument,
        401 => tonic::Code::Unauthenticated,
        403 => tonic::Code::PermissionDenied,
        404 => tonic::Code::NotFound,
        409 => tonic::Code::AlreadyExists,
        503 => tonic::Code::Unavailable,
        504 => tonic::Code::DeadlineExceeded,
        _ => tonic::Code::Internal,
    };
    tonic::Status::with_details(
        code,
        e.message,
        tonic::codegen::Bytes::from(e.status.to_string()),
    )
}

/// The `PeerError` of a gRPC status from peer `id`: the HTTP status from the details when
/// the peer answered, 503 for a transport failure (the peer is unreachable or gone).
fn from_status(id: u64, s: &tonic::Status) -> PeerError {
    let status = std::str::from_utf8(s.details())
        .ok()
        .and_then(|d| d.parse::<u16>().ok());
    match status {
        Some(status) => PeerError::new(status, s.message()),
        None => match s.code() {
            tonic::Code::Unauthenticated => PeerError::new(
                403,
                format!(
                    "Forbidden: peer {id} refused this peer's key: {}",
                    s.message()
                ),
            ),
            tonic::Code::DeadlineExceeded => PeerError::new(
                504,
                format!("Timeout: peer {id} did not answer: {}", s.message()),
            ),
            _ => PeerError::unavailable(format!("peer {id}: {}", s.message())),
        },
    }
}

fn tree_to_proto(r: TreeRequest) -> proto::DigestTreeRequest {
    let (leaves, buckets) = match r.level {
        TreeLevel::Buckets => (false, Vec::new()),
        TreeLevel::Leaves(b) => (true, b),
    };
    proto::DigestTreeRequest {
        collection: r.collection,
        shard: r.shard,
        applied: r.applied,
        leaves,
        buckets,
    }
}

fn tree_from_proto(r: proto::DigestTreeRequest) -> TreeRequest {
    TreeRequest {
        collection: r.collection,
        shard: r.shard,
        applied: r.applied,
        level: match r.leaves {
            false => TreeLevel::Buckets,
            true => TreeLevel::Leaves(r.buckets),
        },
    }
}

fn tree_answer_to_proto(a: TreeAnswer) -> proto::DigestTreeReply {
    match a {
        TreeAnswer::Buckets { digests, quiet } => proto::DigestTreeReply {
            counts: digests.iter().map(|d| d.count).collect(),
            sums: digests.iter().map(|d| d.sum).collect(),
            leaves: Vec::new(),
            quiet,
        },
        TreeAnswer::Leaves(l) => proto::DigestTreeReply {
            counts: Vec::new(),
            sums: Vec::new(),
            leaves: rmp_serde::to_vec(&l).expect("point ids and hashes always encode"),
            quiet: Vec::new(),
        },
    }
}

fn tree_answer_from_proto(leaves: bool, r: proto::DigestTreeReply) -> PeerResult<TreeAnswer> {
    if leaves {
        return rmp_serde::from_slice(&r.leaves)
            .map(TreeAnswer::Leaves)
            .map_err(|e| PeerError::bad_message("digest leaves", e));
    }
    let n = segment::digest::BUCKETS;
    if r.counts.len() != n || r.sums.len() != n || r.quiet.len() != n {
        return Err(PeerError::bad_message(
            "digest buckets",
            format!(
                "{} counts, {} sums, {} quiet flags",
                r.counts.len(),
                r.sums.len(),
                r.quiet.len()
            ),
        ));
    }
    Ok(TreeAnswer::Buckets {
        digests: r
            .counts
            .into_iter()
            .zip(r.sums)
            .map(|(count, sum)| Digest { count, sum })
            .collect(),
        quiet: r.quiet,
    })
}

fn repair_to_proto(r: &RepairRequest) -> proto::RepairRequest {
    proto::RepairRequest {
        collection: r.collection.clone(),
        shard: r.shard,
        applied: r.applied,
        points: rmp_serde::to_vec_named(&r.points).expect("repair points always encode"),
    }
}

fn repair_from_proto(r: proto::RepairRequest) -> PeerResult<RepairRequest> {
    Ok(RepairRequest {
        collection: r.collection,
        shard: r.shard,
        applied: r.applied,
        points: rmp_serde::from_slice(&r.points)
            .map_err(|e| PeerError::bad_message("repair points", e))?,
    })
}

fn touched_to_proto(t: Option<Touched>) -> proto::TouchedReply {
    match t {
        None => proto::TouchedReply::default(),
        Some(t) => proto::TouchedReply {
            told: true,
            ids: rmp_serde::to_vec(&t.ids).expect("point ids always encode"),
            by_filter: t.by_filter,
        },
    }
}

fn touched_from_proto(r: proto::TouchedReply) -> PeerResult<Option<Touched>> {
    if !r.told {
        return Ok(None);
    }
    let ids: Vec<PointId> =
        rmp_serde::from_slice(&r.ids).map_err(|e| PeerError::bad_message("touched ids", e))?;
    if !ids.windows(2).all(|w| w[0] < w[1]) {
        return Err(PeerError::bad_message("touched ids", "not sorted"));
    }
    Ok(Some(Touched {
        ids,
        by_filter: r.by_filter,
    }))
}

fn apply_to_proto(r: &ApplyRequest) -> proto::ApplyRequest {
    proto::ApplyRequest {
        collection: r.collection.clone(),
        applied: r.applied,
        op: r.op.encode(),
        wait: r.wait,
        op_id: r.meta.id,
        fill: r.meta.fill,
        shards: r.meta.shards.clone().unwrap_or_default(),
        has_shards: r.meta.shards.is_some(),
    }
}

fn apply_from_proto(r: proto::ApplyRequest) -> PeerResult<ApplyRequest> {
    let op = UpdateOp::decode(&r.op).map_err(|e| PeerError::bad_message("operation", e))?;
    Ok(ApplyRequest {
        collection: r.collection,
        applied: r.applied,
        op,
        wait: r.wait,
        meta: OpMeta {
            id: r.op_id,
            fill: r.fill,
            shards: r.has_shards.then_some(r.shards),
            install: None, // single-node shard installs only
        },
    })
}

fn applied_to_proto(a: Applied) -> proto::ApplyReply {
    let (status, message) = a
        .point_error
        .map_or((0, String::new()), |e| (e.status as u32, e.message));
    proto::ApplyReply {
        operation_id: a.operation_id,
        completed: a.completed,
        point_error_status: status,
        point_error: message,
    }
}

fn applied_from_proto(r: proto::ApplyReply) -> Applied {
    Applied {
        operation_id: r.operation_id,
        completed: r.completed,
        point_error: (r.point_error_status != 0)
            .then(|| PeerError::new(r.point_error_status as u16, r.point_error)),
    }
}

/// A MessagePack array of logged operations (what `apply_batch` decodes).
pub fn encode_logged(ops: &[LoggedOp]) -> Vec<u8> {
    let mut body = Vec::new();
    rmp::encode::write_array_len(&mut body, ops.len() as u32)
        .expect("writing to a Vec cannot fail");
    for op in ops {
        body.extend_from_slice(&op.encode());
    }
    body
}

fn read_to_proto(r: &ReadRequest) -> proto::ReadRequest {
    fn typed<T: serde::Serialize>(v: &T) -> Vec<u8> {
        rmp_serde::to_vec_named(v).expect("typed reads encode")
    }
    let (kind, body) = match &r.body {
        ReadBody::Search(s) => (proto::ReadKind::Search, typed(s)),
        ReadBody::Retrieve(r) => (proto::ReadKind::Retrieve, typed(r)),
        ReadBody::Query(q) => (proto::ReadKind::Query, typed(q)),
        ReadBody::Scroll(q) => (proto::ReadKind::Scroll, typed(q)),
        ReadBody::Count(q) => (proto::ReadKind::Count, typed(q)),
    };
    proto::ReadRequest {
        collection: r.collection.clone(),
        applied: r.applied,
        kind: kind as i32,
        body,
        shards: r.scope.as_ref().map_or(vec![], |s| s.shards.clone()),
        scoped: r.scope.is_some(),
        shard_number: r.scope.as_ref().map_or(0, |s| s.shard_number),
    }
}

fn read_from_proto(r: proto::ReadRequest) -> PeerResult<ReadRequest> {
    if r.scoped && r.shard_number == 0 {
        return Err(PeerError::bad_message(
            "read",
            "scope without a shard count",
        ));
    }
    fn typed<T: serde::de::DeserializeOwned>(b: &[u8]) -> PeerResult<T> {
        rmp_serde::from_slice(b).map_err(|e| PeerError::bad_message("read", e))
    }
    use proto::ReadKind as K;
    let body = match K::try_from(r.kind) {
        Ok(K::Search) => ReadBody::Search(Box::new(typed(&r.body)?)),
        Ok(K::Retrieve) => ReadBody::Retrieve(typed(&r.body)?),
        Ok(K::Query) => ReadBody::Query(Box::new(typed(&r.body)?)),
        Ok(K::Scroll) => ReadBody::Scroll(Box::new(typed(&r.body)?)),
        Ok(K::Count) => ReadBody::Count(typed(&r.body)?),
        Ok(
            K::JsonRetrieve
            | K::JsonSearch
            | K::JsonRecommend
            | K::JsonQuery
            | K::JsonScroll
            | K::JsonCount,
        ) => return Err(PeerError::bad_message(
            "read",
            "a JSON read from an earlier build (every peer of a cluster must run the same build)",
        )),
        Err(_) => return Err(PeerError::bad_message("read", format!("kind {}", r.kind))),
    };
    Ok(ReadRequest {
        collection: r.collection,
        applied: r.applied,
        body,
        scope: r.scoped.then_some(Scope {
            shard_number: r.shard_number,
            shards: r.shards,
        }),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use collection::operations::Selector;

    #[test]
    fn errors_keep_their_http_status_across_the_wire() {
        for status in [400u16, 404, 409, 413, 422, 500, 503, 504] {
            let e = PeerError::new(status, format!("m{status}"));
            assert_eq!(from_status(7, &to_status(e.clone())), e);
        }
        // a transport failure (no details) is the peer being unavailable
        let e = from_status(7, &tonic::Status::unavailable("connection refused"));
        assert_eq!(e.status, 503);
        assert!(e.message.contains("peer 7"), "{}", e.message);
    }

    #[test]
    fn apply_requests_round_trip() {
        let req = ApplyRequest {
            collection: "c".into(),
            applied: 42,
            op: UpdateOp::Delete(Selector::Ids(vec![segment::PointId::Num(3)])),
            wait: true,
            meta: OpMeta {
                id: Some(9),
                fill: None,
                shards: Some(vec![]),
                install: None,
            },
        };
        let back = apply_from_proto(apply_to_proto(&req)).unwrap();
        assert_eq!(back.meta, req.meta); // an empty shard list stays a list, not None
        assert_eq!(back.op.encode(), req.op.encode());
        assert_eq!((back.applied, back.wait), (42, true));
        let none = ApplyRequest {
            meta: OpMeta::default(),
            ..req
        };
        assert_eq!(
            apply_from_proto(apply_to_proto(&none)).unwrap().meta,
            none.meta
        );
    }

    #[test]
    fn applied_point_errors_round_trip() {
        let a = Applied {
            operation_id: 5,
            completed: true,
            point_error: Some(PeerError::new(404, "No point with id 3 found")),
        };
        assert_eq!(applied_from_proto(applied_to_proto(a.clone())), a);
        let ok = Applied::default();
        assert_eq!(applied_from_proto(applied_to_proto(ok.clone())), ok);
    }

    #[test]
    fn digest_trees_and_touched_points_round_trip() {
        for level in [TreeLevel::Buckets, TreeLevel::Leaves(vec![0, 7, 255])] {
            let r = TreeRequest {
                collection: "c".into(),
                shard: 2,
                applied: 9,
                level,
            };
            assert_eq!(tree_from_proto(tree_to_proto(r.clone())), r);
        }
        let buckets: Vec<Digest> = (0..segment::digest::BUCKETS as u64)
            .map(|i| Digest {
                count: i,
                sum: u64::MAX - i,
            })
            .collect();
        let quiet = (0..buckets.len()).map(|i| i % 3 == 0).collect();
        let a = TreeAnswer::Buckets {
            digests: buckets,
            quiet,
        };
        assert_eq!(
            tree_answer_from_proto(false, tree_answer_to_proto(a.clone())).unwrap(),
            a
        );
        let uuid = PointId::Uuid(uuid::Uuid::from_u128(7));
        let l = TreeAnswer::Leaves(vec![(PointId::Num(3), 1), (uuid, u64::MAX)]);
        assert_eq!(
            tree_answer_from_proto(true, tree_answer_to_proto(l.clone())).unwrap(),
            l
        );
        // a short bucket list is refused, not read as zeros
        let short = TreeAnswer::Buckets {
            digests: vec![Digest::default(); 3],
            quiet: vec![true; 3],
        };
        assert!(tree_answer_from_proto(false, tree_answer_to_proto(short)).is_err());
        for t in [
            None,
            Some(Touched::default()),
            Some(Touched {
                ids: vec![PointId::Num(1), uuid],
                by_filter: true,
            }),
        ] {
            assert_eq!(touched_from_proto(touched_to_proto(t.clone())).unwrap(), t);
        }
        let unsorted = touched_to_proto(Some(Touched {
            ids: vec![uuid, PointId::Num(1)],
            by_filter: false,
        }));
        assert!(touched_from_proto(unsorted).is_err());
    }

    #[test]
    fn reads_round_trip_and_bad_scopes_are_refused() {
        let req = ReadRequest {
            collection: "c".into(),
            applied: 1,
            body: ReadBody::Count(collection::read::CountRequest::default()),
            scope: Some(Scope {
                shard_number: 4,
                shards: vec![1, 3],
            }),
        };
        assert_eq!(read_from_proto(read_to_proto(&req)).unwrap(), req);
        let mut p = read_to_proto(&req);
        p.shard_number = 0;
        assert_eq!(read_from_proto(p).unwrap_err().status, 400);
        let mut p = read_to_proto(&req);
        p.kind = 99;
        assert_eq!(read_from_proto(p).unwrap_err().status, 400);
        // a JSON read of an earlier build is refused, never guessed at
        let mut p = read_to_proto(&req);
        p.kind = proto::ReadKind::JsonSearch as i32;
        p.body = serde_json::to_vec(&serde_json::json!({"vector": [1.0], "limit": 3})).unwrap();
        assert_eq!(read_from_proto(p).unwrap_err().status, 400);
        // neither is a typed body that does not decode as its kind
        let mut p = read_to_proto(&req);
        p.kind = proto::ReadKind::Query as i32;
        assert_eq!(read_from_proto(p).unwrap_err().status, 400);
    }

    /// A typed search and its typed answer cross the wire unchanged: a 3072-d query with a
    /// filter and a scope, and points with multi-KB payloads, named dense and sparse vectors.
    #[test]
    fn typed_searches_and_their_points_cross_the_wire_unchanged() {
        use collection::query::{RequestParams, WithPayload, WithVector};
        use segment::{SparseVector, Vector};
        let query: Vec<f32> = (0..3072).map(|i| (i as f32 * 0.01).cos()).collect();
        let filter = segment::filter::Filter::from_json(
            &serde_json::json!({"must": [{"key": "lang", "match": {"any": ["en", "de"]}}],
                                "must_not": [{"has_id": [7, "5c56c793-69f3-4fbf-87e6-c4bf54c28c26"]}]}),
        )
        .unwrap();
        let req = ReadRequest {
            collection: "c".into(),
            applied: 9,
            body: ReadBody::Search(Box::new(SearchRequest {
                params: RequestParams {
                    hnsw_ef: Some(128),
                    ..Default::default()
                },
                using: "".into(),
                vector: Vector::Dense(query),
                filter: Some(filter),
                limit: 10,
                offset: 0,
                score_threshold: None,
                with_payload: WithPayload::All,
                with_vector: WithVector::All,
            })),
            scope: Some(Scope {
                shard_number: 3,
                shards: vec![0, 2],
            }),
        };
        assert_eq!(read_from_proto(read_to_proto(&req)).unwrap(), req);

        let payload: segment::Payload = serde_json::from_value(serde_json::json!({
            "text": "x".repeat(4096), "n": u64::MAX, "f": -0.5, "nested": {"a": [1, null, true]}
        }))
        .unwrap();
        let points: Vec<ScoredPoint> = (0..3)
            .map(|i| ScoredPoint {
                id: segment::PointId::Num(i),
                version: 40 + i,
                score: 0.5 - i as f32 * 0.1,
                payload: Some(payload.clone()),
                vector: Some(
                    [
                        ("".to_string(), Vector::Dense(vec![0.25; 1536])),
                        (
                            "s".to_string(),
                            Vector::Sparse(SparseVector {
                                indices: vec![1, 9],
                                values: vec![0.5, 2.0],
                            }),
                        ),
                    ]
                    .into(),
                ),
                order_value: None,
            })
            .collect();
        let wire = rmp_serde::to_vec_named(&points).unwrap();
        let back: Vec<ScoredPoint> = rmp_serde::from_slice(&wire).unwrap();
        assert_eq!(back, points);
    }

    /// `n` logged client writes (deletes of one point each, op id = point id).
    pub(crate) fn logged_deletes(n: u64) -> Vec<LoggedOp> {
        (0..n)
            .map(|i| LoggedOp {
                op: UpdateOp::Delete(Selector::Ids(vec![segment::PointId::Num(i)])),
                meta: OpMeta {
                    id: Some(i),
                    ..Default::default()
                },
            })
            .collect()
    }

    #[test]
    fn logged_batches_decode_as_a_list() {
        let ops = logged_deletes(3);
        let back: Vec<LoggedOp> = rmp_serde::from_slice(&encode_logged(&ops)).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back[2].meta.id, Some(2));
    }
}
