//! Replica maintenance on this peer (cluster mode): shard transfers and write forwarding.
//!
//! A transfer fills the target's replica of one shard from an Active source replica
//! (`stream_records`). The source does all the work, under its per-collection write lock:
//!
//! 1. clear the target's stale points of the shard, and start forwarding every write this
//!    peer applies for that shard to the target (synchronously, before the write is acked);
//! 2. stream the shard's current points in id order, one batch per lock acquisition;
//! 3. propose `FinishTransfer` (the target becomes Active) and keep forwarding for a grace
//!    period, for writes that coordinators routed before they saw the switch.
//!
//! Because local applies, forwards and batch reads take the same lock, the target sees the
//! source's history in the source's order: every point it holds was copied from the
//! source's current state and every later write reached it afterwards, so at the switch
//! both copies are identical (filter-based writes included: they are forwarded with a
//! shard scope, so they only touch the shard being filled).
//!
//! The supervisor loop (every 500 ms) starts the streams this peer is the source of (also
//! after a restart: a stream simply starts over), and asks for recovery of this peer's Dead
//! replicas from an Active replica. Coordinators never write to Partial or Dead replicas.

use crate::dist::{self, Placement};
use crate::envelope::ApiError;
use crate::AppState;
use cluster::state::{ClusterOp, ReplicaState, Transfer, TransferKind};
use collection::operations::{to_stored, PointInsert, UpdateMode, UpdateOp};
use parking_lot::Mutex;
use segment::filter::Filter;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Points per transfer batch.
const BATCH_POINTS: usize = 256;
/// How long a finished transfer keeps forwarding (writes routed before the switch).
const FORWARD_GRACE: Duration = Duration::from_secs(30);
/// Timeout of metadata proposals made by replica maintenance.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Minimum time between two recovery requests for the same replica.
const RECOVERY_RETRY: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
struct Forward {
    transfer: Transfer,
    shard_number: u32,
    /// `None` while the transfer runs; the end of the grace period after it finished.
    until: Option<Instant>,
}

#[derive(Default)]
pub struct Replication {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    forwards: Mutex<HashMap<String, Vec<Forward>>>,
    running: Mutex<HashSet<(String, u32)>>,
    progress: Mutex<HashMap<(String, u32), u64>>,
    last_recovery: Mutex<HashMap<(String, u32), Instant>>,
}

impl Replication {
    /// The lock serializing local applies, forwards and transfer batches of a collection.
    pub fn lock_for(&self, collection: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .entry(collection.to_string())
            .or_default()
            .clone()
    }

    /// Points sent so far by a transfer this peer is streaming.
    pub fn progress(&self, collection: &str, shard: u32) -> Option<u64> {
        self.progress
            .lock()
            .get(&(collection.to_string(), shard))
            .copied()
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

    fn set_forward(&self, collection: &str, fw: Option<Forward>, transfer: &Transfer) {
        let mut f = self.forwards.lock();
        let list = f.entry(collection.to_string()).or_default();
        list.retain(|x| &x.transfer != transfer);
        if let Some(fw) = fw {
            list.push(fw);
        }
    }
}

/// Forward a locally applied write to the replicas this peer is filling (called with the
/// collection's lock held). A target that cannot take it ends its transfer.
pub async fn forward(st: &AppState, collection: &str, op: &UpdateOp) {
    for fw in st.repl.forwards_of(collection) {
        let Some(part) = op.scoped(fw.shard_number, &[fw.transfer.shard]) else {
            continue;
        };
        if let Err(e) = remote_apply(st, collection, fw.transfer.to, &part).await {
            tracing::warn!(collection, shard = fw.transfer.shard, to = fw.transfer.to, error = %e.message, "forward failed: aborting transfer");
            st.repl.set_forward(collection, None, &fw.transfer);
            if fw.until.is_none() {
                abort(st, collection, &fw.transfer).await;
            }
        }
    }
}

/// Apply `op` on `peer`'s local collection (durably). A 4xx answer (e.g. a missing point)
/// still means the peer processed it.
async fn remote_apply(
    st: &AppState,
    collection: &str,
    peer: u64,
    op: &UpdateOp,
) -> Result<(), ApiError> {
    let p = dist::placement_of(st, collection).ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            format!("Not found: Collection `{collection}` doesn't exist!"),
        )
    })?;
    let path = format!(
        "/collections/{}/points/apply?wait=true",
        dist::urlencode(collection)
    );
    match dist::call(
        st,
        &p,
        peer,
        "POST",
        &path,
        "application/msgpack",
        op.encode(),
    )
    .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.status.is_client_error() => Ok(()),
        Err(e) => Err(e),
    }
}

async fn propose(st: &AppState, op: ClusterOp) -> Result<(), String> {
    let node = st.cluster.as_ref().ok_or("not in cluster mode")?;
    node.propose(op, PROPOSE_TIMEOUT)
        .await
        .map_err(|e| e.to_string())
}

async fn abort(st: &AppState, collection: &str, t: &Transfer) {
    let op = ClusterOp::AbortTransfer {
        collection: collection.to_string(),
        transfer: t.clone(),
    };
    if let Err(e) = propose(st, op).await {
        tracing::warn!(collection, shard = t.shard, error = %e, "could not abort transfer");
    }
}

/// Start the background loop that runs this peer's transfers and recoveries.
pub fn spawn_supervisor(st: AppState) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            supervise(&st).await;
        }
    });
}

async fn supervise(st: &AppState) {
    let Some(node) = st.cluster.clone() else {
        return;
    };
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
            let Some(&from) = meta.active_replicas(shard).iter().find(|p| **p != me) else {
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
            let op = ClusterOp::StartTransfer {
                collection: name.clone(),
                transfer: Transfer {
                    shard,
                    from,
                    to: me,
                    kind: TransferKind::Recovery,
                },
            };
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

/// Whether `t` is still an ongoing transfer of the agreed state.
fn still_running(st: &AppState, collection: &str, t: &Transfer) -> bool {
    st.cluster.as_ref().is_some_and(|n| {
        n.state()
            .state
            .collections
            .get(collection)
            .is_some_and(|m| m.transfers.contains(t))
    })
}

/// Run one transfer as its source (see the module docs).
async fn stream(
    st: &AppState,
    collection: &str,
    t: &Transfer,
    shard_number: u32,
) -> Result<(), String> {
    let scope = segment::filter::shard_scope(shard_number, &[t.shard]);
    let filter = Filter::from_json(&json!({"must": [scope]})).map_err(|e| e.to_string())?;
    let clear = UpdateOp::delete_shards(shard_number, &[t.shard]);
    let lock = st.repl.lock_for(collection);
    let key = (collection.to_string(), t.shard);
    st.repl.progress.lock().insert(key.clone(), 0);
    {
        let _g = lock.lock().await;
        if !still_running(st, collection, t) {
            return Ok(());
        }
        remote_apply(st, collection, t.to, &clear)
            .await
            .map_err(|e| format!("clearing the target: {}", e.message))?;
        st.repl.set_forward(
            collection,
            Some(Forward {
                transfer: t.clone(),
                shard_number,
                until: None,
            }),
            t,
        );
    }
    let mut after: Option<segment::PointId> = None;
    loop {
        let _g = lock.lock().await;
        if !still_running(st, collection, t) {
            st.repl.set_forward(collection, None, t);
            return Ok(());
        }
        let points: Vec<PointInsert> = {
            let c = st.storage.get(collection).map_err(|e| e.to_string())?;
            let store = c.read();
            store
                .scroll(after, BATCH_POINTS + 1, Some(&filter))
                .into_iter()
                .filter(|id| Some(*id) != after)
                .take(BATCH_POINTS)
                .filter_map(|id| store.get(id))
                .map(|r| PointInsert {
                    id: r.id,
                    vectors: to_stored(r.vectors),
                    payload: Some(r.payload),
                })
                .collect()
        };
        let Some(last) = points.last().map(|p| p.id) else {
            break;
        };
        let n = points.len() as u64;
        let op = UpdateOp::Upsert {
            points,
            update_filter: None,
            mode: UpdateMode::Upsert,
        };
        remote_apply(st, collection, t.to, &op)
            .await
            .map_err(|e| format!("sending a batch: {}", e.message))?;
        after = Some(last);
        *st.repl.progress.lock().entry(key.clone()).or_default() += n;
    }
    let _g = lock.lock().await;
    propose(
        st,
        ClusterOp::FinishTransfer {
            collection: collection.to_string(),
            transfer: t.clone(),
        },
    )
    .await?;
    st.repl.set_forward(
        collection,
        Some(Forward {
            transfer: t.clone(),
            shard_number,
            until: Some(Instant::now() + FORWARD_GRACE),
        }),
        t,
    );
    tracing::info!(
        collection,
        shard = t.shard,
        from = t.from,
        to = t.to,
        "transfer finished"
    );
    Ok(())
}

/// Mark replicas Dead after they failed a write (through consensus, so no reads or writes
/// go to them until they are recovered). Refused for a shard's last Active replica.
pub async fn mark_dead(st: &AppState, p: &Placement, failed: &[(u32, u64)]) {
    for &(shard, peer) in failed {
        let op = ClusterOp::SetReplicaState {
            collection: p.name.clone(),
            shard,
            peer,
            state: ReplicaState::Dead,
            expect: Some(ReplicaState::Active),
        };
        if let Err(e) = propose(st, op).await {
            tracing::warn!(collection = %p.name, shard, peer, error = %e, "could not mark replica Dead");
        }
    }
}
