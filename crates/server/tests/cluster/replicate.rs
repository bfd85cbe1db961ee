//! Event: writes through every peer of a replicated collection.

use crate::harness::Cluster;
use axum::http::Method;
use std::time::Duration;

/// 3 peers, 3 shards at rf=2, 1536-d vectors with 4 KB payloads written through every
/// peer: every replica holds the same points, and every peer counts them all.
#[test]
fn writes_through_any_peer_reach_every_replica() {
    let mut c = Cluster::start(3);
    c.create("c", 1536, "Cosine", 3, 2);
    for (k, first) in [0u64, 40, 80].into_iter().enumerate() {
        let body = c.points(first, 40, 1536, 4096);
        let r = c.ok(
            k,
            Method::PUT,
            "/collections/c/points?wait=true",
            Some(&body),
        );
        assert_eq!(r["status"], "completed");
    }
    let digests = c.converged("c", Duration::from_secs(30));
    assert_eq!(digests.iter().map(|d| d.count).sum::<u64>(), 120);
    for i in 0..3 {
        assert_eq!(c.count(i, "c"), 120, "count through peer {i}");
    }
}
