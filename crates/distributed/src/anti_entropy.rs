//! Anti-entropy: the replicas of each shard compare content digests periodically, and a
//! confirmed difference is narrowed to the points that differ and repaired point by point
//! (or, when it is large, by a verified resync of the stale replica).
//!
//! - Who compares: the shard's first Active replica in placement order, with each other
//!   Active replica, every `cluster.anti_entropy.interval_sec`. When the shard's collection
//!   took no write here for `IDLE`, whole digests are compared. While it takes writes, only
//!   the buckets that no write touched on either side since their previous digests are
//!   compared, so writes in flight are not mistaken for divergence and a shard that is
//!   never idle is still checked.
//! - Cost: a shard's digest tree (`segment::digest`) is cached until the collection's next
//!   write, so comparing an idle shard is one digest request per replica (no scan on either
//!   side). After a write, only the buckets whose points changed are hashed again.
//! - Narrowing: unequal roots are narrowed to the buckets that differ (one request for the
//!   other side's 256 bucket digests), and those to the points that differ (one request
//!   for their point hashes).
//! - Which copy is newer, point by point: each replica's log says which client writes it
//!   holds that the other lacks, and which points those writes may have changed (the ids
//!   they list; any point for a write that selected by filter). A copy changed by a write
//!   the other replica lacks wins ([`winner`]). When each copy may hold such a write, no
//!   copy holds every acknowledged write of that point: it is counted as unrepairable and
//!   logged. When neither does (writes applied in different orders, or damage), the first
//!   replica's copy wins.
//! - Repair: when the differing buckets hold at most `REPAIR_POINTS` points, each
//!   differing point is copied from the winning copy to the other replica (deleted there when the winner lacks them). The
//!   receiver applies each under its collection's order lock, only if its copy still has
//!   the hash it was compared with (a client write that came in meanwhile is never
//!   overwritten with an older copy), logged as a write that is not a client write; the
//!   next round verifies the digests again. A larger difference is repaired by a verified
//!   resync (a `Recovery` transfer, WAL delta first) from the replica lacking none of the
//!   other's client writes; when each lacks some, it is counted as unrepairable.

use crate::coordinator::{self, placement_of};
use crate::peer::{TouchedRequest, TreeAnswer, TreeLevel, TreeRequest};
use crate::Ctx;
use cluster::state::ReplicaState;
use collection::operations::{PointInsert, Touched};
use parking_lot::Mutex;
use segment::digest::{Digest, Tree};
use segment::types::PointId;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A collection must have taken no write on this peer for this long before its shards are
/// compared.
const IDLE: Duration = Duration::from_secs(2);
/// Points read per hold of a collection's read lock while a digest tree is built (writers
/// wait for one step at most: a few ms).
const TREE_STEP: usize = 4096;
/// A busy comparison (a collection taking writes) is skipped when this peer's digest tree
/// would need more than this many points hashed again: during an ingest, the buckets are
/// all being written and none could be compared anyway.
const BUSY_MAX_HASHED: usize = 20_000;
/// A difference is confirmed by a second comparison this much later.
const CONFIRM_AFTER: Duration = Duration::from_secs(1);
/// Differing points repaired one by one at most; a larger difference resyncs the shard.
pub const REPAIR_POINTS: usize = 10_000;

/// [`REPAIR_POINTS`], or `SEXTANT_ANTI_ENTROPY_REPAIR_POINTS` (read once; for tests of the
/// resync path with small data).
fn repair_points_limit() -> usize {
    static LIMIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        std::env::var("SEXTANT_ANTI_ENTROPY_REPAIR_POINTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(REPAIR_POINTS)
    })
}

/// Per-collection counters (`GET /collections/{c}/cluster`, `/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub comparisons: u64,
    pub mismatches: u64,
    pub repairs: u64,
    pub unrepairable: u64,
    /// Points copied (or deleted) to repair a difference, by the point-level repair.
    pub points_repaired: u64,
    /// Repairs done by resyncing a whole shard (the difference was too large).
    pub resyncs: u64,
}

#[derive(Default)]
pub struct AntiEntropy {
    counters: Mutex<BTreeMap<String, Counters>>,
    last_write: Mutex<HashMap<String, Instant>>,
    running: Mutex<HashSet<(String, u32, u64)>>,
    last_round: Mutex<Option<Instant>>,
    digests: Mutex<HashMap<(String, u32), CachedDigest>>,
}

/// A shard's digest tree and what it was computed from.
#[derive(Clone)]
struct CachedDigest {
    /// `Collection::content_version` when computed: any write makes the entry stale (and
    /// its buckets the start of the next computation); a re-created or reloaded collection
    /// (another instance) makes it useless.
    version: collection::ContentVersion,
    shard_number: u32,
    tree: Arc<Tree>,
}

impl AntiEntropy {
    /// A write reached this peer's copy of `collection` (defers comparisons).
    pub fn touched(&self, collection: &str) {
        self.last_write
            .lock()
            .insert(collection.to_string(), Instant::now());
    }

    pub fn counters(&self, collection: &str) -> Counters {
        self.counters
            .lock()
            .get(collection)
            .copied()
            .unwrap_or_default()
    }

    pub fn all_counters(&self) -> BTreeMap<String, Counters> {
        self.counters.lock().clone()
    }

    fn count(&self, collection: &str, f: impl FnOnce(&mut Counters)) {
        f(self
            .counters
            .lock()
            .entry(collection.to_string())
            .or_default());
    }

    fn idle(&self, collection: &str) -> bool {
        self.last_write
            .lock()
            .get(collection)
            .is_none_or(|t| t.elapsed() >= IDLE)
    }
}

/// The digest of this peer's copy of `shard`, cached until the collection's next write.
pub async fn local_digest(
    ctx: &Ctx,
    collection: &str,
    shard: u32,
    shard_number: u32,
) -> Result<Digest, crate::DistError> {
    Ok(tree(ctx, collection, shard, shard_number).await?.0.root())
}

/// A lower level of this peer's digest tree of `shard` (what another replica narrows a
/// difference with).
pub async fn local_tree(
    ctx: &Ctx,
    collection: &str,
    shard: u32,
    shard_number: u32,
    level: TreeLevel,
) -> Result<TreeAnswer, crate::DistError> {
    match level {
        TreeLevel::Buckets => {
            let (tree, quiet) = tree(ctx, collection, shard, shard_number).await?;
            Ok(TreeAnswer::Buckets {
                digests: tree.buckets().to_vec(),
                quiet: quiet.to_vec(),
            })
        }
        TreeLevel::Leaves(buckets) => {
            let c = ctx.storage.get(collection)?;
            let leaves = tokio::task::spawn_blocking(move || {
                segment::digest::point_hashes(&c.read(), shard_number, shard, &buckets)
            })
            .await?;
            Ok(TreeAnswer::Leaves(leaves))
        }
    }
}

/// This peer's digest tree of `shard`, with which of its buckets no write touched since
/// the digest before: cached until the collection's next write, then refreshed from the
/// cached one (only changed buckets are hashed again).
async fn tree(
    ctx: &Ctx,
    collection: &str,
    shard: u32,
    shard_number: u32,
) -> Result<(Arc<Tree>, Arc<Vec<bool>>), crate::DistError> {
    let t = bounded_tree(ctx, collection, shard, shard_number, usize::MAX).await?;
    Ok(t.expect("no bound on the points hashed"))
}

/// [`tree`], or `None` when refreshing it would hash more than `max_hashed` points again
/// (a shard taking many writes: its busy comparison is skipped, not paid for).
async fn bounded_tree(
    ctx: &Ctx,
    collection: &str,
    shard: u32,
    shard_number: u32,
    max_hashed: usize,
) -> Result<Option<(Arc<Tree>, Arc<Vec<bool>>)>, crate::DistError> {
    let c = ctx.storage.get(collection)?;
    let version = c.content_version();
    let key = (collection.to_string(), shard);
    let prev = ctx.repl.anti_entropy.digests.lock().get(&key).cloned();
    if let Some(d) = &prev {
        if (d.version, d.shard_number) == (version, shard_number) {
            // nothing was written since: every bucket is quiet
            let quiet = vec![true; d.tree.buckets().len()];
            return Ok(Some((d.tree.clone(), Arc::new(quiet))));
        }
    }
    // versions are comparable within one instance of the collection only
    let prev = prev
        .filter(|d| d.version.0 == version.0 && d.shard_number == shard_number)
        .map(|d| d.tree);
    // `version` was read before the scan: a write logged meanwhile may or may not be in
    // the tree, and its newer version makes the entry stale, so it is never missed
    let refreshed = tokio::task::spawn_blocking(move || {
        let (tree, hashed) = segment::digest::shard_tree_bounded(
            || c.read(),
            shard_number,
            shard,
            prev.as_deref(),
            TREE_STEP,
            max_hashed,
        )?;
        tracing::trace!(shard, hashed, "digest tree refreshed");
        let quiet = match &prev {
            Some(p) => tree.unchanged_since(p),
            None => vec![false; tree.buckets().len()],
        };
        Some((Arc::new(tree), Arc::new(quiet)))
    })
    .await?;
    let Some((tree, quiet)) = refreshed else {
        return Ok(None);
    };
    ctx.repl.anti_entropy.digests.lock().insert(
        key,
        CachedDigest {
            version,
            shard_number,
            tree: tree.clone(),
        },
    );
    Ok(Some((tree, quiet)))
}

/// Start the comparisons this peer leads, at most one round per `interval`.
pub fn round(ctx: &Ctx, node: &Arc<cluster::node::ClusterNode>) {
    let Some(interval) = ctx.anti_entropy_interval else {
        return;
    };
    {
        let mut last = ctx.repl.anti_entropy.last_round.lock();
        if last.is_some_and(|t| t.elapsed() < interval) {
            return;
        }
        *last = Some(Instant::now());
    }
    let me = node.id;
    let state = node.state();
    for (name, meta) in &state.state.collections {
        if !ctx.storage.exists(name) {
            continue;
        }
        let busy = !ctx.repl.anti_entropy.idle(name);
        for shard in 0..meta.shards.len() as u32 {
            let active = meta.active_replicas(shard);
            if active.first() != Some(&me) || meta.transfer_of(shard).is_some() {
                continue;
            }
            for &other in active.iter().skip(1) {
                let key = (name.clone(), shard, other);
                if !ctx.repl.anti_entropy.running.lock().insert(key.clone()) {
                    continue;
                }
                let (ctx, name) = (ctx.clone(), name.clone());
                tokio::spawn(async move {
                    if let Err(e) = compare(&ctx, &name, shard, other, busy).await {
                        tracing::debug!(collection = %name, shard, peer = other, error = %e, "anti-entropy comparison not completed");
                    }
                    ctx.repl.anti_entropy.running.lock().remove(&key);
                });
            }
        }
    }
}

async fn digests(
    ctx: &Ctx,
    collection: &str,
    shard: u32,
    other: u64,
) -> Result<(Digest, Digest), crate::DistError> {
    let n = shard_number(ctx, collection)?;
    let mine = local_digest(ctx, collection, shard, n).await?;
    let theirs = coordinator::peer(ctx, other)?
        .digest(
            collection.to_string(),
            shard,
            coordinator::applied_index(ctx),
        )
        .await?;
    Ok((mine, theirs))
}

/// Which replica's copy of a differing point is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Winner {
    /// The comparing replica's (the shard's first Active one).
    Here,
    There,
    /// Each replica may hold an acknowledged write of the point that the other lacks, or a
    /// log cannot tell: not repaired (either copy would drop a write).
    Conflict,
}

/// Which copy of differing point `id` wins, from what the client writes each replica
/// logged and the other lacks may have changed (`None`: that replica's log cannot tell).
/// A copy that no write missing from the other explains loses to one that such a write
/// explains; when neither is explained (writes applied in different orders, or damage),
/// the first replica's copy wins.
pub fn winner(id: PointId, here: Option<&Touched>, there: Option<&Touched>) -> Winner {
    let (h, t) = (
        here.map(|x| x.may_have_changed(id)),
        there.map(|x| x.may_have_changed(id)),
    );
    match (h, t) {
        (_, Some(false)) => Winner::Here,
        (Some(false), _) => Winner::There,
        _ => Winner::Conflict,
    }
}

/// Compare this peer's copy of `shard` with `other`'s; repair a confirmed difference.
/// `busy`: the collection takes writes here, so only buckets that no write touched on
/// either side since their previous digests are compared (the repair's own check keeps a
/// write that lands meanwhile).
async fn compare(
    ctx: &Ctx,
    collection: &str,
    shard: u32,
    other: u64,
    busy: bool,
) -> Result<(), crate::DistError> {
    let ae = &ctx.repl.anti_entropy;
    let (a, b) = if busy {
        (Digest::default(), Digest::default())
    } else {
        digests(ctx, collection, shard, other).await?
    };
    if !busy {
        ae.count(collection, |c| c.comparisons += 1);
        if a == b {
            return Ok(());
        }
    }
    let (first, _) = differing_buckets(ctx, collection, shard, other, busy).await?;
    if busy {
        ae.count(collection, |c| c.comparisons += 1);
    }
    if first.is_empty() {
        return Ok(());
    }
    tokio::time::sleep(CONFIRM_AFTER).await;
    let (second, at_stake) = differing_buckets(ctx, collection, shard, other, busy).await?;
    // differing both times (and, busy, quiet both times)
    let buckets: Vec<u32> = second.into_iter().filter(|k| first.contains(k)).collect();
    if buckets.is_empty() || (!busy && !ae.idle(collection)) {
        return Ok(()); // a write was in flight
    }
    ae.count(collection, |c| c.mismatches += 1);
    let node = ctx
        .cluster
        .clone()
        .ok_or_else(|| crate::DistError::bad_request("not in cluster mode"))?;
    let me = node.id;
    let (here, there) = missing_writes(ctx, collection, shard, other).await?;
    if at_stake > repair_points_limit() as u64 {
        if busy {
            return Ok(()); // resynced, if need be, once the shard pauses
        }
        // too many points to compare one by one: resync the stale copy whole
        return resync(ctx, &node, collection, shard, other, (here, there)).await;
    }
    let differing = differing_points(ctx, collection, shard, other, buckets).await?;
    // each point to copy, with the hash the receiving copy was compared with
    let (mut to_other, mut to_me, mut conflicts) = (Vec::new(), Vec::new(), 0usize);
    for (id, hash_here, hash_there) in differing {
        match winner(id, here.as_ref(), there.as_ref()) {
            Winner::Here => to_other.push((id, hash_there)),
            Winner::There => to_me.push((id, hash_here)),
            Winner::Conflict => conflicts += 1,
        }
    }
    tracing::warn!(
        collection,
        shard,
        peer = other,
        busy,
        copy_there = to_other.len(),
        copy_here = to_me.len(),
        conflicts,
        "anti-entropy: replicas differ: repairing"
    );
    let mut unrepairable = conflicts > 0;
    if unrepairable {
        tracing::error!(
            collection,
            shard,
            peer = other,
            conflicts,
            "anti-entropy: points where each replica may hold a client write the other lacks (or a log cannot tell); not repaired (either copy would drop an acknowledged write)"
        );
    }
    let mut points = 0u64;
    let mut outcome = Ok(());
    if busy || ae.idle(collection) {
        // (otherwise a write arrived meanwhile: compare again next round)
        for (from, to, ids) in [(me, other, to_other), (other, me, to_me)] {
            if ids.is_empty() || !active(&node, collection, shard, to) {
                continue;
            }
            if ids.len() > repair_points_limit() {
                unrepairable = true;
                tracing::error!(collection, shard, from, to, points = ids.len(), "anti-entropy: too many differing points to copy one by one, and a resync would drop writes the other way; not repaired");
                continue;
            }
            outcome = repair_points(ctx, collection, shard, (from, to), &ids, &mut points).await;
            if outcome.is_err() {
                break;
            }
        }
    }
    ae.count(collection, |c| {
        c.unrepairable += u64::from(unrepairable);
        c.repairs += u64::from(points > 0);
        c.points_repaired += points;
    });
    outcome
}

/// Whether a replica's client writes that the other lacks touched nothing (it lacks none).
fn lacks_nothing(t: &Option<Touched>) -> bool {
    t.as_ref().is_some_and(|t| t.ids.is_empty() && !t.by_filter)
}

/// Repair a difference too large to copy point by point: the replica lacking none of the
/// other's client writes is the source of a verified resync of the other. When each lacks
/// writes of the other, a resync either way would drop acknowledged writes: not repaired.
async fn resync(
    ctx: &Ctx,
    node: &cluster::node::ClusterNode,
    collection: &str,
    shard: u32,
    other: u64,
    (here, there): (Option<Touched>, Option<Touched>),
) -> Result<(), crate::DistError> {
    let ae = &ctx.repl.anti_entropy;
    let me = node.id;
    let (from, to) = if lacks_nothing(&there) {
        (me, other)
    } else if lacks_nothing(&here) {
        (other, me)
    } else {
        ae.count(collection, |c| c.unrepairable += 1);
        tracing::error!(collection, shard, peer = other, "anti-entropy: replicas differ in many points and each lacks client writes the other has; not repaired (a resync either way would drop acknowledged writes)");
        return Ok(());
    };
    tracing::warn!(
        collection,
        shard,
        from,
        to,
        "anti-entropy: replicas differ in more points than are copied one by one: resyncing"
    );
    if !ae.idle(collection) || !active(node, collection, shard, to) {
        return Ok(());
    }
    crate::replication::propose(
        ctx,
        crate::replication::recovery(collection, shard, from, to),
    )
    .await
    .map_err(crate::DistError::unavailable)?;
    ae.count(collection, |c| {
        c.repairs += 1;
        c.resyncs += 1;
    });
    Ok(())
}

fn active(node: &cluster::node::ClusterNode, collection: &str, shard: u32, peer: u64) -> bool {
    node.state()
        .state
        .collections
        .get(collection)
        .is_some_and(|m| m.replica_state(shard, peer) == Some(ReplicaState::Active))
}

/// What the client writes each replica of `shard` logged and the other lacks may have
/// changed: `(this peer's, other's)`, each `None` when that log cannot tell.
async fn missing_writes(
    ctx: &Ctx,
    collection: &str,
    shard: u32,
    other: u64,
) -> Result<(Option<Touched>, Option<Touched>), crate::DistError> {
    let c = ctx.storage.get(collection)?;
    let limit = collection::collection::WAL_RETAIN_OPS as usize;
    let c2 = c.clone();
    let mine: HashSet<u64> = tokio::task::spawn_blocking(move || c2.recent_op_ids(limit, shard))
        .await??
        .into_iter()
        .collect();
    let peer = coordinator::peer(ctx, other)?;
    let theirs: HashSet<u64> = peer
        .op_ids(collection.to_string(), shard)
        .await?
        .into_iter()
        .collect();
    let here = match mine.is_subset(&theirs) {
        true => Some(Touched::default()),
        false => {
            let theirs = theirs.clone();
            tokio::task::spawn_blocking(move || c.touched_missing_from(&theirs, shard)).await??
        }
    };
    let there = match theirs.is_subset(&mine) {
        true => Some(Touched::default()),
        false => {
            peer.touched(TouchedRequest {
                collection: collection.to_string(),
                shard,
                applied: coordinator::applied_index(ctx),
                known: mine.into_iter().collect(),
            })
            .await?
        }
    };
    Ok((here, there))
}

/// The buckets of `shard` whose digests differ between this peer and `other`, and how many
/// points they hold (per bucket, the larger side's count). `busy`: only buckets no write
/// touched, on either side, since the digest before (the shard takes writes; a bucket
/// being written is not compared).
async fn differing_buckets(
    ctx: &Ctx,
    collection: &str,
    shard: u32,
    other: u64,
    busy: bool,
) -> Result<(Vec<u32>, u64), crate::DistError> {
    use segment::digest::BUCKETS;
    let n = shard_number(ctx, collection)?;
    let limit = if busy { BUSY_MAX_HASHED } else { usize::MAX };
    let Some((mine, my_quiet)) = bounded_tree(ctx, collection, shard, n, limit).await? else {
        // too many points written since the last digest: wait for a calmer round
        return Ok((Vec::new(), 0));
    };
    let req = TreeRequest {
        collection: collection.to_string(),
        shard,
        applied: coordinator::applied_index(ctx),
        level: TreeLevel::Buckets,
    };
    let (theirs, their_quiet) = match coordinator::peer(ctx, other)?.digest_tree(req).await? {
        TreeAnswer::Buckets { digests, quiet } if digests.len() == BUCKETS => (digests, quiet),
        _ => {
            return Err(crate::DistError::unavailable(
                "digest buckets: unexpected answer",
            ))
        }
    };
    let buckets: Vec<u32> = (0..BUCKETS)
        .filter(|&k| mine.buckets()[k] != theirs[k])
        .filter(|&k| !busy || (my_quiet[k] && their_quiet[k]))
        .map(|k| k as u32)
        .collect();
    let at_stake = buckets
        .iter()
        .map(|&k| {
            mine.buckets()[k as usize]
                .count
                .max(theirs[k as usize].count)
        })
        .sum();
    Ok((buckets, at_stake))
}

/// The points of `buckets` on which this peer's copy of `shard` and `other`'s differ, with
/// their hashes here and there (`None`: absent).
async fn differing_points(
    ctx: &Ctx,
    collection: &str,
    shard: u32,
    other: u64,
    buckets: Vec<u32>,
) -> Result<Vec<(PointId, Option<u64>, Option<u64>)>, crate::DistError> {
    let n = shard_number(ctx, collection)?;
    let peer = coordinator::peer(ctx, other)?;
    let ask = |level| TreeRequest {
        collection: collection.to_string(),
        shard,
        applied: coordinator::applied_index(ctx),
        level,
    };
    let TreeAnswer::Leaves(here) = local_tree(
        ctx,
        collection,
        shard,
        n,
        TreeLevel::Leaves(buckets.clone()),
    )
    .await?
    else {
        unreachable!("leaves asked")
    };
    let there = match peer.digest_tree(ask(TreeLevel::Leaves(buckets))).await? {
        TreeAnswer::Leaves(l) => l,
        _ => {
            return Err(crate::DistError::unavailable(
                "digest leaves: unexpected answer",
            ))
        }
    };
    Ok(segment::digest::differences(&here, &there))
}

fn shard_number(ctx: &Ctx, collection: &str) -> Result<u32, crate::DistError> {
    Ok(placement_of(ctx, collection)
        .ok_or_else(|| crate::DistError::not_found("collection is not distributed"))?
        .shard_number)
}

/// Points read from the source per request of a point-level repair, at most.
const REPAIR_BATCH: usize = 64;

/// Points per request of a repair of `collection`: at most [`REPAIR_BATCH`], and about
/// `collection::operations::BATCH_BYTES` of dense vectors (plus a few KB of payload each).
fn repair_batch(ctx: &Ctx, collection: &str) -> usize {
    use collection::config::VectorsConfig;
    let dims: u64 = ctx
        .storage
        .get(collection)
        .map_or(0, |c| match &c.config().params.vectors {
            VectorsConfig::Single(v) => v.size,
            VectorsConfig::Multi(m) => m.values().map(|v| v.size).sum(),
        });
    let per_point = dims * 4 + 4096;
    (collection::operations::BATCH_BYTES as u64 / per_point).clamp(1, REPAIR_BATCH as u64) as usize
}

/// Make `to`'s copy of each point equal to `from`'s: copied whole, or deleted where `from`
/// lacks it, unless `to`'s copy no longer has the hash it was compared with (a write came
/// in meanwhile: the next round decides). Logged on `to` as writes of `shard` that are not
/// client writes. Adds the points repaired to `repaired` as each batch is applied.
async fn repair_points(
    ctx: &Ctx,
    collection: &str,
    shard: u32,
    (from, to): (u64, u64),
    points: &[(PointId, Option<u64>)],
    repaired: &mut u64,
) -> Result<(), crate::DistError> {
    use crate::peer::{ReadBody, ReadRequest, RepairPoint, RepairRequest, Scope};
    use collection::query::{WithPayload, WithVector};
    let n = shard_number(ctx, collection)?;
    let target = coordinator::peer(ctx, to)?;
    let source = coordinator::peer(ctx, from)?;
    for chunk in points.chunks(repair_batch(ctx, collection)) {
        let applied = coordinator::applied_index(ctx);
        let found = source
            .read(ReadRequest {
                collection: collection.to_string(),
                applied,
                body: ReadBody::Retrieve(collection::read::RetrieveRequest {
                    ids: chunk.iter().map(|p| p.0).collect(),
                    with_payload: WithPayload::All,
                    with_vector: WithVector::All,
                }),
                scope: Some(Scope {
                    shard_number: n,
                    shards: vec![shard],
                }),
            })
            .await?
            .points()?;
        let mut found: HashMap<PointId, PointInsert> = found
            .into_iter()
            .map(|p| {
                let copy = PointInsert {
                    id: p.id,
                    vectors: collection::operations::to_stored(p.vector.unwrap_or_default()),
                    payload: Some(p.payload.unwrap_or_default()),
                };
                (p.id, copy)
            })
            .collect();
        let points = chunk
            .iter()
            .map(|&(id, expect)| RepairPoint {
                id,
                expect,
                copy: found.remove(&id),
            })
            .collect();
        *repaired += target
            .repair(RepairRequest {
                collection: collection.to_string(),
                shard,
                applied,
                points,
            })
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ids: &[u64], by_filter: bool) -> Touched {
        Touched {
            ids: ids.iter().map(|i| PointId::Num(*i)).collect(),
            by_filter,
        }
    }

    #[test]
    fn the_copy_a_missing_write_explains_wins() {
        use Winner::*;
        let none = t(&[], false);
        let (p, q) = (PointId::Num(1), PointId::Num(2));
        // (here, there, point) -> winner
        let table: &[(Option<Touched>, Option<Touched>, PointId, Winner)] = &[
            // no replica lacks a write: the first replica's copy
            (Some(none.clone()), Some(none.clone()), p, Here),
            // this replica holds a write of p the other lacks
            (Some(t(&[1], false)), Some(none.clone()), p, Here),
            // the other does
            (Some(none.clone()), Some(t(&[1], false)), p, There),
            // each lacks writes, of different points: a merge, point by point
            (Some(t(&[1], false)), Some(t(&[2], false)), p, Here),
            (Some(t(&[1], false)), Some(t(&[2], false)), q, There),
            // each holds a write of the same point the other lacks
            (Some(t(&[1], false)), Some(t(&[1], false)), p, Conflict),
            // a filter write may have changed any point
            (Some(t(&[], true)), Some(none.clone()), q, Here),
            (Some(t(&[], true)), Some(t(&[2], false)), q, Conflict),
            (Some(t(&[], true)), Some(t(&[2], false)), p, Here),
            // a log that cannot tell
            (None, Some(none.clone()), p, Here),
            (None, Some(t(&[1], false)), p, Conflict),
            (Some(none.clone()), None, p, There),
            (Some(t(&[1], false)), None, p, Conflict),
            (None, None, p, Conflict),
        ];
        for (i, (h, th, id, want)) in table.iter().enumerate() {
            assert_eq!(winner(*id, h.as_ref(), th.as_ref()), *want, "row {i}");
        }
    }
}
