//! Automatic re-replication (`cluster.self_heal`): a pure planner over the agreed state and
//! the leader's view of which peers answer. When a peer has been unreachable longer than
//! `dead_peer_timeout`, every shard left with fewer Active replicas than its
//! `replication_factor` gets a new replica on the least-loaded live peer that lacks one
//! (copied from an Active replica). When the lost peer returns and its replica is Active
//! again (recovered and verified), the replica self-heal added is dropped. Each decision
//! carries its reason, which the driver logs.

use crate::PeerId;
use cluster::state::{ClusterState, CollectionMeta, ReplicaState};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[derive(Clone, Debug, PartialEq)]
pub struct HealConfig {
    pub enabled: bool,
    pub dead_peer_timeout: Duration,
    /// Self-heal transfers a peer may receive at once.
    pub incoming_limit: usize,
    /// Self-heal transfers a peer may send at once.
    pub outgoing_limit: usize,
}

impl Default for HealConfig {
    fn default() -> Self {
        HealConfig {
            enabled: true,
            dead_peer_timeout: Duration::from_secs(300),
            incoming_limit: 1,
            outgoing_limit: 1,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Copy `shard` from `from` onto `to`, a new replica.
    Replicate {
        collection: String,
        shard: u32,
        from: PeerId,
        to: PeerId,
        reason: String,
    },
    /// Drop `peer`'s replica of `shard`, one self-heal added that is no longer needed.
    Drop {
        collection: String,
        shard: u32,
        peer: PeerId,
        reason: String,
    },
}

/// The `replication_factor` the collection was created with.
pub fn replication_factor(meta: &CollectionMeta) -> usize {
    meta.config
        .as_ref()
        .map(|c| c.params.replication_factor as u64)
        .or_else(|| {
            meta.create
                .pointer("/replication_factor")
                .and_then(|x| x.as_u64())
        })
        .unwrap_or(1)
        .max(1) as usize
}

/// The actions for this moment. `down_for`: how long each unreachable peer has failed the
/// leader's checks (absent: it answers). Pure: same input, same plan.
pub fn plan(
    state: &ClusterState,
    members: &BTreeSet<PeerId>,
    down_for: &BTreeMap<PeerId, Duration>,
    cfg: &HealConfig,
) -> Vec<Action> {
    if !cfg.enabled {
        return vec![];
    }
    let lost: BTreeSet<PeerId> = down_for
        .iter()
        .filter(|(_, d)| **d >= cfg.dead_peer_timeout)
        .map(|(p, _)| *p)
        .collect();
    let live: Vec<PeerId> = members
        .iter()
        .copied()
        .filter(|p| !down_for.contains_key(p))
        .collect();
    // replicas per peer (load), and transfers per peer already running
    let mut load: BTreeMap<PeerId, usize> = live.iter().map(|p| (*p, 0)).collect();
    let (mut incoming, mut outgoing) = (BTreeMap::new(), BTreeMap::new());
    for meta in state.collections.values() {
        for replicas in &meta.shards {
            for p in replicas {
                if let Some(n) = load.get_mut(p) {
                    *n += 1;
                }
            }
        }
        for t in &meta.transfers {
            *incoming.entry(t.to).or_insert(0usize) += 1;
            *outgoing.entry(t.from).or_insert(0usize) += 1;
        }
    }
    let mut out = Vec::new();
    for (name, meta) in &state.collections {
        let rf = replication_factor(meta);
        for shard in 0..meta.shards.len() as u32 {
            if meta.transfer_of(shard).is_some() {
                continue;
            }
            let holders = &meta.shards[shard as usize];
            let active: Vec<PeerId> = holders
                .iter()
                .copied()
                .filter(|p| {
                    meta.replica_state(shard, *p) == Some(ReplicaState::Active) && !lost.contains(p)
                })
                .collect();
            if active.len() >= rf {
                // more than enough: drop a replica self-heal added, once every other one
                // is back (the newest first: added replicas are appended)
                if active.len() > rf && holders.iter().all(|p| active.contains(p)) {
                    if let Some(&extra) = active
                        .iter()
                        .rev()
                        .find(|p| meta.healed.contains(&(shard, **p)))
                    {
                        out.push(Action::Drop {
                            collection: name.clone(),
                            shard,
                            peer: extra,
                            reason: format!(
                                "shard has {} Active replicas for replication_factor {rf}: the replica self-heal added on peer {extra} is no longer needed",
                                active.len()
                            ),
                        });
                    }
                }
                continue;
            }
            // only a loss of a peer for good starts a new replica (a Dead replica on a
            // live peer recovers by itself)
            let gone: Vec<PeerId> = holders
                .iter()
                .copied()
                .filter(|p| lost.contains(p))
                .collect();
            if gone.is_empty() {
                continue;
            }
            let Some(&from) = active.first() else {
                continue; // no Active replica left to copy from
            };
            if outgoing.get(&from).copied().unwrap_or(0) >= cfg.outgoing_limit {
                continue;
            }
            let target = live
                .iter()
                .copied()
                .filter(|p| !holders.contains(p))
                .filter(|p| incoming.get(p).copied().unwrap_or(0) < cfg.incoming_limit)
                .min_by_key(|p| (load.get(p).copied().unwrap_or(0), *p));
            let Some(to) = target else { continue };
            *incoming.entry(to).or_insert(0) += 1;
            *outgoing.entry(from).or_insert(0) += 1;
            *load.entry(to).or_insert(0) += 1;
            out.push(Action::Replicate {
                collection: name.clone(),
                shard,
                from,
                to,
                reason: format!(
                    "shard has {} Active replicas for replication_factor {rf}: peer(s) {gone:?} unreachable for at least {} s; peer {to} holds the fewest replicas ({}) among live peers without one",
                    active.len(),
                    cfg.dead_peer_timeout.as_secs(),
                    load[&to] - 1
                ),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster::state::{ClusterOp, Transfer, TransferKind, TransferMethod};
    use serde_json::json;

    const T: Duration = Duration::from_secs(10);

    fn cfg() -> HealConfig {
        HealConfig {
            dead_peer_timeout: T,
            ..Default::default()
        }
    }

    fn state(shards: u32, rf: u32, peers: &[PeerId]) -> ClusterState {
        let mut st = ClusterState::default();
        st.apply(&ClusterOp::CreateCollection {
            name: "c".into(),
            create: json!({"replication_factor": rf}),
            config: None,
            shard_number: shards,
            replication_factor: rf,
            peers: peers.to_vec(),
            placement: None,
        })
        .unwrap();
        st
    }

    fn members(p: &[PeerId]) -> BTreeSet<PeerId> {
        p.iter().copied().collect()
    }

    fn down(p: &[(PeerId, u64)]) -> BTreeMap<PeerId, Duration> {
        p.iter()
            .map(|(p, s)| (*p, Duration::from_secs(*s)))
            .collect()
    }

    fn targets(actions: &[Action]) -> Vec<(u32, PeerId, PeerId)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Replicate {
                    shard, from, to, ..
                } => Some((*shard, *from, *to)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn nothing_to_do_while_every_peer_answers_or_before_the_timeout() {
        let st = state(3, 2, &[1, 2, 3]);
        let m = members(&[1, 2, 3, 4]);
        assert!(plan(&st, &m, &down(&[]), &cfg()).is_empty());
        assert!(
            plan(&st, &m, &down(&[(2, 9)]), &cfg()).is_empty(),
            "not yet lost"
        );
        let off = HealConfig {
            enabled: false,
            ..cfg()
        };
        assert!(
            plan(&st, &m, &down(&[(2, 3600)]), &off).is_empty(),
            "disabled"
        );
    }

    #[test]
    fn a_lost_peer_is_replaced_on_the_least_loaded_live_peer() {
        // shards placed on 1,2,3 (rf 2); peer 4 holds nothing: every new replica goes
        // there first, one incoming transfer at a time
        let st = state(3, 2, &[1, 2, 3]);
        let m = members(&[1, 2, 3, 4]);
        let lost_shards: Vec<u32> = (0..3)
            .filter(|s| st.collections["c"].shards[*s as usize].contains(&2))
            .collect();
        let a = plan(&st, &m, &down(&[(2, 10)]), &cfg());
        let t = targets(&a);
        assert_eq!(t.len(), lost_shards.len(), "{a:?}");
        assert_eq!(t[0].2, 4, "the first goes to the empty peer");
        for (shard, from, to) in &t {
            assert!(lost_shards.contains(shard));
            assert_ne!(*from, 2, "never copied from the lost peer");
            assert!(!st.collections["c"].shards[*shard as usize].contains(to));
        }
        // at most one transfer into and one out of each peer
        let tos: BTreeSet<_> = t.iter().map(|x| x.2).collect();
        let froms: BTreeSet<_> = t.iter().map(|x| x.1).collect();
        assert_eq!((tos.len(), froms.len()), (t.len(), t.len()), "{t:?}");
        // a transfer already running into peer 4 keeps it out of this plan
        let mut busy = st.clone();
        busy.collections
            .get_mut("c")
            .unwrap()
            .transfers
            .push(Transfer {
                shard: 99,
                from: 1,
                to: 4,
                kind: TransferKind::Replicate,
                method: TransferMethod::StreamRecords,
            });
        let t = targets(&plan(&busy, &m, &down(&[(2, 10)]), &cfg()));
        assert!(t.iter().all(|x| x.2 != 4 && x.1 != 1), "{t:?}");
        // with higher limits every shard that lost a replica gets one
        let wide = HealConfig {
            incoming_limit: 8,
            outgoing_limit: 8,
            ..cfg()
        };
        let t = targets(&plan(&st, &m, &down(&[(2, 60)]), &wide));
        assert_eq!(t.iter().map(|x| x.0).collect::<Vec<_>>(), lost_shards);
        assert!(t.iter().all(|x| x.2 != 2));
    }

    #[test]
    fn no_target_no_source_or_a_running_transfer_means_no_action() {
        // every live peer already holds the shard
        let st = state(1, 2, &[1, 2]);
        assert!(plan(&st, &members(&[1, 2]), &down(&[(2, 60)]), &cfg()).is_empty());
        // rf 1 on the lost peer: nothing Active to copy from
        let st = state(1, 1, &[2]);
        assert!(plan(&st, &members(&[1, 2]), &down(&[(2, 60)]), &cfg()).is_empty());
        // a transfer of the shard is running
        let mut st = state(1, 2, &[1, 2]);
        st.apply(&ClusterOp::StartTransfer {
            collection: "c".into(),
            transfer: Transfer {
                shard: 0,
                from: 1,
                to: 3,
                kind: TransferKind::Replicate,
                method: TransferMethod::StreamRecords,
            },
        })
        .unwrap();
        assert!(plan(&st, &members(&[1, 2, 3, 4]), &down(&[(2, 60)]), &cfg()).is_empty());
    }

    /// Copy shard 0 of collection `c` from peer 1 onto peer 3 (start and finish a transfer).
    fn copy_1_to_3(st: &mut ClusterState, kind: TransferKind) {
        let t = Transfer {
            shard: 0,
            from: 1,
            to: 3,
            kind,
            method: TransferMethod::StreamRecords,
        };
        for op in [
            ClusterOp::StartTransfer {
                collection: "c".into(),
                transfer: t.clone(),
            },
            ClusterOp::FinishTransfer {
                collection: "c".into(),
                transfer: t,
            },
        ] {
            st.apply(&op).unwrap();
        }
    }

    #[test]
    fn the_added_replica_is_dropped_once_the_lost_peer_is_back_in_sync() {
        let mut st = state(1, 2, &[1, 2]);
        st.apply(&ClusterOp::SetReplicaState {
            collection: "c".into(),
            shard: 0,
            peer: 2,
            state: ReplicaState::Dead,
            expect: None,
        })
        .unwrap();
        copy_1_to_3(&mut st, TransferKind::Heal);
        let m = members(&[1, 2, 3]);
        // peer 2 is back but its replica is still Dead (recovering): keep the added one
        assert!(plan(&st, &m, &down(&[]), &cfg()).is_empty());
        st.apply(&ClusterOp::SetReplicaState {
            collection: "c".into(),
            shard: 0,
            peer: 2,
            state: ReplicaState::Active,
            expect: None,
        })
        .unwrap();
        let a = plan(&st, &m, &down(&[]), &cfg());
        assert!(
            matches!(
                &a[..],
                [Action::Drop {
                    shard: 0,
                    peer: 3,
                    ..
                }]
            ),
            "{a:?}"
        );
        // a replica the operator added (not by self-heal) is never dropped
        let mut st = state(1, 2, &[1, 2]);
        copy_1_to_3(&mut st, TransferKind::Replicate);
        assert!(plan(&st, &m, &down(&[]), &cfg()).is_empty());
    }

    #[test]
    fn replication_factor_comes_from_the_resolved_config_first() {
        let mut meta = CollectionMeta {
            create: json!({"replication_factor": 2}),
            ..Default::default()
        };
        assert_eq!(replication_factor(&meta), 2);
        let mut config = serde_json::from_value::<collection::config::CreateCollection>(
            json!({"vectors": {"size": 4, "distance": "Dot"}}),
        )
        .unwrap()
        .into_config(&Default::default())
        .unwrap();
        config.params.replication_factor = 3;
        meta.config = Some(config);
        assert_eq!(replication_factor(&meta), 3);
        assert_eq!(replication_factor(&CollectionMeta::default()), 1);
    }
}
