//! Event: clients that go away in the middle of their writes.

use crate::harness::Cluster;
use axum::http::{Method, StatusCode};
use rand::Rng;
use std::time::Duration;

/// rf=3, six writers of 50 points (1536-d, 2 KB payloads) each, spread over the peers. One
/// link of each peer is slowed, so replica writes are still in flight when, 8 times, every
/// writer's client goes away mid-request. Every replica must then hold the same points
/// (within 30 s: before anti-entropy's first pass, so the write path alone must do it),
/// and every acknowledged write must be there.
///
/// With the replica fan-out inside the handler's future, the slowed replica writes are
/// dropped with it and nothing marks those replicas Dead: the replicas stay apart.
#[test]
fn abandoned_writes_still_reach_every_replica() {
    let mut c = Cluster::start(3);
    c.create("c", 1536, "Dot", 2, 3);
    // each peer's replica writes to the next peer are slowed down
    for i in 0..3 {
        c.faults(i, &format!("apply:delay=400@#{}", (i + 1) % 3));
    }
    let mut acknowledged = Vec::new();
    let mut next_id = 0u64;
    for round in 0..8 {
        let mut writes = Vec::new();
        for w in 0..6 {
            let body = c.points(next_id, 50, 1536, 2048);
            writes.push((
                next_id,
                c.spawn_call(w % 3, Method::PUT, "/collections/c/points?wait=true", body),
            ));
            next_id += 50;
        }
        let after = Duration::from_millis(c.rng.random_range(50..300));
        std::thread::sleep(after);
        for (first, h) in writes {
            if h.is_finished() {
                let status = c.slots[0].rt().block_on(h).expect("write task");
                assert_eq!(status, StatusCode::OK, "round {round}: a write failed");
                acknowledged.push(first);
            } else {
                h.abort();
            }
        }
    }
    for i in 0..3 {
        c.faults(i, "");
    }
    let digests = c.converged("c", Duration::from_secs(30));
    let total: u64 = digests.iter().map(|d| d.count).sum();
    eprintln!(
        "abandoned clients: {} of 48 writes acknowledged, {total} points held",
        acknowledged.len()
    );
    for first in acknowledged {
        c.assert_points(1, "c", first, 50);
    }
}
