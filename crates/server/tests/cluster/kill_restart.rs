//! Event: followers killed while writes run, then restarted.

use crate::harness::Cluster;
use axum::http::{Method, StatusCode};
use std::time::Duration;

/// 3 peers, 3 shards at rf=2; writes of 1536-d points run through peer 0 while peer 1 and
/// then peer 2 are killed (nothing flushed, every task dropped) and restarted. Afterwards
/// every replica holds the same points, and every acknowledged write is there.
#[test]
fn followers_killed_during_writes_end_identical() {
    let mut c = Cluster::start(3);
    c.create("c", 1536, "Cosine", 3, 2);
    let mut acknowledged = Vec::new();
    for k in 0..32u64 {
        match k {
            6 => c.kill(1),
            12 => c.restart(1),
            18 => c.kill(2),
            24 => c.restart(2),
            _ => {}
        }
        let body = c.points(k * 20, 20, 1536, 2048);
        let (status, v) = c.call(
            0,
            Method::PUT,
            "/collections/c/points?wait=true",
            Some(&body),
        );
        if status == StatusCode::OK {
            acknowledged.push(k * 20);
        } else {
            eprintln!("write {k}: {status} {v}");
        }
    }
    assert!(
        acknowledged.len() >= 24,
        "only {} writes acknowledged",
        acknowledged.len()
    );
    // recovery takes about a second here; a forwarding loop between a recovering peer and
    // its source once held it for the 30 s request deadline
    c.converged("c", Duration::from_secs(20));
    for first in acknowledged {
        for i in 0..3 {
            c.assert_points(i, "c", first, 20);
        }
    }
}
