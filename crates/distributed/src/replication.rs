//! Replica maintenance on this peer (cluster mode): shard transfers and write forwarding.
//!
//! A transfer fills the target's replica of one shard from an Active source replica
//! (`stream_records`). The source does all the work. Everything it sends goes through the
//! transfer's ordered outbox (`crate::outbox`), whose order is fixed under the
//! collection's order lock, a short section that no network call, fsync or consensus
//! round ever runs in:
//!
//! 1. queue the clearing of the target's stale points of the shard, and start forwarding
//!    every write this peer applies for that shard (each write is acked only once its
//!    forward was);
//! 2. queue the shard's current points in id order, one batch per lock hold, each once the
//!    previous one was applied;
//! 3. at a cut (a lock hold), take this peer's digest of the shard and queue a request for
//!    the target's: equal digests prove the copies identical at that cut (the verified
//!    switch); then propose `FinishTransfer` (the target becomes Active) and keep
//!    forwarding for a grace period, for writes that coordinators routed before they saw
//!    the switch.
//!
//! Because local applies and batch reads queue their messages under the same lock, the
//! target sees the source's history in the source's order: every point it holds was copied
//! from the source's state and every later write reached it afterwards (filter-based
//! writes included: they are forwarded with a shard scope, so they only touch the shard
//! being filled).
//!
//! The supervisor loop (every 500 ms) starts the streams this peer is the source of (also
//! after a restart: a stream simply starts over), and asks for recovery of this peer's Dead
//! replicas from an Active replica. Coordinators never write to Partial or Dead replicas.

use crate::coordinator::{self as dist, Placement};
use crate::error::DistError;
use crate::outbox::{outcome, Outbox, Outcome};
use crate::Ctx;
use cluster::state::{ClusterOp, ReplicaState, Transfer, TransferKind, TransferMethod};
use collection::operations::{LoggedOp, OpMeta, UpdateMode, UpdateOp};
use parking_lot::Mutex;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes per WAL-delta message (encoded operations), at most (one larger operation goes
/// alone).
const DELTA_BATCH_BYTES: usize = 4 << 20;
/// Logged operations per WAL-delta batch.
const DELTA_BATCH_OPS: usize = 512;
/// Finished transfers remembered for `GET /cluster/transfers`.
const HISTORY: usize = 100;
/// How long a finished transfer keeps forwarding (writes routed before the switch).
const FORWARD_GRACE: Duration = Duration::from_secs(30);
/// Timeout of metadata proposals made by replica maintenance.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Minimum time between two recovery requests for the same replica.
const RECOVERY_RETRY: Duration = Duration::from_secs(2);
/// The Raft leader checks every peer holding an Active replica this often...
const HEALTH_EVERY: Duration = Duration::from_secs(1);
/// (a status request, `crate::peer::STATUS_TIMEOUT`)...
/// ...and marks its replicas Dead after this many consecutive failures (a killed or
/// paused peer stops receiving reads within ~4-12 s, instead of each read waiting for it).
const HEALTH_FAILURES: u32 = 4;

#[derive(Clone)]
struct Forward {
    transfer: Transfer,
    shard_number: u32,
    /// `None` while the transfer runs; the end of the grace period after it finished.
    until: Option<Instant>,
    /// Where everything sent to the target goes, in order.
    outbox: Outbox,
}

/// Times a transfer's switch tries to reuse a digest taken outside the order lock before
/// it takes one under the lock (writes of the collection wait meanwhile).
const CUT_ATTEMPTS: usize = 3;

/// The leader's view of one peer.
#[derive(Clone, Copy, Debug)]
struct Health {
    /// Consecutive failed checks.
    failures: u32,
    last_check: Instant,
    running: bool,
    /// Since when the checks fail (`None` while it answers).
    down_since: Option<Instant>,
}

#[derive(Default)]
pub struct Replication {
    locks: NamedLocks,
    forwards: Mutex<HashMap<String, Vec<Forward>>>,
    running: Mutex<HashSet<(String, u32)>>,
    progress: Mutex<HashMap<(String, u32), u64>>,
    last_recovery: Mutex<HashMap<(String, u32), Instant>>,
    history: Mutex<std::collections::VecDeque<serde_json::Value>>,
    order_locks: NamedLocks,
    /// Leader's health checks, per peer.
    health: Mutex<HashMap<u64, Health>>,
    /// Periodic comparison of replicas (`crate::anti_entropy`).
    pub anti_entropy: crate::anti_entropy::AntiEntropy,
    /// Replicas (collection, shard, peer) that missed a write and are still to be marked
    /// Dead (consensus was unavailable when the write failed).
    pending_dead: Mutex<HashSet<(String, u32, u64)>>,
}

impl Replication {
    /// The lock that orders a collection's local applies with the messages its transfers
    /// queue. Held only while a write is appended and applied in memory and its forwards
    /// queued (or a batch is read and queued, or a digest taken): never across a network
    /// call or an fsync. Async, so waiting writes park as tasks, not as blocking threads;
    /// an owned guard is moved into the blocking section and dropped there.
    pub fn lock_for(&self, collection: &str) -> OrderLock {
        named_lock(&self.locks, collection)
    }

    /// The lock a shard leader holds while coordinating one `ordering` medium/strong write.
    pub fn order_lock_for(&self, collection: &str) -> Arc<tokio::sync::Mutex<()>> {
        named_lock(&self.order_locks, collection)
    }

    /// Points sent so far by a transfer this peer is streaming.
    pub fn progress(&self, collection: &str, shard: u32) -> Option<u64> {
        self.progress
            .lock()
            .get(&(collection.to_string(), shard))
            .copied()
    }

    /// Transfers this peer finished as their source, oldest first (at most `HISTORY`).
    pub fn history(&self) -> Vec<serde_json::Value> {
        self.history.lock().iter().cloned().collect()
    }

    fn record(&self, v: serde_json::Value) {
        let mut h = self.history.lock();
        if h.len() >= HISTORY {
            h.pop_front();
        }
        h.push_back(v);
    }

    fn forwards_of(&self, collection: &str) -> Vec<Forward> {
        let mut f = self.forwards.lock();
        let Some(list) = f.get_mut(collection) else {
            return vec![];
        };
        let now = Instant::now();
        list.retain(|x| x.until.is_none_or(|u| u > now));
        list.clone()
    }

    fn outbox_of(&self, collection: &str, transfer: &Transfer) -> Option<Outbox> {
        self.forwards_of(collection)
            .into_iter()
            .find(|f| &f.transfer == transfer)
            .map(|f| f.outbox)
    }

    /// Keep forwarding a finished transfer's writes until `until`.
    fn extend_forward(&self, collection: &str, transfer: &Transfer, until: Instant) {
        if let Some(list) = self.forwards.lock().get_mut(collection) {
            for f in list.iter_mut().filter(|f| &f.transfer == transfer) {
                f.until = Some(until);
            }
        }
    }

    fn set_forward(&self, collection: &str, fw: Option<Forward>, transfer: &Transfer) {
        let mut f = self.forwards.lock();
        let list = f.entry(collection.to_string()).or_default();
        list.retain(|x| &x.transfer != transfer);
        if let Some(fw) = fw {
            list.push(fw);
        }
    }
}

/// The async lock of `collection` in a table of per-collection locks (created on first use).
fn named_lock(table: &NamedLocks, collection: &str) -> Arc<tokio::sync::Mutex<()>> {
    table
        .lock()
        .entry(collection.to_string())
        .or_default()
        .clone()
}

type NamedLocks = Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;

/// See [`Replication::lock_for`].
pub type OrderLock = Arc<tokio::sync::Mutex<()>>;

/// Writes queued for the replicas this peer is filling; see [`queue_forwards`].
#[must_use = "a write is acked only once its forwards were"]
pub struct Forwarded(Vec<(Transfer, Outcome<()>)>);

/// Queue a locally applied write for the replicas this peer is filling. Call it in the
/// same hold of the collection's order lock as the local apply, then await the result
/// with [`forwarded`] (without the lock).
pub fn queue_forwards(st: &Ctx, collection: &str, op: &UpdateOp, op_id: Option<u64>) -> Forwarded {
    let mut out = Vec::new();
    let forwards = st.repl.forwards_of(collection);
    if forwards.is_empty() {
        return Forwarded(out);
    }
    let stale = stale_shards(st, collection);
    for fw in forwards {
        // this peer's own replica is Dead or being refilled: what it applies now comes
        // from its Active peers, so it has nothing to pass on (forwarding it back to the
        // target of a finished transfer, which may be the very source refilling it, made
        // two peers wait on each other until the request deadline)
        if stale.contains(&fw.transfer.shard) {
            continue;
        }
        let Some(part) = op.scoped(fw.shard_number, &[fw.transfer.shard]) else {
            continue;
        };
        let meta = OpMeta {
            id: op_id,
            fill: None,
            shards: Some(vec![fw.transfer.shard]),
            install: None, // single-node shard installs only
        };
        out.push((fw.transfer.clone(), fw.outbox.apply(part, meta)));
    }
    Forwarded(out)
}

/// The shards whose replica on this peer exists but is not Active (Dead or Partial).
fn stale_shards(st: &Ctx, collection: &str) -> Vec<u32> {
    with_meta(st, collection, |m, me| {
        (0..m.shards.len() as u32)
            .filter(|&s| {
                matches!(
                    m.replica_state(s, me),
                    Some(ReplicaState::Dead | ReplicaState::Partial)
                )
            })
            .collect()
    })
    .unwrap_or_default()
}

/// Wait until the queued forwards were applied. A target that could not take one ends its
/// transfer (the write itself stands: the target was not a replica yet).
pub async fn forwarded(st: &Ctx, collection: &str, f: Forwarded) {
    for (t, rx) in f.0 {
        if let Err(e) = outcome(rx).await {
            let Some(fw) = st
                .repl
                .forwards_of(collection)
                .into_iter()
                .find(|f| f.transfer == t)
            else {
                continue; // already ended (by another write's failed forward)
            };
            let running = fw.until.is_none();
            tracing::warn!(collection, shard = t.shard, to = t.to, error = %e, "forward failed: aborting transfer");
            st.repl.set_forward(collection, None, &t);
            if running {
                abort(st, collection, &t).await;
            }
        }
    }
}

fn outbox_to(st: &Ctx, collection: &str, t: &Transfer) -> Outbox {
    Outbox::start(crate::outbox::Target {
        ctx: st.clone(),
        peer: t.to,
        collection: collection.to_string(),
        shard: t.shard,
    })
}

pub(crate) async fn propose(st: &Ctx, op: ClusterOp) -> Result<(), String> {
    let node = st.cluster.as_ref().ok_or("not in cluster mode")?;
    node.propose(op, PROPOSE_TIMEOUT)
        .await
        .map_err(|e| e.to_string())
}

async fn abort(st: &Ctx, collection: &str, t: &Transfer) {
    let op = ClusterOp::AbortTransfer {
        collection: collection.to_string(),
        transfer: t.clone(),
    };
    if let Err(e) = propose(st, op).await {
        tracing::warn!(collection, shard = t.shard, error = %e, "could not abort transfer");
    }
}

/// Start the background loop that runs this peer's transfers and recoveries.
pub fn spawn_supervisor(st: Ctx) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            supervise(&st).await;
        }
    });
}

/// Leader only: check every peer that holds an Active replica; after `HEALTH_FAILURES`
/// consecutive failures mark its Active replicas Dead through consensus (the state machine
/// never lets a shard lose its last Active replica). A returning peer then asks for
/// recovery of its Dead replicas like after any failed write.
fn check_health(st: &Ctx, node: &Arc<cluster::node::ClusterNode>) {
    if !node.is_leader() {
        st.repl.health.lock().clear();
        return;
    }
    // every member, not only holders of Active replicas: self-heal needs to know for how
    // long a peer whose replicas are all Dead has been gone
    for peer in node.peers().into_keys().filter(|p| *p != node.id) {
        let Ok(service) = dist::peer(st, peer) else {
            continue;
        };
        {
            let mut h = st.repl.health.lock();
            let e = h.entry(peer).or_insert(Health {
                failures: 0,
                last_check: Instant::now() - HEALTH_EVERY,
                running: false,
                down_since: None,
            });
            if e.running || e.last_check.elapsed() < HEALTH_EVERY {
                continue;
            }
            e.last_check = Instant::now();
            e.running = true;
        }
        let (st, node) = (st.clone(), node.clone());
        tokio::spawn(async move {
            let ok = matches!(service.status().await, Ok(s) if s.ready);
            let failures = {
                let mut h = st.repl.health.lock();
                let Some(e) = h.get_mut(&peer) else { return };
                e.running = false;
                if ok {
                    e.failures = 0;
                    e.down_since = None;
                } else {
                    e.failures += 1;
                    e.down_since.get_or_insert_with(Instant::now);
                }
                e.failures
            };
            if failures < HEALTH_FAILURES {
                return;
            }
            let state = node.state();
            for (name, meta) in &state.state.collections {
                for shard in 0..meta.shards.len() as u32 {
                    if meta.replica_state(shard, peer) != Some(ReplicaState::Active)
                        || meta.active_replicas(shard).len() < 2
                    {
                        continue;
                    }
                    let op = ClusterOp::SetReplicaState {
                        collection: name.clone(),
                        shard,
                        peer,
                        state: ReplicaState::Dead,
                        expect: Some(ReplicaState::Active),
                    };
                    match propose(&st, op).await {
                        Ok(()) => {
                            tracing::warn!(collection = %name, shard, peer, failures, "peer failed its health checks: replica marked Dead")
                        }
                        Err(e) => {
                            tracing::debug!(collection = %name, shard, peer, error = %e, "could not mark replica Dead")
                        }
                    }
                }
            }
        });
    }
}

async fn supervise(st: &Ctx) {
    let Some(node) = st.cluster.clone() else {
        return;
    };
    check_health(st, &node);
    self_heal(st, &node);
    crate::anti_entropy::round(st, &node);
    if !st.lost.lock().is_empty() {
        mark_lost_dead(st, &node).await;
    }
    if !st.repl.pending_dead.lock().is_empty() {
        retry_pending_dead(st).await;
    }
    let me = node.id;
    let state = node.state();
    for (name, meta) in &state.state.collections {
        for t in &meta.transfers {
            if t.from != me {
                continue;
            }
            let key = (name.clone(), t.shard);
            if !st.repl.running.lock().insert(key.clone()) {
                continue;
            }
            let (st2, name2, t2) = (st.clone(), name.clone(), t.clone());
            let shard_number = meta.shards.len() as u32;
            tokio::spawn(async move {
                let r = stream(&st2, &name2, &t2, shard_number).await;
                if let Err(e) = r {
                    tracing::warn!(collection = %name2, shard = t2.shard, to = t2.to, error = %e, "transfer failed");
                    st2.repl.set_forward(&name2, None, &t2);
                    abort(&st2, &name2, &t2).await;
                }
                st2.repl.running.lock().remove(&key);
                st2.repl.progress.lock().remove(&key);
            });
        }
        for shard in 0..meta.shards.len() as u32 {
            if meta.replica_state(shard, me) != Some(ReplicaState::Dead)
                || meta.transfer_of(shard).is_some()
            {
                continue;
            }
            let Some(from) = crate::recovery::source(meta, shard, me) else {
                continue;
            };
            let key = (name.clone(), shard);
            {
                let mut last = st.repl.last_recovery.lock();
                if last.get(&key).is_some_and(|t| t.elapsed() < RECOVERY_RETRY) {
                    continue;
                }
                last.insert(key, Instant::now());
            }
            let op = recovery(name, shard, from, me);
            let st2 = st.clone();
            let name2 = name.clone();
            tokio::spawn(async move {
                if let Err(e) = propose(&st2, op).await {
                    tracing::debug!(collection = %name2, shard, error = %e, "recovery request refused");
                }
            });
        }
    }
}

/// `POST /cluster/recover`: resync every replica this peer holds from another Active
/// replica of its shard (WAL delta, verified by digests, streaming records when the log
/// cannot tell), e.g. after its data was lost or is suspect. Shards in a transfer, and
/// shards with no other Active replica, are left alone. Returns how many were requested.
pub async fn resync_all(st: &Ctx) -> Result<usize, DistError> {
    let node = st
        .cluster
        .clone()
        .ok_or_else(|| DistError::bad_request("Wrong input: Distributed mode is not enabled"))?;
    if node.leader_id().is_none() {
        return Err(DistError::unavailable(
            "Service unavailable: no Raft leader is available; try again later",
        ));
    }
    let me = node.id;
    let state = node.state();
    let mut requested = 0;
    for (name, meta) in &state.state.collections {
        for shard in 0..meta.shards.len() as u32 {
            if meta.replica_state(shard, me).is_none() || meta.transfer_of(shard).is_some() {
                continue;
            }
            let Some(from) = crate::recovery::source(meta, shard, me) else {
                continue;
            };
            let op = recovery(name, shard, from, me);
            match propose(st, op).await {
                Ok(()) => requested += 1,
                Err(e) => {
                    tracing::warn!(collection = %name, shard, error = %e, "resync request refused")
                }
            }
        }
    }
    tracing::info!(requested, "resync of this peer's replicas requested");
    Ok(requested)
}

/// Replicas whose local data was found missing at start-up (`cluster_sink::Lost`): mark
/// them Dead through consensus, so no read is routed to them and they recover like any
/// Dead replica. Until then this peer refuses reads of them (`service`) and is not ready.
/// A shard whose only Active replica lost its data cannot be recovered: that is logged and
/// the replica left Active (empty).
async fn mark_lost_dead(st: &Ctx, node: &Arc<cluster::node::ClusterNode>) {
    let lost: Vec<String> = st.lost.lock().iter().cloned().collect();
    let state = node.state();
    for name in lost {
        let Some(meta) = state.state.collections.get(&name) else {
            st.lost.lock().remove(&name);
            continue;
        };
        let me = node.id;
        let active: Vec<u32> = (0..meta.shards.len() as u32)
            .filter(|&s| meta.replica_state(s, me) == Some(ReplicaState::Active))
            .collect();
        let (recoverable, alone): (Vec<u32>, Vec<u32>) = active
            .into_iter()
            .partition(|&s| meta.active_replicas(s).len() > 1);
        if recoverable.is_empty() {
            if !alone.is_empty() {
                tracing::error!(collection = %name, shards = ?alone, "local data lost and no other Active replica holds these shards: they stay Active, empty");
            }
            st.lost.lock().remove(&name);
            continue;
        }
        let op = ClusterOp::MarkDead {
            collection: name.clone(),
            replicas: recoverable.iter().map(|&s| (s, me)).collect(),
        };
        match propose(st, op).await {
            Ok(()) => {
                tracing::warn!(collection = %name, shards = ?recoverable, "replicas that lost their data marked Dead: recovering")
            }
            Err(e) => {
                tracing::debug!(collection = %name, error = %e, "marking lost replicas Dead deferred")
            }
        }
    }
}

/// Leader only: run the self-heal planner (`crate::heal`) over the agreed state and the
/// health checks, and propose its decisions (each logged with its reason). A decision
/// proposed twice (the first still in flight) is refused by the state machine.
fn self_heal(st: &Ctx, node: &Arc<cluster::node::ClusterNode>) {
    if !st.heal.enabled || !node.is_leader() {
        return;
    }
    let members: BTreeSet<u64> = node.peers().into_keys().collect();
    let down_for: BTreeMap<u64, Duration> = st
        .repl
        .health
        .lock()
        .iter()
        .filter(|(p, _)| members.contains(p))
        .filter_map(|(p, h)| h.down_since.map(|d| (*p, d.elapsed())))
        .collect();
    let state = node.state();
    for action in crate::heal::plan(&state.state, &members, &down_for, &st.heal) {
        let op = match &action {
            crate::heal::Action::Replicate {
                collection,
                shard,
                from,
                to,
                reason,
            } => {
                tracing::warn!(collection = %collection, shard, from, to, reason = %reason, "self-heal: new replica");
                ClusterOp::StartTransfer {
                    collection: collection.clone(),
                    transfer: Transfer {
                        shard: *shard,
                        from: *from,
                        to: *to,
                        kind: TransferKind::Heal,
                        method: TransferMethod::StreamRecords,
                    },
                }
            }
            crate::heal::Action::Drop {
                collection,
                shard,
                peer,
                reason,
            } => {
                tracing::info!(collection = %collection, shard, peer, reason = %reason, "self-heal: dropping the added replica");
                ClusterOp::DropReplica {
                    collection: collection.clone(),
                    shard: *shard,
                    peer: *peer,
                }
            }
        };
        let st = st.clone();
        tokio::spawn(async move {
            if let Err(e) = propose(&st, op).await {
                tracing::debug!(error = %e, "self-heal decision not applied");
            }
        });
    }
}

/// The proposal that refills (or resyncs) `to`'s replica of `shard` from `from`: WAL
/// delta first, records when the log cannot tell, switched only on equal digests.
pub fn recovery(collection: &str, shard: u32, from: u64, to: u64) -> ClusterOp {
    ClusterOp::StartTransfer {
        collection: collection.to_string(),
        transfer: Transfer {
            shard,
            from,
            to,
            kind: TransferKind::Recovery,
            method: TransferMethod::WalDelta,
        },
    }
}

/// `f` over the agreed metadata of `collection` and this peer's id; `None` outside cluster
/// mode or when the collection is not in the agreed state.
fn with_meta<T>(
    st: &Ctx,
    collection: &str,
    f: impl FnOnce(&cluster::state::CollectionMeta, u64) -> T,
) -> Option<T> {
    let node = st.cluster.as_ref()?;
    let state = node.state();
    state
        .state
        .collections
        .get(collection)
        .map(|m| f(m, node.id))
}

/// Whether `t` is still an ongoing transfer of the agreed state.
fn still_running(st: &Ctx, collection: &str, t: &Transfer) -> bool {
    with_meta(st, collection, |m, _| m.transfers.contains(t)).unwrap_or(false)
}

/// Run one transfer as its source (see the module docs).
async fn stream(st: &Ctx, collection: &str, t: &Transfer, shard_number: u32) -> Result<(), String> {
    let started = Instant::now();
    let order = st.repl.lock_for(collection);
    let key = (collection.to_string(), t.shard);
    st.repl.progress.lock().insert(key.clone(), 0);
    if t.method == TransferMethod::WalDelta {
        match wal_delta(st, collection, t, shard_number).await? {
            Some(ops) => {
                match finish(st, collection, t, shard_number, "wal_delta", ops, started).await {
                    // the target differs in a way the log cannot repair (e.g. a write it
                    // applied that the source never did): copy the whole shard instead
                    Err(e) if e.starts_with(DIGEST_MISMATCH) => tracing::warn!(
                        collection,
                        shard = t.shard,
                        to = t.to,
                        error = %e,
                        "WAL delta left the replicas different: streaming records"
                    ),
                    r => return r,
                }
            }
            None => tracing::info!(
                collection,
                shard = t.shard,
                to = t.to,
                "WAL delta not possible: streaming records"
            ),
        }
    }
    let c = st.storage.get(collection).map_err(|e| e.to_string())?;
    let filter = segment::filter::shard_filter(shard_number, &[t.shard]);
    let clear = UpdateOp::delete_shards(shard_number, &[t.shard]);
    let fill = OpMeta {
        fill: Some(t.shard),
        ..Default::default()
    };
    let outbox = outbox_to(st, collection, t);
    let cleared = {
        let _g = order.lock().await;
        if !still_running(st, collection, t) {
            return Ok(());
        }
        let cleared = outbox.apply(clear, fill.clone());
        st.repl.set_forward(
            collection,
            Some(Forward {
                transfer: t.clone(),
                shard_number,
                until: None,
                outbox: outbox.clone(),
            }),
            t,
        );
        cleared
    };
    outcome(cleared)
        .await
        .map_err(|e| format!("clearing the target: {e}"))?;
    let mut after: Option<segment::PointId> = None;
    loop {
        let (sent, last, n) = {
            let _g = order.lock().await;
            if !still_running(st, collection, t) {
                st.repl.set_forward(collection, None, t);
                return Ok(());
            }
            let points = collection::operations::read_batch(&c.read(), after, &filter);
            let Some(last) = points.last().map(|p| p.id) else {
                break;
            };
            let n = points.len() as u64;
            let op = UpdateOp::Upsert {
                points,
                update_filter: None,
                mode: UpdateMode::Upsert,
            };
            let dropped = after.is_none() && fail_point("transfer_drop_batch");
            ((!dropped).then(|| outbox.apply(op, fill.clone())), last, n)
        };
        if let Some(sent) = sent {
            outcome(sent)
                .await
                .map_err(|e| format!("sending a batch: {e}"))?;
        }
        after = Some(last);
        *st.repl.progress.lock().entry(key.clone()).or_default() += n;
    }
    let sent = st.repl.progress(collection, t.shard).unwrap_or(0);
    finish(
        st,
        collection,
        t,
        shard_number,
        "stream_records",
        sent,
        started,
    )
    .await
}

/// WAL delta: ask the target which client writes it logged; then, in one hold of the order
/// lock (so no local write interleaves), queue the ones this peer's log has after them,
/// scoped to the shard, and start forwarding. `None` if the log cannot tell (see
/// `Collection::ops_missing_from`); the caller then streams records instead.
async fn wal_delta(
    st: &Ctx,
    collection: &str,
    t: &Transfer,
    shard_number: u32,
) -> Result<Option<u64>, String> {
    if !still_running(st, collection, t) {
        return Ok(None);
    }
    let target = dist::peer(st, t.to).map_err(|e| e.message())?;
    // nothing else writes to the target's replica (it is not Active), so this stays true
    let known: HashSet<u64> = match target.op_ids(collection.to_string(), t.shard).await {
        Ok(ids) => ids.into_iter().collect(),
        Err(e) => return Err(format!("asking the target for its log: {}", e.message)),
    };
    let c = st.storage.get(collection).map_err(|e| e.to_string())?;
    let outbox = outbox_to(st, collection, t);
    let (st2, name, t2) = (st.clone(), collection.to_string(), t.clone());
    let guard = st.repl.lock_for(collection).lock_owned().await;
    // the log is read from disk: off the async workers
    let queued = tokio::task::spawn_blocking(move || {
        let _g = guard;
        if !still_running(&st2, &name, &t2) {
            return Ok(None);
        }
        let Some(missing) = c.ops_missing_from(&known, t2.shard)? else {
            return Ok(None);
        };
        let ops: Vec<LoggedOp> = missing
            .into_iter()
            .filter_map(|(meta, op)| {
                op.scoped(shard_number, &[t2.shard]).map(|op| LoggedOp {
                    op,
                    meta: OpMeta {
                        shards: Some(vec![t2.shard]),
                        ..meta
                    },
                })
            })
            .collect();
        let sent: Vec<(u64, Outcome<()>)> = delta_batches(&ops)
            .into_iter()
            .map(|range| (range.len() as u64, outbox.batch(ops[range].to_vec())))
            .collect();
        st2.repl.set_forward(
            &name,
            Some(Forward {
                transfer: t2.clone(),
                shard_number,
                until: None,
                outbox,
            }),
            &t2,
        );
        Ok::<_, collection::CollectionError>(Some((ops.len() as u64, sent)))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    let Some((total, sent)) = queued else {
        return Ok(None);
    };
    for (n, rx) in sent {
        outcome(rx)
            .await
            .map_err(|e| format!("sending a delta batch: {e}"))?;
        let key = (collection.to_string(), t.shard);
        *st.repl.progress.lock().entry(key).or_default() += n;
    }
    Ok(Some(total))
}

/// Compare the content digest of the shard on this peer (the source) and on the target at
/// one cut of the transfer's message order; a mismatch fails the transfer (it is aborted
/// and, for a recovery, requested again).
///
/// The cut is a hold of the order lock: this peer's digest at that moment, and a digest
/// request queued behind every message sent so far. A digest taken just before (cached
/// per content version) is reused when no write came in between, so the lock is held for
/// the digest itself only while writes keep coming, after `CUT_ATTEMPTS` tries.
async fn verify_digests(
    st: &Ctx,
    collection: &str,
    t: &Transfer,
    shard_number: u32,
) -> Result<(), String> {
    let c = st.storage.get(collection).map_err(|e| e.to_string())?;
    let outbox = st
        .repl
        .outbox_of(collection, t)
        .ok_or("the transfer stopped forwarding")?;
    for attempt in 0..=CUT_ATTEMPTS {
        let version = c.content_version();
        let taken = crate::anti_entropy::local_digest(st, collection, t.shard, shard_number)
            .await
            .map_err(|e| e.message())?;
        let (c2, outbox2, shard) = (c.clone(), outbox.clone(), t.shard);
        let guard = st.repl.lock_for(collection).lock_owned().await;
        let last = attempt == CUT_ATTEMPTS;
        let cut = tokio::task::spawn_blocking(move || {
            let _g = guard;
            let mine = if c2.content_version() == version {
                taken
            } else if last {
                segment::digest::shard_digest(&c2.read(), shard_number, shard)
            } else {
                return None;
            };
            Some((mine, outbox2.digest()))
        })
        .await
        .map_err(|e| e.to_string())?;
        let Some((mine, theirs)) = cut else { continue };
        let theirs = outcome(theirs).await?;
        if theirs != mine {
            return Err(format!(
                "{DIGEST_MISMATCH} after the transfer: source holds {} points ({:016x}), target {} ({:016x})",
                mine.count, mine.sum, theirs.count, theirs.sum
            ));
        }
        return Ok(());
    }
    unreachable!("the last attempt always takes its digest under the lock")
}

/// Start of the error of a transfer whose replicas differ at the switch.
const DIGEST_MISMATCH: &str = "digest mismatch";

/// Test hook: with `SEXTANT_FAILPOINT=transfer_drop_batch` a record stream silently skips
/// its first batch (as a transport that loses a message without an error would), so a
/// test can show that such a transfer never switches its target to Active.
fn fail_point(name: &str) -> bool {
    std::env::var("SEXTANT_FAILPOINT").is_ok_and(|v| v.split(',').any(|f| f == name))
}

/// WAL-delta messages: consecutive runs of `ops`, at most `DELTA_BATCH_OPS` operations and
/// `DELTA_BATCH_BYTES` of encoded operations each (an operation larger than that goes
/// alone).
fn delta_batches(ops: &[LoggedOp]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0usize);
    for (i, op) in ops.iter().enumerate() {
        let size = op.encode().len();
        if i > start && (bytes + size > DELTA_BATCH_BYTES || i - start == DELTA_BATCH_OPS) {
            out.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < ops.len() {
        out.push(start..ops.len());
    }
    out
}

/// Switch the target to Active through consensus and keep forwarding for the grace period.
async fn finish(
    st: &Ctx,
    collection: &str,
    t: &Transfer,
    shard_number: u32,
    method: &str,
    sent: u64,
    started: Instant,
) -> Result<(), String> {
    // Verified switch: both replicas of the shard held the same content at one cut, and
    // every later write reaches the target through the same ordered outbox.
    verify_digests(st, collection, t, shard_number).await?;
    propose(
        st,
        ClusterOp::FinishTransfer {
            collection: collection.to_string(),
            transfer: t.clone(),
        },
    )
    .await?;
    st.repl
        .extend_forward(collection, t, Instant::now() + FORWARD_GRACE);
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        collection,
        shard = t.shard,
        from = t.from,
        to = t.to,
        method,
        sent,
        secs,
        "transfer finished"
    );
    st.repl.record(json!({
        "collection": collection, "shard_id": t.shard, "from": t.from, "to": t.to,
        "requested_method": t.method.name(), "method": method,
        "sent": sent, "secs": secs,
    }));
    Ok(())
}

/// Mark replicas Dead after they failed a write (through consensus, in one step, so no
/// reads or writes go to them and none is recovered from another that missed the same
/// write). Returns the (shard, peer) pairs that are still Active afterwards: replicas that
/// missed the write and could not be marked (no Raft quorum, or every Active replica of the
/// shard failed). Those are remembered and marked by the supervisor once consensus is back.
pub async fn mark_dead(st: &Ctx, p: &Placement, failed: &[(u32, u64)]) -> Vec<(u32, u64)> {
    let op = ClusterOp::MarkDead {
        collection: p.name.clone(),
        replicas: failed.to_vec(),
    };
    if let Err(e) = propose(st, op).await {
        tracing::warn!(collection = %p.name, ?failed, error = %e, "could not mark replicas Dead");
    }
    let unmarked = still_active(st, &p.name, failed);
    if !unmarked.is_empty() {
        let mut pending = st.repl.pending_dead.lock();
        for &(shard, peer) in &unmarked {
            pending.insert((p.name.clone(), shard, peer));
        }
    }
    unmarked
}

/// Whether, for some shard, every replica still Active is among `failed` (then marking
/// them Dead is refused: a shard keeps its last Active replica).
pub fn all_active_failed(st: &Ctx, collection: &str, failed: &[(u32, u64)]) -> bool {
    with_meta(st, collection, |m, _| {
        failed.iter().any(|&(shard, _)| {
            let active = m.active_replicas(shard);
            !active.is_empty() && active.iter().all(|p| failed.contains(&(shard, *p)))
        })
    })
    .unwrap_or(false)
}

fn still_active(st: &Ctx, collection: &str, replicas: &[(u32, u64)]) -> Vec<(u32, u64)> {
    with_meta(st, collection, |m, _| {
        replicas
            .iter()
            .copied()
            .filter(|&(shard, peer)| m.replica_state(shard, peer) == Some(ReplicaState::Active))
            .collect()
    })
    .unwrap_or_default()
}

/// Retry marking the replicas that missed a write while consensus was unavailable; forget
/// those that are no longer Active (marked, dropped, or their collection deleted).
async fn retry_pending_dead(st: &Ctx) {
    let pending: Vec<(String, u32, u64)> = st.repl.pending_dead.lock().iter().cloned().collect();
    let mut by_collection: HashMap<String, Vec<(u32, u64)>> = HashMap::new();
    for (c, shard, peer) in pending {
        by_collection.entry(c).or_default().push((shard, peer));
    }
    for (collection, replicas) in by_collection {
        let active = still_active(st, &collection, &replicas);
        if !active.is_empty() {
            let op = ClusterOp::MarkDead {
                collection: collection.clone(),
                replicas: active,
            };
            if let Err(e) = propose(st, op).await {
                tracing::debug!(collection, error = %e, "pending Dead-marking still refused");
            }
        }
        let left = still_active(st, &collection, &replicas);
        let mut pending = st.repl.pending_dead.lock();
        for (shard, peer) in replicas {
            if !left.contains(&(shard, peer)) {
                pending.remove(&(collection.clone(), shard, peer));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use collection::operations::Selector;

    #[test]
    fn delta_batches_cut_by_count_and_bytes() {
        let small = crate::peer::tests::logged_deletes(1200);
        assert_eq!(delta_batches(&small), vec![0..512, 512..1024, 1024..1200]);
        // operations of 0.4 of the limit: two fit in a message; one over it goes alone
        let big = |n: usize| LoggedOp {
            op: UpdateOp::Delete(Selector::Ids(
                (0..n as u64)
                    .map(|i| segment::PointId::Num((1 << 40) + i))
                    .collect(),
            )),
            meta: OpMeta::default(),
        };
        let per_id = big(10_000).encode().len() as f64 / 10_000.0;
        let ids = |share: f64| (share * DELTA_BATCH_BYTES as f64 / per_id) as usize;
        let ops = vec![big(ids(0.4)), big(ids(0.4)), big(ids(0.4)), big(ids(1.2))];
        let sizes: Vec<usize> = ops.iter().map(|o| o.encode().len()).collect();
        assert!(sizes[0] > DELTA_BATCH_BYTES / 3 && sizes[0] < DELTA_BATCH_BYTES / 2);
        assert!(sizes[3] > DELTA_BATCH_BYTES);
        assert_eq!(delta_batches(&ops), vec![0..2, 2..3, 3..4]);
    }
}
