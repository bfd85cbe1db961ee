//! Observability: `GET /metrics` (Prometheus text format, names prefixed with
//! `service.metrics_prefix`) and `GET /telemetry` (Qdrant's `TelemetryData` shape).
//!
//! REST requests are counted per (method, route template, status) and timed per (method,
//! route template) by a middleware that runs after routing, so the endpoint label is the
//! route (`/collections/{name}/points/search`), never a raw path: the label set is bounded.

use crate::envelope::{ApiResult, Timed};
use crate::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use serde_json::{json, Value};
use std::time::Instant;

/// Request metrics of this process.
pub struct Metrics {
    registry: Registry,
    responses: IntCounterVec,
    durations: HistogramVec,
    started: String,
    /// Vectors per collection as last counted, with the collection's content version
    /// then: a scrape recounts (O(points x vector names)) only after a write.
    vector_counts:
        parking_lot::Mutex<std::collections::HashMap<String, (collection::ContentVersion, u64)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        let responses = IntCounterVec::new(
            Opts::new(
                "rest_responses_total",
                "REST responses by endpoint and status",
            ),
            &["method", "endpoint", "status"],
        )
        .expect("metric definition is valid");
        let durations = HistogramVec::new(
            HistogramOpts::new(
                "rest_responses_duration_seconds",
                "REST response latency by endpoint",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["method", "endpoint"],
        )
        .expect("metric definition is valid");
        registry
            .register(Box::new(responses.clone()))
            .expect("registered once");
        registry
            .register(Box::new(durations.clone()))
            .expect("registered once");
        Metrics {
            registry,
            responses,
            durations,
            started: crate::handlers::now_rfc3339(),
            vector_counts: Default::default(),
        }
    }
}

/// Middleware (after routing): count and time every matched REST request.
pub async fn record(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_string();
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let t = Instant::now();
    let resp = next.run(req).await;
    tracing::debug!(
        target: "access",
        %method,
        %path,
        status = resp.status().as_u16(),
        ms = t.elapsed().as_secs_f64() * 1e3,
        "request"
    );
    let m = &st.metrics;
    m.durations
        .with_label_values(&[&method, &endpoint])
        .observe(t.elapsed().as_secs_f64());
    m.responses
        .with_label_values(&[&method, &endpoint, resp.status().as_str()])
        .inc();
    resp
}

fn gauge(out: &mut String, prefix: &str, name: &str, help: &str, labels: &str, v: f64) {
    out.push_str(&format!(
        "# HELP {prefix}{name} {help}\n# TYPE {prefix}{name} gauge\n{prefix}{name}{labels} {v}\n"
    ));
}

/// `GET /metrics`.
pub async fn metrics(State(st): State<AppState>) -> Response {
    let prefix = st.settings.metrics_prefix.clone();
    let st2 = st.clone();
    let mut out = tokio::task::spawn_blocking(move || {
        let st = st2;
        let mut out = String::new();
        let p = prefix.as_str();
        gauge(
            &mut out,
            p,
            "app_info",
            "information about the Sextant server",
            &format!(
                "{{name=\"sextant\",version=\"{}\",api_version=\"1.18.3\"}}",
                env!("CARGO_PKG_VERSION")
            ),
            1.0,
        );
        let names = st.storage.list();
        let (mut points, mut vectors, mut wal) = (0u64, 0u64, 0u64);
        for n in &names {
            if let Ok(c) = st.storage.get(n) {
                wal += dir_bytes(&c.dir().join("wal"));
                let version = c.content_version();
                let cached = st.metrics.vector_counts.lock().get(n).copied();
                let s = c.read();
                points += s.len() as u64;
                vectors += match cached {
                    Some((v, count)) if v == version => count,
                    _ => {
                        let count = s.vector_count() as u64;
                        st.metrics
                            .vector_counts
                            .lock()
                            .insert(n.clone(), (version, count));
                        count
                    }
                };
            }
        }
        gauge(
            &mut out,
            p,
            "collections_total",
            "number of collections",
            "",
            names.len() as f64,
        );
        gauge(
            &mut out,
            p,
            "points_total",
            "points stored on this peer",
            "",
            points as f64,
        );
        gauge(
            &mut out,
            p,
            "vectors_total",
            "vectors stored on this peer",
            "",
            vectors as f64,
        );
        gauge(
            &mut out,
            p,
            "wal_bytes",
            "bytes of write-ahead log on disk, all collections",
            "",
            wal as f64,
        );
        match &st.cluster {
            None => gauge(&mut out, p, "cluster_enabled", "cluster mode", "", 0.0),
            Some(node) => {
                gauge(&mut out, p, "cluster_enabled", "cluster mode", "", 1.0);
                let info = node.raft_info();
                let num = |k: &str| info.get(k).and_then(Value::as_u64).unwrap_or(0) as f64;
                gauge(
                    &mut out,
                    p,
                    "cluster_peers_total",
                    "peers in the cluster",
                    "",
                    node.peers().len() as f64,
                );
                gauge(
                    &mut out,
                    p,
                    "cluster_term",
                    "current Raft term",
                    "",
                    num("term"),
                );
                gauge(
                    &mut out,
                    p,
                    "cluster_commit",
                    "index of the last applied Raft entry",
                    "",
                    num("commit"),
                );
                gauge(
                    &mut out,
                    p,
                    "cluster_pending_operations_total",
                    "Raft entries not yet applied",
                    "",
                    num("pending_operations"),
                );
                gauge(
                    &mut out,
                    p,
                    "cluster_leader",
                    "peer id of the Raft leader (0: none known)",
                    "",
                    num("leader"),
                );
                let role = info
                    .get("role")
                    .and_then(Value::as_str)
                    .unwrap_or("Follower");
                gauge(
                    &mut out,
                    p,
                    "cluster_role",
                    "this peer's Raft role",
                    &format!("{{role=\"{role}\"}}"),
                    1.0,
                );
                let voter = info
                    .get("is_voter")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                gauge(
                    &mut out,
                    p,
                    "cluster_voter",
                    "1 if this peer is a voter",
                    "",
                    f64::from(u8::from(voter)),
                );
                // replica states and transfers, cluster-wide, from the agreed state
                let state = node.state();
                let mut by_state: std::collections::BTreeMap<&str, u64> =
                    [("Active", 0), ("Dead", 0), ("Partial", 0)].into();
                let mut transfers = 0u64;
                for meta in state.state.collections.values() {
                    transfers += meta.transfers.len() as u64;
                    for (shard, replicas) in meta.shards.iter().enumerate() {
                        for &peer in replicas {
                            if let Some(s) = meta.replica_state(shard as u32, peer) {
                                *by_state.entry(s.name()).or_default() += 1;
                            }
                        }
                    }
                }
                out.push_str(&format!(
                    "# HELP {p}cluster_replicas shard replicas by state, cluster-wide\n# TYPE {p}cluster_replicas gauge\n"
                ));
                for (s, n) in by_state {
                    out.push_str(&format!("{p}cluster_replicas{{state=\"{s}\"}} {n}\n"));
                }
                gauge(
                    &mut out,
                    p,
                    "cluster_transfers_in_flight",
                    "shard transfers running, cluster-wide",
                    "",
                    transfers as f64,
                );
                // anti-entropy comparisons this peer led, per collection
                let ae = st.dist.repl.anti_entropy.all_counters();
                for (name, help) in [
                    ("comparisons", "replica digest comparisons this peer led"),
                    ("mismatches", "confirmed replica differences found"),
                    ("repairs", "differences repaired (points copied or a shard resynced)"),
                    ("unrepairable", "differences where each replica lacks writes of the other"),
                    ("points_repaired", "points copied or deleted by point-level repairs"),
                    ("resyncs", "repairs done by resyncing a whole shard"),
                ] {
                    out.push_str(&format!(
                        "# HELP {p}anti_entropy_{name}_total {help}\n# TYPE {p}anti_entropy_{name}_total counter\n"
                    ));
                    for (c, n) in &ae {
                        let v = match name {
                            "comparisons" => n.comparisons,
                            "mismatches" => n.mismatches,
                            "repairs" => n.repairs,
                            "unrepairable" => n.unrepairable,
                            "points_repaired" => n.points_repaired,
                            _ => n.resyncs,
                        };
                        out.push_str(&format!(
                            "{p}anti_entropy_{name}_total{{collection=\"{}\"}} {v}\n",
                            c.replace('\\', "\\\\").replace('"', "\\\"")
                        ));
                    }
                }
            }
        }
        out
    })
    .await
    .unwrap_or_default();
    let mut families = st.metrics.registry.gather();
    if !st.settings.metrics_prefix.is_empty() {
        for f in &mut families {
            let name = format!("{}{}", st.settings.metrics_prefix, f.name());
            f.set_name(name);
        }
    }
    let mut buf = Vec::new();
    let _ = prometheus::TextEncoder::new().encode(&families, &mut buf);
    out.push_str(&String::from_utf8_lossy(&buf));
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
        .into_response()
}

#[derive(Default, serde::Deserialize)]
pub struct TelemetryParams {
    pub details_level: Option<u64>,
    pub anonymize: Option<bool>,
}

/// `GET /telemetry`: app, collections and (cluster mode) consensus status and every peer's
/// version. `details_level` 0 gives counts only; 1 and more list the collections.
pub async fn telemetry(
    State(st): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<TelemetryParams>,
) -> ApiResult<Value> {
    let t = Instant::now();
    let level = q.details_level.unwrap_or(0);
    let names = st.storage.list();
    let mut collections = json!({"number_of_collections": names.len()});
    if level >= 1 {
        let list: Vec<Value> = names
            .iter()
            .filter_map(|n| st.storage.get(n).ok())
            .map(|c| {
                let s = c.read();
                let id = if q.anonymize == Some(true) {
                    anonymize(c.name())
                } else {
                    c.name().to_string()
                };
                json!({"id": id, "points_count": s.len(), "vectors_count": s.vector_count()})
            })
            .collect();
        collections["collections"] = json!(list);
    }
    let app = json!({
        "name": "sextant",
        "version": env!("CARGO_PKG_VERSION"),
        "api_version": "1.18.3",
        "features": {"debug": cfg!(debug_assertions), "service_debug_feature": false,
                     "recovery_mode": false, "gpu": false, "rocksdb": false, "staging": false},
        "jwt_rbac": st.settings.auth.jwt_rbac,
        "startup": st.metrics.started,
    });
    let cluster = match &st.cluster {
        None => json!({"enabled": false}),
        Some(node) => {
            let info = node.raft_info();
            let peers = node.peers();
            let mut peer_metadata = serde_json::Map::new();
            let mut tasks = tokio::task::JoinSet::new();
            for id in peers.keys().copied() {
                let (node, st) = (node.clone(), st.clone());
                tasks.spawn(async move {
                    if id == node.id {
                        return (id, Some(env!("CARGO_PKG_VERSION").to_string()));
                    }
                    let v = match distributed::coordinator::peer(&st.dist, id) {
                        Ok(peer) => peer.status().await.ok().map(|s| s.version),
                        Err(_) => None,
                    };
                    (id, v)
                });
            }
            while let Some(Ok((id, v))) = tasks.join_next().await {
                if let Some(v) = v {
                    peer_metadata.insert(id.to_string(), json!({"version": v}));
                }
            }
            let peers_json: serde_json::Map<String, Value> = peers
                .iter()
                .map(|(id, uri)| (id.to_string(), json!({"uri": format!("{uri}/")})))
                .collect();
            json!({
                "enabled": true,
                "status": {
                    "number_of_peers": peers.len(),
                    "term": info["term"], "commit": info["commit"],
                    "pending_operations": info["pending_operations"],
                    "role": info["role"], "is_voter": info["is_voter"], "peer_id": node.id,
                    "consensus_thread_status": {"consensus_thread_status": "working",
                                                "last_update": crate::handlers::now_rfc3339()},
                },
                "peers": peers_json,
                "peer_metadata": peer_metadata,
            })
        }
    };
    Ok(Timed(
        t,
        json!({"id": st.metrics.started_id(), "app": app, "collections": collections, "cluster": cluster}),
    ))
}

/// Total size of the files in `dir` (0 if it cannot be read).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |rd| {
        rd.filter_map(Result::ok)
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum()
    })
}

/// A stable stand-in for a name (anonymized telemetry).
fn anonymize(s: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    format!("{:016x}", h.finish())
}

impl Metrics {
    /// This process's telemetry id (fixed for its lifetime).
    fn started_id(&self) -> String {
        anonymize(&format!("{}{}", self.started, std::process::id()))
    }
}
