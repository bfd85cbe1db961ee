//! Event: a data-plane link partitioned, then healed.

use crate::harness::Cluster;
use axum::http::Method;
use cluster::state::ReplicaState;
use std::time::Duration;

/// Peers 0 and 1 cannot reach peer 2's data plane (consensus still can). Writes through
/// peer 0 are acknowledged by the replicas it reaches, and peer 2's replicas that missed
/// them are marked Dead through consensus before the acknowledgement: no failed replica
/// write is counted as applied. Once the links heal, the Dead replicas are recovered and
/// every replica holds the same points.
#[test]
fn a_partitioned_replica_is_marked_dead_then_recovered() {
    let mut c = Cluster::start(3);
    c.create("c", 1536, "Euclid", 3, 2);
    let on_2: Vec<u32> = c
        .meta(0, "c")
        .shards
        .iter()
        .enumerate()
        .filter(|(_, h)| h.contains(&c.id(2)))
        .map(|(s, _)| s as u32)
        .collect();
    assert!(!on_2.is_empty(), "peer 2 holds no shard");
    c.faults(0, "*:drop@#2");
    c.faults(1, "*:drop@#2");
    for first in (0..90).step_by(30) {
        let body = c.points(first, 30, 1536, 3000);
        c.ok(
            0,
            Method::PUT,
            "/collections/c/points?wait=true",
            Some(&body),
        );
    }
    // the coordinator applied the Dead-marking before it acknowledged; a recovery may
    // have started since (Partial), but it cannot finish across the partition
    let meta = c.meta(0, "c");
    for s in &on_2 {
        let state = meta.replica_states.get(&(*s, c.id(2)));
        assert!(
            matches!(state, Some(ReplicaState::Dead | ReplicaState::Partial)),
            "shard {s}'s replica on the partitioned peer is {state:?}"
        );
    }
    c.faults(0, "");
    c.faults(1, "");
    let digests = c.converged("c", Duration::from_secs(60));
    assert_eq!(digests.iter().map(|d| d.count).sum::<u64>(), 90);
    assert_eq!(c.count(2, "c"), 90);
}
