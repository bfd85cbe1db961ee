//! Event: a collection's config updated through one peer.

use crate::harness::Cluster;
use axum::http::Method;
use serde_json::json;

/// `PATCH /collections/{c}` through a follower: once it returns, every peer shows the
/// patched config (the agreed config, patched in consensus), fields not named keep their
/// values, and a patch that does not apply is refused and changes nothing anywhere.
#[test]
fn a_config_update_reaches_every_peer_alike() {
    let c = Cluster::start(3);
    c.create("u", 1536, "Cosine", 3, 2);
    let patch = json!({
        "hnsw_config": {"ef_construct": 48},
        "optimizers_config": {"indexing_threshold": 5000},
        "metadata": {"team": "search"}
    });
    c.ok(1, Method::PATCH, "/collections/u", Some(&patch));
    let config = |i: usize| c.ok(i, Method::GET, "/collections/u", None)["config"].clone();
    let first = config(0);
    assert_eq!(first["hnsw_config"]["ef_construct"], 48);
    assert_eq!(
        first["hnsw_config"]["m"], 16,
        "fields not named keep their value"
    );
    assert_eq!(first["optimizer_config"]["indexing_threshold"], 5000);
    assert_eq!(first["metadata"], json!({"team": "search"}));
    for i in 1..3 {
        assert_eq!(config(i), first, "config through peer {i}");
    }
    let (status, v) = c.call(
        2,
        Method::PATCH,
        "/collections/u",
        Some(&json!({"params": {"replication_factor": 0}})),
    );
    assert!(status.is_client_error(), "{status} {v}");
    for i in 0..3 {
        assert_eq!(
            config(i),
            first,
            "config through peer {i} after a refused patch"
        );
    }
}
