//! Event: every kind of read through every peer, against a single node holding the same
//! points. Reads travel between peers as typed requests and typed points; this checks
//! that a coordinator's merge (ranking, offsets, fusion, grouping, pages, counts) gives
//! exactly the single node's answer.

use crate::harness::{Cluster, Single};
use axum::http::Method;
use serde_json::{json, Value};
use std::time::Duration;

const DIM: usize = 1536;
const POINTS: u64 = 240;

/// The points, with payloads of about 2 KB and fields to filter and group on.
fn bodies(c: &mut Cluster) -> Vec<Value> {
    (0..4)
        .map(|k| {
            let mut b = c.points(k * 60, 60, DIM, 2048);
            for p in b["points"].as_array_mut().unwrap() {
                let n = p["id"].as_u64().unwrap();
                p["payload"]["lang"] = json!(if n % 3 == 0 { "de" } else { "en" });
                p["payload"]["group"] = json!(n % 7);
            }
            b
        })
        .collect()
}

/// Point ids and scores (to 4 decimals: the same floats summed in another order) of a
/// list of scored points, with their payload's `n` when selected.
fn ranked(v: &Value) -> Vec<(Value, String, Value)> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|p| {
            (
                p["id"].clone(),
                format!("{:.4}", p["score"].as_f64().unwrap_or(0.0)),
                p["payload"]["n"].clone(),
            )
        })
        .collect()
}

#[test]
fn every_read_through_any_peer_answers_as_a_single_node() {
    let mut c = Cluster::start(3);
    let single = Single::start();
    let create = json!({"vectors": {"size": DIM, "distance": "Cosine"}, "shard_number": 3});
    single.ok(Method::PUT, "/collections/c", Some(&create));
    c.create("c", DIM, "Cosine", 3, 2);
    for (k, b) in bodies(&mut c).iter().enumerate() {
        single.ok(Method::PUT, "/collections/c/points?wait=true", Some(b));
        c.ok(
            k % 3,
            Method::PUT,
            "/collections/c/points?wait=true",
            Some(b),
        );
    }
    c.converged("c", Duration::from_secs(30));
    let q: Vec<f32> = (0..DIM)
        .map(|i| ((i * 7 % 13) as f32 - 6.0) / 6.0)
        .collect();
    let en = json!({"must": [{"key": "lang", "match": {"value": "en"}}]});

    let searches = [
        (
            "/collections/c/points/search",
            json!({"vector": q, "limit": 10, "offset": 3, "filter": en,
                   "with_payload": ["n"]}),
        ),
        (
            "/collections/c/points/query",
            json!({"prefetch": [{"query": q, "limit": 30},
                                {"query": 17, "limit": 30, "filter": en}],
                   "query": {"fusion": "rrf"}, "limit": 12, "with_payload": ["n"]}),
        ),
        (
            "/collections/c/points/query",
            json!({"prefetch": {"query": q, "limit": 50}, "query": 5, "limit": 8,
                   "offset": 2, "with_payload": ["n"]}),
        ),
        (
            "/collections/c/points/recommend",
            json!({"positive": [1, 2], "negative": [3], "limit": 9, "with_payload": ["n"]}),
        ),
    ];
    for (path, body) in &searches {
        let want = ranked(single_points(&single.ok(Method::POST, path, Some(body))));
        assert_eq!(
            want.len().min(8),
            8,
            "{path}: the reference found too little"
        );
        for i in 0..3 {
            let got = c.ok(i, Method::POST, path, Some(body));
            assert_eq!(ranked(single_points(&got)), want, "{path} through peer {i}");
        }
    }

    let ids = json!({"ids": [0, 61, 122, 183, 239, 999], "with_payload": ["n"]});
    let want = single.ok(Method::POST, "/collections/c/points", Some(&ids));
    assert_eq!(want.as_array().unwrap().len(), 5);
    let count = json!({"filter": en, "exact": true});
    let want_count = single.ok(Method::POST, "/collections/c/points/count", Some(&count));
    assert_eq!(want_count["count"], json!(POINTS - POINTS / 3));
    let groups = json!({"vector": q, "group_by": "group", "limit": 4, "group_size": 3,
                        "with_payload": ["n"]});
    let want_groups = single.ok(
        Method::POST,
        "/collections/c/points/search/groups",
        Some(&groups),
    );
    assert_eq!(want_groups["groups"].as_array().unwrap().len(), 4);
    for i in 0..3 {
        let got = c.ok(i, Method::POST, "/collections/c/points", Some(&ids));
        assert_eq!(got, want, "retrieve through peer {i}");
        let got = c.ok(i, Method::POST, "/collections/c/points/count", Some(&count));
        assert_eq!(got, want_count, "count through peer {i}");
        let got = c.ok(
            i,
            Method::POST,
            "/collections/c/points/search/groups",
            Some(&groups),
        );
        for (g, w) in got["groups"]
            .as_array()
            .unwrap()
            .iter()
            .zip(want_groups["groups"].as_array().unwrap())
        {
            assert_eq!(g["id"], w["id"], "group keys through peer {i}");
            assert_eq!(
                ranked(&g["hits"]),
                ranked(&w["hits"]),
                "group hits through peer {i}"
            );
        }
        // every page of a filtered scroll, through this peer
        let (mut offset, mut pages) = (Value::Null, 0);
        loop {
            let body = json!({"filter": en, "limit": 37, "offset": offset, "with_payload": ["n"]});
            let want = single.ok(Method::POST, "/collections/c/points/scroll", Some(&body));
            let got = c.ok(i, Method::POST, "/collections/c/points/scroll", Some(&body));
            assert_eq!(got, want, "scroll page {pages} through peer {i}");
            pages += 1;
            offset = got["next_page_offset"].clone();
            if offset.is_null() {
                break;
            }
        }
        assert_eq!(
            pages,
            (POINTS - POINTS / 3).div_ceil(37),
            "pages through peer {i}"
        );
    }
}

/// The points of an answer: a plain list (search, recommend) or `{"points": [...]}`.
fn single_points(v: &Value) -> &Value {
    v.get("points").unwrap_or(v)
}
