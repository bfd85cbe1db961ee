//! Anti-entropy: the replicas of each shard compare content digests periodically, and a
//! confirmed difference is repaired by a verified resync (a `Recovery` transfer, WAL delta
//! first, whose switch checks the digests again).
//!
//! - Who compares: the shard's first Active replica in placement order, with each other
//!   Active replica, every `cluster.anti_entropy.interval_sec`, when the shard's collection
//!   took no write here for `IDLE` (so writes in flight are not mistaken for divergence).
//! - Cost: a digest is cached per shard until the collection's next write, so comparing an
//!   idle shard is one digest request per replica (no scan on either side).
//! - Which side is stale: the client-write ids each replica logged for the shard. The side
//!   lacking none of the other's writes is the source; a replica lacking some is resynced
//!   from it. When each side has writes the other lacks, no copy holds every acknowledged
//!   write: that is counted as unrepairable and logged (a resync either way would drop
//!   acknowledged writes). When neither lacks a logged write (e.g. concurrent writes to one
//!   point applied in different orders), the other replica is resynced from the first.

use crate::coordinator::{self, placement_of};
use crate::Ctx;
use cluster::state::ReplicaState;
use parking_lot::Mutex;
use segment::digest::Digest;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A collection must have taken no write on this peer for this long before its shards are
/// compared.
const IDLE: Duration = Duration::from_secs(2);
/// A difference is confirmed by a second comparison this much later.
const CONFIRM_AFTER: Duration = Duration::from_secs(1);

/// Per-collection counters (`GET /collections/{c}/cluster`, `/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub comparisons: u64,
    pub mismatches: u64,
    pub repairs: u64,
    pub unrepairable: u64,
}

#[derive(Default)]
pub struct AntiEntropy {
    counters: Mutex<BTreeMap<String, Counters>>,
    last_write: Mutex<HashMap<String, Instant>>,
    running: Mutex<HashSet<(String, u32, u64)>>,
    last_round: Mutex<Option<Instant>>,
    digests: Mutex<HashMap<(String, u32), CachedDigest>>,
}

/// A shard's digest and what it was computed from.
#[derive(Clone, Copy)]
struct CachedDigest {
    /// `Collection::content_version` when computed: any write, or a re-created
    /// collection, makes the entry stale.
    version: collection::ContentVersion,
    shard_number: u32,
    digest: Digest,
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
    let c = ctx.storage.get(collection)?;
    let version = c.content_version();
    let key = (collection.to_string(), shard);
    if let Some(d) = ctx.repl.anti_entropy.digests.lock().get(&key) {
        if (d.version, d.shard_number) == (version, shard_number) {
            return Ok(d.digest);
        }
    }
    let digest = tokio::task::spawn_blocking(move || {
        segment::digest::shard_digest(&c.read(), shard_number, shard)
    })
    .await?;
    ctx.repl.anti_entropy.digests.lock().insert(
        key,
        CachedDigest {
            version,
            shard_number,
            digest,
        },
    );
    Ok(digest)
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
        if !ctx.repl.anti_entropy.idle(name) || !ctx.storage.exists(name) {
            continue;
        }
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
                    if let Err(e) = compare(&ctx, &name, shard, other).await {
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
    let n = placement_of(ctx, collection)
        .ok_or_else(|| crate::DistError::not_found("collection is not distributed"))?
        .shard_number;
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

/// Compare this peer's copy of `shard` with `other`'s; repair a confirmed difference.
async fn compare(
    ctx: &Ctx,
    collection: &str,
    shard: u32,
    other: u64,
) -> Result<(), crate::DistError> {
    let ae = &ctx.repl.anti_entropy;
    let (a, b) = digests(ctx, collection, shard, other).await?;
    ae.count(collection, |c| c.comparisons += 1);
    if a == b {
        return Ok(());
    }
    tokio::time::sleep(CONFIRM_AFTER).await;
    let (a, b) = digests(ctx, collection, shard, other).await?;
    if a == b || !ae.idle(collection) {
        return Ok(()); // a write was in flight
    }
    ae.count(collection, |c| c.mismatches += 1);
    let node = ctx
        .cluster
        .clone()
        .ok_or_else(|| crate::DistError::bad_request("not in cluster mode"))?;
    let me = node.id;
    let c = ctx.storage.get(collection)?;
    let limit = collection::collection::WAL_RETAIN_OPS as usize;
    let mine: HashSet<u64> = tokio::task::spawn_blocking(move || c.recent_op_ids(limit, shard))
        .await??
        .into_iter()
        .collect();
    let theirs: HashSet<u64> = coordinator::peer(ctx, other)?
        .op_ids(collection.to_string(), shard)
        .await?
        .into_iter()
        .collect();
    let (lack_mine, lack_theirs) = (
        theirs.difference(&mine).count(),
        mine.difference(&theirs).count(),
    );
    let (from, to) = match (lack_mine, lack_theirs) {
        (0, _) => (me, other),
        (_, 0) => (other, me),
        _ => {
            ae.count(collection, |c| c.unrepairable += 1);
            tracing::error!(
                collection,
                shard,
                peer = other,
                lacking_here = lack_mine,
                lacking_there = lack_theirs,
                "anti-entropy: replicas differ and each lacks client writes the other has; not repaired (a resync either way would drop acknowledged writes)"
            );
            return Ok(());
        }
    };
    tracing::warn!(
        collection,
        shard,
        from,
        to,
        here = %format!("{} points {:016x}", a.count, a.sum),
        there = %format!("{} points {:016x}", b.count, b.sum),
        lacking_here = lack_mine,
        lacking_there = lack_theirs,
        "anti-entropy: replicas differ: resyncing"
    );
    if node
        .state()
        .state
        .collections
        .get(collection)
        .is_none_or(|m| m.replica_state(shard, to) != Some(ReplicaState::Active))
    {
        return Ok(());
    }
    crate::replication::propose(
        ctx,
        crate::replication::recovery(collection, shard, from, to),
    )
    .await
    .map_err(crate::DistError::unavailable)?;
    ae.count(collection, |c| c.repairs += 1);
    Ok(())
}
