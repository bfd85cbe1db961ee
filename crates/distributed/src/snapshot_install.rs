//! Recovering a collection snapshot on a cluster peer (issue #16): the seed's last line of
//! defence, for shards whose every copy is gone.
//!
//! The snapshot (unpacked and opened, not registered in storage) records which shards it
//! holds (`Manifest::shards`; all of them for a single node's snapshot). On this peer:
//!
//! 1. shards of the collection with no replica left (every holder was removed with
//!    `force`) and present in the snapshot are adopted through consensus
//!    (`ClusterOp::AdoptShards`): this peer becomes their Active replica;
//! 2. every shard this peer then holds and the snapshot covers is replaced by the
//!    snapshot's points, all or nothing (`collection::snapshot::install_shard`: a failure
//!    or a crash midway leaves the replica as it was), logged as a reset of the shard
//!    (`fill`). The install is not forwarded to a replica this peer is filling meanwhile:
//!    that transfer's digests then differ at its end, and it is retried;
//! 3. `priority`: `snapshot` marks the other replicas of those shards Dead, so they
//!    recover from this one; `replica` marks this peer's copies Dead where another Active
//!    replica exists, so they recover from it; `no_sync` leaves the replicas as they are.
//!
//! A collection the cluster does not have is first created through consensus with the
//! snapshot's config: every shard gets a replica on this peer (where the data is), the
//! other replicas of its `replication_factor` placed over the other peers; those start
//! empty, so they recover from this peer whatever the `priority`.

use crate::coordinator::{self as dist};
use crate::error::DistError;
use crate::Ctx;
use cluster::state::ClusterOp;
use collection::collection::Collection;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    NoSync,
    Snapshot,
    Replica,
}

impl Priority {
    /// Qdrant's names; unset is `replica` (where no other replica exists, the snapshot's
    /// data stays either way).
    pub fn parse(s: Option<&str>) -> Option<Priority> {
        match s {
            None | Some("replica") => Some(Priority::Replica),
            Some("snapshot") => Some(Priority::Snapshot),
            Some("no_sync") => Some(Priority::NoSync),
            Some(_) => None,
        }
    }
}

/// What an install did: the collection created, shards adopted, and shards whose data
/// came from the snapshot.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Installed {
    pub created: bool,
    pub adopted: Vec<u32>,
    pub installed: Vec<u32>,
}

/// Replica sets for a collection created from a snapshot held by `me`: placed over `peers`
/// as usual, then `me` put first in every set (replacing the last member where it was not
/// in it), so every shard has its data on `me`.
pub fn placement_with(me: u64, shard_number: u32, rf: u32, peers: &[u64]) -> Vec<Vec<u64>> {
    let mut all = peers.to_vec();
    if !all.contains(&me) {
        all.push(me);
    }
    cluster::state::place_shards(shard_number, rf, &all)
        .into_iter()
        .map(|mut set| {
            if let Some(i) = set.iter().position(|p| *p == me) {
                set.remove(i);
            } else {
                set.pop();
            }
            set.insert(0, me);
            set
        })
        .collect()
}

/// Create `name` through consensus from the snapshot's config (see the module docs), and
/// wait until every live peer has it.
async fn create_from(ctx: &Ctx, name: &str, snap: &Collection, me: u64) -> Result<(), DistError> {
    let node = ctx
        .cluster
        .as_ref()
        .ok_or_else(|| DistError::Internal("not in cluster mode".into()))?;
    let config = snap.config();
    let (n, rf) = (
        config.params.shard_number.max(1),
        config.params.replication_factor.max(1),
    );
    let peers: Vec<u64> = node.peers().into_keys().collect();
    let value = serde_json::to_value(&config).map_err(|e| DistError::Internal(e.to_string()))?;
    let op = ClusterOp::CreateCollection {
        name: name.to_string(),
        create: value,
        config: Some(Box::new(config)),
        shard_number: n,
        replication_factor: rf,
        placement: Some(placement_with(me, n, rf, &peers)),
        peers,
    };
    crate::replication::propose(ctx, op)
        .await
        .map_err(DistError::Internal)?;
    dist::wait_all_applied(ctx, node.applied_index()).await?;
    tracing::info!(
        collection = name,
        shards = n,
        replication_factor = rf,
        "collection created from a snapshot"
    );
    Ok(())
}

pub async fn install(
    ctx: &Ctx,
    name: &str,
    snap: Arc<Collection>,
    covered: Option<Vec<u32>>,
    priority: Priority,
) -> Result<Installed, DistError> {
    let node = ctx
        .cluster
        .as_ref()
        .ok_or_else(|| DistError::Internal("not in cluster mode".into()))?;
    let me = node.id;
    let meta = |ctx: &Ctx| {
        dist::placement_of(ctx, name).ok_or_else(|| {
            DistError::not_found(format!("Not found: Collection `{name}` doesn't exist!"))
        })
    };
    let (p, created) = match dist::placement_of(ctx, name) {
        Some(p) => (p, false),
        None => {
            create_from(ctx, name, &snap, me).await?;
            (meta(ctx)?, true)
        }
    };
    // the other replicas of a collection created just now are empty: they recover from here
    let priority = if created {
        Priority::Snapshot
    } else {
        priority
    };
    let n = p.shard_number;
    let covers = |s: u32| covered.as_ref().is_none_or(|c| c.contains(&s));
    let orphans: Vec<u32> = (0..n)
        .filter(|s| p.shards[*s as usize].is_empty() && covers(*s))
        .collect();
    if !orphans.is_empty() {
        crate::replication::propose(
            ctx,
            ClusterOp::AdoptShards {
                collection: name.to_string(),
                peer: me,
                shards: orphans.clone(),
            },
        )
        .await
        .map_err(DistError::Internal)?;
        tracing::info!(collection = name, shards = ?orphans, "adopted shards with no replica left");
    }
    let p = meta(ctx)?;
    let mine: Vec<u32> = (0..n)
        .filter(|s| p.shards[*s as usize].contains(&me) && covers(*s))
        .collect();
    for &s in &mine {
        // all or nothing, as on a single node (`collection::snapshot::install_shard`)
        ctx.repl.anti_entropy.touched(name);
        let (storage, n2, snap2) = (ctx.storage.clone(), name.to_string(), snap.clone());
        crate::blocking(move || {
            Ok::<_, DistError>(collection::snapshot::install_shard(
                &storage, &n2, &snap2, s,
            )?)
        })
        .await?;
    }
    let resync: Vec<(u32, u64)> = match priority {
        Priority::NoSync => vec![],
        Priority::Snapshot => mine
            .iter()
            .flat_map(|&s| {
                p.meta
                    .active_replicas(s)
                    .into_iter()
                    .filter(|x| *x != me)
                    .map(move |x| (s, x))
            })
            .collect(),
        Priority::Replica => mine
            .iter()
            .filter(|&&s| p.meta.active_replicas(s).iter().any(|x| *x != me))
            .map(|&s| (s, me))
            .collect(),
    };
    if !resync.is_empty() {
        crate::replication::propose(
            ctx,
            ClusterOp::MarkDead {
                collection: name.to_string(),
                replicas: resync,
            },
        )
        .await
        .map_err(DistError::Internal)?;
    }
    Ok(Installed {
        created,
        adopted: orphans,
        installed: mine,
    })
}

#[cfg(test)]
mod tests {
    use super::placement_with;

    /// (me, shards, rf, peers) -> placement
    type Row = (u64, u32, u32, &'static [u64], &'static [&'static [u64]]);

    #[test]
    fn a_created_collection_has_every_shard_on_the_recovering_peer() {
        let table: &[Row] = &[
            (2, 3, 1, &[1, 2, 3], &[&[2], &[2], &[2]]),
            (2, 3, 2, &[1, 2, 3], &[&[2, 1], &[2, 3], &[2, 3]]),
            (1, 2, 3, &[1, 2, 3], &[&[1, 2, 3], &[1, 2, 3]]),
            (9, 2, 2, &[1, 2], &[&[9, 1], &[9, 2]]),
            (5, 1, 4, &[5], &[&[5]]),
        ];
        for (me, n, rf, peers, want) in table {
            let got = placement_with(*me, *n, *rf, peers);
            let want: Vec<Vec<u64>> = want.iter().map(|s| s.to_vec()).collect();
            assert_eq!(got, want, "me {me}, {n} shards, rf {rf}, peers {peers:?}");
        }
    }
}
