//! Event: a collection lost from the whole cluster, recovered from a snapshot.

use crate::harness::Cluster;
use axum::http::Method;
use serde_json::json;
use std::time::Duration;

/// A snapshot of a 3-shard rf=2 collection (1536-d, 2 KB payloads) taken on a peer that
/// holds every shard; the collection is then deleted from the cluster. Recovering the
/// snapshot on another peer creates the collection again through consensus, with the
/// snapshot's config: every replica ends Active and equal, every point comes back through
/// every peer, and the search answers are the ones before the loss.
#[test]
fn a_snapshot_recreates_a_deleted_collection() {
    let mut c = Cluster::start(3);
    c.create("c", 1536, "Cosine", 3, 3);
    let body = c.fill("c", 90, 1536, 2048);
    c.converged("c", Duration::from_secs(30));
    let query = json!({"vector": body["points"][7]["vector"], "limit": 5});
    let before = c.ok(
        1,
        Method::POST,
        "/collections/c/points/search",
        Some(&query),
    );
    let snap = c.ok(0, Method::POST, "/collections/c/snapshots?wait=true", None);
    let file = snap["name"].as_str().unwrap().to_string();
    let src = c.slots[0].dir.join("snapshots").join("c").join(&file);
    let dst_dir = c.slots[2].dir.join("snapshots");
    std::fs::copy(&src, dst_dir.join(&file)).unwrap();
    c.ok(0, Method::DELETE, "/collections/c", None);

    let location = format!("file://{}", dst_dir.join(&file).display());
    let r = c.ok(
        2,
        Method::PUT,
        "/collections/c/snapshots/recover",
        Some(&json!({"location": location})),
    );
    assert_eq!(r, json!(true));
    let meta = c.meta(0, "c");
    assert_eq!(meta.shards.len(), 3);
    assert!(
        meta.shards.iter().all(|s| s.len() == 3 && s[0] == c.id(2)),
        "every shard on the recovering peer, rf 3: {:?}",
        meta.shards
    );
    let digests = c.converged("c", Duration::from_secs(60));
    assert_eq!(digests.iter().map(|d| d.count).sum::<u64>(), 90);
    let info = c.ok(1, Method::GET, "/collections/c", None);
    assert_eq!(info["config"]["params"]["vectors"]["size"], 1536);
    assert_eq!(info["config"]["params"]["replication_factor"], 3);
    for i in 0..3 {
        assert_eq!(c.count(i, "c"), 90, "count through peer {i}");
        let after = c.ok(
            i,
            Method::POST,
            "/collections/c/points/search",
            Some(&query),
        );
        let ids = |v: &serde_json::Value| {
            v.as_array()
                .unwrap()
                .iter()
                .map(|p| p["id"].clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&after), ids(&before), "search through peer {i}");
    }
}

/// A shard snapshot (3 shards, rf=2, 1536-d, 2 KB payloads) taken on a peer holding the
/// shard; every point is then deleted. Recovering the snapshot on that peer with
/// `priority: snapshot` brings back exactly that shard's points, on both of its replicas
/// (the other one resyncs from the recovered copy), and nothing of the other shards. A
/// peer without a replica of the shard can neither take its snapshot nor recover it.
#[test]
fn a_shard_snapshot_restores_one_shard_on_its_replicas() {
    let mut c = Cluster::start(3);
    c.create("s", 1536, "Cosine", 3, 2);
    c.fill("s", 90, 1536, 2048);
    let before = c.converged("s", Duration::from_secs(30));
    let meta = c.meta(0, "s");
    let holds = |i: usize| meta.shards[1].contains(&c.id(i));
    let holder = (0..3).find(|&i| holds(i)).unwrap();
    let outsider = (0..3).find(|&i| !holds(i)).unwrap();
    let (status, _) = c.call(
        outsider,
        Method::POST,
        "/collections/s/shards/1/snapshots?wait=true",
        None,
    );
    assert_eq!(status.as_u16(), 404, "a shard snapshot where no replica is");
    let snap = c.ok(
        holder,
        Method::POST,
        "/collections/s/shards/1/snapshots?wait=true",
        None,
    );
    let file = snap["name"].as_str().unwrap().to_string();
    let dir = c.slots[holder].dir.join("snapshots");
    let path = dir.join("s").join("shards").join("1").join(&file);
    assert!(path.is_file(), "{}", path.display());
    c.ok(
        0,
        Method::POST,
        "/collections/s/points/delete?wait=true",
        Some(&json!({"filter": {}})),
    );
    assert_eq!(c.count(0, "s"), 0);

    let elsewhere = c.slots[outsider].dir.join("snapshots").join(&file);
    std::fs::copy(&path, &elsewhere).unwrap();
    let (status, v) = c.call(
        outsider,
        Method::PUT,
        "/collections/s/shards/1/snapshots/recover",
        Some(&json!({"location": format!("file://{}", elsewhere.display())})),
    );
    assert_eq!(status.as_u16(), 400, "recovered where no replica is: {v}");
    assert_eq!(c.count(0, "s"), 0, "a refused recovery changes nothing");
    let location =
        json!({"location": format!("file://{}", path.display()), "priority": "snapshot"});
    let r = c.ok(
        holder,
        Method::PUT,
        "/collections/s/shards/1/snapshots/recover",
        Some(&location),
    );
    assert_eq!(r, json!(true));
    let after = c.converged("s", Duration::from_secs(60));
    assert_eq!(after[1], before[1], "shard 1 is the snapshot's again");
    assert_eq!(
        (after[0].count, after[2].count),
        (0, 0),
        "other shards stay empty"
    );
    for i in 0..3 {
        assert_eq!(c.count(i, "s"), before[1].count, "count through peer {i}");
    }

    // a shard snapshot whose vectors do not fit (4-d into 1536-d) fails midway, after the
    // shard's delete: all or nothing, the replica keeps its points (it used to be emptied)
    c.create("narrow", 4, "Cosine", 3, 2);
    c.fill("narrow", 30, 4, 64);
    let narrow = c.meta(0, "narrow");
    let from = (0..3)
        .find(|&i| narrow.shards[1].contains(&c.id(i)))
        .unwrap();
    let snap = c.ok(
        from,
        Method::POST,
        "/collections/narrow/shards/1/snapshots?wait=true",
        None,
    );
    let name = snap["name"].as_str().unwrap();
    let src = c.slots[from]
        .dir
        .join("snapshots/narrow/shards/1")
        .join(name);
    let misfit = dir.join("misfit.snapshot");
    std::fs::copy(&src, &misfit).unwrap();
    let (status, v) = c.call(
        holder,
        Method::PUT,
        "/collections/s/shards/1/snapshots/recover",
        Some(&json!({"location": format!("file://{}", misfit.display()), "priority": "no_sync"})),
    );
    assert_eq!(status.as_u16(), 400, "a snapshot that does not fit: {v}");
    let kept = c.converged("s", Duration::from_secs(60));
    assert_eq!(kept[1], before[1], "the replica keeps its shard");
    for i in 0..3 {
        assert_eq!(c.count(i, "s"), before[1].count, "count through peer {i}");
    }
}
