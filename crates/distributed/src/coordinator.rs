//! Distributed execution in cluster mode: the peer that receives a REST request acts as the
//! coordinator. Writes are split by owning peer (`routing::shard_of` + the agreed shard
//! placement) and sent as `UpdateOp`s; reads fan out to every peer holding shards and the
//! answers are merged exactly as a single node would order them. Peers are reached only
//! through the typed `crate::peer::PeerClient` (this peer in-process, the others over
//! tonic). Reads are typed end to end: the request `api` parsed (`collection::read`) goes
//! to each peer with the shards it answers for, each peer runs it on its own points
//! (`crate::points`) and answers typed points, merged here in the single node's order.
//! A query's levels are planned here as a single node runs them (fusion and rescoring see
//! every shard's results).
//!
//! Each peer keeps its shards' points in one local store; replicas
//! (`replication_factor` > 1) receive every write for their shards, and reads deduplicate
//! by id.

use crate::error::DistError;
use crate::peer::{ApplyRequest, PeerService, ReadAnswer, ReadBody, ReadRequest, Scope};
use crate::Ctx;
use collection::operations::{OpMeta, UpdateOp};
use collection::query::{
    exclude_ids, merge_filters, window, Candidate, QueryInput, QuerySpec, RecoStrategy,
    RequestParams, ScoredPoint, VectorInput, WithPayload, WithVector, MAX_RESULT_WINDOW,
};
use collection::read::{
    group_key_id, CountRequest, Group, GroupRequest, LookupFrom, QueryRequest, RetrieveRequest,
    ScrollPage, ScrollRequest, SearchRequest, WithLookup,
};
use collection::routing::shard_of;
use collection::CollectionError;
use segment::filter::{Condition, Filter};
use segment::PointId;
use serde_json::Value;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// How long an internal request waits for its receiver to apply the coordinator's Raft
/// index (metadata the request depends on) before failing.
pub const APPLIED_WAIT: Duration = Duration::from_secs(10);

/// How long a metadata operation waits for every reachable peer to apply it.
pub const ALL_APPLIED_WAIT: Duration = Duration::from_secs(10);

/// Wait until every reachable peer has applied the Raft log up to `index` (each peer's
/// `raft_info.commit` is its applied index). A peer that does not answer counts as down.
pub async fn wait_all_applied(st: &Ctx, index: u64) -> Result<(), DistError> {
    let Some(node) = st.cluster.clone() else {
        return Ok(());
    };
    let deadline = tokio::time::Instant::now() + ALL_APPLIED_WAIT;
    let mut waits = tokio::task::JoinSet::new();
    for (id, _) in node.peers() {
        if id == node.id {
            continue;
        }
        let Ok(peer) = peer(st, id) else { continue };
        waits.spawn(async move {
            loop {
                match peer.status().await {
                    Ok(s) if s.applied >= index => return Ok(()),
                    Ok(_) => {}
                    Err(_) => return Ok(()), // down: it catches up when it returns
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(id);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
    while let Some(r) = waits.join_next().await {
        if let Ok(Err(peer)) = r {
            return Err(DistError::timeout(format!("Timeout: the operation was committed, but peer {peer} did not apply it within {} s", ALL_APPLIED_WAIT.as_secs()),
            ));
        }
    }
    Ok(())
}

/// This peer's applied Raft index, sent with internal writes (`applied=`).
pub fn applied_index(st: &Ctx) -> u64 {
    st.cluster.as_ref().map_or(0, |n| n.applied_index())
}

/// The service of peer `id` (this peer's own, in-process, or a remote one over tonic).
pub fn peer(st: &Ctx, id: u64) -> Result<Arc<dyn PeerService>, DistError> {
    let peers = st
        .peers
        .get()
        .ok_or_else(|| DistError::unavailable("Service unavailable: peer is starting"))?;
    Ok(peers.peer(id)?)
}

pub use crate::placement::{Placement, ReadConsistency};

/// A counter that spreads reads over a shard's replicas (`Placement::read_order`).
fn rotation() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering as AO};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, AO::Relaxed)
}

/// The agreed placement of `collection` (cluster mode), even when all of it is local.
pub fn placement_of(st: &Ctx, collection: &str) -> Option<Placement> {
    let node = st.cluster.as_ref()?;
    let state = node.state();
    let meta = state.state.collections.get(collection)?;
    Some(Placement {
        name: collection.to_string(),
        shard_number: meta.shards.len() as u32,
        shards: meta.shards.clone(),
        peers: node.peers(),
        me: node.id,
        meta: Arc::new(meta.clone()),
        read: ReadConsistency::One,
    })
}

/// The placement when this request must be distributed, `None` to execute locally.
pub fn placement(st: &Ctx, collection: &str) -> Option<Placement> {
    let p = placement_of(st, collection)?;
    if p.data_peers().iter().all(|x| *x == p.me) {
        return None; // everything is here
    }
    Some(p)
}

/// One read sub-request to `peer`, scoped to `shards` unless the peer holds no other
/// replica. Returns the answer's `result`.
async fn read_call(
    st: &Ctx,
    p: &Placement,
    id: u64,
    body: &ReadBody,
    shards: &[u32],
) -> Result<ReadAnswer, DistError> {
    let scope = (!p.holds_only(id, shards)).then(|| Scope {
        shard_number: p.shard_number,
        shards: shards.to_vec(),
    });
    let req = ReadRequest {
        collection: p.name.clone(),
        applied: 0,
        body: body.clone(),
        scope,
    };
    Ok(peer(st, id)?.read(req).await?)
}

/// A read over the whole collection: every shard is answered by one Active replica (this
/// peer's own first), each peer getting one sub-request scoped to the shards it answers;
/// a replica that fails (unreachable, 5xx) is replaced by the shard's next Active replica.
/// With `merged_by_id` (answers merged by point id, duplicates dropped: searches, scrolls,
/// retrieves — never counts) a peer whose replicas are all Active answers for all of them
/// unscoped (`Placement::widen_unscoped`).
pub async fn fan_out(
    st: &Ctx,
    p: &Placement,
    body: &ReadBody,
    merged_by_id: bool,
) -> Result<Vec<ReadAnswer>, DistError> {
    if p.read != ReadConsistency::One {
        // callers of this function merge one answer per shard: with a read consistency
        // they go through `fan_out_rounds`; this keeps the first round only
        let (mut rounds, _) = fan_out_rounds(st, p, body).await?;
        return Ok(rounds.swap_remove(0));
    }
    let n = p.shard_number;
    let orders: Vec<Vec<u64>> = (0..n).map(|s| p.read_order(s, rotation())).collect();
    let mut next = vec![0usize; n as usize];
    let mut pending: Vec<u32> = (0..n).collect();
    let mut out = Vec::new();
    let mut last_err: Option<DistError> = None;
    while !pending.is_empty() {
        let mut by_peer: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
        for s in pending.drain(..) {
            match orders[s as usize].get(next[s as usize]) {
                Some(&peer) => by_peer.entry(peer).or_default().push(s),
                None => {
                    return Err(last_err.unwrap_or_else(|| {
                        DistError::unavailable(format!(
                        "Service unavailable: no active replica of shard {s} of collection `{}`",
                        p.name
                    ))
                    }))
                }
            }
        }
        // what each peer is responsible for (retried elsewhere if it fails), and what it is
        // asked (possibly more, unscoped)
        let assigned = by_peer.clone();
        if merged_by_id {
            p.widen_unscoped(&mut by_peer);
        }
        let mut set = tokio::task::JoinSet::new();
        for (peer, asked) in by_peer {
            let shards = assigned[&peer].clone();
            let (st, p, body) = (st.clone(), p.clone(), body.clone());
            set.spawn(async move {
                let r = read_call(&st, &p, peer, &body, &asked).await;
                (shards, r)
            });
        }
        while let Some(r) = set.join_next().await {
            let (shards, r) = r.map_err(DistError::from)?;
            match r {
                Ok(v) => out.push(v),
                Err(e) if e.is_client_error() => return Err(e),
                Err(e) => {
                    for s in shards {
                        next[s as usize] += 1;
                        pending.push(s);
                    }
                    last_err = Some(e);
                }
            }
        }
    }
    Ok(out)
}

/// A read with a `consistency` above one replica: round `r` asks every shard's `r`-th
/// Active replica (in read order) and is a complete answer over the shards it covers.
/// Returns the rounds' answers and, per shard, how many rounds a point must appear in;
/// rounds `0..min(need)` cover every shard.
/// No failover: a replica that cannot answer fails the read (the consistency asked for it).
pub async fn fan_out_rounds(
    st: &Ctx,
    p: &Placement,
    body: &ReadBody,
) -> Result<(Vec<Vec<ReadAnswer>>, Vec<usize>), DistError> {
    let n = p.shard_number;
    let mut plan = Vec::with_capacity(n as usize);
    for s in 0..n {
        let order = p.read_order(s, rotation());
        match p.read.plan(order.len()) {
            Ok((k, need)) if k > 0 => plan.push((order, k, need)),
            Ok(_) => {
                return Err(DistError::unavailable(format!("Service unavailable: no active replica of shard {s} of collection `{}`", p.name),
                ))
            }
            Err(required) => {
                return Err(DistError::unavailable(format!("Service unavailable: read consistency needs {required} replicas of shard {s} of collection `{}`, {} are active", p.name, order.len()),
                ))
            }
        }
    }
    let rounds = plan.iter().map(|x| x.1).max().unwrap_or(1);
    let mut set = tokio::task::JoinSet::new();
    for r in 0..rounds {
        let mut by_peer: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
        for (s, (order, k, _)) in plan.iter().enumerate() {
            if r < *k {
                by_peer.entry(order[r]).or_default().push(s as u32);
            }
        }
        for (peer, shards) in by_peer {
            let (st, p, body) = (st.clone(), p.clone(), body.clone());
            set.spawn(async move { (r, read_call(&st, &p, peer, &body, &shards).await) });
        }
    }
    let mut out = vec![Vec::new(); rounds];
    while let Some(res) = set.join_next().await {
        let (r, res) = res.map_err(DistError::from)?;
        out[r].push(res?);
    }
    Ok((out, plan.iter().map(|x| x.2).collect()))
}

/// Combine the per-round results of a consistent read: the first round's points (in its
/// order) that appear in at least as many rounds as their shard requires.
pub fn resolve_rounds(
    p: &Placement,
    rounds: &[Vec<ScoredPoint>],
    need: &[usize],
) -> Vec<ScoredPoint> {
    let mut seen: HashMap<PointId, usize> = HashMap::new();
    for round in rounds {
        for v in round {
            *seen.entry(v.id).or_default() += 1;
        }
    }
    rounds
        .first()
        .map(|r0| {
            r0.iter()
                .filter(|v| {
                    let shard = shard_of(v.id, p.shard_number) as usize;
                    seen.get(&v.id).copied().unwrap_or(0) >= need.get(shard).copied().unwrap_or(1)
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// A write with `ordering` medium/strong: each touched shard's part goes to the shard's
/// leader (strong: its first replica, which must be Active; medium: its first Active
/// replica), which coordinates it under its ordering lock, so writes to a shard reach its
/// replicas one at a time, in the same order everywhere.
pub async fn ordered_update(
    st: &Ctx,
    p: &Placement,
    op: UpdateOp,
    wait: bool,
    ordering: crate::write::Ordering,
) -> Result<(u64, bool), DistError> {
    let n = p.shard_number;
    let mut by_leader: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    for s in op.touched_shards(n) {
        let active = p.meta.active_replicas(s);
        let leader = match ordering {
            crate::write::Ordering::Strong => p.shards[s as usize]
                .first()
                .copied()
                .filter(|l| active.contains(l)),
            _ => p.shards[s as usize]
                .iter()
                .copied()
                .find(|l| active.contains(l)),
        };
        let Some(leader) = leader else {
            return Err(DistError::unavailable(format!("Service unavailable: the leader replica of shard {s} of collection `{}` is not active (ordering {ordering:?})", p.name),
            ));
        };
        by_leader.entry(leader).or_default().push(s);
    }
    let leaders = by_leader.len();
    let mut set = tokio::task::JoinSet::new();
    for (leader, shards) in by_leader {
        let part = if leaders == 1 {
            Some(op.clone())
        } else {
            op.scoped(n, &shards)
        };
        let Some(part) = part else { continue };
        let (st, p) = (st.clone(), p.clone());
        set.spawn(async move {
            if leader == p.me {
                return lead_update(&st, &p, part, wait).await;
            }
            let req = ApplyRequest {
                collection: p.name.clone(),
                applied: applied_index(&st),
                op: part,
                wait,
                meta: OpMeta::default(),
            };
            let a = peer(&st, leader)?.ordered(req).await?;
            Ok((a.operation_id, a.completed))
        });
    }
    let (mut id, mut completed) = (0, true);
    while let Some(r) = set.join_next().await {
        let (i, c) = r.map_err(DistError::from)??;
        id = id.max(i);
        completed &= c;
    }
    Ok((id, completed))
}

/// Coordinate a write as shard leader: one ordered write of the collection at a time. Runs
/// to completion (lock held throughout) even if the caller goes away.
pub async fn lead_update(
    st: &Ctx,
    p: &Placement,
    op: UpdateOp,
    wait: bool,
) -> Result<(u64, bool), DistError> {
    let (st, p) = (st.clone(), p.clone());
    tokio::spawn(async move {
        let lock = st.repl.order_lock_for(&p.name);
        let _g = lock.lock().await;
        update_replicas(&st, &p, op, wait).await
    })
    .await?
}

/// Apply an update: each touched shard's part goes to all its Active replicas in parallel
/// (Partial replicas get it forwarded by their transfer source). Acknowledged once every
/// touched shard has `write_consistency_factor` replicas that applied it; replicas that
/// failed are marked Dead through consensus. Returns (max operation id, completed).
///
/// The fan-out and the Dead-marking run in a task of their own: once a write is accepted
/// it is carried out to the end even if the client disconnects (dropping this future).
pub async fn update(
    st: &Ctx,
    p: &Placement,
    op: UpdateOp,
    wait: bool,
) -> Result<(u64, bool), DistError> {
    let (st, p) = (st.clone(), p.clone());
    tokio::spawn(async move { update_replicas(&st, &p, op, wait).await }).await?
}

async fn update_replicas(
    st: &Ctx,
    p: &Placement,
    op: UpdateOp,
    wait: bool,
) -> Result<(u64, bool), DistError> {
    let n = p.shard_number;
    let touched = op.touched_shards(n);
    let only_filter_delete = matches!(
        op,
        UpdateOp::Delete(collection::operations::Selector::Filter(_))
    );
    let missing: Vec<u32> = touched
        .iter()
        .copied()
        .filter(|s| p.meta.active_replicas(*s).is_empty())
        .collect();
    if !missing.is_empty() && !only_filter_delete {
        return Err(DistError::unavailable(format!("Service unavailable: shard(s) {missing:?} of collection `{}` have no replica in state Active (no replica to write to); the write was not applied", p.name),
        ));
    }
    let wcf = st
        .storage
        .get(&p.name)
        .map(|c| c.config().params.write_consistency_factor)
        .unwrap_or(1)
        .max(1) as usize;
    let mut by_peer: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    for &s in &touched {
        for peer in p.meta.active_replicas(s) {
            by_peer.entry(peer).or_default().push(s);
        }
    }
    // one id for this client write on every replica (see replication: WAL delta)
    let op_id = uuid::Uuid::new_v4().as_u64_pair().0;
    let mut set = tokio::task::JoinSet::new();
    for (id, shards) in by_peer {
        let part = if p.holds_only(id, &shards) {
            op.retain_ids(&|id| shards.contains(&shard_of(id, n)))
        } else {
            op.scoped(n, &shards)
        };
        let Some(part) = part else { continue };
        let req = ApplyRequest {
            collection: p.name.clone(),
            applied: applied_index(st),
            op: part,
            wait,
            meta: OpMeta {
                id: Some(op_id),
                fill: None,
                shards: Some(shards.clone()),
                install: None, // single-node shard installs only
            },
        };
        let st = st.clone();
        set.spawn(async move {
            let r = match peer(&st, id) {
                Ok(service) => service.apply(req).await.map_err(DistError::from),
                Err(e) => Err(e),
            };
            (id, shards, r)
        });
    }
    let mut max_id = 0;
    let mut answers = Vec::new();
    let mut first_err: Option<DistError> = None;
    let mut hard_err: Option<DistError> = None;
    while let Some(r) = set.join_next().await {
        let (peer, shards, r) = r.map_err(DistError::from)?;
        let applied = r.is_ok();
        match r {
            // the replica logged and applied it; a per-point error (a missing point: the
            // rest was applied) is reported to the client, the replica is in sync
            Ok(a) => {
                max_id = max_id.max(a.operation_id);
                if let (Some(pe), None) = (a.point_error, &first_err) {
                    first_err = Some(pe.into());
                }
            }
            // any error (4xx included: a refused or undecodable message, a missing
            // collection, a body over the limit) means the replica does not hold the write
            Err(e) => hard_err = Some(e),
        }
        answers.push(crate::write::ReplicaAnswer {
            peer,
            shards,
            applied,
        });
    }
    let tally = crate::write::tally(n, &answers);
    if !tally.failed.is_empty() {
        let unmarked = crate::replication::mark_dead(st, p, &tally.failed).await;
        if !unmarked.is_empty() {
            // a replica that missed the write is still Active: do not acknowledge
            let why = if crate::replication::all_active_failed(st, &p.name, &tally.failed) {
                "no Active replica of the shard applied it, and a shard's last Active replica is never marked Dead"
            } else {
                "they could not be marked Dead (no consensus)"
            };
            return Err(DistError::unavailable(format!("Service unavailable: replicas {unmarked:?} (shard, peer) of collection `{}` failed the write and are still Active: {why}; the write may be applied on some replicas only, retry it", p.name),
            ));
        }
    }
    // a filter delete may skip shards without an Active replica (nothing to delete there)
    let checked: Vec<u32> = touched
        .iter()
        .copied()
        .filter(|s| !(only_filter_delete && missing.contains(s)))
        .collect();
    let replicas: Vec<usize> = p.shards.iter().map(Vec::len).collect();
    if let Some((s, got, need)) = crate::write::short_shard(&tally, &checked, &replicas, wcf) {
        let why = hard_err
            .as_ref()
            .map_or(String::new(), |e| format!(": {e}"));
        return Err(DistError::unavailable(format!("Service unavailable: the write reached {got} of the {need} replicas of shard {s} that write_consistency_factor requires{why}"),
        ));
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok((max_id, wait)),
    }
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ------------------------------------------------------------------ merging

/// Score order of a search: bigger first, or smaller first (Euclid/Manhattan distances).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Order {
    BiggerFirst,
    SmallerFirst,
    ById,
    ByOrderValue { desc: bool },
    Concat,
}

/// [`cmp`] for typed points.
fn cmp_points(order: Order, a: &ScoredPoint, b: &ScoredPoint) -> Ordering {
    let ids = || a.id.cmp(&b.id);
    let f = |x: f32, y: f32| x.partial_cmp(&y).unwrap_or(Ordering::Equal);
    let ov = |p: &ScoredPoint| {
        p.order_value
            .as_ref()
            .and_then(Value::as_f64)
            .unwrap_or(0.0)
    };
    match order {
        Order::BiggerFirst => f(b.score, a.score).then_with(ids),
        Order::SmallerFirst => f(a.score, b.score).then_with(ids),
        Order::ById => ids(),
        Order::ByOrderValue { desc } => {
            let o = ov(a).partial_cmp(&ov(b)).unwrap_or(Ordering::Equal);
            (if desc { o.reverse() } else { o }).then_with(ids)
        }
        Order::Concat => Ordering::Equal,
    }
}

/// [`merge`] for typed points: sort, drop duplicate ids (replicas), skip `offset`, take `limit`.
pub fn merge_points(
    lists: Vec<Vec<ScoredPoint>>,
    order: Order,
    offset: usize,
    limit: usize,
) -> Vec<ScoredPoint> {
    let mut all: Vec<ScoredPoint> = lists.into_iter().flatten().collect();
    if order != Order::Concat {
        all.sort_by(|a, b| cmp_points(order, a, b));
    }
    let mut seen = std::collections::HashSet::new();
    all.into_iter()
        .filter(|v| match order {
            Order::ByOrderValue { .. } => {
                seen.insert((v.id, v.order_value.as_ref().map(Value::to_string)))
            }
            _ => seen.insert((v.id, None)),
        })
        .skip(offset)
        .take(limit)
        .collect()
}

// ------------------------------------------------------------------ coordinator reads

/// Whether the named dense vector ranks smaller scores first (Euclid/Manhattan distances).
fn distance_order(st: &Ctx, collection: &str, using: &str) -> Order {
    let Ok(c) = st.storage.get(collection) else {
        return Order::BiggerFirst;
    };
    let cfg = c.config();
    match cfg
        .params
        .vectors
        .iter()
        .into_iter()
        .find(|(n, _)| *n == using)
        .map(|(_, p)| p.distance)
    {
        Some(segment::Distance::Euclid | segment::Distance::Manhattan) => Order::SmallerFirst,
        _ => Order::BiggerFirst,
    }
}

/// A typed read whose per-peer point lists `merge` turns into one: with the default
/// consistency a plain fan-out; otherwise each round is merged and the rounds resolved.
async fn read_typed(
    st: &Ctx,
    p: &Placement,
    body: ReadBody,
    merge: impl Fn(Vec<Vec<ScoredPoint>>) -> Vec<ScoredPoint>,
) -> Result<Vec<ScoredPoint>, DistError> {
    let lists = |answers: Vec<ReadAnswer>| -> Result<Vec<Vec<ScoredPoint>>, DistError> {
        answers
            .into_iter()
            .map(|a| a.points().map_err(DistError::from))
            .collect()
    };
    if p.read == ReadConsistency::One {
        return Ok(merge(lists(fan_out(st, p, &body, true).await?)?));
    }
    let (rounds, need) = fan_out_rounds(st, p, &body).await?;
    let merged = rounds
        .into_iter()
        .map(|r| lists(r).map(&merge))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(resolve_rounds(p, &merged, &need))
}

/// `/points/search` (typed): every shard's best `offset + limit` points, merged in the
/// score order of the vector searched.
pub async fn search(
    st: &Ctx,
    p: &Placement,
    mut r: SearchRequest,
) -> Result<Vec<ScoredPoint>, DistError> {
    let (limit, offset) = (r.limit, r.offset);
    r.limit = limit.saturating_add(offset);
    r.offset = 0;
    let order = match r.vector {
        segment::Vector::Sparse(_) => Order::BiggerFirst,
        segment::Vector::Dense(_) => distance_order(st, &p.name, &r.using),
    };
    read_typed(st, p, ReadBody::Search(Box::new(r)), |lists| {
        merge_points(lists, order, offset, limit)
    })
    .await
}

/// Records by id from their owners (typed), in `ids` order, each once.
pub async fn retrieve_points(
    st: &Ctx,
    p: &Placement,
    r: RetrieveRequest,
) -> Result<Vec<ScoredPoint>, DistError> {
    if r.ids.is_empty() {
        return Ok(vec![]);
    }
    let ids = r.ids.clone();
    read_typed(st, p, ReadBody::Retrieve(r), |lists| {
        let mut by_id: HashMap<PointId, ScoredPoint> = HashMap::new();
        for x in lists.into_iter().flatten() {
            by_id.entry(x.id).or_insert(x);
        }
        ids.iter().filter_map(|id| by_id.remove(id)).collect()
    })
    .await
}

/// A page of points (typed): every peer returns its first `limit + 1` from `offset`, merged
/// by id (the extra one is the next page's offset) or by order value.
pub async fn scroll_points(
    st: &Ctx,
    p: &Placement,
    mut r: ScrollRequest,
) -> Result<ScrollPage, DistError> {
    let limit = r.limit;
    let by_value = r.order_by.as_ref().map(|ob| ob.descending);
    r.limit = limit.saturating_add(1);
    let mut points = read_typed(
        st,
        p,
        ReadBody::Scroll(Box::new(r)),
        |lists| match by_value {
            Some(desc) => merge_points(lists, Order::ByOrderValue { desc }, 0, limit),
            None => merge_points(lists, Order::ById, 0, limit.saturating_add(1)),
        },
    )
    .await?;
    let next = match by_value {
        None if points.len() > limit => points.pop().map(|x| x.id),
        _ => None,
    };
    Ok(ScrollPage {
        points,
        next_page_offset: next,
    })
}

/// How many points match (typed), over one Active replica of every shard; with a read
/// consistency, the smallest complete round (points all asked replicas agree on can only
/// be fewer than any one replica holds).
pub async fn count_points(st: &Ctx, p: &Placement, r: CountRequest) -> Result<u64, DistError> {
    let body = ReadBody::Count(r);
    let sum = |answers: Vec<ReadAnswer>| -> Result<u64, DistError> {
        let mut n = 0u64;
        for a in answers {
            n = n.saturating_add(a.count()?);
        }
        Ok(n)
    };
    if p.read == ReadConsistency::One {
        return sum(fan_out(st, p, &body, false).await?);
    }
    let (rounds, need) = fan_out_rounds(st, p, &body).await?;
    let complete = need.iter().copied().min().unwrap_or(1).max(1);
    let mut n: Option<u64> = None;
    for r in rounds.into_iter().take(complete) {
        let c = sum(r)?;
        n = Some(n.map_or(c, |m| m.min(c)));
    }
    Ok(n.unwrap_or(0))
}

/// The order in which a query level's results are merged.
fn query_order(st: &Ctx, p: &Placement, q: Option<&QueryInput>, using: &str) -> Order {
    match q {
        None => Order::ById,
        Some(QueryInput::OrderBy(ob)) => Order::ByOrderValue {
            desc: ob.descending,
        },
        Some(QueryInput::Sample) => Order::Concat,
        Some(QueryInput::Recommend { strategy, .. }) => match strategy {
            RecoStrategy::AverageVector => distance_order(st, &p.name, using),
            RecoStrategy::BestScore | RecoStrategy::SumScores => Order::BiggerFirst,
        },
        Some(QueryInput::Nearest(VectorInput::Vector(segment::Vector::Sparse(_)))) => {
            Order::BiggerFirst
        }
        Some(_) => distance_order(st, &p.name, using),
    }
}

/// Replace the point ids a query level gives as inputs with the points' vectors, fetched
/// from their owners in this collection or in `lookup_from`; returns the ids to leave out
/// of the level's results: those that name points of this collection (as on a single node).
async fn resolve_query_inputs(
    st: &Ctx,
    p: &Placement,
    q: &mut Option<QueryInput>,
    using: &str,
    lookup: Option<&LookupFrom>,
) -> Result<HashSet<PointId>, DistError> {
    fn slots(q: &mut Option<QueryInput>) -> Vec<&mut VectorInput> {
        match q {
            Some(QueryInput::Nearest(v)) => vec![v],
            Some(QueryInput::Recommend {
                positive, negative, ..
            }) => positive.iter_mut().chain(negative.iter_mut()).collect(),
            _ => vec![],
        }
    }
    let ids: Vec<PointId> = slots(q)
        .into_iter()
        .filter_map(|v| match v {
            VectorInput::Id(id) => Some(*id),
            VectorInput::Vector(_) => None,
        })
        .collect();
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let (src, name) = match lookup {
        None => (p.clone(), using.to_string()),
        Some(l) => {
            let c = st.storage.get(&l.collection)?;
            let src = placement_of(st, c.name()).ok_or_else(|| {
                DistError::not_found(format!(
                    "Not found: Collection `{}` doesn't exist!",
                    l.collection
                ))
            })?;
            (src, l.vector.clone().unwrap_or_else(|| using.to_string()))
        }
    };
    let recs = retrieve_points(
        st,
        &src,
        RetrieveRequest {
            ids: ids.clone(),
            with_payload: WithPayload::None,
            with_vector: WithVector::Names(vec![name.clone()]),
        },
    )
    .await?;
    let mut vectors: HashMap<PointId, Option<segment::Vector>> = recs
        .into_iter()
        .map(|r| (r.id, r.vector.and_then(|mut v| v.remove(&name))))
        .collect();
    for slot in slots(q) {
        let VectorInput::Id(id) = *slot else { continue };
        let v = match vectors.get_mut(&id) {
            None => {
                return Err(CollectionError::PointNotFound(id.to_string()).into());
            }
            Some(v) => v.clone().ok_or_else(|| {
                CollectionError::BadInput(format!("Point {id} has no vector `{name}`"))
            })?,
        };
        *slot = VectorInput::Vector(v);
    }
    Ok(if src.name == p.name {
        ids.into_iter().collect()
    } else {
        HashSet::new()
    })
}

/// `/points/query` (typed): the query's levels are planned here as a single node runs them
/// (`collection::query::QueryEngine::query`); each level without prefetches is one fan-out,
/// fusion and the rescoring of prefetched candidates happen over every shard's results.
pub async fn query_points(
    st: &Ctx,
    p: &Placement,
    r: QueryRequest,
) -> Result<Vec<ScoredPoint>, DistError> {
    let QueryRequest {
        params,
        spec,
        with_payload,
        with_vector,
        lookup_from,
    } = r;
    let offset = spec.offset;
    let level = Level {
        st,
        p,
        params,
        lookup: lookup_from.as_ref(),
    };
    level
        .run(spec, None, offset, Some((&with_payload, &with_vector)))
        .await
}

/// What every level of one distributed query shares.
struct Level<'a> {
    st: &'a Ctx,
    p: &'a Placement,
    params: RequestParams,
    lookup: Option<&'a LookupFrom>,
}

type LevelFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Vec<ScoredPoint>, DistError>> + Send + 'a>,
>;

impl<'a> Level<'a> {
    /// One level: `select` is the top level's payload/vector selectors (`None` below it).
    fn run(
        &'a self,
        mut spec: QuerySpec,
        inherited: Option<Filter>,
        offset: usize,
        select: Option<(&'a WithPayload, &'a WithVector)>,
    ) -> LevelFuture<'a> {
        Box::pin(async move {
            let using = spec.using.clone().unwrap_or_default();
            let excluded =
                resolve_query_inputs(self.st, self.p, &mut spec.query, &using, self.lookup).await?;
            let filter = merge_filters(inherited.as_ref(), spec.filter.as_ref());
            let prefetch = std::mem::take(&mut spec.prefetch);
            if prefetch.is_empty() {
                let f = exclude_ids(filter, &excluded);
                return self.base(spec, f, offset, select).await;
            }
            let mut sources = Vec::with_capacity(prefetch.len());
            for pf in prefetch {
                sources.push(self.run(pf, filter.clone(), 0, None).await?);
            }
            let cands = |s: &Vec<ScoredPoint>| -> Vec<Candidate> {
                s.iter()
                    .map(|x| Candidate {
                        id: x.id,
                        score: x.score,
                        order_value: None,
                    })
                    .collect()
            };
            let fused = match &spec.query {
                Some(QueryInput::Rrf { k, weights }) => Some(collection::query::rrf(
                    &sources.iter().map(cands).collect::<Vec<_>>(),
                    k.unwrap_or(2) as f32,
                    weights.as_deref(),
                )?),
                Some(QueryInput::Dbsf) => Some(collection::query::dbsf(
                    &sources.iter().map(cands).collect::<Vec<_>>(),
                )),
                _ => None,
            };
            if let Some(fused) = fused {
                let top = spec.limit.saturating_add(offset).min(MAX_RESULT_WINDOW);
                let fused = window(
                    fused
                        .into_iter()
                        .filter(|c| spec.score_threshold.is_none_or(|t| c.score >= t))
                        .collect(),
                    top,
                    offset,
                );
                return self.attach(fused, select).await;
            }
            // a query (or none: the union in id order) over the prefetches' results
            let ids: HashSet<PointId> = sources.iter().flatten().map(|x| x.id).collect();
            if ids.is_empty() {
                return Ok(vec![]);
            }
            let f = collection::query::and_filter(filter.as_ref(), Condition::HasId(ids));
            self.base(spec, exclude_ids(Some(f), &excluded), offset, select)
                .await
        })
    }

    /// A level without prefetches: one fan-out, merged in the query's order.
    async fn base(
        &self,
        spec: QuerySpec,
        filter: Option<Filter>,
        offset: usize,
        select: Option<(&WithPayload, &WithVector)>,
    ) -> Result<Vec<ScoredPoint>, DistError> {
        let using = spec.using.clone().unwrap_or_default();
        let order = query_order(self.st, self.p, spec.query.as_ref(), &using);
        let limit = spec.limit;
        // `offset` does not apply to a random sample (as on a single node)
        let offset = if order == Order::Concat { 0 } else { offset };
        let (wp, wv) = select.map_or((WithPayload::None, WithVector::None), |(p, v)| {
            (p.clone(), v.clone())
        });
        let body = ReadBody::Query(Box::new(QueryRequest {
            params: self.params,
            spec: QuerySpec {
                prefetch: vec![],
                filter,
                limit: limit.saturating_add(offset),
                offset: 0,
                ..spec
            },
            with_payload: wp,
            with_vector: wv,
            lookup_from: None,
        }));
        read_typed(self.st, self.p, body, |lists| {
            merge_points(lists, order, offset, limit)
        })
        .await
    }

    /// Fused candidates as points: at the top level with the records' payload, vectors
    /// and versions (a point deleted meanwhile is left out).
    async fn attach(
        &self,
        fused: Vec<Candidate>,
        select: Option<(&WithPayload, &WithVector)>,
    ) -> Result<Vec<ScoredPoint>, DistError> {
        let Some((wp, wv)) = select else {
            return Ok(fused
                .into_iter()
                .map(|c| ScoredPoint {
                    id: c.id,
                    version: 0,
                    score: c.score,
                    payload: None,
                    vector: None,
                    order_value: None,
                })
                .collect());
        };
        let recs = retrieve_points(
            self.st,
            self.p,
            RetrieveRequest {
                ids: fused.iter().map(|c| c.id).collect(),
                with_payload: wp.clone(),
                with_vector: wv.clone(),
            },
        )
        .await?;
        let mut by_id: HashMap<PointId, ScoredPoint> =
            recs.into_iter().map(|r| (r.id, r)).collect();
        Ok(fused
            .into_iter()
            .filter_map(|c| {
                by_id.remove(&c.id).map(|r| ScoredPoint {
                    score: c.score,
                    ..r
                })
            })
            .collect())
    }
}

// ------------------------------------------------------------------ groups

/// Distributed `*/groups` (typed): rank every candidate across peers (with the `group_by`
/// payload only), group at the coordinator exactly as a single node does
/// (`collection::query::group_ranked`), then fetch the requested payload and vectors of
/// the hits, and the lookups.
pub async fn group_points(
    st: &Ctx,
    p: &Placement,
    mut r: QueryRequest,
    g: &GroupRequest,
) -> Result<Vec<Group>, DistError> {
    let path = segment::json_path::JsonPath::parse(&g.group_by).map_err(DistError::bad_request)?;
    // every level ranks all points, so groups fill up to `group_size`
    let total = count_points(st, p, CountRequest::default()).await?.max(1) as usize;
    r.spec.widen(total);
    r.spec.offset = 0;
    let wp = std::mem::replace(
        &mut r.with_payload,
        WithPayload::Include(vec![path.clone()]),
    );
    let wv = std::mem::replace(&mut r.with_vector, WithVector::None);
    let ranked = query_points(st, p, r).await?;
    let groups = collection::query::group_ranked(
        ranked.iter(),
        |x| x.payload.as_ref(),
        &path,
        g.group_size,
        g.limit,
    );
    let ids: Vec<PointId> = groups
        .iter()
        .flat_map(|g| g.1.iter().map(|h| h.id))
        .collect();
    let mut recs: HashMap<PointId, ScoredPoint> =
        if wp != WithPayload::None || wv != WithVector::None {
            let req = RetrieveRequest {
                ids,
                with_payload: wp,
                with_vector: wv,
            };
            retrieve_points(st, p, req)
                .await?
                .into_iter()
                .map(|x| (x.id, x))
                .collect()
        } else {
            HashMap::new()
        };
    let mut out = Vec::with_capacity(groups.len());
    for (key, hits) in groups {
        let hits = hits
            .into_iter()
            .map(|h| {
                let (payload, vector) = match recs.get_mut(&h.id) {
                    Some(rec) => (rec.payload.clone(), rec.vector.clone()),
                    None => (None, None),
                };
                ScoredPoint {
                    payload,
                    vector,
                    ..h.clone()
                }
            })
            .collect();
        // a group key is looked up only when it is a valid point id (as on a single node)
        let lookup = match (&g.with_lookup, group_key_id(&key)) {
            (Some(l), Some(id)) => lookup_record(st, l, id).await?,
            _ => None,
        };
        out.push(Group {
            id: key,
            hits,
            lookup,
        });
    }
    Ok(out)
}

/// The record `id` of the lookup collection, from its owners.
async fn lookup_record(
    st: &Ctx,
    l: &WithLookup,
    id: PointId,
) -> Result<Option<ScoredPoint>, DistError> {
    let c = st.storage.get(&l.collection)?;
    let req = RetrieveRequest {
        ids: vec![id],
        with_payload: l.with_payload.clone(),
        with_vector: l.with_vector.clone(),
    };
    let mut recs = match placement(st, c.name()) {
        Some(lp) => retrieve_points(st, &lp, req).await?,
        // every point of the lookup collection is here
        None => crate::points::retrieve(c, req).await?,
    };
    Ok(recs.pop())
}
